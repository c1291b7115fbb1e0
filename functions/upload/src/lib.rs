//! The upload function. `POST /upload` takes the raw image as the body, checks what it really
//! is, stores it under `uploads/{owner}/{image_id}` and records it as `processing`; `POST /uploads`
//! records an `awaiting_upload` image and hands out a presigned S3 PUT for images too large to
//! pass through API Gateway and Lambda.
//!
//! Both records are written only where no item for the id exists: the process function may
//! have labeled the image already, and a label is never turned back into `processing`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use api_types::{
    ImageStatus, PresignRequest, PresignedPut, PresignedUpload, Route, Uploaded, index,
};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::http::{HeaderValue, header};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use handler_shared::scope::{Clients, Reach, UserScope};
use handler_shared::{
    ApiError, ImageId, Owner, RouteOf, Vars, echo, env_or, json_response, required_env,
};
use lambda_runtime::LambdaEvent;

use image_check::{Format, REKOGNITION};

/// Lambda's synchronous request payload limit is 6 MB (6,291,456 bytes) for the whole event;
/// the body arrives base64-encoded (4 bytes per 3) inside JSON with headers and context.
/// 4.5 MB of image leaves room for all of that.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = api_types::MAX_DIRECT_UPLOAD_BYTES;
/// Rekognition reads images from S3 up to 15 MB.
pub const MAX_PRESIGNED_BYTES: u64 = image_check::MAX_S3_BYTES;
pub const DEFAULT_PRESIGN_SECONDS: u64 = 300;

pub const ENV_MAX_UPLOAD_BYTES: &str = "MAX_UPLOAD_BYTES";
pub const ENV_PRESIGN_SECONDS: &str = "PRESIGN_EXPIRES_SECONDS";
pub const ENV_UPLOAD_BUCKET: &str = "UPLOAD_BUCKET";
pub const ENV_UPLOAD_PREFIX: &str = "UPLOAD_PREFIX";
pub const ENV_IMAGES_TABLE: &str = "IMAGES_TABLE";
pub const ENV_LABELS_TABLE: &str = "LABELS_TABLE";
pub const ENV_UPLOADS_PER_DAY: &str = "UPLOADS_PER_USER_PER_DAY";
/// The stack's default for [`ENV_UPLOADS_PER_DAY`].
pub const DEFAULT_UPLOADS_PER_DAY: u64 = 1000;
/// How long an `awaiting_upload` item outlives its presigned URL before DynamoDB's time to
/// live removes it (`expires_at`): an image that never arrived stops being listed.
pub const AWAITING_GRACE_SECONDS: u64 = 24 * 3600;
/// The item attribute the table's time to live reads.
pub const EXPIRY_ATTRIBUTE: &str = "expires_at";

const ACCEPTED: &str = "image/jpeg or image/png";

/// Clients and configuration, built once per cold start.
#[derive(Debug)]
pub struct Ctx {
    /// S3 and DynamoDB as the signed-in user: a session of the function's user role, narrowed
    /// to the user's prefix and partitions. A presigned PUT is signed by that session, which
    /// has more than `presign_expires` left (`scope::MIN_REMAINING`).
    pub users: UserScope<Clients>,
    pub table: String,
    /// Where each user's upload count of the day is kept (`{owner}#uploads`).
    pub labels_table: String,
    /// The most images one user may upload per UTC day.
    pub uploads_per_day: u64,
    pub bucket: String,
    pub prefix: String,
    pub max_upload_bytes: usize,
    pub presign_expires: Duration,
}

