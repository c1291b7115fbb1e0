//! The IAM policies around a deploy, built from the app model (`stack::app::Names`) so that
//! they name exactly what the stack holds:
//!
//! - [`deployer_policy`]: the identity that runs `deploy`, `smoke-test` and `teardown`. It
//!   drives CloudFormation on `image-pipeline-{stages}` stacks and passes an execution role;
//!   it cannot create or change a role, a function or a table itself.
//! - [`execution_policy`]: the CloudFormation execution role of a bootstrap scope. It creates
//!   the stack's resources, and may create or change a role only when that role carries the
//!   scope's permissions boundary; it can never remove or edit the boundary.
//! - [`boundary_policy`]: the permissions boundary, the union of what the app's functions may
//!   do in the scope's stages: a function role can never hold more, whatever its own policy
//!   says.
//!
//! [`escalation_checks`] lists the ways to escalate that these policies must close, each with
//! the decision IAM must give; the tests here evaluate them offline and the smoke test asks
//! IAM's simulator.

use std::collections::BTreeMap;

use policies::{Action, Bindings, Condition, Context, Decision, Effect, PolicyDocument, Statement};
use stack::App;
use stack::app::FunctionSpec;
use stack::app::bootstrap::{self, Scope};
use stack::app::{Names, StagePattern};

use crate::cloud::cfn::CHANGE_SET_PREFIX;

use Decision::{Allowed, ImplicitDeny as Denied};
use Principal::{Deployer, Execution};

/// The resource types the execution role can manage; a test checks the synthesized template
/// uses no other.
pub const COVERED_RESOURCE_TYPES: &[&str] = &[
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Authorizer",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Route",
    "AWS::ApiGatewayV2::Stage",
    "AWS::CloudWatch::Alarm",
    "AWS::Cognito::UserPool",
    "AWS::Cognito::UserPoolClient",
    "AWS::DynamoDB::Table",
    "AWS::IAM::Role",
    "AWS::Lambda::EventSourceMapping",
    "AWS::Lambda::Function",
    "AWS::Lambda::Permission",
    "AWS::Logs::LogGroup",
    "AWS::S3::Bucket",
    "AWS::S3::BucketPolicy",
    "AWS::SNS::Topic",
    "AWS::SQS::Queue",
    "AWS::SQS::QueuePolicy",
];

/// What only the bootstrap stack may change about the assets bucket. Its name starts like the
/// uploads buckets' (it predates the bootstrap stack), so the statements on
/// `image-pipeline-*` buckets would reach it without these denies.
const ASSETS_BUCKET_SETTINGS: &[&str] = &[
    "s3:DeleteBucket",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutEncryptionConfiguration",
    "s3:PutBucketVersioning",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketNotification",
    "s3:PutBucketOwnershipControls",
    "s3:PutBucketTagging",
    "s3:PutBucketLogging",
];

/// The service CloudFormation is when it assumes a role.
pub const CLOUDFORMATION_SERVICE: &str = "cloudformation.amazonaws.com";
const LAMBDA_SERVICE: &str = "lambda.amazonaws.com";

