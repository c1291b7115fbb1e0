//! CloudFormation mechanics: the stack's state and what to do about it, change sets (with the
//! two "no changes" answers treated as success), executing one while following its events,
//! and deleting a stack. States, actions and replacement flags are the SDK's own enums.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{
    Capability, ChangeSetStatus, ChangeSetType, ChangeSource, DeploymentMode, ExecutionStatus,
    Parameter,
};
/// The SDK's enums this module's types carry, for callers without the SDK as a dependency.
pub use aws_sdk_cloudformation::types::{ChangeAction, Replacement, ResourceStatus, StackStatus};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::progress::Progress;

/// CloudFormation's limit for an inline template body.
pub const MAX_TEMPLATE_BODY: usize = 51_200;
/// CloudFormation's limit on a template it reads from S3 (`TemplateURL`), in bytes.
pub const MAX_TEMPLATE_URL_BODY: usize = 1_000_000;

/// Prefix of the change sets this tool creates (so leftovers can be recognised as ours).
pub const CHANGE_SET_PREFIX: &str = "image-pipeline-";

/// The type CloudFormation gives the stack itself in its event list.
const STACK_TYPE: &str = "AWS::CloudFormation::Stack";

/// Serde for the SDK's string enums, as the strings CloudFormation uses.
pub mod sdk_enum {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: AsRef<str>, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_ref())
    }

    pub fn deserialize<'de, T: for<'a> From<&'a str>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        Ok(T::from(s.as_str()))
    }

    /// The same for an optional value.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<T: AsRef<str>, S: Serializer>(
            v: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(v.as_ref()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, T: for<'a> From<&'a str>, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<T>, D::Error> {
            Ok(Option::<String>::deserialize(d)?.map(|s| T::from(s.as_str())))
        }
    }
}

/// True while CloudFormation is working on the stack.
pub fn is_in_progress(status: &StackStatus) -> bool {
    use StackStatus as S;
    match status {
        S::CreateInProgress
        | S::DeleteInProgress
        | S::ImportInProgress
        | S::ImportRollbackInProgress
        | S::ReviewInProgress
        | S::RollbackInProgress
        | S::UpdateCompleteCleanupInProgress
        | S::UpdateInProgress
        | S::UpdateRollbackCompleteCleanupInProgress
        | S::UpdateRollbackInProgress => true,
        // A state newer than this SDK: its name still says whether work is going on.
        other => other.as_str().ends_with("_IN_PROGRESS"),
    }
}

/// True when a stack's resources are in a working state (created, updated, or rolled back to
/// the last good update).
pub fn is_usable(status: &StackStatus) -> bool {
    matches!(
        status,
        StackStatus::CreateComplete
            | StackStatus::UpdateComplete
            | StackStatus::UpdateRollbackComplete
            | StackStatus::ImportComplete
    )
}

/// True for a resource event that ends its work (done or skipped).
pub fn is_finished(status: &ResourceStatus) -> bool {
    let s = status.as_str();
    s.ends_with("_COMPLETE") || s.ends_with("_SKIPPED")
}

/// True for a resource event that reports a failure.
pub fn is_failed(status: &ResourceStatus) -> bool {
    status.as_str().ends_with("_FAILED")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackEvent {
    pub id: String,
    pub timestamp: String,
    pub logical_id: String,
    pub resource_type: String,
    #[serde(with = "sdk_enum")]
    pub status: ResourceStatus,
    pub reason: String,
}

/// One resource that failed, with CloudFormation's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub logical_id: String,
    pub resource_type: String,
    #[serde(with = "sdk_enum")]
    pub status: ResourceStatus,
    pub reason: String,
}

/// A planned change of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    #[serde(with = "sdk_enum")]
    pub action: ChangeAction,
    pub logical_id: String,
    pub resource_type: String,
    /// Modifications only.
    #[serde(
        default,
        with = "sdk_enum::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub replacement: Option<Replacement>,
    /// Whether the resource's own properties changed, as opposed to a value it takes from
    /// another changed resource being re-evaluated.
    pub direct: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackInfo {
    pub name: String,
    pub id: String,
    #[serde(with = "sdk_enum")]
    pub status: StackStatus,
    pub reason: Option<String>,
    pub outputs: BTreeMap<String, String>,
    /// The parameters it was last deployed with (defaults included, as CloudFormation lists
    /// them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The role CloudFormation acts as for this stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// When the stack last changed (its creation when never updated), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
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
        status: StackStatus,
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
        status: StackStatus,
        failures: Vec<Failure>,
    },
    #[error("stack {stack} is still {status} after {waited_s} s")]
    Timeout {
        stack: String,
        status: String,
        waited_s: u64,
    },
}

