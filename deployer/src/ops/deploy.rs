//! `deploy`: preflight, build, assets, change set, execution, and a check that what Lambda
//! runs is what was built.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stack::synth::{self, Format, SynthOptions};
use stack::{App, Architecture, Stage};
use thiserror::Error;

use crate::build::{self, BuildArch, BuildConfig, BuildError, BuildReport};
use crate::cloud::assets::{self, AssetsError, Uploaded};
use crate::cloud::aws::{self, AwsError, Identity, Target};
use crate::cloud::cfn::StackInfo;
use crate::cloud::cfn::{
    CfnError, Change, ChangeSetRequest, Outcome, Planned, Prepared, RollbackTriggers, StackOps,
    StackProgress,
};
use crate::cloud::quotas::{self, QuotaSource};
use crate::cloud::stage::{Deployed, StackOutputs, StageError, client_api_url};
use crate::ops::bootstrap::{self, BootstrapError};
use crate::ops::security::{self, SecurityChange};
use crate::util::elapsed_ms;

pub use crate::cloud::cfn::{MAX_TEMPLATE_BODY, MAX_TEMPLATE_URL_BODY};

#[derive(Debug, Clone)]
pub struct DeployConfig {
    pub target: Target,
    pub stage: Stage,
    /// Ignored for the local environment, which always runs the host's architecture.
    pub arch: Architecture,
    /// Stop after showing the change set.
    pub plan: bool,
    /// Minutes CloudFormation watches the stage's alarms after an update, rolling it back
    /// when one is in ALARM (0: not at all). `None`: [`default_rollback_minutes`].
    pub rollback_minutes: Option<u32>,
    /// Make a drift-aware change set that also puts back what was changed outside
    /// CloudFormation (`--revert-drift`).
    pub revert_drift: bool,
    /// Execute a change set that broadens a permission without asking (`--approve-broadening`).
    /// Without it such a change set is executed only when the person at the terminal says yes.
    pub approve_broadening: bool,
    /// The Rekognition endpoint the process function calls (the local label service).
    pub rekognition_endpoint: Option<String>,
    /// How long to wait for another deployment of the same stack to finish.
    pub wait_for_other: Duration,
    /// How long the change set may take to execute.
    pub timeout: Duration,
    /// Bootstrap the account first when it is not, or is of another version (the local
    /// environment as its root: there is no administrator to ask).
    pub auto_bootstrap: bool,
    /// The functions to rebuild; empty means all. The others deploy the artifacts of their
    /// last build (`watch` rebuilds only what a change affects).
    pub rebuild: Vec<String>,
    /// The operator's choices for the stage; what is not given stays as deployed.
    pub settings: StageSettings,
    /// The DetectLabels quota to pace the process function for, when the caller knows it
    /// (`--labels-tps`, or the local label service's rate). Otherwise a deploy to AWS asks
    /// Service Quotas, and a local one keeps the deployed value.
    pub labels_quota: Option<(u32, QuotaSource)>,
}

/// How long CloudFormation watches the alarms after an update when the deploy does not say:
/// 10 minutes for the stage `prod`, none for the others (a preview or development stage
/// would wait that long on every deploy).
pub fn default_rollback_minutes(stage: &Stage) -> u32 {
    if stage.as_str() == "prod" { 10 } else { 0 }
}

/// The rollback triggers of an update: the stage's alarms that exist, watched for `minutes`.
/// Empty when `minutes` is 0 or no alarm exists yet (a new stage makes them: the next deploy
/// is watched, which a note says). An update sends them even when empty: CloudFormation
/// would otherwise keep the triggers of an earlier update.
pub async fn rollback_triggers(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    stage: &Stage,
    minutes: u32,
    notes: &mut Vec<String>,
) -> Result<RollbackTriggers, DeployError> {
    if minutes == 0 {
        return Ok(RollbackTriggers::none());
    }
    let names = stack::app::alarms::names(stage);
    let out = cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(names))
        .send()
        .await
        .map_err(|e| DeployError::Alarms(crate::cloud::error::chain(&e)))?;
    let mut alarm_arns: Vec<String> = out
        .metric_alarms()
        .iter()
        .filter_map(|a| a.alarm_arn().map(str::to_string))
        .collect();
    alarm_arns.sort();
    if alarm_arns.is_empty() {
        notes.push(format!(
            "no rollback triggers: the stage has no alarms yet (this deploy makes them; the next one is watched for {minutes} minutes)"
        ));
        return Ok(RollbackTriggers::none());
    }
    Ok(RollbackTriggers {
        alarm_arns,
        minutes,
    })
}

/// What an operator chooses per stage. `None` keeps the deployed stage's value, or the
/// template's default for a new stage, so a deploy without the flag changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageSettings {
    /// Images one user may upload per UTC day (`UploadsPerUserPerDay`).
    pub uploads_per_user_per_day: Option<u32>,
    /// Whether people may sign themselves up (`SelfSignUp`).
    pub self_sign_up: Option<bool>,
    /// Where the stage's alarms notify (`AlarmTopicArn`, `AlarmEmail`).
    pub alarms_to: Option<AlarmsTo>,
    /// The work queue's oldest message's age that raises its alarm
    /// (`OldestMessageAlarmSeconds`).
    pub oldest_message_alarm_seconds: Option<u32>,
    /// Days the function and API access logs are kept (`LogRetentionInDays`).
    pub log_retention_days: Option<u32>,
    /// A customer managed KMS key for the uploads bucket and the log groups (`KmsKeyArn`);
    /// empty turns it off.
    pub kms_key: Option<String>,
    /// The operator's bucket for the uploads bucket's access logs (`AccessLogBucket`);
    /// empty turns them off.
    pub access_log_bucket: Option<String>,
}

/// `--log-retention-days`: one of the values CloudWatch Logs accepts.
pub fn parse_log_retention(s: &str) -> Result<u32, String> {
    let days: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of days"))?;
    if stack::synth::LOG_RETENTION_DAYS.contains(&days) {
        Ok(days)
    } else {
        Err(format!(
            "CloudWatch Logs keeps logs for one of {:?} days, not {days}",
            stack::synth::LOG_RETENTION_DAYS
        ))
    }
}

/// `--kms-key`: a KMS key ARN, or `none` (empty).
pub fn parse_kms_key(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(String::new());
    }
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "kms", region, account, key]
            if !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && key.strip_prefix("key/").is_some_and(|id| {
                    let id = id.strip_prefix("mrk-").unwrap_or(id);
                    (32..=36).contains(&id.len())
                        && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
                }) =>
        {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "`{s}` is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID; an alias will not do) or `none`"
        )),
    }
}

