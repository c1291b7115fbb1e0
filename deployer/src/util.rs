//! Small helpers with one home, at the bottom of the deployer's layers: the workspace's root,
//! a file error with its path, elapsed time as whole milliseconds, and a child process that ends
//! with its owner.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use thiserror::Error;

/// The workspace root (this crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or(manifest.clone(), Path::to_path_buf)
}

/// A file that could not be read or written, and where it is.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A duration in whole milliseconds, saturating rather than truncating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since `start`.
pub fn elapsed_ms(start: Instant) -> u64 {
    millis(start.elapsed())
}

/// A child process that is killed and reaped when this is dropped, however its owner ends
/// (an error, a panic, a test that fails half-way). Killing a child that was already waited
/// for does nothing: std remembers its exit and sends no signal.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_saturate_instead_of_truncating() {
        assert_eq!(millis(Duration::from_millis(1234)), 1234);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn a_dropped_child_is_killed() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        drop(KillOnDrop(child));
        // Reaped: the pid no longer names a live process of ours.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
        assert!(status.is_err(), "process {pid} still exists");
    }

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("deployer").is_dir());
    }
}
