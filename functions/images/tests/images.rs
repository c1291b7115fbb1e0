//! The images function against mocked S3 and DynamoDB: only labeled images are served, a large
//! original is a redirect, and a thumbnail is made once, cached under its prefix, and served
//! from the cache afterwards.

// Test code: fixtures and mocks are ours, so a panic is the right failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use handler_shared::scope::testing::{self, ROLE_ARN, assume_role};
use images_function::{Ctx, THUMBNAIL_MAX_SIDE, handler, make_thumbnail};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;

/// A PutObject seen: key, content type, body.
type Stored = (String, String, Vec<u8>);

const ID: &str = "3f2b8c1e-5d4a-4b6f-9c2d-1a2b3c4d5e6f";
/// The `sub` of the signed-in user in the test events.
const OWNER: &str = "7d3f0c2e-5b1a-4c8e-9f60-2a4b6c8d0e1f";
const BUCKET: &str = "image-pipeline-dev-123456789012-us-east-1";

fn photo(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn request(path_tail: &str, id: &str) -> LambdaEvent<ApiGatewayV2httpRequest> {
    let mut v: Value = serde_json::from_str(include_str!("data/get-image.json")).unwrap();
    let route = format!("GET /images/{{id}}{path_tail}");
    let path = format!("/images/{id}{path_tail}");
    v["routeKey"] = route.clone().into();
    v["requestContext"]["routeKey"] = route.into();
    v["rawPath"] = path.clone().into();
    v["requestContext"]["http"]["path"] = path.into();
    v["pathParameters"]["id"] = id.into();
    LambdaEvent::new(serde_json::from_value(v).unwrap(), Context::default())
}

fn item(status: &str, size: u64) -> Rule {
    let status = status.to_string();
    mock!(aws_sdk_dynamodb::Client::get_item)
        .match_requests(|r| {
            // Only the signed-in owner's item is ever asked for: the key names them.
            let key = r.key().cloned().unwrap_or_default();
            r.table_name() == Some("image-pipeline-dev-images")
                && r.consistent_read() == Some(true)
                && r.projection_expression().is_some()
                && key.get("owner") == Some(&AttributeValue::S(OWNER.into()))
                && key.get("image_id") == Some(&AttributeValue::S(ID.into()))
        })
        .then_output(move || {
            GetItemOutput::builder()
                .set_item(Some(HashMap::from([
                    ("status".to_string(), AttributeValue::S(status.clone())),
                    (
                        "content_type".to_string(),
                        AttributeValue::S("image/png".into()),
                    ),
                    (
                        "size_bytes".to_string(),
                        AttributeValue::N(size.to_string()),
                    ),
                ])))
                .build()
        })
}

fn no_item() -> Rule {
    mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build())
}

/// GetObject of `key`, answering `bytes` or, for `None`, S3's 404.
fn object(key: String, bytes: Option<Vec<u8>>) -> Rule {
    mock!(aws_sdk_s3::Client::get_object)
        .match_requests(move |r| r.bucket() == Some(BUCKET) && r.key() == Some(key.as_str()))
        .then_http_response(move || match &bytes {
            Some(b) => Response::new(StatusCode::try_from(200).unwrap(), SdkBody::from(b.clone())),
            None => Response::new(
                StatusCode::try_from(404).unwrap(),
                SdkBody::from("<Error><Code>NoSuchKey</Code></Error>"),
            ),
        })
}

fn ctx(s3: &[&Rule], ddb: &[&Rule]) -> Ctx {
    ctx_with_sts(s3, ddb, &assume_role(|_| true))
}

/// The function's context, its user sessions from an STS answering `sts`.
fn ctx_with_sts(s3: &[&Rule], ddb: &[&Rule], sts: &Rule) -> Ctx {
    let vars = testing::vars(&[
        ("IMAGES_TABLE", "image-pipeline-dev-images"),
        ("UPLOAD_BUCKET", BUCKET),
        ("UPLOAD_PREFIX", "uploads/"),
        ("THUMBNAIL_PREFIX", "thumbnails/"),
        ("IMAGE_REDIRECT_SECONDS", "60"),
    ]);
    Ctx::from_env(
        testing::sts(&[sts]),
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3),
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, ddb),
        &vars,
    )
    .unwrap()
}

fn header<'a>(r: &'a ApiGatewayV2httpResponse, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

fn bytes(r: &ApiGatewayV2httpResponse) -> Vec<u8> {
    match &r.body {
        Some(Body::Binary(b)) => b.clone(),
        other => panic!("expected bytes, got {other:?}"),
    }
}