fn actions(names: &[&'static str]) -> Vec<Action> {
    names.iter().map(|a| Action::known(a)).collect()
}

fn condition(operator: &str, key: &str, values: &[&str]) -> Condition {
    BTreeMap::from([(
        operator.to_string(),
        BTreeMap::from([(
            key.to_string(),
            values.iter().map(|v| v.to_string()).collect(),
        )]),
    )])
}

fn when(mut s: Statement<String>, c: Condition) -> Statement<String> {
    s.condition = Some(c);
    s
}

fn deny(sid: &str, action: Vec<Action>, resource: Vec<String>) -> Statement<String> {
    Statement {
        effect: Effect::Deny,
        ..Statement::allow(sid, action, resource)
    }
}

/// Every name a policy scopes to, for one account and region and the stages of a pattern.
#[derive(Debug, Clone)]
pub struct Scoped {
    pub partition: String,
    pub account: String,
    pub region: String,
    pub stages: StagePattern,
    bindings: Bindings,
}

impl Scoped {
    pub fn new(account: &str, region: &str, stages: &StagePattern) -> Self {
        let partition = crate::cloud::aws::partition_of(region).to_string();
        Self {
            bindings: Bindings {
                partition: partition.clone(),
                region: region.to_string(),
                account: account.to_string(),
                refs: BTreeMap::from([(
                    stack::app::STAGE_PARAM.to_string(),
                    stages.as_str().to_string(),
                )]),
            },
            partition,
            account: account.to_string(),
            region: region.to_string(),
            stages: stages.clone(),
        }
    }

    /// A name from the app model. Its templates bind only the stage, which is bound here:
    /// resolving cannot fail, and a name that could not be resolved is left out, not widened.
    fn arn(&self, t: &policies::ArnTemplate) -> Vec<String> {
        t.resolve(&self.bindings).ok().into_iter().collect()
    }

    /// `image-pipeline-{stages}`: the stacks of these stages.
    fn stacks(&self) -> String {
        Names.stack().resolve(&self.bindings).unwrap_or_default()
    }

    /// A name that resolves with the stage alone; see [`Scoped::arn`].
    fn one(&self, t: &policies::ArnTemplate) -> String {
        self.arn(t).concat()
    }

    /// The stacks of these stages.
    fn stack_arn(&self) -> String {
        format!(
            "arn:{}:cloudformation:{}:{}:stack/{}",
            self.partition,
            self.region,
            self.account,
            self.stacks()
        )
    }

    fn iam(&self, path: &str) -> String {
        format!("arn:{}:iam::{}:{path}", self.partition, self.account)
    }

    /// The function roles CloudFormation names after the stacks of these stages.
    pub fn function_roles(&self) -> String {
        self.iam(&format!("role/{}-*", self.stacks()))
    }

    pub fn execution_role(&self, scope: Scope) -> String {
        self.iam(&format!(
            "role/{}",
            bootstrap::execution_role(scope, &self.region)
        ))
    }

    pub fn boundary(&self, scope: Scope) -> String {
        self.iam(&format!(
            "policy/{}",
            bootstrap::boundary(scope, &self.region)
        ))
    }

    pub fn assets_bucket(&self) -> String {
        format!(
            "arn:{}:s3:::{}",
            self.partition,
            bootstrap::assets_bucket(&self.account, &self.region)
        )
    }

    /// The artifacts of these stages: keys start with the stage.
    pub fn artifacts(&self) -> String {
        format!("{}/{}/*", self.assets_bucket(), self.stages)
    }

    /// Every user pool of the region: pool ids are Cognito's, so a stage's pool is told
    /// apart by its `stage` tag ([`Scoped::stage_tagged`]).
    fn user_pools(&self) -> String {
        format!(
            "arn:{}:cognito-idp:{}:{}:userpool/*",
            self.partition, self.region, self.account
        )
    }

    /// `st`, limited to resources whose `stage` tag (and, when creating one, the requested
    /// tag) is one of these stages; every stage needs no condition.
    fn stage_tagged(&self, st: Statement<String>) -> Statement<String> {
        if self.stages.is_all() {
            return st;
        }
        let stage = self.stages.as_str();
        let tag = |key: &str| (key.to_string(), vec![stage.to_string()]);
        let c = BTreeMap::from([(
            "StringLikeIfExists".to_string(),
            BTreeMap::from([tag("aws:ResourceTag/stage"), tag("aws:RequestTag/stage")]),
        )]);
        when(st, c)
    }

    fn bootstrap_resources(&self) -> [String; 2] {
        [
            self.iam(&format!("role/{}*", bootstrap::PREFIX)),
            self.iam(&format!("policy/{}*", bootstrap::PREFIX)),
        ]
    }
}

/// The execution roles a deploying identity of `stages` may pass: every stage may use the
/// release role's stages only if the identity is for every stage.
pub fn passable_scopes(stages: &StagePattern) -> Vec<Scope> {
    if stages.is_all() {
        Scope::ALL.to_vec()
    } else {
        vec![Scope::Preview]
    }
}

/// Its own stacks and change sets, the bootstrap stack to read, and the execution roles to
/// pass to CloudFormation.
fn stack_statements(s: &Scoped) -> Vec<Statement<String>> {
    let (p, region, account, stacks) = (&s.partition, &s.region, &s.account, s.stacks());
    vec![
        Statement::allow(
            "StacksAndChangeSets",
            actions(&[
                "cloudformation:CreateChangeSet",
                "cloudformation:DescribeChangeSet",
                "cloudformation:ExecuteChangeSet",
                "cloudformation:DeleteChangeSet",
                "cloudformation:ListChangeSets",
                "cloudformation:DescribeStacks",
                "cloudformation:DescribeStackEvents",
                // The errors of a create or update that fails pre-deployment validation.
                "cloudformation:DescribeEvents",
                // A redeploy compares the deployed template with its own before it makes a
                // change set.
                "cloudformation:GetTemplate",
                "cloudformation:DescribeStackResource",
                "cloudformation:DescribeStackResources",
                "cloudformation:ContinueUpdateRollback",
                "cloudformation:DeleteStack",
            ]),
            vec![
                format!("arn:{p}:cloudformation:{region}:{account}:stack/{stacks}/*"),
                format!(
                    "arn:{p}:cloudformation:{region}:{account}:changeSet/{CHANGE_SET_PREFIX}*/*"
                ),
            ],
        ),
        Statement::allow(
            // `status --drift` and `deploy --plan`: CloudFormation's drift detection of the
            // stages' stacks (DetectStackDrift is also authorized as DetectStackResourceDrift
            // for each resource). CloudFormation is said to read the resources with the
            // caller's permissions; a detection that ends incomplete says why.
            "DetectDriftOfTheseStages",
            actions(&[
                "cloudformation:DetectStackDrift",
                "cloudformation:DetectStackResourceDrift",
                "cloudformation:DescribeStackResourceDrifts",
            ]),
            vec![format!(
                "arn:{p}:cloudformation:{region}:{account}:stack/{stacks}/*"
            )],
        ),
        Statement::allow(
            // A detection's status is read by its id, which names no stack.
            "ReadDriftDetectionStatus",
            actions(&["cloudformation:DescribeStackDriftDetectionStatus"]),
            vec!["*".to_string()],
        ),
        Statement::allow(
            "ReadTheBootstrapStack",
            actions(&["cloudformation:DescribeStacks"]),
            vec![format!(
                "arn:{p}:cloudformation:{region}:{account}:stack/{}/*",
                bootstrap::STACK
            )],
        ),
        when(
            Statement::allow(
                "PassOnlyTheExecutionRoleToCloudFormation",
                actions(&["iam:PassRole"]),
                passable_scopes(&s.stages)
                    .into_iter()
                    .map(|scope| s.execution_role(scope))
                    .collect(),
            ),
            condition(
                "StringEquals",
                "iam:PassedToService",
                &[CLOUDFORMATION_SERVICE],
            ),
        ),
    ]
}

/// Its stages' artifacts in the bootstrap's bucket.
fn artifact_statements(s: &Scoped) -> Vec<Statement<String>> {
    vec![
        Statement::allow(
            "ArtifactsOfTheseStages",
            actions(&[
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
            ]),
            vec![s.artifacts()],
        ),
        // Without ListBucket a missing key answers 403, not 404, and cannot be told from a
        // refusal; ListBucketVersions finds what `teardown --purge-assets` removes.
        Statement::allow(
            "ListArtifacts",
            actions(&["s3:ListBucket", "s3:ListBucketVersions"]),
            vec![s.assets_bucket()],
        ),
    ]
}

/// What the smoke test, `status`, `trace`, `logs` and teardown read or remove of a stage.
fn stage_data_statements(s: &Scoped) -> Vec<Statement<String>> {
    let bucket = s.arn(&Names.bucket_arn());
    vec![
        Statement::allow(
            "UploadsBucketsForSmokeTestAndTeardown",
            actions(&[
                "s3:ListBucket",
                "s3:ListBucketVersions",
                "s3:GetBucketPolicy",
                "s3:PutBucketPolicy",
            ]),
            bucket.clone(),
        ),
        Statement::allow(
            "UploadsForSmokeTestAndTeardown",
            actions(&[
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "s3:GetObjectTagging",
            ]),
            bucket.iter().map(|b| format!("{b}/*")).collect(),
        ),
        Statement::allow(
            // The smoke test removes its item; `status` counts items by status; `trace`
            // reads one; `user remove` finds and removes a user's.
            "ItemsForSmokeTestStatusAndTrace",
            actions(&[
                "dynamodb:DeleteItem",
                "dynamodb:Scan",
                "dynamodb:GetItem",
                "dynamodb:Query",
            ]),
            s.arn(&Names.table_arn()),
        ),
        Statement::allow(
            // The smoke test removes its images' label entries and counts them down;
            // `user remove` finds and removes a user's.
            "LabelIndexForSmokeTest",
            actions(&[
                "dynamodb:DeleteItem",
                "dynamodb:UpdateItem",
                "dynamodb:Query",
            ]),
            s.arn(&Names.labels_table_arn()),
        ),
        Statement::allow(
            // `logs` and `trace` read the functions' logs and the API's access log.
            "ReadLogs",
            actions(&["logs:FilterLogEvents"]),
            [Names.log_group("*"), Names.api_access_log_group()]
                .iter()
                .flat_map(|g| s.arn(&Names.log_group_arn(g)))
                .flat_map(|a| [format!("{a}:*"), a])
                .collect(),
        ),
        // The smoke test's throwaway users, and `user add|remove|list|token`.
        s.stage_tagged(Statement::allow(
            "UsersOfTheseStages",
            actions(&[
                "cognito-idp:AdminCreateUser",
                "cognito-idp:AdminSetUserPassword",
                "cognito-idp:AdminGetUser",
                "cognito-idp:AdminDeleteUser",
                "cognito-idp:ListUsers",
            ]),
            vec![s.user_pools()],
        )),
        Statement::allow(
            "VerifyDeployedCode",
            actions(&["lambda:GetFunction", "lambda:GetFunctionConfiguration"]),
            function_arns(s),
        ),
    ]
}

/// The work queue and its dead-letter queue as `status`, `trace`, the smoke test and
/// `redrive` use them, and the stage's alarms as `status` reads them.
fn queue_statements(s: &Scoped) -> Vec<Statement<String>> {
    vec![
        Statement::allow(
            // Their depths (smoke test, `status`); `trace` reads the dead letters with a zero
            // visibility timeout, leaving them on the queue.
            "WorkQueues",
            actions(&["sqs:GetQueueAttributes", "sqs:ReceiveMessage"]),
            [
                s.arn(&Names.work_queue_arn()),
                s.arn(&Names.dead_letter_queue_arn()),
            ]
            .concat(),
        ),
        Statement::allow(
            // `status` shows the stage's alarms.
            "ReadTheAlarms",
            actions(&["cloudwatch:DescribeAlarms"]),
            stack::app::alarms::ALL
                .iter()
                .flat_map(|a| s.arn(&Names.alarm_arn(a)))
                .collect(),
        ),
        Statement::allow(
            // `redrive` deletes a dead letter once the work queue has it.
            "RedriveFromTheDeadLetterQueue",
            actions(&["sqs:DeleteMessage"]),
            s.arn(&Names.dead_letter_queue_arn()),
        ),
        Statement::allow(
            "RedriveToTheWorkQueue",
            actions(&["sqs:SendMessage"]),
            s.arn(&Names.work_queue_arn()),
        ),
    ]
}

/// The roles IAM's simulator is asked about: the stages' function roles, the execution
/// roles, and the deploying identity itself.
fn simulate_statement(s: &Scoped) -> Statement<String> {
    let mut simulated = vec![s.function_roles()];
    simulated.extend(
        passable_scopes(&s.stages)
            .into_iter()
            .map(|scope| s.execution_role(scope)),
    );
    // The smoke test asks IAM's simulator about the deploying identity itself too: an IAM
    // user by its own name, a CI role by its bootstrap name.
    simulated.push(s.iam("user/${aws:username}"));
    simulated.push(s.iam(&format!("role/{}Ci-*", bootstrap::PREFIX)));
    Statement::allow(
        "SimulateTheRolesOfTheseStages",
        actions(&["iam:SimulatePrincipalPolicy"]),
        simulated,
    )
}

/// The deploying identity's policy for `account` in `region`, limited to `stages` (`*` for
/// every stage). Partition from the region.
pub fn deployer_policy(
    account: &str,
    region: &str,
    stages: &StagePattern,
) -> PolicyDocument<String> {
    let s = Scoped::new(account, region, stages);
    let mut statements = [
        stack_statements(&s),
        artifact_statements(&s),
        stage_data_statements(&s),
        queue_statements(&s),
    ]
    .concat();
    statements.push(simulate_statement(&s));
    statements.push(Statement::allow(
        // `deploy` paces the process function below the account's DetectLabels quota;
        // `status` reads the age of the work queue's oldest message. These calls name no
        // resource: IAM knows no narrower one.
        "ReadTheDetectLabelsQuotaAndQueueMetrics",
        actions(&[
            "servicequotas:ListServiceQuotas",
            "servicequotas:ListAWSDefaultServiceQuotas",
            "cloudwatch:GetMetricStatistics",
        ]),
        vec!["*".to_string()],
    ));
    statements.push(deny(
        "NeverReconfigureTheAssetsBucket",
        actions(ASSETS_BUCKET_SETTINGS),
        vec![s.assets_bucket()],
    ));
    PolicyDocument::new(statements)
}

fn function_arns(s: &Scoped) -> Vec<String> {
    App::image_pipeline()
        .functions
        .iter()
        .flat_map(|f| s.arn(&Names.function_arn(f.name)))
        .collect()
}

/// The permissions boundary of `stages`: every role's policy for those stages (each
/// function's execution role and user role), so a role of the stack may hold at most what
/// some role of these stages needs.
pub fn boundary_policy(
    account: &str,
    region: &str,
    stages: &StagePattern,
) -> PolicyDocument<String> {
    let s = Scoped::new(account, region, stages);
    let mut statements = Vec::new();
    for role in &App::image_pipeline().accesses() {
        let Ok(doc) = role.policy().resolve(&s.bindings) else {
            continue;
        };
        for (i, mut st) in doc.statement.into_iter().enumerate() {
            st.sid = Some(format!("{}{}", stack::app::pascal(&role.name), i));
            statements.push(st);
        }
    }
    PolicyDocument::new(statements)
}

/// What CloudFormation may do as the execution role of `scope`, which deploys `stages`.
pub fn execution_policy(
    account: &str,
    region: &str,
    scope: Scope,
    stages: &StagePattern,
) -> PolicyDocument<String> {
    let s = Scoped::new(account, region, stages);
    let roles = s.function_roles();
    let boundary = s.boundary(scope);
    let with_boundary = condition("StringEquals", "iam:PermissionsBoundary", &[&boundary]);
    let mut statements = vec![
        when(
            Statement::allow(
                "FunctionRolesOnlyWithTheBoundary",
                actions(&[
                    "iam:CreateRole",
                    "iam:PutRolePolicy",
                    "iam:DeleteRolePolicy",
                    "iam:PutRolePermissionsBoundary",
                ]),
                vec![roles.clone()],
            ),
            with_boundary,
        ),
        Statement::allow(
            "ReadTagAndRemoveFunctionRoles",
            actions(&[
                "iam:GetRole",
                "iam:GetRolePolicy",
                "iam:ListRolePolicies",
                "iam:ListAttachedRolePolicies",
                "iam:TagRole",
                "iam:UntagRole",
                "iam:DeleteRole",
            ]),
            vec![roles.clone()],
        ),
        when(
            Statement::allow(
                "PassFunctionRolesToLambdaOnly",
                actions(&["iam:PassRole"]),
                vec![roles],
            ),
            condition("StringEquals", "iam:PassedToService", &[LAMBDA_SERVICE]),
        ),
        Statement::allow(
            "ReadArtifactsOfTheseStages",
            actions(&["s3:GetObject", "s3:GetObjectVersion"]),
            vec![s.artifacts()],
        ),
    ];
    statements.extend(uploads_buckets(&s));
    statements.push(functions(&s));
    statements.extend(event_source_mappings(&s));
    statements.extend(table_and_queue(&s));
    statements.extend(logs(&s));
    statements.push(http_apis(&s));
    statements.extend(user_pools(&s));
    statements.extend(alarms(&s));
    statements.extend([
        deny(
            "NeverRemoveABoundary",
            actions(&[
                "iam:DeleteRolePermissionsBoundary",
                "iam:DeleteUserPermissionsBoundary",
            ]),
            vec!["*".to_string()],
        ),
        deny(
            "NeverTouchTheBootstrapRolesAndPolicies",
            actions(&["iam:*"]),
            s.bootstrap_resources().to_vec(),
        ),
        deny(
            "NeverReconfigureTheAssetsBucket",
            actions(ASSETS_BUCKET_SETTINGS),
            vec![s.assets_bucket()],
        ),
    ]);
    PolicyDocument::new(statements)
}

/// The stage's alarms, and the topic the stack makes when they notify an email address.
fn alarms(s: &Scoped) -> [Statement<String>; 3] {
    let alarm_arns = stack::app::alarms::ALL
        .iter()
        .flat_map(|a| s.arn(&Names.alarm_arn(a)))
        .collect();
    let topic = s.arn(&Names.alarm_topic_arn());
    [
        Statement::allow(
            "Alarms",
            actions(&[
                "cloudwatch:PutMetricAlarm",
                "cloudwatch:DeleteAlarms",
                "cloudwatch:DescribeAlarms",
                "cloudwatch:TagResource",
                "cloudwatch:UntagResource",
                "cloudwatch:ListTagsForResource",
            ]),
            alarm_arns,
        ),
        Statement::allow(
            "AlarmTopic",
            actions(&[
                "sns:CreateTopic",
                "sns:DeleteTopic",
                "sns:GetTopicAttributes",
                "sns:SetTopicAttributes",
                "sns:Subscribe",
                "sns:ListSubscriptionsByTopic",
                "sns:TagResource",
                "sns:UntagResource",
                "sns:ListTagsForResource",
            ]),
            topic,
        ),
        Statement::allow(
            // A changed address unsubscribes the old one. IAM knows no resource for
            // Unsubscribe, so it is on `*`; only CloudFormation can act as this role.
            "UnsubscribeAnOldAlarmAddress",
            actions(&["sns:Unsubscribe"]),
            vec!["*".to_string()],
        ),
    ]
}

fn uploads_buckets(s: &Scoped) -> [Statement<String>; 1] {
    [Statement::allow(
        "UploadsBuckets",
        actions(&[
            "s3:CreateBucket",
            "s3:DeleteBucket",
            "s3:GetBucketLocation",
            "s3:ListBucket",
            "s3:ListBucketVersions",
            "s3:PutBucketPublicAccessBlock",
            "s3:PutEncryptionConfiguration",
            "s3:PutBucketOwnershipControls",
            "s3:PutBucketVersioning",
            "s3:PutLifecycleConfiguration",
            "s3:PutBucketNotification",
            "s3:GetBucketNotification",
            "s3:PutBucketPolicy",
            "s3:GetBucketPolicy",
            "s3:DeleteBucketPolicy",
            "s3:PutBucketTagging",
            // Server access logging to the operator's bucket (`--access-log-bucket`).
            "s3:PutBucketLogging",
            "s3:GetBucketLogging",
        ]),
        s.arn(&Names.bucket_arn()),
    )]
}

fn functions(s: &Scoped) -> Statement<String> {
    Statement::allow(
        "Functions",
        actions(&[
            "lambda:CreateFunction",
            "lambda:DeleteFunction",
            "lambda:GetFunction",
            "lambda:GetFunctionConfiguration",
            "lambda:UpdateFunctionCode",
            "lambda:UpdateFunctionConfiguration",
            "lambda:AddPermission",
            "lambda:RemovePermission",
            "lambda:TagResource",
            "lambda:UntagResource",
            "lambda:ListTags",
        ]),
        function_arns(s),
    )
}

/// The work queue's event source mapping. A mapping's id is Lambda's to choose, so
/// `CreateEventSourceMapping` names no resource (`*`) and the others any mapping of the
/// account and region; each names the function it acts on in `lambda:FunctionArn`, which
/// must be one of the stages' functions.
fn event_source_mappings(s: &Scoped) -> [Statement<String>; 2] {
    let functions = function_arns(s);
    let refs: Vec<&str> = functions.iter().map(String::as_str).collect();
    let mappings = format!(
        "arn:{}:lambda:{}:{}:event-source-mapping:*",
        s.bindings.partition, s.bindings.region, s.bindings.account
    );
    [
        when(
            Statement::allow(
                "CreateWorkQueueMappings",
                actions(&["lambda:CreateEventSourceMapping"]),
                vec!["*".to_string()],
            ),
            condition("ArnLike", "lambda:FunctionArn", &refs),
        ),
        when(
            Statement::allow(
                "WorkQueueMappings",
                actions(&[
                    "lambda:GetEventSourceMapping",
                    "lambda:UpdateEventSourceMapping",
                    "lambda:DeleteEventSourceMapping",
                ]),
                vec![mappings],
            ),
            condition("ArnLike", "lambda:FunctionArn", &refs),
        ),
    ]
}

fn table_and_queue(s: &Scoped) -> [Statement<String>; 2] {
    [
        Statement::allow(
            "ImagesAndLabelsTables",
            actions(&[
                "dynamodb:CreateTable",
                "dynamodb:DeleteTable",
                "dynamodb:DescribeTable",
                "dynamodb:UpdateTable",
                "dynamodb:DescribeContinuousBackups",
                "dynamodb:UpdateContinuousBackups",
                "dynamodb:DescribeTimeToLive",
                "dynamodb:UpdateTimeToLive",
                "dynamodb:TagResource",
                "dynamodb:UntagResource",
                "dynamodb:ListTagsOfResource",
            ]),
            [s.arn(&Names.table_arn()), s.arn(&Names.labels_table_arn())].concat(),
        ),
        Statement::allow(
            "WorkQueues",
            actions(&[
                "sqs:CreateQueue",
                "sqs:DeleteQueue",
                "sqs:GetQueueAttributes",
                "sqs:SetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:TagQueue",
                "sqs:UntagQueue",
                "sqs:ListQueueTags",
            ]),
            [
                s.arn(&Names.work_queue_arn()),
                s.arn(&Names.dead_letter_queue_arn()),
            ]
            .concat(),
        ),
    ]
}

fn logs(s: &Scoped) -> [Statement<String>; 2] {
    // A log group's ARN, and the same with `:*` as some Logs actions name it.
    let log_groups: Vec<String> = [Names.log_group("*"), Names.api_access_log_group()]
        .iter()
        .flat_map(|g| s.arn(&Names.log_group_arn(g)))
        .flat_map(|a| [format!("{a}:*"), a])
        .collect();
    [
        Statement::allow(
            "LogGroups",
            actions(&[
                "logs:CreateLogGroup",
                "logs:DeleteLogGroup",
                "logs:PutRetentionPolicy",
                "logs:DeleteRetentionPolicy",
                "logs:TagResource",
                "logs:UntagResource",
                "logs:ListTagsForResource",
                // The stage's KMS key on its log groups (`--kms-key`).
                "logs:AssociateKmsKey",
                "logs:DisassociateKmsKey",
            ]),
            log_groups,
        ),
        // Listing log groups and HTTP API access logging (configured through log
        // deliveries) cannot be scoped to a resource.
        Statement::allow(
            "ApiAccessLogDelivery",
            actions(&[
                "logs:CreateLogDelivery",
                "logs:GetLogDelivery",
                "logs:UpdateLogDelivery",
                "logs:DeleteLogDelivery",
                "logs:ListLogDeliveries",
                "logs:PutResourcePolicy",
                "logs:DescribeResourcePolicies",
                "logs:DescribeLogGroups",
            ]),
            vec!["*".to_string()],
        ),
    ]
}

/// HTTP API IDs are random, so the resource is every API of the region; for a scope short of
/// every stage, the `stage` tag CloudFormation puts on each API (from the stack's tags) must
/// be one of its stages, both when the API is created and when it is changed.
fn http_apis(s: &Scoped) -> Statement<String> {
    let (p, region) = (&s.partition, &s.region);
    let st = Statement::allow(
        "HttpApis",
        actions(&[
            "apigateway:GET",
            "apigateway:POST",
            "apigateway:PATCH",
            "apigateway:PUT",
            "apigateway:DELETE",
        ]),
        vec![
            format!("arn:{p}:apigateway:{region}::/apis"),
            format!("arn:{p}:apigateway:{region}::/apis/*"),
            format!("arn:{p}:apigateway:{region}::/tags/*"),
        ],
    );
    s.stage_tagged(st)
}

/// The stages' user pools and their app clients. `CreateUserPool` names no pool yet (its
/// resource is `*`); its requested `stage` tag must be one of these stages.
fn user_pools(s: &Scoped) -> [Statement<String>; 2] {
    [
        s.stage_tagged(Statement::allow(
            "CreateUserPoolsOfTheseStages",
            actions(&["cognito-idp:CreateUserPool"]),
            vec!["*".to_string()],
        )),
        s.stage_tagged(Statement::allow(
            "UserPoolsOfTheseStages",
            actions(&[
                "cognito-idp:DescribeUserPool",
                "cognito-idp:UpdateUserPool",
                "cognito-idp:DeleteUserPool",
                "cognito-idp:GetUserPoolMfaConfig",
                "cognito-idp:SetUserPoolMfaConfig",
                "cognito-idp:TagResource",
                "cognito-idp:UntagResource",
                "cognito-idp:ListTagsForResource",
                "cognito-idp:CreateUserPoolClient",
                "cognito-idp:DescribeUserPoolClient",
                "cognito-idp:UpdateUserPoolClient",
                "cognito-idp:DeleteUserPoolClient",
            ]),
            vec![s.user_pools()],
        )),
    ]
}

/// Who an escalation check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Principal {
    /// The identity that runs deploy, smoke-test and teardown.
    Deployer,
    /// The CloudFormation execution role.
    Execution,
}

