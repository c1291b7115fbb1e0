//! The work queue's side of the function: S3 events arrive as the bodies of SQS records, a
//! batch at a time, from the event source mapping (`ReportBatchItemFailures`).
//!
//! - A record whose event is processed (labeled, failed for good, duplicate or skipped) is
//!   answered as done, and the mapping deletes it.
//! - A record that must be tried again (throttling, an outage, any service error) is held
//!   back: its visibility is extended by a back-off that doubles with each receive, from
//!   [`FIRST_BACKOFF_SECONDS`] up to `MAX_BACKOFF_SECONDS`, with jitter, and it is reported as
//!   a batch item failure. The mapping leaves it in the queue, and after the queue's
//!   `maxReceiveCount` receives (hours) it moves to the dead-letter queue.
//! - S3's `s3:TestEvent` (sent when the bucket's notification is set) is done at once.
//! - A body that is no S3 event is held back like a failure, at the longest back-off, so
//!   that it ends in the dead-letter queue for a person to read, not deleted unread.

use aws_lambda_events::s3::S3Event;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use handler_shared::{Vars, required_env};
use lambda_runtime::LambdaEvent;

use crate::{Ctx, RetryableError, process_event};

pub const ENV_WORK_QUEUE_URL: &str = "WORK_QUEUE_URL";
pub const ENV_MAX_BACKOFF_SECONDS: &str = "MAX_BACKOFF_SECONDS";
/// The first back-off: long enough for a throttled second to pass, short enough that a
/// record of a burst is soon tried again.
pub const FIRST_BACKOFF_SECONDS: u32 = 5;
/// The time a record is given: none is started with less left before the function's
/// deadline (a call to S3, Rekognition and DynamoDB each, and the pace's wait, take seconds
/// when a service is slow).
pub const RECORD_TIME: std::time::Duration = std::time::Duration::from_secs(15);
/// The most a record may take: a call that does not answer (a service or a connection that
/// hangs) ends the record there, and it is backed off like any failure. What is left of
/// [`RECORD_TIME`] is for holding it back and answering, so a batch never times out on a
/// record and never returns whole after the queue's visibility timeout.
pub const RECORD_LIMIT: std::time::Duration = std::time::Duration::from_secs(12);
/// SQS's limit on a message's visibility timeout.
pub const MAX_VISIBILITY_SECONDS: u32 = 12 * 3600;

#[derive(Debug)]
pub struct WorkQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
    max_backoff_seconds: u32,
    /// The most one record may take ([`RECORD_LIMIT`]).
    pub record_limit: std::time::Duration,
}

impl WorkQueue {
    pub fn from_env(sqs: aws_sdk_sqs::Client, vars: Vars) -> Result<Self, String> {
        let url = required_env(vars, ENV_WORK_QUEUE_URL)?;
        let raw = required_env(vars, ENV_MAX_BACKOFF_SECONDS)?;
        let max_backoff_seconds = raw
            .parse::<u32>()
            .ok()
            .filter(|s| (FIRST_BACKOFF_SECONDS..=MAX_VISIBILITY_SECONDS).contains(s))
            .ok_or_else(|| {
                format!(
                    "{ENV_MAX_BACKOFF_SECONDS} must be between {FIRST_BACKOFF_SECONDS} and {MAX_VISIBILITY_SECONDS} seconds, not `{raw}`"
                )
            })?;
        Ok(Self {
            sqs,
            url,
            max_backoff_seconds,
            record_limit: RECORD_LIMIT,
        })
    }

    /// Keeps the record out of sight for `seconds`. If SQS refuses, the record comes back
    /// after the queue's own visibility timeout instead: later, but not lost.
    async fn hold_back(&self, receipt_handle: &str, seconds: u32) {
        let changed = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
            .send()
            .await;
        if let Err(e) = changed {
            tracing::warn!(
                error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                "could not hold the record back; it returns after the queue's visibility timeout"
            );
        }
    }
}

/// The back-off before the next try of a record received `receive_count` times: the first
/// back-off doubled with each receive, capped at `max`, and between half and all of that
/// (`jitter` in `[0, 1)`), so records that failed together do not return together.
pub fn backoff_seconds(receive_count: u32, max: u32, jitter: f64) -> u32 {
    let doublings = receive_count.saturating_sub(1).min(31);
    let full = FIRST_BACKOFF_SECONDS
        .saturating_mul(1u32 << doublings)
        .min(max)
        .max(1);
    let jitter = jitter.clamp(0.0, 1.0);
    let s = f64::from(full) * (0.5 + 0.5 * jitter);
    (s.ceil() as u32).clamp(1, full)
}

/// What an SQS record's body is.
#[derive(Debug)]
pub enum Body {
    Event(S3Event),
    /// S3's `s3:TestEvent`.
    Test,
    Unreadable(String),
}

