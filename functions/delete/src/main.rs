//! Lambda entry point of the delete function.

use delete_function::{Ctx, handler};
use lambda_runtime::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    handler_shared::init_logging();
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ctx = Ctx::from_env(
        aws_sdk_sts::Client::new(&config),
        aws_sdk_s3::Client::new(&config),
        aws_sdk_dynamodb::Client::new(&config),
        &handler_shared::process_env,
    )?;
    run(service_fn(|event| handler(&ctx, event))).await
}
