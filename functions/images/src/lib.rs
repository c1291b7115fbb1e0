//! The images function: `GET /images/{id}` serves a labeled image and
//! `GET /images/{id}/thumbnail` a JPEG of at most [`THUMBNAIL_MAX_SIDE`] pixels a side, made
//! on the first request and cached under its own prefix.
//!
//! It reads only what it must: the item's status, type and size (a projection), the original
//! under `uploads/`, and the thumbnails under `thumbnails/`, where it also writes. Only
//! `labeled` images are served: those are the uploads the pipeline has checked to be a JPEG
//! or PNG, so no other bytes (a PDF PUT through a presigned URL) leave through this API. An
//! original too large for Lambda's 6 MB response is answered with a short-lived redirect to a
//! presigned GET (docs/api.md).

use std::io::Cursor;
use std::time::Duration;

use api_types::{ImageStatus, Route};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, header};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use handler_shared::scope::{Clients, Reach, UserScope};
use handler_shared::{ApiError, ImageId, Owner, RouteOf, Vars, env_or, required_env};
use lambda_runtime::LambdaEvent;

pub const ENV_IMAGES_TABLE: &str = "IMAGES_TABLE";
pub const ENV_UPLOAD_BUCKET: &str = "UPLOAD_BUCKET";
pub const ENV_UPLOAD_PREFIX: &str = "UPLOAD_PREFIX";
pub const ENV_THUMBNAIL_PREFIX: &str = "THUMBNAIL_PREFIX";
pub const ENV_REDIRECT_SECONDS: &str = "IMAGE_REDIRECT_SECONDS";
/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_MAX_SIDE: u32 = 320;
/// JPEG quality of a thumbnail.
pub const THUMBNAIL_QUALITY: u8 = 80;
/// The largest original served through Lambda: its base64 (4 bytes per 3) and the headers
/// stay under the 6 MB (6,291,456 bytes) a synchronous response may carry.
pub const MAX_INLINE_BYTES: u64 = 4_500_000;
/// How long the redirect to a larger original is valid.
pub const DEFAULT_REDIRECT_SECONDS: u64 = 60;
/// A served image never changes (its id names one upload), but it is its owner's alone: a
/// browser may keep it, a shared cache never.
pub const CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

/// The routes this function serves.
pub const ROUTES: &[Route] = &[Route::GetImage, Route::GetThumbnail];

#[derive(Debug)]
pub struct Ctx {
    /// S3 and DynamoDB as the signed-in user: a session of the function's user role, narrowed
    /// to the user's prefixes and partitions.
    pub users: UserScope<Clients>,
    pub table: String,
    pub bucket: String,
    pub prefix: String,
    pub thumbnail_prefix: String,
    pub redirect_expires: Duration,
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
        let table = required_env(vars, ENV_IMAGES_TABLE)?;
        let bucket = required_env(vars, ENV_UPLOAD_BUCKET)?;
        let prefix = required_env(vars, ENV_UPLOAD_PREFIX)?;
        let thumbnail_prefix = required_env(vars, ENV_THUMBNAIL_PREFIX)?;
        let reach = Reach::objects_and_items(&bucket, &[&prefix, &thumbnail_prefix], &[&table]);
        Ok(Self {
            users: UserScope::from_env(sts, vars, reach, Clients::maker(s3, dynamodb))?,
            table,
            bucket,
            prefix,
            thumbnail_prefix,
            redirect_expires: Duration::from_secs(env_or(
                vars,
                ENV_REDIRECT_SECONDS,
                DEFAULT_REDIRECT_SECONDS,
            )?),
        })
    }

    /// `thumbnails/{owner}/{id}.jpg`.
    pub fn thumbnail_key(&self, owner: &Owner, id: &ImageId) -> String {
        api_types::index::thumbnail_key(&self.thumbnail_prefix, owner.as_str(), &id.to_string())
    }
}

pub async fn handler(
    ctx: &Ctx,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
    let req = event.payload;
    let route = RouteOf::of(&req);
    let served = route.route(ROUTES);
    let result = match (served, Owner::of_request(&req)) {
        (Some(_), Err(e)) => Err(e),
        (Some(r @ (Route::GetImage | Route::GetThumbnail)), Ok(owner)) => {
            // API Gateway passes `{id}`; a direct invocation has only the path.
            let from_path = route.path.split('/').nth(2).unwrap_or_default();
            let raw = req
                .path_parameters
                .get("id")
                .map_or(from_path, String::as_str);
            match ImageId::parse(raw) {
                None => Err(ApiError::bad_request(
                    "invalid_id",
                    "an image id is the UUID returned by POST /upload (36 characters, lowercase)",
                )),
                Some(id) => match ctx.users.clients(&owner).await {
                    Err(e) => Err(e),
                    Ok(c) if r == Route::GetImage => original(ctx, &c, &owner, &id).await,
                    Ok(c) => thumbnail(ctx, &c, &owner, &id).await,
                },
            }
        }
        _ => Ok(route.not_routed(ROUTES)),
    };
    Ok(handler_shared::respond(result))
}

/// What the item says about the stored image.
struct Stored {
    content_type: String,
    size_bytes: u64,
}