pub fn parse_body(body: Option<&str>) -> Body {
    let Some(body) = body else {
        return Body::Unreadable("the record has no body".into());
    };
    let value: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Body::Unreadable(format!("the body is not JSON: {e}")),
    };
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Body::Test;
    }
    if value.get("Records").is_none() {
        return Body::Unreadable("the body is not an S3 event (no Records)".into());
    }
    match serde_json::from_value::<S3Event>(value) {
        Ok(event) => Body::Event(event),
        Err(e) => Body::Unreadable(format!("the body is not an S3 event: {e}")),
    }
}

fn receive_count(m: &SqsMessage) -> u32 {
    m.attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// The keys a record's event names, for the log (the trace finds an image's tries by them).
fn keys(body: &Body) -> Vec<String> {
    match body {
        Body::Event(e) => e
            .records
            .iter()
            .filter_map(|r| r.s3.object.key.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// One batch of the work queue: each record done, or held back and reported for a later try.
pub async fn handler(
    ctx: &Ctx,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let mut response = SqsBatchResponse::default();
    let deadline = event.context.deadline();
    for m in &event.payload.records {
        let Some(id) = m.message_id.as_deref() else {
            // Without its id a record cannot be reported; the mapping always sends one.
            tracing::error!("a work queue record has no message id");
            continue;
        };
        let body = parse_body(m.body.as_deref());
        let left = deadline
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        if left < RECORD_TIME {
            // Not started: back to the queue now, rather than with the whole batch after the
            // queue's visibility timeout when the function times out.
            if let Some(receipt) = m.receipt_handle.as_deref() {
                ctx.work_queue.hold_back(receipt, 0).await;
            }
            tracing::warn!(
                message_id = id,
                keys = ?keys(&body),
                left_ms = left.as_millis(),
                "record handed back unstarted: the batch ran out of time"
            );
            response.add_failure(id);
            continue;
        }
        let received = receive_count(m);
        let retry = match &body {
            Body::Test => {
                tracing::info!(message_id = id, "s3:TestEvent skipped");
                continue;
            }
            Body::Event(event) => {
                let limit = ctx.work_queue.record_limit;
                match tokio::time::timeout(limit, process_event(ctx, event)).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(RetryableError(e))) => (e, false),
                    Err(_) => (
                        format!(
                            "the record took over {} ms (a call did not answer in time); stopped there",
                            limit.as_millis()
                        ),
                        false,
                    ),
                }
            }
            Body::Unreadable(why) => (why.clone(), true),
        };
        let (error, unreadable) = retry;
        let max = ctx.work_queue.max_backoff_seconds;
        let seconds = if unreadable {
            max
        } else {
            backoff_seconds(received, max, fastrand::f64())
        };
        if let Some(receipt) = m.receipt_handle.as_deref() {
            ctx.work_queue.hold_back(receipt, seconds).await;
        }
        tracing::warn!(
            message_id = id,
            keys = ?keys(&body),
            receive_count = received,
            backoff_seconds = seconds,
            error = %error,
            "record backed off; it will be tried again"
        );
        response.add_failure(id);
    }
    tracing::info!(
        records = event.payload.records.len(),
        backed_off = response.batch_item_failures.len(),
        "batch processed"
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_its_cap_with_jitter_between_half_and_all() {
        assert_eq!(backoff_seconds(1, 900, 0.999), 5);
        assert_eq!(backoff_seconds(1, 900, 0.0), 3);
        assert_eq!(backoff_seconds(2, 900, 0.999), 10);
        assert_eq!(backoff_seconds(5, 900, 0.999), 80);
        assert_eq!(backoff_seconds(9, 900, 0.999), 900);
        assert_eq!(backoff_seconds(30, 900, 0.0), 450);
        assert_eq!(backoff_seconds(u32::MAX, 900, 0.5), 675);
        // A receive count of 0 (never sent by SQS) is the first try.
        assert_eq!(backoff_seconds(0, 900, 0.999), 5);
    }

    #[test]
    fn thirty_receives_keep_a_record_for_hours() {
        // The least total wait (every jitter at its lowest) over the queue's 30 receives.
        let least: u32 = (1..30).map(|n| backoff_seconds(n, 900, 0.0)).sum();
        assert!(least >= 2 * 3600, "{least} s");
    }

    #[test]
    fn bodies_are_events_test_events_or_unreadable() {
        assert!(matches!(
            parse_body(Some(
                r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00.000Z","Bucket":"b","RequestId":"r","HostId":"h"}"#
            )),
            Body::Test
        ));
        assert!(matches!(
            parse_body(Some(r#"{"Records":[]}"#)),
            Body::Event(e) if e.records.is_empty()
        ));
        for bad in [None, Some("not json"), Some("{}"), Some(r#"{"Records":7}"#)] {
            assert!(
                matches!(parse_body(bad), Body::Unreadable(_)),
                "{bad:?} was read"
            );
        }
    }
}
