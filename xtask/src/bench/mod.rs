//! `cargo xtask bench [NAME]`: measured figures, printed as a table and written as JSON under
//! `target/bench/`, with the machine they were taken on. The figures in docs/figures.md come from here.

pub mod burst;
mod deploy;
mod labels;
mod load;
mod scoped;

use std::fs;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use deployer::build::{BuildArch, BuildConfig, build};
use deployer::util::workspace_root;
use serde_json::{Value, json};
use stack::Architecture;

use crate::console::Console;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which benchmark: build (artifact sizes, no-change rebuild time), labels (local
    /// DetectLabels: model load, latency, throughput) or opt-level (arm64 sizes of each
    /// function at opt-level s, z and 3; three cold builds) or deploy (local deploy, no-op
    /// redeploy and teardown times against the AWS CLI, upload-to-labels latency) or load (200
    /// concurrent uploads, good and bad, against a local stack with IAM enforced) or scoped
    /// (what per-user sessions add to the metadata function: cold and warm p50) or burst
    /// (N uploads against a label service that is a quota of Q calls a second, with an optional
    /// outage; not part of the default run); default: all but burst
    pub name: Option<String>,
    /// burst: how many images to upload
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub images: usize,
    /// burst: the label service's DetectLabels quota, in calls a second (the stage is paced
    /// for it)
    #[arg(long, value_name = "Q", default_value_t = 20)]
    pub tps: u32,
    /// burst: stop the label service for S seconds once half the uploads are answered
    #[arg(long, value_name = "S")]
    pub outage_seconds: Option<u64>,
    /// burst: the label service answers as a stub after MS milliseconds (not the model), or
    /// `off` for the model
    #[arg(long, value_name = "MS|off", default_value = "50")]
    pub stub_latency_ms: deployer::local::emulator::LabelsAnswer,
    /// burst: uploads in flight at once
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub concurrency: usize,
}

const BENCHES: &[&str] = &["build", "labels", "opt-level", "deploy", "load", "scoped"];
/// Benchmarks run only by name: they take their figures from flags.
const BY_NAME: &[&str] = &["burst"];

pub fn run(a: Args) -> Result<()> {
    let names: Vec<&str> = match a.name.as_deref() {
        None => BENCHES.to_vec(),
        Some(n) if BENCHES.contains(&n) || BY_NAME.contains(&n) => vec![n],
        Some(n) => bail!(
            "unknown benchmark `{n}`; the benchmarks are {}, {}",
            BENCHES.join(", "),
            BY_NAME.join(", ")
        ),
    };
    for name in names {
        let mut file = name.to_string();
        let result = match name {
            "burst" => {
                let b = burst::Burst {
                    images: a.images,
                    tps: a.tps,
                    outage_seconds: a.outage_seconds,
                    stub_latency_ms: match a.stub_latency_ms {
                        deployer::local::emulator::LabelsAnswer::Stub { latency_ms } => {
                            Some(latency_ms)
                        }
                        deployer::local::emulator::LabelsAnswer::Model => None,
                    },
                    concurrency: a.concurrency.max(1),
                    labels_binary: None,
                };
                if b.outage_seconds.is_some() {
                    file = "burst-outage".into();
                }
                let v = burst::run(&b)?;
                write(&file, &v)?;
                burst::judge(&b, &v)?;
                continue;
            }
            "build" => bench_build()?,
            "labels" => labels::run()?,
            "opt-level" => bench_opt_level()?,
            "deploy" => deploy::run()?,
            "load" => load::run()?,
            "scoped" => scoped::run()?,
            _ => unreachable!("listed in BENCHES"),
        };
        write(&file, &result)?;
    }
    Ok(())
}

/// Writes `target/bench/NAME.json` with the machine it was measured on.
fn write(name: &str, result: &Value) -> Result<()> {
    let dir = workspace_root().join("target").join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    let doc = json!({ "benchmark": name, "machine": machine(), "results": result });
    fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// A benchmark's own local environment (ports and stage apart from the user's and the tests'),
/// wiped and started for `measure`, and stopped afterwards whatever it returned.
pub struct LocalBench {
    pub port: u16,
    pub labels_port: u16,
    pub stage: &'static str,
}

impl LocalBench {
    pub fn config(&self) -> deployer::local::emulator::LocalConfig {
        deployer::local::emulator::LocalConfig::for_ports(self.port, self.labels_port)
    }

    pub fn run<T>(
        &self,
        measure: impl FnOnce(&deployer::local::emulator::LocalConfig) -> Result<T>,
    ) -> Result<T> {
        self.run_configured(self.config(), measure)
    }

    /// [`run`](Self::run) with the environment's settings given (the label service's rate and
    /// answer).
    pub fn run_configured<T>(
        &self,
        cfg: deployer::local::emulator::LocalConfig,
        measure: impl FnOnce(&deployer::local::emulator::LocalConfig) -> Result<T>,
    ) -> Result<T> {
        // From nothing, every time: what an earlier run left (a stack, a retained bucket)
        // would change what is measured.
        deployer::local::emulator::down(&cfg)?;
        deployer::local::emulator::wipe(&cfg)?;
        deployer::local::emulator::up(&cfg, &Console::new("bench"))?;
        let result = measure(&cfg);
        let _ = deployer::local::emulator::down(&cfg);
        result
    }

    /// Runs `cargo xtask ARGS --local --stage STAGE --output json` against this environment:
    /// its time and its report.
    pub fn xtask<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<(f64, T)> {
        let mut all = args.to_vec();
        all.extend(["--local", "--stage", self.stage, "--output", "json"]);
        let run = crate::child::Xtask::new(&all)?
            .env("IMAGE_PIPELINE_LOCAL_PORT", self.port.to_string())
            .env("IMAGE_PIPELINE_LABELS_PORT", self.labels_port.to_string())
            .stderr(crate::child::Stderr::Hide)
            .run()?;
        Ok((run.seconds, run.report()?))
    }
}

/// The `p` quantile (0 to 1) of `values`, nearest rank; NaN for no values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
    v[i.min(v.len() - 1)]
}

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

