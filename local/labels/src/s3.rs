//! The emulator as the label service sees it: S3 objects read *as the caller* (with the
//! caller's own credentials, so the emulator authorizes the read exactly as it would the
//! caller's own GetObject), and the functions whose sessions may sign requests.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use tokio::runtime::Runtime;

use crate::auth::{Caller, FunctionRole};
use crate::service::{ApiError, MAX_S3_BYTES, ObjectSource};

/// What Rekognition answers (HTTP 400 `InvalidS3ObjectException`) when it cannot read an
/// `S3Object`, whatever the reason (missing, denied), as the Rekognition Developer Guide's
/// "Error handling" page shows it: the same words for both, so the answer does not tell which.
pub const UNREADABLE: &str =
    "Unable to get object metadata from S3. Check object key, region and/or access permissions.";

#[derive(Debug)]
pub struct Emulator {
    s3: aws_sdk_s3::Config,
    lambda: aws_sdk_lambda::Client,
    rt: Runtime,
}

impl Emulator {
    /// Clients for `endpoint`, trusting `ca_pem` (the local environment's certificate) on
    /// top of the usual roots. Listing functions uses the given key of the emulator; S3
    /// reads use each caller's.
    pub fn new(
        endpoint: &str,
        ca_pem: Option<Vec<u8>>,
        access_key_id: String,
        secret_access_key: String,
    ) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let region = Region::new(
            std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|_| "us-east-1".into()),
        );
        let own = Credentials::new(access_key_id, secret_access_key, None, None, "emulator");
        let mut s3 = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region.clone())
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(own.clone());
        let mut lambda = aws_sdk_lambda::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region)
            .endpoint_url(endpoint)
            .credentials_provider(own);
        if let Some(pem) = ca_pem {
            let http = http_client(pem);
            s3 = s3.http_client(http.clone());
            lambda = lambda.http_client(http);
        }
        Ok(Self {
            s3: s3.build(),
            lambda: aws_sdk_lambda::Client::from_conf(lambda.build()),
            rt,
        })
    }

    /// Every function of the emulator's account, with its execution role.
    pub fn functions(&self) -> Result<Vec<FunctionRole>, String> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut pages = self.lambda.list_functions().into_paginator().send();
            while let Some(page) = pages.next().await {
                let page =
                    page.map_err(|e| aws_sdk_lambda::error::DisplayErrorContext(&e).to_string())?;
                for f in page.functions() {
                    let (Some(arn), Some(name), Some(role)) =
                        (f.function_arn(), f.function_name(), f.role())
                    else {
                        continue;
                    };
                    out.push(FunctionRole {
                        account: arn.split(':').nth(4).unwrap_or_default().to_string(),
                        function_arn: arn.to_string(),
                        function_name: name.to_string(),
                        role_arn: role.to_string(),
                    });
                }
            }
            Ok(out)
        })
    }
}

fn http_client(pem: Vec<u8>) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::default().with_pem_certificate(pem))
        .build()
        .unwrap_or_default();
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https()
}

impl ObjectSource for Emulator {
    fn get(
        &self,
        caller: &Caller,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<Vec<u8>, ApiError> {
        let version = version.filter(|v| !v.is_empty() && *v != "null");
        let config = self
            .s3
            .to_builder()
            .credentials_provider(Credentials::new(
                caller.access_key_id.clone(),
                caller.secret_access_key.clone(),
                caller.session_token.clone(),
                None,
                "caller",
            ))
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        self.rt.block_on(async {
            let out = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .set_version_id(version.map(str::to_string))
                .send()
                .await;
            match out {
                Ok(o) => {
                    let too_large =
                        || ApiError::too_large("Image size is too large (15 MB from S3)");
                    // The size is checked before the read, and the read stops at the limit
                    // whatever the length header said.
                    if o.content_length().unwrap_or(0) > MAX_S3_BYTES {
                        return Err(too_large());
                    }
                    let limit = usize::try_from(MAX_S3_BYTES).unwrap_or(usize::MAX);
                    let mut body = o.body;
                    let mut bytes = Vec::new();
                    while let Some(chunk) = body.next().await {
                        let chunk = chunk.map_err(|e| {
                            ApiError::internal(format!("reading the object failed: {e}"))
                        })?;
                        if bytes.len() + chunk.len() > limit {
                            return Err(too_large());
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    Ok(bytes)
                }
                Err(e) => {
                    let code = e
                        .as_service_error()
                        .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code);
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    let unreadable = matches!(
                        code,
                        Some("NoSuchKey" | "NoSuchBucket" | "NoSuchVersion" | "AccessDenied")
                    ) || matches!(status, Some(403 | 404));
                    let detail = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
                    if unreadable {
                        // The caller hears Rekognition's words; the reason stays in our log.
                        eprintln!(
                            "detect-labels: {} cannot read s3://{bucket}/{key}{}: {detail}",
                            caller.principal_arn,
                            version
                                .map(|v| format!(" (version {v})"))
                                .unwrap_or_default()
                        );
                        Err(ApiError::invalid_s3_object(UNREADABLE))
                    } else {
                        Err(ApiError::internal(format!("S3 GetObject failed: {detail}")))
                    }
                }
            }
        })
    }
}
