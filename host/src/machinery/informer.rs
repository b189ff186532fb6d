//! Shared informers (client-go's SharedInformer): one list and watch per resource,
//! through the client, feeding an in-memory cache indexed by namespace, owner uid and
//! uid, and the event handlers of every controller that follows the resource.
//!
//! An informer lists, then watches from the list's revision; when the watch expires
//! (410) or breaks, it lists again and turns the difference into events, so a handler
//! never misses a change. Its `revision` is that of the last event (or list) it applied:
//! as the store has one global revision, "revision ≥ R" means every write to this
//! resource up to R is in the cache (what the controller host's expectations wait on).
//!
//! The watcher is a state machine ([`Watcher`], stepped by `Informer::step`, as
//! kube-runtime's): empty → listed → watching, and back to empty when a watch ends or
//! expires (410 Gone), which is one match arm.
//!
//! It reads through the [`Client`] (list and watch), never storage, and writes nothing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use tokio::sync::watch;

use crate::client::Client;
use crate::registry::{self, ApiResource, EventType, LabelSelector, ListOptions, Revision, WatchEvent};

/// Where an object is: its namespace ("" for cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

/// An ownerReference, as far as the controller host needs it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRef {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub controller: Option<bool>,
    #[serde(default)]
    pub block_owner_deletion: Option<bool>,
}

/// One cached object: its JSON as the API serves it, and what the indexes need.
#[derive(Debug)]
pub struct CachedObject {
    pub json: Arc<str>,
    pub at: ObjectRef,
    pub uid: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub owners: Vec<OwnerRef>,
    pub revision: Revision,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl CachedObject {
    /// Read the metadata of an object's JSON. Lenient: a field of an unexpected type is
    /// left out rather than the object, so an odd object still leaves the cache when it
    /// is deleted.
    pub fn parse(json: &str) -> Option<Self> {
        Self::parse_typed(json).or_else(|| Self::parse_lenient(json))
    }

    /// The common case, read without building the object: only the metadata fields the
    /// indexes need are decoded (the spec, status and managedFields are skipped over).
    /// Any field of an unexpected type gives `None`, and the lenient reading takes over.
    fn parse_typed(json: &str) -> Option<Self> {
        use std::borrow::Cow;
        #[derive(Deserialize)]
        struct Only<'a> {
            #[serde(borrow)]
            metadata: Metadata<'a>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Metadata<'a> {
            #[serde(default, borrow)]
            name: Cow<'a, str>,
            #[serde(default, borrow)]
            namespace: Cow<'a, str>,
            #[serde(default, borrow)]
            uid: Cow<'a, str>,
            #[serde(default, borrow)]
            resource_version: Cow<'a, str>,
            #[serde(default)]
            labels: std::collections::BTreeMap<String, String>,
            #[serde(default)]
            owner_references: Vec<OwnerRef>,
            #[serde(default)]
            deletion_timestamp: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            finalizers: Vec<String>,
        }
        let metadata = serde_json::from_str::<Only>(json).ok()?.metadata;
        Some(Self {
            json: json.into(),
            at: ObjectRef { namespace: metadata.namespace.into_owned(), name: metadata.name.into_owned() },
            uid: metadata.uid.into_owned(),
            labels: metadata.labels,
            owners: metadata.owner_references,
            revision: metadata.resource_version.parse().unwrap_or(0),
            deleting: metadata.deletion_timestamp.is_some(),
            finalizers: metadata.finalizers,
        })
    }

    /// Read the metadata of any object: a field of an unexpected type is left out rather
    /// than the object, so an odd object still leaves the cache when it is deleted.
    fn parse_lenient(json: &str) -> Option<Self> {
        #[derive(Deserialize)]
        struct Only {
            #[serde(default)]
            metadata: serde_json::Map<String, serde_json::Value>,
        }
        let metadata = serde_json::from_str::<Only>(json).ok()?.metadata;
        let text = |key: &str| metadata.get(key).and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
        let strings = |key: &str| -> Vec<String> {
            metadata
                .get(key)
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        };
        let labels = metadata
            .get("labels")
            .and_then(serde_json::Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect();
        let owners = metadata
            .get("ownerReferences")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| serde_json::from_value::<OwnerRef>(o.clone()).ok())
            .collect();
        Some(Self {
            json: json.into(),
            at: ObjectRef { namespace: text("namespace"), name: text("name") },
            uid: text("uid"),
            labels,
            owners,
            revision: text("resourceVersion").parse().unwrap_or(0),
            deleting: metadata.get("deletionTimestamp").is_some_and(|t| !t.is_null()),
            finalizers: strings("finalizers"),
        })
    }

    /// The owner with `controller: true`, if any.
    pub fn controller(&self) -> Option<&OwnerRef> {
        self.owners.iter().find(|o| o.controller == Some(true))
    }
}

/// A change an informer applied.
#[derive(Clone, Debug)]
pub enum Change {
    Added(Arc<CachedObject>),
    Updated { old: Arc<CachedObject>, new: Arc<CachedObject> },
    Deleted(Arc<CachedObject>),
}

impl Change {
    /// The object as it is now (or was last, for a delete).
    pub fn object(&self) -> &Arc<CachedObject> {
        match self {
            Change::Added(o) | Change::Deleted(o) | Change::Updated { new: o, .. } => o,
        }
    }
}

type Handler = Arc<dyn Fn(&Change) + Send + Sync>;

/// Objects per page of an informer's list.
const LIST_PAGE: usize = 500;

#[derive(Default)]
struct State {
    objects: HashMap<ObjectRef, Arc<CachedObject>>,
    by_namespace: HashMap<String, BTreeSet<String>>,
    by_owner: HashMap<String, HashSet<ObjectRef>>,
    by_uid: HashMap<String, ObjectRef>,
}

impl State {
    fn insert(&mut self, object: Arc<CachedObject>) -> Option<Arc<CachedObject>> {
        let old = self.remove(&object.at);
        self.by_namespace.entry(object.at.namespace.clone()).or_default().insert(object.at.name.clone());
        for owner in &object.owners {
            self.by_owner.entry(owner.uid.clone()).or_default().insert(object.at.clone());
        }
        self.by_uid.insert(object.uid.clone(), object.at.clone());
        self.objects.insert(object.at.clone(), object);
        old
    }

