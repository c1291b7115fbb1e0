//! `logs`: the functions' log groups and the API's access log as one time-ordered stream,
//! found through the stack's own resources, filterable by image and level.

use std::collections::BTreeSet;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stack::synth::API_LOG_GROUP_ID;
use stack::{App, Stage};
use thiserror::Error;

use crate::cloud::aws::AwsError;
use crate::cloud::cfn::CfnError;

/// The source name of the API's access log.
pub const API_SOURCE: &str = "api";

#[derive(Debug, Error)]
pub enum LogsError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Stack(#[from] CfnError),
    #[error(transparent)]
    Stage(#[from] crate::cloud::stage::StageError),
    #[error("unknown log source `{0}`; the sources are {1}")]
    UnknownSource(String, String),
    #[error("cannot read the resources of stack {stack}: {reason}")]
    Resources { stack: String, reason: String },
    #[error("cannot read log group {group}: {reason}")]
    Read { group: String, reason: String },
}

/// A log level, as the functions' JSON lines name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TRACE" => Ok(Level::Trace),
            "DEBUG" => Ok(Level::Debug),
            "INFO" => Ok(Level::Info),
            "WARN" | "WARNING" => Ok(Level::Warn),
            "ERROR" => Ok(Level::Error),
            _ => Err(format!(
                "unknown level `{s}`; the levels are trace, debug, info, warn, error"
            )),
        }
    }
}

/// One log event as CloudWatch Logs holds it, with the source it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// `upload`, `process`, `metadata`, or `api` for the access log.
    pub source: String,
    pub log_group: String,
    pub log_stream: String,
    pub event_id: String,
    pub message: String,
}

