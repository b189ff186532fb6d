//! A pod's spec as upstream's `ValidatePodSpec` checks it (the part a node relies on):
//! containers present, named as DNS labels and uniquely, with images; ports in range;
//! requests within limits; volumes named uniquely and mounted by name; the enumerated
//! policies one of their values. Defaults are not applied yet, so an absent enumerated
//! field passes.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{content, Field};
use crate::registry::Cause;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];

/// Every problem of a Pod object's spec.
pub(in crate::registry) fn validate(pod: &serde_json::Map<String, Value>) -> Vec<Cause> {
    let empty = Value::Object(serde_json::Map::new());
    let spec = pod.get("spec").filter(|s| !s.is_null()).unwrap_or(&empty);
    validate_spec(spec, &Field::new("spec"))
}

/// A pod template's or a pod's spec, at `at`.
pub(in crate::registry) fn validate_spec(spec: &Value, at: &Field) -> Vec<Cause> {
    let mut causes = Vec::new();
    let volumes = validate_volumes(spec.get("volumes"), &at.child("volumes"), &mut causes);
    let mut names = BTreeSet::new();
    let containers = spec.get("containers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if containers.is_empty() {
        causes.push(at.child("containers").required(""));
    }
    for (field, list) in [
        ("containers", containers),
        ("initContainers", spec.get("initContainers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()),
    ] {
        for (index, container) in list.iter().enumerate() {
            validate_container(container, &at.child(field).index(index), &mut names, &volumes, &mut causes);
        }
    }
    for (field, allowed) in [("restartPolicy", RESTART_POLICIES), ("dnsPolicy", DNS_POLICIES)] {
        if let Some(value) = spec.get(field).filter(|v| !v.is_null()) {
            if !value.as_str().is_some_and(|v| allowed.contains(&v)) {
                causes.push(at.child(field).not_supported(value, allowed));
            }
        }
    }
    causes
}

/// What an update may change in a pod's spec (upstream's `ValidatePodUpdate`): the
/// containers' images, `activeDeadlineSeconds`, added tolerations,
/// `terminationGracePeriodSeconds`; the binding sets `nodeName` once, and the
/// ephemeralcontainers subresource its own list. Anything else is Forbidden.
pub(in crate::registry) fn validate_update(
    pod: &serde_json::Map<String, Value>,
    old: &serde_json::Map<String, Value>,
) -> Vec<Cause> {
    let (Some(mut new_spec), Some(mut old_spec)) = (pod.get("spec").cloned(), old.get("spec").cloned()) else {
        return Vec::new();
    };
    for spec in [&mut new_spec, &mut old_spec] {
        let Some(spec) = spec.as_object_mut() else { return Vec::new() };
        for field in ["containers", "initContainers"] {
            for container in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(container) = container.as_object_mut() {
                    container.remove("image");
                }
            }
        }
        for field in ["activeDeadlineSeconds", "terminationGracePeriodSeconds", "ephemeralContainers"] {
            spec.remove(field);
        }
    }
    // Tolerations may only be added to; the binding may set a node name not set before.
    let old_tolerations = old_spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    let new_tolerations = new_spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    if old_tolerations.iter().all(|t| new_tolerations.contains(t)) {
        for spec in [&mut new_spec, &mut old_spec] {
            if let Some(spec) = spec.as_object_mut() {
                spec.remove("tolerations");
            }
        }
    }
    if old_spec.get("nodeName").and_then(Value::as_str).is_none_or(str::is_empty) {
        for spec in [&mut new_spec, &mut old_spec] {
            if let Some(spec) = spec.as_object_mut() {
                spec.remove("nodeName");
            }
        }
    }
    if new_spec == old_spec {
        return Vec::new();
    }
    vec![Field::new("spec").forbidden(
        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
    )]
}

/// The volumes' names (checked: DNS labels, unique).
fn validate_volumes(volumes: Option<&Value>, at: &Field, causes: &mut Vec<Cause>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (index, volume) in volumes.and_then(Value::as_array).into_iter().flatten().enumerate() {
        let field = at.index(index).child("name");
        match volume.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            None => causes.push(field.required("")),
            Some(name) => {
                causes.extend(field.each_invalid(name, content::dns1123_label(name)));
                if !names.insert(name.to_string()) {
                    causes.push(field.duplicate(&Value::String(name.into())));
                }
            }
        }
    }
    names
}