    fn remove(&mut self, at: &ObjectRef) -> Option<Arc<CachedObject>> {
        let old = self.objects.remove(at)?;
        if let Some(names) = self.by_namespace.get_mut(&at.namespace) {
            names.remove(&at.name);
            if names.is_empty() {
                self.by_namespace.remove(&at.namespace);
            }
        }
        for owner in &old.owners {
            if let Some(owned) = self.by_owner.get_mut(&owner.uid) {
                owned.remove(at);
                if owned.is_empty() {
                    self.by_owner.remove(&owner.uid);
                }
            }
        }
        if self.by_uid.get(&old.uid) == Some(at) {
            self.by_uid.remove(&old.uid);
        }
        Some(old)
    }
}

/// One resource's shared informer.
pub struct Informer {
    pub resource: ApiResource,
    state: RwLock<State>,
    revision: watch::Sender<Revision>,
    synced: watch::Sender<bool>,
    handlers: Mutex<Vec<(u64, Handler)>>,
    next_handler: std::sync::atomic::AtomicU64,
}

impl Informer {
    fn new(resource: ApiResource) -> Arc<Self> {
        Arc::new(Self {
            resource,
            state: RwLock::default(),
            revision: watch::Sender::new(0),
            synced: watch::Sender::new(false),
            handlers: Mutex::default(),
            next_handler: Default::default(),
        })
    }

    /// The object at `at`, if cached.
    pub fn get(&self, at: &ObjectRef) -> Option<Arc<CachedObject>> {
        self.state.read().objects.get(at).cloned()
    }

