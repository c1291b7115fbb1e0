//! The end-to-end test on the local environment, run by `cargo xtask test`, with IAM
//! enforcement and TLS on: a deploy before bootstrap fails naming the fix; bootstrap (as
//! root, importing an assets bucket an earlier version left, then again with no changes, then
//! a GitHub CI role); as an IAM user whose only policy is `cargo xtask deployer-policy
//! --stages e2e*` (not as root), deploy with a daily upload quota of 25, smoke-test (its IAM
//! matrix includes the escalation paths of the execution role and of that user, its quota
//! check races at that quota), the gallery page in headless Chromium (`e2e/gallery.rs`, over
//! `e2e/webdriver.rs`), the user's paths into another stage and a pass of the release role
//! refused, a token of another user pool and an expired one of the stage's pool refused, deploy again (no changes, the quota kept),
//! kill the emulator with SIGKILL and start it again (the image, its item and the stack are all
//! still there; its S3 event, put in the dead-letter queue, moved back by `redrive` and
//! received again), change the upload function's code and deploy with the stage's alarms as
//! rollback triggers (only that function is updated, no permission changes); change a
//! function's environment as root and find it with `status --drift`; then take `s3:GetObjectVersion` away from the process role and show an upload
//! held back in the work queue with an error that names it; teardown, teardown again
//! (nothing to do), and the stage's bucket still gone after `local down` and `local up`; the
//! bootstrap removed, and again (nothing to do); and a deploy with no
//! region anywhere fails saying so. Each step runs the real command as a user would, and its
//! exit code and typed JSON report are checked. No tracked file is edited: the code change is a
//! build note compiled into the upload function from the environment.

mod gallery;
mod image;
mod rollback;
mod webdriver;

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use deployer::cloud::aws::LocalCredentials;
use deployer::cloud::cfn::Outcome;
use deployer::cloud::cfn::{ChangeAction, Replacement};
use deployer::local::emulator::{LocalConfig, LocalStatus};
use deployer::ops::deploy::DeployReport;
use deployer::ops::teardown::{Removal, TeardownReport};
use deployer::verify::smoke::{CheckName, SmokeReport};
use serde::de::DeserializeOwned;

use crate::child::{Run, Stderr, Xtask};
use crate::local::Stopped;
use image::{look_at_the_image, read_back};

/// Ports of the test's own local environment, away from the default one a user may run.
const PORT: u16 = 4576;
const LABELS_PORT: u16 = 4609;
const STAGE: &str = "e2e";
/// The test bootstraps with these as the preview stages and deploys as a preview identity:
/// the narrower of the two scopes.
const PREVIEW: &str = "e2e*";
/// A stage outside `PREVIEW`, which the deploying identity must not reach.
const OUTSIDE: &str = "prod";

/// Compiled into the upload function (see `functions/upload`): a change of exactly that
/// function's code, made without editing a file.
const BUILD_NOTE_VAR: &str = "IMAGE_PIPELINE_UPLOAD_BUILD_NOTE";

/// Stands for the caller's real AWS credentials, which no local service may receive.
const CANARY: &str = "e2e-canary-not-for-local-services";

/// The label-service binary to run, if the caller already has one.
static LABELS_BIN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
/// The deploying identity's keys, once created.
static DEPLOYER: std::sync::OnceLock<LocalCredentials> = std::sync::OnceLock::new();
/// The IAM user the test deploys as.
const DEPLOYER_USER: &str = "image-pipeline-e2e-deployer";

/// `cargo xtask ARGS` against the test's environment, as the deploying user once it exists.
fn xtask(args: &[&str]) -> Result<Xtask> {
    eprintln!("e2e    $ cargo xtask {}", args.join(" "));
    let mut x = Xtask::new(args)?
        .env("IMAGE_PIPELINE_LOCAL_PORT", PORT.to_string())
        .env("IMAGE_PIPELINE_LABELS_PORT", LABELS_PORT.to_string())
        // A build note left in the caller's environment would change the upload function.
        .env_remove(BUILD_NOTE_VAR);
    if let Some(Some(bin)) = LABELS_BIN.get() {
        x = x.env("IMAGE_PIPELINE_LABELS_BIN", bin);
    }
    if let Some(user) = DEPLOYER.get() {
        x = x
            .env("IMAGE_PIPELINE_LOCAL_ACCESS_KEY_ID", &user.access_key_id)
            .env(
                "IMAGE_PIPELINE_LOCAL_SECRET_ACCESS_KEY",
                &user.secret_access_key,
            );
    }
    Ok(x)
}