/// One request and the decision IAM must give it. Most checks are paths to escalation that
/// must be denied; a few are the allowed requests beside them, which show that a denial comes
/// from the condition or the scope under test and not from a policy that grants nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationCheck {
    pub principal: Principal,
    pub what: String,
    pub action: &'static str,
    pub resource: String,
    pub context: Context,
    pub expect: Decision,
    /// About a stage outside the deploying identity's and the execution role's stages.
    pub other_stage: bool,
}

impl EscalationCheck {
    /// Whether `decision` is what this check requires (any deny counts for a denial).
    pub fn holds(&self, decision: Decision) -> bool {
        match self.expect {
            Decision::Allowed => decision == Decision::Allowed,
            _ => decision != Decision::Allowed,
        }
    }
}

/// The resources the escalation checks name, each built from the app model: a function role
/// and function of a stage the deploying identity deploys (`deployer`) and of one the
/// execution role deploys (`execution`), and the bootstrap's roles, boundary and bucket.
struct Subjects {
    deployer: Scoped,
    execution: Scoped,
    /// A function role of a stage inside the deploying identity's stages.
    function_role: String,
    /// A function role of a stage the execution role deploys.
    exec_function_role: String,
    /// The upload function of a stage inside the deploying identity's stages.
    upload_fn: String,
    boundary: String,
    other_boundary: String,
    execution_role: String,
    admin_role: String,
}

