//! `detect-labels`: serves `RekognitionService.DetectLabels` on 127.0.0.1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use local_labels::auth::{AnyOf, Caller, StaticKeys};
use local_labels::model::{Model, default_dir};
use local_labels::s3::Emulator;
use local_labels::server;
use local_labels::service::{FaultKind, Faults, Service};

#[derive(Debug, Parser)]
#[command(
    name = "detect-labels",
    version,
    about = "Local Rekognition DetectLabels with a real image model"
)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one; the chosen port is printed)
    #[arg(long, env = "LABELS_PORT", default_value_t = 0)]
    port: u16,
    /// Directory holding model.onnx and labels.json (made by `cargo xtask model`)
    #[arg(long, env = "LABELS_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// The AWS emulator: S3 (Image.S3Object is read from it as the caller) and who a key is
    /// (its secret, and whether IAM allows its principal rekognition:DetectLabels)
    #[arg(long, env = "LABELS_ENDPOINT")]
    endpoint: String,
    /// A PEM certificate to trust for the endpoint, besides the usual roots
    #[arg(long, env = "LABELS_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Also accept requests signed with this key, as ACCESS_KEY_ID:SECRET (for clients
    /// outside the emulator, such as the benchmark); S3 reads then use this key too
    #[arg(long, value_name = "ID:SECRET")]
    allow_key: Vec<String>,
    /// Worker threads (concurrent requests)
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Admit at most Q DetectLabels calls per second; above it answer as Rekognition does
    /// over its quota (ProvisionedThroughputExceededException). 0: no limit
    #[arg(long, env = "LABELS_TPS", default_value_t = 0)]
    tps: u32,
    /// Stub mode for scale runs: answer every readable image after MS milliseconds with one
    /// label named "Stub (not the model)" (LabelModelVersion "stub") instead of running the
    /// model; signatures, IAM, the rate and S3 reads stay real
    #[arg(long, value_name = "MS", env = "LABELS_STUB_LATENCY_MS")]
    stub_latency_ms: Option<u64>,
    /// Fail the first N DetectLabels calls (fault injection)
    #[arg(long, env = "LABELS_FAIL_FIRST", default_value_t = 0)]
    fail_first: u64,
    /// Then fail this fraction of calls, 0 to 1 (fault injection)
    #[arg(long, env = "LABELS_FAIL_RATE", default_value_t = 0.0)]
    fail_rate: f64,
    /// The error injected faults produce: ThrottlingException,
    /// ProvisionedThroughputExceededException or InternalServerError
    #[arg(long, env = "LABELS_FAIL_WITH", default_value = "ThrottlingException")]
    fail_with: FaultKind,
    /// Seed of the fault-rate generator
    #[arg(long, env = "LABELS_FAIL_SEED", default_value_t = 1)]
    fail_seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.fail_rate) {
        eprintln!("detect-labels: --fail-rate must be between 0 and 1");
        return ExitCode::from(2);
    }
    let dir = args.model_dir.unwrap_or_else(default_dir);
    let model = match Model::load(&dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("detect-labels: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ca = match args.ca_file.as_deref().map(std::fs::read).transpose() {
        Ok(ca) => ca,
        Err(e) => {
            eprintln!("detect-labels: cannot read --ca-file: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The emulator's root key, for asking who a key is (S3 reads use each caller's).
    let (Ok(key_id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        eprintln!(
            "detect-labels: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to a key of the emulator"
        );
        return ExitCode::from(2);
    };
    let emulator = match Emulator::new(&args.endpoint, ca, key_id, secret) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("detect-labels: cannot start the AWS clients: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut fixed = Vec::new();
    for k in &args.allow_key {
        let Some((id, secret)) = k
            .split_once(':')
            .filter(|(i, s)| !i.is_empty() && !s.is_empty())
        else {
            eprintln!("detect-labels: --allow-key takes ACCESS_KEY_ID:SECRET");
            return ExitCode::from(2);
        };
        fixed.push(Caller {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            session_token: None,
            principal_arn: format!("allowed key {id}"),
            may_detect_labels: true,
        });
    }
    let keys = AnyOf(vec![
        Box::new(StaticKeys(fixed)),
        Box::new(emulator.clone()),
    ]);
    let load_ms = model.load_time.as_millis();
    let service = Arc::new(Service {
        model,
        faults: Faults::new(
            args.fail_with,
            args.fail_first,
            args.fail_rate,
            args.fail_seed,
        ),
        objects: Box::new(emulator),
        keys: Box::new(keys),
        meter: local_labels::meter::Meter::new(Some(args.tps)),
        stub: args.stub_latency_ms.map(std::time::Duration::from_millis),
    });
    match server::start(service, &format!("127.0.0.1:{}", args.port), args.workers) {
        Ok(running) => {
            println!(
                "detect-labels listening on http://127.0.0.1:{} (model loaded in {load_ms} ms)",
                running.port
            );
            running.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "detect-labels: cannot listen on 127.0.0.1:{}: {e}",
                args.port
            );
            ExitCode::FAILURE
        }
    }
}
