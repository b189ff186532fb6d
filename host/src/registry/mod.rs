//! The registry: ONE generic REST store for every resource (Kubernetes' generic registry
//! `Store`). Create, get, list, update, delete and watch, optimistic concurrency on
//! `resourceVersion` and the keys in storage are written once here; a resource differs
//! only by its [`Strategy`] (what it is called, defaults, validation).
//!
//! Start with [`Registry::new`], then [`Registry::resource`] to find a resource and the
//! verbs on [`Registry`]. Objects are JSON (`serde_json::Map`); the API layer decodes and
//! encodes the wire format. Only this module talks to `storage`.
//!
//! Invariants:
//! - an object is stored without `metadata.resourceVersion`; every object leaving the
//!   registry carries the store revision that wrote it as its resourceVersion;
//! - an update whose resourceVersion is stale fails with [`Error::Conflict`], never
//!   overwrites;
//! - a namespaced object can only be created in a namespace that exists.

mod apply;
mod bootstrap;
mod builtin;
mod custom;
mod error;
pub mod modules;
mod object;
pub mod schema;
mod selector;
mod services;
mod strategic;
mod subresource;
mod validation;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value};

pub use self::custom::{CustomResource, PrinterColumn, ScalePaths, CLEANUP_FINALIZER};
pub use self::error::{Cause, Error};
pub use self::object::NameRule;
use self::object::ObjectExt;
pub use self::selector::{FieldSelector, LabelSelector};
pub use self::subresource::Subresource;
pub use self::validation::FieldValidation;
use crate::storage::cache::{
    CacheConfig, CacheError, CacheItem, CacheWatch, CachedEvent, EventType, Filter, WatchCache, WatchRequest,
};
pub use crate::storage::Revision;
use crate::storage::{KeyValue, RangeRequest, StorageMetrics, Store, StoreError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A JSON object as the registry handles it.
pub type Object = Map<String, Value>;

/// What a resource is called and where it lives: one entry of discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
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

impl Resource {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage prefix of every object of this resource.
    fn prefix(&self) -> String {
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

/// How one resource differs from the others. Every hook has a default, so a plain data
/// kind (ConfigMap) only names itself.
pub trait Strategy: Send + Sync + 'static {
    fn resource(&self) -> &Resource;

    /// Fill defaults on create (after the generic fields are set).
    fn prepare_for_create(&self, _object: &mut Object) {}

    /// Fill defaults on update; `old` is the stored object.
    fn prepare_for_update(&self, _object: &mut Object, _old: &Object) {}

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

    /// Problems with the object, each naming its field.
    fn validate(&self, _object: &Object) -> Vec<Cause> {
        Vec::new()
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
}

impl WriteOptions {
    fn manager(&self) -> &str {
        self.field_manager.as_deref().unwrap_or("wasmkube")
    }
}

/// Whether a write records its manager in managedFields or already did (an apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ManagedFields {
    Record,
    Recorded,
}

/// Who writes an object, which decides what of it a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// A client through the resource: not the status (if it has a subresource for it).
    Resource,
    /// A client through a subresource: what that subresource's view changed.
    Subresource(Subresource),
    /// The server itself (binding, namespace finalization): anything.
    Host,
}

impl Via {
    fn of(part: Option<Subresource>) -> Self {
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

/// What the `scale` subresource reads and writes.
const SCALE: Resource = Resource {
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    plural: "scale",
    singular: "scale",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
};

/// How long a cached read waits for a watch cache that is still listing before reading the store.
const CACHED_READ_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Where the service-account token signing key lives.
const SIGNING_KEY: &str = "/registry/wasmkube.io/signing-key";

/// Where node-port claims live (one key per port held).
const NODE_PORT_PREFIX: &str = "/registry/wasmkube.io/nodeports/";

fn is_services(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.plural == "services"
}

/// How often a patch is re-applied to a newer object when a concurrent write wins.
const PATCH_ATTEMPTS: usize = 5;

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
    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn matches_object(&self, object: &Object) -> bool {
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

/// One watch event in the API's terms.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// ADDED, MODIFIED or DELETED, and the event's wire encoding, computed once for all watchers.
    Change(Bytes),
    /// Every event up to this revision has been sent.
    Bookmark(Revision),
    /// The watch ended: the client must list again (410 Gone).
    Expired(String),
}

struct Entry {
    strategy: Arc<dyn Strategy>,
    /// Shared by every version of one kind (they are stored under one prefix).
    cache: Arc<WatchCache>,
}

/// Where an entry is found: group, version, plural.
type Key = (&'static str, &'static str, &'static str);

/// What one CRD made the registry serve.
struct Served {
    /// The CRD's spec as last installed: a CRD event with the same spec changes nothing.
    spec: Value,
    group: &'static str,
    plural: &'static str,
    versions: Vec<&'static str>,
    cache: Arc<WatchCache>,
    /// What the CRD's status reports as `acceptedNames`.
    accepted_names: Value,
}

/// Every served resource over one store; see the module doc.
pub struct Registry {
    store: Arc<dyn Store>,
    metrics: StorageMetrics,
    /// Built-in resources from the start; custom resources come and go with their CRDs.
    entries: RwLock<BTreeMap<Key, Arc<Entry>>>,
    /// CRD name -> what it serves.
    custom: Mutex<HashMap<String, Served>>,
    /// Bumped whenever the set of served resources changes (discovery and OpenAPI follow it).
    generation: AtomicU64,
    /// The admission plugins every write passes (none until set).
    admission: std::sync::OnceLock<Arc<crate::admission::Chain>>,
}

impl Registry {
    /// A registry serving every built-in resource, each with its own watch cache.
    pub fn new(store: Arc<dyn Store>, metrics: StorageMetrics) -> Self {
        let mut entries = BTreeMap::new();
        for strategy in builtin::strategies() {
            let resource = strategy.resource().clone();
            let cache = Arc::new(WatchCache::start(
                store.clone(),
                Bytes::from(resource.prefix()),
                CacheConfig::default(),
                metrics.clone(),
            ));
            entries.insert((resource.group, resource.version, resource.plural), Arc::new(Entry { strategy, cache }));
        }
        Self {
            store,
            metrics,
            entries: RwLock::new(entries),
            custom: Mutex::default(),
            generation: AtomicU64::new(0),
            admission: std::sync::OnceLock::new(),
        }
    }

    /// Serve what `crd` defines (every served version), or change what it serves to match
    /// it. Returns the names the CRD was accepted with, or the CRD's problems.
    pub fn serve_custom(&self, crd: &Object) -> Result<Value, Vec<Cause>> {
        let name = crd.metadata().get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let spec = crd.get("spec").cloned().unwrap_or_default();
        if let Some(served) = self.custom.lock().get(&name).filter(|served| served.spec == spec) {
            // Every event of a CRD (its status writes too) lands here: nothing to parse.
            return Ok(served.accepted_names.clone());
        }
        let definition = custom::Definition::parse(crd)?;
        let mut custom = self.custom.lock();
        let mut entries = self.entries.write();
        let claimed_elsewhere = definition.versions.iter().any(|v| {
            let r = v.resource();
            entries.contains_key(&(r.group, r.version, r.plural))
                && !custom.get(&name).is_some_and(|s| s.group == r.group && s.plural == r.plural)
        });
        if claimed_elsewhere {
            return Err(vec![Cause::invalid(
                "spec.names.plural",
                format!("Invalid value: {:?}: is already served in group {}", definition.plural, definition.group),
            )]);
        }
        let cache = match custom.remove(&name) {
            Some(old) => {
                for version in &old.versions {
                    entries.remove(&(old.group, *version, old.plural));
                }
                if old.group == definition.group && old.plural == definition.plural {
                    old.cache
                } else {
                    old.cache.stop();
                    self.custom_cache(definition.group, definition.plural)
                }
            }
            None => self.custom_cache(definition.group, definition.plural),
        };
        let mut versions = Vec::new();
        for version in definition.versions {
            let r = version.resource().clone();
            versions.push(r.version);
            let strategy: Arc<dyn Strategy> = version;
            entries.insert((r.group, r.version, r.plural), Arc::new(Entry { strategy, cache: cache.clone() }));
        }
        let accepted_names = definition.accepted_names.clone();
        custom.insert(
            name,
            Served { spec, group: definition.group, plural: definition.plural, versions, cache, accepted_names },
        );
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(definition.accepted_names)
    }

    fn custom_cache(&self, group: &str, plural: &str) -> Arc<WatchCache> {
        let prefix = format!("/registry/{group}/{plural}/");
        Arc::new(WatchCache::start(
            self.store.clone(),
            Bytes::from(prefix),
            CacheConfig::default(),
            self.metrics.clone(),
        ))
    }

    /// Stop serving what the CRD called `name` served (its objects stay in storage).
    pub fn unserve_custom(&self, name: &str) {
        let Some(served) = self.custom.lock().remove(name) else { return };
        let mut entries = self.entries.write();
        for version in &served.versions {
            entries.remove(&(served.group, *version, served.plural));
        }
        served.cache.stop();
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The names of the CRDs whose resources are served.
    pub fn custom_names(&self) -> Vec<String> {
        self.custom.lock().keys().cloned().collect()
    }

    /// Send every write through `chain` from now on (set once).
    pub fn set_admission(&self, chain: Arc<crate::admission::Chain>) {
        let _ = self.admission.set(chain);
    }

    /// What admission is told about a write, if a plugin wants to see it.
    #[allow(clippy::too_many_arguments)]
    fn admission_attributes(
        &self,
        resource: &Resource,
        operation: crate::plugins::Operation,
        part: Option<Subresource>,
        namespace: Option<&str>,
        name: &str,
        user: Option<&crate::auth::UserInfo>,
        dry_run: bool,
    ) -> Option<crate::admission::Attributes> {
        let chain = self.admission.get()?;
        let attributes = crate::admission::Attributes {
            operation,
            group: resource.group.to_string(),
            version: resource.version.to_string(),
            kind: resource.kind.to_string(),
            resource: resource.plural.to_string(),
            subresource: part.map(|p| p.name().to_string()),
            namespace: namespace.filter(|_| resource.namespaced).map(str::to_owned),
            name: name.to_string(),
            user: user.cloned().unwrap_or_else(crate::auth::UserInfo::server),
            dry_run,
        };
        let wanted = chain.wants(&attributes, crate::plugins::Phase::Mutate)
            || chain.wants(&attributes, crate::plugins::Phase::Validate);
        wanted.then_some(attributes)
    }

    async fn admit_mutating(
        &self,
        attributes: Option<&crate::admission::Attributes>,
        object: &mut Object,
        old: Option<&Object>,
    ) -> Result<crate::admission::Admitted> {
        match (attributes, self.admission.get()) {
            (Some(attributes), Some(chain)) => {
                chain.mutate(attributes, object, old).await.map_err(|d| Self::denied(attributes, d))
            }
            _ => Ok(Default::default()),
        }
    }

    async fn admit_validating(
        &self,
        attributes: Option<&crate::admission::Attributes>,
        object: Option<&Object>,
        old: Option<&Object>,
    ) -> Result<crate::admission::Admitted> {
        match (attributes, self.admission.get()) {
            (Some(attributes), Some(chain)) => {
                chain.validate(attributes, object, old).await.map_err(|d| Self::denied(attributes, d))
            }
            _ => Ok(Default::default()),
        }
    }

    fn denied(attributes: &crate::admission::Attributes, denied: crate::admission::Denied) -> Error {
        let resource = if attributes.group.is_empty() {
            attributes.resource.clone()
        } else {
            format!("{}.{}", attributes.resource, attributes.group)
        };
        let message = match denied.code {
            403 => format!("{resource} \"{}\" is forbidden: {}", attributes.name, denied.message),
            _ => denied.message,
        };
        Error::Denied { code: denied.code, message }
    }

    /// Changes whenever the set of served resources does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The strategy of a served resource: what the API asks of a kind beyond its name
    /// (printer columns, its OpenAPI definition).
    pub fn strategy(&self, resource: &Resource) -> Option<Arc<dyn Strategy>> {
        self.entry(resource).ok().map(|e| e.strategy.clone())
    }

    /// Compact storage at its current revision and forget the watch caches' history up to
    /// it: a watch or paged list from an older revision gets 410 Gone and must list again.
    /// Returns the revision compacted at.
    pub async fn compact(&self) -> Result<Revision> {
        let revision = self.store.current_revision().await.map_err(Error::from_store)?;
        self.store.compact(revision).await.map_err(Error::from_store)?;
        for entry in self.entries.read().values() {
            entry.cache.forget_history_through(revision);
        }
        Ok(revision)
    }

    /// The secret service-account tokens are signed with: made once, kept in the store,
    /// so every API server on one store signs and checks with the same one.
    pub async fn signing_key(&self) -> Result<Vec<u8>> {
        let key = Bytes::from_static(SIGNING_KEY.as_bytes());
        loop {
            if let (Some(kv), _) = self.store.get(key.clone()).await.map_err(Error::from_store)? {
                return base64::engine::general_purpose::STANDARD
                    .decode(&kv.value)
                    .map_err(|e| Error::Internal(format!("the stored signing key is not base64: {e}")));
            }
            let secret: [u8; 32] = rand::random();
            let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
            match self.store.create(key.clone(), Bytes::from(encoded)).await {
                Ok(_) => return Ok(secret.to_vec()),
                // Another server made it first: use theirs.
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(Error::from_store(e)),
            }
        }
    }

    /// Every served resource, in a stable order (a snapshot: CRDs may change it).
    pub fn resources(&self) -> Vec<Resource> {
        self.entries.read().values().map(|e| e.strategy.resource().clone()).collect()
    }

    /// The resource `plural` in `group` at `version`, if served.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.find(group, version, plural).map(|e| e.strategy.resource().clone())
    }

    fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Entry>> {
        let entries = self.entries.read();
        // The map is covariant in its key, so it can be read with keys that live less long.
        let entries: &BTreeMap<(&str, &str, &str), Arc<Entry>> = &entries;
        entries.get(&(group, version, plural)).cloned()
    }

    fn entry(&self, resource: &Resource) -> Result<Arc<Entry>> {
        self.find(resource.group, resource.version, resource.plural)
            .ok_or_else(|| Error::NotFound { resource: resource.qualified(), name: String::new() })
    }

    /// Create what a fresh cluster holds (namespaces, the `kubernetes` Service and its
    /// endpoints at `advertise`, default RBAC roles); what exists is left alone, except the
    /// endpoints, which follow the server's address.
    pub async fn seed(&self, advertise: Option<std::net::SocketAddr>) -> Result<()> {
        let options = WriteOptions { field_manager: Some("kube-apiserver".into()), ..WriteOptions::default() };
        for seed in bootstrap::objects(advertise) {
            let resource = self
                .resources()
                .into_iter()
                .find(|r| r.group == seed.group && r.plural == seed.plural)
                .ok_or_else(|| Error::Internal(format!("{}.{} is not served", seed.plural, seed.group)))?;
            let name = seed.body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            match self.create(&resource, seed.namespace, seed.body.clone(), &options).await {
                Ok(_) => {}
                Err(Error::AlreadyExists { .. }) if !seed.refresh.is_empty() => {
                    let current = Value::Object(self.get(&resource, seed.namespace, &name).await?);
                    let differs = seed.refresh.iter().any(|at| current.pointer(at) != seed.body.pointer(at));
                    if differs {
                        self.update(&resource, seed.namespace, &name, seed.body, None, &options).await?;
                    }
                }
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn key(resource: &Resource, namespace: Option<&str>, name: &str) -> Bytes {
        match namespace {
            Some(ns) if resource.namespaced => format!("{}{ns}/{name}", resource.prefix()).into(),
            _ => format!("{}{name}", resource.prefix()).into(),
        }
    }

    /// The storage prefix a list or watch reads: the resource's, or one namespace's.
    fn list_prefix(resource: &Resource, namespace: Option<&str>) -> Bytes {
        match namespace {
            Some(ns) if resource.namespaced => format!("{}{ns}/", resource.prefix()).into(),
            _ => resource.prefix().into(),
        }
    }

    fn check_namespace(resource: &Resource, namespace: Option<&str>) -> Result<()> {
        match (resource.namespaced, namespace) {
            (true, None) => {
                Err(Error::BadRequest(format!("{} is namespaced: the request needs a namespace", resource.qualified())))
            }
            (false, Some(_)) => Err(Error::NotFound { resource: resource.qualified(), name: String::new() }),
            _ => Ok(()),
        }
    }

    async fn namespace_exists(&self, namespace: &str) -> Result<()> {
        let namespaces =
            self.resource("", "v1", "namespaces").ok_or_else(|| Error::Internal("namespaces are not served".into()))?;
        let object = self.get_cached(&namespaces, None, namespace).await?;
        if object.metadata().contains_key("deletionTimestamp") {
            return Err(Error::Forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// An object as the watch cache holds it, for checks on hot paths (does the namespace
    /// exist, is it terminating? does the token's service account?), the way
    /// kube-apiserver's admission reads its informers' listers: what the cache holds is
    /// trusted (it trails the store by the time an event takes to arrive), and what it
    /// does not hold is looked up in the store, so an object just created is found.
    pub async fn get_cached(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<Object> {
        object::decode(&self.cached_kv(resource, namespace, name).await?)
    }

    /// [`Registry::get_cached`], as the stored JSON text (without `resourceVersion`): for
    /// readers that only pass the object on (plugins' `client`), no decode and re-encode.
    pub async fn get_cached_json(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<String> {
        let kv = self.cached_kv(resource, namespace, name).await?;
        String::from_utf8(kv.value.to_vec()).map_err(|e| Error::Internal(format!("a stored object is not UTF-8: {e}")))
    }

    /// The stored value as the watch cache holds it, or from the store if the cache does not.
    async fn cached_kv(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<KeyValue> {
        Self::check_namespace(resource, namespace)?;
        let key = Self::key(resource, namespace, name);
        if let Ok(Some(kv)) = self.entry(resource)?.cache.get(&key, 0, CACHED_READ_WAIT).await {
            return Ok(kv);
        }
        match self.store.get(key).await.map_err(Error::from_store)? {
            (Some(kv), _) => Ok(kv),
            (None, _) => Err(Error::NotFound { resource: resource.qualified(), name: name.into() }),
        }
    }

    /// Create `body` (generateName honoured); returns the stored object.
    /// With `dry_run`, everything happens but the write: the answer is what would be stored.
    pub async fn create(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Written> {
        self.create_inner(resource, namespace, body, options, ManagedFields::Record).await
    }

    async fn create_inner(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        body: Value,
        options: &WriteOptions,
        managed: ManagedFields,
    ) -> Result<Written> {
        Self::check_namespace(resource, namespace)?;
        let entry = self.entry(resource)?;
        let mut object = object::into_object(body, resource)?;
        let metadata = object.metadata_mut();
        if let Some(ns) = namespace {
            match metadata.get("namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(Error::BadRequest(format!(
                        "the namespace of the object ({given}) does not match the namespace on the request ({ns})"
                    )))
                }
                _ => {
                    metadata.insert("namespace".into(), Value::String(ns.into()));
                }
            }
        } else {
            metadata.remove("namespace");
        }
        let name = match metadata.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => match metadata.get("generateName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                Some(base) => format!("{base}{}", object::random_suffix()),
                None => {
                    return Err(Error::Invalid {
                        kind: resource.kind.into(),
                        name: String::new(),
                        causes: vec![Cause::required("metadata.name", "name or generateName is required")],
                    })
                }
            },
        };
        metadata.insert("name".into(), Value::String(name.clone()));
        metadata.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
        metadata.insert("creationTimestamp".into(), Value::String(object::now()));
        metadata.remove("resourceVersion");
        metadata.remove("deletionTimestamp");
        metadata.remove("generation");
        if entry.strategy.tracks_generation() {
            metadata.insert("generation".into(), Value::from(1));
        }
        entry.strategy.prepare_for_create(&mut object);
        let operation = crate::plugins::Operation::Create;
        let attributes = self.admission_attributes(
            resource,
            operation,
            None,
            namespace,
            &name,
            options.user.as_ref(),
            options.dry_run,
        );
        let mut admitted = self.admit_mutating(attributes.as_ref(), &mut object, None).await?;
        let mut warnings = Self::check_schema(&entry, &mut object, options.field_validation)?;
        if managed == ManagedFields::Record {
            object = Self::record_manager(&entry, None, object, options)?;
        }
        let needs = if is_services(resource) { Some(services::prepare(&mut object, None)?) } else { None };
        self.validate(&entry, &object, &name)?;
        if let Some(ns) = namespace {
            self.namespace_exists(ns).await?;
        }
        admitted.merge(self.admit_validating(attributes.as_ref(), Some(&object), None).await?);
        warnings.extend(admitted.warnings);
        let decisions = admitted.decisions;
        let key = Self::key(resource, namespace, &name);
        if options.dry_run {
            return match self.store.get(key).await.map_err(Error::from_store)? {
                (Some(_), _) => Err(Error::AlreadyExists { resource: resource.qualified(), name }),
                (None, _) => Ok(Written { object, warnings, decisions }),
            };
        }
        let claimed = match needs {
            Some(needs) => {
                // An existing object is AlreadyExists, not a clash over its own addresses.
                if self.store.get(key.clone()).await.map_err(Error::from_store)?.0.is_some() {
                    return Err(Error::AlreadyExists { resource: resource.qualified(), name });
                }
                self.claim_all(&needs.wanted, &mut object, namespace.unwrap_or_default(), &name).await?
            }
            None => Vec::new(),
        };
        let result = match self.store.create(key, object::encode(&object)?).await {
            Ok(kv) => Ok(Written { object: object::decode(&kv)?, warnings, decisions }),
            Err(StoreError::AlreadyExists { .. }) => Err(Error::AlreadyExists { resource: resource.qualified(), name }),
            Err(e) => Err(Error::from_store(e)),
        };
        if result.is_err() {
            self.release_all(&claimed).await;
        }
        result
    }

    /// Claim every address in `wanted` for service `namespace/name`, recording each in
    /// it; all or nothing.
    async fn claim_all(
        &self,
        wanted: &[services::Want],
        service: &mut Object,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<services::Claim>> {
        let mut claimed = Vec::new();
        for want in wanted {
            match self.claim_one(want, namespace, name).await {
                Ok(claim) => {
                    services::record(service, want, &claim);
                    claimed.push(claim);
                }
                Err(e) => {
                    self.release_all(&claimed).await;
                    return Err(e);
                }
            }
        }
        Ok(claimed)
    }

    async fn claim_one(&self, want: &services::Want, namespace: &str, name: &str) -> Result<services::Claim> {
        use rand::Rng;
        let start: u32 = rand::rng().random();
        for attempt in 0..services::attempts(want) {
            let Some(claim) = services::candidate(want, attempt, start) else { break };
            let (key, value) = match &claim {
                services::Claim::ClusterIp(ip) => {
                    let mut object = match services::ip_address(*ip, namespace, name) {
                        Value::Object(object) => object,
                        _ => return Err(Error::Internal("an IPAddress is an object".into())),
                    };
                    let metadata = object.metadata_mut();
                    metadata.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
                    metadata.insert("creationTimestamp".into(), Value::String(object::now()));
                    (format!("/registry/networking.k8s.io/ipaddresses/{ip}"), object::encode(&object)?)
                }
                services::Claim::NodePort(port) => (
                    format!("{NODE_PORT_PREFIX}{port}"),
                    Bytes::from(serde_json::json!({"namespace": namespace, "name": name}).to_string()),
                ),
            };
            match self.store.create(Bytes::from(key), value).await {
                Ok(_) => return Ok(claim),
                Err(StoreError::AlreadyExists { .. }) => {
                    if let services::Want::Exactly(claim) = want {
                        let (field, what) = match claim {
                            services::Claim::ClusterIp(ip) => (
                                "spec.clusterIPs[0]",
                                format!("{ip:?}: failed to allocate IP {ip}: provided IP is already allocated"),
                            ),
                            services::Claim::NodePort(port) => {
                                ("spec.ports[].nodePort", format!("{port}: provided port is already allocated"))
                            }
                        };
                        return Err(Error::Invalid {
                            kind: "Service".into(),
                            name: name.into(),
                            causes: vec![Cause::invalid(field, format!("Invalid value: {what}"))],
                        });
                    }
                }
                Err(e) => return Err(Error::from_store(e)),
            }
        }
        Err(Error::Internal(format!(
            "failed to allocate {} for service {namespace}/{name}: the range is full",
            match want {
                services::Want::AnyNodePort(_) => "a node port",
                _ => "a cluster IP",
            }
        )))
    }

    async fn release_all(&self, claims: &[services::Claim]) {
        for claim in claims {
            let key = match claim {
                services::Claim::ClusterIp(ip) => format!("/registry/networking.k8s.io/ipaddresses/{ip}"),
                services::Claim::NodePort(port) => format!("{NODE_PORT_PREFIX}{port}"),
            };
            if let Err(e) = self.store.delete(Bytes::from(key), None).await {
                if !matches!(e, StoreError::NotFound { .. }) {
                    tracing::warn!(?claim, error = %e, "cannot release a service address; it stays held");
                }
            }
        }
    }

    /// What goes with an object that is removed from storage (a Service's addresses).
    async fn removed(&self, resource: &Resource, object: &Object) {
        if is_services(resource) {
            self.release_all(&services::claims(object)).await;
        }
    }

    /// Record `options`' manager as owning what changed from `old` to `object`.
    fn record_manager(entry: &Entry, old: Option<&Object>, object: Object, options: &WriteOptions) -> Result<Object> {
        let schema = entry.strategy.schema();
        let old = old.map(|o| Value::Object(o.clone()));
        match apply::record_update(old.as_ref(), &Value::Object(object), options.manager(), schema, &object::now()) {
            Ok(Value::Object(object)) => Ok(object),
            Ok(_) => Err(Error::Internal("recording managedFields did not give an object".into())),
            Err(e) => Err(Error::BadRequest(e.to_string())),
        }
    }

    /// Drop the fields the kind's schema does not declare; refuse them under Strict, and
    /// refuse values of the wrong shape. Returns the warnings for the client.
    fn check_schema(entry: &Entry, object: &mut Object, validation: FieldValidation) -> Result<Vec<String>> {
        let resource = entry.strategy.resource();
        let Some(schema) = entry.strategy.schema() else {
            return Ok(Vec::new());
        };
        let findings = validation::check(object, schema);
        let cannot = |why: String| {
            Error::BadRequest(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {why}",
                kind = resource.kind,
                version = resource.version
            ))
        };
        if !findings.wrong_shape.is_empty() {
            return Err(cannot(findings.wrong_shape.join(", ")));
        }
        let unknown = findings.unknown.iter().map(|path| format!("unknown field \"{path}\""));
        match validation {
            FieldValidation::Strict if !findings.unknown.is_empty() => {
                Err(cannot(format!("strict decoding error: {}", unknown.collect::<Vec<_>>().join(", "))))
            }
            FieldValidation::Warn => Ok(unknown.collect()),
            _ => Ok(Vec::new()),
        }
    }

    fn validate(&self, entry: &Entry, object: &Object, name: &str) -> Result<()> {
        let mut causes =
            object::validate_metadata(object, entry.strategy.resource().namespaced, entry.strategy.name_rule());
        causes.extend(entry.strategy.validate(object));
        if causes.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid { kind: entry.strategy.resource().kind.into(), name: name.into(), causes })
        }
    }

    pub async fn get(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<Object> {
        Self::check_namespace(resource, namespace)?;
        let key = Self::key(resource, namespace, name);
        match self.store.get(key).await.map_err(Error::from_store)? {
            (Some(kv), _) => object::decode(&kv),
            (None, _) => Err(Error::NotFound { resource: resource.qualified(), name: name.into() }),
        }
    }

    /// List objects of `resource` (in `namespace`, or everywhere).
    pub async fn list(&self, resource: &Resource, namespace: Option<&str>, options: ListOptions) -> Result<ObjectList> {
        if namespace.is_some() && !resource.namespaced {
            return Err(Error::NotFound { resource: resource.qualified(), name: String::new() });
        }
        let prefix = Self::list_prefix(resource, namespace);
        let entry = self.entry(resource)?;
        if options.resource_version == Some(0)
            && options.limit == 0
            && options.continue_token.is_none()
            && !options.exact
        {
            // "Any": served from the watch cache without a round trip to storage.
            let list = entry
                .cache
                .list(crate::storage::cache::ListRequest { key_prefix: Some(prefix), min_revision: None })
                .await
                .map_err(Error::from_cache)?;
            let items = select(list.items.iter().map(object::decode), &options.selectors)?;
            return Ok(ObjectList { items, resource_version: list.revision, continue_token: None });
        }
        let mut request = RangeRequest { prefix: prefix.clone(), limit: options.limit, ..Default::default() };
        if let Some(token) = &options.continue_token {
            let (revision, start) = decode_continue(token, &prefix)?;
            request.revision = Some(revision);
            request.start = Some(start);
        } else if let Some(revision) = options.resource_version.filter(|r| *r > 0) {
            let current = self.store.current_revision().await.map_err(Error::from_store)?;
            if revision > current {
                return Err(Error::Timeout(format!("Too large resource version: {revision}, current: {current}")));
            }
            if options.exact {
                request.revision = Some(revision);
            }
        }
        let page = self.store.range(request.clone()).await.map_err(Error::from_store)?;
        let continue_token =
            page.next_page(&request).and_then(|next| next.start).map(|start| encode_continue(page.revision, &start));
        let items = select(page.kvs.iter().map(object::decode), &options.selectors)?;
        Ok(ObjectList { items, resource_version: page.revision, continue_token })
    }

    /// Read an object through `part` (None = the object itself).
    pub async fn get_part(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        part: Option<Subresource>,
    ) -> Result<Object> {
        let entry = self.entry(resource)?;
        let scale = entry.strategy.scale_paths();
        self.get(resource, namespace, name).await.map(|object| subresource::view(part, object, scale))
    }

    /// Replace an object, or write through `part`. A `metadata.resourceVersion` in the
    /// body must match the stored one.
    pub async fn update(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Written> {
        Self::check_namespace(resource, namespace)?;
        let written = Self::into_view(body, resource, part)?;
        match written.metadata().get("name").and_then(Value::as_str) {
            Some(given) if given != name => {
                return Err(Error::BadRequest(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )))
            }
            _ => {}
        }
        let key = Self::key(resource, namespace, name);
        let (stored, _) = self.store.get(key.clone()).await.map_err(Error::from_store)?;
        let stored = stored.ok_or_else(|| Error::NotFound { resource: resource.qualified(), name: name.into() })?;
        let entry = self.entry(resource)?;
        let scale = entry.strategy.scale_paths();
        let object = subresource::merge_back(part, resource, written, &object::decode(&stored)?, scale)?;
        let written = self
            .replace(resource, namespace, name, object, &stored, Via::of(part), options, ManagedFields::Record)
            .await?;
        Ok(Written { object: subresource::view(part, written.object, scale), ..written })
    }

    /// A request body as what `part` of `resource` reads and writes.
    fn into_view(body: Value, resource: &Resource, part: Option<Subresource>) -> Result<Object> {
        match part {
            Some(Subresource::Scale) => object::into_object(body, &SCALE),
            _ => object::into_object(body, resource),
        }
    }

    /// Store `object` over `current` (the stored value it was read against).
    #[allow(clippy::too_many_arguments)]
    async fn replace(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        mut object: Object,
        current: &KeyValue,
        via: Via,
        options: &WriteOptions,
        managed: ManagedFields,
    ) -> Result<Written> {
        let entry = self.entry(resource)?;
        let key = Self::key(resource, namespace, name);
        let old = object::decode(current)?;
        let keep_status = match via {
            Via::Resource => true,
            Via::Subresource(part) => !part.writes_status(),
            Via::Host => false,
        };
        if keep_status && resource.has_subresource("status") {
            // Status is written through its subresource only.
            match old.get("status") {
                Some(status) => object.insert("status".into(), status.clone()),
                None => object.remove("status"),
            };
        }
        let expected = match object.metadata().get("resourceVersion").and_then(Value::as_str).filter(|v| !v.is_empty())
        {
            Some(rv) => rv.parse::<Revision>().map_err(|_| {
                Error::BadRequest(format!("metadata.resourceVersion {rv:?} is not a valid resource version"))
            })?,
            None => current.mod_revision,
        };
        object::carry_over_system_fields(&mut object, &old, namespace, name);
        let deleting = old.metadata().contains_key("deletionTimestamp");
        if deleting {
            let before = object::finalizers(&old);
            if let Some(new) = object::finalizers(&object).into_iter().find(|f| !before.contains(f)) {
                return Err(Error::Invalid {
                    kind: resource.kind.into(),
                    name: name.into(),
                    causes: vec![Cause {
                        reason: "FieldValueForbidden",
                        field: "metadata.finalizers".into(),
                        message: format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [{new:?}]"),
                    }],
                });
            }
        }
        if via == Via::Resource {
            entry.strategy.prepare_for_update(&mut object, &old);
        }
        let part = match via {
            Via::Subresource(part) => Some(part),
            _ => None,
        };
        let attributes = match via {
            // The server's own writes (binding, finalizing) are not admitted again.
            Via::Host => None,
            _ => self.admission_attributes(
                resource,
                crate::plugins::Operation::Update,
                part,
                namespace,
                name,
                options.user.as_ref(),
                options.dry_run,
            ),
        };
        let mut admitted = self.admit_mutating(attributes.as_ref(), &mut object, Some(&old)).await?;
        if entry.strategy.tracks_generation() {
            object::bump_generation(&mut object, &old);
        }
        let mut warnings = Self::check_schema(&entry, &mut object, options.field_validation)?;
        if managed == ManagedFields::Record {
            object = Self::record_manager(&entry, Some(&old), object, options)?;
        }
        let needs = if is_services(resource) { Some(services::prepare(&mut object, Some(&old))?) } else { None };
        self.validate(&entry, &object, name)?;
        admitted.merge(self.admit_validating(attributes.as_ref(), Some(&object), Some(&old)).await?);
        warnings.extend(admitted.warnings);
        let decisions = admitted.decisions;
        if options.dry_run {
            if expected != current.mod_revision {
                return Err(Self::modified(resource, name));
            }
            object.metadata_mut().insert("resourceVersion".into(), Value::String(current.mod_revision.to_string()));
            return Ok(Written { object, warnings, decisions });
        }
        if deleting && object::finalizers(&object).is_empty() && !entry.strategy.blocks_deletion(&object) {
            // The last finalizer is gone: so is the object.
            return match self.store.delete(key, Some(expected)).await {
                Ok(_) => {
                    self.removed(resource, &old).await;
                    Ok(Written { object, warnings, decisions })
                }
                Err(StoreError::Conflict { .. }) => Err(Self::modified(resource, name)),
                Err(StoreError::NotFound { .. }) => {
                    Err(Error::NotFound { resource: resource.qualified(), name: name.into() })
                }
                Err(e) => Err(Error::from_store(e)),
            };
        }
        let claimed = match &needs {
            Some(needs) => self.claim_all(&needs.wanted, &mut object, namespace.unwrap_or_default(), name).await?,
            None => Vec::new(),
        };
        let result = match self.store.update(key, object::encode(&object)?, expected).await {
            Ok(kv) => Ok(Written { object: object::decode(&kv)?, warnings, decisions }),
            Err(StoreError::Conflict { .. }) => Err(Self::modified(resource, name)),
            Err(StoreError::NotFound { .. }) => {
                Err(Error::NotFound { resource: resource.qualified(), name: name.into() })
            }
            Err(e) => Err(Error::from_store(e)),
        };
        match (&result, needs) {
            (Ok(_), Some(needs)) => self.release_all(&needs.released).await,
            (Err(_), _) => self.release_all(&claimed).await,
            _ => {}
        }
        result
    }

    /// Apply `patch` to the current object and store the result. A patch that sets
    /// `metadata.resourceVersion` is a precondition; otherwise a concurrent write just
    /// makes it re-apply to the newer object (like kube-apiserver's GuaranteedUpdate).
    pub async fn patch(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        patch: Patch,
        part: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Written> {
        Self::check_namespace(resource, namespace)?;
        let key = Self::key(resource, namespace, name);
        if options.force && !matches!(patch, Patch::Apply(_)) {
            return Err(Error::BadRequest("force may only be set for server-side apply".into()));
        }
        let entry = self.entry(resource)?;
        let scale = entry.strategy.scale_paths();
        for attempt in 1..=PATCH_ATTEMPTS {
            let (stored, _) = self.store.get(key.clone()).await.map_err(Error::from_store)?;
            let stored = match (stored, &patch) {
                (Some(stored), _) => stored,
                (None, Patch::Apply(config)) if part.is_none() => {
                    match self.create_by_apply(resource, namespace, name, config, options).await {
                        Err(Error::AlreadyExists { .. }) if attempt < PATCH_ATTEMPTS => continue,
                        result => return result,
                    }
                }
                (None, _) => return Err(Error::NotFound { resource: resource.qualified(), name: name.into() }),
            };
            let mut current = object::decode(&stored)?;
            if entry.strategy.converts_versions() {
                // Stored through another version of the kind: patched as this one.
                current.insert("apiVersion".into(), Value::String(resource.api_version()));
            }
            let viewed = subresource::view(part, current.clone(), scale);
            let revision = viewed.metadata().get("resourceVersion").cloned();
            let mut document = Value::Object(viewed);
            match &patch {
                Patch::Json(operations) => {
                    json_patch::patch(&mut document, operations).map_err(|e| Error::Invalid {
                        kind: resource.kind.into(),
                        name: name.into(),
                        causes: vec![Cause::invalid("", format!("the JSON patch cannot be applied: {e}"))],
                    })?
                }
                Patch::Merge(merge) => json_patch::merge(&mut document, merge),
                Patch::Apply(config) => {
                    let config = Self::apply_config(resource, name, config, part)?;
                    let schema = entry.strategy.schema();
                    let manager = options.manager();
                    document = apply::apply(Some(&document), &config, manager, options.force, schema, &object::now())
                        .map_err(|e| Self::apply_error(resource, name, e))?;
                    // The document keeps the version it was applied to, unless the
                    // configuration names one (then it is a precondition).
                    let pinned_to = config.pointer("/metadata/resourceVersion").cloned().or_else(|| revision.clone());
                    if let (Some(rv), Some(Value::Object(metadata))) = (pinned_to, document.get_mut("metadata")) {
                        metadata.insert("resourceVersion".into(), rv);
                    }
                }
                Patch::Strategic(patch) => {
                    let schema = match part {
                        Some(Subresource::Scale) => schema::Schema::builtin("autoscaling", "v1", "Scale"),
                        _ => schema::Schema::builtin(resource.group, resource.version, resource.kind),
                    };
                    if schema.is_none() {
                        return Err(Error::UnsupportedMediaType(format!(
                            "strategic merge patch is not supported for {}: use a JSON merge patch (--type=merge)",
                            resource.qualified()
                        )));
                    }
                    document = strategic::apply(&document, patch, schema)
                        .map_err(|e| Error::BadRequest(format!("the strategic merge patch cannot be applied: {e}")))?;
                }
            }
            // A patch that changes resourceVersion makes it a precondition; otherwise the
            // document still carries the version it was applied to, so only that one is replaced.
            let pinned = document.pointer("/metadata/resourceVersion").cloned() != revision;
            let written = Self::into_view(document, resource, part)?;
            let object = subresource::merge_back(part, resource, written, &current, scale)?;
            let managed = match patch {
                Patch::Apply(_) => ManagedFields::Recorded,
                _ => ManagedFields::Record,
            };
            match self.replace(resource, namespace, name, object, &stored, Via::of(part), options, managed).await {
                Err(Error::Conflict { .. }) if !pinned && attempt < PATCH_ATTEMPTS => continue,
                result => return result.map(|w| Written { object: subresource::view(part, w.object, scale), ..w }),
            }
        }
        Err(Error::Internal("patch retries exhausted".into()))
    }

    /// The configuration of a server-side apply, checked: an object naming `name`, without
    /// a status when applied to the resource itself (status is its subresource's).
    fn apply_config(resource: &Resource, name: &str, config: &Value, part: Option<Subresource>) -> Result<Value> {
        let Value::Object(map) = config else {
            return Err(Error::BadRequest("the applied configuration must be an object".into()));
        };
        let mut map = map.clone();
        match map.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str) {
            Some(given) if given == name => {}
            Some(given) => {
                return Err(Error::BadRequest(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )))
            }
            None => {
                return Err(Error::BadRequest("the applied configuration must name the object (metadata.name)".into()))
            }
        }
        if part.is_none() && resource.has_subresource("status") {
            map.remove("status");
        }
        Ok(Value::Object(map))
    }

    fn apply_error(resource: &Resource, name: &str, error: apply::ApplyError) -> Error {
        match error {
            apply::ApplyError::Conflicts(conflicts) => Error::ApplyConflict {
                resource: resource.qualified(),
                name: name.into(),
                message: apply::ApplyError::Conflicts(conflicts.clone()).to_string(),
                causes: conflicts
                    .into_iter()
                    .map(|c| Cause {
                        reason: "FieldManagerConflict",
                        field: c.path,
                        message: format!("conflict with {}", c.owner),
                    })
                    .collect(),
            },
            apply::ApplyError::Invalid(why) => Error::BadRequest(why),
        }
    }

    /// A server-side apply to an object that does not exist creates it.
    async fn create_by_apply(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        config: &Value,
        options: &WriteOptions,
    ) -> Result<Written> {
        let config = Self::apply_config(resource, name, config, None)?;
        let entry = self.entry(resource)?;
        let schema = entry.strategy.schema();
        let object = apply::apply(None, &config, options.manager(), options.force, schema, &object::now())
            .map_err(|e| Self::apply_error(resource, name, e))?;
        self.create_inner(resource, namespace, object, options, ManagedFields::Recorded).await
    }

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
        let key = Self::key(pods, namespace, name);
        for attempt in 1..=PATCH_ATTEMPTS {
            let (stored, _) = self.store.get(key.clone()).await.map_err(Error::from_store)?;
            let stored = stored.ok_or_else(|| Error::NotFound { resource: pods.qualified(), name: name.into() })?;
            let mut pod = object::decode(&stored)?;
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
                None => object::set_path(&mut pod, &["spec", "nodeName"], Value::String(node.into())),
            }
            if !annotations.is_empty() {
                let metadata = pod.metadata_mut();
                let existing = metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(existing) = existing {
                    existing.extend(annotations.clone());
                }
            }
            object::set_condition(&mut pod, "PodScheduled", "True", None);
            match self.replace(pods, namespace, name, pod, &stored, Via::Host, options, ManagedFields::Record).await {
                Err(Error::Conflict { .. }) if attempt < PATCH_ATTEMPTS => continue,
                result => return result,
            }
        }
        Err(Error::Internal("binding retries exhausted".into()))
    }

    /// Delete every object `options` selects (`deletecollection`); returns what was deleted.
    pub async fn delete_collection(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        options: ListOptions,
        delete: &DeleteOptions,
    ) -> Result<ObjectList> {
        let list = self.list(resource, namespace, options).await?;
        let mut deleted = Vec::with_capacity(list.items.len());
        for item in list.items {
            let metadata = item.metadata();
            let name = metadata.get("name").and_then(Value::as_str).unwrap_or_default();
            let ns = metadata.get("namespace").and_then(Value::as_str);
            match self.delete(resource, ns, name, delete).await {
                Ok(object) => deleted.push(object),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ObjectList { items: deleted, resource_version: list.resource_version, continue_token: None })
    }

    /// Delete an object. One with finalizers (or, for a namespace, `spec.finalizers`) is
    /// only marked: `deletionTimestamp` is set and it goes when its last finalizer is
    /// removed. Returns the object's last state (or its marked state).
    pub async fn delete(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Object> {
        Self::check_namespace(resource, namespace)?;
        let entry = self.entry(resource)?;
        let key = Self::key(resource, namespace, name);
        for attempt in 1..=PATCH_ATTEMPTS {
            let (stored, _) = self.store.get(key.clone()).await.map_err(Error::from_store)?;
            let stored = stored.ok_or_else(|| Error::NotFound { resource: resource.qualified(), name: name.into() })?;
            let mut object = object::decode(&stored)?;
            if options.resource_version.is_some_and(|rv| rv != stored.mod_revision)
                || options.uid.as_deref().is_some_and(|uid| object.metadata().get("uid") != Some(&Value::from(uid)))
            {
                return Err(Self::precondition_failed(resource, name));
            }
            let attributes = self.admission_attributes(
                resource,
                crate::plugins::Operation::Delete,
                None,
                namespace,
                name,
                options.user.as_ref(),
                options.dry_run,
            );
            self.admit_validating(attributes.as_ref(), None, Some(&object)).await?;
            let mut finalizers = object::finalizers(&object);
            let added = match options.propagation {
                Some(Propagation::Foreground) => Some("foregroundDeletion"),
                Some(Propagation::Orphan) => Some("orphan"),
                _ => None,
            };
            let marking = !finalizers.is_empty() || entry.strategy.blocks_deletion(&object) || added.is_some();
            let conflict = if marking {
                if let Some(added) = added.filter(|f| !finalizers.iter().any(|have| have == f)) {
                    finalizers.push(added.to_string());
                }
                let metadata = object.metadata_mut();
                if metadata.get("deletionTimestamp").is_none() {
                    metadata.insert("deletionTimestamp".into(), Value::String(object::now()));
                    metadata.insert("deletionGracePeriodSeconds".into(), Value::from(0));
                }
                metadata.insert("finalizers".into(), serde_json::json!(finalizers));
                entry.strategy.prepare_for_deletion(&mut object);
                if options.dry_run {
                    return Ok(object);
                }
                object.metadata_mut().remove("resourceVersion");
                match self.store.update(key.clone(), object::encode(&object)?, stored.mod_revision).await {
                    Ok(kv) => return object::decode(&kv),
                    Err(e) => e,
                }
            } else {
                if options.dry_run {
                    return Ok(object);
                }
                match self.store.delete(key.clone(), Some(stored.mod_revision)).await {
                    // As kube-apiserver answers: the last state, at the delete's revision
                    // (what a watcher's DELETED event carries).
                    Ok((kv, revision)) => {
                        let removed = object::decode_at(&kv.value, revision)?;
                        self.removed(resource, &removed).await;
                        return Ok(removed);
                    }
                    Err(e) => e,
                }
            };
            match conflict {
                StoreError::Conflict { .. } | StoreError::NotFound { .. } if attempt < PATCH_ATTEMPTS => continue,
                StoreError::NotFound { .. } => {
                    return Err(Error::NotFound { resource: resource.qualified(), name: name.into() })
                }
                StoreError::Conflict { .. } => return Err(Self::modified(resource, name)),
                other => return Err(Error::from_store(other)),
            }
        }
        Err(Error::Internal("delete retries exhausted".into()))
    }

    fn modified(resource: &Resource, name: &str) -> Error {
        Error::Conflict {
            resource: resource.qualified(),
            name: name.into(),
            message: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
        }
    }

    fn precondition_failed(resource: &Resource, name: &str) -> Error {
        Error::Conflict {
            resource: resource.qualified(),
            name: name.into(),
            message: "the ResourceVersion in the precondition does not match the ResourceVersion in record. The object might have been modified".into(),
        }
    }

    /// Watch `resource` from `since` (exclusive; 0 = now), each event already encoded.
    pub async fn watch(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        since: Revision,
        bookmarks: bool,
        selector: Selectors,
    ) -> Result<impl futures::Stream<Item = WatchEvent> + Send + 'static + use<>> {
        let entry = self.entry(resource)?;
        let selector = Arc::new(selector);
        let filter: Option<Filter> = if selector.is_empty() {
            None
        } else {
            let selector = selector.clone();
            Some(Arc::new(move |event: &CachedEvent| {
                let (before, after) = selection(&selector, event);
                before || after
            }))
        };
        let request =
            WatchRequest { since, key_prefix: Some(Self::list_prefix(resource, namespace)), filter, bookmarks };
        let watch: CacheWatch = entry.cache.watch(request).await.map_err(Error::from_cache)?;
        use futures::StreamExt;
        Ok(watch.map(move |item| match item {
            Ok(CacheItem::Event(event)) => {
                let shown = match (event.event_type(), selector.is_empty()) {
                    (EventType::Modified, false) => match selection(&selector, &event) {
                        (false, true) => EventType::Added,
                        (true, false) => EventType::Deleted,
                        _ => EventType::Modified,
                    },
                    (other, _) => other,
                };
                if shown == event.event_type() {
                    WatchEvent::Change(event.encoded(object::encode_watch_event))
                } else {
                    WatchEvent::Change(object::encode_watch_event_as(&event, shown))
                }
            }
            Ok(CacheItem::Progress(revision)) => WatchEvent::Bookmark(revision),
            Err(e) => WatchEvent::Expired(e.to_string()),
        }))
    }
}

/// Keep the objects `selector` selects.
fn select(objects: impl Iterator<Item = Result<Object>>, selector: &Selectors) -> Result<Vec<Object>> {
    let mut selected = Vec::new();
    for object in objects {
        let object = object?;
        if selector.matches_object(&object) {
            selected.push(object);
        }
    }
    Ok(selected)
}

/// Whether `selector` selected the object before and after `event`.
fn selection(selector: &Selectors, event: &CachedEvent) -> (bool, bool) {
    let selects = |bytes: &[u8]| serde_json::from_slice::<Object>(bytes).is_ok_and(|o| selector.matches_object(&o));
    let after = selects(event.object());
    let before = match event.event_type() {
        EventType::Added => false,
        EventType::Deleted => after,
        EventType::Modified => event.prev_object().is_some_and(|prev| selects(prev)),
    };
    (before, after)
}

/// A continue token: the revision the first page was read at and where the next starts.
fn encode_continue(revision: Revision, start: &[u8]) -> String {
    let token = serde_json::json!({"v": "wasmkube.io/v1", "rv": revision, "start": String::from_utf8_lossy(start)});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str, prefix: &[u8]) -> Result<(Revision, Bytes)> {
    let invalid = || Error::BadRequest("continue key is not valid: request a new list".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| invalid())?;
    let revision = value.get("rv").and_then(Value::as_i64).ok_or_else(invalid)?;
    let start = value.get("start").and_then(Value::as_str).ok_or_else(invalid)?;
    if !start.as_bytes().starts_with(prefix) {
        return Err(invalid());
    }
    Ok((revision, Bytes::copy_from_slice(start.as_bytes())))
}

impl Error {
    fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { requested, .. } => Error::Gone(format!(
                "The provided continue parameter is too old to display a consistent list result (revision {requested} was compacted). You can start a new list without the continue parameter"
            )),
            StoreError::FutureRevision { requested, current } => {
                Error::Timeout(format!("Too large resource version: {requested}, current: {current}"))
            }
            StoreError::ValueTooLarge { size, limit } => {
                Error::TooLarge(format!("the object is {size} bytes; the limit is {limit}"))
            }
            StoreError::Unavailable(why) => Error::Unavailable(why),
            other => Error::Internal(other.to_string()),
        }
    }

    fn from_cache(e: CacheError) -> Self {
        match e {
            CacheError::TooOld { requested, oldest } => {
                Error::Gone(format!("too old resource version: {requested} ({oldest})"))
            }
            CacheError::Expired { .. } => Error::Gone(e.to_string()),
            CacheError::FutureRevision { requested, current } => {
                Error::Timeout(format!("Too large resource version: {requested}, current: {current}"))
            }
            CacheError::NotReady => Error::Unavailable("the watch cache is not ready yet".into()),
            CacheError::Store(e) => Self::from_store(e),
            other => Error::Internal(other.to_string()),
        }
    }
}

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds).
pub fn now() -> String {
    object::now()
}

/// Decode a stored value for tests and the API: the object with its resourceVersion.
pub fn decode(kv: &KeyValue) -> Result<Object> {
    object::decode(kv)
}
