//! The Rust SDK for wasmkube **controller** plugins (the `controller` world of
//! `wit/plugin.wit`). A controller says what it follows, and each reconcile reads the
//! cluster through [`client`] (the host's informer caches) and answers the writes it wants
//! as [`Action`]s; it never calls the API itself.
//!
//! ```ignore
//! use wasmkube_controller_sdk::{gvr, Action, Controller, Reconciled, Registration, Request, Value};
//!
//! struct Labeler;
//!
//! impl Controller for Labeler {
//!     fn configure(_config: Value) -> Result<Registration, String> {
//!         Ok(Registration::reconciles(gvr("", "v1", "configmaps")))
//!     }
//!     fn reconcile(request: Request) -> Result<Reconciled, String> {
//!         let Some(object) = request.object else { return Ok(Reconciled::done("gone")) };
//!         if object.pointer("/metadata/labels/seen").is_some() {
//!             return Ok(Reconciled::done("already labelled"));
//!         }
//!         let patch = serde_json::json!({"metadata": {"labels": {"seen": "yes"}}});
//!         Ok(Reconciled::with(vec![Action::patch_of(gvr("", "v1", "configmaps"), &object, patch)], "label it"))
//!     }
//! }
//!
//! wasmkube_controller_sdk::export_controller!(Labeler);
//! ```
//!
//! (This is a separate crate from `wasmkube-sdk`, the admission SDK: one component
//! implements one world, and Cargo unifies the features of a crate shared by a workspace.)

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "controller",
        pub_export_macro: true,
        default_bindings_module: "wasmkube_controller_sdk::bindings",
    });
}

use bindings::exports::wasmkube::plugin::reconciler;
use bindings::wasmkube::plugin::controller_types as wit;
pub use bindings::wasmkube::plugin::types::{ClientError, GroupVersionResource};
pub use serde_json::{json, Map, Value};

/// A resource by group ("" for core), version and plural.
pub fn gvr(group: &str, version: &str, resource: &str) -> GroupVersionResource {
    GroupVersionResource { group: group.into(), version: version.into(), resource: resource.into() }
}

/// An object's key: namespace (None for cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub namespace: Option<String>,
    pub name: String,
}

/// What a controller follows.
pub struct Registration {
    pub reconciles: GroupVersionResource,
    pub owns: Vec<GroupVersionResource>,
    pub watches: Vec<GroupVersionResource>,
}

impl Registration {
    pub fn reconciles(resource: GroupVersionResource) -> Self {
        Self { reconciles: resource, owns: Vec::new(), watches: Vec::new() }
    }

    /// A change to an object of `resource` reconciles its controlling owner.
    pub fn owns(mut self, resource: GroupVersionResource) -> Self {
        self.owns.push(resource);
        self
    }

    /// A change to an object of `resource` reconciles what [`Controller::map`] names.
    pub fn watches(mut self, resource: GroupVersionResource) -> Self {
        self.watches.push(resource);
        self
    }
}

/// One reconcile: the key, and the object as the cache holds it (None: it is gone).
#[derive(Debug)]
pub struct Request {
    pub key: Key,
    pub object: Option<Value>,
}

/// A write the controller wants.
#[derive(Clone, Debug)]
pub struct Action(wit::Action);

fn metadata<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

impl Action {
    fn new(verb: wit::Verb, resource: GroupVersionResource, namespace: Option<&str>, name: &str) -> Self {
        Self(wit::Action {
            verb,
            resource,
            subresource: None,
            namespace: namespace.map(String::from),
            name: name.to_string(),
            body: None,
            patch_type: None,
            resource_version: None,
            uid: None,
            propagation: None,
        })
    }

    /// Create `object` (its `metadata.name`, or `generateName`, names it).
    pub fn create(resource: GroupVersionResource, namespace: Option<&str>, object: &Value) -> Self {
        let mut action = Self::new(wit::Verb::Create, resource, namespace, "");
        action.0.body = Some(object.to_string());
        action
    }

    /// Replace `object`, on the condition that it is still at the resourceVersion it carries.
    pub fn update(resource: GroupVersionResource, object: &Value) -> Self {
        let mut action = Self::new(
            wit::Verb::Update,
            resource,
            metadata(object, "namespace"),
            metadata(object, "name").unwrap_or(""),
        );
        action.0.body = Some(object.to_string());
        action.0.resource_version = metadata(object, "resourceVersion").map(String::from);
        action
    }

    /// Merge-patch the object `of` (RFC 7386), on the condition that it is still at the
    /// resourceVersion `of` carries.
    pub fn patch_of(resource: GroupVersionResource, of: &Value, patch: Value) -> Self {
        let mut action =
            Self::new(wit::Verb::Patch, resource, metadata(of, "namespace"), metadata(of, "name").unwrap_or(""));
        action.0.body = Some(patch.to_string());
        action.0.patch_type = Some(wit::PatchType::Merge);
        action.0.resource_version = metadata(of, "resourceVersion").map(String::from);
        action
    }

