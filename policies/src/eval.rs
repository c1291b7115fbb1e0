//! A small evaluator of identity policies: does a resolved document allow an action on a
//! resource? It implements IAM's rules for what this project writes (explicit deny wins, then
//! allow, else implicit deny; `*` and `?` wildcards, actions case-insensitive, resources
//! case-sensitive). Without a request context ([`evaluate`]) conditions cannot be known, so a
//! conditional statement is taken at its most restrictive: a conditional `Allow` grants
//! nothing, a conditional `Deny` applies. With one ([`evaluate_in`]) conditions are evaluated as
//! IAM does for the operators this project writes (`StringEquals`, `StringNotEquals`,
//! `StringLike`, `StringNotLike`, `ArnEquals`, `ArnLike`, `Bool`, each with `IfExists`); a key
//! the context lacks fails an affirmative operator and satisfies a negated one, and an
//! operator outside that list never matches (an `Allow` then grants nothing, a `Deny` applies).

use std::collections::BTreeMap;

use crate::document::{Condition, Effect, PolicyDocument};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Decision {
    Allowed,
    ExplicitDeny,
    ImplicitDeny,
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        self == Decision::Allowed
    }
}

/// IAM wildcard match: `*` is any run of characters (`:` and `/` included), `?` is one.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    // Iterative glob match with backtracking to the last `*`: linear in practice, no recursion.
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

pub fn action_matches(pattern: &str, action: &str) -> bool {
    wildcard_match(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
}

pub fn evaluate(doc: &PolicyDocument<String>, action: &str, resource: &str) -> Decision {
    decide(doc, action, resource, |_, effect| effect == Effect::Deny)
}

/// The condition keys of one request and their values (keys compared case-insensitively).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context(BTreeMap<String, Vec<String>>);

impl Context {
    pub fn new() -> Self {
        Self::default()
    }

    /// The context with `key` set to `value`.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.0
            .entry(key.to_ascii_lowercase())
            .or_default()
            .push(value.to_string());
        self
    }

    fn get(&self, key: &str) -> Option<&[String]> {
        self.0.get(&key.to_ascii_lowercase()).map(Vec::as_slice)
    }

    /// Every key and its values, for passing to another evaluator (IAM's simulator).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Whether every operator block of `condition` holds in this context.
    pub fn satisfies(&self, condition: &Condition) -> bool {
        condition.iter().all(|(operator, keys)| {
            keys.iter()
                .all(|(key, expected)| self.holds(operator, key, expected))
        })
    }

    fn holds(&self, operator: &str, key: &str, expected: &[String]) -> bool {
        let op = operator.to_ascii_lowercase();
        let (op, if_exists) = match op.strip_suffix("ifexists") {
            Some(base) => (base.to_string(), true),
            None => (op, false),
        };
        let (matches, negated): (fn(&str, &str) -> bool, bool) = match op.as_str() {
            "stringequals" | "arnequals" => (|a, e| a == e, false),
            "stringnotequals" | "arnnotequals" => (|a, e| a == e, true),
            "stringlike" | "arnlike" => (|a, e| wildcard_match(e, a), false),
            "stringnotlike" | "arnnotlike" => (|a, e| wildcard_match(e, a), true),
            "bool" => (|a, e| a.eq_ignore_ascii_case(e), false),
            _ => return false,
        };
        let Some(actual) = self.get(key) else {
            return if_exists || negated;
        };
        let any = actual
            .iter()
            .any(|a| expected.iter().any(|e| matches(a, e)));
        any != negated
    }
}

/// Like [`evaluate`], with the conditions of each statement evaluated in `context`.
pub fn evaluate_in(
    doc: &PolicyDocument<String>,
    action: &str,
    resource: &str,
    context: &Context,
) -> Decision {
    decide(doc, action, resource, |condition, _| {
        context.satisfies(condition)
    })
}

