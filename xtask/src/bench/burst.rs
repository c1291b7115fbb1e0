//! `cargo xtask bench burst`: N uploads as fast as the API and the machine take them, against
//! a local stack with IAM enforced whose label service is a quota of Q calls a second
//! (Rekognition's throttling error above it), optionally with the label service stopped for S
//! seconds in the middle. It waits until the work queue drains, then counts: every image must
//! be labeled with exactly one item and nothing may be dead. The figures are the calls the
//! label service throttled (0 when the pace holds the quota), its peak calls arriving in one
//! second (at most Q by the quota) and the wall time (target: at most 1.3 × N / Q + 60 s).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use api_types::Uploaded;
use deployer::cloud::aws::{Clients, LocalCredentials, Target};
use deployer::cloud::stage::Deployed;
use deployer::local::emulator::{self, LabelsAnswer, LocalConfig};
use deployer::ops::deploy::DeployReport;
use deployer::ops::teardown::TeardownReport;
use serde_json::{Value, json};

use crate::bench::LocalBench;

/// The benchmark's own local environment, apart from the user's, the test's and the others'.
const ENV: LocalBench = LocalBench {
    port: 4593,
    labels_port: 4626,
    stage: "burst",
};

/// What `bench burst` is asked to do.
#[derive(Debug, Clone)]
pub struct Burst {
    pub images: usize,
    /// The label service's quota, in calls a second.
    pub tps: u32,
    /// Stop the label service for this long once half the uploads are answered.
    pub outage_seconds: Option<u64>,
    /// The label service's answer: the stub after this latency, or the model (`None`).
    pub stub_latency_ms: Option<u64>,
    /// Uploads in flight at once.
    pub concurrency: usize,
    /// A detect-labels binary to run instead of building one.
    pub labels_binary: Option<std::path::PathBuf>,
}

/// The photograph every upload sends (the smallest of the fixtures).
const PHOTO: &[u8] = include_bytes!("../../../fixtures/images/rocket.jpg");

impl Burst {
    /// The target the wall time is held to: 1.3 × N / Q + 60 s.
    pub fn wall_target(&self) -> f64 {
        1.3 * self.images as f64 / f64::from(self.tps.max(1)) + 60.0
    }
}

pub fn run(b: &Burst) -> Result<Value> {
    let mut cfg = ENV.config();
    cfg.labels_binary = b.labels_binary.clone();
    cfg.labels_tps = Some(b.tps);
    cfg.labels_answer = Some(match b.stub_latency_ms {
        Some(latency_ms) => LabelsAnswer::Stub { latency_ms },
        None => LabelsAnswer::Model,
    });
    ENV.run_configured(cfg, |cfg| measure(cfg, b))
}

fn measure(cfg: &LocalConfig, b: &Burst) -> Result<Value> {
    let quota = (b.images + 10).to_string();
    let (_, deployed) =
        ENV.xtask::<DeployReport>(&["deploy", "--uploads-per-user-per-day", &quota])?;
    ensure!(
        deployed.settings.labels.quota_tps == b.tps,
        "the stage is paced for {} calls a second, not the label service's {}",
        deployed.settings.labels.quota_tps,
        b.tps
    );
    let target = cfg
        .target(LocalCredentials::root())
        .context("the local environment has no certificate")?;
    let stage = deployed.deployed(&target)?;
    let rt = crate::target::runtime()?;
    let result = rt.block_on(burst(cfg, &target, &stage, b));
    let _ = ENV.xtask::<TeardownReport>(&["teardown"]);
    let mut v = result?;
    v["pace"] = serde_json::to_value(deployed.settings.labels)?;
    Ok(v)
}

/// A user of the stage and a way to get a fresh access token (they last 15 minutes; a burst
/// may last longer).
struct Uploader {
    users: deployer::ops::users::StageUsers,
    email: String,
    password: String,
}

impl Uploader {
    async fn new(target: &Target) -> Result<Self> {
        use deployer::ops::users::{StageUsers, UsersConfig};
        let users = StageUsers::connect(&UsersConfig {
            target: target.clone(),
            stage: stack::Stage::parse(ENV.stage)?,
        })
        .await?;
        let email = "burst@example.com".to_string();
        let password = format!("Burst-{}-Aa1", super::load::uuid_like());
        users.add(&email, &password).await?;
        Ok(Self {
            users,
            email,
            password,
        })
    }

    async fn auth(&self) -> Result<String> {
        let t = self.users.token(&self.email, &self.password).await?;
        Ok(format!("Bearer {}", t.access_token))
    }
}

