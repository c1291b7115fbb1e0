//! Where a command runs (a real AWS region or the local environment), the SDK configuration
//! for it, and the preflight that says who we are before anything is changed.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::{Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The local environment's root access key and secret, which it does not check.
pub const ROOT_KEY: &str = "test";

/// The region the local environment answers for.
pub const LOCAL_REGION: &str = "us-east-1";

/// Where the pipeline is deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A real AWS account: region and credentials from `--region` and the standard chain.
    Aws {
        region: String,
        profile: Option<String>,
    },
    /// The local environment at `endpoint` (`https://127.0.0.1:PORT`).
    Local {
        endpoint: String,
        /// The certificate the endpoint serves (PEM), trusted on top of the usual roots.
        certificate: Vec<u8>,
        /// Who calls: the emulator's root by default, or one of its IAM users.
        credentials: LocalCredentials,
    },
}

/// Credentials for the local environment: never the caller's real AWS ones.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl LocalCredentials {
    /// The emulator's root identity, which it does not check.
    pub fn root() -> Self {
        Self {
            access_key_id: ROOT_KEY.into(),
            secret_access_key: ROOT_KEY.into(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.access_key_id == ROOT_KEY
    }
}

impl std::fmt::Debug for LocalCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

impl Target {
    /// The region the target answers for.
    pub fn region(&self) -> &str {
        match self {
            Target::Aws { region, .. } => region,
            Target::Local { .. } => LOCAL_REGION,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Target::Local { .. })
    }

    /// Where this target is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Target::Aws { region, .. } => format!("AWS {region}"),
            Target::Local {
                endpoint,
                credentials,
                ..
            } if credentials.is_root() => format!("the local environment at {endpoint}"),
            Target::Local {
                endpoint,
                credentials,
                ..
            } => format!(
                "the local environment at {endpoint} as {}",
                credentials.access_key_id
            ),
        }
    }
}

#[derive(Debug, Error)]
pub enum AwsError {
    #[error("`{0}` is not an AWS region code (expected something like eu-west-1)")]
    BadRegion(String),
    #[error(
        "no region given: pass --region (or --local), set AWS_REGION, or set `region` in the AWS profile"
    )]
    NoRegion,
    #[error(
        "no AWS credentials found: configure them (environment variables, `aws configure`, `aws sso login`, or web identity in CI) or pass --profile"
    )]
    NoCredentials {
        /// The SDK's whole chain of causes, for `--verbose`.
        detail: String,
    },
    #[error("the AWS credentials have expired: refresh them (for SSO: `aws sso login`) and retry")]
    ExpiredCredentials { detail: String },
    #[error(
        "the AWS credentials were rejected ({reason}): check the access key, the secret and the profile"
    )]
    InvalidCredentials { reason: String, detail: String },
    #[error(
        "cannot reach STS at {target}: {reason}; check the network (and any proxy), and that the region exists"
    )]
    Unreachable {
        target: String,
        reason: String,
        detail: String,
    },
    #[error("cannot find out who is calling (sts:GetCallerIdentity): {0}")]
    Identity(String),
}

/// Checks a region code's form (`eu-west-1`, `us-gov-east-1`, `ap-southeast-7`): lower-case
/// words and a number, joined by hyphens. There is no list of regions to keep up to date: an
/// unknown but well-formed region fails at the first call with the service's own answer.
pub fn validate_region(region: &str) -> Result<(), AwsError> {
    let parts: Vec<&str> = region.split('-').collect();
    let well_formed = parts.len() >= 3
        && parts.split_last().is_some_and(|(number, words)| {
            !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
                && words
                    .iter()
                    .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        });
    if well_formed {
        Ok(())
    } else {
        Err(AwsError::BadRegion(region.to_string()))
    }
}

/// Where the region came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSource {
    Flag,
    Environment,
    Profile,
}

/// The region to work in: `--region`, else `AWS_REGION` or `AWS_DEFAULT_REGION`, else the
/// profile's `region` (the named profile, `AWS_PROFILE`, or `default`). Never asks the
/// instance metadata service, so it answers at once anywhere. The result's form is checked.
pub async fn resolve_region(
    flag: Option<&str>,
    profile: Option<&str>,
) -> Result<(String, RegionSource), AwsError> {
    resolve_region_from(
        flag,
        profile,
        |k| std::env::var(k).ok(),
        aws_runtime::env_config::file::EnvConfigFiles::default(),
    )
    .await
}

async fn resolve_region_from(
    flag: Option<&str>,
    profile: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    files: aws_runtime::env_config::file::EnvConfigFiles,
) -> Result<(String, RegionSource), AwsError> {
    use aws_config::meta::region::ProvideRegion;
    let from_env = || {
        ["AWS_REGION", "AWS_DEFAULT_REGION"].iter().find_map(|k| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })
    };
    let (region, source) = if let Some(r) = flag {
        (r.to_string(), RegionSource::Flag)
    } else if let Some(r) = from_env() {
        (r, RegionSource::Environment)
    } else {
        let mut provider =
            aws_config::profile::ProfileFileRegionProvider::builder().profile_files(files);
        if let Some(p) = profile {
            provider = provider.profile_name(p);
        }
        match provider.build().region().await {
            Some(r) => (r.as_ref().to_string(), RegionSource::Profile),
            None => return Err(AwsError::NoRegion),
        }
    };
    validate_region(&region)?;
    Ok((region, source))
}