/// `--access-log-bucket`: an S3 bucket name, or `none` (empty).
pub fn parse_access_log_bucket(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(String::new());
    }
    let ok = (3..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !s.starts_with(['.', '-'])
        && !s.ends_with(['.', '-']);
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens) or `none`"
        ))
    }
}

/// Where a stage's alarms notify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmsTo {
    /// Nobody: the alarms publish to the stage's topic `image-pipeline-STAGE-alarms`, to which
    /// nobody is subscribed (`status` shows their states).
    Nobody,
    /// An SNS topic of the operator's, which must let CloudWatch publish.
    Topic(String),
    /// An email address, through a topic the stack makes; AWS asks the address to confirm.
    Email(String),
}

impl std::str::FromStr for AlarmsTo {
    type Err = String;
    /// `none`, an SNS topic ARN, or an email address.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") {
            return Ok(Self::Nobody);
        }
        if s.starts_with("arn:") {
            let parts: Vec<&str> = s.split(':').collect();
            return match parts.as_slice() {
                [_, _, "sns", region, account, name]
                    if !region.is_empty()
                        && account.len() == 12
                        && account.bytes().all(|b| b.is_ascii_digit())
                        && !name.is_empty() =>
                {
                    Ok(Self::Topic(s.to_string()))
                }
                _ => Err(format!(
                    "`{s}` is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
                )),
            };
        }
        match s.split_once('@') {
            Some((user, domain))
                if !user.is_empty()
                    && domain.contains('.')
                    && !s.chars().any(|c| c.is_whitespace()) =>
            {
                Ok(Self::Email(s.to_string()))
            }
            _ => Err(format!(
                "`{s}` is neither `none`, an SNS topic ARN nor an email address"
            )),
        }
    }
}

impl std::fmt::Display for AlarmsTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nobody => write!(f, "nobody"),
            Self::Topic(arn) => write!(f, "topic {arn}"),
            Self::Email(address) => write!(f, "{address}"),
        }
    }
}

impl AlarmsTo {
    /// As the stack's parameters hold it.
    fn of(parameters: &BTreeMap<String, String>) -> Option<Self> {
        let get = |k: &str| parameters.get(k).filter(|v| !v.is_empty()).cloned();
        let topic = get(stack::app::ALARM_TOPIC_PARAM).map(Self::Topic);
        let email = get(stack::app::ALARM_EMAIL_PARAM).map(Self::Email);
        match (topic, email) {
            (Some(t), _) => Some(t),
            (None, Some(e)) => Some(e),
            // An older stack without the parameters has no alarms to say anything of.
            (None, None) if parameters.contains_key(stack::app::ALARM_TOPIC_PARAM) => {
                Some(Self::Nobody)
            }
            (None, None) => None,
        }
    }

    fn parameters(&self) -> [(String, String); 2] {
        let (topic, email) = match self {
            Self::Nobody => ("", ""),
            Self::Topic(arn) => (arn.as_str(), ""),
            Self::Email(address) => ("", address.as_str()),
        };
        [
            (stack::app::ALARM_TOPIC_PARAM.to_string(), topic.to_string()),
            (stack::app::ALARM_EMAIL_PARAM.to_string(), email.to_string()),
        ]
    }
}

/// The settings a deploy leaves the stage with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub uploads_per_user_per_day: u32,
    pub self_sign_up: bool,
    /// The DetectLabels quota the process function is paced for, and the pace.
    pub labels: LabelsPace,
    pub alarms_to: AlarmsTo,
    pub oldest_message_alarm_seconds: u32,
    /// Days the function and API access logs are kept.
    #[serde(default)]
    pub log_retention_days: u32,
    /// The customer managed KMS key of the bucket and the log groups; `None`: the services'
    /// own keys.
    #[serde(default)]
    pub kms_key: Option<String>,
    /// The bucket that receives the uploads bucket's access logs; `None`: not logged.
    #[serde(default)]
    pub access_log_bucket: Option<String>,
}

/// The DetectLabels quota a stage is paced for, where it came from, and the pace derived
/// from it (`stack::Pacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelsPace {
    /// Calls a second.
    pub quota_tps: u32,
    pub source: QuotaSource,
    /// Batches of the work queue processed at once.
    pub max_concurrency: u32,
    /// Milliseconds between two calls of one batch, on the wall clock's grid.
    pub interval_ms: u32,
}

impl LabelsPace {
    pub fn new(quota_tps: u32, source: QuotaSource) -> Self {
        let p = stack::Pacing::from_quota(quota_tps);
        Self {
            quota_tps: p.quota_tps,
            source,
            max_concurrency: p.max_concurrency,
            interval_ms: p.interval_ms,
        }
    }

    /// The most calls a second the pace allows over time.
    pub fn calls_per_second(&self) -> f64 {
        f64::from(self.max_concurrency) * 1000.0 / f64::from(self.interval_ms)
    }

    fn parameters(&self) -> [(String, String); 3] {
        [
            (
                stack::app::LABELS_TPS_PARAM.to_string(),
                self.quota_tps.to_string(),
            ),
            (
                stack::app::PROCESS_CONCURRENCY_PARAM.to_string(),
                self.max_concurrency.to_string(),
            ),
            (
                stack::app::LABELS_INTERVAL_PARAM.to_string(),
                self.interval_ms.to_string(),
            ),
        ]
    }
}

