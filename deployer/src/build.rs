//! Lambda artifacts: builds the handlers as static musl binaries (the `lambda` profile for AWS,
//! the cheaper `lambda-host` one for the local environment), checks each binary (machine,
//! static, size), and packages it as a deterministic zip named by its SHA-256. A manifest
//! records what was built; a rebuild that changes nothing re-zips nothing.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stack::{App, Architecture};
use thiserror::Error;

use crate::progress::Progress;
use crate::pyenv::{hex, workspace_root};
use crate::toolchain::{self, ToolchainError};
use crate::{elf, zip};

/// The Cargo profile tuned for Lambda (see the workspace `Cargo.toml`).
pub const PROFILE: &str = "lambda";
/// The profile of artifacts for the local environment (the host's architecture): the same
/// code, without the size work nothing local needs (see the workspace `Cargo.toml`).
pub const HOST_PROFILE: &str = "lambda-host";
/// Lambda's limit for a zip uploaded directly; through S3 it is larger, but a Rust handler
/// anywhere near this has a problem worth hearing about.
pub const MAX_ZIP_BYTES: u64 = 50 * 1024 * 1024;
/// Lambda's limit for the unzipped deployment package.
pub const MAX_UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;

/// Which instruction set to build for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildArch {
    Lambda(Architecture),
    /// This machine's, so the binaries run natively in the local environment.
    Host,
}

impl BuildArch {
    /// The Cargo profile of this kind of build.
    pub fn profile(self) -> &'static str {
        match self {
            BuildArch::Lambda(_) => PROFILE,
            BuildArch::Host => HOST_PROFILE,
        }
    }

    /// Where its artifacts go: `target/lambda/<arch>/`, or `target/lambda/host-<arch>/`.
    pub fn artifacts_dir(self) -> Result<PathBuf, BuildError> {
        let arch = self.resolve()?;
        let name = match self {
            BuildArch::Lambda(_) => arch.as_str().to_string(),
            BuildArch::Host => format!("host-{}", arch.as_str()),
        };
        Ok(workspace_root().join("target").join("lambda").join(name))
    }

    pub fn resolve(self) -> Result<Architecture, BuildError> {
        match self {
            BuildArch::Lambda(a) => Ok(a),
            BuildArch::Host => match std::env::consts::ARCH {
                "x86_64" => Ok(Architecture::X86_64),
                "aarch64" => Ok(Architecture::Arm64),
                other => Err(BuildError::UnsupportedHost(other.to_string())),
            },
        }
    }
}

pub fn target_triple(arch: Architecture) -> &'static str {
    match arch {
        Architecture::Arm64 => "aarch64-unknown-linux-musl",
        Architecture::X86_64 => "x86_64-unknown-linux-musl",
    }
}

/// The Cargo package and binary of a function.
pub fn package_of(function: &str) -> String {
    format!("{function}-function")
}

#[derive(Debug, Clone)]
pub struct BuildConfig {
    pub arch: BuildArch,
    /// Functions to build; empty means all of them.
    pub functions: Vec<String>,
    /// Overrides the `lambda` profile's opt-level (for measuring the choice; `None` keeps
    /// the profile's).
    pub opt_level: Option<String>,
}

/// One function's artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub function: String,
    /// SHA-256 of the zip, hex: the artifact's name and content address.
    pub sha256: String,
    /// What Lambda reports as `CodeSha256`: base64 of the same digest.
    pub code_sha256: String,
    /// Path of the zip, relative to the manifest.
    pub zip: String,
    pub zip_bytes: u64,
    pub binary_bytes: u64,
    pub binary_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub architecture: String,
    pub target: String,
    pub profile: String,
    pub functions: Vec<Artifact>,
}

#[derive(Debug, Clone)]
pub struct BuildReport {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    /// Functions whose zip was already up to date.
    pub unchanged: Vec<String>,
}

impl BuildReport {
    pub fn zip_path(&self, a: &Artifact) -> PathBuf {
        self.manifest_path
            .parent()
            .map_or_else(|| PathBuf::from(&a.zip), |d| d.join(&a.zip))
    }
}

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("unknown function `{0}`; the functions are {1}")]
    UnknownFunction(String, String),
    #[error(
        "this machine's architecture ({0}) has no Lambda equivalent; pass --arch arm64 or x86_64"
    )]
    UnsupportedHost(String),
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
    #[error("cannot run cargo-zigbuild: {0}")]
    Spawn(std::io::Error),
    #[error("cargo build for {target} failed ({status}):\n{output}")]
    Cargo {
        target: String,
        status: String,
        output: String,
    },
    #[error("{function}: cannot read {path}: {source}")]
    Read {
        function: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{function}: the binary was refused: {source}")]
    Binary {
        function: String,
        source: elf::ElfError,
    },
    #[error("{function}: {what} is {size} bytes, over Lambda's limit of {limit}")]
    TooLarge {
        function: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("{function}: the zip failed verification: {source}")]
    Zip {
        function: String,
        source: zip::ZipError,
    },
}