    /// The object with `uid`, if cached.
    pub fn by_uid(&self, uid: &str) -> Option<Arc<CachedObject>> {
        let state = self.state.read();
        state.by_uid.get(uid).and_then(|at| state.objects.get(at)).cloned()
    }

    /// The objects in `namespace` (every namespace: None) that `selector` selects.
    pub fn list(&self, namespace: Option<&str>, selector: &LabelSelector) -> Vec<Arc<CachedObject>> {
        let state = self.state.read();
        let selected = |o: &&Arc<CachedObject>| {
            selector.is_empty() || selector.matches_with(|k| o.labels.get(k).map(String::as_str))
        };
        match namespace {
            Some(namespace) => state
                .by_namespace
                .get(namespace)
                .into_iter()
                .flatten()
                .filter_map(|name| state.objects.get(&ObjectRef { namespace: namespace.into(), name: name.clone() }))
                .filter(selected)
                .cloned()
                .collect(),
            None => {
                let mut all: Vec<_> = state.objects.values().filter(selected).cloned().collect();
                all.sort_by(|a, b| a.at.cmp(&b.at));
                all
            }
        }
    }

    /// The objects that name `owner_uid` in their ownerReferences.
    pub fn owned_by(&self, owner_uid: &str) -> Vec<Arc<CachedObject>> {
        let state = self.state.read();
        state.by_owner.get(owner_uid).into_iter().flatten().filter_map(|at| state.objects.get(at)).cloned().collect()
    }

    /// Every cached object's place.
    pub fn keys(&self) -> Vec<ObjectRef> {
        self.state.read().objects.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.state.read().objects.len()
    }

    /// The bytes the cached objects' JSON takes (for the informer-memory figure).
    pub fn json_bytes(&self) -> usize {
        self.state.read().objects.values().map(|o| o.json.len()).sum()
    }

    /// What the cache holds on the heap, estimated from its contents: each object's JSON,
    /// metadata strings, labels and owners, and the index entries (key strings and
    /// allocator/table overhead counted at 64 bytes a node).
    pub fn estimated_bytes(&self) -> usize {
        const NODE: usize = 64;
        let state = self.state.read();
        state
            .objects
            .values()
            .map(|o| {
                let place = o.at.namespace.len() + o.at.name.len();
                let labels: usize = o.labels.iter().map(|(k, v)| k.len() + v.len() + NODE).sum();
                let owners: usize = o
                    .owners
                    .iter()
                    .map(|r| r.api_version.len() + r.kind.len() + r.name.len() + r.uid.len() + NODE)
                    .sum();
                let finalizers: usize = o.finalizers.iter().map(|f| f.len() + 24).sum();
                std::mem::size_of::<CachedObject>()
                    + o.json.len()
                    + place * 3
                    + o.uid.len() * 2
                    + labels
                    + owners
                    + finalizers
                    + NODE * (3 + o.owners.len())
            })
            .sum()
    }

