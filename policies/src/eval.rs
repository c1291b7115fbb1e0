//! A small evaluator of identity policies: does a resolved document allow an action on a
//! resource? It implements IAM's rules for what this project writes (explicit deny wins, then
//! allow, else implicit deny; `*` and `?` wildcards, actions case-insensitive, resources
//! case-sensitive). Conditions cannot be known offline, so a conditional statement is taken
//! at its most restrictive: a conditional `Allow` grants nothing, a conditional `Deny` applies.

use crate::document::{Effect, PolicyDocument};

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
    let mut allowed = false;
    for s in &doc.statement {
        let hits = s.action.iter().any(|a| action_matches(a.as_str(), action))
            && s.resource.iter().any(|r| wildcard_match(r, resource));
        if !hits {
            continue;
        }
        match (s.effect, s.condition.is_some()) {
            (Effect::Deny, _) => return Decision::ExplicitDeny,
            (Effect::Allow, false) => allowed = true,
            (Effect::Allow, true) => {}
        }
    }
    if allowed {
        Decision::Allowed
    } else {
        Decision::ImplicitDeny
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
}
