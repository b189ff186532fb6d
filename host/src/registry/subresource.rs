//! The `status` and `scale` subresources, generic over every resource that lists them:
//! what a client reads through one (its *view* of the stored object) and how a view the
//! client changed goes back into the stored object.
//!
//! - `status`: the view is the whole object; a write changes `status` only.
//! - `scale`: the view is an `autoscaling/v1` `Scale`; a write changes `spec.replicas` only.
//! - `ephemeralcontainers` (pods), `approval` (CSRs), `finalize` (namespaces): the view
//!   is the whole object; a write changes one field (`spec.ephemeralContainers`,
//!   `status.conditions`, `spec.finalizers`).
//!
//! The writes themselves (preconditions, retries, storage) stay in the registry.

use serde_json::{json, Map, Value};

use super::object::ObjectExt;
use super::{ApiResource, Cause, Error, Object, Result, ScalePaths};

/// A subresource with a view of the stored object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Status,
    Scale,
    EphemeralContainers,
    Approval,
    Finalize,
}

impl Subresource {
    /// The subresource a URL segment names, if it is one of these.
    pub fn parse(segment: &str) -> Option<Self> {
        match segment {
            "status" => Some(Self::Status),
            "scale" => Some(Self::Scale),
            "ephemeralcontainers" => Some(Self::EphemeralContainers),
            "approval" => Some(Self::Approval),
            "finalize" => Some(Self::Finalize),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Scale => "scale",
            Self::EphemeralContainers => "ephemeralcontainers",
            Self::Approval => "approval",
            Self::Finalize => "finalize",
        }
    }

    /// Whether a write through this subresource changes the object's status.
    pub(super) fn writes_status(self) -> bool {
        matches!(self, Self::Status | Self::Approval)
    }

    /// The one field a write through a whole-object view changes.
    fn written_field(self) -> Option<[&'static str; 2]> {
        match self {
            Self::Status | Self::Scale => None,
            Self::EphemeralContainers => Some(["spec", "ephemeralContainers"]),
            Self::Approval => Some(["status", "conditions"]),
            Self::Finalize => Some(["spec", "finalizers"]),
        }
    }
}

/// What a client of `part` sees of `object` (which carries its resourceVersion).
/// `scale` is where a custom resource keeps its replicas (None: a workload's usual fields).
pub(super) fn view(part: Option<Subresource>, object: Object, scale: Option<&ScalePaths>) -> Object {
    match part {
        Some(Subresource::Scale) => scale_of(&object, scale),
        _ => object,
    }
}

/// The stored object after a client wrote `written` through `part` over `current`. The
/// result carries the resourceVersion the client sent (its precondition), if any.
pub(super) fn merge_back(
    part: Option<Subresource>,
    resource: &ApiResource,
    written: Object,
    current: &Object,
    scale: Option<&ScalePaths>,
) -> Result<Object> {
    let precondition = written.metadata().get("resourceVersion").cloned();
    let mut object = match part {
        None => return Ok(written),
        Some(Subresource::Status) => {
            let mut object = current.clone();
            match written.get("status") {
                Some(status) => object.insert("status".into(), status.clone()),
                None => object.remove("status"),
            };
            object
        }
        Some(part @ (Subresource::EphemeralContainers | Subresource::Approval | Subresource::Finalize)) => {
            let [outer, inner] = part.written_field().unwrap_or_default();
            let value = written.get(outer).and_then(|o| o.get(inner)).cloned();
            let mut object = current.clone();
            let slot = object.entry(outer).or_insert_with(|| Value::Object(Map::new()));
            match (slot, value) {
                (Value::Object(map), Some(value)) => {
                    map.insert(inner.into(), value);
                }
                (Value::Object(map), None) => {
                    map.remove(inner);
                }
                _ => return Err(Error::Internal(format!("{} has an {outer} that is not an object", resource.kind))),
            }
            object
        }
        Some(Subresource::Scale) => {
            let replicas = match written.get("spec").and_then(|s| s.get("replicas")) {
                None | Some(Value::Null) => 0,
                Some(value) => {
                    value.as_i64().filter(|r| (0..=i64::from(i32::MAX)).contains(r)).ok_or_else(|| Error::Invalid {
                        kind: "Scale".into(),
                        name: current.metadata().get("name").and_then(Value::as_str).unwrap_or_default().into(),
                        causes: vec![Cause::invalid(
                            "spec.replicas",
                            format!("Invalid value: {value}: must be greater than or equal to 0"),
                        )],
                    })?
                }
            };
            let mut object = current.clone();
            let default_path = ["spec".to_string(), "replicas".to_string()];
            let path = scale.map_or(&default_path[..], |s| &s.spec_replicas[..]);
            if !set_at(&mut object, path, Value::from(replicas)) {
                return Err(Error::Internal(format!(
                    "{} has a {} that is not an object",
                    resource.kind,
                    path.join(".")
                )));
            }
            object
        }
    };
    match precondition {
        Some(rv) => object.metadata_mut().insert("resourceVersion".into(), rv),
        None => object.metadata_mut().remove("resourceVersion"),
    };
    Ok(object)
}

