//! What a deploy changes in who may do what: every statement added to or removed from a role
//! (its policies, its trust policy, its managed policies and boundary), a managed policy, a
//! resource policy (bucket, queue, topic) or a Lambda permission, deployed template against
//! new, and whether each one broadens a permission.
//!
//! An added `Allow` broadens unless a removed `Allow` of the same holder already granted all
//! of it (the same principal and condition, its actions and resources among the old one's);
//! so narrowing a statement (an action or a resource fewer) broadens nothing. A removed
//! `Deny`, a removed boundary and an added Lambda permission or managed policy broaden; what
//! is only taken away never does.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One statement that a deploy adds or removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityChange {
    /// Where the statement lives: the resource's logical id and which of its documents
    /// (`ProcessRole policy Process`, `UploadsBucketPolicy`, `ApiInvokeUpload permission`).
    pub holder: String,
    /// The kind of document: `role policy`, `trust policy`, `managed policy`, `boundary`,
    /// `bucket policy`, `queue policy`, `topic policy`, `lambda permission`.
    pub kind: String,
    pub change: Direction,
    /// The statement as the template writes it, its lists sorted.
    pub statement: Value,
    /// Whether the change lets anyone do something they could not before.
    pub broadens: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Added,
    Removed,
}

impl SecurityChange {
    /// One line for a table or an error: `+ ProcessRole policy Process: Allow s3:* on *`.
    pub fn line(&self) -> String {
        let sign = match self.change {
            Direction::Added => '+',
            Direction::Removed => '-',
        };
        format!(
            "{sign} {} ({}): {}",
            self.holder,
            self.kind,
            summary(&self.statement)
        )
    }
}

/// A short reading of a statement: effect, actions, resources, principal, condition.
pub fn summary(s: &Value) -> String {
    let list = |k: &str| -> Option<String> {
        s.get(k).map(|v| match v {
            Value::Array(a) => a.iter().map(compact).collect::<Vec<_>>().join(", "),
            other => compact(other),
        })
    };
    let mut out = String::new();
    if let Some(e) = s.get("Effect").and_then(Value::as_str) {
        out.push_str(e);
    }
    for (key, word) in [
        ("Action", ""),
        ("NotAction", "everything but "),
        ("ManagedPolicyArn", "managed policy "),
        ("PermissionsBoundary", "boundary "),
    ] {
        if let Some(v) = list(key) {
            out.push_str(&format!(" {word}{v}"));
        }
    }
    for (key, word) in [
        ("Resource", "on"),
        ("NotResource", "on all but"),
        ("Principal", "to"),
        ("SourceArn", "from"),
        ("SourceAccount", "from account"),
        ("Condition", "if"),
    ] {
        if let Some(v) = list(key) {
            out.push_str(&format!(" {word} {v}"));
        }
    }
    out.trim().to_string()
}

/// A value as short JSON, a plain string without its quotes.
fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every security-relevant statement of `old` (the deployed template; `None` for a new stack)
/// that `new` no longer has, and every one `new` adds, in holder order, removals first.
pub fn changes(old: Option<&Value>, new: &Value) -> Vec<SecurityChange> {
    let before = old.map(grants).unwrap_or_default();
    let after = grants(new);
    let mut out = Vec::new();
    for g in before.iter().filter(|g| !after.contains(g)) {
        out.push(g.change(Direction::Removed, g.removal_broadens(&before, &after)));
    }
    for g in after.iter().filter(|g| !before.contains(g)) {
        let removed: Vec<&Grant> = before.iter().filter(|b| !after.contains(b)).collect();
        out.push(g.change(Direction::Added, g.addition_broadens(&removed)));
    }
    out.sort_by(|a, b| {
        (&a.holder, a.change == Direction::Added).cmp(&(&b.holder, b.change == Direction::Added))
    });
    out
}

/// The changes that broaden a permission.
pub fn broadening(all: &[SecurityChange]) -> Vec<&SecurityChange> {
    all.iter().filter(|c| c.broadens).collect()
}

/// One statement of one document.
#[derive(Debug, Clone)]
struct Grant {
    holder: String,
    kind: &'static str,
    /// Canonical JSON of the statement (lists sorted), so equal statements compare equal.
    key: String,
    statement: Value,
}

