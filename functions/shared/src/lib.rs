//! What the handlers share, and nothing more: the image id and its object key, the owner, JSON
//! responses and errors in the API's shape, logging set-up, and (`scope`) sessions narrowed to
//! one user.

use std::fmt;

pub mod scope;

use api_types::{ErrorBody, ErrorDetail, Route};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, header};
use serde::Serialize;
use uuid::Uuid;

/// A server-generated image id: a random (v4) UUID in its canonical lowercase form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageId(Uuid);

impl ImageId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// Accepts only the canonical form (36 characters, lowercase, hyphenated, version 4), so
    /// one image has exactly one spelling in keys, items and URLs.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 36 {
            return None;
        }
        let id = Uuid::try_parse(s).ok()?;
        let canonical = id.hyphenated().to_string();
        (canonical == s && id.get_version_num() == 4).then_some(Self(id))
    }

    /// The object key the image is stored under: `{prefix}{owner}/{id}`, so each user's
    /// images share a prefix that a policy can name.
    pub fn object_key(&self, prefix: &str, owner: &Owner) -> String {
        format!("{prefix}{owner}/{self}")
    }

    /// The owner and id an object key names, if the key is exactly `{prefix}{owner}/{id}`.
    pub fn from_object_key(key: &str, prefix: &str) -> Option<(Owner, Self)> {
        let (owner, id) = key.strip_prefix(prefix)?.split_once('/')?;
        Some((Owner::parse(owner)?, Self::parse(id)?))
    }
}

/// The signed-in user an image belongs to: the `sub` claim of the access token the API's
/// authorizer verified. Never taken from a body, a query or a header.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner(String);

impl Owner {
    /// The longest `sub` accepted (Cognito's are 36-character UUIDs).
    pub const MAX_CHARS: usize = 128;

