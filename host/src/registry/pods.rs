//! Pods' own behaviour: their strategy (a new pod is Pending, with its QoS class, as
//! kube-apiserver's create leaves it) and their own verb, `pods/binding`, the scheduler's
//! write that puts a pod on a node. The rest of a pod is a plain resource of the generic
//! store.

use serde_json::{Map, Value};

use super::object::{self, ObjectExt};
use super::options::{ManagedFields, Via};
use super::write::Attempt;
use super::{ApiResource, Cause, Error, Object, Registry, Resource, Result, Strategy, WriteOptions, Written};

/// The pods' strategy.
pub(super) struct Pods(pub(super) ApiResource);

impl Strategy for Pods {
    fn resource(&self) -> &ApiResource {
        &self.0
    }

    /// The status is the node's to write, not the creator's; a new pod starts Pending with
    /// the QoS class its containers' resources give it (kube-apiserver's PrepareForCreate).
    fn prepare_for_create(&self, object: &mut Object) {
        let qos = qos_class(object.get("spec"));
        object.insert("status".into(), serde_json::json!({"phase": "Pending", "qosClass": qos}));
    }

    fn validate(&self, object: &Object) -> Vec<Cause> {
        super::validate::pod::validate(object)
    }

    /// kube-apiserver's pod strategy: a pod no node took, or one that has finished, goes at
    /// once; otherwise its node gets `gracePeriodSeconds` (default the pod's
    /// `terminationGracePeriodSeconds`, 30) to stop it; a negative request counts as 1.
    fn grace_period(&self, object: &Object, requested: Option<i64>) -> i64 {
        let spec = object.get("spec");
        let on_node = spec.and_then(|s| s.get("nodeName")).and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        let phase = object.get("status").and_then(|s| s.get("phase")).and_then(Value::as_str);
        if !on_node || matches!(phase, Some("Succeeded" | "Failed")) {
            return 0;
        }
        match requested {
            Some(seconds) if seconds < 0 => 1,
            Some(seconds) => seconds,
            None => {
                spec.and_then(|s| s.get("terminationGracePeriodSeconds")).and_then(Value::as_i64).unwrap_or(30).max(0)
            }
        }
    }

    fn validate_update(&self, object: &Object, old: &Object) -> Vec<Cause> {
        let mut causes = super::validate::pod::validate(object);
        causes.extend(super::validate::pod::validate_update(object, old));
        causes
    }
}

/// A pod's QoS class (upstream's `ComputePodQOS`), from its containers' and init
/// containers' cpu and memory: no requests or limits at all is BestEffort; every container
/// limiting both, with requests equal to limits, is Guaranteed; anything else Burstable.
/// A limit without a request counts as that request, as defaulting makes it one.
pub(super) fn qos_class(spec: Option<&Value>) -> &'static str {
    use std::collections::BTreeMap;
    const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];
    let amount = |name: &str, value: &Value| -> Option<u64> {
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => return None,
        };
        if name == "cpu" {
            crate::quantity::milli(&text)
        } else {
            crate::quantity::whole(&text)
        }
    };
    let containers = ["containers", "initContainers"]
        .into_iter()
        .filter_map(|field| spec.and_then(|s| s.get(field)).and_then(Value::as_array))
        .flatten();
    let (mut requests, mut limits) = (BTreeMap::<&str, u64>::new(), BTreeMap::<&str, u64>::new());
    let mut guaranteed = true;
    for container in containers {
        let resources = container.get("resources");
        let list = |kind: &str| resources.and_then(|r| r.get(kind)).and_then(Value::as_object);
        let (declared_requests, declared_limits) = (list("requests"), list("limits"));
        let mut limited = Vec::new();
        for name in QOS_RESOURCES {
            let limit = declared_limits.and_then(|l| l.get(name)).and_then(|v| amount(name, v)).filter(|q| *q > 0);
            let request =
                declared_requests.and_then(|r| r.get(name)).and_then(|v| amount(name, v)).or(limit).filter(|q| *q > 0);
            if let Some(request) = request {
                *requests.entry(name).or_default() += request;
            }
            if let Some(limit) = limit {
                *limits.entry(name).or_default() += limit;
                limited.push(name);
            }
        }
        if limited.len() != QOS_RESOURCES.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed && requests.len() == limits.len() && requests.iter().all(|(name, r)| limits.get(name) == Some(r)) {
        return "Guaranteed";
    }
    "Burstable"
}