/// Grants are the same when their holder, kind and canonical statement are.
impl PartialEq for Grant {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Grant {}

impl PartialOrd for Grant {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Grant {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

impl Grant {
    fn order(&self) -> (&str, &str, &str) {
        (&self.holder, self.kind, &self.key)
    }

    fn new(holder: String, kind: &'static str, statement: Value) -> Self {
        let statement = canonical(statement);
        Self {
            holder,
            kind,
            key: statement.to_string(),
            statement,
        }
    }

    fn change(&self, change: Direction, broadens: bool) -> SecurityChange {
        SecurityChange {
            holder: self.holder.clone(),
            kind: self.kind.to_string(),
            change,
            statement: self.statement.clone(),
            broadens,
        }
    }

    fn effect(&self) -> Option<&str> {
        self.statement.get("Effect").and_then(Value::as_str)
    }

    /// Taking a statement away broadens only when it denied or bounded something.
    fn removal_broadens(&self, _before: &[Grant], after: &[Grant]) -> bool {
        match self.kind {
            "boundary" => true,
            _ if self.effect() == Some("Deny") => !after
                .iter()
                .any(|a| a.holder == self.holder && a.effect() == Some("Deny") && covers(a, self)),
            _ => false,
        }
    }

    /// Adding a statement broadens unless it denies, adds a boundary, or a removed statement
    /// of the same holder granted all of it already.
    fn addition_broadens(&self, removed: &[&Grant]) -> bool {
        match self.kind {
            "boundary" => false,
            _ if self.effect() == Some("Deny") => false,
            _ => !removed
                .iter()
                .any(|r| r.holder == self.holder && r.kind == self.kind && covers(r, self)),
        }
    }
}

/// Whether statement `wide` grants (or denies) everything `narrow` does: the same effect,
/// principal, condition and every other key, with `narrow`'s actions and resources among
/// `wide`'s (`*` patterns included).
fn covers(wide: &Grant, narrow: &Grant) -> bool {
    let (Some(w), Some(n)) = (wide.statement.as_object(), narrow.statement.as_object()) else {
        return false;
    };
    let listed = ["Action", "Resource", "Sid"];
    let rest = |m: &Map<String, Value>| -> Vec<(String, String)> {
        let mut v: Vec<_> = m
            .iter()
            .filter(|(k, _)| !listed.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        v.sort();
        v
    };
    if rest(w) != rest(n) {
        return false;
    }
    let among = |key: &str, case_blind: bool| {
        let (wl, nl) = (strings(w.get(key)), strings(n.get(key)));
        if wl.is_empty() != nl.is_empty() {
            return false;
        }
        nl.iter()
            .all(|x| wl.iter().any(|p| pattern_matches(p, x, case_blind)))
    };
    among("Action", true) && among("Resource", false)
}

/// The values of a string-or-list field, each as canonical JSON text unless a plain string.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        None => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(compact).collect(),
        Some(other) => vec![compact(other)],
    }
}

/// IAM's wildcard match (`*` any run of characters, `?` one); actions ignore case.
fn pattern_matches(pattern: &str, value: &str, case_blind: bool) -> bool {
    if case_blind {
        policies::eval::action_matches(pattern, value)
    } else {
        policies::eval::wildcard_match(pattern, value)
    }
}

/// The statement with `Action`, `NotAction`, `Resource` and `NotResource` as sorted lists
/// and object keys in order, so two writings of one statement compare equal.
fn canonical(statement: Value) -> Value {
    let Value::Object(m) = statement else {
        return statement;
    };
    let mut out = Map::new();
    for (k, v) in m {
        let v = match (k.as_str(), v) {
            ("Action" | "NotAction" | "Resource" | "NotResource", Value::Array(a)) => {
                let set: BTreeSet<String> = a.iter().map(Value::to_string).collect();
                Value::Array(
                    set.into_iter()
                        .filter_map(|s| serde_json::from_str(&s).ok())
                        .collect(),
                )
            }
            ("Action" | "NotAction" | "Resource" | "NotResource", one) => Value::Array(vec![one]),
            ("Condition", Value::Object(ops)) => Value::Object(
                ops.into_iter()
                    .map(|(op, keys)| (op, condition_values(keys)))
                    .collect(),
            ),
            (_, other) => other,
        };
        out.insert(k, v);
    }
    Value::Object(out)
}

/// A condition operator's keys, each value a sorted list (`"x"` and `["x"]` are one value).
fn condition_values(keys: Value) -> Value {
    let Value::Object(keys) = keys else {
        return keys;
    };
    keys.into_iter()
        .map(|(k, v)| {
            let mut values = match v {
                Value::Array(a) => a,
                one => vec![one],
            };
            values.sort_by_key(Value::to_string);
            values.dedup();
            (k, Value::Array(values))
        })
        .collect::<Map<String, Value>>()
        .into()
}

/// `document` with each bucket ARN written one way: a bucket's `Arn` attribute, and a
/// `Fn::Join` of it with a literal, become the `Fn::Sub` of the ARN from the bucket's name, so
/// the same resources written either way compare equal.
fn by_bucket_name(template: &Value, document: &Value) -> Value {
    let bucket_arn = |v: &Value| -> Option<String> {
        let [Value::String(id), Value::String(attr)] = v.get("Fn::GetAtt")?.as_array()?.as_slice()
        else {
            return None;
        };
        let bucket = template.get("Resources")?.get(id)?;
        if attr != "Arn" || bucket.get("Type")?.as_str()? != "AWS::S3::Bucket" {
            return None;
        }
        let name = bucket.get("Properties")?.get("BucketName")?;
        let name = name
            .get("Fn::Sub")
            .and_then(Value::as_str)
            .or_else(|| name.as_str().filter(|n| !n.contains("${")))?;
        Some(format!("arn:${{AWS::Partition}}:s3:::{name}"))
    };
    let written = |v: &Value| -> Option<String> {
        if let Some(arn) = bucket_arn(v) {
            return Some(arn);
        }
        let [Value::String(sep), Value::Array(parts)] = v.get("Fn::Join")?.as_array()?.as_slice()
        else {
            return None;
        };
        if !sep.is_empty() {
            return None;
        }
        parts
            .iter()
            .map(|p| match p {
                Value::String(lit) if !lit.contains("${") => Some(lit.clone()),
                other => bucket_arn(other),
            })
            .collect()
    };
    fn walk(v: &Value, f: &dyn Fn(&Value) -> Option<String>) -> Value {
        if let Some(sub) = f(v) {
            return serde_json::json!({ "Fn::Sub": sub });
        }
        match v {
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, f)).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, x)| (k.clone(), walk(x, f))).collect())
            }
            other => other.clone(),
        }
    }
    walk(document, &written)
}

