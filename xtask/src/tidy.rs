//! The architecture's invariants (ARCHITECTURE.md), checked over the source tree: a change
//! that breaks one fails `cargo test`, not a later review.

use std::fs;
use std::path::{Path, PathBuf};

use deployer::pyenv::workspace_root;

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The libraries print nothing: they report through `progress::Progress` and typed results.
#[test]
fn libraries_never_print() {
    let root = workspace_root();
    let mut found = Vec::new();
    for krate in ["policies", "stack", "deployer"] {
        for f in rust_files(&root.join(krate).join("src")) {
            for (n, line) in read(&f).lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                if ["println!", "eprintln!", "print!(", "eprint!(", "dbg!("]
                    .iter()
                    .any(|m| code.contains(m))
                {
                    found.push(format!("{}:{}: {code}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "printing in a library:\n{}",
        found.join("\n")
    );
}

/// Handlers are built for Lambda and depend on nothing of the deployer's side.
#[test]
fn handlers_never_depend_on_the_deployer_side() {
    let root = workspace_root();
    for krate in ["api", "shared", "upload", "process", "metadata"] {
        let toml = read(&root.join("functions").join(krate).join("Cargo.toml"));
        for forbidden in ["stack", "deployer", "policies", "xtask"] {
            let dep = toml.lines().any(|l| {
                l.starts_with(&format!("{forbidden}.")) || l.starts_with(&format!("{forbidden} ="))
            });
            assert!(!dep, "functions/{krate} depends on {forbidden}");
        }
    }
}

/// Output keys and derived names are spelled only in `stack/src/app.rs`.
#[test]
fn names_are_defined_only_in_the_app_model() {
    let root = workspace_root();
    let spellings = [
        "\"ApiUrl\"",
        "\"UploadsBucketName\"",
        "\"ImagesTableName\"",
        "\"ProcessFailureQueueUrl\"",
        "FunctionName\"",
        "RoleArn\"",
        "-assets-",
    ];
    let home = root.join("stack").join("src").join("app.rs");
    let mut found = Vec::new();
    for dir in [
        "policies",
        "stack",
        "deployer",
        "xtask",
        "functions",
        "local",
    ] {
        for f in rust_files(&root.join(dir)) {
            // Tests may check the names the model produces; this file lists them.
            let is_test = f.components().any(|c| c.as_os_str() == "tests");
            if f == home || is_test || f.ends_with("tidy.rs") {
                continue;
            }
            let text = read(&f);
            for s in spellings {
                if text.contains(s) {
                    found.push(format!("{} spells {s}", f.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "names outside stack::app:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checks_can_fail() {
    // The scanners see what they look for: this file spells every name it forbids.
    let me = read(&workspace_root().join("xtask").join("src").join("tidy.rs"));
    assert!(me.contains("-assets-") && me.contains("eprintln!"));
    assert!(!rust_files(&workspace_root().join("deployer").join("src")).is_empty());
}
