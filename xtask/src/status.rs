//! `cargo xtask status`: a deployed stage in one screen.

use anyhow::{Result, bail};
use deployer::observe::status::{CodeState, StatusConfig, StatusReport, TemplateState, status};
use stack::Stage;

use crate::console::Console;
use crate::target::{Output, Where, print_json, runtime};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub place: Where,
    /// Stage of the stack to look at
    #[arg(long, default_value = "dev")]
    pub stage: Stage,
    /// Also run CloudFormation drift detection: name each resource changed or deleted
    /// outside CloudFormation and each drifted property path, and exit 1 when there is any
    #[arg(long)]
    pub drift: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(a: Args) -> Result<()> {
    let resolved = a.place.resolve()?;
    let cfg = StatusConfig {
        target: resolved.target,
        stage: a.stage,
        drift: a.drift,
    };
    let console = Console::new("status");
    let result = runtime()?.block_on(status(&cfg, &console));
    console.finish();
    let report = result?;
    match a.output {
        Output::Json => print_json(&report)?,
        Output::Text => println!("{}", summary(&report)),
    }
    if report.stack_status.is_none() {
        bail!("stack {} does not exist in {}", report.stack, report.target);
    }
    if !report.problems.is_empty() {
        bail!(
            "{} part(s) of the status could not be read",
            report.problems.len()
        );
    }
    if let Some(d) = report.drift.as_ref().filter(|d| d.is_drifted()) {
        bail!(
            "{} resource(s) of {} drifted from the template (a deploy puts back what it changes; `cargo xtask deploy --revert-drift` puts back all of it):\n{}",
            d.drifted.len(),
            report.stack,
            d.lines().join("\n")
        );
    }
    Ok(())
}

fn short(sha: Option<&str>) -> String {
    sha.map_or_else(|| "-".to_string(), |s| s.chars().take(12).collect())
}

/// The pace, the queues and the alarms, a line each.
fn pipeline_lines(r: &StatusReport) -> String {
    let mut s = String::new();
    if let Some(p) = &r.pace {
        s.push_str(&format!(
            "pace      DetectLabels quota {}/s: at most {} batches at once, one call each every {} ms\n",
            p.quota_tps, p.max_concurrency, p.interval_ms
        ));
    }
    if let Some(q) = &r.work_queue {
        let age = match (r.oldest_message_age, &r.oldest_message_note) {
            (Some(a), _) => format!("oldest message {a} s old"),
            (None, Some(note)) => format!("oldest message's age unknown: {note}"),
            (None, None) => "oldest message's age unknown".to_string(),
        };
        s.push_str(&format!(
            "queue     {} waiting, {} in flight or held back, {} delayed; {age}\n",
            q.visible, q.in_flight, q.delayed
        ));
    }
    match r.dead_letter_depth {
        Some(0) => s.push_str("dead      the dead-letter queue is empty\n"),
        Some(n) => s.push_str(&format!(
            "dead      {n} message(s) in the dead-letter queue ({}); after a fix, `cargo xtask redrive` moves them back\n",
            r.outputs
                .get(stack::app::outputs::DEAD_LETTER_QUEUE_URL)
                .map_or("", String::as_str)
        )),
        None => {}
    }
    for a in &r.alarms {
        s.push_str(&format!(
            "alarm     {:<40} {:<17} {}\n",
            a.name,
            a.state,
            a.since.as_deref().unwrap_or("")
        ));
    }
    if let Some(d) = &r.drift {
        s.push_str(&format!(
            "drift     {}{}\n",
            d.stack_status,
            d.reason
                .as_deref()
                .map(|why| format!(" (detection incomplete: {why})"))
                .unwrap_or_default()
        ));
        for line in d.lines() {
            s.push_str(&format!("          {line}\n"));
        }
    }
    s
}

/// The report for a person, in one screen.
pub fn summary(r: &StatusReport) -> String {
    let mut s = String::new();
    let Some(state) = &r.stack_status else {
        return format!(
            "stack {} does not exist in {} (deploy it with `cargo xtask deploy`)",
            r.stack, r.target
        );
    };
    s.push_str(&format!("stack     {}  {state}", r.stack));
    if let Some(reason) = &r.stack_reason {
        s.push_str(&format!(" ({reason})"));
    }
    s.push('\n');
    s.push_str(&format!(
        "          {}, {}, last updated {}\n",
        r.target,
        r.architecture.as_deref().unwrap_or("architecture unknown"),
        r.last_updated.as_deref().unwrap_or("unknown")
    ));
    if let Some(api) = &r.api_url {
        s.push_str(&format!("API       {api}\n"));
    }
    s.push_str(&format!(
        "template  {}\n",
        match r.template {
            TemplateState::Same => "the deployed template is the one this checkout synthesizes",
            TemplateState::Differs =>
                "differs from the one this checkout synthesizes (`cargo xtask deploy --plan` shows how)",
            TemplateState::Unknown => "could not be compared",
        }
    ));
    s.push_str(&format!(
        "functions {:<10} {:<10} {:<14} {:<14} last modified\n",
        "", "code", "deployed", "built here"
    ));
    for f in &r.functions {
        s.push_str(&format!(
            "          {:<10} {:<10} {:<14} {:<14} {}\n",
            f.function,
            f.state.as_str(),
            short(f.deployed.as_deref()),
            short(f.built.as_deref()),
            f.last_modified.as_deref().unwrap_or("-")
        ));
    }
    if r.functions.iter().any(|f| f.state == CodeState::Stale) {
        s.push_str("          (stale: the code built here is not what runs; `cargo xtask deploy` deploys it)\n");
    }
    s.push_str(&pipeline_lines(r));
    if let Some(items) = &r.items {
        let total: u64 = items.values().sum();
        let by: Vec<String> = items.iter().map(|(k, v)| format!("{k} {v}")).collect();
        s.push_str(&format!(
            "items     {total} in all{}{}\n",
            if by.is_empty() { "" } else { ": " },
            by.join(", ")
        ));
    }
    if !r.outputs.is_empty() {
        s.push_str("outputs\n");
        for (k, v) in &r.outputs {
            s.push_str(&format!("          {k:<28} {v}\n"));
        }
    }
    for p in &r.problems {
        s.push_str(&format!("problem   {p}\n"));
    }
    s.trim_end().to_string()
}
