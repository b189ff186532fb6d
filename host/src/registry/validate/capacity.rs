//! What sizes and ranks workloads and their storage (upstream's `autoscaling`, `policy`,
//! `scheduling` and `storage` validation, and core's for volumes): an HPA's target and
//! bounds, a PodDisruptionBudget's one budget, a PriorityClass's value and reserved names,
//! a PersistentVolume's capacity, access modes and single source, a claim's request, a
//! StorageClass's provisioner and policies.

use serde_json::{Map, Value};

use super::{content, text, Field};
use crate::registry::Cause;

const ACCESS_MODES: &[&str] = &["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"];
const RECLAIM_POLICIES: &[&str] = &["Retain", "Recycle", "Delete"];
const CLASS_RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
const PREEMPTION_POLICIES: &[&str] = &["PreemptLowerPriority", "Never"];
const EVICTION_POLICIES: &[&str] = &["IfHealthyBudget", "AlwaysAllow"];
/// The largest priority a user-defined PriorityClass may have.
const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;
/// The two classes the system defines, which may use the reserved prefix.
const SYSTEM_CLASSES: &[&str] = &["system-cluster-critical", "system-node-critical"];

/// The volume sources of a PersistentVolume's spec, exactly one of which it names.
const VOLUME_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

/// Every problem of `kind`'s object (by its API group); other kinds have none here.
pub(in crate::registry) fn validate(group: &str, kind: &str, object: &Map<String, Value>) -> Vec<Cause> {
    let null = Value::Null;
    let spec = object.get("spec").unwrap_or(&null);
    let at = Field::new("spec");
    match (group, kind) {
        ("autoscaling", "HorizontalPodAutoscaler") => autoscaler(spec, &at),
        ("policy", "PodDisruptionBudget") => disruption_budget(spec, &at),
        ("scheduling.k8s.io", "PriorityClass") => priority_class(object),
        ("", "PersistentVolume") => persistent_volume(spec, &at),
        ("", "PersistentVolumeClaim") => claim(spec, &at),
        ("storage.k8s.io", "StorageClass") => storage_class(object),
        _ => Vec::new(),
    }
}

fn one_of(value: Option<&Value>, at: &Field, supported: &[&str]) -> Option<Cause> {
    let value = value.filter(|v| !v.is_null())?;
    (!value.as_str().is_some_and(|v| supported.contains(&v))).then(|| at.not_supported(value, supported))
}

fn autoscaler(spec: &Value, at: &Field) -> Vec<Cause> {
    let mut causes = Vec::new();
    let target = spec.get("scaleTargetRef").unwrap_or(&Value::Null);
    for key in ["kind", "name"] {
        if text(target, key).is_empty() {
            causes.push(at.child("scaleTargetRef").child(key).required(""));
        }
    }
    let min = spec.get("minReplicas").and_then(Value::as_i64);
    if let Some(min) = min.filter(|m| *m < 1) {
        causes.push(at.child("minReplicas").invalid(&Value::from(min), "must be greater than or equal to 1"));
    }
    match spec.get("maxReplicas").and_then(Value::as_i64) {
        Some(max) if max < 1 => {
            causes.push(at.child("maxReplicas").invalid(&Value::from(max), "must be greater than or equal to 1"))
        }
        Some(max) if min.is_some_and(|min| max < min) => causes
            .push(at.child("maxReplicas").invalid(&Value::from(max), "must be greater than or equal to `minReplicas`")),
        _ => {}
    }
    causes
}

