//! Pods' own verb: `pods/binding`, the scheduler's write that puts a pod on a node. The
//! rest of a pod is a plain resource of the generic store.

use serde_json::{Map, Value};

use super::object::{self, ObjectExt};
use super::options::{ManagedFields, Via};
use super::write::Attempt;
use super::{Cause, Error, Registry, Resource, Result, WriteOptions, Written};

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