impl Ctx {
    /// `s3` and `dynamodb` are the function's own clients: each user's are copies of them
    /// with that user's session.
    pub fn from_env(
        sts: aws_sdk_sts::Client,
        s3: aws_sdk_s3::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        vars: Vars,
    ) -> Result<Self, String> {
        let bucket = required_env(vars, ENV_UPLOAD_BUCKET)?;
        let prefix = required_env(vars, ENV_UPLOAD_PREFIX)?;
        let table = required_env(vars, ENV_IMAGES_TABLE)?;
        let labels_table = required_env(vars, ENV_LABELS_TABLE)?;
        let reach = Reach::objects_and_items(&bucket, &[&prefix], &[&table, &labels_table]);
        Ok(Self {
            users: UserScope::from_env(sts, vars, reach, Clients::maker(s3, dynamodb))?,
            table,
            labels_table,
            uploads_per_day: env_or(vars, ENV_UPLOADS_PER_DAY, DEFAULT_UPLOADS_PER_DAY)?,
            bucket,
            prefix,
            max_upload_bytes: env_or(vars, ENV_MAX_UPLOAD_BYTES, DEFAULT_MAX_UPLOAD_BYTES)?,
            presign_expires: Duration::from_secs(env_or(
                vars,
                ENV_PRESIGN_SECONDS,
                DEFAULT_PRESIGN_SECONDS,
            )?),
        })
    }
}

/// The routes this function serves.
pub const ROUTES: &[Route] = &[Route::Upload, Route::PresignUpload];

/// A note compiled in from `IMAGE_PIPELINE_UPLOAD_BUILD_NOTE` at build time and logged with
/// every stored image: it tells apart two builds of the same source, so a change of exactly
/// this function's code can be made (and deployed) without editing a file.
const BUILD_NOTE: Option<&str> = option_env!("IMAGE_PIPELINE_UPLOAD_BUILD_NOTE");

pub async fn handler(
    ctx: &Ctx,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
    let req = event.payload;
    let route = RouteOf::of(&req);
    let result = match (route.route(ROUTES), Owner::of_request(&req)) {
        (Some(_), Err(e)) => Err(e),
        (Some(Route::Upload), Ok(owner)) => upload(ctx, &req, &owner).await,
        (Some(Route::PresignUpload), Ok(owner)) => presign(ctx, &req, &owner).await,
        _ => Ok(route.not_routed(ROUTES)),
    };
    Ok(handler_shared::respond(result))
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        413,
        "payload_too_large",
        format!(
            "the image is larger than {max} bytes, the most this route can carry; for images up to {MAX_PRESIGNED_BYTES} bytes request a presigned upload with POST /uploads"
        ),
    )
}

/// The request body as bytes, decoding base64 when API Gateway encoded it.
fn body_bytes(req: &ApiGatewayV2httpRequest, max: usize) -> Result<Cow<'_, [u8]>, ApiError> {
    let body = req.body.as_deref().unwrap_or("");
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the request body is empty; send the image bytes as the body",
        ));
    }
    if !req.is_base64_encoded {
        return Ok(Cow::Borrowed(body.as_bytes()));
    }
    // Refuse before decoding: base64 is 4 characters for every 3 bytes.
    if body.len() > max.div_ceil(3) * 4 + 4 {
        return Err(too_large(max));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map(Cow::Owned)
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_base64",
                format!("the body is not valid base64: {e}"),
            )
        })
}

