//! The process function: for each S3 `ObjectCreated` record under `uploads/`, read the
//! object's first bytes (a ranged GET) to learn what it really is, ask Rekognition
//! `DetectLabels` about it and record the result in DynamoDB, exactly once per image.
//!
//! Objects arrive here unchecked when a client PUTs to a presigned URL. One that is not an
//! image Rekognition takes becomes a `failed` item with the reason, and its version is tagged
//! so that the bucket's lifecycle expires it.
//!
//! A labeled image is indexed in the same transaction as its item: an entry under each label
//! in the labels table, and each label's count (docs/data-model.md).
//!
//! Statuses only move forward: the final item replaces an `awaiting_upload` or `processing`
//! one (written by the upload function) and nothing else, so a duplicate or late event never
//! turns a `labeled` image back.
//!
//! Failure policy: what the image itself causes (not an image, too large, unreadable) becomes a
//! `failed` item and is not retried; what the services cause (throttling, 5xx, an outage) is
//! returned as an error, and [`queue`] holds the work queue's record back and tries it again
//! later, for hours. Every record of an event is attempted either way.
//!
//! The events arrive through the work queue ([`queue::handler`]), and every DetectLabels call
//! waits for its turn on the stage's pace ([`pace::Pace`]).

pub mod pace;
pub mod queue;

use std::collections::HashMap;

use api_types::{FailureReason, ImageStatus, index};
use aws_lambda_events::s3::{S3Event, S3EventRecord};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_sdk_rekognition::operation::detect_labels::DetectLabelsError;
use aws_sdk_rekognition::types::{Image, S3Object};
use aws_sdk_s3::types::{Tag, Tagging};
use chrono::{DateTime, SecondsFormat, Utc};
use handler_shared::scope::{Reach, UserScope};
use handler_shared::{ImageId, Owner, Vars, env_or, required_env};
use image_check::{MAX_S3_BYTES, REKOGNITION, Rejection};

use serde::Serialize;

pub const ENV_IMAGES_TABLE: &str = "IMAGES_TABLE";
pub const ENV_LABELS_TABLE: &str = "LABELS_TABLE";
/// The most labels asked for: the item, an entry and a count per label must fit in one
/// transaction of at most 100 writes.
pub const MAX_LABELS: i32 = 49;
pub const ENV_UPLOAD_BUCKET: &str = "UPLOAD_BUCKET";
pub const ENV_UPLOAD_PREFIX: &str = "UPLOAD_PREFIX";
/// `key=value`: the tag put on a rejected upload's version.
pub const ENV_REJECTED_TAG: &str = "REJECTED_TAG";
pub const ENV_MAX_LABELS: &str = "MAX_LABELS";
pub const ENV_MIN_CONFIDENCE: &str = "MIN_CONFIDENCE";
pub const DEFAULT_MAX_LABELS: i32 = 10;
/// Rekognition's own default: labels are stored from here, and readers ask for more
/// confidence with the API's `min_confidence`.
pub const DEFAULT_MIN_CONFIDENCE: f32 = api_types::DEFAULT_MIN_CONFIDENCE as f32;
/// How much of an object the function reads itself: enough for the signature and, in nearly
/// every file, the header with the dimensions.
pub const SNIFF_BYTES: u64 = 64 * 1024;

/// One owner's S3, Rekognition and DynamoDB: copies of the function's own clients that sign
/// with that owner's session. Rekognition reads an `S3Object` with its caller's permissions,
/// so the labels too are asked for as the owner.
#[derive(Debug, Clone)]
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub rekognition: aws_sdk_rekognition::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

#[derive(Debug)]
pub struct Ctx {
    /// The clients of each image's owner: a session of the function's user role, narrowed to
    /// the owner's prefix and partitions.
    pub users: UserScope<Clients>,
    pub table: String,
    pub labels_table: String,
    /// The uploads bucket: records naming any other bucket are skipped.
    pub bucket: String,
    pub prefix: String,
    /// (key, value) of the tag a rejected upload's version gets.
    pub rejected_tag: (String, String),
    pub max_labels: i32,
    pub min_confidence: f32,
    /// When each DetectLabels call may start.
    pub pace: pace::Pace,
    /// The work queue, where a record to try later is held back.
    pub work_queue: queue::WorkQueue,
}

