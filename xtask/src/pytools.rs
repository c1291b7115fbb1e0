//! Python tools the project runs (linters), each in a virtualenv under `target/tools/` built
//! from a pinned requirements file in `tools/`, so nothing depends on what the machine has.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or(manifest.clone(), Path::to_path_buf)
}

/// A virtualenv created from `tools/{name}-requirements.txt`.
#[derive(Debug)]
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// Creates or refreshes the virtualenv when its requirements changed; otherwise reuses it.
    pub fn ensure(name: &str) -> Result<Self> {
        let root = workspace_root();
        let requirements = root.join("tools").join(format!("{name}-requirements.txt"));
        let pinned = fs::read(&requirements)
            .with_context(|| format!("cannot read {}", requirements.display()))?;
        let digest = hex(&Sha256::digest(&pinned));
        let dir = root.join("target").join("tools").join(name);
        let stamp = dir.join(".requirements.sha256");
        if fs::read_to_string(&stamp).ok().as_deref() == Some(digest.as_str()) {
            return Ok(Self { dir });
        }
        eprintln!(
            "setting up the {name} tools in {} (pinned in {})",
            dir.display(),
            requirements.display()
        );
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run(Command::new(&python).args(["-m", "venv"]).arg(&dir)).with_context(|| {
            format!("cannot create a virtualenv with `{python} -m venv` (install Python 3.11 with its venv module, or set PYTHON)")
        })?;
        let venv = Self { dir };
        run(Command::new(venv.bin("pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&requirements))
        .with_context(|| format!("cannot install {}", requirements.display()))?;
        fs::write(&stamp, digest).with_context(|| format!("cannot write {}", stamp.display()))?;
        Ok(venv)
    }

    pub fn bin(&self, tool: &str) -> PathBuf {
        self.dir.join("bin").join(tool)
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} exited with {status}", cmd.get_program());
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
