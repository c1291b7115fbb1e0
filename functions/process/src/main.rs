//! Lambda entry point of the process function.

use aws_config::retry::RetryConfig;
use lambda_runtime::{Error, run, service_fn};
use process_function::queue::handler;
use process_function::{Ctx, OwnClients};

/// A fault compiled in from `IMAGE_PIPELINE_PROCESS_FAULT` at build time: each batch then
/// fails as a whole with that text, a function error. It lets a broken process function be
/// deployed on purpose (the end-to-end test shows an alarm rolling that update back); a build
/// without the variable has no such path.
const FAULT: Option<&str> = option_env!("IMAGE_PIPELINE_PROCESS_FAULT");

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    handler_shared::init_logging();
    // The SDK reads AWS_ENDPOINT_URL_REKOGNITION itself: local deploys point it at the local
    // DetectLabels service, on AWS it is unset and the regional endpoint is used.
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    // No retries of DetectLabels by the SDK: each call must start on the pace, so a throttled
    // or failed call goes back to the work queue and is tried again after its back-off.
    let rekognition = aws_sdk_rekognition::config::Builder::from(&config)
        .retry_config(RetryConfig::disabled())
        .build();
    let clients = OwnClients {
        sts: aws_sdk_sts::Client::new(&config),
        s3: aws_sdk_s3::Client::new(&config),
        rekognition: aws_sdk_rekognition::Client::from_conf(rekognition),
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
        sqs: aws_sdk_sqs::Client::new(&config),
    };
    let ctx = Ctx::from_env(clients, &handler_shared::process_env)?;
    run(service_fn(|event| async {
        match FAULT {
            Some(fault) => Err(Error::from(fault)),
            None => handler(&ctx, event).await,
        }
    }))
    .await
}
