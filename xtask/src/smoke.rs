//! `cargo xtask smoke-test`: proves a deployed pipeline works; each check with its timing.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use deployer::verify::smoke::{SmokeConfig, SmokeReport, smoke_test};
use stack::Stage;

use crate::console::{Console, check_line};
use crate::target::{Output, Where, print_json, runtime, secs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub place: Where,
    /// Stage of the stack to test
    #[arg(long, default_value = "dev")]
    pub stage: Stage,
    /// Image to upload (JPEG or PNG); default: a photograph shipped with the project
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// Seconds to wait for the image's labels
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// Keep the uploaded images, their metadata and the user who owns them (remove them with
    /// `cargo xtask user remove EMAIL`)
    #[arg(long)]
    pub keep: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(a: Args) -> Result<()> {
    let image = match &a.image {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    let resolved = a.place.resolve()?;
    let cfg = SmokeConfig {
        target: resolved.target,
        stage: a.stage,
        image,
        timeout: Duration::from_secs(a.timeout),
        keep: a.keep,
    };
    let console = Console::new("smoke");
    let report = runtime()?.block_on(smoke_test(&cfg, &console))?;
    match a.output {
        Output::Json => print_json(&report)?,
        Output::Text => println!("{}", summary(&report)),
    }
    if !report.passed {
        bail!(
            "smoke test failed: {}",
            report
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn summary(r: &SmokeReport) -> String {
    let passed = r.checks.iter().filter(|c| c.passed).count();
    let mut s = format!(
        "smoke test of {} at {}: {passed}/{} checks passed in {}\n",
        r.stack,
        r.api_url,
        r.checks.len(),
        secs(r.elapsed_ms)
    );
    for c in &r.checks {
        s.push_str(&format!("  {}\n", check_line(c)));
    }
    if let Some(user) = &r.kept_user {
        s.push_str(&format!(
            "kept user {user} and their images (remove both with `cargo xtask user remove {user}`)\n"
        ));
    }
    s.trim_end().to_string()
}