impl Ctx {
    /// `s3`, `rekognition` and `dynamodb` are the function's own clients: each owner's are
    /// copies of them with that owner's session. `sqs` holds records back in the work queue.
    pub fn from_env(clients: OwnClients, vars: Vars) -> Result<Self, String> {
        let OwnClients {
            sts,
            s3,
            rekognition,
            dynamodb,
            sqs,
        } = clients;
        let pace = pace::Pace::from_env(vars)?;
        let work_queue = queue::WorkQueue::from_env(sqs, vars)?;
        let max_labels = env_or(vars, ENV_MAX_LABELS, DEFAULT_MAX_LABELS)?;
        let min_confidence = env_or(vars, ENV_MIN_CONFIDENCE, DEFAULT_MIN_CONFIDENCE)?;
        if !(1..=MAX_LABELS).contains(&max_labels) {
            return Err(format!(
                "{ENV_MAX_LABELS} must be between 1 and {MAX_LABELS}: each label is indexed in the transaction that writes the item, which holds at most 100 writes"
            ));
        }
        if !(0.0..=100.0).contains(&min_confidence) {
            return Err(format!("{ENV_MIN_CONFIDENCE} must be between 0 and 100"));
        }
        let tag = required_env(vars, ENV_REJECTED_TAG)?;
        let rejected_tag = tag
            .split_once('=')
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .ok_or_else(|| format!("{ENV_REJECTED_TAG} must be key=value, not `{tag}`"))?;
        let table = required_env(vars, ENV_IMAGES_TABLE)?;
        let labels_table = required_env(vars, ENV_LABELS_TABLE)?;
        let bucket = required_env(vars, ENV_UPLOAD_BUCKET)?;
        let prefix = required_env(vars, ENV_UPLOAD_PREFIX)?;
        let reach = Reach {
            detect_labels: true,
            ..Reach::objects_and_items(&bucket, &[&prefix], &[&table, &labels_table])
        };
        let maker = handler_shared::scope::Clients::maker(s3, dynamodb);
        let users = UserScope::from_env(sts, vars, reach, move |creds| {
            let both = maker(creds.clone());
            Clients {
                s3: both.s3,
                rekognition: aws_sdk_rekognition::Client::from_conf(
                    rekognition
                        .config()
                        .to_builder()
                        .credentials_provider(creds)
                        .build(),
                ),
                dynamodb: both.dynamodb,
            }
        })?;
        Ok(Self {
            users,
            table,
            labels_table,
            bucket,
            prefix,
            rejected_tag,
            max_labels,
            min_confidence,
            pace,
            work_queue,
        })
    }
}

/// The function's own clients, as the runtime builds them.
#[derive(Debug, Clone)]
pub struct OwnClients {
    pub sts: aws_sdk_sts::Client,
    pub s3: aws_sdk_s3::Client,
    /// Without retries of its own: a call the SDK repeated would start off the pace, so a
    /// throttled or failed call goes back to the queue instead.
    pub rekognition: aws_sdk_rekognition::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
}

/// What happened to the records of one event (returned as the invocation's result).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub labeled: usize,
    pub failed: usize,
    pub duplicates: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Written(Status),
    Duplicate,
    Skipped(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Labeled,
    Failed,
}

/// A failure worth retrying: the whole event is handed back to Lambda.
#[derive(Debug)]
pub struct RetryableError(pub String);

impl std::fmt::Display for RetryableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RetryableError {}

/// Every record of one S3 event: what became of them, or the records to try again later.
pub async fn process_event(ctx: &Ctx, event: &S3Event) -> Result<Summary, RetryableError> {
    let mut summary = Summary::default();
    let mut errors = Vec::new();
    for record in &event.records {
        match process_record(ctx, record).await {
            Ok(Outcome::Written(Status::Labeled)) => summary.labeled += 1,
            Ok(Outcome::Written(Status::Failed)) => summary.failed += 1,
            Ok(Outcome::Duplicate) => summary.duplicates += 1,
            Ok(Outcome::Skipped(why)) => {
                tracing::info!(key = record.s3.object.key.as_deref().unwrap_or(""), reason = %why, "record skipped");
                summary.skipped += 1;
            }
            Err(e) => {
                tracing::warn!(key = record.s3.object.key.as_deref().unwrap_or(""), error = %e, "record failed; the event will be tried again");
                errors.push(e.0);
            }
        }
    }
    tracing::info!(?summary, retryable = errors.len(), "event processed");
    if errors.is_empty() {
        Ok(summary)
    } else {
        Err(RetryableError(format!(
            "{} of {} records failed and will be tried again: {}",
            errors.len(),
            event.records.len(),
            errors.join("; ")
        )))
    }
}

