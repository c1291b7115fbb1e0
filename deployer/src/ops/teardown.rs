//! `teardown`: closes the uploads bucket to new objects, empties it (every version and delete
//! marker), deletes the stack (as the bootstrap's execution role of its stage) and follows it
//! to the end; optionally removes the stage's artifacts from the assets bucket too. Nothing to
//! remove is success.
//!
//! The bucket is closed first because the API keeps accepting uploads until the stack is gone:
//! an object written while the bucket is being emptied would make the bucket's deletion fail.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stack::Stage;
use thiserror::Error;

use crate::cloud::assets::{self, AssetsError};
use crate::cloud::aws::{self, AwsError, Identity, Target};
use crate::cloud::cfn::{CfnError, StackOps, StackProgress};
use crate::ops::bootstrap::{self, BootstrapError};

#[derive(Debug, Clone)]
pub struct TeardownConfig {
    pub target: Target,
    pub stage: Stage,
    pub purge_assets: bool,
    pub timeout: Duration,
}

/// What happened to the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Removal {
    Deleted,
    /// There was no stack.
    Absent,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeardownReport {
    pub stack: String,
    pub target: String,
    pub identity: Identity,
    pub status: Removal,
    pub objects_deleted: usize,
    /// Whether the stage's artifacts were removed from the assets bucket (`--purge-assets`).
    pub assets_purged: bool,
    pub assets_objects_deleted: usize,
    pub elapsed_ms: u64,
}

#[derive(Debug, Error)]
pub enum TeardownError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Assets(#[from] AssetsError),
    #[error(transparent)]
    Stack(#[from] CfnError),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("closing the uploads bucket {bucket} to new objects failed: {reason}")]
    Close { bucket: String, reason: String },
}

/// The uploads bucket's policy during teardown: still TLS-only, and now refusing every new
/// object, whoever writes it (the upload function, a presigned URL).
pub fn closed_bucket_policy(partition: &str, bucket: &str) -> policies::PolicyDocument<String> {
    let bucket_arn = format!("arn:{partition}:s3:::{bucket}");
    let objects = format!("{bucket_arn}/*");
    let mut doc = policies::PolicyDocument::tls_only(bucket_arn, objects.clone());
    doc.statement.push(policies::Statement {
        sid: Some("DenyNewObjectsDuringTeardown".into()),
        effect: policies::Effect::Deny,
        principal: Some(policies::Principal::Everyone),
        action: vec![policies::Action::known("s3:PutObject")],
        resource: vec![objects],
        condition: None,
    });
    doc
}

async fn close_to_new_objects(
    s3: &aws_sdk_s3::Client,
    identity: &Identity,
    bucket: &str,
) -> Result<(), TeardownError> {
    let close = |reason: String| TeardownError::Close {
        bucket: bucket.to_string(),
        reason,
    };
    let policy = serde_json::to_string(&closed_bucket_policy(&identity.partition, bucket))
        .map_err(|e| close(e.to_string()))?;
    match s3
        .put_bucket_policy()
        .bucket(bucket)
        .expected_bucket_owner(&identity.account)
        .policy(policy)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing can be written to it either.
        Err(e) if aws_sdk_s3::error::ProvideErrorMetadata::code(&e) == Some("NoSuchBucket") => {
            Ok(())
        }
        Err(e) => Err(close(crate::cloud::error::chain(&e))),
    }
}