fn finished(run: Run) -> Run {
    eprintln!("e2e    exit {} in {:.1} s", run.code, run.seconds);
    run
}

/// The local environment as its root sees it (for changes made behind CloudFormation's back
/// and reads no least-privileged identity may make).
fn root_target(local: &LocalConfig) -> Result<deployer::cloud::aws::Target> {
    local
        .target(LocalCredentials::root())
        .context("the local environment has no certificate")
}

/// Runs `cargo xtask ARGS --local --stage e2e --output json`, which must succeed; its report.
fn ok<T: DeserializeOwned>(args: &[&str]) -> Result<T> {
    let mut all = args.to_vec();
    all.extend(["--local", "--stage", STAGE, "--output", "json"]);
    finished(xtask(&all)?.run()?).report()
}

/// [`ok`] with a password in the environment, as `user add` and `user token` read it.
fn ok_with_password<T: DeserializeOwned>(args: &[&str], password: &str) -> Result<T> {
    let mut all = args.to_vec();
    all.extend(["--local", "--stage", STAGE, "--output", "json"]);
    let x = xtask(&all)?.env(crate::user::PASSWORD_ENV, password);
    finished(x.run()?).report()
}

/// Runs the test. `labels_bin` is a detect-labels binary to use instead of building one.
pub fn run(labels_bin: Option<PathBuf>) -> Result<()> {
    let _ = LABELS_BIN.set(labels_bin);
    let result = steps();
    let down = xtask(&["local", "down", "--output", "json"]).and_then(|x| x.run());
    result?;
    down?;
    println!(
        "e2e: IAM enforced over TLS: deploy refused before bootstrap, bootstrap (import, no-op, CI role), as a least-privileged preview IAM user: deploy, escalation paths closed, smoke test (quota race included), the gallery in headless Chromium, another pool's token and an expired one refused, status, logs and trace of its image, no-op deploy, nothing lost to a killed emulator, a dead letter redriven, one-function update with rollback triggers and no permission change, drift found and named (and in the plan that would overwrite it), a failing process function rolled back by its alarm, a revoked permission failing as on AWS, teardown twice, the deleted bucket still gone after a restart, the bootstrap removed twice, a region that cannot be found: all as expected"
    );
    Ok(())
}

