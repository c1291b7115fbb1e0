//! The process function's work on one S3 event against mocked S3, Rekognition and DynamoDB:
//! labelling, key decoding, skipping, idempotency, and the failure policy (image-side errors
//! become failed items, service-side errors are returned for a later try). The work queue's
//! side (back-off, batch item failures) is in `queue.rs`.

// Test code: fixtures and mocks are ours, so a panic is the right failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lambda_events::s3::S3Event;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::CancellationReason;
use aws_sdk_dynamodb::types::error::{
    ConditionalCheckFailedException, TransactionCanceledException,
};
use aws_sdk_rekognition::operation::detect_labels::{DetectLabelsError, DetectLabelsOutput};
use aws_sdk_rekognition::types::error::InvalidImageFormatException;
use aws_sdk_rekognition::types::{Label, Parent};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::put_object_tagging::PutObjectTaggingOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::RetryConfig;
use handler_shared::scope::testing::{self, ROLE_ARN, assume_role};
use process_function::{Ctx, FINAL_WRITE_CONDITION, OwnClients, Summary, process_event};

const ONE: &str = include_str!("data/s3-put.json");
const MANY: &str = include_str!("data/s3-put-many.json");
const ID: &str = "3f2b8c1e-5d4a-4b6f-9c2d-1a2b3c4d5e6f";
const ENCODED_ID: &str = "8a1d2e3f-4b5c-4d6e-8f70-819a2b3c4d5e";
/// The user the test events' objects belong to (their keys are `uploads/{OWNER}/{id}`).
const OWNER: &str = "7d3f0c2e-5b1a-4c8e-9f60-2a4b6c8d0e1f";
const BUCKET: &str = "image-pipeline-dev-123456789012-us-east-1";

type Items = Arc<Mutex<Vec<HashMap<String, AttributeValue>>>>;

fn event(fixture: &str) -> S3Event {
    serde_json::from_str(fixture).unwrap()
}

const CAT: &[u8] = include_bytes!("../../../fixtures/images/chelsea.png");

/// What S3 answers a ranged GET of the first 64 KiB of `object` with.
fn first_bytes_of(object: &'static [u8]) -> GetObjectOutput {
    let end = object.len().min(65_536);
    GetObjectOutput::builder()
        .content_type("binary/octet-stream")
        .content_length(end as i64)
        .content_range(format!(
            "bytes 0-{}/{}",
            end.saturating_sub(1),
            object.len()
        ))
        .body(ByteStream::from_static(&object[..end]))
        .build()
}

/// A ranged GET of the cat photograph's first bytes (the range is checked).
fn head_ok() -> Rule {
    mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| r.range() == Some("bytes=0-65535") && r.bucket() == Some(BUCKET))
        .then_output(|| first_bytes_of(CAT))
}

fn get_status(status: u16) -> Rule {
    mock!(aws_sdk_s3::Client::get_object).then_http_response(move || {
        Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty())
    })
}

type Tagged = Arc<Mutex<Vec<(String, Option<String>, String)>>>;

/// A PutObjectTagging rule that records (key, version, "k=v").
fn tag_recording(tagged: &Tagged) -> Rule {
    let tagged = tagged.clone();
    mock!(aws_sdk_s3::Client::put_object_tagging).then_compute_output(move |r| {
        let tags = r
            .tagging()
            .map(|t| {
                t.tag_set()
                    .iter()
                    .map(|t| format!("{}={}", t.key(), t.value()))
                    .collect::<Vec<_>>()
                    .join("&")
            })
            .unwrap_or_default();
        tagged.lock().unwrap().push((
            r.key().unwrap_or("").to_string(),
            r.version_id().map(str::to_string),
            tags,
        ));
        PutObjectTaggingOutput::builder().build()
    })
}

fn labels_ok() -> Rule {
    mock!(aws_sdk_rekognition::Client::detect_labels)
        .match_requests(|r| {
            let o = r.image().and_then(|i| i.s3_object());
            o.and_then(|o| o.bucket()) == Some(BUCKET)
                && o.and_then(|o| o.name())
                    .is_some_and(|n| n.starts_with("uploads/"))
                && r.image().and_then(|i| i.bytes()).is_none()
                && r.max_labels() == Some(10)
                && r.min_confidence() == Some(70.0)
        })
        .then_output(|| {
            DetectLabelsOutput::builder()
                .labels(
                    Label::builder()
                        .name("Cat")
                        .confidence(98.51234)
                        .parents(Parent::builder().name("Animal").build())
                        .parents(Parent::builder().name("Pet").build())
                        .build(),
                )
                .labels(Label::builder().name("Whiskers").confidence(81.0).build())
                .label_model_version("3.0")
                .build()
        })
}

const AWAITING: &str = "#status = :awaiting_upload";

fn check_failed() -> PutItemError {
    PutItemError::ConditionalCheckFailedException(
        ConditionalCheckFailedException::builder()
            .message("The conditional request failed")
            .build(),
    )
}

/// DynamoDB rules: what one test's table answers.
struct Ddb(Vec<Rule>);

impl Ddb {
    fn rules(&self) -> Vec<&Rule> {
        self.0.iter().collect()
    }
}

/// A transaction as the tests see it: the item (the first write, a Put on the images table
/// with its condition), and the writes to the labels table.
struct Tx {
    item: Item,
    condition: Option<String>,
    entries: Vec<Item>,
    counts: Vec<(String, String, String)>,
}

fn tx_of(r: &aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput) -> Tx {
    let items = r.transact_items();
    let first = items[0].put().expect("the item is the first write");
    assert_eq!(first.table_name(), "image-pipeline-dev-images");
    let mut tx = Tx {
        item: first.item().clone(),
        condition: first.condition_expression().map(str::to_string),
        entries: vec![],
        counts: vec![],
    };
    for w in &items[1..] {
        if let Some(p) = w.put() {
            assert_eq!(p.table_name(), "image-pipeline-dev-labels");
            tx.entries.push(p.item().clone());
        } else if let Some(u) = w.update() {
            assert_eq!(u.table_name(), "image-pipeline-dev-labels");
            let names = u.expression_attribute_names().cloned().unwrap_or_default();
            tx.counts.push((
                s(&u.key()["pk"]).to_string(),
                s(&u.key()["sk"]).to_string(),
                names.get("#count").cloned().unwrap_or_default(),
            ));
        } else {
            panic!("unexpected write {w:?}");
        }
    }
    tx
}