async fn upload(
    ctx: &Ctx,
    req: &ApiGatewayV2httpRequest,
    owner: &Owner,
) -> Result<ApiGatewayV2httpResponse, ApiError> {
    let bytes = body_bytes(req, ctx.max_upload_bytes)?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the decoded body is empty",
        ));
    }
    if bytes.len() > ctx.max_upload_bytes {
        return Err(too_large(ctx.max_upload_bytes));
    }
    // The whole image is decoded: only what Rekognition would take is stored.
    let kind = match image_check::check(&bytes, &REKOGNITION) {
        Ok(image) => image.format,
        Err(rejection) => {
            let (status, code) = (rejection.status(), rejection.code());
            tracing::info!(code, reason = %rejection, "upload refused");
            let message = match rejection {
                image_check::Rejection::NotAnImage => {
                    format!("the body is not an accepted image type; send {ACCEPTED}")
                }
                other => other.to_string(),
            };
            return Err(ApiError::new(status, code, message));
        }
    };
    let claimed = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if Format::from_mime(claimed) != Some(kind) {
        tracing::info!(
            claimed,
            detected = kind.mime(),
            "content-type header ignored: the bytes decide"
        );
    }
    let c = &ctx.users.clients(owner).await?;
    let quota = take_quota(ctx, c, owner).await?;
    let id = ImageId::new_random();
    let size = bytes.len() as u64;
    let stored = c.s3
        .put_object()
        .bucket(&ctx.bucket)
        .key(id.object_key(&ctx.prefix, owner))
        .content_type(kind.mime())
        .body(ByteStream::from(bytes.into_owned()))
        .send()
        .await
        .map_err(|e| {
            tracing::error!(error = %aws_sdk_s3::error::DisplayErrorContext(&e), "PutObject failed");
            ApiError::unavailable("the image could not be stored; try again")
        });
    if stored.is_err() {
        give_back(ctx, c, owner, &quota).await;
    }
    stored?;
    // The image is stored and its event on the way: a failure to record it early loses nothing
    // (the process function writes the item either way), so it is logged, not answered 503,
    // which would make the client upload the image a second time.
    let accepted = Accepted {
        owner,
        id: &id,
        status: ImageStatus::Processing,
        content_type: kind.mime(),
        size_bytes: size,
        expires_at: None,
    };
    if let Err(e) = record(ctx, c, &accepted).await {
        tracing::warn!(image_id = %id, error = %e, "the image is stored but not yet listed as processing: it appears once labeled");
    }
    // API Gateway's id of the request, which its access log carries: `trace` joins the two.
    let api_request_id = req.request_context.request_id.as_deref().unwrap_or("");
    match BUILD_NOTE {
        Some(note) => {
            tracing::info!(image_id = %id, api_request_id, content_type = kind.mime(), size_bytes = size, build_note = note, "image stored")
        }
        None => {
            tracing::info!(image_id = %id, api_request_id, content_type = kind.mime(), size_bytes = size, "image stored")
        }
    }
    let mut resp = json_response(
        201,
        &Uploaded {
            image_id: id.to_string(),
            status: ImageStatus::Processing,
            content_type: kind.mime().into(),
            size_bytes: size,
        },
    );
    set_location(&mut resp, &id);
    Ok(resp)
}

fn set_location(resp: &mut ApiGatewayV2httpResponse, id: &ImageId) {
    if let Ok(v) = HeaderValue::from_str(&format!("/metadata/{id}")) {
        resp.headers.insert(header::LOCATION, v);
    }
}

/// What a presign request asks for: an accepted type and a size S3 and Rekognition take.
fn presign_request(req: &ApiGatewayV2httpRequest) -> Result<(Format, u64, i64), ApiError> {
    // A JSON body is small; 64 KiB is far more than a valid request needs.
    let bytes = body_bytes(req, 64 * 1024)?;
    let ask: PresignRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "expected {{\"content_type\": \"image/jpeg\", \"size_bytes\": 123}}: {}",
                echo(&e.to_string())
            ),
        )
    })?;
    let kind = Format::from_mime(&ask.content_type).ok_or_else(|| {
        ApiError::new(
            415,
            "unsupported_media_type",
            format!(
                "content_type `{}` is not accepted; use {ACCEPTED}",
                echo(&ask.content_type)
            ),
        )
    })?;
    let size = u64::try_from(ask.size_bytes)
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| {
            ApiError::bad_request("invalid_size", "size_bytes must be a positive integer")
        })?;
    if size > MAX_PRESIGNED_BYTES {
        return Err(ApiError::new(
            413,
            "payload_too_large",
            format!(
                "size_bytes is above {MAX_PRESIGNED_BYTES}, the largest image Rekognition reads from S3"
            ),
        ));
    }
    Ok((kind, size, ask.size_bytes))
}

