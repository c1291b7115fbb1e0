//! The cross-compilation toolchain for static Lambda binaries: the Rust musl targets,
//! `cargo-zigbuild` (pinned, installed under `target/tools/`) and Zig from PyPI's `ziglang`
//! (pinned, in its own virtualenv). Missing pieces are installed on first use; when that
//! fails the error names the exact command that fixes it.

use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use crate::progress::Progress;
use crate::tools::cmd::{self, output};

use crate::tools::pyenv::{Venv, VenvError};
use crate::util::workspace_root;

pub const CARGO_ZIGBUILD_VERSION: &str = "0.24.1";

#[derive(Debug, Error)]
pub enum ToolchainError {
    #[error(
        "the Rust target {target} is not installed and `rustup target add {target}` failed: {reason}; run it by hand"
    )]
    Target { target: String, reason: String },
    #[error(
        "cargo-zigbuild {CARGO_ZIGBUILD_VERSION} is missing and installing it failed: {reason}; run `cargo install cargo-zigbuild --version ={CARGO_ZIGBUILD_VERSION} --locked --root {root}`"
    )]
    Zigbuild { root: String, reason: String },
    #[error(transparent)]
    Zig(#[from] VenvError),
}

/// Everything a cross build needs, located.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// The `cargo-zigbuild` executable (run as `cargo-zigbuild zigbuild …`).
    pub zigbuild: PathBuf,
    /// The Python that has `ziglang` installed, for `CARGO_ZIGBUILD_PYTHON_PATH`.
    pub zig_python: PathBuf,
}

/// Installs what is missing (saying so through `progress`) and returns the toolchain.
pub fn ensure(target: &str, progress: &dyn Progress) -> Result<Toolchain, ToolchainError> {
    ensure_target(target, progress)?;
    let zigbuild = ensure_zigbuild(progress)?;
    let venv = Venv::ensure("zig", progress)?;
    Ok(Toolchain {
        zigbuild,
        zig_python: venv.bin("python"),
    })
}

fn ensure_target(target: &str, progress: &dyn Progress) -> Result<(), ToolchainError> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
        .map_err(|reason| ToolchainError::Target {
            target: target.into(),
            reason,
        })?;
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    progress.step(&format!(
        "installing the Rust target {target} (rustup target add {target})"
    ));
    output(Command::new("rustup").args(["target", "add", target]))
        .map(|_| ())
        .map_err(|reason| ToolchainError::Target {
            target: target.into(),
            reason,
        })
}

fn zigbuild_root() -> PathBuf {
    workspace_root().join("target").join("tools").join("cargo")
}

fn zigbuild_version(bin: &Path) -> Option<String> {
    let out = output(Command::new(bin).arg("--version")).ok()?;
    out.split_whitespace().nth(1).map(str::to_string)
}

fn ensure_zigbuild(progress: &dyn Progress) -> Result<PathBuf, ToolchainError> {
    let root = zigbuild_root();
    let bin = root.join("bin").join("cargo-zigbuild");
    if zigbuild_version(&bin).as_deref() == Some(CARGO_ZIGBUILD_VERSION) {
        return Ok(bin);
    }
    progress.step(&format!(
        "installing cargo-zigbuild {CARGO_ZIGBUILD_VERSION} into {} (a few minutes, once)",
        root.display()
    ));
    let err = |reason: String| ToolchainError::Zigbuild {
        root: root.display().to_string(),
        reason,
    };
    cmd::status(
        cmd::cargo()
            .args([
                "install",
                "cargo-zigbuild",
                "--version",
                &format!("={CARGO_ZIGBUILD_VERSION}"),
                "--locked",
                "--quiet",
                "--root",
            ])
            .arg(&root),
    )
    .map_err(err)?;
    match zigbuild_version(&bin) {
        Some(v) if v == CARGO_ZIGBUILD_VERSION => Ok(bin),
        other => Err(err(format!("installed, but it reports version {other:?}"))),
    }
}
