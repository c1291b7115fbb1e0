//! CloudFormation values: literals and the few intrinsic functions the stack uses, with a
//! hand-written `Serialize` that emits the long (`Fn::…`) form valid in JSON and YAML alike.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use policies::ArnTemplate;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Expr>),
    /// `Ref` to a parameter, resource or pseudo parameter.
    Ref(String),
    /// `Fn::GetAtt` of a resource attribute.
    GetAtt(String, String),
    /// `Fn::Sub` with `${Name}` / `${Name.Attr}` / `${AWS::…}` substitutions.
    Sub(String),
    /// `Fn::If` on a named condition.
    If(String, Box<Expr>, Box<Expr>),
    /// `Fn::Equals` (only valid inside `Conditions`).
    Equals(Box<Expr>, Box<Expr>),
    /// `Fn::Not` (only valid inside `Conditions`).
    Not(Box<Expr>),
    /// `Ref: AWS::NoValue`: removes the property it stands for.
    NoValue,
    /// `Fn::Join` of the values with the separator.
    Join(String, Vec<Expr>),
    /// A property object (for one that is there or not by a condition).
    Object(std::collections::BTreeMap<String, Expr>),
}

impl Expr {
    pub fn str(s: impl Into<String>) -> Self {
        Expr::Str(s.into())
    }

    pub fn r#ref(name: impl Into<String>) -> Self {
        Expr::Ref(name.into())
    }

    pub fn get_att(resource: impl Into<String>, attribute: impl Into<String>) -> Self {
        Expr::GetAtt(resource.into(), attribute.into())
    }

    pub fn sub(s: impl Into<String>) -> Self {
        Expr::Sub(s.into())
    }

    pub fn if_(condition: impl Into<String>, then: Expr, otherwise: Expr) -> Self {
        Expr::If(condition.into(), Box::new(then), Box::new(otherwise))
    }
}

impl From<&str> for Expr {
    fn from(s: &str) -> Self {
        Expr::Str(s.to_string())
    }
}

impl From<String> for Expr {
    fn from(s: String) -> Self {
        Expr::Str(s)
    }
}

impl From<&ArnTemplate> for Expr {
    /// A literal stays a plain string; anything with substitutions becomes `Fn::Sub`.
    fn from(t: &ArnTemplate) -> Self {
        if t.is_literal() {
            Expr::Str(t.to_sub().replace("${!", "${"))
        } else {
            Expr::Sub(t.to_sub())
        }
    }
}

fn single<S: Serializer, V: Serialize + ?Sized>(
    s: S,
    key: &str,
    value: &V,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry(key, value)?;
    m.end()
}

impl Serialize for Expr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Expr::Str(v) => s.serialize_str(v),
            Expr::Int(v) => s.serialize_i64(*v),
            Expr::Bool(v) => s.serialize_bool(*v),
            Expr::List(items) => items.serialize(s),
            Expr::Ref(name) => single(s, "Ref", name),
            Expr::NoValue => single(s, "Ref", "AWS::NoValue"),
            Expr::GetAtt(r, a) => single(s, "Fn::GetAtt", &[r, a]),
            Expr::Sub(body) => single(s, "Fn::Sub", body),
            Expr::If(c, a, b) => single(s, "Fn::If", &(c, a, b)),
            Expr::Equals(a, b) => single(s, "Fn::Equals", &[a, b]),
            Expr::Not(a) => single(s, "Fn::Not", &[a]),
            Expr::Join(sep, items) => single(s, "Fn::Join", &(sep, items)),
            Expr::Object(fields) => fields.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policies::Part;
    use serde_json::json;

    fn js(e: &Expr) -> serde_json::Value {
        serde_json::to_value(e).unwrap_or_default()
    }

    #[test]
    fn intrinsics_use_long_form() {
        assert_eq!(js(&Expr::r#ref("Stage")), json!({"Ref": "Stage"}));
        assert_eq!(js(&Expr::NoValue), json!({"Ref": "AWS::NoValue"}));
        assert_eq!(
            js(&Expr::get_att("Fn", "Arn")),
            json!({"Fn::GetAtt": ["Fn", "Arn"]})
        );
        assert_eq!(js(&Expr::sub("a-${B}")), json!({"Fn::Sub": "a-${B}"}));
        assert_eq!(
            js(&Expr::if_("C", Expr::r#ref("X"), Expr::NoValue)),
            json!({"Fn::If": ["C", {"Ref": "X"}, {"Ref": "AWS::NoValue"}]})
        );
        assert_eq!(
            js(&Expr::Not(Box::new(Expr::Equals(
                Box::new(Expr::r#ref("P")),
                Box::new(Expr::str(""))
            )))),
            json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, ""]}]})
        );
        assert_eq!(
            js(&Expr::Join(
                String::new(),
                vec![Expr::get_att("B", "Arn"), Expr::str("/*")]
            )),
            json!({"Fn::Join": ["", [{"Fn::GetAtt": ["B", "Arn"]}, "/*"]]})
        );
        assert_eq!(
            js(&Expr::List(vec![Expr::Int(1), Expr::Bool(true)])),
            json!([1, true])
        );
    }

    #[test]
    fn arn_templates_become_sub_only_when_needed() {
        assert_eq!(js(&Expr::from(&ArnTemplate::any())), json!("*"));
        let t = ArnTemplate::from_parts(vec![Part::Lit("x-".into()), Part::Region]);
        assert_eq!(js(&Expr::from(&t)), json!({"Fn::Sub": "x-${AWS::Region}"}));
    }
}
