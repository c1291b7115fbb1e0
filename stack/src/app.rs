//! The application model: which functions exist, what each is named, what it may touch, its
//! environment, its routes and triggers. Synthesis (`synth`) turns this into a template; the
//! deployer and the smoke test read the same model, so names are defined exactly once here.

use std::fmt;
use std::str::FromStr;

use api_types::Route;
use policies::arn::ResolveError;
use policies::{Access, ArnTemplate, Bindings, FunctionAccess, Part, PolicyDocument};
use thiserror::Error;

/// Prefix of every stack and of every named resource.
pub const APP: &str = "image-pipeline";
/// Objects the pipeline processes live under this key prefix.
pub const UPLOAD_PREFIX: &str = "uploads/";
/// Thumbnails, made on first request, live under this one (no trigger watches it).
pub const THUMBNAIL_PREFIX: &str = "thumbnails/";
/// The tag (key, value) the process function puts on an uploaded version that is not an image
/// Rekognition takes; the uploads bucket's lifecycle expires what carries it.
pub const REJECTED_TAG: (&str, &str) = ("image-pipeline-rejected", "true");
/// Days after which a rejected upload stops being current, and again until that noncurrent
/// version is deleted: gone within two days (plus S3's lifecycle lag, usually under a day).
pub const REJECTED_EXPIRY_DAYS: u32 = 1;
/// The images table's time-to-live attribute (epoch seconds): only `awaiting_upload` items
/// carry it, so an image that never arrived stops being listed.
pub const EXPIRY_ATTRIBUTE: &str = "expires_at";
/// The template parameter that carries the stage.
pub const STAGE_PARAM: &str = "Stage";
/// The template parameter of the optional Rekognition endpoint (local deploys only).
pub const REKOGNITION_ENDPOINT_PARAM: &str = "RekognitionEndpoint";
/// The template parameter that lets people sign themselves up (`true`), or only the
/// operator add them (`false`, the default).
pub const SELF_SIGN_UP_PARAM: &str = "SelfSignUp";
/// The DetectLabels quota the process function is paced for, in calls a second
/// ([`Pacing`]).
pub const LABELS_TPS_PARAM: &str = "DetectLabelsTps";
/// The event source mapping's `MaximumConcurrency` ([`Pacing::max_concurrency`]).
pub const PROCESS_CONCURRENCY_PARAM: &str = "ProcessMaximumConcurrency";
/// The process function's pace ([`Pacing::interval_ms`]).
pub const LABELS_INTERVAL_PARAM: &str = "DetectLabelsIntervalMs";
/// An SNS topic the stage's alarms notify (empty: none given).
pub const ALARM_TOPIC_PARAM: &str = "AlarmTopicArn";
/// An email address the stage's alarms notify through a topic of the stack (empty: none).
pub const ALARM_EMAIL_PARAM: &str = "AlarmEmail";
/// The age in seconds of the work queue's oldest message above which its alarm fires.
pub const OLDEST_MESSAGE_ALARM_PARAM: &str = "OldestMessageAlarmSeconds";
/// Its default: an hour. A record held back through a Rekognition outage waits up to 15
/// minutes between tries, so a queue that is only slow stays below it.
pub const DEFAULT_OLDEST_MESSAGE_ALARM_SECONDS: u32 = 3600;
/// The stage's alarms, by the suffix of their names.
pub mod alarms {
    /// Anything in the work queue's dead-letter queue.
    pub const DEAD_LETTERS: &str = "dead-letters";
    /// The work queue's oldest message older than `OldestMessageAlarmSeconds`.
    pub const OLDEST_MESSAGE: &str = "oldest-message";
    /// Any error of the process function.
    pub const PROCESS_ERRORS: &str = "process-errors";
    pub const ALL: [&str; 3] = [DEAD_LETTERS, OLDEST_MESSAGE, PROCESS_ERRORS];
    /// The CloudWatch dimensions they watch: an SQS queue's name, a Lambda function's.
    pub const QUEUE_DIMENSION: &str = "QueueName";
    pub const FUNCTION_DIMENSION: &str = "FunctionName";

    /// The physical names of a stage's alarms, `image-pipeline-{stage}-{short}`, in [`ALL`]'s
    /// order.
    pub fn names(stage: &crate::Stage) -> Vec<String> {
        ALL.iter()
            .map(|a| format!("{}-{a}", stage.stack_name()))
            .collect()
    }
}
/// The images one user may upload per UTC day (direct and presigned together).
pub const UPLOADS_PER_DAY_PARAM: &str = "UploadsPerUserPerDay";
/// Its default: enough for anyone's photos, and a ceiling on what one account costs in
/// Rekognition calls a day.
pub const DEFAULT_UPLOADS_PER_DAY: u32 = 1000;
/// The most a stage may allow.
pub const MAX_UPLOADS_PER_DAY: u32 = 1_000_000;

/// Keys of the stack's outputs (the per-function ones come from `FunctionSpec`).
pub mod outputs {
    pub const API_URL: &str = "ApiUrl";
    pub const BUCKET: &str = "UploadsBucketName";
    pub const TABLE: &str = "ImagesTableName";
    pub const LABELS_TABLE: &str = "LabelsTableName";
    pub const WORK_QUEUE_URL: &str = "WorkQueueUrl";
    pub const DEAD_LETTER_QUEUE_URL: &str = "DeadLetterQueueUrl";
    pub const LABELS_TPS: &str = "DetectLabelsTps";
    pub const USER_POOL_ID: &str = "UserPoolId";
    pub const USER_POOL_CLIENT_ID: &str = "UserPoolClientId";
    pub const UPLOADS_PER_DAY: &str = "UploadsPerUserPerDay";
}

/// The assets bucket, `image-pipeline-assets-<account>-<region>`: one per account and region,
/// held by the bootstrap stack (`bootstrap` imports one that an earlier version created
/// outside any stack), artifacts under `{stage}/`.
pub fn assets_bucket_name(account: &str, region: &str) -> String {
    format!("{APP}-assets-{account}-{region}")
}

/// Names of the bootstrap stack: what `cargo xtask bootstrap` creates once per account and
/// region, before any deploy. None of them starts with [`APP`]: no statement that the
/// deploying identity or an execution role holds on `image-pipeline-*` reaches them.
pub mod bootstrap {
    use std::fmt;

