//! `cargo xtask bench deploy`: deploy, no-op redeploy and teardown times on the local
//! environment, end to end as a user runs them (the xtask binary, artifacts already built),
//! upload-to-labels latency, and, as a reference on the same endpoint in the same run, the AWS
//! CLI's `aws cloudformation deploy` with the same template and artifacts.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Result, ensure};
use deployer::build::BuildArch;
use deployer::cloud::cfn::Outcome;
use deployer::local::emulator::LocalConfig;
use deployer::ops::deploy::{DeployReport, parameters, template_body};
use deployer::ops::teardown::TeardownReport;
use deployer::tools::pyenv::Venv;
use deployer::util::workspace_root;
use deployer::verify::smoke::{CheckName, SmokeReport};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use stack::{App, Stage};

use crate::bench::{LocalBench, median, percentile};

/// The benchmark's own local environment, apart from the user's and the test's.
const ENV: LocalBench = LocalBench {
    port: 4586,
    labels_port: 4619,
    stage: "bench",
};
/// The AWS CLI reference deploys the same template under another stage, so names differ.
const CLI_STAGE: &str = "benchcli";
const ROUNDS: usize = 3;
const UPLOADS: usize = 10;

/// Runs `cargo xtask ARGS` against the benchmark's environment: its time and report.
fn xtask<T: DeserializeOwned>(args: &[&str]) -> Result<(f64, T)> {
    ENV.xtask(args)
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
            deployer::cloud::aws::LOCAL_REGION,
        ])
        .env("AWS_ACCESS_KEY_ID", deployer::cloud::aws::ROOT_KEY)
        .env("AWS_SECRET_ACCESS_KEY", deployer::cloud::aws::ROOT_KEY)
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

pub fn run() -> Result<Value> {
    ENV.run(measure)
}

/// Timings of this tool's deploys, in seconds: cold, no-op, and teardowns between rounds.
struct Ours {
    cold: Vec<f64>,
    noop: Vec<f64>,
    down: Vec<f64>,
}

/// ROUNDS of a cold deploy followed by a no-op redeploy, torn down between rounds.
fn our_deploys() -> Result<Ours> {
    let mut cold = Vec::new();
    let mut noop = Vec::new();
    let mut down = Vec::new();
    for round in 0..ROUNDS {
        let (t, r) = xtask::<DeployReport>(&["deploy"])?;
        ensure!(
            r.status == Outcome::Created,
            "round {round}: {:?}",
            r.status
        );
        cold.push(t);
        let (t, r) = xtask::<DeployReport>(&["deploy"])?;
        ensure!(
            r.status == Outcome::NoChanges,
            "round {round}: {:?}",
            r.status
        );
        noop.push(t);
        if round + 1 < ROUNDS {
            let (t, _) = xtask::<TeardownReport>(&["teardown"])?;
            down.push(t);
        }
    }

    Ok(Ours { cold, noop, down })
}

/// Upload to labels, through the deployed API, one image at a time: seconds each.
fn upload_to_labels() -> Result<Vec<f64>> {
    let mut latency = Vec::new();
    for _ in 0..UPLOADS {
        let (_, r) = xtask::<SmokeReport>(&["smoke-test"])?;
        ensure!(r.passed, "smoke test failed: {:?}", r.checks);
        let ms = |name| r.check(name).map_or(f64::NAN, |c| c.elapsed_ms as f64);
        latency.push((ms(CheckName::Upload) + ms(CheckName::Labels)) / 1000.0);
    }
    Ok(latency)
}

/// The AWS CLI reference: same template, same artifacts, same endpoint. Cold and no-op
/// deploy times, in seconds.
fn aws_cli_deploys(cfg: &LocalConfig, warm: &DeployReport) -> Result<(Vec<f64>, Vec<f64>)> {
    let venv = Venv::ensure("local", &crate::console::Console::new("bench"))?;
    let dir = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let template = dir.join("deploy-template.json");
    let app = App::image_pipeline();
    let arch = BuildArch::Host.resolve()?;
    let stage: Stage = CLI_STAGE.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(&template, template_body(&app, &stage, arch)?)?;
    let params = parameters(
        &app,
        &stage,
        arch,
        (&warm.assets_bucket, &warm.permissions_boundary),
        &warm.artifacts,
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
        "--role-arn",
        &warm.execution_role,
        "--stack-name",
        &stack,
        "--template-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    deploy_args.push(template.display().to_string());
    // Over CloudFormation's inline limit the CLI, as the deploy, hands the template over
    // through the assets bucket.
    deploy_args.extend([
        "--s3-bucket".to_string(),
        warm.assets_bucket.clone(),
        "--s3-prefix".to_string(),
        format!("{CLI_STAGE}/templates"),
    ]);
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

    Ok((cli_cold, cli_noop))
}

fn measure(cfg: &LocalConfig) -> Result<Value> {
    // Warm-up: builds the host artifacts if needed and uploads them, so every timed deploy
    // starts with artifacts built, as the figure is defined.
    xtask::<TeardownReport>(&["teardown"])?;
    let (_, warm) = xtask::<DeployReport>(&["deploy"])?;
    xtask::<TeardownReport>(&["teardown"])?;
    let Ours {
        cold,
        noop,
        mut down,
    } = our_deploys()?;
    let latency = upload_to_labels()?;
    let (t, _) = xtask::<TeardownReport>(&["teardown"])?;
    down.push(t);
    let (cli_cold, cli_noop) = aws_cli_deploys(cfg, &warm)?;
    report(&Ours { cold, noop, down }, &latency, (&cli_cold, &cli_noop))
}

/// Prints the table and makes the JSON result.
fn report(ours: &Ours, latency: &[f64], (cli_cold, cli_noop): (&[f64], &[f64])) -> Result<Value> {
    let Ours { cold, noop, down } = ours;
    let rows = [
        (
            "cold deploy (artifacts built)",
            median(cold),
            median(cli_cold),
        ),
        ("no-op redeploy", median(noop), median(cli_noop)),
    ];
    println!(
        "{:<34} {:>12} {:>22}",
        "local environment, median of 3", "cargo xtask", "aws cloudformation deploy"
    );
    for (what, ours, cli) in rows {
        println!("{what:<34} {:>10.2} s {:>20.2} s", ours, cli);
    }
    println!("{:<34} {:>10.2} s", "teardown", median(down));
    println!(
        "{:<34} {:>10.2} s (p95 {:.2} s, {UPLOADS} uploads)",
        "upload to labels, p50",
        percentile(latency, 0.5),
        percentile(latency, 0.95)
    );
    Ok(json!({
        "rounds": ROUNDS,
        "cold_deploy_s": cold,
        "noop_redeploy_s": noop,
        "teardown_s": down,
        "upload_to_labels_s": latency,
        "upload_to_labels_p50_s": percentile(latency, 0.5),
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