fn preview() -> Result<stack::app::StagePattern> {
    stack::app::StagePattern::parse(PREVIEW).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Creates the IAM user the test deploys as, with `deployer-policy --stages PREVIEW` for the
/// local account and region as its only permissions; its keys and ARN.
async fn deployer_user(local: &LocalConfig) -> Result<(LocalCredentials, String)> {
    let (iam, identity) = deployer::verify::local_iam::root(local).await?;
    let policy = deployer::ops::permissions::deployer_policy(
        &identity.account,
        &identity.region,
        &preview()?,
    );
    let user = deployer::verify::local_iam::user_with_policy(&iam, DEPLOYER_USER, &policy).await?;
    eprintln!(
        "e2e    deploying as IAM user {DEPLOYER_USER} ({}) with only the deployer policy for stages {PREVIEW}",
        user.access_key_id
    );
    let arn = format!(
        "arn:{}:iam::{}:user/{DEPLOYER_USER}",
        identity.partition, identity.account
    );
    Ok((user, arn))
}

/// Bootstraps the test's environment as its root, as an administrator would: first into an
/// account where an earlier version left an assets bucket (imported, its artifact kept), then
/// again (no changes), then a GitHub CI role. A deploy before it, as the deploying user, fails
/// naming the command that fixes it.
fn bootstrap_steps(local: &LocalConfig, user: &LocalCredentials) -> Result<()> {
    use deployer::ops::bootstrap::BootstrapReport;
    let rt = crate::target::runtime()?;
    let early = xtask(&["deploy", "--local", "--stage", STAGE])?
        .env("IMAGE_PIPELINE_LOCAL_ACCESS_KEY_ID", &user.access_key_id)
        .env(
            "IMAGE_PIPELINE_LOCAL_SECRET_ACCESS_KEY",
            &user.secret_access_key,
        )
        .stderr(Stderr::Capture)
        .run()?;
    ensure!(
        early.code == 1 && early.stderr.contains("cargo xtask bootstrap --local"),
        "a deploy before bootstrap exited {}: {}",
        early.code,
        early.stderr
    );
    eprintln!("e2e    deploy before bootstrap: refused, naming `cargo xtask bootstrap --local`");
    let (legacy, key) = rt.block_on(deployer::verify::local_iam::legacy_assets_bucket(local))?;
    let args = [
        "bootstrap",
        "--local",
        "--preview-stages",
        PREVIEW,
        "--output",
        "json",
    ];
    let first: BootstrapReport = finished(xtask(&args)?.run()?).report()?;
    ensure!(
        first.status == Outcome::Created && first.imported_bucket.as_deref() == Some(&legacy),
        "first bootstrap: {:?}, imported {:?}",
        first.status,
        first.imported_bucket
    );
    ensure!(
        rt.block_on(deployer::verify::local_iam::object_exists(
            local, &legacy, &key
        ))?,
        "the imported assets bucket lost {key}"
    );
    let again: BootstrapReport = finished(xtask(&args)?.run()?).report()?;
    ensure!(
        again.status == Outcome::NoChanges,
        "second bootstrap: {:?}",
        again.status
    );
    let mut ci_args = args.to_vec();
    ci_args.extend([
        "--ci",
        "github",
        "--repo",
        "example-org/image-pipeline",
        "--environment",
        "preview",
        "--stages",
        PREVIEW,
    ]);
    let ci: BootstrapReport = finished(xtask(&ci_args)?.run()?).report()?;
    let ci = ci.ci.context("bootstrap --ci github made no CI role")?;
    let trust = rt.block_on(deployer::verify::local_iam::trust_policy(
        local,
        &ci.role_arn,
    ))?;
    let statement = &trust["Statement"][0];
    let equals = &statement["Condition"]["StringEquals"];
    ensure!(
        statement["Action"] == serde_json::json!("sts:AssumeRoleWithWebIdentity")
            || statement["Action"] == serde_json::json!(["sts:AssumeRoleWithWebIdentity"]),
        "the CI role's trust: {trust}"
    );
    ensure!(
        equals["token.actions.githubusercontent.com:sub"]
            == serde_json::json!(["repo:example-org/image-pipeline:environment:preview"])
            && equals["token.actions.githubusercontent.com:aud"]
                == serde_json::json!(["sts.amazonaws.com"])
            && statement["Principal"]["Federated"]
                .as_str()
                .is_some_and(|p| p.ends_with(":oidc-provider/token.actions.githubusercontent.com")),
        "the CI role trusts more than one repository's environment: {trust}"
    );
    for (scope, role) in &first.bootstrap.execution_roles {
        let trust = rt.block_on(deployer::verify::local_iam::trust_policy(local, role))?;
        let principals: Vec<&serde_json::Value> = trust["Statement"]
            .as_array()
            .map(|s| s.iter().map(|st| &st["Principal"]).collect())
            .unwrap_or_default();
        ensure!(
            principals == [&serde_json::json!({"Service": "cloudformation.amazonaws.com"})],
            "the {scope} execution role trusts more than CloudFormation: {trust}"
        );
    }
    eprintln!(
        "e2e    bootstrap: imported {legacy}, again no changes, CI role {} trusts only {}",
        ci.role_arn, ci.subject
    );
    Ok(())
}

/// A wiped environment started afresh; real-looking credentials in the caller's environment
/// must not reach the local services.
fn fresh_environment() -> Result<LocalStatus> {
    // Start from nothing, whatever an interrupted run left in the test's own environment.
    finished(xtask(&["local", "down", "--wipe", "--output", "json"])?.run()?)
        .report::<Stopped>()?;
    // Real-looking credentials in the caller's environment must not reach the local services.
    // The label service is a quota of E2E_LABELS_TPS calls a second, which the deploys pace
    // the stage for.
    let tps = E2E_LABELS_TPS.to_string();
    let up = xtask(&["local", "--labels-tps", &tps, "up", "--output", "json"])?
        .env("AWS_ACCESS_KEY_ID", CANARY)
        .env("AWS_SECRET_ACCESS_KEY", CANARY)
        .env("AWS_SESSION_TOKEN", CANARY)
        .env("AWS_PROFILE", CANARY);
    let status: LocalStatus = finished(up.run()?).report()?;
    ensure!(
        status.iam_enforced,
        "the local environment does not enforce IAM: {status:?}"
    );
    for s in &status.services {
        let pid = s.pid.with_context(|| format!("{} has no pid", s.name))?;
        let environ = std::fs::read(format!("/proc/{pid}/environ"))
            .with_context(|| format!("cannot read the environment of {} ({pid})", s.name))?;
        ensure!(
            !String::from_utf8_lossy(&environ).contains(CANARY),
            "{} received the caller's AWS credentials",
            s.name
        );
    }
    Ok(status)
}

/// The stage's daily upload quota per user.
const E2E_UPLOADS_PER_DAY: u32 = 25;
/// Where the stage's alarms notify: an address, so the stack makes its topic.
const E2E_ALARMS_TO: &str = "e2e-alarms@example.com";
/// The local label service's DetectLabels quota, in calls a second.
const E2E_LABELS_TPS: u32 = 10;

/// The pace a deploy must report: for the label service's quota, found by asking it.
fn expected_pace() -> deployer::ops::deploy::LabelsPace {
    deployer::ops::deploy::LabelsPace::new(
        E2E_LABELS_TPS,
        deployer::cloud::quotas::QuotaSource::LocalService,
    )
}

/// The first deploy of the stage as the deploying user, its smoke test, and the gallery in
/// a browser.
fn first_deploy(rt: &tokio::runtime::Runtime, user_arn: &str) -> Result<DeployReport> {
    // The environment was wiped: there is nothing to remove, and teardown says so.
    let nothing: TeardownReport = ok(&["teardown"])?;
    ensure!(
        nothing.status == Removal::Absent,
        "teardown of a wiped environment: {:?}",
        nothing.status
    );

    // A small quota, so that each smoke test's race fills it cheaply; the deploys after this
    // one give no flag, and keep it.
    let quota = E2E_UPLOADS_PER_DAY.to_string();
    let created: DeployReport = ok(&[
        "deploy",
        "--uploads-per-user-per-day",
        &quota,
        "--alarms-to",
        E2E_ALARMS_TO,
    ])?;
    ensure!(
        created.status == Outcome::Created,
        "first deploy: {:?}",
        created.status
    );
    ensure!(
        created.settings.uploads_per_user_per_day == E2E_UPLOADS_PER_DAY
            && !created.settings.self_sign_up
            && created.settings.labels == expected_pace()
            && created.settings.alarms_to
                == deployer::ops::deploy::AlarmsTo::Email(E2E_ALARMS_TO.into()),
        "first deploy's settings: {:?}",
        created.settings
    );
    ensure!(
        created
            .api_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://127.0.0.1:")),
        "no local API URL"
    );

    let smoke: SmokeReport = ok(&["smoke-test"])?;
    ensure!(smoke.passed, "smoke test: {:?}", smoke.checks);
    for need in CheckName::ALL {
        ensure!(
            smoke.check(need).is_some(),
            "smoke test has no {need} check"
        );
    }
    ensure!(!smoke.labels.is_empty(), "no labels");

    // The gallery page, in headless Chromium, as two users added for it.
    let api = created.api_url.clone().context("no API URL")?;
    let users = gallery::Users {
        a: "gallery-a@example.com".into(),
        b: "gallery-b@example.com".into(),
        password: "Gallery-Passw0rd".into(),
    };
    for email in [&users.a, &users.b] {
        let added: serde_json::Value = ok_with_password(&["user", "add", email], &users.password)?;
        ensure!(added["new"] == true, "user add {email}: {added}");
    }
    eprintln!("e2e    the gallery page in headless Chromium: {api}/");
    rt.block_on(gallery::gallery_test(&api, &users))?;
    for email in [&users.a, &users.b] {
        let removed: deployer::ops::users::Removed = ok(&["user", "remove", email])?;
        ensure!(removed.existed, "user remove {email}: {removed:?}");
    }
    ensure!(
        created.scope == stack::app::bootstrap::Scope::Preview,
        "stage {STAGE} deployed with the {} execution role",
        created.scope
    );
    let matrix = smoke
        .check(CheckName::IamMatrix)
        .map(|c| c.detail.clone())
        .unwrap_or_default();
    ensure!(
        matrix.contains("escalation paths closed") && matrix.contains(user_arn),
        "the IAM matrix did not check the deploying user's escalation paths: {matrix}"
    );

    Ok(created)
}

/// What no deploying identity of PREVIEW may do to another stage, asked of IAM's simulator
/// about the deploying user; and CloudFormation refusing the release role from it.
fn other_stages_refused(
    rt: &tokio::runtime::Runtime,
    local: &LocalConfig,
    (user, user_arn): (&LocalCredentials, &str),
    created: &DeployReport,
) -> Result<()> {
    let (asked, open) = rt.block_on(deployer::verify::local_iam::open_escalation_paths(
        local,
        user_arn,
        &preview()?,
        OUTSIDE,
    ))?;
    ensure!(open.is_empty(), "escalation paths open: {open:?}");
    let release = created.execution_role.replace("-preview-", "-release-");
    let refused = rt.block_on(deployer::verify::local_iam::try_pass_role(
        local,
        user,
        &format!("{}-{STAGE}-probe", stack::app::APP),
        &release,
    ))?;
    ensure!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("iam:PassRole")),
        "CloudFormation took the release role from a preview identity: {refused:?}"
    );
    eprintln!(
        "e2e    the deploying user: {asked} escalation paths closed, the release role refused to it ({})",
        refused
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
    );

    Ok(())
}

