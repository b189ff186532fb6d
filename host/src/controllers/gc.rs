//! The garbage collector (kube-controller-manager's `garbagecollector`), in the host: it
//! follows every served resource through the shared informers and acts on
//! ownerReferences as Kubernetes does:
//!
//! - **Background**: an object whose owners are all gone is deleted (an owner is gone
//!   when a live read finds no object of that name and uid, never on the cache's word
//!   alone); references to owners that are gone, beside ones that live, are removed.
//! - **Foreground**: an owner being deleted with the `foregroundDeletion` finalizer gets
//!   its dependents deleted (those with dependents of their own in the foreground too);
//!   once none with `blockOwnerDeletion` is left, the finalizer goes, and so the owner.
//! - **Orphan**: an owner being deleted with the `orphan` finalizer has its reference
//!   removed from every dependent, then the finalizer goes.
//!
//! It is in the host rather than a plugin because it must follow every resource,
//! including custom ones as CRDs come, and because deletion itself depends on it: a
//! replaced or failing GC plugin would leave owners stuck in `foregroundDeletion`.
//! It writes through the [`Client`]'s verbs only, with uid preconditions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::metrics::ControllerMetrics;
use crate::client::Client;
use crate::machinery::informer::{CachedObject, Change, Informer, Informers, ObjectRef};
use crate::machinery::queue::WorkQueue;
use crate::registry::{ApiResource, DeleteOptions, Error, Patch, Propagation, WriteOptions};

/// What the garbage collector needs of the controller host, and no more.
pub struct Context {
    pub client: Arc<dyn Client>,
    pub informers: Arc<Informers>,
    pub metrics: ControllerMetrics,
    /// Its own check (`gc`) while it runs.
    pub health: crate::api::Health,
    /// Who acts (this server's election identity), in every action's log line.
    pub identity: String,
}

/// The name `--controllers` knows it by, and its metrics' `controller` label.
pub const NAME: &str = "gc";
const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
/// Reconciles at once.
const WORKERS: usize = 4;

/// What the GC looks at: an object of one resource (by its qualified name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Item {
    resource: String,
    at: ObjectRef,
}

/// The garbage collector while it runs.
pub struct GarbageCollector {
    host: Arc<Context>,
    queue: Arc<WorkQueue<Item>>,
    followed: Arc<Followed>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The resources the GC follows: their informers (by qualified name) and its
/// subscriptions on them. Grows as resources are served (CRDs).
#[derive(Default)]
struct Followed {
    informers: parking_lot::RwLock<HashMap<String, Arc<Informer>>>,
    subscriptions: parking_lot::Mutex<Vec<(Arc<Informer>, u64)>>,
}

impl Followed {
    fn all(&self) -> Vec<Arc<Informer>> {
        self.informers.read().values().cloned().collect()
    }

