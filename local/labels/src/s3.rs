//! Reads `Image.S3Object` from the local S3 endpoint with the real S3 client.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use tokio::runtime::Runtime;

use crate::service::{ApiError, ObjectSource};

#[derive(Debug)]
pub struct S3Source {
    client: aws_sdk_s3::Client,
    rt: Runtime,
}

impl S3Source {
    /// A client for `endpoint` (path-style, as a local endpoint needs). Credentials come from
    /// the environment when set; a local emulator accepts any, so `test` otherwise.
    pub fn new(endpoint: &str) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into());
        let credentials = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(id), Ok(secret)) => Credentials::new(
                id,
                secret,
                std::env::var("AWS_SESSION_TOKEN").ok(),
                None,
                "env",
            ),
            _ => Credentials::new("test", "test", None, None, "local"),
        };
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(credentials)
            .build();
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(config),
            rt,
        })
    }
}

impl ObjectSource for S3Source {
    fn get(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<Vec<u8>>, ApiError> {
        let version = version.filter(|v| !v.is_empty() && *v != "null");
        self.rt.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .set_version_id(version.map(str::to_string))
                .send()
                .await;
            match out {
                Ok(o) => o
                    .body
                    .collect()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| ApiError::internal(format!("reading the object failed: {e}"))),
                Err(e) => {
                    let code = e
                        .as_service_error()
                        .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code);
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    match (code, status) {
                        (
                            Some("NoSuchKey" | "NoSuchBucket" | "NoSuchVersion" | "AccessDenied"),
                            _,
                        )
                        | (_, Some(403 | 404)) => Ok(None),
                        _ => Err(ApiError::internal(format!(
                            "S3 GetObject failed: {}",
                            aws_sdk_s3::error::DisplayErrorContext(&e)
                        ))),
                    }
                }
            }
        })
    }
}