impl LogEvent {
    /// The message as a JSON object (a function logging as JSON, or an access log line).
    pub fn json(&self) -> Option<serde_json::Map<String, Value>> {
        match serde_json::from_str(self.message.trim()) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        }
    }

    /// The level of a function's line: its JSON `level`, or the level word a plain-text
    /// line starts with. Platform lines (`START`, `END`, `REPORT`) and access log lines
    /// have none.
    pub fn level(&self) -> Option<Level> {
        if let Some(m) = self.json() {
            return m.get("level").and_then(Value::as_str)?.parse().ok();
        }
        self.message.split_whitespace().next()?.parse().ok()
    }

    /// The request the line belongs to: Lambda's request id for a function's line, API
    /// Gateway's for an access log line.
    pub fn request_id(&self) -> Option<String> {
        if let Some(m) = self.json() {
            let from_span = |v: &Value| {
                v.get("requestId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            return m
                .get("requestId")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| m.get("span").and_then(from_span))
                .or_else(|| {
                    m.get("spans")
                        .and_then(Value::as_array)
                        .and_then(|a| a.iter().find_map(from_span))
                })
                .or_else(|| {
                    m.get("record")
                        .and_then(|r| r.get("requestId"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
        }
        let text = &self.message;
        for marker in ["requestId=\"", "RequestId: "] {
            if let Some(rest) = text.split(marker).nth(1) {
                let id: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
                    .collect();
                if !id.is_empty() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// A JSON line's `fields.message` and its other fields as `name=value` (strings
    /// unquoted), in order; `None` for a plain-text line.
    pub fn message_and_fields(&self) -> Option<(String, Vec<String>)> {
        let m = self.json()?;
        let fields = m.get("fields").and_then(Value::as_object);
        let message = fields
            .and_then(|f| f.get("message"))
            .map(plain)
            .unwrap_or_default();
        let rest = fields
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "message")
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect();
        Some((message, rest))
    }

    /// A value of the line's JSON fields (`fields.NAME`, or `NAME` at the top level).
    pub fn field(&self, name: &str) -> Option<Value> {
        let m = self.json()?;
        m.get("fields")
            .and_then(|f| f.get(name))
            .or_else(|| m.get(name))
            .cloned()
    }
}

/// Which events to show: those of `image` (every line of each invocation that mentions it),
/// at or above `level`. It remembers the invocations it has seen, so a followed stream
/// keeps an invocation's later lines.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub image: Option<String>,
    pub level: Option<Level>,
    requests: BTreeSet<String>,
}

impl Filter {
    pub fn new(image: Option<String>, level: Option<Level>) -> Self {
        Self {
            image,
            level,
            requests: BTreeSet::new(),
        }
    }

    /// The events of `batch` to show, in order.
    pub fn apply<'a>(&mut self, batch: &'a [LogEvent]) -> Vec<&'a LogEvent> {
        if let Some(image) = &self.image {
            for e in batch {
                if e.message.contains(image.as_str())
                    && let Some(r) = e.request_id()
                {
                    self.requests.insert(r);
                }
            }
        }
        batch
            .iter()
            .filter(|e| match &self.image {
                None => true,
                Some(image) => {
                    e.message.contains(image.as_str())
                        || e.request_id().is_some_and(|r| self.requests.contains(&r))
                }
            })
            .filter(|e| match self.level {
                None => true,
                Some(min) => e.level().is_some_and(|l| l >= min),
            })
            .collect()
    }
}

/// The log groups of a deployed stage, by source: each function's and the API's access log,
/// as the stack names them.
pub async fn log_groups(
    cfn: &aws_sdk_cloudformation::Client,
    stage: &Stage,
    selected: &[String],
) -> Result<Vec<(String, String)>, LogsError> {
    let app = App::image_pipeline();
    let mut known: Vec<(String, String)> = app
        .functions
        .iter()
        .map(|f| (f.log_group_id(), f.name.to_string()))
        .collect();
    known.push((API_LOG_GROUP_ID.to_string(), API_SOURCE.to_string()));
    let names: Vec<&str> = known.iter().map(|(_, s)| s.as_str()).collect();
    for s in selected {
        if !names.contains(&s.as_str()) {
            return Err(LogsError::UnknownSource(s.clone(), names.join(", ")));
        }
    }
    let stack = crate::cloud::stage::describe(cfn, stage).await?.name;
    let out = cfn
        .describe_stack_resources()
        .stack_name(&stack)
        .send()
        .await
        .map_err(|e| LogsError::Resources {
            stack: stack.clone(),
            reason: crate::cloud::error::chain(&e),
        })?;
    let mut groups = Vec::new();
    for (logical, source) in &known {
        if !selected.is_empty() && !selected.contains(source) {
            continue;
        }
        if let Some(name) = out
            .stack_resources()
            .iter()
            .find(|r| r.logical_resource_id() == Some(logical.as_str()))
            .and_then(|r| r.physical_resource_id())
        {
            groups.push((source.clone(), name.to_string()));
        }
    }
    Ok(groups)
}

/// Every event of `groups` from `start_ms` on, merged in time order (a group's own order
/// kept for equal times).
pub async fn fetch(
    logs: &aws_sdk_cloudwatchlogs::Client,
    groups: &[(String, String)],
    start_ms: i64,
) -> Result<Vec<LogEvent>, LogsError> {
    let mut all = Vec::new();
    for (source, group) in groups {
        let mut next: Option<String> = None;
        let mut tokens = BTreeSet::new();
        loop {
            let out = match logs
                .filter_log_events()
                .log_group_name(group)
                .start_time(start_ms)
                .set_next_token(next.take())
                .send()
                .await
            {
                Ok(o) => o,
                // A group nothing has written to yet may not exist.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    break;
                }
                Err(e) => {
                    return Err(LogsError::Read {
                        group: group.clone(),
                        reason: crate::cloud::error::chain(&e),
                    });
                }
            };
            for e in out.events() {
                all.push(LogEvent {
                    timestamp: e.timestamp().unwrap_or_default(),
                    source: source.clone(),
                    log_group: group.clone(),
                    log_stream: e.log_stream_name().unwrap_or_default().to_string(),
                    event_id: e.event_id().unwrap_or_default().to_string(),
                    message: e.message().unwrap_or_default().trim_end().to_string(),
                });
            }
            // A page may be empty and still have a token (CloudWatch Logs searches in
            // slices): follow tokens until there is none, or one repeats.
            match out.next_token() {
                Some(t) if !t.is_empty() && !tokens.contains(t) => {
                    tokens.insert(t.to_string());
                    next = Some(t.to_string());
                }
                _ => break,
            }
        }
    }
    // Stable: lines written in the same millisecond keep their group's order.
    all.sort_by_key(|e| e.timestamp);
    Ok(all)
}

/// Now, in milliseconds since the epoch (the unit of log timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// `HH:MM:SS.mmm` (UTC) of a timestamp in milliseconds.
pub fn clock(ms: i64) -> String {
    let t = aws_smithy_types::DateTime::from_millis(ms);
    t.fmt(aws_smithy_types::date_time::Format::DateTime)
        .ok()
        .and_then(|s| {
            s.split('T')
                .nth(1)
                .map(|c| c.trim_end_matches('Z').to_string())
        })
        .map(|c| match c.split_once('.') {
            Some((hms, frac)) => format!("{hms}.{:0<3}", &frac[..frac.len().min(3)]),
            None => format!("{c}.000"),
        })
        .unwrap_or_default()
}

/// One event for a person: time, source, level, message and the rest of its fields.
pub fn render(e: &LogEvent) -> String {
    let head = format!("{} {:<8}", clock(e.timestamp), e.source);
    let Some(m) = e.json() else {
        return format!("{head}       {}", e.message.trim());
    };
    if e.source == API_SOURCE {
        let get = |k: &str| m.get(k).map(plain).unwrap_or_default();
        return format!(
            "{head}       {} {} in {} ms (request {})",
            get("routeKey"),
            get("status"),
            get("responseLatency"),
            get("requestId")
        );
    }
    let level = m.get("level").map(plain).unwrap_or_default();
    let (message, fields) = e.message_and_fields().unwrap_or_default();
    let mut s = format!("{head} {level:<5} {message}");
    for f in fields {
        s.push(' ');
        s.push_str(&f);
    }
    if let Some(r) = e.request_id() {
        s.push_str(&format!(" [{}]", r.chars().take(8).collect::<String>()));
    }
    s
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses a duration such as `90s`, `10m`, `2h` or `1d`.
pub fn parse_since(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 90s, 10m, 2h or 1d"))?;
    let secs = match unit {
        "s" => n,
        "m" | "" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "`{s}` is not a duration such as 90s, 10m, 2h or 1d"
            ));
        }
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: &str, ts: i64, message: &str) -> LogEvent {
        LogEvent {
            timestamp: ts,
            source: source.into(),
            log_group: format!("/aws/lambda/x-{source}"),
            log_stream: "s".into(),
            event_id: format!("{source}{ts}"),
            message: message.into(),
        }
    }

    const IMAGE: &str = "6fbb8ca7-ab51-42c6-9e1d-69f9c66f81f9";

    fn process_lines() -> Vec<LogEvent> {
        vec![
            event(
                "process",
                1,
                "START RequestId: de3ab0cf-d19c-4341-896c-ec9cb762b49f Version: $LATEST",
            ),
            event(
                "process",
                2,
                &format!(
                    r#"{{"timestamp":"2026-11-29T19:42:23.627Z","level":"INFO","fields":{{"message":"item written","image_id":"{IMAGE}","labels":4}},"target":"process_function","span":{{"requestId":"de3ab0cf-d19c-4341-896c-ec9cb762b49f","name":"Lambda runtime invoke"}}}}"#
                ),
            ),
            event(
                "process",
                3,
                r#"{"level":"INFO","fields":{"message":"event processed"},"span":{"requestId":"de3ab0cf-d19c-4341-896c-ec9cb762b49f"}}"#,
            ),
            event(
                "process",
                4,
                r#"{"level":"WARN","fields":{"message":"other image"},"span":{"requestId":"00000000-0000-0000-0000-000000000000"}}"#,
            ),
            event(
                "process",
                5,
                "REPORT RequestId: de3ab0cf-d19c-4341-896c-ec9cb762b49f\tDuration: 471 ms",
            ),
            event(
                "process",
                6,
                r#" INFO Lambda runtime invoke{requestId="1234abcd-0000-0000-0000-000000000000"}: item written image_id=other"#,
            ),
        ]
    }

    #[test]
    fn an_image_filter_keeps_every_line_of_its_invocations() {
        let lines = process_lines();
        let mut f = Filter::new(Some(IMAGE.into()), None);
        let kept: Vec<i64> = f.apply(&lines).iter().map(|e| e.timestamp).collect();
        assert_eq!(kept, [1, 2, 3, 5]);
        // A later batch of the same invocation is still its.
        let later = [event(
            "process",
            7,
            "END RequestId: de3ab0cf-d19c-4341-896c-ec9cb762b49f",
        )];
        assert_eq!(f.apply(&later).len(), 1);
    }

    #[test]
    fn a_level_filter_keeps_that_level_and_above() {
        let lines = process_lines();
        let mut f = Filter::new(None, Some(Level::Warn));
        let kept: Vec<i64> = f.apply(&lines).iter().map(|e| e.timestamp).collect();
        assert_eq!(kept, [4]);
        let mut f = Filter::new(None, Some(Level::Info));
        let kept: Vec<i64> = f.apply(&lines).iter().map(|e| e.timestamp).collect();
        assert_eq!(kept, [2, 3, 4, 6], "plain-text lines have their level too");
    }

    #[test]
    fn request_ids_come_from_json_spans_text_spans_and_platform_lines() {
        let lines = process_lines();
        let ids: Vec<Option<String>> = lines.iter().map(LogEvent::request_id).collect();
        let de = Some("de3ab0cf-d19c-4341-896c-ec9cb762b49f".to_string());
        assert_eq!(ids[0], de);
        assert_eq!(ids[1], de);
        assert_eq!(ids[4], de);
        assert_eq!(
            ids[5].as_deref(),
            Some("1234abcd-0000-0000-0000-000000000000")
        );
        let access = event(
            "api",
            9,
            r#"{"requestId":"Qx1=","routeKey":"POST /upload","status":"201","responseLatency":"42"}"#,
        );
        assert_eq!(access.request_id().as_deref(), Some("Qx1="));
    }

    #[test]
    fn rendering_names_the_source_level_message_and_fields() {
        let lines = process_lines();
        let line = render(&lines[1]);
        assert!(
            line.starts_with("00:00:00.002 process  INFO  item written image_id=6fbb8ca7"),
            "{line}"
        );
        assert!(line.ends_with("labels=4 [de3ab0cf]"), "{line}");
        let access = event(
            "api",
            1_795_981_891_252,
            r#"{"requestId":"Qx1=","routeKey":"POST /upload","status":"201","responseLatency":"42"}"#,
        );
        assert!(
            render(&access)
                == "19:51:31.252 api            POST /upload 201 in 42 ms (request Qx1=)",
            "{}",
            render(&access)
        );
        assert_eq!(clock(1_795_981_891_252), "19:51:31.252");
    }

    #[test]
    fn durations_and_levels_parse() {
        assert_eq!(parse_since("90s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse_since("10m"), Ok(std::time::Duration::from_secs(600)));
        assert_eq!(parse_since("2h"), Ok(std::time::Duration::from_secs(7200)));
        assert_eq!(
            parse_since("1d"),
            Ok(std::time::Duration::from_secs(86_400))
        );
        assert!(parse_since("soon").is_err());
        assert!(parse_since("5y").is_err());
        assert_eq!("warn".parse::<Level>(), Ok(Level::Warn));
        assert!("loud".parse::<Level>().is_err());
    }
}
