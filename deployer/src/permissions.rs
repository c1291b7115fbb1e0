//! The IAM policy the identity that runs `deploy`, `smoke-test` and `teardown` needs: what
//! CloudFormation does with the caller's credentials to create each resource type of the
//! stack, plus the assets bucket, the smoke test's reads and clean-up, and the teardown. Every
//! statement is scoped to the names the app model gives (`image-pipeline-*`) in one account
//! and region; API Gateway IDs are random, so those statements cover the account's APIs.

use serde_json::{Value, json};

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

fn statement(sid: &str, actions: &[&str], resources: Vec<String>) -> Value {
    json!({ "Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources })
}

/// The deploying identity's policy for `account` in `region` (partition from the region).
pub fn deployer_policy(account: &str, region: &str) -> Value {
    let p = crate::aws::partition_of(region);
    let app = stack::app::APP;
    let assets = crate::assets::bucket_name(account, region);
    let roles = format!("arn:{p}:iam::{account}:role/{app}-*");
    let mut pass_role = statement(
        "PassOnlyTheStackRolesToLambda",
        &["iam:PassRole"],
        vec![roles.clone()],
    );
    pass_role["Condition"] =
        json!({ "StringEquals": { "iam:PassedToService": "lambda.amazonaws.com" } });
    json!({
        "Version": "2012-10-17",
        "Statement": [
            statement(
                "StacksAndChangeSets",
                &[
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
                ],
                vec![
                    format!("arn:{p}:cloudformation:{region}:{account}:stack/{app}-*/*"),
                    format!("arn:{p}:cloudformation:{region}:{account}:changeSet/{app}-*/*"),
                ],
            ),
            statement(
                "AssetsBucket",
                &[
                    "s3:CreateBucket",
                    "s3:PutBucketPublicAccessBlock",
                    "s3:PutEncryptionConfiguration",
                    "s3:PutBucketPolicy",
                    "s3:GetBucketLocation",
                    "s3:ListBucket",
                    "s3:ListBucketVersions",
                    "s3:DeleteBucket",
                ],
                vec![format!("arn:{p}:s3:::{assets}")],
            ),
            statement(
                "AssetsObjects",
                &["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
                vec![format!("arn:{p}:s3:::{assets}/*")],
            ),
            statement(
                "UploadsBuckets",
                &[
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
                ],
                vec![format!("arn:{p}:s3:::{app}-*-{account}-{region}")],
            ),
            statement(
                "UploadsObjectsForSmokeTestAndTeardown",
                &["s3:DeleteObject", "s3:DeleteObjectVersion"],
                vec![format!("arn:{p}:s3:::{app}-*-{account}-{region}/*")],
            ),
            statement(
                "FunctionRoles",
                &[
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
                ],
                vec![roles],
            ),
            pass_role,
            statement(
                "Functions",
                &[
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
                ],
                vec![format!("arn:{p}:lambda:{region}:{account}:function:{app}-*")],
            ),
            statement(
                "ImagesTables",
                &[
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
                ],
                vec![format!("arn:{p}:dynamodb:{region}:{account}:table/{app}-*")],
            ),
            statement(
                "FailureQueues",
                &[
                    "sqs:CreateQueue",
                    "sqs:DeleteQueue",
                    "sqs:GetQueueAttributes",
                    "sqs:SetQueueAttributes",
                    "sqs:GetQueueUrl",
                    "sqs:TagQueue",
                    "sqs:UntagQueue",
                    "sqs:ListQueueTags",
                ],
                vec![format!("arn:{p}:sqs:{region}:{account}:{app}-*")],
            ),
            statement(
                "LogGroups",
                &[
                    "logs:CreateLogGroup",
                    "logs:DeleteLogGroup",
                    "logs:PutRetentionPolicy",
                    "logs:DeleteRetentionPolicy",
                    "logs:TagResource",
                    "logs:UntagResource",
                    "logs:ListTagsForResource",
                ],
                vec![
                    format!("arn:{p}:logs:{region}:{account}:log-group:/aws/lambda/{app}-*"),
                    format!("arn:{p}:logs:{region}:{account}:log-group:/aws/apigateway/{app}-*"),
                ],
            ),
            // Listing log groups and HTTP API access logging (configured through log
            // deliveries) cannot be scoped to a resource.
            statement(
                "ApiAccessLogDelivery",
                &[
                    "logs:CreateLogDelivery",
                    "logs:GetLogDelivery",
                    "logs:UpdateLogDelivery",
                    "logs:DeleteLogDelivery",
                    "logs:ListLogDeliveries",
                    "logs:PutResourcePolicy",
                    "logs:DescribeResourcePolicies",
                    "logs:DescribeLogGroups",
                ],
                vec!["*".to_string()],
            ),
            statement(
                "HttpApis",
                &["apigateway:GET", "apigateway:POST", "apigateway:PATCH", "apigateway:PUT", "apigateway:DELETE"],
                vec![
                    format!("arn:{p}:apigateway:{region}::/apis"),
                    format!("arn:{p}:apigateway:{region}::/apis/*"),
                    format!("arn:{p}:apigateway:{region}::/tags/*"),
                ],
            ),
        ]
    })
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
        let statements = doc["Statement"].as_array().cloned().unwrap_or_default();
        assert!(statements.len() > 10);
        for s in &statements {
            for r in s["Resource"].as_array().cloned().unwrap_or_default() {
                let r = r.as_str().unwrap_or_default();
                if s["Sid"] == "ApiAccessLogDelivery" {
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
        assert!(cn.to_string().contains("arn:aws-cn:s3:::"));
    }
}
