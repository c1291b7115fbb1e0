//! The IAM policy the identity that runs `deploy`, `smoke-test` and `teardown` needs: what
//! CloudFormation does with the caller's credentials to create each resource type of the
//! stack, plus the assets bucket, the smoke test's reads and clean-up, and the teardown. Every
//! statement is scoped to the names the app model gives (`image-pipeline-*`) in one account
//! and region; API Gateway IDs are random, so those statements cover the account's APIs.

use std::collections::BTreeMap;

use policies::{Action, ArnTemplate, Bindings, PolicyDocument, Statement};
use stack::App;
use stack::app::Names;

use crate::cfn::CHANGE_SET_PREFIX;

/// The resource types the policy grants CloudFormation enough to manage; a test checks the
/// synthesized template uses no other.
pub const COVERED_RESOURCE_TYPES: &[&str] = &[
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Route",
    "AWS::ApiGatewayV2::Stage",
    "AWS::DynamoDB::Table",
    "AWS::IAM::Role",
    "AWS::Lambda::EventInvokeConfig",
    "AWS::Lambda::Function",
    "AWS::Lambda::Permission",
    "AWS::Logs::LogGroup",
    "AWS::S3::Bucket",
    "AWS::S3::BucketPolicy",
    "AWS::SQS::Queue",
];

fn actions(names: &[&'static str]) -> Vec<Action> {
    names.iter().map(|a| Action::known(a)).collect()
}

/// Every name the policy scopes to, for one account and region with every stage allowed.
struct Scope {
    partition: String,
    account: String,
    region: String,
    bindings: Bindings,
}

impl Scope {
    fn new(account: &str, region: &str) -> Self {
        let partition = crate::aws::partition_of(region).to_string();
        Self {
            bindings: Bindings {
                partition: partition.clone(),
                region: region.to_string(),
                account: account.to_string(),
                refs: BTreeMap::from([(stack::app::STAGE_PARAM.to_string(), "*".to_string())]),
            },
            partition,
            account: account.to_string(),
            region: region.to_string(),
        }
    }

    /// A name from the app model. Its templates bind only the stage, which is bound here:
    /// resolving cannot fail, and a name that could not be resolved is left out, not widened.
    fn arn(&self, t: &ArnTemplate) -> Vec<String> {
        t.resolve(&self.bindings).ok().into_iter().collect()
    }

    /// `image-pipeline-*`: every stage's stack.
    fn stacks(&self) -> String {
        Names.stack().resolve(&self.bindings).unwrap_or_default()
    }

    fn roles(&self) -> String {
        format!(
            "arn:{}:iam::{}:role/{}-*",
            self.partition,
            self.account,
            self.stacks()
        )
    }
}

/// The deploying identity's policy for `account` in `region` (partition from the region).
/// Resource names come from the app model (`stack::app::Names`) with every stage allowed.
pub fn deployer_policy(account: &str, region: &str) -> PolicyDocument<String> {
    let scope = Scope::new(account, region);
    let mut statements = vec![stacks_and_change_sets(&scope)];
    statements.extend(assets_bucket(&scope));
    statements.extend(uploads_buckets(&scope));
    statements.extend(function_roles(&scope));
    statements.push(functions(&scope));
    let (table, queue) = table_and_queue(&scope);
    statements.extend([table, queue]);
    statements.extend(logs(&scope));
    statements.push(http_apis(&scope));
    PolicyDocument::new(statements)
}

fn stacks_and_change_sets(s: &Scope) -> Statement<String> {
    let (p, region, account, stacks) = (&s.partition, &s.region, &s.account, s.stacks());
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
            "cloudformation:DescribeStackResource",
            "cloudformation:DescribeStackResources",
            "cloudformation:ContinueUpdateRollback",
            "cloudformation:DeleteStack",
        ]),
        vec![
            format!("arn:{p}:cloudformation:{region}:{account}:stack/{stacks}/*"),
            format!("arn:{p}:cloudformation:{region}:{account}:changeSet/{CHANGE_SET_PREFIX}*/*"),
        ],
    )
}

fn assets_bucket(s: &Scope) -> [Statement<String>; 2] {
    let p = &s.partition;
    let assets = stack::app::assets_bucket_name(&s.account, &s.region);
    [
        Statement::allow(
            "AssetsBucket",
            actions(&[
                "s3:CreateBucket",
                "s3:PutBucketPublicAccessBlock",
                "s3:PutEncryptionConfiguration",
                "s3:PutBucketPolicy",
                "s3:GetBucketLocation",
                "s3:ListBucket",
                "s3:ListBucketVersions",
                "s3:DeleteBucket",
            ]),
            vec![format!("arn:{p}:s3:::{assets}")],
        ),
        Statement::allow(
            "AssetsObjects",
            actions(&[
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
            ]),
            vec![format!("arn:{p}:s3:::{assets}/*")],
        ),
    ]
}

