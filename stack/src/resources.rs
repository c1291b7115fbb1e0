//! Typed properties of the CloudFormation resource types the stack uses. Only the properties
//! the stack sets are modelled; names follow the CloudFormation resource reference exactly.

use std::collections::BTreeMap;

use serde::Serialize;

use policies::PolicyDocument;

use crate::expr::Expr;

/// One resource's `Type` and `Properties`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "Type", content = "Properties")]
pub enum ResourceProps {
    #[serde(rename = "AWS::S3::Bucket")]
    Bucket(Box<Bucket>),
    #[serde(rename = "AWS::S3::BucketPolicy")]
    BucketPolicy(BucketPolicy),
    #[serde(rename = "AWS::DynamoDB::Table")]
    Table(Table),
    #[serde(rename = "AWS::SQS::Queue")]
    Queue(Queue),
    #[serde(rename = "AWS::IAM::Role")]
    Role(Role),
    #[serde(rename = "AWS::IAM::ManagedPolicy")]
    ManagedPolicy(ManagedPolicy),
    #[serde(rename = "AWS::Logs::LogGroup")]
    LogGroup(LogGroup),
    #[serde(rename = "AWS::Lambda::Function")]
    Function(Box<Function>),
    #[serde(rename = "AWS::Lambda::Permission")]
    Permission(Permission),
    #[serde(rename = "AWS::SQS::QueuePolicy")]
    QueuePolicy(QueuePolicy),
    #[serde(rename = "AWS::Lambda::EventSourceMapping")]
    EventSourceMapping(EventSourceMapping),
    #[serde(rename = "AWS::ApiGatewayV2::Api")]
    HttpApi(HttpApi),
    #[serde(rename = "AWS::ApiGatewayV2::Integration")]
    Integration(Integration),
    #[serde(rename = "AWS::ApiGatewayV2::Route")]
    Route(Route),
    #[serde(rename = "AWS::ApiGatewayV2::Stage")]
    Stage(ApiStage),
    #[serde(rename = "AWS::ApiGatewayV2::Authorizer")]
    Authorizer(Authorizer),
    #[serde(rename = "AWS::Cognito::UserPool")]
    UserPool(Box<UserPool>),
    #[serde(rename = "AWS::Cognito::UserPoolClient")]
    UserPoolClient(Box<UserPoolClient>),
    #[serde(rename = "AWS::CloudWatch::Alarm")]
    Alarm(Box<Alarm>),
    #[serde(rename = "AWS::SNS::Topic")]
    Topic(Topic),
}

impl ResourceProps {
    /// The CloudFormation type name, for summaries.
    pub fn type_name(&self) -> &'static str {
        match self {
            ResourceProps::Bucket(_) => "AWS::S3::Bucket",
            ResourceProps::BucketPolicy(_) => "AWS::S3::BucketPolicy",
            ResourceProps::Table(_) => "AWS::DynamoDB::Table",
            ResourceProps::Queue(_) => "AWS::SQS::Queue",
            ResourceProps::Role(_) => "AWS::IAM::Role",
            ResourceProps::ManagedPolicy(_) => "AWS::IAM::ManagedPolicy",
            ResourceProps::LogGroup(_) => "AWS::Logs::LogGroup",
            ResourceProps::Function(_) => "AWS::Lambda::Function",
            ResourceProps::Permission(_) => "AWS::Lambda::Permission",
            ResourceProps::QueuePolicy(_) => "AWS::SQS::QueuePolicy",
            ResourceProps::EventSourceMapping(_) => "AWS::Lambda::EventSourceMapping",
            ResourceProps::HttpApi(_) => "AWS::ApiGatewayV2::Api",
            ResourceProps::Integration(_) => "AWS::ApiGatewayV2::Integration",
            ResourceProps::Route(_) => "AWS::ApiGatewayV2::Route",
            ResourceProps::Stage(_) => "AWS::ApiGatewayV2::Stage",
            ResourceProps::Authorizer(_) => "AWS::ApiGatewayV2::Authorizer",
            ResourceProps::UserPool(_) => "AWS::Cognito::UserPool",
            ResourceProps::UserPoolClient(_) => "AWS::Cognito::UserPoolClient",
            ResourceProps::Alarm(_) => "AWS::CloudWatch::Alarm",
            ResourceProps::Topic(_) => "AWS::SNS::Topic",
        }
    }
}

