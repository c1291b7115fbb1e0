//! What the end-to-end test reads of one image: `status`, `logs --image` and `trace` on an
//! image the smoke test kept, the image read back after the emulator was killed, and its S3
//! event moved from the dead-letter queue back to work by `redrive`.

use anyhow::{Context, Result, ensure};
use deployer::local::emulator::LocalConfig;
use deployer::observe::logs::LogEvent;
use deployer::observe::status::{CodeState, StatusReport, TemplateState};
use deployer::observe::trace::TraceReport;
use deployer::verify::smoke::SmokeReport;

use super::{STAGE, finished, ok, xtask};

/// `status` on the stage with a kept image: everything current, nothing failed.
fn status_is_true() -> Result<()> {
    let st: StatusReport = ok(&["status"])?;
    ensure!(
        st.stack_status
            .as_deref()
            .is_some_and(|s| s.ends_with("_COMPLETE")),
        "status: the stack is {:?}",
        st.stack_status
    );
    ensure!(st.problems.is_empty(), "status: {:?}", st.problems);
    ensure!(
        st.template == TemplateState::Same,
        "status: the deployed template should be this checkout's"
    );
    ensure!(
        st.functions.len() == stack::App::image_pipeline().functions.len()
            && st.functions.iter().all(|f| f.state == CodeState::Current),
        "status: every function should run what was built: {:?}",
        st.functions
    );
    ensure!(
        st.dead_letter_depth == Some(0),
        "status: dead-letter queue {:?}",
        st.dead_letter_depth
    );
    let pace = super::expected_pace();
    ensure!(
        st.pace
            == Some(deployer::observe::status::Pace {
                quota_tps: pace.quota_tps,
                max_concurrency: pace.max_concurrency,
                interval_ms: pace.interval_ms,
            }),
        "status: pace {:?}, deployed with {pace:?}",
        st.pace
    );
    ensure!(
        st.work_queue.is_some()
            && st.oldest_message_age.is_none()
            && st.oldest_message_note.is_some(),
        "status: work queue {:?}, oldest message {:?} ({:?}): the local environment publishes no SQS metrics",
        st.work_queue,
        st.oldest_message_age,
        st.oldest_message_note
    );
    let alarms: Vec<(&str, &str)> = st
        .alarms
        .iter()
        .map(|a| (a.name.as_str(), a.state.as_str()))
        .collect();
    ensure!(
        alarms.len() == stack::app::alarms::ALL.len()
            && st
                .alarms
                .iter()
                .zip(stack::app::alarms::ALL)
                .all(|(a, short)| {
                    a.name == format!("{}-{STAGE}-{short}", stack::app::APP)
                        && ["OK", "INSUFFICIENT_DATA"].contains(&a.state.as_str())
                }),
        "status: alarms {alarms:?} (none may be in ALARM: nothing is dead, old or failing)"
    );
    let labeled = st
        .items
        .as_ref()
        .and_then(|i| i.get("labeled"))
        .copied()
        .unwrap_or(0);
    ensure!(labeled >= 1, "status: items {:?}", st.items);

    Ok(())
}

/// `logs --image`: JSON lines of the invocations that handled the image, and only those.
fn logs_are_true(id: &str) -> Result<Vec<LogEvent>> {
    let run = finished(
        xtask(&[
            "logs", "--local", "--stage", STAGE, "--image", id, "--since", "1h", "--output", "json",
        ])?
        .run()?,
    );
    ensure!(run.code == 0, "logs --image exited with {}", run.code);
    let events: Vec<LogEvent> = run
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("logs --output json: not one JSON event per line")?;
    let sources: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.source.as_str()).collect();
    ensure!(
        sources.contains("upload") && sources.contains("process"),
        "logs --image: sources {sources:?}"
    );
    let stored = events.iter().filter(|e| e.source == "upload").find(|e| {
        e.field("message")
            .and_then(|m| m.as_str().map(str::to_string))
            == Some("image stored".into())
    });
    ensure!(
        stored.is_some_and(|e| e
            .field("image_id")
            .and_then(|v| v.as_str().map(str::to_string))
            == Some(id.to_string())),
        "logs --image: no JSON \"image stored\" line naming {id}: {events:?}"
    );
    let requests: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e.message.contains(id))
        .filter_map(LogEvent::request_id)
        .collect();
    ensure!(
        events.iter().all(
            |e| e.message.contains(id) || e.request_id().is_some_and(|r| requests.contains(&r))
        ),
        "logs --image: a line of another invocation"
    );

    Ok(events)
}

