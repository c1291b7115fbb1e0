//! Lambda artifacts: builds the handlers as static musl binaries in the `lambda` profile for
//! AWS, or as host binaries in cargo's `dev` profile for the local environment (sharing what
//! the tool's own build compiled), checks each binary (machine, static for Lambda, size), and
//! packages it as a deterministic zip named by its SHA-256. A manifest records what was built;
//! a rebuild that changes nothing re-zips nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stack::{App, Architecture};
use thiserror::Error;

pub mod elf;
pub mod toolchain;
pub mod zip;

use crate::progress::Progress;
use crate::util::workspace_root;
use toolchain::ToolchainError;

/// The Cargo profile tuned for Lambda (see the workspace `Cargo.toml`).
pub const PROFILE: &str = "lambda";
/// The profile of artifacts for the local environment: cargo's own `dev`, for the host
/// target, the profile and target `cargo xtask` itself is built in. With the features that
/// `functions/host-deps` unifies, the handlers reuse every dependency the tool's build already
/// compiled, so a first local deploy compiles little more than the handlers' own crates.
pub const HOST_PROFILE: &str = "dev";
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

    /// Where cargo leaves its binaries: `target/<triple>/lambda/`, or `target/debug/` for the
    /// host (no `--target`, like the tool's own build).
    pub fn binaries_dir(self) -> Result<PathBuf, BuildError> {
        let target = workspace_root().join("target");
        Ok(match self {
            BuildArch::Lambda(a) => target.join(target_triple(a)).join(PROFILE),
            BuildArch::Host => target.join("debug"),
        })
    }

    /// Accepts a binary of this build: a static executable for Lambda; for the host, any
    /// executable of its machine (the local environment runs it here, dynamically linked
    /// like the tool itself).
    /// `arch` is what this build resolved to.
    pub fn check(self, binary: &[u8], arch: Architecture) -> Result<elf::ElfInfo, elf::ElfError> {
        match self {
            BuildArch::Lambda(_) => elf::check(binary, arch),
            BuildArch::Host => elf::check_machine(binary, arch),
        }
    }

    /// How hard its zips are compressed: Lambda's as small as deflate makes them; the local
    /// environment's large unoptimised binaries quickly.
    pub fn zip_effort(self) -> zip::Effort {
        match self {
            BuildArch::Lambda(_) => zip::Effort::Best,
            BuildArch::Host => zip::Effort::Fast,
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
    #[error(
        "an opt-level override applies to Lambda builds (--arch arm64 or x86_64), not host builds"
    )]
    HostOptLevel,
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
    #[error("cannot run {0}: {1}")]
    Spawn(&'static str, std::io::Error),
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

/// The manifest of the last build for `arch` in this checkout, if any.
pub fn read_manifest(arch: BuildArch) -> Option<Manifest> {
    load_manifest(&arch.artifacts_dir().ok()?)
}

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

/// Where the fingerprint of the last successful build's inputs is kept, beside its manifest.
const FINGERPRINT: &str = "inputs.sha256";
/// Changes whenever what the fingerprint covers changes.
const FINGERPRINT_FORMAT: &str = "2";

/// The workspace files a handler build reads besides the handlers' own crates: the manifests,
/// the lock file, cargo's configuration, a toolchain pin, and the pinned zig.
pub(crate) const BUILD_FILES: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    ".cargo/config.toml",
    ".cargo/config",
    "rust-toolchain.toml",
    "rust-toolchain",
    "tools/zig-requirements.txt",
];

/// The directory holding every crate a handler is built from (a test checks that no handler
/// depends on a workspace crate outside it).
pub const HANDLER_SOURCES: &str = "functions";

/// Environment variables that change what cargo and rustc produce.
fn build_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTUP_TOOLCHAIN"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "CARGO_BUILD_RUSTFLAGS"
                    | "CARGO_BUILD_TARGET_DIR"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_INCREMENTAL"
                    | "CARGO_HOME"
                    | "CC"
                    | "CFLAGS"
            ) || k.starts_with("CARGO_PROFILE_")
                || (k.starts_with("CARGO_TARGET_") && k != "CARGO_TARGET_DIR")
        })
        .collect();
    env.sort();
    env
}

