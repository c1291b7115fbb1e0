//! The end-to-end test on the local environment, run by `cargo xtask test`, with IAM
//! enforcement and TLS on: as an IAM user whose only policy is `cargo xtask deployer-policy`
//! (not as root), deploy, smoke-test, deploy again (no changes), change one handler and deploy
//! (only that function is updated); then take `s3:GetObjectVersion` away from the process
//! role and show an upload failing into the failure queue with an error that names it;
//! teardown, teardown again (nothing to do). Each step runs the real command as a user would,
//! and its exit code and JSON output are checked.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use deployer::aws::LocalCredentials;
use deployer::local::LocalConfig;
use deployer::pyenv::workspace_root;
use serde_json::Value;

/// Ports of the test's own local environment, away from the default one a user may run.
const PORT: u16 = 4576;
const LABELS_PORT: u16 = 4609;
const STAGE: &str = "e2e";

/// The handler changed by the test and the change (a log message), restored afterwards.
const CHANGED_FILE: &str = "functions/upload/src/lib.rs";
const ORIGINAL: &str = "\"image stored\"";
const CHANGED: &str = "\"image stored (e2e)\"";

/// The label-service binary to run, if the caller already has one.
static LABELS_BIN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
/// The deploying identity's keys, once created.
static DEPLOYER: std::sync::OnceLock<LocalCredentials> = std::sync::OnceLock::new();
/// The IAM user the test deploys as.
const DEPLOYER_USER: &str = "image-pipeline-e2e-deployer";

fn xtask(args: &[&str]) -> Result<(i32, Value)> {
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let started = Instant::now();
    eprintln!("e2e    $ cargo xtask {}", args.join(" "));
    let mut cmd = Command::new(exe);
    if let Some(Some(bin)) = LABELS_BIN.get() {
        cmd.env("IMAGE_PIPELINE_LABELS_BIN", bin);
    }
    // The smoke test runs as the emulator's root: it calls IAM SimulatePrincipalPolicy on
    // the function roles, which the deployer policy grants on those roles only, and MiniStack
    // 1.5.33 authorizes that call against `*` instead of the role, so it would be refused.
    if let Some(user) = DEPLOYER
        .get()
        .filter(|_| args.first() != Some(&"smoke-test"))
    {
        cmd.env("IMAGE_PIPELINE_LOCAL_ACCESS_KEY_ID", &user.access_key_id)
            .env(
                "IMAGE_PIPELINE_LOCAL_SECRET_ACCESS_KEY",
                &user.secret_access_key,
            );
    }
    let out = cmd
        .args(args)
        .current_dir(workspace_root())
        .env("IMAGE_PIPELINE_LOCAL_PORT", PORT.to_string())
        .env("IMAGE_PIPELINE_LABELS_PORT", LABELS_PORT.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run xtask")?;
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).with_context(|| {
            format!(
                "stdout of `{}` is not one JSON document:\n{stdout}",
                args.join(" ")
            )
        })?
    };
    eprintln!(
        "e2e    exit {code} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok((code, json))
}

fn ok(args: &[&str]) -> Result<Value> {
    let (code, json) = xtask(args)?;
    ensure!(
        code == 0,
        "`cargo xtask {}` exited with {code}",
        args.join(" ")
    );
    Ok(json)
}

/// Puts the handler source back however the test ends.
struct Restore(PathBuf, String);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.0, &self.1) {
            eprintln!("e2e    could not restore {}: {e}", self.0.display());
        }
    }
}

/// Runs the test. `labels_bin` is a detect-labels binary to use instead of building one.
pub fn run(labels_bin: Option<PathBuf>) -> Result<()> {
    let _ = LABELS_BIN.set(labels_bin);
    let result = steps();
    let down = ok(&["local", "down", "--output", "json"]);
    result?;
    down?;
    println!(
        "e2e: IAM enforced over TLS, as a least-privileged IAM user: deploy, smoke test, no-op deploy, one-function update, a revoked permission failing as on AWS, teardown twice: all as expected"
    );
    Ok(())
}

/// Creates the IAM user the test deploys as, with `deployer-policy` for the local account
/// and region as its only permissions.
async fn deployer_user(local: &LocalConfig) -> Result<LocalCredentials> {
    let (iam, identity) = deployer::local_iam::root(local).await?;
    let policy = deployer::permissions::deployer_policy(&identity.account, &identity.region);
    let user = deployer::local_iam::user_with_policy(&iam, DEPLOYER_USER, &policy).await?;
    eprintln!(
        "e2e    deploying as IAM user {DEPLOYER_USER} ({}) with only the deployer policy",
        user.access_key_id
    );
    Ok(user)
}

