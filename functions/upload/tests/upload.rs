//! The upload function against mocked S3 and DynamoDB: the happy paths with real photographs,
//! the early item each route records, and a table of bad inputs that must each get the exact
//! status and error code and store nothing.

// Test code: fixtures and mocks are ours, so a panic is the right failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_s3::Client;
use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectOutput};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use base64::Engine;
use handler_shared::scope::testing::{self, ROLE_ARN, assume_role};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use upload_function::{Ctx, handler};

const POST_UPLOAD: &str = include_str!("data/post-upload.json");
const POST_UPLOADS: &str = include_str!("data/post-uploads.json");
/// The `sub` of the verified token in both fixtures: the owner of what they upload.
const OWNER: &str = "7d3f0c2e-5b1a-4c8e-9f60-2a4b6c8d0e1f";

fn photo(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn event(fixture: &str, edit: impl FnOnce(&mut Value)) -> LambdaEvent<ApiGatewayV2httpRequest> {
    let mut v: Value = serde_json::from_str(fixture).unwrap();
    edit(&mut v);
    LambdaEvent::new(serde_json::from_value(v).unwrap(), Context::default())
}

fn upload_event(
    body: &str,
    base64: bool,
    content_type: Option<&str>,
) -> LambdaEvent<ApiGatewayV2httpRequest> {
    event(POST_UPLOAD, |v| {
        v["body"] = body.into();
        v["isBase64Encoded"] = base64.into();
        match content_type {
            Some(ct) => v["headers"]["content-type"] = ct.into(),
            None => {
                v["headers"].as_object_mut().unwrap().remove("content-type");
            }
        }
    })
}

fn put_ok() -> Rule {
    mock!(Client::put_object).then_output(|| PutObjectOutput::builder().build())
}

fn record_ok() -> Rule {
    mock!(aws_sdk_dynamodb::Client::put_item).then_output(|| PutItemOutput::builder().build())
}

/// The day's count: under the quota.
fn quota_ok() -> Rule {
    mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| UpdateItemOutput::builder().build())
}

fn ctx(rules: &[&Rule], max: usize) -> Ctx {
    ctx_with(rules, &[&record_ok()], max)
}

/// `ddb` with the day's count under the quota when `ddb` says nothing about it.
fn ctx_with(s3: &[&Rule], ddb: &[&Rule], max: usize) -> Ctx {
    let quota = quota_ok();
    let mut ddb = ddb.to_vec();
    ddb.push(&quota);
    ctx_with_sts(s3, &ddb, max, &assume_role(|_| true))
}

/// The function's context, its user sessions from an STS answering `sts`.
fn ctx_with_sts(s3: &[&Rule], ddb: &[&Rule], max: usize, sts: &Rule) -> Ctx {
    let max = max.to_string();
    let vars = testing::vars(&[
        ("IMAGES_TABLE", "image-pipeline-dev-images"),
        ("LABELS_TABLE", "image-pipeline-dev-labels"),
        ("UPLOADS_PER_USER_PER_DAY", "1000"),
        ("UPLOAD_BUCKET", "image-pipeline-dev-123456789012-us-east-1"),
        ("UPLOAD_PREFIX", "uploads/"),
        ("MAX_UPLOAD_BYTES", max.as_str()),
        ("PRESIGN_EXPIRES_SECONDS", "300"),
    ]);
    Ctx::from_env(
        testing::sts(&[sts]),
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3),
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, ddb),
        &vars,
    )
    .unwrap()
}

fn json(resp: &ApiGatewayV2httpResponse) -> Value {
    match &resp.body {
        Some(Body::Text(t)) => serde_json::from_str(t).unwrap(),
        other => panic!("expected a JSON text body, got {other:?}"),
    }
}

