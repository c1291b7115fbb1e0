//! What each function touches, declared once. From a declaration come both the policy (exact
//! actions on exact ARNs) and the concrete requests the function makes, which the matrix and
//! the smoke test check against the policy.

use crate::arn::ArnTemplate;
use crate::document::{Action, PolicyDocument, Statement};

/// One kind of access a function needs. Resources are ARN templates of the resource itself
/// (the bucket, the table, the queue, the log group); object and stream ARNs derive from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// `s3:PutObject` on keys under `prefix` (which ends with `/`).
    S3Put { bucket: ArnTemplate, prefix: String },
    /// `s3:GetObject` on keys under `prefix`: what S3 authorises a read (GetObject,
    /// HeadObject, and Rekognition's read of an `S3Object` as the caller) by when it names no
    /// version.
    S3Get { bucket: ArnTemplate, prefix: String },
    /// `s3:GetObjectVersion` on keys under `prefix`: what S3 authorises a read by when it
    /// names a `versionId` (as every read of an object that an event of a versioned bucket
    /// names does), instead of `s3:GetObject`.
    S3GetVersion { bucket: ArnTemplate, prefix: String },
    /// `s3:PutObjectVersionTagging` on keys under `prefix`: tagging the version an event names
    /// (a lifecycle rule then expires what carries the tag).
    S3TagVersion { bucket: ArnTemplate, prefix: String },
    /// `s3:ListBucket` on the bucket itself. Without it S3 answers a read of a missing key with
    /// 403 instead of 404, so a function that must tell "gone" from "denied" needs it. It
    /// carries no `s3:prefix` condition: a GetObject or HeadObject request has no `s3:prefix`
    /// key, so a conditioned grant would not count and S3 would still answer 403.
    S3ListBucket { bucket: ArnTemplate },
    /// `s3:DeleteObjectVersion` on keys under `prefix`: removing each version of an object
    /// (a version id is always named, `null` for one written before versioning).
    S3DeleteVersions { bucket: ArnTemplate, prefix: String },
    /// `s3:ListBucketVersions` on the bucket: the version ids of the keys to remove.
    S3ListVersions { bucket: ArnTemplate },
    /// `rekognition:DetectLabels`, which has no resource-level permissions.
    DetectLabels,
    /// `dynamodb:PutItem` on one table.
    DynamoPut { table: ArnTemplate },
    /// `dynamodb:GetItem` and `dynamodb:Scan` on one table.
    DynamoRead { table: ArnTemplate },
    /// `dynamodb:GetItem` on one table.
    DynamoGet { table: ArnTemplate },
    /// `dynamodb:UpdateItem` on one table (an `ADD` to a counter).
    DynamoUpdate { table: ArnTemplate },
    /// `dynamodb:DeleteItem` on one table.
    DynamoDelete { table: ArnTemplate },
    /// `dynamodb:Query` on one table (not its indexes).
    DynamoQuery { table: ArnTemplate },
    /// `sqs:ReceiveMessage`, `sqs:DeleteMessage` and `sqs:GetQueueAttributes` on one queue:
    /// exactly what Lambda's event source mapping polls it with, as the function's own role.
    SqsPoll { queue: ArnTemplate },
    /// `sqs:ChangeMessageVisibility` on one queue: the function holds back a message it must
    /// retry later (its back-off), instead of leaving it to the visibility timeout.
    SqsDelay { queue: ArnTemplate },
    /// `logs:CreateLogStream` and `logs:PutLogEvents` in the function's own log group.
    WriteLogs { log_group: ArnTemplate },
    /// `sts:AssumeRole` of the function's own user role, whose sessions reach one user's data.
    AssumeRole { role: ArnTemplate },
}

/// A request the function makes: one action on one concrete (template) resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Request {
    pub action: Action,
    pub resource: ArnTemplate,
}

/// The object key the matrix uses as "a key the function writes or reads".
pub const SAMPLE_OBJECT: &str = "00000000-0000-4000-8000-000000000000.jpg";
/// The log stream the matrix uses as "a stream of the function's log group".
pub const SAMPLE_STREAM: &str = "2026/01/01/[$LATEST]0123456789abcdef";

fn act(s: &'static str) -> Action {
    Action::known(s)
}

fn objects(bucket: &ArnTemplate, prefix: &str) -> ArnTemplate {
    bucket.join(&format!("/{prefix}*"))
}