/// The label service's counts, summed over its runs (an outage restarts it from zero).
#[derive(Debug, Default, Clone, Copy)]
struct LabelCounts {
    served: u64,
    throttled: u64,
    peak_per_second: u64,
}

impl LabelCounts {
    fn add(&mut self, stats: Option<Value>) {
        let Some(s) = stats else { return };
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        self.served += n("served");
        self.throttled += n("throttled");
        self.peak_per_second = self.peak_per_second.max(n("peak_per_second"));
    }
}

/// Sends `b.images` uploads, `b.concurrency` at a time: the ids accepted and the errors.
async fn upload_all(
    http: &reqwest::Client,
    up: &Uploader,
    api: &str,
    b: &Burst,
    answered: Arc<AtomicUsize>,
) -> Result<(BTreeSet<String>, Vec<String>)> {
    let mut auth = up.auth().await?;
    let mut signed_in = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let (mut ids, mut errors) = (BTreeSet::new(), Vec::new());
    let mut collect =
        |r: Result<std::result::Result<String, String>, tokio::task::JoinError>| match r {
            Ok(Ok(id)) => {
                ids.insert(id);
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("an upload task failed: {e}")),
        };
    for i in 0..b.images {
        if i > 0 && i % 1000 == 0 {
            eprintln!("bench  {i} of {} uploads sent", b.images);
        }
        if signed_in.elapsed() > Duration::from_secs(600) {
            auth = up.auth().await?;
            signed_in = Instant::now();
        }
        while tasks.len() >= b.concurrency {
            if let Some(r) = tasks.join_next().await {
                collect(r);
            }
        }
        let (http, url, auth) = (http.clone(), format!("{api}/upload"), auth.clone());
        let answered = answered.clone();
        tasks.spawn(async move {
            let resp = http
                .post(url)
                .header("authorization", auth)
                .header("content-type", "image/jpeg")
                .body(PHOTO)
                .send()
                .await;
            answered.fetch_add(1, Ordering::SeqCst);
            let resp = resp.map_err(|e| format!("no answer: {e}"))?;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            if status != 201 {
                return Err(format!("{status} {text}"));
            }
            serde_json::from_str::<Uploaded>(&text)
                .map(|u| u.image_id)
                .map_err(|e| format!("201 with {e}"))
        });
    }
    while let Some(r) = tasks.join_next().await {
        collect(r);
    }
    Ok((ids, errors))
}