    /// The revision of the last change applied.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Wait until the cache holds every write up to `revision`; false if `deadline` passed first.
    pub async fn wait_for(&self, revision: Revision, deadline: Duration) -> bool {
        let mut seen = self.revision.subscribe();
        tokio::time::timeout(deadline, seen.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    /// Wait until the first list is in the cache.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Call `handler` on every change from now on; it is first called with every cached
    /// object as `Added`. Returns the id `unsubscribe` takes.
    pub fn subscribe(&self, handler: Handler) -> u64 {
        let id = self.next_handler.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Registered before the replay: a change applied meanwhile reaches the handler
        // twice at worst (handlers enqueue keys, which is idempotent), never not at all.
        self.handlers.lock().push((id, handler.clone()));
        let objects: Vec<Arc<CachedObject>> = self.state.read().objects.values().cloned().collect();
        for object in objects {
            handler(&Change::Added(object));
        }
        id
    }

    pub fn unsubscribe(&self, id: u64) {
        self.handlers.lock().retain(|(h, _)| *h != id);
    }

    fn notify(&self, change: &Change) {
        let handlers: Vec<Handler> = self.handlers.lock().iter().map(|(_, h)| h.clone()).collect();
        for handler in handlers {
            handler(change);
        }
    }

    /// Replace the cache by a full list, as events.
    fn replace_all(&self, objects: Vec<Arc<CachedObject>>, revision: Revision) {
        let mut changes = Vec::new();
        {
            let mut state = self.state.write();
            let listed: HashSet<ObjectRef> = objects.iter().map(|o| o.at.clone()).collect();
            let gone: Vec<ObjectRef> = state.objects.keys().filter(|at| !listed.contains(*at)).cloned().collect();
            for at in gone {
                if let Some(old) = state.remove(&at) {
                    changes.push(Change::Deleted(old));
                }
            }
            for object in objects {
                match state.insert(object.clone()) {
                    Some(old) if old.revision == object.revision => {}
                    Some(old) => changes.push(Change::Updated { old, new: object }),
                    None => changes.push(Change::Added(object)),
                }
            }
        }
        self.revision.send_replace(revision);
        for change in &changes {
            self.notify(change);
        }
        // Synced once the handlers have been told (client-go's HasSynced): a handler that
        // subscribes after `wait_synced` gets the cache's replay and not those changes again.
        self.synced.send_replace(true);
    }

    /// Apply one watched change.
    fn apply(&self, change: &registry::Change) {
        let json = change.object_json();
        let Some(object) = std::str::from_utf8(&json).ok().and_then(CachedObject::parse) else { return };
        let object = Arc::new(object);
        let revision = object.revision;
        let change = {
            let mut state = self.state.write();
            if change.event_type() == EventType::Deleted {
                state.remove(&object.at).map(|_| Change::Deleted(object))
            } else {
                Some(match state.insert(object.clone()) {
                    Some(old) => Change::Updated { old, new: object },
                    None => Change::Added(object),
                })
            }
        };
        self.advance(revision);
        if let Some(change) = change {
            self.notify(&change);
        }
    }

    /// Follow the resource until `stop` (or its sender is gone: the server was dropped):
    /// the watcher's steps, each applied to the cache as it comes; a failed step backs off,
    /// then lists again.
    async fn run(self: Arc<Self>, client: Arc<dyn Client>, mut stop: watch::Receiver<bool>) {
        let mut state = Watcher::Empty;
        let mut failures = 0u32;
        while !*stop.borrow() {
            let stepped = tokio::select! {
                stepped = self.step(client.as_ref(), state) => stepped,
                _ = stop.changed() => return,
            };
            match stepped {
                Ok((step, next)) => {
                    if matches!(step, Step::Listed(..)) {
                        failures = 0;
                    }
                    self.take(step);
                    state = next;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(resource = %self.resource.qualified(), error = %e, "informer: list or watch failed; listing again");
                    let delay = Duration::from_millis(100 * u64::from(failures.min(50)));
                    tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = stop.changed() => return }
                    state = Watcher::Empty;
                }
            }
        }
    }

    /// One step of the watcher (kube-runtime's `watcher::step`): what it saw, and where it
    /// is next.
    async fn step(&self, client: &dyn Client, state: Watcher) -> Result<(Step, Watcher), crate::registry::Error> {
        match state {
            Watcher::Empty => {
                // In pages of LIST_PAGE at one revision, as client-go's reflector lists, so
                // a big resource never sits in memory twice over.
                let mut objects = Vec::new();
                let mut options = ListOptions { limit: LIST_PAGE, ..ListOptions::default() };
                let revision = loop {
                    let page = client.list(&self.resource, None, options.clone()).await?;
                    objects.extend(
                        page.items
                            .iter()
                            .filter_map(|o| serde_json::to_string(o).ok())
                            .filter_map(|json| CachedObject::parse(&json))
                            .map(Arc::new),
                    );
                    match page.continue_token {
                        Some(token) => options.continue_token = Some(token),
                        None => break page.resource_version,
                    }
                };
                Ok((Step::Listed(objects, revision), Watcher::Listed(revision)))
            }
            Watcher::Listed(revision) => {
                let events = client.watch(&self.resource, None, revision, true, Default::default()).await?;
                Ok((Step::Nothing, Watcher::Watching(events)))
            }
            Watcher::Watching(mut events) => match events.next().await {
                Some(WatchEvent::Change(change)) => Ok((Step::Changed(change), Watcher::Watching(events))),
                Some(WatchEvent::Bookmark(revision)) => Ok((Step::Progress(revision), Watcher::Watching(events))),
                // 410 Gone: the history the watch needs is gone; list again.
                Some(WatchEvent::Expired(why)) => {
                    tracing::debug!(resource = %self.resource.qualified(), why, "informer: watch expired; listing again");
                    Ok((Step::Nothing, Watcher::Empty))
                }
                None => Ok((Step::Nothing, Watcher::Empty)),
            },
        }
    }

    /// Move `revision()` forward to `revision` (never back); waiters see it only if it moved.
    fn advance(&self, revision: Revision) {
        self.revision.send_if_modified(|r| {
            let newer = revision > *r;
            if newer {
                *r = revision;
            }
            newer
        });
    }

    /// Apply what a step saw to the cache and the handlers.
    fn take(&self, step: Step) {
        match step {
            Step::Listed(objects, revision) => self.replace_all(objects, revision),
            Step::Changed(change) => self.apply(&change),
            Step::Progress(revision) => self.advance(revision),
            Step::Nothing => {}
        }
    }
}

/// Where an informer's watcher is: a state machine stepped by [`Informer::step`].
#[doc(alias = "reflector")]
enum Watcher {
    /// Nothing listed yet, or the last watch ended or expired: list everything.
    Empty,
    /// Listed at this revision: open a watch from it.
    Listed(Revision),
    /// Following a watch.
    Watching(futures::stream::BoxStream<'static, WatchEvent>),
}

/// What one step of the watcher saw.
enum Step {
    /// Every object, at the revision listed: the cache becomes this (the difference are events).
    Listed(Vec<Arc<CachedObject>>, Revision),
    /// One change.
    Changed(registry::Change),
    /// Every change up to this revision has been seen (a bookmark).
    Progress(Revision),
    /// Nothing to apply (a watch opened, or ended).
    Nothing,
}

/// Every informer of one server, started on first use and shared by all its controllers.
pub struct Informers {
    client: Arc<dyn Client>,
    running: Mutex<HashMap<(String, String, String), Arc<Informer>>>,
    stop: watch::Receiver<bool>,
}

impl Informers {
    pub fn new(client: Arc<dyn Client>, stop: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Self { client, running: Mutex::default(), stop })
    }

