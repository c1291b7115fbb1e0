//! A template's resources as CloudFormation hands them to a hook: each resource whose
//! condition holds, with its properties resolved for given parameter values. Control Tower's
//! proactive controls run as hooks and judge these values, not the template's text.
//!
//! The account, region and the physical names CloudFormation would make are examples; the
//! rules judge the form of a value (a list, a number, an ARN), which the examples keep.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "eu-west-1";

/// One resource as a hook sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HookInput {
    pub logical_id: String,
    pub resource_type: String,
    pub properties: Value,
}

impl HookInput {
    /// The document the rules' hook form reads: `{TYPE: {resourceProperties: {...}}}`.
    pub fn document(&self) -> Value {
        let mut inner = Map::new();
        inner.insert("resourceProperties".into(), self.properties.clone());
        let mut doc = Map::new();
        doc.insert(self.resource_type.clone(), Value::Object(inner));
        Value::Object(doc)
    }
}

struct Resolver<'a> {
    template: &'a Value,
    parameters: BTreeMap<String, Value>,
    conditions: BTreeMap<String, bool>,
}

/// The resources of `template` that would be created with `given` parameter values (the
/// rest take their defaults), each with its properties resolved. A parameter with neither
/// is an error, as is an intrinsic function this does not know.
pub fn hook_inputs(template: &Value, given: &BTreeMap<String, String>) -> Result<Vec<HookInput>> {
    let mut r = Resolver {
        template,
        parameters: BTreeMap::new(),
        conditions: BTreeMap::new(),
    };
    let empty = Map::new();
    let declared = template["Parameters"].as_object().unwrap_or(&empty);
    for (name, p) in declared {
        let raw = match (given.get(name), &p["Default"]) {
            (Some(v), _) => Value::String(v.clone()),
            (None, Value::Null) => bail!("the template's parameter {name} has no value"),
            (None, d) => d.clone(),
        };
        // A Number parameter reaches the resource as a number.
        let value = match (&p["Type"], &raw) {
            (Value::String(t), Value::String(s)) if t == "Number" => s
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| anyhow!("parameter {name}: `{s}` is not a number"))?,
            _ => raw,
        };
        r.parameters.insert(name.clone(), value);
    }
    if let Some(unknown) = given.keys().find(|k| !declared.contains_key(*k)) {
        bail!("the template has no parameter {unknown}");
    }
    for name in template["Conditions"].as_object().unwrap_or(&empty).keys() {
        let holds = r.condition(name)?;
        r.conditions.insert(name.clone(), holds);
    }
    let mut out = Vec::new();
    for (id, res) in template["Resources"].as_object().unwrap_or(&empty) {
        if let Some(c) = res["Condition"].as_str()
            && !r.condition(c)?
        {
            continue;
        }
        let properties = match &res["Properties"] {
            Value::Null => Value::Object(Map::new()),
            p => r
                .value(p)
                .with_context(|| format!("resolving {id}"))?
                .unwrap_or(Value::Object(Map::new())),
        };
        out.push(HookInput {
            logical_id: id.clone(),
            resource_type: res["Type"].as_str().unwrap_or_default().to_string(),
            properties,
        });
    }
    Ok(out)
}