/// The statements of one policy document (`Statement` is an object or a list).
fn statements(doc: Option<&Value>) -> Vec<Value> {
    match doc.and_then(|d| d.get("Statement")) {
        Some(Value::Array(a)) => a.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// Every grant a template makes, sorted.
fn grants(template: &Value) -> Vec<Grant> {
    let mut out = Vec::new();
    let Some(resources) = template.get("Resources").and_then(Value::as_object) else {
        return out;
    };
    for (id, r) in resources {
        let props = r.get("Properties");
        let prop = |k: &str| props.and_then(|p| p.get(k));
        let mut doc = |holder: String, kind: &'static str, d: Option<&Value>| {
            for s in statements(d) {
                out.push(Grant::new(holder.clone(), kind, s));
            }
        };
        match r.get("Type").and_then(Value::as_str).unwrap_or_default() {
            "AWS::IAM::Role" => {
                doc(id.clone(), "trust policy", prop("AssumeRolePolicyDocument"));
                for p in prop("Policies")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = p.get("PolicyName").map(compact).unwrap_or_default();
                    doc(
                        format!("{id} policy {name}"),
                        "role policy",
                        p.get("PolicyDocument"),
                    );
                }
                for arn in strings(prop("ManagedPolicyArns")) {
                    let s = serde_json::json!({ "ManagedPolicyArn": arn });
                    out.push(Grant::new(id.clone(), "managed policy", s));
                }
                if let Some(b) = prop("PermissionsBoundary") {
                    let s = serde_json::json!({ "PermissionsBoundary": b });
                    out.push(Grant::new(id.clone(), "boundary", s));
                }
            }
            "AWS::IAM::ManagedPolicy" | "AWS::IAM::Policy" => {
                doc(id.clone(), "managed policy", prop("PolicyDocument"));
            }
            "AWS::S3::BucketPolicy" => {
                let written = prop("PolicyDocument").map(|d| by_bucket_name(template, d));
                doc(id.clone(), "bucket policy", written.as_ref())
            }
            "AWS::SQS::QueuePolicy" => doc(id.clone(), "queue policy", prop("PolicyDocument")),
            "AWS::SNS::TopicPolicy" => doc(id.clone(), "topic policy", prop("PolicyDocument")),
            "AWS::Lambda::Permission" => {
                let mut s = props.cloned().unwrap_or(Value::Null);
                if let Some(m) = s.as_object_mut() {
                    m.insert("Effect".into(), Value::String("Allow".into()));
                }
                out.push(Grant::new(id.clone(), "lambda permission", s));
            }
            _ => {}
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn role(statements: Value) -> Value {
        json!({ "Resources": { "ProcessRole": { "Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": { "Statement": [{ "Effect": "Allow",
                "Principal": { "Service": "lambda.amazonaws.com" }, "Action": "sts:AssumeRole" }] },
            "PermissionsBoundary": "arn:aws:iam::123456789012:policy/boundary",
            "Policies": [{ "PolicyName": "Process", "PolicyDocument": { "Statement": statements } }]
        } } } })
    }

    fn read() -> Value {
        json!({ "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectTagging"],
                "Resource": { "Fn::Sub": "${Bucket.Arn}/uploads/*" } })
    }

    #[test]
    fn the_same_template_changes_nothing() {
        let t = role(json!([read()]));
        assert_eq!(changes(Some(&t), &t), vec![]);
    }

    #[test]
    fn s3_star_on_star_broadens_and_is_named() {
        let old = role(json!([read()]));
        let new = role(json!([read(), { "Effect": "Allow", "Action": "s3:*", "Resource": "*" }]));
        let all = changes(Some(&old), &new);
        let wide = broadening(&all);
        assert_eq!(wide.len(), 1, "{all:#?}");
        assert_eq!(wide[0].holder, "ProcessRole policy Process");
        assert_eq!(
            wide[0].line(),
            "+ ProcessRole policy Process (role policy): Allow s3:* on *"
        );
    }

    #[test]
    fn removing_an_action_broadens_nothing() {
        let old = role(json!([read()]));
        let new = role(json!([{ "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": { "Fn::Sub": "${Bucket.Arn}/uploads/*" } }]));
        let all = changes(Some(&old), &new);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert!(broadening(&all).is_empty(), "{all:#?}");
    }

    #[test]
    fn an_action_or_resource_more_broadens() {
        let old = role(json!([read()]));
        let more_actions = role(json!([{ "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectTagging", "s3:PutObject"],
            "Resource": { "Fn::Sub": "${Bucket.Arn}/uploads/*" } }]));
        assert_eq!(broadening(&changes(Some(&old), &more_actions)).len(), 1);
        let other_resource = role(json!([{ "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": { "Fn::Sub": "${Bucket.Arn}/*" } }]));
        assert_eq!(broadening(&changes(Some(&old), &other_resource)).len(), 1);
    }

    #[test]
    fn a_wildcard_covers_what_it_matches() {
        let old = role(json!([{ "Effect": "Allow", "Action": "s3:Get*", "Resource": "*" }]));
        let new = role(json!([{ "Effect": "Allow", "Action": "S3:GetObject", "Resource": "*" }]));
        assert!(broadening(&changes(Some(&old), &new)).is_empty());
        assert!(pattern_matches(
            "s3:Get*Tag?ing",
            "s3:getobjecttagging",
            true
        ));
        assert!(!pattern_matches("s3:Get*", "s3:PutObject", true));
        assert!(!pattern_matches("arn:x:*/a", "arn:x:b/c", false));
    }

    #[test]
    fn a_bucket_policy_written_by_attribute_or_by_name_is_the_same() {
        let bucket = json!({ "Type": "AWS::S3::Bucket", "Properties": {
            "BucketName": { "Fn::Sub": "image-pipeline-${Stage}-${AWS::AccountId}-${AWS::Region}" } } });
        let policy = |resources: Value, condition: Value| {
            json!({ "Resources": { "UploadsBucket": bucket, "UploadsBucketPolicy": {
                "Type": "AWS::S3::BucketPolicy", "Properties": { "PolicyDocument": { "Statement": [
                    { "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*",
                      "Action": ["s3:*"], "Resource": resources,
                      "Condition": { "Bool": { "aws:SecureTransport": condition } } }] } } } } })
        };
        let name =
            "arn:${AWS::Partition}:s3:::image-pipeline-${Stage}-${AWS::AccountId}-${AWS::Region}";
        let before = policy(
            json!([{ "Fn::Sub": name }, { "Fn::Sub": format!("{name}/*") }]),
            json!(["false"]),
        );
        let after = policy(
            json!([{ "Fn::GetAtt": ["UploadsBucket", "Arn"] },
                   { "Fn::Join": ["", [{ "Fn::GetAtt": ["UploadsBucket", "Arn"] }, "/*"]] }]),
            json!("false"),
        );
        assert_eq!(changes(Some(&before), &after), vec![]);
        // Another bucket's objects are another resource.
        let other = policy(json!([{ "Fn::Sub": name }]), json!("false"));
        assert!(!broadening(&changes(Some(&before), &other)).is_empty());
    }

    #[test]
    fn a_condition_value_written_alone_or_in_a_list_is_the_same() {
        let deny = |v: Value| {
            json!({ "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*",
                "Condition": { "Bool": { "aws:SecureTransport": v } } })
        };
        assert_eq!(
            canonical(deny(json!("false"))),
            canonical(deny(json!(["false"])))
        );
        assert_ne!(
            canonical(deny(json!("false"))),
            canonical(deny(json!("true")))
        );
    }

    #[test]
    fn a_condition_dropped_broadens() {
        let with = json!({ "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
            "Condition": { "StringEquals": { "aws:SourceAccount": "123456789012" } } });
        let without = json!({ "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*" });
        let all = changes(Some(&role(json!([with]))), &role(json!([without])));
        assert_eq!(broadening(&all).len(), 1);
    }

    #[test]
    fn denies_boundaries_and_permissions_count_the_other_way() {
        let deny = json!({ "Effect": "Deny", "Action": "s3:*", "Resource": "*" });
        let old = role(json!([read(), deny]));
        let new = role(json!([read()]));
        assert_eq!(
            broadening(&changes(Some(&old), &new)).len(),
            1,
            "a removed Deny"
        );
        assert!(
            broadening(&changes(Some(&new), &old)).is_empty(),
            "an added Deny"
        );

        let mut unbounded = role(json!([read()]));
        let props = &mut unbounded["Resources"]["ProcessRole"]["Properties"];
        props.as_object_mut().unwrap().remove("PermissionsBoundary");
        let bounded = role(json!([read()]));
        assert_eq!(broadening(&changes(Some(&bounded), &unbounded)).len(), 1);
        assert!(broadening(&changes(Some(&unbounded), &bounded)).is_empty());

        let mut permitted = role(json!([read()]));
        permitted["Resources"]["ApiInvokeUpload"] = json!({ "Type": "AWS::Lambda::Permission",
            "Properties": { "Action": "lambda:InvokeFunction", "FunctionName": "f",
                "Principal": "apigateway.amazonaws.com" } });
        let plain = role(json!([read()]));
        let added = changes(Some(&plain), &permitted);
        assert_eq!(broadening(&added).len(), 1);
        assert_eq!(added[0].kind, "lambda permission");
        assert!(broadening(&changes(Some(&permitted), &plain)).is_empty());
    }

    #[test]
    fn resource_policies_are_read() {
        let policy = |principal: &str| {
            json!({ "Resources": { "WorkQueuePolicy": { "Type": "AWS::SQS::QueuePolicy",
                "Properties": { "Queues": [], "PolicyDocument": { "Statement": { "Effect": "Allow",
                "Principal": { "Service": principal }, "Action": "sqs:SendMessage",
                "Resource": "*" } } } } } })
        };
        let all = changes(
            Some(&policy("s3.amazonaws.com")),
            &policy("sns.amazonaws.com"),
        );
        assert_eq!(all.len(), 2);
        assert_eq!(broadening(&all)[0].kind, "queue policy");
    }

    #[test]
    fn a_new_stack_adds_every_grant() {
        let t = role(json!([read()]));
        let all = changes(None, &t);
        assert_eq!(all.len(), 3, "trust, boundary and the policy: {all:#?}");
        assert!(all.iter().all(|c| c.change == Direction::Added));
    }
}