fn validate_container(
    container: &Value,
    at: &Field,
    names: &mut BTreeSet<String>,
    volumes: &BTreeSet<String>,
    causes: &mut Vec<Cause>,
) {
    let name_field = at.child("name");
    match container.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        None => causes.push(name_field.required("")),
        Some(name) => {
            causes.extend(name_field.each_invalid(name, content::dns1123_label(name)));
            if !names.insert(name.to_string()) {
                causes.push(name_field.duplicate(&Value::String(name.into())));
            }
        }
    }
    match container.get("image").and_then(Value::as_str) {
        None | Some("") => causes.push(at.child("image").required("")),
        Some(image) if image.trim() != image => causes.push(
            at.child("image").invalid(&Value::String(image.into()), "must not have leading or trailing whitespace"),
        ),
        Some(_) => {}
    }
    if let Some(policy) = container.get("imagePullPolicy").filter(|v| !v.is_null()) {
        if !policy.as_str().is_some_and(|p| PULL_POLICIES.contains(&p)) {
            causes.push(at.child("imagePullPolicy").not_supported(policy, PULL_POLICIES));
        }
    }
    for (index, port) in container.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = at.child("ports").index(index);
        match port.get("containerPort").and_then(Value::as_i64) {
            None | Some(0) => causes.push(at.child("containerPort").required("")),
            Some(number) if !(1..=65535).contains(&number) => causes.push(
                at.child("containerPort").invalid(&Value::from(number), "must be between 1 and 65535, inclusive"),
            ),
            Some(_) => {}
        }
        if let Some(number) = port.get("hostPort").and_then(Value::as_i64).filter(|n| *n != 0) {
            if !(1..=65535).contains(&number) {
                causes
                    .push(at.child("hostPort").invalid(&Value::from(number), "must be between 1 and 65535, inclusive"));
            }
        }
        if let Some(protocol) = port.get("protocol").filter(|v| !v.is_null()) {
            if !protocol.as_str().is_some_and(|p| PROTOCOLS.contains(&p)) {
                causes.push(at.child("protocol").not_supported(protocol, PROTOCOLS));
            }
        }
        if let Some(name) = port.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            causes.extend(at.child("name").each_invalid(name, port_name(name)));
        }
    }
    validate_resources(container.get("resources"), &at.child("resources"), causes);
    for (index, mount) in container.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = at.child("volumeMounts").index(index);
        match mount.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            None => causes.push(at.child("name").required("")),
            Some(name) if !volumes.contains(name) => {
                causes.push(at.child("name").not_found(&Value::String(name.into())))
            }
            Some(_) => {}
        }
        if mount.get("mountPath").and_then(Value::as_str).is_none_or(str::is_empty) {
            causes.push(at.child("mountPath").required(""));
        }
    }
}

/// Requests within limits, nothing negative (cpu and memory; others are counted alike).
fn validate_resources(resources: Option<&Value>, at: &Field, causes: &mut Vec<Cause>) {
    let amount = |value: &Value| -> Option<i128> {
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let negative = text.trim_start().starts_with('-');
        let magnitude = crate::quantity::milli(text.trim_start().trim_start_matches(['-', '+']))? as i128;
        Some(if negative { -magnitude } else { magnitude })
    };
    let list = |kind: &str| resources.and_then(|r| r.get(kind)).and_then(Value::as_object);
    for kind in ["requests", "limits"] {
        for (name, value) in list(kind).into_iter().flatten() {
            if amount(value).is_some_and(|q| q < 0) {
                causes.push(at.child(kind).key(name).invalid(value, "must be greater than or equal to 0"));
            }
        }
    }
    if let (Some(requests), Some(limits)) = (list("requests"), list("limits")) {
        for (name, request) in requests {
            let Some(limit) = limits.get(name) else { continue };
            if let (Some(r), Some(l)) = (amount(request), amount(limit)) {
                if r > l {
                    let shown = limit.as_str().map(String::from).unwrap_or_else(|| limit.to_string());
                    causes.push(
                        at.child("requests")
                            .invalid(request, &format!("must be less than or equal to {name} limit of {shown}")),
                    );
                }
            }
        }
    }
}

