//! The architecture's invariants (ARCHITECTURE.md), checked over the source tree: a change
//! that breaks one fails `cargo test`, not a later review.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use deployer::util::workspace_root;

mod layers;
mod lengths;

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

/// Every `.rs` file of the workspace's crates.
fn workspace_sources() -> Vec<PathBuf> {
    let root = workspace_root();
    [
        "policies",
        "stack",
        "deployer",
        "xtask",
        "functions",
        "local",
    ]
    .iter()
    .flat_map(|dir| rust_files(&root.join(dir)))
    .collect()
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
    for krate in [
        "api", "shared", "upload", "process", "metadata", "images", "delete", "web",
    ] {
        let toml = read(&root.join("functions").join(krate).join("Cargo.toml"));
        for forbidden in ["stack", "deployer", "policies", "xtask"] {
            let dep = toml.lines().any(|l| {
                l.starts_with(&format!("{forbidden}.")) || l.starts_with(&format!("{forbidden} ="))
            });
            assert!(!dep, "functions/{krate} depends on {forbidden}");
        }
    }
}

/// The code of a source file before its unit tests, which may spell the names the model
/// produces to check them.
fn before_tests(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text)
}

/// Output keys and derived names are spelled only in their home: `stack/src/app.rs`, and for
/// the artifact key layout `deployer/src/cloud/assets.rs`.
#[test]
fn names_are_defined_only_in_the_app_model() {
    let root = workspace_root();
    let app = root.join("stack").join("src").join("app.rs");
    let assets = root
        .join("deployer")
        .join("src")
        .join("cloud")
        .join("assets.rs");
    let spellings = [
        ("\"ApiUrl\"", &app),
        ("\"UploadsBucketName\"", &app),
        ("\"ImagesTableName\"", &app),
        ("\"WorkQueueUrl\"", &app),
        ("\"DeadLetterQueueUrl\"", &app),
        ("FunctionName\"", &app),
        ("RoleArn\"", &app),
        ("-assets-", &app),
        // A function role's physical name, a function's ARN, an artifact's key.
        ("FunctionRole-", &app),
        (":function:", &app),
        ("/lambda/{", &assets),
    ];
    let mut found = Vec::new();
    for f in workspace_sources() {
        // Tests may check the names the model produces; this file lists them.
        let is_test = f.components().any(|c| c.as_os_str() == "tests");
        if is_test || f.ends_with("tidy/mod.rs") {
            continue;
        }
        let text = read(&f);
        for (s, home) in spellings {
            if f != *home && before_tests(&text).contains(s) {
                found.push(format!("{} spells {s}", f.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "names outside their home:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checks_can_fail() {
    // The scanners see what they look for: this file spells every name it forbids.
    let me = read(
        &workspace_root()
            .join("xtask")
            .join("src")
            .join("tidy")
            .join("mod.rs"),
    );
    assert!(me.contains("-assets-") && me.contains("eprintln!"));
    // A hand-written role name, as escalation checks once spelled it, is caught.
    let planted = "let role = \"role/image-pipeline-dev-UploadFunctionRole-ABC123\";";
    assert!(before_tests(planted).contains("FunctionRole-"));
    assert!(
        !before_tests("#[cfg(test)]\nmod tests { \"FunctionRole-\" }").contains("FunctionRole-")
    );
    assert!(!rust_files(&workspace_root().join("deployer").join("src")).is_empty());
}

/// `cargo tree -f '{p} {f}' --prefix none` output: each registry crate (`name vX.Y.Z`) with
/// the feature lists it is built with (more than one when it is built for both the host, as a
/// proc macro's dependency, and the target).
fn features_by_crate(tree: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in tree.lines() {
        // Workspace crates carry their path; only registry crates are shared builds.
        if line.contains(" (/") {
            continue;
        }
        let line = line.replace(" (*)", "").replace(" (proc-macro)", "");
        let mut words = line.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let features = words.next().unwrap_or_default().to_string();
        out.entry(format!("{name} {version}"))
            .or_default()
            .insert(features);
    }
    out
}

/// The crates that two builds both compile with different features: each is compiled twice.
/// One feature list missing from the other build is allowed when the rest agree (a crate
/// built for the host as well, by a proc macro only one of them has).
fn disagreements(builds: &[(&str, BTreeMap<String, BTreeSet<String>>)]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, (a, fa)) in builds.iter().enumerate() {
        for (b, fb) in &builds[i + 1..] {
            for (krate, la) in fa {
                let Some(lb) = fb.get(krate) else { continue };
                if !la.is_subset(lb) && !lb.is_subset(la) {
                    found.push(format!("{krate}: {a} {la:?}, {b} {lb:?}"));
                }
            }
        }
    }
    found
}

/// The tool (`cargo xtask`), the label service and the local handlers are three cargo
/// invocations in the same profile and target; `functions/host-deps` makes them resolve
/// their shared dependencies alike, so each reuses what the first compiled. A dependency
/// change that breaks this would quietly make a first `deploy --local` compile the AWS SDK
/// three times.
#[test]
fn host_builds_agree_on_the_features_of_shared_dependencies() {
    let root = workspace_root();
    let tree = |packages: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.current_dir(&root)
            .args(["tree", "--locked", "--offline", "-e", "normal"]);
        for p in packages {
            cmd.args(["--package", p]);
        }
        let out = cmd
            .args(["--format", "{p} {f}", "--prefix", "none"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo tree: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        features_by_crate(&String::from_utf8_lossy(&out.stdout))
    };
    let builds = [
        ("the tool", tree(&["xtask"])),
        ("the label service", tree(&["local-labels"])),
        (
            "the handlers",
            tree(&[
                "upload-function",
                "process-function",
                "metadata-function",
                "images-function",
                "delete-function",
            ]),
        ),
    ];
    assert!(builds.iter().all(|(_, b)| b.len() > 100));
    let found = disagreements(&builds);
    assert!(
        found.is_empty(),
        "host builds compile these differently; add each to functions/host-deps/Cargo.toml \
         with the union of its features:\n{}",
        found.join("\n")
    );
}

#[test]
fn disagreements_are_seen() {
    let tool = features_by_crate(
        "xtask v0.1.0 (/w/xtask)\ntokio v1.0.0 rt,time\nserde v1.0.0 std\nsyn v2.0.0 full (proc-macro)\n",
    );
    let handlers = features_by_crate(
        "tokio v1.0.0 rt\nserde v1.0.0 std\nserde v1.0.0 derive,std (*)\nsyn v2.0.0 full\n",
    );
    assert!(!tool.contains_key("xtask v0.1.0"));
    let found = disagreements(&[("tool", tool), ("handlers", handlers)]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("tokio v1.0.0: tool {\"rt,time\"}"));
}
