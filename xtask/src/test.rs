//! `cargo xtask test`: the project's test command. Prepares the label model, runs the offline
//! Rust test suite, validates the template and policies (`lint`), and builds the arm64 Lambda
//! artifacts twice, checking each zip and binary and that the second build changes nothing.

use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use deployer::build::{BuildArch, BuildConfig, build};
use deployer::pyenv::workspace_root;
use deployer::{elf, zip};
use stack::Architecture;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip template and policy validation (no Python validators needed)
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the arm64 artifact build (the slowest step)
    #[arg(long)]
    pub no_build: bool,
}

pub fn run(a: Args) -> Result<()> {
    // The label service's tests need the converted model.
    crate::model::run()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(workspace_root())
        .args(["test", "--workspace", "--all-targets", "--locked"])
        .status()
        .context("cannot run cargo test")?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    if !a.no_lint {
        crate::lint::run(crate::lint::Args {
            out: "target/lint".into(),
        })?;
    }
    if !a.no_build {
        artifacts()?;
    }
    Ok(())
}

/// Builds for arm64 twice: every zip holds one executable `bootstrap`, a static aarch64 ELF,
/// and the second build re-zips nothing and yields the same hashes.
fn artifacts() -> Result<()> {
    let reporter = crate::build::Reporter::new();
    let cfg = BuildConfig {
        arch: BuildArch::Lambda(Architecture::Arm64),
        functions: vec![],
        opt_level: None,
    };
    let first = build(&cfg, &reporter);
    let second = first.as_ref().ok().map(|_| build(&cfg, &reporter));
    reporter.finish();
    let first = first?;
    let second = second.context("second build not run")??;
    println!("{}", crate::build::table(&first));
    ensure!(
        second.unchanged.len() == second.manifest.functions.len(),
        "the second build re-zipped {:?}",
        second.manifest.functions.len() - second.unchanged.len()
    );
    ensure!(
        first.manifest == second.manifest,
        "two builds of the same source differ"
    );
    for a in &first.manifest.functions {
        let bytes = std::fs::read(first.zip_path(a))?;
        let entry = zip::read_single(&bytes).with_context(|| a.function.clone())?;
        ensure!(
            entry.name == "bootstrap" && entry.mode == 0o100_755,
            "{}: bad zip entry",
            a.function
        );
        ensure!(
            (entry.dos_date, entry.dos_time) == (zip::DOS_DATE, zip::DOS_TIME),
            "{}: timestamp",
            a.function
        );
        let info =
            elf::check(&entry.data, Architecture::Arm64).with_context(|| a.function.clone())?;
        ensure!(
            info.machine == elf::EM_AARCH64,
            "{}: not aarch64",
            a.function
        );
    }
    println!(
        "artifacts: arm64 zips verified (one static aarch64 bootstrap each); a rebuild changed nothing"
    );
    Ok(())
}
