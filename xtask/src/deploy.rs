//! `cargo xtask deploy`: builds, uploads and deploys the stack through a change set, with live
//! progress on stderr and the result on stdout.

use std::time::Duration;

use anyhow::Result;
use deployer::cloud::cfn::Outcome;
use deployer::cloud::cfn::{Change, ChangeAction, Replacement};
use deployer::cloud::quotas::QuotaSource;
use deployer::ops::deploy::{DeployConfig, DeployReport, StageSettings, deploy};
use stack::{Architecture, Stage};

use crate::console::Console;
use crate::target::{Output, Where, print_json, runtime, secs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub place: Where,
    /// Stage: names the stack (image-pipeline-STAGE), so stages live side by side
    #[arg(long, default_value = "dev")]
    pub stage: Stage,
    /// Lambda architecture on AWS (the local environment always runs the host's)
    #[arg(long, default_value = "arm64")]
    pub arch: Architecture,
    /// Show what would change, then stop (the change set is deleted)
    #[arg(long)]
    pub plan: bool,
    /// Execute a change that broadens a permission (a statement added to a role, a resource
    /// policy or a Lambda permission that grants more) without asking. Without it, such a
    /// deploy asks on a terminal and is refused elsewhere; narrowing never needs approval
    #[arg(long)]
    pub approve_broadening: bool,
    /// Make a drift-aware change set: besides the template's changes, put back every
    /// property changed outside CloudFormation (with --plan, list every drifted property)
    #[arg(long)]
    pub revert_drift: bool,
    /// Minutes CloudFormation watches the stage's alarms (dead letters, the oldest message,
    /// process errors) after an update; one in ALARM rolls the update back. 0: off. Default:
    /// 10 for the stage prod, 0 for the others
    #[arg(long, value_name = "MINUTES", value_parser = clap::value_parser!(u32).range(0..=180))]
    pub rollback_minutes: Option<u32>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Seconds to wait for another deployment of the same stack to finish
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub wait: u64,
    /// Images one user may upload per UTC day, direct and presigned together; above it the
    /// API answers 429. Default: as deployed, 1000 for a new stage
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(stack::app::MAX_UPLOADS_PER_DAY)))]
    pub uploads_per_user_per_day: Option<u32>,
    /// Whether people may sign themselves up (on), or only `user add` adds them (off).
    /// Default: as deployed, off for a new stage
    #[arg(long, value_name = "on|off")]
    pub self_sign_up: Option<Switch>,
    /// Where the stage's alarms (dead letters, the oldest message's age, process errors)
    /// notify: an SNS topic ARN (it must let CloudWatch publish), an email address (through a
    /// topic the stack makes; AWS asks the address to confirm), or `none`. Default: as
    /// deployed, none for a new stage
    #[arg(long, value_name = "ARN|EMAIL|none")]
    pub alarms_to: Option<deployer::ops::deploy::AlarmsTo>,
    /// Seconds the work queue's oldest message may wait before its alarm fires. Default: as
    /// deployed, 3600 for a new stage
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(60..=i64::from(stack::app::QUEUE_RETENTION_SECONDS)))]
    pub oldest_message_alarm_seconds: Option<u32>,
    /// Days the function and API access logs are kept (1, 3, 5, 7, 14, 30, 60, 90, 120, 150,
    /// 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653). Default: as
    /// deployed, 30 for a new stage; Control Tower's CT.CLOUDWATCH.PR.2 wants 365 or more
    #[arg(long, value_name = "DAYS", value_parser = deployer::ops::deploy::parse_log_retention)]
    pub log_retention_days: Option<u32>,
    /// A customer managed KMS key (ARN) that encrypts the uploads bucket and the log groups,
    /// or `none` for the services' own keys. Its key policy must let S3 and CloudWatch Logs
    /// use it. Default: as deployed, none for a new stage
    #[arg(long, value_name = "ARN|none", value_parser = deployer::ops::deploy::parse_kms_key)]
    pub kms_key: Option<String>,
    /// A bucket of yours (same account and region) that receives the uploads bucket's server
    /// access logs, or `none`. Its policy must let logging.s3.amazonaws.com write. Default: as
    /// deployed, none for a new stage
    #[arg(long, value_name = "BUCKET|none", value_parser = deployer::ops::deploy::parse_access_log_bucket)]
    pub access_log_bucket: Option<String>,
}