fn streams(log_group: &ArnTemplate) -> ArnTemplate {
    log_group.join(":*")
}

impl Access {
    /// The actions this access grants, in a fixed order.
    pub fn actions(&self) -> Vec<Action> {
        match self {
            Access::S3Put { .. } => vec![act("s3:PutObject")],
            Access::S3Get { .. } => vec![act("s3:GetObject")],
            Access::S3GetVersion { .. } => vec![act("s3:GetObjectVersion")],
            Access::S3TagVersion { .. } => vec![act("s3:PutObjectVersionTagging")],
            Access::S3ListBucket { .. } => vec![act("s3:ListBucket")],
            Access::S3DeleteVersions { .. } => vec![act("s3:DeleteObjectVersion")],
            Access::S3ListVersions { .. } => vec![act("s3:ListBucketVersions")],
            Access::DetectLabels => vec![act("rekognition:DetectLabels")],
            Access::DynamoPut { .. } => vec![act("dynamodb:PutItem")],
            Access::DynamoRead { .. } => vec![act("dynamodb:GetItem"), act("dynamodb:Scan")],
            Access::DynamoGet { .. } => vec![act("dynamodb:GetItem")],
            Access::DynamoUpdate { .. } => vec![act("dynamodb:UpdateItem")],
            Access::DynamoDelete { .. } => vec![act("dynamodb:DeleteItem")],
            Access::DynamoQuery { .. } => vec![act("dynamodb:Query")],
            Access::SqsPoll { .. } => vec![
                act("sqs:ReceiveMessage"),
                act("sqs:DeleteMessage"),
                act("sqs:GetQueueAttributes"),
            ],
            Access::SqsDelay { .. } => vec![act("sqs:ChangeMessageVisibility")],
            Access::WriteLogs { .. } => {
                vec![act("logs:CreateLogStream"), act("logs:PutLogEvents")]
            }
            Access::AssumeRole { .. } => vec![act("sts:AssumeRole")],
        }
    }

    /// The resources the statement names: the narrowest ARN pattern that still covers every
    /// request of this access.
    pub fn resources(&self) -> Vec<ArnTemplate> {
        match self {
            Access::S3Put { bucket, prefix }
            | Access::S3Get { bucket, prefix }
            | Access::S3GetVersion { bucket, prefix }
            | Access::S3TagVersion { bucket, prefix }
            | Access::S3DeleteVersions { bucket, prefix } => vec![objects(bucket, prefix)],
            Access::S3ListBucket { bucket } | Access::S3ListVersions { bucket } => {
                vec![bucket.clone()]
            }
            Access::DetectLabels => vec![ArnTemplate::any()],
            Access::DynamoPut { table }
            | Access::DynamoRead { table }
            | Access::DynamoGet { table }
            | Access::DynamoUpdate { table }
            | Access::DynamoDelete { table }
            | Access::DynamoQuery { table } => vec![table.clone()],
            Access::SqsPoll { queue } | Access::SqsDelay { queue } => vec![queue.clone()],
            Access::WriteLogs { log_group } => vec![streams(log_group)],
            Access::AssumeRole { role } => vec![role.clone()],
        }
    }

