//! The delete function against mocked S3 and DynamoDB: the caller's image goes with its label
//! entries, counts and every object version; another user's id is 404 and touches nothing; a
//! retry finishes what is left and counts nothing down twice.

// Test code: fixtures and mocks are ours, so a panic is the right failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
use aws_sdk_s3::types::{DeleteMarkerEntry, ObjectVersion};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use delete_function::{Ctx, handler};
use handler_shared::scope::testing::{self, ROLE_ARN, assume_role};
use lambda_runtime::{Context, LambdaEvent};

const ID: &str = "3f2b8c1e-5d4a-4b6f-9c2d-1a2b3c4d5e6f";
const OWNER: &str = "7d3f0c2e-5b1a-4c8e-9f60-2a4b6c8d0e1f";
const UPLOADED: &str = "2026-11-26T21:00:00.123Z";

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn request(sub: Option<&str>, id: &str) -> LambdaEvent<ApiGatewayV2httpRequest> {
    let mut claims = serde_json::Map::new();
    if let Some(sub) = sub {
        claims.insert("sub".into(), sub.into());
    }
    let v = serde_json::json!({
        "version": "2.0",
        "routeKey": "DELETE /images/{id}",
        "rawPath": format!("/images/{id}"),
        "headers": {},
        "requestContext": {
            "http": {"method": "DELETE", "path": format!("/images/{id}")},
            "routeKey": "DELETE /images/{id}",
            "stage": "$default",
            "authorizer": {"jwt": {"claims": claims, "scopes": ["aws.cognito.signin.user.admin"]}}
        },
        "pathParameters": {"id": id},
        "isBase64Encoded": false
    });
    LambdaEvent::new(serde_json::from_value(v).unwrap(), Context::default())
}

/// The labeled item the tombstone replaced: Cat twice (one entry, at 98.5), and Whiskers.
fn labeled_item(status: &str) -> HashMap<String, AttributeValue> {
    let label = |name: &str, c: &str| {
        AttributeValue::M(HashMap::from([
            ("name".to_string(), s(name)),
            ("confidence".to_string(), AttributeValue::N(c.into())),
        ]))
    };
    HashMap::from([
        ("owner".to_string(), s(OWNER)),
        ("image_id".to_string(), s(ID)),
        ("status".to_string(), s(status)),
        ("uploaded_at".to_string(), s(UPLOADED)),
        (
            "labels".to_string(),
            AttributeValue::L(vec![
                label("Cat", "98.512"),
                label("cat", "70.000"),
                label("Whiskers", "81.000"),
            ]),
        ),
    ])
}

/// What the mocks saw: (table or bucket, key description).
type Seen = Arc<Mutex<Vec<String>>>;

fn ctx(s3: &[&Rule], ddb: &[&Rule]) -> Ctx {
    ctx_with_sts(s3, ddb, &assume_role(|_| true))
}

/// The function's context, its user sessions from an STS answering `sts`.
fn ctx_with_sts(s3: &[&Rule], ddb: &[&Rule], sts: &Rule) -> Ctx {
    let vars = testing::vars(&[
        ("IMAGES_TABLE", "image-pipeline-dev-images"),
        ("LABELS_TABLE", "image-pipeline-dev-labels"),
        ("UPLOAD_BUCKET", "image-pipeline-dev-123456789012-us-east-1"),
        ("UPLOAD_PREFIX", "uploads/"),
        ("THUMBNAIL_PREFIX", "thumbnails/"),
    ]);
    Ctx::from_env(
        testing::sts(&[sts]),
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3),
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, ddb),
        &vars,
    )
    .unwrap()
}

