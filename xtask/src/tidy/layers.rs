//! The deployer's layers (ARCHITECTURE.md, "Layers"): a module imports only from its own
//! folder or a lower layer, no files or folders import each other in a circle, and `build/`,
//! with everything it imports, never names the AWS SDK.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use deployer::util::workspace_root;

use super::{read, rust_files};

/// The deployer's folders (and top-level files) from the bottom up. A module may import from
/// its own layer or a lower one.
pub const LAYERS: &[&[&str]] = &[
    &["util", "progress"],
    &["tools"],
    &["build"],
    &["cloud"],
    &["local"],
    &["ops"],
    &["observe"],
    &["verify"],
];

/// Crate paths that name the AWS SDK.
const SDK: &[&str] = &[
    "aws_sdk_",
    "aws_smithy_",
    "aws_config",
    "aws_credential_types",
    "aws_runtime",
];

fn rank(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|l| l.contains(&top))
}

fn folder(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// The deployer's sources by module path: `cloud::cfn`, `build` for `build/mod.rs`.
pub fn sources() -> BTreeMap<String, String> {
    let src = workspace_root().join("deployer").join("src");
    rust_files(&src)
        .into_iter()
        .filter_map(|f| {
            let module = module_of(&src, &f)?;
            Some((module, read(&f)))
        })
        .collect()
}

fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] {
        return None;
    }
    Some(parts.join("::"))
}

/// The code of a file without its comments, so a path in a doc comment is not an import.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::…` path in `text`, with `crate::{a, b::{c, d}}` groups expanded.
pub fn crate_paths(text: &str) -> Vec<String> {
    let text = code(text);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        expand("", rest, &mut out);
    }
    out
}

/// Expands the path at the start of `text` (after `prefix`) into `out`.
fn expand(prefix: &str, text: &str, out: &mut Vec<String>) {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let path = text[..end].trim_end_matches(':');
    let full = format!("{prefix}{path}");
    if text[end..].starts_with('{') && (end == 0 || text[..end].ends_with("::")) {
        let inner = if full.is_empty() {
            String::new()
        } else {
            format!("{full}::")
        };
        for item in group_items(&text[end + 1..]) {
            expand(&inner, item.trim_start(), out);
        }
    } else if !full.is_empty() {
        out.push(full);
    }
}

