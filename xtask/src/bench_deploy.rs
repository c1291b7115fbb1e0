//! `cargo xtask bench deploy`: deploy, no-op redeploy and teardown times on the local
//! environment, end to end as a user runs them (the xtask binary, artifacts already built),
//! upload-to-labels latency, and, as a reference on the same endpoint in the same run, the AWS
//! CLI's `aws cloudformation deploy` with the same template and artifacts.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use deployer::deploy::{parameters, template_body};
use deployer::local::{self, LocalConfig};
use deployer::pyenv::{Venv, workspace_root};
use serde_json::{Value, json};
use stack::{App, Architecture, Stage};

/// The benchmark's own local environment, apart from the user's and the test's.
const PORT: u16 = 4586;
const LABELS_PORT: u16 = 4619;
const STAGE: &str = "bench";
/// The AWS CLI reference deploys the same template under another stage, so names differ.
const CLI_STAGE: &str = "benchcli";
const ROUNDS: usize = 3;
const UPLOADS: usize = 10;

fn xtask(args: &[&str]) -> Result<(f64, Value)> {
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let t = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .args(["--local", "--stage", STAGE, "--output", "json"])
        .current_dir(workspace_root())
        .env("IMAGE_PIPELINE_LOCAL_PORT", PORT.to_string())
        .env("IMAGE_PIPELINE_LABELS_PORT", LABELS_PORT.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "`cargo xtask {}` failed",
        args.join(" ")
    );
    Ok((secs, serde_json::from_slice(&out.stdout)?))
}