/// A deploy with nothing changed changes and uploads nothing.
fn redeploy_changes_nothing() -> Result<()> {
    let again: DeployReport = ok(&["deploy"])?;
    ensure!(
        again.status == Outcome::NoChanges,
        "second deploy: {:?}",
        again.status
    );
    ensure!(again.changes.is_empty(), "second deploy changed things");
    ensure!(
        again.settings.uploads_per_user_per_day == E2E_UPLOADS_PER_DAY
            && again.settings.labels == expected_pace()
            && again.settings.alarms_to
                == deployer::ops::deploy::AlarmsTo::Email(E2E_ALARMS_TO.into()),
        "a deploy without --uploads-per-user-per-day changed the quota, or the pace moved: {:?}",
        again.settings
    );
    ensure!(
        again.artifacts.iter().all(|a| !a.uploaded),
        "second deploy uploaded artifacts again"
    );

    Ok(())
}

/// Nothing is lost when the emulator is killed: an image uploaded and labeled before is
/// still readable afterwards, object and item, and the stack still matches.
fn survives_a_kill(
    rt: &tokio::runtime::Runtime,
    local: &LocalConfig,
    status: &LocalStatus,
    created: &DeployReport,
) -> Result<()> {
    let kept: SmokeReport = ok(&["smoke-test", "--keep"])?;
    ensure!(kept.passed, "smoke test before the kill: {:?}", kept.checks);
    let id = kept
        .image_id
        .clone()
        .context("the smoke test kept no image")?;
    look_at_the_image(&id, &kept)?;
    let ministack = status
        .services
        .iter()
        .find(|s| s.name == "ministack")
        .and_then(|s| s.pid)
        .context("no ministack pid")?;
    // Let the last request's state save happen, as it would between any two user actions.
    std::thread::sleep(std::time::Duration::from_secs(2));
    eprintln!("e2e    kill -9 {ministack} (ministack)");
    let killed = std::process::Command::new("kill")
        .args(["-9", &ministack.to_string()])
        .status()
        .context("cannot run kill")?;
    ensure!(killed.success(), "kill -9 {ministack} failed");
    let back: LocalStatus =
        finished(xtask(&["local", "up", "--output", "json"])?.run()?).report()?;
    ensure!(back.iam_enforced, "after the restart: {back:?}");
    let target = root_target(local)?;
    let stage = created.deployed(&target)?;
    let owner = kept
        .owner
        .clone()
        .context("the smoke test names no owner")?;
    let (labels, bytes) = rt.block_on(read_back(local, &stage, &owner, &id))?;
    image::redrive_moves_a_dead_letter(rt, local, &stage, (&owner, &id, &labels))?;
    ensure!(
        labels == kept.labels,
        "after the restart image {id} has labels {labels:?}, before {:?}",
        kept.labels
    );
    ensure!(
        bytes == deployer::verify::smoke::DEFAULT_IMAGE,
        "after the restart the object of image {id} differs ({} bytes)",
        bytes.len()
    );
    for gone in &kept.deleted {
        let prefix = format!("{}{owner}/{gone}", stack::app::UPLOAD_PREFIX);
        let left = rt.block_on(image::versions_under(local, &stage.bucket, &prefix))?;
        ensure!(
            left == 0,
            "after the restart, {left} versions of the deleted {prefix} are back"
        );
    }
    ensure!(
        !kept.deleted.is_empty(),
        "the smoke test reports no deleted image"
    );
    eprintln!(
        "e2e    after kill -9 and local up: image {id}, its labels and its object are all there; the {} images deleted before stay deleted",
        kept.deleted.len()
    );
    let after: DeployReport = ok(&["deploy"])?;
    ensure!(
        after.status == Outcome::NoChanges,
        "deploy after the restart: {:?}",
        after.status
    );
    remove_the_kept_user(rt, local, &kept, &stage)
}

