//! `cargo xtask bootstrap`: creates or updates the bootstrap stack of an account and region
//! (assets bucket, execution roles, permissions boundaries), and with `--ci github` a role
//! GitHub Actions runs of one repository assume to deploy.

use std::time::Duration;

use anyhow::{Result, bail};
use deployer::ops::bootstrap::{
    BootstrapConfig, BootstrapReport, CiSubject, GithubCi, RemoveReport, bootstrap, remove,
};
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
    match a.output {
        Output::Json => print_json(&report)?,
        Output::Text => println!("{}", summary(&report)),
    }
    Ok(())
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
