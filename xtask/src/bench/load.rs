//! `cargo xtask bench load`: 200 concurrent uploads, good and bad mixed, against a local stack
//! with IAM enforced. Every request must be answered (good ones 201, bad ones a 4xx JSON
//! error, none a 5xx or a dropped connection); every good image must end labeled with exactly
//! one item; no bad one may be stored; the failure queue must stay empty. The figures are the
//! latency percentiles of each kind and the time until the last image was labeled.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use api_types::{ErrorBody, ImageMetadata, ImageStatus, Uploaded};
use deployer::cloud::aws::{Clients, LocalCredentials, Target};
use deployer::local::emulator::LocalConfig;
use deployer::ops::deploy::DeployReport;
use deployer::ops::teardown::TeardownReport;
use serde_json::{Value, json};

use crate::bench::{LocalBench, percentile};

/// The benchmark's own local environment, apart from the user's, the test's and `deploy`'s.
const ENV: LocalBench = LocalBench {
    port: 4587,
    labels_port: 4620,
    stage: "load",
};
const REQUESTS: usize = 200;
/// One request in this many is a bad one.
const BAD_EVERY: usize = 3;
const LABEL_TIMEOUT: Duration = Duration::from_secs(900);

const PHOTOS: [&[u8]; 4] = [
    include_bytes!("../../../fixtures/images/chelsea.png"),
    include_bytes!("../../../fixtures/images/coffee.png"),
    include_bytes!("../../../fixtures/images/astronaut.png"),
    include_bytes!("../../../fixtures/images/rocket.jpg"),
];

/// The bad bodies, each with the error code it must get.
fn bad_bodies() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let cat = PHOTOS[0];
    let mut tall = cat.to_vec();
    tall[16..20].copy_from_slice(&1u32.to_be_bytes());
    tall[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = deployer::build::zip::crc32(&tall[12..29]);
    tall[29..33].copy_from_slice(&crc.to_be_bytes());
    let mut polyglot = cat.to_vec();
    polyglot.extend_from_slice(b"PK\x03\x04 appended archive");
    let rocket = PHOTOS[3];
    vec![
        (
            "text",
            b"this is not an image".to_vec(),
            "unsupported_media_type",
        ),
        ("empty", Vec::new(), "empty_body"),
        (
            "truncated PNG",
            cat[..cat.len() / 2].to_vec(),
            "invalid_image",
        ),
        ("PNG with an archive appended", polyglot, "trailing_data"),
        ("PNG claiming 1x100000", tall, "image_too_small"),
        (
            "GIF",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
            "unsupported_media_type",
        ),
        (
            "JPEG without its end",
            rocket[..rocket.len() - 2].to_vec(),
            "invalid_image",
        ),
    ]
}

fn xtask<T: serde::de::DeserializeOwned>(args: &[&str]) -> Result<T> {
    Ok(ENV.xtask(args)?.1)
}

pub fn run() -> Result<Value> {
    ENV.run(measure)
}

/// One request's outcome.
#[derive(Debug)]
struct Sent {
    good: bool,
    kind: &'static str,
    want_code: &'static str,
    status: Option<u16>,
    body: String,
    seconds: f64,
}

fn measure(cfg: &LocalConfig) -> Result<Value> {
    xtask::<TeardownReport>(&["teardown"])?;
    let deployed: DeployReport = xtask(&["deploy"])?;
    let target = cfg
        .target(LocalCredentials::root())
        .context("the local environment has no certificate")?;
    let stage = deployed.deployed(&target)?;
    let rt = crate::target::runtime()?;
    let auth = rt.block_on(sign_in(&target))?;
    let result = rt.block_on(load(
        &target,
        &auth,
        &stage.api_url,
        &stage.bucket,
        &stage.table,
        &stage.dead_letter_queue_url,
    ));
    xtask::<TeardownReport>(&["teardown"])?;
    result
}

/// Adds the stage's load user (a random password each run) and signs them in: the
/// `Authorization` header every request carries.
async fn sign_in(target: &Target) -> Result<String> {
    use deployer::ops::users::{StageUsers, UsersConfig};
    let users = StageUsers::connect(&UsersConfig {
        target: target.clone(),
        stage: stack::Stage::parse(ENV.stage)?,
    })
    .await?;
    let password = format!("Load-{}-Aa1", uuid_like());
    let email = "load@example.com";
    users.add(email, &password).await?;
    let tokens = users.token(email, &password).await?;
    Ok(format!("Bearer {}", tokens.access_token))
}

/// 32 hexadecimal digits from the clock and the process: a password nobody needs to know.
pub(crate) fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:08x}", t, std::process::id())
}

