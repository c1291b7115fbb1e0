//! The web function: `GET /` serves the gallery page. The page is one HTML document with its
//! style and script inline, nothing fetched from elsewhere, and a Content-Security-Policy that
//! allows exactly that style and script (by their SHA-256), images and API calls from the API
//! itself, the uploads bucket for a presigned PUT, and the stage's Cognito endpoint, which the
//! page signs in to. The function reads no AWS resource.

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
/// The same for Cognito's user pools API, which the page signs in with.
pub const ENV_COGNITO_ENDPOINTS: [&str; 2] = [
    "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER",
    "AWS_ENDPOINT_URL",
];
pub const ENV_USER_POOL_ID: &str = "USER_POOL_ID";
pub const ENV_USER_POOL_CLIENT_ID: &str = "USER_POOL_CLIENT_ID";

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
        let cognito = ENV_COGNITO_ENDPOINTS.iter().find_map(|name| vars(name));
        let sign_in = SignIn {
            endpoint: cognito_endpoint(&region, cognito.as_deref())?,
            pool_id: plain_id(ENV_USER_POOL_ID, required_env(vars, ENV_USER_POOL_ID)?)?,
            client_id: plain_id(
                ENV_USER_POOL_CLIENT_ID,
                required_env(vars, ENV_USER_POOL_CLIENT_ID)?,
            )?,
        };
        Ok(Self {
            html: page(&sign_in),
            csp: content_security_policy(&origins, &sign_in.endpoint),
        })
    }
}

/// Where and as what the page signs in: the Cognito endpoint (an origin), the user pool and
/// its app client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    pub endpoint: String,
    pub pool_id: String,
    pub client_id: String,
}

/// An id as Cognito writes them (`eu-west-1_AbC123`, `4f8a…`): letters, digits, `_` and `-`,
/// so it goes into an attribute as it is.
fn plain_id(name: &str, value: String) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(value)
    } else {
        Err(format!("{name} is not a Cognito id: {value:?}"))
    }
}

/// The origin of Cognito's user pools API: the regional endpoint on AWS, or the override's
/// origin.
pub fn cognito_endpoint(region: &str, endpoint: Option<&str>) -> Result<String, String> {
    check_region(region)?;
    match endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        None => Ok(format!(
            "https://cognito-idp.{region}.{}",
            dns_suffix(region)
        )),
        Some(e) => {
            let (scheme, authority) = origin_of(e)?;
            Ok(format!("{scheme}://{authority}"))
        }
    }
}

fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

fn check_region(region: &str) -> Result<(), String> {
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if region_ok {
        Ok(())
    } else {
        Err(format!("{ENV_REGION} is not a region: {region:?}"))
    }
}

/// An endpoint override's scheme and authority, refusing what a policy could not name.
fn origin_of(endpoint: &str) -> Result<(&str, &str), String> {
    let (scheme, rest) = endpoint
        .split_once("://")
        .filter(|(s, _)| *s == "https" || *s == "http")
        .ok_or_else(|| format!("the endpoint override {endpoint:?} is not an http(s) URL"))?;
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
    Ok((scheme, authority))
}

/// The page: the template with its style, script, the API's limits and where to sign in
/// filled in.
pub fn page(sign_in: &SignIn) -> String {
    TEMPLATE
        .replace("{{style}}", STYLE)
        .replace("{{script}}", SCRIPT)
        .replace("{{cognito_endpoint}}", &sign_in.endpoint)
        .replace("{{user_pool_id}}", &sign_in.pool_id)
        .replace("{{client_id}}", &sign_in.client_id)
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

/// Nothing by default; the inline style and script by hash; API calls from here; images as
/// the page's own `blob:` URLs (fetched with the user's token); the presigned PUT to the
/// uploads bucket; sign-in at exactly the Cognito endpoint; no framing, no `<base>`, no form
/// posts.
pub fn content_security_policy(upload_origins: &[String], cognito: &str) -> String {
    let mut connect = vec!["'self'".to_string()];
    connect.extend(upload_origins.iter().cloned());
    if !connect.iter().any(|c| c == cognito) {
        connect.push(cognito.to_string());
    }
    [
        "default-src 'none'".to_string(),
        format!("script-src {}", hash_source(SCRIPT)),
        format!("style-src {}", hash_source(STYLE)),
        "img-src blob:".to_string(),
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
    check_region(region)?;
    match endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        None => Ok(vec![format!(
            "https://{bucket}.s3.{region}.{}",
            dns_suffix(region)
        )]),
        Some(endpoint) => {
            let (scheme, authority) = origin_of(endpoint)?;
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