fn failed_message(stack: &str, status: &StackStatus, failures: &[Failure]) -> String {
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
    CfnError::Call {
        operation,
        stack: stack.to_string(),
        reason: crate::cloud::error::reason(&e),
    }
}

/// True for the two ways CloudFormation says a change set would change nothing.
pub fn is_no_changes(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
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
    let Some(status) = s.stack_status().cloned() else {
        return Ok(None);
    };
    if status == StackStatus::DeleteComplete {
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
        parameters: s
            .parameters()
            .iter()
            .filter_map(|p| {
                Some((
                    p.parameter_key()?.to_string(),
                    p.parameter_value().unwrap_or_default().to_string(),
                ))
            })
            .collect(),
        tags: s
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect(),
        role_arn: s.role_arn().map(str::to_string),
        last_updated: s
            .last_updated_time()
            .or(s.creation_time())
            .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
    }))
}

/// Why a deployed stack is not what a change set request would make it; `None` when it is
/// exactly that (template, parameters, tags and role), so a change set would change nothing.
pub fn difference(
    deployed: &StackInfo,
    deployed_template: &str,
    req: &ChangeSetRequest,
    role_arn: Option<&str>,
) -> Option<String> {
    if !matches!(
        deployed.status,
        StackStatus::CreateComplete
            | StackStatus::UpdateComplete
            | StackStatus::UpdateRollbackComplete
            | StackStatus::ImportComplete
    ) {
        return Some(format!("the stack is {}", deployed.status));
    }
    let ours: serde_json::Value = match serde_json::from_str(&req.template_body) {
        Ok(v) => v,
        Err(e) => return Some(format!("the template does not parse: {e}")),
    };
    let theirs: serde_json::Value = match serde_json::from_str(deployed_template) {
        Ok(v) => v,
        Err(_) => return Some("the deployed template is not JSON".into()),
    };
    if ours != theirs {
        return Some("the template differs".into());
    }
    // CloudFormation lists every parameter, defaults included.
    let mut expected: BTreeMap<String, String> = ours["Parameters"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| {
                    let default = match &v["Default"] {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => return None,
                        other => other.to_string(),
                    };
                    Some((k.clone(), default))
                })
                .collect()
        })
        .unwrap_or_default();
    expected.extend(req.parameters.clone());
    if let Some(k) = expected
        .keys()
        .chain(deployed.parameters.keys())
        .find(|k| expected.get(*k) != deployed.parameters.get(*k))
    {
        return Some(format!("parameter {k} differs"));
    }
    if req.tags != deployed.tags {
        return Some("the stack's tags differ".into());
    }
    if role_arn != deployed.role_arn.as_deref() {
        return Some("the execution role differs".into());
    }
    None
}

/// How the next change set must be made, after dealing with the stack's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    Create,
    Update,
}

/// What a change set request carries.
#[derive(Debug, Clone)]
pub struct ChangeSetRequest {
    pub kind: Prepared,
    /// Where CloudFormation reads the template from when it is over the inline limit: an
    /// object holding exactly `template_body`, which the no-op check compares.
    pub template_url: Option<String>,
    pub template_body: String,
    pub parameters: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// Existing resources to bring under the stack: an IMPORT change set (the template then
    /// holds only these resources, on top of the stack's current ones).
    pub imports: Vec<Import>,
    /// Alarms that roll the change set's execution back. `None` sends no rollback
    /// configuration, and CloudFormation keeps the triggers the stack was last given; an
    /// update states them every time, [`RollbackTriggers::none`] to clear them.
    pub rollback: Option<RollbackTriggers>,
    /// A drift-aware change set (`DeploymentMode` `REVERT_DRIFT`): it also puts back what
    /// was changed outside CloudFormation. Updates only.
    pub revert_drift: bool,
}

impl ChangeSetRequest {
    /// A change set of `kind` for `template_body` inline, with no parameters, tags, imports,
    /// rollback triggers or drift reversal.
    pub fn new(kind: Prepared, template_body: String) -> Self {
        Self {
            kind,
            template_url: None,
            template_body,
            parameters: BTreeMap::new(),
            tags: BTreeMap::new(),
            imports: Vec::new(),
            rollback: None,
            revert_drift: false,
        }
    }
}

/// Alarms CloudFormation watches while it executes a change set and for `minutes` after the
/// last resource is done: one in ALARM rolls the stack back to what it was
/// (`RollbackConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackTriggers {
    pub alarm_arns: Vec<String>,
    pub minutes: u32,
}