    /// Every bootstrap name starts with this.
    pub const PREFIX: &str = "ImagePipeline";
    /// The bootstrap stack.
    pub const STACK: &str = "ImagePipelineBootstrap";
    /// The stages the preview execution role may deploy unless `bootstrap` is told otherwise.
    pub const DEFAULT_PREVIEW_STAGES: &str = "pr-*";

    /// Which execution role (and permissions boundary) a deploy uses: `Release` may deploy
    /// every stage, `Preview` only the preview stages, so a preview identity cannot reach
    /// release stages even through CloudFormation.
    #[derive(
        Debug,
        Clone,
        Copy,
        PartialEq,
        Eq,
        PartialOrd,
        Ord,
        Hash,
        serde::Serialize,
        serde::Deserialize,
    )]
    #[serde(rename_all = "lowercase")]
    pub enum Scope {
        Release,
        Preview,
    }

    impl Scope {
        pub const ALL: [Scope; 2] = [Scope::Release, Scope::Preview];

        pub fn as_str(self) -> &'static str {
            match self {
                Scope::Release => "release",
                Scope::Preview => "preview",
            }
        }

        fn pascal(self) -> &'static str {
            match self {
                Scope::Release => "Release",
                Scope::Preview => "Preview",
            }
        }
    }

    impl fmt::Display for Scope {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.as_str())
        }
    }

    /// The bootstrap stack's bucket for Lambda artifacts (see [`super::assets_bucket_name`]).
    pub fn assets_bucket(account: &str, region: &str) -> String {
        super::assets_bucket_name(account, region)
    }

    /// The CloudFormation execution role of `scope` (role names are global to an account).
    pub fn execution_role(scope: Scope, region: &str) -> String {
        format!("{PREFIX}Exec-{scope}-{region}")
    }

    /// The managed policy every function role deployed with `scope`'s execution role carries
    /// as its permissions boundary.
    pub fn boundary(scope: Scope, region: &str) -> String {
        format!("{PREFIX}Boundary-{scope}-{region}")
    }

    /// The stack holding one CI role (`bootstrap --ci github`), named by a digest of what
    /// the role trusts so that each repository and branch or environment has its own.
    pub fn ci_stack(digest: &str) -> String {
        format!("{PREFIX}Ci-{digest}")
    }

    /// The CI role of [`ci_stack`].
    pub fn ci_role(digest: &str, region: &str) -> String {
        format!("{PREFIX}Ci-{digest}-{region}")
    }

    /// Output keys of the bootstrap stack.
    pub mod outputs {
        pub const ASSETS_BUCKET: &str = "AssetsBucket";
        pub const VERSION: &str = "BootstrapVersion";
        pub const PREVIEW_STAGES: &str = "PreviewStages";
        /// The CI role's ARN, output of a CI stack.
        pub const CI_ROLE: &str = "CiRoleArn";

        pub fn execution_role(scope: super::Scope) -> String {
            format!("{}ExecutionRoleArn", scope.pascal())
        }

        pub fn boundary(scope: super::Scope) -> String {
            format!("{}BoundaryArn", scope.pascal())
        }
    }
}

/// Environment variable names the handlers read.
pub mod env {
    pub const UPLOAD_BUCKET: &str = "UPLOAD_BUCKET";
    pub const UPLOAD_PREFIX: &str = "UPLOAD_PREFIX";
    pub const REJECTED_TAG: &str = "REJECTED_TAG";
    pub const IMAGES_TABLE: &str = "IMAGES_TABLE";
    pub const LABELS_TABLE: &str = "LABELS_TABLE";
    pub const THUMBNAIL_PREFIX: &str = "THUMBNAIL_PREFIX";
    pub const USER_POOL_ID: &str = "USER_POOL_ID";
    pub const USER_POOL_CLIENT_ID: &str = "USER_POOL_CLIENT_ID";
    pub const UPLOADS_PER_DAY: &str = "UPLOADS_PER_USER_PER_DAY";
    /// The role whose sessions reach one user's data (`handler_shared::scope`).
    pub const USER_ROLE_ARN: &str = "USER_ROLE_ARN";
    /// The work queue the process function holds records back in.
    pub const WORK_QUEUE_URL: &str = "WORK_QUEUE_URL";
    /// The process function's pace: one DetectLabels call per batch per this many ms.
    pub const LABELS_INTERVAL_MS: &str = "LABELS_INTERVAL_MS";
    /// The longest the process function holds a record back.
    pub const MAX_BACKOFF_SECONDS: &str = "MAX_BACKOFF_SECONDS";
    /// Honoured by the AWS SDK itself: a service-specific endpoint override.
    pub const REKOGNITION_ENDPOINT: &str = "AWS_ENDPOINT_URL_REKOGNITION";
}

/// The longest region code in any partition (`us-isof-south-1` is 15; leave headroom).
pub const MAX_REGION_LEN: usize = 16;
const ACCOUNT_LEN: usize = 12;
const MAX_BUCKET_NAME: usize = 63;
/// The uploads bucket is `image-pipeline-{stage}-{account}-{region}`; S3 caps bucket names at
/// 63 characters, which makes it the tightest of all derived names.
pub const MAX_STAGE_LEN: usize =
    MAX_BUCKET_NAME - (APP.len() + 1) - 1 - ACCOUNT_LEN - 1 - MAX_REGION_LEN;

/// A validated stage name: it becomes part of the stack name and every resource name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stage(String);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StageError {
    #[error("stage must not be empty")]
    Empty,
    #[error(
        "stage `{stage}` is {len} characters long; at most {max} fit in every derived name (the uploads bucket name is the tightest)"
    )]
    TooLong {
        stage: String,
        len: usize,
        max: usize,
    },
    #[error(
        "stage `{0}` may contain only lowercase letters, digits and single hyphens, must start with a letter and must not end with a hyphen"
    )]
    Invalid(String),
    #[error(
        "stage `{0}` is reserved: its uploads bucket would be named like the assets bucket every stage shares"
    )]
    Reserved(String),
}

/// Stage names whose derived names collide with something else of the app's:
/// `image-pipeline-assets-ACCOUNT-REGION` is the assets bucket.
const RESERVED_STAGES: &[&str] = &["assets"];