/// The partition a region belongs to (`aws`, `aws-cn`, `aws-us-gov`).
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The SDK configuration for a target. Local uses the emulator's own credentials (its root
/// or one of its IAM users), never the caller's real ones, and trusts its certificate.
pub async fn sdk_config(target: &Target) -> Result<SdkConfig, AwsError> {
    let retry = RetryConfig::standard().with_max_attempts(5);
    match target {
        Target::Aws { region, profile } => {
            validate_region(region)?;
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .region(RegionProviderChain::first_try(Region::new(region.clone())))
                .retry_config(retry);
            if let Some(p) = profile {
                loader = loader.profile_name(p);
            }
            Ok(loader.load().await)
        }
        Target::Local {
            endpoint,
            certificate,
            credentials,
        } => Ok(aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(LOCAL_REGION))
            .endpoint_url(endpoint)
            .http_client(sdk_http_client(certificate))
            .credentials_provider(Credentials::new(
                credentials.access_key_id.clone(),
                credentials.secret_access_key.clone(),
                None,
                None,
                "local",
            ))
            .retry_config(retry)
            .load()
            .await),
    }
}

/// An SDK HTTP client that trusts the platform's roots and `cert_pem`.
pub fn sdk_http_client(cert_pem: &[u8]) -> SharedHttpClient {
    let trust = tls::TrustStore::default().with_pem_certificate(cert_pem.to_vec());
    let context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        // Building a context only fails for an invalid server name, and we add none.
        .unwrap_or_default();
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https()
}

/// The SDK clients a deploy, smoke test or teardown uses, built once.
#[derive(Debug, Clone)]
pub struct Clients {
    pub cfn: aws_sdk_cloudformation::Client,
    pub s3: aws_sdk_s3::Client,
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sts: aws_sdk_sts::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub cognito: aws_sdk_cognitoidentityprovider::Client,
    pub quotas: aws_sdk_servicequotas::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
}

impl Clients {
    pub fn new(config: &SdkConfig, target: &Target) -> Self {
        // A local endpoint has no per-bucket host names.
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(target.is_local())
            .build();
        Self {
            cfn: aws_sdk_cloudformation::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            iam: aws_sdk_iam::Client::new(config),
            lambda: aws_sdk_lambda::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
            cognito: aws_sdk_cognitoidentityprovider::Client::new(config),
            quotas: aws_sdk_servicequotas::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
        }
    }
}

/// Who is deploying where: the preflight's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub account: String,
    pub arn: String,
    pub region: String,
    pub partition: String,
}

/// Asks STS who we are, turning the usual credential problems into errors that say what to do.
pub async fn whoami(
    sts: &aws_sdk_sts::Client,
    target: &Target,
    region: &str,
) -> Result<Identity, AwsError> {
    let out = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| classify_identity_error(&e, target))?;
    let account = out.account().unwrap_or_default().to_string();
    if account.is_empty() {
        return Err(AwsError::Identity("STS returned no account".into()));
    }
    Ok(Identity {
        account,
        arn: out.arn().unwrap_or_default().to_string(),
        region: region.to_string(),
        partition: partition_of(region).to_string(),
    })
}

/// The messages of an error and its causes, outermost first.
fn causes(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = Some(e);
    while let Some(err) = at {
        out.push(err.to_string());
        at = err.source();
    }
    out
}

/// Whether the failure came from loading credentials (the SDK reports a credential chain that
/// found nothing, or whose instance-metadata step cannot be reached, as a dispatch failure).
fn is_credentials_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(e);
    while let Some(err) = at {
        if err
            .downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        at = err.source();
    }
    false
}

/// At most one line of at most 200 characters.
fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    let mut out: String = line.chars().take(200).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

/// Turns a failed `GetCallerIdentity` into one line saying what is wrong and what to do; the
/// SDK's whole chain stays in the error's `detail` for `--verbose`.
fn classify_identity_error<E, R>(
    e: &aws_sdk_sts::error::SdkError<E, R>,
    target: &Target,
) -> AwsError
where
    E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = crate::cloud::error::chain(e);
    let code = aws_sdk_sts::error::ProvideErrorMetadata::code(e).unwrap_or_default();
    let message = aws_sdk_sts::error::ProvideErrorMetadata::message(e).unwrap_or_default();
    match code {
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" => {
            return AwsError::ExpiredCredentials { detail };
        }
        "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "UnrecognizedClientException"
        | "AccessDenied" => {
            let reason = if message.is_empty() { code } else { message };
            return AwsError::InvalidCredentials {
                reason: one_line(reason),
                detail,
            };
        }
        _ => {}
    }
    let chain = causes(e);
    let lower = detail.to_ascii_lowercase();
    if is_credentials_error(e)
        || lower.contains("no credentials")
        || lower.contains("no identity resolver")
        || lower.contains("noidentityresolver")
    {
        if lower.contains("expired") {
            return AwsError::ExpiredCredentials { detail };
        }
        return AwsError::NoCredentials { detail };
    }
    if matches!(
        e,
        aws_sdk_sts::error::SdkError::DispatchFailure(_)
            | aws_sdk_sts::error::SdkError::TimeoutError(_)
    ) {
        // The innermost cause says what happened on the wire (refused, DNS, timeout).
        let reason = chain
            .iter()
            .rev()
            .find(|c| !c.trim().is_empty())
            .map_or_else(|| "no answer".to_string(), |c| one_line(c));
        return AwsError::Unreachable {
            target: target.describe(),
            reason,
            detail,
        };
    }
    AwsError::Identity(one_line(&chain.join(": ")))
}