/// Set the field at `path`, making the objects on the way; false if one is not an object.
fn set_at(object: &mut Object, path: &[String], value: Value) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut map = object;
    for key in parents {
        match map.entry(key.clone()).or_insert_with(|| Value::Object(Map::new())) {
            Value::Object(next) => map = next,
            _ => return false,
        }
    }
    map.insert(last.clone(), value);
    true
}

fn get_at<'a>(object: &'a Object, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(object.get(first)?, |value, key| value.get(key))
}

/// The `Scale` of a workload: `spec.replicas`, `status.replicas` and the selector as a
/// string; of a custom resource: what its CRD's scale paths name.
fn scale_of(object: &Object, paths: Option<&ScalePaths>) -> Object {
    let metadata = object.metadata();
    let mut scale_metadata = Map::new();
    for field in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(value) = metadata.get(field) {
            scale_metadata.insert(field.into(), value.clone());
        }
    }
    let (replicas, current, selector) = match paths {
        Some(paths) => (
            get_at(object, &paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0),
            get_at(object, &paths.status_replicas).and_then(Value::as_i64).unwrap_or(0),
            paths.label_selector.as_deref().and_then(|p| get_at(object, p)).and_then(Value::as_str).map(String::from),
        ),
        None => {
            let spec = object.get("spec");
            (
                spec.and_then(|s| s.get("replicas")).and_then(Value::as_i64).unwrap_or(1),
                object.get("status").and_then(|s| s.get("replicas")).and_then(Value::as_i64).unwrap_or(0),
                spec.and_then(|s| s.get("selector")).map(selector_string),
            )
        }
    };
    let mut status = json!({"replicas": current});
    if let Some(selector) = selector {
        status["selector"] = Value::String(selector);
    }
    let scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_metadata,
        "spec": {"replicas": replicas},
        "status": status,
    });
    match scale {
        Value::Object(scale) => scale,
        _ => Map::new(),
    }
}

/// A selector as the text form `kubectl get -l` takes: a LabelSelector
/// (`matchLabels`/`matchExpressions`) or a plain map (ReplicationController), sorted by key.
fn selector_string(selector: &Value) -> String {
    let mut requirements: Vec<(String, String)> = Vec::new();
    let labels =
        selector.get("matchLabels").or(if selector.get("matchExpressions").is_none() { Some(selector) } else { None });
    if let Some(Value::Object(labels)) = labels {
        for (key, value) in labels {
            requirements.push((key.clone(), format!("{key}={}", value.as_str().unwrap_or_default())));
        }
    }
    for expression in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = expression.get("key").and_then(Value::as_str).unwrap_or_default();
        let mut values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match expression.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key.to_string(),
            Some("DoesNotExist") => format!("!{key}"),
            _ => continue,
        };
        requirements.push((key.to_string(), text));
    }
    requirements.sort();
    requirements.into_iter().map(|(_, text)| text).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_print_like_kubectl_reads_them() {
        let selector = json!({"matchLabels": {"app": "web", "tier": "a"}, "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "dev"]},
            {"key": "gone", "operator": "DoesNotExist"},
        ]});
        assert_eq!(selector_string(&selector), "app=web,env in (dev,prod),!gone,tier=a");
        assert_eq!(selector_string(&json!({"app": "web"})), "app=web");
    }

    #[test]
    fn a_scale_write_changes_replicas_only() {
        let current: Object = serde_json::from_value(json!({
            "metadata": {"name": "d", "resourceVersion": "7", "labels": {"a": "b"}},
            "spec": {"replicas": 1, "template": {}},
            "status": {"replicas": 1},
        }))
        .expect("object");
        let mut scale = view(Some(Subresource::Scale), current.clone(), None);
        assert_eq!(scale["spec"]["replicas"], 1);
        scale.insert("spec".into(), json!({"replicas": 5}));
        scale.insert("metadata".into(), json!({"name": "d", "labels": {"changed": "no"}}));
        let resource = ApiResource {
            group: "apps",
            version: "v1",
            kind: "Deployment",
            plural: "deployments",
            singular: "deployment",
            namespaced: true,
            short_names: &[],
            categories: &[],
            subresources: &["scale"],
        };
        let merged = merge_back(Some(Subresource::Scale), &resource, scale, &current, None).expect("merged");
        assert_eq!(merged["spec"], json!({"replicas": 5, "template": {}}));
        assert_eq!(merged["metadata"], json!({"name": "d", "labels": {"a": "b"}}));
        let negative: Object = serde_json::from_value(json!({"spec": {"replicas": -1}})).expect("scale");
        assert!(merge_back(Some(Subresource::Scale), &resource, negative, &current, None).is_err());
    }
}
