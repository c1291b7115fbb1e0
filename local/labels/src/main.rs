//! `detect-labels`: serves `RekognitionService.DetectLabels` on 127.0.0.1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use local_labels::model::{Model, default_dir};
use local_labels::s3::S3Source;
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
    #[arg(long, env = "LABELS_PORT", default_value_t = 4599)]
    port: u16,
    /// Directory holding model.onnx and labels.json (made by `cargo xtask model`)
    #[arg(long, env = "LABELS_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// S3 endpoint to read Image.S3Object from
    #[arg(
        long,
        env = "LABELS_S3_ENDPOINT",
        default_value = "http://127.0.0.1:4566"
    )]
    s3_endpoint: String,
    /// Worker threads (concurrent requests)
    #[arg(long, default_value_t = 4)]
    workers: usize,
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
    let objects = match S3Source::new(&args.s3_endpoint) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("detect-labels: cannot start the S3 client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let load_ms = model.load_time.as_millis();
    let service = Arc::new(Service {
        model,
        faults: Faults::new(
            args.fail_with,
            args.fail_first,
            args.fail_rate,
            args.fail_seed,
        ),
        objects: Box::new(objects),
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
