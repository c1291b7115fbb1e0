//! `cargo xtask trace IMAGE_ID`: the life of one image as a timeline.

use std::time::Duration;

use anyhow::Result;
use deployer::observe::logs::{clock, parse_since};
use deployer::observe::trace::{TraceConfig, TraceReport, trace};
use stack::Stage;

use crate::console::Console;
use crate::target::{Output, Where, print_json, runtime};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image id (`image_id` of POST /upload's answer)
    #[arg(value_name = "IMAGE_ID")]
    pub image_id: String,
    #[command(flatten)]
    pub place: Where,
    /// Stage the image was uploaded to
    #[arg(long, default_value = "dev")]
    pub stage: Stage,
    /// How far back to read the logs: 90s, 10m, 2h, 1d
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_since)]
    pub since: Duration,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(a: Args) -> Result<()> {
    let resolved = a.place.resolve()?;
    let cfg = TraceConfig {
        target: resolved.target,
        stage: a.stage,
        image_id: a.image_id,
        since: a.since,
    };
    let console = Console::new("trace");
    let result = runtime()?.block_on(trace(&cfg, &console));
    console.finish();
    let report = result?;
    match a.output {
        Output::Json => print_json(&report)?,
        Output::Text => println!("{}", summary(&report)),
    }
    if !report.problems.is_empty() {
        anyhow::bail!(
            "{} part(s) of the trace could not be read",
            report.problems.len()
        );
    }
    Ok(())
}

pub fn summary(r: &TraceReport) -> String {
    let mut s = format!("image {} in stack {}\n", r.image_id, r.stack);
    for step in &r.timeline {
        s.push_str(&format!(
            "{} {:<13} {}\n",
            clock(step.timestamp),
            step.kind,
            step.summary
        ));
    }
    s.push_str(&format!(
        "{} receive(s) from the work queue, {} back-off(s); {} object version(s); {} dead-letter message(s)\n",
        r.process_invocations.len(),
        r.backoffs.len(),
        r.versions.len(),
        r.failure_messages.len()
    ));
    for p in &r.problems {
        s.push_str(&format!("problem: {p}\n"));
    }
    s.trim_end().to_string()
}