/// IAM's order over the statements that name `action` and `resource`; `applies` says whether
/// a conditional statement of the given effect applies.
fn decide(
    doc: &PolicyDocument<String>,
    action: &str,
    resource: &str,
    applies: impl Fn(&Condition, Effect) -> bool,
) -> Decision {
    let mut allowed = false;
    for s in &doc.statement {
        let hits = s.action.iter().any(|a| action_matches(a.as_str(), action))
            && s.resource.iter().any(|r| wildcard_match(r, resource));
        if !hits {
            continue;
        }
        let applies = s.condition.as_ref().is_none_or(|c| applies(c, s.effect));
        match (s.effect, applies) {
            (Effect::Deny, true) => return Decision::ExplicitDeny,
            (Effect::Allow, true) => allowed = true,
            (_, false) => {}
        }
    }
    if allowed {
        Decision::Allowed
    } else {
        Decision::ImplicitDeny
    }
}

/// Whether an identity whose permissions are `identity`, capped by the permissions boundary
/// `boundary` (if any), may make the request: an explicit deny in either wins, and an allow
/// counts only if the boundary allows it too.
pub fn evaluate_bounded(
    identity: &PolicyDocument<String>,
    boundary: Option<&PolicyDocument<String>>,
    action: &str,
    resource: &str,
    context: &Context,
) -> Decision {
    let own = evaluate_in(identity, action, resource, context);
    let Some(boundary) = boundary else {
        return own;
    };
    match (own, evaluate_in(boundary, action, resource, context)) {
        (Decision::ExplicitDeny, _) | (_, Decision::ExplicitDeny) => Decision::ExplicitDeny,
        (Decision::Allowed, Decision::Allowed) => Decision::Allowed,
        _ => Decision::ImplicitDeny,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Action, Condition, Statement};

    #[test]
    fn wildcards() {
        let cases = [
            ("*", "", true),
            ("*", "anything:at/all", true),
            ("a*c", "abc", true),
            ("a*c", "ac", true),
            ("a*c", "abd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            (
                "arn:aws:s3:::b/uploads/*",
                "arn:aws:s3:::b/uploads/x.jpg",
                true,
            ),
            ("arn:aws:s3:::b/uploads/*", "arn:aws:s3:::b/uploads", false),
            ("arn:aws:s3:::b/uploads/*", "arn:aws:s3:::b/other/x", false),
            (
                "arn:aws:s3:::b/uploads/*",
                "arn:aws:s3:::bb/uploads/x",
                false,
            ),
            ("arn:aws:s3:::b", "arn:aws:s3:::b/x", false),
            ("*/*/*", "a/b/c/d", true),
            ("*x*y", "axbxcy", true),
            ("*x*y", "axbxc", false),
            ("ab", "a", false),
            ("", "", true),
            ("", "a", false),
        ];
        for (p, v, want) in cases {
            assert_eq!(wildcard_match(p, v), want, "{p} vs {v}");
        }
    }

    #[test]
    fn resources_are_case_sensitive_actions_are_not() {
        assert!(!wildcard_match("arn:aws:s3:::B/*", "arn:aws:s3:::b/x"));
        assert!(action_matches("s3:getobject", "s3:GetObject"));
        assert!(action_matches("s3:Get*", "s3:GetObjectAcl"));
        assert!(!action_matches("s3:Get*", "s3:PutObject"));
        assert!(!action_matches("s3:GetObject", "s3:GetObjectAcl"));
    }

    fn doc(statements: Vec<Statement<String>>) -> PolicyDocument<String> {
        PolicyDocument::new(statements)
    }

    fn st(effect: Effect, action: &str, resource: &str) -> Statement<String> {
        Statement {
            sid: None,
            effect,
            principal: None,
            action: vec![Action::parse(action).unwrap_or_else(|e| panic!("{e}"))],
            resource: vec![resource.to_string()],
            condition: None,
        }
    }

    #[test]
    fn deny_wins_then_allow_then_implicit_deny() {
        let d = doc(vec![
            st(Effect::Allow, "s3:*", "arn:aws:s3:::b/*"),
            st(Effect::Deny, "s3:DeleteObject", "*"),
        ]);
        assert_eq!(
            evaluate(&d, "s3:GetObject", "arn:aws:s3:::b/k"),
            Decision::Allowed
        );
        assert_eq!(
            evaluate(&d, "s3:DeleteObject", "arn:aws:s3:::b/k"),
            Decision::ExplicitDeny
        );
        assert_eq!(
            evaluate(&d, "s3:GetObject", "arn:aws:s3:::c/k"),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(&doc(vec![]), "s3:GetObject", "*"),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn conditional_statements_are_taken_restrictively() {
        let cond: Condition = [(
            "Bool".to_string(),
            [("aws:SecureTransport".to_string(), vec!["false".to_string()])].into(),
        )]
        .into();
        let mut allow = st(Effect::Allow, "s3:GetObject", "*");
        allow.condition = Some(cond.clone());
        assert_eq!(
            evaluate(&doc(vec![allow]), "s3:GetObject", "x"),
            Decision::ImplicitDeny
        );
        let mut deny = st(Effect::Deny, "s3:GetObject", "*");
        deny.condition = Some(cond);
        let d = doc(vec![st(Effect::Allow, "s3:GetObject", "*"), deny]);
        assert_eq!(evaluate(&d, "s3:GetObject", "x"), Decision::ExplicitDeny);
    }

    fn conditional(effect: Effect, operator: &str, key: &str, value: &str) -> Statement<String> {
        let mut s = st(effect, "iam:CreateRole", "*");
        s.condition = Some(
            [(
                operator.to_string(),
                [(key.to_string(), vec![value.to_string()])].into(),
            )]
            .into(),
        );
        s
    }

    #[test]
    fn conditions_are_evaluated_in_a_context() {
        let boundary = "arn:aws:iam::1:policy/Boundary";
        let allow = doc(vec![conditional(
            Effect::Allow,
            "StringEquals",
            "iam:PermissionsBoundary",
            boundary,
        )]);
        let with = |v: &str| Context::new().with("iam:permissionsboundary", v);
        let d = |c: &Context| evaluate_in(&allow, "iam:CreateRole", "r", c);
        assert_eq!(d(&with(boundary)), Decision::Allowed);
        assert_eq!(
            d(&with("arn:aws:iam::1:policy/Other")),
            Decision::ImplicitDeny
        );
        assert_eq!(d(&Context::new()), Decision::ImplicitDeny);

        let like = doc(vec![conditional(
            Effect::Allow,
            "StringLike",
            "aws:ResourceTag/stage",
            "pr-*",
        )]);
        let tagged = |v: &str| Context::new().with("aws:ResourceTag/stage", v);
        assert_eq!(
            evaluate_in(&like, "iam:CreateRole", "r", &tagged("pr-7")),
            Decision::Allowed
        );
        assert_eq!(
            evaluate_in(&like, "iam:CreateRole", "r", &tagged("prod")),
            Decision::ImplicitDeny
        );

        // A negated operator: a missing key satisfies it, a matching value does not.
        let deny = doc(vec![
            st(Effect::Allow, "iam:CreateRole", "*"),
            conditional(
                Effect::Deny,
                "StringNotEquals",
                "iam:PermissionsBoundary",
                boundary,
            ),
        ]);
        let d = |c: &Context| evaluate_in(&deny, "iam:CreateRole", "r", c);
        assert_eq!(d(&Context::new()), Decision::ExplicitDeny);
        assert_eq!(d(&with("other")), Decision::ExplicitDeny);
        assert_eq!(d(&with(boundary)), Decision::Allowed);

        // An operator this evaluator does not know never matches.
        let odd = doc(vec![conditional(
            Effect::Allow,
            "NumericLessThan",
            "k",
            "1",
        )]);
        assert_eq!(
            evaluate_in(&odd, "iam:CreateRole", "r", &Context::new().with("k", "0")),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn a_boundary_caps_and_its_deny_wins() {
        let identity = doc(vec![st(Effect::Allow, "s3:*", "*")]);
        let boundary = doc(vec![
            st(Effect::Allow, "s3:GetObject", "*"),
            st(Effect::Deny, "s3:GetObject", "arn:aws:s3:::secret/*"),
        ]);
        let d =
            |a: &str, r: &str| evaluate_bounded(&identity, Some(&boundary), a, r, &Context::new());
        assert_eq!(d("s3:GetObject", "arn:aws:s3:::b/k"), Decision::Allowed);
        assert_eq!(
            d("s3:PutObject", "arn:aws:s3:::b/k"),
            Decision::ImplicitDeny
        );
        assert_eq!(
            d("s3:GetObject", "arn:aws:s3:::secret/k"),
            Decision::ExplicitDeny
        );
        assert_eq!(
            evaluate_bounded(&identity, None, "s3:PutObject", "x", &Context::new()),
            Decision::Allowed
        );
    }
}