impl StageSettings {
    /// Each setting as given, else as `deployed` (the stack's parameters) has it, else the
    /// template's default. The DetectLabels quota is `quota` when something gave it.
    pub fn resolve(
        &self,
        deployed: Option<&BTreeMap<String, String>>,
        quota: Option<(u32, QuotaSource)>,
    ) -> Settings {
        let current = |name: &str| deployed.and_then(|p| p.get(name));
        let (quota_tps, source) = quota
            .or_else(|| {
                let q = current(stack::app::LABELS_TPS_PARAM)?.parse().ok()?;
                Some((q, QuotaSource::AsDeployed))
            })
            .unwrap_or((stack::Pacing::DEFAULT_QUOTA_TPS, QuotaSource::Default));
        Settings {
            labels: LabelsPace::new(quota_tps, source),
            uploads_per_user_per_day: self
                .uploads_per_user_per_day
                .or_else(|| current(stack::app::UPLOADS_PER_DAY_PARAM)?.parse().ok())
                .unwrap_or(stack::app::DEFAULT_UPLOADS_PER_DAY),
            self_sign_up: self
                .self_sign_up
                .or_else(|| current(stack::app::SELF_SIGN_UP_PARAM).map(|v| v == "true"))
                .unwrap_or(false),
            alarms_to: self
                .alarms_to
                .clone()
                .or_else(|| AlarmsTo::of(deployed?))
                .unwrap_or(AlarmsTo::Nobody),
            oldest_message_alarm_seconds: self
                .oldest_message_alarm_seconds
                .or_else(|| {
                    current(stack::app::OLDEST_MESSAGE_ALARM_PARAM)?
                        .parse()
                        .ok()
                })
                .unwrap_or(stack::app::DEFAULT_OLDEST_MESSAGE_ALARM_SECONDS),
            log_retention_days: self
                .log_retention_days
                .or_else(|| current(stack::synth::PARAM_LOG_RETENTION)?.parse().ok())
                .unwrap_or(stack::synth::DEFAULT_LOG_RETENTION_DAYS),
            kms_key: optional(&self.kms_key, current(stack::synth::PARAM_KMS_KEY)),
            access_log_bucket: optional(
                &self.access_log_bucket,
                current(stack::synth::PARAM_ACCESS_LOG_BUCKET),
            ),
        }
    }
}

/// A setting that may be off (empty): as given, else as deployed; `None` when off.
fn optional(given: &Option<String>, deployed: Option<&String>) -> Option<String> {
    given
        .as_ref()
        .or(deployed)
        .filter(|v| !v.is_empty())
        .cloned()
}

impl Settings {
    fn parameters(&self) -> impl Iterator<Item = (String, String)> {
        let own = [
            (
                stack::app::UPLOADS_PER_DAY_PARAM.to_string(),
                self.uploads_per_user_per_day.to_string(),
            ),
            (
                stack::app::SELF_SIGN_UP_PARAM.to_string(),
                self.self_sign_up.to_string(),
            ),
        ];
        let oldest = (
            stack::app::OLDEST_MESSAGE_ALARM_PARAM.to_string(),
            self.oldest_message_alarm_seconds.to_string(),
        );
        let compliance = [
            (
                stack::synth::PARAM_LOG_RETENTION.to_string(),
                self.log_retention_days.to_string(),
            ),
            (
                stack::synth::PARAM_KMS_KEY.to_string(),
                self.kms_key.clone().unwrap_or_default(),
            ),
            (
                stack::synth::PARAM_ACCESS_LOG_BUCKET.to_string(),
                self.access_log_bucket.clone().unwrap_or_default(),
            ),
        ];
        own.into_iter()
            .chain(self.labels.parameters())
            .chain(self.alarms_to.parameters())
            .chain([oldest])
            .chain(compliance)
    }
}

/// Milliseconds spent in each phase of a deploy. The phases after the change set run only
/// when there is something to execute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    pub preflight: u64,
    pub build: u64,
    pub assets: u64,
    pub change_set: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<u64>,
    pub total: u64,
}

/// What a deploy did; serialised as the `--output json` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployReport {
    pub stack: String,
    pub stage: String,
    pub target: String,
    pub identity: Identity,
    pub architecture: String,
    pub status: Outcome,
    pub changes: Vec<Change>,
    /// Every statement the change set adds to or removes from a role, a resource policy or a
    /// Lambda permission, and whether it broadens a permission.
    pub security: Vec<SecurityChange>,
    /// The alarms that would roll the update back, and for how long after it they are watched.
    pub rollback: Option<RollbackTriggers>,
    /// With `--plan`: each drifted property of a resource the change set changes or
    /// removes, which the deploy would overwrite (or why drift could not be checked).
    pub drift_overwritten: Vec<String>,
    pub artifacts: Vec<Uploaded>,
    pub assets_bucket: String,
    /// The bootstrap scope (`release` or `preview`) whose execution role CloudFormation used.
    pub scope: stack::app::bootstrap::Scope,
    pub execution_role: String,
    /// The permissions boundary every function role of the stack carries.
    pub permissions_boundary: String,
    pub outputs: BTreeMap<String, String>,
    /// The stage's settings after the deploy.
    pub settings: Settings,
    /// The API's base URL as a client on this machine reaches it.
    pub api_url: Option<String>,
    pub timings: Timings,
    /// Things the deploy did on the way that a user should know about.
    pub notes: Vec<String>,
}

impl DeployReport {
    /// The deployed stage as seen from `target`, read from this report's outputs.
    pub fn deployed(&self, target: &Target) -> Result<Deployed, StageError> {
        Deployed::from_outputs(target, StackOutputs::new(&self.stack, self.outputs.clone()))
    }
}

#[derive(Debug, Error)]
pub enum DeployError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("build failed: {0}")]
    Build(#[from] BuildError),
    #[error(transparent)]
    Assets(#[from] AssetsError),
    #[error(transparent)]
    Stack(#[from] CfnError),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("cannot synthesize the template: {0}")]
    Synth(String),
    #[error(
        "the template is {0} bytes, over CloudFormation's limit of {MAX_TEMPLATE_URL_BODY} for a template in S3"
    )]
    TemplateTooLarge(usize),
    #[error(
        "{function}: Lambda runs code with CodeSha256 {deployed}, but the artifact built is {built}"
    )]
    CodeMismatch {
        function: String,
        deployed: String,
        built: String,
    },
    #[error("cannot read the deployed {function} function: {reason}")]
    Function { function: String, reason: String },
    #[error(
        "this deploy broadens permissions, and nobody approved it (nothing was changed; give --approve-broadening, or run it on a terminal to be asked):\n{}",
        .0.join("\n")
    )]
    Broadening(Vec<String>),
    #[error("this deploy broadens permissions and was declined; nothing was changed")]
    Declined,
    #[error("cannot read the deployed template as JSON: {0}")]
    DeployedTemplate(String),
    #[error("cannot read the stage's alarms for the rollback triggers (DescribeAlarms): {0}")]
    Alarms(String),
}