/// An int or a percentage, as a budget's `minAvailable`/`maxUnavailable` is.
fn int_or_percent(value: &Value, at: &Field) -> Option<Cause> {
    match value {
        Value::Number(n) if n.as_i64().is_some_and(|n| n < 0) => {
            Some(at.invalid(value, "must be greater than or equal to 0"))
        }
        Value::String(s) => match s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
            None => Some(at.invalid(value, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")),
            Some(n) if n < 0 => Some(at.invalid(value, "must be greater than or equal to 0")),
            Some(n) if n > 100 => Some(at.invalid(value, "must not be greater than 100%")),
            Some(_) => None,
        },
        _ => None,
    }
}

fn disruption_budget(spec: &Value, at: &Field) -> Vec<Cause> {
    let mut causes = Vec::new();
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        causes.push(at.invalid(spec, "minAvailable and maxUnavailable cannot be both set"));
    }
    causes.extend(min.and_then(|v| int_or_percent(v, &at.child("minAvailable"))));
    causes.extend(max.and_then(|v| int_or_percent(v, &at.child("maxUnavailable"))));
    causes.extend(one_of(
        spec.get("unhealthyPodEvictionPolicy"),
        &at.child("unhealthyPodEvictionPolicy"),
        EVICTION_POLICIES,
    ));
    causes
}

fn priority_class(object: &Map<String, Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = object.get("metadata").map(|m| text(m, "name")).unwrap_or_default();
    let system = SYSTEM_CLASSES.contains(&name);
    if name.starts_with("system-") && !system {
        causes.push(
            Field::new("metadata")
                .child("name")
                .forbidden("priority class names with 'system-' prefix are reserved for system use only"),
        );
    }
    match object.get("value").and_then(Value::as_i64) {
        Some(value) if value > HIGHEST_USER_PRIORITY && !system => causes.push(
            Field::new("value")
                .forbidden(&format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}")),
        ),
        _ => {}
    }
    causes.extend(one_of(object.get("preemptionPolicy"), &Field::new("preemptionPolicy"), PREEMPTION_POLICIES));
    causes
}

fn access_modes(spec: &Value, at: &Field, detail: &str) -> Vec<Cause> {
    let modes = spec.get("accessModes").and_then(Value::as_array);
    if modes.is_none_or(|m| m.is_empty()) {
        return vec![at.child("accessModes").required(detail)];
    }
    modes.into_iter().flatten().filter_map(|mode| one_of(Some(mode), &at.child("accessModes"), ACCESS_MODES)).collect()
}

fn persistent_volume(spec: &Value, at: &Field) -> Vec<Cause> {
    let mut causes = access_modes(spec, at, "");
    match spec.get("capacity").and_then(Value::as_object) {
        None => causes.push(at.child("capacity").required("")),
        Some(capacity) if capacity.is_empty() => causes.push(at.child("capacity").required("")),
        Some(capacity) if !capacity.contains_key("storage") || capacity.len() > 1 => {
            causes.push(at.child("capacity").not_supported(&Value::Object(capacity.clone()), &["storage"]))
        }
        Some(_) => {}
    }
    let sources: Vec<&str> =
        VOLUME_SOURCES.iter().copied().filter(|s| spec.get(*s).is_some_and(|v| !v.is_null())).collect();
    match sources.as_slice() {
        [] => causes.push(at.required("must specify a volume type")),
        [_] => {}
        [_, more @ ..] => {
            for source in more {
                causes.push(at.child(source).forbidden("may not specify more than 1 volume type"));
            }
        }
    }
    causes.extend(one_of(
        spec.get("persistentVolumeReclaimPolicy"),
        &at.child("persistentVolumeReclaimPolicy"),
        RECLAIM_POLICIES,
    ));
    causes.extend(one_of(spec.get("volumeMode"), &at.child("volumeMode"), VOLUME_MODES));
    causes
}

fn claim(spec: &Value, at: &Field) -> Vec<Cause> {
    let mut causes = access_modes(spec, at, "at least 1 access mode is required");
    let storage = spec.pointer("/resources/requests/storage");
    let at_storage = at.child("resources").key("storage");
    match storage {
        None | Some(Value::Null) => causes.push(at_storage.required("")),
        Some(Value::String(quantity)) => {
            // Rounded up to milli-units, so only a true zero is 0.
            if crate::quantity::milli(quantity) == Some(0) {
                causes.push(at_storage.invalid(&Value::String(quantity.clone()), "must be greater than zero"));
            }
        }
        Some(_) => {}
    }
    causes.extend(one_of(spec.get("volumeMode"), &at.child("volumeMode"), VOLUME_MODES));
    causes
}