fn error_code(r: &ApiGatewayV2httpResponse) -> String {
    match &r.body {
        Some(Body::Text(t)) => {
            let v: Value = serde_json::from_str(t).unwrap();
            v["error"]["code"].as_str().unwrap_or_default().to_string()
        }
        other => panic!("expected a JSON error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_labeled_image_is_served_with_its_type_and_cached_forever() {
    let cat = photo("chelsea.png");
    let (it, obj) = (
        item("labeled", cat.len() as u64),
        object(format!("uploads/{OWNER}/{ID}"), Some(cat.clone())),
    );
    let resp = handler(&ctx(&[&obj], &[&it]), request("", ID))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 200);
    assert!(resp.is_base64_encoded);
    assert_eq!(header(&resp, "content-type"), Some("image/png"));
    assert_eq!(header(&resp, "x-content-type-options"), Some("nosniff"));
    // The owner's browser may keep it; a shared cache never (the image is private).
    assert_eq!(
        header(&resp, "cache-control"),
        Some("private, max-age=31536000, immutable")
    );
    assert_eq!(bytes(&resp), cat);
}

#[tokio::test]
async fn another_users_image_is_not_found_and_no_token_reads_nothing() {
    let cat = photo("chelsea.png");
    let it = item("labeled", cat.len() as u64);
    let none = no_item();
    let obj = object(format!("uploads/{OWNER}/{ID}"), Some(cat));
    // Someone else asks for the owner's image: their own partition has no such item.
    let mut other = request("", ID);
    if let Some(jwt) = other
        .payload
        .request_context
        .authorizer
        .as_mut()
        .and_then(|a| a.jwt.as_mut())
    {
        jwt.claims
            .insert("sub".into(), "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into());
    }
    for tail in ["", "/thumbnail"] {
        let mut req = other.clone();
        let path = format!("/images/{ID}{tail}");
        req.payload.raw_path = Some(path.clone());
        req.payload.route_key = Some(format!("GET /images/{{id}}{tail}"));
        let resp = handler(&ctx(&[&obj], &[&it, &none]), req).await.unwrap();
        assert_eq!(
            (resp.status_code, error_code(&resp).as_str()),
            (404, "not_found"),
            "{tail}"
        );
    }
    assert_eq!((it.num_calls(), obj.num_calls()), (0, 0));
    // No verified token: refused before anything is read.
    let before = none.num_calls();
    let mut anonymous = request("", ID);
    anonymous.payload.request_context.authorizer = None;
    let resp = handler(&ctx(&[&obj], &[&it, &none]), anonymous)
        .await
        .unwrap();
    assert_eq!(
        (resp.status_code, error_code(&resp).as_str()),
        (401, "unauthorized")
    );
    assert_eq!(
        (it.num_calls(), none.num_calls(), obj.num_calls()),
        (0, before, 0)
    );
}

#[tokio::test]
async fn only_labeled_images_are_served() {
    for status in ["processing", "awaiting_upload", "failed"] {
        let it = item(status, 100);
        let obj = object(format!("uploads/{OWNER}/{ID}"), Some(b"%PDF".to_vec()));
        let resp = handler(&ctx(&[&obj], &[&it]), request("", ID))
            .await
            .unwrap();
        assert_eq!(resp.status_code, 409, "{status}");
        assert_eq!(error_code(&resp), "not_labeled");
        let resp = handler(&ctx(&[&obj], &[&it]), request("/thumbnail", ID))
            .await
            .unwrap();
        assert_eq!(resp.status_code, 409, "{status}");
        assert_eq!(obj.num_calls(), 0, "{status}: nothing is read");
    }
    let none = no_item();
    let resp = handler(&ctx(&[], &[&none]), request("", ID)).await.unwrap();
    assert_eq!(
        (resp.status_code, error_code(&resp).as_str()),
        (404, "not_found")
    );
    for bad in ["x", "3F2B8C1E-5D4A-4B6F-9C2D-1A2B3C4D5E6F", "../uploads"] {
        let resp = handler(&ctx(&[], &[&none]), request("", bad))
            .await
            .unwrap();
        assert_eq!(
            (resp.status_code, error_code(&resp).as_str()),
            (400, "invalid_id"),
            "{bad}"
        );
    }
    assert_eq!(none.num_calls(), 1, "a bad id never reaches the table");
}

#[tokio::test]
async fn an_original_too_large_for_lambda_is_a_short_lived_redirect() {
    let it = item("labeled", images_function::MAX_INLINE_BYTES + 1);
    // Presigning runs the client's interceptors, so the mock must know the operation.
    let obj = object(format!("uploads/{OWNER}/{ID}"), Some(vec![0; 16]));
    let resp = handler(&ctx(&[&obj], &[&it]), request("", ID))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 302);
    let location = header(&resp, "location").unwrap();
    assert!(
        location.contains(&format!("/uploads/{OWNER}/{ID}")),
        "{location}"
    );
    assert!(location.contains("X-Amz-Expires=60"), "{location}");
    // Signed by the user's session, not by the function's own role.
    assert!(
        location.contains("X-Amz-Credential=ASIAUSERSESSION"),
        "{location}"
    );
    assert_eq!(header(&resp, "cache-control"), Some("no-store"));
}

#[tokio::test]
async fn a_thumbnail_is_made_once_cached_and_then_served_from_the_cache() {
    let cat = photo("chelsea.png");
    let stored: Arc<Mutex<Vec<Stored>>> = Arc::default();
    let put = {
        let stored = stored.clone();
        mock!(aws_sdk_s3::Client::put_object).then_compute_output(move |r| {
            stored.lock().unwrap().push((
                r.key().unwrap_or_default().to_string(),
                r.content_type().unwrap_or_default().to_string(),
                r.body().bytes().unwrap_or_default().to_vec(),
            ));
            PutObjectOutput::builder().build()
        })
    };
    let it = item("labeled", cat.len() as u64);
    let (missing, original) = (
        object(format!("thumbnails/{OWNER}/{ID}.jpg"), None),
        object(format!("uploads/{OWNER}/{ID}"), Some(cat.clone())),
    );
    let resp = handler(
        &ctx(&[&missing, &original, &put], &[&it]),
        request("/thumbnail", ID),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 200);
    assert_eq!(header(&resp, "content-type"), Some("image/jpeg"));
    let made = bytes(&resp);
    let img = image::load_from_memory(&made).unwrap();
    assert_eq!(img.width().max(img.height()), THUMBNAIL_MAX_SIDE);
    let stored = stored.lock().unwrap().clone();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, format!("thumbnails/{OWNER}/{ID}.jpg"));
    assert_eq!(stored[0].1, "image/jpeg");
    assert_eq!(stored[0].2, made);

    // Cached: served as stored, the original untouched.
    let cached = object(format!("thumbnails/{OWNER}/{ID}.jpg"), Some(made.clone()));
    let untouched = object(format!("uploads/{OWNER}/{ID}"), Some(cat));
    let resp = handler(
        &ctx(&[&cached, &untouched], &[&it]),
        request("/thumbnail", ID),
    )
    .await
    .unwrap();
    assert_eq!(bytes(&resp), made);
    assert_eq!(untouched.num_calls(), 0);
}

