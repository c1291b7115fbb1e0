//! CloudFormation mechanics: the stack's state and what to do about it, change sets (with the
//! two "no changes" answers treated as success), executing one while following its events,
//! and deleting a stack.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{Capability, ChangeSetType, Parameter};
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::Serialize;
use thiserror::Error;

/// Prefix of the change sets this tool creates (so leftovers can be recognised as ours).
pub const CHANGE_SET_PREFIX: &str = "image-pipeline-";

/// What a long CloudFormation operation reports as it goes. The deployer never prints.
pub trait Observer {
    /// A step worth a line ("creating change set", "deleting the failed stack", …).
    fn step(&self, message: &str);
    /// Resource work starts: `total` resources are expected to finish.
    fn begin(&self, total: usize);
    /// A new stack event; `done` resources have finished so far.
    fn event(&self, event: &StackEvent, done: usize);
    /// Resource work is over.
    fn end(&self);
}

/// An observer that ignores everything (tests, JSON-only callers).
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn step(&self, _: &str) {}
    fn begin(&self, _: usize) {}
    fn event(&self, _: &StackEvent, _: usize) {}
    fn end(&self) {}
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackEvent {
    pub id: String,
    pub timestamp: String,
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    pub reason: String,
}

/// One resource that failed, with CloudFormation's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    pub reason: String,
}

/// A planned change of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Add, Modify, Remove, Import, Dynamic.
    pub action: String,
    pub logical_id: String,
    pub resource_type: String,
    /// True, False or Conditional (modifications only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// Whether the resource's own properties changed, as opposed to a value it takes from
    /// another changed resource being re-evaluated.
    pub direct: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackInfo {
    pub name: String,
    pub id: String,
    pub status: String,
    pub reason: Option<String>,
    pub outputs: BTreeMap<String, String>,
}

#[derive(Debug, Error)]
pub enum CfnError {
    #[error("{operation} failed for stack {stack}: {reason}")]
    Call {
        operation: &'static str,
        stack: String,
        reason: String,
    },
    #[error(
        "stack {stack} is {status}: another deployment is running; it did not finish within {waited_s} s (wait for it, or look at it in the CloudFormation console)"
    )]
    Busy {
        stack: String,
        status: String,
        waited_s: u64,
    },
    #[error(
        "stack {stack} is DELETE_FAILED{}: run `cargo xtask teardown` for this stage first", .reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    DeleteFailed {
        stack: String,
        reason: Option<String>,
    },
    #[error("the change set for stack {stack} failed: {reason}")]
    ChangeSetFailed { stack: String, reason: String },
    #[error("{}", failed_message(.stack, .status, .failures))]
    Failed {
        stack: String,
        status: String,
        failures: Vec<Failure>,
    },
    #[error("stack {stack} is still {status} after {waited_s} s")]
    Timeout {
        stack: String,
        status: String,
        waited_s: u64,
    },
}

fn failed_message(stack: &str, status: &str, failures: &[Failure]) -> String {
    let mut s = format!("stack {stack} ended in {status}");
    if failures.is_empty() {
        s.push_str(" (CloudFormation reported no failed resource)");
    }
    for f in failures {
        s.push_str(&format!(
            "\n  {} ({}) {}: {}",
            f.logical_id, f.resource_type, f.status, f.reason
        ));
    }
    s
}

fn call_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &'static str,
    stack: &str,
    e: aws_sdk_cloudformation::error::SdkError<E>,
) -> CfnError {
    let reason = match e.as_service_error().and_then(|s| s.message()) {
        Some(m) => format!("{}: {m}", e.code().unwrap_or("error")),
        None => DisplayErrorContext(&e).to_string(),
    };
    CfnError::Call {
        operation,
        stack: stack.to_string(),
        reason,
    }
}

/// True for the two ways CloudFormation says a change set would change nothing.
pub fn is_no_changes(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
}

pub fn is_in_progress(status: &str) -> bool {
    status.ends_with("_IN_PROGRESS")
}

