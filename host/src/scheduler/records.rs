//! From the API's JSON to the compact records policies read: a Node's labels,
//! allocatable, taints and `unschedulable`; a pod's requests, node selector and affinity,
//! tolerations and topology spread constraints (kube-scheduler's PreFilter reads the same).
//! Anything malformed that the API let through is read as absent, never as a panic.

use serde_json::Value;

use super::cache::NodeSpec;
use super::requests;
use crate::plugins::policy_types::{
    LabelSelector, NodeSelectorTerm, Pod, PreferredTerm, Resources, SelectorOperator, SelectorRequirement,
    SpreadConstraint, Taint, TaintEffect, Toleration, TolerationOperator, UnsatisfiableAction,
};
use crate::quantity;

fn pairs(value: Option<&Value>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect();
    pairs.sort();
    pairs
}

fn text(value: &Value, key: &str) -> String {
    value.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn array<'a>(value: Option<&'a Value>) -> impl Iterator<Item = &'a Value> {
    value.and_then(Value::as_array).into_iter().flatten()
}

fn effect(text: &str) -> Option<TaintEffect> {
    match text {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

/// A Node's scheduling view.
pub fn node(object: &Value) -> NodeSpec {
    let allocatable = object.pointer("/status/allocatable").or_else(|| object.pointer("/status/capacity"));
    let amount = |name: &str, parse: fn(&str) -> Option<u64>| {
        allocatable.and_then(|a| a.get(name)).and_then(Value::as_str).and_then(parse).unwrap_or(0)
    };
    NodeSpec {
        name: object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(),
        labels: pairs(object.pointer("/metadata/labels")),
        allocatable: Resources {
            milli_cpu: amount("cpu", quantity::milli),
            memory: amount("memory", quantity::whole),
            ephemeral_storage: amount("ephemeral-storage", quantity::whole),
            pods: u32::try_from(amount("pods", quantity::whole)).unwrap_or(u32::MAX),
        },
        taints: array(object.pointer("/spec/taints"))
            .filter_map(|t| {
                Some(Taint {
                    key: text(t, "key"),
                    value: text(t, "value"),
                    effect: effect(t.get("effect")?.as_str()?)?,
                })
            })
            .collect(),
        unschedulable: object.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false),
    }
}

fn requirement(r: &Value) -> Option<SelectorRequirement> {
    let operator = match r.get("operator")?.as_str()? {
        "In" => SelectorOperator::In,
        "NotIn" => SelectorOperator::NotIn,
        "Exists" => SelectorOperator::Exists,
        "DoesNotExist" => SelectorOperator::DoesNotExist,
        "Gt" => SelectorOperator::Gt,
        "Lt" => SelectorOperator::Lt,
        _ => return None,
    };
    let values = array(r.get("values")).filter_map(Value::as_str).map(String::from).collect();
    Some(SelectorRequirement { key: text(r, "key"), operator, values })
}

fn requirements(value: Option<&Value>) -> Vec<SelectorRequirement> {
    // An operator the API would refuse is kept as a requirement nothing meets.
    array(value)
        .map(|r| {
            requirement(r).unwrap_or(SelectorRequirement {
                key: text(r, "key"),
                operator: SelectorOperator::In,
                values: Vec::new(),
            })
        })
        .collect()
}

fn term(t: &Value) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: requirements(t.get("matchExpressions")),
        match_fields: requirements(t.get("matchFields")),
    }
}

fn label_selector(s: Option<&Value>) -> LabelSelector {
    LabelSelector {
        match_labels: pairs(s.and_then(|s| s.get("matchLabels"))),
        match_expressions: requirements(s.and_then(|s| s.get("matchExpressions"))),
    }
}

/// A pod's scheduling view.
pub fn pod(object: &Value) -> Pod {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let metadata = object.get("metadata").unwrap_or(&Value::Null);
    let affinity = spec.pointer("/affinity/nodeAffinity");
    let tolerations = array(spec.get("tolerations"))
        .map(|t| Toleration {
            key: text(t, "key"),
            operator: if t.get("operator").and_then(Value::as_str) == Some("Exists") {
                TolerationOperator::Exists
            } else {
                TolerationOperator::Equal
            },
            value: text(t, "value"),
            effect: t.get("effect").and_then(Value::as_str).and_then(effect),
        })
        .collect();
    let spread_constraints = array(spec.get("topologySpreadConstraints"))
        .map(|c| SpreadConstraint {
            max_skew: c.get("maxSkew").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).unwrap_or(1),
            topology_key: text(c, "topologyKey"),
            when_unsatisfiable: if c.get("whenUnsatisfiable").and_then(Value::as_str) == Some("ScheduleAnyway") {
                UnsatisfiableAction::ScheduleAnyway
            } else {
                UnsatisfiableAction::DoNotSchedule
            },
            selector: label_selector(c.get("labelSelector")),
            min_domains: c.get("minDomains").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()),
        })
        .collect();
    Pod {
        namespace: text(metadata, "namespace"),
        name: text(metadata, "name"),
        uid: text(metadata, "uid"),
        labels: pairs(metadata.get("labels")),
        annotations: pairs(metadata.get("annotations")),
        requests: requests::pod_requests(spec),
        node_name: spec.get("nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()).map(String::from),
        node_selector: pairs(spec.get("nodeSelector")),
        required_node_affinity: array(
            affinity.and_then(|a| a.pointer("/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")),
        )
        .map(term)
        .collect(),
        preferred_node_affinity: array(affinity.and_then(|a| a.get("preferredDuringSchedulingIgnoredDuringExecution")))
            .map(|p| PreferredTerm {
                weight: p.get("weight").and_then(Value::as_i64).and_then(|w| i32::try_from(w).ok()).unwrap_or(0),
                preference: term(p.get("preference").unwrap_or(&Value::Null)),
            })
            .collect(),
        tolerations,
        spread_constraints,
        priority: spec.get("priority").and_then(Value::as_i64).and_then(|p| i32::try_from(p).ok()).unwrap_or(0),
    }
}

/// The scheduler a pod asks for (`default-scheduler` when it names none).
pub fn scheduler_name(object: &Value) -> &str {
    object
        .pointer("/spec/schedulerName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default-scheduler")
}

/// A pod in phase Succeeded or Failed holds nothing.
pub fn is_finished(object: &Value) -> bool {
    matches!(object.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
}

/// The node a pod is bound to, if it is.
pub fn bound_node(object: &Value) -> Option<&str> {
    object.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
}
