//! Lambda entry point of the process function.

use lambda_runtime::{Error, run, service_fn};
use process_function::{Ctx, handler};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    handler_shared::init_logging();
    // The SDK reads AWS_ENDPOINT_URL_REKOGNITION itself: local deploys point it at the local
    // DetectLabels service, on AWS it is unset and the regional endpoint is used.
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ctx = Ctx::from_env(
        aws_sdk_sts::Client::new(&config),
        aws_sdk_s3::Client::new(&config),
        aws_sdk_rekognition::Client::new(&config),
        aws_sdk_dynamodb::Client::new(&config),
        &handler_shared::process_env,
    )?;
    run(service_fn(|event| handler(&ctx, event))).await
}
