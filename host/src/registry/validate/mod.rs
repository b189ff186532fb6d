//! What kube-apiserver's `pkg/apis/*/validation` checks before an object is stored, in
//! its words: field errors (`spec.containers[0].name: Required value`) built with
//! [`Field`], the string formats of apimachinery's `util/validation` ([`content`]),
//! ObjectMeta's rules for every kind ([`meta`]) and each kind's own ([`pod`], ...).
//!
//! Pure functions of the object (and, on update, the stored one); they know nothing of
//! storage or HTTP. The schema's own checks (types, unknown fields) are `validation.rs`.

pub(super) mod capacity;
pub(super) mod content;
pub(super) mod event;
pub(super) mod meta;
pub(super) mod networking;
pub(super) mod node;
pub(super) mod pod;
pub(super) mod rbac;
pub(super) mod service;
pub(super) mod workload;

use serde_json::Value;

use super::Cause;

/// A field path being validated, as Kubernetes' `field.Path` prints it.
#[derive(Clone, Debug)]
pub(super) struct Field(String);

impl Field {
    pub(super) fn new(name: &str) -> Self {
        Self(name.to_string())
    }

    /// The path as Kubernetes prints it.
    pub(super) fn path(&self) -> &str {
        &self.0
    }

    pub(super) fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_string())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    pub(super) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// A map entry: `metadata.labels[app]`.
    pub(super) fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }

    pub(super) fn required(&self, detail: &str) -> Cause {
        let message =
            if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
        Cause { reason: "FieldValueRequired", field: self.0.clone(), message }
    }

    pub(super) fn invalid(&self, value: &Value, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: self.0.clone(),
            message: format!("Invalid value: {}: {detail}", shown(value)),
        }
    }

    pub(super) fn duplicate(&self, value: &Value) -> Cause {
        Cause {
            reason: "FieldValueDuplicate",
            field: self.0.clone(),
            message: format!("Duplicate value: {}", shown(value)),
        }
    }

    pub(super) fn not_supported(&self, value: &Value, supported: &[&str]) -> Cause {
        let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: self.0.clone(),
            message: format!("Unsupported value: {}: supported values: {}", shown(value), supported.join(", ")),
        }
    }

    pub(super) fn not_found(&self, value: &Value) -> Cause {
        Cause { reason: "FieldValueNotFound", field: self.0.clone(), message: format!("Not found: {}", shown(value)) }
    }

    pub(super) fn forbidden(&self, detail: &str) -> Cause {
        Cause { reason: "FieldValueForbidden", field: self.0.clone(), message: format!("Forbidden: {detail}") }
    }

    pub(super) fn too_long(&self, max_bytes: usize) -> Cause {
        Cause {
            reason: "FieldValueTooLong",
            field: self.0.clone(),
            message: format!("Too long: must have at most {max_bytes} bytes"),
        }
    }

    /// One `Invalid` per problem `check` finds in the string `value`.
    pub(super) fn each_invalid(&self, value: &str, problems: Vec<String>) -> Vec<Cause> {
        problems.iter().map(|problem| self.invalid(&Value::String(value.to_string()), problem)).collect()
    }
}

/// A string field of `value`, "" when absent or not a string (Go's zero value).
pub(super) fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A value as Go's `%#v`-like field errors print it: strings quoted, numbers bare.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

/// For the kinds' tests: what a check says of an object, each cause as `field: message`.
#[cfg(test)]
pub(super) fn problems(check: impl Fn(&serde_json::Map<String, Value>) -> Vec<Cause>, object: Value) -> Vec<String> {
    let Value::Object(object) = object else { panic!("an object") };
    check(&object).into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
}