/// The toolchain cargo would use here: `rustc -vV` (its version, commit and host).
fn toolchain_identity(root: &Path) -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Command::new(rustc)
        .arg("-vV")
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        // Unknown: never equal to a recorded one, so the build runs.
        .unwrap_or_else(|| format!("unknown toolchain {:?}", std::time::SystemTime::now()))
}

/// Everything a handler build's output depends on: the handlers' sources and the workspace
/// files cargo reads, the profile, target, functions and opt-level override, the toolchain
/// and the environment variables that change what cargo and rustc produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInputs {
    pub profile: String,
    pub target: String,
    pub functions: Vec<String>,
    pub opt_level: Option<String>,
    pub toolchain: String,
    pub env: Vec<(String, String)>,
}

impl BuildInputs {
    /// SHA-256 (hex) of these inputs and of every file under `root` a build reads. A file
    /// that cannot be read makes the fingerprint unique, so the build runs.
    pub fn fingerprint(&self, root: &Path) -> String {
        let mut h = Sha256::new();
        let mut field = |name: &str, value: &[u8]| {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((value.len() as u64).to_le_bytes());
            h.update(value);
        };
        // A record made by other fingerprinting code never matches.
        field("format", FINGERPRINT_FORMAT.as_bytes());
        field("root", root.to_string_lossy().as_bytes());
        field("profile", self.profile.as_bytes());
        field("target", self.target.as_bytes());
        field("functions", self.functions.join(",").as_bytes());
        field(
            "opt-level",
            self.opt_level.as_deref().unwrap_or("").as_bytes(),
        );
        field("toolchain", self.toolchain.as_bytes());
        for (k, v) in &self.env {
            field(&format!("env {k}"), v.as_bytes());
        }
        let mut files: Vec<PathBuf> = BUILD_FILES.iter().map(PathBuf::from).collect();
        source_files(root, Path::new(HANDLER_SOURCES), &mut files);
        files.sort();
        for rel in files {
            let path = root.join(&rel);
            let name = format!("file {}", rel.display());
            match fs::read(&path) {
                Ok(bytes) => field(&name, &bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => field(&name, b"\0absent"),
                Err(e) => field(
                    &name,
                    format!("\0unreadable {e} {:?}", std::time::SystemTime::now()).as_bytes(),
                ),
            }
        }
        hex::encode(h.finalize())
    }
}

/// The files under `root/rel`, recursively, as paths relative to `root`; build output
/// (`target`) and hidden entries are not sources.
pub(crate) fn source_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(root.join(rel)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name_str = name.to_string_lossy();
        if name_str.starts_with('.') || name_str == "target" {
            continue;
        }
        let child = rel.join(&name);
        match e.file_type() {
            Ok(t) if t.is_dir() => source_files(root, &child, out),
            Ok(_) => out.push(child),
            Err(_) => out.push(child),
        }
    }
}

/// Reads an environment variable (the process's, or a test's).
type Env = dyn Fn(&str) -> Option<std::ffi::OsString>;

fn process_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name)
}

/// The fingerprint of a build: `base` ([`BuildInputs::fingerprint`]) and the current values
/// of the environment variables the handlers' code reads at compile time (`env!`,
/// `option_env!`), which only the last build's dep-info names.
fn with_env_deps(base: &str, names: &[String], env: &Env) -> String {
    let mut h = Sha256::new();
    h.update(base.as_bytes());
    for name in names {
        h.update(b"\n");
        h.update(name.as_bytes());
        match env(name) {
            Some(v) => {
                h.update(b"=");
                h.update(v.as_encoded_bytes());
            }
            None => h.update(b" unset"),
        }
    }
    hex::encode(h.finalize())
}

/// The record of a successful build: its fingerprint, then one `env NAME` line per
/// compile-time environment variable of the handlers.
fn fingerprint_record(base: &str, names: &[String], env: &Env) -> String {
    let mut s = format!("{}\n", with_env_deps(base, names, env));
    for n in names {
        s.push_str(&format!("env {n}\n"));
    }
    s
}