/// Sends every upload at once, one bad body in every BAD_EVERY: each answer and its time.
async fn send_all(http: &reqwest::Client, auth: &str, api: &str) -> Result<Vec<Sent>> {
    let bad = bad_bodies();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let (good, kind, body, want_code) = if i % BAD_EVERY == BAD_EVERY - 1 {
            let (kind, body, code) = &bad[(i / BAD_EVERY) % bad.len()];
            (false, *kind, body.clone(), *code)
        } else {
            (true, "photograph", PHOTOS[i % PHOTOS.len()].to_vec(), "")
        };
        let (http, url) = (http.clone(), format!("{api}/upload"));
        let auth = auth.to_string();
        tasks.spawn(async move {
            let t = Instant::now();
            let resp = http
                .post(url)
                .header("authorization", auth)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await;
            let (status, body) = match resp {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (Some(status), r.text().await.unwrap_or_default())
                }
                Err(e) => (None, e.to_string()),
            };
            Sent {
                good,
                kind,
                want_code,
                status,
                body,
                seconds: t.elapsed().as_secs_f64(),
            }
        });
    }
    let mut sent = Vec::new();
    while let Some(r) = tasks.join_next().await {
        sent.push(r.context("an upload task failed")?);
    }
    Ok(sent)
}

/// What was answered wrongly, and the ids of the good uploads.
fn judge(sent: &[Sent]) -> (Vec<String>, BTreeSet<String>) {
    // Every request answered as it should be.
    let mut wrong = Vec::new();
    let mut good_ids = BTreeSet::new();
    for s in sent {
        match (s.good, s.status) {
            (_, None) => wrong.push(format!("{}: no answer: {}", s.kind, s.body)),
            (true, Some(201)) => match serde_json::from_str::<Uploaded>(&s.body) {
                Ok(u) => {
                    good_ids.insert(u.image_id);
                }
                Err(e) => wrong.push(format!("{}: 201 with {e}", s.kind)),
            },
            (false, Some(st)) if (400..500).contains(&st) => {
                let code = serde_json::from_str::<ErrorBody>(&s.body)
                    .map(|e| e.error.code)
                    .unwrap_or_default();
                if code != s.want_code {
                    wrong.push(format!("{}: {st} {code}, want {}", s.kind, s.want_code));
                }
            }
            (_, Some(st)) => wrong.push(format!("{}: {st} {}", s.kind, s.body)),
        }
    }
    (wrong, good_ids)
}

