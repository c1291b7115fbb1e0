//! `cargo xtask bootstrap`: creates or updates the bootstrap stack of an account and region
//! (assets bucket, execution roles, permissions boundaries), and with `--ci github` a role
//! GitHub Actions runs of one repository assume to deploy.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use deployer::ops::bootstrap::{
    BootstrapConfig, BootstrapReport, CiSubject, GithubCi, RemoveReport, bootstrap, remove,
};
use deployer::ops::workflow::{self, WorkflowSpec};
use stack::app::StagePattern;
use stack::app::bootstrap::{DEFAULT_PREVIEW_STAGES, Scope};

use crate::console::Console;
use crate::target::{Output, Where, print_json, runtime, secs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ci {
    /// GitHub Actions, through the account's OIDC provider for token.actions.githubusercontent.com
    Github,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub place: Where,
    /// Stages the preview execution role deploys (every other stage uses the release role)
    #[arg(long, value_name = "PATTERN", default_value = DEFAULT_PREVIEW_STAGES)]
    pub preview_stages: StagePattern,
    /// Also create a CI role that only this CI system's runs can assume
    #[arg(long, value_enum, requires = "repo")]
    pub ci: Option<Ci>,
    /// The repository whose runs may assume the CI role, OWNER/NAME
    #[arg(long, value_name = "OWNER/NAME", requires = "ci")]
    pub repo: Option<String>,
    /// Only runs on this branch may assume the CI role
    #[arg(
        long,
        value_name = "BRANCH",
        conflicts_with = "environment",
        requires = "ci"
    )]
    pub branch: Option<String>,
    /// Only runs in this GitHub environment may assume the CI role
    #[arg(long, value_name = "NAME", requires = "ci")]
    pub environment: Option<String>,
    /// Stages the CI role may deploy: `*`, or the preview stages
    #[arg(long, value_name = "PATTERN", default_value = "*", requires = "ci")]
    pub stages: StagePattern,
    /// Where `--ci github` writes the GitHub Actions workflow for its role (default: a
    /// preview workflow at .github/workflows/image-pipeline-preview.yml for an environment's
    /// role, a release workflow at .github/workflows/image-pipeline-release.yml for a
    /// branch's), replacing what is there
    #[arg(
        long,
        value_name = "PATH",
        requires = "ci",
        conflicts_with = "no_workflow"
    )]
    pub workflow: Option<std::path::PathBuf>,
    /// With `--ci github`, write no workflow file
    #[arg(long, requires = "ci")]
    pub no_workflow: bool,
    /// Remove the bootstrap instead: its CI role stacks, the bootstrap stack and the assets
    /// bucket (refused while any stage is deployed; the OIDC provider stays)
    #[arg(long, conflicts_with = "ci")]
    pub remove: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(a: Args) -> Result<()> {
    let ci = match (a.ci, a.repo) {
        (Some(Ci::Github), Some(repo)) => {
            let subject = match (a.branch, a.environment) {
                (Some(b), None) => CiSubject::Branch(b),
                (None, Some(e)) => CiSubject::Environment(e),
                _ => bail!(
                    "--ci github needs --branch B or --environment E: the role trusts runs of one branch or environment, never every run of the repository"
                ),
            };
            Some(GithubCi {
                repo,
                subject,
                stages: a.stages,
            })
        }
        _ => None,
    };
    let resolved = a.place.resolve()?;
    let cfg = BootstrapConfig {
        target: resolved.target,
        preview: a.preview_stages,
        ci,
        timeout: Duration::from_secs(1800),
    };
    let console = Console::new("bootstrap");
    if a.remove {
        let result = runtime()?.block_on(remove(&cfg, &console));
        console.finish();
        let report = result?;
        match a.output {
            Output::Json => print_json(&report)?,
            Output::Text => println!("{}", removed(&report)),
        }
        return Ok(());
    }
    let result = runtime()?.block_on(bootstrap(&cfg, &console));
    console.finish();
    let report = result?;
    if !a.no_workflow
        && let (Some(ci), Some(made)) = (&cfg.ci, &report.ci)
    {
        let spec = WorkflowSpec {
            role_arn: made.role_arn.clone(),
            region: report.identity.region.clone(),
            subject: ci.subject.clone(),
            stages: ci.stages.clone(),
        };
        let path = a
            .workflow
            .clone()
            .unwrap_or_else(|| workflow::default_path(&ci.subject).into());
        // A line for people, on stderr: stdout holds only the report.
        eprintln!("bootstrap  {}", write_workflow(&spec, &path)?);
    }
    match a.output {
        Output::Json => print_json(&report)?,
        Output::Text => println!("{}", summary(&report)),
    }
    Ok(())
}

