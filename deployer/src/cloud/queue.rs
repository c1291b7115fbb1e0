//! What the commands read of, and do to, the stage's SQS queues.

use aws_sdk_sqs::types::QueueAttributeName;
use serde::{Deserialize, Serialize};

/// A queue's messages by state, as SQS approximates them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and not yet deleted, or held back (a back-off extends a message's
    /// invisibility).
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
}

impl QueueCounts {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

fn sdk_error<E: std::error::Error + 'static>(what: &str, url: &str, e: E) -> String {
    format!("{what} {url}: {}", crate::cloud::error::chain(&e))
}

/// A queue's messages by state.
pub async fn queue_counts(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<QueueCounts, String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| sdk_error("reading", url, e))?;
    let attrs = out.attributes();
    let n = |k: QueueAttributeName| {
        attrs
            .and_then(|a| a.get(&k))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(QueueCounts {
        visible: n(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: n(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    })
}

/// Messages in a queue, visible or in flight.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64, String> {
    let c = queue_counts(sqs, url).await?;
    Ok(c.visible + c.in_flight)
}

/// A queue's name: the last segment of its URL.
pub fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// The age in seconds of the queue's oldest message, from the `ApproximateAgeOfOldestMessage`
/// metric SQS publishes to CloudWatch each minute: the latest datapoint of the last
/// `window`. `None` when there is none (a queue without traffic, or an environment that
/// publishes no SQS metrics, as the local one).
pub async fn oldest_message_age(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    url: &str,
    window: std::time::Duration,
) -> Result<Option<u64>, String> {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Statistic};
    let now = std::time::SystemTime::now();
    let start = now.checked_sub(window).unwrap_or(std::time::UNIX_EPOCH);
    let out = cloudwatch
        .get_metric_statistics()
        .namespace("AWS/SQS")
        .metric_name("ApproximateAgeOfOldestMessage")
        .dimensions(
            Dimension::builder()
                .name("QueueName")
                .value(queue_name(url))
                .build(),
        )
        .start_time(DateTime::from(start))
        .end_time(DateTime::from(now))
        .period(60)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .map_err(|e| sdk_error("reading the age of the oldest message of", url, e))?;
    let latest = out
        .datapoints()
        .iter()
        .filter_map(|d| Some((d.timestamp()?.secs(), d.maximum()?)))
        .max_by_key(|(t, _)| *t);
    Ok(latest.map(|(_, age)| age.max(0.0).round() as u64))
}

/// How many messages a redrive moved, and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub moved: u64,
    /// Messages the work queue refused, with SQS's reason; they stay in the dead-letter queue
    /// and show again after its visibility timeout.
    pub failed: Vec<String>,
}

/// How long a message taken for a move stays invisible in the dead-letter queue: long enough
/// to send it and delete it, short enough that one left behind by a crash shows again soon.
const MOVE_VISIBILITY_SECONDS: i32 = 60;

/// Moves every message of `from` to `to`: receive a batch, send its bodies and attributes to
/// `to`, then delete from `from` what `to` took. A message is deleted only after `to` has it,
/// so a crash between the two leaves a copy in both (the process function is idempotent),
/// never none. `progress` hears the count after each batch.
pub async fn move_messages(
    sqs: &aws_sdk_sqs::Client,
    from: &str,
    to: &str,
    progress: &dyn Fn(u64),
) -> Result<Moved, String> {
    use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
    let mut done = Moved::default();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(from)
            .max_number_of_messages(10)
            .visibility_timeout(MOVE_VISIBILITY_SECONDS)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| sdk_error("receiving from", from, e))?;
        // A message seen twice was one `to` refused: it is reported, not moved forever.
        let batch: Vec<_> = out
            .messages()
            .iter()
            .filter(|m| m.message_id().is_some_and(|id| seen.insert(id.to_string())))
            .collect();
        if batch.is_empty() {
            return Ok(done);
        }
        let mut send = sqs.send_message_batch().queue_url(to);
        for (i, m) in batch.iter().enumerate() {
            let entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(m.body().unwrap_or_default())
                .set_message_attributes(m.message_attributes().cloned())
                .build()
                .map_err(|e| format!("cannot build a message for {to}: {e}"))?;
            send = send.entries(entry);
        }
        let sent = send
            .send()
            .await
            .map_err(|e| sdk_error("sending to", to, e))?;
        for f in sent.failed() {
            done.failed
                .push(format!("{}: {}", f.code(), f.message().unwrap_or_default()));
        }
        let mut delete = sqs.delete_message_batch().queue_url(from);
        let mut deleting = 0;
        for ok in sent.successful() {
            let Some(m) = ok.id().parse::<usize>().ok().and_then(|i| batch.get(i)) else {
                continue;
            };
            let entry = DeleteMessageBatchRequestEntry::builder()
                .id(ok.id())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
                .map_err(|e| format!("cannot build a deletion for {from}: {e}"))?;
            delete = delete.entries(entry);
            deleting += 1;
        }
        if deleting > 0 {
            let deleted = delete
                .send()
                .await
                .map_err(|e| sdk_error("deleting from", from, e))?;
            for f in deleted.failed() {
                done.failed.push(format!(
                    "sent to {to} but not deleted from {from} (it will be moved again): {}",
                    f.message().unwrap_or_default()
                ));
            }
            done.moved += deleted.successful().len() as u64;
        }
        progress(done.moved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_named_by_its_url_s_last_segment() {
        assert_eq!(
            queue_name("https://sqs.eu-west-1.amazonaws.com/123456789012/image-pipeline-dev-work"),
            "image-pipeline-dev-work"
        );
        assert_eq!(queue_name("http://127.0.0.1:4566/000000000000/q/"), "q");
    }
}