/// Waits until every good image is labeled or failed (or something reached the failure
/// queue, or time ran out): the ids still pending and the failures.
async fn wait_labeled(
    (http, auth): (&reqwest::Client, &str),
    clients: &Clients,
    (api, queue): (&str, &str),
    (good_ids, start): (&BTreeSet<String>, Instant),
) -> Result<(BTreeSet<String>, Vec<String>)> {
    // Every good image labeled.
    let mut pending: BTreeSet<String> = good_ids.clone();
    let mut failed = Vec::new();
    while !pending.is_empty() && start.elapsed() < LABEL_TIMEOUT {
        for id in pending.clone() {
            let resp = http
                .get(format!("{api}/metadata/{id}"))
                .header("authorization", auth)
                .send()
                .await;
            let Ok(resp) = resp else { continue };
            if resp.status().as_u16() != 200 {
                continue;
            }
            let text = resp.text().await.unwrap_or_default();
            let Ok(m) = serde_json::from_str::<ImageMetadata>(&text) else {
                continue;
            };
            match m.status {
                ImageStatus::Labeled => {
                    pending.remove(&id);
                }
                ImageStatus::Failed => {
                    failed.push(format!("{id}: {:?}", m.failure_reason));
                    pending.remove(&id);
                }
                _ => {}
            }
        }
        // An image in the failure queue will never be labeled: stop waiting for it.
        let queued = deployer::cloud::queue::queue_depth(&clients.sqs, queue)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        if queued > 0 {
            break;
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok((pending, failed))
}

/// Items of the images table by id: how many, and the status of the first.
async fn items_by_id(clients: &Clients, table: &str) -> Result<BTreeMap<String, (usize, String)>> {
    // Exactly one labeled item per good image, nothing else.
    Ok(super::burst::items(clients, table)
        .await?
        .into_iter()
        .map(|(id, statuses)| {
            let first = statuses.first().cloned().unwrap_or_default();
            (id, (statuses.len(), first))
        })
        .collect())
}

/// The image ids with an object version in the uploads bucket.
async fn stored_ids(clients: &Clients, bucket: &str) -> Result<BTreeSet<String>> {
    // Only good images stored.
    let mut stored = BTreeSet::new();
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let page = clients
            .s3
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .context("listing the uploads bucket")?;
        for v in page.versions() {
            if let Some(k) = v.key() {
                // uploads/{owner}/{id}: the id is the last segment.
                if k.starts_with(stack::app::UPLOAD_PREFIX) {
                    stored.insert(k.rsplit('/').next().unwrap_or_default().to_string());
                }
            }
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
    Ok(stored)
}

/// What the load left behind, next to what it should have.
struct Found {
    wrong: Vec<String>,
    good_ids: BTreeSet<String>,
    good_sent: usize,
    failed: Vec<String>,
    pending: BTreeSet<String>,
    not_once: Vec<String>,
    stray_items: Vec<String>,
    stray_objects: Vec<String>,
    depth: u64,
    answered_in: f64,
    all_labeled_in: f64,
}

/// Prints the table and makes the JSON result.
fn report(sent: &[Sent], f: &Found) -> Value {
    let seconds = |good: bool| -> Vec<f64> {
        sent.iter()
            .filter(|s| s.good == good)
            .map(|s| s.seconds)
            .collect()
    };
    let (good_s, bad_s) = (seconds(true), seconds(false));
    let row = |name: &str, v: &[f64]| {
        println!(
            "{name:<22} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.95),
            percentile(v, 0.99),
            percentile(v, 1.0)
        );
    };
    println!(
        "{:<22} {:>6} {:>8} {:>8} {:>8} {:>8}",
        format!("{REQUESTS} concurrent"),
        "n",
        "p50 s",
        "p95 s",
        "p99 s",
        "max s"
    );
    row("good uploads (201)", &good_s);
    row("bad uploads (4xx)", &bad_s);
    println!(
        "all answered in {:.1} s; all labeled in {:.1} s",
        f.answered_in, f.all_labeled_in
    );
    println!(
        "f.wrong answers {}, f.failed images {}, unlabeled {}, items not exactly once {}, stray items {}, stray objects {}, failure queue {}",
        f.wrong.len(),
        f.failed.len(),
        f.pending.len(),
        f.not_once.len(),
        f.stray_items.len(),
        f.stray_objects.len(),
        f.depth
    );
    json!({
        "requests": REQUESTS,
        "good": f.good_sent,
        "bad": REQUESTS - f.good_sent,
        "good_latency_s": { "p50": percentile(&good_s, 0.5), "p95": percentile(&good_s, 0.95), "p99": percentile(&good_s, 0.99), "max": percentile(&good_s, 1.0) },
        "bad_latency_s": { "p50": percentile(&bad_s, 0.5), "p95": percentile(&bad_s, 0.95), "p99": percentile(&bad_s, 0.99), "max": percentile(&bad_s, 1.0) },
        "all_answered_s": f.answered_in,
        "all_labeled_s": f.all_labeled_in,
        "wrong_answers": f.wrong,
        "failed_images": f.failed,
        "unlabeled": f.pending.len(),
        "items_not_exactly_once": f.not_once.len(),
        "stray_items": f.stray_items.len(),
        "stray_objects": f.stray_objects.len(),
        "dead_letter_depth": f.depth,
    })
}

/// Fails on anything the load should not have left.
fn check(f: &Found) -> Result<()> {
    ensure!(
        f.wrong.is_empty(),
        "answers were not as expected: {:?}",
        f.wrong
    );
    ensure!(
        f.good_ids.len() == f.good_sent,
        "{} good uploads, {} ids",
        f.good_sent,
        f.good_ids.len()
    );
    ensure!(f.failed.is_empty(), "good images failed: {:?}", f.failed);
    ensure!(f.depth == 0, "{} messages in the failure queue", f.depth);
    if !f.pending.is_empty() {
        bail!(
            "{} images not labeled after {} s",
            f.pending.len(),
            LABEL_TIMEOUT.as_secs()
        );
    }
    ensure!(
        f.not_once.is_empty() && f.stray_items.is_empty(),
        "items: {:?} not exactly once, {:?} not from a good upload",
        f.not_once,
        f.stray_items
    );
    ensure!(
        f.stray_objects.is_empty(),
        "objects stored that no good upload made: {:?}",
        f.stray_objects
    );
    Ok(())
}

async fn load(
    target: &Target,
    auth: &str,
    api: &str,
    bucket: &str,
    table: &str,
    queue: &str,
) -> Result<Value> {
    let (clients, _) = deployer::cloud::aws::connect(target).await?;
    let http = deployer::cloud::aws::http_client(target, Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!(e))?;
    let start = Instant::now();
    let sent = send_all(&http, auth, api).await?;
    let answered_in = start.elapsed().as_secs_f64();
    let (wrong, good_ids) = judge(&sent);
    let (pending, failed) =
        wait_labeled((&http, auth), &clients, (api, queue), (&good_ids, start)).await?;
    let all_labeled_in = start.elapsed().as_secs_f64();
    // Exactly one labeled item per good image, nothing else; only good images stored.
    let items = items_by_id(&clients, table).await?;
    let stored = stored_ids(&clients, bucket).await?;
    let depth = deployer::cloud::queue::queue_depth(&clients.sqs, queue)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let found = Found {
        stray_items: items
            .keys()
            .filter(|k| !good_ids.contains(*k))
            .cloned()
            .collect(),
        not_once: items
            .iter()
            .filter(|(_, (n, status))| *n != 1 || status != "labeled")
            .map(|(k, _)| k.clone())
            .collect(),
        stray_objects: stored.difference(&good_ids).cloned().collect(),
        good_sent: sent.iter().filter(|s| s.good).count(),
        wrong,
        good_ids,
        failed,
        pending,
        depth,
        answered_in,
        all_labeled_in,
    };
    let result = report(&sent, &found);
    check(&found)?;
    Ok(result)
}