/// The environment variables that rustc's dep-info (`# env-dep:NAME`) says the crates under
/// `root/functions` read at compile time, except cargo's own `CARGO_*` (which follow from the
/// manifests). Dep-info names a workspace crate's sources relative to `root`.
fn env_deps(deps_dir: &Path, root: &Path) -> Vec<String> {
    let relative = format!(" {HANDLER_SOURCES}/");
    let absolute = root.join(HANDLER_SOURCES).to_string_lossy().into_owned();
    let mut names = std::collections::BTreeSet::new();
    let Ok(entries) = fs::read_dir(deps_dir) else {
        return Vec::new();
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "d") {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        if !text.contains(&relative) && !text.contains(&absolute) {
            continue;
        }
        for line in text.lines() {
            if let Some(dep) = line.strip_prefix("# env-dep:") {
                let name = dep.split('=').next().unwrap_or_default();
                if !name.is_empty() && !name.starts_with("CARGO_") {
                    names.insert(name.to_string());
                }
            }
        }
    }
    names.into_iter().collect()
}

/// The workspace crates a function's binary is built from, as directories relative to the
/// workspace root (`functions/upload`, `functions/api`, …): its own crate and every path
/// dependency, followed through the workspace `Cargo.toml`. Read with plain text rules that
/// fit this workspace's manifests (`name.workspace = true`, `path = "…"`).
pub fn crates_of(root: &Path, function: &str) -> Result<BTreeSet<String>, BuildError> {
    let read = |rel: &str| {
        let path = root.join(rel).join("Cargo.toml");
        fs::read_to_string(&path).map_err(|source| BuildError::Read {
            function: function.to_string(),
            path,
            source,
        })
    };
    let workspace_paths: BTreeMap<String, String> = read("")?
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once('=')?;
            let path = rest.split("path = \"").nth(1)?.split('"').next()?;
            Some((name.trim().to_string(), path.to_string()))
        })
        .collect();
    let mut todo = vec![format!("{HANDLER_SOURCES}/{function}")];
    let mut seen = BTreeSet::new();
    while let Some(dir) = todo.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        for line in read(&dir)?.lines() {
            let name = line.split(['.', '=', ' ']).next().unwrap_or_default();
            if let Some(path) = workspace_paths.get(name)
                && line.contains("workspace")
            {
                todo.push(path.clone());
            }
            if let Some(rel) = line
                .split("path = \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                && rel.starts_with("..")
            {
                let normal =
                    Path::new(&dir)
                        .join(rel)
                        .components()
                        .fold(PathBuf::new(), |mut p, c| {
                            match c {
                                std::path::Component::ParentDir => {
                                    p.pop();
                                }
                                other => p.push(other),
                            }
                            p
                        });
                todo.push(normal.to_string_lossy().into_owned());
            }
        }
    }
    Ok(seen)
}

/// The last build's manifest when its inputs are exactly `base` (and the compile-time
/// environment it recorded is unchanged) and every zip it names is still there at its size:
/// nothing to build.
fn still_current(dir: &Path, base: &str, functions: &[String], env: &Env) -> Option<Manifest> {
    let recorded = fs::read_to_string(dir.join(FINGERPRINT)).ok()?;
    let mut lines = recorded.lines();
    let fingerprint = lines.next()?.trim();
    let names: Vec<String> = lines
        .filter_map(|l| l.strip_prefix("env "))
        .map(str::to_string)
        .collect();
    if fingerprint != with_env_deps(base, &names, env) {
        return None;
    }
    let manifest = load_manifest(dir)?;
    let all_there = functions.iter().all(|f| {
        manifest.functions.iter().any(|a| {
            &a.function == f && fs::metadata(dir.join(&a.zip)).is_ok_and(|m| m.len() == a.zip_bytes)
        })
    });
    all_there.then_some(manifest)
}

