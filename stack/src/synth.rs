//! Synthesis: the application model in, the complete CloudFormation template out.
//! This is where every resource, the S3 trigger and the API routes are wired.

use std::collections::BTreeMap;

use policies::{Action, ArnTemplate, Effect, Part, PolicyDocument, Principal, Statement};

use crate::app::{
    ALARM_EMAIL_PARAM, ALARM_TOPIC_PARAM, APP, App, Architecture,
    DEFAULT_OLDEST_MESSAGE_ALARM_SECONDS, DEFAULT_UPLOADS_PER_DAY, EXPIRY_ATTRIBUTE, EnvValue,
    FunctionSpec, HttpRoute, LABELS_INTERVAL_PARAM, LABELS_TPS_PARAM, MAX_RECEIVES,
    MAX_UPLOADS_PER_DAY, Names, OLDEST_MESSAGE_ALARM_PARAM, PROCESS_CONCURRENCY_PARAM, Pacing,
    QUEUE_RETENTION_SECONDS, REJECTED_EXPIRY_DAYS, REJECTED_TAG, REKOGNITION_ENDPOINT_PARAM,
    SELF_SIGN_UP_PARAM, STAGE_PARAM, Stage, UPLOAD_PREFIX, UPLOADS_PER_DAY_PARAM,
    VISIBILITY_TIMEOUT_FACTOR, alarms, logical, outputs,
};
use crate::expr::Expr;
use crate::resources::*;
use crate::template::{Output, Parameter, Resource, Template};

/// What varies between syntheses. Everything else comes from the app model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SynthOptions {
    /// Default of the `Stage` parameter.
    pub stage: Stage,
    /// Default of the `Architecture` parameter.
    pub architecture: Architecture,
}

/// Log retention values CloudWatch Logs accepts.
pub const LOG_RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];
pub const DEFAULT_LOG_RETENTION_DAYS: u32 = 30;

pub const PARAM_ARCHITECTURE: &str = "Architecture";
pub const PARAM_LOG_RETENTION: &str = "LogRetentionInDays";
pub const PARAM_ARTIFACT_BUCKET: &str = "ArtifactBucket";
pub const PARAM_PERMISSIONS_BOUNDARY: &str = "PermissionsBoundaryArn";
pub const CONDITION_REKOGNITION_ENDPOINT: &str = "HasRekognitionEndpoint";
/// A customer managed KMS key for the uploads bucket and the log groups (empty: none).
pub const PARAM_KMS_KEY: &str = "KmsKeyArn";
pub const CONDITION_KMS_KEY: &str = "HasKmsKey";
/// A bucket of the operator's for the uploads bucket's server access logs (empty: none).
pub const PARAM_ACCESS_LOG_BUCKET: &str = "AccessLogBucket";
pub const CONDITION_ACCESS_LOGS: &str = "HasAccessLogBucket";

pub const BUCKET_ID: &str = "UploadsBucket";
pub const BUCKET_POLICY_ID: &str = "UploadsBucketPolicy";
pub const TABLE_ID: &str = "ImagesTable";
pub const LABELS_TABLE_ID: &str = "LabelsTable";
pub const QUEUE_ID: &str = logical::WORK_QUEUE;
pub const DEAD_LETTER_QUEUE_ID: &str = logical::DEAD_LETTER_QUEUE;
pub const QUEUE_POLICY_ID: &str = "WorkQueuePolicy";
pub const API_ID: &str = "HttpApi";
pub const API_STAGE_ID: &str = "HttpApiDefaultStage";
pub const API_LOG_GROUP_ID: &str = "HttpApiAccessLogGroup";
pub const AUTHORIZER_ID: &str = "HttpApiAuthorizer";
pub const USER_POOL_ID: &str = crate::app::logical::USER_POOL;
pub const USER_POOL_CLIENT_ID: &str = crate::app::logical::USER_POOL_CLIENT;
pub const CONDITION_SELF_SIGN_UP: &str = "SelfSignUpEnabled";
pub const CONDITION_ALARMS_TO_TOPIC: &str = "AlarmsToTopic";
pub const CONDITION_ALARMS_TO_EMAIL: &str = "AlarmsToEmail";
pub const CONDITION_ALARMS_TO_STACK_TOPIC: &str = "AlarmsToStackTopic";
pub const ALARM_TOPIC_ID: &str = "AlarmTopic";
/// How long an access or ID token is good for, in minutes: short, since the authorizer
/// cannot revoke one before it expires.
pub const ACCESS_TOKEN_MINUTES: u32 = 15;
/// How long a refresh token is good for, in days.
pub const REFRESH_TOKEN_DAYS: u32 = 7;
/// The shortest password the pool accepts.
pub const MIN_PASSWORD_LENGTH: u32 = 12;

/// API Gateway's hard integration limit is 30 s; API functions must finish before it.
pub const API_INTEGRATION_TIMEOUT_MS: u32 = 29_000;
const THROTTLE_BURST: u32 = 50;
const THROTTLE_RATE: f64 = 25.0;

fn act(a: &'static str) -> Action {
    Action::known(a)
}

fn sub(t: &ArnTemplate) -> Expr {
    Expr::from(t)
}

fn to_expr(doc: &PolicyDocument<ArnTemplate>) -> PolicyDocument<Expr> {
    doc.map_resources(sub)
}

pub fn synthesize(app: &App, opts: &SynthOptions) -> Template {
    let mut resources = BTreeMap::new();
    let mut outputs = BTreeMap::new();
    let mut parameters = base_parameters(opts);
    add_storage(&mut resources, &app.names);
    add_queues(&mut resources, app);
    for f in &app.functions {
        add_function(&mut resources, &mut parameters, &mut outputs, app, f);
    }
    add_uploads_bucket(&mut resources, app);
    add_user_pool(&mut resources, &app.names);
    add_http_api(&mut resources, app);
    add_alarms(&mut resources, app);
    add_outputs(&mut outputs);
    Template {
        format_version: crate::template::FORMAT_VERSION,
        description: format!(
            "{APP}: serverless image upload, labelling and metadata API (synthesized by cargo xtask synth)"
        ),
        parameters,
        conditions: conditions(),
        resources,
        outputs,
    }
}

