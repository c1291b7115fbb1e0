//! The metadata function: `GET /metadata/{id}` returns one image's labels, `GET /metadata`
//! pages through all of them, newest first, from the images table's index (or, with `label=`,
//! through the images with that label, newest first, from the label index), and `GET /labels`
//! counts the images of each label. Responses carry only metadata, never where the image is
//! stored.

use std::collections::HashMap;

use api_types::{
    FailureReason, ImageMetadata, ImageStatus, Label, LabelCount, LabelCounts, Page, Route, index,
};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use handler_shared::scope::{Reach, UserScope};
use handler_shared::{
    ApiError, ImageId, Owner, RouteOf, Vars, env_or, json_response, required_env,
};
use lambda_runtime::LambdaEvent;
use sha2::{Digest, Sha256};

pub const ENV_IMAGES_TABLE: &str = "IMAGES_TABLE";
pub const ENV_LABELS_TABLE: &str = "LABELS_TABLE";
/// The most pages of label counts `GET /labels` reads (each up to 1 MB): far more labels than
/// any label model has.
pub const MAX_COUNT_PAGES: usize = 20;
pub const ENV_DEFAULT_LIMIT: &str = "DEFAULT_PAGE_SIZE";
/// Items per page when the client does not say.
pub const DEFAULT_LIMIT: u32 = 20;
/// The most items one page returns; larger `limit`s are capped to it.
pub const MAX_LIMIT: u32 = 100;

#[derive(Debug)]
pub struct Ctx {
    /// DynamoDB as the signed-in user: a session of the function's user role, narrowed to
    /// the user's partitions.
    pub users: UserScope<aws_sdk_dynamodb::Client>,
    pub table: String,
    pub labels_table: String,
    pub default_limit: u32,
}

impl Ctx {
    /// `dynamodb` is the function's own client: each user's client is a copy of it with that
    /// user's session.
    pub fn from_env(
        sts: aws_sdk_sts::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        vars: Vars,
    ) -> Result<Self, String> {
        let default_limit = env_or(vars, ENV_DEFAULT_LIMIT, DEFAULT_LIMIT)?;
        if !(1..=MAX_LIMIT).contains(&default_limit) {
            return Err(format!(
                "{ENV_DEFAULT_LIMIT} must be between 1 and {MAX_LIMIT}"
            ));
        }
        let table = required_env(vars, ENV_IMAGES_TABLE)?;
        let labels_table = required_env(vars, ENV_LABELS_TABLE)?;
        let reach = Reach::items(&[&table, &labels_table]);
        let users = UserScope::from_env(sts, vars, reach, move |creds| {
            let conf = dynamodb.config().to_builder().credentials_provider(creds);
            aws_sdk_dynamodb::Client::from_conf(conf.build())
        })?;
        Ok(Self {
            users,
            table,
            labels_table,
            default_limit,
        })
    }
}

/// The routes this function serves.
pub const ROUTES: &[Route] = &[Route::ListMetadata, Route::GetMetadata, Route::ListLabels];

pub async fn handler(
    ctx: &Ctx,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
    let req = event.payload;
    let route = RouteOf::of(&req);
    let routed = route.route(ROUTES);
    let owner = match (routed, Owner::of_request(&req)) {
        (Some(_), Err(e)) => return Ok(handler_shared::respond(Err(e))),
        (_, owner) => owner.ok(),
    };
    let result = match (routed, owner) {
        (Some(Route::ListMetadata), Some(owner)) => {
            match req.query_string_parameters.first("label") {
                Some(label) => search(ctx, &req, &owner, label).await,
                None => list(ctx, &req, &owner).await,
            }
        }
        (Some(Route::ListLabels), Some(owner)) => label_counts(ctx, &req, &owner).await,
        (Some(Route::GetMetadata), Some(owner)) => {
            // API Gateway passes `{id}`; a direct invocation has only the path.
            let from_path = route.path.rsplit('/').next().unwrap_or_default();
            let raw = req
                .path_parameters
                .get("id")
                .map_or(from_path, String::as_str);
            one(ctx, &owner, raw).await
        }
        _ => Ok(route.not_routed(ROUTES)),
    };
    Ok(handler_shared::respond(result))
}