/// `user remove` deletes the kept user and everything they own; a second run finds nothing.
fn remove_the_kept_user(
    rt: &tokio::runtime::Runtime,
    local: &LocalConfig,
    kept: &SmokeReport,
    stage: &deployer::cloud::stage::Deployed,
) -> Result<()> {
    let email = kept
        .kept_user
        .clone()
        .context("the smoke test kept no user")?;
    let (id, owner) = (
        kept.image_id.clone().unwrap_or_default(),
        kept.owner.clone().unwrap_or_default(),
    );
    let removed: deployer::ops::users::Removed = ok(&["user", "remove", &email])?;
    ensure!(
        removed.existed
            && removed.items >= 3
            && removed.object_versions >= 3
            && removed.index_entries >= 1,
        "user remove {email}: {removed:?}"
    );
    ensure!(
        rt.block_on(read_back(local, stage, &owner, &id)).is_err(),
        "image {id} is still there after user remove"
    );
    let again: deployer::ops::users::Removed = ok(&["user", "remove", &email])?;
    ensure!(!again.existed, "user remove a second time: {again:?}");
    eprintln!(
        "e2e    user remove {email}: {} object versions, {} items, {} index entries; again: nothing",
        removed.object_versions, removed.items, removed.index_entries
    );
    Ok(())
}