/// The template body sent to CloudFormation: compact JSON (YAML needs quoting care, and JSON
/// is what the service stores anyway).
pub fn template_body(app: &App, stage: &Stage, arch: Architecture) -> Result<String, DeployError> {
    let opts = SynthOptions {
        stage: stage.clone(),
        architecture: arch,
    };
    let s =
        synth::render(app, &opts, Format::Json).map_err(|e| DeployError::Synth(e.to_string()))?;
    let value = serde_json::to_value(&s.template).map_err(|e| DeployError::Synth(e.to_string()))?;
    let body = serde_json::to_string(&value).map_err(|e| DeployError::Synth(e.to_string()))?;
    if body.len() > MAX_TEMPLATE_URL_BODY {
        return Err(DeployError::TemplateTooLarge(body.len()));
    }
    Ok(body)
}

/// The URL CloudFormation reads `key` of the assets bucket at: path-style on the local
/// endpoint, the bucket's regional virtual-hosted name on AWS.
pub fn template_url(target: &Target, identity: &Identity, bucket: &str, key: &str) -> String {
    match target {
        Target::Local { endpoint, .. } => format!("{endpoint}/{bucket}/{key}"),
        Target::Aws { .. } => {
            let suffix = match identity.partition.as_str() {
                "aws-cn" => "amazonaws.com.cn",
                _ => "amazonaws.com",
            };
            format!("https://{bucket}.s3.{}.{suffix}/{key}", identity.region)
        }
    }
}

/// The stack's parameters for a deploy.
pub fn parameters(
    app: &App,
    stage: &Stage,
    arch: Architecture,
    (assets_bucket, boundary): (&str, &str),
    artifacts: &[Uploaded],
    rekognition_endpoint: Option<&str>,
) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    p.insert(
        stack::app::STAGE_PARAM.to_string(),
        stage.as_str().to_string(),
    );
    p.insert(
        synth::PARAM_ARCHITECTURE.to_string(),
        arch.as_str().to_string(),
    );
    p.insert(
        synth::PARAM_ARTIFACT_BUCKET.to_string(),
        assets_bucket.to_string(),
    );
    p.insert(
        synth::PARAM_PERMISSIONS_BOUNDARY.to_string(),
        boundary.to_string(),
    );
    p.insert(
        stack::app::REKOGNITION_ENDPOINT_PARAM.to_string(),
        rekognition_endpoint.unwrap_or_default().to_string(),
    );
    for f in &app.functions {
        if let Some(a) = artifacts.iter().find(|a| a.function == f.name) {
            p.insert(f.code_key_param(), a.key.clone());
        }
    }
    p
}

/// What the preflight learned: who deploys, with which bootstrap, execution role and boundary.
struct Preflight {
    clients: aws::Clients,
    identity: Identity,
    boot: bootstrap::Bootstrap,
    scope: stack::app::bootstrap::Scope,
    role: String,
    boundary: String,
    /// The DetectLabels quota, when the caller or Service Quotas gave it.
    labels_quota: Option<(u32, QuotaSource)>,
    notes: Vec<String>,
}

/// The bootstrap stack, made first when it is missing or outdated and the deploy may
/// bootstrap (the local environment).
async fn read_or_bootstrap(
    cfg: &DeployConfig,
    clients: &aws::Clients,
    identity: &Identity,
    notes: &mut Vec<String>,
    progress: &dyn StackProgress,
) -> Result<bootstrap::Bootstrap, DeployError> {
    match bootstrap::read(&clients.cfn, identity, &cfg.target).await {
        Err(BootstrapError::Missing { .. } | BootstrapError::Outdated { .. })
            if cfg.auto_bootstrap =>
        {
            progress.step("the local environment is not bootstrapped for this version: bootstrapping it first");
            notes.push(format!(
                "bootstrapped the local environment ({})",
                stack::app::bootstrap::STACK
            ));
            let config = bootstrap::BootstrapConfig {
                target: cfg.target.clone(),
                preview: stack::app::StagePattern::parse(
                    stack::app::bootstrap::DEFAULT_PREVIEW_STAGES,
                )
                .map_err(|e| BootstrapError::Invalid(e.to_string()))?,
                ci: None,
                timeout: cfg.timeout,
            };
            Ok(bootstrap::bootstrap(&config, progress).await?.bootstrap)
        }
        other => Ok(other?),
    }
}

/// The account's DetectLabels quota from Service Quotas; when it cannot be read, a note says
/// why and the stage keeps its deployed quota (or the default).
async fn read_labels_quota(
    client: &aws_sdk_servicequotas::Client,
    region: &str,
    notes: &mut Vec<String>,
    progress: &dyn StackProgress,
) -> Option<(u32, QuotaSource)> {
    let fallback = "the stage keeps its deployed quota (a new stage: the default); `deploy --labels-tps Q` sets it";
    match quotas::detect_labels_quota(client).await {
        Ok(Some((found, source))) => {
            progress.step(&format!(
                "DetectLabels quota: {} calls a second ({}: \"{}\" {})",
                found.value,
                source.describe(),
                found.name,
                found.code
            ));
            Some((quotas::whole_calls(found.value), source))
        }
        Ok(None) => {
            notes.push(format!(
                "Service Quotas lists no DetectLabels rate for {} in {region}; {fallback}",
                quotas::REKOGNITION
            ));
            None
        }
        Err(e) => {
            notes.push(format!(
                "cannot read the DetectLabels quota ({e}); {fallback}"
            ));
            None
        }
    }
}

/// Who we are, and the bootstrap's execution role and boundary for this stage: known before
/// anything is built, so a missing or outdated bootstrap fails at once.
async fn preflight(
    cfg: &DeployConfig,
    progress: &dyn StackProgress,
) -> Result<Preflight, DeployError> {
    let (clients, identity) = aws::connect(&cfg.target).await?;
    progress.step(&format!(
        "deploying stack {} to {} as {} (account {})",
        cfg.stage.stack_name(),
        cfg.target.describe(),
        identity.arn,
        identity.account
    ));
    let mut notes = Vec::new();
    let boot = read_or_bootstrap(cfg, &clients, &identity, &mut notes, progress).await?;
    let scope = boot.scope_for(&cfg.stage);
    let (Some(role), Some(boundary)) = (
        boot.execution_roles.get(&scope).cloned(),
        boot.boundaries.get(&scope).cloned(),
    ) else {
        return Err(BootstrapError::Invalid(format!(
            "the bootstrap stack has no {scope} execution role"
        ))
        .into());
    };
    progress.step(&format!(
        "stage {} deploys with the {scope} execution role {role}",
        cfg.stage
    ));
    let labels_quota = match cfg.labels_quota {
        Some(given) => Some(given),
        None if !cfg.target.is_local() => {
            read_labels_quota(&clients.quotas, &identity.region, &mut notes, progress).await
        }
        None => None,
    };
    Ok(Preflight {
        labels_quota,
        clients,
        identity,
        boot,
        scope,
        role,
        boundary,
        notes,
    })
}

