//! CloudFormation drift detection of a stage's stack: which resources differ from the
//! template (changed or deleted outside CloudFormation, in the console during an incident
//! for example), and at which property paths.

use std::time::{Duration, Instant};

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::types::{StackDriftDetectionStatus, StackResourceDriftStatus};
use serde::{Deserialize, Serialize};

use crate::cloud::error::chain;

/// One resource that is not as the template says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftedResource {
    pub logical_id: String,
    pub resource_type: String,
    /// `MODIFIED` or `DELETED`.
    pub status: String,
    pub differences: Vec<PropertyDrift>,
}

/// One property path of a modified resource, for example `/Environment/Variables/X`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyDrift {
    pub path: String,
    /// `ADD`, `REMOVE` or `NOT_EQUAL`.
    pub kind: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
}

/// What a drift detection found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftReport {
    /// `IN_SYNC`, `DRIFTED`, or `UNKNOWN` when the detection could not check everything.
    pub stack_status: String,
    /// Why the detection was incomplete, when it was (a resource it could not read).
    pub reason: Option<String>,
    pub drifted: Vec<DriftedResource>,
}

impl DriftReport {
    pub fn is_drifted(&self) -> bool {
        !self.drifted.is_empty()
    }

    /// One line per resource and property path: `ProcessFunction MODIFIED
    /// /Environment/Variables/X: expected "1", actual "2"`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.drifted {
            if r.differences.is_empty() {
                out.push(format!(
                    "{} ({}) {}",
                    r.logical_id, r.resource_type, r.status
                ));
            }
            for d in &r.differences {
                out.push(format!(
                    "{} ({}) {} {}: {} {}, actual {}",
                    r.logical_id,
                    r.resource_type,
                    r.status,
                    d.path,
                    d.kind.to_lowercase().replace('_', " "),
                    d.expected.as_deref().unwrap_or("(none)"),
                    d.actual.as_deref().unwrap_or("(none)")
                ));
            }
        }
        out
    }
}

/// Runs drift detection on `stack` and waits for it (polling every `poll`, for at most
/// `timeout`); what drifted. An error names the call that failed.
pub async fn detect(
    cfn: &Client,
    stack: &str,
    poll: Duration,
    timeout: Duration,
) -> Result<DriftReport, String> {
    let id = cfn
        .detect_stack_drift()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| format!("DetectStackDrift on {stack}: {}", chain(&e)))?
        .stack_drift_detection_id()
        .unwrap_or_default()
        .to_string();
    let start = Instant::now();
    let (stack_status, reason) = loop {
        let s = cfn
            .describe_stack_drift_detection_status()
            .stack_drift_detection_id(&id)
            .send()
            .await
            .map_err(|e| format!("DescribeStackDriftDetectionStatus: {}", chain(&e)))?;
        let status = s.stack_drift_status().map(|d| d.as_str().to_string());
        let reason = s.detection_status_reason().map(str::to_string);
        match s.detection_status() {
            Some(StackDriftDetectionStatus::DetectionComplete) => {
                break (status.unwrap_or_else(|| "UNKNOWN".into()), None);
            }
            // Failed means some resources could not be checked; the others' results stand.
            Some(StackDriftDetectionStatus::DetectionFailed) => {
                break (status.unwrap_or_else(|| "UNKNOWN".into()), reason);
            }
            _ if start.elapsed() >= timeout => {
                return Err(format!(
                    "drift detection of {stack} did not finish in {} s",
                    timeout.as_secs()
                ));
            }
            _ => tokio::time::sleep(poll).await,
        }
    };
    let drifted = drifted_resources(cfn, stack).await?;
    Ok(DriftReport {
        stack_status,
        reason,
        drifted,
    })
}

/// The stack's resources whose last detection found them modified or deleted.
async fn drifted_resources(cfn: &Client, stack: &str) -> Result<Vec<DriftedResource>, String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = cfn
            .describe_stack_resource_drifts()
            .stack_name(stack)
            .stack_resource_drift_status_filters(StackResourceDriftStatus::Modified)
            .stack_resource_drift_status_filters(StackResourceDriftStatus::Deleted)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| format!("DescribeStackResourceDrifts: {}", chain(&e)))?;
        for d in page.stack_resource_drifts() {
            let status = d
                .stack_resource_drift_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            if !matches!(status.as_str(), "MODIFIED" | "DELETED") {
                continue;
            }
            out.push(DriftedResource {
                logical_id: d.logical_resource_id().unwrap_or_default().to_string(),
                resource_type: d.resource_type().unwrap_or_default().to_string(),
                status,
                differences: d
                    .property_differences()
                    .iter()
                    .map(|p| PropertyDrift {
                        path: p.property_path().unwrap_or_default().to_string(),
                        kind: p
                            .difference_type()
                            .map(|t| t.as_str().to_string())
                            .unwrap_or_default(),
                        expected: p.expected_value().map(str::to_string),
                        actual: p.actual_value().map(str::to_string),
                    })
                    .collect(),
            });
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out.sort_by(|a, b| a.logical_id.cmp(&b.logical_id));
    Ok(out)
}
