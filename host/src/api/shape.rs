//! How an object leaves the API when the client asks for something other than the object
//! as stored: in another served version of its kind, or as its metadata alone
//! (`PartialObjectMetadata`). Tables are `table.rs`. Shared by the resource handlers
//! (`resources.rs`) and watches (`watch.rs`); knows nothing of requests or the registry's verbs.

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::registry::{Object, Resource};

/// The version objects leave in: a kind served in several versions stores each object in
/// the version that wrote it, and shows it in the version it is read through (the CRD
/// conversion `None`: only `apiVersion` changes).
#[derive(Clone)]
pub(super) struct Version {
    api_version: String,
    /// Whether objects may be stored in another version than this one.
    pub(super) converts: bool,
}

impl Version {
    /// The version `resource` is served in.
    pub(super) fn of(resource: &Resource) -> Self {
        Self { api_version: resource.api_version(), converts: resource.strategy().converts_versions() }
    }

    pub(super) fn api_version(&self) -> &str {
        &self.api_version
    }

    /// Show `object` in this version.
    pub(super) fn set(&self, object: &mut Object) {
        if self.converts && object.get("kind").and_then(Value::as_str) != Some("Status") {
            object.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        }
    }
}

/// `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`: the
/// client wants objects' metadata only (kube-rs `Api::get_metadata`, client-go metadata
/// informers).
pub(super) fn metadata_only(headers: &HeaderMap) -> bool {
    super::accepts(headers, |media| media.contains("as=PartialObjectMetadata") && media.contains("g=meta.k8s.io"))
}

/// An object's metadata as a `PartialObjectMetadata`.
pub(super) fn partial_object_metadata(object: &Object) -> Object {
    let mut partial = Object::new();
    partial.insert("kind".into(), json!("PartialObjectMetadata"));
    partial.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
    partial.insert("metadata".into(), object.get("metadata").cloned().unwrap_or_else(|| json!({})));
    partial
}

/// The object's resourceVersion as a number (0 when it has none).
pub(super) fn object_revision(object: &Object) -> i64 {
    object
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}