fn aws(venv: &Venv, endpoint: &str, ca: &std::path::Path, args: &[String]) -> Result<f64> {
    // `aws cloudformation deploy` names its change set after the current second, so two runs
    // within one second collide ("ChangeSet … already exists"): start each in a new second,
    // before the clock starts.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    std::thread::sleep(std::time::Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()),
    ));
    let t = Instant::now();
    let out = Command::new(venv.bin("aws"))
        .args(args)
        .args([
            "--endpoint-url",
            endpoint,
            "--region",
            deployer::aws::LOCAL_REGION,
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        // The emulator serves TLS with the local environment's own certificate.
        .env("AWS_CA_BUNDLE", ca)
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "aws {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

pub fn run() -> Result<Value> {
    let cfg = LocalConfig::for_ports(PORT, LABELS_PORT);
    local::up(&cfg, &|m| eprintln!("bench  {m}"))?;
    let result = measure(&cfg);
    let _ = local::down(&cfg);
    result
}

fn measure(cfg: &LocalConfig) -> Result<Value> {
    // Warm-up: builds the host artifacts if needed and uploads them, so every timed deploy
    // starts with artifacts built, as the figure is defined.
    xtask(&["teardown"])?;
    let (_, warm) = xtask(&["deploy"])?;
    xtask(&["teardown"])?;

    let mut cold = Vec::new();
    let mut noop = Vec::new();
    let mut down = Vec::new();
    for round in 0..ROUNDS {
        let (t, r) = xtask(&["deploy"])?;
        ensure!(r["status"] == "created", "round {round}: {}", r["status"]);
        cold.push(t);
        let (t, r) = xtask(&["deploy"])?;
        ensure!(
            r["status"] == "no-changes",
            "round {round}: {}",
            r["status"]
        );
        noop.push(t);
        if round + 1 < ROUNDS {
            let (t, _) = xtask(&["teardown"])?;
            down.push(t);
        }
    }

    // Upload to labels, through the deployed API, one image at a time.
    let mut latency = Vec::new();
    for _ in 0..UPLOADS {
        let (_, r) = xtask(&["smoke-test"])?;
        ensure!(r["passed"] == true, "smoke test failed: {r}");
        let check = |name: &str| {
            r["checks"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["name"] == name))
                .and_then(|c| c["elapsed_ms"].as_f64())
                .unwrap_or(f64::NAN)
        };
        latency.push((check("upload") + check("labels")) / 1000.0);
    }
    let (t, _) = xtask(&["teardown"])?;
    down.push(t);

    // The AWS CLI reference: same template, same artifacts, same endpoint.
    let venv = Venv::ensure("local", |m| eprintln!("bench  {m}"))?;
    let dir = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let template = dir.join("deploy-template.json");
    let app = App::image_pipeline();
    let arch = match std::env::consts::ARCH {
        "aarch64" => Architecture::Arm64,
        _ => Architecture::X86_64,
    };
    let stage: Stage = CLI_STAGE.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(&template, template_body(&app, &stage, arch)?)?;
    let artifacts: Vec<deployer::assets::Uploaded> =
        serde_json::from_value(warm["artifacts"].clone()).context("artifacts in deploy output")?;
    let params = parameters(
        &app,
        &stage,
        arch,
        warm["assets_bucket"].as_str().unwrap_or_default(),
        &artifacts,
        Some(&cfg.labels_endpoint()),
    );
    let stack = stage.stack_name();
    let mut deploy_args: Vec<String> = [
        "cloudformation",
        "deploy",
        "--no-fail-on-empty-changeset",
        "--capabilities",
        "CAPABILITY_IAM",
        "CAPABILITY_NAMED_IAM",
        "--stack-name",
        &stack,
        "--template-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    deploy_args.push(template.display().to_string());
    deploy_args.push("--parameter-overrides".into());
    deploy_args.extend(params.iter().map(|(k, v)| format!("{k}={v}")));
    let endpoint = cfg.endpoint();
    let ca = cfg.tls().cert;
    let delete: Vec<String> = ["cloudformation", "delete-stack", "--stack-name", &stack]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let wait: Vec<String> = [
        "cloudformation",
        "wait",
        "stack-delete-complete",
        "--stack-name",
        &stack,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut cli_cold = Vec::new();
    let mut cli_noop = Vec::new();
    for _ in 0..ROUNDS {
        cli_cold.push(aws(&venv, &endpoint, &ca, &deploy_args)?);
        cli_noop.push(aws(&venv, &endpoint, &ca, &deploy_args)?);
        aws(&venv, &endpoint, &ca, &delete)?;
        aws(&venv, &endpoint, &ca, &wait)?;
    }

    let rows = [
        (
            "cold deploy (artifacts built)",
            median(cold.clone()),
            median(cli_cold.clone()),
        ),
        (
            "no-op redeploy",
            median(noop.clone()),
            median(cli_noop.clone()),
        ),
    ];
    println!(
        "{:<34} {:>12} {:>22}",
        "local environment, median of 3", "cargo xtask", "aws cloudformation deploy"
    );
    for (what, ours, cli) in rows {
        println!("{what:<34} {:>10.2} s {:>20.2} s", ours, cli);
    }
    println!("{:<34} {:>10.2} s", "teardown", median(down.clone()));
    println!(
        "{:<34} {:>10.2} s (p95 {:.2} s, {UPLOADS} uploads)",
        "upload to labels, p50",
        percentile(latency.clone(), 0.5),
        percentile(latency.clone(), 0.95)
    );
    Ok(json!({
        "rounds": ROUNDS,
        "cold_deploy_s": cold,
        "noop_redeploy_s": noop,
        "teardown_s": down,
        "upload_to_labels_s": latency,
        "upload_to_labels_p50_s": percentile(latency.clone(), 0.5),
        "upload_to_labels_p95_s": percentile(latency, 0.95),
        "aws_cli_reference": {
            "command": "aws cloudformation deploy (awscli from tools/local-requirements.txt)",
            "cold_deploy_s": cli_cold,
            "noop_redeploy_s": cli_noop,
        },
        "medians": {
            "cold_deploy_s": median(cold),
            "noop_redeploy_s": median(noop),
            "teardown_s": median(down),
            "aws_cli_cold_deploy_s": median(cli_cold),
            "aws_cli_noop_redeploy_s": median(cli_noop),
        }
    }))
}
