//! The gallery page: served with a policy that allows exactly its own inline style and script,
//! nothing from elsewhere, and the uploads bucket for presigned PUTs.

// Test code: fixtures are ours, so a panic is the right failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use lambda_runtime::{Context, LambdaEvent};
use web_function::{Ctx, handler, hash_source, upload_origins};

const BUCKET: &str = "image-pipeline-dev-123456789012-eu-west-1";

fn ctx(endpoint: Option<&'static str>) -> Ctx {
    let vars = move |name: &str| match name {
        "UPLOAD_BUCKET" => Some(BUCKET.to_string()),
        "AWS_REGION" => Some("eu-west-1".to_string()),
        "AWS_ENDPOINT_URL" => endpoint.map(str::to_string),
        "USER_POOL_ID" => Some("eu-west-1_AbCdEf123".to_string()),
        "USER_POOL_CLIENT_ID" => Some("4f8a2c1e9b7d3a5c6e0f1b2d3c".to_string()),
        _ => None,
    };
    Ctx::from_env(&vars).unwrap()
}

fn request(edit: impl FnOnce(&mut serde_json::Value)) -> LambdaEvent<ApiGatewayV2httpRequest> {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("data/get-page.json")).unwrap();
    edit(&mut v);
    LambdaEvent::new(serde_json::from_value(v).unwrap(), Context::default())
}

async fn page(ctx: &Ctx) -> (ApiGatewayV2httpResponse, String) {
    let resp = handler(ctx, request(|_| {})).await.unwrap();
    let html = match &resp.body {
        Some(Body::Text(t)) => t.clone(),
        other => panic!("expected text, got {other:?}"),
    };
    (resp, html)
}

fn header<'a>(resp: &'a ApiGatewayV2httpResponse, name: &str) -> &'a str {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// The text of the one `<tag>…</tag>` element of the page.
fn inline(html: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    assert_eq!(html.matches(&open).count(), 1, "one <{tag}>");
    let start = html.find(&open).unwrap() + open.len();
    let end = start + html[start..].find(&close).unwrap();
    html[start..end].to_string()
}