/// The change set a deploy asks for, and what CloudFormation made of it.
struct Plan {
    kind: Prepared,
    /// The deployed stack, when it already is what the change set would make it.
    current: Option<StackInfo>,
    planned: Planned,
}

/// The change set for this template, these parameters, tags and role; none when the stack
/// already runs exactly them.
async fn plan(
    ops: &StackOps<'_>,
    cfg: &DeployConfig,
    mut req: ChangeSetRequest,
) -> Result<Plan, DeployError> {
    let current = if cfg.revert_drift {
        // The deployed template may be the same; what differs is outside CloudFormation.
        ops.progress
            .step("a drift-aware change set (REVERT_DRIFT): it also puts back what drifted");
        None
    } else {
        match ops.up_to_date(&req).await? {
            Ok(info) => Some(info),
            Err(why) => {
                ops.progress.step(&format!("a change set is needed: {why}"));
                None
            }
        }
    };
    let kind = match current {
        Some(_) => Prepared::Update,
        None => ops.prepare(cfg.wait_for_other).await?,
    };
    req.kind = kind;
    if current.is_none() {
        ops.progress.step(match kind {
            Prepared::Create => "creating the change set (CREATE: the stack is new)",
            Prepared::Update => "creating the change set (UPDATE)",
        });
    }
    let planned = match &current {
        Some(_) => Planned::NoChanges,
        None => ops.create_change_set(&req, cfg.timeout).await?,
    };
    Ok(Plan {
        kind,
        current,
        planned,
    })
}

/// Executes the plan (unless `--plan`, or there is nothing to do): the stack's outputs, or
/// `None` when the change set was only shown.
async fn apply(
    ops: &StackOps<'_>,
    lambda: &aws_sdk_lambda::Client,
    cfg: &DeployConfig,
    plan: Plan,
    report: &mut DeployReport,
) -> Result<Option<BTreeMap<String, String>>, DeployError> {
    let progress = ops.progress;
    match (plan.planned, plan.current) {
        (Planned::NoChanges, Some(info)) => {
            progress.step(
                "no changes: the deployed stack already runs this template, these parameters and these artifacts (no change set made)",
            );
            Ok(Some(info.outputs))
        }
        (Planned::NoChanges, None) => {
            progress
                .step("no changes: the stack already matches (the empty change set was deleted)");
            Ok(Some(
                ops.describe().await?.map(|i| i.outputs).unwrap_or_default(),
            ))
        }
        (
            Planned::Changes {
                name,
                id,
                stack_id,
                changes,
            },
            _,
        ) => {
            report.changes = changes;
            if cfg.plan {
                if plan.kind == Prepared::Update {
                    report.drift_overwritten = drift_overwritten(ops, cfg, &report.changes).await;
                }
                ops.discard(&name, &stack_id, plan.kind).await?;
                report.status = Outcome::Planned;
                return Ok(None);
            }
            let approved = cfg.approve_broadening;
            if let Err(refused) = gate(ops.progress, approved, plan.kind, &report.security) {
                ops.discard(&name, &stack_id, plan.kind).await?;
                return Err(refused);
            }
            let app = App::image_pipeline();
            let outputs = execute(ops, lambda, (&name, &id, &stack_id), cfg, &app, report).await?;
            report.status = match plan.kind {
                Prepared::Create => Outcome::Created,
                Prepared::Update => Outcome::Updated,
            };
            Ok(Some(outputs))
        }
    }
}

/// With `--plan`, runs drift detection and keeps the drift of the resources the change set
/// changes or removes: a deploy would put their template values back over it (a drifted
/// resource it does not touch stays drifted, unless `--revert-drift`). A detection that
/// cannot run is one line saying why, not a failure of the plan.
async fn drift_overwritten(
    ops: &StackOps<'_>,
    cfg: &DeployConfig,
    changes: &[Change],
) -> Vec<String> {
    let poll = aws::poll_interval(&cfg.target);
    let timeout = Duration::from_secs(15 * 60);
    ops.progress
        .step("detecting drift: what the deploy would overwrite");
    let report = match crate::cloud::drift::detect(ops.cfn, ops.name, poll, timeout).await {
        Ok(r) => r,
        Err(e) => return vec![format!("drift could not be checked: {e}")],
    };
    let touched: std::collections::BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.action != crate::cloud::cfn::ChangeAction::Add)
        .map(|c| c.logical_id.as_str())
        .collect();
    let kept = crate::cloud::drift::DriftReport {
        drifted: report
            .drifted
            .into_iter()
            .filter(|d| cfg.revert_drift || touched.contains(d.logical_id.as_str()))
            .collect(),
        ..report
    };
    kept.lines()
}

/// The statements the change set adds and removes: against the deployed template for an
/// update, against nothing for a new stack; none when there is nothing to change.
async fn security_changes(
    ops: &StackOps<'_>,
    plan: &Plan,
    new_body: &str,
) -> Result<Vec<SecurityChange>, DeployError> {
    if !matches!(plan.planned, Planned::Changes { .. }) {
        return Ok(Vec::new());
    }
    let json = |t: &str| {
        serde_json::from_str::<serde_json::Value>(t)
            .map_err(|e| DeployError::DeployedTemplate(e.to_string()))
    };
    let old = match plan.kind {
        Prepared::Create => None,
        Prepared::Update => Some(json(&ops.template().await?)?),
    };
    Ok(security::changes(old.as_ref(), &json(new_body)?))
}

/// Lets a change set that broadens a permission through only when `--approve-broadening`
/// says so or the person at the terminal does. A new stack widens nothing that was there
/// (its table is shown all the same), and taking a permission away never needs approval.
fn gate(
    progress: &dyn StackProgress,
    approved: bool,
    kind: Prepared,
    changes: &[SecurityChange],
) -> Result<(), DeployError> {
    let wide: Vec<String> = security::broadening(changes)
        .iter()
        .map(|c| c.line())
        .collect();
    if kind == Prepared::Create || wide.is_empty() {
        return Ok(());
    }
    if approved {
        progress.step(&format!(
            "broadening approved by --approve-broadening:\n{}",
            wide.join("\n")
        ));
        return Ok(());
    }
    let question = format!(
        "this deploy broadens permissions:\n{}\nexecute it?",
        wide.join("\n")
    );
    match progress.confirm(&question) {
        Some(true) => Ok(()),
        Some(false) => Err(DeployError::Declined),
        None => Err(DeployError::Broadening(wide)),
    }
}