/// Decodes an S3 event key: form-URL-encoded, so `+` is a space and `%XX` a byte.
pub fn decode_key(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // Exactly two hex digits: `from_str_radix` alone would take `+1`.
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The object an S3 record is about: the uploads bucket, a key under the prefix naming an
/// image id, and the version the event names.
struct Upload<'a> {
    bucket: &'a str,
    key: String,
    owner: Owner,
    id: ImageId,
    version: Option<&'a str>,
    uploaded_at: chrono::DateTime<chrono::Utc>,
}

/// The upload a record is about, or why it is skipped.
fn upload_of<'a>(ctx: &Ctx, record: &'a S3EventRecord) -> Result<Upload<'a>, Outcome> {
    let event_name = record.event_name.as_deref().unwrap_or("");
    if !event_name.starts_with("ObjectCreated:") {
        return Err(Outcome::Skipped(format!(
            "event {event_name} is not ObjectCreated"
        )));
    }
    let Some(bucket) = record.s3.bucket.name.as_deref() else {
        return Err(Outcome::Skipped("record names no bucket".into()));
    };
    if bucket != ctx.bucket {
        return Err(Outcome::Skipped(format!(
            "record is about bucket {}, not the uploads bucket",
            handler_shared::echo(bucket)
        )));
    }
    let Some(key) = record.s3.object.key.as_deref().and_then(decode_key) else {
        return Err(Outcome::Skipped("record has no decodable key".into()));
    };
    // The owner comes from the key, which the upload function built from the verified token.
    let Some((owner, id)) = ImageId::from_object_key(&key, &ctx.prefix) else {
        return Err(Outcome::Skipped(format!(
            "key is not {}<owner>/<image id>",
            ctx.prefix
        )));
    };
    Ok(Upload {
        bucket,
        key,
        owner,
        id,
        // The event names the version it is about; read that one, not whatever is newest.
        version: record
            .s3
            .object
            .version_id
            .as_deref()
            .filter(|v| !v.is_empty() && *v != "null"),
        uploaded_at: record.event_time,
    })
}

async fn process_record(ctx: &Ctx, record: &S3EventRecord) -> Result<Outcome, RetryableError> {
    let up = match upload_of(ctx, record) {
        Ok(up) => up,
        Err(skipped) => return Ok(skipped),
    };
    let (id, key, version, uploaded_at) = (up.id, &up.key, up.version, up.uploaded_at);
    let owner = &up.owner;
    // Everything about the image is read and written as its owner.
    let c =
        &ctx.users.clients(owner).await.map_err(|e| {
            RetryableError(format!("no session of the image's owner: {}", e.message))
        })?;
    let (first, size) = match read_first_bytes(ctx, c, key, version).await? {
        Read::Found { first, size } => (first, size),
        Read::Gone => {
            let item = Item::failed(
                owner,
                id,
                FailureReason::ImageUnavailable,
                "unknown".into(),
                record.s3.object.size.unwrap_or(0),
                uploaded_at,
            );
            return put(ctx, c, &item).await;
        }
    };
    let format = image_check::Format::from_signature(&first);
    let checked = if size > MAX_S3_BYTES {
        Err(FailureReason::ImageTooLarge)
    } else {
        image_check::inspect(&first, size, &REKOGNITION).map_err(|r| rejection_reason(&r))
    };
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let content_type = match checked {
        Ok(inspected) => inspected.format.mime().to_string(),
        Err(reason) => {
            tracing::info!(image_id = %id, reason = reason.as_str(), size_bytes = size, "not an image Rekognition takes");
            tag_rejected(ctx, c, key, version).await?;
            let content_type = format.map_or("application/octet-stream", |f| f.mime());
            let item = Item::failed(owner, id, reason, content_type.into(), size, uploaded_at);
            return put(ctx, c, &item).await;
        }
    };

    // A presigned upload has just arrived: it is `processing` from now until its labels.
    mark_processing(ctx, c, owner, &id, &content_type, size, uploaded_at).await?;
    let item = detect(ctx, c, &up, content_type, size).await?;
    put_indexed(ctx, c, &item).await
}

