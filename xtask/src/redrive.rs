//! `cargo xtask redrive`: the dead-letter queue's messages back to the work queue.

use anyhow::Result;
use deployer::ops::redrive::{RedriveConfig, RedriveReport, redrive};
use stack::Stage;

use crate::console::Console;
use crate::target::{Output, Where, print_json, runtime};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub place: Where,
    /// Stage whose dead letters to move
    #[arg(long, default_value = "dev")]
    pub stage: Stage,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(a: Args) -> Result<()> {
    let resolved = a.place.resolve()?;
    let cfg = RedriveConfig {
        target: resolved.target,
        stage: a.stage,
    };
    let console = Console::new("redrive");
    let result = runtime()?.block_on(redrive(&cfg, &console));
    console.finish();
    let report = result?;
    match a.output {
        Output::Json => print_json(&report)?,
        Output::Text => println!("{}", summary(&report)),
    }
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} message(s) could not be moved; they stay in the dead-letter queue",
            report.failed.len()
        );
    }
    Ok(())
}

pub fn summary(r: &RedriveReport) -> String {
    let mut s = if r.moved == 0 && r.before.total() == 0 {
        format!(
            "nothing to move: the dead-letter queue of stack {} is empty\n",
            r.stack
        )
    } else {
        format!(
            "moved {} message(s) of stack {} from the dead-letter queue back to the work queue\n",
            r.moved, r.stack
        )
    };
    if r.after.total() > 0 {
        s.push_str(&format!(
            "the dead-letter queue still holds {} ({} in flight: received by another reader, they show again after its visibility timeout)\n",
            r.after.total(),
            r.after.in_flight
        ));
    }
    for f in &r.failed {
        s.push_str(&format!("not moved: {f}\n"));
    }
    s.trim_end().to_string()
}
