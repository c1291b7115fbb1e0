//! The npm packages `cargo xtask lint` runs, each pinned by a lock file under `tools/NAME/`
//! and installed with `npm ci` under `target/tools/NAME/`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use deployer::util::workspace_root;
use sha2::{Digest, Sha256};

/// The `node_modules` folder of `tools/NAME`, installed when its package files changed since
/// the last install. Peer dependencies are not installed: the packages are run, not built on.
pub fn install(name: &str) -> Result<PathBuf> {
    let root = workspace_root();
    let pinned = root.join("tools").join(name);
    let dir = root.join("target").join("tools").join(name);
    let mut digest = Sha256::new();
    for f in ["package.json", "package-lock.json"] {
        let p = pinned.join(f);
        digest.update(std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?);
    }
    let digest = hex::encode(digest.finalize());
    let stamp = dir.join(".lock.sha256");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(digest.as_str()) {
        return Ok(dir.join("node_modules"));
    }
    eprintln!(
        "lint: installing {name} into {} (pinned in tools/{name}/package-lock.json)",
        dir.display()
    );
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(pinned.join(f), dir.join(f))?;
    }
    deployer::tools::cmd::status(
        Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--legacy-peer-deps",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&dir),
    )
    .map_err(|e| anyhow::anyhow!("installing {name} with npm: {e} (is Node's npm on PATH?)"))?;
    std::fs::write(&stamp, digest)?;
    Ok(dir.join("node_modules"))
}
