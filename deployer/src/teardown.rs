//! `teardown`: empties the uploads bucket (every version and delete marker), deletes the
//! stack and follows it to the end; optionally removes the assets bucket too. Nothing to
//! remove is success.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stack::Stage;
use thiserror::Error;

use crate::assets::{self, AssetsError};
use crate::aws::{self, AwsError, Identity, Target};
use crate::cfn::{CfnError, StackOps};
use crate::progress::Progress;

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
    pub assets_bucket_removed: bool,
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
    progress: &dyn Progress,
) -> Result<TeardownReport, TeardownError> {
    let start = Instant::now();
    let (clients, identity) = aws::connect(&cfg.target).await?;
    let stack_name = cfg.stage.stack_name();
    let ops = StackOps {
        cfn: &clients.cfn,
        name: &stack_name,
        poll: aws::poll_interval(&cfg.target),
        progress,
    };
    let mut report = TeardownReport {
        stack: stack_name.clone(),
        target: cfg.target.describe(),
        identity: identity.clone(),
        status: Removal::Absent,
        objects_deleted: 0,
        assets_bucket_removed: false,
        assets_objects_deleted: 0,
        elapsed_ms: 0,
    };
    let info = ops.wait_settled(cfg.timeout).await?;
    match info {
        None => progress.step(&format!(
            "stack {stack_name} does not exist: nothing to remove"
        )),
        Some(info) => {
            if let Some(bucket) = physical_id(&clients.cfn, &info.id, stack::synth::BUCKET_ID).await
            {
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
    if cfg.purge_assets {
        let bucket = stack::app::assets_bucket_name(&identity.account, &identity.region);
        progress.step(&format!("removing the assets bucket {bucket}"));
        report.assets_objects_deleted =
            assets::remove_bucket(&clients.s3, &bucket, &identity.account).await?;
        report.assets_bucket_removed = true;
    }
    report.elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}
