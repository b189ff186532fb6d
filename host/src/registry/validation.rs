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
///
/// `typed`: the kind is one of Kubernetes' own, which kube-apiserver decodes into Go
/// structs, so every scalar must also be what its Go field can hold (a string, an int32 in
/// range, a quantity, a time, base64 bytes), and a wrong one is reported in Go's decoder's
/// words. Custom resources are not typed: their schema's validation judges them later.
pub(super) fn check(object: &mut Object, schema: Schema<'_>, typed: bool) -> Findings {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut walk = Walk { typed, findings: Findings::default() };
    walk.map(object, schema, &Place { path: String::new(), go_path: String::new(), owner: kind });
    walk.findings
}

/// Where a value is: its field path (`spec.containers[0].image`), and for Go's decoder
/// messages the struct that holds it and its path without indices or map keys.
struct Place {
    path: String,
    go_path: String,
    owner: String,
}

struct Walk {
    typed: bool,
    findings: Findings,
}

impl Walk {
    fn map(&mut self, map: &mut serde_json::Map<String, Value>, schema: Schema<'_>, place: &Place) {
        let closed = schema.is_closed_object();
        // A struct's fields extend Go's path; a map's keys do not.
        let is_struct = schema.node().get("properties").is_some_and(Value::is_object);
        let owner = match (is_struct, schema.reference()) {
            (true, Some(reference)) => short_name(reference).to_string(),
            _ => place.owner.clone(),
        };
        let mut unknown = Vec::new();
        for (key, value) in map.iter_mut() {
            let path = if place.path.is_empty() { key.clone() } else { format!("{}.{key}", place.path) };
            match schema.field(key) {
                Some(field) => {
                    let go_path = match (is_struct, place.go_path.is_empty()) {
                        (false, _) => place.go_path.clone(),
                        (true, true) => key.clone(),
                        (true, false) => format!("{}.{key}", place.go_path),
                    };
                    self.value(value, field, &Place { path, go_path, owner: owner.clone() });
                }
                None if closed && !matches!(key.as_str(), "apiVersion" | "kind") => unknown.push(key.clone()),
                None => {}
            }
        }
        for key in unknown {
            map.remove(&key);
            self.findings.unknown.push(if place.path.is_empty() { key } else { format!("{}.{key}", place.path) });
        }
    }

    fn value(&mut self, value: &mut Value, schema: Schema<'_>, place: &Place) {
        match (value, schema.type_name()) {
            (Value::Null, _) => {}
            (Value::Object(map), Some("object") | None) => self.map(map, schema, place),
            (Value::Array(items), Some("array")) => {
                if let Some(item_schema) = schema.items() {
                    for (index, item) in items.iter_mut().enumerate() {
                        let path = format!("{}[{index}]", place.path);
                        self.value(
                            item,
                            item_schema,
                            &Place { path, go_path: place.go_path.clone(), owner: place.owner.clone() },
                        );
                    }
                }
            }
            (value @ (Value::Object(_) | Value::Array(_)), Some(_)) => self.mismatch(value, schema, place, ""),
            (value, Some("object" | "array")) => self.mismatch(value, schema, place, ""),
            (value, Some(expected)) if self.typed => self.scalar(value, expected, schema, place),
            (Value::Bool(_), Some(expected @ ("integer" | "number")))
            | (Value::String(_), Some(expected @ "integer")) => {
                self.findings.wrong_shape.push(format!("{}: expected {expected}", place.path))
            }
            _ => {}
        }
    }

