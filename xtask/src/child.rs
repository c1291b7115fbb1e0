//! Running this xtask binary as a child, as a user would run `cargo xtask …`, and reading its
//! `--output json` report typed: what the end-to-end test and the benchmarks share.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use deployer::util::workspace_root;
use serde::de::DeserializeOwned;

/// One finished run.
#[derive(Debug)]
pub struct Run {
    pub args: String,
    pub code: i32,
    pub seconds: f64,
    pub stdout: String,
    /// Captured only when asked for (otherwise it went to the terminal or nowhere).
    pub stderr: String,
}

impl Run {
    /// Its stdout as one JSON report, when it succeeded.
    pub fn report<T: DeserializeOwned>(&self) -> Result<T> {
        if self.code != 0 {
            bail!("`cargo xtask {}` exited with {}", self.args, self.code);
        }
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "stdout of `cargo xtask {}` is not the expected report:\n{}",
                self.args, self.stdout
            )
        })
    }
}

/// Where a child's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    Show,
    Hide,
    Capture,
}

/// A `cargo xtask` invocation being put together.
#[derive(Debug)]
pub struct Xtask {
    cmd: Command,
    args: Vec<String>,
    stderr: Stderr,
}

impl Xtask {
    pub fn new(args: &[&str]) -> Result<Self> {
        let exe: PathBuf = std::env::current_exe().context("cannot find the xtask binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .current_dir(workspace_root())
            .stdin(Stdio::null());
        Ok(Self {
            cmd,
            args: args.iter().map(|s| s.to_string()).collect(),
            stderr: Stderr::Show,
        })
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn stderr(mut self, s: Stderr) -> Self {
        self.stderr = s;
        self
    }

    pub fn run(mut self) -> Result<Run> {
        self.cmd.stderr(match self.stderr {
            Stderr::Show => Stdio::inherit(),
            Stderr::Hide => Stdio::null(),
            Stderr::Capture => Stdio::piped(),
        });
        let started = Instant::now();
        let out = self.cmd.output().context("cannot run xtask")?;
        Ok(Run {
            args: self.args.join(" "),
            code: out.status.code().unwrap_or(-1),
            seconds: started.elapsed().as_secs_f64(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