/// Runs a deploy in its phases: preflight (who, and the bootstrap), build, assets, plan (the
/// change set), then apply (unless planning or there is nothing to change: execute and
/// verify). `progress` hears about every phase.
pub async fn deploy(
    cfg: &DeployConfig,
    progress: &dyn StackProgress,
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let mut timings = Timings::default();
    let app = App::image_pipeline();
    let stack_name = cfg.stage.stack_name();

    let t = Instant::now();
    let pre = preflight(cfg, progress).await?;
    timings.preflight = elapsed_ms(t);

    let t = Instant::now();
    let (arch, built) = build_handlers(cfg, progress)?;
    timings.build = elapsed_ms(t);

    let t = Instant::now();
    let bucket = pre.boot.assets_bucket.clone();
    let assets = (&pre.clients.s3, &pre.identity, bucket.as_str());
    let artifacts = upload_assets(assets, &cfg.stage, &built, progress).await?;
    timings.assets = elapsed_ms(t);

    let ops = StackOps {
        cfn: &pre.clients.cfn,
        name: &stack_name,
        poll: aws::poll_interval(&cfg.target),
        progress,
        role_arn: Some(&pre.role),
    };
    let t = Instant::now();
    let deployed = ops.describe().await?;
    let settings = cfg
        .settings
        .resolve(deployed.as_ref().map(|d| &d.parameters), pre.labels_quota);
    let mut req = change_set_request(cfg, &app, arch, (&bucket, &pre.boundary), &artifacts)?;
    req.parameters.extend(settings.parameters());
    if req.template_body.len() > MAX_TEMPLATE_BODY {
        // Over the inline limit, CloudFormation reads it from the assets bucket, where it is
        // kept by its hash beside the stage's artifacts.
        let s3 = (&pre.clients.s3, pre.identity.account.as_str());
        let key =
            assets::upload_template(s3, &bucket, cfg.stage.as_str(), &req.template_body).await?;
        req.template_url = Some(template_url(&cfg.target, &pre.identity, &bucket, &key));
    }
    let mut notes = pre.notes.clone();
    if deployed.is_some() {
        let minutes = cfg
            .rollback_minutes
            .unwrap_or_else(|| default_rollback_minutes(&cfg.stage));
        let cw = &pre.clients.cloudwatch;
        req.rollback = Some(rollback_triggers(cw, &cfg.stage, minutes, &mut notes).await?);
    }
    if let Some(r) = req.rollback.as_ref().filter(|r| !r.is_empty()) {
        progress.step(&format!(
            "rollback triggers: {} alarm(s), watched for {} minutes after the update",
            r.alarm_arns.len(),
            r.minutes
        ));
    }
    let new_body = req.template_body.clone();
    let req_rollback = req.rollback.clone().filter(|r| !r.is_empty());
    let plan = plan(&ops, cfg, req).await?;
    let security = security_changes(&ops, &plan, &new_body).await?;
    timings.change_set = elapsed_ms(t);

    let mut report = DeployReport {
        stack: stack_name.clone(),
        stage: cfg.stage.as_str().to_string(),
        target: cfg.target.describe(),
        identity: pre.identity.clone(),
        architecture: arch.as_str().to_string(),
        status: Outcome::NoChanges,
        changes: Vec::new(),
        security,
        rollback: req_rollback,
        drift_overwritten: Vec::new(),
        artifacts,
        assets_bucket: bucket,
        scope: pre.scope,
        execution_role: pre.role.clone(),
        permissions_boundary: pre.boundary.clone(),
        outputs: BTreeMap::new(),
        settings,
        api_url: None,
        timings,
        notes,
    };
    if let Some(outputs) = apply(&ops, &pre.clients.lambda, cfg, plan, &mut report).await? {
        report.api_url = outputs
            .get(stack::app::outputs::API_URL)
            .map(|u| client_api_url(&cfg.target, u));
        report.outputs = outputs;
    }
    report.timings.total = elapsed_ms(started);
    Ok(report)
}

/// The change set's request: the template, the stack's parameters and its tags.
fn change_set_request(
    cfg: &DeployConfig,
    app: &App,
    arch: Architecture,
    bootstrap: (&str, &str),
    artifacts: &[Uploaded],
) -> Result<ChangeSetRequest, DeployError> {
    Ok(ChangeSetRequest {
        kind: Prepared::Update,
        template_url: None,
        template_body: template_body(app, &cfg.stage, arch)?,
        parameters: parameters(
            app,
            &cfg.stage,
            arch,
            bootstrap,
            artifacts,
            cfg.rekognition_endpoint.as_deref(),
        ),
        tags: BTreeMap::from([
            ("app".to_string(), stack::app::APP.to_string()),
            ("stage".to_string(), cfg.stage.as_str().to_string()),
        ]),
        imports: Vec::new(),
        rollback: None,
        revert_drift: cfg.revert_drift,
    })
}

/// Builds every handler for the target's architecture.
fn build_handlers(
    cfg: &DeployConfig,
    progress: &dyn StackProgress,
) -> Result<(Architecture, BuildReport), DeployError> {
    let build_arch = if cfg.target.is_local() {
        BuildArch::Host
    } else {
        BuildArch::Lambda(cfg.arch)
    };
    let arch = build_arch.resolve()?;
    let report = build::build(
        &BuildConfig {
            arch: build_arch,
            functions: cfg.rebuild.clone(),
            opt_level: None,
        },
        progress,
    )?;
    Ok((arch, report))
}

/// Uploads what the bootstrap's assets bucket lacks of this stage's artifacts.
async fn upload_assets(
    (s3, identity, bucket): (&aws_sdk_s3::Client, &Identity, &str),
    stage: &Stage,
    built: &BuildReport,
    progress: &dyn StackProgress,
) -> Result<Vec<Uploaded>, DeployError> {
    let artifacts =
        assets::upload_artifacts(s3, bucket, &identity.account, stage.as_str(), built).await?;
    let sent: Vec<&str> = artifacts
        .iter()
        .filter(|a| a.uploaded)
        .map(|a| a.function.as_str())
        .collect();
    progress.step(&if sent.is_empty() {
        format!("artifacts already in s3://{bucket}/{stage}/")
    } else {
        format!("uploaded {} to s3://{bucket}/{stage}/", sent.join(", "))
    });
    Ok(artifacts)
}