fn uploads_buckets(s: &Scope) -> [Statement<String>; 2] {
    let bucket = s.arn(&Names.bucket_arn());
    [
        Statement::allow(
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
            ]),
            bucket.clone(),
        ),
        Statement::allow(
            "UploadsObjectsForSmokeTestAndTeardown",
            actions(&[
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "s3:GetObjectTagging",
            ]),
            bucket.iter().map(|b| format!("{b}/*")).collect(),
        ),
    ]
}

fn function_roles(s: &Scope) -> [Statement<String>; 2] {
    let roles = s.roles();
    let mut pass_role = Statement::allow(
        "PassOnlyTheStackRolesToLambda",
        actions(&["iam:PassRole"]),
        vec![roles.clone()],
    );
    pass_role.condition = Some(BTreeMap::from([(
        "StringEquals".to_string(),
        BTreeMap::from([(
            "iam:PassedToService".to_string(),
            vec!["lambda.amazonaws.com".to_string()],
        )]),
    )]));
    [
        Statement::allow(
            "FunctionRoles",
            actions(&[
                "iam:CreateRole",
                "iam:DeleteRole",
                "iam:GetRole",
                "iam:TagRole",
                "iam:UntagRole",
                "iam:UpdateAssumeRolePolicy",
                "iam:PutRolePolicy",
                "iam:GetRolePolicy",
                "iam:DeleteRolePolicy",
                "iam:SimulatePrincipalPolicy",
            ]),
            vec![roles],
        ),
        pass_role,
    ]
}

fn functions(s: &Scope) -> Statement<String> {
    let functions: Vec<String> = App::image_pipeline()
        .functions
        .iter()
        .flat_map(|f| s.arn(&Names.function_arn(f.name)))
        .collect();
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
            "lambda:PutFunctionEventInvokeConfig",
            "lambda:UpdateFunctionEventInvokeConfig",
            "lambda:GetFunctionEventInvokeConfig",
            "lambda:DeleteFunctionEventInvokeConfig",
            "lambda:TagResource",
            "lambda:UntagResource",
            "lambda:ListTags",
        ]),
        functions,
    )
}

fn table_and_queue(s: &Scope) -> (Statement<String>, Statement<String>) {
    (
        Statement::allow(
            "ImagesTables",
            actions(&[
                "dynamodb:CreateTable",
                "dynamodb:DeleteTable",
                "dynamodb:DescribeTable",
                "dynamodb:UpdateTable",
                "dynamodb:DescribeContinuousBackups",
                "dynamodb:UpdateContinuousBackups",
                "dynamodb:TagResource",
                "dynamodb:UntagResource",
                "dynamodb:ListTagsOfResource",
                "dynamodb:DeleteItem",
            ]),
            s.arn(&Names.table_arn()),
        ),
        Statement::allow(
            "FailureQueues",
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
            s.arn(&Names.failure_queue_arn()),
        ),
    )
}

fn logs(s: &Scope) -> [Statement<String>; 2] {
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

fn http_apis(s: &Scope) -> Statement<String> {
    let (p, region) = (&s.partition, &s.region);
    Statement::allow(
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
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use stack::synth::SynthOptions;

    #[test]
    fn covers_every_resource_type_the_stack_uses() {
        let t = stack::synthesize(&stack::App::image_pipeline(), &SynthOptions::default());
        for r in t.resources.values() {
            let kind = r.props.type_name();
            assert!(
                COVERED_RESOURCE_TYPES.contains(&kind),
                "{kind} is in the template but the deployer policy does not cover it"
            );
        }
    }

    #[test]
    fn scoped_to_one_account_and_region() {
        let doc = deployer_policy("123456789012", "eu-west-1");
        assert!(doc.statement.len() > 10);
        for s in &doc.statement {
            assert!(!s.resource.is_empty(), "{:?} has no resource", s.sid);
            for r in &s.resource {
                if s.sid.as_deref() == Some("ApiAccessLogDelivery") {
                    assert_eq!(r, "*");
                    continue;
                }
                assert!(r.starts_with("arn:aws:"), "{r}");
                assert!(
                    r.contains("123456789012") || r.contains("eu-west-1"),
                    "{r} is not scoped"
                );
                assert!(!r.ends_with(":*:*"), "{r}");
            }
        }
        let cn = deployer_policy("123456789012", "cn-north-1");
        let text = serde_json::to_string(&cn).unwrap_or_default();
        assert!(text.contains("arn:aws-cn:s3:::"), "{text}");
    }

    #[test]
    fn names_come_from_the_app_model() {
        let doc = deployer_policy("123456789012", "eu-west-1");
        let all: Vec<&String> = doc.statement.iter().flat_map(|s| &s.resource).collect();
        for want in [
            "arn:aws:s3:::image-pipeline-*-123456789012-eu-west-1",
            "arn:aws:dynamodb:eu-west-1:123456789012:table/image-pipeline-*-images",
            "arn:aws:lambda:eu-west-1:123456789012:function:image-pipeline-*-upload",
            "arn:aws:cloudformation:eu-west-1:123456789012:stack/image-pipeline-*/*",
            "arn:aws:iam::123456789012:role/image-pipeline-*-*",
        ] {
            assert!(all.iter().any(|r| *r == want), "{want} not in {all:?}");
        }
    }
}
