//! The assets bucket: one per account and region, created on first use (public access
//! blocked, encrypted, TLS only), holding Lambda artifacts under content-addressed keys so an
//! artifact is uploaded once.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::build::{Artifact, BuildReport};

#[derive(Debug, Error)]
pub enum AssetsError {
    #[error(
        "the assets bucket {bucket} is in {actual}, not {expected}: every resource of a deploy must be in the target region"
    )]
    WrongRegion {
        bucket: String,
        expected: String,
        actual: String,
    },
    #[error("the assets bucket {bucket} exists but belongs to another account or denies access")]
    Foreign { bucket: String },
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
        reason: DisplayErrorContext(&e).to_string(),
    }
}

/// The content-addressed key of an artifact.
pub fn artifact_key(architecture: &str, a: &Artifact) -> String {
    format!("lambda/{architecture}/{}/{}.zip", a.function, a.sha256)
}

/// The assets bucket's TLS-only policy, from the same builder as every other bucket's.
pub fn tls_only_policy(partition: &str, bucket: &str) -> String {
    let arn = format!("arn:{partition}:s3:::{bucket}");
    let doc = policies::PolicyDocument::tls_only(arn.clone(), format!("{arn}/*"));
    serde_json::to_string(&doc).unwrap_or_default()
}

/// Makes sure the assets bucket exists in `region` and belongs to `owner` (the deploying
/// account; a bucket of that name in another account is refused), and applies its protections
/// again whether it was just made or not, so a first run that stopped half-way, or a change
/// made by hand, is put right. Returns whether the bucket was created now.
pub async fn ensure_bucket(
    s3: &Client,
    bucket: &str,
    region: &str,
    partition: &str,
    owner: &str,
) -> Result<bool, AssetsError> {
    let created = create_if_missing(s3, bucket, region, owner).await?;
    protect(s3, bucket, partition, owner).await?;
    Ok(created)
}

async fn create_if_missing(
    s3: &Client,
    bucket: &str,
    region: &str,
    owner: &str,
) -> Result<bool, AssetsError> {
    match s3
        .head_bucket()
        .bucket(bucket)
        .expected_bucket_owner(owner)
        .send()
        .await
    {
        Ok(out) => {
            // Not every endpoint reports the region on HEAD; ask when it is missing.
            let actual = match out.bucket_region() {
                Some(r) => r.to_string(),
                None => location(s3, bucket, owner).await?,
            };
            if actual != region {
                return Err(AssetsError::WrongRegion {
                    bucket: bucket.to_string(),
                    expected: region.to_string(),
                    actual,
                });
            }
            return Ok(false);
        }
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            match status {
                Some(404) => {}
                Some(403) => {
                    return Err(AssetsError::Foreign {
                        bucket: bucket.to_string(),
                    });
                }
                _ => return Err(call("HeadBucket", bucket, e)),
            }
        }
    }
    let mut create = s3.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => Ok(true),
        // Another deploy may have created it a moment ago.
        Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(false),
        Err(e) if e.code() == Some("BucketAlreadyExists") => Err(AssetsError::Foreign {
            bucket: bucket.to_string(),
        }),
        Err(e) => Err(call("CreateBucket", bucket, e)),
    }
}

/// Public access blocked, AES-256 by default, TLS only.
async fn protect(
    s3: &Client,
    bucket: &str,
    partition: &str,
    owner: &str,
) -> Result<(), AssetsError> {
    s3.put_public_access_block()
        .bucket(bucket)
        .expected_bucket_owner(owner)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| call("PutPublicAccessBlock", bucket, e))?;
    let invalid = |e: aws_sdk_s3::error::BuildError| AssetsError::Call {
        operation: "PutBucketEncryption",
        bucket: bucket.to_string(),
        reason: e.to_string(),
    };
    let sse = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .map_err(invalid)?;
    let encryption = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(sse)
                .build(),
        )
        .build()
        .map_err(invalid)?;
    s3.put_bucket_encryption()
        .bucket(bucket)
        .expected_bucket_owner(owner)
        .server_side_encryption_configuration(encryption)
        .send()
        .await
        .map_err(|e| call("PutBucketEncryption", bucket, e))?;
    s3.put_bucket_policy()
        .bucket(bucket)
        .expected_bucket_owner(owner)
        .policy(tls_only_policy(partition, bucket))
        .send()
        .await
        .map_err(|e| call("PutBucketPolicy", bucket, e))?;
    Ok(())
}

async fn location(s3: &Client, bucket: &str, owner: &str) -> Result<String, AssetsError> {
    let out = s3
        .get_bucket_location()
        .bucket(bucket)
        .expected_bucket_owner(owner)
        .send()
        .await
        .map_err(|e| call("GetBucketLocation", bucket, e))?;
    // S3 reports us-east-1 as an empty constraint.
    Ok(match out.location_constraint().map(|c| c.as_str()) {
        None | Some("") => "us-east-1".to_string(),
        Some(r) => r.to_string(),
    })
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

/// Uploads each artifact of `report` unless its key already exists, to the bucket of `owner`
/// only.
pub async fn upload_artifacts(
    s3: &Client,
    bucket: &str,
    owner: &str,
    report: &BuildReport,
) -> Result<Vec<Uploaded>, AssetsError> {
    let mut out = Vec::new();
    for a in &report.manifest.functions {
        let key = artifact_key(&report.manifest.architecture, a);
        let exists = match s3
            .head_object()
            .bucket(bucket)
            .key(&key)
            .expected_bucket_owner(owner)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => false,
            Err(e) => return Err(call("HeadObject", bucket, e)),
        };
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
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let mut deleted = 0;
    loop {
        let page = match s3
            .list_object_versions()
            .bucket(bucket)
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