fn header<'a>(resp: &'a ApiGatewayV2httpResponse, name: &str) -> Option<&'a str> {
    resp.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn stores_a_base64_png_under_a_server_generated_key() {
    let png = photo("chelsea.png");
    let stored = mock!(Client::put_object)
        .match_requests({
            let len = png.len();
            move |r| {
                r.bucket() == Some("image-pipeline-dev-123456789012-us-east-1")
                    && r.key().is_some_and(|k| {
                        k.strip_prefix(&format!("uploads/{OWNER}/"))
                            .is_some_and(|id| handler_shared::ImageId::parse(id).is_some())
                    })
                    && r.content_type() == Some("image/png")
                    && r.body().bytes().map(<[u8]>::len) == Some(len)
            }
        })
        .then_output(|| PutObjectOutput::builder().build());
    let c = ctx(&[&stored], 4_500_000);
    let resp = handler(&c, upload_event(&b64(&png), true, Some("image/png")))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 201, "{:?}", resp.body);
    let body = json(&resp);
    let id = body["image_id"].as_str().unwrap();
    assert!(handler_shared::ImageId::parse(id).is_some());
    assert_eq!(body["status"], "processing");
    assert_eq!(body["content_type"], "image/png");
    assert_eq!(body["size_bytes"], png.len());
    assert_eq!(
        header(&resp, "location"),
        Some(format!("/metadata/{id}").as_str())
    );
    assert_eq!(stored.num_calls(), 1);
    let text = serde_json::to_string(&body).unwrap();
    assert!(
        !text.contains("uploads/") && !text.contains("s3") && !text.contains("image-pipeline-dev")
    );
}

#[tokio::test]
async fn the_bytes_decide_the_type_not_the_header() {
    for (claimed, file, detected) in [
        (Some("image/jpeg"), "chelsea.png", "image/png"),
        (None, "rocket.jpg", "image/jpeg"),
        (Some("application/octet-stream"), "rocket.jpg", "image/jpeg"),
        (Some("text/plain"), "coffee.png", "image/png"),
    ] {
        let bytes = photo(file);
        let rule = mock!(Client::put_object)
            .match_requests(move |r| r.content_type() == Some(detected))
            .then_output(|| PutObjectOutput::builder().build());
        let c = ctx(&[&rule], 4_500_000);
        let resp = handler(&c, upload_event(&b64(&bytes), true, claimed))
            .await
            .unwrap();
        assert_eq!(resp.status_code, 201, "{file} claimed {claimed:?}");
        assert_eq!(json(&resp)["content_type"], detected);
        assert_eq!(rule.num_calls(), 1, "{file}");
    }
}

#[tokio::test]
async fn a_body_that_was_not_base64_encoded_is_used_as_is() {
    // API Gateway passes text bodies through; a valid image can only arrive encoded, so a
    // text body is simply not an image.
    let rule = put_ok();
    let c = ctx(&[&rule], 4_500_000);
    let resp = handler(&c, upload_event("hello, world", false, Some("image/png")))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 415);
    assert_eq!(rule.num_calls(), 0);
}

/// A JPEG whose signature is followed by noise.
fn jpeg_header_then_garbage() -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    v.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    v.extend((0..4000u32).map(|i| (i * 7919 % 251) as u8));
    v
}

fn truncated(file: &str, keep: usize) -> Vec<u8> {
    photo(file)[..keep].to_vec()
}