fn cancelled() -> TransactWriteItemsError {
    TransactWriteItemsError::TransactionCanceledException(
        TransactionCanceledException::builder()
            .cancellation_reasons(
                CancellationReason::builder()
                    .code("ConditionalCheckFailed")
                    .build(),
            )
            .cancellation_reasons(CancellationReason::builder().code("None").build())
            .build(),
    )
}

/// A table with no item for the image yet: it records every final item written (insisting on
/// the forward-only condition, whether alone or in the transaction with the label index) and
/// finds nothing `awaiting_upload`.
fn put_recording(items: &Items) -> Ddb {
    let (put_items, tx_items) = (items.clone(), items.clone());
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.table_name() == Some("image-pipeline-dev-images")
                && [Some(FINAL_WRITE_CONDITION), Some(AWAITING)].contains(&r.condition_expression())
        })
        .then_compute_response(move |r| {
            if r.condition_expression() == Some(AWAITING) {
                return MockResponse::Error(check_failed());
            }
            put_items
                .lock()
                .unwrap()
                .push(r.item().cloned().unwrap_or_default());
            MockResponse::Output(PutItemOutput::builder().build())
        });
    let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_compute_output(move |r| {
        let tx = tx_of(r);
        assert_eq!(tx.condition.as_deref(), Some(FINAL_WRITE_CONDITION));
        tx_items.lock().unwrap().push(tx.item);
        TransactWriteItemsOutput::builder().build()
    });
    Ddb(vec![put, tx])
}

/// A table that is down: every write fails.
fn ddb_down() -> Ddb {
    Ddb(vec![
        mock!(aws_sdk_dynamodb::Client::put_item)
            .then_error(|| PutItemError::unhandled("simulated outage")),
        mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .then_error(|| TransactWriteItemsError::unhandled("simulated outage")),
    ])
}

type Item = HashMap<String, AttributeValue>;

/// A one-table DynamoDB that evaluates the conditions the function writes with, keeping every
/// Whether DynamoDB would let a write with this condition replace `current`.
fn condition_holds(
    condition: Option<&str>,
    names: &HashMap<String, String>,
    values: &HashMap<String, AttributeValue>,
    current: Option<&str>,
) -> bool {
    let value = |k: &str| values.get(k).map(s);
    match condition {
        Some(c) if c == FINAL_WRITE_CONDITION => {
            assert_eq!(names.get("#status").map(String::as_str), Some("status"));
            current.is_none()
                || current == value(":awaiting_upload")
                || current == value(":processing")
        }
        Some(c) if c == AWAITING => current.is_some() && current == value(":awaiting_upload"),
        other => panic!("unexpected condition {other:?}"),
    }
}

/// A one-table DynamoDB that evaluates the conditions the function writes with (alone or as
/// the first write of a transaction), keeping every status an item had in `history`.
fn fake_table(table: &Arc<Mutex<HashMap<String, Item>>>, history: &Arc<Mutex<Vec<String>>>) -> Ddb {
    let write = {
        let (table, history) = (table.clone(), history.clone());
        move |item: Item,
              condition: Option<&str>,
              names: HashMap<String, String>,
              values: HashMap<String, AttributeValue>| {
            let id = s(&item["image_id"]).to_string();
            let mut t = table.lock().unwrap();
            let current = t.get(&id).map(|i| s(&i["status"]).to_string());
            if !condition_holds(condition, &names, &values, current.as_deref()) {
                return false;
            }
            history.lock().unwrap().push(s(&item["status"]).to_string());
            t.insert(id, item);
            true
        }
    };
    let put_write = write.clone();
    let put = mock!(aws_sdk_dynamodb::Client::put_item).then_compute_response(move |r| {
        let ok = put_write(
            r.item().cloned().unwrap_or_default(),
            r.condition_expression(),
            r.expression_attribute_names().cloned().unwrap_or_default(),
            r.expression_attribute_values().cloned().unwrap_or_default(),
        );
        if ok {
            MockResponse::Output(PutItemOutput::builder().build())
        } else {
            MockResponse::Error(check_failed())
        }
    });
    let tx =
        mock!(aws_sdk_dynamodb::Client::transact_write_items).then_compute_response(move |r| {
            let first = r.transact_items()[0].put().expect("the item first");
            let ok = write(
                first.item().clone(),
                first.condition_expression(),
                first
                    .expression_attribute_names()
                    .cloned()
                    .unwrap_or_default(),
                first
                    .expression_attribute_values()
                    .cloned()
                    .unwrap_or_default(),
            );
            if ok {
                MockResponse::Output(TransactWriteItemsOutput::builder().build())
            } else {
                MockResponse::Error(cancelled())
            }
        });
    Ddb(vec![put, tx])
}

fn ctx(s3: &[&Rule], rek: &[&Rule], ddb: &[&Rule]) -> Ctx {
    ctx_with_sts(s3, rek, ddb, &assume_role(|_| true))
}

/// The function's context, its owners' sessions from an STS answering `sts`.
fn ctx_with_sts(s3: &[&Rule], rek: &[&Rule], ddb: &[&Rule], sts: &Rule) -> Ctx {
    ctx_of(s3, rek, ddb, sts, &[])
}