async fn one(ctx: &Ctx, owner: &Owner, raw: &str) -> Result<ApiGatewayV2httpResponse, ApiError> {
    let id = ImageId::parse(raw).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_id",
            "an image id is the UUID returned by POST /upload (36 characters, lowercase)",
        )
    })?;
    let out = ctx
        .users
        .clients(owner)
        .await?
        .get_item()
        .table_name(&ctx.table)
        .key(index::OWNER, AttributeValue::S(owner.to_string()))
        .key(index::IMAGE_ID, AttributeValue::S(id.to_string()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| {
            tracing::error!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "GetItem failed");
            ApiError::unavailable("metadata could not be read; try again")
        })?;
    let deleted = |item: &HashMap<String, AttributeValue>| {
        item.get("status")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
            == Some(index::DELETED)
    };
    match out.item().filter(|item| !deleted(item)) {
        Some(item) => Ok(json_response(200, &from_item(item))),
        // Another user's image is as absent as one never uploaded: its key names its owner.
        None => Err(ApiError::not_found(format!(
            "no image {id}: you have no upload with this id (or its presigned upload expired unused)"
        ))),
    }
}

/// `limit`: a positive integer; above the maximum it is capped, anything else is refused.
pub fn parse_limit(raw: Option<&str>, default: u32) -> Result<u32, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    let bad = || {
        ApiError::bad_request(
            "invalid_limit",
            format!(
                "limit must be a positive integer (at most {MAX_LIMIT} items are returned per page)"
            ),
        )
    };
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match raw.parse::<u64>() {
        Ok(0) => Err(bad()),
        Ok(n) => Ok(u32::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)),
        // All digits but too long for u64: a very large positive number.
        Err(_) => Ok(MAX_LIMIT),
    }
}

const TOKEN_MAC_LEN: usize = 8;

/// The listing's position (`{uploaded_at}#{image_id}`, the last item of a page), opaque to
/// clients: the position, the page size it was issued for, and a checksum that ties the token
/// to this table's index. A tampered, foreign or garbage token is refused with a clear 400
/// instead of reaching DynamoDB. The checksum is not keyed, so a client could mint a token:
/// all it could do with one is start a listing of public metadata at a time of its choosing,
/// which paging already allows (docs/api.md).
pub fn encode_token(table: &str, position: &str, limit: u32) -> String {
    encode_search_token(&listing_scope(table), "", 0, position, limit)
}

pub fn decode_token(table: &str, token: &str, limit: u32) -> Result<String, TokenError> {
    decode_search_token(&listing_scope(table), "", 0, token, limit)
}

/// What a listing token is bound to: the table's index. A search token is bound to the
/// labels table and a label that is never empty, so neither passes for the other.
fn listing_scope(table: &str) -> String {
    format!("{table}/index/{}", index::LISTING_INDEX)
}

/// Why a `next_token` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this table's API issued.
    Invalid,
    /// Issued for pages of another size.
    OtherLimit(u32),
}

/// `min_confidence`: a whole number of percent from 0 to 100; 0 when absent.
pub fn parse_min_confidence(raw: Option<&str>) -> Result<u8, ApiError> {
    let Some(raw) = raw else { return Ok(0) };
    raw.parse::<u8>()
        .ok()
        .filter(|n| *n <= 100 && raw.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_min_confidence",
                "min_confidence must be a whole number of percent from 0 to 100",
            )
        })
}

fn bad_token(e: TokenError) -> ApiError {
    match e {
        TokenError::Invalid => ApiError::bad_request(
            "invalid_next_token",
            "next_token is not one this API issued for this query; pass the value from the previous page unchanged, with the same label and min_confidence",
        ),
        TokenError::OtherLimit(issued) => ApiError::bad_request(
            "invalid_next_token",
            format!(
                "this next_token was issued for limit={issued}; ask for the next page with the same limit"
            ),
        ),
    }
}

/// The longest label-index position a search token carries: a timestamp, `#`, an image id.
const MAX_POSITION_LEN: usize = 100;