    /// Merge-patch the status of `of` (the `status` subresource), with the same condition.
    pub fn patch_status_of(resource: GroupVersionResource, of: &Value, status: Value) -> Self {
        let mut action = Self::patch_of(resource, of, json!({"status": status}));
        action.0.subresource = Some("status".into());
        action
    }

    /// Delete `of`, on the condition that it still has its uid.
    pub fn delete_of(resource: GroupVersionResource, of: &Value) -> Self {
        let mut action =
            Self::new(wit::Verb::Delete, resource, metadata(of, "namespace"), metadata(of, "name").unwrap_or(""));
        action.0.uid = metadata(of, "uid").map(String::from);
        action
    }

    /// Delete by name, without a condition.
    pub fn delete(resource: GroupVersionResource, namespace: Option<&str>, name: &str) -> Self {
        Self::new(wit::Verb::Delete, resource, namespace, name)
    }

    /// How a delete treats dependents.
    pub fn propagation(mut self, propagation: Propagation) -> Self {
        self.0.propagation = Some(match propagation {
            Propagation::Background => wit::Propagation::Background,
            Propagation::Foreground => wit::Propagation::Foreground,
            Propagation::Orphan => wit::Propagation::Orphan,
        });
        self
    }

    /// Write through a subresource (`status`, `finalize`, ...).
    pub fn subresource(mut self, name: &str) -> Self {
        self.0.subresource = Some(name.to_string());
        self
    }

    /// Drop the resourceVersion condition (the write goes to whatever is stored).
    pub fn unconditional(mut self) -> Self {
        self.0.resource_version = None;
        self
    }

    /// What the action is, for logs and tests: (verb, resource, namespace, name).
    pub fn describe(&self) -> String {
        format!("{:?} {} {:?}/{}", self.0.verb, self.0.resource.resource, self.0.namespace, self.0.name)
    }
}

/// `propagationPolicy` of a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// A reconcile's answer.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub actions: Vec<Action>,
    pub requeue_after: Option<std::time::Duration>,
    pub reason: String,
}

impl Reconciled {
    /// Nothing to do.
    pub fn done(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), ..Self::default() }
    }

    pub fn with(actions: Vec<Action>, reason: impl Into<String>) -> Self {
        Self { actions, reason: reason.into(), ..Self::default() }
    }

    /// Reconcile again after `after` even if nothing changes.
    pub fn requeue_after(mut self, after: std::time::Duration) -> Self {
        self.requeue_after = Some(after);
        self
    }
}

/// Reads through the host's informer caches, as the manifest's capabilities allow.
pub mod client {
    use super::bindings::wasmkube::plugin::client;
    use super::{gvr, ClientError, GroupVersionResource, Value};