    /// A statement id: IAM allows only letters and digits.
    fn sid(&self) -> &'static str {
        match self {
            Access::S3Put { .. } => "PutUploadedObjects",
            Access::S3Get { .. } => "ReadUploadedObjects",
            Access::S3GetVersion { .. } => "ReadUploadedObjectVersions",
            Access::S3TagVersion { .. } => "TagUploadedObjectVersions",
            Access::S3ListBucket { .. } => "ListUploadsBucket",
            Access::S3DeleteVersions { .. } => "DeleteObjectVersions",
            Access::S3ListVersions { .. } => "ListObjectVersions",
            Access::DetectLabels => "DetectLabels",
            Access::DynamoPut { .. } => "WriteImageItems",
            Access::DynamoRead { .. } => "ReadImageItems",
            Access::DynamoGet { .. } => "GetImageItems",
            Access::DynamoUpdate { .. } => "UpdateItems",
            Access::DynamoDelete { .. } => "DeleteItems",
            Access::DynamoQuery { .. } => "QueryItems",
            Access::SqsPoll { .. } => "PollWorkQueue",
            Access::SqsDelay { .. } => "BackOffWorkQueueMessages",
            Access::WriteLogs { .. } => "WriteOwnLogs",
            Access::AssumeRole { .. } => "BecomeTheSignedInUser",
        }
    }

    /// Concrete requests the function makes under this access.
    pub fn requests(&self) -> Vec<Request> {
        let resource = match self {
            Access::S3Put { bucket, prefix }
            | Access::S3Get { bucket, prefix }
            | Access::S3GetVersion { bucket, prefix }
            | Access::S3TagVersion { bucket, prefix }
            | Access::S3DeleteVersions { bucket, prefix } => {
                bucket.join(&format!("/{prefix}{SAMPLE_OBJECT}"))
            }
            Access::WriteLogs { log_group } => {
                log_group.join(&format!(":log-stream:{SAMPLE_STREAM}"))
            }
            _ => self
                .resources()
                .into_iter()
                .next()
                .unwrap_or_else(ArnTemplate::any),
        };
        self.actions()
            .into_iter()
            .map(|action| Request {
                action,
                resource: resource.clone(),
            })
            .collect()
    }

    /// Requests this access must *not* enable: other actions on the same resource and the same
    /// actions on sibling resources (another prefix, another bucket, another table…).
    pub fn near_misses(&self) -> Vec<(Request, &'static str)> {
        match self {
            Access::S3Put { bucket, prefix }
            | Access::S3Get { bucket, prefix }
            | Access::S3GetVersion { bucket, prefix }
            | Access::S3TagVersion { bucket, prefix }
            | Access::S3DeleteVersions { bucket, prefix } => self.object_misses(bucket, prefix),
            Access::S3ListVersions { bucket } => {
                let mut out = each(
                    &[
                        "s3:DeleteBucket",
                        "s3:PutBucketPolicy",
                        "s3:PutBucketVersioning",
                    ],
                    bucket,
                    "another action on the same bucket",
                );
                out.push(near(
                    "s3:ListBucketVersions",
                    bucket.join("-other"),
                    "the same action on another bucket",
                ));
                out
            }
            Access::S3ListBucket { bucket } => {
                let mut out = each(
                    &[
                        "s3:ListBucketVersions",
                        "s3:DeleteBucket",
                        "s3:PutBucketPolicy",
                        "s3:PutBucketNotification",
                    ],
                    bucket,
                    "another action on the same bucket",
                );
                out.push(near(
                    "s3:ListBucket",
                    bucket.join("-other"),
                    "the same action on another bucket",
                ));
                out
            }
            Access::DetectLabels => each(
                &[
                    "rekognition:DetectFaces",
                    "rekognition:IndexFaces",
                    "rekognition:CreateCollection",
                    "rekognition:DetectText",
                ],
                &ArnTemplate::any(),
                "another Rekognition action",
            ),
            Access::DynamoPut { table }
            | Access::DynamoRead { table }
            | Access::DynamoGet { table }
            | Access::DynamoUpdate { table }
            | Access::DynamoDelete { table }
            | Access::DynamoQuery { table } => self.table_misses(table),
            Access::SqsPoll { queue } | Access::SqsDelay { queue } => {
                let others: &[&str] = match self {
                    Access::SqsPoll { .. } => &[
                        "sqs:SendMessage",
                        "sqs:PurgeQueue",
                        "sqs:SetQueueAttributes",
                        "sqs:ChangeMessageVisibility",
                    ],
                    _ => &[
                        "sqs:SendMessage",
                        "sqs:ReceiveMessage",
                        "sqs:DeleteMessage",
                        "sqs:PurgeQueue",
                    ],
                };
                let mut out = each(others, queue, "another action on the same queue");
                out.extend(
                    self.same_actions(&queue.join("-other"), "the same action on another queue"),
                );
                out
            }

            Access::WriteLogs { log_group } => {
                let mut out = each(
                    &[
                        "logs:DeleteLogGroup",
                        "logs:PutRetentionPolicy",
                        "logs:GetLogEvents",
                    ],
                    &streams(log_group),
                    "another action on the same log group",
                );
                out.push(near(
                    "logs:PutLogEvents",
                    log_group.join(&format!("-other:log-stream:{SAMPLE_STREAM}")),
                    "the same action on another log group",
                ));
                out
            }
            Access::AssumeRole { role } => role_misses(role),
        }
    }

    /// This access's own actions on `resource`.
    fn same_actions(
        &self,
        resource: &ArnTemplate,
        why: &'static str,
    ) -> Vec<(Request, &'static str)> {
        self.actions()
            .into_iter()
            .map(|action| {
                let resource = resource.clone();
                (Request { action, resource }, why)
            })
            .collect()
    }

    /// Near misses of an object access: other object and bucket actions, and the same actions
    /// under other prefixes and on another bucket.
    fn object_misses(&self, bucket: &ArnTemplate, prefix: &str) -> Vec<(Request, &'static str)> {
        let object = bucket.join(&format!("/{prefix}{SAMPLE_OBJECT}"));
        let mut out = each(
            &[
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "s3:GetObjectVersion",
                "s3:PutObjectAcl",
                "s3:PutObjectTagging",
                "s3:PutObjectVersionTagging",
                "s3:DeleteObjectVersionTagging",
            ],
            &object,
            "another action on the same object",
        );
        out.extend(each(
            &["s3:ListBucket", "s3:DeleteBucket", "s3:PutBucketPolicy"],
            bucket,
            "a bucket-level action",
        ));
        let trimmed = prefix.trim_end_matches('/');
        for (key, why) in [
            (
                format!("other/{SAMPLE_OBJECT}"),
                "the same action under another prefix",
            ),
            (
                SAMPLE_OBJECT.to_string(),
                "the same action at the bucket root",
            ),
            (
                format!("{trimmed}-other/{SAMPLE_OBJECT}"),
                "the same action under a prefix that only starts alike",
            ),
        ] {
            out.extend(self.same_actions(&bucket.join(&format!("/{key}")), why));
        }
        let other = bucket.join(&format!("-other/{prefix}{SAMPLE_OBJECT}"));
        out.extend(self.same_actions(&other, "the same action on another bucket"));
        out
    }

    /// Near misses of a table access: other actions on it, and the same actions on another
    /// table and on an index.
    fn table_misses(&self, table: &ArnTemplate) -> Vec<(Request, &'static str)> {
        let mut out = each(
            &[
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:Scan",
                "dynamodb:Query",
                "dynamodb:BatchWriteItem",
                "dynamodb:BatchGetItem",
                "dynamodb:DeleteTable",
                "dynamodb:UpdateTable",
            ],
            table,
            "another action on the same table",
        );
        let (other, index) = (table.join("-other"), table.join("/index/any"));
        for a in self.actions() {
            for (resource, why) in [
                (&other, "the same action on another table"),
                (&index, "the same action on an index of the table"),
            ] {
                let (action, resource) = (a.clone(), resource.clone());
                out.push((Request { action, resource }, why));
            }
        }
        out
    }
}