impl Registry {
    /// Bind pod `name` to `node` (`pods/binding`): sets `spec.nodeName` and the
    /// PodScheduled condition, once. A pod already bound is a Conflict.
    pub async fn bind(
        &self,
        pods: &Resource,
        namespace: Option<&str>,
        name: &str,
        node: &str,
        annotations: Map<String, Value>,
        options: &WriteOptions,
    ) -> Result<Written> {
        Self::check_namespace(pods, namespace)?;
        if node.is_empty() {
            return Err(Error::Invalid {
                kind: "Binding".into(),
                name: name.into(),
                causes: vec![Cause::required("target.name", "Required value")],
            });
        }
        let key = pods.key(namespace, name);
        let annotations = &annotations;
        self.guaranteed_update(&key, |stored| {
            Box::pin(async move {
                let Some(stored) = stored else { return Attempt::Done(Err(Error::not_found(pods, name))) };
                let mut pod = match object::decode(&stored) {
                    Ok(pod) => pod,
                    Err(e) => return Attempt::Done(Err(e)),
                };
                if let Err(e) = bound_to(&mut pod, pods, name, node, annotations) {
                    return Attempt::Done(Err(e));
                }
                match self.replace(pods, namespace, name, pod, &stored, Via::Host, options, ManagedFields::Record).await
                {
                    Err(e @ Error::Conflict { .. }) => Attempt::Raced(e),
                    result => Attempt::Done(result),
                }
            })
        })
        .await
    }
}

/// `pod` bound to `node`, unless it is being deleted or already bound.
fn bound_to(
    pod: &mut super::Object,
    pods: &Resource,
    name: &str,
    node: &str,
    annotations: &Map<String, Value>,
) -> Result<()> {
    if pod.metadata().get("deletionTimestamp").is_some() {
        return Err(Error::Conflict {
            resource: pods.qualified(),
            name: name.into(),
            message: "pod is being deleted, cannot be assigned to a host".into(),
        });
    }
    match pod.get("spec").and_then(|s| s.get("nodeName")).and_then(Value::as_str).filter(|n| !n.is_empty()) {
        Some(bound) => {
            return Err(Error::Conflict {
                resource: pods.qualified(),
                name: name.into(),
                message: format!("pod {name} is already assigned to node \"{bound}\""),
            })
        }
        None => object::set_path(pod, &["spec", "nodeName"], Value::String(node.into())),
    }
    if !annotations.is_empty() {
        let metadata = pod.metadata_mut();
        let existing = metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(existing) = existing {
            existing.extend(annotations.clone());
        }
    }
    object::set_condition(pod, "PodScheduled", "True", None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::qos_class;

    /// Cases of upstream's `TestComputePodQOS` (pkg/apis/core/helper/qos/qos_test.go).
    #[test]
    fn qos_classes_as_kubernetes_computes_them() {
        let pod = |containers: Value, init: Value| json!({"containers": containers, "initContainers": init});
        use serde_json::Value;
        let c = |requests: Value, limits: Value| json!({"name": "c", "resources": {"requests": requests, "limits": limits}});
        let cases = [
            (pod(json!([c(json!({}), json!({}))]), json!([])), "BestEffort"),
            (pod(json!([{"name": "c"}]), json!(null)), "BestEffort"),
            (pod(json!([c(json!({"nvidia.com/gpu": "1"}), json!({"nvidia.com/gpu": "1"}))]), json!([])), "BestEffort"),
            (
                pod(
                    json!([c(json!({"cpu": "100m", "memory": "100Mi"}), json!({"cpu": "100m", "memory": "100Mi"}))]),
                    json!([]),
                ),
                "Guaranteed",
            ),
            // Limits alone: the requests default to them.
            (pod(json!([c(json!({}), json!({"cpu": "1", "memory": "1Gi"}))]), json!([])), "Guaranteed"),
            (
                pod(
                    json!([c(json!({"cpu": 1, "memory": "1Gi"}), json!({"cpu": "1000m", "memory": "1024Mi"}))]),
                    json!([]),
                ),
                "Guaranteed",
            ),
            (pod(json!([c(json!({"cpu": "100m"}), json!({"cpu": "100m"}))]), json!([])), "Burstable"),
            (
                pod(
                    json!([c(json!({"cpu": "100m", "memory": "100Mi"}), json!({"cpu": "200m", "memory": "100Mi"}))]),
                    json!([]),
                ),
                "Burstable",
            ),
            (
                pod(
                    json!([
                        c(json!({"cpu": "100m", "memory": "100Mi"}), json!({"cpu": "100m", "memory": "100Mi"})),
                        c(json!({}), json!({}))
                    ]),
                    json!([]),
                ),
                "Burstable",
            ),
            (
                pod(
                    json!([c(json!({"cpu": "100m", "memory": "100Mi"}), json!({"cpu": "100m", "memory": "100Mi"}))]),
                    json!([c(json!({"cpu": "100m"}), json!({}))]),
                ),
                "Burstable",
            ),
            (pod(json!([c(json!({"cpu": "0"}), json!({"cpu": "0"}))]), json!([])), "BestEffort"),
        ];
        for (spec, expected) in cases {
            assert_eq!(qos_class(Some(&spec)), expected, "{spec}");
        }
        assert_eq!(qos_class(None), "BestEffort");
    }
}
