//! `cargo xtask logs`: the functions' logs and the API's access log as one stream.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use deployer::observe::logs::{self, Filter, Level, LogEvent};
use stack::Stage;

use crate::target::{Output, Where, runtime};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub place: Where,
    /// Stage whose logs to read
    #[arg(long, default_value = "dev")]
    pub stage: Stage,
    /// Only this source: upload, process, metadata, or api (the access log); repeatable
    #[arg(long = "function", value_name = "F")]
    pub functions: Vec<String>,
    /// How far back to start: 90s, 10m, 2h, 1d
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = logs::parse_since)]
    pub since: Duration,
    /// Keep reading new events until Ctrl-C
    #[arg(long)]
    pub follow: bool,
    /// Only the invocations that mention this image id (every line of each)
    #[arg(long, value_name = "ID")]
    pub image: Option<String>,
    /// Only lines at this level or above: trace, debug, info, warn, error
    #[arg(long, value_name = "L")]
    pub level: Option<Level>,
    /// `text` for people; `json` passes the raw events, one JSON object per line
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

fn print(e: &LogEvent, output: Output) -> Result<()> {
    match output {
        Output::Text => println!("{}", logs::render(e)),
        Output::Json => println!("{}", serde_json::to_string(e)?),
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    let resolved = a.place.resolve()?;
    runtime()?.block_on(async {
        let (clients, _) = deployer::cloud::aws::connect(&resolved.target).await?;
        let groups = logs::log_groups(&clients.cfn, &a.stage, &a.functions).await?;
        let sources: Vec<&str> = groups.iter().map(|(s, _)| s.as_str()).collect();
        eprintln!(
            "logs   {} of stack {} from {} ago{}",
            sources.join(", "),
            a.stage.stack_name(),
            humantime(a.since),
            if a.follow {
                ", following (Ctrl-C stops)"
            } else {
                ""
            }
        );
        let mut filter = Filter::new(a.image.clone(), a.level);
        let since_ms = i64::try_from(a.since.as_millis()).unwrap_or(i64::MAX);
        let mut start = logs::now_ms().saturating_sub(since_ms);
        // What was shown, by time: an event at `start` or later may come back.
        let mut seen: BTreeSet<(i64, String)> = BTreeSet::new();
        loop {
            let batch: Vec<LogEvent> = logs::fetch(&clients.logs, &groups, start)
                .await?
                .into_iter()
                .filter(|e| !seen.contains(&(e.timestamp, e.event_id.clone())))
                .collect();
            for e in filter.apply(&batch) {
                print(e, a.output)?;
            }
            if let Some(last) = batch.iter().map(|e| e.timestamp).max() {
                // Events of the same millisecond may still arrive: start there again, and
                // remember what was shown.
                start = last;
                seen.extend(batch.iter().map(|e| (e.timestamp, e.event_id.clone())));
                seen.retain(|(t, _)| *t >= start);
            }
            if !a.follow {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 && s > 0 => format!("{} d", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}
