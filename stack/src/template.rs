//! The CloudFormation template document: parameters, conditions, resources, outputs, all in
//! `BTreeMap`s so that the same model always serializes to the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use thiserror::Error;

use crate::expr::Expr;
use crate::resources::ResourceProps;

pub const FORMAT_VERSION: &str = "2010-09-09";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Template {
    #[serde(rename = "AWSTemplateFormatVersion")]
    pub format_version: &'static str,
    pub description: String,
    pub parameters: BTreeMap<String, Parameter>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, Expr>,
    pub resources: BTreeMap<String, Resource>,
    pub outputs: BTreeMap<String, Output>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ParameterType {
    String,
    Number,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Parameter {
    #[serde(rename = "Type")]
    pub kind: ParameterType,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_values: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_value: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_value: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint_description: Option<String>,
}

impl Parameter {
    pub fn string(description: &str) -> Self {
        Self {
            kind: ParameterType::String,
            description: description.to_string(),
            default: None,
            allowed_values: Vec::new(),
            allowed_pattern: None,
            min_length: None,
            max_length: None,
            min_value: None,
            max_value: None,
            constraint_description: None,
        }
    }

    pub fn number(description: &str) -> Self {
        Self {
            kind: ParameterType::Number,
            ..Self::string(description)
        }
    }

    pub fn default(mut self, v: impl Into<String>) -> Self {
        self.default = Some(v.into());
        self
    }

    /// A number's bounds, both inclusive.
    pub fn range(mut self, min: u32, max: u32) -> Self {
        self.min_value = Some(min);
        self.max_value = Some(max);
        self
    }

    pub fn allowed<I: IntoIterator<Item = S>, S: Into<String>>(mut self, values: I) -> Self {
        self.allowed_values = values.into_iter().map(Into::into).collect();
        self
    }
}

/// A resource: its typed properties plus the attributes that sit beside `Properties`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resource {
    #[serde(flatten)]
    pub props: ResourceProps,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<Policy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_replace_policy: Option<Policy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ResourceMetadata>,
}

impl Resource {
    pub fn new(props: ResourceProps) -> Self {
        Self {
            props,
            depends_on: Vec::new(),
            condition: None,
            deletion_policy: None,
            update_replace_policy: None,
            metadata: None,
        }
    }

    pub fn depends_on(mut self, logical_id: &str) -> Self {
        self.depends_on.push(logical_id.to_string());
        self
    }

    /// Deleted with the stack, on purpose: a stage is disposable and teardown removes
    /// everything. Said explicitly so nobody has to guess the default for stateful resources.
    pub fn deleted_with_stack(mut self) -> Self {
        self.deletion_policy = Some(Policy::Delete);
        self.update_replace_policy = Some(Policy::Delete);
        self
    }

    /// A checkov check that does not fit this resource, with the reason.
    pub fn skip_check(mut self, id: &str, comment: &str) -> Self {
        let md = self.metadata.get_or_insert_with(ResourceMetadata::default);
        md.checkov.skip.push(Suppression {
            id: id.to_string(),
            comment: comment.to_string(),
        });
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Policy {
    Delete,
    Retain,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResourceMetadata {
    pub checkov: Checkov,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checkov {
    pub skip: Vec<Suppression>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suppression {
    pub id: String,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Output {
    pub description: String,
    pub value: Expr,
}

#[derive(Debug, Error)]
pub enum RenderError {
    #[error("cannot render the template as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot render the template as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

impl Template {
    pub fn to_json(&self) -> Result<String, RenderError> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    /// The body sent to CloudFormation: compact JSON, which its inline limit (51,200 bytes)
    /// is measured on.
    pub fn to_compact_json(&self) -> Result<String, RenderError> {
        Ok(serde_json::to_string(self)?)
    }

    pub fn to_yaml(&self) -> Result<String, RenderError> {
        Ok(serde_yaml::to_string(self)?)
    }

    /// Every reference in the template that names nothing: `Ref`, `Fn::GetAtt`, `Fn::Sub`
    /// variables, `Fn::If` conditions, `DependsOn` and `Condition`. Found on the serialized
    /// form, so it checks exactly what CloudFormation will read.
    pub fn dangling_references(&self) -> Vec<String> {
        let Ok(json) = serde_json::to_value(self) else {
            return vec!["the template does not serialize".into()];
        };
        let params: BTreeSet<&str> = self.parameters.keys().map(String::as_str).collect();
        let resources: BTreeSet<&str> = self.resources.keys().map(String::as_str).collect();
        let conditions: BTreeSet<&str> = self.conditions.keys().map(String::as_str).collect();
        let mut out = Vec::new();
        let check_ref = |name: &str, attr_ok: bool, out: &mut Vec<String>| {
            if name.starts_with("AWS::") {
                if !PSEUDO_PARAMETERS.contains(&name) {
                    out.push(format!("unknown pseudo parameter {name}"));
                }
                return;
            }
            let (base, has_attr) = match name.split_once('.') {
                Some((b, _)) => (b, true),
                None => (name, false),
            };
            let known = if has_attr {
                attr_ok && resources.contains(base)
            } else {
                resources.contains(base) || params.contains(base)
            };
            if !known {
                out.push(format!("reference to undefined `{name}`"));
            }
        };
        walk(&json, &mut |key, value| match (key, value) {
            ("Ref", serde_json::Value::String(n)) => check_ref(n, false, &mut out),
            ("Fn::GetAtt", serde_json::Value::Array(a)) => match a.first() {
                Some(serde_json::Value::String(r)) if resources.contains(r.as_str()) => {}
                other => out.push(format!("Fn::GetAtt of undefined resource {other:?}")),
            },
            ("Fn::Sub", serde_json::Value::String(body)) => {
                for var in sub_variables(body) {
                    check_ref(var, true, &mut out);
                }
            }
            ("Fn::If", serde_json::Value::Array(a)) => match a.first() {
                Some(serde_json::Value::String(c)) if conditions.contains(c.as_str()) => {}
                other => out.push(format!("Fn::If on undefined condition {other:?}")),
            },
            _ => {}
        });
        for (id, r) in &self.resources {
            for d in &r.depends_on {
                if !resources.contains(d.as_str()) {
                    out.push(format!("{id} depends on undefined resource {d}"));
                }
            }
            if let Some(c) = &r.condition
                && !conditions.contains(c.as_str())
            {
                out.push(format!("{id} uses undefined condition {c}"));
            }
        }
        out
    }
}

pub const PSEUDO_PARAMETERS: &[&str] = &[
    "AWS::AccountId",
    "AWS::NotificationARNs",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
];

/// The `${…}` variables of a `Fn::Sub` body, skipping `${!…}` escapes.
pub fn sub_variables(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let var = &after[..end];
        if !var.starts_with('!') {
            out.push(var);
        }
        rest = &after[end + 1..];
    }
    out
}

fn walk(v: &serde_json::Value, f: &mut impl FnMut(&str, &serde_json::Value)) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                f(k, child);
                walk(child, f);
            }
        }
        serde_json::Value::Array(items) => {
            for child in items {
                walk(child, f);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_variables_skip_escapes() {
        assert_eq!(
            sub_variables("arn:${AWS::Partition}:x:${!Literal}:${Res.Arn}/${P}"),
            vec!["AWS::Partition", "Res.Arn", "P"]
        );
        assert!(sub_variables("no vars ${ unterminated").is_empty());
    }
}
