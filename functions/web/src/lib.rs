//! The web function: `GET /` serves the gallery page. The page is one HTML document with its
//! style and script inline, nothing fetched from elsewhere, and a Content-Security-Policy that
//! allows exactly that style and script (by their SHA-256), images and API calls from the API
//! itself, and the uploads bucket for a presigned PUT. The function reads no AWS resource.

use api_types::Route;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use handler_shared::{Vars, required_env};
use lambda_runtime::LambdaEvent;
use sha2::{Digest, Sha256};

pub const ENV_UPLOAD_BUCKET: &str = "UPLOAD_BUCKET";
/// Set by Lambda: where the function (and so the bucket) runs.
pub const ENV_REGION: &str = "AWS_REGION";
/// The AWS SDK's endpoint overrides, which the upload function's presigner follows: a local
/// deploy points them at the emulator, on AWS they are unset.
pub const ENV_ENDPOINTS: [&str; 2] = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"];

/// The routes this function serves.
pub const ROUTES: &[Route] = &[Route::Gallery];

const TEMPLATE: &str = include_str!("page.html");
const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// The page and its policy, made once when the function starts.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub html: String,
    pub csp: String,
}

impl Ctx {
    pub fn from_env(vars: Vars) -> Result<Self, String> {
        let bucket = required_env(vars, ENV_UPLOAD_BUCKET)?;
        let region = required_env(vars, ENV_REGION)?;
        let endpoint = ENV_ENDPOINTS.iter().find_map(|name| vars(name));
        let origins = upload_origins(&bucket, &region, endpoint.as_deref())?;
        Ok(Self {
            html: page(),
            csp: content_security_policy(&origins),
        })
    }
}

/// The page: the template with its style, script and the API's limits filled in.
pub fn page() -> String {
    TEMPLATE
        .replace("{{style}}", STYLE)
        .replace("{{script}}", SCRIPT)
        .replace(
            "{{max_upload_bytes}}",
            &api_types::MAX_DIRECT_UPLOAD_BYTES.to_string(),
        )
        .replace(
            "{{min_confidence}}",
            &api_types::DEFAULT_MIN_CONFIDENCE.to_string(),
        )
}

/// A CSP hash source for an inline element's text.
pub fn hash_source(text: &str) -> String {
    format!(
        "'sha256-{}'",
        STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// Nothing by default; the inline style and script by hash; thumbnails, API calls and the
/// page's own previews (`blob:`) from here; the presigned PUT to the uploads bucket; no
/// framing, no `<base>`, no form posts.
pub fn content_security_policy(upload_origins: &[String]) -> String {
    let mut connect = vec!["'self'".to_string()];
    connect.extend(upload_origins.iter().cloned());
    [
        "default-src 'none'".to_string(),
        format!("script-src {}", hash_source(SCRIPT)),
        format!("style-src {}", hash_source(STYLE)),
        "img-src 'self' blob:".to_string(),
        format!("connect-src {}", connect.join(" ")),
        "base-uri 'none'".to_string(),
        "form-action 'none'".to_string(),
        "frame-ancestors 'none'".to_string(),
    ]
    .join("; ")
}

/// Where a presigned PUT to the bucket goes. On AWS, the bucket's virtual-hosted regional
/// endpoint (what the SDK presigns); with an endpoint override, that endpoint's origin and
/// the bucket under it as a host.
pub fn upload_origins(
    bucket: &str,
    region: &str,
    endpoint: Option<&str>,
) -> Result<Vec<String>, String> {
    let bucket_ok = !bucket.is_empty()
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        return Err(format!(
            "{ENV_UPLOAD_BUCKET} is not a bucket name: {bucket:?}"
        ));
    }
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err(format!("{ENV_REGION} is not a region: {region:?}"));
    }
    match endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        None => {
            let suffix = if region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            Ok(vec![format!("https://{bucket}.s3.{region}.{suffix}")])
        }
        Some(endpoint) => {
            let (scheme, rest) = endpoint
                .split_once("://")
                .filter(|(s, _)| *s == "https" || *s == "http")
                .ok_or_else(|| {
                    format!("the endpoint override {endpoint:?} is not an http(s) URL")
                })?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let authority_ok = !authority.is_empty()
                && authority
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
            if !authority_ok {
                return Err(format!(
                    "the endpoint override {endpoint:?} has no host a policy can name"
                ));
            }
            Ok(vec![
                format!("{scheme}://{authority}"),
                format!("{scheme}://{bucket}.{authority}"),
            ])
        }
    }
}

pub async fn handler(
    ctx: &Ctx,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
    let route = handler_shared::RouteOf::of(&event.payload);
    Ok(match route.route(ROUTES) {
        Some(Route::Gallery) => html_response(ctx),
        _ => route.not_routed(ROUTES),
    })
}

fn html_response(ctx: &Ctx) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Made from the page and from names validated at start: always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&ctx.csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A new deploy's page is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = 200;
    r.headers = headers;
    r.body = Some(Body::Text(ctx.html.clone()));
    r
}