/// Reads the manifest of the last build in `dir`, if any.
fn load_manifest(dir: &Path) -> Option<Manifest> {
    let text = fs::read_to_string(dir.join(MANIFEST)).ok()?;
    serde_json::from_str(&text).ok()
}

const MANIFEST: &str = "manifest.json";

fn selected(cfg: &BuildConfig) -> Result<Vec<String>, BuildError> {
    let app = App::image_pipeline();
    let all: Vec<String> = app.functions.iter().map(|f| f.name.to_string()).collect();
    if cfg.functions.is_empty() {
        return Ok(all);
    }
    let mut out = Vec::new();
    for f in &cfg.functions {
        if !all.contains(f) {
            return Err(BuildError::UnknownFunction(f.clone(), all.join(", ")));
        }
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    Ok(out)
}

pub fn build(cfg: &BuildConfig, progress: &dyn Progress) -> Result<BuildReport, BuildError> {
    let arch = cfg.arch.resolve()?;
    let functions = selected(cfg)?;
    let target = target_triple(arch);
    let tools = toolchain::ensure(target, progress)?;

    let profile = cfg.arch.profile();
    progress.step(&format!(
        "compiling {} for {target} (profile {profile})",
        functions.join(", ")
    ));
    cargo_build(
        &tools,
        target,
        profile,
        &functions,
        cfg.opt_level.as_deref(),
        progress,
    )?;

    let dir = cfg.arch.artifacts_dir()?;
    let previous: BTreeMap<String, Artifact> = load_manifest(&dir)
        .map(|m| {
            m.functions
                .into_iter()
                .map(|a| (a.function.clone(), a))
                .collect()
        })
        .unwrap_or_default();
    let mut artifacts = previous.clone();
    let mut unchanged = Vec::new();
    let bin_dir = workspace_root().join("target").join(target).join(profile);
    for function in &functions {
        let path = bin_dir.join(function);
        let binary = fs::read(&path).map_err(|source| BuildError::Read {
            function: function.clone(),
            path: path.clone(),
            source,
        })?;
        progress.function_step(function, "checking the binary");
        elf::check(&binary, arch).map_err(|source| BuildError::Binary {
            function: function.clone(),
            source,
        })?;
        limit(
            function,
            "the binary",
            binary.len() as u64,
            MAX_UNZIPPED_BYTES,
        )?;
        let binary_sha256 = hex(&Sha256::digest(&binary));
        if let Some(prev) = previous.get(function)
            && prev.binary_sha256 == binary_sha256
            && dir.join(&prev.zip).is_file()
        {
            progress.function_step(function, "unchanged: the zip is already up to date");
            unchanged.push(function.clone());
            continue;
        }
        progress.function_step(function, "packaging bootstrap.zip");
        let artifact = package(function, &binary, binary_sha256, &dir)?;
        artifacts.insert(function.clone(), artifact);
    }
    let manifest = Manifest {
        architecture: arch.as_str().into(),
        target: target.into(),
        profile: profile.into(),
        functions: artifacts.into_values().collect(),
    };
    let manifest_path = dir.join(MANIFEST);
    let mut json = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    json.push('\n');
    fs::write(&manifest_path, json).map_err(|source| BuildError::Write {
        path: manifest_path.clone(),
        source,
    })?;
    Ok(BuildReport {
        manifest,
        manifest_path,
        unchanged,
    })
}

fn limit(function: &str, what: &'static str, size: u64, limit: u64) -> Result<(), BuildError> {
    if size > limit {
        return Err(BuildError::TooLarge {
            function: function.into(),
            what,
            size,
            limit,
        });
    }
    Ok(())
}

/// Zips, verifies the zip round-trips to the same binary, and stores it under its hash,
/// removing the function's older zips.
fn package(
    function: &str,
    binary: &[u8],
    binary_sha256: String,
    dir: &Path,
) -> Result<Artifact, BuildError> {
    let zip_err = |source| BuildError::Zip {
        function: function.into(),
        source,
    };
    let bytes = zip::bootstrap_zip(binary).map_err(zip_err)?;
    let entry = zip::read_single(&bytes).map_err(zip_err)?;
    if entry.name != zip::ENTRY || entry.mode != zip::MODE || entry.data != binary {
        return Err(zip_err(zip::ZipError::Invalid(
            "the entry does not match the binary",
        )));
    }
    limit(function, "the zip", bytes.len() as u64, MAX_ZIP_BYTES)?;
    let digest = Sha256::digest(&bytes);
    let sha256 = hex(&digest);
    let fdir = dir.join(function);
    fs::create_dir_all(&fdir).map_err(|source| BuildError::Write {
        path: fdir.clone(),
        source,
    })?;
    let name = format!("{sha256}.zip");
    if let Ok(entries) = fs::read_dir(&fdir) {
        for e in entries.flatten() {
            if e.file_name() != name.as_str() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let path = fdir.join(&name);
    fs::write(&path, &bytes).map_err(|source| BuildError::Write { path, source })?;
    Ok(Artifact {
        function: function.into(),
        code_sha256: base64::engine::general_purpose::STANDARD.encode(digest),
        zip: format!("{function}/{name}"),
        sha256,
        zip_bytes: bytes.len() as u64,
        binary_bytes: binary.len() as u64,
        binary_sha256,
    })
}

fn cargo_build(
    tools: &toolchain::Toolchain,
    target: &str,
    profile: &str,
    functions: &[String],
    opt_level: Option<&str>,
    progress: &dyn Progress,
) -> Result<(), BuildError> {
    let root = workspace_root();
    let mut cmd = Command::new(&tools.zigbuild);
    cmd.current_dir(&root)
        .arg("zigbuild")
        .args(["--profile", profile, "--target", target])
        .args(["--message-format", "json-render-diagnostics"]);
    for f in functions {
        cmd.args(["--package", &package_of(f)]);
    }
    // Paths of this checkout and of the Cargo home would otherwise end up in panic messages,
    // making the same source give different binaries in different directories.
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    let rustflags = format!(
        "--remap-path-prefix={}=/build --remap-path-prefix={}=/cargo",
        root.display(),
        cargo_home.display()
    );
    if let Some(level) = opt_level {
        let var = profile.to_uppercase().replace('-', "_");
        cmd.env(format!("CARGO_PROFILE_{var}_OPT_LEVEL"), level);
    }
    cmd.env("CARGO_ZIGBUILD_PYTHON_PATH", &tools.zig_python)
        .env(
            format!(
                "CARGO_TARGET_{}_RUSTFLAGS",
                target.to_uppercase().replace('-', "_")
            ),
            rustflags,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(BuildError::Spawn)?;
    // Diagnostics and cargo's status lines arrive on stderr; keep them for a failure report.
    let stderr = child.stderr.take();
    let collector = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
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
    let status = child.wait().map_err(BuildError::Spawn)?;
    let output = collector.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = output.lines().rev().take(60).collect();
        return Err(BuildError::Cargo {
            target: target.into(),
            status: status.to_string(),
            output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_resolves_to_a_lambda_architecture() {
        let a = BuildArch::Host.resolve().unwrap();
        let expected = if cfg!(target_arch = "aarch64") {
            Architecture::Arm64
        } else {
            Architecture::X86_64
        };
        assert_eq!(a, expected);
        assert_eq!(
            target_triple(Architecture::Arm64),
            "aarch64-unknown-linux-musl"
        );
    }

    #[test]
    fn unknown_functions_are_refused_with_the_list() {
        let cfg = BuildConfig {
            arch: BuildArch::Host,
            functions: vec!["upload".into(), "resize".into()],
            opt_level: None,
        };
        let err = selected(&cfg).unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown function `resize`; the functions are upload, process, metadata"
        );
        let all = selected(&BuildConfig {
            arch: BuildArch::Host,
            functions: vec![],
            opt_level: None,
        })
        .unwrap();
        assert_eq!(all, ["upload", "process", "metadata"]);
    }

    #[test]
    fn packaging_is_deterministic_and_content_addressed() {
        let dir = std::env::temp_dir().join(format!("pkg-test-{}", std::process::id()));
        let bin = elf::tests::crafted(elf::EM_X86_64, &[1], 0);
        let a = package("upload", &bin, "b".into(), &dir).unwrap();
        let b = package("upload", &bin, "b".into(), &dir).unwrap();
        assert_eq!(a, b);
        let bytes = fs::read(dir.join(&a.zip)).unwrap();
        assert_eq!(hex(&Sha256::digest(&bytes)), a.sha256);
        assert_eq!(a.zip, format!("upload/{}.zip", a.sha256));
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&a.code_sha256)
                .unwrap(),
            Sha256::digest(&bytes).to_vec()
        );
        // A new binary replaces the old zip.
        let mut other = bin.clone();
        other.push(0);
        let c = package("upload", &other, "c".into(), &dir).unwrap();
        assert_ne!(c.sha256, a.sha256);
        let left: Vec<_> = fs::read_dir(dir.join("upload"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(left.len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
