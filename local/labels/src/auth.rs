//! Who is calling: the request's AWS Signature Version 4 is checked against the caller's
//! secret, as AWS does before anything else, and the caller's credentials are kept so that
//! an `S3Object` is read *as the caller* (Rekognition reads S3 with the caller's permissions).
//!
//! The secret comes from a [`KeyResolver`]. In the local environment that is the emulator
//! itself (`s3::Emulator`): it knows every key it issued (its root's, its IAM users', the
//! sessions STS and Lambda handed out) and answers, to its root only, with the key's secret
//! and IAM's decision on `rekognition:DetectLabels` for the key's principal (a fidelity fix of
//! the deployer's `local::fidelity`). A key it does not know, a wrong signature, a wrong
//! session token or a stale date is refused, and so is a principal IAM does not allow the
//! action, as Rekognition refuses them.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::service::ApiError;

/// A caller whose signature checked out.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// The principal, for logs (`arn:aws:sts::…:assumed-role/ROLE/SESSION`).
    pub principal_arn: String,
    /// Whether IAM allows the principal `rekognition:DetectLabels`.
    pub may_detect_labels: bool,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("access_key_id", &self.access_key_id)
            .field("principal_arn", &self.principal_arn)
            .finish_non_exhaustive()
    }
}

/// Finds the credentials behind an access key id.
pub trait KeyResolver: Send + Sync {
    fn resolve(&self, access_key_id: &str) -> Option<Caller>;
}

/// A fixed set of callers (tests, or a service used outside the emulator).
#[derive(Debug, Default)]
pub struct StaticKeys(pub Vec<Caller>);

impl KeyResolver for StaticKeys {
    fn resolve(&self, access_key_id: &str) -> Option<Caller> {
        self.0
            .iter()
            .find(|c| c.access_key_id == access_key_id)
            .cloned()
    }
}

/// Asks each resolver in turn.
pub struct AnyOf(pub Vec<Box<dyn KeyResolver>>);

impl std::fmt::Debug for AnyOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyOf")
            .field("resolvers", &self.0.len())
            .finish()
    }
}

impl KeyResolver for AnyOf {
    fn resolve(&self, access_key_id: &str) -> Option<Caller> {
        self.0.iter().find_map(|r| r.resolve(access_key_id))
    }
}

/// What a request carries, as the HTTP layer received it.
#[derive(Debug)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// Path and query as sent (`/` for the JSON protocol).
    pub url: &'a str,
    /// Header names in lower case, values as received.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How far a request's date may be from now: AWS allows 15 minutes.
const MAX_SKEW_S: i64 = 15 * 60;

fn missing_token() -> ApiError {
    ApiError::new(
        "MissingAuthenticationTokenException",
        400,
        "Missing Authentication Token",
    )
}

fn invalid_token() -> ApiError {
    ApiError::new(
        "UnrecognizedClientException",
        400,
        "The security token included in the request is invalid.",
    )
}

fn bad_signature(m: impl Into<String>) -> ApiError {
    ApiError::new("InvalidSignatureException", 400, m)
}

struct Authorization<'a> {
    access_key_id: &'a str,
    scope: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (access_key_id, scope) = credential?.split_once('/')?;
    Some(Authorization {
        access_key_id,
        scope,
        signed_headers: signed_headers?,
        signature: signature?,
    })
}

/// Checks the request's SigV4 signature; the caller it proves.
pub fn authenticate(req: &SignedRequest<'_>, keys: &dyn KeyResolver) -> Result<Caller, ApiError> {
    authenticate_at(req, keys, now_unix())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn authenticate_at(
    req: &SignedRequest<'_>,
    keys: &dyn KeyResolver,
    now: i64,
) -> Result<Caller, ApiError> {
    let header = req.header("authorization").ok_or_else(missing_token)?;
    let auth = parse_authorization(header).ok_or_else(|| {
        ApiError::new(
            "IncompleteSignatureException",
            400,
            "Authorization header requires Credential, SignedHeaders and Signature (AWS4-HMAC-SHA256)",
        )
    })?;
    let caller = keys.resolve(auth.access_key_id).ok_or_else(invalid_token)?;
    if req.header("x-amz-security-token") != caller.session_token.as_deref() {
        return Err(invalid_token());
    }
    let amz_date = req
        .header("x-amz-date")
        .ok_or_else(|| bad_signature("the request has no X-Amz-Date"))?;
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| bad_signature(format!("X-Amz-Date {amz_date} is not a date")))?;
    if (now - signed_at).abs() > MAX_SKEW_S {
        return Err(bad_signature(format!(
            "Signature expired: {amz_date} is more than 15 minutes from the server's time"
        )));
    }
    let scope_parts: Vec<&str> = auth.scope.split('/').collect();
    if scope_parts.len() != 4
        || scope_parts[3] != "aws4_request"
        || !amz_date.starts_with(scope_parts[0])
    {
        return Err(bad_signature(format!(
            "Credential scope {} does not match the request date",
            auth.scope
        )));
    }
    if !auth.signed_headers.split(';').any(|h| h == "host") {
        return Err(bad_signature("the signature must cover the Host header"));
    }
    let canonical = canonical_request(req, auth.signed_headers);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        auth.scope,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{}", caller.secret_access_key).into_bytes();
    for part in &scope_parts {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex::encode(hmac(&key, to_sign.as_bytes()));
    if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        return Err(bad_signature(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        ));
    }
    Ok(caller)
}

fn canonical_request(req: &SignedRequest<'_>, signed_headers: &str) -> String {
    let (path, query) = req.url.split_once('?').unwrap_or((req.url, ""));
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = String::new();
    for name in signed_headers.split(';') {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload = req
        .header("x-amz-content-sha256")
        .map_or_else(|| hex::encode(Sha256::digest(req.body)), str::to_string);
    format!(
        "{}\n{}\n{}\n{headers}\n{signed_headers}\n{payload}",
        req.method,
        if path.is_empty() { "/" } else { path },
        query.join("&")
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `YYYYMMDDTHHMMSSZ` as seconds since the epoch.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn dates_parse_to_epoch_seconds() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20261129T070000Z"), Some(1_795_935_600));
        assert!(parse_amz_date("20260229T000000Z").is_some());
        assert_eq!(parse_amz_date("2026-11-29"), None);
        assert_eq!(parse_amz_date("20261329T000000Z"), None);
    }
}
