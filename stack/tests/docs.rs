//! The reference pages that restate the model are checked against it: a function's access or a
//! route added without its row (or a row left behind) fails here, not in a reader's hands.

use std::collections::{BTreeMap, BTreeSet};

use api_types::Route;
use stack::App;

const LEAST_PRIVILEGE: &str = include_str!("../../docs/least-privilege.md");
const API: &str = include_str!("../../docs/api.md");

/// The rows of the first Markdown table in `page` whose header starts with `first_column`:
/// each row's cells, trimmed.
fn table(page: &str, first_column: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut inside = false;
    for line in page.lines() {
        let cells: Vec<String> = line
            .trim()
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect();
        if !line.trim_start().starts_with('|') {
            if inside {
                break;
            }
            continue;
        }
        if !inside {
            inside = cells.first().is_some_and(|c| c == first_column);
            continue;
        }
        if !cells
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == ' '))
        {
            rows.push(cells);
        }
    }
    rows
}

/// The IAM actions named in code spans of `text` (`service:Operation`).
fn actions_in(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| {
            span.split_once(':').is_some_and(|(service, op)| {
                !service.is_empty()
                    && service
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && op.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && op.chars().all(|c| c.is_ascii_alphanumeric())
            })
        })
        .map(str::to_string)
        .collect()
}

/// Each role's actions, as its synthesized policy grants them: every function's execution
/// role (`metadata`) and every user role (`metadata-user`).
fn granted() -> BTreeMap<String, BTreeSet<String>> {
    App::image_pipeline()
        .accesses()
        .into_iter()
        .map(|role| {
            let actions = role
                .access
                .iter()
                .flat_map(|a| a.actions())
                .map(|a| a.as_str().to_string())
                .collect();
            (role.name, actions)
        })
        .collect()
}

/// What the least-privilege table says each function may do: its own rows, and the rows of
/// `each`, which every function has.
fn documented(rows: &[Vec<String>]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in rows {
        let (Some(function), Some(may)) = (row.first(), row.get(1)) else {
            continue;
        };
        out.entry(function.clone())
            .or_default()
            .extend(actions_in(may));
    }
    out
}

fn mismatches(
    granted: &BTreeMap<String, BTreeSet<String>>,
    documented: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let each = documented.get("each").cloned().unwrap_or_default();
    let mut found = Vec::new();
    for (function, actions) in granted {
        let Some(rows) = documented.get(function) else {
            found.push(format!("{function} has no row"));
            continue;
        };
        // `each` is every execution role's; a user role (`…-user`) logs nothing itself.
        let said: BTreeSet<String> = if function.ends_with("-user") {
            rows.clone()
        } else {
            rows.union(&each).cloned().collect()
        };
        for a in actions.difference(&said) {
            found.push(format!("{function} may {a}, which no row says"));
        }
        for a in said.difference(actions) {
            found.push(format!("a row says {function} may {a}, which it may not"));
        }
    }
    for function in documented.keys() {
        if function != "each" && !granted.contains_key(function) {
            found.push(format!("a row names {function}, which is no function"));
        }
    }
    found
}

#[test]
fn the_least_privilege_table_says_what_each_policy_grants() {
    let rows = table(LEAST_PRIVILEGE, "function");
    assert!(rows.len() > 10, "{rows:?}");
    let found = mismatches(&granted(), &documented(&rows));
    assert!(
        found.is_empty(),
        "docs/least-privilege.md disagrees with the model:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_least_privilege_check_sees_a_missing_and_a_stale_row() {
    let mut rows = table(LEAST_PRIVILEGE, "function");
    rows.retain(|r| !(r[0] == "metadata-user" && r[1].contains("dynamodb:GetItem")));
    rows.push(vec![
        "metadata-user".into(),
        "`dynamodb:Scan`".into(),
        String::new(),
    ]);
    let found = mismatches(&granted(), &documented(&rows));
    assert!(
        found.contains(&"metadata-user may dynamodb:GetItem, which no row says".to_string()),
        "{found:?}"
    );
    assert!(
        found.contains(&"a row says metadata-user may dynamodb:Scan, which it may not".to_string()),
        "{found:?}"
    );
}

/// The route a row of the API table is about: the method and path of its first code span,
/// before any query string or remark.
fn route_of(row: &[String]) -> Option<(String, String)> {
    let span = row.first()?.split('`').nth(1)?;
    let (method, rest) = span.split_once(' ')?;
    let path = rest.split(['?', ' ', ',']).next()?;
    Some((method.to_string(), path.to_string()))
}

#[test]
fn the_api_table_has_a_row_for_each_route_and_no_other() {
    let documented: BTreeSet<(String, String)> = table(API, "route")
        .iter()
        .filter_map(|r| route_of(r))
        .collect();
    let routes: BTreeSet<(String, String)> = Route::ALL
        .iter()
        .map(|r| (r.method().to_string(), r.path().to_string()))
        .collect();
    assert_eq!(
        documented, routes,
        "docs/api.md's table and api_types::Route::ALL disagree"
    );
}

#[test]
fn code_spans_that_are_not_actions_are_not_read_as_actions() {
    let said = actions_in("`s3:GetObject`, the ranged `GetObject`, no `s3:prefix` condition");
    assert_eq!(said, BTreeSet::from(["s3:GetObject".to_string()]));
}
