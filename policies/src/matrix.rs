//! The expected allow/deny matrix of each function: every request it must be allowed, and
//! near-miss probes it must be denied. Checked offline against the synthesized documents and,
//! after a deploy, against the live roles with IAM `SimulatePrincipalPolicy`.

use std::collections::BTreeSet;

use serde::Serialize;
use thiserror::Error;

use crate::access::{FunctionAccess, Request};
use crate::arn::{Bindings, ResolveError};
use crate::eval::{Decision, evaluate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
}

impl Expect {
    pub fn holds(self, d: Decision) -> bool {
        match self {
            Expect::Allow => d.is_allowed(),
            Expect::Deny => !d.is_allowed(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub request: Request,
    pub expect: Expect,
    /// Why this row is in the matrix, for reports.
    pub why: String,
}

/// Builds the matrix of `function`; `all` is every function of the app (it may include
/// `function` itself), whose requests become deny probes unless `function` makes them too.
pub fn matrix(function: &FunctionAccess, all: &[FunctionAccess]) -> Vec<Check> {
    let own: BTreeSet<Request> = function.requests().into_iter().collect();
    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for request in &own {
        seen.insert(request.clone());
        rows.push(Check {
            request: request.clone(),
            expect: Expect::Allow,
            why: "needed by the function".into(),
        });
    }
    let near = function
        .access
        .iter()
        .flat_map(|a| a.near_misses())
        .map(|(r, why)| (r, why.to_string()));
    let others = all
        .iter()
        .filter(|f| f.name != function.name)
        .flat_map(|f| {
            f.requests()
                .into_iter()
                .map(move |r| (r, format!("needed by {} only", f.name)))
        });
    for (request, why) in near.chain(others) {
        if own.contains(&request) || !seen.insert(request.clone()) {
            continue;
        }
        rows.push(Check {
            request,
            expect: Expect::Deny,
            why,
        });
    }
    rows
}

/// A matrix row whose outcome differs from what it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub function: String,
    pub action: String,
    pub resource: String,
    pub expect: Expect,
    pub decision: Decision,
    pub why: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MatrixError {
    #[error("cannot resolve the matrix of {function}: {source}")]
    Resolve {
        function: String,
        source: ResolveError,
    },
}

/// Evaluates `function`'s matrix against its own synthesized policy, offline.
pub fn violations(
    function: &FunctionAccess,
    all: &[FunctionAccess],
    bindings: &Bindings,
) -> Result<Vec<Violation>, MatrixError> {
    let wrap = |source| MatrixError::Resolve {
        function: function.name.clone(),
        source,
    };
    let doc = function.policy().resolve(bindings).map_err(wrap)?;
    let mut out = Vec::new();
    for check in matrix(function, all) {
        let resource = check.request.resource.resolve(bindings).map_err(wrap)?;
        let decision = evaluate(&doc, check.request.action.as_str(), &resource);
        if !check.expect.holds(decision) {
            out.push(Violation {
                function: function.name.clone(),
                action: check.request.action.to_string(),
                resource,
                expect: check.expect,
                decision,
                why: check.why,
            });
        }
    }
    Ok(out)
}
