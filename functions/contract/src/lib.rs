//! Test support for the handler/policy contract: an SDK interceptor that records every
//! operation a client performs, and the IAM request (action and resource ARN) each implies.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::ConfigBag;

/// An IAM request: what the policy must allow for the operation to succeed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IamRequest {
    /// The SDK operation that implied it (`S3.HeadObject`).
    pub operation: String,
    pub action: String,
    pub resource: String,
}

/// Where ARNs are built: the example deployment the tests use.
#[derive(Debug, Clone)]
pub struct ArnContext {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl From<&policies::Bindings> for ArnContext {
    fn from(b: &policies::Bindings) -> Self {
        Self {
            partition: b.partition.clone(),
            region: b.region.clone(),
            account: b.account.clone(),
        }
    }
}

/// Records the IAM requests of every operation sent through the clients it is attached to.
#[derive(Debug, Clone)]
pub struct Recorder {
    arns: ArnContext,
    seen: Arc<Mutex<Vec<IamRequest>>>,
}

impl Recorder {
    pub fn new(arns: ArnContext) -> Self {
        Self {
            arns,
            seen: Arc::default(),
        }
    }

    pub fn requests(&self) -> Vec<IamRequest> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The IAM requests one operation needs (see [`iam_requests`]).
    fn iam(
        &self,
        service: &str,
        op: &str,
        input: &aws_smithy_runtime_api::client::interceptors::context::Input,
    ) -> Vec<(String, String)> {
        iam_requests(&self.arns, input)
            .unwrap_or_else(|| vec![(format!("unmapped:{service}.{op}"), "*".into())])
    }
}

fn object_arn(arns: &ArnContext, bucket: Option<&str>, key: Option<&str>) -> String {
    format!(
        "arn:{}:s3:::{}/{}",
        arns.partition,
        bucket.unwrap_or("?"),
        key.unwrap_or("?")
    )
}

fn bucket_arn(arns: &ArnContext, bucket: Option<&str>) -> String {
    format!("arn:{}:s3:::{}", arns.partition, bucket.unwrap_or("?"))
}

fn table_arn(arns: &ArnContext, table: Option<&str>) -> String {
    format!(
        "arn:{}:dynamodb:{}:{}:table/{}",
        arns.partition,
        arns.region,
        arns.account,
        table.unwrap_or("?")
    )
}

/// The action S3 authorises a read by: a request that names a version is
/// `s3:GetObjectVersion`, any other `s3:GetObject` (S3 User Guide, "Amazon S3 actions";
/// Service Authorization Reference for Amazon S3).
fn read_action(version: Option<&str>) -> String {
    match version {
        Some(_) => "s3:GetObjectVersion".into(),
        None => "s3:GetObject".into(),
    }
}

/// The IAM requests (action, resource ARN) an SDK operation needs to succeed the way the
/// handlers rely on, following AWS's documented authorization rather than the operation's
/// name; `None` for an operation this map does not know yet.
///
/// | operation | IAM requests |
/// |---|---|
/// | S3 PutObject (also presigned: the URL is authorised as its signer when used) | `s3:PutObject` on the object |
/// | S3 GetObject (ranged or not) and HeadObject | `s3:GetObject`, or `s3:GetObjectVersion` with a `versionId`; and `s3:ListBucket` on the bucket: without it S3 answers a missing key with 403, not the 404 the handlers test for |
/// | S3 PutObjectTagging | `s3:PutObjectTagging`, or `s3:PutObjectVersionTagging` with a `versionId` |
/// | S3 DeleteObject | `s3:DeleteObject`, or `s3:DeleteObjectVersion` with a `versionId` |
/// | S3 ListObjectVersions | `s3:ListBucketVersions` on the bucket |
/// | DynamoDB PutItem, conditional or not | `dynamodb:PutItem` on the table (a condition expression needs no other action) |
/// | DynamoDB GetItem / Scan / Query / UpdateItem / DeleteItem | `dynamodb:GetItem` / `dynamodb:Scan` / `dynamodb:Query` / `dynamodb:UpdateItem` / `dynamodb:DeleteItem` on the table (a Query of an index would be on the index's ARN) |
/// | DynamoDB TransactWriteItems | not an IAM action: each write is authorised as the single-item action it performs (`Put`: `dynamodb:PutItem`, `Update`: `dynamodb:UpdateItem`, `Delete`: `dynamodb:DeleteItem`, `ConditionCheck`: `dynamodb:ConditionCheckItem`) on its own table |
/// | Rekognition DetectLabels | `rekognition:DetectLabels` on `*`; with an `S3Object`, the caller's own read of it (`s3:GetObject`, or `s3:GetObjectVersion` with `Version`) |
/// | SQS ChangeMessageVisibility | `sqs:ChangeMessageVisibility` on the queue its URL names |
pub fn iam_requests(
    arns: &ArnContext,
    input: &aws_smithy_runtime_api::client::interceptors::context::Input,
) -> Option<Vec<(String, String)>> {
    s3_requests(arns, input)
        .or_else(|| dynamodb_requests(arns, input))
        .or_else(|| rekognition_requests(arns, input))
        .or_else(|| sqs_requests(arns, input))
}

/// The queue a queue URL (`https://sqs.{region}.amazonaws.com/{account}/{name}`) names.
fn queue_arn(arns: &ArnContext, url: Option<&str>) -> String {
    let url = url.unwrap_or("");
    let host = url.split("://").nth(1).unwrap_or(url).split('/').next();
    let region = match host.map(|h| h.split('.').collect::<Vec<_>>()) {
        Some(parts) if parts.len() > 2 && parts[0] == "sqs" => parts[1].to_string(),
        _ => arns.region.clone(),
    };
    let mut segments = url.trim_end_matches('/').rsplit('/');
    let name = segments.next().unwrap_or("?");
    let account = segments.next().unwrap_or("?");
    format!("arn:{}:sqs:{region}:{account}:{name}", arns.partition)
}

/// SQS's ChangeMessageVisibility (the process function's back-off).
fn sqs_requests(arns: &ArnContext, input: &Input) -> Option<Vec<(String, String)>> {
    use aws_sdk_sqs::operation as sqs;
    let i = input.downcast_ref::<sqs::change_message_visibility::ChangeMessageVisibilityInput>()?;
    Some(vec![(
        "sqs:ChangeMessageVisibility".into(),
        queue_arn(arns, i.queue_url()),
    )])
}

type Input = aws_smithy_runtime_api::client::interceptors::context::Input;

/// S3's operations (the first rows of [`iam_requests`]' table).
fn s3_requests(arns: &ArnContext, input: &Input) -> Option<Vec<(String, String)>> {
    use aws_sdk_s3::operation as s3;
    if let Some(i) = input.downcast_ref::<s3::put_object::PutObjectInput>() {
        return Some(vec![(
            "s3:PutObject".into(),
            object_arn(arns, i.bucket(), i.key()),
        )]);
    }
    if let Some(i) = input.downcast_ref::<s3::head_object::HeadObjectInput>() {
        return Some(vec![
            (
                read_action(i.version_id()),
                object_arn(arns, i.bucket(), i.key()),
            ),
            ("s3:ListBucket".into(), bucket_arn(arns, i.bucket())),
        ]);
    }
    if let Some(i) = input.downcast_ref::<s3::get_object::GetObjectInput>() {
        return Some(vec![
            (
                read_action(i.version_id()),
                object_arn(arns, i.bucket(), i.key()),
            ),
            ("s3:ListBucket".into(), bucket_arn(arns, i.bucket())),
        ]);
    }
    if let Some(i) = input.downcast_ref::<s3::put_object_tagging::PutObjectTaggingInput>() {
        let action = if i.version_id().is_some() {
            "s3:PutObjectVersionTagging"
        } else {
            "s3:PutObjectTagging"
        };
        return Some(vec![(action.into(), object_arn(arns, i.bucket(), i.key()))]);
    }
    if let Some(i) = input.downcast_ref::<s3::delete_object::DeleteObjectInput>() {
        let action = if i.version_id().is_some() {
            "s3:DeleteObjectVersion"
        } else {
            "s3:DeleteObject"
        };
        return Some(vec![(action.into(), object_arn(arns, i.bucket(), i.key()))]);
    }
    if let Some(i) = input.downcast_ref::<s3::list_object_versions::ListObjectVersionsInput>() {
        return Some(vec![(
            "s3:ListBucketVersions".into(),
            bucket_arn(arns, i.bucket()),
        )]);
    }
    None
}

/// DynamoDB's operations.
fn dynamodb_requests(arns: &ArnContext, input: &Input) -> Option<Vec<(String, String)>> {
    use aws_sdk_dynamodb::operation as ddb;
    if let Some(i) = input.downcast_ref::<ddb::put_item::PutItemInput>() {
        return Some(vec![(
            "dynamodb:PutItem".into(),
            table_arn(arns, i.table_name()),
        )]);
    }
    if let Some(i) = input.downcast_ref::<ddb::get_item::GetItemInput>() {
        return Some(vec![(
            "dynamodb:GetItem".into(),
            table_arn(arns, i.table_name()),
        )]);
    }
    if let Some(i) = input.downcast_ref::<ddb::query::QueryInput>() {
        let mut arn = table_arn(arns, i.table_name());
        if let Some(index) = i.index_name() {
            arn = format!("{arn}/index/{index}");
        }
        return Some(vec![("dynamodb:Query".into(), arn)]);
    }
    if let Some(i) = input.downcast_ref::<ddb::update_item::UpdateItemInput>() {
        return Some(vec![(
            "dynamodb:UpdateItem".into(),
            table_arn(arns, i.table_name()),
        )]);
    }
    if let Some(i) = input.downcast_ref::<ddb::delete_item::DeleteItemInput>() {
        return Some(vec![(
            "dynamodb:DeleteItem".into(),
            table_arn(arns, i.table_name()),
        )]);
    }
    if let Some(i) = input.downcast_ref::<ddb::scan::ScanInput>() {
        return Some(vec![(
            "dynamodb:Scan".into(),
            table_arn(arns, i.table_name()),
        )]);
    }
    let i = input.downcast_ref::<ddb::transact_write_items::TransactWriteItemsInput>()?;
    Some(transact_requests(arns, i))
}

/// A transaction: each write authorised as the single-item action it performs.
fn transact_requests(
    arns: &ArnContext,
    i: &aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for w in i.transact_items() {
        if let Some(p) = w.put() {
            out.push((
                "dynamodb:PutItem".into(),
                table_arn(arns, Some(p.table_name())),
            ));
        }
        if let Some(u) = w.update() {
            out.push((
                "dynamodb:UpdateItem".into(),
                table_arn(arns, Some(u.table_name())),
            ));
        }
        if let Some(d) = w.delete() {
            out.push((
                "dynamodb:DeleteItem".into(),
                table_arn(arns, Some(d.table_name())),
            ));
        }
        if let Some(c) = w.condition_check() {
            out.push((
                "dynamodb:ConditionCheckItem".into(),
                table_arn(arns, Some(c.table_name())),
            ));
        }
    }
    out
}

/// Rekognition's DetectLabels, and the caller's own read of its `S3Object`.
fn rekognition_requests(arns: &ArnContext, input: &Input) -> Option<Vec<(String, String)>> {
    use aws_sdk_rekognition::operation as rek;
    if let Some(i) = input.downcast_ref::<rek::detect_labels::DetectLabelsInput>() {
        let mut out = vec![("rekognition:DetectLabels".into(), "*".into())];
        // Rekognition reads an S3Object with the caller's own permissions.
        if let Some(o) = i.image().and_then(|img| img.s3_object()) {
            out.push((
                read_action(o.version()),
                object_arn(arns, o.bucket(), o.name()),
            ));
        }
        return Some(out);
    }
    None
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "IamRequestRecorder"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, op) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_default();
        let operation = format!("{service}.{op}");
        let requests = self.iam(&service, &op, context.input());
        if let Ok(mut seen) = self.seen.lock() {
            seen.extend(requests.into_iter().map(|(action, resource)| IamRequest {
                operation: operation.clone(),
                action,
                resource,
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! One test per row of the map in [`iam_requests`].
    #![allow(clippy::unwrap_used)]

    use aws_sdk_dynamodb::operation as ddb;
    use aws_sdk_rekognition::operation::detect_labels::DetectLabelsInput;
    use aws_sdk_rekognition::types::{Image, S3Object};
    use aws_sdk_s3::operation as s3;
    use aws_smithy_runtime_api::client::interceptors::context::Input;

    use super::*;

    const BUCKET: &str = "b";
    const OBJECT: &str = "arn:aws:s3:::b/uploads/k";

    fn arns() -> ArnContext {
        ArnContext {
            partition: "aws".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
        }
    }

    fn map(input: Input) -> Vec<(String, String)> {
        iam_requests(&arns(), &input).unwrap()
    }

    fn pairs(rows: &[(&str, &str)]) -> Vec<(String, String)> {
        rows.iter()
            .map(|(a, r)| (a.to_string(), r.to_string()))
            .collect()
    }

    #[test]
    fn put_object_and_its_presigned_form_need_put_object() {
        // A presigned PUT is built from the same input and authorised as its signer.
        let i = s3::put_object::PutObjectInput::builder()
            .bucket(BUCKET)
            .key("uploads/k")
            .build()
            .unwrap();
        assert_eq!(map(Input::erase(i)), pairs(&[("s3:PutObject", OBJECT)]));
    }

    fn get(version: Option<&str>) -> Input {
        Input::erase(
            s3::get_object::GetObjectInput::builder()
                .bucket(BUCKET)
                .key("uploads/k")
                .set_version_id(version.map(str::to_string))
                .build()
                .unwrap(),
        )
    }

    fn head(version: Option<&str>) -> Input {
        Input::erase(
            s3::head_object::HeadObjectInput::builder()
                .bucket(BUCKET)
                .key("uploads/k")
                .set_version_id(version.map(str::to_string))
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn get_object_without_a_version_needs_get_object() {
        assert_eq!(
            map(get(None)),
            pairs(&[
                ("s3:GetObject", OBJECT),
                ("s3:ListBucket", "arn:aws:s3:::b")
            ])
        );
    }

    #[test]
    fn get_object_of_a_version_needs_get_object_version() {
        assert_eq!(
            map(get(Some("v1"))),
            pairs(&[
                ("s3:GetObjectVersion", OBJECT),
                ("s3:ListBucket", "arn:aws:s3:::b")
            ])
        );
    }

    #[test]
    fn tagging_a_version_needs_put_object_version_tagging() {
        let tagging = |version: Option<&str>| {
            Input::erase(
                s3::put_object_tagging::PutObjectTaggingInput::builder()
                    .bucket(BUCKET)
                    .key("uploads/k")
                    .set_version_id(version.map(str::to_string))
                    .build()
                    .unwrap(),
            )
        };
        assert_eq!(
            map(tagging(Some("v1"))),
            pairs(&[("s3:PutObjectVersionTagging", OBJECT)])
        );
        assert_eq!(
            map(tagging(None)),
            pairs(&[("s3:PutObjectTagging", OBJECT)])
        );
    }

    #[test]
    fn head_object_needs_the_read_and_list_bucket_for_a_404_on_a_missing_key() {
        assert_eq!(
            map(head(None)),
            pairs(&[
                ("s3:GetObject", OBJECT),
                ("s3:ListBucket", "arn:aws:s3:::b")
            ])
        );
    }

    #[test]
    fn head_object_of_a_version_needs_get_object_version() {
        assert_eq!(
            map(head(Some("v1"))),
            pairs(&[
                ("s3:GetObjectVersion", OBJECT),
                ("s3:ListBucket", "arn:aws:s3:::b")
            ])
        );
    }

    #[test]
    fn a_conditional_put_item_needs_only_put_item() {
        let i = ddb::put_item::PutItemInput::builder()
            .table_name("t")
            .condition_expression("attribute_not_exists(image_id)")
            .build()
            .unwrap();
        assert_eq!(
            map(Input::erase(i)),
            pairs(&[(
                "dynamodb:PutItem",
                "arn:aws:dynamodb:eu-west-1:123456789012:table/t"
            )])
        );
    }

    #[test]
    fn get_item_and_scan_need_their_own_actions() {
        let get = ddb::get_item::GetItemInput::builder()
            .table_name("t")
            .build()
            .unwrap();
        let scan = ddb::scan::ScanInput::builder()
            .table_name("t")
            .build()
            .unwrap();
        let table = "arn:aws:dynamodb:eu-west-1:123456789012:table/t";
        assert_eq!(
            map(Input::erase(get)),
            pairs(&[("dynamodb:GetItem", table)])
        );
        assert_eq!(map(Input::erase(scan)), pairs(&[("dynamodb:Scan", table)]));
    }

    #[test]
    fn query_and_update_item_need_their_own_actions_and_an_index_its_arn() {
        let table = "arn:aws:dynamodb:eu-west-1:123456789012:table/t";
        let query = ddb::query::QueryInput::builder()
            .table_name("t")
            .build()
            .unwrap();
        assert_eq!(
            map(Input::erase(query)),
            pairs(&[("dynamodb:Query", table)])
        );
        let on_index = ddb::query::QueryInput::builder()
            .table_name("t")
            .index_name("by-time")
            .build()
            .unwrap();
        assert_eq!(
            map(Input::erase(on_index)),
            pairs(&[("dynamodb:Query", &format!("{table}/index/by-time"))])
        );
        let update = ddb::update_item::UpdateItemInput::builder()
            .table_name("t")
            .build()
            .unwrap();
        assert_eq!(
            map(Input::erase(update)),
            pairs(&[("dynamodb:UpdateItem", table)])
        );
    }

    #[test]
    fn a_transaction_needs_each_write_s_own_action_on_its_own_table() {
        use aws_sdk_dynamodb::types::AttributeValue;
        use aws_sdk_dynamodb::types::{ConditionCheck, Delete, Put, TransactWriteItem, Update};
        let key =
            || std::collections::HashMap::from([("k".to_string(), AttributeValue::S("v".into()))]);
        let i = ddb::transact_write_items::TransactWriteItemsInput::builder()
            .transact_items(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name("a")
                            .set_item(Some(key()))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name("b")
                            .set_key(Some(key()))
                            .update_expression("ADD n :one")
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name("c")
                            .set_key(Some(key()))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name("d")
                            .set_key(Some(key()))
                            .condition_expression("attribute_exists(x)")
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .build()
            .unwrap();
        let t = |n: &str| format!("arn:aws:dynamodb:eu-west-1:123456789012:table/{n}");
        assert_eq!(
            map(Input::erase(i)),
            pairs(&[
                ("dynamodb:PutItem", &t("a")),
                ("dynamodb:UpdateItem", &t("b")),
                ("dynamodb:DeleteItem", &t("c")),
                ("dynamodb:ConditionCheckItem", &t("d")),
            ])
        );
    }

    #[test]
    fn holding_a_message_back_needs_change_message_visibility_on_its_queue() {
        let i = aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityInput::builder()
            .queue_url("https://sqs.us-east-1.amazonaws.com/123456789012/image-pipeline-dev-work")
            .receipt_handle("r")
            .visibility_timeout(5)
            .build()
            .unwrap();
        assert_eq!(
            map(Input::erase(i)),
            pairs(&[(
                "sqs:ChangeMessageVisibility",
                "arn:aws:sqs:us-east-1:123456789012:image-pipeline-dev-work"
            )])
        );
    }

    #[test]
    fn detect_labels_on_bytes_needs_only_detect_labels() {
        let i = DetectLabelsInput::builder()
            .image(Image::builder().build())
            .build()
            .unwrap();
        assert_eq!(
            map(Input::erase(i)),
            pairs(&[("rekognition:DetectLabels", "*")])
        );
    }

    #[test]
    fn detect_labels_on_an_s3_version_reads_it_as_the_caller() {
        let object = |v: Option<&str>| {
            DetectLabelsInput::builder()
                .image(
                    Image::builder()
                        .s3_object(
                            S3Object::builder()
                                .bucket(BUCKET)
                                .name("uploads/k")
                                .set_version(v.map(str::to_string))
                                .build(),
                        )
                        .build(),
                )
                .build()
                .unwrap()
        };
        assert_eq!(
            map(Input::erase(object(Some("v1")))),
            pairs(&[
                ("rekognition:DetectLabels", "*"),
                ("s3:GetObjectVersion", OBJECT)
            ])
        );
        assert_eq!(
            map(Input::erase(object(None))),
            pairs(&[("rekognition:DetectLabels", "*"), ("s3:GetObject", OBJECT)])
        );
    }

    #[test]
    fn an_unknown_operation_is_not_guessed() {
        let i = s3::copy_object::CopyObjectInput::builder()
            .bucket(BUCKET)
            .key("k")
            .copy_source("b/other")
            .build()
            .unwrap();
        assert_eq!(iam_requests(&arns(), &Input::erase(i)), None);
    }

    #[test]
    fn deleting_a_version_needs_delete_object_version_and_listing_them_list_bucket_versions() {
        let delete = |version: Option<&str>| {
            let i = s3::delete_object::DeleteObjectInput::builder()
                .bucket(BUCKET)
                .key("k")
                .set_version_id(version.map(str::to_string))
                .build()
                .unwrap();
            map(Input::erase(i))
        };
        assert_eq!(
            delete(None),
            pairs(&[("s3:DeleteObject", "arn:aws:s3:::b/k")])
        );
        assert_eq!(
            delete(Some("v1")),
            pairs(&[("s3:DeleteObjectVersion", "arn:aws:s3:::b/k")])
        );
        let list = s3::list_object_versions::ListObjectVersionsInput::builder()
            .bucket(BUCKET)
            .prefix("k")
            .build()
            .unwrap();
        assert_eq!(
            map(Input::erase(list)),
            pairs(&[("s3:ListBucketVersions", "arn:aws:s3:::b")])
        );
    }
}
