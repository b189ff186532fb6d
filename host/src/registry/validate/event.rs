//! Core Events as upstream's `ValidateEventCreate` checks their namespace: an event about a
//! namespaced object lives in that object's namespace; one about a cluster-scoped object in
//! no namespace or `default` (old clients' habit).

use serde_json::Value;

use super::Field;
use crate::registry::Cause;

pub(in crate::registry) fn validate(event: &serde_json::Map<String, Value>) -> Vec<Cause> {
    let namespace = event.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or_default();
    let involved =
        event.get("involvedObject").and_then(|o| o.get("namespace")).and_then(Value::as_str).unwrap_or_default();
    let agrees =
        if involved.is_empty() { namespace.is_empty() || namespace == "default" } else { namespace == involved };
    if agrees {
        Vec::new()
    } else {
        vec![Field::new("involvedObject")
            .child("namespace")
            .invalid(&Value::String(involved.to_string()), "does not match event.namespace")]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(event: Value) -> Vec<String> {
        super::super::problems(validate, event)
    }

    #[test]
    fn an_event_lives_where_its_object_does() {
        assert!(problems(json!({"metadata": {"namespace": "a"}, "involvedObject": {"kind": "Pod", "namespace": "a"}}))
            .is_empty());
        assert!(problems(json!({"metadata": {"namespace": "default"}, "involvedObject": {"kind": "Node"}})).is_empty());
        assert_eq!(
            problems(json!({"metadata": {"namespace": "b"}, "involvedObject": {"kind": "Pod", "namespace": "a"}})),
            ["involvedObject.namespace: Invalid value: \"a\": does not match event.namespace"]
        );
        assert_eq!(
            problems(json!({"metadata": {"namespace": "b"}, "involvedObject": {"kind": "Node"}})),
            ["involvedObject.namespace: Invalid value: \"\": does not match event.namespace"]
        );
    }
}