    /// Follow every served resource not followed yet; returns the new informers.
    fn follow_new(self: &Arc<Self>, host: &Context, queue: &Arc<WorkQueue<Item>>) -> Vec<Arc<Informer>> {
        let mut added = Vec::new();
        for resource in host.client.resources() {
            let name = resource.qualified();
            if self.informers.read().contains_key(&name) {
                continue;
            }
            let Some(informer) = host.informers.informer(resource.group, resource.version, resource.plural) else {
                continue;
            };
            self.informers.write().insert(name.clone(), informer.clone());
            let (queue, followed) = (queue.clone(), Arc::downgrade(self));
            let id = informer.subscribe(Arc::new(move |change: &Change| {
                let Some(followed) = followed.upgrade() else { return };
                enqueue(&queue, &followed.all(), &name, change);
            }));
            self.subscriptions.lock().push((informer.clone(), id));
            added.push(informer);
        }
        added
    }
}

/// What a change makes the GC look at.
fn enqueue(queue: &WorkQueue<Item>, all: &[Arc<Informer>], resource: &str, change: &Change) {
    let object = change.object();
    if let Change::Deleted(gone) = change {
        // Its dependents may have lost their last owner.
        for informer in all {
            for dependent in informer.owned_by(&gone.uid) {
                queue.add(Item { resource: informer.resource.qualified(), at: dependent.at.clone() });
            }
        }
    } else if !object.owners.is_empty() || (object.deleting && has_gc_finalizer(object)) {
        queue.add(Item { resource: resource.to_string(), at: object.at.clone() });
    }
    // A dependent that changed or went may unblock an owner deleted in the foreground
    // (or one orphaning its dependents): its owners now, and those it dropped.
    let dropped = match change {
        Change::Updated { old, .. } => old.owners.iter().filter(|o| !object.owners.contains(o)).collect(),
        _ => Vec::new(),
    };
    for owner in object.owners.iter().chain(dropped) {
        for informer in all {
            if let Some(o) = informer.by_uid(&owner.uid).filter(|o| o.deleting) {
                queue.add(Item { resource: informer.resource.qualified(), at: o.at.clone() });
            }
        }
    }
}

/// How often the GC looks for resources served since it started (CRDs).
const RESOURCES_EVERY: Duration = Duration::from_secs(1);

impl GarbageCollector {
    /// Follow every served resource (and those served later) and start the workers.
    pub fn start(host: Arc<Context>) -> Self {
        let queue: Arc<WorkQueue<Item>> = WorkQueue::new();
        let followed: Arc<Followed> = Arc::default();
        // The generation before the resources: a resource served in between (a CRD created
        // as the GC starts) then shows as a change to follow, not as one already seen.
        let generation = host.client.served_generation();
        followed.follow_new(&host, &queue);
        let gc = Arc::new(Worker { host: host.clone(), followed: followed.clone(), queue: queue.clone() });
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = (0..WORKERS)
            .map(|_| {
                let gc = gc.clone();
                tokio::spawn(async move {
                    // Nothing is decided on a cache that has not listed: an empty one would
                    // make owners look dependent-free and dependents look ownerless.
                    for informer in gc.followed.all() {
                        informer.wait_synced().await;
                    }
                    while let Some(item) = gc.queue.next().await {
                        let done = gc.process(&item).await;
                        match done {
                            Ok(()) => gc.queue.forget(&item),
                            Err(why) => {
                                tracing::debug!(resource = %item.resource, object = %item.at.name, error = %why, "garbage collector: retrying");
                                gc.host.metrics.errors.with_label_values(&[NAME]).inc();
                                gc.queue.add_rate_limited(item.clone());
                            }
                        }
                        gc.queue.done(&item);
                        gc.host.metrics.depth.with_label_values(&[NAME]).set(gc.queue.depth() as i64);
                    }
                })
            })
            .collect();
        // Resources served later (a CRD's) are followed as they come.
        let watching = gc.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = generation;
            loop {
                tokio::time::sleep(RESOURCES_EVERY).await;
                let now = watching.host.client.served_generation();
                if now != seen {
                    seen = now;
                    let added = watching.followed.follow_new(&watching.host, &watching.queue);
                    if !added.is_empty() {
                        let names: Vec<String> = added.iter().map(|i| i.resource.qualified()).collect();
                        tracing::info!(controller = NAME, resources = ?names, "garbage collector follows newly served resources");
                    }
                }
            }
        }));
        host.health.set(NAME, Ok(()));
        let count = followed.informers.read().len();
        tracing::info!(controller = NAME, resources = count, identity = %host.identity, "controller started");
        Self { host, queue, followed, tasks }
    }

    pub async fn stop(self) {
        self.queue.shut_down();
        let subscriptions: Vec<(Arc<Informer>, u64)> = self.followed.subscriptions.lock().drain(..).collect();
        for (informer, id) in subscriptions {
            informer.unsubscribe(id);
        }
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.host.health.remove(NAME);
        tracing::info!(controller = NAME, "controller stopped");
    }
}

fn has_gc_finalizer(object: &CachedObject) -> bool {
    object.finalizers.iter().any(|f| f == FOREGROUND || f == ORPHAN)
}

struct Worker {
    host: Arc<Context>,
    followed: Arc<Followed>,
    queue: Arc<WorkQueue<Item>>,
}

