//! Lambda artifacts: builds the handlers as static musl binaries in the `lambda` profile for
//! AWS, or as host binaries in cargo's `dev` profile for the local environment (sharing what
//! the tool's own build compiled), checks each binary (machine, static for Lambda, size), and
//! packages it as a deterministic zip named by its SHA-256. A manifest records what was built;
//! a rebuild that changes nothing re-zips nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stack::{App, Architecture};
use thiserror::Error;

mod cargo;
pub mod elf;
mod fingerprint;
mod package;
pub mod toolchain;
pub mod zip;

use cargo::{cargo_build, host_triple};
pub use fingerprint::{BUILD_FILES, BuildInputs, HANDLER_SOURCES, crates_of, source_files};
use fingerprint::{
    FINGERPRINT, build_env, env_deps, fingerprint_record, process_env, still_current,
    toolchain_identity,
};
use package::{limit, package};

use crate::progress::Progress;
use crate::util::{FileError, workspace_root};
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
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot serialise the build manifest {path}: {source}")]
    Manifest {
        path: PathBuf,
        source: serde_json::Error,
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

/// What a build will do, settled before anything runs: the functions to package, where,
/// for which target and profile, and the fingerprint of everything the build reads.
struct BuildPlan {
    arch: Architecture,
    functions: Vec<String>,
    profile: &'static str,
    root: PathBuf,
    dir: PathBuf,
    target: String,
    fingerprint: String,
}

fn plan(cfg: &BuildConfig) -> Result<BuildPlan, BuildError> {
    let arch = cfg.arch.resolve()?;
    if cfg.arch == BuildArch::Host && cfg.opt_level.is_some() {
        return Err(BuildError::HostOptLevel);
    }
    let functions = selected(cfg)?;
    let profile = cfg.arch.profile();
    let root = workspace_root();
    let toolchain = toolchain_identity(&root);
    let target = match cfg.arch {
        BuildArch::Lambda(a) => target_triple(a).to_string(),
        BuildArch::Host => host_triple(&toolchain).unwrap_or("host").to_string(),
    };
    let inputs = BuildInputs {
        profile: profile.into(),
        target: target.clone(),
        functions: functions.clone(),
        opt_level: cfg.opt_level.clone(),
        toolchain,
        env: build_env(),
    };
    Ok(BuildPlan {
        arch,
        fingerprint: inputs.fingerprint(&root),
        dir: cfg.arch.artifacts_dir()?,
        functions,
        profile,
        root,
        target,
    })
}

/// Compiles every handler. Cargo is always given every function: features are unified over
/// the packages of one invocation, so building one alone would compile its dependencies
/// differently (slower, and a binary other than the one a full build makes). Cargo
/// recompiles only what changed; only the selected functions are packaged.
fn compile(cfg: &BuildConfig, plan: &BuildPlan, progress: &dyn Progress) -> Result<(), BuildError> {
    // Host builds need nothing beyond the toolchain that built this tool.
    let tools = match cfg.arch {
        BuildArch::Lambda(_) => Some(toolchain::ensure(&plan.target, progress)?),
        BuildArch::Host => None,
    };
    let every: Vec<String> = selected(&BuildConfig {
        functions: Vec::new(),
        ..cfg.clone()
    })?;
    progress.step(&format!(
        "compiling {} for {} (profile {}); packaging {}",
        every.join(", "),
        plan.target,
        plan.profile,
        plan.functions.join(", ")
    ));
    cargo_build(
        tools.as_ref(),
        &plan.target,
        plan.profile,
        &every,
        cfg.opt_level.as_deref(),
        progress,
    )
}

/// Checks one function's binary, and zips it unless the last build's zip holds the same
/// binary: the new artifact, or `None` when it is unchanged.
fn package_one(
    cfg: &BuildConfig,
    plan: &BuildPlan,
    function: &str,
    previous: Option<&Artifact>,
    progress: &dyn Progress,
) -> Result<Option<Artifact>, BuildError> {
    let path = cfg.arch.binaries_dir()?.join(function);
    let binary = fs::read(&path).map_err(|source| BuildError::Read {
        function: function.to_string(),
        path: path.clone(),
        source,
    })?;
    progress.function_step(function, "checking the binary");
    cfg.arch
        .check(&binary, plan.arch)
        .map_err(|source| BuildError::Binary {
            function: function.to_string(),
            source,
        })?;
    limit(
        function,
        "the binary",
        binary.len() as u64,
        MAX_UNZIPPED_BYTES,
    )?;
    let binary_sha256 = hex::encode(Sha256::digest(&binary));
    if let Some(prev) = previous
        && prev.binary_sha256 == binary_sha256
        && plan.dir.join(&prev.zip).is_file()
    {
        progress.function_step(function, "unchanged: the zip is already up to date");
        return Ok(None);
    }
    progress.function_step(function, "packaging bootstrap.zip");
    let effort = cfg.arch.zip_effort();
    package(function, effort, &binary, binary_sha256, &plan.dir).map(Some)
}

/// Writes the manifest, then the fingerprint that lets the next build skip cargo.
fn record(cfg: &BuildConfig, plan: &BuildPlan, manifest: &Manifest) -> Result<PathBuf, BuildError> {
    let manifest_path = plan.dir.join(MANIFEST);
    let mut json =
        serde_json::to_string_pretty(manifest).map_err(|source| BuildError::Manifest {
            path: manifest_path.clone(),
            source,
        })?;
    json.push('\n');
    fs::write(&manifest_path, json).map_err(|source| FileError::Write {
        path: manifest_path.clone(),
        source,
    })?;
    let fingerprint_path = plan.dir.join(FINGERPRINT);
    let names = env_deps(&cfg.arch.binaries_dir()?.join("deps"), &plan.root);
    fs::write(
        &fingerprint_path,
        fingerprint_record(&plan.fingerprint, &names, &process_env),
    )
    .map_err(|source| FileError::Write {
        path: fingerprint_path,
        source,
    })?;
    Ok(manifest_path)
}

/// Builds in phases: plan (what, for which target, and the inputs' fingerprint), skip when
/// nothing changed since the last build, compile, package each selected function, record the
/// manifest and fingerprint.
pub fn build(cfg: &BuildConfig, progress: &dyn Progress) -> Result<BuildReport, BuildError> {
    let plan = plan(cfg)?;
    let functions = &plan.functions;
    if let Some(manifest) = still_current(&plan.dir, &plan.fingerprint, functions, &process_env) {
        progress.step(&format!(
            "{} for {} up to date: no source, lock file, profile, toolchain or build setting changed since the last build",
            functions.join(", "),
            plan.target
        ));
        return Ok(BuildReport {
            manifest,
            manifest_path: plan.dir.join(MANIFEST),
            unchanged: functions.clone(),
        });
    }
    // A build that fails, or is interrupted, must not leave the old fingerprint standing.
    let _ = fs::remove_file(plan.dir.join(FINGERPRINT));
    compile(cfg, &plan, progress)?;

    let previous: BTreeMap<String, Artifact> = load_manifest(&plan.dir)
        .map(|m| {
            m.functions
                .into_iter()
                .map(|a| (a.function.clone(), a))
                .collect()
        })
        .unwrap_or_default();
    let mut artifacts = previous.clone();
    let mut unchanged = Vec::new();
    for function in functions {
        match package_one(cfg, &plan, function, previous.get(function), progress)? {
            Some(artifact) => {
                artifacts.insert(function.clone(), artifact);
            }
            None => unchanged.push(function.clone()),
        }
    }
    let manifest = Manifest {
        architecture: plan.arch.as_str().into(),
        target: plan.target.clone(),
        profile: plan.profile.into(),
        functions: artifacts.into_values().collect(),
    };
    let manifest_path = record(cfg, &plan, &manifest)?;
    Ok(BuildReport {
        manifest,
        manifest_path,
        unchanged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

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
            "unknown function `resize`; the functions are upload, process, metadata, images, delete, web"
        );
        let all = selected(&BuildConfig {
            arch: BuildArch::Host,
            functions: vec![],
            opt_level: None,
        })
        .unwrap();
        assert_eq!(
            all,
            ["upload", "process", "metadata", "images", "delete", "web"]
        );
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