/// The upload function's role as CloudFormation would name it in the stage of `s`.
fn upload_role(s: &Scoped) -> String {
    let role_id = App::image_pipeline()
        .function("upload")
        .map(FunctionSpec::role_id)
        .unwrap_or_default();
    s.iam(&format!(
        "role/{}",
        s.one(&Names.function_role(&role_id, "ABC123"))
    ))
}

/// One stage a pattern stands for: `pr-*` becomes `pr-x`.
fn one_stage(stages: &StagePattern) -> StagePattern {
    let stage = match stages.as_str().replace('*', "x") {
        s if s.is_empty() => "x".to_string(),
        s => s,
    };
    StagePattern::parse(&stage).unwrap_or_else(|_| stages.clone())
}

impl Subjects {
    fn new(
        account: &str,
        region: &str,
        stages: &StagePattern,
        scope: Scope,
        scope_stages: &StagePattern,
    ) -> Self {
        let inside = Scoped::new(account, region, &one_stage(stages));
        let exec_inside = Scoped::new(account, region, &one_stage(scope_stages));
        let execution = Scoped::new(account, region, scope_stages);
        Self {
            function_role: upload_role(&inside),
            exec_function_role: upload_role(&exec_inside),
            upload_fn: inside.one(&Names.function_arn("upload")),
            boundary: execution.boundary(scope),
            other_boundary: execution.iam("policy/AdministratorAccess"),
            execution_role: execution.execution_role(scope),
            admin_role: execution.iam("role/Admin"),
            deployer: Scoped::new(account, region, stages),
            execution,
        }
    }
}

