//! The fingerprint of everything a build reads (sources, lock file, profile, toolchain,
//! build settings, and the compile-time variables dep-info names), so that an unchanged
//! build skips cargo; and which workspace crates a function is built from.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::{BuildError, Manifest, load_manifest};

/// Where the fingerprint of the last successful build's inputs is kept, beside its manifest.
pub(super) const FINGERPRINT: &str = "inputs.sha256";
/// Changes whenever what the fingerprint covers changes.
const FINGERPRINT_FORMAT: &str = "2";

/// The workspace files a handler build reads besides the handlers' own crates: the manifests,
/// the lock file, cargo's configuration, a toolchain pin, and the pinned zig.
pub const BUILD_FILES: &[&str] = &[
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
pub(super) fn build_env() -> Vec<(String, String)> {
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
pub(super) fn toolchain_identity(root: &Path) -> String {
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
pub fn source_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
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
pub(super) type Env = dyn Fn(&str) -> Option<std::ffi::OsString>;

pub(super) fn process_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name)
}

/// The fingerprint of a build: `base` ([`BuildInputs::fingerprint`]) and the current values
/// of the environment variables the handlers' code reads at compile time (`env!`,
/// `option_env!`), which only the last build's dep-info names.
pub(super) fn with_env_deps(base: &str, names: &[String], env: &Env) -> String {
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
pub(super) fn fingerprint_record(base: &str, names: &[String], env: &Env) -> String {
    let mut s = format!("{}\n", with_env_deps(base, names, env));
    for n in names {
        s.push_str(&format!("env {n}\n"));
    }
    s
}

/// The environment variables that rustc's dep-info (`# env-dep:NAME`) says the crates under
/// `root/functions` read at compile time, except cargo's own `CARGO_*` (which follow from the
/// manifests). Dep-info names a workspace crate's sources relative to `root`.
pub(super) fn env_deps(deps_dir: &Path, root: &Path) -> Vec<String> {
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
pub(super) fn still_current(
    dir: &Path,
    base: &str,
    functions: &[String],
    env: &Env,
) -> Option<Manifest> {
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