/// The tombstone write: on the caller's key only, answering `old` (None: no such item).
fn tombstone(old: Option<HashMap<String, AttributeValue>>) -> Rule {
    mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|r| r.table_name() == Some("image-pipeline-dev-images"))
        .then_compute_response(move |r| {
            let key = r.key().cloned().unwrap_or_default();
            let mine = key.get("owner") == Some(&s(OWNER)) && key.get("image_id") == Some(&s(ID));
            assert_eq!(
                r.expression_attribute_values()
                    .and_then(|v| v.get(":deleted")),
                Some(&s("deleted"))
            );
            match (&old, mine) {
                (Some(item), true) => aws_smithy_mocks::MockResponse::Output(
                    UpdateItemOutput::builder()
                        .set_attributes(Some(item.clone()))
                        .build(),
                ),
                _ => aws_smithy_mocks::MockResponse::Error(
                    UpdateItemError::ConditionalCheckFailedException(
                        ConditionalCheckFailedException::builder().build(),
                    ),
                ),
            }
        })
}

/// Label entries: present (with their confidence) the first time each is deleted.
fn entries(seen: Seen, present: bool) -> Rule {
    mock!(aws_sdk_dynamodb::Client::delete_item).then_compute_response(move |r| {
        let key = r.key().cloned().unwrap_or_default();
        let pk = key["pk"].as_s().unwrap().clone();
        let sk = key["sk"].as_s().unwrap().clone();
        seen.lock().unwrap().push(format!("delete {pk} {sk}"));
        let confidence = if pk.ends_with("#cat") {
            "98.512"
        } else {
            "81.000"
        };
        let mut out = DeleteItemOutput::builder();
        if present {
            out = out.attributes("confidence", AttributeValue::N(confidence.into()));
        }
        aws_smithy_mocks::MockResponse::Output(out.build())
    })
}

fn counts(seen: Seen) -> Rule {
    mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|r| r.table_name() == Some("image-pipeline-dev-labels"))
        .then_compute_response(move |r| {
            let key = r.key().cloned().unwrap_or_default();
            let bucket = r.expression_attribute_names().unwrap()["#count"].clone();
            seen.lock().unwrap().push(format!(
                "count {} {} {bucket}",
                key["pk"].as_s().unwrap(),
                key["sk"].as_s().unwrap()
            ));
            aws_smithy_mocks::MockResponse::Output(UpdateItemOutput::builder().build())
        })
}

/// Versions of the two keys: the original has two versions and a delete marker, the
/// thumbnail one version; each is listed until deleted.
fn versions(seen: Seen) -> (Rule, Rule) {
    let listed = seen.clone();
    let list = mock!(aws_sdk_s3::Client::list_object_versions).then_compute_response(move |r| {
        let key = r.prefix().unwrap().to_string();
        let gone = listed
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(&format!("s3 {key} ")));
        let mut out = ListObjectVersionsOutput::builder();
        if !gone {
            let ids: &[&str] = if key.starts_with("uploads/") {
                &["v1", "v2"]
            } else {
                &["t1"]
            };
            for id in ids {
                out = out.versions(ObjectVersion::builder().key(&key).version_id(*id).build());
            }
            if key.starts_with("uploads/") {
                out = out.delete_markers(
                    DeleteMarkerEntry::builder()
                        .key(&key)
                        .version_id("m1")
                        .build(),
                );
            }
            // Another key that shares the prefix is never deleted.
            out = out.versions(
                ObjectVersion::builder()
                    .key(format!("{key}-other"))
                    .version_id("x")
                    .build(),
            );
        }
        aws_smithy_mocks::MockResponse::Output(out.build())
    });
    let delete = mock!(aws_sdk_s3::Client::delete_object).then_compute_response(move |r| {
        seen.lock().unwrap().push(format!(
            "s3 {} {}",
            r.key().unwrap(),
            r.version_id().unwrap_or("-")
        ));
        aws_smithy_mocks::MockResponse::Output(DeleteObjectOutput::builder().build())
    });
    (list, delete)
}

