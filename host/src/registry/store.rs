//! [`Registry`]: the generic store every resource is served by (kube-apiserver's generic
//! registry `Store`), and its reads — get, list (from the watch cache or the store, paged
//! with continue tokens). Watches are in `watch.rs`, the writes are in `write.rs` and `delete.rs`, the served
//! set in `served.rs`, the admission glue in `admit.rs`.
//!
//! The only part of the host that talks to `storage`.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use super::admit::Admission;
use super::object;
use super::served::ServedSet;
use super::{continuation, subresource, Cause, Error, ListOptions, Object, ObjectList, Resource, Result, Revision};
use super::{Selectors, Subresource};
use crate::storage::cache::ListRequest;
use crate::storage::{KeyValue, RangeRequest, StorageMetrics, Store};

/// How long a cached read waits for a watch cache that is still listing before reading the store.
const CACHED_READ_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Every served resource over one store; see the module doc.
pub struct Registry {
    pub(super) store: Arc<dyn Store>,
    pub(super) served: ServedSet,
    /// The admission plugins every write passes (none until set).
    pub(super) admission: Admission,
}

impl Registry {
    /// A registry serving every built-in resource, each with its own watch cache.
    pub fn new(store: Arc<dyn Store>, metrics: StorageMetrics) -> Self {
        Self { served: ServedSet::new(store.clone(), metrics), store, admission: Admission::default() }
    }

    /// Serve what `crd` defines (every served version), or change what it serves to match
    /// it. Returns the names the CRD was accepted with, or the CRD's problems.
    pub fn serve_custom(&self, crd: &Object) -> Result<Value, Vec<Cause>> {
        self.served.serve_custom(crd)
    }

    /// Stop serving what the CRD called `name` served (its objects stay in storage).
    pub fn unserve_custom(&self, name: &str) {
        self.served.unserve_custom(name)
    }

    /// The names of the CRDs whose resources are served.
    pub fn custom_names(&self) -> Vec<String> {
        self.served.custom_names()
    }

    /// Send every write through `chain` from now on (set once).
    pub fn set_admission(&self, chain: Arc<crate::admission::Chain>) {
        self.admission.set(chain);
    }

    /// Changes whenever the set of served resources does.
    pub fn generation(&self) -> u64 {
        self.served.generation()
    }

    /// Every served resource, in a stable order (a snapshot: CRDs may change it).
    pub fn resources(&self) -> Vec<Resource> {
        self.served.all()
    }