/// Asks Rekognition for the image's labels: the labeled item, the failed one when
/// Rekognition refuses the image itself, or an error to retry.
async fn detect(
    ctx: &Ctx,
    c: &Clients,
    up: &Upload<'_>,
    content_type: String,
    size: i64,
) -> Result<Item, RetryableError> {
    let (bucket, key, version) = (up.bucket, &up.key, up.version);
    let (id, uploaded_at) = (up.id, up.uploaded_at);
    let mut image = S3Object::builder().bucket(bucket).name(key);
    if let Some(v) = version {
        image = image.version(v);
    }
    // Only on the pace: at most one call per tick of the stage's grid.
    ctx.pace.wait().await;
    let detected = c
        .rekognition
        .detect_labels()
        .image(Image::builder().s3_object(image.build()).build())
        .max_labels(ctx.max_labels)
        .min_confidence(ctx.min_confidence)
        .send()
        .await;
    let item = match detected {
        Ok(out) => Item {
            owner: up.owner.clone(),
            image_id: id,
            status: Status::Labeled,
            labels: out
                .labels()
                .iter()
                .map(|l| Label {
                    name: l.name().unwrap_or("").to_string(),
                    confidence: l.confidence().unwrap_or(0.0),
                    parents: l
                        .parents()
                        .iter()
                        .filter_map(|p| p.name().map(str::to_string))
                        .collect(),
                })
                .filter(|l| !l.name.is_empty())
                .collect(),
            label_model_version: out.label_model_version().map(str::to_string),
            content_type,
            size_bytes: size,
            uploaded_at,
            failure_reason: None,
        },
        Err(e) => match e.as_service_error().and_then(image_side_reason) {
            Some(reason) => {
                let meta = e.as_service_error();
                tracing::warn!(
                    image_id = %id,
                    reason = reason.as_str(),
                    code = meta.and_then(|m| aws_sdk_rekognition::error::ProvideErrorMetadata::code(m)).unwrap_or(""),
                    message = meta.and_then(|m| aws_sdk_rekognition::error::ProvideErrorMetadata::message(m)).unwrap_or(""),
                    "Rekognition refused the image"
                );
                Item::failed(&up.owner, id, reason, content_type, size, uploaded_at)
            }
            None => {
                return Err(RetryableError(format!(
                    "DetectLabels failed: {}",
                    aws_sdk_rekognition::error::DisplayErrorContext(&e)
                )));
            }
        },
    };
    Ok(item)
}

/// The first bytes of the object, or that it is gone.
enum Read {
    Found { first: Vec<u8>, size: u64 },
    Gone,
}