/// The stack by name, or `None` when it does not exist (or was deleted).
pub async fn describe(cfn: &Client, stack: &str) -> Result<Option<StackInfo>, CfnError> {
    let out = match cfn.describe_stacks().stack_name(stack).send().await {
        Ok(o) => o,
        Err(e) => {
            let missing = e
                .as_service_error()
                .and_then(|s| s.message())
                .is_some_and(|m| m.contains("does not exist"));
            if missing {
                return Ok(None);
            }
            return Err(call_error("DescribeStacks", stack, e));
        }
    };
    let Some(s) = out.stacks().first() else {
        return Ok(None);
    };
    let status = s
        .stack_status()
        .map(|x| x.as_str().to_string())
        .unwrap_or_default();
    if status == "DELETE_COMPLETE" {
        return Ok(None);
    }
    let outputs = s
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect();
    Ok(Some(StackInfo {
        name: s.stack_name().unwrap_or(stack).to_string(),
        id: s.stack_id().unwrap_or_default().to_string(),
        status,
        reason: s
            .stack_status_reason()
            .filter(|r| !r.is_empty())
            .map(str::to_string),
        outputs,
    }))
}

/// Polls until the stack is in no `*_IN_PROGRESS` state (or gone).
pub async fn wait_settled(
    cfn: &Client,
    stack: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<Option<StackInfo>, CfnError> {
    let start = Instant::now();
    loop {
        let info = describe(cfn, stack).await?;
        match &info {
            Some(i) if is_in_progress(&i.status) => {
                if start.elapsed() >= timeout {
                    return Err(CfnError::Busy {
                        stack: stack.to_string(),
                        status: i.status.clone(),
                        waited_s: start.elapsed().as_secs(),
                    });
                }
                tokio::time::sleep(poll).await;
            }
            _ => return Ok(info),
        }
    }
}

/// How the next change set must be made, after dealing with the stack's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    Create,
    Update,
}

/// Brings the stack into a state a change set can start from, saying what it does:
/// waits out another deployment, deletes a stack that never got created, continues a stuck
/// rollback, and removes change sets an interrupted run left behind.
pub async fn prepare(
    cfn: &Client,
    stack: &str,
    wait: Duration,
    poll: Duration,
    obs: &dyn Observer,
) -> Result<Prepared, CfnError> {
    let mut info = describe(cfn, stack).await?;
    if let Some(i) = &info
        && is_in_progress(&i.status)
        && i.status != "REVIEW_IN_PROGRESS"
    {
        obs.step(&format!(
            "stack {stack} is {}: another deployment is running; waiting up to {} s for it",
            i.status,
            wait.as_secs()
        ));
        info = wait_settled(cfn, stack, wait, poll).await?;
    }
    let Some(i) = info else {
        return Ok(Prepared::Create);
    };
    match i.status.as_str() {
        "ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" => {
            obs.step(&format!(
                "stack {stack} is {} (its creation failed earlier); deleting it before creating it again",
                i.status
            ));
            delete(cfn, stack, &i.id, None, wait, poll, obs).await?;
            Ok(Prepared::Create)
        }
        "DELETE_FAILED" => Err(CfnError::DeleteFailed {
            stack: stack.to_string(),
            reason: i.reason,
        }),
        "UPDATE_ROLLBACK_FAILED" => {
            obs.step(&format!(
                "stack {stack} is UPDATE_ROLLBACK_FAILED; continuing the rollback first"
            ));
            cfn.continue_update_rollback()
                .stack_name(stack)
                .send()
                .await
                .map_err(|e| call_error("ContinueUpdateRollback", stack, e))?;
            let after = wait_settled(cfn, stack, wait, poll).await?;
            match after {
                Some(a) if a.status == "UPDATE_ROLLBACK_COMPLETE" => {
                    remove_leftovers(cfn, stack, obs).await?;
                    Ok(Prepared::Update)
                }
                Some(a) => Err(CfnError::Failed {
                    failures: failures_since(cfn, stack, None).await?,
                    stack: stack.to_string(),
                    status: a.status,
                }),
                None => Ok(Prepared::Create),
            }
        }
        // A stack that only ever had a change set created: it has no resources, and the
        // next change set must again be a CREATE.
        "REVIEW_IN_PROGRESS" => {
            remove_leftovers(cfn, stack, obs).await?;
            Ok(Prepared::Create)
        }
        _ => {
            remove_leftovers(cfn, stack, obs).await?;
            Ok(Prepared::Update)
        }
    }
}

