//! Shared informers (client-go's SharedInformer): one list and watch per resource,
//! through the registry, feeding an in-memory cache indexed by namespace, owner uid and
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
//! It reads through the registry (list and watch), never storage, and writes nothing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use tokio::sync::watch;

use crate::registry::{self, EventType, LabelSelector, ListOptions, Registry, Resource, Revision, WatchEvent};

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
    pub resource: Resource,
    state: RwLock<State>,
    revision: watch::Sender<Revision>,
    synced: watch::Sender<bool>,
    handlers: Mutex<Vec<(u64, Handler)>>,
    next_handler: std::sync::atomic::AtomicU64,
}

impl Informer {
    fn new(resource: Resource) -> Arc<Self> {
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
        self.synced.send_replace(true);
        for change in &changes {
            self.notify(change);
        }
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

    /// Follow the resource until `stop` (or the registry is gone): the watcher's steps,
    /// each applied to the cache as it comes; a failed step backs off, then lists again.
    async fn run(self: Arc<Self>, registry: std::sync::Weak<Registry>, mut stop: watch::Receiver<bool>) {
        let mut state = Watcher::Empty;
        let mut failures = 0u32;
        while !*stop.borrow() {
            let stepped = tokio::select! {
                stepped = self.step(&registry, state) => stepped,
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
                Err(_) if registry.strong_count() == 0 => return,
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
    async fn step(
        &self,
        registry: &std::sync::Weak<Registry>,
        state: Watcher,
    ) -> Result<(Step, Watcher), crate::registry::Error> {
        let gone = || crate::registry::Error::Unavailable("the registry is gone".into());
        match state {
            Watcher::Empty => {
                let registry = registry.upgrade().ok_or_else(gone)?;
                // In pages of LIST_PAGE at one revision, as client-go's reflector lists, so
                // a big resource never sits in memory twice over.
                let mut objects = Vec::new();
                let mut options = ListOptions { limit: LIST_PAGE, ..ListOptions::default() };
                let revision = loop {
                    let page = registry.list(&self.resource, None, options.clone()).await?;
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
                let registry = registry.upgrade().ok_or_else(gone)?;
                let events = registry.watch(&self.resource, None, revision, true, Default::default()).await?;
                Ok((Step::Nothing, Watcher::Watching(Box::pin(events))))
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
    Watching(std::pin::Pin<Box<dyn futures::Stream<Item = WatchEvent> + Send>>),
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
    registry: std::sync::Weak<Registry>,
    running: Mutex<HashMap<(String, String, String), Arc<Informer>>>,
    stop: watch::Receiver<bool>,
}

impl Informers {
    pub fn new(registry: &Arc<Registry>, stop: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Self { registry: Arc::downgrade(registry), running: Mutex::default(), stop })
    }

    /// The informer of `group/version/resource`, started if it was not; None if the
    /// resource is not served.
    pub fn informer(&self, group: &str, version: &str, resource: &str) -> Option<Arc<Informer>> {
        let key = (group.to_string(), version.to_string(), resource.to_string());
        if let Some(informer) = self.running.lock().get(&key) {
            return Some(informer.clone());
        }
        let served = self.registry.upgrade()?.resource(group, version, resource)?;
        let mut running = self.running.lock();
        if let Some(informer) = running.get(&key) {
            return Some(informer.clone());
        }
        let informer = Informer::new(served);
        running.insert(key, informer.clone());
        tokio::spawn(informer.clone().run(self.registry.clone(), self.stop.clone()));
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