    /// The informer of `group/version/resource`, started if it was not; None if the
    /// resource is not served.
    pub fn informer(&self, group: &str, version: &str, resource: &str) -> Option<Arc<Informer>> {
        let key = (group.to_string(), version.to_string(), resource.to_string());
        if let Some(informer) = self.running.lock().get(&key) {
            return Some(informer.clone());
        }
        let served = self.client.resource(group, version, resource)?;
        let mut running = self.running.lock();
        if let Some(informer) = running.get(&key) {
            return Some(informer.clone());
        }
        let informer = Informer::new(served);
        running.insert(key, informer.clone());
        tokio::spawn(informer.clone().run(self.client.clone(), self.stop.clone()));
        Some(informer)
    }

    /// The informer of a resource, only if one runs already.
    pub fn running(&self, group: &str, version: &str, resource: &str) -> Option<Arc<Informer>> {
        self.running.lock().get(&(group.to_string(), version.to_string(), resource.to_string())).cloned()
    }

    /// Every running informer.
    pub fn all(&self) -> Vec<Arc<Informer>> {
        self.running.lock().values().cloned().collect()
    }
}

/// What controller plugins read through `client`: answered from the informer of the
/// resource when one runs and has listed, else from the registry's watch cache.
pub struct InformerClient {
    informers: Arc<Informers>,
    fallback: Arc<dyn crate::plugins::Client>,
}

impl InformerClient {
    pub fn new(informers: Arc<Informers>, fallback: Arc<dyn crate::plugins::Client>) -> Arc<Self> {
        Arc::new(Self { informers, fallback })
    }