/// The physical name of a stack resource, if the stack has it.
async fn physical_id(
    cfn: &aws_sdk_cloudformation::Client,
    stack: &str,
    logical: &str,
) -> Option<String> {
    let out = cfn
        .describe_stack_resource()
        .stack_name(stack)
        .logical_resource_id(logical)
        .send()
        .await
        .ok()?;
    out.stack_resource_detail()?
        .physical_resource_id()
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

pub async fn teardown(
    cfg: &TeardownConfig,
    progress: &dyn StackProgress,
) -> Result<TeardownReport, TeardownError> {
    let start = Instant::now();
    let (clients, identity) = aws::connect(&cfg.target).await?;
    let stack_name = cfg.stage.stack_name();
    let probe = StackOps {
        cfn: &clients.cfn,
        name: &stack_name,
        poll: aws::poll_interval(&cfg.target),
        progress,
        role_arn: None,
    };
    let info = probe.wait_settled(cfg.timeout).await?;
    // The stack is deleted by the execution role that deployed it; a stage that is not there
    // needs no bootstrap to be found absent.
    let boot = match (&info, cfg.purge_assets) {
        (None, false) => None,
        _ => Some(bootstrap::read(&clients.cfn, &identity, &cfg.target).await?),
    };
    let role = boot
        .as_ref()
        .and_then(|b| b.execution_roles.get(&b.scope_for(&cfg.stage)).cloned());
    let ops = StackOps {
        role_arn: role.as_deref(),
        ..probe
    };
    let mut report = TeardownReport {
        stack: stack_name.clone(),
        target: cfg.target.describe(),
        identity: identity.clone(),
        status: Removal::Absent,
        objects_deleted: 0,
        assets_purged: false,
        assets_objects_deleted: 0,
        elapsed_ms: 0,
    };
    match info {
        None => progress.step(&format!(
            "stack {stack_name} does not exist: nothing to remove"
        )),
        Some(info) => {
            if let Some(bucket) = physical_id(&clients.cfn, &info.id, stack::synth::BUCKET_ID).await
            {
                progress.step(&format!(
                    "closing s3://{bucket} to new uploads (its policy now denies s3:PutObject)"
                ));
                close_to_new_objects(&clients.s3, &identity, &bucket).await?;
                progress.step(&format!(
                    "emptying s3://{bucket} (every version and delete marker)"
                ));
                report.objects_deleted =
                    assets::empty_bucket(&clients.s3, &bucket, &identity.account).await?;
                progress.step(&format!(
                    "deleted {} object versions",
                    report.objects_deleted
                ));
            }
            progress.step(&format!("deleting stack {stack_name} ({})", info.status));
            ops.delete(&info.id, cfg.timeout).await?;
            report.status = Removal::Deleted;
        }
    }
    if let (true, Some(boot)) = (cfg.purge_assets, &boot) {
        let prefix = format!("{}/", cfg.stage);
        progress.step(&format!(
            "removing the stage's artifacts, s3://{}/{prefix}",
            boot.assets_bucket
        ));
        report.assets_objects_deleted =
            assets::delete_prefix(&clients.s3, &boot.assets_bucket, &identity.account, &prefix)
                .await?;
        report.assets_purged = true;
    }
    report.elapsed_ms = crate::util::elapsed_ms(start);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closed_policy_denies_every_new_object_and_stays_tls_only() {
        let bucket = "image-pipeline-dev-123456789012-eu-west-1";
        let doc = closed_bucket_policy("aws", bucket);
        assert_eq!(
            doc.statement[0],
            policies::PolicyDocument::tls_only(
                format!("arn:aws:s3:::{bucket}"),
                format!("arn:aws:s3:::{bucket}/*")
            )
            .statement[0]
        );
        // The added statement alone (the evaluator treats the TLS condition as always met).
        let added = policies::PolicyDocument::new(doc.statement[1..].to_vec());
        let objects = format!("arn:aws:s3:::{bucket}/uploads/x");
        for (action, resource, want) in [
            (
                "s3:PutObject",
                objects.as_str(),
                policies::Decision::ExplicitDeny,
            ),
            (
                "s3:DeleteObjectVersion",
                objects.as_str(),
                policies::Decision::ImplicitDeny,
            ),
            (
                "s3:GetObjectVersion",
                objects.as_str(),
                policies::Decision::ImplicitDeny,
            ),
        ] {
            assert_eq!(
                policies::evaluate(&added, action, resource),
                want,
                "{action}"
            );
        }
        assert_eq!(
            added.statement[0].principal,
            Some(policies::Principal::Everyone)
        );
        assert_eq!(added.statement[0].condition, None);
    }
}