    /// A scalar of a built-in kind, as Go's decoder would take it.
    fn scalar(&mut self, value: &Value, expected: &str, schema: Schema<'_>, place: &Place) {
        let reference = schema.reference().map(short_name);
        match (expected, schema.format(), reference, value) {
            ("string", Some("int-or-string"), _, Value::String(_)) => {}
            ("string", Some("int-or-string"), _, Value::Number(n))
                if n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) => {}
            ("string", Some("int-or-string"), _, other) => self
                .findings
                .wrong_shape
                .push(format!("json: cannot unmarshal {} into Go value of type int32", json_type(other, true))),
            ("string", _, Some("Quantity"), Value::Number(_)) => {}
            ("string", _, Some("Quantity"), Value::String(text)) if is_quantity(text) => {}
            ("string", _, Some("Quantity"), _) => self.findings.wrong_shape.push(
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'".into(),
            ),
            ("string", Some("date-time"), _, Value::String(text)) => {
                if !is_rfc3339(text) {
                    self.findings.wrong_shape.push(format!(
                        "parsing time {text:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse {text:?} as \"2006\""
                    ));
                }
            }
            ("string", Some("byte"), _, Value::String(text)) => {
                use base64::Engine;
                if let Err(e) = base64::engine::general_purpose::STANDARD.decode(text) {
                    let at = match e {
                        base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                        _ => text.len(),
                    };
                    self.findings.wrong_shape.push(format!("illegal base64 data at input byte {at}"));
                }
            }
            ("string", _, _, Value::String(_)) => {}
            ("integer", format, _, Value::Number(number)) => {
                let fits = match (number.as_i64(), format) {
                    (Some(n), Some("int32")) => i32::try_from(n).is_ok(),
                    (Some(_), _) => true,
                    (None, _) => false,
                };
                if !fits {
                    self.mismatch(value, schema, place, &format!(" {number}"));
                }
            }
            ("number", _, _, Value::Number(_)) | ("boolean", _, _, Value::Bool(_)) => {}
            _ => self.mismatch(value, schema, place, ""),
        }
    }

    /// Go's `json: cannot unmarshal <json type>[ <value>] into Go struct field <Struct>.<path> of type <type>`.
    fn mismatch(&mut self, value: &Value, schema: Schema<'_>, place: &Place, shown: &str) {
        self.findings.wrong_shape.push(format!(
            "json: cannot unmarshal {}{shown} into Go struct field {}.{} of type {}",
            json_type(value, false),
            place.owner,
            place.go_path,
            go_type(schema),
        ));
    }
}

/// How Go's decoder names a JSON value's type.
fn json_type(value: &Value, with_number: bool) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) if with_number => format!("number {n}"),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

/// The Go type a schema node decodes into, as Go's decoder names it.
fn go_type(schema: Schema<'_>) -> String {
    if let Some(reference) = schema.reference() {
        let mut parts = reference.rsplit('.');
        let (name, package) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        return match name {
            "Quantity" => "resource.Quantity".into(),
            "IntOrString" => "intstr.IntOrString".into(),
            _ if schema.type_name() == Some("object") => format!("{package}.{name}"),
            _ => scalar_go_type(schema),
        };
    }
    match schema.type_name() {
        Some("array") => format!("[]{}", schema.items().map(go_type).unwrap_or_else(|| "interface {}".into())),
        Some("object") => match schema.node().get("additionalProperties").filter(|a| a.is_object()) {
            Some(_) => format!("map[string]{}", schema.field("").map(go_type).unwrap_or_else(|| "interface {}".into())),
            None => "struct".into(),
        },
        _ => scalar_go_type(schema),
    }
}

fn scalar_go_type(schema: Schema<'_>) -> String {
    match (schema.type_name(), schema.format()) {
        (Some("integer"), Some(format @ ("int32" | "int64"))) => format.into(),
        (Some("integer"), _) => "int".into(),
        (Some("number"), _) => "float64".into(),
        (Some("boolean"), _) => "bool".into(),
        (Some("string"), Some("byte")) => "[]uint8".into(),
        (Some("string"), Some("date-time")) => "v1.Time".into(),
        _ => "string".into(),
    }
}

/// `io.k8s.api.core.v1.Container` → `Container`.
fn short_name(reference: &str) -> &str {
    reference.rsplit('.').next().unwrap_or(reference)
}

/// A quantity as Kubernetes' `ParseQuantity` takes it: a signed decimal number and one
/// suffix (binary `Ki`..`Ei`, decimal `n`..`E`, or an exponent `e3`, `E-2`).
fn is_quantity(text: &str) -> bool {
    let text = text.strip_prefix(['+', '-']).unwrap_or(text);
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    if digits == 0 || number.matches('.').count() > 1 {
        return false;
    }
    match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        exponent => exponent
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())),
    }
}