    /// Letters, digits and `-`, at most [`Self::MAX_CHARS`]: a `sub` can then be a key
    /// segment and a partition prefix without escaping.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_CHARS
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then(|| Self(s.to_string()))
    }

    /// The owner of a request: the `sub` of the token the API's JWT authorizer verified.
    /// A request that reached the function without one (a route deployed without the
    /// authorizer, or a direct invocation) is refused, never served as someone.
    pub fn of_request(req: &ApiGatewayV2httpRequest) -> Result<Self, ApiError> {
        req.request_context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .and_then(|jwt| jwt.claims.get("sub"))
            .and_then(|sub| Self::parse(sub))
            .ok_or_else(|| {
                ApiError::new(
                    401,
                    "unauthorized",
                    "sign in: this route needs a signed-in user's access token",
                )
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// The most characters of a client's own input an answer repeats back.
pub const MAX_ECHO_CHARS: usize = 200;

/// Client input as an error message may repeat it: at most [`MAX_ECHO_CHARS`] characters,
/// with `…` when cut.
pub fn echo(input: &str) -> String {
    let mut out: String = input.chars().take(MAX_ECHO_CHARS).collect();
    if out.len() < input.len() {
        out.push('…');
    }
    out
}

/// An API error: the status, a stable machine-readable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Seconds after which the same request may succeed: sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, telling the client to come back in `seconds` (`Retry-After`).
    pub fn retry_after(self, seconds: u64) -> Self {
        Self {
            retry_after: Some(seconds),
            ..self
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// For failures of a dependency (S3, DynamoDB): the client did nothing wrong.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "service_unavailable", message)
    }

    /// `{"error": {"code": …, "message": …}}`
    pub fn into_response(self) -> ApiGatewayV2httpResponse {
        let mut resp = json_response(
            self.status,
            &ErrorBody {
                error: ErrorDetail {
                    code: self.code.to_string(),
                    message: self.message,
                },
            },
        );
        if let Some(seconds) = self.retry_after {
            resp.headers
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        resp
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The response for a handled request: the success as is, or the error in the API's shape,
/// logged so every rejection is visible with the invocation's request id.
pub fn respond(result: Result<ApiGatewayV2httpResponse, ApiError>) -> ApiGatewayV2httpResponse {
    result.unwrap_or_else(|e| {
        tracing::info!(status = e.status, code = e.code, message = %e.message, "request rejected");
        e.into_response()
    })
}

/// A JSON response with the given status.
pub fn json_response<T: Serialize>(status: u16, body: &T) -> ApiGatewayV2httpResponse {
    let (status, text) = match serde_json::to_string(body) {
        Ok(text) => (status, text),
        // Serializing plain structs and strings does not fail; if it ever did, say so as JSON.
        Err(_) => (
            500,
            r#"{"error":{"code":"internal","message":"response could not be encoded"}}"#.into(),
        ),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = i64::from(status);
    r.headers = headers;
    r.body = Some(Body::Text(text));
    r
}

/// The route a request arrived on. API Gateway sends `routeKey` (`POST /upload`); direct
/// invocations and `$default` routes fall back to the method and raw path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOf {
    pub method: String,
    pub path: String,
    /// API Gateway's `routeKey` (`GET /metadata/{id}`), unless it is `$default`.
    pub key: Option<String>,
}

impl RouteOf {
    pub fn of(req: &ApiGatewayV2httpRequest) -> Self {
        let method = req
            .request_context
            .http
            .method
            .as_str()
            .to_ascii_uppercase();
        let path = req
            .raw_path
            .clone()
            .or_else(|| req.request_context.http.path.clone())
            .unwrap_or_default();
        // A stage other than $default prefixes the raw path with its name.
        let path = match req.request_context.stage.as_deref() {
            Some(stage) if stage != "$default" && !stage.is_empty() => path
                .strip_prefix(&format!("/{stage}"))
                .map(str::to_string)
                .unwrap_or(path),
            _ => path,
        };
        let key = req
            .route_key
            .clone()
            .or_else(|| req.request_context.route_key.clone())
            .filter(|k| k.starts_with(|c: char| c.is_ascii_uppercase()));
        Self { method, path, key }
    }

    /// Which of the routes a function serves this request is for.
    /// API Gateway has already matched the route when it names one (its `{id}` may hold
    /// what no path segment could, such as an encoded `/`); otherwise the method and path
    /// decide.
    pub fn route(&self, served: &[Route]) -> Option<Route> {
        let by_key = self.key.as_deref().and_then(|k| {
            served
                .iter()
                .copied()
                .find(|r| r.key() == k && r.method() == self.method)
        });
        by_key.or_else(|| Route::find(served, &self.method, &self.path))
    }

    /// The answer for a request no served route matches: 405 (with `Allow`) when the path
    /// is one of them with another method, 404 otherwise.
    pub fn not_routed(&self, served: &[Route]) -> ApiGatewayV2httpResponse {
        let mut allowed: Vec<&str> = served
            .iter()
            .filter(|r| r.path_matches(&self.path))
            .map(|r| r.method())
            .collect();
        allowed.dedup();
        if allowed.is_empty() {
            return ApiError::not_found(format!(
                "no route for {} {}",
                echo(&self.method),
                echo(&self.path)
            ))
            .into_response();
        }
        let mut r = ApiError::new(
            405,
            "method_not_allowed",
            format!(
                "{} is not allowed on {}; use {}",
                echo(&self.method),
                echo(&self.path),
                allowed.join(" or ")
            ),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            r.headers.insert(header::ALLOW, v);
        }
        r
    }
}

/// JSON logs (when Lambda's log format is JSON) through `tracing`, with the invocation's
/// request id attached by the runtime's span.
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// Where configuration comes from: the process environment in Lambda, a map in tests.
pub type Vars<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as `Vars`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A required variable, with a readable error when it is missing.
pub fn required_env(vars: Vars, name: &str) -> Result<String, String> {
    vars(name).ok_or_else(|| format!("environment variable {name} is not set"))
}

/// An optional variable that must parse when present.
pub fn env_or<T: std::str::FromStr>(vars: Vars, name: &str, default: T) -> Result<T, String> {
    match vars(name) {
        Some(v) => v
            .parse()
            .map_err(|_| format!("environment variable {name} has an invalid value `{v}`")),
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_are_canonical_v4() {
        let id = ImageId::new_random();
        let s = id.to_string();
        assert_eq!(ImageId::parse(&s), Some(id));
        assert_eq!(ImageId::parse(&s.to_uppercase()), None);
        assert_eq!(ImageId::parse(&s.replace('-', "")), None);
        assert_eq!(ImageId::parse(&format!("{{{s}}}")), None);
        assert_eq!(
            ImageId::parse("00000000-0000-1000-8000-000000000000"),
            None,
            "v1"
        );
        for bad in [
            "",
            "../x",
            "%2F",
            "x",
            &"a".repeat(5000),
            "not-a-uuid-at-all-but-36-chars-long!",
        ] {
            assert_eq!(ImageId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn object_keys_round_trip_only_under_the_prefix() {
        let id = ImageId::new_random();
        let owner = Owner::parse("0b5e0f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        let key = id.object_key("uploads/", &owner);
        assert_eq!(key, format!("uploads/{owner}/{id}"));
        assert_eq!(
            ImageId::from_object_key(&key, "uploads/"),
            Some((owner.clone(), id))
        );
        for bad in [
            format!("other/{owner}/{id}"),
            format!("{key}.jpg"),
            format!("uploads/{id}"),
            format!("uploads/{owner}/x/{id}"),
            format!("uploads//{id}"),
            format!("uploads/a.b/{id}"),
        ] {
            assert_eq!(ImageId::from_object_key(&bad, "uploads/"), None, "{bad}");
        }
    }

    #[test]
    fn the_owner_is_the_verified_tokens_sub_and_nothing_else() {
        let mut req = ApiGatewayV2httpRequest::default();
        req.headers
            .insert("x-owner", HeaderValue::from_static("someone"));
        let err = Owner::of_request(&req).unwrap_err();
        assert_eq!((err.status, err.code), (401, "unauthorized"));
        let event = serde_json::json!({
            "requestContext": {
                "http": {"method": "GET", "path": "/metadata"},
                "authorizer": {"jwt": {"claims": {"sub": "abc-123"}, "scopes": []}}
            }
        });
        let req: ApiGatewayV2httpRequest = serde_json::from_value(event).unwrap();
        assert_eq!(Owner::of_request(&req).unwrap().as_str(), "abc-123");
        for bad in ["", "a/b", "a#b", "../x", &"a".repeat(129)] {
            assert_eq!(Owner::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn errors_have_the_api_shape() {
        let r = ApiError::bad_request("invalid_id", "bad id").into_response();
        assert_eq!(r.status_code, 400);
        assert_eq!(
            r.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let Some(Body::Text(text)) = r.body else {
            panic!("text body")
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "invalid_id", "message": "bad id"}})
        );
    }

    #[test]
    fn client_input_is_echoed_in_at_most_200_characters() {
        let long = "x".repeat(70_000);
        assert_eq!(echo(&long).chars().count(), MAX_ECHO_CHARS + 1);
        assert!(echo(&long).ends_with('…'));
        assert_eq!(echo("short"), "short");
        let r = RouteOf {
            method: "GET".into(),
            path: format!("/{long}"),
            key: None,
        };
        let Some(Body::Text(text)) = r.not_routed(&[Route::Upload]).body else {
            panic!("text body")
        };
        assert!(text.len() < 400, "{} bytes", text.len());
    }

    #[test]
    fn not_routed_distinguishes_404_and_405() {
        let r = RouteOf {
            method: "DELETE".into(),
            path: "/upload".into(),
            key: None,
        };
        let served = [Route::Upload, Route::PresignUpload];
        assert_eq!(r.route(&served), None);
        let resp = r.not_routed(&served);
        assert_eq!(resp.status_code, 405);
        assert_eq!(
            resp.headers.get("allow").map(|v| v.as_bytes()),
            Some(&b"POST"[..])
        );
        assert_eq!(r.not_routed(&[Route::ListMetadata]).status_code, 404);
        let post = RouteOf {
            method: "POST".into(),
            path: "/upload".into(),
            key: None,
        };
        assert_eq!(post.route(&served), Some(Route::Upload));
        // API Gateway's match stands even for a path parameter no segment could carry.
        let item = RouteOf {
            method: "GET".into(),
            path: "/metadata/a/b".into(),
            key: Some("GET /metadata/{id}".into()),
        };
        assert_eq!(item.route(&[Route::GetMetadata]), Some(Route::GetMetadata));
    }
}