    fn synced(&self, group: &str, version: &str, resource: &str) -> Option<Arc<Informer>> {
        self.informers.running(group, version, resource).filter(|i| *i.synced.borrow())
    }
}

#[async_trait::async_trait]
impl crate::plugins::Client for InformerClient {
    async fn get(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<String>, crate::plugins::ClientError> {
        match self.synced(group, version, resource) {
            Some(informer) => {
                let namespace = namespace.filter(|_| informer.resource.namespaced).unwrap_or_default();
                let at = ObjectRef { namespace: namespace.to_string(), name: name.to_string() };
                Ok(informer.get(&at).map(|o| o.json.to_string()))
            }
            None => self.fallback.get(group, version, resource, namespace, name).await,
        }
    }

    async fn list(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        label_selector: &str,
    ) -> Result<Vec<String>, crate::plugins::ClientError> {
        match self.synced(group, version, resource) {
            Some(informer) => {
                let selector = LabelSelector::parse(label_selector).map_err(crate::plugins::ClientError::Invalid)?;
                let namespace = namespace.filter(|_| informer.resource.namespaced);
                Ok(informer.list(namespace, &selector).iter().map(|o| o.json.to_string()).collect())
            }
            None => self.fallback.list(group, version, resource, namespace, label_selector).await,
        }
    }

    async fn owned_by(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<String>, crate::plugins::ClientError> {
        // The index lives in the informer: start it if need be and wait for its list.
        let informer = self.informers.informer(group, version, resource).ok_or_else(|| {
            crate::plugins::ClientError::Invalid(format!("{resource} in {group}/{version} is not served"))
        })?;
        if tokio::time::timeout(Duration::from_secs(10), informer.wait_synced()).await.is_err() {
            return Err(crate::plugins::ClientError::Unavailable(format!(
                "the {resource} informer has not listed yet"
            )));
        }
        let namespace = namespace.filter(|_| informer.resource.namespaced);
        let mut owned = informer.owned_by(owner_uid);
        owned.retain(|o| namespace.is_none_or(|ns| o.at.namespace == ns));
        owned.sort_by(|a, b| a.at.cmp(&b.at));
        Ok(owned.iter().map(|o| o.json.to_string()).collect())
    }

    fn namespaced_resources(&self) -> Vec<(String, String, String)> {
        self.fallback.namespaced_resources()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures::stream::BoxStream;
    use futures::StreamExt;
    use parking_lot::Mutex;
    use serde_json::{json, Map, Value};
    use tokio::sync::watch;

    use super::{Change, Informers};
    use crate::client::{Client, RegistryClient, Result};
    use crate::registry::testing::TestRegistry;
    use crate::registry::{
        ApiResource, DeleteOptions, ListOptions, Object, ObjectList, Patch, Revision, Selectors, Subresource,
        WatchEvent, WriteOptions, Written,
    };

    #[test]
    fn metadata_reads_the_same_typed_or_lenient_and_odd_objects_are_kept() {
        let json = r#"{"kind":"Pod","metadata":{"name":"p","namespace":"n","uid":"u1","resourceVersion":"12",
            "labels":{"app":"web"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"rs",
            "uid":"u0","controller":true}],"deletionTimestamp":"2026-01-01T00:00:00Z","finalizers":["f"],
            "managedFields":[{"manager":"m","fieldsV1":{"f:spec":{}}}]},"spec":{"containers":[]}}"#;
        let fields = |o: &super::CachedObject| {
            (
                o.at.clone(),
                o.uid.clone(),
                o.labels.clone(),
                o.owners.clone(),
                o.revision,
                o.deleting,
                o.finalizers.clone(),
            )
        };
        let typed = super::CachedObject::parse_typed(json).expect("typed");
        let lenient = super::CachedObject::parse_lenient(json).expect("lenient");
        assert_eq!(fields(&typed), fields(&lenient));
        assert_eq!(
            (typed.revision, typed.deleting, typed.controller().map(|o| o.uid.as_str())),
            (12, true, Some("u0"))
        );

        // A label of the wrong type: the object is still cached, without that label.
        let odd = r#"{"metadata":{"name":"p","labels":{"a":"b","n":5},"deletionTimestamp":null}}"#;
        assert!(super::CachedObject::parse_typed(odd).is_none());
        let read = super::CachedObject::parse(odd).expect("lenient");
        assert_eq!((read.at.name.as_str(), read.labels.len(), read.deleting), ("p", 1, false));
    }

