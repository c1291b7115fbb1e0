//! `status`: one look at a deployed stage. The stack's state, outputs and API URL; each
//! function's deployed code against what was built here; whether the template this checkout
//! synthesizes differs from the deployed one; the pace the stage was deployed with; the work
//! queue (depth, its oldest message's age) and its dead-letter queue; the items by status.
//! What cannot be read is reported as a problem beside the rest, never hidden.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use stack::synth::PARAM_ARCHITECTURE;
use stack::{App, Architecture, Stage};

use crate::build::{self, BuildArch, Manifest};
use crate::cloud::aws::{self, AwsError, Clients, Identity, Target};
use crate::cloud::cfn::{CfnError, StackOps, StackProgress};
use crate::cloud::drift::{self, DriftReport};
use crate::cloud::queue::{QueueCounts, oldest_message_age, queue_counts};
use crate::cloud::stage::{StackOutputs, client_api_url};
use crate::ops::deploy::template_body;

#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub target: Target,
    pub stage: Stage,
    /// Also run CloudFormation drift detection on the stack (`--drift`).
    pub drift: bool,
}

/// How a function's deployed code compares with the artifact built in this checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeState {
    /// Lambda runs exactly the artifact in the local manifest.
    Current,
    /// Lambda runs other code than the artifact built here (a newer build not deployed, or
    /// a deploy from elsewhere).
    Stale,
    /// Nothing is built here for the stack's architecture.
    NotBuilt,
    /// The function could not be read.
    Unknown,
}

impl CodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            CodeState::Current => "current",
            CodeState::Stale => "stale",
            CodeState::NotBuilt => "not built",
            CodeState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionStatus {
    pub function: String,
    pub name: Option<String>,
    /// `CodeSha256` as Lambda reports it.
    pub deployed: Option<String>,
    /// `CodeSha256` of the artifact in the local manifest.
    pub built: Option<String>,
    pub state: CodeState,
    pub last_modified: Option<String>,
}

/// Whether the template this checkout synthesizes is the deployed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TemplateState {
    Same,
    Differs,
    Unknown,
}

/// The pace a stage was deployed with (its `DetectLabelsTps`, `ProcessMaximumConcurrency` and
/// `DetectLabelsIntervalMs` parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pace {
    pub quota_tps: u32,
    pub max_concurrency: u32,
    pub interval_ms: u32,
}

impl Pace {
    fn of(parameters: &BTreeMap<String, String>) -> Option<Self> {
        let n = |k: &str| parameters.get(k)?.parse().ok();
        Some(Self {
            quota_tps: n(stack::app::LABELS_TPS_PARAM)?,
            max_concurrency: n(stack::app::PROCESS_CONCURRENCY_PARAM)?,
            interval_ms: n(stack::app::LABELS_INTERVAL_PARAM)?,
        })
    }
}

/// One of the stage's CloudWatch alarms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmStatus {
    pub name: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    pub reason: String,
    /// When the state last changed (RFC 3339).
    pub since: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub stack: String,
    pub stage: String,
    pub target: String,
    pub identity: Identity,
    /// `None` when the stack does not exist.
    pub stack_status: Option<String>,
    pub stack_reason: Option<String>,
    pub last_updated: Option<String>,
    pub architecture: Option<String>,
    pub outputs: BTreeMap<String, String>,
    pub api_url: Option<String>,
    pub functions: Vec<FunctionStatus>,
    pub template: TemplateState,
    /// The DetectLabels quota the stage is paced for, and the pace, from its parameters.
    pub pace: Option<Pace>,
    /// The work queue's messages: waiting, in flight or held back, delayed.
    pub work_queue: Option<QueueCounts>,
    /// The age in seconds of the work queue's oldest message (CloudWatch's
    /// `ApproximateAgeOfOldestMessage`); `None` with `oldest_message_note` saying why.
    pub oldest_message_age: Option<u64>,
    pub oldest_message_note: Option<String>,
    /// Messages in the work queue's dead-letter queue, visible or in flight.
    pub dead_letter_depth: Option<u64>,
    /// The stage's alarms and their states.
    pub alarms: Vec<AlarmStatus>,
    /// Items of the images table by `status` (a full read of the table).
    pub items: Option<BTreeMap<String, u64>>,
    /// What drift detection found (`--drift` only).
    pub drift: Option<DriftReport>,
    /// What could not be read, and why.
    pub problems: Vec<String>,
}

fn sdk<E: std::error::Error + 'static>(what: &str, e: E) -> String {
    format!("{what}: {}", crate::cloud::error::chain(&e))
}

