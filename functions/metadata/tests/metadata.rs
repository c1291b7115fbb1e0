//! The metadata function against mocked DynamoDB: one item, 404, paging with opaque tokens,
//! search by label and the label counts from the label index, and a table of bad inputs that
//! must each get the exact 4xx without touching a table.

// Test code: fixtures and mocks are ours, so a panic is the right failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::get_item::{GetItemError, GetItemOutput};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use handler_shared::scope::testing::{self, ROLE_ARN, assume_role};
use lambda_runtime::{Context, LambdaEvent};
use metadata_function::{Ctx, decode_search_token, encode_search_token, encode_token, handler};
use serde_json::Value;

const GET_ITEM: &str = include_str!("data/get-item.json");
const GET_LIST: &str = include_str!("data/get-list.json");
const ID: &str = "3f2b8c1e-5d4a-4b6f-9c2d-1a2b3c4d5e6f";
const TABLE: &str = "image-pipeline-dev-images";
const LABELS: &str = "image-pipeline-dev-labels";
/// The `sub` of the signed-in user in the test events.
const OWNER: &str = "7d3f0c2e-5b1a-4c8e-9f60-2a4b6c8d0e1f";

/// What a next token is bound to: the table and the user it was issued to.
fn scope(table: &str) -> String {
    format!("{table}/{OWNER}")
}

fn event(fixture: &str, edit: impl FnOnce(&mut Value)) -> LambdaEvent<ApiGatewayV2httpRequest> {
    let mut v: Value = serde_json::from_str(fixture).unwrap();
    edit(&mut v);
    LambdaEvent::new(serde_json::from_value(v).unwrap(), Context::default())
}

fn item_event(id: &str) -> LambdaEvent<ApiGatewayV2httpRequest> {
    event(GET_ITEM, |v| {
        v["rawPath"] = format!("/metadata/{id}").into();
        v["requestContext"]["http"]["path"] = format!("/metadata/{id}").into();
        v["pathParameters"]["id"] = id.into();
    })
}

fn list_event(query: &[(&str, &str)]) -> LambdaEvent<ApiGatewayV2httpRequest> {
    event(GET_LIST, |v| {
        let qs: serde_json::Map<String, Value> = query
            .iter()
            .map(|(k, val)| (k.to_string(), Value::from(*val)))
            .collect();
        v["queryStringParameters"] = Value::Object(qs);
    })
}

fn ctx(rules: &[&Rule]) -> Ctx {
    ctx_with_sts(rules, &assume_role(|_| true))
}

/// The function's context, its user sessions from an STS answering `sts`.
fn ctx_with_sts(rules: &[&Rule], sts: &Rule) -> Ctx {
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules);
    let vars = |name: &str| match name {
        "IMAGES_TABLE" => Some(TABLE.to_string()),
        "LABELS_TABLE" => Some(LABELS.to_string()),
        "USER_ROLE_ARN" => Some(ROLE_ARN.to_string()),
        _ => None,
    };
    Ctx::from_env(testing::sts(&[sts]), dynamodb, &vars).unwrap()
}

fn json(resp: &ApiGatewayV2httpResponse) -> Value {
    match &resp.body {
        Some(Body::Text(t)) => serde_json::from_str(t).unwrap(),
        other => panic!("expected JSON, got {other:?}"),
    }
}

fn stored_item(id: &str) -> HashMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.into());
    HashMap::from([
        ("image_id".into(), s(id)),
        ("status".into(), s("labeled")),
        (
            "labels".into(),
            AttributeValue::L(vec![AttributeValue::M(HashMap::from([
                ("name".into(), s("Cat")),
                ("confidence".into(), AttributeValue::N("98.512".into())),
                ("parents".into(), AttributeValue::L(vec![s("Animal")])),
            ]))]),
        ),
        ("label_model_version".into(), s("3.0")),
        ("content_type".into(), s("image/png")),
        ("size_bytes".into(), AttributeValue::N("240512".into())),
        ("uploaded_at".into(), s("2026-11-26T21:00:00.123Z")),
        ("processed_at".into(), s("2026-11-26T21:00:01.456Z")),
        // Whatever else an item might carry must not reach a response.
        (
            "internal_note".into(),
            s("s3://image-pipeline-dev-123456789012-us-east-1/uploads/x"),
        ),
    ])
}

