//! `trace`: the life of one image as a timeline, from what the services hold about it. The
//! API request (the access log line of the request the upload function names), the object
//! and its versions, the S3 event (as the process function received it from the work queue),
//! each receive with the DetectLabels outcome and any back-off, the item as stored, and any
//! dead-letter queue message about it.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stack::Stage;
use thiserror::Error;

use crate::cloud::aws::{self, AwsError, Target};
use crate::cloud::cfn::CfnError;
use crate::cloud::stage::Deployed;
use crate::observe::logs::{self, API_SOURCE, Filter, LogEvent, LogsError};
use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct TraceConfig {
    pub target: Target,
    pub stage: Stage,
    pub image_id: String,
    /// How far back the logs are read.
    pub since: std::time::Duration,
}

#[derive(Debug, Error)]
pub enum TraceError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Stack(#[from] CfnError),
    #[error(transparent)]
    Logs(#[from] LogsError),
    #[error("`{0}` is not an image id (a UUID such as 6fbb8ca7-ab51-42c6-9e1d-69f9c66f81f9)")]
    BadId(String),
    #[error(transparent)]
    Stage(#[from] crate::cloud::stage::StageError),
}

/// One moment of the image's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// `api`, `upload`, `object`, `s3-event`, `receive`, `process`, `back-off`, `item`,
    /// `metadata` or `dead-letter`.
    pub kind: String,
    pub summary: String,
}

/// One run of the process function for this image (each receive from the work queue is
/// another).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    pub request_id: String,
    pub started: i64,
    /// What the invocation logged about the image, in order.
    pub outcome: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceReport {
    pub image_id: String,
    pub stack: String,
    pub object_key: String,
    /// Versions of the object, oldest first (`delete-marker` ones included).
    pub versions: Vec<ObjectVersion>,
    pub process_invocations: Vec<Invocation>,
    /// Each time a receive held the image's record back for a later try.
    pub backoffs: Vec<Backoff>,
    /// The item as DynamoDB holds it, in plain JSON; `None` when there is none.
    pub item: Option<Value>,
    /// Bodies of dead-letter queue messages that name the image.
    pub failure_messages: Vec<String>,
    pub timeline: Vec<Step>,
    /// What could not be read, and why.
    pub problems: Vec<String>,
}

/// A receive of the image's record that held it back: the process function's "record backed
/// off" line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub timestamp: i64,
    /// The record's receives so far (SQS's `ApproximateReceiveCount`).
    pub receive_count: u64,
    /// How long the record stays invisible before the next receive.
    pub backoff_seconds: u64,
    pub error: String,
}

/// The message the process function logs when it holds a record back.
pub const BACKED_OFF: &str = "record backed off";