/// Near misses of assuming a role: changing the role, or tagging the session (which would
/// let a session claim attributes the role's policies might trust).
fn role_misses(role: &ArnTemplate) -> Vec<(Request, &'static str)> {
    each(
        &[
            "sts:TagSession",
            "iam:PutRolePolicy",
            "iam:UpdateAssumeRolePolicy",
        ],
        role,
        "another action on the same role",
    )
}

/// A request that must be denied, and why it is a near miss.
fn near(action: &'static str, resource: ArnTemplate, why: &'static str) -> (Request, &'static str) {
    (
        Request {
            action: act(action),
            resource,
        },
        why,
    )
}

/// Each of `actions` on `resource`.
fn each(
    actions: &[&'static str],
    resource: &ArnTemplate,
    why: &'static str,
) -> Vec<(Request, &'static str)> {
    actions
        .iter()
        .map(|a| near(a, resource.clone(), why))
        .collect()
}

/// One function and everything it may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionAccess {
    /// Short name (`upload`, `process`, `metadata`).
    pub name: String,
    pub access: Vec<Access>,
}

impl FunctionAccess {
    /// The function's identity policy: one `Allow` statement per declared access. A kind of
    /// access declared again (on a second table) gets its statement id numbered: `WriteImageItems2`.
    pub fn policy(&self) -> PolicyDocument<ArnTemplate> {
        let mut seen: Vec<&'static str> = Vec::new();
        PolicyDocument::new(
            self.access
                .iter()
                .map(|a| {
                    let sid = a.sid();
                    let n = seen.iter().filter(|s| **s == sid).count();
                    seen.push(sid);
                    let sid = if n == 0 {
                        sid.to_string()
                    } else {
                        format!("{sid}{}", n + 1)
                    };
                    Statement::allow(&sid, a.actions(), a.resources())
                })
                .collect(),
        )
    }

    pub fn requests(&self) -> Vec<Request> {
        self.access.iter().flat_map(Access::requests).collect()
    }
}