/// Changes the upload function's code (a note compiled into it) and nothing else: only that
/// function is updated.
fn change_one_function() -> Result<DeployReport> {
    // Watched by the stage's alarms for a minute: the request carries them as rollback
    // triggers, and a healthy update is not rolled back (`rollback.rs` shows one that is).
    let deploy = vec![
        "deploy",
        "--local",
        "--stage",
        STAGE,
        "--rollback-minutes",
        "1",
        "--output",
        "json",
    ];
    eprintln!("e2e    (with {BUILD_NOTE_VAR} set)");
    let updated: DeployReport = finished(
        xtask(&deploy)?
            .env(BUILD_NOTE_VAR, "e2e: a change of the upload function only")
            .run()?,
    )
    .report()?;
    ensure!(
        updated.status == Outcome::Updated,
        "deploy after a change: {:?}",
        updated.status
    );
    let direct: Vec<&str> = updated
        .changes
        .iter()
        .filter(|c| c.direct)
        .map(|c| c.logical_id.as_str())
        .collect();
    ensure!(
        direct == ["UploadFunction"],
        "the change should update only UploadFunction, got {direct:?} of {:?}",
        updated.changes
    );
    for c in &updated.changes {
        ensure!(c.action == ChangeAction::Modify, "unexpected change {c:?}");
        ensure!(
            c.replacement != Some(Replacement::True),
            "a resource is replaced: {c:?}"
        );
        if c.resource_type == "AWS::Lambda::Function" {
            ensure!(
                c.logical_id == "UploadFunction",
                "another function changed: {c:?}"
            );
        }
    }
    let uploaded: Vec<&str> = updated
        .artifacts
        .iter()
        .filter(|a| a.uploaded)
        .map(|a| a.function.as_str())
        .collect();
    ensure!(
        uploaded == ["upload"],
        "only the upload artifact is new, got {uploaded:?}"
    );
    ensure!(
        updated.security.is_empty(),
        "a code change changed no permission, yet the gate saw {:?}",
        updated.security
    );
    let triggers = updated
        .rollback
        .as_ref()
        .context("the update had no rollback triggers")?;
    ensure!(
        triggers.minutes == 1
            && triggers.alarm_arns.len() == stack::app::alarms::ALL.len()
            && triggers
                .alarm_arns
                .iter()
                .all(|a| a.contains(":alarm:image-pipeline-e2e-")),
        "the rollback triggers are not the stage's alarms for a minute: {triggers:?}"
    );

    Ok(updated)
}