/// A stage setting that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Args {
    /// The stage settings the flags give; the rest stay as deployed.
    pub fn settings(&self) -> StageSettings {
        StageSettings {
            uploads_per_user_per_day: self.uploads_per_user_per_day,
            self_sign_up: self.self_sign_up.map(|s| s == Switch::On),
            alarms_to: self.alarms_to.clone(),
            oldest_message_alarm_seconds: self.oldest_message_alarm_seconds,
            log_retention_days: self.log_retention_days,
            kms_key: self.kms_key.clone(),
            access_log_bucket: self.access_log_bucket.clone(),
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let resolved = a.place.resolve()?;
    // curl must trust the local environment's certificate, as every other client does.
    let cacert = a.place.local.then(|| a.place.ports.config().tls().cert);
    let settings = a.settings();
    let labels_quota = labels_quota(&a.place, resolved.labels_rate)?;
    let cfg = DeployConfig {
        labels_quota,
        auto_bootstrap: may_bootstrap(&resolved.target),
        target: resolved.target,
        stage: a.stage,
        arch: a.arch,
        plan: a.plan,
        approve_broadening: a.approve_broadening,
        revert_drift: a.revert_drift,
        rollback_minutes: a.rollback_minutes,
        rekognition_endpoint: resolved.labels_endpoint,
        wait_for_other: Duration::from_secs(a.wait),
        timeout: Duration::from_secs(3600),
        rebuild: Vec::new(),
        settings,
    };
    let console = Console::new("deploy");
    let result = runtime()?.block_on(deploy(&cfg, &console));
    console.finish();
    let report = result?;
    match a.output {
        Output::Json => print_json(&report)?,
        Output::Text => println!("{}", summary(&report, cacert.as_deref())),
    }
    Ok(())
}

/// The DetectLabels quota the stage is paced for when this machine knows it: `--labels-tps`,
/// else the local label service's rate. `None` leaves it to Service Quotas on AWS, and to the
/// deployed value locally.
pub fn labels_quota(place: &Where, local_rate: Option<u32>) -> Result<Option<(u32, QuotaSource)>> {
    match place.ports.labels_tps {
        Some(0) if !place.local => {
            anyhow::bail!(
                "--labels-tps must be at least 1: it is the DetectLabels quota the stage is paced for"
            )
        }
        Some(q) if q > 0 => Ok(Some((q, QuotaSource::Flag))),
        _ => Ok(local_rate.map(|q| (q, QuotaSource::LocalService))),
    }
}

/// A deploy bootstraps the account itself only as the local environment's root: there is no
/// administrator to ask.
pub fn may_bootstrap(target: &deployer::cloud::aws::Target) -> bool {
    matches!(target, deployer::cloud::aws::Target::Local { credentials, .. } if credentials.is_root())
}

fn change_line(c: &Change) -> String {
    let mark = match c.action {
        ChangeAction::Add => "+",
        ChangeAction::Remove => "-",
        ChangeAction::Modify => "~",
        _ => "?",
    };
    let mut s = format!("  {mark} {:<32} {}", c.logical_id, c.resource_type);
    match c.replacement {
        Some(Replacement::True) => s.push_str("  (replaced)"),
        Some(Replacement::Conditional) => s.push_str("  (may be replaced)"),
        _ => {}
    }
    if c.action == ChangeAction::Modify && !c.direct {
        s.push_str("  (re-evaluated)");
    }
    s
}

/// The stage's settings after the deploy, a line each.
fn settings_lines(st: &deployer::ops::deploy::Settings) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "settings: {} uploads per user per day, self sign-up {}\n",
        st.uploads_per_user_per_day,
        if st.self_sign_up { "on" } else { "off" }
    ));
    s.push_str(&format!(
        "alarms: notify {}; the oldest message may wait {} s\n",
        st.alarms_to, st.oldest_message_alarm_seconds
    ));
    s.push_str(&format!(
        "logs: kept {} days; encrypted with {}; bucket access logs {}\n",
        st.log_retention_days,
        st.kms_key.as_deref().unwrap_or("the services' own keys"),
        st.access_log_bucket
            .as_deref()
            .map_or("off".to_string(), |b| format!("to {b}"))
    ));
    let pace = &st.labels;
    s.push_str(&format!(
        "pace: DetectLabels quota {}/s ({}): at most {} batches at once, one call each every {} ms (at most {:.1}/s)\n",
        pace.quota_tps,
        pace.source.describe(),
        pace.max_concurrency,
        pace.interval_ms,
        pace.calls_per_second()
    ));
    s
}

