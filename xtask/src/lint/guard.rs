//! AWS Control Tower's proactive controls, as the cfn-guard rules AWS publishes for them (the
//! npm package `@cdklabs/cdk-validator-cfnguard` bundles the rules and cfn-guard; pinned in
//! `tools/cfn-guard/`). Each rule runs in both of its forms:
//!
//! - on the synthesized template, as a file (its template form);
//! - on each resource as a CloudFormation hook receives it, which is how Control Tower runs
//!   them in an account: for the default stage, and for a stage with the compliance options
//!   (`--log-retention-days 365`, `--kms-key`, `--access-log-bucket`).
//!
//! The README's table "Control Tower's proactive controls" must say what each rule that
//! applies to the stack decides, and why where it fails; any difference fails the lint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::resolve::{self, HookInput};

/// A rule's verdict on one set of inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Nothing it reads is in the stack.
    Skips,
    Passes,
    Fails,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Skips => "skips",
            Verdict::Passes => "passes",
            Verdict::Fails => "fails",
        }
    }
}

/// What each control decides on the stack: on the template, on deploy of a default stage,
/// and on deploy with the compliance options. Keyed by control id (`CT.S3.PR.8`).
#[derive(Debug, Default, PartialEq)]
pub struct Verdicts(pub BTreeMap<String, [Verdict; 3]>);

/// One data file's report: the rule names that passed, and those that failed.
type FileReport = (PathBuf, Vec<String>, Vec<String>);

/// The installed package: its cfn-guard binary and the Control Tower rules folder.
pub struct Guard {
    binary: PathBuf,
    rules: PathBuf,
    /// Control id of each rule name (a rule file's `rule NAME when ...`).
    controls: BTreeMap<String, String>,
}

impl Guard {
    pub fn install() -> Result<Self> {
        let modules = super::npm::install("cfn-guard")?;
        let package = modules.join("@cdklabs").join("cdk-validator-cfnguard");
        let (os, arch) = match (std::env::consts::OS, std::env::consts::ARCH) {
            ("linux", a @ ("x86_64" | "aarch64")) => ("ubuntu", a),
            ("macos", a @ ("x86_64" | "aarch64")) => ("macos", a),
            (os, arch) => bail!("the cfn-guard package has no binary for {os} on {arch}"),
        };
        let binary = package.join("bin").join(os).join(arch).join("cfn-guard");
        let rules = package
            .join("rules")
            .join("control-tower")
            .join("cfn-guard");
        let controls = controls(&rules)?;
        if controls.is_empty() {
            bail!("no Control Tower rules under {}", rules.display());
        }
        Ok(Self {
            binary,
            rules,
            controls,
        })
    }