/// RFC 3339 as Go's `time.RFC3339` reads it: `2006-01-02T15:04:05Z`, fractions and
/// numeric offsets allowed.
fn is_rfc3339(text: &str) -> bool {
    let utc = match text.len().checked_sub(6).map(|at| text.split_at(at)) {
        Some((base, offset))
            if (offset.starts_with('+') || offset.starts_with('-'))
                && offset.as_bytes().get(3) == Some(&b':')
                && offset[1..3].chars().chain(offset[4..].chars()).all(|c| c.is_ascii_digit()) =>
        {
            format!("{base}Z")
        }
        _ => text.to_string(),
    };
    utc.ends_with('Z') && humantime::parse_rfc3339_weak(&utc[..utc.len() - 1]).is_ok()
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
        let findings = check(&mut object, schema, true);
        let mut unknown = findings.unknown.clone();
        unknown.sort();
        assert_eq!(unknown, ["extra", "metadata.bogus", "spec.template.spec.containers[0].imagee"]);
        assert!(findings.wrong_shape.is_empty());
        assert!(object.get("extra").is_none());
        assert_eq!(object["metadata"]["labels"]["any"], "label");
        assert!(object["spec"]["template"]["spec"]["containers"][0].get("imagee").is_none());
    }

    fn decode_errors(group: &str, kind: &str, object: serde_json::Value) -> Vec<String> {
        let schema = Schema::builtin(group, "v1", kind).expect("schema");
        let mut object: Object = serde_json::from_value(object).expect("object");
        check(&mut object, schema, true).wrong_shape
    }

    /// Each wrong scalar is named as Go's decoder names it in kube-apiserver's answer.
    #[test]
    fn scalars_of_built_in_kinds_are_what_their_go_fields_hold() {
        let pod = |container: serde_json::Value| serde_json::json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [container]}});
        let cases = [
            (pod(serde_json::json!({"name": "c", "image": 5})),
             "json: cannot unmarshal number into Go struct field Container.spec.containers.image of type string"),
            (pod(serde_json::json!({"name": "c", "ports": [{"containerPort": "80"}]})),
             "json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32"),
            (pod(serde_json::json!({"name": "c", "ports": [{"containerPort": 1.5}]})),
             "json: cannot unmarshal number 1.5 into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32"),
            (pod(serde_json::json!({"name": "c", "ports": [{"containerPort": 3000000000u64}]})),
             "json: cannot unmarshal number 3000000000 into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32"),
            (pod(serde_json::json!({"name": "c", "resources": {"limits": {"cpu": "lots"}}})),
             "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
            (pod(serde_json::json!({"name": "c", "stdin": "yes"})),
             "json: cannot unmarshal string into Go struct field Container.spec.containers.stdin of type bool"),
            (pod(serde_json::json!({"name": "c", "livenessProbe": {"httpGet": {"port": true}}})),
             "json: cannot unmarshal bool into Go value of type int32"),
            (serde_json::json!({"kind": "Pod", "metadata": {"name": "p", "labels": {"a": 5}}}),
             "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string"),
            (serde_json::json!({"kind": "Pod", "metadata": {"name": "p", "creationTimestamp": "yesterday"}}),
             "parsing time \"yesterday\" as \"2006-01-02T15:04:05Z07:00\": cannot parse \"yesterday\" as \"2006\""),
            (serde_json::json!({"kind": "Pod", "spec": {"containers": {"name": "c"}}}),
             "json: cannot unmarshal object into Go struct field PodSpec.spec.containers of type []v1.Container"),
        ];
        for (object, expected) in cases {
            assert_eq!(decode_errors("", "Pod", object.clone()), [expected], "{object}");
        }
        let fine = pod(serde_json::json!({"name": "c", "image": "app:1", "stdin": true,
            "ports": [{"containerPort": 80}],
            "resources": {"limits": {"cpu": 1, "memory": "64Mi"}, "requests": {"cpu": "100m", "memory": "1e6"}},
            "livenessProbe": {"httpGet": {"port": "http"}}, "readinessProbe": {"tcpSocket": {"port": 8080}}}));
        assert_eq!(decode_errors("", "Pod", fine), Vec::<String>::new());
        let secret = |data: &str| serde_json::json!({"kind": "Secret", "data": {"k": data}});
        assert_eq!(decode_errors("", "Secret", secret("aGVsbG8=")), Vec::<String>::new());
        assert_eq!(decode_errors("", "Secret", secret("not base64!")), ["illegal base64 data at input byte 3"]);
        let event = serde_json::json!({"kind": "Event", "firstTimestamp": "2026-12-07T14:00:00+01:00",
            "eventTime": "2026-12-07T14:00:00.123456Z"});
        assert_eq!(decode_errors("", "Event", event), Vec::<String>::new());
    }

    #[test]
    fn wrong_shapes_are_found() {
        let schema = Schema::builtin("apps", "v1", "Deployment").expect("schema");
        let mut object: Object = serde_json::from_value(serde_json::json!({
            "spec": {"replicas": "two", "template": {"spec": {"containers": {"name": "c"}}}},
        }))
        .expect("object");
        let findings = check(&mut object, schema, true);
        assert_eq!(findings.wrong_shape.len(), 2, "{:?}", findings.wrong_shape);
    }
}