/// A ranged GET of the first [`SNIFF_BYTES`] of the version the event names.
async fn read_first_bytes(
    ctx: &Ctx,
    c: &Clients,
    key: &str,
    version: Option<&str>,
) -> Result<Read, RetryableError> {
    let got =
        c.s3.get_object()
            .bucket(&ctx.bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .range(format!("bytes=0-{}", SNIFF_BYTES - 1))
            .send()
            .await;
    let out = match got {
        Ok(out) => out,
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            return match status {
                // No such key or version: deleted before it was processed.
                Some(404) => Ok(Read::Gone),
                // A range that starts past the end: the object is empty.
                Some(416) => Ok(Read::Found {
                    first: Vec::new(),
                    size: 0,
                }),
                Some(403) => Err(RetryableError(format!(
                    "GetObject of {key} was denied (403): reading {} needs {} on the object and s3:ListBucket on the bucket",
                    if version.is_some() {
                        "a version"
                    } else {
                        "an object"
                    },
                    read_action(version),
                ))),
                _ => Err(RetryableError(format!(
                    "GetObject failed: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))),
            };
        }
    };
    // `bytes 0-65535/240512`: the total is after the slash. Without a range in the answer the
    // whole object came back.
    let total = out
        .content_range()
        .and_then(|r| r.rsplit_once('/'))
        .and_then(|(_, total)| total.parse::<u64>().ok());
    let length = out.content_length().and_then(|l| u64::try_from(l).ok());
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| RetryableError(format!("reading the first bytes of {key} failed: {e}")))?;
    let mut first = body.to_vec();
    let size = total.or(length).unwrap_or(first.len() as u64);
    first.truncate(usize::try_from(SNIFF_BYTES).unwrap_or(usize::MAX));
    Ok(Read::Found { first, size })
}

/// Tags the version so that the bucket's lifecycle expires it.
async fn tag_rejected(
    ctx: &Ctx,
    c: &Clients,
    key: &str,
    version: Option<&str>,
) -> Result<(), RetryableError> {
    let (k, v) = &ctx.rejected_tag;
    let tagging = Tag::builder()
        .key(k)
        .value(v)
        .build()
        .and_then(|tag| Tagging::builder().tag_set(tag).build())
        .map_err(|e| RetryableError(format!("building the rejection tag failed: {e}")))?;
    c.s3.put_object_tagging()
        .bucket(&ctx.bucket)
        .key(key)
        .set_version_id(version.map(str::to_string))
        .tagging(tagging)
        .send()
        .await
        .map_err(|e| {
            RetryableError(format!(
                "tagging the rejected upload {key} failed: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            ))
        })?;
    Ok(())
}

/// The API's word for why the bytes are not an image Rekognition takes.
fn rejection_reason(r: &Rejection) -> FailureReason {
    match r {
        Rejection::NotAnImage => FailureReason::UnsupportedImage,
        Rejection::Corrupt { .. } | Rejection::TrailingData { .. } => FailureReason::InvalidImage,
        Rejection::TooSmall { .. } => FailureReason::ImageTooSmall,
        Rejection::TooWide { .. } | Rejection::TooManyPixels { .. } => FailureReason::ImageTooLarge,
    }
}

/// The IAM action S3 authorises a read by: `s3:GetObjectVersion` when the request names a
/// version, `s3:GetObject` otherwise.
pub fn read_action(version: Option<&str>) -> &'static str {
    if version.is_some() {
        "s3:GetObjectVersion"
    } else {
        "s3:GetObject"
    }
}

/// The errors the image itself causes: retrying cannot help. The item gets the API's word
/// for it; Rekognition's code and message go to the log only.
fn image_side_reason(e: &DetectLabelsError) -> Option<FailureReason> {
    let reason = match e {
        DetectLabelsError::InvalidImageFormatException(_) => FailureReason::UnsupportedImage,
        DetectLabelsError::ImageTooLargeException(_) => FailureReason::ImageTooLarge,
        DetectLabelsError::InvalidS3ObjectException(_) => FailureReason::ImageUnavailable,
        DetectLabelsError::InvalidParameterException(_) => FailureReason::ImageRejected,
        _ => return None,
    };
    Some(reason)
}

#[derive(Debug, Clone, PartialEq)]
struct Label {
    name: String,
    confidence: f32,
    parents: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Item {
    owner: Owner,
    image_id: ImageId,
    status: Status,
    labels: Vec<Label>,
    label_model_version: Option<String>,
    content_type: String,
    size_bytes: i64,
    uploaded_at: DateTime<Utc>,
    failure_reason: Option<FailureReason>,
}

impl Item {
    fn failed(
        owner: &Owner,
        image_id: ImageId,
        reason: FailureReason,
        content_type: String,
        size_bytes: i64,
        uploaded_at: DateTime<Utc>,
    ) -> Self {
        Self {
            owner: owner.clone(),
            image_id,
            status: Status::Failed,
            labels: Vec::new(),
            label_model_version: None,
            content_type,
            size_bytes,
            uploaded_at,
            failure_reason: Some(reason),
        }
    }

    fn attributes(&self) -> HashMap<String, AttributeValue> {
        let s = |v: &str| AttributeValue::S(v.to_string());
        let mut m = HashMap::new();
        m.insert(index::OWNER.into(), s(self.owner.as_str()));
        m.insert(index::IMAGE_ID.into(), s(&self.image_id.to_string()));
        m.insert(
            "status".into(),
            s(match self.status {
                Status::Labeled => ImageStatus::Labeled.as_str(),
                Status::Failed => ImageStatus::Failed.as_str(),
            }),
        );
        let labels = self
            .labels
            .iter()
            .map(|l| {
                AttributeValue::M(HashMap::from([
                    ("name".to_string(), s(&l.name)),
                    (
                        "confidence".to_string(),
                        AttributeValue::N(format!("{:.3}", l.confidence)),
                    ),
                    (
                        "parents".to_string(),
                        AttributeValue::L(l.parents.iter().map(|p| s(p)).collect()),
                    ),
                ]))
            })
            .collect();
        m.insert("labels".into(), AttributeValue::L(labels));
        if let Some(v) = &self.label_model_version {
            m.insert("label_model_version".into(), s(v));
        }
        m.insert("content_type".into(), s(&self.content_type));
        m.insert(
            "size_bytes".into(),
            AttributeValue::N(self.size_bytes.to_string()),
        );
        m.insert(index::UPLOADED_AT.into(), s(&timestamp(self.uploaded_at)));
        m.insert("processed_at".into(), s(&timestamp(Utc::now())));
        if let Some(r) = self.failure_reason {
            m.insert("failure_reason".into(), s(r.as_str()));
        }
        m
    }
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The condition of the final write: no item yet, or one that is not final. A second
/// delivery of the same event finds the final item there and stops.
pub const FINAL_WRITE_CONDITION: &str =
    "attribute_not_exists(image_id) OR #status IN (:awaiting_upload, :processing)";

fn status_values() -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            ":awaiting_upload".to_string(),
            AttributeValue::S(ImageStatus::AwaitingUpload.as_str().into()),
        ),
        (
            ":processing".to_string(),
            AttributeValue::S(ImageStatus::Processing.as_str().into()),
        ),
    ])
}

/// Moves an `awaiting_upload` item to `processing`; any other item (or none) is left alone.
async fn mark_processing(
    ctx: &Ctx,
    c: &Clients,
    owner: &Owner,
    id: &ImageId,
    content_type: &str,
    size_bytes: i64,
    uploaded_at: DateTime<Utc>,
) -> Result<(), RetryableError> {
    let s = |v: &str| AttributeValue::S(v.to_string());
    let item = HashMap::from([
        (index::OWNER.to_string(), s(owner.as_str())),
        (index::IMAGE_ID.to_string(), s(&id.to_string())),
        ("status".to_string(), s(ImageStatus::Processing.as_str())),
        ("content_type".to_string(), s(content_type)),
        (
            "size_bytes".to_string(),
            AttributeValue::N(size_bytes.to_string()),
        ),
        (index::UPLOADED_AT.to_string(), s(&timestamp(uploaded_at))),
    ]);
    let result = c
        .dynamodb
        .put_item()
        .table_name(&ctx.table)
        .set_item(Some(item))
        .condition_expression("#status = :awaiting_upload")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":awaiting_upload", s(ImageStatus::AwaitingUpload.as_str()))
        .send()
        .await;
    match result {
        Ok(_) => {
            tracing::info!(image_id = %id, "presigned upload arrived: processing");
            Ok(())
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(RetryableError(format!(
            "PutItem (processing) failed: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&e)
        ))),
    }
}

/// Writes a labeled item and its index in one transaction: the item (on the final-write
/// condition), an entry under each label, and each label's count. A cancelled condition is a
/// duplicate or late event, and nothing of the transaction is written.
async fn put_indexed(ctx: &Ctx, c: &Clients, item: &Item) -> Result<Outcome, RetryableError> {
    let labels = index_labels(&item.labels);
    if item.status != Status::Labeled || labels.is_empty() {
        return put(ctx, c, item).await;
    }
    let attributes = item.attributes();
    let built = |e: aws_sdk_dynamodb::error::BuildError| {
        RetryableError(format!("building the transaction failed: {e}"))
    };
    let mut writes = vec![
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&ctx.table)
                    .set_item(Some(attributes.clone()))
                    .condition_expression(FINAL_WRITE_CONDITION)
                    .expression_attribute_names("#status", "status")
                    .set_expression_attribute_values(Some(status_values()))
                    .build()
                    .map_err(built)?,
            )
            .build(),
    ];
    let uploaded_at = timestamp(item.uploaded_at);
    let id = item.image_id.to_string();
    for (key, label) in &labels {
        let mut entry = attributes.clone();
        entry.insert(
            index::PARTITION_KEY.into(),
            AttributeValue::S(index::label_partition(item.owner.as_str(), key)),
        );
        entry.insert(
            index::SORT_KEY.into(),
            AttributeValue::S(index::entry_sort_key(&uploaded_at, &id)),
        );
        entry.insert(
            index::CONFIDENCE.into(),
            AttributeValue::N(format!("{:.3}", label.confidence)),
        );
        writes.push(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&ctx.labels_table)
                        .set_item(Some(entry))
                        .build()
                        .map_err(built)?,
                )
                .build(),
        );
        writes.push(
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&ctx.labels_table)
                        .key(
                            index::PARTITION_KEY,
                            AttributeValue::S(index::counts_partition(item.owner.as_str())),
                        )
                        .key(index::SORT_KEY, AttributeValue::S(key.clone()))
                        .update_expression(
                            "ADD #count :one SET #name = if_not_exists(#name, :name)",
                        )
                        .expression_attribute_names(
                            "#count",
                            index::count_attribute(f64::from(label.confidence)),
                        )
                        .expression_attribute_names("#name", index::NAME)
                        .expression_attribute_values(":one", AttributeValue::N("1".into()))
                        .expression_attribute_values(":name", AttributeValue::S(label.name.clone()))
                        .build()
                        .map_err(built)?,
                )
                .build(),
        );
    }
    let result = c
        .dynamodb
        .transact_write_items()
        .set_transact_items(Some(writes))
        .send()
        .await;
    match result {
        Ok(_) => {
            tracing::info!(image_id = %item.image_id, status = ?item.status, labels = item.labels.len(), indexed = labels.len(), "item and label index written");
            Ok(Outcome::Written(item.status))
        }
        Err(e) if item_condition_failed(&e) => {
            tracing::info!(image_id = %item.image_id, "duplicate or late delivery: the image is already labeled or failed");
            Ok(Outcome::Duplicate)
        }
        Err(e) => Err(RetryableError(format!(
            "TransactWriteItems failed: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&e)
        ))),
    }
}