fn directive<'a>(csp: &'a str, name: &str) -> Vec<&'a str> {
    csp.split(';')
        .map(str::trim)
        .find_map(|d| d.strip_prefix(name).filter(|r| r.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {name} in {csp}"))
        .split_whitespace()
        .collect()
}

#[tokio::test]
async fn the_policy_allows_exactly_the_inline_style_and_script() {
    let ctx = ctx(None);
    let (resp, html) = page(&ctx).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(header(&resp, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    let csp = header(&resp, "content-security-policy");
    assert_eq!(directive(csp, "default-src"), ["'none'"]);
    // The hashes are of what was served, so the browser runs it, and of nothing else.
    let script = hash_source(&inline(&html, "script"));
    let style = hash_source(&inline(&html, "style"));
    assert_eq!(directive(csp, "script-src"), [script.as_str()]);
    assert_eq!(directive(csp, "style-src"), [style.as_str()]);
    // Images are the user's: fetched with their token, shown as blob: URLs.
    assert_eq!(directive(csp, "img-src"), ["blob:"]);
    // The API, the presigned PUT, and sign-in at exactly the region's Cognito endpoint.
    assert_eq!(
        directive(csp, "connect-src"),
        [
            "'self'",
            &format!("https://{BUCKET}.s3.eu-west-1.amazonaws.com"),
            "https://cognito-idp.eu-west-1.amazonaws.com"
        ]
    );
    for d in ["base-uri", "form-action", "frame-ancestors"] {
        assert_eq!(directive(csp, d), ["'none'"], "{d}");
    }
    for weak in [
        "unsafe-inline",
        "unsafe-eval",
        "unsafe-hashes",
        "*",
        "data:",
        "http:",
    ] {
        assert!(
            !csp.split_whitespace()
                .any(|w| w.trim_matches(';') == weak || w.trim_matches(['\'', ';']) == weak),
            "{weak} in {csp}"
        );
    }
}

#[tokio::test]
async fn the_page_loads_nothing_from_elsewhere() {
    let (_, html) = page(&ctx(None)).await;
    assert!(!html.contains("{{"), "every placeholder is filled");
    // Where to sign in is the one address the page holds, as data for its script.
    let endpoint = "data-cognito-endpoint=\"https://cognito-idp.eu-west-1.amazonaws.com\"";
    assert!(html.contains(endpoint), "where to sign in");
    assert!(html.contains("data-user-pool-id=\"eu-west-1_AbCdEf123\""));
    assert!(html.contains("data-client-id=\"4f8a2c1e9b7d3a5c6e0f1b2d3c\""));
    let html = html.replace(endpoint, "");
    for outside in [
        "http://", "https://", "<link", "@import", "url(", " src=", "//cdn",
    ] {
        assert!(!html.contains(outside), "the page holds {outside}");
    }
    // The limits the page works with are the API's.
    assert!(html.contains(&format!(
        "data-max-upload-bytes=\"{}\"",
        api_types::MAX_DIRECT_UPLOAD_BYTES
    )));
    assert!(html.contains(&format!(
        "data-min-confidence=\"{}\"",
        api_types::DEFAULT_MIN_CONFIDENCE
    )));
    // The script reaches the API relative to the page, and storage only through the URL a
    // presign returned: no address is written into it.
    let script = inline(&html, "script");
    assert!(!script.contains("amazonaws"), "no storage address");
    assert!(!script.contains("innerHTML"), "text goes in as text");
}

#[tokio::test]
async fn a_local_endpoint_is_allowed_in_both_address_styles() {
    let (resp, _) = page(&ctx(Some("https://127.0.0.1:4566"))).await;
    assert_eq!(
        directive(header(&resp, "content-security-policy"), "connect-src"),
        [
            "'self'",
            "https://127.0.0.1:4566",
            &format!("https://{BUCKET}.127.0.0.1:4566")
        ]
    );
}

#[test]
fn the_cognito_endpoint_is_the_regions_or_the_overrides_origin() {
    use web_function::cognito_endpoint;
    assert_eq!(
        cognito_endpoint("cn-north-1", None).unwrap(),
        "https://cognito-idp.cn-north-1.amazonaws.com.cn"
    );
    assert_eq!(
        cognito_endpoint("us-east-1", Some("https://127.0.0.1:4566/x?y")).unwrap(),
        "https://127.0.0.1:4566"
    );
    for (region, endpoint) in [
        ("eu west 1", None),
        ("eu-west-1", Some("ftp://example.com")),
        ("eu-west-1", Some("https://a b")),
    ] {
        assert!(
            cognito_endpoint(region, endpoint).is_err(),
            "{region} {endpoint:?}"
        );
    }
}

#[test]
fn upload_origins_refuse_what_a_policy_cannot_hold() {
    assert_eq!(
        upload_origins("b", "cn-north-1", None).unwrap(),
        ["https://b.s3.cn-north-1.amazonaws.com.cn"]
    );
    assert_eq!(
        upload_origins("b", "us-east-1", Some("http://localhost:4566/path")).unwrap(),
        ["http://localhost:4566", "http://b.localhost:4566"]
    );
    for (bucket, region, endpoint) in [
        ("B;script-src *", "eu-west-1", None),
        ("", "eu-west-1", None),
        ("b", "eu west 1", None),
        ("b", "eu-west-1", Some("ftp://example.com")),
        ("b", "eu-west-1", Some("https://exa mple.com")),
        ("b", "eu-west-1", Some("https://")),
    ] {
        assert!(
            upload_origins(bucket, region, endpoint).is_err(),
            "{bucket} {region} {endpoint:?}"
        );
    }
}

#[tokio::test]
async fn other_methods_and_paths_get_json_errors() {
    let ctx = ctx(None);
    let post = handler(
        &ctx,
        request(|v| {
            v["routeKey"] = "$default".into();
            v["requestContext"]["routeKey"] = "$default".into();
            v["requestContext"]["http"]["method"] = "POST".into();
        }),
    )
    .await
    .unwrap();
    assert_eq!(post.status_code, 405);
    assert_eq!(header(&post, "allow"), "GET");
    let elsewhere = handler(
        &ctx,
        request(|v| {
            v["routeKey"] = "$default".into();
            v["requestContext"]["routeKey"] = "$default".into();
            v["rawPath"] = "/index.html".into();
            v["requestContext"]["http"]["path"] = "/index.html".into();
        }),
    )
    .await
    .unwrap();
    assert_eq!(elsewhere.status_code, 404);
    assert_eq!(header(&elsewhere, "content-type"), "application/json");
}

/// The script parses: Node checks its syntax (Node is on every machine the tests run on).
#[test]
fn the_script_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/page.js");
    let out = std::process::Command::new("node")
        .arg("--check")
        .arg(&path)
        .output()
        .expect("node runs (it is one of the test command's requirements)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