/// The function's context over mocked clients; `sqs` answers the work queue's calls.
fn ctx_of(s3: &[&Rule], rek: &[&Rule], ddb: &[&Rule], sts: &Rule, sqs: &[&Rule]) -> Ctx {
    let vars = testing::vars(&[
        ("IMAGES_TABLE", "image-pipeline-dev-images"),
        ("LABELS_TABLE", "image-pipeline-dev-labels"),
        ("UPLOAD_BUCKET", BUCKET),
        ("UPLOAD_PREFIX", "uploads/"),
        ("REJECTED_TAG", "image-pipeline-rejected=true"),
        ("MAX_LABELS", "10"),
        ("MIN_CONFIDENCE", "70"),
        (
            "WORK_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/work",
        ),
        ("LABELS_INTERVAL_MS", "1"),
        ("MAX_BACKOFF_SECONDS", "900"),
    ]);
    let clients = OwnClients {
        sts: testing::sts(&[sts]),
        s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3),
        // As the function builds it: no retries of its own.
        rekognition: mock_client!(aws_sdk_rekognition, RuleMode::MatchAny, rek, |c| c
            .retry_config(RetryConfig::disabled())),
        dynamodb: mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, ddb),
        sqs: mock_client!(aws_sdk_sqs, RuleMode::MatchAny, sqs),
    };
    Ctx::from_env(clients, &vars).unwrap()
}

fn s(v: &AttributeValue) -> &str {
    v.as_s().map(String::as_str).unwrap_or("<not S>")
}

#[tokio::test]
async fn labels_an_upload_and_writes_one_item() {
    let items = Items::default();
    let (head, rek, put) = (head_ok(), labels_ok(), put_recording(&items));
    let c = ctx(&[&head], &[&rek], &put.rules());
    let summary = process_event(&c, &event(ONE)).await.unwrap();
    assert_eq!(
        summary,
        Summary {
            labeled: 1,
            ..Summary::default()
        }
    );
    assert_eq!(rek.num_calls(), 1);
    let items = items.lock().unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(s(&item["image_id"]), ID);
    assert_eq!(s(&item["status"]), "labeled");
    assert_eq!(s(&item["content_type"]), "image/png");
    assert_eq!(item["size_bytes"].as_n().unwrap(), "240512");
    assert_eq!(s(&item["label_model_version"]), "3.0");
    assert_eq!(s(&item["uploaded_at"]), "2026-11-26T21:00:00.123Z");
    // Listed by GET /metadata: the newest-first index's partition.
    // The owner, from the object's key.
    assert_eq!(s(&item["owner"]), OWNER);
    assert!(s(&item["processed_at"]).ends_with('Z'));
    let labels = item["labels"].as_l().unwrap();
    assert_eq!(labels.len(), 2);
    let cat = labels[0].as_m().unwrap();
    assert_eq!(s(&cat["name"]), "Cat");
    assert_eq!(cat["confidence"].as_n().unwrap(), "98.512");
    let parents: Vec<&str> = cat["parents"].as_l().unwrap().iter().map(s).collect();
    assert_eq!(parents, ["Animal", "Pet"]);
    assert!(!item.contains_key("failure_reason"));
    // Never where the image is stored.
    for (k, v) in item.iter() {
        assert!(!k.contains("bucket") && !k.contains("key"), "{k}");
        assert!(!format!("{v:?}").contains(BUCKET), "{k}");
        assert!(!format!("{v:?}").contains("uploads/"), "{k}");
    }
}

#[tokio::test]
async fn every_record_is_decoded_and_only_image_keys_are_processed() {
    let items = Items::default();
    let head_keys = Arc::new(Mutex::new(Vec::new()));
    let head = {
        let keys = head_keys.clone();
        mock!(aws_sdk_s3::Client::get_object).then_compute_output(move |r| {
            keys.lock().unwrap().push(r.key().unwrap_or("").to_string());
            first_bytes_of(CAT)
        })
    };
    let (rek, put) = (labels_ok(), put_recording(&items));
    let c = ctx(&[&head], &[&rek], &put.rules());
    let summary = process_event(&c, &event(MANY)).await.unwrap();
    // The valid key, the %2F-encoded one; the key with spaces, the foreign prefix and the
    // removal event are skipped.
    assert_eq!(
        summary,
        Summary {
            labeled: 2,
            skipped: 3,
            ..Summary::default()
        }
    );
    assert_eq!(
        *head_keys.lock().unwrap(),
        vec![
            format!("uploads/{OWNER}/{ID}"),
            format!("uploads/{OWNER}/{ENCODED_ID}")
        ]
    );
    let ids: Vec<String> = items
        .lock()
        .unwrap()
        .iter()
        .map(|i| s(&i["image_id"]).to_string())
        .collect();
    assert_eq!(ids, vec![ID.to_string(), ENCODED_ID.to_string()]);
}

#[tokio::test]
async fn a_duplicate_delivery_is_success_and_writes_nothing_new() {
    let head = head_ok();
    let rek = labels_ok();
    let items = Items::default();
    let first = put_recording(&items);
    let c = ctx(&[&head], &[&rek], &first.rules());
    assert_eq!(process_event(&c, &event(ONE)).await.unwrap().labeled, 1);
    // Second delivery: DynamoDB's condition finds the item.
    let dup = Ddb(vec![
        mock!(aws_sdk_dynamodb::Client::put_item).then_error(check_failed),
        mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(cancelled),
    ]);
    let c = ctx(&[&head], &[&rek], &dup.rules());
    let summary = process_event(&c, &event(ONE)).await.unwrap();
    assert_eq!(
        summary,
        Summary {
            duplicates: 1,
            ..Summary::default()
        }
    );
    assert_eq!(items.lock().unwrap().len(), 1);
}