/// Reads the stage's state. Fails only when the target cannot be reached or the stack
/// cannot be described; each other part that cannot be read becomes a problem.
pub async fn status(
    cfg: &StatusConfig,
    progress: &dyn StackProgress,
) -> Result<StatusReport, StatusError> {
    let app = App::image_pipeline();
    let stack_name = cfg.stage.stack_name();
    let (clients, identity) = aws::connect(&cfg.target).await?;
    progress.step(&format!(
        "reading stack {stack_name} in {} as {}",
        cfg.target.describe(),
        identity.arn
    ));
    let ops = StackOps {
        cfn: &clients.cfn,
        name: &stack_name,
        poll: aws::poll_interval(&cfg.target),
        progress,
        role_arn: None,
    };
    let mut report = StatusReport {
        stack: stack_name.clone(),
        stage: cfg.stage.as_str().to_string(),
        target: cfg.target.describe(),
        identity,
        stack_status: None,
        stack_reason: None,
        last_updated: None,
        architecture: None,
        outputs: BTreeMap::new(),
        api_url: None,
        functions: Vec::new(),
        template: TemplateState::Unknown,
        pace: None,
        work_queue: None,
        oldest_message_age: None,
        oldest_message_note: None,
        dead_letter_depth: None,
        alarms: Vec::new(),
        items: None,
        drift: None,
        problems: Vec::new(),
    };
    let Some(info) = ops.describe().await? else {
        return Ok(report);
    };
    report.stack_status = Some(info.status.to_string());
    report.stack_reason = info.reason.clone();
    report.last_updated = info.last_updated.clone();
    let outputs = StackOutputs::of(&info);
    report.api_url = outputs
        .get(stack::app::outputs::API_URL)
        .map(|u| client_api_url(&cfg.target, u));
    report.outputs = info.outputs.clone();
    report.pace = Pace::of(&info.parameters);

    // The architecture the stack runs; the local environment builds for the host.
    let arch: Option<Architecture> = info
        .parameters
        .get(PARAM_ARCHITECTURE)
        .and_then(|a| a.parse().ok());
    report.architecture = arch.map(|a| a.as_str().to_string());
    let build_arch = if cfg.target.is_local() {
        BuildArch::Host
    } else {
        BuildArch::Lambda(arch.unwrap_or(Architecture::Arm64))
    };
    let manifest = build::read_manifest(build_arch);

    match (arch, ops.template().await) {
        (Some(a), Ok(deployed)) => match template_body(&app, &cfg.stage, a) {
            Ok(ours) => report.template = compare_templates(&ours, &deployed),
            Err(e) => report.problems.push(format!("cannot synthesize: {e}")),
        },
        (None, _) => report
            .problems
            .push("the stack has no Architecture parameter".into()),
        (_, Err(e)) => report.problems.push(e.to_string()),
    }

    report.functions = functions(&clients, &app, &info.outputs, manifest.as_ref()).await;
    for f in &report.functions {
        if f.state == CodeState::Unknown {
            report.problems.push(format!(
                "cannot read the {} function ({})",
                f.function,
                f.name.as_deref().unwrap_or("no output names it")
            ));
        }
    }

    read_queue_and_items(&clients, &outputs, &mut report).await;
    read_alarms(&clients.cloudwatch, &cfg.stage, &mut report).await;
    if cfg.drift {
        read_drift(&clients.cfn, cfg, progress, &mut report).await;
    }
    Ok(report)
}

/// The stage's alarms (`DescribeAlarms` by name); one that does not exist is a problem.
async fn read_alarms(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    stage: &Stage,
    report: &mut StatusReport,
) {
    let names = stack::app::alarms::names(stage);
    let out = match cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(names.clone()))
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            report.problems.push(sdk("cannot read the alarms", e));
            return;
        }
    };
    for name in names {
        let Some(a) = out
            .metric_alarms()
            .iter()
            .find(|a| a.alarm_name() == Some(name.as_str()))
        else {
            report.problems.push(format!(
                "alarm {name} does not exist (a stage deployed before the alarms: deploy it again)"
            ));
            continue;
        };
        report.alarms.push(AlarmStatus {
            state: a
                .state_value()
                .map_or_else(|| "unknown".to_string(), |s| s.as_str().to_string()),
            reason: a.state_reason().unwrap_or_default().to_string(),
            since: a.state_updated_timestamp().and_then(|t| {
                t.fmt(aws_sdk_cloudwatch::primitives::DateTimeFormat::DateTime)
                    .ok()
            }),
            name,
        });
    }
}

/// Runs drift detection on the stage's stack; what it found, or a problem saying why not.
async fn read_drift(
    cfn: &aws_sdk_cloudformation::Client,
    cfg: &StatusConfig,
    progress: &dyn StackProgress,
    report: &mut StatusReport,
) {
    progress.step("detecting drift (CloudFormation compares every resource it can read)");
    let poll = aws::poll_interval(&cfg.target);
    match drift::detect(cfn, &report.stack, poll, DRIFT_TIMEOUT).await {
        Ok(d) => report.drift = Some(d),
        Err(e) => report.problems.push(e),
    }
}

