//! What a resource is: its names ([`ApiResource`], one entry of discovery), how it differs
//! from every other resource ([`Strategy`], with the hooks a write passes through), and the
//! handle a request resolves once and hands down ([`Resource`]).
//!
//! Owns no storage and no verbs: the generic store (`store.rs`, `write.rs`, `delete.rs`)
//! calls these hooks in kube-apiserver's order (`BeginCreate`, `BeginUpdate`, `AfterDelete`
//! of its generic registry store).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use super::custom::{PrinterColumn, ScalePaths};
use super::object::NameRule;
use super::{schema, Cause, Object, Registry, Result};
use crate::storage::cache::WatchCache;

/// What a resource is called and where it lives: one entry of discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiResource {
    /// API group; "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The URL segment, e.g. "configmaps".
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Groupings `kubectl get <category>` expands, e.g. "all".
    pub categories: &'static [&'static str],
    /// The subresources served under an object, e.g. "status", "scale".
    pub subresources: &'static [&'static str],
}

impl ApiResource {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage prefix of every object of this resource.
    pub(super) fn prefix(&self) -> String {
        let group = if self.group.is_empty() { "core" } else { self.group };
        format!("/registry/{group}/{}/", self.plural)
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.contains(&name)
    }

    /// "configmaps" or "configmaps.apps": how errors name the resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// A served resource, resolved once: its names, strategy and watch cache. Cheap to clone
/// (one `Arc`); derefs to its [`ApiResource`].
///
/// A handle outlives what it was resolved from: when a CRD changes what it serves, the old
/// entry is *retired* and the verbs look the resource up again (or answer NotFound if it
/// is no longer served), so a long-lived holder (an informer) follows the CRD.
#[derive(Clone)]
pub struct Resource(pub(super) Arc<Entry>);

pub(super) struct Entry {
    pub(super) names: ApiResource,
    /// Where its objects are stored ([`ApiResource::prefix`], computed once).
    pub(super) prefix: String,
    pub(super) strategy: Arc<dyn Strategy>,
    /// Shared by every version of one kind (they are stored under one prefix).
    pub(super) cache: Arc<WatchCache>,
    /// Set when the served set no longer holds this entry.
    pub(super) retired: AtomicBool,
}

impl Resource {
    pub(super) fn new(strategy: Arc<dyn Strategy>, cache: Arc<WatchCache>) -> Self {
        let names = *strategy.resource();
        Self(Arc::new(Entry { names, prefix: names.prefix(), strategy, cache, retired: AtomicBool::new(false) }))
    }

    /// How the resource behaves (printer columns, its OpenAPI definition, ...).
    pub fn strategy(&self) -> &Arc<dyn Strategy> {
        &self.0.strategy
    }

    /// The storage key of object `name` (in `namespace`, if the resource is namespaced).
    pub(super) fn key(&self, namespace: Option<&str>, name: &str) -> bytes::Bytes {
        let prefix = &self.0.prefix;
        match namespace {
            Some(ns) if self.namespaced => format!("{prefix}{ns}/{name}").into(),
            _ => format!("{prefix}{name}").into(),
        }
    }

    /// The storage prefix a list or watch reads: the resource's, or one namespace's.
    pub(super) fn list_prefix(&self, namespace: Option<&str>) -> bytes::Bytes {
        let prefix = &self.0.prefix;
        match namespace {
            Some(ns) if self.namespaced => format!("{prefix}{ns}/").into(),
            _ => prefix.clone().into(),
        }
    }

    pub(super) fn cache(&self) -> &Arc<WatchCache> {
        &self.0.cache
    }

    pub(super) fn is_retired(&self) -> bool {
        self.0.retired.load(Ordering::Acquire)
    }

    pub(super) fn retire(&self) {
        self.0.retired.store(true, Ordering::Release);
    }
}

impl std::ops::Deref for Resource {
    type Target = ApiResource;

    fn deref(&self) -> &ApiResource {
        &self.0.names
    }
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Resource").field(&self.0.names).finish()
    }
}

/// Two handles are the same resource if they name the same one.
impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        self.0.names == other.0.names
    }
}

impl Eq for Resource {}

/// Where a hook runs: the object's place and whether the write is a dry run (a hook then
/// fills what it fills and refuses what it refuses, but reserves nothing: a dry run cannot
/// tell that an address is taken, as kube-apiserver's cannot either when it races).
pub struct Hook<'a> {
    pub(super) registry: &'a Registry,
    /// The object's storage key.
    pub(super) key: &'a bytes::Bytes,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub dry_run: bool,
}

/// What a begin hook holds for a write: committed once the write is stored, released if it
/// is not (a later check refused it, the write lost a race, the store failed). Dropping one
/// unsettled is a leak, hence `must_use`.
#[must_use = "a reservation is committed or released, never dropped"]
#[derive(Default)]
pub struct Reservation(Option<Box<dyn Reserved>>);

