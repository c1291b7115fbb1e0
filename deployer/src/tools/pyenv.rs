//! Python tools the project runs (validators, the Zig toolchain, the local emulator), each in
//! a virtualenv under `target/tools/` built from a pinned requirements file in `tools/`, so
//! nothing depends on what the machine happens to have.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use thiserror::Error;

use crate::util::{FileError, workspace_root};

#[derive(Debug, Error)]
pub enum VenvError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(
        "cannot create a virtualenv with `{python} -m venv {dir}`: {reason} (install Python 3.11 with its venv module, or point PYTHON at one)"
    )]
    Create {
        python: String,
        dir: PathBuf,
        reason: String,
    },
    #[error(
        "cannot install {requirements} (try it by hand: {venv}/bin/pip install -r {requirements}): {reason}"
    )]
    Install {
        requirements: PathBuf,
        venv: PathBuf,
        reason: String,
    },
}

/// A virtualenv created from `tools/{name}-requirements.txt`.
#[derive(Debug)]
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// Creates or refreshes the virtualenv when its requirements changed; otherwise reuses it.
    /// `progress` is told when an install starts (it takes a while).
    pub fn ensure(name: &str, progress: &dyn crate::progress::Progress) -> Result<Self, VenvError> {
        let root = workspace_root();
        let requirements = root.join("tools").join(format!("{name}-requirements.txt"));
        let pinned = fs::read(&requirements).map_err(|source| FileError::Read {
            path: requirements.clone(),
            source,
        })?;
        let digest = hex::encode(Sha256::digest(&pinned));
        let dir = root.join("target").join("tools").join(name);
        let stamp = dir.join(".requirements.sha256");
        if fs::read_to_string(&stamp).ok().as_deref() == Some(digest.as_str()) {
            return Ok(Self { dir });
        }
        progress.step(&format!(
            "installing the {name} tools into {} (pinned in tools/{name}-requirements.txt)",
            dir.display()
        ));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|source| FileError::Write {
                path: dir.clone(),
                source,
            })?;
        }
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        crate::tools::cmd::status(Command::new(&python).args(["-m", "venv"]).arg(&dir)).map_err(
            |reason| VenvError::Create {
                python: python.clone(),
                dir: dir.clone(),
                reason,
            },
        )?;
        let venv = Self { dir };
        crate::tools::cmd::status(
            Command::new(venv.bin("pip"))
                .args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-r",
                ])
                .arg(&requirements),
        )
        .map_err(|reason| VenvError::Install {
            requirements: requirements.clone(),
            venv: venv.dir.clone(),
            reason,
        })?;
        fs::write(&stamp, digest).map_err(|source| FileError::Write {
            path: stamp.clone(),
            source,
        })?;
        Ok(venv)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bin(&self, tool: &str) -> PathBuf {
        self.dir.join("bin").join(tool)
    }
}