/// A function's environment changed outside CloudFormation (as root, as in a console fix
/// during an incident): `status --drift`, as the deploying user, exits 1 naming the function
/// and the property path; after the change is undone, it finds nothing.
fn drift_is_found(
    rt: &tokio::runtime::Runtime,
    local: &LocalConfig,
    created: &DeployReport,
) -> Result<()> {
    let target = root_target(local)?;
    let spec = stack::App::image_pipeline();
    let metadata = spec.function("metadata").context("no metadata function")?;
    let name = created
        .outputs
        .get(&metadata.function_name_output())
        .context("no metadata function name in the outputs")?
        .clone();
    let set_drift = |extra: Option<&str>| -> Result<()> {
        rt.block_on(async {
            let (clients, _) = deployer::cloud::aws::connect(&target).await?;
            let config = clients
                .lambda
                .get_function_configuration()
                .function_name(&name)
                .send()
                .await
                .context("reading the metadata function's configuration")?;
            let mut vars = config
                .environment()
                .and_then(|e| e.variables())
                .cloned()
                .unwrap_or_default();
            match extra {
                Some(v) => vars.insert("E2E_DRIFT".into(), v.into()),
                None => vars.remove("E2E_DRIFT"),
            };
            clients
                .lambda
                .update_function_configuration()
                .function_name(&name)
                .environment(
                    aws_sdk_lambda::types::Environment::builder()
                        .set_variables(Some(vars))
                        .build(),
                )
                .send()
                .await
                .context("changing the metadata function's environment as root")?;
            anyhow::Ok(())
        })
    };
    set_drift(Some("changed-in-the-console"))?;
    let args = ["status", "--drift", "--local", "--stage", STAGE];
    let run = finished(xtask(&args)?.stderr(Stderr::Capture).run()?);
    ensure!(
        run.code == 1
            && run.stderr.contains("MetadataFunction")
            && run.stderr.contains("/Environment/Variables/E2E_DRIFT"),
        "status --drift should exit 1 naming MetadataFunction and /Environment/Variables/E2E_DRIFT; exit {}:\n{}",
        run.code,
        run.stderr
    );
    // A plan that would put the drift back says so (`--revert-drift` makes a change set even
    // with nothing else to change, and the emulator ignores its drift-aware mode).
    let plan: DeployReport = ok(&["deploy", "--plan", "--revert-drift"])?;
    ensure!(
        plan.status == Outcome::Planned
            && plan
                .drift_overwritten
                .iter()
                .any(|l| l.contains("MetadataFunction")
                    && l.contains("/Environment/Variables/E2E_DRIFT")),
        "deploy --plan --revert-drift should list the drift it would overwrite: {:?} {:?}",
        plan.status,
        plan.drift_overwritten
    );
    set_drift(None)?;
    let report: deployer::observe::status::StatusReport = ok(&["status", "--drift"])?;
    ensure!(
        report.drift.as_ref().is_some_and(|d| !d.is_drifted()),
        "status --drift still finds drift after it was undone: {:?}",
        report.drift
    );
    eprintln!(
        "e2e    status --drift names a function environment changed outside CloudFormation, deploy --plan lists it as what it would overwrite, and status finds nothing once it is undone"
    );
    Ok(())
}

/// Teardown, then teardown again with nothing to do.
fn teardown_twice() -> Result<()> {
    let gone: TeardownReport = ok(&["teardown"])?;
    ensure!(
        gone.status == Removal::Deleted,
        "teardown: {:?}",
        gone.status
    );
    let again: TeardownReport = ok(&["teardown"])?;
    ensure!(
        again.status == Removal::Absent,
        "second teardown: {:?}",
        again.status
    );

    Ok(())
}