    /// The resource `plural` in `group` at `version`, if served: the handle a request
    /// resolves once and passes to the verbs.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.served.find(group, version, plural)
    }

    /// `resource` as served now: itself, unless a CRD change retired it since it was
    /// resolved (then looked up again; NotFound if no longer served).
    pub(super) fn current<'a>(&self, resource: &'a Resource) -> Result<Cow<'a, Resource>> {
        if !resource.is_retired() {
            return Ok(Cow::Borrowed(resource));
        }
        self.served
            .find(resource.group, resource.version, resource.plural)
            .map(Cow::Owned)
            .ok_or_else(|| Error::not_found(resource, ""))
    }

    /// Compact storage at its current revision and forget the watch caches' history up to
    /// it: a watch or paged list from an older revision gets 410 Gone and must list again.
    /// Returns the revision compacted at.
    pub async fn compact(&self) -> Result<Revision> {
        let revision = self.store.current_revision().await.map_err(Error::from_store)?;
        self.store.compact(revision).await.map_err(Error::from_store)?;
        for resource in self.served.all() {
            resource.cache().forget_history_through(revision);
        }
        Ok(revision)
    }

    /// A namespaced resource needs a namespace; a cluster-scoped one has none.
    pub(super) fn check_namespace(resource: &Resource, namespace: Option<&str>) -> Result<()> {
        match (resource.namespaced, namespace) {
            (true, None) => {
                Err(Error::BadRequest(format!("{} is namespaced: the request needs a namespace", resource.qualified())))
            }
            (false, Some(_)) => Err(Error::not_found(resource, "")),
            _ => Ok(()),
        }
    }

    /// New content may go into `namespace`: it exists and is not terminating.
    pub(super) async fn namespace_exists(&self, namespace: &str) -> Result<()> {
        let namespaces =
            self.resource("", "v1", "namespaces").ok_or_else(|| Error::Internal("namespaces are not served".into()))?;
        // Only the one field is read: decoding the whole namespace costs on every create.
        #[derive(serde::Deserialize)]
        struct Namespace {
            #[serde(default)]
            metadata: Metadata,
        }
        #[derive(serde::Deserialize, Default)]
        struct Metadata {
            #[serde(default, rename = "deletionTimestamp")]
            deletion_timestamp: Option<serde::de::IgnoredAny>,
        }
        let stored = self.cached_kv(&namespaces, None, namespace).await?;
        let terminating = serde_json::from_slice::<Namespace>(&stored.value)
            .map_err(|e| Error::Internal(format!("the stored namespace {namespace} cannot be read: {e}")))?
            .metadata
            .deletion_timestamp
            .is_some();
        if terminating {
            return Err(Error::Forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// The stored value of an object, if there is one.
    pub(super) async fn stored(&self, key: &bytes::Bytes) -> Result<Option<KeyValue>> {
        Ok(self.store.get(key.clone()).await.map_err(Error::from_store)?.0)
    }

    pub async fn get(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<Object> {
        let resource = self.current(resource)?;
        Self::check_namespace(&resource, namespace)?;
        match self.stored(&resource.key(namespace, name)).await? {
            Some(kv) => object::decode(&kv),
            None => Err(Error::not_found(&resource, name)),
        }
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
        let resource = self.current(resource)?;
        Self::check_namespace(&resource, namespace)?;
        let key = resource.key(namespace, name);
        if let Ok(Some(kv)) = resource.cache().get(&key, 0, CACHED_READ_WAIT).await {
            return Ok(kv);
        }
        self.stored(&key).await?.ok_or_else(|| Error::not_found(&resource, name))
    }

    /// Read an object through `part` (None = the object itself).
    pub async fn get_part(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        part: Option<Subresource>,
    ) -> Result<Object> {
        let resource = self.current(resource)?;
        let scale = resource.strategy().scale_paths();
        self.get(&resource, namespace, name).await.map(|object| subresource::view(part, object, scale))
    }

    /// List objects of `resource` (in `namespace`, or everywhere).
    pub async fn list(&self, resource: &Resource, namespace: Option<&str>, options: ListOptions) -> Result<ObjectList> {
        let resource = self.current(resource)?;
        if namespace.is_some() && !resource.namespaced {
            return Err(Error::not_found(&resource, ""));
        }
        let prefix = resource.list_prefix(namespace);
        if options.resource_version == Some(0)
            && options.limit == 0
            && options.continue_token.is_none()
            && !options.exact
        {
            // "Any": served from the watch cache without a round trip to storage.
            let list = resource
                .cache()
                .list(ListRequest { key_prefix: Some(prefix), min_revision: None })
                .await
                .map_err(Error::from_cache)?;
            let items = select(list.items.iter().map(object::decode), &options.selectors)?;
            return Ok(ObjectList { items, resource_version: list.revision, continue_token: None });
        }
        let mut request = RangeRequest { prefix: prefix.clone(), limit: options.limit, ..Default::default() };
        if let Some(token) = &options.continue_token {
            let (revision, start) = continuation::decode(token, &prefix)?;
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
        let continue_token = page
            .next_page(&request)
            .and_then(|next| next.start)
            .map(|start| continuation::encode(page.revision, &start));
        let items = select(page.kvs.iter().map(object::decode), &options.selectors)?;
        Ok(ObjectList { items, resource_version: page.revision, continue_token })
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