fn check(
    principal: Principal,
    what: &str,
    action: &'static str,
    resource: &str,
    context: Context,
    expect: Decision,
) -> EscalationCheck {
    EscalationCheck {
        principal,
        what: what.to_string(),
        action,
        resource: resource.to_string(),
        context,
        expect,
        other_stage: false,
    }
}

fn with_boundary(b: &str) -> Context {
    Context::new().with("iam:PermissionsBoundary", b)
}

fn passed_to(service: &str) -> Context {
    Context::new().with("iam:PassedToService", service)
}

/// PutRolePolicy or AttachRolePolicy straight on a function role, with or without the boundary.
fn role_policy_checks(s: &Subjects) -> Vec<EscalationCheck> {
    let (role, exec_role, b) = (&s.function_role, &s.exec_function_role, &s.boundary);
    vec![
        check(
            Deployer,
            "put a policy on a function role",
            "iam:PutRolePolicy",
            role,
            with_boundary(b),
            Denied,
        ),
        check(
            Deployer,
            "attach a policy to a function role",
            "iam:AttachRolePolicy",
            role,
            with_boundary(b),
            Denied,
        ),
        check(
            Execution,
            "put a policy on a function role without the boundary",
            "iam:PutRolePolicy",
            exec_role,
            Context::new(),
            Denied,
        ),
        check(
            Execution,
            "put a policy on a function role with another boundary",
            "iam:PutRolePolicy",
            exec_role,
            with_boundary(&s.other_boundary),
            Denied,
        ),
        check(
            Execution,
            "attach a managed policy to a function role",
            "iam:AttachRolePolicy",
            exec_role,
            with_boundary(b),
            Denied,
        ),
    ]
}