fn throttled() -> Response {
    Response::new(
        StatusCode::try_from(400).unwrap(),
        SdkBody::from(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#),
    )
}

/// A throttled call is not repeated by the SDK (a repeat would start off the pace): the
/// record is returned at once for the work queue to hold back, and its next try succeeds.
#[tokio::test]
async fn a_throttled_call_is_returned_at_once_and_its_next_try_labels_the_image() {
    let rek = mock!(aws_sdk_rekognition::Client::detect_labels)
        .sequence()
        .http_response(throttled)
        .output(|| {
            DetectLabelsOutput::builder()
                .label_model_version("3.0")
                .build()
        })
        .build();
    let items = Items::default();
    let (head, put) = (head_ok(), put_recording(&items));
    let c = ctx(&[&head], &[&rek], &put.rules());
    let err = process_event(&c, &event(ONE)).await.unwrap_err();
    assert!(err.to_string().contains("ThrottlingException"), "{err}");
    assert_eq!(rek.num_calls(), 1, "one call, no retry by the SDK");
    assert!(items.lock().unwrap().is_empty(), "nothing recorded yet");
    let summary = process_event(&c, &event(ONE)).await.unwrap();
    assert_eq!(summary.labeled, 1);
    assert_eq!(rek.num_calls(), 2);
    assert_eq!(items.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn server_errors_are_returned_for_a_later_try() {
    let rek = mock!(aws_sdk_rekognition::Client::detect_labels)
        .sequence()
        .http_status(
            500,
            Some(r#"{"__type":"InternalServerError","message":"boom"}"#.into()),
        )
        .repeatedly()
        .build();
    let items = Items::default();
    let (head, put) = (head_ok(), put_recording(&items));
    let c = ctx(&[&head], &[&rek], &put.rules());
    assert!(process_event(&c, &event(ONE)).await.is_err());
    assert_eq!(rek.num_calls(), 1);
    assert!(items.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_invalid_image_becomes_a_failed_item_without_retry() {
    let rek = mock!(aws_sdk_rekognition::Client::detect_labels).then_error(|| {
        DetectLabelsError::InvalidImageFormatException(
            InvalidImageFormatException::builder()
                .message("Request has unsupported image format")
                .meta(
                    aws_sdk_rekognition::error::ErrorMetadata::builder()
                        .code("InvalidImageFormatException")
                        .message("Request has unsupported image format")
                        .build(),
                )
                .build(),
        )
    });
    let items = Items::default();
    let (head, put) = (head_ok(), put_recording(&items));
    let c = ctx(&[&head], &[&rek], &put.rules());
    let summary = process_event(&c, &event(ONE)).await.unwrap();
    assert_eq!(
        summary,
        Summary {
            failed: 1,
            ..Summary::default()
        }
    );
    assert_eq!(rek.num_calls(), 1);
    let items = items.lock().unwrap();
    assert_eq!(s(&items[0]["status"]), "failed");
    // The API's word for it; Rekognition's own message stays in the log.
    assert_eq!(s(&items[0]["failure_reason"]), "unsupported_image");
    assert!(items[0]["labels"].as_l().unwrap().is_empty());
}

#[tokio::test]
async fn an_object_deleted_before_processing_is_recorded_as_failed() {
    let head = get_status(404);
    let rek = labels_ok();
    let items = Items::default();
    let put = put_recording(&items);
    let c = ctx(&[&head], &[&rek], &put.rules());
    let summary = process_event(&c, &event(ONE)).await.unwrap();
    assert_eq!(summary.failed, 1);
    assert_eq!(rek.num_calls(), 0);
    assert_eq!(
        s(&items.lock().unwrap()[0]["failure_reason"]),
        "image_unavailable"
    );
}

#[tokio::test]
async fn one_failing_record_does_not_lose_the_others() {
    // The first record's DetectLabels keeps failing; the second (the %2F-encoded key) works.
    let failing = mock!(aws_sdk_rekognition::Client::detect_labels)
        .match_requests(|r| {
            r.image().and_then(|i| i.s3_object()).and_then(|o| o.name())
                == Some(&format!("uploads/{OWNER}/{ID}"))
        })
        .sequence()
        .http_response(throttled)
        .repeatedly()
        .build();
    let working = labels_ok();
    let head = head_ok();
    let items = Items::default();
    let put = put_recording(&items);
    let c = ctx(&[&head], &[&failing, &working], &put.rules());
    let err = process_event(&c, &event(MANY)).await.unwrap_err();
    assert!(err.to_string().contains("1 of 5 records failed"), "{err}");
    let ids: Vec<String> = items
        .lock()
        .unwrap()
        .iter()
        .map(|i| s(&i["image_id"]).to_string())
        .collect();
    assert_eq!(ids, vec![ENCODED_ID.to_string()]);
}

#[tokio::test]
async fn a_dynamodb_outage_is_returned_for_retry() {
    let put = ddb_down();
    let (head, rek) = (head_ok(), labels_ok());
    let c = ctx(&[&head], &[&rek], &put.rules());
    assert!(process_event(&c, &event(ONE)).await.is_err());
}

#[tokio::test]
async fn the_event_s_version_is_read_both_by_the_ranged_get_and_detect_labels() {
    const VERSION: &str = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY";
    let head = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| r.version_id() == Some(VERSION))
        .then_output(|| first_bytes_of(CAT));
    let rek = mock!(aws_sdk_rekognition::Client::detect_labels)
        .match_requests(|r| {
            r.image()
                .and_then(|i| i.s3_object())
                .and_then(|o| o.version())
                == Some(VERSION)
        })
        .then_output(|| DetectLabelsOutput::builder().build());
    let items = Items::default();
    let put = put_recording(&items);
    let c = ctx(&[&head], &[&rek], &put.rules());
    let summary = process_event(&c, &event(ONE)).await.unwrap();
    assert_eq!(summary.labeled, 1);
    assert_eq!((head.num_calls(), rek.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_denied_read_is_retried_and_names_the_permission_it_needed() {
    // S3's 403 does not say which permission was missing, so the function itself does.
    let head = get_status(403);
    let rek = labels_ok();
    let items = Items::default();
    let put = put_recording(&items);
    let c = ctx(&[&head], &[&rek], &put.rules());
    let err = process_event(&c, &event(ONE))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("denied (403)"), "{err}");
    assert!(err.contains("s3:GetObjectVersion"), "{err}");
    assert_eq!(rek.num_calls(), 0);
    assert!(items.lock().unwrap().is_empty(), "nothing is recorded");
}

const PDF: &[u8] =
    b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

/// A presigned PUT can store anything: what is not an image Rekognition takes becomes a
/// failed item with the API's reason and the sniffed type, its version is tagged for the
/// lifecycle, and DetectLabels is never asked.
#[tokio::test]
async fn what_is_not_an_image_is_failed_tagged_and_never_sent_to_rekognition() {
    const VERSION: &str = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY";
    static TALL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let tall: &'static [u8] = TALL.get_or_init(|| {
        // The cat with a header claiming 1 x 100000 (checksum fixed).
        let mut b = CAT.to_vec();
        b[16..20].copy_from_slice(&1u32.to_be_bytes());
        b[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32fast::hash(&b[12..29]);
        b[29..33].copy_from_slice(&crc.to_be_bytes());
        b
    });
    static POLYGLOT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let small_polyglot: &'static [u8] = POLYGLOT.get_or_init(|| {
        let mut b = include_bytes!("data/small.png").to_vec();
        b.extend_from_slice(b"PK\x03\x04");
        b
    });
    let cases: [(&str, &'static [u8], &str, &str); 5] = [
        (
            "a PDF",
            PDF,
            "unsupported_image",
            "application/octet-stream",
        ),
        (
            "an empty object",
            b"",
            "unsupported_image",
            "application/octet-stream",
        ),
        (
            "a PNG claiming 1x100000",
            tall,
            "image_too_small",
            "image/png",
        ),
        (
            "a small PNG with a ZIP appended",
            small_polyglot,
            "invalid_image",
            "image/png",
        ),
        (
            "a GIF",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
            "unsupported_image",
            "application/octet-stream",
        ),
    ];
    for (name, object, reason, content_type) in cases {
        let get = if object.is_empty() {
            get_status(416)
        } else {
            mock!(aws_sdk_s3::Client::get_object)
                .match_requests(|r| r.version_id() == Some(VERSION))
                .then_output(move || first_bytes_of(object))
        };
        let tagged = Tagged::default();
        let tag = tag_recording(&tagged);
        let rek = labels_ok();
        let items = Items::default();
        let put = put_recording(&items);
        let c = ctx(&[&get, &tag], &[&rek], &put.rules());
        let summary = process_event(&c, &event(ONE)).await.unwrap();
        assert_eq!(summary.failed, 1, "{name}");
        assert_eq!(rek.num_calls(), 0, "{name}: never sent to Rekognition");
        let items = items.lock().unwrap();
        assert_eq!(s(&items[0]["status"]), "failed", "{name}");
        assert_eq!(s(&items[0]["failure_reason"]), reason, "{name}");
        assert_eq!(s(&items[0]["content_type"]), content_type, "{name}");
        assert_eq!(
            *tagged.lock().unwrap(),
            vec![(
                format!("uploads/{OWNER}/{ID}"),
                Some(VERSION.to_string()),
                "image-pipeline-rejected=true".to_string()
            )],
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_stored_content_type_is_the_sniffed_one() {
    // S3 says binary/octet-stream (what the client sent); the bytes say PNG.
    let items = Items::default();
    let (get, rek, put) = (head_ok(), labels_ok(), put_recording(&items));
    let c = ctx(&[&get], &[&rek], &put.rules());
    process_event(&c, &event(ONE)).await.unwrap();
    assert_eq!(s(&items.lock().unwrap()[0]["content_type"]), "image/png");
    assert_eq!(
        items.lock().unwrap()[0]["size_bytes"].as_n().unwrap(),
        "240512"
    );
}

#[tokio::test]
async fn a_record_about_another_bucket_is_skipped() {
    let fixture = ONE.replace(BUCKET, "someone-elses-bucket");
    let items = Items::default();
    let (get, rek, put) = (head_ok(), labels_ok(), put_recording(&items));
    let c = ctx(&[&get], &[&rek], &put.rules());
    let summary = process_event(&c, &event(&fixture)).await.unwrap();
    assert_eq!(summary.skipped, 1);
    assert_eq!((get.num_calls(), rek.num_calls()), (0, 0));
    assert!(items.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_tagging_is_retried_and_records_nothing() {
    let get = mock!(aws_sdk_s3::Client::get_object).then_output(|| first_bytes_of(PDF));
    let tag = mock!(aws_sdk_s3::Client::put_object_tagging)
        .then_http_response(|| Response::new(StatusCode::try_from(403).unwrap(), SdkBody::empty()));
    let items = Items::default();
    let (rek, put) = (labels_ok(), put_recording(&items));
    let c = ctx(&[&get, &tag], &[&rek], &put.rules());
    let err = process_event(&c, &event(ONE))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tagging the rejected upload"), "{err}");
    assert!(items.lock().unwrap().is_empty());
}

/// Hostile and odd S3 records, each with what must happen to it: processed (labeled) or
/// skipped without a read, a label request or an item.
/// A change to the recorded event.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

/// Sets the field at `path` of the first record.
fn set(path: &'static [&'static str], v: serde_json::Value) -> Edit {
    Box::new(move |ev: &mut serde_json::Value| {
        let mut at = &mut ev["Records"][0];
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = v.clone();
    })
}

/// Sets the record's object key.
fn key(k: String) -> Edit {
    set(&["s3", "object", "key"], serde_json::Value::String(k))
}

/// Records that name an upload: they are labeled.
fn processed_records() -> Vec<(&'static str, Edit, &'static str)> {
    vec![
        (
            "the recorded event",
            Box::new(|_: &mut serde_json::Value| {}),
            "labeled",
        ),
        (
            "ObjectCreated:Copy",
            (set(&["eventName"], "ObjectCreated:Copy".into())),
            "labeled",
        ),
        (
            "ObjectCreated:CompleteMultipartUpload",
            (set(
                &["eventName"],
                "ObjectCreated:CompleteMultipartUpload".into(),
            )),
            "labeled",
        ),
        (
            "a versionId of \"null\"",
            (set(&["s3", "object", "versionId"], "null".into())),
            "labeled",
        ),
        (
            "the id percent-encoded",
            (key(format!("uploads/{OWNER}/%33{}", &ID[1..]))),
            "labeled",
        ),
    ]
}

/// Records of other events or other buckets: skipped.
fn skipped_events() -> Vec<(&'static str, Edit, &'static str)> {
    vec![
        (
            "ObjectRemoved:Delete",
            (set(&["eventName"], "ObjectRemoved:Delete".into())),
            "skipped",
        ),
        (
            "ObjectRestore:Completed",
            (set(&["eventName"], "ObjectRestore:Completed".into())),
            "skipped",
        ),
        (
            "no eventName",
            (set(&["eventName"], serde_json::Value::Null)),
            "skipped",
        ),
        (
            "another bucket",
            (set(&["s3", "bucket", "name"], "someone-elses-bucket".into())),
            "skipped",
        ),
        (
            "no bucket name",
            (set(&["s3", "bucket", "name"], serde_json::Value::Null)),
            "skipped",
        ),
    ]
}

/// Records whose key is not the prefix and an image id: skipped.
fn skipped_keys() -> Vec<(&'static str, Edit, &'static str)> {
    let long = format!("uploads/{}", "a".repeat(10_000));
    vec![
        (
            "no key",
            (set(&["s3", "object", "key"], serde_json::Value::Null)),
            "skipped",
        ),
        ("the prefix alone", (key("uploads/".into())), "skipped"),
        (
            "not a UUID",
            (key(format!("uploads/{OWNER}/cat.jpg"))),
            "skipped",
        ),
        ("no owner", (key(format!("uploads/{ID}"))), "skipped"),
        (
            "an owner that is not a sub",
            (key(format!("uploads/a.b/{ID}"))),
            "skipped",
        ),
        (
            "an upper-case UUID",
            (key(format!("uploads/{OWNER}/{}", ID.to_uppercase()))),
            "skipped",
        ),
        (
            "a UUID with a suffix",
            (key(format!("uploads/{OWNER}/{ID}/x"))),
            "skipped",
        ),
        (
            "a UUID with an extension",
            (key(format!("uploads/{OWNER}/{ID}.png"))),
            "skipped",
        ),
        (
            "a trailing +",
            (key(format!("uploads/{OWNER}/{ID}+"))),
            "skipped",
        ),
        (
            "a NUL byte",
            (key(format!("uploads/{OWNER}/{ID}%00"))),
            "skipped",
        ),
        (
            "a dot-dot path",
            (key(format!("uploads/../uploads/{OWNER}/{ID}"))),
            "skipped",
        ),
        ("another prefix", (key(format!("other/{ID}"))), "skipped"),
        (
            "the prefix in capitals",
            (key(format!("Uploads/{ID}"))),
            "skipped",
        ),
        ("a bad escape %zz", (key("uploads/%zz".into())), "skipped"),
        (
            "an escape with a sign, %+1",
            (key("uploads/%+1".into())),
            "skipped",
        ),
        ("a cut escape", (key("uploads/%4".into())), "skipped"),
        (
            "bytes that are not UTF-8",
            (key("uploads/%FF%FE".into())),
            "skipped",
        ),
        ("a 10,000-character key", (key(long)), "skipped"),
    ]
}

#[tokio::test]
async fn hostile_s3_records_are_processed_or_skipped_exactly() {
    let cases: Vec<_> = [processed_records(), skipped_events(), skipped_keys()]
        .into_iter()
        .flatten()
        .collect();
    let mut wrong = Vec::new();
    for (name, edit, want) in &cases {
        let mut ev: serde_json::Value = serde_json::from_str(ONE).unwrap();
        edit(&mut ev);
        let items = Items::default();
        let (get, rek, put) = (head_ok(), labels_ok(), put_recording(&items));
        let c = ctx(&[&get], &[&rek], &put.rules());
        let event: S3Event = serde_json::from_value(ev).unwrap();
        let summary = process_event(&c, &event).await.unwrap();
        let got = match (summary.labeled, summary.skipped) {
            (1, 0) => "labeled",
            (0, 1) => "skipped",
            _ => "other",
        };
        let calls = (
            get.num_calls(),
            rek.num_calls(),
            items.lock().unwrap().len(),
        );
        let expected_calls = if *want == "labeled" {
            (1, 1, 1)
        } else {
            (0, 0, 0)
        };
        if got != *want || calls != expected_calls {
            wrong.push(format!(
                "{name}: {got} with (reads, label requests, items) {calls:?}, want {want}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The status an item starts with, the statuses it goes through and the one it ends with.
#[tokio::test]
async fn statuses_only_move_forward() {
    let seeded = |status: &str| {
        HashMap::from([
            ("image_id".to_string(), AttributeValue::S(ID.into())),
            ("status".to_string(), AttributeValue::S(status.into())),
        ])
    };
    for (before, written, after, summary) in [
        // A presigned upload arrives: processing, then labeled.
        (
            Some("awaiting_upload"),
            vec!["processing", "labeled"],
            "labeled",
            Summary {
                labeled: 1,
                ..Summary::default()
            },
        ),
        // A direct upload, recorded as processing by the upload function.
        (
            Some("processing"),
            vec!["labeled"],
            "labeled",
            Summary {
                labeled: 1,
                ..Summary::default()
            },
        ),
        // The upload function's record has not landed yet.
        (
            None,
            vec!["labeled"],
            "labeled",
            Summary {
                labeled: 1,
                ..Summary::default()
            },
        ),
        // A duplicate or late event: nothing is written, nothing goes back.
        (
            Some("labeled"),
            vec![],
            "labeled",
            Summary {
                duplicates: 1,
                ..Summary::default()
            },
        ),
        (
            Some("failed"),
            vec![],
            "failed",
            Summary {
                duplicates: 1,
                ..Summary::default()
            },
        ),
    ] {
        let table = Arc::new(Mutex::new(HashMap::new()));
        if let Some(status) = before {
            table.lock().unwrap().insert(ID.to_string(), seeded(status));
        }
        let history = Arc::default();
        let (head, rek, put) = (head_ok(), labels_ok(), fake_table(&table, &history));
        let c = ctx(&[&head], &[&rek], &put.rules());
        let got = process_event(&c, &event(ONE)).await.unwrap();
        assert_eq!(got, summary, "from {before:?}");
        assert_eq!(*history.lock().unwrap(), written, "from {before:?}");
        let t = table.lock().unwrap();
        assert_eq!(s(&t[ID]["status"]), after, "from {before:?}");
    }
}

/// The item, an entry under each label and each label's count, in one transaction; labels
/// that differ only in case are one entry.
#[tokio::test]
async fn a_labeled_image_is_indexed_with_its_item_in_one_transaction() {
    let seen: Arc<Mutex<Vec<Tx>>> = Arc::default();
    let tx = {
        let seen = seen.clone();
        mock!(aws_sdk_dynamodb::Client::transact_write_items).then_compute_output(move |r| {
            seen.lock().unwrap().push(tx_of(r));
            TransactWriteItemsOutput::builder().build()
        })
    };
    let none_awaiting = mock!(aws_sdk_dynamodb::Client::put_item).then_error(check_failed);
    let rek = mock!(aws_sdk_rekognition::Client::detect_labels).then_output(|| {
        DetectLabelsOutput::builder()
            .labels(Label::builder().name("Cat").confidence(98.51234).build())
            .labels(Label::builder().name("CAT").confidence(60.0).build())
            .labels(Label::builder().name("Whiskers").confidence(81.0).build())
            .build()
    });
    let head = head_ok();
    let c = ctx(&[&head], &[&rek], &[&none_awaiting, &tx]);
    assert_eq!(process_event(&c, &event(ONE)).await.unwrap().labeled, 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "one transaction");
    let t = &seen[0];
    assert_eq!(s(&t.item["status"]), "labeled");
    assert_eq!(
        t.item["labels"].as_l().unwrap().len(),
        3,
        "the item keeps every label"
    );
    let sk = format!("2026-11-26T21:00:00.123Z#{ID}");
    // The user's own partitions: every key of the index starts with its owner.
    let (cat, whiskers) = (
        format!("{OWNER}#label#cat"),
        format!("{OWNER}#label#whiskers"),
    );
    let entries: Vec<(&str, &str, &str)> = t
        .entries
        .iter()
        .map(|e| {
            (
                s(&e["pk"]),
                s(&e["sk"]),
                e["confidence"].as_n().unwrap().as_str(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (cat.as_str(), sk.as_str(), "98.512"),
            (whiskers.as_str(), sk.as_str(), "81.000")
        ]
    );
    // An entry carries the item's metadata, so a search needs no second read.
    for e in &t.entries {
        assert_eq!(s(&e["image_id"]), ID);
        assert_eq!(s(&e["status"]), "labeled");
        assert!(e["labels"].as_l().is_ok());
    }
    assert_eq!(
        t.counts,
        [
            (
                format!("{OWNER}#counts"),
                "cat".to_string(),
                "n98".to_string()
            ),
            (
                format!("{OWNER}#counts"),
                "whiskers".to_string(),
                "n81".to_string()
            )
        ]
    );
}

#[tokio::test]
async fn a_labeled_image_without_labels_is_one_put() {
    let items = Items::default();
    let put = put_recording(&items);
    let rek = mock!(aws_sdk_rekognition::Client::detect_labels)
        .then_output(|| DetectLabelsOutput::builder().build());
    let head = head_ok();
    let c = ctx(&[&head], &[&rek], &put.rules());
    assert_eq!(process_event(&c, &event(ONE)).await.unwrap().labeled, 1);
    assert_eq!(items.lock().unwrap().len(), 1);
    assert_eq!(put.0[1].num_calls(), 0, "no transaction");
}

/// An image is read, labeled and recorded as its owner: one `AssumeRole` of the user role
/// whose session policy names the owner (from the object's key) and allows DetectLabels.
/// Without a session nothing is read or written, and the event is handed back to be retried.
#[tokio::test]
async fn an_image_is_processed_in_a_session_of_its_owner_and_retried_without_one() {
    let items = Items::default();
    let (head, rek, put) = (head_ok(), labels_ok(), put_recording(&items));
    let sts = assume_role(|input| {
        let policy = input.policy().unwrap_or_default();
        input.role_arn() == Some(ROLE_ARN)
            && input.role_session_name() == Some(OWNER)
            && policy.contains(&format!("{BUCKET}/uploads/{OWNER}/*"))
            && policy.contains(&format!("\"{OWNER}#*\""))
            && policy.contains("rekognition:DetectLabels")
    });
    let c = ctx_with_sts(&[&head], &[&rek], &put.rules(), &sts);
    let summary = process_event(&c, &event(ONE)).await.unwrap();
    assert_eq!(summary.labeled, 1);
    assert_eq!(sts.num_calls(), 1);

    let refused = testing::refusing();
    let calls = (head.num_calls(), rek.num_calls());
    let c = ctx_with_sts(&[&head], &[&rek], &put.rules(), &refused);
    let err = process_event(&c, &event(ONE)).await.unwrap_err();
    assert!(err.to_string().contains("will be tried again"), "{err}");
    assert_eq!((head.num_calls(), rek.num_calls()), calls, "nothing read");
    assert_eq!(items.lock().unwrap().len(), 1, "nothing written");
}

mod work_queue {
    use super::*;
    use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
    use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityOutput;
    use lambda_runtime::{Context, LambdaEvent};
    use process_function::queue::handler;

    const TEST_EVENT: &str = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00.000Z","Bucket":"b","RequestId":"r","HostId":"h"}"#;

    /// An SQS record as the event source mapping sends it.
    fn record(id: &str, body: &str, receive_count: u32) -> serde_json::Value {
        serde_json::json!({
            "messageId": id,
            "receiptHandle": format!("receipt-{id}"),
            "body": body,
            "attributes": {"ApproximateReceiveCount": receive_count.to_string()},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:work",
            "awsRegion": "us-east-1"
        })
    }

    /// The ids of the records a batch's answer reports for a later try.
    fn failed_ids(answer: &SqsBatchResponse) -> Vec<&str> {
        answer
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }

    fn batch(records: Vec<serde_json::Value>) -> LambdaEvent<SqsEvent> {
        batch_due_in(records, 60_000)
    }

    /// A batch whose invocation must end `ms` from now (negative: already past).
    fn batch_due_in(records: Vec<serde_json::Value>, ms: i64) -> LambdaEvent<SqsEvent> {
        let event = serde_json::json!({ "Records": records });
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let mut context = Context::default();
        context.deadline = u64::try_from(now + ms).unwrap_or(0);
        LambdaEvent::new(serde_json::from_value(event).unwrap(), context)
    }

    type Held = Arc<Mutex<Vec<(String, i32)>>>;

    fn holding(held: &Held) -> Rule {
        let held = held.clone();
        mock!(aws_sdk_sqs::Client::change_message_visibility).then_compute_output(move |r| {
            held.lock().unwrap().push((
                r.receipt_handle().unwrap_or("").to_string(),
                r.visibility_timeout().unwrap_or(-1),
            ));
            ChangeMessageVisibilityOutput::builder().build()
        })
    }

    fn ctx_with_sqs(s3: &[&Rule], rek: &[&Rule], ddb: &[&Rule], sqs: &Rule) -> Ctx {
        ctx_of(s3, rek, ddb, &assume_role(|_| true), &[sqs])
    }

    /// A batch of a test event, a good upload and a throttled one: only the throttled
    /// record is reported, and it is held back by the first back-off before it returns.
    #[tokio::test]
    async fn only_the_record_to_retry_is_reported_and_held_back() {
        let rek = mock!(aws_sdk_rekognition::Client::detect_labels)
            .sequence()
            .output(|| {
                DetectLabelsOutput::builder()
                    .label_model_version("3.0")
                    .build()
            })
            .http_response(throttled)
            .build();
        let items = Items::default();
        let held = Held::default();
        let (head, put, sqs) = (head_ok(), put_recording(&items), holding(&held));
        let c = ctx_with_sqs(&[&head], &[&rek], &put.rules(), &sqs);
        let answer = handler(
            &c,
            batch(vec![
                record("test", TEST_EVENT, 1),
                record("good", ONE, 1),
                record("throttled", ONE, 1),
            ]),
        )
        .await
        .unwrap();
        let failed = failed_ids(&answer);
        assert_eq!(failed, ["throttled"]);
        assert_eq!(items.lock().unwrap().len(), 1, "the good one is labeled");
        let held = held.lock().unwrap().clone();
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0].0, "receipt-throttled");
        assert!((3..=5).contains(&held[0].1), "first back-off {}", held[0].1);
    }

    /// The back-off grows with the receives: the ninth receive waits between half and all of
    /// the cap.
    #[tokio::test]
    async fn a_record_received_often_waits_longer() {
        let rek = mock!(aws_sdk_rekognition::Client::detect_labels)
            .sequence()
            .http_response(throttled)
            .repeatedly()
            .build();
        let held = Held::default();
        let (head, put, sqs) = (head_ok(), put_recording(&Items::default()), holding(&held));
        let c = ctx_with_sqs(&[&head], &[&rek], &put.rules(), &sqs);
        let answer = handler(&c, batch(vec![record("m", ONE, 9)])).await.unwrap();
        assert_eq!(answer.batch_item_failures.len(), 1);
        let held = held.lock().unwrap().clone();
        assert!((450..=900).contains(&held[0].1), "{held:?}");
    }

    /// Records a batch has no time left for are not started: each goes back to the queue at
    /// once (visibility 0), reported, instead of returning with the whole batch after the
    /// queue's visibility timeout when the function times out.
    #[tokio::test]
    async fn records_without_time_left_go_back_at_once() {
        let held = Held::default();
        let sqs = holding(&held);
        let c = ctx_with_sqs(&[], &[], &[], &sqs);
        let short = i64::try_from(process_function::queue::RECORD_TIME.as_millis()).unwrap() - 1;
        let answer = handler(
            &c,
            batch_due_in(vec![record("a", ONE, 1), record("b", ONE, 2)], short),
        )
        .await
        .unwrap();
        let failed = failed_ids(&answer);
        assert_eq!(failed, ["a", "b"]);
        assert_eq!(
            held.lock().unwrap().clone(),
            [("receipt-a".to_string(), 0), ("receipt-b".to_string(), 0)]
        );
    }

    /// A record that does not finish within its limit (here its pace's turn is hours away, as
    /// a call that never answers would be) is stopped and backed off like any failure, and
    /// the next record still runs: the batch answers before the function's timeout.
    #[tokio::test]
    async fn a_record_that_hangs_is_stopped_and_backed_off() {
        let held = Held::default();
        let (head, put, sqs) = (head_ok(), put_recording(&Items::default()), holding(&held));
        let mut c = ctx_with_sqs(&[&head], &[], &put.rules(), &sqs);
        c.pace = process_function::pace::Pace::new(86_400_000);
        c.work_queue.record_limit = std::time::Duration::from_millis(100);
        let answer = handler(
            &c,
            batch(vec![record("stuck", ONE, 1), record("next", ONE, 1)]),
        )
        .await
        .unwrap();
        assert_eq!(failed_ids(&answer), ["stuck", "next"]);
        let held = held.lock().unwrap().clone();
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(held.iter().all(|(_, s)| (3..=5).contains(s)), "{held:?}");
    }

    /// A body that is no S3 event is kept for a person to read: reported at the longest
    /// back-off, so that it ends in the dead-letter queue instead of being deleted unread.
    #[tokio::test]
    async fn an_unreadable_body_is_kept_at_the_longest_back_off() {
        let held = Held::default();
        let sqs = holding(&held);
        let c = ctx_with_sqs(&[], &[], &[], &sqs);
        let answer = handler(&c, batch(vec![record("junk", "{\"hello\":1}", 1)]))
            .await
            .unwrap();
        assert_eq!(answer.batch_item_failures.len(), 1);
        assert_eq!(
            held.lock().unwrap().clone(),
            [("receipt-junk".to_string(), 900)]
        );
    }
}