/// What the figures were measured on.
pub fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or(std::env::consts::ARCH);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kb: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    json!({
        "cpu": model,
        "cores": cores,
        "memory_gib": (mem_kb as f64 / 1_048_576.0 * 10.0).round() / 10.0,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

/// Artifact sizes of the default (arm64) build, and the time of a build that changes nothing
/// (targets: each zip at most 4 MB, a no-change rebuild at most 3 s), measured after a build
/// has brought everything up to date.
fn bench_build() -> Result<Value> {
    let reporter = Console::new("build");
    let mut rows = Vec::new();
    println!(
        "{:<8} {:<10} {:>12} {:>12} {:>16}",
        "arch", "function", "binary MB", "zip MB", "no-op rebuild s"
    );
    for arch in [Architecture::Arm64] {
        let cfg = BuildConfig {
            arch: BuildArch::Lambda(arch),
            functions: vec![],
            opt_level: None,
        };
        build(&cfg, &reporter)?;
        let started = Instant::now();
        let report = build(&cfg, &reporter)?;
        let noop = started.elapsed().as_secs_f64();
        if report.unchanged.len() != report.manifest.functions.len() {
            bail!("a second build of unchanged sources re-zipped something: not deterministic");
        }
        for a in &report.manifest.functions {
            println!(
                "{:<8} {:<10} {:>12.2} {:>12.2} {:>16.2}",
                arch.as_str(),
                a.function,
                a.binary_bytes as f64 / 1e6,
                a.zip_bytes as f64 / 1e6,
                noop
            );
            rows.push(json!({
                "arch": arch.as_str(),
                "function": a.function,
                "binary_bytes": a.binary_bytes,
                "zip_bytes": a.zip_bytes,
                "zip_sha256": a.sha256,
                "noop_rebuild_seconds": noop,
                "zip_target_bytes": 4_000_000,
                "zip_within_target": a.zip_bytes <= 4_000_000,
            }));
        }
    }
    reporter.finish();
    Ok(Value::Array(rows))
}

/// The `lambda` profile's opt-level, measured: every function built for arm64 at "s", "z"
/// and 3, sizes compared. Ends with a build at the profile's own setting, so the artifacts
/// left behind are the normal ones.
fn bench_opt_level() -> Result<Value> {
    let reporter = Console::new("build");
    let mut rows = Vec::new();
    let mut table = Vec::new();
    for level in ["s", "z", "3"] {
        let started = Instant::now();
        let report = build(
            &BuildConfig {
                arch: BuildArch::Lambda(Architecture::Arm64),
                functions: vec![],
                opt_level: Some(level.to_string()),
            },
            &reporter,
        )?;
        let seconds = started.elapsed().as_secs_f64();
        for a in &report.manifest.functions {
            table.push(format!(
                "{:<10} {:<10} {:>12.2} {:>12.2} {:>12.0}",
                level,
                a.function,
                a.binary_bytes as f64 / 1e6,
                a.zip_bytes as f64 / 1e6,
                seconds
            ));
            rows.push(json!({
                "opt_level": level,
                "function": a.function,
                "binary_bytes": a.binary_bytes,
                "zip_bytes": a.zip_bytes,
                "build_seconds": seconds,
            }));
        }
    }
    build(
        &BuildConfig {
            arch: BuildArch::Lambda(Architecture::Arm64),
            functions: vec![],
            opt_level: None,
        },
        &reporter,
    )?;
    reporter.finish();
    println!(
        "{:<10} {:<10} {:>12} {:>12} {:>12}",
        "opt-level", "function", "binary MB", "zip MB", "build s"
    );
    for line in table {
        println!("{line}");
    }
    Ok(Value::Array(rows))
}
