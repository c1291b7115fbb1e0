//! The delete function: `DELETE /images/{id}` removes the signed-in user's image, and
//! everything made from it, in an order that a retry can always finish:
//!
//! 1. the item becomes a tombstone (`status` `deleted`, expiring), in one `UpdateItem` that
//!    returns what it replaced. The key names the caller, so another user's id finds no item
//!    and gets 404, exactly as an id never issued. The tombstone answers 404 to every read and
//!    keeps the process function from writing the image back (its final write needs an item
//!    that is absent, `awaiting_upload` or `processing`): a delete racing with processing wins.
//! 2. its label index entries go, and each label's count is taken down in the bucket the entry
//!    was counted in, only when the entry was still there;
//! 3. every version of the original and of the thumbnail goes.
//!
//! Deleting a deleted image does the steps again and answers 204: the delete is idempotent.

use std::collections::{BTreeSet, HashMap};

use api_types::{Route, index};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use handler_shared::scope::{Clients, Reach, UserScope};
use handler_shared::{ApiError, ImageId, Owner, RouteOf, Vars, required_env};
use lambda_runtime::LambdaEvent;

pub const ENV_IMAGES_TABLE: &str = "IMAGES_TABLE";
pub const ENV_LABELS_TABLE: &str = "LABELS_TABLE";
pub const ENV_UPLOAD_BUCKET: &str = "UPLOAD_BUCKET";
pub const ENV_UPLOAD_PREFIX: &str = "UPLOAD_PREFIX";
pub const ENV_THUMBNAIL_PREFIX: &str = "THUMBNAIL_PREFIX";

/// The routes this function serves.
pub const ROUTES: &[Route] = &[Route::DeleteImage];

/// Clients and configuration, built once per cold start.
#[derive(Debug)]
pub struct Ctx {
    /// S3 and DynamoDB as the signed-in user: a session of the function's user role, narrowed
    /// to the user's prefixes and partitions.
    pub users: UserScope<Clients>,
    pub table: String,
    pub labels_table: String,
    pub bucket: String,
    pub prefix: String,
    pub thumbnail_prefix: String,
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
        let labels_table = required_env(vars, ENV_LABELS_TABLE)?;
        let bucket = required_env(vars, ENV_UPLOAD_BUCKET)?;
        let prefix = required_env(vars, ENV_UPLOAD_PREFIX)?;
        let thumbnail_prefix = required_env(vars, ENV_THUMBNAIL_PREFIX)?;
        let reach = Reach::objects_and_items(
            &bucket,
            &[&prefix, &thumbnail_prefix],
            &[&table, &labels_table],
        );
        Ok(Self {
            users: UserScope::from_env(sts, vars, reach, Clients::maker(s3, dynamodb))?,
            table,
            labels_table,
            bucket,
            prefix,
            thumbnail_prefix,
        })
    }
}

pub async fn handler(
    ctx: &Ctx,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
    let req = event.payload;
    let route = RouteOf::of(&req);
    let result = match (route.route(ROUTES), Owner::of_request(&req)) {
        (Some(_), Err(e)) => Err(e),
        (Some(Route::DeleteImage), Ok(owner)) => {
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
                Some(id) => delete(ctx, &owner, &id).await,
            }
        }
        _ => Ok(route.not_routed(ROUTES)),
    };
    Ok(handler_shared::respond(result))
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{what} failed");
    ApiError::unavailable("the image could not be deleted completely; send the DELETE again")
}

async fn delete(
    ctx: &Ctx,
    owner: &Owner,
    id: &ImageId,
) -> Result<ApiGatewayV2httpResponse, ApiError> {
    let c = ctx.users.clients(owner).await?;
    let old = tombstone(ctx, &c, owner, id).await?;
    let entries = unindex(ctx, &c, owner, id, &old).await?;
    let mut versions = 0;
    for key in [
        id.object_key(&ctx.prefix, owner),
        index::thumbnail_key(&ctx.thumbnail_prefix, owner.as_str(), &id.to_string()),
    ] {
        versions += delete_versions(ctx, &c, &key).await?;
    }
    tracing::info!(image_id = %id, owner = %owner, entries, versions, "image deleted");
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = 204;
    Ok(r)
}