/// The back-offs among the image's lines, in order.
pub fn backoffs(mine: &[LogEvent]) -> Vec<Backoff> {
    mine.iter()
        .filter(|e| e.source == "process")
        .filter(|e| {
            e.message_and_fields()
                .is_some_and(|(m, _)| m.starts_with(BACKED_OFF))
        })
        .map(|e| {
            let n = |k: &str| e.field(k).and_then(|v| v.as_u64()).unwrap_or_default();
            Backoff {
                timestamp: e.timestamp,
                receive_count: n("receive_count"),
                backoff_seconds: n("backoff_seconds"),
                error: e
                    .field("error")
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectVersion {
    pub version_id: String,
    pub last_modified: i64,
    pub size: i64,
    pub latest: bool,
    pub delete_marker: bool,
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// What every reader of one image shares: the clients, the stage's names and the image.
struct Image<'a> {
    clients: &'a aws::Clients,
    stage: &'a Deployed,
    account: &'a str,
    /// The user the image belongs to (empty when no item names it).
    owner: &'a str,
    id: &'a str,
    object_key: &'a str,
    now: i64,
}

/// The logs: every line of each invocation that names the image, and the access log.
async fn read_logs(
    img: &Image<'_>,
    cfg: &TraceConfig,
    report: &mut TraceReport,
) -> Result<(), TraceError> {
    let groups = logs::log_groups(&img.clients.cfn, &cfg.stage, &[]).await?;
    let since_ms = i64::try_from(cfg.since.as_millis()).unwrap_or(i64::MAX);
    let events = logs::fetch(&img.clients.logs, &groups, img.now.saturating_sub(since_ms)).await?;
    let mut filter = Filter::new(Some(img.id.to_string()), None);
    // A process invocation takes a batch of up to ten images: of its lines, only the
    // runtime's and those naming this image are about it.
    let mine: Vec<LogEvent> = filter
        .apply(&events)
        .into_iter()
        .filter(|e| e.source != "process" || is_platform(e) || e.message.contains(img.id))
        .cloned()
        .collect();
    let access: Vec<&LogEvent> = events.iter().filter(|e| e.source == API_SOURCE).collect();
    report.timeline.extend(from_logs(&mine, &access));
    report.process_invocations = invocations(&mine);
    report.backoffs = backoffs(&mine);
    Ok(())
}

/// The object and its versions.
async fn read_object(img: &Image<'_>, report: &mut TraceReport) {
    let (bucket, key) = (&img.stage.bucket, img.object_key);
    let v = match object_versions(&img.clients.s3, bucket, key, img.account).await {
        Ok(v) => v,
        Err(e) => {
            report.problems.push(e);
            return;
        }
    };
    for o in &v {
        let summary = if o.delete_marker {
            format!("delete marker {} on s3://{bucket}/{key}", o.version_id)
        } else {
            let current = if o.latest { " (current)" } else { "" };
            format!(
                "object version {} stored, {} bytes{current}",
                o.version_id, o.size
            )
        };
        report.timeline.push(Step {
            timestamp: o.last_modified,
            kind: "object".into(),
            summary,
        });
    }
    if v.is_empty() {
        report.timeline.push(Step {
            timestamp: img.now,
            kind: "object".into(),
            summary: format!("no object s3://{bucket}/{key}"),
        });
    }
    report.versions = v;
}

/// The item, read consistently.
async fn read_item(img: &Image<'_>, report: &mut TraceReport) {
    let table = &img.stage.table;
    let got = img
        .clients
        .dynamodb
        .get_item()
        .table_name(table)
        .key(
            api_types::index::OWNER,
            AttributeValue::S(img.owner.to_string()),
        )
        .key(
            api_types::index::IMAGE_ID,
            AttributeValue::S(img.id.to_string()),
        )
        .consistent_read(true)
        .send()
        .await;
    match got {
        Ok(out) => match out.item() {
            Some(item) => {
                let json = item_json(item);
                report.timeline.extend(item_steps(&json));
                report.item = Some(json);
            }
            None => report.timeline.push(Step {
                timestamp: img.now,
                kind: "item".into(),
                summary: format!("no item in {table}"),
            }),
        },
        Err(e) => report.problems.push(format!(
            "cannot read the item: {}",
            crate::cloud::error::chain(&e)
        )),
    }
}

/// The dead-letter queue, without taking anything off it.
async fn read_failures(img: &Image<'_>, report: &mut TraceReport) {
    let queue = &img.stage.dead_letter_queue_url;
    match failure_messages(&img.clients.sqs, queue, img.id).await {
        Ok(found) => {
            for (ts, body) in &found {
                report.timeline.push(Step {
                    timestamp: *ts,
                    kind: "dead-letter".into(),
                    summary: format!("dead-letter queue message: {}", truncate(body, 300)),
                });
            }
            report.failure_messages = found.into_iter().map(|(_, b)| b).collect();
        }
        Err(e) => report.problems.push(e),
    }
}

/// The user an image belongs to. Its id alone does not name its partition, so this is a
/// Scan of the images table for that id (an operator's read, page by page until found).
async fn owner_of(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    id: &str,
) -> Result<Option<String>, String> {
    let mut start = None;
    loop {
        let out = dynamodb
            .scan()
            .table_name(table)
            .filter_expression("#id = :id")
            .expression_attribute_names("#id", api_types::index::IMAGE_ID)
            .expression_attribute_names("#owner", api_types::index::OWNER)
            .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
            .projection_expression("#owner")
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| crate::cloud::error::chain(&e))?;
        if let Some(owner) = out
            .items()
            .iter()
            .find_map(|i| i.get(api_types::index::OWNER)?.as_s().ok().cloned())
        {
            return Ok(Some(owner));
        }
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(None);
        }
    }
}

/// One image's life, from four readers: the logs, the object's versions, the item and the
/// failure queue, on one timeline.
pub async fn trace(cfg: &TraceConfig, progress: &dyn Progress) -> Result<TraceReport, TraceError> {
    let id = cfg.image_id.to_ascii_lowercase();
    if !is_uuid(&id) {
        return Err(TraceError::BadId(cfg.image_id.clone()));
    }
    let stack_name = cfg.stage.stack_name();
    let (clients, identity) = aws::connect(&cfg.target).await?;
    progress.step(&format!(
        "tracing image {id} in stack {stack_name} ({}) as {}",
        cfg.target.describe(),
        identity.arn
    ));
    let stage = crate::cloud::stage::read(&clients.cfn, &cfg.target, &cfg.stage).await?;
    let owner = match owner_of(&clients.dynamodb, &stage.table, &id).await {
        Ok(Some(owner)) => owner,
        Ok(None) => String::new(),
        Err(e) => {
            progress.step(&format!("cannot find the image's owner: {e}"));
            String::new()
        }
    };
    let object_key = format!("{}{owner}/{id}", stack::app::UPLOAD_PREFIX);
    let img = Image {
        clients: &clients,
        stage: &stage,
        owner: &owner,
        account: &identity.account,
        id: &id,
        object_key: &object_key,
        now: logs::now_ms(),
    };
    let mut report = TraceReport {
        image_id: id.clone(),
        stack: stack_name,
        object_key: object_key.clone(),
        versions: Vec::new(),
        process_invocations: Vec::new(),
        backoffs: Vec::new(),
        item: None,
        failure_messages: Vec::new(),
        timeline: Vec::new(),
        problems: Vec::new(),
    };
    read_logs(&img, cfg, &mut report).await?;
    read_object(&img, &mut report).await;
    read_item(&img, &mut report).await;
    read_failures(&img, &mut report).await;
    report.timeline.sort_by_key(|s| s.timestamp);
    Ok(report)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    format!("{}…", s.chars().take(n).collect::<String>())
}

/// A log line's message for the timeline: the JSON fields' `message` and the rest, or the
/// plain text after the runtime's span.
fn words(e: &LogEvent) -> String {
    if let Some((message, rest)) = e.message_and_fields() {
        return if rest.is_empty() {
            message
        } else {
            format!("{message} ({})", rest.join(", "))
        };
    }
    let text = e.message.trim();
    text.split_once("}: ")
        .map_or(text, |(_, rest)| rest)
        .to_string()
}

fn is_platform(e: &LogEvent) -> bool {
    let t = e.message.trim_start();
    t.starts_with("START ") || t.starts_with("END ") || t.starts_with("REPORT ")
}

/// The steps the logs show: the API request, what the upload function did, each receive of
/// the image's record from the work queue (the first one is the S3 event's delivery) and
/// each back-off, and reads of the metadata.
pub fn from_logs(mine: &[LogEvent], access: &[&LogEvent]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut process_runs: Vec<String> = Vec::new();
    for e in mine {
        if is_platform(e) {
            if e.source == "process" && e.message.trim_start().starts_with("START ") {
                let rid = e.request_id().unwrap_or_default();
                if !process_runs.contains(&rid) {
                    process_runs.push(rid.clone());
                }
                let n = process_runs.len();
                steps.push(Step {
                    timestamp: e.timestamp,
                    kind: if n == 1 { "s3-event" } else { "receive" }.into(),
                    summary: if n == 1 {
                        format!(
                            "the work queue delivers the S3 event: process invocation {rid} starts"
                        )
                    } else {
                        format!(
                            "receive {n}: process invocation {rid} starts (a try after a back-off, or a duplicate delivery)"
                        )
                    },
                });
            }
            continue;
        }
        let summary = words(e);
        if summary.is_empty() {
            continue;
        }
        if let Some(b) = backoffs(std::slice::from_ref(e)).pop() {
            steps.push(Step {
                timestamp: e.timestamp,
                kind: "back-off".into(),
                summary: format!(
                    "held back {} s after receive {}: {}",
                    b.backoff_seconds, b.receive_count, b.error
                ),
            });
            continue;
        }
        // The API request the upload function names, from the access log.
        if e.source == "upload"
            && let Some(Value::String(api_request)) = e.field("api_request_id")
            && !api_request.is_empty()
        {
            for a in access
                .iter()
                .filter(|a| a.request_id().as_deref() == Some(api_request.as_str()))
            {
                let get = |k: &str| {
                    a.field(k)
                        .map(|v| match v {
                            Value::String(s) => s,
                            other => other.to_string(),
                        })
                        .unwrap_or_default()
                };
                steps.push(Step {
                    timestamp: a.timestamp,
                    kind: "api".into(),
                    summary: format!(
                        "{} answered {} in {} ms (API request {api_request})",
                        get("routeKey"),
                        get("status"),
                        get("responseLatency")
                    ),
                });
            }
        }
        steps.push(Step {
            timestamp: e.timestamp,
            kind: e.source.clone(),
            summary,
        });
    }
    steps
}

/// The process function's runs that touched the image, in order.
pub fn invocations(mine: &[LogEvent]) -> Vec<Invocation> {
    let mut runs: BTreeMap<String, Invocation> = BTreeMap::new();
    for e in mine.iter().filter(|e| e.source == "process") {
        let Some(rid) = e.request_id() else { continue };
        let run = runs.entry(rid.clone()).or_insert_with(|| Invocation {
            request_id: rid,
            started: e.timestamp,
            outcome: Vec::new(),
        });
        run.started = run.started.min(e.timestamp);
        if !is_platform(e) {
            run.outcome.push(words(e));
        }
    }
    let mut list: Vec<Invocation> = runs.into_values().collect();
    list.sort_by_key(|r| r.started);
    list
}

async fn object_versions(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    account: &str,
) -> Result<Vec<ObjectVersion>, String> {
    let out = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(key)
        .expected_bucket_owner(account)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot list the object's versions: {}",
                crate::cloud::error::chain(&e)
            )
        })?;
    let ms = |t: Option<&aws_smithy_types::DateTime>| {
        t.and_then(|t| t.to_millis().ok()).unwrap_or_default()
    };
    let mut list: Vec<ObjectVersion> = out
        .versions()
        .iter()
        .filter(|v| v.key() == Some(key))
        .map(|v| ObjectVersion {
            version_id: v.version_id().unwrap_or("null").to_string(),
            last_modified: ms(v.last_modified()),
            size: v.size().unwrap_or_default(),
            latest: v.is_latest().unwrap_or(false),
            delete_marker: false,
        })
        .chain(
            out.delete_markers()
                .iter()
                .filter(|d| d.key() == Some(key))
                .map(|d| ObjectVersion {
                    version_id: d.version_id().unwrap_or("null").to_string(),
                    last_modified: ms(d.last_modified()),
                    size: 0,
                    latest: d.is_latest().unwrap_or(false),
                    delete_marker: true,
                }),
        )
        .collect();
    list.sort_by_key(|v| v.last_modified);
    Ok(list)
}

