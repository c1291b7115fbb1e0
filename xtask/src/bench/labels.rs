//! `cargo xtask bench labels`: the local DetectLabels service, release build, called through
//! `aws-sdk-rekognition` with signed requests: model load time, single-image latency over the
//! test photographs (p50/p95), and throughput with 4 concurrent requests. Targets: load ≤ 1 s,
//! p50 ≤ 150 ms.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aws_sdk_rekognition::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_rekognition::primitives::Blob;
use aws_sdk_rekognition::types::Image;
use deployer::util::{KillOnDrop, workspace_root};
use serde_json::{Value, json};

use crate::bench::percentile;

/// The key the benchmark signs with; the service is started accepting it.
const KEY_ID: &str = "AKIDBENCHMARK";
const SECRET: &str = "benchmark-secret";

const IMAGES: &[&str] = &["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png"];
const ROUNDS: usize = 10;
const CONCURRENCY: usize = 4;
const PER_CLIENT: usize = 10;

fn client(port: u16) -> aws_sdk_rekognition::Client {
    let config = aws_sdk_rekognition::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(KEY_ID, SECRET, None, None, "bench"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .build();
    aws_sdk_rekognition::Client::from_conf(config)
}

async fn detect(client: &aws_sdk_rekognition::Client, image: &[u8]) -> Result<()> {
    client
        .detect_labels()
        .image(Image::builder().bytes(Blob::new(image.to_vec())).build())
        .max_labels(10)
        .min_confidence(50.0)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "DetectLabels failed: {}",
                aws_sdk_rekognition::error::DisplayErrorContext(&e)
            )
        })?;
    Ok(())
}

/// The release build of the service, started on a free port: the child, its port, the
/// model's load time (ms) and the seconds from start to ready.
fn start_service(model: &std::path::Path) -> Result<(KillOnDrop, u16, f64, f64)> {
    let started = Instant::now();
    // Killed however the benchmark ends.
    let mut child = KillOnDrop(
        Command::new(deployer::local::emulator::labels_binary("release"))
            .args(["--port", "0", "--workers", &CONCURRENCY.to_string()])
            // Images go inline: the emulator's endpoint and key are never used.
            .args(["--endpoint", "https://127.0.0.1:1"])
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .arg("--allow-key")
            .arg(format!("{KEY_ID}:{SECRET}"))
            .arg("--model-dir")
            .arg(model)
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start detect-labels")?,
    );
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let ready = started.elapsed().as_secs_f64();
    // "detect-labels listening on http://127.0.0.1:PORT (model loaded in N ms)"
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("unexpected start-up line: {line}"))?;
    let load_ms: f64 = line
        .split("loaded in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);

    Ok((child, port, load_ms, ready))
}

/// Sequential latencies (ms) over ROUNDS of every image after a warm-up, then the time
/// CONCURRENCY clients take for PER_CLIENT requests each.
fn measure(port: u16, images: Vec<Vec<u8>>) -> Result<(Vec<f64>, std::time::Duration)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CONCURRENCY)
        .enable_all()
        .build()?;
    let c = client(port);
    rt.block_on(async {
        // Warm up once per image, then measure.
        for image in &images {
            detect(&c, image).await?;
        }
        let mut latencies = Vec::new();
        for _ in 0..ROUNDS {
            for image in &images {
                let t = Instant::now();
                detect(&c, image).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let t = Instant::now();
        let clients: Vec<_> = (0..CONCURRENCY)
            .map(|i| {
                let (c, images) = (c.clone(), images.clone());
                tokio::spawn(async move {
                    for j in 0..PER_CLIENT {
                        detect(&c, &images[(i + j) % images.len()]).await?;
                    }
                    Ok::<(), anyhow::Error>(())
                })
            })
            .collect();
        for h in clients {
            h.await
                .map_err(|_| anyhow::anyhow!("a client task panicked"))??;
        }
        Ok::<_, anyhow::Error>((latencies, t.elapsed()))
    })
}

pub fn run() -> Result<Value> {
    let model = deployer::local::model::ensure(&crate::console::Console::new("bench"))?;
    let root = workspace_root();
    eprintln!("bench  building detect-labels (release)");
    let status = deployer::tools::cmd::cargo()
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "local-labels"])
        .status()?;
    if !status.success() {
        bail!("building detect-labels failed");
    }
    // Killed however the benchmark ends.
    let (_child, port, load_ms, ready) = start_service(&model)?;
    let fixtures = root.join("fixtures").join("images");
    let images: Vec<Vec<u8>> = IMAGES
        .iter()
        .map(|name| std::fs::read(fixtures.join(name)).with_context(|| name.to_string()))
        .collect::<Result<_>>()?;
    let (latencies, elapsed) = measure(port, images)?;
    let (p50, p95) = (percentile(&latencies, 0.5), percentile(&latencies, 0.95));
    let throughput = (CONCURRENCY * PER_CLIENT) as f64 / elapsed.as_secs_f64();

    println!(
        "{:<34} {:>10} {:>10}",
        "local DetectLabels (release)", "measured", "target"
    );
    println!(
        "{:<34} {:>10.0} {:>10}",
        "model load, ms", load_ms, "≤ 1000"
    );
    println!(
        "{:<34} {:>10.2} {:>10}",
        "process start to ready, s", ready, ""
    );
    println!("{:<34} {:>10.1} {:>10}", "latency p50, ms", p50, "≤ 150");
    println!("{:<34} {:>10.1} {:>10}", "latency p95, ms", p95, "");
    println!(
        "{:<34} {:>10.1} {:>10}",
        "throughput, 4 concurrent, img/s", throughput, ""
    );
    Ok(json!({
        "model_load_ms": load_ms,
        "start_to_ready_s": ready,
        "latency_ms": {"p50": p50, "p95": p95, "samples": latencies.len(), "images": IMAGES},
        "throughput_images_per_s": throughput,
        "concurrency": CONCURRENCY,
        "targets": {"model_load_ms": 1000, "latency_p50_ms": 150},
    }))
}
