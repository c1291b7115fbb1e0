//! Running cargo for the handlers: through `cargo-zigbuild` for a Lambda target, plain cargo
//! for the host, with paths remapped so the same source gives the same Lambda binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{BuildError, package_of, toolchain};
use crate::progress::Progress;
use crate::util::workspace_root;

/// The host triple in `rustc -vV`'s output (its `host:` line).
pub(super) fn host_triple(toolchain: &str) -> Option<&str> {
    toolchain
        .lines()
        .find_map(|l| l.strip_prefix("host:"))
        .map(str::trim)
}

/// Paths of this checkout and of the Cargo home would otherwise end up in panic messages,
/// making the same source give different Lambda binaries in different directories. (Host
/// builds go without: a flag the tool's own build lacks would make cargo compile every
/// dependency again. Their binaries are the same for the same source in the same checkout.)
fn remap_flags(root: &Path) -> String {
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    format!(
        "--remap-path-prefix={}=/build --remap-path-prefix={}=/cargo",
        root.display(),
        cargo_home.display()
    )
}

/// Runs cargo for `functions`: through `cargo-zigbuild` for a Lambda target (`tools`), or
/// plain cargo for the host, with nothing the tool's own build lacks (no `--target`, no
/// flags), so that it reuses that build's dependencies.
pub(super) fn cargo_build(
    tools: Option<&toolchain::Toolchain>,
    target: &str,
    profile: &str,
    functions: &[String],
    opt_level: Option<&str>,
    progress: &dyn Progress,
) -> Result<(), BuildError> {
    let root = workspace_root();
    let (mut cmd, program) = match tools {
        Some(tools) => {
            let mut cmd = Command::new(&tools.zigbuild);
            cmd.arg("zigbuild")
                .args(["--profile", profile, "--target", target])
                .env("CARGO_ZIGBUILD_PYTHON_PATH", &tools.zig_python)
                .env(
                    format!(
                        "CARGO_TARGET_{}_RUSTFLAGS",
                        target.to_uppercase().replace('-', "_")
                    ),
                    remap_flags(&root),
                );
            (cmd, "cargo-zigbuild")
        }
        None => {
            let mut cmd = crate::tools::cmd::cargo();
            cmd.arg("build").args(["--profile", profile]);
            (cmd, "cargo")
        }
    };
    cmd.current_dir(&root)
        .args(["--message-format", "json-render-diagnostics"]);
    for f in functions {
        cmd.args(["--package", &package_of(f)]);
    }
    if let Some(level) = opt_level {
        let var = profile.to_uppercase().replace('-', "_");
        cmd.env(format!("CARGO_PROFILE_{var}_OPT_LEVEL"), level);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| BuildError::Spawn(program, e))?;
    // Diagnostics and cargo's status lines arrive on stderr; keep them for a failure report.
    let collector = crate::tools::cmd::collect(child.stderr.take());
    let mut count = 0;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] == "compiler-artifact" {
                count += 1;
                progress.compiled(msg["target"]["name"].as_str().unwrap_or("?"), count);
            }
        }
    }
    let status = child.wait().map_err(|e| BuildError::Spawn(program, e))?;
    let output = collector.join().unwrap_or_default();
    if !status.success() {
        return Err(BuildError::Cargo {
            target: target.into(),
            status: status.to_string(),
            output: crate::tools::cmd::last_lines(&output, 60),
        });
    }
    Ok(())
}