impl Worker {
    async fn process(&self, item: &Item) -> Result<(), String> {
        let Some(informer) = self.followed.informers.read().get(&item.resource).cloned() else { return Ok(()) };
        let informer = &informer;
        let Some(object) = informer.get(&item.at) else { return Ok(()) };
        let started = Instant::now();
        let outcome = if object.deleting && object.finalizers.iter().any(|f| f == ORPHAN) {
            self.orphan_dependents(informer, &object).await
        } else if object.deleting && object.finalizers.iter().any(|f| f == FOREGROUND) {
            self.delete_dependents(informer, &object).await
        } else if !object.owners.is_empty() && !object.deleting {
            self.collect_if_orphaned(informer, &object).await
        } else {
            Ok(())
        };
        self.host.metrics.latency.with_label_values(&[NAME]).observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// Every cached object that names `uid` as an owner: (its resource's informer, it).
    fn dependents(&self, uid: &str) -> Vec<(Arc<Informer>, Arc<CachedObject>)> {
        self.followed
            .all()
            .into_iter()
            .flat_map(|informer| {
                informer.owned_by(uid).into_iter().map(move |d| (informer.clone(), d)).collect::<Vec<_>>()
            })
            .collect()
    }

    /// The served resource of an owner reference (apiVersion, kind).
    fn owner_resource(&self, api_version: &str, kind: &str) -> Option<ApiResource> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resources = self.host.client.resources();
        let same_kind = |r: &&ApiResource| r.group == group && r.kind == kind;
        resources
            .iter()
            .find(|r| same_kind(r) && r.version == version)
            .or_else(|| resources.iter().find(same_kind))
            .cloned()
    }

