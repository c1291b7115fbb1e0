//! `cargo xtask lint`: synthesizes the template for every architecture and format and
//! validates it with the tools the AWS world trusts: cfn-lint, checkov and parliament; and the
//! CI workflows `bootstrap --ci github` writes, with actionlint and zizmor (`workflows`). Every
//! finding fails the run. Each tool must also reject a deliberately bad canary, so a tool that
//! quietly stops checking cannot make the run pass.

mod guard;
mod npm;
mod resolve;
mod workflows;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use stack::synth::{Format, SynthOptions, render};
use stack::{App, Architecture, Stage};

use deployer::tools::pyenv::Venv;
use deployer::util::workspace_root;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the synthesized files under test
    #[arg(long, default_value = "target/lint")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    CfnLint,
    Checkov,
    Parliament,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::CfnLint => "cfn-lint",
            Tool::Checkov => "checkov",
            Tool::Parliament => "parliament",
        }
    }

    fn command(self, venv: &Venv, target: &Path) -> Command {
        let mut c = Command::new(venv.bin(self.name()));
        match self {
            // Informational findings count too: the bar is an empty report.
            Tool::CfnLint => c.args(["--non-zero-exit-code", "informational", "--"]),
            Tool::Checkov => c.args([
                "--framework",
                "cloudformation",
                "--output",
                "json",
                "--skip-download",
                "-f",
            ]),
            Tool::Parliament => {
                // Findings accepted for the bootstrap's policies, each with its reason.
                if target.ends_with("bootstrap/policies") || target.ends_with("canaries/policies") {
                    c.arg("--config").arg(
                        workspace_root()
                            .join("tools")
                            .join("parliament-bootstrap.yaml"),
                    );
                }
                c.arg("--directory")
            }
        };
        c.arg(target);
        c
    }

    /// Runs the tool on `target`. Returns its report when it found anything (a non-zero exit
    /// or any output on stdout), `None` when it found nothing.
    fn findings(self, venv: &Venv, target: &Path) -> Result<Option<String>> {
        let out = self
            .command(venv, target)
            .output()
            .with_context(|| format!("cannot start {}", self.name()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let clean = match self {
            Tool::Checkov => out.status.success() && checkov_clean(&stdout),
            Tool::CfnLint => out.status.success() && stdout.trim().is_empty(),
            // parliament exits 1 on any finding; only its findings decide.
            Tool::Parliament => {
                let left = parliament_findings(&stdout);
                let known_only = !stdout.trim().is_empty() && left.is_empty();
                (out.status.success() && stdout.trim().is_empty())
                    || (known_only && out.stderr.is_empty())
            }
        };
        if clean {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Ok(Some(format!("{stdout}{stderr}").trim().to_string()))
    }
}

/// Actions AWS added after parliament 1.6.4's action list was made, which it reports as
/// unknown: CloudFormation's `DescribeEvents` (the errors of a failed pre-deployment
/// validation) dates from November 2025. Any other unknown action is still a finding.
const NEWER_THAN_PARLIAMENT: &[&str] = &["cloudformation:DescribeEvents"];

/// parliament's finding lines, without the "unknown action" findings about
/// [`NEWER_THAN_PARLIAMENT`].
fn parliament_findings(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !NEWER_THAN_PARLIAMENT.iter().any(|a| {
                l.starts_with("LOW - Unknown action - ")
                    && l.contains(&format!("Unknown action {a} - "))
                    && l.contains(&format!("'string': '{a}'"))
            })
        })
        .collect()
}

pub fn run(a: Args) -> Result<()> {
    let venv = Venv::ensure("lint", &crate::console::Console::new("lint"))?;
    let root = workspace_root();
    let canaries = root.join("xtask").join("canaries");
    for (tool, canary) in [
        (Tool::CfnLint, canaries.join("template.yaml")),
        (Tool::Checkov, canaries.join("template.yaml")),
        (Tool::Parliament, canaries.join("policies")),
    ] {
        if tool.findings(&venv, &canary)?.is_none() {
            bail!(
                "{} found nothing wrong in the deliberately bad {}: the tool is not checking, so its verdict on the stack cannot be trusted",
                tool.name(),
                canary.display()
            );
        }
    }
    eprintln!("lint: each validator rejects its canary");

    let app = App::image_pipeline();
    let out = root.join(&a.out);
    let mut failed = Vec::new();
    for arch in Architecture::ALL {
        for format in [Format::Yaml, Format::Json] {
            let opts = SynthOptions {
                stage: Stage::default(),
                architecture: arch,
            };
            let synthesis = render(&app, &opts, format)?;
            let dir = out.join(format!("{arch}-{}", format.extension()));
            crate::synth::write(&synthesis, &dir)?;
            let template = dir.join(format!("template.{}", format.extension()));
            let mut checks = vec![(Tool::CfnLint, template.clone())];
            // Checkov and the policies do not depend on the file format: check them once.
            if format == Format::Yaml {
                checks.push((Tool::Checkov, template));
                checks.push((Tool::Parliament, dir.join("policies")));
            }
            for (tool, target) in checks {
                failed.extend(check(&venv, tool, &target)?);
            }
        }
    }
    // The bootstrap stack and the deploying identity's policies, for an example account.
    let dir = out.join("bootstrap");
    let bootstrap_files = write_bootstrap(&dir)?;
    for (tool, target) in [
        (Tool::CfnLint, bootstrap_files.clone()),
        (Tool::Checkov, bootstrap_files),
        (Tool::Parliament, dir.join("policies")),
    ] {
        failed.extend(check(&venv, tool, &target)?);
    }
    failed.extend(workflows::check(&venv, &out)?);
    failed.extend(control_tower(&out)?);
    if !failed.is_empty() {
        bail!("validation failed: {}", failed.join(", "));
    }
    println!(
        "lint: cfn-lint, checkov and parliament report nothing for arm64, x86_64 and the bootstrap; actionlint and zizmor nothing for the CI workflows; Control Tower's rules decide what the README's table says"
    );
    Ok(())
}