/// Deletes change sets of ours that were created but never executed.
async fn remove_leftovers(cfn: &Client, stack: &str, obs: &dyn Observer) -> Result<(), CfnError> {
    let out = cfn
        .list_change_sets()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| call_error("ListChangeSets", stack, e))?;
    for s in out.summaries() {
        let name = s.change_set_name().unwrap_or_default();
        let execution = s.execution_status().map(|x| x.as_str()).unwrap_or_default();
        if name.starts_with(CHANGE_SET_PREFIX) && matches!(execution, "AVAILABLE" | "UNAVAILABLE") {
            obs.step(&format!(
                "removing change set {name} left by an earlier run"
            ));
            cfn.delete_change_set()
                .stack_name(stack)
                .change_set_name(name)
                .send()
                .await
                .map_err(|e| call_error("DeleteChangeSet", stack, e))?;
        }
    }
    Ok(())
}

/// What a change set request carries.
#[derive(Debug, Clone)]
pub struct ChangeSetRequest {
    pub stack: String,
    pub kind: Prepared,
    pub template_body: String,
    pub parameters: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

/// A change set ready to execute, or the news that there is nothing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    Changes {
        name: String,
        stack_id: String,
        changes: Vec<Change>,
    },
    NoChanges,
}

pub fn change_set_name() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{CHANGE_SET_PREFIX}{ms}")
}

/// Creates a change set and waits until CloudFormation has computed it. "No changes" deletes
/// it and returns `Planned::NoChanges`.
pub async fn create_change_set(
    cfn: &Client,
    req: &ChangeSetRequest,
    timeout: Duration,
    poll: Duration,
) -> Result<Planned, CfnError> {
    let stack = req.stack.as_str();
    let name = change_set_name();
    let kind = match req.kind {
        Prepared::Create => ChangeSetType::Create,
        Prepared::Update => ChangeSetType::Update,
    };
    let mut call = cfn
        .create_change_set()
        .stack_name(stack)
        .change_set_name(&name)
        .change_set_type(kind)
        .template_body(&req.template_body)
        .capabilities(Capability::CapabilityIam)
        .capabilities(Capability::CapabilityNamedIam);
    for (k, v) in &req.parameters {
        call = call.parameters(
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build(),
        );
    }
    for (k, v) in &req.tags {
        call = call.tags(
            aws_sdk_cloudformation::types::Tag::builder()
                .key(k)
                .value(v)
                .build(),
        );
    }
    let created = call
        .send()
        .await
        .map_err(|e| call_error("CreateChangeSet", stack, e))?;
    let stack_id = created.stack_id().unwrap_or_default().to_string();

    let start = Instant::now();
    loop {
        let mut changes = Vec::new();
        let mut token: Option<String> = None;
        let (status, reason) = loop {
            let out = cfn
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(&name)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| call_error("DescribeChangeSet", stack, e))?;
            changes.extend(out.changes().iter().filter_map(change_of));
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break (
                    out.status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    out.status_reason().unwrap_or_default().to_string(),
                );
            }
        };
        match status.as_str() {
            "CREATE_COMPLETE" => {
                changes.sort_by(|a, b| a.logical_id.cmp(&b.logical_id));
                return Ok(Planned::Changes {
                    name,
                    stack_id,
                    changes,
                });
            }
            "FAILED" => {
                // Best effort: a failed change set is harmless, but leaves clutter.
                let _ = cfn
                    .delete_change_set()
                    .stack_name(stack)
                    .change_set_name(&name)
                    .send()
                    .await;
                if is_no_changes(&reason) {
                    return Ok(Planned::NoChanges);
                }
                return Err(CfnError::ChangeSetFailed {
                    stack: stack.to_string(),
                    reason,
                });
            }
            _ if start.elapsed() >= timeout => {
                return Err(CfnError::Timeout {
                    stack: stack.to_string(),
                    status: format!("change set {name} {status}"),
                    waited_s: start.elapsed().as_secs(),
                });
            }
            _ => tokio::time::sleep(poll).await,
        }
    }
}