/// The stage's uploads bucket, deleted with its stack, is still gone after `local down` and
/// `local up`: a restart must not bring back what was deleted.
fn a_deleted_bucket_stays_deleted(
    rt: &tokio::runtime::Runtime,
    local: &LocalConfig,
    bucket: &str,
) -> Result<()> {
    for args in [["local", "down"], ["local", "up"]] {
        let all = [args[0], args[1], "--output", "json"];
        let _: serde_json::Value = finished(xtask(&all)?.run()?).report()?;
    }
    ensure!(
        !rt.block_on(image::bucket_exists(local, bucket))?,
        "after local down and local up the deleted bucket {bucket} is back"
    );
    eprintln!("e2e    after local down and local up the deleted bucket {bucket} is still gone");
    Ok(())
}

/// The bootstrap goes last, as an administrator removes it: CI role, stack, bucket; then
/// there is nothing left to remove.
fn bootstrap_removed_twice() -> Result<()> {
    let remove = |args: &[&str]| -> Result<deployer::ops::bootstrap::RemoveReport> {
        finished(
            xtask(args)?
                .env_remove("IMAGE_PIPELINE_LOCAL_ACCESS_KEY_ID")
                .env_remove("IMAGE_PIPELINE_LOCAL_SECRET_ACCESS_KEY")
                .run()?,
        )
        .report()
    };
    let args = ["bootstrap", "--local", "--remove", "--output", "json"];
    let gone = remove(&args)?;
    ensure!(
        gone.removed && gone.ci_stacks_removed.len() == 1 && gone.assets_bucket_removed,
        "bootstrap --remove: {gone:?}"
    );
    let again = remove(&args)?;
    ensure!(
        !again.removed && again.ci_stacks_removed.is_empty() && !again.assets_bucket_removed,
        "a second bootstrap --remove: {again:?}"
    );

    Ok(())
}

/// A command that cannot find a region fails at once, saying where it looked.
fn no_region_fails() -> Result<()> {
    let deploy = ["deploy", "--stage", STAGE, "--output", "json"];
    let no_region = xtask(&deploy)?
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .stderr(Stderr::Capture)
        .run()?;
    ensure!(
        no_region.code == 1 && no_region.stderr.contains("no region given"),
        "deploy with no region anywhere exited {}: {}",
        no_region.code,
        no_region.stderr
    );
    Ok(())
}

fn steps() -> Result<()> {
    let status = fresh_environment()?;
    let local = LocalConfig::for_ports(PORT, LABELS_PORT);
    let rt = crate::target::runtime()?;
    let (user, user_arn) = rt.block_on(deployer_user(&local))?;
    bootstrap_steps(&local, &user)?;
    let _ = DEPLOYER.set(user.clone());
    let created = first_deploy(&rt, &user_arn)?;
    other_stages_refused(&rt, &local, (&user, &user_arn), &created)?;
    let target = root_target(&local)?;
    let deployed = created.deployed(&target)?;
    let refused = rt.block_on(deployer::verify::local_iam::other_pool_refused(
        &local, &deployed,
    ))?;
    eprintln!("e2e    {refused}");
    let expired = rt.block_on(deployer::verify::local_iam::expired_token_refused(
        &local, &deployed,
    ))?;
    eprintln!("e2e    {expired}");
    let isolation = rt.block_on(deployer::verify::isolation::prove_user_isolation(
        &local, &deployed,
    ))?;
    eprintln!(
        "e2e    IAM keeps a user's session to that user: {} reads checked, another user's keys refused (AccessDenied)",
        isolation.rows.len()
    );
    let principals = rt.block_on(deployer::verify::principals::prove_principals(
        &local, &deployed,
    ))?;
    eprintln!("e2e    {principals}");
    redeploy_changes_nothing()?;
    survives_a_kill(&rt, &local, &status, &created)?;
    let updated = change_one_function()?;
    drift_is_found(&rt, &local, &created)?;
    rollback::an_alarm_rolls_back_a_failing_process_function(&rt, &local, &updated)?;
    let report = rt.block_on(deployer::verify::local_iam::prove_enforcement(
        &local,
        STAGE,
        &updated.deployed(&target)?,
    ))?;
    eprintln!("e2e    {report}");

    teardown_twice()?;
    a_deleted_bucket_stays_deleted(&rt, &local, &deployed.bucket)?;
    bootstrap_removed_twice()?;
    no_region_fails()
}