/// CreateRole: only the execution role, only with the boundary, only under the app's names.
fn create_role_checks(s: &Subjects) -> Vec<EscalationCheck> {
    let (exec_role, b) = (&s.exec_function_role, &s.boundary);
    vec![
        check(
            Deployer,
            "create a role",
            "iam:CreateRole",
            &s.function_role,
            with_boundary(b),
            Denied,
        ),
        check(
            Execution,
            "create a function role without a boundary",
            "iam:CreateRole",
            exec_role,
            Context::new(),
            Denied,
        ),
        check(
            Execution,
            "create a function role with another boundary",
            "iam:CreateRole",
            exec_role,
            with_boundary(&s.other_boundary),
            Denied,
        ),
        check(
            Execution,
            "create a function role with the boundary (allowed)",
            "iam:CreateRole",
            exec_role,
            with_boundary(b),
            Allowed,
        ),
        check(
            Execution,
            "create a role outside the app's names",
            "iam:CreateRole",
            &s.admin_role,
            with_boundary(b),
            Denied,
        ),
    ]
}

/// DeleteRolePermissionsBoundary, editing the boundary itself, and the execution role's own policy.
fn boundary_checks(s: &Subjects) -> Vec<EscalationCheck> {
    let b = &s.boundary;
    vec![
        check(
            Deployer,
            "remove a function role's boundary",
            "iam:DeleteRolePermissionsBoundary",
            &s.function_role,
            with_boundary(b),
            Denied,
        ),
        check(
            Execution,
            "remove a function role's boundary",
            "iam:DeleteRolePermissionsBoundary",
            &s.exec_function_role,
            with_boundary(b),
            Denied,
        ),
        check(
            Execution,
            "rewrite the boundary policy",
            "iam:CreatePolicyVersion",
            b,
            Context::new(),
            Denied,
        ),
        check(
            Execution,
            "give itself more permissions",
            "iam:PutRolePolicy",
            &s.execution_role,
            with_boundary(b),
            Denied,
        ),
    ]
}

/// PassRole of any role but the execution role (by the deployer) or a function role to
/// Lambda (by the execution role).
fn pass_role_checks(s: &Subjects) -> Vec<EscalationCheck> {
    let (exec, exec_role) = (&s.execution_role, &s.exec_function_role);
    let admin = s.deployer.iam("role/Admin");
    vec![
        check(
            Deployer,
            "pass the execution role to CloudFormation (allowed)",
            "iam:PassRole",
            exec,
            passed_to(CLOUDFORMATION_SERVICE),
            Allowed,
        ),
        check(
            Deployer,
            "pass the execution role to another service",
            "iam:PassRole",
            exec,
            passed_to("ec2.amazonaws.com"),
            Denied,
        ),
        check(
            Deployer,
            "pass a function role",
            "iam:PassRole",
            &s.function_role,
            passed_to(LAMBDA_SERVICE),
            Denied,
        ),
        check(
            Deployer,
            "pass an arbitrary role",
            "iam:PassRole",
            &admin,
            passed_to(CLOUDFORMATION_SERVICE),
            Denied,
        ),
        check(
            Execution,
            "pass a function role to Lambda (allowed)",
            "iam:PassRole",
            exec_role,
            passed_to(LAMBDA_SERVICE),
            Allowed,
        ),
        check(
            Execution,
            "pass a function role to another service",
            "iam:PassRole",
            exec_role,
            passed_to("ec2.amazonaws.com"),
            Denied,
        ),
        check(
            Execution,
            "pass an arbitrary role",
            "iam:PassRole",
            &s.admin_role,
            passed_to(LAMBDA_SERVICE),
            Denied,
        ),
        check(
            Execution,
            "pass itself",
            "iam:PassRole",
            exec,
            passed_to(CLOUDFORMATION_SERVICE),
            Denied,
        ),
    ]
}

/// Code changed outside CloudFormation (the execution role can only be assumed by
/// CloudFormation; its trust policy is checked apart), and the bootstrap's bucket, which is
/// named like an uploads bucket.
fn code_and_assets_checks(s: &Subjects) -> Vec<EscalationCheck> {
    let (f, none) = (&s.upload_fn, Context::new);
    let (d_assets, e_assets) = (s.deployer.assets_bucket(), s.execution.assets_bucket());
    vec![
        check(
            Deployer,
            "update a function's code",
            "lambda:UpdateFunctionCode",
            f,
            none(),
            Denied,
        ),
        check(
            Deployer,
            "create a function",
            "lambda:CreateFunction",
            f,
            none(),
            Denied,
        ),
        check(
            Deployer,
            "open the assets bucket's policy",
            "s3:PutBucketPolicy",
            &d_assets,
            none(),
            Denied,
        ),
        check(
            Execution,
            "open the assets bucket's policy",
            "s3:PutBucketPolicy",
            &e_assets,
            none(),
            Denied,
        ),
        check(
            Execution,
            "delete the assets bucket",
            "s3:DeleteBucket",
            &e_assets,
            none(),
            Denied,
        ),
    ]
}

/// The resources of a stage outside the deploying identity's stages.
struct OtherStage {
    stack: String,
    table: String,
    bucket: String,
    artifact: String,
    role: String,
    function: String,
    api: String,
    release_role: String,
    stage: String,
}

impl OtherStage {
    fn new(account: &str, region: &str, outside: &str) -> Self {
        let stage = StagePattern::parse(outside).unwrap_or_else(|_| StagePattern::all());
        let o = Scoped::new(account, region, &stage);
        let key = crate::cloud::assets::key_of(outside, "arm64", "upload", "x");
        Self {
            stack: format!("{}/id", o.stack_arn()),
            table: o.one(&Names.table_arn()),
            bucket: o.one(&Names.bucket_arn()),
            artifact: format!("{}/{key}", o.assets_bucket()),
            role: upload_role(&o),
            function: o.one(&Names.function_arn("upload")),
            api: format!("arn:{}:apigateway:{region}::/apis/abc123", o.partition),
            release_role: o.execution_role(Scope::Release),
            stage: outside.to_string(),
        }
    }
}

/// What the deploying identity may not do to a stage outside its stages.
fn other_stage_deployer_checks(o: &OtherStage) -> Vec<EscalationCheck> {
    let none = Context::new;
    vec![
        check(
            Deployer,
            "change a stack of another stage",
            "cloudformation:CreateChangeSet",
            &o.stack,
            none(),
            Denied,
        ),
        check(
            Deployer,
            "delete a stack of another stage",
            "cloudformation:DeleteStack",
            &o.stack,
            none(),
            Denied,
        ),
        check(
            Deployer,
            "run drift detection on another stage's stack",
            "cloudformation:DetectStackDrift",
            &o.stack,
            none(),
            Denied,
        ),
        check(
            Deployer,
            "replace another stage's artifact",
            "s3:PutObject",
            &o.artifact,
            none(),
            Denied,
        ),
        check(
            Deployer,
            "delete another stage's items",
            "dynamodb:DeleteItem",
            &o.table,
            none(),
            Denied,
        ),
        check(
            Deployer,
            "close another stage's bucket",
            "s3:PutBucketPolicy",
            &o.bucket,
            none(),
            Denied,
        ),
        check(
            Deployer,
            "pass the release execution role",
            "iam:PassRole",
            &o.release_role,
            passed_to(CLOUDFORMATION_SERVICE),
            Denied,
        ),
    ]
}