/// An item in plain JSON: strings, numbers (as JSON numbers when they parse), lists, maps.
pub fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    fn one(v: &AttributeValue) -> Value {
        match v {
            AttributeValue::S(s) => Value::String(s.clone()),
            AttributeValue::N(n) => n
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| Value::String(n.clone()), Value::Number),
            AttributeValue::Bool(b) => Value::Bool(*b),
            AttributeValue::Null(_) => Value::Null,
            AttributeValue::L(l) => Value::Array(l.iter().map(one).collect()),
            AttributeValue::M(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), one(v)))
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect(),
            ),
            AttributeValue::Ss(s) => Value::Array(s.iter().cloned().map(Value::String).collect()),
            other => Value::String(format!("{other:?}")),
        }
    }
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), one(v)))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect(),
    )
}

fn rfc3339_ms(s: &str) -> Option<i64> {
    aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::DateTime)
        .ok()?
        .to_millis()
        .ok()
}

/// The item's own moments: when the image was uploaded, and when it was processed with
/// what outcome.
pub fn item_steps(item: &Value) -> Vec<Step> {
    let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut steps = Vec::new();
    let labels: Vec<String> = item
        .get("labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "{} {:.1} %",
                l.get("name").and_then(Value::as_str).unwrap_or("?"),
                l.get("confidence")
                    .and_then(Value::as_f64)
                    .unwrap_or_default()
            )
        })
        .collect();
    let at = rfc3339_ms(s("processed_at")).or_else(|| rfc3339_ms(s("uploaded_at")));
    if let Some(t) = at {
        let mut summary = format!("item stored: status {}", s("status"));
        if !labels.is_empty() {
            summary.push_str(&format!(", labels {}", labels.join(", ")));
        } else if s("status") == "labeled" {
            summary.push_str(", no labels");
        }
        if !s("failure_reason").is_empty() {
            summary.push_str(&format!(", failure reason {}", s("failure_reason")));
        }
        steps.push(Step {
            timestamp: t,
            kind: "item".into(),
            summary,
        });
    }
    steps
}