/// Whether a cancelled transaction was cancelled by the item's own condition (the first
/// write): the image is already final.
fn item_condition_failed(e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError>) -> bool {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
            .cancellation_reasons()
            .first()
            .and_then(|r| r.code())
            .is_some_and(|code| code == "ConditionalCheckFailed"),
        _ => false,
    }
}

/// The labels to index, by searched name (`cat`): one per name, the most confident, and none
/// whose name a search could not ask for.
fn index_labels(labels: &[Label]) -> Vec<(String, &Label)> {
    let mut by_key: Vec<(String, &Label)> = Vec::new();
    for l in labels {
        let Some(key) = index::normalize(&l.name) else {
            continue;
        };
        match by_key.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) if slot.1.confidence < l.confidence => slot.1 = l,
            Some(_) => {}
            None => by_key.push((key, l)),
        }
    }
    by_key
}

/// Writes the final item once: over nothing, or over an item that is not final yet.
async fn put(ctx: &Ctx, c: &Clients, item: &Item) -> Result<Outcome, RetryableError> {
    let result = c
        .dynamodb
        .put_item()
        .table_name(&ctx.table)
        .set_item(Some(item.attributes()))
        .condition_expression(FINAL_WRITE_CONDITION)
        .expression_attribute_names("#status", "status")
        .set_expression_attribute_values(Some(status_values()))
        .send()
        .await;
    match result {
        Ok(_) => {
            tracing::info!(image_id = %item.image_id, status = ?item.status, labels = item.labels.len(), "item written");
            Ok(Outcome::Written(item.status))
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
        {
            tracing::info!(image_id = %item.image_id, "duplicate or late delivery: the image is already labeled or failed");
            Ok(Outcome::Duplicate)
        }
        Err(e) => Err(RetryableError(format!(
            "PutItem failed: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&e)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_form_url_decoded() {
        assert_eq!(
            decode_key("uploads/a+b.jpg").as_deref(),
            Some("uploads/a b.jpg")
        );
        assert_eq!(
            decode_key("uploads/a%2Bb.jpg").as_deref(),
            Some("uploads/a+b.jpg")
        );
        assert_eq!(decode_key("uploads%2Fx").as_deref(), Some("uploads/x"));
        assert_eq!(decode_key("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(decode_key("bad%zz"), None);
        assert_eq!(decode_key("cut%4"), None);
        assert_eq!(decode_key("%FF"), None, "not UTF-8");
        assert_eq!(decode_key("a%+1"), None, "a sign is not a hex digit");
        assert_eq!(decode_key("a%-1"), None);
        assert_eq!(decode_key("a% 1"), None);
        assert_eq!(decode_key("%e9"), None, "a lone Latin-1 byte is not UTF-8");
        assert_eq!(decode_key("%41%6a").as_deref(), Some("Aj"), "either case");
    }
}