/// The host triple in `rustc -vV`'s output (its `host:` line).
fn host_triple(toolchain: &str) -> Option<&str> {
    toolchain
        .lines()
        .find_map(|l| l.strip_prefix("host:"))
        .map(str::trim)
}

pub fn build(cfg: &BuildConfig, progress: &dyn Progress) -> Result<BuildReport, BuildError> {
    let arch = cfg.arch.resolve()?;
    if cfg.arch == BuildArch::Host && cfg.opt_level.is_some() {
        return Err(BuildError::HostOptLevel);
    }
    let functions = selected(cfg)?;
    let profile = cfg.arch.profile();
    let root = workspace_root();
    let dir = cfg.arch.artifacts_dir()?;
    let toolchain = toolchain_identity(&root);
    let target = match cfg.arch {
        BuildArch::Lambda(a) => target_triple(a).to_string(),
        BuildArch::Host => host_triple(&toolchain).unwrap_or("host").to_string(),
    };
    let target = target.as_str();
    let inputs = BuildInputs {
        profile: profile.into(),
        target: target.into(),
        functions: functions.clone(),
        opt_level: cfg.opt_level.clone(),
        toolchain,
        env: build_env(),
    };
    let fingerprint = inputs.fingerprint(&root);
    if let Some(manifest) = still_current(&dir, &fingerprint, &functions, &process_env) {
        progress.step(&format!(
            "{} for {target} up to date: no source, lock file, profile, toolchain or build setting changed since the last build",
            functions.join(", ")
        ));
        return Ok(BuildReport {
            manifest,
            manifest_path: dir.join(MANIFEST),
            unchanged: functions,
        });
    }
    // A build that fails, or is interrupted, must not leave the old fingerprint standing.
    let _ = fs::remove_file(dir.join(FINGERPRINT));
    // Host builds need nothing beyond the toolchain that built this tool.
    let tools = match cfg.arch {
        BuildArch::Lambda(_) => Some(toolchain::ensure(target, progress)?),
        BuildArch::Host => None,
    };

    // Cargo is always given every function: features are unified over the packages of one
    // invocation, so building one alone would compile its dependencies differently (slower,
    // and a binary other than the one a full build makes). Cargo recompiles only what
    // changed; only the selected functions are packaged.
    let every: Vec<String> = selected(&BuildConfig {
        functions: Vec::new(),
        ..cfg.clone()
    })?;
    progress.step(&format!(
        "compiling {} for {target} (profile {profile}); packaging {}",
        every.join(", "),
        functions.join(", ")
    ));
    cargo_build(
        tools.as_ref(),
        target,
        profile,
        &every,
        cfg.opt_level.as_deref(),
        progress,
    )?;

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
    let bin_dir = cfg.arch.binaries_dir()?;
    for function in &functions {
        let path = bin_dir.join(function);
        let binary = fs::read(&path).map_err(|source| BuildError::Read {
            function: function.clone(),
            path: path.clone(),
            source,
        })?;
        progress.function_step(function, "checking the binary");
        cfg.arch
            .check(&binary, arch)
            .map_err(|source| BuildError::Binary {
                function: function.clone(),
                source,
            })?;
        limit(
            function,
            "the binary",
            binary.len() as u64,
            MAX_UNZIPPED_BYTES,
        )?;
        let binary_sha256 = hex::encode(Sha256::digest(&binary));
        if let Some(prev) = previous.get(function)
            && prev.binary_sha256 == binary_sha256
            && dir.join(&prev.zip).is_file()
        {
            progress.function_step(function, "unchanged: the zip is already up to date");
            unchanged.push(function.clone());
            continue;
        }
        progress.function_step(function, "packaging bootstrap.zip");
        let artifact = package(
            function,
            cfg.arch.zip_effort(),
            &binary,
            binary_sha256,
            &dir,
        )?;
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
    let fingerprint_path = dir.join(FINGERPRINT);
    let names = env_deps(&bin_dir.join("deps"), &root);
    fs::write(
        &fingerprint_path,
        fingerprint_record(&fingerprint, &names, &process_env),
    )
    .map_err(|source| BuildError::Write {
        path: fingerprint_path,
        source,
    })?;
    Ok(BuildReport {
        manifest,
        manifest_path,
        unchanged,
    })
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
    effort: zip::Effort,
    binary: &[u8],
    binary_sha256: String,
    dir: &Path,
) -> Result<Artifact, BuildError> {
    let zip_err = |source| BuildError::Zip {
        function: function.into(),
        source,
    };
    let bytes = zip::bootstrap_zip(binary, effort).map_err(zip_err)?;
    let entry = zip::read_single(&bytes).map_err(zip_err)?;
    if entry.name != zip::ENTRY || entry.mode != zip::MODE || entry.data != binary {
        return Err(zip_err(zip::ZipError::Invalid(
            "the entry does not match the binary",
        )));
    }
    limit(function, "the zip", bytes.len() as u64, MAX_ZIP_BYTES)?;
    let digest = Sha256::digest(&bytes);
    let sha256 = hex::encode(digest);
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

/// Runs cargo for `functions`: through `cargo-zigbuild` for a Lambda target (`tools`), or
/// plain cargo for the host, with nothing the tool's own build lacks (no `--target`, no
/// flags), so that it reuses that build's dependencies.
fn cargo_build(
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
            "unknown function `resize`; the functions are upload, process, metadata, images, web"
        );
        let all = selected(&BuildConfig {
            arch: BuildArch::Host,
            functions: vec![],
            opt_level: None,
        })
        .unwrap();
        assert_eq!(all, ["upload", "process", "metadata", "images", "web"]);
    }

    /// A scratch workspace with the files a handler build reads, and a few it does not.
    fn scratch_workspace(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("fp-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (path, text) in [
            ("Cargo.toml", "[workspace]\n"),
            ("Cargo.lock", "version = 4\n"),
            (".cargo/config.toml", "[alias]\n"),
            ("functions/upload/Cargo.toml", "[package]\n"),
            ("functions/upload/src/main.rs", "fn main() {}\n"),
            ("functions/shared/src/lib.rs", "\n"),
            ("functions/upload/target/debug/junk", "built\n"),
            ("README.md", "docs\n"),
            ("deployer/src/lib.rs", "\n"),
        ] {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        root
    }

    fn no_env(_: &str) -> Option<std::ffi::OsString> {
        None
    }

    /// A manifest of one artifact, `upload/a.zip` of 4 bytes.
    fn one_zip() -> Manifest {
        Manifest {
            architecture: "x86_64".into(),
            target: "x86_64-unknown-linux-musl".into(),
            profile: HOST_PROFILE.into(),
            functions: vec![Artifact {
                function: "upload".into(),
                sha256: "a".into(),
                code_sha256: "b".into(),
                zip: "upload/a.zip".into(),
                zip_bytes: 4,
                binary_bytes: 1,
                binary_sha256: "c".into(),
            }],
        }
    }

    fn inputs() -> BuildInputs {
        BuildInputs {
            profile: HOST_PROFILE.into(),
            target: "x86_64-unknown-linux-musl".into(),
            functions: vec!["upload".into(), "process".into(), "metadata".into()],
            opt_level: None,
            toolchain: "rustc 1.95.0 (abc 2026-03-21)\nhost: x86_64-unknown-linux-gnu\n".into(),
            env: Vec::new(),
        }
    }

    #[test]
    fn the_fingerprint_changes_with_every_build_input_and_nothing_else() {
        let root = scratch_workspace("inputs");
        let base = inputs().fingerprint(&root);
        assert_eq!(base.len(), 64);
        assert_eq!(inputs().fingerprint(&root), base, "not deterministic");

        // Files that are not build inputs: docs, other crates, build output.
        fs::write(root.join("README.md"), "other docs\n").unwrap();
        fs::write(root.join("deployer/src/lib.rs"), "// changed\n").unwrap();
        fs::write(root.join("functions/upload/target/debug/junk"), "x\n").unwrap();
        assert_eq!(inputs().fingerprint(&root), base, "a non-input changed it");

        // Every file input, one at a time, then put back.
        for rel in [
            "functions/upload/src/main.rs",
            "functions/shared/src/lib.rs",
            "functions/upload/Cargo.toml",
            "Cargo.toml",
            "Cargo.lock",
            ".cargo/config.toml",
        ] {
            let path = root.join(rel);
            let before = fs::read(&path).unwrap();
            fs::write(&path, [before.as_slice(), b" "].concat()).unwrap();
            assert_ne!(inputs().fingerprint(&root), base, "{rel} did not count");
            fs::write(&path, &before).unwrap();
            assert_eq!(inputs().fingerprint(&root), base, "{rel} restored");
        }
        // A new source file, and a toolchain pin that appears.
        for rel in ["functions/upload/src/new.rs", "rust-toolchain.toml"] {
            fs::write(root.join(rel), "\n").unwrap();
            assert_ne!(inputs().fingerprint(&root), base, "{rel} did not count");
            fs::remove_file(root.join(rel)).unwrap();
        }

        // Every other input.
        let variants: Vec<(&str, BuildInputs)> = vec![
            (
                "profile",
                BuildInputs {
                    profile: PROFILE.into(),
                    ..inputs()
                },
            ),
            (
                "target",
                BuildInputs {
                    target: "aarch64-unknown-linux-musl".into(),
                    ..inputs()
                },
            ),
            (
                "functions",
                BuildInputs {
                    functions: vec!["upload".into()],
                    ..inputs()
                },
            ),
            (
                "opt-level",
                BuildInputs {
                    opt_level: Some("z".into()),
                    ..inputs()
                },
            ),
            (
                "toolchain",
                BuildInputs {
                    toolchain: "rustc 1.96.0".into(),
                    ..inputs()
                },
            ),
            (
                "env",
                BuildInputs {
                    env: vec![("RUSTFLAGS".into(), "-Ctarget-cpu=native".into())],
                    ..inputs()
                },
            ),
        ];
        for (what, v) in variants {
            assert_ne!(v.fingerprint(&root), base, "{what} did not count");
        }
        // The same workspace elsewhere builds with other remapped paths.
        let moved = scratch_workspace("moved");
        assert_ne!(inputs().fingerprint(&moved), base, "the root did not count");
        let _ = fs::remove_dir_all(&root);
        let _ = fs::remove_dir_all(&moved);
    }

    #[test]
    fn a_recorded_fingerprint_is_reused_only_with_its_zips() {
        let dir = std::env::temp_dir().join(format!("fp-current-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("upload")).unwrap();
        fs::write(dir.join("upload/a.zip"), b"zip!").unwrap();
        let manifest = one_zip();
        fs::write(
            dir.join(MANIFEST),
            serde_json::to_string(&manifest).unwrap(),
        )
        .unwrap();
        let upload = vec!["upload".to_string()];
        assert_eq!(
            still_current(&dir, "f1", &upload, &no_env),
            None,
            "no fingerprint yet"
        );
        fs::write(
            dir.join(FINGERPRINT),
            fingerprint_record("f1", &[], &no_env),
        )
        .unwrap();
        assert_eq!(
            still_current(&dir, "f1", &upload, &no_env),
            Some(manifest.clone())
        );
        assert_eq!(
            still_current(&dir, "f2", &upload, &no_env),
            None,
            "other inputs"
        );
        assert_eq!(
            still_current(&dir, "f1", &["upload".into(), "process".into()], &no_env),
            None,
            "a function the manifest lacks"
        );
        fs::write(dir.join("upload/a.zip"), b"zip").unwrap();
        assert_eq!(
            still_current(&dir, "f1", &upload, &no_env),
            None,
            "a zip of another size"
        );
        fs::remove_file(dir.join("upload/a.zip")).unwrap();
        assert_eq!(
            still_current(&dir, "f1", &upload, &no_env),
            None,
            "a missing zip"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn compile_time_environment_variables_count_once_a_build_names_them() {
        let deps = std::env::temp_dir().join(format!("fp-deps-{}", std::process::id()));
        let _ = fs::remove_dir_all(&deps);
        fs::create_dir_all(&deps).unwrap();
        fs::write(
            deps.join("upload_function-1.d"),
            "/t/upload_function-1.d: functions/upload/src/lib.rs\n\n# env-dep:CARGO_PKG_NAME=upload-function\n# env-dep:FP_TEST_NOTE=hello\n",
        )
        .unwrap();
        fs::write(
            deps.join("handler_shared-3.d"),
            "/t/handler_shared-3.d: /w/functions/shared/src/lib.rs\n# env-dep:FP_TEST_UNSET\n",
        )
        .unwrap();
        fs::write(
            deps.join("serde-2.d"),
            "/t/serde-2.d: /cargo/serde/src/lib.rs\n# env-dep:FP_TEST_OTHER\n",
        )
        .unwrap();
        let names = env_deps(&deps, Path::new("/w"));
        assert_eq!(names, ["FP_TEST_NOTE", "FP_TEST_UNSET"]);
        let dir = deps.join("out");
        fs::create_dir_all(dir.join("upload")).unwrap();
        fs::write(dir.join("upload/a.zip"), b"zip!").unwrap();
        fs::write(
            dir.join(MANIFEST),
            serde_json::to_string(&one_zip()).unwrap(),
        )
        .unwrap();
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let hello = env(&[("FP_TEST_NOTE", "hello")]);
        fs::write(
            dir.join(FINGERPRINT),
            fingerprint_record("base", &names, &hello),
        )
        .unwrap();
        let upload = ["upload".to_string()];
        assert!(still_current(&dir, "base", &upload, &hello).is_some());
        for (what, e) in [
            ("a changed variable", env(&[("FP_TEST_NOTE", "changed")])),
            ("a variable that went away", env(&[])),
            (
                "a variable that appeared",
                env(&[("FP_TEST_NOTE", "hello"), ("FP_TEST_UNSET", "now set")]),
            ),
        ] {
            assert!(still_current(&dir, "base", &upload, &e).is_none(), "{what}");
        }
        let other = env(&[("FP_TEST_NOTE", "hello"), ("FP_TEST_OTHER", "x")]);
        assert!(
            still_current(&dir, "base", &upload, &other).is_some(),
            "not a handler's variable"
        );
        let _ = fs::remove_dir_all(&deps);
    }

    /// The fingerprint reads only `functions/` of the workspace's crates: no handler may
    /// depend on a workspace crate elsewhere.
    #[test]
    fn handlers_depend_only_on_crates_under_functions() {
        let root = workspace_root();
        for f in App::image_pipeline().functions {
            let crates = crates_of(&root, f.name).unwrap();
            for dir in &crates {
                assert!(dir.starts_with(&format!("{HANDLER_SOURCES}/")), "{dir}");
            }
            assert!(
                crates.contains(&format!("functions/{}", f.name)),
                "{crates:?}"
            );
            assert!(crates.contains("functions/api"), "{crates:?}");
            assert!(crates.contains("functions/shared"), "{crates:?}");
        }
        let upload = crates_of(&root, "upload").unwrap();
        assert!(upload.contains("functions/image-check"), "{upload:?}");
        assert!(!upload.contains("functions/process"), "{upload:?}");
    }

    #[test]
    fn packaging_is_deterministic_and_content_addressed() {
        let dir = std::env::temp_dir().join(format!("pkg-test-{}", std::process::id()));
        let bin = elf::tests::crafted(elf::EM_X86_64, &[1], 0);
        let a = package("upload", zip::Effort::Best, &bin, "b".into(), &dir).unwrap();
        let b = package("upload", zip::Effort::Best, &bin, "b".into(), &dir).unwrap();
        assert_eq!(a, b);
        let bytes = fs::read(dir.join(&a.zip)).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), a.sha256);
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
        let c = package("upload", zip::Effort::Best, &other, "c".into(), &dir).unwrap();
        assert_ne!(c.sha256, a.sha256);
        let left: Vec<_> = fs::read_dir(dir.join("upload"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(left.len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