/// Control Tower's proactive controls on the stack ([`guard`]): prints each one's verdicts;
/// fails when they differ from the README's table, or when the rules pass the canary.
fn control_tower(out: &Path) -> Result<Option<String>> {
    let root = workspace_root();
    let started = Instant::now();
    let guard = guard::Guard::install()?;
    let dir = out.join("control-tower");
    let canary = root.join("xtask").join("canaries").join("template.yaml");
    if !guard.rejects(&canary, &dir)? {
        bail!(
            "Control Tower's rules found nothing wrong in the deliberately bad {}, as a file or as hooks: they are not checking",
            canary.display()
        );
    }
    let template = out
        .join(format!("{}-json", Architecture::Arm64))
        .join("template.json");
    let body: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&template)?)?;
    let verdicts = guard.judge(&template, &guard::stage_settings(&body), &dir)?;
    eprintln!(
        "{:<19} {:<8} {:<8} {:<8}",
        "control", "template", "deploy", "options"
    );
    for (control, row) in &verdicts.0 {
        eprintln!(
            "{control:<19} {:<8} {:<8} {:<8}",
            row[0].word(),
            row[1].word(),
            row[2].word()
        );
    }
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let differences = guard::differences(&verdicts, &readme);
    eprintln!(
        "{:<10} {} {} Control Tower rules apply ({:.1}s)",
        "cfn-guard",
        if differences.is_empty() {
            "ok  "
        } else {
            "FAIL"
        },
        verdicts.0.len(),
        started.elapsed().as_secs_f64()
    );
    if differences.is_empty() {
        return Ok(None);
    }
    eprintln!("{}\n", differences.join("\n"));
    Ok(Some(
        "cfn-guard (Control Tower's rules) against the README's table".to_string(),
    ))
}

/// Runs `tool` on `target` and prints its verdict; what failed, if it did.
fn check(venv: &Venv, tool: Tool, target: &Path) -> Result<Option<String>> {
    let root = workspace_root();
    let started = Instant::now();
    let report = tool.findings(venv, target)?;
    let rel = target.strip_prefix(&root).unwrap_or(target);
    eprintln!(
        "{:<10} {} {} ({:.1}s)",
        tool.name(),
        if report.is_none() { "ok  " } else { "FAIL" },
        rel.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(report.map(|report| {
        eprintln!("{report}\n");
        format!("{} on {}", tool.name(), rel.display())
    }))
}

/// Writes the bootstrap template (`template.yaml`) and the execution, boundary and deploying
/// identity policies of both scopes (`policies/`) under `dir`, for an example account and
/// region; returns the template's path.
fn write_bootstrap(dir: &Path) -> Result<std::path::PathBuf> {
    use deployer::ops::permissions::{boundary_policy, deployer_policy, execution_policy};
    use stack::app::bootstrap::Scope;
    const ACCOUNT: &str = "123456789012";
    const REGION: &str = "eu-west-1";
    let spec = deployer::ops::bootstrap::Spec {
        account: ACCOUNT.into(),
        region: REGION.into(),
        preview: stack::app::StagePattern::parse(stack::app::bootstrap::DEFAULT_PREVIEW_STAGES)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let policies = dir.join("policies");
    if policies.exists() {
        std::fs::remove_dir_all(&policies)?;
    }
    std::fs::create_dir_all(&policies)?;
    let template = dir.join("template.yaml");
    std::fs::write(
        &template,
        deployer::ops::bootstrap::template(&spec).to_yaml()?,
    )?;
    for scope in Scope::ALL {
        let stages = spec.stages(scope);
        for (name, doc) in [
            (
                "execution",
                execution_policy(ACCOUNT, REGION, scope, &stages),
            ),
            ("boundary", boundary_policy(ACCOUNT, REGION, &stages)),
            ("deployer", deployer_policy(ACCOUNT, REGION, &stages)),
        ] {
            std::fs::write(
                policies.join(format!("{name}-{scope}.json")),
                serde_json::to_string_pretty(&doc)?,
            )?;
        }
    }
    Ok(template)
}

/// Checkov's JSON report is clean when it parsed the file, ran checks, and none failed.
/// (A file it cannot parse yields zero failures too, which must not count as a pass.)
fn checkov_clean(report: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(report) else {
        return false;
    };
    let summary = &v["summary"];
    summary["failed"] == 0 && summary["parsing_errors"] == 0 && summary["passed"].as_u64() > Some(0)
}

#[cfg(test)]
mod tests {
    use super::parliament_findings;

    #[test]
    fn only_the_listed_new_actions_pass_as_unknown() {
        let new = "LOW - Unknown action -  - Unknown action cloudformation:DescribeEvents - {'string': 'cloudformation:DescribeEvents', 'line': 15}";
        let typo = "LOW - Unknown action -  - Unknown action cloudformation:DescribeEvent - {'string': 'cloudformation:DescribeEvent', 'line': 15}";
        let other = "MEDIUM - Privilege escalation - cloudformation:DescribeEvents";
        assert!(parliament_findings(new).is_empty());
        assert_eq!(parliament_findings(typo), vec![typo]);
        assert_eq!(parliament_findings(other), vec![other]);
        assert_eq!(parliament_findings(&format!("{new}\n{typo}\n")), vec![typo]);
    }
}