    /// Whether the owner `reference` names still exists (a live read: name and uid).
    async fn owner_exists(
        &self,
        dependent: &CachedObject,
        reference: &crate::machinery::informer::OwnerRef,
    ) -> Result<bool, String> {
        let Some(resource) = self.owner_resource(&reference.api_version, &reference.kind) else {
            // A kind nobody serves (yet: its CRD may be on the way, or the reference is
            // mistyped) is not proof the owner is gone: retried with backoff.
            return Err(format!("the owner kind {} {} is not served", reference.api_version, reference.kind));
        };
        let namespace = resource.namespaced.then_some(dependent.at.namespace.as_str()).filter(|n| !n.is_empty());
        match self.host.client.get(&resource, namespace, &reference.name).await {
            Ok(owner) => Ok(owner.get("metadata").and_then(|m| m.get("uid")).and_then(Value::as_str)
                == Some(reference.uid.as_str())),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Background: delete a dependent whose owners are all gone; drop references to gone
    /// owners when others live.
    async fn collect_if_orphaned(&self, informer: &Informer, object: &CachedObject) -> Result<(), String> {
        let mut gone = Vec::new();
        let mut live = 0;
        for owner in &object.owners {
            if self.owner_exists(object, owner).await? {
                live += 1;
            } else {
                gone.push(owner.uid.clone());
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        let resource = &informer.resource;
        let namespace = resource.namespaced.then_some(object.at.namespace.as_str());
        if live == 0 {
            let options = DeleteOptions {
                uid: Some(object.uid.clone()),
                propagation: Some(Propagation::Background),
                ..DeleteOptions::default()
            };
            let outcome = self.host.client.delete(resource, namespace, &object.at.name, &options).await;
            self.log("delete", resource, object, "its owners are gone", outcome.as_ref().map(|_| ()));
            return match outcome {
                Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.to_string()),
            };
        }
        self.drop_references(informer, object, |uid| gone.iter().any(|g| g == uid), "some of its owners are gone").await
    }

    /// Remove the ownerReferences that `drop` picks from `object`.
    async fn drop_references(
        &self,
        informer: &Informer,
        object: &CachedObject,
        drop: impl Fn(&str) -> bool,
        why: &str,
    ) -> Result<(), String> {
        let json: Value = serde_json::from_str(&object.json).map_err(|e| e.to_string())?;
        let kept: Vec<Value> = json
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|o| !drop(o.get("uid").and_then(Value::as_str).unwrap_or_default()))
            .cloned()
            .collect();
        let patch = json!({"metadata": {"ownerReferences": kept, "uid": object.uid}});
        self.merge_patch(informer, object, patch, why).await
    }

    /// Foreground: delete the dependents; once none that blocks is left, remove the finalizer.
    async fn delete_dependents(&self, informer: &Informer, owner: &CachedObject) -> Result<(), String> {
        let mut blocking = 0;
        for (dependent_informer, dependent) in self.dependents(&owner.uid) {
            let blocks = dependent.owners.iter().any(|o| o.uid == owner.uid && o.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if dependent.deleting {
                continue;
            }
            // A dependent with another owner that lives only loses its reference to this one.
            let mut other_owner_lives = false;
            for other in dependent.owners.iter().filter(|o| o.uid != owner.uid) {
                if self.owner_exists(&dependent, other).await? {
                    other_owner_lives = true;
                    break;
                }
            }
            if other_owner_lives {
                let uid = owner.uid.clone();
                self.drop_references(&dependent_informer, &dependent, move |u| u == uid, "another owner of it lives")
                    .await?;
                continue;
            }
            let resource = &dependent_informer.resource;
            let namespace = resource.namespaced.then_some(dependent.at.namespace.as_str());
            let propagation = if self.dependents(&dependent.uid).is_empty() {
                Propagation::Background
            } else {
                Propagation::Foreground
            };
            let options = DeleteOptions {
                uid: Some(dependent.uid.clone()),
                propagation: Some(propagation),
                ..DeleteOptions::default()
            };
            let outcome = self.host.client.delete(resource, namespace, &dependent.at.name, &options).await;
            self.log(
                "delete",
                resource,
                &dependent,
                "its owner is deleted in the foreground",
                outcome.as_ref().map(|_| ()),
            );
            if let Err(e) = outcome {
                if !matches!(e, Error::NotFound { .. }) {
                    return Err(e.to_string());
                }
            }
        }
        if blocking > 0 {
            // Their deletions (or unlinking) enqueue the owner again.
            return Ok(());
        }
        self.remove_finalizer(informer, owner, FOREGROUND).await
    }

    /// Orphan: drop this owner from every dependent, then remove the finalizer.
    async fn orphan_dependents(&self, informer: &Informer, owner: &CachedObject) -> Result<(), String> {
        for (dependent_informer, dependent) in self.dependents(&owner.uid) {
            let uid = owner.uid.clone();
            self.drop_references(
                &dependent_informer,
                &dependent,
                move |u| u == uid,
                "its owner is deleted, orphaning it",
            )
            .await?;
        }
        if !self.dependents(&owner.uid).is_empty() {
            // The cache shows the patches soon; their events bring the owner back.
            self.queue.add_after(
                Item { resource: informer.resource.qualified(), at: owner.at.clone() },
                Duration::from_millis(50),
            );
            return Ok(());
        }
        self.remove_finalizer(informer, owner, ORPHAN).await
    }

    async fn remove_finalizer(
        &self,
        informer: &Informer,
        object: &CachedObject,
        finalizer: &str,
    ) -> Result<(), String> {
        let kept: Vec<&String> = object.finalizers.iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": object.revision.to_string()}});
        self.merge_patch(informer, object, patch, &format!("remove the {finalizer} finalizer")).await
    }

    /// Merge-patch `object` as the garbage collector, and log it; gone is done.
    async fn merge_patch(
        &self,
        informer: &Informer,
        object: &CachedObject,
        patch: Value,
        why: &str,
    ) -> Result<(), String> {
        let resource = &informer.resource;
        let namespace = resource.namespaced.then_some(object.at.namespace.as_str());
        let options =
            WriteOptions { field_manager: Some("wasmkube-garbage-collector".into()), ..WriteOptions::default() };
        let outcome =
            self.host.client.patch(resource, namespace, &object.at.name, Patch::Merge(patch), None, &options).await;
        self.log("patch", resource, object, why, outcome.as_ref().map(|_| ()));
        match outcome {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn log(
        &self,
        verb: &str,
        resource: &ApiResource,
        object: &CachedObject,
        reason: &str,
        outcome: Result<(), &Error>,
    ) {
        let (label, detail) = match outcome {
            Ok(()) => ("ok", String::new()),
            Err(e @ (Error::Conflict { .. } | Error::NotFound { .. })) => ("conflict", e.to_string()),
            Err(e) => ("error", e.to_string()),
        };
        self.host.metrics.actions.with_label_values(&[NAME, verb, label]).inc();
        tracing::info!(
            target: "wasmkube::controllers::actions",
            controller = NAME, identity = %self.host.identity, key = %format!("{}/{}", object.at.namespace, object.at.name),
            verb, object = %format!("{}/{}", resource.plural, object.at.name), namespace = %object.at.namespace,
            outcome = label, detail, reason, "action"
        );
    }
}