    /// The real in-process client, but the test decides when the first watch expires (as a
    /// 410 from a watch cache would end it) and when the list after it may read.
    struct ExpiringClient {
        inner: Arc<RegistryClient>,
        expire: watch::Receiver<bool>,
        relist: watch::Receiver<bool>,
        watches: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Client for ExpiringClient {
        fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ApiResource> {
            self.inner.resource(group, version, plural)
        }
        fn resources(&self) -> Vec<ApiResource> {
            Client::resources(self.inner.as_ref())
        }
        fn served_generation(&self) -> u64 {
            self.inner.served_generation()
        }
        async fn get(&self, resource: &ApiResource, namespace: Option<&str>, name: &str) -> Result<Object> {
            Client::get(self.inner.as_ref(), resource, namespace, name).await
        }
        async fn list(&self, r: &ApiResource, namespace: Option<&str>, options: ListOptions) -> Result<ObjectList> {
            if *self.expire.borrow() {
                let _ = self.relist.clone().wait_for(|go| *go).await;
            }
            Client::list(self.inner.as_ref(), r, namespace, options).await
        }
        async fn watch(
            &self,
            resource: &ApiResource,
            namespace: Option<&str>,
            since: Revision,
            bookmarks: bool,
            selectors: Selectors,
        ) -> Result<BoxStream<'static, WatchEvent>> {
            let events = self.inner.watch(resource, namespace, since, bookmarks, selectors).await?;
            if self.watches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                return Ok(events);
            }
            let mut expire = self.expire.clone();
            let expired = async move {
                let _ = expire.wait_for(|e| *e).await;
            };
            let end = futures::stream::once(async { WatchEvent::Expired("too old resource version (test)".into()) });
            Ok(events.take_until(expired).chain(end).boxed())
        }
        async fn create(&self, r: &ApiResource, ns: Option<&str>, body: Value, o: &WriteOptions) -> Result<Written> {
            self.inner.create(r, ns, body, o).await
        }
        async fn update(
            &self,
            r: &ApiResource,
            ns: Option<&str>,
            name: &str,
            body: Value,
            part: Option<Subresource>,
            o: &WriteOptions,
        ) -> Result<Written> {
            self.inner.update(r, ns, name, body, part, o).await
        }
        async fn patch(
            &self,
            r: &ApiResource,
            ns: Option<&str>,
            name: &str,
            patch: Patch,
            part: Option<Subresource>,
            o: &WriteOptions,
        ) -> Result<Written> {
            self.inner.patch(r, ns, name, patch, part, o).await
        }
        async fn delete(&self, r: &ApiResource, ns: Option<&str>, name: &str, o: &DeleteOptions) -> Result<Object> {
            self.inner.delete(r, ns, name, o).await
        }
        async fn bind(
            &self,
            pods: &ApiResource,
            ns: Option<&str>,
            name: &str,
            node: &str,
            annotations: Map<String, Value>,
            o: &WriteOptions,
        ) -> Result<Written> {
            self.inner.bind(pods, ns, name, node, annotations, o).await
        }
    }