/// Once half the uploads are answered, stops the label service for `seconds`, then starts it
/// again: its counts before the stop.
fn outage(
    cfg: LocalConfig,
    seconds: u64,
    half: usize,
    answered: Arc<AtomicUsize>,
) -> Result<Value> {
    while answered.load(Ordering::SeqCst) < half {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = emulator::labels_stats(&cfg).unwrap_or(Value::Null);
    eprintln!("bench  the label service stops for {seconds} s");
    emulator::stop_labels(&cfg)?;
    std::thread::sleep(Duration::from_secs(seconds));
    emulator::up(&cfg, &crate::console::Console::new("bench"))?;
    eprintln!("bench  the label service is back");
    Ok(before)
}

/// Items of the images table by id: how many, and their statuses.
pub(crate) async fn items(clients: &Clients, table: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let mut items: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut key = None;
    loop {
        let page = clients
            .dynamodb
            .scan()
            .table_name(table)
            .projection_expression("image_id, #s")
            .expression_attribute_names("#s", "status")
            .set_exclusive_start_key(key)
            .send()
            .await
            .context("scanning the images table")?;
        for item in page.items() {
            let s = |k: &str| {
                item.get(k)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            items.entry(s("image_id")).or_default().push(s("status"));
        }
        key = page.last_evaluated_key().cloned();
        if key.is_none() {
            break;
        }
    }
    Ok(items)
}

/// Waits until the work queue has been empty for two polls in a row and no item is still
/// `processing`, or `limit` has passed since `start`.
async fn drain(clients: &Clients, stage: &Deployed, start: Instant, limit: Duration) -> Result<()> {
    let mut empty_polls = 0;
    let mut said = Instant::now();
    while start.elapsed() < limit {
        let c = deployer::cloud::queue::queue_counts(&clients.sqs, &stage.work_queue_url)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        if said.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "bench  the work queue: {} waiting, {} in flight or held back ({:.0} s)",
                c.visible,
                c.in_flight,
                start.elapsed().as_secs_f64()
            );
            said = Instant::now();
        }
        empty_polls = if c.total() == 0 { empty_polls + 1 } else { 0 };
        if empty_polls >= 2 {
            let all = items(clients, &stage.table).await?;
            if all.values().flatten().all(|s| s != "processing") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}

async fn burst(cfg: &LocalConfig, target: &Target, stage: &Deployed, b: &Burst) -> Result<Value> {
    let (clients, _) = deployer::cloud::aws::connect(target).await?;
    let http = deployer::cloud::aws::http_client(target, Duration::from_secs(120))
        .map_err(|e| anyhow::anyhow!(e))?;
    let up = Uploader::new(target).await?;
    let answered = Arc::new(AtomicUsize::new(0));
    let half = b.images / 2;
    let stopper = b.outage_seconds.map(|s| {
        let (cfg, answered) = (cfg.clone(), answered.clone());
        std::thread::spawn(move || outage(cfg, s, half, answered))
    });
    let start = Instant::now();
    let (ids, upload_errors) = upload_all(&http, &up, &stage.api_url, b, answered).await?;
    let uploaded_s = start.elapsed().as_secs_f64();
    let mut counts = LabelCounts::default();
    if let Some(t) = stopper {
        let before = t
            .join()
            .map_err(|_| anyhow::anyhow!("the outage thread panicked"))??;
        counts.add(Some(before));
    }
    let limit =
        Duration::from_secs_f64(3.0 * b.wall_target() + b.outage_seconds.unwrap_or(0) as f64);
    drain(&clients, stage, start, limit).await?;
    let wall_s = start.elapsed().as_secs_f64();
    counts.add(emulator::labels_stats(cfg));
    let all = items(&clients, &stage.table).await?;
    let dlq = deployer::cloud::queue::queue_depth(&clients.sqs, &stage.dead_letter_queue_url)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let status_of = |id: &String| all.get(id).and_then(|s| s.first()).map(String::as_str);
    let count = |want: &str| ids.iter().filter(|id| status_of(id) == Some(want)).count();
    let extra_items = all
        .iter()
        .map(|(id, v)| {
            if ids.contains(id) {
                v.len() - 1
            } else {
                v.len()
            }
        })
        .sum::<usize>();
    Ok(json!({
        "images": ids.len(),
        "upload_errors": upload_errors.len(),
        "upload_error_samples": upload_errors.iter().take(5).collect::<Vec<_>>(),
        "labeled": count("labeled"),
        "failed": count("failed"),
        "processing": count("processing"),
        "missing": ids.iter().filter(|id| !all.contains_key(*id)).count(),
        "extra_items": extra_items,
        "dlq": dlq,
        "served": counts.served,
        "throttled": counts.throttled,
        "peak_per_second": counts.peak_per_second,
        "uploaded_s": uploaded_s,
        "wall_s": wall_s,
    }))
}

/// Prints the table, and fails when anything was lost.
pub fn judge(b: &Burst, v: &Value) -> Result<()> {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "burst: {} images at Q = {} ({}){}",
        b.images,
        b.tps,
        match b.stub_latency_ms {
            Some(ms) => format!("stub, {ms} ms"),
            None => "the model".into(),
        },
        b.outage_seconds
            .map(|s| format!(", the label service stopped {s} s mid-burst"))
            .unwrap_or_default()
    );
    for (k, want) in [
        ("images", b.images as u64 - n("upload_errors")),
        ("labeled", n("images")),
        ("failed", 0),
        ("processing", 0),
        ("missing", 0),
        ("extra_items", 0),
        ("dlq", 0),
        ("upload_errors", 0),
    ] {
        println!("  {k:<16} {:>8}   (want {want})", n(k));
    }
    // The label service counts a call in the second it arrived in and admits at most Q of
    // them, so `peak_per_second` cannot exceed Q: a pace above the quota shows as throttled
    // calls (each one held back and retried, not lost).
    println!("  {:<16} {:>8}   (want 0)", "throttled", n("throttled"));
    println!(
        "  {:<16} {:>8}   (at most {} by the quota)",
        "peak_per_second",
        n("peak_per_second"),
        b.tps
    );
    println!(
        "  {:<16} {:>8.1}   (target at most {:.0})",
        "wall_s",
        f("wall_s"),
        b.wall_target()
    );
    // An upload the API refused (a 5xx when the machine is saturated) was not accepted: its
    // client was told so, and no item of it may exist (extra_items counts any).
    let lost = n("images") - n("labeled").min(n("images"));
    ensure!(
        lost == 0 && n("extra_items") == 0 && n("dlq") == 0,
        "images were lost: {lost} of {} accepted not labeled, {} extra items, {} dead",
        n("images"),
        n("extra_items"),
        n("dlq")
    );
    if n("upload_errors") > 0 {
        eprintln!(
            "bench  {} of {} uploads were refused by the API (not accepted; no item of them): {}",
            n("upload_errors"),
            b.images,
            v["upload_error_samples"]
        );
    }
    Ok(())
}