fn assert_no_storage_location(body: &Value) {
    let text = body.to_string();
    for needle in [
        "s3://",
        "amazonaws.com",
        "uploads/",
        "image-pipeline-dev-",
        "bucket",
        "\"key\"",
    ] {
        assert!(!text.contains(needle), "response leaks {needle}: {text}");
    }
}

#[tokio::test]
async fn returns_one_item() {
    let get = mock!(Client::get_item)
        .match_requests(|r| {
            r.table_name() == Some(TABLE)
                && r.consistent_read() == Some(true)
                && r.key()
                    .and_then(|k| k.get("image_id"))
                    .and_then(|v| v.as_s().ok())
                    == Some(&ID.to_string())
        })
        .then_output(|| {
            GetItemOutput::builder()
                .set_item(Some(stored_item(ID)))
                .build()
        });
    let c = ctx(&[&get]);
    let resp = handler(&c, item_event(ID)).await.unwrap();
    assert_eq!(resp.status_code, 200);
    let v = json(&resp);
    assert_eq!(
        v,
        serde_json::json!({
            "image_id": ID,
            "status": "labeled",
            "labels": [{"name": "Cat", "confidence": 98.512, "parents": ["Animal"]}],
            "label_model_version": "3.0",
            "content_type": "image/png",
            "size_bytes": 240512,
            "uploaded_at": "2026-11-26T21:00:00.123Z",
            "processed_at": "2026-11-26T21:00:01.456Z"
        })
    );
    assert_no_storage_location(&v);
    assert_eq!(get.num_calls(), 1);
}