/// How long drift detection may take (AWS: "up to several minutes").
const DRIFT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// How far back `status` looks for the oldest message's age: SQS publishes it each minute.
const AGE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The work queue (depth, and its oldest message's age), the dead-letter queue's depth and
/// the items by status; what cannot be read is a problem.
async fn read_queue_and_items(
    clients: &aws::Clients,
    outputs: &StackOutputs,
    report: &mut StatusReport,
) {
    match outputs.need(stack::app::outputs::WORK_QUEUE_URL) {
        Ok(url) => {
            match queue_counts(&clients.sqs, &url).await {
                Ok(c) => report.work_queue = Some(c),
                Err(e) => report
                    .problems
                    .push(format!("cannot read the work queue: {e}")),
            }
            match oldest_message_age(&clients.cloudwatch, &url, AGE_WINDOW).await {
                Ok(Some(age)) => report.oldest_message_age = Some(age),
                Ok(None) => {
                    report.oldest_message_note = Some(
                        "no ApproximateAgeOfOldestMessage datapoint in the last 5 minutes (SQS publishes one a minute for an active queue; the local environment publishes none)"
                            .into(),
                    )
                }
                Err(e) => report.problems.push(e),
            }
        }
        Err(e) => report.problems.push(e.to_string()),
    }
    match outputs.need(stack::app::outputs::DEAD_LETTER_QUEUE_URL) {
        Ok(url) => match queue_counts(&clients.sqs, &url).await {
            Ok(c) => report.dead_letter_depth = Some(c.visible + c.in_flight),
            Err(e) => report
                .problems
                .push(format!("cannot read the dead-letter queue: {e}")),
        },
        Err(e) => report.problems.push(e.to_string()),
    }
    match outputs.need(stack::app::outputs::TABLE) {
        Ok(table) => match item_counts(&clients.dynamodb, &table).await {
            Ok(c) => report.items = Some(c),
            Err(e) => report.problems.push(e),
        },
        Err(e) => report.problems.push(e.to_string()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Stack(#[from] CfnError),
}

/// Same when both parse as the same JSON value.
pub fn compare_templates(ours: &str, deployed: &str) -> TemplateState {
    match (
        serde_json::from_str::<serde_json::Value>(ours),
        serde_json::from_str::<serde_json::Value>(deployed),
    ) {
        (Ok(a), Ok(b)) if a == b => TemplateState::Same,
        (Ok(_), Ok(_)) => TemplateState::Differs,
        _ => TemplateState::Unknown,
    }
}

/// The state of one function's code from what Lambda reports and what is built here.
pub fn code_state(deployed: Option<&str>, built: Option<&str>) -> CodeState {
    match (deployed, built) {
        (None, _) => CodeState::Unknown,
        (Some(_), None) => CodeState::NotBuilt,
        (Some(d), Some(b)) if d == b => CodeState::Current,
        (Some(_), Some(_)) => CodeState::Stale,
    }
}

async fn functions(
    clients: &Clients,
    app: &App,
    outputs: &BTreeMap<String, String>,
    manifest: Option<&Manifest>,
) -> Vec<FunctionStatus> {
    let mut list = Vec::new();
    for f in &app.functions {
        let name = outputs.get(&f.function_name_output()).cloned();
        let built = manifest.and_then(|m| {
            m.functions
                .iter()
                .find(|a| a.function == f.name)
                .map(|a| a.code_sha256.clone())
        });
        let mut deployed = None;
        let mut last_modified = None;
        if let Some(n) = &name
            && let Ok(out) = clients.lambda.get_function().function_name(n).send().await
            && let Some(c) = out.configuration()
        {
            deployed = c.code_sha256().map(str::to_string);
            last_modified = c.last_modified().map(str::to_string);
        }
        list.push(FunctionStatus {
            function: f.name.to_string(),
            state: code_state(deployed.as_deref(), built.as_deref()),
            name,
            deployed,
            built,
            last_modified,
        });
    }
    list
}

/// Counts the table's items by their `status` attribute, reading only that attribute.
async fn item_counts(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<BTreeMap<String, u64>, String> {
    let mut counts = BTreeMap::new();
    let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
    loop {
        let out = db
            .scan()
            .table_name(table)
            .projection_expression("#s")
            .expression_attribute_names("#s", "status")
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| sdk("cannot count the items", e))?;
        for item in out.items() {
            let status = match item.get("status") {
                Some(AttributeValue::S(s)) => api_types::ImageStatus::parse(s).as_str(),
                _ => "no status",
            };
            *counts.entry(status.to_string()).or_insert(0) += 1;
        }
        match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_states() {
        assert_eq!(code_state(Some("a"), Some("a")), CodeState::Current);
        assert_eq!(code_state(Some("a"), Some("b")), CodeState::Stale);
        assert_eq!(code_state(Some("a"), None), CodeState::NotBuilt);
        assert_eq!(code_state(None, Some("a")), CodeState::Unknown);
    }

    #[test]
    fn templates_compare_as_json() {
        assert_eq!(
            compare_templates(r#"{"a":1,"b":[1,2]}"#, "{\n  \"b\": [1, 2],\n  \"a\": 1\n}"),
            TemplateState::Same
        );
        assert_eq!(
            compare_templates(r#"{"a":1}"#, r#"{"a":2}"#),
            TemplateState::Differs
        );
        assert_eq!(
            compare_templates(r#"{"a":1}"#, "a: 1"),
            TemplateState::Unknown
        );
    }
}
