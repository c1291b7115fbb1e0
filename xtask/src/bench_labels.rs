//! `cargo xtask bench labels`: the local DetectLabels service, release build, over HTTP as
//! the SDK would call it: model load time, single-image latency over the test photographs
//! (p50/p95), and throughput with 4 concurrent requests. Targets: load ≤ 1 s, p50 ≤ 150 ms.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use deployer::pyenv::workspace_root;
use serde_json::{Value, json};

const IMAGES: &[&str] = &["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png"];
const ROUNDS: usize = 10;
const CONCURRENCY: usize = 4;
const PER_CLIENT: usize = 10;

/// Kills the service however the benchmark ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn post(port: u16, body: &str) -> Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: RekognitionService.DetectLabels\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP response")?;
    Ok(status)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn run() -> Result<Value> {
    let model = deployer::model::ensure(&|m| eprintln!("bench  {m}"))?;
    let root = workspace_root();
    eprintln!("bench  building detect-labels (release)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "local-labels"])
        .status()?;
    if !status.success() {
        bail!("building detect-labels failed");
    }
    let started = Instant::now();
    let mut child = Child(
        Command::new(root.join("target/release/detect-labels"))
            .args(["--port", "0", "--workers", &CONCURRENCY.to_string()])
            .arg("--model-dir")
            .arg(&model)
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start detect-labels")?,
    );
    let stdout = child.0.stdout.take().context("no stdout")?;
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

    let shared = root
        .join("..")
        .join("shared")
        .join("fixtures")
        .join("images");
    let bodies: Vec<String> = IMAGES
        .iter()
        .map(|name| {
            let bytes = std::fs::read(shared.join(name)).with_context(|| name.to_string())?;
            Ok(json!({
                "Image": {"Bytes": base64::engine::general_purpose::STANDARD.encode(bytes)},
                "MaxLabels": 10,
                "MinConfidence": 50
            })
            .to_string())
        })
        .collect::<Result<_>>()?;
    // Warm up once per image, then measure.
    for b in &bodies {
        post(port, b)?;
    }
    let mut latencies = Vec::new();
    for _ in 0..ROUNDS {
        for b in &bodies {
            let t = Instant::now();
            let status = post(port, b)?;
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            if status != 200 {
                bail!("DetectLabels answered {status}");
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let (p50, p95) = (percentile(&latencies, 0.5), percentile(&latencies, 0.95));

    let t = Instant::now();
    let handles: Vec<_> = (0..CONCURRENCY)
        .map(|i| {
            let bodies = bodies.clone();
            std::thread::spawn(move || -> Result<()> {
                for j in 0..PER_CLIENT {
                    post(port, &bodies[(i + j) % bodies.len()])?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    let throughput = (CONCURRENCY * PER_CLIENT) as f64 / t.elapsed().as_secs_f64();

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
