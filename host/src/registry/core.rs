//! Strategies of the core group (`v1`) served so far.

use std::sync::Arc;

use serde_json::Value;

use super::{Cause, Object, Resource, Strategy};

/// A kind with no behaviour beyond the generic registry's.
struct Plain(Resource);

impl Strategy for Plain {
    fn resource(&self) -> &Resource {
        &self.0
    }
}

/// Namespaces are Active from birth (the namespace controller will move them to Terminating).
struct Namespaces(Resource);

impl Strategy for Namespaces {
    fn resource(&self) -> &Resource {
        &self.0
    }

    fn prepare_for_create(&self, object: &mut Object) {
        object.insert("status".into(), serde_json::json!({"phase": "Active"}));
        let name = object.get("metadata").and_then(|m| m.get("name")).cloned();
        if let (Some(Value::String(name)), Some(Value::Object(metadata))) = (name, object.get_mut("metadata")) {
            let labels = metadata.entry("labels").or_insert_with(|| serde_json::json!({}));
            if let Value::Object(labels) = labels {
                labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
        }
    }

    fn prepare_for_update(&self, object: &mut Object, old: &Object) {
        if let Some(status) = old.get("status") {
            object.insert("status".into(), status.clone());
        }
    }
}

/// ConfigMaps and Secrets carry string maps.
struct DataMaps(Resource);

impl Strategy for DataMaps {
    fn resource(&self) -> &Resource {
        &self.0
    }

    fn validate(&self, object: &Object) -> Vec<Cause> {
        ["data", "binaryData", "stringData"]
            .into_iter()
            .filter(|field| match object.get(*field) {
                None | Some(Value::Null) => false,
                Some(Value::Object(map)) => !map.values().all(Value::is_string),
                Some(_) => true,
            })
            .map(|field| Cause::invalid(field, "must map keys to strings"))
            .collect()
    }
}

const fn core(
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> Resource {
    Resource { group: "", version: "v1", kind, plural, singular, namespaced, short_names }
}

pub(super) fn strategies() -> Vec<Arc<dyn Strategy>> {
    vec![
        Arc::new(Namespaces(core("Namespace", "namespaces", "namespace", false, &["ns"]))),
        Arc::new(DataMaps(core("ConfigMap", "configmaps", "configmap", true, &["cm"]))),
        Arc::new(DataMaps(core("Secret", "secrets", "secret", true, &[]))),
        Arc::new(Plain(core("ServiceAccount", "serviceaccounts", "serviceaccount", true, &["sa"]))),
        Arc::new(Plain(core("Event", "events", "event", true, &["ev"]))),
        Arc::new(Plain(core("LimitRange", "limitranges", "limitrange", true, &["limits"]))),
        Arc::new(Plain(core("PodTemplate", "podtemplates", "podtemplate", true, &[]))),
        Arc::new(Plain(core("Endpoints", "endpoints", "endpoints", true, &["ep"]))),
    ]
}
