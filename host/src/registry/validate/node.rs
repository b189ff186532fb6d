//! Nodes and Leases, for what the node agent and leader election rely on: a node's taints
//! have qualified keys, label values and a known effect, and at most one per key and
//! effect; a Lease's duration is positive and its transitions not negative.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{content, Field};
use crate::registry::Cause;

const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Every problem of a Node's spec.
pub(in crate::registry) fn validate_node(node: &serde_json::Map<String, Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut seen = BTreeSet::new();
    let taints = node.get("spec").and_then(|s| s.get("taints")).and_then(Value::as_array);
    for (index, taint) in taints.into_iter().flatten().enumerate() {
        let at = Field::new("spec").child("taints").index(index);
        let text = |key: &str| taint.get(key).and_then(Value::as_str).unwrap_or_default();
        let key = text("key");
        if key.is_empty() {
            causes.push(at.child("key").required(""));
        } else {
            causes.extend(at.child("key").each_invalid(key, content::qualified_name(key)));
        }
        causes.extend(at.child("value").each_invalid(text("value"), content::label_value(text("value"))));
        match taint.get("effect") {
            Some(effect) if effect.as_str().is_some_and(|e| EFFECTS.contains(&e)) => {
                if !seen.insert((key.to_string(), text("effect").to_string())) {
                    causes.push(at.invalid(
                        &Value::String(format!("{key}:{}", text("effect"))),
                        "taints must be unique by key and effect pair",
                    ));
                }
            }
            Some(effect) if !effect.is_null() && effect != "" => {
                causes.push(at.child("effect").not_supported(effect, EFFECTS))
            }
            _ => causes.push(at.child("effect").required("")),
        }
    }
    causes
}

/// Every problem of a Lease's spec.
pub(in crate::registry) fn validate_lease(lease: &serde_json::Map<String, Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = lease.get("spec");
    let at = Field::new("spec");
    if let Some(duration) = spec.and_then(|s| s.get("leaseDurationSeconds")).and_then(Value::as_i64) {
        if duration <= 0 {
            causes.push(at.child("leaseDurationSeconds").invalid(&Value::from(duration), "must be greater than 0"));
        }
    }
    if let Some(transitions) = spec.and_then(|s| s.get("leaseTransitions")).and_then(Value::as_i64) {
        if transitions < 0 {
            causes.push(
                at.child("leaseTransitions").invalid(&Value::from(transitions), "must be greater than or equal to 0"),
            );
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(check: fn(&serde_json::Map<String, Value>) -> Vec<Cause>, object: Value) -> Vec<String> {
        super::super::problems(check, object)
    }

    #[test]
    fn nodes_and_leases_as_upstream_validates_them() {
        let node = json!({"spec": {"taints": [{"key": "dedicated", "value": "sim", "effect": "NoSchedule"},
            {"key": "example.com/gpu", "effect": "NoExecute"}]}});
        assert_eq!(problems(validate_node, node), Vec::<String>::new());
        assert_eq!(
            problems(validate_node, json!({"spec": {"taints": [{"key": "k", "effect": "Bogus"}]}})),
            ["spec.taints[0].effect: Unsupported value: \"Bogus\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""]
        );
        assert_eq!(
            problems(validate_node, json!({"spec": {"taints": [{"effect": "NoSchedule"}]}})),
            ["spec.taints[0].key: Required value"]
        );
        assert_eq!(
            problems(
                validate_node,
                json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}, {"key": "k", "value": "v", "effect": "NoSchedule"}]}})
            ),
            ["spec.taints[1]: Invalid value: \"k:NoSchedule\": taints must be unique by key and effect pair"]
        );
        assert_eq!(
            problems(validate_lease, json!({"spec": {"leaseDurationSeconds": 15, "leaseTransitions": 0}})),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(validate_lease, json!({"spec": {"leaseDurationSeconds": 0}})),
            ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
        );
    }
}