fn storage_class(object: &Map<String, Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let provisioner = object.get("provisioner").and_then(Value::as_str).unwrap_or_default();
    let at = Field::new("provisioner");
    if provisioner.is_empty() {
        causes.push(at.required(""));
    } else {
        causes.extend(at.each_invalid(provisioner, content::qualified_name(provisioner)));
    }
    causes.extend(one_of(object.get("reclaimPolicy"), &Field::new("reclaimPolicy"), CLASS_RECLAIM_POLICIES));
    causes.extend(one_of(object.get("volumeBindingMode"), &Field::new("volumeBindingMode"), BINDING_MODES));
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::problems;
    use super::*;

    fn check(group: &str, kind: &str, object: Value) -> Vec<String> {
        problems(|o| validate(group, kind, o), object)
    }

    #[test]
    fn an_autoscaler_names_its_target_and_sane_bounds() {
        let good = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 3}});
        assert!(check("autoscaling", "HorizontalPodAutoscaler", good).is_empty());
        let bad = json!({"spec": {"scaleTargetRef": {}, "minReplicas": 4, "maxReplicas": 2}});
        assert_eq!(
            check("autoscaling", "HorizontalPodAutoscaler", bad),
            [
                "spec.scaleTargetRef.kind: Required value",
                "spec.scaleTargetRef.name: Required value",
                "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
            ]
        );
    }

    #[test]
    fn a_budget_has_one_bound_as_a_count_or_a_percentage() {
        assert!(check("policy", "PodDisruptionBudget", json!({"spec": {"minAvailable": "50%"}})).is_empty());
        assert_eq!(
            check("policy", "PodDisruptionBudget", json!({"spec": {"minAvailable": 1, "maxUnavailable": "150%"}})),
            [
                "spec: Invalid value: {\"minAvailable\":1,\"maxUnavailable\":\"150%\"}: minAvailable and maxUnavailable cannot be both set",
                "spec.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"
            ]
        );
    }

    #[test]
    fn a_priority_class_stays_below_the_system_ones() {
        let class = |name: &str, value: i64| json!({"metadata": {"name": name}, "value": value});
        assert!(check("scheduling.k8s.io", "PriorityClass", class("high", 1000)).is_empty());
        assert!(check("scheduling.k8s.io", "PriorityClass", class("system-node-critical", 2_000_001_000)).is_empty());
        assert_eq!(
            check("scheduling.k8s.io", "PriorityClass", class("system-mine", 2_000_000_000)),
            [
                "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only",
                "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
            ]
        );
    }

    #[test]
    fn volumes_and_claims_say_how_big_how_shared_and_from_where() {
        let pv = json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/x"}}});
        assert!(check("", "PersistentVolume", pv).is_empty());
        let bad = json!({"spec": {"capacity": {"cpu": "1"}, "accessModes": ["WriteSometimes"], "hostPath": {"path": "/x"}, "nfs": {"server": "a", "path": "/"}}});
        assert_eq!(
            check("", "PersistentVolume", bad),
            [
                "spec.accessModes: Unsupported value: \"WriteSometimes\": supported values: \"ReadWriteOnce\", \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOncePod\"",
                "spec.capacity: Unsupported value: {\"cpu\":\"1\"}: supported values: \"storage\"",
                "spec.nfs: Forbidden: may not specify more than 1 volume type"
            ]
        );
        assert_eq!(
            check("", "PersistentVolumeClaim", json!({"spec": {}})),
            [
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value"
            ]
        );
    }

    #[test]
    fn a_storage_class_names_a_provisioner_and_known_policies() {
        assert!(check("storage.k8s.io", "StorageClass", json!({"provisioner": "example.com/disk"})).is_empty());
        assert_eq!(
            check("storage.k8s.io", "StorageClass", json!({"reclaimPolicy": "Keep"})),
            [
                "provisioner: Required value",
                "reclaimPolicy: Unsupported value: \"Keep\": supported values: \"Delete\", \"Retain\""
            ]
        );
    }
}
