//! ObjectMeta's rules for every kind (upstream's `ValidateObjectMeta`): label keys and
//! values, annotation keys and their total size, finalizer names, owner references.
//! The name and namespace are checked by the registry's own naming rules
//! (`object::validate_metadata`).

use serde_json::{Map, Value};

use super::{content, Field};
use crate::registry::Cause;

/// Annotations may hold this much in all, keys and values (`TotalAnnotationSizeLimitB`).
const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

/// Every problem of `metadata`'s labels, annotations, finalizers and owner references.
pub(in crate::registry) fn validate(metadata: &Map<String, Value>) -> Vec<Cause> {
    let at = Field::new("metadata");
    let mut causes = Vec::new();
    let labels = at.child("labels");
    match metadata.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                causes.extend(labels.each_invalid(key, content::qualified_name(key)));
                match value {
                    Value::String(value) => causes.extend(labels.each_invalid(value, content::label_value(value))),
                    other => causes.push(labels.invalid(other, "must be a string")),
                }
            }
        }
        Some(other) => causes.push(labels.invalid(other, "must map strings to strings")),
    }
    let annotations = at.child("annotations");
    match metadata.get("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            let mut total = 0;
            for (key, value) in map {
                causes.extend(annotations.each_invalid(key, content::qualified_name(&key.to_lowercase())));
                match value {
                    Value::String(value) => total += key.len() + value.len(),
                    other => causes.push(annotations.invalid(other, "must be a string")),
                }
            }
            if total > TOTAL_ANNOTATION_SIZE {
                causes.push(annotations.too_long(TOTAL_ANNOTATION_SIZE));
            }
        }
        Some(other) => causes.push(annotations.invalid(other, "must map strings to strings")),
    }
    let finalizers = at.child("finalizers");
    if let Some(Value::Array(names)) = metadata.get("finalizers") {
        for (index, name) in names.iter().enumerate() {
            match name.as_str() {
                Some(text) => causes.extend(finalizers.index(index).each_invalid(text, content::qualified_name(text))),
                None => causes.push(finalizers.index(index).invalid(name, "must be a string")),
            }
        }
    }
    let owners = at.child("ownerReferences");
    if let Some(Value::Array(references)) = metadata.get("ownerReferences") {
        let mut controllers = 0;
        for reference in references {
            let text = |key: &str| reference.get(key).and_then(Value::as_str).unwrap_or_default();
            let version = text("apiVersion").rsplit('/').next().unwrap_or_default();
            for (key, empty, message) in [
                ("apiVersion", version.is_empty(), "version must not be empty"),
                ("kind", text("kind").is_empty(), "kind must not be empty"),
                ("name", text("name").is_empty(), "name must not be empty"),
                ("uid", text("uid").is_empty(), "uid must not be empty"),
            ] {
                if empty {
                    causes.push(owners.child(key).invalid(&Value::String(text(key).to_string()), message));
                }
            }
            if reference.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            causes.push(owners.invalid(
                &Value::String(format!("{controllers} controllers")),
                "Only one reference can have Controller set to true",
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(metadata: Value) -> Vec<String> {
        super::super::problems(validate, metadata)
    }

    #[test]
    fn object_meta_as_upstream_validates_it() {
        assert_eq!(
            problems(json!({"labels": {"app": "web", "example.com/tier": "", "k8s.io/x": "a.b_c-1"},
                "annotations": {"Example.com/Note": "anything at all!", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "finalizers": ["kubernetes", "example.com/cleanup"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]})),
            Vec::<String>::new()
        );
        let found = problems(json!({"labels": {"bad key!": "v", "ok": "-bad-value"}}));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("metadata.labels: Invalid value: \"bad key!\": name part must consist of"),
            "{found:?}"
        );
        assert!(
            found[1]
                .starts_with("metadata.labels: Invalid value: \"-bad-value\": a valid label must be an empty string"),
            "{found:?}"
        );
        let found = problems(json!({"annotations": {"a/b/c": "x", "big": "x".repeat(TOTAL_ANNOTATION_SIZE)}}));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("metadata.annotations: Invalid value: \"a/b/c\": a qualified name must consist of"),
            "{found:?}"
        );
        assert_eq!(found[1], "metadata.annotations: Too long: must have at most 262144 bytes");
        assert_eq!(problems(json!({"finalizers": ["ok", "not ok"]})).len(), 1);
        assert_eq!(
            problems(json!({"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": ""}]})),
            ["metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty"]
        );
    }
}