/// Writes the workflow for the CI role at `path` (its folders made as needed): what was done,
/// or why no workflow fits the role.
fn write_workflow(spec: &WorkflowSpec, path: &std::path::Path) -> Result<String> {
    let yaml = match workflow::github(spec) {
        Ok(y) => y,
        Err(why) => return Ok(format!("no workflow written: {why}")),
    };
    if std::fs::read_to_string(path).is_ok_and(|old| old == yaml) {
        return Ok(format!("workflow {} is up to date", path.display()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(format!(
        "wrote the workflow {} (commit it; `cargo xtask lint` checks it with actionlint and zizmor)",
        path.display()
    ))
}

fn removed(r: &RemoveReport) -> String {
    let mut s = if r.removed {
        format!("bootstrap stack {} deleted", r.stack)
    } else {
        format!("bootstrap stack {} does not exist", r.stack)
    };
    for ci in &r.ci_stacks_removed {
        s.push_str(&format!("\nCI role stack {ci} deleted"));
    }
    if r.assets_bucket_removed {
        s.push_str(&format!(
            "\nassets bucket {} removed ({} object versions)",
            r.assets_bucket, r.assets_objects_deleted
        ));
    } else {
        s.push_str(&format!("\nno assets bucket {}", r.assets_bucket));
    }
    s.push_str(&format!("\ndone in {}", secs(r.elapsed_ms)));
    s
}

fn summary(r: &BootstrapReport) -> String {
    let mut s = format!(
        "bootstrap stack {} {} in {} (account {}, version {})\n",
        r.stack,
        r.status.as_str(),
        secs(r.elapsed_ms),
        r.identity.account,
        r.bootstrap.version
    );
    if let Some(b) = &r.imported_bucket {
        s.push_str(&format!(
            "imported the existing assets bucket {b} into the stack\n"
        ));
    }
    s.push_str(&format!(
        "  assets bucket       {}\n",
        r.bootstrap.assets_bucket
    ));
    for scope in Scope::ALL {
        let stages = match scope {
            Scope::Release => "every stage".to_string(),
            Scope::Preview => format!("stages {}", r.bootstrap.preview_stages),
        };
        if let (Some(role), Some(boundary)) = (
            r.bootstrap.execution_roles.get(&scope),
            r.bootstrap.boundaries.get(&scope),
        ) {
            s.push_str(&format!(
                "  {scope:<7} ({stages})\n    execution role    {role}\n    boundary          {boundary}\n"
            ));
        }
    }
    if let Some(ci) = &r.ci {
        s.push_str(&format!(
            "CI role {} ({}) for {}, stages {}\n  role-to-assume: {}\n",
            ci.stack,
            ci.status.as_str(),
            ci.subject,
            ci.stages,
            ci.role_arn
        ));
        if ci.provider_created {
            s.push_str(&format!(
                "  created the OIDC provider {}\n",
                ci.provider_arn
            ));
        }
    }
    s.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deployer::ops::bootstrap::CiSubject;

    fn spec(stages: &str) -> WorkflowSpec {
        WorkflowSpec {
            role_arn: "arn:aws:iam::123456789012:role/ImagePipelineCi-0123456789-eu-west-1".into(),
            region: "eu-west-1".into(),
            subject: CiSubject::Environment("preview".into()),
            stages: stages.parse().unwrap_or_else(|e| panic!("{e:?}")),
        }
    }

    #[test]
    fn the_workflow_is_written_once_then_left_alone_and_not_written_for_the_wrong_stages() {
        let dir = deployer::util::workspace_root()
            .join("target")
            .join("test-bootstrap-workflow");
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join(".github").join("workflows").join("preview.yml");
        let said = write_workflow(&spec("pr-*"), &path).unwrap_or_else(|e| panic!("{e}"));
        assert!(said.starts_with("wrote the workflow"), "{said}");
        let written = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Ok(written), workflow::github(&spec("pr-*")));
        let again = write_workflow(&spec("pr-*"), &path).unwrap_or_else(|e| panic!("{e}"));
        assert!(again.ends_with("is up to date"), "{again}");
        let other = dir.join("other.yml");
        let refused = write_workflow(&spec("e2e*"), &other).unwrap_or_else(|e| panic!("{e}"));
        assert!(refused.starts_with("no workflow written"), "{refused}");
        assert!(!other.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