impl RollbackTriggers {
    /// No trigger and no monitoring time: sent, it clears what an earlier update set.
    pub fn none() -> Self {
        Self {
            alarm_arns: Vec::new(),
            minutes: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.alarm_arns.is_empty()
    }

    /// The configuration sent: an empty trigger list is sent as such, which is how
    /// CloudFormation is told to drop the triggers it kept from an earlier update.
    fn configuration(&self) -> aws_sdk_cloudformation::types::RollbackConfiguration {
        let triggers = self.alarm_arns.iter().map(|arn| {
            aws_sdk_cloudformation::types::RollbackTrigger::builder()
                .arn(arn)
                .r#type("AWS::CloudWatch::Alarm")
                .build()
        });
        aws_sdk_cloudformation::types::RollbackConfiguration::builder()
            .set_rollback_triggers(Some(triggers.collect()))
            .monitoring_time_in_minutes(i32::try_from(self.minutes).unwrap_or(i32::MAX))
            .build()
    }
}

/// A resource that exists outside any stack, to import: its logical id in the template, its
/// type, and the property that identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub logical_id: String,
    pub resource_type: String,
    pub identifier: (String, String),
}

/// A change set ready to execute, or the news that there is nothing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    Changes {
        name: String,
        /// The change set's ARN: it names this change set of this stack and no other.
        id: String,
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

/// What an operation on a stack came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Created,
    Updated,
    NoChanges,
    Planned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::NoChanges => "no-changes",
            Outcome::Planned => "planned",
        }
    }
}

/// A [`Progress`] that also hears CloudFormation's resource work: what the commands that
/// change a stack report through.
pub trait StackProgress: Progress {
    /// CloudFormation resource work starts: `total` resources are expected to finish.
    fn begin(&self, _total: usize) {}
    /// A new stack event; `done` resources have finished so far.
    fn event(&self, _event: &StackEvent, _done: usize) {}
    /// CloudFormation resource work is over.
    fn end(&self) {}
}

impl<F: Fn(&str)> StackProgress for F {}

/// One stack and what every operation on it shares: the client, how often to poll, and who
/// hears about progress.
pub struct StackOps<'a> {
    pub cfn: &'a Client,
    pub name: &'a str,
    pub poll: Duration,
    pub progress: &'a dyn StackProgress,
    /// The execution role CloudFormation acts as for this stack (`RoleARN`); without one it
    /// acts with the caller's own credentials.
    pub role_arn: Option<&'a str>,
}

impl std::fmt::Debug for StackOps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackOps")
            .field("name", &self.name)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

/// An operation being followed: the stack (by id when known), the request token that marks
/// its events, and how many resources it is expected to finish.
struct Operation<'a> {
    target: &'a str,
    token: &'a str,
    total: usize,
}