    /// Runs every rule on the data files; per file, the rule names that passed and failed.
    fn validate(&self, data: &[PathBuf]) -> Result<Vec<FileReport>> {
        let mut c = Command::new(&self.binary);
        c.arg("validate").arg("--rules").arg(&self.rules);
        for d in data {
            c.arg("--data").arg(d);
        }
        c.args([
            "--structured",
            "--show-summary",
            "none",
            "--output-format",
            "json",
        ]);
        let out = c
            .output()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        // 0: all passed; 19: some rule failed. Anything else: it could not judge.
        if !matches!(out.status.code(), Some(0 | 19)) {
            bail!(
                "cfn-guard could not run ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let report: Value = serde_json::from_slice(&out.stdout).context("cfn-guard's report")?;
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().or_else(|| r["Rule"]["name"].as_str()))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let files = report
            .as_array()
            .map(|files| {
                files
                    .iter()
                    .map(|f| {
                        (
                            PathBuf::from(f["name"].as_str().unwrap_or_default()),
                            names(&f["compliant"]),
                            names(&f["not_compliant"]),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if files.len() != data.len() {
            bail!(
                "cfn-guard reported on {} of {} files",
                files.len(),
                data.len()
            );
        }
        Ok(files)
    }

    /// Each control's verdict over the files: fails if it failed on any, passes if it passed
    /// on some, else skips.
    fn verdicts(&self, data: &[PathBuf]) -> Result<BTreeMap<String, Verdict>> {
        let mut v: BTreeMap<String, Verdict> = BTreeMap::new();
        for (_, passed, failed) in self.validate(data)? {
            for (names, verdict) in [(passed, Verdict::Passes), (failed, Verdict::Fails)] {
                for name in names {
                    let control = self.controls.get(&name).cloned().unwrap_or(name);
                    let e = v.entry(control).or_insert(Verdict::Skips);
                    *e = (*e).max(verdict);
                }
            }
        }
        Ok(v)
    }

    /// What each control decides on `template` (a file) and on its resources as hooks see
    /// them with each of `settings`, the hook documents written under `dir`.
    pub fn judge(
        &self,
        template: &Path,
        settings: &[BTreeMap<String, String>; 2],
        dir: &Path,
    ) -> Result<Verdicts> {
        let body: Value = serde_json::from_str(&std::fs::read_to_string(template)?)
            .with_context(|| format!("{} is not JSON", template.display()))?;
        let mut columns = vec![self.verdicts(&[template.to_path_buf()])?];
        for (i, given) in settings.iter().enumerate() {
            let inputs = resolve::hook_inputs(&body, given)?;
            let files = write_hook_documents(&inputs, &dir.join(format!("hook-{i}")))?;
            columns.push(self.verdicts(&files)?);
        }
        let mut all = BTreeMap::new();
        for (i, column) in columns.iter().enumerate() {
            for (control, verdict) in column {
                let row = all.entry(control.clone()).or_insert([Verdict::Skips; 3]);
                row[i] = *verdict;
            }
        }
        all.retain(|_, row: &mut [Verdict; 3]| row.iter().any(|v| *v != Verdict::Skips));
        Ok(Verdicts(all))
    }

    /// Whether any rule fails on the (deliberately bad) template, in either form.
    pub fn rejects(&self, template: &Path, dir: &Path) -> Result<bool> {
        let file = self.verdicts(&[template.to_path_buf()])?;
        let text = std::fs::read_to_string(template)?;
        let body: Value = serde_yaml::from_str(&text)?;
        let files = write_hook_documents(
            &resolve::hook_inputs(&body, &BTreeMap::new())?,
            &dir.join("canary-hook"),
        )?;
        let hook = self.verdicts(&files)?;
        let fails = |v: &BTreeMap<String, Verdict>| v.values().any(|v| *v == Verdict::Fails);
        Ok(fails(&file) && fails(&hook))
    }
}

/// The parameter values of the two stages judged as hooks see them: the default stage (the
/// template's defaults, with example values where a deploy always gives one), and the same
/// with the compliance options on.
pub fn stage_settings(template: &Value) -> [BTreeMap<String, String>; 2] {
    let mut default = BTreeMap::new();
    for (name, p) in template["Parameters"].as_object().into_iter().flatten() {
        if p.get("Default").is_none() {
            let example = if name == stack::synth::PARAM_PERMISSIONS_BOUNDARY {
                format!(
                    "arn:aws:iam::{}:policy/ImagePipelineBoundary-preview-{}",
                    resolve::ACCOUNT,
                    resolve::REGION
                )
            } else {
                "example".to_string()
            };
            default.insert(name.clone(), example);
        }
    }
    let mut options = default.clone();
    for (name, value) in [
        (stack::synth::PARAM_LOG_RETENTION, "365".to_string()),
        (
            stack::synth::PARAM_KMS_KEY,
            format!(
                "arn:aws:kms:{}:{}:key/0123abcd-4567-89ab-cdef-0123456789ab",
                resolve::REGION,
                resolve::ACCOUNT
            ),
        ),
        (
            stack::synth::PARAM_ACCESS_LOG_BUCKET,
            "example-access-logs".to_string(),
        ),
    ] {
        options.insert(name.to_string(), value);
    }
    [default, options]
}

/// Control id of each rule name, from the rule files (`ct-s3-pr-8.guard` holds the rules of
/// `CT.S3.PR.8`).
fn controls(rules: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for service in std::fs::read_dir(rules).with_context(|| format!("{}", rules.display()))? {
        let service = service?.path();
        if !service.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&service)? {
            let file = file?.path();
            let Some(stem) = file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".guard"))
            else {
                continue;
            };
            let control = stem.to_uppercase().replace('-', ".");
            for line in std::fs::read_to_string(&file)?.lines() {
                if let Some(rest) = line.strip_prefix("rule ")
                    && let Some(name) = rest.split_whitespace().next()
                    && !name.contains('(')
                {
                    out.insert(name.to_string(), control.clone());
                }
            }
        }
    }
    Ok(out)
}

fn write_hook_documents(inputs: &[HookInput], dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for i in inputs {
        let path = dir.join(format!("{}.json", i.logical_id));
        std::fs::write(&path, serde_json::to_string_pretty(&i.document())?)?;
        files.push(path);
    }
    Ok(files)
}

/// The README's table: control id, what it requires, the three verdicts as words, the reason.
pub fn readme_table(readme: &str) -> BTreeMap<String, (Vec<String>, String)> {
    let Some(start) = readme.find("### Control Tower's proactive controls") else {
        return BTreeMap::new();
    };
    let section = &readme[start..];
    let end = section[4..].find("\n#").map_or(section.len(), |i| i + 4);
    section[..end]
        .lines()
        .filter_map(|l| {
            let cells: Vec<String> = l
                .trim()
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect();
            let [control, _requires, template, default, options, why] = cells.as_slice() else {
                return None;
            };
            control.starts_with("CT.").then(|| {
                (
                    control.clone(),
                    (
                        vec![template.clone(), default.clone(), options.clone()],
                        why.clone(),
                    ),
                )
            })
        })
        .collect()
}

/// Where the README's table and the verdicts differ, a line each.
pub fn differences(verdicts: &Verdicts, readme: &str) -> Vec<String> {
    let table = readme_table(readme);
    let mut out = Vec::new();
    for (control, row) in &verdicts.0 {
        let words: Vec<String> = row.iter().map(|v| v.word().to_string()).collect();
        match table.get(control) {
            None => out.push(format!(
                "{control} ({}) has no row in the README's table",
                words.join(", ")
            )),
            Some((said, _)) if *said != words => out.push(format!(
                "{control}: the README says {}, the rules say {}",
                said.join(", "),
                words.join(", ")
            )),
            Some((_, why)) if row.contains(&Verdict::Fails) && why.is_empty() => {
                out.push(format!("{control} fails, and the README gives no reason"))
            }
            Some(_) => {}
        }
    }
    for control in table.keys() {
        if !verdicts.0.contains_key(control) {
            out.push(format!(
                "{control} is in the README's table, but no rule of it reads anything in the stack"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "\
# x

### Control Tower's proactive controls

| Control | Requires | Template | Deploy | With options | Why |
| --- | --- | --- | --- | --- | --- |
| `CT.S3.PR.8` | TLS | passes | passes | passes | |
| `CT.LAMBDA.PR.3` | a VPC | fails | fails | fails | no VPC |

## Next
| CT.X.PR.1 | x | passes | passes | passes | |
";

    #[test]
    fn the_table_is_read_from_its_section_only() {
        let t = readme_table(README);
        assert_eq!(t.len(), 2);
        assert_eq!(t["CT.LAMBDA.PR.3"].1, "no VPC");
        assert_eq!(t["CT.S3.PR.8"].0, vec!["passes"; 3]);
    }

    #[test]
    fn every_difference_is_named() {
        use Verdict::*;
        let same = Verdicts(BTreeMap::from([
            ("CT.S3.PR.8".to_string(), [Passes; 3]),
            ("CT.LAMBDA.PR.3".to_string(), [Fails; 3]),
        ]));
        assert!(differences(&same, README).is_empty());
        let other = Verdicts(BTreeMap::from([
            ("CT.S3.PR.8".to_string(), [Fails, Passes, Passes]),
            ("CT.S3.PR.2".to_string(), [Fails; 3]),
        ]));
        let d = differences(&other, README);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].contains("CT.S3.PR.2") && d[0].contains("no row"));
        assert!(d[1].contains("the rules say fails, passes, passes"));
        assert!(d[2].contains("CT.LAMBDA.PR.3"));
        let unexplained = "### Control Tower's proactive controls\n| CT.S3.PR.8 | TLS | fails | fails | fails | |\n";
        let d = differences(
            &Verdicts(BTreeMap::from([("CT.S3.PR.8".to_string(), [Fails; 3])])),
            unexplained,
        );
        assert_eq!(d, vec!["CT.S3.PR.8 fails, and the README gives no reason"]);
    }
}