/// A search's position in a label's entries (its sort key), bound like [`encode_token`] to
/// the table, and to the label and `min_confidence` it was issued for.
pub fn encode_search_token(
    table: &str,
    label: &str,
    min_confidence: u8,
    position: &str,
    limit: u32,
) -> String {
    let limit = u8::try_from(limit).unwrap_or(u8::MAX);
    let mut raw = position.as_bytes().to_vec();
    raw.push(limit);
    raw.extend_from_slice(&search_mac(table, label, min_confidence, position, limit));
    URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_search_token(
    table: &str,
    label: &str,
    min_confidence: u8,
    token: &str,
    limit: u32,
) -> Result<String, TokenError> {
    if token.len() > (MAX_POSITION_LEN + 1 + TOKEN_MAC_LEN) * 4 / 3 + 4 {
        return Err(TokenError::Invalid);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::Invalid)?;
    if raw.len() < 2 + TOKEN_MAC_LEN || raw.len() > MAX_POSITION_LEN + 1 + TOKEN_MAC_LEN {
        return Err(TokenError::Invalid);
    }
    let (position, rest) = raw.split_at(raw.len() - 1 - TOKEN_MAC_LEN);
    let (issued, mac) = (rest[0], &rest[1..]);
    let position = std::str::from_utf8(position).map_err(|_| TokenError::Invalid)?;
    if mac != search_mac(table, label, min_confidence, position, issued) {
        return Err(TokenError::Invalid);
    }
    // The position must be an entry's sort key: a timestamp, `#`, an image id.
    let id_ok = position
        .rsplit_once('#')
        .is_some_and(|(_, id)| ImageId::parse(id).is_some());
    if !id_ok {
        return Err(TokenError::Invalid);
    }
    if u32::from(issued) != limit {
        return Err(TokenError::OtherLimit(u32::from(issued)));
    }
    Ok(position.to_string())
}

fn search_mac(
    table: &str,
    label: &str,
    min_confidence: u8,
    position: &str,
    limit: u8,
) -> [u8; TOKEN_MAC_LEN] {
    let digest = Sha256::new()
        .chain_update(b"image-pipeline label search next_token v1\n")
        .chain_update(table.as_bytes())
        .chain_update(b"\n")
        .chain_update(label.as_bytes())
        .chain_update(b"\n")
        .chain_update([min_confidence])
        .chain_update(position.as_bytes())
        .chain_update([limit])
        .finalize();
    let mut mac = [0u8; TOKEN_MAC_LEN];
    mac.copy_from_slice(&digest[..TOKEN_MAC_LEN]);
    mac
}

/// A Query of one partition of the label index.
async fn partition_query(
    ctx: &Ctx,
    owner: &Owner,
    partition: &str,
) -> Result<aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder, ApiError> {
    Ok(ctx
        .users
        .clients(owner)
        .await?
        .query()
        .table_name(&ctx.labels_table)
        .key_condition_expression("#pk = :pk")
        .expression_attribute_names("#pk", index::PARTITION_KEY)
        .expression_attribute_values(":pk", AttributeValue::S(partition.to_string())))
}

/// `GET /metadata?label=cat`: the images with that label (any case), newest first, one
/// Query of the label's partition of the index.
async fn search(
    ctx: &Ctx,
    req: &ApiGatewayV2httpRequest,
    owner: &Owner,
    raw_label: &str,
) -> Result<ApiGatewayV2httpResponse, ApiError> {
    let q = &req.query_string_parameters;
    let limit = parse_limit(q.first("limit"), ctx.default_limit)?;
    let min_confidence = parse_min_confidence(q.first("min_confidence"))?;
    let label = index::normalize(raw_label).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_label",
            format!(
                "label must be 1 to {} characters with no control characters",
                index::MAX_LABEL_CHARS
            ),
        )
    })?;
    // A token is bound to its user's partition: another user's token is refused.
    let scope = format!("{}/{owner}", ctx.labels_table);
    let start = match q.first("next_token") {
        None => None,
        Some(t) => {
            Some(decode_search_token(&scope, &label, min_confidence, t, limit).map_err(bad_token)?)
        }
    };
    let partition = index::label_partition(owner.as_str(), &label);
    let mut query = partition_query(ctx, owner, &partition)
        .await?
        .scan_index_forward(false)
        .limit(i32::try_from(limit).unwrap_or(100));
    if min_confidence > 0 {
        query = query
            .filter_expression("#confidence >= :min")
            .expression_attribute_names("#confidence", index::CONFIDENCE)
            .expression_attribute_values(":min", AttributeValue::N(min_confidence.to_string()));
    }
    if let Some(position) = start {
        query = query
            .exclusive_start_key(index::PARTITION_KEY, AttributeValue::S(partition))
            .exclusive_start_key(index::SORT_KEY, AttributeValue::S(position));
    }
    let out = query.send().await.map_err(|e| {
        tracing::error!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "Query failed");
        ApiError::unavailable("the label index could not be read; try again")
    })?;
    let items = out.items().iter().map(from_item).collect();
    let next_token = out
        .last_evaluated_key()
        .and_then(|k| k.get(index::SORT_KEY))
        .and_then(|v| v.as_s().ok())
        .map(|position| encode_search_token(&scope, &label, min_confidence, position, limit));
    Ok(json_response(200, &Page { items, next_token }))
}