    /// The object, if it exists.
    pub fn get(
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ClientError> {
        let found = client::get(&gvr(group, version, resource), namespace, name)?;
        Ok(found.and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// The objects a label selector selects ("" for all).
    pub fn list(
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<Vec<Value>, ClientError> {
        let found = client::list(&gvr(group, version, resource), namespace, selector)?;
        Ok(found.iter().filter_map(|text| serde_json::from_str(text).ok()).collect())
    }

    /// The objects whose ownerReferences name `owner_uid` (the host's owner index: no
    /// scan, and only those objects cross into the plugin). Needs `list`.
    pub fn owned_by(
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<Value>, ClientError> {
        let found =
            super::bindings::wasmkube::plugin::index::owned_by(&gvr(group, version, resource), namespace, owner_uid)?;
        Ok(found.iter().filter_map(|text| serde_json::from_str(text).ok()).collect())
    }

    /// Every namespaced resource the API serves now (custom ones included).
    pub fn namespaced_resources() -> Vec<GroupVersionResource> {
        super::bindings::wasmkube::plugin::index::namespaced_resources()
    }

    /// What a controller of `owner` considers: the objects its `selector` (a
    /// LabelSelector object) selects, and those that name `owner_uid` as an owner
    /// although they no longer match (to release), each once.
    pub fn selected_or_owned(
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        selector: &Value,
        owner_uid: &str,
    ) -> Result<Vec<Value>, String> {
        let text = super::selector_string(selector)?;
        let mut found =
            list(group, version, resource, namespace, &text).map_err(|e| format!("cannot list {resource}: {e:?}"))?;
        let uid = |o: &Value| o.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
        let seen: std::collections::HashSet<String> = found.iter().map(uid).collect();
        let owned = owned_by(group, version, resource, namespace, owner_uid)
            .map_err(|e| format!("cannot list the {resource} {owner_uid} owns: {e:?}"))?;
        found.extend(owned.into_iter().filter(|o| !seen.contains(&uid(o))));
        Ok(found)
    }
}

/// Log through the host (the line carries the plugin's name and version).
pub mod log {
    use super::bindings::wasmkube::plugin::log::{log, Level};

    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// Reading objects: the small lookups every controller makes.
pub mod meta {
    use super::{json, Value};

    /// The string at a JSON pointer (`/metadata/name`), or "".
    pub fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
        object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
    }

    /// The uid of the object's controlling owner (the ownerReference with `controller: true`).
    pub fn controller_uid(object: &Value) -> Option<&str> {
        object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)?
            .iter()
            .find(|o| o["controller"] == true)
            .and_then(|o| o["uid"].as_str())
    }

    /// An ownerReference naming `owner` (of `api_version` and `kind`) as the controller.
    pub fn controller_reference(api_version: &str, kind: &str, owner: &Value) -> Value {
        json!({
            "apiVersion": api_version, "kind": kind,
            "name": text(owner, "/metadata/name"), "uid": text(owner, "/metadata/uid"),
            "controller": true, "blockOwnerDeletion": true,
        })
    }

    /// A LabelSelector with neither matchLabels nor matchExpressions (apps/v1 requires one;
    /// a controller must not take it to select everything).
    pub fn is_empty_selector(selector: &Value) -> bool {
        let empty = |key: &str| {
            selector.get(key).is_none_or(|v| {
                v.is_null() || v.as_object().is_some_and(|o| o.is_empty()) || v.as_array().is_some_and(|a| a.is_empty())
            })
        };
        empty("matchLabels") && empty("matchExpressions")
    }
}

/// A `LabelSelector` object (`matchLabels`, `matchExpressions`) in the string form
/// `client::list` takes; an error names what is wrong.
pub fn selector_string(selector: &Value) -> Result<String, String> {
    let mut parts = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in labels {
            parts.push(format!("{key}={}", value.as_str().unwrap_or_default()));
        }
    }
    for expression in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = expression.get("key").and_then(Value::as_str).ok_or("a matchExpression has no key")?;
        let values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match expression.get("operator").and_then(Value::as_str) {
            Some("In") => parts.push(format!("{key} in ({})", values.join(","))),
            Some("NotIn") => parts.push(format!("{key} notin ({})", values.join(","))),
            Some("Exists") => parts.push(key.to_string()),
            Some("DoesNotExist") => parts.push(format!("!{key}")),
            other => {
                return Err(format!("matchExpression operator {other:?} is not In, NotIn, Exists or DoesNotExist"))
            }
        }
    }
    Ok(parts.join(","))
}

/// Whether `labels` (an object's `metadata.labels`) satisfy a `LabelSelector` object.
/// An empty selector selects everything.
pub fn selects(selector: &Value, labels: Option<&Value>) -> bool {
    let get = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let labels_ok = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let expressions_ok =
        selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten().all(|expression| {
            let key = expression.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = expression
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match expression.get("operator").and_then(Value::as_str) {
                Some("In") => get(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => get(key).is_some(),
                Some("DoesNotExist") => get(key).is_none(),
                _ => false,
            }
        });
    labels_ok && expressions_ok
}

/// A controller plugin.
pub trait Controller {
    /// The manifest's `config`, once per instance: answer what the controller follows.
    fn configure(config: Value) -> Result<Registration, String>;

    /// Bring the object at `request.key` towards what it asks for.
    fn reconcile(request: Request) -> Result<Reconciled, String>;

    /// A watched object changed: the keys to reconcile because of it.
    fn map(_resource: &GroupVersionResource, _object: Value) -> Vec<Key> {
        Vec::new()
    }
}

#[doc(hidden)]
pub struct Exported<T>(std::marker::PhantomData<T>);

impl<T: Controller> reconciler::Guest for Exported<T> {
    fn configure(config: String) -> Result<wit::Registration, String> {
        let config = serde_json::from_str(&config).map_err(|e| format!("config is not JSON: {e}"))?;
        let registration = T::configure(config)?;
        Ok(wit::Registration {
            reconciles: registration.reconciles,
            owns: registration.owns,
            watches: registration.watches,
        })
    }

    fn reconcile(request: wit::ReconcileRequest) -> Result<wit::ReconcileResult, String> {
        let object = match request.object {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| format!("the object is not JSON: {e}"))?),
            None => None,
        };
        let request = Request { key: Key { namespace: request.key.namespace, name: request.key.name }, object };
        let reconciled = T::reconcile(request)?;
        Ok(wit::ReconcileResult {
            actions: reconciled.actions.into_iter().map(|a| a.0).collect(),
            requeue_after_ms: reconciled.requeue_after.map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
            reason: reconciled.reason,
        })
    }

    fn map(resource: GroupVersionResource, object: String) -> Vec<wit::ObjectKey> {
        let Ok(object) = serde_json::from_str(&object) else { return Vec::new() };
        T::map(&resource, object).into_iter().map(|k| wit::ObjectKey { namespace: k.namespace, name: k.name }).collect()
    }
}

/// Export `$plugin` (a type implementing [`Controller`]) as the component's controller world.
#[macro_export]
macro_rules! export_controller {
    ($plugin:ty) => {
        type __WasmkubeController = $crate::Exported<$plugin>;
        $crate::bindings::export!(__WasmkubeController with_types_in $crate::bindings);
    };
}