#[test]
fn thumbnails_fit_320_pixels_keep_the_aspect_ratio_and_are_deterministic() {
    for name in ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png"] {
        let original = image::load_from_memory(&photo(name)).unwrap();
        let jpeg = make_thumbnail(&photo(name)).unwrap();
        let t = image::load_from_memory(&jpeg).unwrap();
        assert_eq!(t.width().max(t.height()), THUMBNAIL_MAX_SIDE, "{name}");
        let (ow, oh) = (f64::from(original.width()), f64::from(original.height()));
        let (tw, th) = (f64::from(t.width()), f64::from(t.height()));
        assert!(
            ((ow / oh) - (tw / th)).abs() < 0.02,
            "{name}: {ow}x{oh} to {tw}x{th}"
        );
        assert_eq!(make_thumbnail(&photo(name)).unwrap(), jpeg, "{name}");
    }
    assert!(make_thumbnail(b"not an image").is_err());
    // A header claiming 20000 pixels a side is refused before any pixel is allocated.
    let mut huge = photo("chelsea.png");
    huge[16..20].copy_from_slice(&20_000u32.to_be_bytes());
    assert!(make_thumbnail(&huge).is_err());
}

/// Every read is made as the signed-in user: one `AssumeRole` of the user role whose session
/// policy names the user's upload and thumbnail prefixes and partitions, kept while warm.
#[tokio::test]
async fn reads_are_made_in_a_session_of_the_user_kept_while_warm() {
    let it = item("labeled", 16);
    let obj = object(format!("uploads/{OWNER}/{ID}"), Some(vec![0; 16]));
    let sts = assume_role(|input| {
        let policy = input.policy().unwrap_or_default();
        input.role_arn() == Some(ROLE_ARN)
            && input.role_session_name() == Some(OWNER)
            && policy.contains(&format!("{BUCKET}/uploads/{OWNER}/*"))
            && policy.contains(&format!("{BUCKET}/thumbnails/{OWNER}/*"))
            && policy.contains(&format!("\"{OWNER}#*\""))
    });
    let ctx = ctx_with_sts(&[&obj], &[&it], &sts);
    for _ in 0..3 {
        let resp = handler(&ctx, request("", ID)).await.unwrap();
        assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    }
    assert_eq!(sts.num_calls(), 1, "one session, reused while warm");
    assert_eq!(it.num_calls(), 3);
}

/// Without a session nothing is read: STS failing is a 503, and neither the table nor the
/// bucket is asked with the function's own credentials.
#[tokio::test]
async fn no_session_no_read() {
    let it = item("labeled", 16);
    let obj = object(format!("uploads/{OWNER}/{ID}"), Some(vec![0; 16]));
    let refused = testing::refusing();
    let resp = handler(&ctx_with_sts(&[&obj], &[&it], &refused), request("", ID))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 503);
    assert_eq!((it.num_calls(), obj.num_calls()), (0, 0));
}