/// Failure-queue messages that name the image, with when they were sent. They are read
/// with a zero visibility timeout, so they stay on the queue for whoever handles them.
async fn failure_messages(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    id: &str,
) -> Result<Vec<(i64, String)>, String> {
    use aws_sdk_sqs::types::MessageSystemAttributeName as A;
    let mut found: BTreeMap<String, (i64, String)> = BTreeMap::new();
    // Each receive returns up to 10 of the visible messages; a few rounds see a small queue.
    for _ in 0..5 {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .wait_time_seconds(0)
            .message_system_attribute_names(A::SentTimestamp)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot read the failure queue: {}",
                    crate::cloud::error::chain(&e)
                )
            })?;
        if out.messages().is_empty() {
            break;
        }
        for m in out.messages() {
            let body = m.body().unwrap_or_default();
            if !body.contains(id) {
                continue;
            }
            let sent = m
                .attributes()
                .and_then(|a| a.get(&A::SentTimestamp))
                .and_then(|t| t.parse().ok())
                .unwrap_or_default();
            found.insert(
                m.message_id().unwrap_or_default().to_string(),
                (sent, body.to_string()),
            );
        }
    }
    let mut list: Vec<(i64, String)> = found.into_values().collect();
    list.sort();
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6fbb8ca7-ab51-42c6-9e1d-69f9c66f81f9";

    fn e(source: &str, ts: i64, message: &str) -> LogEvent {
        LogEvent {
            timestamp: ts,
            source: source.into(),
            log_group: String::new(),
            log_stream: String::new(),
            event_id: format!("{source}{ts}"),
            message: message.into(),
        }
    }

    #[test]
    fn ids_are_uuids() {
        assert!(is_uuid(ID));
        assert!(!is_uuid("6fbb8ca7"));
        assert!(!is_uuid("6fbb8ca7-ab51-42c6-9e1d-69f9c66f81fz"));
        assert!(!is_uuid("../../etc/passwd-0000-0000-000000000000"));
    }

    #[test]
    fn the_timeline_joins_the_access_log_and_counts_retries() {
        let upload = e(
            "upload",
            10,
            &format!(
                r#"{{"level":"INFO","fields":{{"message":"image stored","image_id":"{ID}","api_request_id":"AbC="}},"span":{{"requestId":"11111111-0000-0000-0000-000000000000"}}}}"#
            ),
        );
        let access = e(
            "api",
            12,
            r#"{"requestId":"AbC=","routeKey":"POST /upload","status":"201","responseLatency":"80"}"#,
        );
        let other_access = e(
            "api",
            13,
            r#"{"requestId":"XyZ=","routeKey":"POST /upload","status":"201","responseLatency":"80"}"#,
        );
        let run = |ts: i64, rid: &str, fields: &str| {
            vec![
                e(
                    "process",
                    ts,
                    &format!("START RequestId: {rid} Version: $LATEST"),
                ),
                e(
                    "process",
                    ts + 1,
                    &format!(
                        r#"{{"level":"WARN","fields":{{{fields},"keys":"[\"uploads/u/{ID}\"]"}},"span":{{"requestId":"{rid}"}}}}"#
                    ),
                ),
            ]
        };
        let mut mine = vec![upload];
        mine.extend(run(
            20,
            "22222222-0000-0000-0000-000000000000",
            r#""message":"record backed off; it will be tried again","message_id":"m-1","receive_count":1,"backoff_seconds":4,"error":"DetectLabels: ProvisionedThroughputExceededException""#,
        ));
        mine.extend(run(
            40,
            "33333333-0000-0000-0000-000000000000",
            r#""message":"item written""#,
        ));
        let steps = from_logs(&mine, &[&access, &other_access]);
        let kinds: Vec<&str> = steps.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "api", "upload", "s3-event", "back-off", "receive", "process"
            ]
        );
        assert_eq!(
            steps[0].summary,
            "POST /upload answered 201 in 80 ms (API request AbC=)"
        );
        assert_eq!(
            steps[3].summary,
            "held back 4 s after receive 1: DetectLabels: ProvisionedThroughputExceededException"
        );
        assert!(steps[4].summary.starts_with("receive 2:"), "{:?}", steps[4]);
        let runs = invocations(&mine);
        assert_eq!(runs.len(), 2);
        assert_eq!(
            backoffs(&mine),
            [Backoff {
                timestamp: 21,
                receive_count: 1,
                backoff_seconds: 4,
                error: "DetectLabels: ProvisionedThroughputExceededException".into(),
            }]
        );
        assert!(runs[1].outcome[0].starts_with("item written"), "{runs:?}");
    }

    #[test]
    fn items_become_plain_json_and_a_step() {
        let item = HashMap::from([
            ("image_id".to_string(), AttributeValue::S(ID.into())),
            ("status".to_string(), AttributeValue::S("labeled".into())),
            ("size_bytes".to_string(), AttributeValue::N("240512".into())),
            (
                "processed_at".to_string(),
                AttributeValue::S("2026-11-29T19:51:31.814Z".into()),
            ),
            (
                "labels".to_string(),
                AttributeValue::L(vec![AttributeValue::M(HashMap::from([
                    ("name".to_string(), AttributeValue::S("Cat".into())),
                    ("confidence".to_string(), AttributeValue::N("97.125".into())),
                ]))]),
            ),
        ]);
        let json = item_json(&item);
        assert_eq!(json["size_bytes"], 240512.0);
        assert_eq!(json["labels"][0]["name"], "Cat");
        let steps = item_steps(&json);
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].timestamp, 1_795_981_891_814);
        assert_eq!(
            steps[0].summary,
            "item stored: status labeled, labels Cat 97.1 %"
        );
    }
}