/// `IsValidPortName`.
pub(super) fn port_name(port: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if port.len() > 15 {
        problems.push(content::max_len_error(15));
    }
    if !port.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        problems.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !port.chars().any(|c| c.is_ascii_lowercase()) {
        problems.push("must contain at least one letter (a-z)".into());
    }
    if port.contains("--") {
        problems.push("must not contain consecutive hyphens".into());
    }
    if port.starts_with('-') || port.ends_with('-') {
        problems.push("must not begin or end with a hyphen".into());
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(pod: Value) -> Vec<String> {
        super::super::problems(validate, pod)
    }

    /// Cases of upstream's `TestValidatePodSpec` / `TestValidateContainers`, with their words.
    #[test]
    fn pod_specs_as_upstream_validates_them() {
        let ok = json!({"spec": {"containers": [{"name": "c", "image": "app:1", "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": 1, "memory": "128Mi"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "initContainers": [{"name": "init", "image": "init:1"}],
            "volumes": [{"name": "data", "emptyDir": {}}], "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"}});
        assert_eq!(problems(ok), Vec::<String>::new());
        assert_eq!(problems(json!({})), ["spec.containers: Required value"]);
        assert_eq!(problems(json!({"spec": null})), ["spec.containers: Required value"]);
        assert_eq!(problems(json!({"spec": {"containers": []}})), ["spec.containers: Required value"]);
        assert_eq!(
            problems(json!({"spec": {"containers": [{"name1": "c", "image": "a"}]}})),
            ["spec.containers[0].name: Required value"]
        );
        assert_eq!(
            problems(json!({"spec": {"containers": [{"name": "c", "image": "a"}, {"name": "c", "image": "b"}]}})),
            ["spec.containers[1].name: Duplicate value: \"c\""]
        );
        assert_eq!(
            problems(
                json!({"spec": {"containers": [{"name": "c", "image": "a"}], "initContainers": [{"name": "c", "image": "b"}]}})
            ),
            ["spec.initContainers[0].name: Duplicate value: \"c\""]
        );
        assert_eq!(
            problems(json!({"spec": {"containers": [{"name": "c"}]}})),
            ["spec.containers[0].image: Required value"]
        );
        assert_eq!(
            problems(
                json!({"spec": {"containers": [{"name": "c", "image": "a", "ports": [{"containerPort": 99999}]}]}})
            ),
            ["spec.containers[0].ports[0].containerPort: Invalid value: 99999: must be between 1 and 65535, inclusive"]
        );
        assert_eq!(
            problems(json!({"spec": {"containers": [{"name": "c", "image": "a"}], "restartPolicy": "Bogus"}})),
            ["spec.restartPolicy: Unsupported value: \"Bogus\": supported values: \"Always\", \"OnFailure\", \"Never\""]
        );
        assert_eq!(
            problems(json!({"spec": {"containers": [{"name": "c", "image": "a",
                "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}})),
            ["spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"]
        );
        assert_eq!(
            problems(
                json!({"spec": {"containers": [{"name": "c", "image": "a", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}})
            ),
            ["spec.containers[0].volumeMounts[0].name: Not found: \"v\""]
        );
        let invalid_name = problems(json!({"spec": {"containers": [{"name": "Web_1", "image": "a"}]}}));
        assert_eq!(invalid_name.len(), 1);
        assert!(
            invalid_name[0]
                .starts_with("spec.containers[0].name: Invalid value: \"Web_1\": a lowercase RFC 1123 label"),
            "{invalid_name:?}"
        );
        let port_name = problems(
            json!({"spec": {"containers": [{"name": "c", "image": "a", "ports": [{"containerPort": 1, "name": "-HTTP"}]}]}}),
        );
        assert_eq!(port_name.len(), 3, "{port_name:?}");
    }
}
