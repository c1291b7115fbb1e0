//! ARN templates: resource names written once, rendered either as CloudFormation `Fn::Sub`
//! strings (so the template never names a partition, region or account) or as concrete ARNs
//! for a given deployment (so the allow/deny matrix can be evaluated and simulated).

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

/// One piece of an ARN template.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// Literal text, copied as is.
    Lit(String),
    /// `AWS::Partition`
    Partition,
    /// `AWS::Region`
    Region,
    /// `AWS::AccountId`
    Account,
    /// A template parameter or resource logical id, substituted by its `Ref` value.
    Ref(String),
}

/// An ARN (or any resource string) made of literal text and deployment-time values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArnTemplate {
    parts: Vec<Part>,
}

/// The values a template needs to become a concrete ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bindings {
    pub partition: String,
    pub region: String,
    pub account: String,
    /// Values of `Part::Ref` names (template parameters such as `Stage`).
    pub refs: BTreeMap<String, String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("no value bound for `{0}`")]
    Unbound(String),
}

impl ArnTemplate {
    /// The bare `*` resource, which only actions without resource-level permissions may use.
    pub fn any() -> Self {
        Self::lit("*")
    }

    pub fn lit(text: impl Into<String>) -> Self {
        Self {
            parts: vec![Part::Lit(text.into())],
        }
    }

    pub fn from_parts(parts: Vec<Part>) -> Self {
        let mut t = Self { parts: Vec::new() };
        for p in parts {
            t.push(p);
        }
        t
    }

    /// `arn:${AWS::Partition}:{service}:${AWS::Region}:${AWS::AccountId}:` followed by `rest`.
    /// Pass `regional = false` / `with_account = false` for services such as S3 whose ARNs
    /// leave those fields empty.
    pub fn arn(service: &str, regional: bool, with_account: bool, rest: Vec<Part>) -> Self {
        let mut parts = vec![Part::Lit("arn:".into()), Part::Partition];
        parts.push(Part::Lit(format!(":{service}:")));
        if regional {
            parts.push(Part::Region);
        }
        parts.push(Part::Lit(":".into()));
        if with_account {
            parts.push(Part::Account);
        }
        parts.push(Part::Lit(":".into()));
        parts.extend(rest);
        Self::from_parts(parts)
    }

    /// This template followed by literal text.
    pub fn join(&self, suffix: &str) -> Self {
        let mut t = self.clone();
        t.push(Part::Lit(suffix.into()));
        t
    }

    /// This template followed by another.
    pub fn append(&self, other: &ArnTemplate) -> Self {
        let mut t = self.clone();
        for p in &other.parts {
            t.push(p.clone());
        }
        t
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    pub fn is_any(&self) -> bool {
        self.parts == [Part::Lit("*".into())]
    }

    /// Names of the `Ref` parts, which must exist as template parameters or resources.
    pub fn refs(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The body of a CloudFormation `Fn::Sub` that yields this ARN.
    pub fn to_sub(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                // `${` in literal text would start a substitution; `${!` is Sub's escape.
                Part::Lit(s) => out.push_str(&s.replace("${", "${!")),
                Part::Partition => out.push_str("${AWS::Partition}"),
                Part::Region => out.push_str("${AWS::Region}"),
                Part::Account => out.push_str("${AWS::AccountId}"),
                Part::Ref(name) => {
                    out.push_str("${");
                    out.push_str(name);
                    out.push('}');
                }
            }
        }
        out
    }

    /// True when the template is plain text (no substitution needed).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// The concrete string for one deployment.
    pub fn resolve(&self, b: &Bindings) -> Result<String, ResolveError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Partition => out.push_str(&b.partition),
                Part::Region => out.push_str(&b.region),
                Part::Account => out.push_str(&b.account),
                Part::Ref(name) => out.push_str(
                    b.refs
                        .get(name)
                        .ok_or_else(|| ResolveError::Unbound(name.clone()))?,
                ),
            }
        }
        Ok(out)
    }

    fn push(&mut self, p: Part) {
        match (self.parts.last_mut(), p) {
            (_, Part::Lit(s)) if s.is_empty() => {}
            (Some(Part::Lit(prev)), Part::Lit(s)) => prev.push_str(&s),
            (_, p) => self.parts.push(p),
        }
    }
}

impl fmt::Display for ArnTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sub())
    }
}

impl Bindings {
    /// Example values, used to render readable policy files and in tests. A real deployment
    /// binds what STS and the stack report.
    pub fn example(stage: &str) -> Self {
        Self {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
            refs: BTreeMap::from([("Stage".to_string(), stage.to_string())]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> ArnTemplate {
        ArnTemplate::arn(
            "s3",
            false,
            false,
            vec![
                Part::Lit("image-pipeline-".into()),
                Part::Ref("Stage".into()),
                Part::Lit("-".into()),
                Part::Account,
            ],
        )
    }

    #[test]
    fn sub_form_uses_pseudo_parameters() {
        assert_eq!(
            bucket().join("/uploads/*").to_sub(),
            "arn:${AWS::Partition}:s3:::image-pipeline-${Stage}-${AWS::AccountId}/uploads/*"
        );
        let table = ArnTemplate::arn("dynamodb", true, true, vec![Part::Lit("table/t".into())]);
        assert_eq!(
            table.to_sub(),
            "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/t"
        );
    }

    #[test]
    fn resolves_with_bindings() {
        let b = Bindings::example("dev");
        assert_eq!(
            bucket().resolve(&b).as_deref(),
            Ok("arn:aws:s3:::image-pipeline-dev-123456789012")
        );
        let mut unbound = b.clone();
        unbound.refs.clear();
        assert_eq!(
            bucket().resolve(&unbound),
            Err(ResolveError::Unbound("Stage".into()))
        );
    }

    #[test]
    fn literal_dollar_brace_is_escaped_for_sub() {
        assert_eq!(ArnTemplate::lit("a${b}").to_sub(), "a${!b}");
    }

    #[test]
    fn adjacent_literals_merge() {
        let t = ArnTemplate::lit("a").join("b").join("");
        assert_eq!(t.parts(), &[Part::Lit("ab".into())]);
        assert!(t.is_literal());
        assert!(ArnTemplate::any().is_any());
        assert_eq!(bucket().refs().collect::<Vec<_>>(), vec!["Stage"]);
    }
}
