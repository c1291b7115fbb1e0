//! Lambda entry point of the web function.

use lambda_runtime::{Error, run, service_fn};
use web_function::{Ctx, handler};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    handler_shared::init_logging();
    let ctx = Ctx::from_env(&handler_shared::process_env)?;
    run(service_fn(|event| handler(&ctx, event))).await
}