/// The item's status, type and size (nothing else is read); an image that is not `labeled`
/// is not served.
async fn labeled(ctx: &Ctx, c: &Clients, owner: &Owner, id: &ImageId) -> Result<Stored, ApiError> {
    let out = c
        .dynamodb
        .get_item()
        .table_name(&ctx.table)
        .key(api_types::index::OWNER, AttributeValue::S(owner.to_string()))
        .key(api_types::index::IMAGE_ID, AttributeValue::S(id.to_string()))
        .projection_expression("#status, content_type, size_bytes")
        .expression_attribute_names("#status", "status")
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| {
            tracing::error!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "GetItem failed");
            ApiError::unavailable("the image could not be looked up; try again")
        })?;
    let item = out.item().ok_or_else(|| {
        ApiError::not_found(format!("no image {id}: you have no upload with this id"))
    })?;
    let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok());
    if s("status").map(String::as_str) == Some(api_types::index::DELETED) {
        return Err(ApiError::not_found(format!("image {id} was deleted")));
    }
    let status = s("status").map_or(ImageStatus::Unknown, |v| ImageStatus::parse(v));
    if status != ImageStatus::Labeled {
        return Err(ApiError::new(
            409,
            "not_labeled",
            format!(
                "image {id} is {}: only labeled images are served",
                status.as_str()
            ),
        ));
    }
    Ok(Stored {
        content_type: s("content_type").cloned().unwrap_or_default(),
        size_bytes: item
            .get("size_bytes")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    })
}

/// An image's bytes, as a binary response its owner's browser may cache.
fn binary(content_type: &str, bytes: Vec<u8>) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = 200;
    r.headers = headers;
    r.body = Some(Body::Binary(bytes));
    r.is_base64_encoded = true;
    r
}

/// Reads an object whole: `Ok(None)` when there is no such key.
async fn read(ctx: &Ctx, c: &Clients, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let got = c.s3.get_object().bucket(&ctx.bucket).key(key).send().await;
    let out = match got {
        Ok(out) => out,
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
            return Ok(None);
        }
        Err(e) => {
            tracing::error!(key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "GetObject failed");
            return Err(ApiError::unavailable(
                "the image could not be read; try again",
            ));
        }
    };
    let body = out.body.collect().await.map_err(|e| {
        tracing::error!(key, error = %e, "reading an object failed");
        ApiError::unavailable("the image could not be read; try again")
    })?;
    Ok(Some(body.to_vec()))
}

fn gone(id: &ImageId) -> ApiError {
    ApiError::not_found(format!("image {id} is no longer stored"))
}

async fn original(
    ctx: &Ctx,
    c: &Clients,
    owner: &Owner,
    id: &ImageId,
) -> Result<ApiGatewayV2httpResponse, ApiError> {
    let stored = labeled(ctx, c, owner, id).await?;
    let key = id.object_key(&ctx.prefix, owner);
    if stored.size_bytes > MAX_INLINE_BYTES {
        return redirect(ctx, c, id, &key).await;
    }
    let bytes = read(ctx, c, &key).await?.ok_or_else(|| gone(id))?;
    Ok(binary(&stored.content_type, bytes))
}

/// A 302 to a presigned GET of the original, valid for `redirect_expires`: the exception to
/// "no S3 URL in a response", for originals Lambda cannot carry. It is signed by the user's
/// session, which has more than that left (`scope::MIN_REMAINING`).
async fn redirect(
    ctx: &Ctx,
    c: &Clients,
    id: &ImageId,
    key: &str,
) -> Result<ApiGatewayV2httpResponse, ApiError> {
    let config = PresigningConfig::expires_in(ctx.redirect_expires).map_err(|e| {
        tracing::error!(error = %e, "invalid presigning configuration");
        ApiError::unavailable("large images are misconfigured")
    })?;
    let presigned = c
        .s3
        .get_object()
        .bucket(&ctx.bucket)
        .key(key)
        .presigned(config)
        .await
        .map_err(|e| {
            tracing::error!(error = %aws_sdk_s3::error::DisplayErrorContext(&e), "presigning failed");
            ApiError::unavailable("the image could not be served; try again")
        })?;
    tracing::info!(image_id = %id, "large original: redirected to a presigned GET");
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = 302;
    if let Ok(v) = HeaderValue::from_str(presigned.uri()) {
        r.headers.insert(header::LOCATION, v);
    }
    r.headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

async fn thumbnail(
    ctx: &Ctx,
    c: &Clients,
    owner: &Owner,
    id: &ImageId,
) -> Result<ApiGatewayV2httpResponse, ApiError> {
    labeled(ctx, c, owner, id).await?;
    let key = ctx.thumbnail_key(owner, id);
    if let Some(cached) = read(ctx, c, &key).await? {
        return Ok(binary("image/jpeg", cached));
    }
    let original = read(ctx, c, &id.object_key(&ctx.prefix, owner))
        .await?
        .ok_or_else(|| gone(id))?;
    let jpeg = make_thumbnail(&original).map_err(|e| {
        tracing::error!(image_id = %id, error = %e, "a labeled image did not decode");
        ApiError::new(
            500,
            "thumbnail_failed",
            "the thumbnail could not be made from the stored image",
        )
    })?;
    c.s3
        .put_object()
        .bucket(&ctx.bucket)
        .key(&key)
        .content_type("image/jpeg")
        .body(ByteStream::from(jpeg.clone()))
        .send()
        .await
        .map_err(|e| {
            // Served anyway; the next request tries to cache it again.
            tracing::warn!(image_id = %id, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "caching the thumbnail failed");
        })
        .ok();
    tracing::info!(image_id = %id, bytes = jpeg.len(), "thumbnail made and cached");
    Ok(binary("image/jpeg", jpeg))
}

/// A JPEG of at most [`THUMBNAIL_MAX_SIDE`] pixels a side, the aspect ratio kept. Decoding is
/// bounded: at most 10,000 pixels a side and 512 MiB.
pub fn make_thumbnail(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(10_000);
    limits.max_image_height = Some(10_000);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| e.to_string())?;
    let small = img
        .thumbnail(THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE)
        .to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, THUMBNAIL_QUALITY)
        .encode_image(&small)
        .map_err(|e| e.to_string())?;
    Ok(out)
}