/// `GET /labels`: every label with its count of images at `min_confidence` or above, most
/// frequent first, from the counts partition of the index.
async fn label_counts(
    ctx: &Ctx,
    req: &ApiGatewayV2httpRequest,
    owner: &Owner,
) -> Result<ApiGatewayV2httpResponse, ApiError> {
    let min_confidence = parse_min_confidence(req.query_string_parameters.first("min_confidence"))?;
    let mut labels = Vec::new();
    let mut start = None;
    for _ in 0..MAX_COUNT_PAGES {
        let out = partition_query(ctx, owner, &index::counts_partition(owner.as_str()))
            .await?
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| {
                tracing::error!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "Query failed");
                ApiError::unavailable("the label counts could not be read; try again")
            })?;
        labels.extend(
            out.items()
                .iter()
                .filter_map(|i| count_of(i, min_confidence)),
        );
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    if start.is_some() {
        tracing::warn!(pages = MAX_COUNT_PAGES, "label counts truncated");
    }
    labels.sort_by(|a: &LabelCount, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    Ok(json_response(
        200,
        &LabelCounts {
            labels,
            min_confidence,
        },
    ))
}

/// A count item's images at `min_confidence` or above; `None` when there are none.
fn count_of(item: &HashMap<String, AttributeValue>, min_confidence: u8) -> Option<LabelCount> {
    let name = item.get(index::NAME)?.as_s().ok()?.clone();
    let count: u64 = item
        .iter()
        .filter(|(k, _)| index::count_bucket(k).is_some_and(|b| b >= min_confidence))
        .filter_map(|(_, v)| v.as_n().ok()?.parse::<i64>().ok())
        .sum::<i64>()
        .max(0)
        .unsigned_abs();
    (count > 0).then_some(LabelCount { name, count })
}

async fn list(
    ctx: &Ctx,
    req: &ApiGatewayV2httpRequest,
    owner: &Owner,
) -> Result<ApiGatewayV2httpResponse, ApiError> {
    let q = &req.query_string_parameters;
    let limit = parse_limit(q.first("limit"), ctx.default_limit)?;
    if q.first("min_confidence").is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "min_confidence applies to a search: add label=..., or use GET /labels?min_confidence=",
        ));
    }
    let scope = format!("{}/{owner}", ctx.table);
    let start = match q.first("next_token") {
        None => None,
        Some(t) => Some(decode_token(&scope, t, limit).map_err(bad_token)?),
    };
    let listing = || AttributeValue::S(owner.to_string());
    let mut query = ctx
        .users
        .clients(owner)
        .await?
        .query()
        .table_name(&ctx.table)
        .index_name(index::LISTING_INDEX)
        .key_condition_expression("#owner = :owner")
        .expression_attribute_names("#owner", index::OWNER)
        .expression_attribute_values(":owner", listing())
        // A deleted image's tombstone stays in the index until it expires.
        .filter_expression("#status <> :deleted")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":deleted", AttributeValue::S(index::DELETED.into()))
        .scan_index_forward(false)
        .limit(i32::try_from(limit).unwrap_or(100));
    if let Some(position) = start {
        // The token's position was checked when it was decoded: a timestamp, `#`, an id.
        let (uploaded_at, id) = position.rsplit_once('#').unwrap_or_default();
        query = query
            .exclusive_start_key(index::OWNER, listing())
            .exclusive_start_key(index::UPLOADED_AT, AttributeValue::S(uploaded_at.into()))
            .exclusive_start_key(index::IMAGE_ID, AttributeValue::S(id.into()));
    }
    let out = query.send().await.map_err(|e| {
        tracing::error!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "Query failed");
        ApiError::unavailable("metadata could not be listed; try again")
    })?;
    let items = out.items().iter().map(from_item).collect();
    let next_token = out.last_evaluated_key().and_then(|k| {
        let s = |name: &str| k.get(name).and_then(|v| v.as_s().ok());
        let position = index::entry_sort_key(s(index::UPLOADED_AT)?, s(index::IMAGE_ID)?);
        Some(encode_token(&scope, &position, limit))
    });
    Ok(json_response(200, &Page { items, next_token }))
}