/// Turns the caller's item into a tombstone; the item it replaced. No item under the caller's
/// key (never uploaded, another user's, or expired) is 404.
async fn tombstone(
    ctx: &Ctx,
    c: &Clients,
    owner: &Owner,
    id: &ImageId,
) -> Result<HashMap<String, AttributeValue>, ApiError> {
    let expires = chrono::Utc::now().timestamp().max(0).unsigned_abs() + index::TOMBSTONE_SECONDS;
    let result = c
        .dynamodb
        .update_item()
        .table_name(&ctx.table)
        .key(index::OWNER, AttributeValue::S(owner.to_string()))
        .key(index::IMAGE_ID, AttributeValue::S(id.to_string()))
        .update_expression("SET #status = :deleted, expires_at = :expires")
        .condition_expression("attribute_exists(image_id)")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":deleted", AttributeValue::S(index::DELETED.into()))
        .expression_attribute_values(":expires", AttributeValue::N(expires.to_string()))
        .return_values(ReturnValue::AllOld)
        .send()
        .await;
    match result {
        Ok(out) => Ok(out.attributes().cloned().unwrap_or_default()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
        {
            Err(ApiError::not_found(format!(
                "no image {id}: you have no upload with this id"
            )))
        }
        Err(e) => Err(unavailable(
            "UpdateItem (tombstone)",
            aws_sdk_dynamodb::error::DisplayErrorContext(&e),
        )),
    }
}

/// The label keys the process function indexed the item under: each name once, normalized.
pub fn indexed_labels(item: &HashMap<String, AttributeValue>) -> BTreeSet<String> {
    item.get("labels")
        .and_then(|v| v.as_l().ok())
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_m().ok()?.get("name")?.as_s().ok())
        .filter_map(|name| index::normalize(name))
        .collect()
}

/// Removes the item's label entries and counts each one down; how many were there.
async fn unindex(
    ctx: &Ctx,
    c: &Clients,
    owner: &Owner,
    id: &ImageId,
    item: &HashMap<String, AttributeValue>,
) -> Result<usize, ApiError> {
    let Some(uploaded_at) = item.get(index::UPLOADED_AT).and_then(|v| v.as_s().ok()) else {
        return Ok(0);
    };
    let sort_key = index::entry_sort_key(uploaded_at, &id.to_string());
    let mut removed = 0;
    for label in indexed_labels(item) {
        let deleted = c
            .dynamodb
            .delete_item()
            .table_name(&ctx.labels_table)
            .key(
                index::PARTITION_KEY,
                AttributeValue::S(index::label_partition(owner.as_str(), &label)),
            )
            .key(index::SORT_KEY, AttributeValue::S(sort_key.clone()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| {
                unavailable(
                    "DeleteItem (label entry)",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e),
                )
            })?;
        // Counted down only where it was counted, and only once: a retry finds no entry.
        let Some(confidence) = deleted
            .attributes()
            .and_then(|a| a.get(index::CONFIDENCE))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<f64>().ok())
        else {
            continue;
        };
        c.dynamodb
            .update_item()
            .table_name(&ctx.labels_table)
            .key(
                index::PARTITION_KEY,
                AttributeValue::S(index::counts_partition(owner.as_str())),
            )
            .key(index::SORT_KEY, AttributeValue::S(label))
            .update_expression("ADD #count :minus")
            .expression_attribute_names("#count", index::count_attribute(confidence))
            .expression_attribute_values(":minus", AttributeValue::N("-1".into()))
            .send()
            .await
            .map_err(|e| {
                unavailable(
                    "UpdateItem (label count)",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e),
                )
            })?;
        removed += 1;
    }
    Ok(removed)
}

/// Deletes every version and delete marker of exactly `key`; how many.
async fn delete_versions(ctx: &Ctx, c: &Clients, key: &str) -> Result<usize, ApiError> {
    let mut deleted = 0;
    // A versioned bucket empties a key in one round; a few more allow for a concurrent write.
    for _ in 0..5 {
        let page =
            c.s3.list_object_versions()
                .bucket(&ctx.bucket)
                .prefix(key)
                .send()
                .await
                .map_err(|e| {
                    unavailable(
                        "ListObjectVersions",
                        aws_sdk_s3::error::DisplayErrorContext(&e),
                    )
                })?;
        let versions: Vec<Option<String>> = page
            .versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .map(|v| v.version_id().map(str::to_string))
            .chain(
                page.delete_markers()
                    .iter()
                    .filter(|m| m.key() == Some(key))
                    .map(|m| m.version_id().map(str::to_string)),
            )
            .collect();
        if versions.is_empty() {
            return Ok(deleted);
        }
        for v in versions {
            c.s3.delete_object()
                .bucket(&ctx.bucket)
                .key(key)
                // Always a version: `null` names the one written before versioning, and a
                // DELETE without a version would only add a delete marker.
                .set_version_id(v.or_else(|| Some("null".into())))
                .send()
                .await
                .map_err(|e| {
                    unavailable("DeleteObject", aws_sdk_s3::error::DisplayErrorContext(&e))
                })?;
            deleted += 1;
        }
    }
    Err(unavailable(
        "DeleteObject",
        format!("{key} still has versions after five rounds"),
    ))
}
