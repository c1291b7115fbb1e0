//! The assets bucket (the bootstrap stack's: one per account and region) holds Lambda
//! artifacts under content-addressed keys below the stage, so an artifact is uploaded once per
//! stage, and only identities allowed that stage can write what it deploys.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::build::{Artifact, BuildReport};

#[derive(Debug, Error)]
pub enum AssetsError {
    #[error("{operation} on the assets bucket {bucket} failed: {reason}")]
    Call {
        operation: &'static str,
        bucket: String,
        reason: String,
    },
    #[error("cannot read artifact {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn call<E: ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &'static str,
    bucket: &str,
    e: aws_sdk_s3::error::SdkError<E>,
) -> AssetsError {
    AssetsError::Call {
        operation,
        bucket: bucket.to_string(),
        reason: crate::cloud::error::reason(&e),
    }
}

/// The content-addressed key of an artifact of `stage`.
pub fn artifact_key(stage: &str, architecture: &str, a: &Artifact) -> String {
    key_of(stage, architecture, &a.function, &a.sha256)
}

/// The key layout itself: every artifact of a stage lives under `{stage}/`, which is what the
/// deploying identity's and the execution roles' policies scope by.
pub fn key_of(stage: &str, architecture: &str, function: &str, sha256: &str) -> String {
    format!("{stage}/lambda/{architecture}/{function}/{sha256}.zip")
}

/// Whether `key` is in `bucket` (of `owner`).
async fn exists(
    s3: &Client,
    (bucket, owner): (&str, &str),
    key: &str,
) -> Result<bool, AssetsError> {
    match s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .expected_bucket_owner(owner)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(false),
        Err(e) => Err(call("HeadObject", bucket, e)),
    }
}

/// The content-addressed key of a stack template of `stage`.
pub fn template_key(stage: &str, body: &str) -> String {
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    format!("{stage}/templates/{sha}.json")
}

/// Puts `body` at its [`template_key`] in the bucket of `owner`, unless it is there; the key.
pub async fn upload_template(
    (s3, owner): (&Client, &str),
    bucket: &str,
    stage: &str,
    body: &str,
) -> Result<String, AssetsError> {
    let key = template_key(stage, body);
    let exists = exists(s3, (bucket, owner), &key).await?;
    if !exists {
        s3.put_object()
            .bucket(bucket)
            .key(&key)
            .expected_bucket_owner(owner)
            .content_type("application/json")
            .body(ByteStream::from(body.as_bytes().to_vec()))
            .send()
            .await
            .map_err(|e| call("PutObject", bucket, e))?;
    }
    Ok(key)
}

/// One artifact in the assets bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    pub function: String,
    pub key: String,
    pub sha256: String,
    pub code_sha256: String,
    /// False when the content-addressed key was already there.
    pub uploaded: bool,
    pub bytes: u64,
}

/// Uploads each artifact of `report` for `stage` unless its key already exists, to the bucket
/// of `owner` only.
pub async fn upload_artifacts(
    s3: &Client,
    bucket: &str,
    owner: &str,
    stage: &str,
    report: &BuildReport,
) -> Result<Vec<Uploaded>, AssetsError> {
    let mut out = Vec::new();
    for a in &report.manifest.functions {
        let key = artifact_key(stage, &report.manifest.architecture, a);
        let exists = exists(s3, (bucket, owner), &key).await?;
        if !exists {
            let path = report.zip_path(a);
            let body = std::fs::read(&path).map_err(|source| AssetsError::Read {
                path: path.clone(),
                source,
            })?;
            s3.put_object()
                .bucket(bucket)
                .key(&key)
                .expected_bucket_owner(owner)
                .content_type("application/zip")
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| call("PutObject", bucket, e))?;
        }
        out.push(Uploaded {
            function: a.function.clone(),
            key,
            sha256: a.sha256.clone(),
            code_sha256: a.code_sha256.clone(),
            uploaded: !exists,
            bytes: a.zip_bytes,
        });
    }
    Ok(out)
}

/// Deletes every object version and delete marker in `bucket` (which must belong to `owner`),
/// in batches of up to 1000. Returns how many were deleted. A bucket that does not exist is
/// empty.
pub async fn empty_bucket(s3: &Client, bucket: &str, owner: &str) -> Result<usize, AssetsError> {
    delete_versions(s3, bucket, owner, None).await
}

/// Deletes every object version and delete marker under `prefix` in `bucket`; how many.
pub async fn delete_prefix(
    s3: &Client,
    bucket: &str,
    owner: &str,
    prefix: &str,
) -> Result<usize, AssetsError> {
    delete_versions(s3, bucket, owner, Some(prefix)).await
}

async fn delete_versions(
    s3: &Client,
    bucket: &str,
    owner: &str,
    prefix: Option<&str>,
) -> Result<usize, AssetsError> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let mut deleted = 0;
    loop {
        let page = match s3
            .list_object_versions()
            .bucket(bucket)
            .set_prefix(prefix.map(str::to_string))
            .expected_bucket_owner(owner)
            .send()
            .await
        {
            Ok(p) => p,
            Err(e) if e.code() == Some("NoSuchBucket") => return Ok(deleted),
            Err(e) => return Err(call("ListObjectVersions", bucket, e)),
        };
        let mut ids = Vec::new();
        for v in page.versions() {
            if let Some(k) = v.key() {
                ids.push((k.to_string(), v.version_id().map(str::to_string)));
            }
        }
        for m in page.delete_markers() {
            if let Some(k) = m.key() {
                ids.push((k.to_string(), m.version_id().map(str::to_string)));
            }
        }
        if ids.is_empty() {
            return Ok(deleted);
        }
        for chunk in ids.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|(k, v)| {
                    ObjectIdentifier::builder()
                        .key(k)
                        .set_version_id(v.clone())
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| AssetsError::Call {
                    operation: "DeleteObjects",
                    bucket: bucket.to_string(),
                    reason: e.to_string(),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| AssetsError::Call {
                    operation: "DeleteObjects",
                    bucket: bucket.to_string(),
                    reason: e.to_string(),
                })?;
            let out = s3
                .delete_objects()
                .bucket(bucket)
                .expected_bucket_owner(owner)
                .delete(delete)
                .send()
                .await
                .map_err(|e| call("DeleteObjects", bucket, e))?;
            if let Some(err) = out.errors().first() {
                return Err(AssetsError::Call {
                    operation: "DeleteObjects",
                    bucket: bucket.to_string(),
                    reason: format!(
                        "{} of {} objects not deleted; first: {} ({})",
                        out.errors().len(),
                        chunk.len(),
                        err.key().unwrap_or_default(),
                        err.message().unwrap_or_default()
                    ),
                });
            }
            deleted += chunk.len();
        }
    }
}

/// Empties and deletes a bucket of `owner`; a missing bucket is fine.
pub async fn remove_bucket(s3: &Client, bucket: &str, owner: &str) -> Result<usize, AssetsError> {
    let n = empty_bucket(s3, bucket, owner).await?;
    match s3
        .delete_bucket()
        .bucket(bucket)
        .expected_bucket_owner(owner)
        .send()
        .await
    {
        Ok(_) => Ok(n),
        Err(e) if e.code() == Some("NoSuchBucket") => Ok(n),
        Err(e) => Err(call("DeleteBucket", bucket, e)),
    }
}