fn from_item(item: &HashMap<String, AttributeValue>) -> ImageMetadata {
    let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let n = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let labels = item
        .get("labels")
        .and_then(|v| v.as_l().ok())
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_m().ok())
                .filter_map(|m| {
                    Some(Label {
                        name: m.get("name")?.as_s().ok()?.clone(),
                        confidence: m
                            .get("confidence")
                            .and_then(|c| c.as_n().ok())
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(0.0),
                        parents: m
                            .get("parents")
                            .and_then(|p| p.as_l().ok())
                            .map(|p| p.iter().filter_map(|x| x.as_s().ok().cloned()).collect())
                            .unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    ImageMetadata {
        image_id: s("image_id").unwrap_or_default(),
        status: s("status").map_or(ImageStatus::Unknown, |v| ImageStatus::parse(&v)),
        labels,
        label_model_version: s("label_model_version"),
        content_type: s("content_type"),
        size_bytes: n("size_bytes"),
        uploaded_at: s("uploaded_at"),
        processed_at: s("processed_at"),
        failure_reason: s("failure_reason").map(|r| FailureReason::parse(&r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None, 20).ok(), Some(20));
        assert_eq!(parse_limit(Some("5"), 20).ok(), Some(5));
        assert_eq!(parse_limit(Some("100"), 20).ok(), Some(100));
        assert_eq!(parse_limit(Some("101"), 20).ok(), Some(100));
        assert_eq!(
            parse_limit(Some("99999999999999999999999"), 20).ok(),
            Some(100)
        );
        for bad in ["0", "-1", "1e9", "abc", "", "1.5", " 5", "+5", "0x10"] {
            assert_eq!(
                parse_limit(Some(bad), 20).map_err(|e| e.code),
                Err("invalid_limit"),
                "{bad}"
            );
        }
    }

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let id = ImageId::new_random();
        let position = index::entry_sort_key("2026-11-30T05:00:00.000Z", &id.to_string());
        let t = encode_token("table-a", &position, 20);
        assert_eq!(decode_token("table-a", &t, 20), Ok(position.clone()));
        assert_eq!(
            decode_token("table-b", &t, 20),
            Err(TokenError::Invalid),
            "foreign table"
        );
        assert_eq!(
            decode_token("table-a", &t, 50),
            Err(TokenError::OtherLimit(20)),
            "bound to its page size"
        );
        assert_eq!(
            decode_search_token("table-a", "cat", 0, &t, 20),
            Err(TokenError::Invalid),
            "a listing token is no search token"
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&t).unwrap();
        bytes[3] ^= 1;
        assert_eq!(
            decode_token("table-a", &URL_SAFE_NO_PAD.encode(&bytes), 20),
            Err(TokenError::Invalid),
            "tampered position"
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&t).unwrap();
        bytes[position.len()] = 50;
        assert_eq!(
            decode_token("table-a", &URL_SAFE_NO_PAD.encode(&bytes), 50),
            Err(TokenError::Invalid),
            "tampered limit"
        );
        let not_a_position = encode_token("table-a", "2026-11-30T05:00:00.000Z", 20);
        for bad in [
            "",
            "x",
            "!!!",
            &"A".repeat(5000),
            &URL_SAFE_NO_PAD.encode(id.to_string()),
            &not_a_position,
        ] {
            assert_eq!(
                decode_token("table-a", bad, 20),
                Err(TokenError::Invalid),
                "{bad}"
            );
        }
    }
}
