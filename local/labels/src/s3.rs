//! The emulator as the label service sees it: S3 objects read *as the caller* (with the
//! caller's own credentials, so the emulator authorizes the read exactly as it would the
//! caller's own GetObject), and who a key is: the emulator knows every key it issued and
//! tells its root the key's secret and IAM's decision on `rekognition:DetectLabels`.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use serde::Deserialize;
use tokio::runtime::Runtime;

use crate::auth::{Caller, KeyResolver};
use crate::service::{ApiError, MAX_S3_BYTES, ObjectSource};

/// The emulator's answer about a key (`GET /_image_pipeline/principal`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Principal {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    principal_arn: String,
    /// `Allow`, `Deny` or `ImplicitDeny`.
    decision: String,
}

/// The IAM action the service authorizes.
pub const ACTION: &str = "rekognition:DetectLabels";

/// What Rekognition answers (HTTP 400 `InvalidS3ObjectException`) when it cannot read an
/// `S3Object`, whatever the reason (missing, denied), as the Rekognition Developer Guide's
/// "Error handling" page shows it: the same words for both, so the answer does not tell which.
pub const UNREADABLE: &str =
    "Unable to get object metadata from S3. Check object key, region and/or access permissions.";

#[derive(Debug)]
pub struct Emulator {
    s3: aws_sdk_s3::Config,
    endpoint: String,
    http: reqwest::Client,
    /// The emulator's root key, the only one it tells about keys.
    root_key_id: String,
    region: String,
    rt: Runtime,
}

impl Emulator {
    /// Clients for `endpoint`, trusting `ca_pem` (the local environment's certificate) on
    /// top of the usual roots. Asking who a key is uses the emulator's root key; S3 reads use
    /// each caller's.
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
        let own = Credentials::new(
            access_key_id.clone(),
            secret_access_key,
            None,
            None,
            "emulator",
        );
        let mut s3 = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region.clone())
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(own);
        let mut http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(&pem).map_err(std::io::Error::other)?;
            http = http.add_root_certificate(cert);
            s3 = s3.http_client(http_client(pem));
        }
        Ok(Self {
            s3: s3.build(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http: http.build().map_err(std::io::Error::other)?,
            root_key_id: access_key_id,
            region: region.to_string(),
            rt,
        })
    }

    /// Who `access_key_id` is, as the emulator knows it: `Ok(None)` for a key it does not
    /// know (or no longer: an expired session).
    pub fn principal(&self, access_key_id: &str) -> Result<Option<Caller>, String> {
        // The emulator reads the asking key from the header; its root's is never verified.
        let date = "20000101";
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{date}/{}/sts/aws4_request, SignedHeaders=host, Signature=0",
            self.root_key_id, self.region
        );
        self.rt.block_on(async {
            let resp = self
                .http
                .get(format!("{}/_image_pipeline/principal", self.endpoint))
                .query(&[("AccessKeyId", access_key_id), ("Action", ACTION)])
                .header("authorization", authorization)
                .send()
                .await
                .map_err(|e| format!("asking the emulator about a key failed: {e}"))?;
            let status = resp.status().as_u16();
            let text = resp
                .text()
                .await
                .map_err(|e| format!("reading the emulator's answer failed: {e}"))?;
            match status {
                200 => {
                    let p: Principal = serde_json::from_str(&text)
                        .map_err(|e| format!("the emulator's answer is not a principal: {e}"))?;
                    Ok(Some(Caller {
                        access_key_id: p.access_key_id,
                        secret_access_key: p.secret_access_key,
                        session_token: p.session_token.filter(|t| !t.is_empty()),
                        principal_arn: p.principal_arn,
                        may_detect_labels: p.decision == "Allow",
                    }))
                }
                404 => Ok(None),
                _ => Err(format!(
                    "the emulator answered {status} about a key (is its fidelity fix applied?): {text}"
                )),
            }
        })
    }
}

impl KeyResolver for Emulator {
    fn resolve(&self, access_key_id: &str) -> Option<Caller> {
        self.principal(access_key_id).unwrap_or_else(|e| {
            eprintln!("detect-labels: {e}");
            None
        })
    }
}

impl<T: KeyResolver> KeyResolver for std::sync::Arc<T> {
    fn resolve(&self, access_key_id: &str) -> Option<Caller> {
        self.as_ref().resolve(access_key_id)
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
