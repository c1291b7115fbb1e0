//! `cargo xtask test`: the project's test command. Prepares the label model, runs the offline
//! Rust test suite, validates the template and policies (`lint`), builds the arm64 Lambda
//! artifacts twice, checking each zip and binary and that the second build changes nothing,
//! runs the end-to-end test on the local environment (`e2e`), and a burst of uploads through a
//! Rekognition outage that must lose nothing.

use anyhow::{Context, Result, bail, ensure};
use deployer::build::{BuildArch, BuildConfig, build};
use deployer::build::{elf, zip};
use deployer::util::workspace_root;
use stack::Architecture;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip template and policy validation (no Python validators needed)
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the arm64 artifact build (the slowest step)
    #[arg(long)]
    pub no_build: bool,
    /// Skip the end-to-end test on the local environment
    #[arg(long)]
    pub no_e2e: bool,
    /// Skip the burst through an outage (300 uploads at a quota of 10 calls a second, the label
    /// service stopped 20 s in the middle)
    #[arg(long)]
    pub no_burst: bool,
}

pub fn run(a: Args) -> Result<()> {
    // The label service's tests need the converted model.
    crate::model::run()?;
    let status = deployer::tools::cmd::cargo()
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
    if !a.no_e2e {
        // `cargo test --all-targets` has just built the label service's binary from this
        // source; building it again outside the test's feature set would compile its model
        // runtime a second time.
        let labels = deployer::local::emulator::labels_binary("debug");
        crate::e2e::run(labels.is_file().then_some(labels))?;
    }
    if !a.no_burst {
        burst_through_an_outage()?;
    }
    Ok(())
}

/// 300 uploads as fast as the API takes them, against a label service that is a quota of 10
/// calls a second and stops for 20 s once half are answered, with IAM enforced: every image
/// labeled once, nothing dead. (`cargo xtask bench burst` is the same at scale.)
fn burst_through_an_outage() -> Result<()> {
    use crate::bench::burst::{Burst, judge, run};
    let labels = deployer::local::emulator::labels_binary("debug");
    let b = Burst {
        images: 300,
        tps: 10,
        outage_seconds: Some(20),
        stub_latency_ms: Some(50),
        concurrency: 8,
        labels_binary: labels.is_file().then_some(labels),
    };
    let v = run(&b)?;
    judge(&b, &v)?;
    println!(
        "burst: {} images through a {} s outage at {} calls a second: all labeled once, none dead, {} throttled, {:.0} s",
        b.images,
        20,
        b.tps,
        v["throttled"],
        v["wall_s"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// The function the test command cross-builds for arm64: the one with the fewest
/// dependencies, so CI proves the aarch64 toolchain, zip format and determinism without
/// compiling every SDK twice (the end-to-end test builds all of them for the host).
/// `cargo xtask build` builds all of them.
const ARM64_PROBE: &str = "metadata";

/// Builds for arm64 twice: the zip holds one executable `bootstrap`, a static aarch64 ELF,
/// and the second build re-zips nothing and yields the same hashes.
fn artifacts() -> Result<()> {
    let reporter = crate::console::Console::new("build");
    let cfg = BuildConfig {
        arch: BuildArch::Lambda(Architecture::Arm64),
        functions: vec![ARM64_PROBE.to_string()],
        opt_level: None,
    };
    let first = build(&cfg, &reporter);
    let second = first.as_ref().ok().map(|_| build(&cfg, &reporter));
    reporter.finish();
    let first = first?;
    let second = second.context("second build not run")??;
    println!("{}", crate::build::table(&first));
    ensure!(
        second.unchanged == [ARM64_PROBE],
        "the second build re-zipped {ARM64_PROBE}"
    );
    ensure!(
        first.manifest == second.manifest,
        "two builds of the same source differ"
    );
    for a in first
        .manifest
        .functions
        .iter()
        .filter(|a| a.function == ARM64_PROBE)
    {
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
        "artifacts: arm64 {ARM64_PROBE} zip verified (one static aarch64 bootstrap); a rebuild changed nothing"
    );
    Ok(())
}