#[tokio::test]
async fn unknown_id_is_404() {
    let get = mock!(Client::get_item).then_output(|| GetItemOutput::builder().build());
    let resp = handler(&ctx(&[&get]), item_event(ID)).await.unwrap();
    assert_eq!(resp.status_code, 404);
    assert_eq!(json(&resp)["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_table_outage_is_503() {
    let get = mock!(Client::get_item).then_error(|| GetItemError::unhandled("outage"));
    let resp = handler(&ctx(&[&get]), item_event(ID)).await.unwrap();
    assert_eq!(resp.status_code, 503);
}

#[tokio::test]
async fn pages_newest_first_with_an_opaque_token() {
    let second_id = "8a1d2e3f-4b5c-4d6e-8f70-819a2b3c4d5e";
    let second_at = "2026-11-26T20:59:00.000Z";
    // One Query of the listing index, newest first: never a Scan.
    let is_listing = |r: &aws_sdk_dynamodb::operation::query::QueryInput| {
        r.table_name() == Some(TABLE)
            && r.index_name() == Some("newest-first")
            && r.scan_index_forward() == Some(false)
            && r.key_condition_expression() == Some("#owner = :owner")
            && r.expression_attribute_values()
                .and_then(|v| v.get(":owner"))
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                == Some(OWNER)
    };
    let first_page = mock!(Client::query)
        .match_requests(move |r| {
            is_listing(r) && r.limit() == Some(2) && r.exclusive_start_key().is_none()
        })
        .then_output(move || {
            QueryOutput::builder()
                .items(stored_item(ID))
                .items(stored_item(second_id))
                .last_evaluated_key("image_id", AttributeValue::S(second_id.into()))
                .last_evaluated_key("owner", AttributeValue::S(OWNER.into()))
                .last_evaluated_key("uploaded_at", AttributeValue::S(second_at.into()))
                .build()
        });
    let second_page = mock!(Client::query)
        .match_requests(move |r| {
            let k = |name: &str| {
                r.exclusive_start_key()
                    .and_then(|k| k.get(name))
                    .and_then(|v| v.as_s().ok())
                    .cloned()
            };
            is_listing(r)
                && k("image_id").as_deref() == Some(second_id)
                && k("uploaded_at").as_deref() == Some(second_at)
                && k("owner").as_deref() == Some(OWNER)
        })
        .then_output(|| QueryOutput::builder().build());
    let c = ctx(&[&first_page, &second_page]);
    let resp = handler(&c, list_event(&[("limit", "2")])).await.unwrap();
    assert_eq!(resp.status_code, 200);
    let v = json(&resp);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert_no_storage_location(&v);
    let token = v["next_token"].as_str().unwrap().to_string();
    assert!(!token.contains(second_id), "the token is opaque");
    let resp = handler(&c, list_event(&[("limit", "2"), ("next_token", &token)]))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 200);
    let v = json(&resp);
    assert_eq!(v["items"], serde_json::json!([]));
    assert_eq!(v["next_token"], Value::Null);
    assert_eq!((first_page.num_calls(), second_page.num_calls()), (1, 1));
}

#[tokio::test]
async fn limit_defaults_and_caps() {
    for (query, expected) in [
        (vec![], 20),
        (vec![("limit", "1000")], 100),
        (vec![("limit", "7")], 7),
    ] {
        let listing = mock!(Client::query)
            .match_requests(move |r| r.limit() == Some(expected))
            .then_output(|| QueryOutput::builder().build());
        let resp = handler(&ctx(&[&listing]), list_event(&query))
            .await
            .unwrap();
        assert_eq!(resp.status_code, 200, "{query:?}");
        assert_eq!(
            listing.num_calls(),
            1,
            "{query:?} should query with limit {expected}"
        );
    }
}

/// A request the handler must refuse: what it is, the event, the status and error code.
type BadInput = (
    &'static str,
    LambdaEvent<ApiGatewayV2httpRequest>,
    i64,
    &'static str,
);

/// Ids that are not this API's image ids.
fn bad_ids() -> Vec<BadInput> {
    let long = "a".repeat(5000);
    vec![
        ("../x", item_event("../x"), 400, "invalid_id"),
        ("%2F", item_event("%2F"), 400, "invalid_id"),
        ("5000 chars", item_event(&long), 400, "invalid_id"),
        ("not a uuid", item_event("hello"), 400, "invalid_id"),
        (
            "uppercase uuid",
            item_event(&ID.to_uppercase()),
            400,
            "invalid_id",
        ),
        (
            "v1 uuid",
            item_event("3f2b8c1e-5d4a-1b6f-9c2d-1a2b3c4d5e6f"),
            400,
            "invalid_id",
        ),
        ("empty id", item_event(""), 400, "invalid_id"),
    ]
}

/// Page sizes out of range or not numbers.
fn bad_limits() -> Vec<BadInput> {
    vec![
        (
            "limit 0",
            list_event(&[("limit", "0")]),
            400,
            "invalid_limit",
        ),
        (
            "limit -1",
            list_event(&[("limit", "-1")]),
            400,
            "invalid_limit",
        ),
        (
            "limit 1e9",
            list_event(&[("limit", "1e9")]),
            400,
            "invalid_limit",
        ),
        (
            "limit abc",
            list_event(&[("limit", "abc")]),
            400,
            "invalid_limit",
        ),
        (
            "limit empty",
            list_event(&[("limit", "")]),
            400,
            "invalid_limit",
        ),
    ]
}

/// The tokens a client could send: listing tokens that were tampered with, issued for
/// another table or page size, and search tokens of another search.
struct Tokens {
    tampered: String,
    foreign: String,
    other_user: String,
    other_limit: String,
    cat: String,
}

impl Tokens {
    fn new() -> Self {
        let tampered = {
            let t = encode_token(&scope(TABLE), &format!("2026-11-26T21:00:00.123Z#{ID}"), 20);
            let mut chars: Vec<char> = t.chars().collect();
            chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
            chars.into_iter().collect::<String>()
        };
        let foreign = encode_token(
            "image-pipeline-prod-images",
            &format!("2026-11-26T21:00:00.123Z#{ID}"),
            20,
        );
        // Issued to another user, for their own listing of this table.
        let other_user = encode_token(
            &format!("{TABLE}/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
            &format!("2026-11-26T21:00:00.123Z#{ID}"),
            20,
        );
        // Issued for pages of 20 (the default), replayed with limit=5.
        let other_limit =
            encode_token(&scope(TABLE), &format!("2026-11-26T21:00:00.123Z#{ID}"), 20);
        let cat = encode_search_token(
            &scope(LABELS),
            "cat",
            0,
            &format!("2026-11-26T21:00:00.123Z#{ID}"),
            20,
        );
        Self {
            tampered,
            foreign,
            other_user,
            other_limit,
            cat,
        }
    }
}

/// Next tokens that are not this listing's.
fn bad_tokens(t: &Tokens) -> Vec<BadInput> {
    vec![
        (
            "tampered token",
            list_event(&[("next_token", &t.tampered)]),
            400,
            "invalid_next_token",
        ),
        (
            "foreign token",
            list_event(&[("next_token", &t.foreign)]),
            400,
            "invalid_next_token",
        ),
        (
            "another user's token",
            list_event(&[("next_token", &t.other_user)]),
            400,
            "invalid_next_token",
        ),
        (
            "token of another page size",
            list_event(&[("next_token", &t.other_limit), ("limit", "5")]),
            400,
            "invalid_next_token",
        ),
        (
            "garbage token",
            list_event(&[("next_token", "%%%")]),
            400,
            "invalid_next_token",
        ),
        (
            "empty token",
            list_event(&[("next_token", "")]),
            400,
            "invalid_next_token",
        ),
    ]
}

/// Searches by label with a bad label, confidence or token.
fn bad_searches(t: &Tokens) -> Vec<BadInput> {
    vec![
        (
            "min_confidence without a label",
            list_event(&[("min_confidence", "80")]),
            400,
            "invalid_query",
        ),
        (
            "empty label",
            list_event(&[("label", "  ")]),
            400,
            "invalid_label",
        ),
        (
            "label of 101 characters",
            list_event(&[("label", &"x".repeat(101))]),
            400,
            "invalid_label",
        ),
        (
            "min_confidence 101",
            list_event(&[("label", "cat"), ("min_confidence", "101")]),
            400,
            "invalid_min_confidence",
        ),
        (
            "min_confidence 80.5",
            list_event(&[("label", "cat"), ("min_confidence", "80.5")]),
            400,
            "invalid_min_confidence",
        ),
        (
            "min_confidence -1",
            labels_event(&[("min_confidence", "-1")]),
            400,
            "invalid_min_confidence",
        ),
        (
            "min_confidence +5",
            labels_event(&[("min_confidence", "+5")]),
            400,
            "invalid_min_confidence",
        ),
        (
            "a listing token sent to a search",
            list_event(&[("label", "cat"), ("next_token", &t.other_limit)]),
            400,
            "invalid_next_token",
        ),
        (
            "a search token of another label",
            list_event(&[("label", "dog"), ("next_token", &t.cat)]),
            400,
            "invalid_next_token",
        ),
        (
            "a search token of another min_confidence",
            list_event(&[
                ("label", "cat"),
                ("min_confidence", "90"),
                ("next_token", &t.cat),
            ]),
            400,
            "invalid_next_token",
        ),
    ]
}

/// Methods and paths this function does not answer.
fn bad_routes() -> Vec<BadInput> {
    vec![
        (
            "POST /metadata",
            event(GET_LIST, |v| {
                v["requestContext"]["http"]["method"] = "POST".into()
            }),
            405,
            "method_not_allowed",
        ),
        (
            "DELETE /metadata/{id}",
            event(GET_ITEM, |v| {
                v["requestContext"]["http"]["method"] = "DELETE".into()
            }),
            405,
            "method_not_allowed",
        ),
        (
            "GET /elsewhere",
            // Only a catch-all `$default` route could send it here.
            event(GET_LIST, |v| {
                v["routeKey"] = "$default".into();
                v["requestContext"]["routeKey"] = "$default".into();
                v["rawPath"] = "/elsewhere".into();
                v["requestContext"]["http"]["path"] = "/elsewhere".into();
            }),
            404,
            "not_found",
        ),
    ]
}

#[tokio::test]
async fn bad_inputs_are_4xx_and_never_reach_the_table() {
    let t = Tokens::new();
    let cases = [
        bad_ids(),
        bad_limits(),
        bad_tokens(&t),
        bad_searches(&t),
        bad_routes(),
    ]
    .concat();
    for (name, ev, status, code) in cases {
        let get = mock!(Client::get_item).then_output(|| GetItemOutput::builder().build());
        let scan = mock!(Client::scan).then_output(|| ScanOutput::builder().build());
        let query = mock!(Client::query).then_output(|| QueryOutput::builder().build());
        let resp = handler(&ctx(&[&get, &scan, &query]), ev).await.unwrap();
        assert_eq!(resp.status_code, status, "{name}: {:?}", resp.body);
        let v = json(&resp);
        assert_eq!(v["error"]["code"], code, "{name}");
        assert_eq!(
            get.num_calls() + scan.num_calls() + query.num_calls(),
            0,
            "{name}: the table must not be touched"
        );
    }
}

fn labels_event(query: &[(&str, &str)]) -> LambdaEvent<ApiGatewayV2httpRequest> {
    event(GET_LIST, |v| {
        v["routeKey"] = "GET /labels".into();
        v["requestContext"]["routeKey"] = "GET /labels".into();
        v["rawPath"] = "/labels".into();
        v["requestContext"]["http"]["path"] = "/labels".into();
        let qs: serde_json::Map<String, Value> = query
            .iter()
            .map(|(k, val)| (k.to_string(), Value::from(*val)))
            .collect();
        v["queryStringParameters"] = Value::Object(qs);
    })
}

/// A label entry as the process function writes it: the item, plus its index keys.
fn entry(id: &str, at: &str, confidence: &str) -> HashMap<String, AttributeValue> {
    let mut e = stored_item(id);
    e.insert("pk".into(), AttributeValue::S(format!("{OWNER}#label#cat")));
    e.insert("sk".into(), AttributeValue::S(format!("{at}#{id}")));
    e.insert("confidence".into(), AttributeValue::N(confidence.into()));
    e
}

#[tokio::test]
async fn a_label_search_queries_its_partition_newest_first_and_pages() {
    const OTHER: &str = "8a1d2e3f-4b5c-4d6e-8f70-819a2b3c4d5e";
    let last = format!("2026-11-26T20:00:00.000Z#{OTHER}");
    let query = mock!(Client::query)
        .match_requests(|r| {
            let values = r.expression_attribute_values().cloned().unwrap_or_default();
            let names = r.expression_attribute_names().cloned().unwrap_or_default();
            r.table_name() == Some(LABELS)
                && r.key_condition_expression() == Some("#pk = :pk")
                && names.get("#pk").map(String::as_str) == Some("pk")
                && values.get(":pk") == Some(&AttributeValue::S(format!("{OWNER}#label#cat")))
                && r.scan_index_forward() == Some(false)
                && r.limit() == Some(2)
                && r.filter_expression() == Some("#confidence >= :min")
                && values.get(":min") == Some(&AttributeValue::N("90".into()))
                && r.exclusive_start_key().is_none()
        })
        .then_output({
            let last = last.clone();
            move || {
                QueryOutput::builder()
                    .items(entry(ID, "2026-11-26T21:00:00.123Z", "98.512"))
                    .items(entry(OTHER, "2026-11-26T20:00:00.000Z", "91.000"))
                    .last_evaluated_key("pk", AttributeValue::S(format!("{OWNER}#label#cat")))
                    .last_evaluated_key("sk", AttributeValue::S(last.clone()))
                    .build()
            }
        });
    let c = ctx(&[&query]);
    // Any case finds the label.
    let resp = handler(
        &c,
        list_event(&[("label", " CAT "), ("limit", "2"), ("min_confidence", "90")]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    let v = json(&resp);
    let ids: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [ID, OTHER]);
    assert_eq!(v["items"][0]["labels"][0]["name"], "Cat");
    assert_no_storage_location(&v);
    for key in ["pk", "sk", "confidence"] {
        assert!(v["items"][0].get(key).is_none(), "{key} leaks");
    }
    let token = v["next_token"].as_str().unwrap();
    assert_eq!(
        decode_search_token(&scope(LABELS), "cat", 90, token, 2),
        Ok(last.clone())
    );

    // The next page starts after that entry.
    let next = mock!(Client::query)
        .match_requests(move |r| {
            r.exclusive_start_key().is_some_and(|k| {
                k.get("pk") == Some(&AttributeValue::S(format!("{OWNER}#label#cat")))
                    && k.get("sk") == Some(&AttributeValue::S(last.clone()))
            })
        })
        .then_output(|| QueryOutput::builder().build());
    let c = ctx(&[&next]);
    let resp = handler(
        &c,
        list_event(&[
            ("label", "cat"),
            ("limit", "2"),
            ("min_confidence", "90"),
            ("next_token", token),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    assert_eq!(json(&resp)["next_token"], Value::Null);
    assert_eq!(next.num_calls(), 1);
}

fn count_item(name: &str, buckets: &[(&str, &str)]) -> HashMap<String, AttributeValue> {
    let mut m = HashMap::from([
        (
            "pk".to_string(),
            AttributeValue::S(format!("{OWNER}#counts")),
        ),
        ("sk".to_string(), AttributeValue::S(name.to_lowercase())),
        ("name".to_string(), AttributeValue::S(name.into())),
    ]);
    for (b, n) in buckets {
        m.insert(b.to_string(), AttributeValue::N(n.to_string()));
    }
    m
}

#[tokio::test]
async fn label_counts_are_summed_above_the_confidence_and_most_frequent_first() {
    let counts = mock!(Client::query)
        .match_requests(|r| {
            r.table_name() == Some(LABELS)
                && r.expression_attribute_values().and_then(|v| v.get(":pk"))
                    == Some(&AttributeValue::S(format!("{OWNER}#counts")))
        })
        .then_output(|| {
            QueryOutput::builder()
                .items(count_item("Animal", &[("n95", "2"), ("n60", "1")]))
                .items(count_item("Cat", &[("n91", "1"), ("n98", "1")]))
                .items(count_item("Dog", &[("n70", "3")]))
                // Counted down to nothing by a clean-up: not in use.
                .items(count_item("Rocket", &[("n66", "0")]))
                .build()
        });
    let c = std::sync::Arc::new(ctx(&[&counts]));
    let at = |min: Option<&'static str>| {
        let c = c.clone();
        async move {
            let q: Vec<(&str, &str)> = min.map(|m| ("min_confidence", m)).into_iter().collect();
            let resp = handler(&c, labels_event(&q)).await.unwrap();
            assert_eq!(resp.status_code, 200, "{:?}", resp.body);
            let v = json(&resp);
            v["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        l["name"].as_str().unwrap().to_string(),
                        l["count"].as_u64().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let s = |v: &[(&str, u64)]| {
        v.iter()
            .map(|(n, c)| (n.to_string(), *c))
            .collect::<Vec<_>>()
    };
    assert_eq!(at(None).await, s(&[("Animal", 3), ("Dog", 3), ("Cat", 2)]));
    assert_eq!(at(Some("91")).await, s(&[("Animal", 2), ("Cat", 2)]));
    assert_eq!(at(Some("92")).await, s(&[("Animal", 2), ("Cat", 1)]));
    assert_eq!(at(Some("100")).await, s(&[]));
}

/// Every read is made as the signed-in user: one `AssumeRole` of the user role whose session
/// policy names the user's partitions, kept for the next requests of the same user.
#[tokio::test]
async fn reads_are_made_in_a_session_of_the_user_kept_while_warm() {
    let get = mock!(Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .set_item(Some(stored_item(ID)))
            .build()
    });
    let sts = assume_role(|input| {
        let policy = input.policy().unwrap_or_default();
        input.role_arn() == Some(ROLE_ARN)
            && input.role_session_name() == Some(OWNER)
            && policy.contains(&format!("\"{OWNER}#*\""))
            && policy.contains("dynamodb:LeadingKeys")
    });
    let ctx = ctx_with_sts(&[&get], &sts);
    for _ in 0..3 {
        let resp = handler(&ctx, item_event(ID)).await.unwrap();
        assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    }
    assert_eq!(sts.num_calls(), 1, "one session, reused while warm");
    assert_eq!(get.num_calls(), 3);
}

/// Without a session there is no read: STS failing is a 503, and nothing is asked of the
/// table with the function's own credentials.
#[tokio::test]
async fn no_session_no_read() {
    let get = mock!(Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .set_item(Some(stored_item(ID)))
            .build()
    });
    let refused = testing::refusing();
    let ctx = ctx_with_sts(&[&get], &refused);
    let resp = handler(&ctx, item_event(ID)).await.unwrap();
    assert_eq!(resp.status_code, 503);
    assert_eq!(get.num_calls(), 0);
}