    /// What the handler recorded, once it holds `count` changes (within 10 s).
    async fn drain_when(seen: &Mutex<Vec<String>>, count: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.lock().len() < count {
            assert!(tokio::time::Instant::now() < deadline, "only {:?} seen", seen.lock());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen.lock().drain(..).collect()
    }

    /// A watch that expires (410 Gone) is followed by a list on the real store; what changed
    /// meanwhile reaches the handlers as the difference (added, updated, deleted), the
    /// revision catches up, and the watch that follows delivers the next change.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_watch_lists_again_and_hands_on_the_difference() {
        let test = TestRegistry::start().await;
        let registry = &test.registry;
        let (expire, expire_seen) = watch::channel(false);
        let (relist, relist_seen) = watch::channel(false);
        let client = Arc::new(ExpiringClient {
            inner: RegistryClient::new(&registry),
            expire: expire_seen,
            relist: relist_seen,
            watches: Default::default(),
        });
        let cms = client.resource("", "v1", "configmaps").expect("served");
        let options = WriteOptions::default();
        let write = |name: &str, value: &str| {
            let body = json!({"metadata": {"name": name}, "data": {"k": value}});
            client.inner.create(&cms, Some("default"), body, &options)
        };
        write("kept", "1").await.expect("create");
        write("changed", "1").await.expect("create");
        write("deleted", "1").await.expect("create");

        let (_stop, stopped) = watch::channel(false);
        let informers = Informers::new(client.clone(), stopped);
        let informer = informers.informer("", "v1", "configmaps").expect("an informer");
        tokio::time::timeout(Duration::from_secs(10), informer.wait_synced()).await.expect("synced");
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let recorded = seen.clone();
        informer.subscribe(Arc::new(move |change: &Change| {
            let what = match change {
                Change::Added(o) => format!("added {}", o.at.name),
                Change::Updated { new, .. } => format!("updated {}", new.at.name),
                Change::Deleted(o) => format!("deleted {}", o.at.name),
            };
            recorded.lock().push(what);
        }));
        let mut names: Vec<String> = seen.lock().drain(..).collect();
        names.sort();
        assert_eq!(names, ["added changed", "added deleted", "added kept"], "the replay on subscribe");

        // The watch expires; while the informer waits to list again, the store moves on.
        expire.send_replace(true);
        let changed = json!({"metadata": {"name": "changed"}, "data": {"k": "2"}});
        client.inner.update(&cms, Some("default"), "changed", changed, None, &options).await.expect("update");
        client.inner.delete(&cms, Some("default"), "deleted", &DeleteOptions::default()).await.expect("delete");
        let last = write("created", "1").await.expect("create").object;
        let revision: Revision = last["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).expect("rv");
        relist.send_replace(true);
        assert!(informer.wait_for(revision, Duration::from_secs(10)).await, "the list after the 410 catches up");
        // The handlers are called just after the revision moves.
        let mut names = drain_when(&seen, 3).await;
        names.sort();
        assert_eq!(names, ["added created", "deleted deleted", "updated changed"], "the difference, as events");
        assert!(informer.get(&super::ObjectRef { namespace: "default".into(), name: "deleted".into() }).is_none());

        // And the watch opened after the list goes on delivering.
        let next = write("after", "1").await.expect("create").object;
        let revision: Revision = next["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).expect("rv");
        assert!(informer.wait_for(revision, Duration::from_secs(10)).await, "the new watch delivers");
        assert_eq!(drain_when(&seen, 1).await, ["added after"]);
        assert!(client.watches.load(std::sync::atomic::Ordering::SeqCst) >= 2, "a second watch was opened");
    }
}
