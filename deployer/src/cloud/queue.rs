//! What the commands read of an SQS queue.

/// Messages in a queue, visible or in flight.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64, String> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| format!("reading {url}: {}", crate::cloud::error::chain(&e)))?;
    let attrs = out.attributes();
    let n = |k: QueueAttributeName| {
        attrs
            .and_then(|a| a.get(&k))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(n(QueueAttributeName::ApproximateNumberOfMessages)
        + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
}
