//! `cargo xtask teardown`: removes a stage's stack (and, on request, its artifacts).

use std::time::Duration;

use anyhow::Result;
use deployer::ops::teardown::{Removal, TeardownConfig, teardown};
use stack::Stage;

use crate::console::Console;
use crate::target::{Output, Where, print_json, runtime, secs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub place: Where,
    /// Stage of the stack to remove
    #[arg(long, default_value = "dev")]
    pub stage: Stage,
    /// Also delete the stage's artifacts from the bootstrap's assets bucket
    #[arg(long)]
    pub purge_assets: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(a: Args) -> Result<()> {
    let resolved = a.place.resolve()?;
    let cfg = TeardownConfig {
        target: resolved.target,
        stage: a.stage,
        purge_assets: a.purge_assets,
        timeout: Duration::from_secs(3600),
    };
    let console = Console::new("teardown");
    let report = runtime()?.block_on(teardown(&cfg, &console))?;
    console.finish();
    match a.output {
        Output::Json => print_json(&report)?,
        Output::Text => {
            let mut s = match report.status {
                Removal::Deleted => format!(
                    "stack {} deleted in {} ({} object versions removed from the uploads bucket)",
                    report.stack,
                    secs(report.elapsed_ms),
                    report.objects_deleted
                ),
                Removal::Absent => {
                    format!("stack {} does not exist: nothing to remove", report.stack)
                }
            };
            if report.assets_purged {
                s.push_str(&format!(
                    "\nthe stage's artifacts removed ({} object versions)",
                    report.assets_objects_deleted
                ));
            }
            println!("{s}");
        }
    }
    Ok(())
}