fn change_of(c: &aws_sdk_cloudformation::types::Change) -> Option<Change> {
    let rc = c.resource_change()?;
    let direct = rc.details().iter().any(|d| {
        d.change_source().map(|s| s.as_str()) == Some("DirectModification")
            || d.change_source().map(|s| s.as_str()) == Some("ParameterReference")
    }) || rc.details().is_empty();
    Some(Change {
        action: rc
            .action()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default(),
        logical_id: rc.logical_resource_id().unwrap_or_default().to_string(),
        resource_type: rc.resource_type().unwrap_or_default().to_string(),
        replacement: rc.replacement().map(|r| r.as_str().to_string()),
        direct,
    })
}

/// Removes a change set that will not be executed (`--plan`), and the empty stack a CREATE
/// change set leaves in `REVIEW_IN_PROGRESS`.
pub async fn discard(
    cfn: &Client,
    stack: &str,
    change_set: &str,
    kind: &Prepared,
) -> Result<(), CfnError> {
    cfn.delete_change_set()
        .stack_name(stack)
        .change_set_name(change_set)
        .send()
        .await
        .map_err(|e| call_error("DeleteChangeSet", stack, e))?;
    if *kind == Prepared::Create {
        cfn.delete_stack()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| call_error("DeleteStack", stack, e))?;
    }
    Ok(())
}

/// Executes a change set and follows it to the end. `total` is how many resources the
/// progress expects to finish.
pub async fn execute(
    cfn: &Client,
    stack: &str,
    change_set: &str,
    total: usize,
    timeout: Duration,
    poll: Duration,
    obs: &dyn Observer,
) -> Result<StackInfo, CfnError> {
    let token = change_set.to_string();
    cfn.execute_change_set()
        .stack_name(stack)
        .change_set_name(change_set)
        .client_request_token(&token)
        .send()
        .await
        .map_err(|e| call_error("ExecuteChangeSet", stack, e))?;
    let end = follow(cfn, stack, stack, Some(&token), total, timeout, poll, obs).await?;
    match end {
        Some(info) if matches!(info.status.as_str(), "CREATE_COMPLETE" | "UPDATE_COMPLETE") => {
            Ok(info)
        }
        Some(info) => Err(CfnError::Failed {
            failures: failures_since(cfn, stack, Some(&token)).await?,
            stack: stack.to_string(),
            status: info.status,
        }),
        None => Err(CfnError::Failed {
            failures: Vec::new(),
            stack: stack.to_string(),
            status: "DELETE_COMPLETE".into(),
        }),
    }
}

/// Deletes the stack (by id when known, so a stack of the same name created meanwhile is not
/// touched) and follows the deletion to the end.
pub async fn delete(
    cfn: &Client,
    stack: &str,
    stack_id: &str,
    retain: Option<Vec<String>>,
    timeout: Duration,
    poll: Duration,
    obs: &dyn Observer,
) -> Result<(), CfnError> {
    let token = change_set_name().replace(CHANGE_SET_PREFIX, "delete-");
    let target = if stack_id.is_empty() { stack } else { stack_id };
    let total = resource_count(cfn, target).await.unwrap_or(0);
    cfn.delete_stack()
        .stack_name(target)
        .client_request_token(&token)
        .set_retain_resources(retain)
        .send()
        .await
        .map_err(|e| call_error("DeleteStack", stack, e))?;
    match follow(cfn, stack, target, Some(&token), total, timeout, poll, obs).await? {
        None => Ok(()),
        Some(info) if info.status == "DELETE_COMPLETE" => Ok(()),
        Some(info) => Err(CfnError::Failed {
            failures: failures_since(cfn, target, Some(&token)).await?,
            stack: stack.to_string(),
            status: info.status,
        }),
    }
}