/// `trace`: one object version, the labeled item, its process runs and a full timeline.
fn trace_is_true(id: &str, kept: &SmokeReport) -> Result<(TraceReport, Vec<String>)> {
    let tr: TraceReport = ok(&["trace", id])?;
    ensure!(tr.problems.is_empty(), "trace: {:?}", tr.problems);
    ensure!(
        tr.versions.len() == 1
            && tr.versions[0].latest
            && u64::try_from(tr.versions[0].size).ok()
                == Some(deployer::verify::smoke::DEFAULT_IMAGE.len() as u64),
        "trace: object versions {:?}",
        tr.versions
    );
    let item_labels: Vec<String> = tr
        .item
        .as_ref()
        .and_then(|i| i.get("labels"))
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .collect();
    ensure!(
        tr.item
            .as_ref()
            .and_then(|i| i.get("status"))
            .and_then(|s| s.as_str())
            == Some("labeled")
            && item_labels == kept.labels,
        "trace: item {:?}, the smoke test saw labels {:?}",
        tr.item,
        kept.labels
    );
    ensure!(
        !tr.process_invocations.is_empty() && tr.failure_messages.is_empty(),
        "trace: {} process invocations, {} failure messages",
        tr.process_invocations.len(),
        tr.failure_messages.len()
    );
    let kinds: Vec<&str> = tr.timeline.iter().map(|s| s.kind.as_str()).collect();
    for kind in ["upload", "object", "s3-event", "process", "item"] {
        ensure!(kinds.contains(&kind), "trace: no {kind} step in {kinds:?}");
    }
    let says = |kind: &str, what: &str| {
        tr.timeline
            .iter()
            .any(|s| s.kind == kind && s.summary.contains(what))
    };
    ensure!(
        says("upload", "image stored") && says("item", "status labeled"),
        "trace: {:?}",
        tr.timeline
    );
    Ok((tr, item_labels))
}

/// `status`, `logs --image` and `trace` on an image the smoke test uploaded and kept, as
/// the least-privileged deploying user: what each shows must be true.
pub fn look_at_the_image(id: &str, kept: &SmokeReport) -> Result<()> {
    status_is_true()?;
    let events = logs_are_true(id)?;
    let (tr, item_labels) = trace_is_true(id, kept)?;
    eprintln!(
        "e2e    status, logs --image and trace agree with the image {id}: {} log lines, {} process invocation(s), labels {:?}",
        events.len(),
        tr.process_invocations.len(),
        item_labels
    );
    Ok(())
}

/// The labels of image `id`'s item and the bytes of its object, read as root (its owner, a
/// throwaway user of the smoke test, has no password anyone knows).
pub async fn read_back(
    local: &LocalConfig,
    stage: &deployer::cloud::stage::Deployed,
    owner: &str,
    id: &str,
) -> Result<(Vec<String>, Vec<u8>)> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let clients = root_clients(local).await?;
    let got = clients
        .dynamodb
        .get_item()
        .table_name(&stage.table)
        .key(api_types::index::OWNER, AttributeValue::S(owner.into()))
        .key(api_types::index::IMAGE_ID, AttributeValue::S(id.into()))
        .consistent_read(true)
        .send()
        .await
        .with_context(|| format!("GetItem of image {id}"))?;
    let item = got
        .item()
        .with_context(|| format!("no item for image {id}"))?;
    let status = item.get("status").and_then(|v| v.as_s().ok());
    ensure!(
        status.map(String::as_str) == Some("labeled"),
        "image {id} is {status:?}"
    );
    let labels = item
        .get("labels")
        .and_then(|v| v.as_l().ok())
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_m().ok()?.get("name")?.as_s().ok().cloned())
        .collect();
    let object = clients
        .s3
        .get_object()
        .bucket(&stage.bucket)
        .key(format!("{}{owner}/{id}", stack::app::UPLOAD_PREFIX))
        .send()
        .await
        .with_context(|| format!("GetObject of image {id}"))?;
    let bytes = object.body.collect().await?.to_vec();
    Ok((labels, bytes))
}