// ---------------------------------------------------------------------------------------- S3

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Bucket {
    pub bucket_name: Expr,
    pub public_access_block_configuration: PublicAccessBlock,
    pub bucket_encryption: BucketEncryption,
    pub ownership_controls: OwnershipControls,
    pub versioning_configuration: Versioning,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_configuration: Option<Lifecycle>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_configuration: Option<Notification>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_configuration: Option<Cors>,
    /// Server access logging, when a condition turns it on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging_configuration: Option<Expr>,
}

/// Which cross-origin requests browsers may make to the bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Cors {
    pub cors_rules: Vec<CorsRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CorsRule {
    pub allowed_methods: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub max_age: u32,
}

impl Bucket {
    /// A bucket named `name` with public access blocked, AES-256 by default, owner-enforced
    /// object ownership and versioning: what every bucket of the app starts from.
    pub fn locked_down(name: Expr) -> Self {
        Self {
            bucket_name: name,
            public_access_block_configuration: PublicAccessBlock::all(),
            bucket_encryption: BucketEncryption {
                server_side_encryption_configuration: vec![EncryptionRule {
                    server_side_encryption_by_default: EncryptionByDefault {
                        sse_algorithm: "AES256".into(),
                        kms_master_key_id: None,
                    },
                    bucket_key_enabled: None,
                }],
            },
            ownership_controls: OwnershipControls {
                rules: vec![OwnershipRule {
                    object_ownership: "BucketOwnerEnforced".into(),
                }],
            },
            versioning_configuration: Versioning {
                status: "Enabled".into(),
            },
            lifecycle_configuration: None,
            notification_configuration: None,
            cors_configuration: None,
            logging_configuration: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublicAccessBlock {
    pub block_public_acls: bool,
    pub block_public_policy: bool,
    pub ignore_public_acls: bool,
    pub restrict_public_buckets: bool,
}

impl PublicAccessBlock {
    pub fn all() -> Self {
        Self {
            block_public_acls: true,
            block_public_policy: true,
            ignore_public_acls: true,
            restrict_public_buckets: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BucketEncryption {
    pub server_side_encryption_configuration: Vec<EncryptionRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptionRule {
    pub server_side_encryption_by_default: EncryptionByDefault,
    /// An S3 Bucket Key, which spares most KMS requests of `aws:kms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket_key_enabled: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EncryptionByDefault {
    /// `AES256`, or `aws:kms` (possibly chosen by a condition).
    #[serde(rename = "SSEAlgorithm")]
    pub sse_algorithm: Expr,
    /// The customer managed key of `aws:kms`.
    #[serde(rename = "KMSMasterKeyID", skip_serializing_if = "Option::is_none")]
    pub kms_master_key_id: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OwnershipControls {
    pub rules: Vec<OwnershipRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OwnershipRule {
    pub object_ownership: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Versioning {
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Lifecycle {
    pub rules: Vec<LifecycleRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LifecycleRule {
    pub id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tag_filters: Vec<TagFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_incomplete_multipart_upload: Option<AbortIncompleteMultipartUpload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noncurrent_version_expiration: Option<NoncurrentVersionExpiration>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagFilter {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AbortIncompleteMultipartUpload {
    pub days_after_initiation: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NoncurrentVersionExpiration {
    pub noncurrent_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Notification {
    pub queue_configurations: Vec<QueueNotification>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueueNotification {
    pub event: String,
    pub filter: NotificationFilter,
    pub queue: Expr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationFilter {
    #[serde(rename = "S3Key")]
    pub s3_key: KeyFilter,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyFilter {
    pub rules: Vec<FilterRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FilterRule {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BucketPolicy {
    pub bucket: Expr,
    pub policy_document: ResourcePolicy,
}

// ---------------------------------------------------------------------------------- DynamoDB

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Table {
    pub table_name: Expr,
    pub billing_mode: String,
    pub attribute_definitions: Vec<AttributeDefinition>,
    pub key_schema: Vec<KeySchemaElement>,
    pub point_in_time_recovery_specification: PointInTimeRecovery,
    #[serde(rename = "SSESpecification")]
    pub sse_specification: SseSpecification,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_live_specification: Option<TimeToLive>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub global_secondary_indexes: Vec<GlobalSecondaryIndex>,
}

/// Another key order over the same items, kept up to date by DynamoDB.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GlobalSecondaryIndex {
    pub index_name: String,
    pub key_schema: Vec<KeySchemaElement>,
    pub projection: Projection,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Projection {
    pub projection_type: String,
}

/// DynamoDB deletes an item some time after the epoch seconds its attribute names.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TimeToLive {
    pub attribute_name: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDefinition {
    pub attribute_name: String,
    pub attribute_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeySchemaElement {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PointInTimeRecovery {
    pub point_in_time_recovery_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SseSpecification {
    #[serde(rename = "SSEEnabled")]
    pub sse_enabled: bool,
    #[serde(rename = "SSEType", skip_serializing_if = "Option::is_none")]
    pub sse_type: Option<String>,
}

// --------------------------------------------------------------------------------------- SQS

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Queue {
    pub queue_name: Expr,
    pub message_retention_period: u32,
    pub sqs_managed_sse_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility_timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redrive_policy: Option<RedrivePolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redrive_allow_policy: Option<RedriveAllowPolicy>,
}

/// Where a message received `max_receive_count` times goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedrivePolicy {
    pub dead_letter_target_arn: Expr,
    pub max_receive_count: u32,
}

/// Which queues may use this one as their dead-letter queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveAllowPolicy {
    /// `byQueue`: only the queues named in `source_queue_arns`.
    pub redrive_permission: String,
    pub source_queue_arns: Vec<Expr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueuePolicy {
    pub queues: Vec<Expr>,
    pub policy_document: ResourcePolicy,
}

/// A resource policy whose condition values may be intrinsic functions (an `aws:SourceArn`
/// built with `Fn::Sub`, an `aws:SourceAccount` that is `Ref: AWS::AccountId`), which
/// [`PolicyDocument`]'s plain strings cannot be.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourcePolicy {
    pub version: &'static str,
    pub statement: Vec<ResourceStatement>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceStatement {
    pub sid: String,
    pub effect: policies::Effect,
    pub principal: policies::Principal,
    pub action: Vec<policies::Action>,
    pub resource: Vec<Expr>,
    /// operator -> key -> value.
    pub condition: BTreeMap<String, BTreeMap<String, Expr>>,
}

// --------------------------------------------------------------------------------------- IAM

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Role {
    /// Set only where another party must know the name in advance (bootstrap roles); the
    /// stack's function roles get generated names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_name: Option<Expr>,
    pub description: Expr,
    pub assume_role_policy_document: PolicyDocument<Expr>,
    pub policies: Vec<InlinePolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions_boundary: Option<Expr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_session_duration: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManagedPolicy {
    pub managed_policy_name: Expr,
    pub description: Expr,
    pub policy_document: PolicyDocument<Expr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InlinePolicy {
    pub policy_name: String,
    pub policy_document: PolicyDocument<Expr>,
}

// -------------------------------------------------------------------------------------- Logs

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogGroup {
    pub log_group_name: Expr,
    pub retention_in_days: Expr,
    /// The customer managed key that encrypts it (possibly chosen by a condition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<Expr>,
}

// ------------------------------------------------------------------------------------ Lambda

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Function {
    pub function_name: Expr,
    pub description: String,
    pub runtime: String,
    pub handler: String,
    pub architectures: Vec<Expr>,
    pub code: Code,
    pub memory_size: u32,
    pub timeout: u32,
    pub role: Expr,
    pub logging_config: LoggingConfig,
    pub environment: Environment,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Code {
    pub s3_bucket: Expr,
    pub s3_key: Expr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoggingConfig {
    pub log_format: String,
    pub log_group: Expr,
    pub application_log_level: String,
    pub system_log_level: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Environment {
    pub variables: BTreeMap<String, Expr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Permission {
    pub action: String,
    pub function_name: Expr,
    pub principal: String,
    pub source_arn: Expr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_account: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventSourceMapping {
    pub event_source_arn: Expr,
    pub function_name: Expr,
    pub batch_size: u32,
    pub enabled: bool,
    pub function_response_types: Vec<String>,
    pub scaling_config: ScalingConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScalingConfig {
    pub maximum_concurrency: Expr,
}

// ------------------------------------------------------------------------ API Gateway (HTTP)

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HttpApi {
    pub name: Expr,
    pub description: String,
    pub protocol_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Integration {
    pub api_id: Expr,
    pub integration_type: String,
    pub integration_uri: Expr,
    pub payload_format_version: String,
    pub timeout_in_millis: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Route {
    pub api_id: Expr,
    pub route_key: String,
    pub authorization_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorizer_id: Option<Expr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorization_scopes: Vec<String>,
    pub target: Expr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Authorizer {
    pub api_id: Expr,
    pub name: String,
    pub authorizer_type: String,
    pub identity_source: Vec<String>,
    pub jwt_configuration: JwtConfiguration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JwtConfiguration {
    pub audience: Vec<Expr>,
    pub issuer: Expr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiStage {
    pub api_id: Expr,
    pub stage_name: String,
    pub auto_deploy: bool,
    pub default_route_settings: RouteSettings,
    pub access_log_settings: AccessLogSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RouteSettings {
    pub throttling_burst_limit: u32,
    pub throttling_rate_limit: f64,
    pub detailed_metrics_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccessLogSettings {
    pub destination_arn: Expr,
    pub format: String,
}

// ---------------------------------------------------------------------------- CloudWatch, SNS

/// A CloudWatch alarm on one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Alarm {
    pub alarm_name: Expr,
    pub alarm_description: String,
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<MetricDimension>,
    pub statistic: String,
    pub period: u32,
    pub evaluation_periods: u32,
    pub threshold: Expr,
    pub comparison_operator: String,
    pub treat_missing_data: String,
    /// Where the alarm notifies, when it goes to ALARM and back to OK (`NoValue`: nowhere).
    pub alarm_actions: Expr,
    #[serde(rename = "OKActions")]
    pub ok_actions: Expr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricDimension {
    pub name: String,
    pub value: Expr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Topic {
    pub topic_name: Expr,
    /// The topic's subscriptions: a list, or a condition choosing one.
    pub subscription: Expr,
}

// ------------------------------------------------------------------------------------ Cognito

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserPool {
    pub user_pool_name: Expr,
    pub username_attributes: Vec<String>,
    pub auto_verified_attributes: Vec<String>,
    pub admin_create_user_config: AdminCreateUserConfig,
    pub policies: UserPoolPolicies,
    pub account_recovery_setting: AccountRecoverySetting,
    pub deletion_protection: String,
    pub user_pool_tags: BTreeMap<String, Expr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AdminCreateUserConfig {
    pub allow_admin_create_user_only: Expr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserPoolPolicies {
    pub password_policy: PasswordPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PasswordPolicy {
    pub minimum_length: u32,
    pub require_lowercase: bool,
    pub require_uppercase: bool,
    pub require_numbers: bool,
    pub require_symbols: bool,
    pub temporary_password_validity_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountRecoverySetting {
    pub recovery_mechanisms: Vec<RecoveryOption>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecoveryOption {
    pub name: String,
    pub priority: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserPoolClient {
    pub client_name: Expr,
    pub user_pool_id: Expr,
    pub generate_secret: bool,
    pub explicit_auth_flows: Vec<String>,
    pub prevent_user_existence_errors: String,
    pub enable_token_revocation: bool,
    pub access_token_validity: u32,
    pub id_token_validity: u32,
    pub refresh_token_validity: u32,
    pub token_validity_units: TokenValidityUnits,
    pub read_attributes: Vec<String>,
    pub write_attributes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TokenValidityUnits {
    pub access_token: String,
    pub id_token: String,
    pub refresh_token: String,
}
