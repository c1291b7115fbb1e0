//! An update that breaks the process function, rolled back by the stage's alarm: the deploy
//! ends in `UPDATE_ROLLBACK_COMPLETE` naming the alarm, and the function runs its previous
//! code again.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use deployer::local::emulator::LocalConfig;
use deployer::ops::deploy::DeployReport;

use super::{STAGE, finished, root_target, xtask};
use crate::child::Stderr;

/// The build-time variable that makes every batch of the process function fail
/// (`functions/process/src/main.rs`).
const FAULT_VAR: &str = "IMAGE_PIPELINE_PROCESS_FAULT";

/// How long the update may take to reach the function (a build of it included).
const REACH: Duration = Duration::from_secs(600);

pub fn an_alarm_rolls_back_a_failing_process_function(
    rt: &tokio::runtime::Runtime,
    local: &LocalConfig,
    updated: &DeployReport,
) -> Result<()> {
    let target = root_target(local)?;
    let deployed = updated.deployed(&target)?;
    let spec = stack::App::image_pipeline();
    let process = spec.function("process").context("no process function")?;
    let name = deployed.outputs.need(&process.function_name_output())?;
    let (clients, _) = rt.block_on(deployer::cloud::aws::connect(&target))?;
    let code = || code_hash(rt, &clients, &name);
    let alarm_name = stack::app::alarms::names(&stack::Stage::parse(STAGE)?)
        .into_iter()
        .find(|n| n.ends_with(stack::app::alarms::PROCESS_ERRORS))
        .context("no process-errors alarm")?;
    let state = || alarm_state(rt, &clients, &alarm_name);
    // Nothing set it off before: the rollback below is this update's doing.
    let quiet = state()?;
    ensure!(
        quiet != "ALARM",
        "{alarm_name} is in ALARM before the update"
    );
    let before = code()?;
    let deploy = xtask(&[
        "deploy",
        "--local",
        "--stage",
        STAGE,
        "--rollback-minutes",
        "1",
    ])?
    .env(FAULT_VAR, "e2e: a process function that fails every batch")
    .stderr(Stderr::Capture);
    eprintln!("e2e    (with {FAULT_VAR} set, in the background)");
    let running = std::thread::spawn(move || deploy.run());
    // Once the broken code is in place, an upload makes it fail.
    let started = Instant::now();
    while code()? == before {
        if running.is_finished() || started.elapsed() > REACH {
            bail!("the update never reached the process function");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    put_object(rt, &clients, &deployed.bucket)?;
    let run = finished(
        running
            .join()
            .map_err(|_| anyhow::anyhow!("the deploy's thread panicked"))??,
    );
    let alarm = format!("alarm:{alarm_name}");
    ensure!(
        run.code != 0
            && run.stderr.contains("UPDATE_ROLLBACK_COMPLETE")
            && run.stderr.contains(&alarm),
        "the deploy of a failing process function should end rolled back, naming {alarm}; exit {}:\n{}",
        run.code,
        run.stderr
    );
    let after = code()?;
    ensure!(
        after == before,
        "the process function should run its previous code ({before}) after the rollback, not {after}"
    );
    for line in run.stderr.lines().filter(|l| l.contains("ROLLBACK")) {
        eprintln!("e2e    | {line}");
    }
    eprintln!(
        "e2e    a process function failing every batch set off {alarm_name} ({quiet} before, {} now) within the monitoring minute; the update rolled back to the previous code",
        state()?
    );
    Ok(())
}

/// The function's code hash.
fn code_hash(
    rt: &tokio::runtime::Runtime,
    clients: &deployer::cloud::aws::Clients,
    name: &str,
) -> Result<String> {
    rt.block_on(async {
        let f = clients
            .lambda
            .get_function()
            .function_name(name)
            .send()
            .await
            .context("reading the process function")?;
        Ok(f.configuration()
            .and_then(|c| c.code_sha256())
            .unwrap_or_default()
            .to_string())
    })
}

/// The alarm's state (`OK`, `ALARM`, `INSUFFICIENT_DATA`).
fn alarm_state(
    rt: &tokio::runtime::Runtime,
    clients: &deployer::cloud::aws::Clients,
    name: &str,
) -> Result<String> {
    rt.block_on(async {
        let out = clients
            .cloudwatch
            .describe_alarms()
            .alarm_names(name)
            .send()
            .await
            .context("reading the process-errors alarm")?;
        Ok(out
            .metric_alarms()
            .first()
            .and_then(|a| a.state_value())
            .map(|s| s.as_str().to_string())
            .unwrap_or_default())
    })
}

/// An object under `uploads/`, which becomes a work queue message for the process function.
fn put_object(
    rt: &tokio::runtime::Runtime,
    clients: &deployer::cloud::aws::Clients,
    bucket: &str,
) -> Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    rt.block_on(
        clients
            .s3
            .put_object()
            .bucket(bucket)
            .key(format!("uploads/e2e-rollback/{nanos}"))
            .body(b"not an image".to_vec().into())
            .send(),
    )
    .context("putting an object for the process function")?;
    Ok(())
}