/// The security table: each statement added (+) or removed (-), broadening ones marked.
fn security_lines(changes: &[deployer::ops::security::SecurityChange]) -> String {
    if changes.is_empty() {
        return String::new();
    }
    let wide = changes.iter().filter(|c| c.broadens).count();
    let mut s = format!(
        "permissions: {} statement(s) added or removed, {wide} broadening\n",
        changes.len()
    );
    for c in changes {
        let mark = if c.broadens { "BROADENS" } else { "" };
        s.push_str(&format!("  {mark:<9}{}\n", c.line()));
    }
    s
}

/// The report for a person; `cacert` is the certificate the API's curl examples must trust.
pub fn summary(r: &DeployReport, cacert: Option<&std::path::Path>) -> String {
    let mut s = String::new();
    let count = |action: ChangeAction| r.changes.iter().filter(|c| c.action == action).count();
    match r.status {
        Outcome::NoChanges => s.push_str(&format!(
            "no changes: stack {} is up to date ({})\n",
            r.stack,
            secs(r.timings.total)
        )),
        Outcome::Planned => s.push_str(&format!(
            "plan for stack {}: {} to add, {} to modify, {} to remove (nothing was changed)\n",
            r.stack,
            count(ChangeAction::Add),
            count(ChangeAction::Modify),
            count(ChangeAction::Remove)
        )),
        Outcome::Created | Outcome::Updated => s.push_str(&format!(
            "stack {} {} in {} (the stack operation; build {}, upload {}, {} in all): {} added, {} modified, {} removed\n",
            r.stack,
            r.status.as_str(),
            secs(r.timings.change_set + r.timings.execute.unwrap_or(0)),
            secs(r.timings.build),
            secs(r.timings.assets),
            secs(r.timings.total),
            count(ChangeAction::Add),
            count(ChangeAction::Modify),
            count(ChangeAction::Remove)
        )),
    }
    s.push_str(&format!(
        "as the {} execution role {}\n",
        r.scope, r.execution_role
    ));
    for c in &r.changes {
        s.push_str(&change_line(c));
        s.push('\n');
    }
    if let Some(rb) = &r.rollback {
        s.push_str(&format!(
            "rollback: {} alarm(s) watched for {} minutes after the update\n",
            rb.alarm_arns.len(),
            rb.minutes
        ));
    }
    s.push_str(&security_lines(&r.security));
    if !r.drift_overwritten.is_empty() {
        s.push_str("drift this deploy would overwrite (changes made outside CloudFormation):\n");
        for line in &r.drift_overwritten {
            s.push_str(&format!("  {line}\n"));
        }
    }
    s.push_str(&settings_lines(&r.settings));
    if r.status == Outcome::Planned {
        return s.trim_end().to_string();
    }
    if !r.outputs.is_empty() {
        s.push_str("outputs:\n");
        for (k, v) in &r.outputs {
            s.push_str(&format!("  {k:<24} {v}\n"));
        }
    }
    if let Some(api) = &r.api_url {
        let curl = match cacert {
            Some(c) => format!("curl -sS --cacert '{}'", c.display()),
            None => "curl -sS".to_string(),
        };
        s.push_str(&format!("API: {api}\n"));
        s.push_str(&format!("gallery: {api}/\n"));
        if let Some(c) = cacert {
            s.push_str(&format!(
                "  (a browser trusts it once the local CA {} is imported, or after a warning)\n",
                c.display()
            ));
        }
        let place = match cacert {
            Some(_) => "--local".to_string(),
            None => format!("--region {}", r.identity.region),
        };
        let place = match r.stage.as_str() {
            "dev" => place,
            stage => format!("{place} --stage {stage}"),
        };
        s.push_str(&format!(
            "try it (as a user of the stage: `IMAGE_PIPELINE_PASSWORD=… cargo xtask user add EMAIL {place}` adds one):\n"
        ));
        let auth = format!("-H \"Authorization: Bearer $(cargo xtask user token EMAIL {place})\"");
        // The photograph the smoke test uploads, by its real path: it is in every checkout.
        let photo = deployer::util::workspace_root()
            .join("deployer")
            .join("assets")
            .join("smoke-test.png");
        s.push_str(&format!(
            "  {curl} {auth} -X POST --data-binary '@{}' -H 'content-type: image/png' '{api}/upload'\n",
            photo.display()
        ));
        s.push_str(&format!("  {curl} {auth} '{api}/metadata/IMAGE_ID'\n"));
    }
    s.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deployer::cloud::aws::Identity;
    use deployer::ops::deploy::Timings;

    fn report() -> DeployReport {
        DeployReport {
            stack: "image-pipeline-dev".into(),
            stage: "dev".into(),
            target: "the local environment".into(),
            identity: Identity {
                account: "000000000000".into(),
                arn: "arn:aws:iam::000000000000:root".into(),
                region: "us-east-1".into(),
                partition: "aws".into(),
            },
            architecture: "x86_64".into(),
            status: Outcome::Created,
            changes: Vec::new(),
            security: Vec::new(),
            rollback: None,
            drift_overwritten: Vec::new(),
            artifacts: Vec::new(),
            assets_bucket: stack::app::assets_bucket_name("000000000000", "us-east-1"),
            scope: stack::app::bootstrap::Scope::Release,
            execution_role: "arn:aws:iam::000000000000:role/ImagePipelineExec-release-us-east-1"
                .into(),
            permissions_boundary:
                "arn:aws:iam::000000000000:policy/ImagePipelineBoundary-release-us-east-1".into(),
            outputs: Default::default(),
            settings: deployer::ops::deploy::Settings {
                uploads_per_user_per_day: 1000,
                self_sign_up: false,
                labels: deployer::ops::deploy::LabelsPace::new(20, QuotaSource::Applied),
                alarms_to: deployer::ops::deploy::AlarmsTo::Nobody,
                oldest_message_alarm_seconds: 3600,
                log_retention_days: 30,
                kms_key: None,
                access_log_bucket: None,
            },
            api_url: Some("https://127.0.0.1:4566/_aws/execute-api/abc/$default".into()),
            timings: Timings {
                preflight: 100,
                build: 316_000,
                assets: 300,
                change_set: 400,
                execute: Some(600),
                verify: None,
                total: 317_400,
            },
            notes: Vec::new(),
        }
    }

    #[test]
    fn the_stack_operation_s_time_comes_first_and_the_build_s_beside_it() {
        let s = summary(&report(), None);
        let first = s.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(
                "stack image-pipeline-dev created in 1.0 s (the stack operation; build 316.0 s, upload 0.3 s, 317.4 s in all)"
            ),
            "{first}"
        );
    }

    #[test]
    fn the_curl_example_uploads_a_file_that_exists() {
        let s = summary(&report(), None);
        let line = s
            .lines()
            .find(|l| l.contains("--data-binary"))
            .unwrap_or_default();
        let path = line
            .split("--data-binary '@")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap_or_default();
        assert!(std::path::Path::new(path).is_file(), "{line}");
        assert!(line.contains("content-type: image/png"), "{line}");
        assert!(
            line.contains(
                "-H \"Authorization: Bearer $(cargo xtask user token EMAIL --region us-east-1)\""
            ),
            "{line}"
        );
    }

    #[test]
    fn the_summary_names_the_gallery() {
        let mut r = report();
        r.api_url = Some("https://abc.execute-api.eu-west-1.amazonaws.com".into());
        let s = summary(&r, None);
        assert!(
            s.lines()
                .any(|l| l == "gallery: https://abc.execute-api.eu-west-1.amazonaws.com/"),
            "{s}"
        );
    }
}