async fn presign(
    ctx: &Ctx,
    req: &ApiGatewayV2httpRequest,
    owner: &Owner,
) -> Result<ApiGatewayV2httpResponse, ApiError> {
    let (kind, size, size_bytes) = presign_request(req)?;
    // A presigned URL promises an upload: it counts when it is handed out.
    let c = &ctx.users.clients(owner).await?;
    let quota = take_quota(ctx, c, owner).await?;
    let issued = presign_and_record(ctx, c, owner, (kind, size, size_bytes)).await;
    if issued.is_err() {
        give_back(ctx, c, owner, &quota).await;
    }
    let (id, presigned) = issued?;
    let api_request_id = req.request_context.request_id.as_deref().unwrap_or("");
    tracing::info!(image_id = %id, api_request_id, content_type = kind.mime(), size_bytes = size, "presigned upload issued");
    let headers = presigned
        .headers()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let mut resp = json_response(
        201,
        &PresignedUpload {
            image_id: id.to_string(),
            status: ImageStatus::AwaitingUpload,
            upload: PresignedPut {
                method: "PUT".into(),
                url: presigned.uri().to_string(),
                headers,
                expires_in_seconds: ctx.presign_expires.as_secs(),
            },
        },
    );
    set_location(&mut resp, &id);
    Ok(resp)
}

/// A presigned PUT for a new id, recorded as `awaiting_upload` before it is handed out.
async fn presign_and_record(
    ctx: &Ctx,
    c: &Clients,
    owner: &Owner,
    (kind, size, size_bytes): (Format, u64, i64),
) -> Result<(ImageId, PresignedRequest), ApiError> {
    let id = ImageId::new_random();
    let config = PresigningConfig::expires_in(ctx.presign_expires).map_err(|e| {
        tracing::error!(error = %e, "invalid presigning configuration");
        ApiError::unavailable("presigned uploads are misconfigured")
    })?;
    // Content type, length and `If-None-Match: *` are request headers of the signed PUT: S3
    // refuses any other type or length, and a second PUT to the same URL (the object exists by
    // then) answers 412 instead of overwriting.
    let presigned = c
        .s3
        .put_object()
        .bucket(&ctx.bucket)
        .key(id.object_key(&ctx.prefix, owner))
        .content_type(kind.mime())
        .content_length(size_bytes)
        .if_none_match("*")
        .presigned(config)
        .await
        .map_err(|e| {
            tracing::error!(error = %aws_sdk_s3::error::DisplayErrorContext(&e), "presigning failed");
            ApiError::unavailable("a presigned upload could not be created; try again")
        })?;
    // Recorded before the URL is handed out, so the id answers 200 from the start; if that
    // fails, the client gets a 503 and nothing was promised.
    let expires_at = chrono::Utc::now().timestamp().max(0).unsigned_abs()
        + ctx.presign_expires.as_secs()
        + AWAITING_GRACE_SECONDS;
    let accepted = Accepted {
        owner,
        id: &id,
        status: ImageStatus::AwaitingUpload,
        content_type: kind.mime(),
        size_bytes: size,
        expires_at: Some(expires_at),
    };
    record(ctx, c, &accepted).await.map_err(|e| {
        tracing::error!(image_id = %id, error = %e, "recording the presigned upload failed");
        ApiError::unavailable("a presigned upload could not be created; try again")
    })?;
    Ok((id, presigned))
}

/// The UTC day an upload counts against: its count item's sort key, the seconds until the
/// next day begins (a refused client's `Retry-After`), and when the count may expire (a day
/// after its own day ends).
pub fn quota_day(now: chrono::DateTime<chrono::Utc>) -> (String, u64, u64) {
    let day = now.date_naive();
    let next = day
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(now.timestamp() + 86_400, |t| t.and_utc().timestamp());
    let retry_after = (next - now.timestamp()).clamp(1, 86_400).unsigned_abs();
    let expires_at = (next + 86_400).max(0).unsigned_abs();
    (day.format("%Y-%m-%d").to_string(), retry_after, expires_at)
}

/// One upload counted against the owner's day, to give back if nothing comes of it.
struct Counted {
    day: String,
}

/// An update of the owner's upload count of `day`.
fn day_count(
    ctx: &Ctx,
    c: &Clients,
    owner: &Owner,
    day: &str,
) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
    c.dynamodb
        .update_item()
        .table_name(&ctx.labels_table)
        .key(
            index::PARTITION_KEY,
            AttributeValue::S(index::uploads_partition(owner.as_str())),
        )
        .key(index::SORT_KEY, AttributeValue::S(day.to_string()))
}