/// The cat photograph with its header's size replaced (and the header's checksum fixed).
fn cat_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut b = photo("chelsea.png");
    b[16..20].copy_from_slice(&width.to_be_bytes());
    b[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32fast::hash(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

fn with_tail(file: &str, tail: &[u8]) -> Vec<u8> {
    let mut b = photo(file);
    b.extend_from_slice(tail);
    b
}

#[tokio::test]
async fn bad_inputs_get_the_exact_error_and_store_nothing() {
    let oversize = vec![0u8; 2_000_000];
    let cases: Vec<(&str, String, bool, u16, &str)> = vec![
        ("empty", String::new(), true, 400, "empty_body"),
        ("empty text", String::new(), false, 400, "empty_body"),
        ("1 byte", b64(&[0xFF]), true, 415, "unsupported_media_type"),
        ("text", b64(b"just some text, not an image"), true, 415, "unsupported_media_type"),
        ("html", b64(b"<!doctype html><html><body>hi</body></html>"), true, 415, "unsupported_media_type"),
        (
            "svg",
            b64(br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>"#),
            true,
            415,
            "unsupported_media_type",
        ),
        ("gif", b64(b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"), true, 415, "unsupported_media_type"),
        ("webp", b64(b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00\x30\x01\x00\x9d\x01\x2a\x01\x00\x01\x00\x02\x00\x34\x25\xa4\x00\x03\x70\x00\xfe\xfb\x94\x00\x00"), true, 415, "unsupported_media_type"),
        ("jpeg header then garbage", b64(&jpeg_header_then_garbage()), true, 400, "invalid_image"),
        ("truncated jpeg", b64(&truncated("rocket.jpg", 5_000)), true, 400, "invalid_image"),
        ("truncated png", b64(&truncated("chelsea.png", 5_000)), true, 400, "invalid_image"),
        ("png signature only", b64(b"\x89PNG\r\n\x1a\n"), true, 400, "invalid_image"),
        ("invalid base64", "@@@not base64@@@".into(), true, 400, "invalid_base64"),
        ("base64 with a bad tail", format!("{}=x", b64(&photo("rocket.jpg")[..300])), true, 400, "invalid_base64"),
        ("oversize (decoded)", b64(&oversize), true, 413, "payload_too_large"),
        ("oversize (raw text)", "x".repeat(2_000_000), false, 413, "payload_too_large"),
        ("png claiming 1x100000", b64(&cat_claiming(1, 100_000)), true, 400, "image_too_small"),
        ("png claiming 65535x65535", b64(&cat_claiming(65_535, 65_535)), true, 400, "image_dimensions_too_large"),
        ("png claiming 10001x300", b64(&cat_claiming(10_001, 300)), true, 400, "image_dimensions_too_large"),
        ("png claiming more rows than it has", b64(&cat_claiming(451, 301)), true, 400, "invalid_image"),
        ("png with a zip appended", b64(&with_tail("chelsea.png", b"PK\x03\x04")), true, 400, "trailing_data"),
        ("jpeg with html appended", b64(&with_tail("rocket.jpg", b"<script>alert(1)</script>")), true, 400, "trailing_data"),
    ];
    for (name, body, base64, status, code) in cases {
        let rule = put_ok();
        let c = ctx(&[&rule], 1_000_000);
        let resp = handler(&c, upload_event(&body, base64, Some("image/jpeg")))
            .await
            .unwrap();
        assert_eq!(
            resp.status_code,
            i64::from(status),
            "{name}: {:?}",
            resp.body
        );
        let v = json(&resp);
        assert_eq!(v["error"]["code"], code, "{name}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        assert_eq!(rule.num_calls(), 0, "{name}: nothing may be stored");
    }
}

#[tokio::test]
async fn oversize_points_to_the_presigned_route_and_is_refused_before_decoding() {
    let rule = put_ok();
    let c = ctx(&[&rule], 100_000);
    // Far larger than the limit, and not even valid base64: the size check comes first.
    let body = "A".repeat(1_000_000) + "!";
    let resp = handler(&c, upload_event(&body, true, Some("image/png")))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 413);
    assert!(
        json(&resp)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST /uploads")
    );
    assert_eq!(rule.num_calls(), 0);
}

#[tokio::test]
async fn an_s3_failure_is_a_503_not_a_client_error() {
    let rule =
        mock!(Client::put_object).then_error(|| PutObjectError::unhandled("simulated outage"));
    let c = ctx(&[&rule], 4_500_000);
    let resp = handler(&c, upload_event(&b64(&photo("rocket.jpg")), true, None))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 503);
    assert_eq!(json(&resp)["error"]["code"], "service_unavailable");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_404_and_405() {
    let rule = put_ok();
    let c = ctx(&[&rule], 4_500_000);
    let get = event(POST_UPLOAD, |v| {
        v["routeKey"] = "GET /upload".into();
        v["requestContext"]["http"]["method"] = "GET".into();
    });
    let resp = handler(&c, get).await.unwrap();
    assert_eq!(resp.status_code, 405);
    assert_eq!(header(&resp, "allow"), Some("POST"));
    assert_eq!(json(&resp)["error"]["code"], "method_not_allowed");
    // Only a catch-all `$default` route could send it here.
    let elsewhere = event(POST_UPLOAD, |v| {
        v["routeKey"] = "$default".into();
        v["requestContext"]["routeKey"] = "$default".into();
        v["rawPath"] = "/nope".into();
        v["requestContext"]["http"]["path"] = "/nope".into();
    });
    let resp = handler(&c, elsewhere).await.unwrap();
    assert_eq!(resp.status_code, 404);
    assert_eq!(json(&resp)["error"]["code"], "not_found");
    assert_eq!(rule.num_calls(), 0);
}

fn presign_event(body: &str) -> LambdaEvent<ApiGatewayV2httpRequest> {
    event(POST_UPLOADS, |v| v["body"] = body.into())
}

#[tokio::test]
async fn presigned_put_binds_key_type_and_length() {
    let rule = put_ok();
    let c = ctx(&[&rule], 4_500_000);
    let resp = handler(
        &c,
        presign_event(r#"{"content_type": "image/jpeg", "size_bytes": 8000000}"#),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 201, "{:?}", resp.body);
    let v = json(&resp);
    let id = v["image_id"].as_str().unwrap();
    assert!(handler_shared::ImageId::parse(id).is_some());
    assert_eq!(v["upload"]["method"], "PUT");
    assert_eq!(v["upload"]["expires_in_seconds"], 300);
    assert_eq!(v["upload"]["headers"]["content-type"], "image/jpeg");
    assert_eq!(v["upload"]["headers"]["content-length"], "8000000");
    // The URL cannot overwrite: the object must not exist yet.
    assert_eq!(v["upload"]["headers"]["if-none-match"], "*");
    let url = v["upload"]["url"].as_str().unwrap();
    assert!(url.contains(&format!("/uploads/{OWNER}/{id}")), "{url}");
    let signed = url
        .split("X-Amz-SignedHeaders=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    for h in ["content-length", "content-type", "host", "if-none-match"] {
        assert!(
            signed.split("%3B").any(|s| s == h),
            "{h} is not signed: {signed}"
        );
    }
    assert!(url.contains("X-Amz-Expires=300"));
    // Signed by the user's session, which S3 authorizes for the user's prefix only.
    assert!(url.contains("X-Amz-Credential=ASIAUSERSESSION"), "{url}");
    assert_eq!(
        header(&resp, "location"),
        Some(format!("/metadata/{id}").as_str())
    );
}

#[tokio::test]
async fn presign_bad_requests() {
    let cases = [
        ("not json", "nope", 400, "invalid_json"),
        (
            "missing size",
            r#"{"content_type": "image/png"}"#,
            400,
            "invalid_json",
        ),
        (
            "extra field",
            r#"{"content_type": "image/png", "size_bytes": 10, "key": "x"}"#,
            400,
            "invalid_json",
        ),
        (
            "gif",
            r#"{"content_type": "image/gif", "size_bytes": 10}"#,
            415,
            "unsupported_media_type",
        ),
        (
            "zero",
            r#"{"content_type": "image/png", "size_bytes": 0}"#,
            400,
            "invalid_size",
        ),
        (
            "negative",
            r#"{"content_type": "image/png", "size_bytes": -1}"#,
            400,
            "invalid_size",
        ),
        (
            "fractional",
            r#"{"content_type": "image/png", "size_bytes": 1.5}"#,
            400,
            "invalid_json",
        ),
        (
            "too big",
            r#"{"content_type": "image/png", "size_bytes": 15728641}"#,
            413,
            "payload_too_large",
        ),
        ("empty", "", 400, "empty_body"),
    ];
    for (name, body, status, code) in cases {
        let rule = put_ok();
        let c = ctx(&[&rule], 4_500_000);
        let resp = handler(&c, presign_event(body)).await.unwrap();
        assert_eq!(resp.status_code, status, "{name}: {:?}", resp.body);
        assert_eq!(json(&resp)["error"]["code"], code, "{name}");
        assert_eq!(rule.num_calls(), 0, "{name}");
    }
}

#[tokio::test]
async fn client_input_is_echoed_in_at_most_200_characters() {
    let long = "x".repeat(60_000);
    for (name, body) in [
        (
            "content type",
            format!(r#"{{"content_type": "image/{long}", "size_bytes": 10}}"#),
        ),
        (
            "unknown field",
            format!(r#"{{"content_type": "image/png", "size_bytes": 10, "{long}": 1}}"#),
        ),
    ] {
        let rule = put_ok();
        let c = ctx(&[&rule], 4_500_000);
        let resp = handler(&c, presign_event(&body)).await.unwrap();
        assert!((400..500).contains(&resp.status_code), "{name}");
        let message = json(&resp)["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let echoed = message.matches('x').count();
        assert!(
            (1..=200).contains(&echoed),
            "{name}: {echoed} characters of input echoed"
        );
        assert!(message.chars().count() < 400, "{name}: {message}");
    }
}

fn attr<'a>(
    r: &'a aws_sdk_dynamodb::operation::put_item::PutItemInput,
    k: &str,
) -> Option<&'a str> {
    r.item().and_then(|i| i.get(k)).and_then(|v| match v {
        AttributeValue::S(s) | AttributeValue::N(s) => Some(s.as_str()),
        _ => None,
    })
}

#[tokio::test]
async fn a_stored_image_is_recorded_as_processing_where_no_item_exists() {
    let png = photo("chelsea.png");
    let recorded = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.table_name() == Some("image-pipeline-dev-images")
                && r.condition_expression() == Some("attribute_not_exists(image_id)")
                && attr(r, "status") == Some("processing")
                && attr(r, "content_type") == Some("image/png")
                && attr(r, "image_id")
                    .is_some_and(|id| handler_shared::ImageId::parse(id).is_some())
                && attr(r, "uploaded_at").is_some()
                && attr(r, "owner") == Some(OWNER)
                && attr(r, "expires_at").is_none()
                && attr(r, "labels").is_none()
        })
        .then_output(|| PutItemOutput::builder().build());
    let stored = put_ok();
    let c = ctx_with(&[&stored], &[&recorded], 4_500_000);
    let resp = handler(&c, upload_event(&b64(&png), true, None))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 201, "{:?}", resp.body);
    assert_eq!((stored.num_calls(), recorded.num_calls()), (1, 1));
}

#[tokio::test]
async fn an_item_further_along_or_a_table_outage_still_answers_201() {
    // The process function labeled the image first: its item stays. Or DynamoDB is down: the
    // image is stored and will be labeled, so the client must not upload it again.
    for rule in [
        mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder().build(),
            )
        }),
        mock!(aws_sdk_dynamodb::Client::put_item)
            .then_error(|| PutItemError::unhandled("simulated outage")),
    ] {
        let stored = put_ok();
        let c = ctx_with(&[&stored], &[&rule], 4_500_000);
        let resp = handler(&c, upload_event(&b64(&photo("rocket.jpg")), true, None))
            .await
            .unwrap();
        assert_eq!(resp.status_code, 201, "{:?}", resp.body);
        assert_eq!((stored.num_calls(), rule.num_calls()), (1, 1));
    }
}

#[tokio::test]
async fn a_presigned_upload_is_recorded_as_awaiting_upload_with_an_expiry() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let recorded = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(move |r| {
            let expires = attr(r, "expires_at").and_then(|t| t.parse::<u64>().ok());
            r.condition_expression() == Some("attribute_not_exists(image_id)")
                && attr(r, "status") == Some("awaiting_upload")
                && attr(r, "size_bytes") == Some("8000000")
                && expires.is_some_and(|t| {
                    t >= before + 300 + upload_function::AWAITING_GRACE_SECONDS
                        && t <= before + 300 + upload_function::AWAITING_GRACE_SECONDS + 60
                })
        })
        .then_output(|| PutItemOutput::builder().build());
    let c = ctx_with(&[&put_ok()], &[&recorded], 4_500_000);
    let resp = handler(
        &c,
        presign_event(r#"{"content_type": "image/jpeg", "size_bytes": 8000000}"#),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 201, "{:?}", resp.body);
    assert_eq!(json(&resp)["status"], "awaiting_upload");
    assert_eq!(recorded.num_calls(), 1);
}

#[tokio::test]
async fn a_presign_that_cannot_be_recorded_is_a_503_and_hands_out_no_url() {
    let down = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_error(|| PutItemError::unhandled("simulated outage"));
    let c = ctx_with(&[&put_ok()], &[&down], 4_500_000);
    let resp = handler(
        &c,
        presign_event(r#"{"content_type": "image/png", "size_bytes": 100}"#),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 503);
    let text = serde_json::to_string(&json(&resp)).unwrap();
    assert!(!text.contains("X-Amz"), "{text}");
}

fn over_quota() -> Rule {
    mock!(aws_sdk_dynamodb::Client::update_item).then_error(|| {
        UpdateItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder().build(),
        )
    })
}

#[tokio::test]
async fn each_upload_is_counted_on_the_owners_day_before_anything_is_stored() {
    let owner = OWNER;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let counted = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(move |r| {
            let key = |k: &str| r.key().and_then(|m| m.get(k)).and_then(|v| v.as_s().ok());
            r.table_name() == Some("image-pipeline-dev-labels")
                && key("pk").map(String::as_str) == Some(&format!("{owner}#uploads"))
                && key("sk") == Some(&today)
                && r.condition_expression() == Some("attribute_not_exists(#n) OR #n < :limit")
                && r.expression_attribute_values()
                    .and_then(|v| v.get(":limit"))
                    .and_then(|v| v.as_n().ok())
                    .map(String::as_str)
                    == Some("1000")
        })
        .then_output(|| UpdateItemOutput::builder().build());
    for (route, e) in [
        (
            "upload",
            upload_event(&b64(&photo("rocket.jpg")), true, None),
        ),
        (
            "presign",
            presign_event(r#"{"content_type": "image/png", "size_bytes": 100}"#),
        ),
    ] {
        let c = ctx_with(&[&put_ok()], &[&record_ok(), &counted], 4_500_000);
        let resp = handler(&c, e).await.unwrap();
        assert_eq!(resp.status_code, 201, "{route}: {:?}", resp.body);
    }
    assert_eq!(counted.num_calls(), 2);
}

#[tokio::test]
async fn over_the_quota_is_a_429_with_retry_after_and_stores_nothing() {
    for (route, e) in [
        (
            "upload",
            upload_event(&b64(&photo("rocket.jpg")), true, None),
        ),
        (
            "presign",
            presign_event(r#"{"content_type": "image/png", "size_bytes": 100}"#),
        ),
    ] {
        let (stored, recorded, over) = (put_ok(), record_ok(), over_quota());
        let c = ctx_with(&[&stored], &[&recorded, &over], 4_500_000);
        let resp = handler(&c, e).await.unwrap();
        assert_eq!(resp.status_code, 429, "{route}: {:?}", resp.body);
        assert_eq!(json(&resp)["error"]["code"], "upload_quota_exceeded");
        let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
        assert!(
            (1..=86_400).contains(&retry),
            "{route}: Retry-After {retry}"
        );
        assert_eq!(
            (stored.num_calls(), recorded.num_calls()),
            (0, 0),
            "{route}"
        );
        let text = serde_json::to_string(&json(&resp)).unwrap();
        assert!(!text.contains("X-Amz"), "{route}: {text}");
    }
}

#[tokio::test]
async fn a_bad_image_does_not_count_and_a_counting_outage_is_a_503() {
    let over = over_quota();
    let c = ctx_with(&[&put_ok()], &[&over], 4_500_000);
    let resp = handler(&c, upload_event(&b64(b"not an image"), true, None))
        .await
        .unwrap();
    assert!((400..500).contains(&resp.status_code), "{:?}", resp.body);
    assert_eq!(over.num_calls(), 0);

    let down = mock!(aws_sdk_dynamodb::Client::update_item)
        .then_error(|| UpdateItemError::unhandled("simulated outage"));
    let stored = put_ok();
    let c = ctx_with(&[&stored], &[&down], 4_500_000);
    let resp = handler(&c, upload_event(&b64(&photo("rocket.jpg")), true, None))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 503, "{:?}", resp.body);
    assert_eq!(stored.num_calls(), 0);
}

#[tokio::test]
async fn an_upload_that_is_not_stored_gives_its_count_back() {
    let taken = quota_ok();
    let given_back = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|r| r.update_expression() == Some("ADD #n :minus_one"))
        .then_output(|| UpdateItemOutput::builder().build());
    let failing =
        mock!(Client::put_object).then_error(|| PutObjectError::unhandled("simulated outage"));
    let c = ctx_with(&[&failing], &[&given_back, &taken], 4_500_000);
    let resp = handler(&c, upload_event(&b64(&photo("rocket.jpg")), true, None))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 503);
    assert_eq!((taken.num_calls(), given_back.num_calls()), (1, 1));
}

#[test]
fn the_quota_day_ends_at_midnight_utc() {
    use chrono::TimeZone;
    let t = chrono::Utc
        .with_ymd_and_hms(2026, 12, 31, 23, 59, 30)
        .unwrap();
    let (day, retry_after, expires_at) = upload_function::quota_day(t);
    assert_eq!(day, "2026-12-31");
    assert_eq!(retry_after, 30);
    let next = chrono::Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    assert_eq!(expires_at, next.timestamp().unsigned_abs() + 86_400);
    let (day, retry_after, _) = upload_function::quota_day(next);
    assert_eq!((day.as_str(), retry_after), ("2027-01-01", 86_400));
}

/// Every write is made as the signed-in user: one `AssumeRole` of the user role whose session
/// policy names the user's prefix and partitions, after the body is checked (a bad body costs
/// no session). Without a session nothing is counted or stored: STS failing is a 503.
#[tokio::test]
async fn uploads_are_made_in_a_session_of_the_user_and_none_without_one() {
    let png = photo("chelsea.png");
    let stored = put_ok();
    let quota = quota_ok();
    let recorded = record_ok();
    let sts = assume_role(|input| {
        let policy = input.policy().unwrap_or_default();
        input.role_arn() == Some(ROLE_ARN)
            && input.role_session_name() == Some(OWNER)
            && policy.contains(&format!("/uploads/{OWNER}/*"))
            && policy.contains(&format!("\"{OWNER}#*\""))
    });
    let c = ctx_with_sts(&[&stored], &[&recorded, &quota], 4_500_000, &sts);
    let bad = handler(
        &c,
        upload_event(&b64(b"not an image"), true, Some("image/png")),
    )
    .await
    .unwrap();
    assert_eq!(bad.status_code, 415, "{:?}", bad.body);
    assert_eq!(sts.num_calls(), 0, "a bad body costs no session");
    for _ in 0..2 {
        let resp = handler(&c, upload_event(&b64(&png), true, Some("image/png")))
            .await
            .unwrap();
        assert_eq!(resp.status_code, 201, "{:?}", resp.body);
    }
    assert_eq!(sts.num_calls(), 1, "one session, reused while warm");

    let refused = testing::refusing();
    let calls = (stored.num_calls(), quota.num_calls());
    let c = ctx_with_sts(&[&stored], &[&recorded, &quota], 4_500_000, &refused);
    let resp = handler(&c, upload_event(&b64(&png), true, Some("image/png")))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 503);
    assert_eq!(
        (stored.num_calls(), quota.num_calls()),
        calls,
        "nothing counted or stored"
    );
}
