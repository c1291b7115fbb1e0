//! `cargo xtask test`: the project's test command. Runs the offline Rust test suite, then the
//! template and policy validation of `lint`.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::pytools::workspace_root;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip template and policy validation (no Python needed)
    #[arg(long)]
    pub no_lint: bool,
}

pub fn run(a: Args) -> Result<()> {
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
    Ok(())
}