fn steps() -> Result<()> {
    let local = ["--local", "--stage", STAGE, "--output", "json"];
    let with = |cmd: &[&'static str]| -> Vec<&'static str> {
        cmd.iter().chain(local.iter()).copied().collect()
    };

    let status = ok(&["local", "up", "--output", "json"])?;
    ensure!(
        status["iam_enforced"] == true,
        "the local environment does not enforce IAM: {status}"
    );
    let local = LocalConfig::for_ports(PORT, LABELS_PORT);
    let rt = crate::target::runtime()?;
    let user = rt.block_on(deployer_user(&local))?;
    let _ = DEPLOYER.set(user);
    // Start from nothing, whatever an interrupted run left.
    ok(&with(&["teardown"]))?;

    let created = ok(&with(&["deploy"]))?;
    ensure!(
        created["status"] == "created",
        "first deploy: {}",
        created["status"]
    );
    ensure!(
        created["api_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://127.0.0.1:")),
        "no local API URL"
    );

    let smoke = ok(&with(&["smoke-test"]))?;
    ensure!(smoke["passed"] == true, "smoke test: {smoke}");
    let names: Vec<&str> = smoke["checks"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    for need in [
        "upload",
        "labels",
        "listing",
        "bad-upload",
        "no-s3-urls",
        "presigned-upload",
        "iam-matrix",
        "failure-queue",
    ] {
        ensure!(
            names.contains(&need),
            "smoke test has no {need} check: {names:?}"
        );
    }
    ensure!(
        smoke["labels"].as_array().is_some_and(|l| !l.is_empty()),
        "no labels"
    );

    let again = ok(&with(&["deploy"]))?;
    ensure!(
        again["status"] == "no-changes",
        "second deploy: {}",
        again["status"]
    );
    ensure!(
        again["changes"].as_array().is_some_and(Vec::is_empty),
        "second deploy changed things"
    );
    ensure!(
        again["artifacts"]
            .as_array()
            .is_some_and(|a| a.iter().all(|a| a["uploaded"] == false)),
        "second deploy uploaded artifacts again"
    );

    let path = workspace_root().join(CHANGED_FILE);
    let source = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        source.matches(ORIGINAL).count() == 1,
        "{CHANGED_FILE} no longer has {ORIGINAL} once"
    );
    let _restore = Restore(path.clone(), source.clone());
    std::fs::write(&path, source.replace(ORIGINAL, CHANGED))?;
    let updated = ok(&with(&["deploy"]))?;
    ensure!(
        updated["status"] == "updated",
        "deploy after a change: {}",
        updated["status"]
    );
    let changes = updated["changes"].as_array().cloned().unwrap_or_default();
    let direct: Vec<&str> = changes
        .iter()
        .filter(|c| c["direct"] == true)
        .filter_map(|c| c["logical_id"].as_str())
        .collect();
    ensure!(
        direct == ["UploadFunction"],
        "the change should update only UploadFunction, got {direct:?} of {changes:?}"
    );
    for c in &changes {
        ensure!(c["action"] == "Modify", "unexpected change {c}");
        ensure!(c["replacement"] != "True", "a resource is replaced: {c}");
        if c["resource_type"] == "AWS::Lambda::Function" {
            ensure!(
                c["logical_id"] == "UploadFunction",
                "another function changed: {c}"
            );
        }
    }
    let uploaded: Vec<&str> = updated["artifacts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["uploaded"] == true)
                .filter_map(|a| a["function"].as_str())
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        uploaded == ["upload"],
        "only the upload artifact is new, got {uploaded:?}"
    );
    drop(_restore);

    let outputs: std::collections::BTreeMap<String, String> =
        serde_json::from_value(updated["outputs"].clone()).context("outputs of the deploy")?;
    let report = rt.block_on(deployer::local_iam::prove_enforcement(
        &local, STAGE, &outputs,
    ))?;
    eprintln!("e2e    {report}");

    let gone = ok(&with(&["teardown"]))?;
    ensure!(gone["status"] == "deleted", "teardown: {}", gone["status"]);
    let again = ok(&with(&["teardown"]))?;
    ensure!(
        again["status"] == "absent",
        "second teardown: {}",
        again["status"]
    );

    // And a command that cannot know where to go fails cleanly.
    let (code, _) = xtask(&["deploy", "--stage", STAGE])?;
    if code != 2 {
        bail!("deploy without --region or --local exited {code}, expected a usage error (2)");
    }
    Ok(())
}