/// What the execution role may not do to a stage outside the stages it deploys.
fn other_stage_execution_checks(o: &OtherStage, boundary: &str) -> Vec<EscalationCheck> {
    let none = Context::new;
    let tagged = Context::new().with("aws:ResourceTag/stage", &o.stage);
    vec![
        check(
            Execution,
            "create a role for another stage",
            "iam:CreateRole",
            &o.role,
            with_boundary(boundary),
            Denied,
        ),
        check(
            Execution,
            "update another stage's function",
            "lambda:UpdateFunctionCode",
            &o.function,
            none(),
            Denied,
        ),
        check(
            Execution,
            "delete another stage's table",
            "dynamodb:DeleteTable",
            &o.table,
            none(),
            Denied,
        ),
        check(
            Execution,
            "change another stage's bucket policy",
            "s3:PutBucketPolicy",
            &o.bucket,
            none(),
            Denied,
        ),
        check(
            Execution,
            "read another stage's artifact",
            "s3:GetObject",
            &o.artifact,
            none(),
            Denied,
        ),
        check(
            Execution,
            "change another stage's HTTP API",
            "apigateway:PATCH",
            &o.api,
            tagged,
            Denied,
        ),
    ]
}

/// The escalation paths of [bootstrap] item 5, for a deploying identity of `stages` and the
/// execution role of `scope` (which deploys `scope_stages`), in one account and region.
/// `outside` is a stage outside `stages` (for a deployer of every stage there is none).
pub fn escalation_checks(
    account: &str,
    region: &str,
    stages: &StagePattern,
    scope: Scope,
    scope_stages: &StagePattern,
    outside: Option<&str>,
) -> Vec<EscalationCheck> {
    let s = Subjects::new(account, region, stages, scope, scope_stages);
    let mut checks = [
        role_policy_checks(&s),
        create_role_checks(&s),
        boundary_checks(&s),
        pass_role_checks(&s),
        code_and_assets_checks(&s),
    ]
    .concat();
    if let Some(outside) = outside {
        let o = OtherStage::new(account, region, outside);
        let others = [
            other_stage_deployer_checks(&o),
            other_stage_execution_checks(&o, &s.boundary),
        ]
        .concat();
        checks.extend(others.into_iter().map(|c| EscalationCheck {
            other_stage: true,
            ..c
        }));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use policies::evaluate_bounded;
    use stack::synth::SynthOptions;

    const ACCOUNT: &str = "123456789012";
    const REGION: &str = "eu-west-1";

    fn pattern(s: &str) -> StagePattern {
        StagePattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn covers_every_resource_type_the_stack_uses() {
        let t = stack::synthesize(&stack::App::image_pipeline(), &SynthOptions::default());
        for r in t.resources.values() {
            let kind = r.props.type_name();
            assert!(
                COVERED_RESOURCE_TYPES.contains(&kind),
                "{kind} is in the template but the execution role does not cover it"
            );
        }
    }

    #[test]
    fn scoped_to_one_account_and_region() {
        for doc in [
            deployer_policy(ACCOUNT, REGION, &StagePattern::all()),
            execution_policy(ACCOUNT, REGION, Scope::Release, &StagePattern::all()),
            boundary_policy(ACCOUNT, REGION, &StagePattern::all()),
        ] {
            assert!(doc.statement.len() > 3);
            for s in &doc.statement {
                assert!(!s.resource.is_empty(), "{:?} has no resource", s.sid);
                for r in &s.resource {
                    if r == "*" {
                        let sid = s.sid.as_deref().unwrap_or_default();
                        assert!(
                            sid == "ApiAccessLogDelivery"
                                || sid == "NeverRemoveABoundary"
                                // CreateUserPool names no pool yet; its requested tag is
                                // conditioned for a scope short of every stage.
                                || sid == "CreateUserPoolsOfTheseStages"
                                || sid == "NeverReconfigureTheAssetsBucket"
                                // Service Quotas' list calls name no resource.
                                || sid == "ReadTheDetectLabelsQuotaAndQueueMetrics"
                                // A drift detection's status is read by its id alone.
                                || sid == "ReadDriftDetectionStatus"
                                || sid == "UnsubscribeAnOldAlarmAddress"
                                // A mapping's id is Lambda's to choose; conditioned on
                                // the stages' functions.
                                || sid == "CreateWorkQueueMappings"
                                || sid.starts_with("Process")
                                    && s.action
                                        .iter()
                                        .any(|a| a.as_str().starts_with("rekognition:")),
                            "{sid} on *"
                        );
                        continue;
                    }
                    assert!(r.starts_with("arn:aws:"), "{r}");
                    assert!(
                        r.contains(ACCOUNT) || r.contains(REGION),
                        "{r} is not scoped"
                    );
                }
            }
        }
        let cn = deployer_policy(ACCOUNT, "cn-north-1", &StagePattern::all());
        let text = serde_json::to_string(&cn).unwrap_or_default();
        assert!(text.contains("arn:aws-cn:s3:::"), "{text}");
    }

    #[test]
    fn the_deployer_cannot_write_iam_lambda_or_tables_itself() {
        let doc = deployer_policy(ACCOUNT, REGION, &StagePattern::all());
        for s in &doc.statement {
            for a in &s.action {
                let a = a.as_str();
                let iam_ok = a == "iam:PassRole" || a == "iam:SimulatePrincipalPolicy";
                assert!(!a.starts_with("iam:") || iam_ok, "deployer holds {a}");
                assert!(
                    !a.starts_with("lambda:") || a.starts_with("lambda:Get"),
                    "deployer holds {a}"
                );
                // Reads for `status` and `trace`; the smoke test's removal of its own item,
                // and of its label entries with their counts (UpdateItem on the index only);
                // `user remove` finds a user's items with Query.
                assert!(
                    !a.starts_with("dynamodb:")
                        || [
                            "dynamodb:DeleteItem",
                            "dynamodb:GetItem",
                            "dynamodb:Scan",
                            "dynamodb:Query",
                        ]
                        .contains(&a)
                        || (a == "dynamodb:UpdateItem"
                            && s.resource.iter().all(|r| r.ends_with("-labels"))),
                    "deployer holds {a}"
                );
                // Reads of both queues; `redrive` deletes only dead letters, and sends only to
                // the work queue.
                let only_on = |suffix: &str| s.resource.iter().all(|r| r.ends_with(suffix));
                assert!(
                    !a.starts_with("sqs:")
                        || ["sqs:GetQueueAttributes", "sqs:ReceiveMessage"].contains(&a)
                        || (a == "sqs:DeleteMessage" && only_on("-work-dead-letters"))
                        || (a == "sqs:SendMessage" && only_on("-work")),
                    "deployer holds {a}"
                );
                assert!(!a.contains('*'), "deployer holds a wildcard action {a}");
            }
        }
    }

    #[test]
    fn names_come_from_the_app_model() {
        let doc = deployer_policy(ACCOUNT, REGION, &pattern("pr-*"));
        let all: Vec<&String> = doc.statement.iter().flat_map(|s| &s.resource).collect();
        let artifacts = format!(
            "arn:aws:s3:::{}/pr-*/*",
            stack::app::assets_bucket_name(ACCOUNT, REGION)
        );
        for want in [
            "arn:aws:s3:::image-pipeline-pr-*-123456789012-eu-west-1",
            "arn:aws:dynamodb:eu-west-1:123456789012:table/image-pipeline-pr-*-images",
            "arn:aws:lambda:eu-west-1:123456789012:function:image-pipeline-pr-*-upload",
            "arn:aws:cloudformation:eu-west-1:123456789012:stack/image-pipeline-pr-*/*",
            "arn:aws:cloudformation:eu-west-1:123456789012:stack/ImagePipelineBootstrap/*",
            "arn:aws:iam::123456789012:role/ImagePipelineExec-preview-eu-west-1",
            artifacts.as_str(),
        ] {
            assert!(all.iter().any(|r| *r == want), "{want} not in {all:?}");
        }
        assert!(
            !all.iter().any(|r| r.contains("ImagePipelineExec-release")),
            "a preview identity may pass the release role"
        );
    }

    /// The boundary allows every request the functions' own matrices allow, so it never cuts
    /// a permission a function needs, and nothing outside the app's names.
    #[test]
    fn the_boundary_keeps_every_needed_permission() {
        let app = App::image_pipeline();
        let all = app.accesses();
        let boundary = boundary_policy(ACCOUNT, REGION, &pattern("pr-*"));
        let b = Bindings {
            partition: "aws".into(),
            region: REGION.into(),
            account: ACCOUNT.into(),
            refs: [(stack::app::STAGE_PARAM.to_string(), "pr-7".to_string())].into(),
        };
        let mut allowed = 0;
        for access in &all {
            for check in policies::matrix(access, &all) {
                if check.expect != policies::Expect::Allow {
                    continue;
                }
                let resource = check.request.resource.resolve(&b).unwrap_or_default();
                let d = policies::evaluate(&boundary, check.request.action.as_str(), &resource);
                assert_eq!(d, Decision::Allowed, "{} {resource}", check.request.action);
                allowed += 1;
            }
        }
        assert!(allowed > 10, "{allowed}");
        let prod = "arn:aws:dynamodb:eu-west-1:123456789012:table/image-pipeline-prod-images";
        assert_eq!(
            policies::evaluate(&boundary, "dynamodb:PutItem", prod),
            Decision::ImplicitDeny
        );
        for a in [
            "iam:CreateRole",
            "iam:PassRole",
            "sts:AssumeRole",
            "lambda:UpdateFunctionCode",
        ] {
            assert_eq!(
                policies::evaluate(&boundary, a, "*"),
                Decision::ImplicitDeny,
                "{a}"
            );
        }
    }

    fn decide(
        check: &EscalationCheck,
        stages: &StagePattern,
        scope: Scope,
        scope_stages: &StagePattern,
    ) -> Decision {
        match check.principal {
            Principal::Deployer => policies::evaluate_in(
                &deployer_policy(ACCOUNT, REGION, stages),
                check.action,
                &check.resource,
                &check.context,
            ),
            Principal::Execution => evaluate_bounded(
                &execution_policy(ACCOUNT, REGION, scope, scope_stages),
                None,
                check.action,
                &check.resource,
                &check.context,
            ),
        }
    }

    #[test]
    fn every_escalation_path_is_closed() {
        let preview = pattern("pr-*");
        for (stages, scope, scope_stages, outside) in [
            (
                StagePattern::all(),
                Scope::Release,
                StagePattern::all(),
                None,
            ),
            (
                preview.clone(),
                Scope::Preview,
                preview.clone(),
                Some("prod"),
            ),
        ] {
            let checks = escalation_checks(ACCOUNT, REGION, &stages, scope, &scope_stages, outside);
            assert!(checks.len() >= 24, "{}", checks.len());
            for c in &checks {
                let got = decide(c, &stages, scope, &scope_stages);
                assert!(
                    c.holds(got),
                    "{:?} {} ({} on {}): IAM must say {:?}, the policy says {got:?}",
                    c.principal,
                    c.what,
                    c.action,
                    c.resource,
                    c.expect
                );
            }
        }
    }

    /// The checks fail when a path opens: each of these widenings is caught.
    #[test]
    fn an_opened_path_is_caught() {
        let all = StagePattern::all();
        let checks = escalation_checks(ACCOUNT, REGION, &all, Scope::Release, &all, None);
        let failing = |doc: &PolicyDocument<String>, who: Principal| {
            checks
                .iter()
                .filter(|c| c.principal == who)
                .filter(|c| {
                    !c.holds(policies::evaluate_in(
                        doc,
                        c.action,
                        &c.resource,
                        &c.context,
                    ))
                })
                .count()
        };
        // The execution role without its boundary condition.
        let mut open = execution_policy(ACCOUNT, REGION, Scope::Release, &all);
        open.statement[0].condition = None;
        assert!(failing(&open, Principal::Execution) >= 3);
        // Without its deny of boundary removal.
        let mut open = execution_policy(ACCOUNT, REGION, Scope::Release, &all);
        open.statement
            .retain(|s| s.sid.as_deref() != Some("NeverRemoveABoundary"));
        open.statement
            .push(Statement::allow("X", actions(&["iam:*"]), vec!["*".into()]));
        assert!(failing(&open, Principal::Execution) >= 1);
        // A deployer that may pass any role.
        let mut open = deployer_policy(ACCOUNT, REGION, &all);
        open.statement.push(Statement::allow(
            "X",
            actions(&["iam:PassRole"]),
            vec!["*".into()],
        ));
        assert!(failing(&open, Principal::Deployer) >= 1);
        // A preview deployer that reaches every stage.
        let preview = pattern("pr-*");
        let checks = escalation_checks(
            ACCOUNT,
            REGION,
            &preview,
            Scope::Preview,
            &preview,
            Some("prod"),
        );
        let open = deployer_policy(ACCOUNT, REGION, &all);
        let wrong = checks
            .iter()
            .filter(|c| c.principal == Principal::Deployer)
            .filter(|c| {
                !c.holds(policies::evaluate_in(
                    &open,
                    c.action,
                    &c.resource,
                    &c.context,
                ))
            })
            .count();
        assert!(wrong >= 4, "{wrong}");
    }
}
