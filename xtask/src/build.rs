//! `cargo xtask build`: builds and packages the Lambda artifacts, with progress on stderr and a
//! size table on stdout.

use std::time::Instant;

use anyhow::Result;
use deployer::build::{BuildArch, BuildConfig, BuildReport, build};

use crate::console::Console;
use stack::Architecture;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Instruction set: arm64 (default; Graviton), x86_64, or host (this machine's, for the
    /// local environment)
    #[arg(long, default_value = "arm64", value_parser = parse_arch)]
    pub arch: BuildArch,
    /// Build only this function (repeatable); default: all
    #[arg(long = "function", value_name = "NAME")]
    pub functions: Vec<String>,
}

pub fn parse_arch(s: &str) -> Result<BuildArch, String> {
    if s == "host" {
        return Ok(BuildArch::Host);
    }
    s.parse::<Architecture>()
        .map(BuildArch::Lambda)
        .map_err(|e| format!("{e} (or host)"))
}

pub fn run(a: Args) -> Result<()> {
    let started = Instant::now();
    let reporter = Console::new("build");
    let result = build(
        &BuildConfig {
            arch: a.arch,
            functions: a.functions,
            opt_level: None,
        },
        &reporter,
    );
    reporter.finish();
    let report = result?;
    println!("{}", table(&report));
    let built = report.manifest.functions.len() - report.unchanged.len();
    println!(
        "{} in {:.1}s; manifest {}",
        if built == 0 {
            "nothing changed, nothing re-zipped".to_string()
        } else {
            format!("{built} zip(s) written")
        },
        started.elapsed().as_secs_f64(),
        report.manifest_path.display()
    );
    Ok(())
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1_000_000.0)
}

pub fn table(report: &BuildReport) -> String {
    let mut s = format!(
        "{:<10} {:<7} {:>10} {:>10}  {:<16} {}\n",
        "function", "arch", "binary", "zip", "sha256", "state"
    );
    for a in &report.manifest.functions {
        let state = if report.unchanged.contains(&a.function) {
            "unchanged"
        } else {
            "built"
        };
        s.push_str(&format!(
            "{:<10} {:<7} {:>10} {:>10}  {:<16} {}\n",
            a.function,
            report.manifest.architecture,
            mb(a.binary_bytes),
            mb(a.zip_bytes),
            &a.sha256[..16.min(a.sha256.len())],
            state
        ));
    }
    s.trim_end().to_string()
}