/// The object versions and delete markers under `prefix` of `bucket`, read as root.
pub async fn versions_under(local: &LocalConfig, bucket: &str, prefix: &str) -> Result<usize> {
    let clients = root_clients(local).await?;
    let out = clients
        .s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .with_context(|| format!("ListObjectVersions of {bucket}/{prefix}"))?;
    Ok(out.versions().len() + out.delete_markers().len())
}

/// Whether `bucket` exists, asked as root.
pub async fn bucket_exists(local: &LocalConfig, bucket: &str) -> Result<bool> {
    let clients = root_clients(local).await?;
    match clients.s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
        Err(e) => Err(anyhow::anyhow!(
            "HeadBucket of {bucket}: {}",
            deployer::cloud::error::chain(&e)
        )),
    }
}

/// The SDK clients of the local environment's root.
async fn root_clients(local: &LocalConfig) -> Result<deployer::cloud::aws::Clients> {
    let target = super::root_target(local)?;
    Ok(deployer::cloud::aws::connect(&target).await?.0)
}

/// A dead letter moved back to work: the S3 event of the kept image, put in the dead-letter
/// queue as root (as 30 receives would have), is moved by `redrive` as the deploying user;
/// the process function receives it again and the image stays labeled with the same labels;
/// a second `redrive` has nothing to move.
pub fn redrive_moves_a_dead_letter(
    rt: &tokio::runtime::Runtime,
    local: &LocalConfig,
    stage: &deployer::cloud::stage::Deployed,
    (owner, id, labels): (&str, &str, &[String]),
) -> Result<()> {
    use deployer::ops::redrive::RedriveReport;
    let key = format!("{}{owner}/{id}", stack::app::UPLOAD_PREFIX);
    // The event as S3 sends it (every field of its record, as the AWS S3 event reference
    // shows one).
    let event = serde_json::json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-01-01T00:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "EXAMPLE", "x-amz-id-2": "EXAMPLE"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "uploads",
            "bucket": {
                "name": stage.bucket,
                "ownerIdentity": {"principalId": "EXAMPLE"},
                "arn": format!("arn:aws:s3:::{}", stage.bucket)
            },
            "object": {
                "key": key,
                "size": deployer::verify::smoke::DEFAULT_IMAGE.len(),
                "eTag": "0123456789abcdef0123456789abcdef",
                "sequencer": "0A1B2C3D4E5F678901"
            }
        }
    }]});
    let before = receives(id)?;
    rt.block_on(async {
        let clients = root_clients(local).await?;
        clients
            .sqs
            .send_message()
            .queue_url(&stage.dead_letter_queue_url)
            .message_body(event.to_string())
            .send()
            .await
            .context("SendMessage to the dead-letter queue")?;
        anyhow::Ok(())
    })?;
    let moved: RedriveReport = ok(&["redrive"])?;
    ensure!(
        moved.moved == 1 && moved.failed.is_empty() && moved.after.total() == 0,
        "redrive: {moved:?}"
    );
    // The process function receives it again: one more receive in the image's trace.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while receives(id)? <= before {
        ensure!(
            std::time::Instant::now() < deadline,
            "the redriven event of image {id} was not received again within 90 s"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    let (after, _) = rt.block_on(read_back(local, stage, owner, id))?;
    ensure!(
        after == labels,
        "after the redrive image {id} has labels {after:?}, before {labels:?}"
    );
    let again: RedriveReport = ok(&["redrive"])?;
    ensure!(
        again.moved == 0 && again.before.total() == 0,
        "a second redrive: {again:?}"
    );
    eprintln!(
        "e2e    redrive moved image {id}'s dead letter back to the work queue; it was received again and stayed labeled; a second redrive had nothing to move"
    );
    Ok(())
}

/// The receives of image `id`'s record that `trace` finds.
fn receives(id: &str) -> Result<usize> {
    let tr: TraceReport = ok(&["trace", id, "--since", "1h"])?;
    Ok(tr.process_invocations.len())
}