async fn resource_count(cfn: &Client, stack: &str) -> Result<usize, CfnError> {
    let out = cfn
        .describe_stack_resources()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| call_error("DescribeStackResources", stack, e))?;
    Ok(out.stack_resources().len())
}

/// The stack's events that belong to the operation `token` (all recent ones without it),
/// oldest first.
async fn events(
    cfn: &Client,
    stack: &str,
    token: Option<&str>,
) -> Result<Vec<StackEvent>, CfnError> {
    let out = cfn
        .describe_stack_events()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| call_error("DescribeStackEvents", stack, e))?;
    let mut list: Vec<StackEvent> = out
        .stack_events()
        .iter()
        .filter(|e| match (token, e.client_request_token()) {
            (Some(t), Some(c)) => t == c,
            _ => true,
        })
        .map(|e| StackEvent {
            id: e.event_id().unwrap_or_default().to_string(),
            timestamp: e.timestamp().map(|t| t.to_string()).unwrap_or_default(),
            logical_id: e.logical_resource_id().unwrap_or_default().to_string(),
            resource_type: e.resource_type().unwrap_or_default().to_string(),
            status: e
                .resource_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            reason: e.resource_status_reason().unwrap_or_default().to_string(),
        })
        .collect();
    list.reverse();
    Ok(list)
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    cfn: &Client,
    stack: &str,
    target: &str,
    token: Option<&str>,
    total: usize,
    timeout: Duration,
    poll: Duration,
    obs: &dyn Observer,
) -> Result<Option<StackInfo>, CfnError> {
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    let mut finished = BTreeSet::new();
    obs.begin(total);
    let result = loop {
        let info = describe(cfn, target).await?;
        let batch = match events(cfn, target, token).await {
            Ok(b) => b,
            // A deleted stack has no events to list by name; the outcome is known anyway.
            Err(_) if info.is_none() => Vec::new(),
            Err(e) => break Err(e),
        };
        for e in batch {
            if !seen.insert(e.id.clone()) {
                continue;
            }
            if e.resource_type != "AWS::CloudFormation::Stack"
                && (e.status.ends_with("_COMPLETE") || e.status.ends_with("_SKIPPED"))
            {
                finished.insert(e.logical_id.clone());
            }
            obs.event(&e, finished.len());
        }
        match info {
            Some(i) if is_in_progress(&i.status) => {
                if start.elapsed() >= timeout {
                    break Err(CfnError::Timeout {
                        stack: stack.to_string(),
                        status: i.status,
                        waited_s: start.elapsed().as_secs(),
                    });
                }
                tokio::time::sleep(poll).await;
            }
            other => break Ok(other),
        }
    };
    obs.end();
    result
}

/// Resources that failed during the operation `token`, with their reasons. Cancellations
/// caused by another resource's failure are left out when a root cause is known.
pub async fn failures_since(
    cfn: &Client,
    stack: &str,
    token: Option<&str>,
) -> Result<Vec<Failure>, CfnError> {
    let all: Vec<Failure> = events(cfn, stack, token)
        .await?
        .into_iter()
        .filter(|e| {
            e.status.ends_with("_FAILED") && e.resource_type != "AWS::CloudFormation::Stack"
        })
        .map(|e| Failure {
            logical_id: e.logical_id,
            resource_type: e.resource_type,
            status: e.status,
            reason: e.reason,
        })
        .collect();
    let causes: Vec<Failure> = all
        .iter()
        .filter(|f| !f.reason.contains("Resource creation cancelled"))
        .cloned()
        .collect();
    Ok(if causes.is_empty() { all } else { causes })
}