/// Executes the change set, then checks that what Lambda runs is what was built; returns the
/// stack's outputs.
async fn execute(
    ops: &StackOps<'_>,
    lambda: &aws_sdk_lambda::Client,
    (change_set, change_set_id, stack_id): (&str, &str, &str),
    cfg: &DeployConfig,
    app: &App,
    report: &mut DeployReport,
) -> Result<BTreeMap<String, String>, DeployError> {
    let t = Instant::now();
    let info = ops
        .execute(
            change_set,
            (change_set_id, stack_id),
            report.changes.len(),
            cfg.timeout,
        )
        .await?;
    report.timings.execute = Some(elapsed_ms(t));
    let t = Instant::now();
    verify_code(lambda, app, &info.outputs, &report.artifacts).await?;
    report.timings.verify = Some(elapsed_ms(t));
    Ok(info.outputs)
}

/// Compares each function's deployed `CodeSha256` with the artifact that was uploaded.
pub async fn verify_code(
    lambda: &aws_sdk_lambda::Client,
    app: &App,
    outputs: &BTreeMap<String, String>,
    artifacts: &[Uploaded],
) -> Result<(), DeployError> {
    for f in &app.functions {
        let key = f.function_name_output();
        let (Some(name), Some(artifact)) = (
            outputs.get(&key),
            artifacts.iter().find(|a| a.function == f.name),
        ) else {
            continue;
        };
        let out = lambda
            .get_function()
            .function_name(name)
            .send()
            .await
            .map_err(|e| DeployError::Function {
                function: f.name.to_string(),
                reason: crate::cloud::error::chain(&e),
            })?;
        let deployed = out
            .configuration()
            .and_then(|c| c.code_sha256())
            .unwrap_or_default()
            .to_string();
        if deployed != artifact.code_sha256 {
            return Err(DeployError::CodeMismatch {
                function: f.name.to_string(),
                deployed,
                built: artifact.code_sha256.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The synthesized template of a stage, as JSON.
    fn template() -> serde_json::Value {
        let stage = Stage::parse("dev").unwrap_or_else(|e| panic!("{e}"));
        let body = template_body(&App::image_pipeline(), &stage, Architecture::Arm64)
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The first statement list of the process function's role policy.
    fn process_statements(t: &mut serde_json::Value) -> &mut Vec<serde_json::Value> {
        let id = App::image_pipeline()
            .function("process")
            .map(|f| f.role_id())
            .unwrap_or_else(|| panic!("no process function"));
        t["Resources"][&id]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_array_mut()
            .unwrap_or_else(|| panic!("{id} has no policy statements"))
    }

    /// A progress that records its steps and answers every question with `answer`.
    struct Asked {
        answer: Option<bool>,
        asked: std::sync::Mutex<Vec<String>>,
    }

    impl crate::progress::Progress for Asked {
        fn step(&self, _: &str) {}
        fn confirm(&self, question: &str) -> Option<bool> {
            if let Ok(mut a) = self.asked.lock() {
                a.push(question.to_string());
            }
            self.answer
        }
    }

    impl StackProgress for Asked {}

    fn asked(answer: Option<bool>) -> Asked {
        Asked {
            answer,
            asked: std::sync::Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn a_deploy_adding_s3_star_on_star_is_refused_and_named() {
        let old = template();
        let mut new = old.clone();
        process_statements(&mut new).push(serde_json::json!({
            "Effect": "Allow", "Action": "s3:*", "Resource": "*"
        }));
        let changes = security::changes(Some(&old), &new);
        let nobody = asked(None);
        match gate(&nobody, false, Prepared::Update, &changes) {
            Err(DeployError::Broadening(lines)) => {
                assert_eq!(lines.len(), 1, "{lines:?}");
                assert!(lines[0].contains("Allow s3:* on *"), "{lines:?}");
                assert!(lines[0].starts_with("+ ProcessRole"), "{lines:?}");
            }
            other => panic!("not refused: {other:?}"),
        }
        let no = asked(Some(false));
        assert!(matches!(
            gate(&no, false, Prepared::Update, &changes),
            Err(DeployError::Declined)
        ));
        assert!(no.asked.lock().unwrap_or_else(|p| p.into_inner())[0].contains("s3:*"));
        assert!(gate(&asked(Some(true)), false, Prepared::Update, &changes).is_ok());
        assert!(gate(&asked(None), true, Prepared::Update, &changes).is_ok());
        // A new stage widens nothing that was there.
        assert!(gate(&asked(None), false, Prepared::Create, &changes).is_ok());
    }

    #[test]
    fn a_deploy_removing_an_action_passes_without_asking() {
        let old = template();
        let mut new = old.clone();
        let statements = process_statements(&mut new);
        let with_two = statements
            .iter_mut()
            .find(|s| s["Action"].as_array().is_some_and(|a| a.len() >= 2))
            .unwrap_or_else(|| panic!("no statement with two actions"));
        if let Some(a) = with_two["Action"].as_array_mut() {
            a.pop();
        }
        let changes = security::changes(Some(&old), &new);
        assert_eq!(changes.len(), 2, "{changes:#?}");
        assert!(security::broadening(&changes).is_empty(), "{changes:#?}");
        let nobody = asked(None);
        assert!(gate(&nobody, false, Prepared::Update, &changes).is_ok());
        assert!(
            nobody
                .asked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        );
        // The deployed template against itself: nothing to show.
        assert!(security::changes(Some(&old), &old).is_empty());
    }

    #[test]
    fn alarms_go_to_nobody_a_topic_or_an_address_and_nothing_else() {
        let parse = |s: &str| s.parse::<AlarmsTo>();
        assert_eq!(parse("none"), Ok(AlarmsTo::Nobody));
        let topic = "arn:aws:sns:eu-west-1:123456789012:ops-alarms";
        assert_eq!(parse(topic), Ok(AlarmsTo::Topic(topic.into())));
        assert_eq!(
            parse("ops@example.com"),
            Ok(AlarmsTo::Email("ops@example.com".into()))
        );
        for bad in [
            "arn:aws:sqs:eu-west-1:123456789012:q",
            "arn:aws:sns:eu-west-1:1234:t",
            "ops",
            "ops@localhost",
            "a b@example.com",
        ] {
            assert!(parse(bad).is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn compliance_options_parse_and_refuse_what_aws_would() {
        let key = "arn:aws:kms:eu-west-1:123456789012:key/0123abcd-4567-89ab-cdef-0123456789ab";
        assert_eq!(parse_kms_key(key).as_deref(), Ok(key));
        let mrk = "arn:aws:kms:eu-west-1:123456789012:key/mrk-0123456789abcdef0123456789abcdef";
        assert_eq!(parse_kms_key(mrk).as_deref(), Ok(mrk));
        assert_eq!(parse_kms_key("none").as_deref(), Ok(""));
        for bad in [
            "arn:aws:kms:eu-west-1:123456789012:alias/logs",
            "arn:aws:kms:eu-west-1:1234:key/0123abcd-4567-89ab-cdef-0123456789ab",
            "arn:aws:s3:::bucket",
            "0123abcd-4567-89ab-cdef-0123456789ab",
        ] {
            assert!(parse_kms_key(bad).is_err(), "{bad} was taken");
        }
        assert_eq!(
            parse_access_log_bucket("my-logs.example").as_deref(),
            Ok("my-logs.example")
        );
        assert_eq!(parse_access_log_bucket("NONE").as_deref(), Ok(""));
        for bad in ["ab", "My-Logs", "-logs", "logs-", "a_b_c"] {
            assert!(parse_access_log_bucket(bad).is_err(), "{bad} was taken");
        }
        assert_eq!(parse_log_retention("365"), Ok(365));
        assert!(parse_log_retention("364").is_err());
        assert!(parse_log_retention("a year").is_err());
    }

    #[test]
    fn compliance_options_keep_what_is_deployed_and_none_turns_them_off() {
        let key = "arn:aws:kms:eu-west-1:123456789012:key/0123abcd-4567-89ab-cdef-0123456789ab";
        let deployed = BTreeMap::from([
            (
                stack::synth::PARAM_LOG_RETENTION.to_string(),
                "365".to_string(),
            ),
            (stack::synth::PARAM_KMS_KEY.to_string(), key.to_string()),
            (
                stack::synth::PARAM_ACCESS_LOG_BUCKET.to_string(),
                "logs".to_string(),
            ),
        ]);
        let kept = StageSettings::default().resolve(Some(&deployed), None);
        assert_eq!(kept.log_retention_days, 365);
        assert_eq!(kept.kms_key.as_deref(), Some(key));
        assert_eq!(kept.access_log_bucket.as_deref(), Some("logs"));
        let off = StageSettings {
            kms_key: Some(String::new()),
            access_log_bucket: Some(String::new()),
            log_retention_days: Some(30),
            ..StageSettings::default()
        }
        .resolve(Some(&deployed), None);
        assert_eq!((&off.kms_key, &off.access_log_bucket), (&None, &None));
        let params: BTreeMap<String, String> = off.parameters().collect();
        assert_eq!(params[stack::synth::PARAM_KMS_KEY], "");
        assert_eq!(params[stack::synth::PARAM_LOG_RETENTION], "30");
        let fresh = StageSettings::default().resolve(None, None);
        assert_eq!(
            fresh.log_retention_days,
            stack::synth::DEFAULT_LOG_RETENTION_DAYS
        );
        assert_eq!((fresh.kms_key, fresh.access_log_bucket), (None, None));
        // Every parameter a deploy sets is one the template declares.
        let template = stack::synth::synthesize(
            &stack::App::image_pipeline(),
            &stack::synth::SynthOptions::default(),
        );
        for name in params.keys() {
            assert!(template.parameters.contains_key(name), "{name}");
        }
    }

    #[test]
    fn unset_alarm_settings_keep_what_is_deployed() {
        let deployed = BTreeMap::from([
            (stack::app::ALARM_TOPIC_PARAM.to_string(), String::new()),
            (
                stack::app::ALARM_EMAIL_PARAM.to_string(),
                "ops@example.com".to_string(),
            ),
            (
                stack::app::OLDEST_MESSAGE_ALARM_PARAM.to_string(),
                "900".to_string(),
            ),
        ]);
        let kept = StageSettings::default().resolve(Some(&deployed), None);
        assert_eq!(kept.alarms_to, AlarmsTo::Email("ops@example.com".into()));
        assert_eq!(kept.oldest_message_alarm_seconds, 900);
        let params: BTreeMap<String, String> = kept.parameters().collect();
        assert_eq!(params[stack::app::ALARM_EMAIL_PARAM], "ops@example.com");
        assert_eq!(params[stack::app::ALARM_TOPIC_PARAM], "");
        let none = StageSettings {
            alarms_to: Some(AlarmsTo::Nobody),
            ..StageSettings::default()
        }
        .resolve(Some(&deployed), None);
        assert_eq!(none.alarms_to, AlarmsTo::Nobody);
        let fresh = StageSettings::default().resolve(None, None);
        assert_eq!(
            (fresh.alarms_to, fresh.oldest_message_alarm_seconds),
            (
                AlarmsTo::Nobody,
                stack::app::DEFAULT_OLDEST_MESSAGE_ALARM_SECONDS
            )
        );
    }

    #[test]
    fn template_synthesizes_and_parameters_cover_every_function() {
        let app = App::image_pipeline();
        let stage = Stage::default();
        let body = template_body(&app, &stage, Architecture::Arm64);
        assert!(body.is_ok(), "{body:?}");
        let artifacts: Vec<Uploaded> = app
            .functions
            .iter()
            .map(|f| Uploaded {
                function: f.name.to_string(),
                key: format!("lambda/arm64/{}/x.zip", f.name),
                sha256: "x".into(),
                code_sha256: "y".into(),
                uploaded: true,
                bytes: 1,
            })
            .collect();
        let p = parameters(
            &app,
            &stage,
            Architecture::Arm64,
            (
                "assets",
                "arn:aws:iam::123456789012:policy/ImagePipelineBoundary-release-eu-west-1",
            ),
            &artifacts,
            None,
        );
        let template: serde_json::Value =
            serde_json::from_str(&body.unwrap_or_default()).unwrap_or_default();
        let declared: Vec<&String> = template["Parameters"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        for k in p.keys() {
            assert!(declared.contains(&k), "{k} is not a template parameter");
        }
        for k in declared {
            let has_default = template["Parameters"][k].get("Default").is_some();
            assert!(has_default || p.contains_key(k), "{k} has no value");
        }
    }
}