#[tokio::test]
async fn the_owners_image_goes_with_its_index_counts_and_every_version() {
    let seen: Seen = Arc::default();
    let t = tombstone(Some(labeled_item("labeled")));
    let (e, c) = (entries(seen.clone(), true), counts(seen.clone()));
    let (list, del) = versions(seen.clone());
    let resp = handler(
        &ctx(&[&list, &del], &[&t, &e, &c]),
        request(Some(OWNER), ID),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 204);
    let sk = format!("{UPLOADED}#{ID}");
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    let mut want = vec![
        format!("count {OWNER}#counts cat n98"),
        format!("count {OWNER}#counts whiskers n81"),
        format!("delete {OWNER}#label#cat {sk}"),
        format!("delete {OWNER}#label#whiskers {sk}"),
        format!("s3 uploads/{OWNER}/{ID} m1"),
        format!("s3 uploads/{OWNER}/{ID} v1"),
        format!("s3 uploads/{OWNER}/{ID} v2"),
        format!("s3 thumbnails/{OWNER}/{ID}.jpg t1"),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn another_users_id_is_not_found_and_touches_nothing() {
    let seen: Seen = Arc::default();
    let t = tombstone(Some(labeled_item("labeled")));
    let (e, c) = (entries(seen.clone(), true), counts(seen.clone()));
    let (list, del) = versions(seen.clone());
    let other = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let resp = handler(
        &ctx(&[&list, &del], &[&t, &e, &c]),
        request(Some(other), ID),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 404);
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(list.num_calls(), 0);
    // No verified token, or an id that is not one: refused before anything is asked.
    for (sub, id, status) in [(None, ID, 401), (Some(OWNER), "../x", 400)] {
        let resp = handler(&ctx(&[&list, &del], &[&t, &e, &c]), request(sub, id))
            .await
            .unwrap();
        assert_eq!(resp.status_code, status, "{sub:?} {id}");
    }
    assert_eq!(t.num_calls(), 1);
}

#[tokio::test]
async fn a_second_delete_finishes_and_counts_nothing_down_twice() {
    let seen: Seen = Arc::default();
    // The first delete left the tombstone (with the labels it replaced) and the entries gone.
    let t = tombstone(Some(labeled_item("deleted")));
    let (e, c) = (entries(seen.clone(), false), counts(seen.clone()));
    let (list, del) = versions(seen.clone());
    let resp = handler(
        &ctx(&[&list, &del], &[&t, &e, &c]),
        request(Some(OWNER), ID),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 204);
    assert_eq!(c.num_calls(), 0, "no count taken down twice");
    assert_eq!(e.num_calls(), 2, "each entry asked for again");
}

/// Every change is made as the signed-in user: one `AssumeRole` of the user role whose
/// session policy names the user's prefixes and partitions. Without a session nothing is
/// deleted: STS failing is a 503, and nothing is asked with the function's own credentials.
#[tokio::test]
async fn deletes_are_made_in_a_session_of_the_user_and_none_without_one() {
    let seen: Seen = Arc::default();
    let t = tombstone(Some(labeled_item("labeled")));
    let (e, c) = (entries(seen.clone(), true), counts(seen.clone()));
    let (list, del) = versions(seen.clone());
    let sts = assume_role(|input| {
        let policy = input.policy().unwrap_or_default();
        input.role_arn() == Some(ROLE_ARN)
            && input.role_session_name() == Some(OWNER)
            && policy.contains(&format!("/uploads/{OWNER}/*"))
            && policy.contains(&format!("/thumbnails/{OWNER}/*"))
            && policy.contains(&format!("\"{OWNER}#*\""))
    });
    let resp = handler(
        &ctx_with_sts(&[&list, &del], &[&t, &e, &c], &sts),
        request(Some(OWNER), ID),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 204);
    assert_eq!(sts.num_calls(), 1);

    let refused = testing::refusing();
    let calls = (t.num_calls(), list.num_calls());
    let resp = handler(
        &ctx_with_sts(&[&list, &del], &[&t, &e, &c], &refused),
        request(Some(OWNER), ID),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 503);
    assert_eq!((t.num_calls(), list.num_calls()), calls, "nothing asked");
}