impl Reservation {
    /// Nothing reserved.
    pub fn none() -> Self {
        Self(None)
    }

    pub fn new(reserved: impl Reserved + 'static) -> Self {
        Self(Some(Box::new(reserved)))
    }

    pub(super) async fn commit(self, registry: &Registry) {
        if let Some(reserved) = self.0 {
            reserved.commit(registry).await;
        }
    }

    pub(super) async fn release(self, registry: &Registry) {
        if let Some(reserved) = self.0 {
            reserved.release(registry).await;
        }
    }

    /// Settle the reservation by the write's outcome.
    pub(super) async fn settle<T>(self, registry: &Registry, outcome: &Result<T>) {
        match outcome {
            Ok(_) => self.commit(registry).await,
            Err(_) => self.release(registry).await,
        }
    }
}

/// A hook's reservation, settled exactly once.
#[async_trait::async_trait]
pub trait Reserved: Send + Sync {
    /// The write is stored: make it final (release what the old object held and the new
    /// one no longer needs).
    async fn commit(self: Box<Self>, registry: &Registry);
    /// The write is not stored: give back what was reserved for it.
    async fn release(self: Box<Self>, registry: &Registry);
}

/// How one resource differs from the others. Every hook has a default, so a plain data
/// kind (ConfigMap) only names itself.
///
/// A write calls, in order: `prepare_for_create`/`prepare_for_update` (defaults), mutating
/// admission, the schema check and managedFields, `begin_create`/`begin_update`
/// (reservations), `validate`, validating admission, the store write, then the
/// reservation's commit or release. A removal from storage calls `after_delete`.
#[async_trait::async_trait]
pub trait Strategy: Send + Sync + 'static {
    fn resource(&self) -> &ApiResource;

    /// Fill defaults on create (after the generic fields are set).
    fn prepare_for_create(&self, _object: &mut Object) {}

    /// Fill defaults on update; `old` is the stored object.
    fn prepare_for_update(&self, _object: &mut Object, _old: &Object) {}

    /// Reserve what a new object needs besides its key (a Service's cluster IPs and node
    /// ports), recording it in the object. Errors here refuse the write.
    async fn begin_create(&self, _hook: &Hook<'_>, _object: &mut Object) -> Result<Reservation> {
        Ok(Reservation::none())
    }

    /// [`Strategy::begin_create`] for an update over `old`.
    async fn begin_update(&self, _hook: &Hook<'_>, _object: &mut Object, _old: &Object) -> Result<Reservation> {
        Ok(Reservation::none())
    }

    /// The object is gone from storage: release what it held.
    async fn after_delete(&self, _registry: &Registry, _object: &Object) {}

    /// Whether `metadata.generation` counts spec changes (workloads do; ConfigMaps do not).
    fn tracks_generation(&self) -> bool {
        false
    }

    /// Which names the kind's objects may have.
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    /// Whether something besides `metadata.finalizers` keeps the object from going at
    /// once when deleted (a namespace's `spec.finalizers`).
    fn blocks_deletion(&self, _object: &Object) -> bool {
        false
    }

    /// Change an object being marked for deletion (a namespace becomes Terminating).
    fn prepare_for_deletion(&self, _object: &mut Object) {}

    /// How many seconds a delete leaves the object to go gracefully (marked with a
    /// `deletionTimestamp` that far ahead, removed by whoever runs it), given what the
    /// client asked for; 0 removes it at once. Only pods on a node are graceful.
    fn grace_period(&self, _object: &Object, _requested: Option<i64>) -> i64 {
        0
    }

    /// Problems with the object, each naming its field.
    fn validate(&self, _object: &Object) -> Vec<Cause> {
        Vec::new()
    }

    /// [`Strategy::validate`] for an update over the stored `old` (what may not change).
    fn validate_update(&self, object: &Object, _old: &Object) -> Vec<Cause> {
        self.validate(object)
    }

    /// The schema objects are checked (and patched, and applied) against: a built-in
    /// kind's Kubernetes definition unless the strategy has its own.
    fn schema(&self) -> Option<schema::Schema<'_>> {
        let r = self.resource();
        schema::Schema::builtin(r.group, r.version, r.kind)
    }

    /// The Table columns after NAME, if the kind defines its own (a CRD's
    /// `additionalPrinterColumns`); None: the API's built-in printers decide.
    fn printer_columns(&self) -> Option<&[PrinterColumn]> {
        None
    }

    /// Where `scale` reads and writes, if not `spec.replicas`/`status.replicas`/`spec.selector`.
    fn scale_paths(&self) -> Option<&ScalePaths> {
        None
    }

    /// Whether objects are shared with other versions of the kind (so one read through
    /// this version needs its `apiVersion` set to it).
    fn converts_versions(&self) -> bool {
        false
    }

    /// The OpenAPI definition of the kind if it is not one of Kubernetes' own.
    fn openapi_schema(&self) -> Option<&Value> {
        None
    }
}