/// Counts one upload against the owner's quota for the UTC day. A conditional `ADD` is atomic:
/// however many uploads race for the last unit, at most the quota's worth succeed. Over it: 429
/// with `Retry-After` (the start of the next UTC day), before anything is stored.
async fn take_quota(ctx: &Ctx, c: &Clients, owner: &Owner) -> Result<Counted, ApiError> {
    let (day, retry_after, expires_at) = quota_day(chrono::Utc::now());
    let result = day_count(ctx, c, owner, &day)
        .update_expression("ADD #n :one SET #exp = if_not_exists(#exp, :exp)")
        .condition_expression("attribute_not_exists(#n) OR #n < :limit")
        .expression_attribute_names("#n", index::UPLOADS)
        .expression_attribute_names("#exp", EXPIRY_ATTRIBUTE)
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .expression_attribute_values(":limit", AttributeValue::N(ctx.uploads_per_day.to_string()))
        .expression_attribute_values(":exp", AttributeValue::N(expires_at.to_string()))
        .send()
        .await;
    match result {
        Ok(_) => Ok(Counted { day }),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
        {
            let limit = ctx.uploads_per_day;
            Err(ApiError::new(
                429,
                "upload_quota_exceeded",
                format!(
                    "you have uploaded {limit} images today (UTC), the most this stage accepts from one user in a day; try again after midnight UTC"
                ),
            )
            .retry_after(retry_after))
        }
        Err(e) => {
            tracing::error!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "counting the upload failed");
            Err(ApiError::unavailable(
                "the upload could not be counted against your daily quota; try again",
            ))
        }
    }
}

/// Gives back an upload that was counted but not stored or handed out. Best effort: a failure
/// here costs the user one upload of their day, and is logged.
async fn give_back(ctx: &Ctx, c: &Clients, owner: &Owner, counted: &Counted) {
    let result = day_count(ctx, c, owner, &counted.day)
        .update_expression("ADD #n :minus_one")
        .condition_expression("#n > :zero")
        .expression_attribute_names("#n", index::UPLOADS)
        .expression_attribute_values(":minus_one", AttributeValue::N("-1".into()))
        .expression_attribute_values(":zero", AttributeValue::N("0".into()))
        .send()
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "an upload that failed still counts against the user's day");
    }
}

/// An image as the upload function knows it when it accepts it.
struct Accepted<'a> {
    owner: &'a Owner,
    id: &'a ImageId,
    status: ImageStatus,
    content_type: &'a str,
    size_bytes: u64,
    /// Epoch seconds after which DynamoDB's time to live may delete the item.
    expires_at: Option<u64>,
}

impl Accepted<'_> {
    fn attributes(&self) -> HashMap<String, AttributeValue> {
        let s = |v: &str| AttributeValue::S(v.to_string());
        let mut m = HashMap::from([
            (index::OWNER.to_string(), s(self.owner.as_str())),
            (index::IMAGE_ID.to_string(), s(&self.id.to_string())),
            ("status".to_string(), s(self.status.as_str())),
            ("content_type".to_string(), s(self.content_type)),
            (
                "size_bytes".to_string(),
                AttributeValue::N(self.size_bytes.to_string()),
            ),
            (
                index::UPLOADED_AT.to_string(),
                s(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            ),
        ]);
        if let Some(t) = self.expires_at {
            m.insert(
                EXPIRY_ATTRIBUTE.to_string(),
                AttributeValue::N(t.to_string()),
            );
        }
        m
    }
}

/// Writes the accepted image's item unless one exists: an existing item is further along
/// (the process function got there first) and is left as it is.
async fn record(ctx: &Ctx, c: &Clients, accepted: &Accepted<'_>) -> Result<(), String> {
    let result = c
        .dynamodb
        .put_item()
        .table_name(&ctx.table)
        .set_item(Some(accepted.attributes()))
        .condition_expression("attribute_not_exists(image_id)")
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
        {
            tracing::info!(image_id = %accepted.id, "already recorded further along; left as it is");
            Ok(())
        }
        Err(e) => Err(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string()),
    }
}
