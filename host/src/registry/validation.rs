//! Checking an object against its kind's schema before it is stored: fields the schema
//! does not declare are dropped, and reported or refused as `fieldValidation` asks
//! (kube-apiserver drops them too: its typed decoding has nowhere to keep them), and a
//! value of the wrong shape (an object where a list belongs, ...) is refused.
//!
//! Knows schemas and objects only; what a field *means* is each strategy's business.

use serde_json::Value;

use super::schema::Schema;
use super::Object;

/// `fieldValidation`: what happens to fields the schema does not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped, and the client is told in a `Warning` header (the default).
    #[default]
    Warn,
    /// The request fails.
    Strict,
}

/// What the check found: unknown fields (already dropped) and shape errors.
#[derive(Debug, Default)]
pub(super) struct Findings {
    pub unknown: Vec<String>,
    pub wrong_shape: Vec<String>,
}

/// Drop the fields of `object` that `schema` does not declare, and note them and any
/// value of the wrong shape. `status` is included: a client may write it through the
/// status subresource.
pub(super) fn check(object: &mut Object, schema: Schema<'_>) -> Findings {
    let mut findings = Findings::default();
    check_map(object, schema, "", &mut findings);
    findings
}

fn check_map(map: &mut serde_json::Map<String, Value>, schema: Schema<'_>, path: &str, findings: &mut Findings) {
    let closed = schema.is_closed_object();
    let mut unknown = Vec::new();
    for (key, value) in map.iter_mut() {
        let field_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        match schema.field(key) {
            Some(field) => check_value(value, field, &field_path, findings),
            None if closed && !matches!(key.as_str(), "apiVersion" | "kind") => unknown.push(key.clone()),
            None => {}
        }
    }
    for key in unknown {
        map.remove(&key);
        findings.unknown.push(if path.is_empty() { key } else { format!("{path}.{key}") });
    }
}

fn check_value(value: &mut Value, schema: Schema<'_>, path: &str, findings: &mut Findings) {
    match (value, schema.type_name()) {
        (Value::Null, _) => {}
        (Value::Object(map), Some("object") | None) => check_map(map, schema, path, findings),
        (Value::Array(items), Some("array")) => {
            if let Some(item_schema) = schema.items() {
                for (index, item) in items.iter_mut().enumerate() {
                    check_value(item, item_schema, &format!("{path}[{index}]"), findings);
                }
            }
        }
        (Value::Object(_), Some(other)) if other != "object" => {
            findings.wrong_shape.push(format!("{path}: expected {other}, got an object"))
        }
        (Value::Array(_), Some(other)) if other != "array" => {
            findings.wrong_shape.push(format!("{path}: expected {other}, got a list"))
        }
        (scalar, Some(expected @ ("object" | "array"))) => {
            findings.wrong_shape.push(format!("{path}: expected {expected}, got {scalar}"))
        }
        (Value::Bool(_), Some(expected @ ("integer" | "number"))) | (Value::String(_), Some(expected @ "integer")) => {
            findings.wrong_shape.push(format!("{path}: expected {expected}"))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_dropped_and_named_by_path() {
        let schema = Schema::builtin("apps", "v1", "Deployment").expect("schema");
        let mut object: Object = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"any": "label"}, "bogus": 1},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "imagee": "x"}]}}},
            "extra": true,
        }))
        .expect("object");
        let findings = check(&mut object, schema);
        let mut unknown = findings.unknown.clone();
        unknown.sort();
        assert_eq!(unknown, ["extra", "metadata.bogus", "spec.template.spec.containers[0].imagee"]);
        assert!(findings.wrong_shape.is_empty());
        assert!(object.get("extra").is_none());
        assert_eq!(object["metadata"]["labels"]["any"], "label");
        assert!(object["spec"]["template"]["spec"]["containers"][0].get("imagee").is_none());
    }

    #[test]
    fn wrong_shapes_are_found() {
        let schema = Schema::builtin("apps", "v1", "Deployment").expect("schema");
        let mut object: Object = serde_json::from_value(serde_json::json!({
            "spec": {"replicas": "two", "template": {"spec": {"containers": {"name": "c"}}}},
        }))
        .expect("object");
        let findings = check(&mut object, schema);
        assert_eq!(findings.wrong_shape.len(), 2, "{:?}", findings.wrong_shape);
    }
}