/// Whether a string parameter is set (not empty).
fn set(param: &str) -> Expr {
    Expr::Not(Box::new(Expr::Equals(
        Box::new(Expr::r#ref(param)),
        Box::new(Expr::str("")),
    )))
}

/// The template's conditions, each on the parameters.
fn conditions() -> BTreeMap<String, Expr> {
    let unset = |param: &str| Expr::Equals(Box::new(Expr::r#ref(param)), Box::new(Expr::str("")));
    BTreeMap::from([
        (
            CONDITION_REKOGNITION_ENDPOINT,
            set(REKOGNITION_ENDPOINT_PARAM),
        ),
        (
            CONDITION_SELF_SIGN_UP,
            Expr::Equals(
                Box::new(Expr::r#ref(SELF_SIGN_UP_PARAM)),
                Box::new(Expr::str("true")),
            ),
        ),
        (CONDITION_ALARMS_TO_TOPIC, set(ALARM_TOPIC_PARAM)),
        (CONDITION_ALARMS_TO_STACK_TOPIC, unset(ALARM_TOPIC_PARAM)),
        (CONDITION_ALARMS_TO_EMAIL, set(ALARM_EMAIL_PARAM)),
        (CONDITION_KMS_KEY, set(PARAM_KMS_KEY)),
        (CONDITION_ACCESS_LOGS, set(PARAM_ACCESS_LOG_BUCKET)),
    ])
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn key(name: &str, key_type: &str) -> KeySchemaElement {
    KeySchemaElement {
        attribute_name: name.into(),
        key_type: key_type.into(),
    }
}

fn string(name: &str) -> AttributeDefinition {
    AttributeDefinition {
        attribute_name: name.into(),
        attribute_type: "S".into(),
    }
}

/// Why both tables keep the AWS managed key.
const AWS_MANAGED_KEY: &str = "encrypted with the AWS managed KMS key (SSEType KMS); a customer managed key would add a key per stage and key policy administration for no extra protection of label metadata";

/// The images table: one item per image, and the newest-first listing index.
fn images_table(names: &Names) -> Table {
    use api_types::index;
    Table {
        table_name: sub(&names.table()),
        billing_mode: "PAY_PER_REQUEST".into(),
        attribute_definitions: vec![
            string(index::OWNER),
            string(index::IMAGE_ID),
            string(index::UPLOADED_AT),
        ],
        // A partition per user: a user's reads and writes name their own partition, which
        // a policy can confine them to (`dynamodb:LeadingKeys`).
        key_schema: vec![key(index::OWNER, "HASH"), key(index::IMAGE_ID, "RANGE")],
        // `GET /metadata`: a user's images, newest first, as one Query.
        global_secondary_indexes: vec![GlobalSecondaryIndex {
            index_name: index::LISTING_INDEX.into(),
            key_schema: vec![key(index::OWNER, "HASH"), key(index::UPLOADED_AT, "RANGE")],
            projection: Projection {
                projection_type: "ALL".into(),
            },
        }],
        point_in_time_recovery_specification: PointInTimeRecovery {
            point_in_time_recovery_enabled: true,
        },
        sse_specification: SseSpecification {
            sse_enabled: true,
            sse_type: Some("KMS".into()),
        },
        // An `awaiting_upload` item whose image never arrived expires.
        time_to_live_specification: Some(TimeToLive {
            attribute_name: EXPIRY_ATTRIBUTE.into(),
            enabled: true,
        }),
    }
}

/// The label index (docs/data-model.md): a partition per label, newest image first, and
/// one partition of label counts.
fn labels_table(names: &Names) -> Table {
    Table {
        table_name: sub(&names.labels_table()),
        billing_mode: "PAY_PER_REQUEST".into(),
        attribute_definitions: vec![
            string(api_types::index::PARTITION_KEY),
            string(api_types::index::SORT_KEY),
        ],
        key_schema: vec![
            key(api_types::index::PARTITION_KEY, "HASH"),
            key(api_types::index::SORT_KEY, "RANGE"),
        ],
        point_in_time_recovery_specification: PointInTimeRecovery {
            point_in_time_recovery_enabled: true,
        },
        sse_specification: SseSpecification {
            sse_enabled: true,
            sse_type: Some("KMS".into()),
        },
        // A day's upload count expires once the day is over.
        time_to_live_specification: Some(TimeToLive {
            attribute_name: EXPIRY_ATTRIBUTE.into(),
            enabled: true,
        }),
        global_secondary_indexes: Vec::new(),
    }
}

/// The images table and the label index.
fn add_storage(resources: &mut BTreeMap<String, Resource>, names: &Names) {
    for (id, table) in [
        (TABLE_ID, images_table(names)),
        (LABELS_TABLE_ID, labels_table(names)),
    ] {
        resources.insert(
            id.to_string(),
            Resource::new(ResourceProps::Table(table))
                .deleted_with_stack()
                .skip_check("CKV_AWS_119", AWS_MANAGED_KEY),
        );
    }
}

const SQS_SSE_REASON: &str = "encrypted at rest with SQS managed keys (SqsManagedSseEnabled), which this check does not recognise; a KMS key would add kms permissions to the role, and S3 can send only to a queue whose key policy admits it, for no gain";

/// The work queue between S3 and the process function, its dead-letter queue, and the
/// queue policy that admits the uploads bucket's events and nothing else.
fn add_queues(resources: &mut BTreeMap<String, Resource>, app: &App) {
    let names = &app.names;
    // A try may run for the function's whole timeout; the queue must not hand the record to
    // a second batch meanwhile.
    let timeout = app
        .functions
        .iter()
        .filter(|f| f.queue.is_some())
        .map(|f| f.timeout_seconds)
        .max()
        .unwrap_or(60);
    let work = Queue {
        queue_name: sub(&names.work_queue()),
        message_retention_period: QUEUE_RETENTION_SECONDS,
        sqs_managed_sse_enabled: true,
        visibility_timeout: Some(VISIBILITY_TIMEOUT_FACTOR * timeout),
        redrive_policy: Some(RedrivePolicy {
            dead_letter_target_arn: Expr::get_att(DEAD_LETTER_QUEUE_ID, "Arn"),
            max_receive_count: MAX_RECEIVES,
        }),
        redrive_allow_policy: None,
    };
    let dead = Queue {
        queue_name: sub(&names.dead_letter_queue()),
        message_retention_period: QUEUE_RETENTION_SECONDS,
        sqs_managed_sse_enabled: true,
        visibility_timeout: None,
        redrive_policy: None,
        redrive_allow_policy: Some(RedriveAllowPolicy {
            redrive_permission: "byQueue".into(),
            source_queue_arns: vec![sub(&names.work_queue_arn())],
        }),
    };
    for (id, q) in [(QUEUE_ID, work), (DEAD_LETTER_QUEUE_ID, dead)] {
        resources.insert(
            id.to_string(),
            Resource::new(ResourceProps::Queue(q))
                .deleted_with_stack()
                .skip_check("CKV_AWS_27", SQS_SSE_REASON),
        );
    }
    resources.insert(
        QUEUE_POLICY_ID.to_string(),
        Resource::new(ResourceProps::QueuePolicy(QueuePolicy {
            queues: vec![Expr::r#ref(QUEUE_ID)],
            policy_document: work_queue_policy(names),
        })),
    );
}

/// S3 may send the uploads bucket's events, from this account, and nothing else; nobody
/// reaches the queue without TLS.
fn work_queue_policy(names: &Names) -> ResourcePolicy {
    let queue = Expr::get_att(QUEUE_ID, "Arn");
    let one = |op: &str, key: &str, value: Expr| {
        (op.to_string(), BTreeMap::from([(key.to_string(), value)]))
    };
    ResourcePolicy {
        version: policies::document::POLICY_VERSION,
        statement: vec![
            ResourceStatement {
                sid: "UploadsBucketEvents".into(),
                effect: Effect::Allow,
                principal: Principal::Service("s3.amazonaws.com".into()),
                action: vec![act("sqs:SendMessage")],
                resource: vec![queue.clone()],
                condition: BTreeMap::from([
                    one("ArnEquals", "aws:SourceArn", sub(&names.bucket_arn())),
                    one(
                        "StringEquals",
                        "aws:SourceAccount",
                        Expr::r#ref("AWS::AccountId"),
                    ),
                ]),
            },
            ResourceStatement {
                sid: "DenyInsecureTransport".into(),
                effect: Effect::Deny,
                principal: Principal::Everyone,
                action: vec![act("sqs:*")],
                resource: vec![queue],
                condition: BTreeMap::from([one("Bool", "aws:SecureTransport", Expr::str("false"))]),
            },
        ],
    }
}

/// The mapping that hands the work queue's records to the function in batches, at most
/// `ProcessMaximumConcurrency` at once, each record it reports failed kept for a later try.
fn add_event_source_mapping(resources: &mut BTreeMap<String, Resource>, f: &FunctionSpec) {
    let Some(q) = &f.queue else { return };
    resources.insert(
        format!("{}QueueMapping", f.logical()),
        Resource::new(ResourceProps::EventSourceMapping(EventSourceMapping {
            event_source_arn: Expr::get_att(QUEUE_ID, "Arn"),
            function_name: Expr::r#ref(f.function_id()),
            batch_size: q.batch_size,
            enabled: true,
            function_response_types: vec!["ReportBatchItemFailures".into()],
            scaling_config: ScalingConfig {
                maximum_concurrency: Expr::r#ref(PROCESS_CONCURRENCY_PARAM),
            },
        }))
        // Lambda checks the role's SQS permissions when the mapping is created.
        .depends_on(&f.role_id()),
    );
}

/// A bucket policy that denies every request to `bucket` and `objects` not made over TLS,
/// its condition's value a plain string (the form Control Tower's CT.S3.PR.8 recognises).
pub fn tls_only(bucket: Expr, objects: Expr) -> ResourcePolicy {
    ResourcePolicy {
        version: policies::document::POLICY_VERSION,
        statement: vec![ResourceStatement {
            sid: "DenyInsecureTransport".into(),
            effect: Effect::Deny,
            principal: Principal::Everyone,
            action: vec![act("s3:*")],
            resource: vec![bucket, objects],
            condition: BTreeMap::from([(
                "Bool".to_string(),
                BTreeMap::from([("aws:SecureTransport".to_string(), Expr::str("false"))]),
            )]),
        }],
    }
}

/// The stage's KMS key where one is given, else nothing (the service's own key).
fn kms_key() -> Expr {
    Expr::if_(CONDITION_KMS_KEY, Expr::r#ref(PARAM_KMS_KEY), Expr::NoValue)
}

/// Old versions expire after 30 days; what the process function found not to be an image is
/// current for a day, then noncurrent for a day, then gone.
fn lifecycle_rules() -> Vec<LifecycleRule> {
    vec![
        LifecycleRule {
            id: "expire-old-versions".into(),
            status: "Enabled".into(),
            prefix: None,
            tag_filters: Vec::new(),
            expiration_in_days: None,
            abort_incomplete_multipart_upload: Some(AbortIncompleteMultipartUpload {
                days_after_initiation: 1,
            }),
            noncurrent_version_expiration: Some(NoncurrentVersionExpiration {
                noncurrent_days: 30,
            }),
        },
        // What the process function found not to be an image: current for a day,
        // then noncurrent for a day, then gone.
        LifecycleRule {
            id: "expire-rejected-uploads".into(),
            status: "Enabled".into(),
            prefix: Some(UPLOAD_PREFIX.into()),
            tag_filters: vec![TagFilter {
                key: REJECTED_TAG.0.into(),
                value: REJECTED_TAG.1.into(),
            }],
            expiration_in_days: Some(REJECTED_EXPIRY_DAYS),
            abort_incomplete_multipart_upload: None,
            noncurrent_version_expiration: Some(NoncurrentVersionExpiration {
                noncurrent_days: REJECTED_EXPIRY_DAYS,
            }),
        },
    ]
}

/// The uploads bucket, its TLS-only policy, and its events to the work queue.
fn add_uploads_bucket(resources: &mut BTreeMap<String, Resource>, app: &App) {
    let names = &app.names;
    // S3 checks that it may send to the queue when the notification is set: the bucket waits
    // for the queue policy. The policy's SourceArn is built from the bucket's deterministic
    // name, not a reference to it: no cycle.
    let notifications = app
        .functions
        .iter()
        .filter_map(|f| f.queue.as_ref())
        .map(|q| QueueNotification {
            event: "s3:ObjectCreated:*".into(),
            filter: NotificationFilter {
                s3_key: KeyFilter {
                    rules: vec![FilterRule {
                        name: "prefix".into(),
                        value: q.prefix.into(),
                    }],
                },
            },
            queue: Expr::get_att(QUEUE_ID, "Arn"),
        })
        .collect();
    let bucket = Bucket {
        lifecycle_configuration: Some(Lifecycle {
            rules: lifecycle_rules(),
        }),
        notification_configuration: Some(Notification {
            queue_configurations: notifications,
        }),
        // The gallery page PUTs large images with the URL `POST /uploads` presigned. The
        // signature is what authorizes the PUT (anyone holding the URL can use it, browser or
        // not), so CORS adds no access; it only lets a browser send it. PUT only, with the
        // headers the signature covers.
        cors_configuration: Some(Cors {
            cors_rules: vec![CorsRule {
                allowed_methods: vec!["PUT".into()],
                allowed_origins: vec!["*".into()],
                allowed_headers: vec!["content-type".into(), "if-none-match".into()],
                max_age: 600,
            }],
        }),
        logging_configuration: Some(Expr::if_(
            CONDITION_ACCESS_LOGS,
            Expr::Object(BTreeMap::from([
                (
                    "DestinationBucketName".to_string(),
                    Expr::r#ref(PARAM_ACCESS_LOG_BUCKET),
                ),
                ("LogFilePrefix".to_string(), sub(&names.bucket().join("/"))),
            ])),
            Expr::NoValue,
        )),
        bucket_encryption: BucketEncryption {
            server_side_encryption_configuration: vec![EncryptionRule {
                server_side_encryption_by_default: EncryptionByDefault {
                    sse_algorithm: Expr::if_(
                        CONDITION_KMS_KEY,
                        Expr::str("aws:kms"),
                        Expr::str("AES256"),
                    ),
                    kms_master_key_id: Some(kms_key()),
                },
                bucket_key_enabled: Some(Expr::if_(
                    CONDITION_KMS_KEY,
                    Expr::Bool(true),
                    Expr::NoValue,
                )),
            }],
        },
        ..Bucket::locked_down(sub(&names.bucket()))
    };
    let mut bucket_resource = Resource::new(ResourceProps::Bucket(Box::new(bucket)))
        .deleted_with_stack()
        .skip_check(
            "CKV_AWS_19",
            "encrypted either way: SSEAlgorithm is AES256, or aws:kms with the stage's key when it sets --kms-key, a condition (Fn::If) this check cannot read",
        )
        .skip_check(
            "CKV_AWS_18",
            "server access logging is the stage option --access-log-bucket, off by default: it needs a long-lived log bucket outside the stage; every write arrives through the HTTP API, whose access log records it, and object-level auditing belongs to the account's CloudTrail",
        );
    bucket_resource.depends_on = vec![QUEUE_POLICY_ID.to_string()];
    resources.insert(BUCKET_ID.to_string(), bucket_resource);
    resources.insert(
        BUCKET_POLICY_ID.to_string(),
        Resource::new(ResourceProps::BucketPolicy(BucketPolicy {
            bucket: Expr::r#ref(BUCKET_ID),
            // The bucket's ARN attribute and its objects under it (not the name written
            // out): the form CT.S3.PR.8 recognises in a template.
            policy_document: tls_only(
                Expr::get_att(BUCKET_ID, "Arn"),
                Expr::Join(
                    String::new(),
                    vec![Expr::get_att(BUCKET_ID, "Arn"), Expr::str("/*")],
                ),
            ),
        })),
    );
}

/// The outputs the deployer and the smoke test read (the per-function ones come with each
/// function).
fn add_outputs(outputs: &mut BTreeMap<String, Output>) {
    outputs.insert(
        outputs::API_URL.into(),
        output(
            "Base URL of the HTTP API",
            Expr::get_att(API_ID, "ApiEndpoint"),
        ),
    );
    outputs.insert(
        outputs::BUCKET.into(),
        output("Bucket that receives uploads", Expr::r#ref(BUCKET_ID)),
    );
    outputs.insert(
        outputs::TABLE.into(),
        output("Table of image metadata and labels", Expr::r#ref(TABLE_ID)),
    );
    outputs.insert(
        outputs::LABELS_TABLE.into(),
        output(
            "Index of images by label, and the label counts",
            Expr::r#ref(LABELS_TABLE_ID),
        ),
    );
    outputs.insert(
        outputs::USER_POOL_ID.into(),
        output("The stage's user pool", Expr::r#ref(USER_POOL_ID)),
    );
    outputs.insert(
        outputs::USER_POOL_CLIENT_ID.into(),
        output(
            "The user pool's app client (the gallery's and the command line's)",
            Expr::r#ref(USER_POOL_CLIENT_ID),
        ),
    );
    outputs.insert(
        outputs::UPLOADS_PER_DAY.into(),
        output(
            "Images one user may upload per UTC day",
            Expr::r#ref(UPLOADS_PER_DAY_PARAM),
        ),
    );
    outputs.insert(
        outputs::WORK_QUEUE_URL.into(),
        output(
            "Queue of S3 events waiting for the process function",
            Expr::r#ref(QUEUE_ID),
        ),
    );
    outputs.insert(
        outputs::DEAD_LETTER_QUEUE_URL.into(),
        output(
            "Queue of S3 events the process function gave up on after hours of tries",
            Expr::r#ref(DEAD_LETTER_QUEUE_ID),
        ),
    );
    outputs.insert(
        outputs::LABELS_TPS.into(),
        output(
            "The DetectLabels quota (calls a second) the process function is paced for",
            Expr::r#ref(LABELS_TPS_PARAM),
        ),
    );
}

fn output(description: &str, value: Expr) -> Output {
    Output {
        description: description.to_string(),
        value,
    }
}

fn base_parameters(opts: &SynthOptions) -> BTreeMap<String, Parameter> {
    let mut p = BTreeMap::new();
    let mut stage = Parameter::string(
        "Deployment stage; part of every resource name, so stages live side by side",
    )
    .default(opts.stage.as_str());
    stage.allowed_pattern = Some(Stage::PATTERN.into());
    stage.min_length = Some(1);
    stage.max_length = Some(crate::app::MAX_STAGE_LEN as u32);
    stage.constraint_description =
        Some("lowercase letters, digits and single hyphens, starting with a letter".into());
    p.insert(STAGE_PARAM.to_string(), stage);
    p.insert(
        PARAM_ARCHITECTURE.to_string(),
        Parameter::string("Instruction set of every function; must match the uploaded artifacts")
            .default(opts.architecture.as_str())
            .allowed(Architecture::ALL.iter().map(|a| a.as_str())),
    );
    p.insert(
        PARAM_LOG_RETENTION.to_string(),
        Parameter::number("Days to keep function and API access logs")
            .default(DEFAULT_LOG_RETENTION_DAYS.to_string())
            .allowed(LOG_RETENTION_DAYS.iter().map(u32::to_string)),
    );
    p.insert(
        REKOGNITION_ENDPOINT_PARAM.to_string(),
        Parameter::string(
            "Rekognition endpoint override for the local environment; empty on AWS, where the function uses the regional endpoint",
        )
        .default(""),
    );
    p.insert(
        SELF_SIGN_UP_PARAM.to_string(),
        Parameter::string(
            "Whether people may sign themselves up (true), or only the operator adds users (false)",
        )
        .default("false")
        .allowed(["false", "true"]),
    );
    p.insert(
        UPLOADS_PER_DAY_PARAM.to_string(),
        Parameter::number(
            "Images one user may upload per UTC day, direct and presigned together; above it POST /upload and POST /uploads answer 429",
        )
        .default(DEFAULT_UPLOADS_PER_DAY.to_string())
        .range(1, MAX_UPLOADS_PER_DAY),
    );
    pacing_parameters(&mut p);
    alarm_parameters(&mut p);
    compliance_parameters(&mut p);
    let mut bucket = Parameter::string("Bucket holding the function artifacts (same region)");

    bucket.min_length = Some(3);
    bucket.max_length = Some(63);
    p.insert(PARAM_ARTIFACT_BUCKET.to_string(), bucket);
    let mut boundary = Parameter::string(
        "Managed policy (from the bootstrap stack) every function role carries as its permissions boundary",
    );
    boundary.allowed_pattern = Some(format!(
        "^arn:[a-z-]+:iam::[0-9]{{12}}:policy/{}Boundary-[a-z]+-[a-z0-9-]+$",
        crate::app::bootstrap::PREFIX
    ));
    boundary.constraint_description =
        Some("the ARN of a boundary policy of the bootstrap stack".into());
    p.insert(PARAM_PERMISSIONS_BOUNDARY.to_string(), boundary);
    p
}

/// The DetectLabels quota and the pace derived from it ([`Pacing`]): the deployer sets all
/// three from one quota; the defaults are those of [`Pacing::DEFAULT_QUOTA_TPS`].
fn pacing_parameters(p: &mut BTreeMap<String, Parameter>) {
    let pace = Pacing::from_quota(Pacing::DEFAULT_QUOTA_TPS);
    p.insert(
        LABELS_TPS_PARAM.to_string(),
        Parameter::number(
            "The account's DetectLabels quota in calls a second, which the process function stays below",
        )
        .default(pace.quota_tps.to_string())
        .range(1, Pacing::MAX_QUOTA_TPS),
    );
    p.insert(
        PROCESS_CONCURRENCY_PARAM.to_string(),
        Parameter::number(
            "Batches of the work queue processed at once (derived from DetectLabelsTps by the deployer)",
        )
        .default(pace.max_concurrency.to_string())
        .range(Pacing::MIN_CONCURRENCY, Pacing::MAX_CONCURRENCY),
    );
    p.insert(
        LABELS_INTERVAL_PARAM.to_string(),
        Parameter::number(
            "Milliseconds between two DetectLabels calls of one batch (derived from DetectLabelsTps by the deployer)",
        )
        .default(pace.interval_ms.to_string())
        .range(1, 3_600_000),
    );
}

/// What a stage may turn on for compliance at a cost: a customer managed KMS key of the
/// operator's, and a bucket of the operator's for the uploads bucket's access logs.
fn compliance_parameters(p: &mut BTreeMap<String, Parameter>) {
    let mut key = Parameter::string(
        "A customer managed KMS key (ARN) that encrypts the uploads bucket and the log groups (empty: S3 and CloudWatch Logs service keys); its key policy must let S3 and CloudWatch Logs use it",
    )
    .default("");
    key.allowed_pattern =
        Some(r"^$|^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/(mrk-)?[0-9a-f-]{32,36}$".into());
    key.constraint_description = Some("empty, or a KMS key ARN".into());
    p.insert(PARAM_KMS_KEY.to_string(), key);
    let mut logs = Parameter::string(
        "A bucket (same account and region) that receives the uploads bucket's server access logs (empty: none); its policy must let logging.s3.amazonaws.com write",
    )
    .default("");
    logs.allowed_pattern = Some(r"^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$".into());
    logs.constraint_description = Some("empty, or an S3 bucket name".into());
    p.insert(PARAM_ACCESS_LOG_BUCKET.to_string(), logs);
}

/// Where the alarms notify, and when the oldest message is too old.
fn alarm_parameters(p: &mut BTreeMap<String, Parameter>) {
    let mut topic = Parameter::string(
        "An SNS topic the stage's alarms notify (empty: none; it must let CloudWatch publish)",
    )
    .default("");
    topic.allowed_pattern =
        Some(r"^$|^arn:[a-z-]+:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$".into());
    topic.constraint_description = Some("empty, or an SNS topic ARN".into());
    p.insert(ALARM_TOPIC_PARAM.to_string(), topic);
    let mut email = Parameter::string(
        "An email address the stage's alarms notify through a topic of the stack (empty: none; AWS asks the address to confirm)",
    )
    .default("");
    email.allowed_pattern = Some(r"^$|^[^@\s]+@[^@\s]+\.[^@\s]+$".into());
    email.constraint_description = Some("empty, or an email address".into());
    p.insert(ALARM_EMAIL_PARAM.to_string(), email);
    p.insert(
        OLDEST_MESSAGE_ALARM_PARAM.to_string(),
        Parameter::number(
            "Seconds the work queue's oldest message may wait before its alarm fires",
        )
        .default(DEFAULT_OLDEST_MESSAGE_ALARM_SECONDS.to_string())
        .range(60, QUEUE_RETENTION_SECONDS),
    );
}

const SNS_KMS_REASON: &str = "alarm notifications carry only alarm names and states; CloudWatch cannot publish to a topic encrypted with the AWS managed SNS key, and a customer managed key per stage adds key policy administration for no protection of data";

/// The stage's alarms (dead letters, the oldest message's age, the process function's errors)
/// and, unless they notify the operator's own topic, the stage's topic they publish to (with
/// the operator's address subscribed, if one is given). An alarm thus always has an action,
/// as Control Tower's CT.CLOUDWATCH.PR.1 requires, and anyone may subscribe later.
fn add_alarms(resources: &mut BTreeMap<String, Resource>, app: &App) {
    let names = &app.names;
    let notify = Expr::List(vec![Expr::if_(
        CONDITION_ALARMS_TO_TOPIC,
        Expr::r#ref(ALARM_TOPIC_PARAM),
        Expr::r#ref(ALARM_TOPIC_ID),
    )]);
    let email = Expr::Object(BTreeMap::from([
        ("Endpoint".to_string(), Expr::r#ref(ALARM_EMAIL_PARAM)),
        ("Protocol".to_string(), Expr::str("email")),
    ]));
    let mut topic = Resource::new(ResourceProps::Topic(Topic {
        topic_name: sub(&names.alarm_topic()),
        subscription: Expr::if_(
            CONDITION_ALARMS_TO_EMAIL,
            Expr::List(vec![email]),
            Expr::NoValue,
        ),
    }))
    .skip_check("CKV_AWS_26", SNS_KMS_REASON);
    topic.condition = Some(CONDITION_ALARMS_TO_STACK_TOPIC.into());
    resources.insert(ALARM_TOPIC_ID.to_string(), topic);
    let process = app
        .functions
        .iter()
        .find(|f| f.queue.is_some())
        .map(|f| f.function_id())
        .unwrap_or_default();
    let queue = |id: &str| MetricDimension {
        name: alarms::QUEUE_DIMENSION.into(),
        value: Expr::get_att(id, "QueueName"),
    };
    let alarm = |short: &str, description: &str, metric: (&str, &str, MetricDimension)| Alarm {
        alarm_name: sub(&names.alarm(short)),
        alarm_description: description.into(),
        namespace: metric.0.into(),
        metric_name: metric.1.into(),
        dimensions: vec![metric.2],
        statistic: "Maximum".into(),
        period: 60,
        evaluation_periods: 1,
        threshold: Expr::Int(0),
        comparison_operator: "GreaterThanThreshold".into(),
        treat_missing_data: "notBreaching".into(),
        alarm_actions: notify.clone(),
        ok_actions: notify.clone(),
    };
    let dead = alarm(
        alarms::DEAD_LETTERS,
        "Images the work queue gave up on wait in its dead-letter queue: fix the cause, then `cargo xtask redrive`",
        (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            queue(DEAD_LETTER_QUEUE_ID),
        ),
    );
    let oldest = Alarm {
        threshold: Expr::r#ref(OLDEST_MESSAGE_ALARM_PARAM),
        period: 300,
        ..alarm(
            alarms::OLDEST_MESSAGE,
            "The work queue's oldest message is older than OldestMessageAlarmSeconds: images wait (a Rekognition outage, throttling, or a stopped mapping)",
            ("AWS/SQS", "ApproximateAgeOfOldestMessage", queue(QUEUE_ID)),
        )
    };
    let errors = Alarm {
        statistic: "Sum".into(),
        period: 300,
        ..alarm(
            alarms::PROCESS_ERRORS,
            "The process function failed (an error or a timeout, not a record it held back)",
            (
                "AWS/Lambda",
                "Errors",
                MetricDimension {
                    name: alarms::FUNCTION_DIMENSION.into(),
                    value: Expr::r#ref(process),
                },
            ),
        )
    };
    for (id, a) in [
        ("DeadLettersAlarm", dead),
        ("OldestMessageAlarm", oldest),
        ("ProcessErrorsAlarm", errors),
    ] {
        resources.insert(
            id.to_string(),
            Resource::new(ResourceProps::Alarm(Box::new(a))),
        );
    }
}

/// A trust policy that lets `principal`, and no one else, assume the role.
fn trusting(principal: Principal) -> PolicyDocument<Expr> {
    PolicyDocument::new(vec![Statement {
        sid: None,
        effect: Effect::Allow,
        principal: Some(principal),
        action: vec![act("sts:AssumeRole")],
        resource: Vec::new(),
        condition: None,
    }])
}

/// The function's role: assumed by Lambda only, its one inline policy derived from what the
/// function touches, within the stage's permissions boundary.
fn function_role(f: &FunctionSpec, names: &Names) -> Role {
    let trust = trusting(Principal::Service("lambda.amazonaws.com".into()));
    Role {
        role_name: None,
        description: Expr::sub(format!(
            "{APP} ${{{STAGE_PARAM}}}: execution role of the {} function only",
            f.name
        )),
        assume_role_policy_document: trust,
        policies: vec![InlinePolicy {
            policy_name: f.policy_name(),
            policy_document: to_expr(&f.policy(names)),
        }],
        permissions_boundary: Some(Expr::r#ref(PARAM_PERMISSIONS_BOUNDARY)),
        max_session_duration: None,
    }
}

/// A scoped function's user role: assumed only by the function's execution role, its one
/// inline policy what the function touches for every user; each session's own policy narrows
/// it to one user. Within the stage's permissions boundary, like every role of the stack.
fn user_role(f: &FunctionSpec, access: &policies::FunctionAccess) -> Role {
    let trust = trusting(Principal::StackRole(f.role_id()));
    Role {
        role_name: None,
        description: Expr::sub(format!(
            "{APP} ${{{STAGE_PARAM}}}: the {} function as one signed-in user (each session's policy names the user)",
            f.name
        )),
        assume_role_policy_document: trust,
        policies: vec![InlinePolicy {
            policy_name: f.user_policy_name(),
            policy_document: to_expr(&access.policy()),
        }],
        permissions_boundary: Some(Expr::r#ref(PARAM_PERMISSIONS_BOUNDARY)),
        max_session_duration: None,
    }
}

/// The function itself, with the environment variables the model names.
fn function_resource(f: &FunctionSpec, names: &Names) -> Function {
    let variables = f
        .env
        .iter()
        .map(|(k, v)| {
            let value = match v {
                EnvValue::Name(t) => sub(t),
                EnvValue::Literal(s) => Expr::str(s.as_str()),
                EnvValue::OptionalParameter(p) => Expr::if_(
                    CONDITION_REKOGNITION_ENDPOINT,
                    Expr::r#ref(*p),
                    Expr::NoValue,
                ),
                EnvValue::Resource(id) | EnvValue::Parameter(id) => Expr::r#ref(*id),
                EnvValue::UserRoleArn => Expr::get_att(f.user_role_id(), "Arn"),
            };
            (k.to_string(), value)
        })
        .collect();
    Function {
        function_name: sub(&names.function(f.name)),
        description: f.description.to_string(),
        runtime: "provided.al2023".into(),
        handler: "bootstrap".into(),
        architectures: vec![Expr::r#ref(PARAM_ARCHITECTURE)],
        code: Code {
            s3_bucket: Expr::r#ref(PARAM_ARTIFACT_BUCKET),
            s3_key: Expr::r#ref(f.code_key_param()),
        },
        memory_size: f.memory_mb,
        timeout: f.timeout_seconds,
        role: Expr::get_att(f.role_id(), "Arn"),
        logging_config: LoggingConfig {
            log_format: "JSON".into(),
            log_group: Expr::r#ref(f.log_group_id()),
            application_log_level: "INFO".into(),
            system_log_level: "WARN".into(),
        },
        environment: Environment { variables },
    }
}

/// The function's resource with the checkov checks it skips, and why.
fn function_with_checks(f: &FunctionSpec, names: &Names) -> Resource {
    let function = function_resource(f, names);
    let mut fr = Resource::new(ResourceProps::Function(Box::new(function)))
        .skip_check(
            "CKV_AWS_115",
            "reserved concurrency would subtract from the account pool and fails outright in accounts whose limit is 10; the HTTP API stage throttles the API functions instead",
        )
        .skip_check(
            "CKV_AWS_117",
            "the functions reach only S3, DynamoDB and Rekognition over their public TLS endpoints; a VPC would add NAT or endpoint costs and cold-start time without protecting any private resource",
        )
        .skip_check(
            "CKV_AWS_173",
            "environment variables hold only resource names and tuning values, no secrets; they are encrypted at rest with the Lambda service key",
        );
    fr = if f.queue.is_some() {
        fr.skip_check(
            "CKV_AWS_116",
            "invoked by an SQS event source mapping: a record it gives up on goes to the work queue's own dead-letter queue (its redrive policy); a function dead-letter queue applies to asynchronous invocations only",
        )
    } else {
        fr.skip_check(
            "CKV_AWS_116",
            "invoked only synchronously by the HTTP API, which returns every error to the caller; a dead-letter queue applies to asynchronous invocations only",
        )
    };
    fr
}

fn add_function(
    resources: &mut BTreeMap<String, Resource>,
    parameters: &mut BTreeMap<String, Parameter>,
    outputs: &mut BTreeMap<String, Output>,
    app: &App,
    f: &FunctionSpec,
) {
    let names = &app.names;
    let mut key = Parameter::string(&format!(
        "S3 key of the {} function's zip in the artifact bucket",
        f.name
    ));
    key.min_length = Some(1);
    parameters.insert(f.code_key_param(), key);
    resources.insert(
        f.role_id(),
        Resource::new(ResourceProps::Role(function_role(f, names))),
    );
    resources.insert(
        f.log_group_id(),
        Resource::new(ResourceProps::LogGroup(LogGroup {
            log_group_name: sub(&names.log_group(f.name)),
            retention_in_days: Expr::r#ref(PARAM_LOG_RETENTION),
            kms_key_id: Some(kms_key()),
        }))
        .deleted_with_stack()
        .skip_check("CKV_AWS_158", LOG_KMS_REASON)
        .skip_check("CKV_AWS_338", LOG_RETENTION_REASON),
    );
    resources.insert(f.function_id(), function_with_checks(f, names));
    if let Some(access) = f.user_access() {
        resources.insert(
            f.user_role_id(),
            Resource::new(ResourceProps::Role(user_role(f, &access))),
        );
        outputs.insert(
            f.user_role_arn_output(),
            output(
                &format!(
                    "Role of the {} function's sessions as one signed-in user",
                    f.name
                ),
                Expr::get_att(f.user_role_id(), "Arn"),
            ),
        );
    }
    add_event_source_mapping(resources, f);
    outputs.insert(
        f.function_name_output(),
        output(
            &format!("Name of the {} function", f.name),
            Expr::r#ref(f.function_id()),
        ),
    );
    outputs.insert(
        f.role_arn_output(),
        output(
            &format!("Execution role of the {} function", f.name),
            Expr::get_att(f.role_id(), "Arn"),
        ),
    );
}

const LOG_KMS_REASON: &str = "a customer managed key is the stage option --kms-key, off by default: CloudWatch Logs encrypts every log group at rest with a service key, and a key of the operator's adds key policy administration for logs that carry no secrets";
const LOG_RETENTION_REASON: &str = "retention is the stage option --log-retention-days (the LogRetentionInDays parameter, default 30 days) because stages are short-lived development and CI environments; production stages set 365 or more";

fn add_http_api(resources: &mut BTreeMap<String, Resource>, app: &App) {
    let names = &app.names;
    resources.insert(
        API_ID.to_string(),
        Resource::new(ResourceProps::HttpApi(HttpApi {
            name: sub(&names.api()),
            description: format!("{APP}: upload images and read their labels"),
            protocol_type: "HTTP".into(),
        })),
    );
    resources.insert(
        API_LOG_GROUP_ID.to_string(),
        Resource::new(ResourceProps::LogGroup(LogGroup {
            log_group_name: sub(&names.api_access_log_group()),
            retention_in_days: Expr::r#ref(PARAM_LOG_RETENTION),
            kms_key_id: Some(kms_key()),
        }))
        .deleted_with_stack()
        .skip_check("CKV_AWS_158", LOG_KMS_REASON)
        .skip_check("CKV_AWS_338", LOG_RETENTION_REASON),
    );
    let access_log_format: BTreeMap<&str, &str> = BTreeMap::from([
        ("requestId", "$context.requestId"),
        ("sourceIp", "$context.identity.sourceIp"),
        ("requestTime", "$context.requestTime"),
        ("routeKey", "$context.routeKey"),
        ("status", "$context.status"),
        ("responseLength", "$context.responseLength"),
        ("responseLatency", "$context.responseLatency"),
        ("integrationLatency", "$context.integrationLatency"),
        ("integrationError", "$context.integrationErrorMessage"),
        ("userAgent", "$context.identity.userAgent"),
    ]);
    resources.insert(
        API_STAGE_ID.to_string(),
        Resource::new(ResourceProps::Stage(ApiStage {
            api_id: Expr::r#ref(API_ID),
            stage_name: "$default".into(),
            auto_deploy: true,
            default_route_settings: RouteSettings {
                throttling_burst_limit: THROTTLE_BURST,
                throttling_rate_limit: THROTTLE_RATE,
                detailed_metrics_enabled: false,
            },
            access_log_settings: AccessLogSettings {
                destination_arn: Expr::get_att(API_LOG_GROUP_ID, "Arn"),
                format: serde_json::to_string(&access_log_format).unwrap_or_default(),
            },
        })),
    );

    for f in app.functions.iter().filter(|f| !f.routes.is_empty()) {
        let integration_id = format!("{}Integration", f.logical());
        resources.insert(
            integration_id.clone(),
            Resource::new(ResourceProps::Integration(Integration {
                api_id: Expr::r#ref(API_ID),
                integration_type: "AWS_PROXY".into(),
                integration_uri: Expr::get_att(f.function_id(), "Arn"),
                payload_format_version: "2.0".into(),
                timeout_in_millis: API_INTEGRATION_TIMEOUT_MS,
            })),
        );
        for route in &f.routes {
            let stem = route.logical_stem();
            let target = Expr::sub(format!("integrations/${{{integration_id}}}"));
            resources.insert(format!("{stem}Route"), route_resource(route, target));
            // Scoped to this route's method and path, not to the whole API.
            let source = ArnTemplate::arn(
                "execute-api",
                true,
                true,
                vec![
                    Part::Ref(API_ID.into()),
                    Part::Lit(format!("/*/{}{}", route.method(), route.arn_path())),
                ],
            );
            resources.insert(
                format!("{stem}Permission"),
                Resource::new(ResourceProps::Permission(Permission {
                    action: "lambda:InvokeFunction".into(),
                    function_name: Expr::r#ref(f.function_id()),
                    principal: "apigateway.amazonaws.com".into(),
                    source_arn: sub(&source),
                    source_account: None,
                })),
            );
        }
    }
}

/// A route of the API: the page is public, every other route needs a signed-in user's
/// access token.
fn route_resource(route: &HttpRoute, target: Expr) -> Resource {
    if !route.0.signed_in() {
        let r = Route {
            api_id: Expr::r#ref(API_ID),
            route_key: route.route_key(),
            authorization_type: "NONE".into(),
            authorizer_id: None,
            authorization_scopes: Vec::new(),
            target,
        };
        return Resource::new(ResourceProps::Route(r)).skip_check(
            "CKV_AWS_309",
            "GET / serves the gallery page itself, which holds no user data: a browser must load it before anyone can sign in; every other route requires a signed-in user's access token",
        );
    }
    Resource::new(ResourceProps::Route(Route {
        api_id: Expr::r#ref(API_ID),
        route_key: route.route_key(),
        authorization_type: "JWT".into(),
        authorizer_id: Some(Expr::r#ref(AUTHORIZER_ID)),
        authorization_scopes: vec![api_types::auth::ACCESS_TOKEN_SCOPE.to_string()],
        target,
    }))
}

/// The stage's user pool and its one public app client (no secret: a browser and a command
/// line cannot keep one), and the API's JWT authorizer that trusts only their tokens.
fn add_user_pool(resources: &mut BTreeMap<String, Resource>, names: &Names) {
    let pool = UserPool {
        user_pool_name: sub(&names.user_pool()),
        username_attributes: vec!["email".into()],
        auto_verified_attributes: vec!["email".into()],
        admin_create_user_config: AdminCreateUserConfig {
            allow_admin_create_user_only: Expr::If(
                CONDITION_SELF_SIGN_UP.into(),
                Box::new(Expr::Bool(false)),
                Box::new(Expr::Bool(true)),
            ),
        },
        policies: UserPoolPolicies {
            password_policy: PasswordPolicy {
                minimum_length: MIN_PASSWORD_LENGTH,
                require_lowercase: true,
                require_uppercase: true,
                require_numbers: true,
                require_symbols: false,
                temporary_password_validity_days: 7,
            },
        },
        account_recovery_setting: AccountRecoverySetting {
            recovery_mechanisms: vec![RecoveryOption {
                name: "verified_email".into(),
                priority: 1,
            }],
        },
        deletion_protection: "INACTIVE".into(),
        user_pool_tags: BTreeMap::from([("stage".to_string(), Expr::r#ref(STAGE_PARAM))]),
    };
    resources.insert(
        USER_POOL_ID.to_string(),
        Resource::new(ResourceProps::UserPool(Box::new(pool))).deleted_with_stack(),
    );
    let client = UserPoolClient {
        client_name: sub(&names.user_pool_client()),
        user_pool_id: Expr::r#ref(USER_POOL_ID),
        generate_secret: false,
        explicit_auth_flows: vec![
            "ALLOW_USER_SRP_AUTH".into(),
            "ALLOW_REFRESH_TOKEN_AUTH".into(),
        ],
        prevent_user_existence_errors: "ENABLED".into(),
        enable_token_revocation: true,
        access_token_validity: ACCESS_TOKEN_MINUTES,
        id_token_validity: ACCESS_TOKEN_MINUTES,
        refresh_token_validity: REFRESH_TOKEN_DAYS,
        token_validity_units: TokenValidityUnits {
            access_token: "minutes".into(),
            id_token: "minutes".into(),
            refresh_token: "days".into(),
        },
        read_attributes: vec!["email".into(), "email_verified".into()],
        write_attributes: vec!["email".into()],
    };
    resources.insert(
        USER_POOL_CLIENT_ID.to_string(),
        Resource::new(ResourceProps::UserPoolClient(Box::new(client))),
    );
    resources.insert(
        AUTHORIZER_ID.to_string(),
        Resource::new(ResourceProps::Authorizer(Authorizer {
            api_id: Expr::r#ref(API_ID),
            name: "cognito-access-token".into(),
            authorizer_type: "JWT".into(),
            identity_source: vec!["$request.header.Authorization".into()],
            jwt_configuration: JwtConfiguration {
                audience: vec![Expr::r#ref(USER_POOL_CLIENT_ID)],
                issuer: Expr::sub(format!(
                    "https://cognito-idp.${{AWS::Region}}.${{AWS::URLSuffix}}/${{{USER_POOL_ID}}}"
                )),
            },
        })),
    );
}

/// Output format of the template file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Yaml,
    Json,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
        }
    }
}

/// Everything `synth` writes: the template and one policy document per role, with paths
/// relative to the output directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthesis {
    pub template: Template,
    pub files: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Render(#[from] crate::template::RenderError),
    #[error("cannot render the policy of the {function} function: {source}")]
    Policy {
        function: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the synthesized template has dangling references: {}", .0.join("; "))]
    Dangling(Vec<String>),
}

/// Synthesizes and renders. Policy files are rendered for partition `aws`, region
/// `us-east-1`, account `123456789012` and the chosen stage, so that IAM tools can read them;
/// the template itself carries `Fn::Sub` expressions instead of any of those values.
pub fn render(app: &App, opts: &SynthOptions, format: Format) -> Result<Synthesis, SynthError> {
    let template = synthesize(app, opts);
    let dangling = template.dangling_references();
    if !dangling.is_empty() {
        return Err(SynthError::Dangling(dangling));
    }
    let body = match format {
        Format::Yaml => template.to_yaml()?,
        Format::Json => template.to_json()?,
    };
    let mut files = vec![(format!("template.{}", format.extension()), body)];
    let bindings = policies::Bindings::example(opts.stage.as_str());
    for f in &app.functions {
        let wrap = |source: Box<dyn std::error::Error + Send + Sync>| SynthError::Policy {
            function: f.name.to_string(),
            source,
        };
        let doc = f
            .policy(&app.names)
            .resolve(&bindings)
            .map_err(|e| wrap(Box::new(e)))?;
        let mut json = serde_json::to_string_pretty(&doc).map_err(|e| wrap(Box::new(e)))?;
        json.push('\n');
        files.push((format!("policies/{}.json", f.name), json));
    }
    Ok(Synthesis { template, files })
}

impl Template {
    /// Number of resources of each type.
    pub fn resource_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for r in self.resources.values() {
            *counts.entry(r.props.type_name()).or_insert(0) += 1;
        }
        counts
    }
}