impl StackOps<'_> {
    fn error<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        operation: &'static str,
        e: aws_sdk_cloudformation::error::SdkError<E>,
    ) -> CfnError {
        call_error(operation, self.name, e)
    }

    /// The stack's id when known, else its name: once a stack's id is known, work on the id,
    /// so a stack of the same name made meanwhile is never touched.
    fn by_id<'s>(&'s self, stack_id: &'s str) -> &'s str {
        if stack_id.is_empty() {
            self.name
        } else {
            stack_id
        }
    }

    pub async fn describe(&self) -> Result<Option<StackInfo>, CfnError> {
        describe(self.cfn, self.name).await
    }

    /// The template the stack runs, as CloudFormation stores it.
    pub async fn template(&self) -> Result<String, CfnError> {
        let out = self
            .cfn
            .get_template()
            .stack_name(self.name)
            .template_stage(aws_sdk_cloudformation::types::TemplateStage::Original)
            .send()
            .await
            .map_err(|e| self.error("GetTemplate", e))?;
        Ok(out.template_body().unwrap_or_default().to_string())
    }

    /// The deployed stack when it is exactly what `req` would make it (see [`difference`]),
    /// without making a change set; otherwise why not.
    pub async fn up_to_date(
        &self,
        req: &ChangeSetRequest,
    ) -> Result<Result<StackInfo, String>, CfnError> {
        let Some(info) = self.describe().await? else {
            return Ok(Err("the stack does not exist".into()));
        };
        let template = self.template().await?;
        Ok(match difference(&info, &template, req, self.role_arn) {
            None => Ok(info),
            Some(why) => Err(why),
        })
    }

    /// One more poll interval, or `late` (given the stack and the seconds waited) once
    /// `timeout` has passed since `start`.
    async fn wait_or(
        &self,
        start: Instant,
        timeout: Duration,
        late: impl FnOnce(String, u64) -> CfnError,
    ) -> Result<(), CfnError> {
        if start.elapsed() >= timeout {
            return Err(late(self.name.to_string(), start.elapsed().as_secs()));
        }
        tokio::time::sleep(self.poll).await;
        Ok(())
    }

    /// Polls until no operation is running on the stack (or it is gone). A stack in
    /// `REVIEW_IN_PROGRESS` counts as settled: it waits for a change set to be executed, and
    /// would otherwise be waited on until the timeout.
    pub async fn wait_settled(&self, timeout: Duration) -> Result<Option<StackInfo>, CfnError> {
        let start = Instant::now();
        loop {
            let info = self.describe().await?;
            match &info {
                Some(i)
                    if is_in_progress(&i.status) && i.status != StackStatus::ReviewInProgress =>
                {
                    self.wait_or(start, timeout, |stack, waited_s| CfnError::Busy {
                        stack,
                        status: i.status.clone(),
                        waited_s,
                    })
                    .await?;
                }
                _ => return Ok(info),
            }
        }
    }

    /// Brings the stack into a state a change set can start from, saying what it does:
    /// waits out another deployment, deletes a stack that never got created, continues a
    /// stuck rollback, and mentions change sets an interrupted run left behind.
    pub async fn prepare(&self, wait: Duration) -> Result<Prepared, CfnError> {
        let stack = self.name;
        let mut info = self.describe().await?;
        if let Some(i) = &info
            && is_in_progress(&i.status)
            && i.status != StackStatus::ReviewInProgress
        {
            self.progress.step(&format!(
                "stack {stack} is {}: another deployment is running; waiting up to {} s for it",
                i.status,
                wait.as_secs()
            ));
            info = self.wait_settled(wait).await?;
        }
        let Some(i) = info else {
            return Ok(Prepared::Create);
        };
        match i.status {
            StackStatus::RollbackComplete | StackStatus::RollbackFailed => {
                self.progress.step(&format!(
                    "stack {stack} is {} (its creation failed earlier); deleting it before creating it again",
                    i.status
                ));
                self.delete(&i.id, wait).await?;
                Ok(Prepared::Create)
            }
            StackStatus::DeleteFailed => Err(CfnError::DeleteFailed {
                stack: stack.to_string(),
                reason: i.reason,
            }),
            StackStatus::UpdateRollbackFailed => {
                self.progress.step(&format!(
                    "stack {stack} is UPDATE_ROLLBACK_FAILED; continuing the rollback first"
                ));
                self.cfn
                    .continue_update_rollback()
                    .stack_name(stack)
                    .set_role_arn(self.role_arn.map(str::to_string))
                    .send()
                    .await
                    .map_err(|e| self.error("ContinueUpdateRollback", e))?;
                match self.wait_settled(wait).await? {
                    Some(a) if a.status == StackStatus::UpdateRollbackComplete => {
                        self.note_leftovers().await?;
                        Ok(Prepared::Update)
                    }
                    Some(a) => Err(CfnError::Failed {
                        failures: self.failures(stack, None).await?,
                        stack: stack.to_string(),
                        status: a.status,
                    }),
                    None => Ok(Prepared::Create),
                }
            }
            // A stack that only ever had a change set created: it has no resources, and the
            // next change set must again be a CREATE.
            StackStatus::ReviewInProgress => {
                self.note_leftovers().await?;
                Ok(Prepared::Create)
            }
            _ => {
                self.note_leftovers().await?;
                Ok(Prepared::Update)
            }
        }
    }

    /// Says which change sets of ours were created but never executed. They are left alone:
    /// another run may be about to execute one, and CloudFormation removes them all when a
    /// change set of this stack is executed. This run deletes only what it created.
    async fn note_leftovers(&self) -> Result<(), CfnError> {
        let out = self
            .cfn
            .list_change_sets()
            .stack_name(self.name)
            .send()
            .await
            .map_err(|e| self.error("ListChangeSets", e))?;
        for s in out.summaries() {
            let name = s.change_set_name().unwrap_or_default();
            let unexecuted = matches!(
                s.execution_status(),
                Some(ExecutionStatus::Available | ExecutionStatus::Unavailable)
            );
            if name.starts_with(CHANGE_SET_PREFIX) && unexecuted {
                self.progress.step(&format!(
                    "change set {name} was left by an earlier run (or another one is about to execute it); it is not touched"
                ));
            }
        }
        Ok(())
    }

    /// Creates a change set and waits until CloudFormation has computed it. "No changes"
    /// deletes it and returns `Planned::NoChanges`.
    pub async fn create_change_set(
        &self,
        req: &ChangeSetRequest,
        timeout: Duration,
    ) -> Result<Planned, CfnError> {
        let stack = self.name;
        let name = change_set_name();
        let kind = match req.kind {
            _ if !req.imports.is_empty() => ChangeSetType::Import,
            Prepared::Create => ChangeSetType::Create,
            Prepared::Update => ChangeSetType::Update,
        };
        let revert = req.revert_drift && kind == ChangeSetType::Update;
        let imports = req.imports.iter().map(|i| {
            aws_sdk_cloudformation::types::ResourceToImport::builder()
                .logical_resource_id(&i.logical_id)
                .resource_type(&i.resource_type)
                .resource_identifier(&i.identifier.0, &i.identifier.1)
                .build()
        });
        let imports: Vec<_> = imports.collect();
        let parameters = req.parameters.iter().map(|(k, v)| {
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        });
        let tags = req.tags.iter().map(|(k, v)| {
            aws_sdk_cloudformation::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
        });
        let created = self
            .cfn
            .create_change_set()
            .stack_name(stack)
            .change_set_name(&name)
            .change_set_type(kind)
            .set_template_body(
                req.template_url
                    .is_none()
                    .then(|| req.template_body.clone()),
            )
            .set_template_url(req.template_url.clone())
            .capabilities(Capability::CapabilityIam)
            .capabilities(Capability::CapabilityNamedIam)
            .set_role_arn(self.role_arn.map(str::to_string))
            .set_resources_to_import((!imports.is_empty()).then_some(imports))
            .set_parameters(Some(parameters.collect()))
            .set_tags(Some(tags.collect()))
            .set_rollback_configuration(req.rollback.as_ref().map(RollbackTriggers::configuration))
            .set_deployment_mode(revert.then_some(DeploymentMode::RevertDrift))
            .send()
            .await
            .map_err(|e| self.error("CreateChangeSet", e))?;
        let stack_id = created.stack_id().unwrap_or_default().to_string();
        let id = created.id().unwrap_or_default().to_string();

        let start = Instant::now();
        loop {
            let (status, reason, mut changes) = self.read_change_set(&name).await?;
            match status {
                ChangeSetStatus::CreateComplete => {
                    changes.sort_by(|a, b| a.logical_id.cmp(&b.logical_id));
                    return Ok(Planned::Changes {
                        name,
                        id,
                        stack_id,
                        changes,
                    });
                }
                ChangeSetStatus::Failed => {
                    // Best effort: a failed change set is harmless, but leaves clutter.
                    let _ = self
                        .cfn
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
                _ => tokio::time::sleep(self.poll).await,
            }
        }
    }

    /// A change set's status, status reason and changes (every page).
    async fn read_change_set(
        &self,
        name: &str,
    ) -> Result<(ChangeSetStatus, String, Vec<Change>), CfnError> {
        let mut changes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .cfn
                .describe_change_set()
                .stack_name(self.name)
                .change_set_name(name)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| self.error("DescribeChangeSet", e))?;
            changes.extend(out.changes().iter().filter_map(change_of));
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                let status = out
                    .status()
                    .cloned()
                    .unwrap_or(ChangeSetStatus::CreatePending);
                let reason = out.status_reason().unwrap_or_default().to_string();
                return Ok((status, reason, changes));
            }
        }
    }

    /// Removes a change set that will not be executed (`--plan`), and the empty stack a
    /// CREATE change set leaves in `REVIEW_IN_PROGRESS`, by id, so that a stack of the same
    /// name another run created meanwhile is not touched.
    pub async fn discard(
        &self,
        change_set: &str,
        stack_id: &str,
        kind: Prepared,
    ) -> Result<(), CfnError> {
        self.cfn
            .delete_change_set()
            .stack_name(self.name)
            .change_set_name(change_set)
            .send()
            .await
            .map_err(|e| self.error("DeleteChangeSet", e))?;
        if kind == Prepared::Create {
            let target = self.by_id(stack_id);
            self.cfn
                .delete_stack()
                .stack_name(target)
                .set_role_arn(self.role_arn.map(str::to_string))
                .send()
                .await
                .map_err(|e| self.error("DeleteStack", e))?;
        }
        Ok(())
    }

    /// Executes a change set, named by its ARN when known, and follows it to the end on the
    /// stack's id when known, so a stack of the same name made meanwhile is never mistaken
    /// for it. `total` is how many resources the progress expects to finish.
    pub async fn execute(
        &self,
        change_set: &str,
        (change_set_id, stack_id): (&str, &str),
        total: usize,
        timeout: Duration,
    ) -> Result<StackInfo, CfnError> {
        let stack = self.by_id(stack_id);
        let which = if change_set_id.is_empty() {
            change_set
        } else {
            change_set_id
        };
        self.cfn
            .execute_change_set()
            .stack_name(self.name)
            .change_set_name(which)
            .client_request_token(change_set)
            .send()
            .await
            .map_err(|e| self.error("ExecuteChangeSet", e))?;
        let op = Operation {
            target: stack,
            token: change_set,
            total,
        };
        match self.follow(&op, timeout).await? {
            Some(info)
                if matches!(
                    info.status,
                    StackStatus::CreateComplete
                        | StackStatus::UpdateComplete
                        | StackStatus::ImportComplete
                ) =>
            {
                Ok(info)
            }
            Some(info) => Err(CfnError::Failed {
                failures: self.failures(stack, Some(change_set)).await?,
                stack: self.name.to_string(),
                status: info.status,
            }),
            None => Err(CfnError::Failed {
                failures: Vec::new(),
                stack: self.name.to_string(),
                status: StackStatus::DeleteComplete,
            }),
        }
    }

    /// Deletes the stack (by id when known, so a stack of the same name created meanwhile is
    /// not touched) and follows the deletion to the end.
    pub async fn delete(&self, stack_id: &str, timeout: Duration) -> Result<(), CfnError> {
        let token = change_set_name().replace(CHANGE_SET_PREFIX, "delete-");
        let target = self.by_id(stack_id);
        let total = self.resource_count(target).await.unwrap_or(0);
        self.cfn
            .delete_stack()
            .stack_name(target)
            .set_role_arn(self.role_arn.map(str::to_string))
            .client_request_token(&token)
            .send()
            .await
            .map_err(|e| self.error("DeleteStack", e))?;
        let op = Operation {
            target,
            token: &token,
            total,
        };
        match self.follow(&op, timeout).await? {
            None => Ok(()),
            Some(info) if info.status == StackStatus::DeleteComplete => Ok(()),
            Some(info) => Err(CfnError::Failed {
                failures: self.failures(target, Some(&token)).await?,
                stack: self.name.to_string(),
                status: info.status,
            }),
        }
    }

    async fn resource_count(&self, target: &str) -> Result<usize, CfnError> {
        let out = self
            .cfn
            .describe_stack_resources()
            .stack_name(target)
            .send()
            .await
            .map_err(|e| self.error("DescribeStackResources", e))?;
        Ok(out.stack_resources().len())
    }

    /// The stack's events that belong to the operation `token` (all of them without it),
    /// oldest first. Pages back until it reaches the operation's first event, so a root
    /// cause early in a long operation is not missed.
    async fn events(&self, target: &str, token: Option<&str>) -> Result<Vec<StackEvent>, CfnError> {
        let mut list = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .cfn
                .describe_stack_events()
                .stack_name(target)
                .set_next_token(next.clone())
                .send()
                .await
                .map_err(|e| self.error("DescribeStackEvents", e))?;
            let mut older_than_operation = false;
            for e in out.stack_events() {
                match (token, e.client_request_token()) {
                    (Some(t), Some(c)) if t != c => {
                        older_than_operation = true;
                        continue;
                    }
                    _ => {}
                }
                list.push(StackEvent {
                    id: e.event_id().unwrap_or_default().to_string(),
                    timestamp: e.timestamp().map(|t| t.to_string()).unwrap_or_default(),
                    logical_id: e.logical_resource_id().unwrap_or_default().to_string(),
                    resource_type: e.resource_type().unwrap_or_default().to_string(),
                    status: e
                        .resource_status()
                        .cloned()
                        .unwrap_or_else(|| ResourceStatus::from("UNKNOWN")),
                    reason: e.resource_status_reason().unwrap_or_default().to_string(),
                });
            }
            next = out.next_token().map(str::to_string);
            // Events come newest first: once one of an earlier operation shows up, the rest
            // are older still.
            if next.is_none() || older_than_operation || token.is_none() {
                break;
            }
        }
        list.reverse();
        Ok(list)
    }

    async fn follow(
        &self,
        op: &Operation<'_>,
        timeout: Duration,
    ) -> Result<Option<StackInfo>, CfnError> {
        let start = Instant::now();
        let mut seen = BTreeSet::new();
        let mut finished = BTreeSet::new();
        self.progress.begin(op.total);
        let result = loop {
            let info = describe(self.cfn, op.target).await?;
            let batch = match self.events(op.target, Some(op.token)).await {
                Ok(b) => b,
                // A deleted stack has no events to list by name; the outcome is known anyway.
                Err(_) if info.is_none() => Vec::new(),
                Err(e) => break Err(e),
            };
            for e in batch {
                if !seen.insert(e.id.clone()) {
                    continue;
                }
                if e.resource_type != STACK_TYPE && is_finished(&e.status) {
                    finished.insert(e.logical_id.clone());
                }
                self.progress.event(&e, finished.len());
            }
            match info {
                Some(i) if is_in_progress(&i.status) => {
                    let waited =
                        self.wait_or(start, timeout, |stack, waited_s| CfnError::Timeout {
                            stack,
                            status: i.status.to_string(),
                            waited_s,
                        });
                    if let Err(e) = waited.await {
                        break Err(e);
                    }
                }
                other => break Ok(other),
            }
        };
        self.progress.end();
        result
    }

    /// Resources that failed during the operation `token`, with their reasons. Cancellations
    /// caused by another resource's failure are left out when a root cause is known; when no
    /// resource failed, the stack's own failure and its reason.
    pub async fn failures(
        &self,
        target: &str,
        token: Option<&str>,
    ) -> Result<Vec<Failure>, CfnError> {
        let events = self.events(target, token).await?;
        // Why the stack began to roll back, when no resource failed: a rollback trigger's
        // alarm, or a cancelled update.
        let rollback_started: Vec<Failure> = events
            .iter()
            .filter(|e| {
                e.resource_type == STACK_TYPE
                    && e.status.as_str().ends_with("ROLLBACK_IN_PROGRESS")
                    && !e.reason.is_empty()
            })
            .map(|e| Failure {
                logical_id: e.logical_id.clone(),
                resource_type: e.resource_type.clone(),
                status: e.status.clone(),
                reason: e.reason.clone(),
            })
            .collect();
        let failed: Vec<Failure> = events
            .into_iter()
            .filter(|e| is_failed(&e.status))
            .map(|e| Failure {
                logical_id: e.logical_id,
                resource_type: e.resource_type,
                status: e.status,
                reason: e.reason,
            })
            .collect();
        let (stack, resources): (Vec<Failure>, Vec<Failure>) = failed
            .into_iter()
            .partition(|f| f.resource_type == STACK_TYPE);
        let causes: Vec<Failure> = resources
            .iter()
            .filter(|f| !f.reason.contains("Resource creation cancelled"))
            .cloned()
            .collect();
        // When no resource failed (a template the service refused before creating any),
        // the stack's own event carries the reason. A create or update that fails
        // CloudFormation's pre-deployment validation says only "Validation failed with N
        // error(s). Call DescribeEvents …": the errors themselves are operation events.
        Ok(match (causes.is_empty(), resources.is_empty()) {
            (false, _) => causes,
            (true, false) => resources,
            (true, true) if stack.iter().any(|f| f.reason.contains("DescribeEvents")) => {
                let status = stack.first().map(|f| f.status.clone());
                match self.validation_errors(target, status).await {
                    Ok(errors) if !errors.is_empty() => errors,
                    _ => stack,
                }
            }
            (true, true) if stack.is_empty() => rollback_started,
            (true, true) => stack,
        })
    }

    /// The validation errors of the stack's latest failed operation (`DescribeEvents`), each
    /// as a failure of the resource it names, with the property path and the reason.
    async fn validation_errors(
        &self,
        target: &str,
        status: Option<ResourceStatus>,
    ) -> Result<Vec<Failure>, CfnError> {
        let out = self
            .cfn
            .describe_events()
            .stack_name(target)
            .filters(
                aws_sdk_cloudformation::types::EventFilter::builder()
                    .failed_events(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("DescribeEvents", e))?;
        let events = out.operation_events();
        let latest = events
            .iter()
            .max_by_key(|e| e.timestamp().map(|t| (t.secs(), t.subsec_nanos())))
            .and_then(|e| e.operation_id());
        let status = status.unwrap_or_else(|| ResourceStatus::from("VALIDATION_FAILED"));
        Ok(events
            .iter()
            .filter(|e| e.operation_id() == latest)
            .filter(|e| {
                e.event_type() == Some(&aws_sdk_cloudformation::types::EventType::ValidationError)
            })
            .map(|e| Failure {
                logical_id: e.logical_resource_id().unwrap_or_default().to_string(),
                resource_type: e.resource_type().unwrap_or_default().to_string(),
                status: status.clone(),
                reason: validation_reason(
                    e.validation_name(),
                    e.validation_path(),
                    e.validation_status_reason(),
                ),
            })
            .collect())
    }
}