impl Resolver<'_> {
    fn condition(&self, name: &str) -> Result<bool> {
        if let Some(v) = self.conditions.get(name) {
            return Ok(*v);
        }
        let expr = &self.template["Conditions"][name];
        if expr.is_null() {
            bail!("no condition {name}");
        }
        self.truth(expr)
    }

    fn truth(&self, expr: &Value) -> Result<bool> {
        let Some((f, args)) = intrinsic(expr) else {
            return match expr {
                Value::Bool(b) => Ok(*b),
                Value::String(s) => Ok(s == "true"),
                other => bail!("not a condition: {other}"),
            };
        };
        let list = || args.as_array().cloned().unwrap_or_default();
        match f {
            "Condition" => self.condition(args.as_str().unwrap_or_default()),
            "Fn::Equals" => {
                let l = list();
                let [a, b] = l.as_slice() else {
                    bail!("Fn::Equals takes two values")
                };
                let text = |v: &Value| -> Result<String> {
                    Ok(self.value(v)?.as_ref().map(scalar).unwrap_or_default())
                };
                Ok(text(a)? == text(b)?)
            }
            "Fn::Not" => Ok(!self.truth(list().first().unwrap_or(&Value::Null))?),
            "Fn::And" => list()
                .iter()
                .try_fold(true, |acc, c| Ok(acc && self.truth(c)?)),
            "Fn::Or" => list()
                .iter()
                .try_fold(false, |acc, c| Ok(acc || self.truth(c)?)),
            other => bail!("{other} is not a condition function"),
        }
    }

    /// The value CloudFormation would pass; `None` for `AWS::NoValue`.
    fn value(&self, v: &Value) -> Result<Option<Value>> {
        if let Some((f, args)) = intrinsic(v) {
            return self.call(f, args);
        }
        Ok(Some(match v {
            Value::Array(items) => {
                let mut out = Vec::new();
                for i in items {
                    out.extend(self.value(i)?);
                }
                Value::Array(out)
            }
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    if let Some(x) = self.value(x)? {
                        out.insert(k.clone(), x);
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        }))
    }

    fn call(&self, f: &str, args: &Value) -> Result<Option<Value>> {
        let list = args.as_array().cloned().unwrap_or_default();
        Ok(Some(match f {
            "Ref" => match args.as_str().unwrap_or_default() {
                "AWS::NoValue" => return Ok(None),
                name => self.reference(name)?,
            },
            "Fn::GetAtt" => {
                let (res, attr) = match list.as_slice() {
                    [Value::String(r), Value::String(a)] => (r.as_str(), a.as_str()),
                    _ => bail!("Fn::GetAtt takes a resource and an attribute"),
                };
                Value::String(self.attribute(res, attr))
            }
            "Fn::Sub" => Value::String(self.substitute(args)?),
            "Fn::Join" => {
                let [Value::String(sep), items] = list.as_slice() else {
                    bail!("Fn::Join takes a separator and a list")
                };
                let parts = self.value(items)?.unwrap_or(Value::Array(Vec::new()));
                let parts: Vec<String> = parts
                    .as_array()
                    .map(|a| a.iter().map(scalar).collect())
                    .unwrap_or_default();
                Value::String(parts.join(sep))
            }
            "Fn::If" => {
                let [Value::String(c), then, otherwise] = list.as_slice() else {
                    bail!("Fn::If takes a condition and two values")
                };
                let chosen = if self.condition(c)? { then } else { otherwise };
                return self.value(chosen);
            }
            other => bail!("{other} is not resolved here"),
        }))
    }

    fn reference(&self, name: &str) -> Result<Value> {
        if let Some(v) = self.parameters.get(name) {
            return Ok(v.clone());
        }
        Ok(Value::String(match name {
            "AWS::AccountId" => ACCOUNT.into(),
            "AWS::Region" => REGION.into(),
            "AWS::Partition" => "aws".into(),
            "AWS::URLSuffix" => "amazonaws.com".into(),
            "AWS::StackName" => "example-stack".into(),
            "AWS::StackId" => {
                format!("arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/example-stack/0123abcd")
            }
            _ => {
                let ty = self.template["Resources"][name]["Type"]
                    .as_str()
                    .ok_or_else(|| anyhow!("Ref to {name}, which the template does not have"))?;
                // What Ref gives for the types whose Ref is an ARN or a URL.
                match ty {
                    "AWS::SNS::Topic" => self.arn(name),
                    "AWS::SQS::Queue" => format!(
                        "https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{}",
                        name.to_lowercase()
                    ),
                    _ => format!("{}-0123abcd", name.to_lowercase()),
                }
            }
        }))
    }

    fn attribute(&self, resource: &str, attr: &str) -> String {
        match attr {
            "Arn" => self.arn(resource),
            _ => format!("{}-{}", resource.to_lowercase(), attr.to_lowercase()),
        }
    }

    /// An example ARN of the resource, of its service.
    fn arn(&self, resource: &str) -> String {
        let ty = self.template["Resources"][resource]["Type"]
            .as_str()
            .unwrap_or("AWS::Unknown::Thing");
        let service = ty.split("::").nth(1).unwrap_or("unknown").to_lowercase();
        let id = resource.to_lowercase();
        match service.as_str() {
            "s3" => format!("arn:aws:s3:::{id}-0123abcd"),
            "iam" => format!("arn:aws:iam::{ACCOUNT}:role/{id}"),
            _ => format!("arn:aws:{service}:{REGION}:{ACCOUNT}:{id}"),
        }
    }

    fn substitute(&self, args: &Value) -> Result<String> {
        let (body, vars) = match args {
            Value::String(s) => (s.as_str(), Map::new()),
            Value::Array(a) => match a.as_slice() {
                [Value::String(s), Value::Object(m)] => (s.as_str(), m.clone()),
                _ => bail!("Fn::Sub takes a string, or a string and its variables"),
            },
            _ => bail!("Fn::Sub takes a string"),
        };
        let mut out = String::new();
        let mut rest = body;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("unclosed ${{ in {body}"))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str(&format!("${{{literal}}}"));
            } else if let Some(v) = vars.get(name) {
                out.push_str(&scalar(&self.value(v)?.unwrap_or(Value::Null)));
            } else if let Some((res, attr)) = name.split_once('.') {
                out.push_str(&self.attribute(res, attr));
            } else {
                out.push_str(&scalar(&self.reference(name)?));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `{"Fn::X": args}` or `{"Ref": name}` or `{"Condition": name}`: the function and its
/// arguments.
fn intrinsic(v: &Value) -> Option<(&str, &Value)> {
    let m = v.as_object()?;
    if m.len() != 1 {
        return None;
    }
    let (k, args) = m.iter().next()?;
    (k == "Ref" || k == "Condition" || k.starts_with("Fn::")).then_some((k.as_str(), args))
}

/// A scalar as the string CloudFormation would compare or join.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> Value {
        json!({
            "Parameters": {
                "Stage": {"Type": "String", "Default": "dev"},
                "Days": {"Type": "Number", "Default": "30"},
                "Key": {"Type": "String", "Default": ""},
                "Bucket": {"Type": "String"}
            },
            "Conditions": {
                "HasKey": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Key"}, ""]}]},
                "NoKey": {"Fn::Not": [{"Condition": "HasKey"}]}
            },
            "Resources": {
                "Logs": {"Type": "AWS::Logs::LogGroup", "Properties": {
                    "LogGroupName": {"Fn::Sub": "/x/${Stage}-${AWS::Region}-${!Literal}"},
                    "RetentionInDays": {"Ref": "Days"},
                    "KmsKeyId": {"Fn::If": ["HasKey", {"Ref": "Key"}, {"Ref": "AWS::NoValue"}]}
                }},
                "Policy": {"Type": "AWS::S3::BucketPolicy", "Properties": {
                    "Bucket": {"Ref": "Bucket"},
                    "Resource": [{"Fn::Join": ["", [{"Fn::GetAtt": ["B", "Arn"]}, "/*"]]}]
                }},
                "B": {"Type": "AWS::S3::Bucket"},
                "Topic": {"Type": "AWS::SNS::Topic", "Condition": "NoKey"}
            }
        })
    }

    fn of(inputs: &[HookInput], id: &str) -> Value {
        inputs
            .iter()
            .find(|i| i.logical_id == id)
            .map(|i| i.properties.clone())
            .unwrap_or(Value::Null)
    }

    #[test]
    fn defaults_conditions_and_intrinsics_resolve_as_cloudformation_would() {
        let given = BTreeMap::from([("Bucket".to_string(), "b".to_string())]);
        let inputs = hook_inputs(&template(), &given).unwrap_or_default();
        assert_eq!(
            of(&inputs, "Logs"),
            json!({"LogGroupName": "/x/dev-eu-west-1-${Literal}", "RetentionInDays": 30})
        );
        assert_eq!(
            of(&inputs, "Policy"),
            json!({"Bucket": "b", "Resource": ["arn:aws:s3:::b-0123abcd/*"]})
        );
        assert!(inputs.iter().any(|i| i.logical_id == "Topic"));
        let bucket = inputs.iter().find(|i| i.logical_id == "B");
        let doc = bucket.map(HookInput::document).unwrap_or_default();
        assert_eq!(doc, json!({"AWS::S3::Bucket": {"resourceProperties": {}}}));
    }

    #[test]
    fn given_values_turn_conditions() {
        let given = BTreeMap::from([
            ("Bucket".to_string(), "b".to_string()),
            ("Key".to_string(), "arn:k".to_string()),
            ("Days".to_string(), "365".to_string()),
        ]);
        let inputs = hook_inputs(&template(), &given).unwrap_or_default();
        assert_eq!(of(&inputs, "Logs")["KmsKeyId"], "arn:k");
        assert_eq!(of(&inputs, "Logs")["RetentionInDays"], 365);
        assert!(!inputs.iter().any(|i| i.logical_id == "Topic"));
    }

    #[test]
    fn what_it_cannot_resolve_is_an_error() {
        assert!(hook_inputs(&template(), &BTreeMap::new()).is_err());
        let given = BTreeMap::from([
            ("Bucket".to_string(), "b".to_string()),
            ("Nope".to_string(), "x".to_string()),
        ]);
        assert!(hook_inputs(&template(), &given).is_err());
        let mut t = template();
        t["Resources"]["B"]["Properties"] = json!({"X": {"Fn::Select": [0, ["a"]]}});
        let given = BTreeMap::from([("Bucket".to_string(), "b".to_string())]);
        assert!(hook_inputs(&t, &given).is_err());
    }
}