impl Stage {
    pub fn parse(s: &str) -> Result<Self, StageError> {
        if s.is_empty() {
            return Err(StageError::Empty);
        }
        let len = s.chars().count();
        if len > MAX_STAGE_LEN {
            return Err(StageError::TooLong {
                stage: s.to_string(),
                len,
                max: MAX_STAGE_LEN,
            });
        }
        let charset = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let starts = s.starts_with(|c: char| c.is_ascii_lowercase());
        if !charset || !starts || s.ends_with('-') || s.contains("--") {
            return Err(StageError::Invalid(s.to_string()));
        }
        if RESERVED_STAGES.contains(&s) {
            return Err(StageError::Reserved(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `image-pipeline-{stage}`: several stages live side by side in one account.
    pub fn stack_name(&self) -> String {
        format!("{APP}-{}", self.0)
    }

    /// The same pattern the template's `Stage` parameter enforces.
    pub const PATTERN: &str = "^[a-z](-?[a-z0-9])*$";
}

impl Default for Stage {
    fn default() -> Self {
        Self("dev".into())
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Stage {
    type Err = StageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A set of stages named by a pattern in which `*` stands for any run of characters: `*`
/// (every stage), `pr-*`, or one stage's name.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct StagePattern(String);

impl TryFrom<String> for StagePattern {
    type Error = StagePatternError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<StagePattern> for String {
    fn from(p: StagePattern) -> Self {
        p.0
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "stage pattern `{0}` may contain only lowercase letters, digits, hyphens and `*`, must start with a letter or `*`, and be at most {MAX_STAGE_LEN} characters"
)]
pub struct StagePatternError(String);

impl StagePattern {
    /// Every stage.
    pub fn all() -> Self {
        Self("*".into())
    }

    pub fn parse(s: &str) -> Result<Self, StagePatternError> {
        let charset = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '*');
        let starts = s.starts_with(|c: char| c.is_ascii_lowercase() || c == '*');
        if s.is_empty() || s.len() > MAX_STAGE_LEN || !charset || !starts {
            return Err(StagePatternError(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_all(&self) -> bool {
        self.0 == "*"
    }

    pub fn matches(&self, stage: &Stage) -> bool {
        policies::eval::wildcard_match(&self.0, stage.as_str())
    }
}

impl fmt::Display for StagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for StagePattern {
    type Err = StagePatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Lambda instruction set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Architecture {
    /// Graviton: cheaper per GB-second and at least as fast for this work.
    #[default]
    Arm64,
    X86_64,
}

impl Architecture {
    pub const ALL: [Architecture; 2] = [Architecture::Arm64, Architecture::X86_64];

    /// The name Lambda uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Arm64 => "arm64",
            Architecture::X86_64 => "x86_64",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown architecture `{0}`: expected arm64 or x86_64")]
pub struct ArchitectureError(String);

impl FromStr for Architecture {
    type Err = ArchitectureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "arm64" | "aarch64" => Ok(Architecture::Arm64),
            "x86_64" | "amd64" => Ok(Architecture::X86_64),
            other => Err(ArchitectureError(other.to_string())),
        }
    }
}

/// Physical names and ARNs of the stack's resources, as templates over `Stage`, account and
/// region. Naming resources deterministically is what breaks the bucket/notification cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Names;

fn named(suffix: &str) -> ArnTemplate {
    ArnTemplate::from_parts(vec![
        Part::Lit(format!("{APP}-")),
        Part::Ref(STAGE_PARAM.into()),
        Part::Lit(suffix.into()),
    ])
}

impl Names {
    pub fn bucket(&self) -> ArnTemplate {
        named("-").append(&ArnTemplate::from_parts(vec![
            Part::Account,
            Part::Lit("-".into()),
            Part::Region,
        ]))
    }

    pub fn bucket_arn(&self) -> ArnTemplate {
        ArnTemplate::arn("s3", false, false, self.bucket().parts().to_vec())
    }

    pub fn table(&self) -> ArnTemplate {
        named("-images")
    }

    pub fn table_arn(&self) -> ArnTemplate {
        let mut parts = vec![Part::Lit("table/".into())];
        parts.extend(self.table().parts().iter().cloned());
        ArnTemplate::arn("dynamodb", true, true, parts)
    }

    /// The images table's index of every image, newest first.
    pub fn listing_index_arn(&self) -> ArnTemplate {
        self.table_arn()
            .join(&format!("/index/{}", api_types::index::LISTING_INDEX))
    }

    /// The label index: each labeled image under each of its labels, and the label counts.
    pub fn labels_table(&self) -> ArnTemplate {
        named("-labels")
    }

    pub fn labels_table_arn(&self) -> ArnTemplate {
        let mut parts = vec![Part::Lit("table/".into())];
        parts.extend(self.labels_table().parts().iter().cloned());
        ArnTemplate::arn("dynamodb", true, true, parts)
    }

    /// The work queue: an S3 event per upload, waiting for the process function.
    pub fn work_queue(&self) -> ArnTemplate {
        named("-work")
    }

    pub fn work_queue_arn(&self) -> ArnTemplate {
        ArnTemplate::arn("sqs", true, true, self.work_queue().parts().to_vec())
    }

    /// The work queue's dead-letter queue: events retried for hours without an answer.
    pub fn dead_letter_queue(&self) -> ArnTemplate {
        named("-work-dead-letters")
    }

    pub fn dead_letter_queue_arn(&self) -> ArnTemplate {
        ArnTemplate::arn("sqs", true, true, self.dead_letter_queue().parts().to_vec())
    }

    /// One of the stage's CloudWatch alarms, `image-pipeline-{Stage}-{short}` ([`alarms`]).
    pub fn alarm(&self, short: &str) -> ArnTemplate {
        named(&format!("-{short}"))
    }

    pub fn alarm_arn(&self, short: &str) -> ArnTemplate {
        let mut parts = vec![Part::Lit("alarm:".into())];
        parts.extend(self.alarm(short).parts().iter().cloned());
        ArnTemplate::arn("cloudwatch", true, true, parts)
    }

    /// The SNS topic the stack makes when the alarms notify an email address.
    pub fn alarm_topic(&self) -> ArnTemplate {
        named("-alarms")
    }

    pub fn alarm_topic_arn(&self) -> ArnTemplate {
        ArnTemplate::arn("sns", true, true, self.alarm_topic().parts().to_vec())
    }

    /// The stack, `image-pipeline-{Stage}`: CloudFormation also starts the names it
    /// generates (the function roles') with it.
    pub fn stack(&self) -> ArnTemplate {
        ArnTemplate::from_parts(vec![
            Part::Lit(format!("{APP}-")),
            Part::Ref(STAGE_PARAM.into()),
        ])
    }

    pub fn function(&self, short: &str) -> ArnTemplate {
        named(&format!("-{short}"))
    }

    /// A function's role as CloudFormation names it: the stack, the role's logical id
    /// (`FunctionSpec::role_id`), then a suffix CloudFormation chooses (`suffix`).
    pub fn function_role(&self, role_id: &str, suffix: &str) -> ArnTemplate {
        self.stack().join(&format!("-{role_id}-{suffix}"))
    }

    pub fn function_arn(&self, short: &str) -> ArnTemplate {
        let mut parts = vec![Part::Lit("function:".into())];
        parts.extend(self.function(short).parts().iter().cloned());
        ArnTemplate::arn("lambda", true, true, parts)
    }

    pub fn log_group(&self, short: &str) -> ArnTemplate {
        ArnTemplate::lit("/aws/lambda/").append(&self.function(short))
    }

    pub fn log_group_arn(&self, log_group: &ArnTemplate) -> ArnTemplate {
        let mut parts = vec![Part::Lit("log-group:".into())];
        parts.extend(log_group.parts().iter().cloned());
        ArnTemplate::arn("logs", true, true, parts)
    }

    pub fn api(&self) -> ArnTemplate {
        named("-http-api")
    }

    /// The stage's Cognito user pool (its id is Cognito's; this is its name).
    pub fn user_pool(&self) -> ArnTemplate {
        named("-users")
    }

    /// The pool's one app client, the gallery's and the command line's.
    pub fn user_pool_client(&self) -> ArnTemplate {
        named("-app")
    }

    pub fn api_access_log_group(&self) -> ArnTemplate {
        ArnTemplate::lit("/aws/apigateway/").append(&self.api())
    }
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// A deployment-time name (bucket, table…).
    Name(ArnTemplate),
    Literal(String),
    /// A template parameter; the variable is left out entirely when the parameter is empty.
    OptionalParameter(&'static str),
    /// The id of another resource of the stack (its `Ref`), known once it exists.
    Resource(&'static str),
    /// A template parameter's value.
    Parameter(&'static str),
    /// The ARN of the function's own user role (`FunctionSpec::user_role_id`).
    UserRoleArn,
}

/// Logical ids of the stack's resources that the model itself refers to.
pub mod logical {
    pub const USER_POOL: &str = "UserPool";
    pub const USER_POOL_CLIENT: &str = "UserPoolClient";
    pub const WORK_QUEUE: &str = "WorkQueue";
    pub const DEAD_LETTER_QUEUE: &str = "WorkDeadLetterQueue";
}

/// How the process function keeps its DetectLabels calls below the account's quota of `Q`
/// calls a second. A concurrency cap alone does not bound the rate (a fast call frees its
/// slot at once), so both are derived from `Q`:
///
/// - the event source mapping runs at most [`max_concurrency`](Self::max_concurrency) batches
///   at once;
/// - a batch starts a call only on the wall clock's grid of
///   [`interval_ms`](Self::interval_ms) (every instant that is a multiple of it since the
///   epoch), at most one per grid point.
///
/// So no grid point starts more than `max_concurrency` calls, whichever instances run the
/// batches and however fast the calls return, and the rate is at most
/// `max_concurrency × 1000 / interval_ms`, which is at most [`HEADROOM`](Self::HEADROOM) × Q.
/// For Q ≥ 2 no one-second window holds more than Q calls either, even when calls reach
/// Rekognition up to [`ARRIVAL_JITTER_MS`](Self::ARRIVAL_JITTER_MS) later than others of
/// their grid point: a window of a second and that much holds at most Q calls' grid points.
/// Of the paces that keep both bounds, the one with the highest rate is taken (the fewest
/// batches among equals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub quota_tps: u32,
    pub max_concurrency: u32,
    pub interval_ms: u32,
}

impl Pacing {
    /// The share of the quota the function uses: the rest is left for bursts of clock skew
    /// and for anything else in the account that calls DetectLabels.
    pub const HEADROOM: f64 = 0.8;
    /// Calls a second one batch is asked for: about what one instance does with Rekognition's
    /// latency of a few hundred milliseconds.
    pub const PER_BATCH_TPS: f64 = 3.0;
    /// Lambda's bounds on an SQS mapping's `MaximumConcurrency`.
    pub const MIN_CONCURRENCY: u32 = 2;
    pub const MAX_CONCURRENCY: u32 = 1000;
    /// The quota a stage is paced for when nothing says otherwise: DetectLabels' lowest
    /// regional default.
    pub const DEFAULT_QUOTA_TPS: u32 = 5;
    /// The largest quota accepted (Rekognition's quotas are raised by request, in the tens or
    /// hundreds).
    pub const MAX_QUOTA_TPS: u32 = 10_000;
    /// How much later than the others of its grid point a call may reach Rekognition (a
    /// slow instance, a queue at the receiver) and the bound still hold. Measured: with none
    /// allowed, the local label service under a 10,000-image burst on 2 cores counted 22
    /// calls in one second at Q = 20, against the grid's 18.
    pub const ARRIVAL_JITTER_MS: u32 = 250;

    /// The pace for a quota of `quota_tps` calls a second (at least 1).
    pub fn from_quota(quota_tps: u32) -> Self {
        let q = quota_tps.clamp(1, Self::MAX_QUOTA_TPS);
        let budget = f64::from(q) * Self::HEADROOM;
        let shortest = (1000.0 / Self::PER_BATCH_TPS).ceil() as u32;
        // Grid points in any window of `window` ms: at most floor((window - 1) / interval) + 1.
        let window = 1000 + Self::ARRIVAL_JITTER_MS;
        let mut best: Option<Self> = None;
        for max_concurrency in Self::MIN_CONCURRENCY..=Self::MAX_CONCURRENCY {
            // Grid points one window may hold.
            let points = q / max_concurrency;
            if points == 0 {
                break;
            }
            let for_budget = (1000.0 * f64::from(max_concurrency) / budget).ceil() as u32;
            let interval_ms = for_budget.max(shortest).max((window - 1) / points + 1);
            let pace = Self {
                quota_tps: q,
                max_concurrency,
                interval_ms,
            };
            if best.is_none_or(|b| pace.calls_per_second() > b.calls_per_second() + 1e-9) {
                best = Some(pace);
            }
        }
        // A quota of 1 cannot take two batches' calls at once: the rate still stays below it.
        best.unwrap_or(Self {
            quota_tps: q,
            max_concurrency: Self::MIN_CONCURRENCY,
            interval_ms: (1000.0 * f64::from(Self::MIN_CONCURRENCY) / budget).ceil() as u32,
        })
    }

    /// The most calls a second this pace allows, over time.
    pub fn calls_per_second(&self) -> f64 {
        f64::from(self.max_concurrency) * 1000.0 / f64::from(self.interval_ms)
    }

    /// The most calls any one-second window can hold, counting calls up to
    /// [`ARRIVAL_JITTER_MS`](Self::ARRIVAL_JITTER_MS) late.
    pub fn peak_in_any_second(&self) -> u32 {
        self.max_concurrency * ((999 + Self::ARRIVAL_JITTER_MS) / self.interval_ms + 1)
    }
}

/// An API route a function serves: one of the API's routes (`api_types::Route`, which the
/// handlers dispatch on), with the names synthesis derives from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRoute(pub Route);

impl From<Route> for HttpRoute {
    fn from(r: Route) -> Self {
        Self(r)
    }
}

impl HttpRoute {
    pub fn method(&self) -> &'static str {
        self.0.method()
    }

    /// With `{name}` path parameters, as API Gateway route keys write them.
    pub fn path(&self) -> &'static str {
        self.0.path()
    }

    pub fn route_key(&self) -> String {
        self.0.key()
    }

    /// `Post` + `Upload`, `Get` + `Metadata` + `Id`: a stable logical-id stem.
    pub fn logical_stem(&self) -> String {
        let mut s = pascal(&self.method().to_ascii_lowercase());
        for seg in self.path().split('/').filter(|s| !s.is_empty()) {
            s.push_str(&pascal(seg.trim_matches(|c| c == '{' || c == '}')));
        }
        s
    }

    /// The path as execute-api ARNs see it: each `{param}` segment matches any value.
    pub fn arn_path(&self) -> String {
        self.path()
            .split('/')
            .map(|seg| if seg.starts_with('{') { "*" } else { seg })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// S3 `ObjectCreated` events under a prefix of the uploads bucket go to the work queue, and
/// an event source mapping hands them to the function in batches. The function reports each
/// record it must retry (`ReportBatchItemFailures`) and holds it back itself; a record
/// received [`MAX_RECEIVES`] times goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTrigger {
    pub prefix: &'static str,
    /// Records per invocation (at most 10 for an SQS mapping without a batching window).
    pub batch_size: u32,
    pub queue_arn: ArnTemplate,
}

/// Receives before a record goes to the dead-letter queue. With the function's back-off
/// (starting at a few seconds, doubling to [`MAX_BACKOFF_SECONDS`]) a record is retried for
/// about six hours first.
pub const MAX_RECEIVES: u32 = 30;
/// The longest the function holds a record back between two tries.
pub const MAX_BACKOFF_SECONDS: u32 = 900;
/// How much longer than the function's timeout the work queue's visibility timeout is: AWS's
/// advice for an SQS event source, so a record is never received twice while a try is running.
pub const VISIBILITY_TIMEOUT_FACTOR: u32 = 6;
/// How long an event waits in either queue: S3 events of an outage of up to two weeks are
/// still processed.
pub const QUEUE_RETENTION_SECONDS: u32 = 14 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// Short name: crate `functions/{name}`, function `image-pipeline-{stage}-{name}`.
    pub name: &'static str,
    pub description: &'static str,
    pub memory_mb: u32,
    pub timeout_seconds: u32,
    pub env: Vec<(&'static str, EnvValue)>,
    /// What the handler code touches; the function's own log group and work queue are added
    /// by `access()`.
    pub touches: Vec<Access>,
    pub routes: Vec<HttpRoute>,
    pub queue: Option<QueueTrigger>,
    /// Whether the handler reaches what it `touches` only as the signed-in user: in sessions
    /// of its own user role (`{Logical}UserRole`), each narrowed to one user by a session
    /// policy. Its execution role then holds none of that access, only `sts:AssumeRole` of the
    /// user role.
    pub scoped: bool,
}

impl FunctionSpec {
    /// `Upload`, used to build logical ids (`UploadFunction`, `UploadRole`…).
    pub fn logical(&self) -> String {
        pascal(self.name)
    }

    /// The stack output holding the function's physical name.
    pub fn function_name_output(&self) -> String {
        format!("{}FunctionName", self.logical())
    }

    /// The stack output holding the ARN of the function's execution role.
    pub fn role_arn_output(&self) -> String {
        format!("{}RoleArn", self.logical())
    }

    /// The name of the role's one inline policy.
    pub fn policy_name(&self) -> String {
        format!("{}-least-privilege", self.name)
    }

    /// The name of the user role's inline policy.
    pub fn user_policy_name(&self) -> String {
        format!("{}-least-privilege", self.user_role_name())
    }

    pub fn function_id(&self) -> String {
        format!("{}Function", self.logical())
    }

    pub fn role_id(&self) -> String {
        format!("{}Role", self.logical())
    }

    /// The role a scoped function's user sessions are sessions of.
    pub fn user_role_id(&self) -> String {
        format!("{}UserRole", self.logical())
    }

    /// The stack output holding the ARN of the function's user role.
    pub fn user_role_arn_output(&self) -> String {
        format!("{}UserRoleArn", self.logical())
    }

    /// The user role's ARN, its name as CloudFormation makes it with the suffix left open.
    pub fn user_role_arn(&self, names: &Names) -> ArnTemplate {
        let mut parts = vec![Part::Lit("role/".into())];
        parts.extend(
            names
                .function_role(&self.user_role_id(), "*")
                .parts()
                .iter()
                .cloned(),
        );
        ArnTemplate::arn("iam", false, true, parts)
    }

    /// The name the user role's access goes by in the matrix and the boundary.
    pub fn user_role_name(&self) -> String {
        format!("{}-user", self.name)
    }

    pub fn log_group_id(&self) -> String {
        format!("{}LogGroup", self.logical())
    }

    pub fn code_key_param(&self) -> String {
        format!("{}CodeKey", self.logical())
    }

    /// Everything the function's execution role must allow: what it touches, or for a
    /// scoped function only the assumption of its user role; then its work queue (what the
    /// event source mapping polls with, and the function's back-off) and its logs.
    pub fn access(&self, names: &Names) -> FunctionAccess {
        let mut access = if self.scoped {
            vec![Access::AssumeRole {
                role: self.user_role_arn(names),
            }]
        } else {
            self.touches.clone()
        };
        if let Some(q) = &self.queue {
            access.push(Access::SqsPoll {
                queue: q.queue_arn.clone(),
            });
            access.push(Access::SqsDelay {
                queue: q.queue_arn.clone(),
            });
        }
        access.push(Access::WriteLogs {
            log_group: names.log_group_arn(&names.log_group(self.name)),
        });
        FunctionAccess {
            name: self.name.to_string(),
            access,
        }
    }

    pub fn policy(&self, names: &Names) -> PolicyDocument<ArnTemplate> {
        self.access(names).policy()
    }

    /// What a scoped function's user role allows: everything the function touches, for every
    /// user (each session's policy narrows it to one).
    pub fn user_access(&self) -> Option<FunctionAccess> {
        self.scoped.then(|| FunctionAccess {
            name: self.user_role_name(),
            access: self.touches.clone(),
        })
    }

    /// The environment the function gets in one deployment; optional parameters are left
    /// out, as the template's condition leaves them out when empty.
    pub fn resolved_env(&self, b: &Bindings) -> Result<Vec<(String, String)>, ResolveError> {
        let mut out = Vec::new();
        for (k, v) in &self.env {
            match v {
                EnvValue::Name(t) => out.push((k.to_string(), t.resolve(b)?)),
                EnvValue::Literal(s) => out.push((k.to_string(), s.clone())),
                // Known only once deployed.
                EnvValue::OptionalParameter(_)
                | EnvValue::Resource(_)
                | EnvValue::Parameter(_)
                | EnvValue::UserRoleArn => {}
            }
        }
        Ok(out)
    }
}

/// The whole application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub names: Names,
    pub functions: Vec<FunctionSpec>,
}

/// POST /upload and POST /uploads: store or presign an upload, and record it as accepted.
fn upload_function(names: &Names) -> FunctionSpec {
    FunctionSpec {
        name: "upload",
        description: "POST /upload stores a validated image under uploads/; POST /uploads presigns a direct S3 upload; both record the image as accepted",
        memory_mb: 512,
        timeout_seconds: 15,
        env: vec![
            (env::UPLOAD_BUCKET, EnvValue::Name(names.bucket())),
            (env::UPLOAD_PREFIX, EnvValue::Literal(UPLOAD_PREFIX.into())),
            (env::IMAGES_TABLE, EnvValue::Name(names.table())),
            (env::LABELS_TABLE, EnvValue::Name(names.labels_table())),
            (
                env::UPLOADS_PER_DAY,
                EnvValue::Parameter(UPLOADS_PER_DAY_PARAM),
            ),
            (env::USER_ROLE_ARN, EnvValue::UserRoleArn),
        ],
        // Written as the signed-in user only (in sessions of its user role).
        touches: vec![
            // The user's count of the day, before anything is stored: one conditional ADD.
            Access::DynamoUpdate {
                table: names.labels_table_arn(),
            },
            Access::S3Put {
                bucket: names.bucket_arn(),
                prefix: UPLOAD_PREFIX.into(),
            },
            // The early item (`processing`, `awaiting_upload`): one conditional PutItem.
            Access::DynamoPut {
                table: names.table_arn(),
            },
        ],
        routes: vec![
            Route::Upload.into(),
            // Presigned PUT for images larger than API Gateway and Lambda can carry.
            Route::PresignUpload.into(),
        ],
        queue: None,
        scoped: true,
    }
}

/// The S3 trigger: label each upload with Rekognition and record it with its label index.
fn process_function(names: &Names) -> FunctionSpec {
    FunctionSpec {
        name: "process",
        description: "S3 ObjectCreated under uploads/, through the work queue: labels the image with Rekognition at the stage's pace and records it in DynamoDB",

        memory_mb: 256,
        timeout_seconds: 60,
        env: vec![
            (env::IMAGES_TABLE, EnvValue::Name(names.table())),
            (env::LABELS_TABLE, EnvValue::Name(names.labels_table())),
            (env::UPLOAD_BUCKET, EnvValue::Name(names.bucket())),
            (env::UPLOAD_PREFIX, EnvValue::Literal(UPLOAD_PREFIX.into())),
            (
                env::REJECTED_TAG,
                EnvValue::Literal(format!("{}={}", REJECTED_TAG.0, REJECTED_TAG.1)),
            ),
            (
                env::REKOGNITION_ENDPOINT,
                EnvValue::OptionalParameter(REKOGNITION_ENDPOINT_PARAM),
            ),
            (env::USER_ROLE_ARN, EnvValue::UserRoleArn),
            (env::WORK_QUEUE_URL, EnvValue::Resource(logical::WORK_QUEUE)),
            (
                env::LABELS_INTERVAL_MS,
                EnvValue::Parameter(LABELS_INTERVAL_PARAM),
            ),
            (
                env::MAX_BACKOFF_SECONDS,
                EnvValue::Literal(MAX_BACKOFF_SECONDS.to_string()),
            ),
        ],
        // Read, labeled and recorded as the image's owner only (in sessions of its user role).
        touches: vec![
            // The ranged GET of the first bytes and Rekognition (which reads an S3Object
            // with the caller's permissions) both read the version the event names.
            Access::S3GetVersion {
                bucket: names.bucket_arn(),
                prefix: UPLOAD_PREFIX.into(),
            },
            // A version that is not an image is tagged for the lifecycle to expire.
            Access::S3TagVersion {
                bucket: names.bucket_arn(),
                prefix: UPLOAD_PREFIX.into(),
            },
            // A read of a deleted upload must answer 404, not 403.
            Access::S3ListBucket {
                bucket: names.bucket_arn(),
            },
            Access::DetectLabels,
            Access::DynamoPut {
                table: names.table_arn(),
            },
            // With a labeled item, in one transaction: an entry per label (Put) and each
            // label's count (an UpdateItem ADD).
            Access::DynamoPut {
                table: names.labels_table_arn(),
            },
            Access::DynamoUpdate {
                table: names.labels_table_arn(),
            },
        ],
        routes: vec![],
        queue: Some(QueueTrigger {
            prefix: UPLOAD_PREFIX,
            batch_size: 10,
            queue_arn: names.work_queue_arn(),
        }),
        scoped: true,
    }
}

/// The reads of the labels: one image, the listing, search by label, the label counts.
fn metadata_function(names: &Names) -> FunctionSpec {
    FunctionSpec {
        name: "metadata",
        description: "GET /metadata, GET /metadata/{id} and GET /labels: reads labels from DynamoDB",
        memory_mb: 256,
        timeout_seconds: 10,
        env: vec![
            (env::IMAGES_TABLE, EnvValue::Name(names.table())),
            (env::LABELS_TABLE, EnvValue::Name(names.labels_table())),
            (env::USER_ROLE_ARN, EnvValue::UserRoleArn),
        ],
        // Read as the signed-in user only (in sessions of its user role).
        touches: vec![
            // One image's item.
            Access::DynamoGet {
                table: names.table_arn(),
            },
            // The listing, newest first, from the images table's index.
            Access::DynamoQuery {
                table: names.listing_index_arn(),
            },
            // Search by label and the label counts.
            Access::DynamoQuery {
                table: names.labels_table_arn(),
            },
        ],
        routes: vec![
            Route::ListMetadata.into(),
            Route::GetMetadata.into(),
            Route::ListLabels.into(),
        ],
        queue: None,
        scoped: true,
    }
}

/// An image and its thumbnail, for labeled images only.
fn images_function(names: &Names) -> FunctionSpec {
    FunctionSpec {
        name: "images",
        description: "GET /images/{id} and GET /images/{id}/thumbnail: a labeled image and its thumbnail, made once and cached under thumbnails/",
        // Decoding a photograph of up to 50 megapixels for its thumbnail.
        memory_mb: 1024,
        timeout_seconds: 15,
        env: vec![
            (env::IMAGES_TABLE, EnvValue::Name(names.table())),
            (env::UPLOAD_BUCKET, EnvValue::Name(names.bucket())),
            (env::UPLOAD_PREFIX, EnvValue::Literal(UPLOAD_PREFIX.into())),
            (
                env::THUMBNAIL_PREFIX,
                EnvValue::Literal(THUMBNAIL_PREFIX.into()),
            ),
            (env::USER_ROLE_ARN, EnvValue::UserRoleArn),
        ],
        // Read and written as the signed-in user only (in sessions of its user role).
        touches: vec![
            // The item's status, type and size: only labeled images are served.
            Access::DynamoGet {
                table: names.table_arn(),
            },
            // The original, read (or presigned for a redirect) by key.
            Access::S3Get {
                bucket: names.bucket_arn(),
                prefix: UPLOAD_PREFIX.into(),
            },
            // The cached thumbnail, read and written.
            Access::S3Get {
                bucket: names.bucket_arn(),
                prefix: THUMBNAIL_PREFIX.into(),
            },
            Access::S3Put {
                bucket: names.bucket_arn(),
                prefix: THUMBNAIL_PREFIX.into(),
            },
            // A thumbnail not cached yet must read as 404, not 403.
            Access::S3ListBucket {
                bucket: names.bucket_arn(),
            },
        ],
        routes: vec![Route::GetImage.into(), Route::GetThumbnail.into()],
        queue: None,
        scoped: true,
    }
}

/// `DELETE /images/{id}`: one user's image, with everything made from it.
fn delete_function(names: &Names) -> FunctionSpec {
    FunctionSpec {
        name: "delete",
        description: "DELETE /images/{id}: the owner's image (every version), its thumbnail, its item (a tombstone) and its label index entries",
        memory_mb: 256,
        timeout_seconds: 15,
        env: vec![
            (env::IMAGES_TABLE, EnvValue::Name(names.table())),
            (env::LABELS_TABLE, EnvValue::Name(names.labels_table())),
            (env::UPLOAD_BUCKET, EnvValue::Name(names.bucket())),
            (env::UPLOAD_PREFIX, EnvValue::Literal(UPLOAD_PREFIX.into())),
            (
                env::THUMBNAIL_PREFIX,
                EnvValue::Literal(THUMBNAIL_PREFIX.into()),
            ),
            (env::USER_ROLE_ARN, EnvValue::UserRoleArn),
        ],
        // Changed as the signed-in user only (in sessions of its user role).
        touches: vec![
            // The item, turned into a tombstone that returns what it replaced.
            Access::DynamoUpdate {
                table: names.table_arn(),
            },
            // Its label entries removed, and each label's count taken down.
            Access::DynamoDelete {
                table: names.labels_table_arn(),
            },
            Access::DynamoUpdate {
                table: names.labels_table_arn(),
            },
            // Every version of the original and of the thumbnail.
            Access::S3ListVersions {
                bucket: names.bucket_arn(),
            },
            Access::S3DeleteVersions {
                bucket: names.bucket_arn(),
                prefix: UPLOAD_PREFIX.into(),
            },
            Access::S3DeleteVersions {
                bucket: names.bucket_arn(),
                prefix: THUMBNAIL_PREFIX.into(),
            },
        ],
        routes: vec![Route::DeleteImage.into()],
        queue: None,
        scoped: true,
    }
}

/// The gallery page.
fn web_function(names: &Names) -> FunctionSpec {
    FunctionSpec {
        name: "web",
        description: "GET /: the gallery page (HTML, CSS and JS in one document, nothing from elsewhere)",
        memory_mb: 128,
        timeout_seconds: 3,
        // For the page's Content-Security-Policy: where a presigned PUT goes; and the user
        // pool the page signs in to.
        env: vec![
            (env::UPLOAD_BUCKET, EnvValue::Name(names.bucket())),
            (env::USER_POOL_ID, EnvValue::Resource(logical::USER_POOL)),
            (
                env::USER_POOL_CLIENT_ID,
                EnvValue::Resource(logical::USER_POOL_CLIENT),
            ),
        ],
        // Its own logs only.
        touches: vec![],
        routes: vec![Route::Gallery.into()],
        queue: None,
        scoped: false,
    }
}

impl App {
    /// The image pipeline: upload, process, metadata, images and the gallery page.
    pub fn image_pipeline() -> Self {
        let names = Names;
        Self {
            functions: vec![
                upload_function(&names),
                process_function(&names),
                metadata_function(&names),
                images_function(&names),
                delete_function(&names),
                web_function(&names),
            ],
            names,
        }
    }

    pub fn function(&self, name: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// Every role's access, in declaration order (the input of the allow/deny matrix): each
    /// function's execution role, followed by its user role if it has one.
    pub fn accesses(&self) -> Vec<FunctionAccess> {
        self.roles().into_iter().map(|(_, a)| a).collect()
    }

    /// Every role with the stack output that holds its ARN, and its access.
    pub fn roles(&self) -> Vec<(String, FunctionAccess)> {
        self.functions
            .iter()
            .flat_map(|f| {
                let user = f.user_access().map(|a| (f.user_role_arn_output(), a));
                std::iter::once((f.role_arn_output(), f.access(&self.names))).chain(user)
            })
            .collect()
    }
}

/// `metadata` -> `Metadata`, `process-failures` -> `ProcessFailures`.
pub fn pascal(s: &str) -> String {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut cs = w.chars();
            match cs.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + cs.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_validation() {
        for ok in [
            "dev",
            "pr-123",
            "a",
            "feature-x1",
            &"a".repeat(MAX_STAGE_LEN),
        ] {
            assert!(Stage::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(Stage::parse(""), Err(StageError::Empty));
        assert!(matches!(
            Stage::parse(&"a".repeat(MAX_STAGE_LEN + 1)),
            Err(StageError::TooLong { .. })
        ));
        for bad in [
            "Dev", "1dev", "-dev", "dev-", "de--v", "dev_x", "dev.x", "dév", "dev x",
        ] {
            assert_eq!(
                Stage::parse(bad),
                Err(StageError::Invalid(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            Stage::parse("assets"),
            Err(StageError::Reserved("assets".into()))
        );
        // The collision the reservation prevents.
        let b = Bindings::example("assets");
        assert_eq!(
            Names.bucket().resolve(&b).ok(),
            Some(assets_bucket_name(&b.account, &b.region))
        );
    }

    #[test]
    fn the_pace_stays_below_the_quota_for_every_quota() {
        for q in 1..=2000 {
            let p = Pacing::from_quota(q);
            assert!(
                (Pacing::MIN_CONCURRENCY..=Pacing::MAX_CONCURRENCY).contains(&p.max_concurrency),
                "Q={q}: {p:?}"
            );
            assert!(
                p.calls_per_second() <= Pacing::HEADROOM * f64::from(q) + 1e-9,
                "Q={q}: {p:?} allows {} a second",
                p.calls_per_second()
            );
            // Two batches at once cannot keep one second under a quota of 1.
            if q >= 2 {
                assert!(p.peak_in_any_second() <= q, "Q={q}: {p:?}");
            }
            // No batch is asked for more calls a second than one instance makes.
            assert!(
                f64::from(p.interval_ms) >= 1000.0 / Pacing::PER_BATCH_TPS,
                "Q={q}: {p:?}"
            );
        }
    }

    #[test]
    fn the_pace_uses_most_of_the_budget() {
        for q in [2, 3, 5, 10, 15, 20, 50, 100, 500, 2000] {
            let p = Pacing::from_quota(q);
            let budget = Pacing::HEADROOM * f64::from(q);
            assert!(p.calls_per_second() >= 0.95 * budget, "Q={q}: {p:?}");
        }
        // Ten batches, each calling every 625 ms: 16 calls a second; a window of 1.25 s
        // holds two grid points, 20 calls.
        assert_eq!(
            Pacing::from_quota(20),
            Pacing {
                quota_tps: 20,
                max_concurrency: 10,
                interval_ms: 625
            }
        );
    }

    #[test]
    fn every_derived_name_fits_aws_limits_at_the_longest_stage() {
        let stage = "a".repeat(MAX_STAGE_LEN);
        let mut b = Bindings::example(&stage);
        b.region = "x".repeat(MAX_REGION_LEN);
        let n = Names;
        let len = |t: ArnTemplate| t.resolve(&b).map(|s| s.len()).unwrap_or(usize::MAX);
        assert!(len(n.bucket()) <= 63, "bucket");
        assert!(len(n.table()) <= 255, "table");
        assert!(len(n.labels_table()) <= 255, "labels table");
        assert!(len(n.work_queue()) <= 80, "queue");
        assert!(len(n.dead_letter_queue()) <= 80, "dead-letter queue");

        for f in App::image_pipeline().functions {
            assert!(len(n.function(f.name)) <= 64, "function {}", f.name);
            assert!(len(n.log_group(f.name)) <= 512, "log group {}", f.name);
        }
        assert!(len(n.api()) <= 128, "api");
        assert!(
            Stage::parse(&stage)
                .map(|s| s.stack_name().len() <= 128)
                .unwrap_or(false)
        );
    }

    #[test]
    fn bucket_name_is_a_valid_s3_name() {
        let b = Bindings::example("pr-7");
        let name = Names.bucket().resolve(&b).unwrap_or_default();
        assert_eq!(name, "image-pipeline-pr-7-123456789012-us-east-1");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn route_helpers() {
        let r = HttpRoute(Route::GetMetadata);
        assert_eq!(r.route_key(), "GET /metadata/{id}");
        assert_eq!(r.logical_stem(), "GetMetadataId");
        assert_eq!(r.arn_path(), "/metadata/*");
        assert_eq!(pascal("process-failures"), "ProcessFailures");
    }

    #[test]
    fn architecture_names() {
        assert_eq!("arm64".parse(), Ok(Architecture::Arm64));
        assert_eq!("x86_64".parse(), Ok(Architecture::X86_64));
        assert!("sparc".parse::<Architecture>().is_err());
        assert_eq!(Architecture::default().as_str(), "arm64");
    }
}