/// The top-level items of a `{…}` group, `text` starting just after its `{`.
fn group_items(text: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0usize, 0usize, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&text[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// The module a path names: its longest prefix that is a module of `modules`.
fn resolve<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .find_map(|n| modules.get(&segments[..n].join("::")))
}

/// Which module imports which, from the sources.
pub fn edges(sources: &BTreeMap<String, String>) -> BTreeSet<(String, String)> {
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let mut out = BTreeSet::new();
    for (from, text) in sources {
        for path in crate_paths(text) {
            if let Some(to) = resolve(&path, &modules).filter(|to| *to != from) {
                out.insert((from.clone(), to.clone()));
            }
        }
    }
    out
}

/// Each import that points up. Two folders of one layer (`util`, `progress`) may import each
/// other one way; a circle between them is a folder circle.
pub fn upward(edges: &BTreeSet<(String, String)>) -> Vec<String> {
    edges
        .iter()
        .filter(|(from, to)| match (rank(from), rank(to)) {
            (Some(a), Some(b)) => b > a,
            _ => true,
        })
        .map(|(from, to)| format!("{from} imports {to}"))
        .collect()
}

/// The circles of a graph: each strongly connected set of more than one node.
pub fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
        next.entry(b).or_default();
    }
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(n) = todo.pop() {
            for m in next.get(n).into_iter().flatten() {
                if seen.insert(*m) {
                    todo.push(m);
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&str, BTreeSet<&str>> = next.keys().map(|n| (*n, reach(n))).collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for (n, r) in &reached {
        let circle: Vec<String> = r
            .iter()
            .filter(|m| reached[**m].contains(n))
            .map(|m| m.to_string())
            .collect();
        if circle.len() > 1 {
            found.insert(circle);
        }
    }
    found.into_iter().collect()
}

/// The same graph between folders.
fn folders(edges: &BTreeSet<(String, String)>) -> BTreeSet<(String, String)> {
    edges
        .iter()
        .map(|(a, b)| (folder(a).to_string(), folder(b).to_string()))
        .filter(|(a, b)| a != b)
        .collect()
}

/// Modules under `build` and every module they reach that names the AWS SDK.
pub fn sdk_in_build(
    sources: &BTreeMap<String, String>,
    edges: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let mut reach: BTreeSet<&str> = sources
        .keys()
        .filter(|m| folder(m) == "build")
        .map(String::as_str)
        .collect();
    loop {
        let more: Vec<&str> = edges
            .iter()
            .filter(|(a, b)| reach.contains(a.as_str()) && !reach.contains(b.as_str()))
            .map(|(_, b)| b.as_str())
            .collect();
        if more.is_empty() {
            break;
        }
        reach.extend(more);
    }
    reach
        .into_iter()
        .filter_map(|m| {
            let text = code(&sources[m]);
            let named: Vec<&str> = SDK.iter().copied().filter(|s| text.contains(s)).collect();
            (!named.is_empty()).then(|| format!("{m} names {}", named.join(", ")))
        })
        .collect()
}

/// Everything wrong with the layering of `sources`, one line each.
pub fn violations(sources: &BTreeMap<String, String>) -> Vec<String> {
    let e = edges(sources);
    let mut out = upward(&e);
    for c in cycles(&e) {
        out.push(format!("files in a circle: {}", c.join(", ")));
    }
    for c in cycles(&folders(&e)) {
        out.push(format!("folders in a circle: {}", c.join(", ")));
    }
    out.extend(sdk_in_build(sources, &e));
    for m in sources.keys().filter(|m| rank(m).is_none()) {
        out.push(format!(
            "{m} is in no layer: add its folder to tidy::layers::LAYERS"
        ));
    }
    out
}

#[test]
fn the_deployer_points_down() {
    let sources = sources();
    assert!(sources.len() > 20, "{:?}", sources.keys());
    let found = violations(&sources);
    assert!(found.is_empty(), "layer breaks:\n{}", found.join("\n"));
}

#[test]
fn planted_breaks_are_caught() {
    let mut sources = sources();
    let mut plant = |module: &str, line: &str| {
        let text = sources.get_mut(module).unwrap();
        text.push_str(line);
    };
    // The imports that made today's circle: the bottom layer naming a stack event, and two
    // commands importing each other.
    plant("progress", "\nuse crate::cloud::cfn::StackEvent;\n");
    plant(
        "ops::bootstrap",
        "\nuse crate::ops::deploy::DeployReport;\n",
    );
    plant("build::zip", "\nuse aws_sdk_s3::Client;\n");
    plant(
        "cloud::aws",
        "\nfn f() { crate::local::{emulator::LocalConfig, tls}; }\n",
    );
    let found = violations(&sources);
    let has = |s: &str| found.iter().any(|f| f.contains(s));
    assert!(has("progress imports cloud::cfn"), "{found:#?}");
    assert!(has("cloud::aws imports local::emulator"), "{found:#?}");
    assert!(has("cloud::aws imports local::tls"), "{found:#?}");
    assert!(
        found.iter().any(|f| f.starts_with("files in a circle")
            && f.contains("ops::bootstrap")
            && f.contains("ops::deploy")),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|f| f.starts_with("folders in a circle")
            && f.contains("cloud")
            && f.contains("local")),
        "{found:#?}"
    );
    assert!(has("build::zip names aws_sdk_"), "{found:#?}");
}

#[test]
fn paths_are_read_from_code_only() {
    let text =
        "use crate::{a::{b, c::D}, e};\n// crate::commented\nlet x = crate::f::g(1);\nmycrate::h;";
    assert_eq!(crate_paths(text), ["a::b", "a::c::D", "e", "f::g"]);
}
