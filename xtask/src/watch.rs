//! `cargo xtask watch --local`: on a source change, rebuild the functions it affects and
//! redeploy them through the normal change-set path, printing the time from save to live.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use deployer::cloud::cfn::Outcome;
use deployer::observe::watch::{Snapshot, affected};
use deployer::ops::deploy::{DeployConfig, deploy};
use deployer::util::workspace_root;
use stack::{Architecture, Stage};

use crate::console::Console;
use crate::target::{Where, runtime, secs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub place: Where,
    /// Stage to keep deployed
    #[arg(long, default_value = "dev")]
    pub stage: Stage,
    /// How often to look for changes, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub poll: u64,
}

/// Ctrl-C sets the flag instead of killing the process: the loop stops between steps, and
/// a build it interrupts (cargo gets the signal too) ends as a failed build.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    });
    stop
}

/// Rebuilds and redeploys `functions` after a save at `saved`, and says how long the change
/// took to go live. A failed build or deploy is reported and the watch goes on: the next save
/// may fix it.
fn redeploy(
    rt: &tokio::runtime::Runtime,
    base: &DeployConfig,
    functions: &[String],
    (saved, stop): (SystemTime, &AtomicBool),
) {
    let cfg = DeployConfig {
        rebuild: functions.to_vec(),
        ..base.clone()
    };
    let started = Instant::now();
    let console = Console::new("watch");
    let result = rt.block_on(deploy(&cfg, &console));
    console.finish();
    if stop.load(Ordering::SeqCst) {
        return;
    }
    match result {
        Ok(r) => {
            let live = SystemTime::now()
                .duration_since(saved)
                .unwrap_or_else(|_| started.elapsed());
            let what = match r.status {
                Outcome::NoChanges => {
                    "no change to deploy (the built code is the same)".to_string()
                }
                _ => format!(
                    "{} live {:.1} s after the save (build {}, deploy {})",
                    functions.join(", "),
                    live.as_secs_f64(),
                    secs(r.timings.build),
                    secs(
                        r.timings.change_set
                            + r.timings.execute.unwrap_or(0)
                            + r.timings.verify.unwrap_or(0)
                    )
                ),
            };
            eprintln!("watch  {what}");
        }
        Err(e) => eprintln!("watch  not deployed: {e:#}"),
    }
}

pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(
        a.place.local,
        "watch runs against the local environment only: pass --local (on AWS, deploy through CI or `cargo xtask deploy`)"
    );
    let resolved = a.place.resolve()?;
    let base = DeployConfig {
        auto_bootstrap: crate::deploy::may_bootstrap(&resolved.target),
        target: resolved.target,
        stage: a.stage,
        arch: Architecture::Arm64,
        plan: false,
        approve_broadening: false,
        revert_drift: false,
        // A development loop does not wait for alarms after each save.
        rollback_minutes: Some(0),
        rekognition_endpoint: resolved.labels_endpoint,
        wait_for_other: Duration::from_secs(600),
        timeout: Duration::from_secs(3600),
        rebuild: Vec::new(),
        // The stage keeps the settings it was deployed with, and is paced for the label
        // service's rate when it has one.
        settings: Default::default(),
        labels_quota: crate::deploy::labels_quota(&a.place, resolved.labels_rate)?,
    };
    let stop = stop_flag();
    let root = workspace_root();
    let rt = runtime()?;
    let console = Console::new("watch");
    let first = rt.block_on(deploy(&base, &console));
    console.finish();
    let report = first.context("the first deploy failed; fix it and start watch again")?;
    eprintln!(
        "watch  stack {} is {}; watching functions/ and the workspace's build files (Ctrl-C stops)",
        report.stack,
        match report.status {
            Outcome::NoChanges => "up to date",
            other => other.as_str(),
        }
    );
    if let Some(api) = &report.api_url {
        eprintln!("watch  API: {api}");
    }
    let mut seen = Snapshot::take(&root);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(a.poll));
        let now = Snapshot::take(&root);
        let changed = now.changed_since(&seen);
        if changed.is_empty() {
            continue;
        }
        // Let an editor finish writing (several files, or a write then a rename).
        std::thread::sleep(Duration::from_millis(200));
        let now = Snapshot::take(&root);
        let changed = now.changed_since(&seen);
        seen = now.clone();
        let functions = affected(&root, &changed)?;
        let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
        if functions.is_empty() {
            eprintln!(
                "watch  {} changed: no function is built from it",
                names.join(", ")
            );
            continue;
        }
        let saved = now.saved_at(&changed);
        eprintln!(
            "watch  {} changed: rebuilding {}",
            names.join(", "),
            functions.join(", ")
        );
        redeploy(&rt, &base, &functions, (saved, &stop));
    }
    eprintln!("watch  stopped");
    Ok(())
}
