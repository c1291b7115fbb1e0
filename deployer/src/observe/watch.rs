//! What `watch` watches: the files a handler build reads, and which functions a change to
//! some of them affects. The loop itself (poll, rebuild, deploy) is the caller's.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use stack::App;

use crate::build::{self, BUILD_FILES, BuildError, HANDLER_SOURCES};

/// Each build input's modification time and size, by path relative to the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<PathBuf, (SystemTime, u64)>);

impl Snapshot {
    /// The build inputs under `root` as they are now (the files the build fingerprint reads).
    pub fn take(root: &Path) -> Self {
        let mut files: Vec<PathBuf> = BUILD_FILES.iter().map(PathBuf::from).collect();
        build::source_files(root, Path::new(HANDLER_SOURCES), &mut files);
        Snapshot(
            files
                .into_iter()
                .filter_map(|rel| {
                    let m = fs::metadata(root.join(&rel)).ok()?;
                    Some((rel, (m.modified().ok()?, m.len())))
                })
                .collect(),
        )
    }

    /// Paths added, removed or modified since `before`.
    pub fn changed_since(&self, before: &Snapshot) -> Vec<PathBuf> {
        let keys: BTreeSet<&PathBuf> = self.0.keys().chain(before.0.keys()).collect();
        keys.into_iter()
            .filter(|k| self.0.get(*k) != before.0.get(*k))
            .cloned()
            .collect()
    }

    /// When the latest of `paths` was written (a removed file counts as now).
    pub fn saved_at(&self, paths: &[PathBuf]) -> SystemTime {
        paths
            .iter()
            .map(|p| self.0.get(p).map_or_else(SystemTime::now, |(t, _)| *t))
            .max()
            .unwrap_or_else(SystemTime::now)
    }
}

/// The functions whose build reads any of `changed`: a file of one of their crates, or a
/// workspace-wide build file (every function).
pub fn affected(root: &Path, changed: &[PathBuf]) -> Result<Vec<String>, BuildError> {
    let everything = changed
        .iter()
        .any(|c| BUILD_FILES.iter().any(|b| c == Path::new(b)));
    let mut out = Vec::new();
    for f in App::image_pipeline().functions {
        let crates = build::crates_of(root, f.name)?;
        let hit = everything
            || changed
                .iter()
                .any(|c| crates.iter().any(|dir| c.starts_with(dir)));
        if hit {
            out.push(f.name.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::workspace_root;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn a_change_affects_the_functions_built_from_it() {
        let root = workspace_root();
        let cases: &[(&[&str], &[&str])] = &[
            (&["functions/upload/src/lib.rs"], &["upload"]),
            (&["functions/process/src/lib.rs"], &["process"]),
            (&["functions/metadata/Cargo.toml"], &["metadata"]),
            // Shared crates: everyone that depends on them.
            (
                &["functions/api/src/lib.rs"],
                &["upload", "process", "metadata", "images", "delete", "web"],
            ),
            (
                &["functions/shared/src/lib.rs"],
                &["upload", "process", "metadata", "images", "delete", "web"],
            ),
            // A crate only some functions are built from.
            (
                &["functions/image-check/src/lib.rs"],
                &["upload", "process"],
            ),
            (&["functions/images/src/lib.rs"], &["images"]),
            (&["functions/delete/src/lib.rs"], &["delete"]),
            // The page is compiled into the web function.
            (&["functions/web/src/page.js"], &["web"]),
            // Workspace-wide build inputs.
            (
                &["Cargo.lock"],
                &["upload", "process", "metadata", "images", "delete", "web"],
            ),
            (
                &[".cargo/config.toml"],
                &["upload", "process", "metadata", "images", "delete", "web"],
            ),
            // Two at once.
            (
                &[
                    "functions/upload/src/lib.rs",
                    "functions/metadata/src/lib.rs",
                ],
                &["upload", "metadata"],
            ),
            // Crates no function is built from.
            (&["functions/contract/tests/contract.rs"], &[]),
        ];
        for (changed, expected) in cases {
            let changed: Vec<PathBuf> = changed.iter().map(|c| p(c)).collect();
            let got = affected(&root, &changed).unwrap();
            assert_eq!(got, *expected, "{changed:?}");
        }
        let check = affected(&root, &[p("functions/image-check/src/lib.rs")]).unwrap();
        assert!(check.contains(&"upload".to_string()), "{check:?}");
    }

    #[test]
    fn snapshots_see_added_removed_and_modified_files() {
        let root = std::env::temp_dir().join(format!("watch-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("functions/upload/src")).unwrap();
        fs::write(root.join("Cargo.lock"), "a").unwrap();
        fs::write(root.join("functions/upload/src/lib.rs"), "a").unwrap();
        let before = Snapshot::take(&root);
        assert!(Snapshot::take(&root).changed_since(&before).is_empty());
        fs::write(root.join("functions/upload/src/lib.rs"), "ab").unwrap();
        fs::write(root.join("functions/upload/src/new.rs"), "").unwrap();
        fs::remove_file(root.join("Cargo.lock")).unwrap();
        fs::create_dir_all(root.join("functions/upload/target")).unwrap();
        fs::write(root.join("functions/upload/target/out"), "x").unwrap();
        let after = Snapshot::take(&root);
        assert_eq!(
            after.changed_since(&before),
            [
                p("Cargo.lock"),
                p("functions/upload/src/lib.rs"),
                p("functions/upload/src/new.rs")
            ]
        );
        let _ = fs::remove_dir_all(&root);
    }
}
