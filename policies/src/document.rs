//! The IAM policy document model, generic over how a resource is written: `ArnTemplate` while
//! synthesizing, `String` once resolved for one deployment, a CloudFormation expression inside
//! a template.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use thiserror::Error;

use crate::arn::{ArnTemplate, Bindings, ResolveError};

pub const POLICY_VERSION: &str = "2012-10-17";

/// An IAM action such as `s3:PutObject`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Action(String);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ActionError {
    #[error("`{0}` is not an IAM action of the form service:Operation")]
    Malformed(String),
}

impl Action {
    /// Parses `service:Operation`. Wildcards are allowed only in the operation part.
    pub fn parse(s: &str) -> Result<Self, ActionError> {
        let malformed = || ActionError::Malformed(s.to_string());
        let (service, op) = s.split_once(':').ok_or_else(malformed)?;
        let service_ok = !service.is_empty()
            && service
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let op_ok = !op.is_empty()
            && op
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?');
        if service_ok && op_ok {
            Ok(Self(s.to_string()))
        } else {
            Err(malformed())
        }
    }

    /// For actions spelled in source code; a typo is a programming error that tests catch.
    pub fn known(s: &'static str) -> Self {
        debug_assert!(Self::parse(s).is_ok(), "malformed built-in action {s}");
        Self(s.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn service(&self) -> &str {
        self.0.split_once(':').map_or("", |(s, _)| s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// Who a resource-based or trust policy statement applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Principal {
    /// `"*"`: everyone (only ever used with `Deny` here).
    Everyone,
    /// An AWS service principal such as `lambda.amazonaws.com`.
    Service(String),
    /// An identity provider, such as GitHub's OIDC provider.
    Federated(String),
    /// A role of the same CloudFormation stack, by logical id: its ARN once created
    /// (`{"AWS": {"Fn::GetAtt": [id, "Arn"]}}`).
    StackRole(String),
}

impl Serialize for Principal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Principal::Everyone => s.serialize_str("*"),
            Principal::Service(name) => BTreeMap::from([("Service", name.as_str())]).serialize(s),
            Principal::Federated(arn) => BTreeMap::from([("Federated", arn.as_str())]).serialize(s),
            Principal::StackRole(id) => {
                let arn = BTreeMap::from([("Fn::GetAtt", [id.as_str(), "Arn"])]);
                BTreeMap::from([("AWS", arn)]).serialize(s)
            }
        }
    }
}

/// `Condition`: operator -> key -> values.
pub type Condition = BTreeMap<String, BTreeMap<String, Vec<String>>>;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement<R> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub effect: Effect,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    pub action: Vec<Action>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource: Vec<R>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument<R> {
    pub version: &'static str,
    pub statement: Vec<Statement<R>>,
}

impl<R> Statement<R> {
    pub fn allow(sid: &str, action: Vec<Action>, resource: Vec<R>) -> Self {
        Self {
            sid: Some(sid.to_string()),
            effect: Effect::Allow,
            principal: None,
            action,
            resource,
            condition: None,
        }
    }

    pub fn map_resources<T>(&self, f: &mut impl FnMut(&R) -> T) -> Statement<T> {
        Statement {
            sid: self.sid.clone(),
            effect: self.effect,
            principal: self.principal.clone(),
            action: self.action.clone(),
            resource: self.resource.iter().map(f).collect(),
            condition: self.condition.clone(),
        }
    }
}

impl<R> PolicyDocument<R> {
    pub fn new(statement: Vec<Statement<R>>) -> Self {
        Self {
            version: POLICY_VERSION,
            statement,
        }
    }

    /// The bucket policy that denies every request to a bucket (`bucket`) and its objects
    /// (`objects`, the bucket ARN with `/*`) made without TLS. `s3:*` here is a *deny*: it
    /// must cover every action, present and future. The one builder for every bucket.
    pub fn tls_only(bucket: R, objects: R) -> Self {
        Self::new(vec![Statement {
            sid: Some("DenyInsecureTransport".into()),
            effect: Effect::Deny,
            principal: Some(Principal::Everyone),
            action: vec![Action::known("s3:*")],
            resource: vec![bucket, objects],
            condition: Some(BTreeMap::from([(
                "Bool".to_string(),
                BTreeMap::from([("aws:SecureTransport".to_string(), vec!["false".to_string()])]),
            )])),
        }])
    }

    pub fn map_resources<T>(&self, mut f: impl FnMut(&R) -> T) -> PolicyDocument<T> {
        PolicyDocument {
            version: self.version,
            statement: self
                .statement
                .iter()
                .map(|s| s.map_resources(&mut f))
                .collect(),
        }
    }
}

impl PolicyDocument<ArnTemplate> {
    /// The concrete document one deployment would carry.
    pub fn resolve(&self, b: &Bindings) -> Result<PolicyDocument<String>, ResolveError> {
        let statement = self
            .statement
            .iter()
            .map(|s| {
                Ok(Statement {
                    sid: s.sid.clone(),
                    effect: s.effect,
                    principal: s.principal.clone(),
                    action: s.action.clone(),
                    resource: s
                        .resource
                        .iter()
                        .map(|r| r.resolve(b))
                        .collect::<Result<_, _>>()?,
                    condition: s.condition.clone(),
                })
            })
            .collect::<Result<_, ResolveError>>()?;
        Ok(PolicyDocument {
            version: self.version,
            statement,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_parsing() {
        assert!(Action::parse("s3:PutObject").is_ok());
        assert!(Action::parse("rekognition:Detect*").is_ok());
        for bad in [
            "",
            "s3",
            ":PutObject",
            "s3:",
            "S3:PutObject",
            "s3:Put Object",
            "*",
        ] {
            assert_eq!(
                Action::parse(bad),
                Err(ActionError::Malformed(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(Action::known("sqs:SendMessage").service(), "sqs");
    }

    #[test]
    fn serializes_like_iam() {
        let doc = PolicyDocument::new(vec![Statement {
            sid: None,
            effect: Effect::Allow,
            principal: Some(Principal::Service("lambda.amazonaws.com".into())),
            action: vec![Action::known("sts:AssumeRole")],
            resource: Vec::<String>::new(),
            condition: None,
        }]);
        let json = serde_json::to_value(&doc).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": ["sts:AssumeRole"]
                }]
            })
        );
    }
}