/// One validation error in words: "NAME_CONFLICT_VALIDATION at /Resources/X: reason".
fn validation_reason(name: Option<&str>, path: Option<&str>, reason: Option<&str>) -> String {
    let mut s = String::from(name.unwrap_or("validation failed"));
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        s.push_str(&format!(" at {p}"));
    }
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        s.push_str(&format!(": {r}"));
    }
    s
}

fn change_of(c: &aws_sdk_cloudformation::types::Change) -> Option<Change> {
    let rc = c.resource_change()?;
    let direct = rc.details().is_empty()
        || rc.details().iter().any(|d| {
            matches!(
                d.change_source(),
                Some(ChangeSource::DirectModification | ChangeSource::ParameterReference)
            )
        });
    Some(Change {
        action: rc.action()?.clone(),
        logical_id: rc.logical_resource_id().unwrap_or_default().to_string(),
        resource_type: rc.resource_type().unwrap_or_default().to_string(),
        replacement: rc.replacement().cloned(),
        direct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::123456789012:role/ImagePipelineExec-release-eu-west-1";

    fn request() -> ChangeSetRequest {
        ChangeSetRequest {
            kind: Prepared::Update,
            template_url: None,
            template_body: r#"{"Parameters":{"Stage":{"Type":"String"},"Endpoint":{"Type":"String","Default":""},"UploadCodeKey":{"Type":"String"}},"Resources":{"T":{"Type":"AWS::DynamoDB::Table"}}}"#.into(),
            parameters: BTreeMap::from([
                ("Stage".into(), "dev".into()),
                ("UploadCodeKey".into(), "dev/lambda/x86_64/upload/aa.zip".into()),
            ]),
            tags: BTreeMap::from([("stage".into(), "dev".into())]),
            imports: Vec::new(),
            rollback: None,
            revert_drift: false,
        }
    }

    /// The stack as `request()` deployed it, as DescribeStacks and GetTemplate report it:
    /// defaults listed, the template reformatted.
    fn deployed() -> (StackInfo, String) {
        let info = StackInfo {
            name: "image-pipeline-dev".into(),
            id: "id".into(),
            status: StackStatus::UpdateComplete,
            reason: None,
            outputs: BTreeMap::new(),
            parameters: BTreeMap::from([
                ("Stage".into(), "dev".into()),
                ("Endpoint".into(), String::new()),
                (
                    "UploadCodeKey".into(),
                    "dev/lambda/x86_64/upload/aa.zip".into(),
                ),
            ]),
            tags: BTreeMap::from([("stage".into(), "dev".into())]),
            role_arn: Some(ROLE.into()),
            last_updated: None,
        };
        let template = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(&request().template_body).unwrap(),
        )
        .unwrap();
        (info, template)
    }

    #[test]
    fn an_identical_stack_needs_no_change_set() {
        let (info, template) = deployed();
        assert_eq!(difference(&info, &template, &request(), Some(ROLE)), None);
        for status in [
            StackStatus::CreateComplete,
            StackStatus::UpdateRollbackComplete,
            StackStatus::ImportComplete,
        ] {
            let info = StackInfo {
                status,
                ..info.clone()
            };
            assert_eq!(difference(&info, &template, &request(), Some(ROLE)), None);
        }
    }

    #[test]
    fn every_input_of_a_deploy_counts() {
        let (info, template) = deployed();
        let check = |what: &str, info: &StackInfo, template: &str, req: &ChangeSetRequest, role| {
            let d = difference(info, template, req, role);
            assert!(d.is_some(), "{what} went unnoticed");
        };
        // The template: a resource, a property.
        let other = template.replace("AWS::DynamoDB::Table", "AWS::S3::Bucket");
        check("a template change", &info, &other, &request(), Some(ROLE));
        // A parameter: the artifact key (new code), the stage, a default overridden.
        for (k, v) in [
            ("UploadCodeKey", "dev/lambda/x86_64/upload/bb.zip"),
            ("Stage", "pr-1"),
            ("Endpoint", "http://127.0.0.1:4599"),
        ] {
            let mut req = request();
            req.parameters.insert(k.into(), v.into());
            check(k, &info, &template, &req, Some(ROLE));
        }
        // A parameter the stack has and the request does not give (removed from the template).
        let mut extra = info.clone();
        extra.parameters.insert("Old".into(), "x".into());
        check(
            "a stale parameter",
            &extra,
            &template,
            &request(),
            Some(ROLE),
        );
        let mut req = request();
        req.tags.insert("owner".into(), "me".into());
        check("a tag", &info, &template, &req, Some(ROLE));
        check(
            "the role",
            &info,
            &template,
            &request(),
            Some("arn:aws:iam::1:role/other"),
        );
        check("no role", &info, &template, &request(), None);
        for status in [
            StackStatus::UpdateRollbackFailed,
            StackStatus::RollbackComplete,
            StackStatus::UpdateInProgress,
            StackStatus::ReviewInProgress,
        ] {
            let s = StackInfo {
                status,
                ..info.clone()
            };
            check("an unsettled stack", &s, &template, &request(), Some(ROLE));
        }
        check(
            "a template that is not JSON",
            &info,
            "Resources: {}",
            &request(),
            Some(ROLE),
        );
    }
}
