//! The shapes of the registry's requests and answers: how a write, delete, list or watch is
//! done ([`WriteOptions`], [`DeleteOptions`], [`ListOptions`], [`Patch`]) and what it gives
//! back ([`Written`], [`ObjectList`], [`WatchEvent`]). Plain data; no verbs, no storage.

use serde_json::Value;

use super::{FieldSelector, FieldValidation, LabelSelector, Object, Revision, Subresource};

/// A change to apply to the stored object.
#[derive(Debug, Clone)]
pub enum Patch {
    /// RFC 6902 (`application/json-patch+json`).
    Json(json_patch::Patch),
    /// RFC 7386 (`application/merge-patch+json`).
    Merge(Value),
    /// Server-side apply (`application/apply-patch+yaml`): the applied configuration,
    /// merged by field ownership (managedFields); creates the object if missing.
    Apply(Value),
    /// Kubernetes' strategic merge patch (`application/strategic-merge-patch+json`),
    /// for built-in kinds: lists merge by the keys their schema names.
    Strategic(Value),
}

/// How a create, update or patch is done.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Everything happens but the write (`dryRun=All`).
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// Who writes, recorded in managedFields (`fieldManager`, or the client's user agent).
    /// None: the server itself ("wasmkube").
    pub field_manager: Option<String>,
    /// Server-side apply: take the fields other managers own.
    pub force: bool,
    /// Who writes, for admission (None: the server itself).
    pub user: Option<crate::auth::UserInfo>,
    /// Store the object even if it is unchanged (a new resourceVersion and a watch event),
    /// as a rewrite under a new encryption key will need to (nothing asks for it yet but
    /// the tests). Otherwise an update that changes nothing but managedFields timestamps is
    /// a no-op, as in kube-apiserver.
    pub rewrite: bool,
    /// Keys the request's JSON body repeated (`spec.replicas`), reported or refused as
    /// `fieldValidation` says, beside the unknown fields.
    pub duplicate_fields: Vec<String>,
}

impl WriteOptions {
    pub(super) fn manager(&self) -> &str {
        self.field_manager.as_deref().unwrap_or("wasmkube")
    }
}

/// Whether a write records its manager in managedFields or already did (an apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ManagedFields {
    Record,
    Recorded,
}

/// Who writes an object, which decides what of it a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Via {
    /// A client through the resource: not the status (if it has a subresource for it).
    Resource,
    /// A client through a subresource: what that subresource's view changed.
    Subresource(Subresource),
    /// The server itself (binding, namespace finalization): anything.
    Host,
}

impl Via {
    pub(super) fn of(part: Option<Subresource>) -> Self {
        part.map_or(Self::Resource, Self::Subresource)
    }
}

/// How a delete is done (`DeleteOptions`).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    /// Precondition: the object is still at this resourceVersion.
    pub resource_version: Option<Revision>,
    /// Precondition: the object still has this uid.
    pub uid: Option<String>,
    /// What happens to dependents (recorded as a finalizer for the garbage collector).
    pub propagation: Option<Propagation>,
    /// `gracePeriodSeconds`: how long a graceful object (a pod on a node) is left to go; 0
    /// deletes it at once. None: the object's own (a pod's terminationGracePeriodSeconds).
    pub grace_period_seconds: Option<i64>,
    /// Who deletes, for admission (None: the server itself).
    pub user: Option<crate::auth::UserInfo>,
}

/// `propagationPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

/// A stored (or, dry run, would-be stored) object and what the client should be told.
#[derive(Debug)]
pub struct Written {
    pub object: Object,
    /// Each becomes a `Warning` header.
    pub warnings: Vec<String>,
    /// (plugin, digest) of each admission plugin that decided on the write.
    pub decisions: Vec<(String, String)>,
}

/// Which objects a list or watch wants.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Kubernetes' resourceVersion parameter: `None` = the latest (consistent read),
    /// `Some(0)` = whatever the cache holds, `Some(n)` = not older than `n`.
    pub resource_version: Option<Revision>,
    /// `resourceVersionMatch=Exact`: the list as it was at exactly `resource_version`.
    pub exact: bool,
    pub limit: usize,
    /// The continue token of the previous page.
    pub continue_token: Option<String>,
    /// Only objects these select. Pages are filtered after reading, so a page may hold
    /// fewer than `limit` items while more follow.
    pub selectors: Selectors,
}

/// The label and field selectors of a list or watch.
#[derive(Clone, Debug, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub(super) fn matches_object(&self, object: &Object) -> bool {
        self.labels.matches_object(object) && self.fields.matches_object(object)
    }
}

/// A page of a list.
#[derive(Debug)]
pub struct ObjectList {
    pub items: Vec<Object>,
    pub resource_version: Revision,
    pub continue_token: Option<String>,
}