/// Configures the SDK for `target`, builds the clients and asks who we are: the start of
/// every command that talks to AWS.
pub async fn connect(target: &Target) -> Result<(Clients, Identity), AwsError> {
    let sdk = sdk_config(target).await?;
    let clients = Clients::new(&sdk, target);
    let identity = whoami(&clients.sts, target, target.region()).await?;
    Ok((clients, identity))
}

/// An HTTP client for the deployed API (and presigned URLs) of `target`: for the local
/// environment it also trusts the emulator's certificate.
pub fn http_client(target: &Target, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Target::Local { certificate, .. } = target {
        let cert = reqwest::Certificate::from_pem(certificate)
            .map_err(|e| format!("the local environment's certificate: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Polling interval: brisk locally, gentle on AWS's API limits.
pub fn poll_interval(target: &Target) -> Duration {
    if target.is_local() {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions() {
        assert!(validate_region("eu-west-1").is_ok());
        assert!(validate_region("us-gov-west-1").is_ok());
        assert!(matches!(
            validate_region("eu-west"),
            Err(AwsError::BadRegion(_))
        ));
        assert!(matches!(validate_region(""), Err(AwsError::BadRegion(_))));
        assert!(matches!(
            validate_region("EU-WEST-1"),
            Err(AwsError::BadRegion(_))
        ));
        // Well-formed regions are accepted without a list, including ones newer than this code.
        assert!(validate_region("ap-southeast-7").is_ok());
        assert!(validate_region("mx-central-1").is_ok());
        assert!(matches!(
            validate_region("eu--west-1"),
            Err(AwsError::BadRegion(_))
        ));
        assert!(matches!(
            validate_region("eu-west-1a"),
            Err(AwsError::BadRegion(_))
        ));
        assert_eq!(partition_of("cn-north-1"), "aws-cn");
        assert_eq!(partition_of("us-gov-east-1"), "aws-us-gov");
        assert_eq!(partition_of("eu-west-1"), "aws");
    }

    fn profile_files(
        dir: &std::path::Path,
        body: &str,
    ) -> aws_runtime::env_config::file::EnvConfigFiles {
        use aws_runtime::env_config::file::{
            EnvConfigFileKind as ProfileFileKind, EnvConfigFiles as ProfileFiles,
        };
        let path = dir.join("config");
        assert!(std::fs::write(&path, body).is_ok());
        ProfileFiles::builder()
            .include_default_credentials_file(false)
            .with_file(ProfileFileKind::Config, path)
            .build()
    }

    #[tokio::test]
    async fn region_falls_back_from_flag_to_environment_to_profile() {
        let dir = std::env::temp_dir().join(format!("region-test-{}", std::process::id()));
        assert!(std::fs::create_dir_all(&dir).is_ok());
        let files = || {
            profile_files(
                &dir,
                "[default]\nregion = eu-central-1\n[profile ci]\nregion = ap-south-2\n",
            )
        };
        let env = |k: &str| (k == "AWS_DEFAULT_REGION").then(|| "us-west-2".to_string());
        let none = |_: &str| None;

        let r = resolve_region_from(Some("eu-west-1"), None, env, files()).await;
        assert_eq!(r.ok(), Some(("eu-west-1".into(), RegionSource::Flag)));
        let r = resolve_region_from(None, None, env, files()).await;
        assert_eq!(
            r.ok(),
            Some(("us-west-2".into(), RegionSource::Environment))
        );
        let r = resolve_region_from(None, None, none, files()).await;
        assert_eq!(r.ok(), Some(("eu-central-1".into(), RegionSource::Profile)));
        let r = resolve_region_from(None, Some("ci"), none, files()).await;
        assert_eq!(r.ok(), Some(("ap-south-2".into(), RegionSource::Profile)));

        let empty = profile_files(&dir, "[default]\noutput = json\n");
        let r = resolve_region_from(None, None, none, empty).await;
        assert!(matches!(r, Err(AwsError::NoRegion)), "{r:?}");
        let bad = |_: &str| Some("Ireland".to_string());
        let r = resolve_region_from(None, None, bad, files()).await;
        assert!(
            matches!(r, Err(AwsError::BadRegion(ref b)) if b == "Ireland"),
            "{r:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
