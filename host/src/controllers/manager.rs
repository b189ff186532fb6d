//! The controller host (kube-controller-manager): runs every enabled controller plugin
//! while this server leads, each with its own work queue and workers over the shared
//! informers, and runs the actions their reconciles answer.
//!
//! - **Triggers.** A change to a `reconciles` object enqueues it; a change to an `owns`
//!   object enqueues its controlling owner (and, for an orphan, every `reconciles` object
//!   of its namespace, which may adopt it); a change to a `watches` object is passed to
//!   the plugin's `map`.
//! - **Actions.** Each is checked against the manifest's capabilities (verb on resource),
//!   then all of one reconcile run at once through the client's write path (admission
//!   applies), as `system:serviceaccount:kube-system:<controller>`. A conflict (a stale
//!   precondition) or any failure requeues the key with backoff.
//! - **Expectations.** After a reconcile's writes, the key is not reconciled again until
//!   the informers hold them (each write's revision; one global revision makes this
//!   exact), so a reconcile never acts twice on a stale cache (client-go's expectations).
//!   The wait is bounded (`EXPECTATION_TIMEOUT`).
//! - **Hot reload.** A new version of a plugin with the same registration replaces the
//!   module in place (reconciles under way finish on the old one) and every key is
//!   reconciled again; a changed registration restarts the controller.
//!
//! It talks to the API through the [`Client`] and the informers; never to storage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

pub use super::metrics::ControllerMetrics;
use crate::auth::UserInfo;
use crate::client::Client;
use crate::machinery::informer::{Change, Informer, Informers, ObjectRef};
use crate::machinery::queue::WorkQueue;
use crate::plugins::{
    Action, ActionPropagation, ControllerModule, Disagreement, LoadedController, Mode, ObjectKey, PatchType, PluginSet,
    ReconcileRequest, Registration, Verb, Verdict,
};
use crate::registry::{DeleteOptions, Error, Patch, Propagation, Revision, Subresource, WriteOptions};

/// How long a reconcile waits for the informers to show its key's last writes.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Which controllers run: `--controllers=*,-gc` (kube-controller-manager's syntax).
#[derive(Clone, Debug)]
pub struct Selection {
    all: bool,
    enabled: Vec<String>,
    disabled: Vec<String>,
}

impl Selection {
    /// Parse a comma-separated list: `*` enables every controller, `name` one, `-name`
    /// disables one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut selection = Self { all: false, enabled: Vec::new(), disabled: Vec::new() };
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                selection.all = true;
            } else if let Some(name) = item.strip_prefix('-') {
                if name.is_empty() || name == "*" {
                    return Err(format!("{item:?} names no controller: write -<name>, such as -gc"));
                }
                selection.disabled.push(name.to_string());
            } else {
                selection.enabled.push(item.to_string());
            }
        }
        Ok(selection)
    }

    pub fn runs(&self, name: &str) -> bool {
        !self.disabled.iter().any(|d| d == name) && (self.all || self.enabled.iter().any(|e| e == name))
    }
}

impl Default for Selection {
    fn default() -> Self {
        Self { all: true, enabled: Vec::new(), disabled: Vec::new() }
    }
}

/// What the controller host needs.
pub struct ControllerHost {
    pub client: Arc<dyn Client>,
    pub plugins: Arc<PluginSet>,
    pub informers: Arc<Informers>,
    pub selection: Selection,
    /// Who acts (this server's election identity), in every action's log line.
    pub identity: String,
    pub metrics: ControllerMetrics,
    /// One check per running controller (`/healthz/controllers`).
    pub health: crate::api::Health,
    /// True while no controller runs (so the Lease may be released).
    pub idle: watch::Sender<bool>,
}

/// Reconciles failing in a row before a controller's health check fails.
const UNHEALTHY_AFTER: u32 = 5;

impl ControllerHost {
    /// What the garbage collector is given of the host.
    fn gc_context(&self) -> super::gc::Context {
        super::gc::Context {
            client: self.client.clone(),
            informers: self.informers.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            identity: self.identity.clone(),
        }
    }

    /// Run the enabled controller plugins while `leading` is true, until `stop`.
    pub async fn run(self: Arc<Self>, mut leading: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.plugins.changes();
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut gc: Option<super::gc::GarbageCollector> = None;
        loop {
            let lead = *leading.borrow_and_update();
            self.metrics.leading.set(i64::from(lead));
            if lead {
                self.idle.send_replace(false);
                self.reconcile_set(&mut running).await;
                if gc.is_none() && self.selection.runs(super::gc::NAME) {
                    gc = Some(super::gc::GarbageCollector::start(Arc::new(self.gc_context())));
                }
            } else {
                if !running.is_empty() || gc.is_some() {
                    tracing::info!(count = running.len(), "not leading: stopping every controller");
                }
                for (_, controller) in running.drain() {
                    controller.stop().await;
                }
                if let Some(gc) = gc.take() {
                    gc.stop().await;
                }
                self.idle.send_replace(true);
            }
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { break },
                _ = changes.changed() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        for (_, controller) in running.drain() {
            controller.stop().await;
        }
        if let Some(gc) = gc.take() {
            gc.stop().await;
        }
        self.idle.send_replace(true);
    }

    /// Make the running controllers match the loaded, enabled ones.
    async fn reconcile_set(self: &Arc<Self>, running: &mut HashMap<String, Running>) {
        let enabled: Vec<Arc<LoadedController>> = self
            .plugins
            .controllers()
            .iter()
            .filter(|c| self.selection.runs(&c.manifest.name))
            .filter(|c| !matches!(c.manifest.mode, Mode::Audit))
            .cloned()
            .collect();
        // Shadows ride on their live controller; the rest run on their own.
        let mut shadows: HashMap<String, Vec<Arc<LoadedController>>> = HashMap::new();
        let mut loaded = Vec::new();
        for plugin in enabled {
            match &plugin.manifest.mode {
                Mode::Shadow { of } => shadows.entry(of.clone()).or_default().push(plugin),
                _ => loaded.push(plugin),
            }
        }
        let gone: Vec<String> =
            running.keys().filter(|name| !loaded.iter().any(|c| &c.manifest.name == *name)).cloned().collect();
        for name in gone {
            if let Some(controller) = running.remove(&name) {
                tracing::info!(controller = %name, "controller unloaded or disabled: stopping it");
                controller.stop().await;
            }
        }
        for plugin in loaded {
            let name = plugin.manifest.name.clone();
            match running.get(&name) {
                Some(current) if Arc::ptr_eq(&current.plugin(), &plugin) => {}
                Some(current)
                    if followed(&current.plugin().module.registration) == followed(&plugin.module.registration) =>
                {
                    tracing::info!(controller = %name, digest = %plugin.module.digest, "controller replaced in place; reconciling every key again");
                    current.replace(plugin);
                }
                _ => {
                    if let Some(old) = running.remove(&name) {
                        old.stop().await;
                    }
                    match Running::start(self.clone(), plugin) {
                        Ok(started) => {
                            running.insert(name, started);
                        }
                        Err(e) => {
                            self.health.set(name.clone(), Err(format!("cannot start: {e}")));
                            tracing::error!(controller = %name, error = %e, "cannot start the controller");
                        }
                    }
                }
            }
        }
        for (name, controller) in running.iter() {
            let now = shadows.remove(name).unwrap_or_default();
            let mut current = controller.inner.shadows.write();
            let same = current.len() == now.len() && current.iter().zip(&now).all(|(a, b)| Arc::ptr_eq(a, b));
            if !same {
                let names: Vec<&str> = now.iter().map(|s| s.manifest.name.as_str()).collect();
                tracing::info!(controller = %name, shadows = ?names, "shadow controllers beside it");
                *current = now;
            }
        }
        for (live, orphans) in shadows {
            for shadow in orphans {
                tracing::warn!(controller = %shadow.manifest.name, live = %live, "a shadow controller whose live controller does not run: it waits");
            }
        }
    }
}

/// One controller while it runs.
struct Running {
    inner: Arc<Controller>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

struct Controller {
    host: Arc<ControllerHost>,
    name: String,
    plugin: RwLock<Arc<LoadedController>>,
    /// Candidates in Shadow mode: each reconciles every request this one does, beside it;
    /// their actions are recorded, never run.
    shadows: RwLock<Vec<Arc<LoadedController>>>,
    queue: Arc<WorkQueue<ObjectRef>>,
    primary: Arc<Informer>,
    subscriptions: Mutex<Vec<(Arc<Informer>, u64)>>,
    /// Reconciles that failed in a row (any key), for the health check; the check is set
    /// under this lock so that concurrent workers cannot leave it stale.
    failing: Mutex<u32>,
    /// Per key: the revision each informer must reach before the key is reconciled again.
    expectations: Mutex<HashMap<ObjectRef, Vec<(Arc<Informer>, Revision)>>>,
}

impl Running {
    fn start(host: Arc<ControllerHost>, plugin: Arc<LoadedController>) -> Result<Self, String> {
        let registration = plugin.module.registration.clone();
        let name = plugin.manifest.name.clone();
        let informer = |gvr: &crate::plugins::GroupVersionResource| {
            host.informers.informer(&gvr.group, &gvr.version, &gvr.resource).ok_or_else(|| {
                format!("it follows {} in {}/{}, which is not served", gvr.resource, gvr.group, gvr.version)
            })
        };
        let primary = informer(&registration.reconciles)?;
        let owned = registration.owns.iter().map(informer).collect::<Result<Vec<_>, _>>()?;
        let watched = registration.watches.iter().map(informer).collect::<Result<Vec<_>, _>>()?;
        let concurrency = plugin.manifest.concurrency;
        let controller = Arc::new(Controller {
            host: host.clone(),
            name: name.clone(),
            plugin: RwLock::new(plugin),
            shadows: RwLock::default(),
            queue: WorkQueue::new(),
            primary: primary.clone(),
            subscriptions: Mutex::default(),
            failing: Default::default(),
            expectations: Mutex::default(),
        });
        // Primary objects: their own key.
        let queue = controller.queue.clone();
        let id = primary.subscribe(Arc::new(move |change: &Change| queue.add(change.object().at.clone())));
        controller.subscriptions.lock().push((primary.clone(), id));
        // Owned objects: their controlling owner, or (orphans) every primary object in their namespace.
        let (kind, group) = (primary.resource.kind, primary.resource.group);
        for informer in owned {
            let (queue, primary) = (controller.queue.clone(), primary.clone());
            let id = informer.subscribe(Arc::new(move |change: &Change| {
                let enqueue_owner = |object: &crate::machinery::informer::CachedObject| match object.controller() {
                    Some(owner) if owner.kind == kind && api_group(&owner.api_version) == group => {
                        queue.add(ObjectRef { namespace: object.at.namespace.clone(), name: owner.name.clone() });
                    }
                    Some(_) => {}
                    None => {
                        for candidate in primary.list(Some(&object.at.namespace), &Default::default()) {
                            queue.add(candidate.at.clone());
                        }
                    }
                };
                if let Change::Updated { old, new } = change {
                    if old.controller() != new.controller() {
                        enqueue_owner(old);
                    }
                }
                enqueue_owner(change.object());
            }));
            controller.subscriptions.lock().push((informer, id));
        }
        // Watched objects: what the plugin maps them to (off the informer's task).
        if !watched.is_empty() {
            let (mapped, mut to_map) = mpsc::unbounded_channel::<(crate::plugins::GroupVersionResource, Arc<str>)>();
            for (informer, gvr) in watched.into_iter().zip(registration.watches.iter().cloned()) {
                let mapped = mapped.clone();
                let id = informer.subscribe(Arc::new(move |change: &Change| {
                    let _ = mapped.send((gvr.clone(), change.object().json.clone()));
                }));
                controller.subscriptions.lock().push((informer, id));
            }
            let weak = Arc::downgrade(&controller);
            tokio::spawn(async move {
                while let Some((gvr, json)) = to_map.recv().await {
                    let Some(controller) = weak.upgrade() else { return };
                    let module = controller.plugin.read().module.clone();
                    match module.map(&gvr, &json).await {
                        Ok(keys) => {
                            for key in keys {
                                controller.queue.add(object_ref(&key));
                            }
                        }
                        Err(e) => {
                            // The change must not be lost: every key is reconciled instead.
                            tracing::warn!(controller = %controller.name, error = %e, "map failed; reconciling every key");
                            for key in controller.primary.keys() {
                                controller.queue.add(key);
                            }
                        }
                    }
                }
            });
        }
        let workers = (0..concurrency)
            .map(|_| {
                let controller = controller.clone();
                tokio::spawn(async move { controller.work().await })
            })
            .collect();
        host.health.set(name.clone(), Ok(()));
        tracing::info!(controller = %name, concurrency, identity = %host.identity, "controller started");
        Ok(Self { inner: controller, workers })
    }

    fn plugin(&self) -> Arc<LoadedController> {
        self.inner.plugin.read().clone()
    }

    /// A new version with the same registration: reconciles from now on use it, and
    /// every key is reconciled again.
    fn replace(&self, plugin: Arc<LoadedController>) {
        *self.inner.plugin.write() = plugin;
        for key in self.inner.primary.keys() {
            self.inner.queue.add(key);
        }
    }

    /// Stop handing out keys, cancel the reconciles under way and wait until they ended.
    async fn stop(self) {
        self.inner.queue.shut_down();
        let subscriptions: Vec<(Arc<Informer>, u64)> = self.inner.subscriptions.lock().drain(..).collect();
        for (informer, id) in subscriptions {
            informer.unsubscribe(id);
        }
        for worker in &self.workers {
            worker.abort();
        }
        for worker in self.workers {
            let _ = worker.await;
        }
        self.inner.host.health.remove(&self.inner.name);
        tracing::info!(controller = %self.inner.name, "controller stopped");
    }
}

fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

fn object_ref(key: &ObjectKey) -> ObjectRef {
    ObjectRef { namespace: key.namespace.clone().unwrap_or_default(), name: key.name.clone() }
}

fn verb_name(verb: Verb) -> &'static str {
    match verb {
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Patch => "patch",
        Verb::Delete => "delete",
    }
}

/// What one action did.
enum Outcome {
    /// Written at this revision (to the action's resource).
    Done(Revision),
    /// A stale precondition, or the object is gone or already there: reconcile again.
    Conflict(String),
    Forbidden(String),
    Failed(String),
}

impl Controller {
    async fn work(self: Arc<Self>) {
        while let Some(key) = self.queue.next().await {
            let span = tracing::info_span!("reconcile", controller = %self.name, key = %display_key(&key));
            self.reconcile(&key).instrument(span).await;
            self.queue.done(&key);
            let (adds, retries) = self.queue.counts();
            let metrics = &self.host.metrics;
            metrics.depth.with_label_values(&[&self.name]).set(self.queue.depth() as i64);
            metrics.adds.with_label_values(&[&self.name]).set(adds as i64);
            metrics.retries.with_label_values(&[&self.name]).set(retries as i64);
        }
    }

    async fn reconcile(&self, key: &ObjectRef) {
        let expected = self.expectations.lock().remove(key).unwrap_or_default();
        for (informer, revision) in expected {
            if !informer.wait_for(revision, EXPECTATION_TIMEOUT).await {
                tracing::warn!(controller = %self.name, key = %display_key(key), revision, resource = %informer.resource.qualified(),
                    "the informer did not show this key's last write in time; reconciling anyway");
            }
        }
        let plugin = self.plugin.read().clone();
        let module: Arc<ControllerModule> = plugin.module.clone();
        let request = ReconcileRequest {
            key: ObjectKey {
                namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
                name: key.name.clone(),
            },
            object: self.primary.get(key).map(|o| o.json.to_string()),
        };
        let started = Instant::now();
        let answer = module.reconcile(&request).await;
        let result = match answer {
            Ok(Ok(result)) => result,
            Ok(Err(why)) => {
                plugin.activity.record(None);
                tracing::warn!(controller = %self.name, key = %display_key(key), error = %why, "reconcile failed; retrying with backoff");
                return self.failed(key);
            }
            Err(e) => {
                plugin.activity.record(None);
                tracing::warn!(controller = %self.name, key = %display_key(key), error = %e, "reconcile call failed; retrying with backoff");
                return self.failed(key);
            }
        };
        plugin.activity.record(Some(true));
        // The shadows read the same informers: they are asked before the live actions land
        // (bounded), or they would see the live controller's writes and disagree for that.
        let shadows = self.shadow(&plugin, &request, &result.actions);
        if !shadows.is_empty() {
            let _ = tokio::time::timeout(SHADOW_WAIT, futures::future::join_all(shadows)).await;
        }
        let outcomes = futures::future::join_all(result.actions.iter().map(|a| self.act(&plugin, a))).await;
        let mut ok = true;
        let mut expected: HashMap<String, (Arc<Informer>, Revision)> = HashMap::new();
        for (action, outcome) in result.actions.iter().zip(&outcomes) {
            let verb = verb_name(action.verb);
            let (target, _) = describe(action);
            let (label, detail) = match outcome {
                Outcome::Done(revision) => {
                    let informer = self.host.informers.running(
                        &action.resource.group,
                        &action.resource.version,
                        &action.resource.resource,
                    );
                    if let Some(informer) = informer {
                        let entry = expected.entry(informer.resource.qualified()).or_insert((informer, 0));
                        entry.1 = entry.1.max(*revision);
                    }
                    ("ok", String::new())
                }
                Outcome::Conflict(why) => ("conflict", why.clone()),
                Outcome::Forbidden(why) => ("forbidden", why.clone()),
                Outcome::Failed(why) => ("error", why.clone()),
            };
            ok &= label == "ok";
            self.host.metrics.actions.with_label_values(&[&self.name, verb, label]).inc();
            tracing::info!(
                target: "wasmkube::controllers::actions",
                controller = %self.name, identity = %self.host.identity, key = %display_key(key),
                verb, action = %target,
                outcome = label, detail, reason = %result.reason, "action"
            );
        }
        self.host.metrics.latency.with_label_values(&[&self.name]).observe(started.elapsed().as_secs_f64());
        if !expected.is_empty() {
            self.expectations.lock().insert(key.clone(), expected.into_values().collect());
        }
        if !ok {
            return self.failed(key);
        }
        self.queue.forget(key);
        {
            let mut failing = self.failing.lock();
            if *failing >= UNHEALTHY_AFTER {
                self.host.health.set(self.name.clone(), Ok(()));
            }
            *failing = 0;
        }
        if let Some(after) = result.requeue_after_ms {
            self.queue.add_after(key.clone(), Duration::from_millis(after));
        }
    }

    /// Run every shadow on `request` in a task of its own and record what it would have
    /// done next to what the live controller answers (`live`); the tasks.
    fn shadow(
        &self,
        live: &LoadedController,
        request: &ReconcileRequest,
        actions: &[Action],
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let shadows = self.shadows.read().clone();
        let mut tasks = Vec::new();
        if shadows.is_empty() {
            return tasks;
        }
        let live_verdict = Verdict::Actions(actions.iter().map(describe).collect());
        let key = request
            .key
            .namespace
            .as_deref()
            .map_or(request.key.name.clone(), |ns| format!("{ns}/{}", request.key.name));
        for shadow in shadows {
            let Some(slot) = shadow.activity.enter_shadow() else { continue };
            let (request, live_verdict, key) = (request.clone(), live_verdict.clone(), key.clone());
            let (live_name, live_digest) = (self.name.clone(), live.module.digest.clone());
            let (host, identity) = (self.host.clone(), self.host.identity.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = slot;
                let answer = shadow.module.reconcile(&request).await;
                let name = shadow.manifest.name.as_str();
                let verdict = match answer {
                    Ok(Ok(result)) => {
                        shadow.activity.record(Some(true));
                        for action in &result.actions {
                            let (what, _) = describe(action);
                            host.metrics.actions.with_label_values(&[name, verb_name(action.verb), "shadowed"]).inc();
                            tracing::info!(
                                target: "wasmkube::controllers::actions",
                                controller = %name, identity = %identity, key = %key, shadow_of = %live_name,
                                action = %what, outcome = "shadowed", reason = %result.reason, "action"
                            );
                        }
                        Verdict::Actions(result.actions.iter().map(describe).collect())
                    }
                    Ok(Err(why)) => {
                        shadow.activity.record(None);
                        Verdict::Failed(why)
                    }
                    Err(e) => {
                        shadow.activity.record(None);
                        Verdict::Failed(e.to_string())
                    }
                };
                let agrees = verdict.agrees_with(&live_verdict);
                if !agrees {
                    host.plugins.metrics().disagreements.with_label_values(&[name, live_name.as_str()]).inc();
                    tracing::info!(controller = %name, live = %live_name, key = %key, "shadow controller disagrees with the live one");
                }
                shadow.activity.compared(Disagreement {
                    at: crate::registry::now(),
                    request: format!("reconcile {key}"),
                    function: "reconcile",
                    live: live_verdict,
                    live_digest,
                    shadow: verdict,
                    shadow_digest: shadow.module.digest.clone(),
                });
            }));
        }
        tasks
    }

    fn failed(&self, key: &ObjectRef) {
        self.host.metrics.errors.with_label_values(&[&self.name]).inc();
        let mut failing = self.failing.lock();
        *failing += 1;
        if *failing == UNHEALTHY_AFTER {
            self.host.health.set(
                self.name.clone(),
                Err(format!("its last {} reconciles failed (the last: {}); see the log", *failing, display_key(key))),
            );
        }
        drop(failing);
        self.queue.add_rate_limited(key.clone());
    }

    /// Run one action through the client, if the manifest grants it.
    async fn act(&self, plugin: &LoadedController, action: &Action) -> Outcome {
        let verb = verb_name(action.verb);
        let gvr = &action.resource;
        if !plugin.manifest.capabilities.iter().any(|c| c.allows(&gvr.group, &gvr.resource, verb)) {
            let group = if gvr.group.is_empty() { "core" } else { &gvr.group };
            return Outcome::Forbidden(format!(
                "controller {:?} may not {verb} {} in group {group}: its manifest's capabilities do not grant it",
                self.name, gvr.resource
            ));
        }
        let client = &self.host.client;
        let Some(resource) = client.resource(&gvr.group, &gvr.version, &gvr.resource) else {
            return Outcome::Failed(format!("{} in {}/{} is not served", gvr.resource, gvr.group, gvr.version));
        };
        let part = match action.subresource.as_deref() {
            None | Some("") => None,
            Some(name) => match Subresource::parse(name) {
                Some(part) => Some(part),
                None => return Outcome::Failed(format!("{name:?} is not a subresource wasmkube serves")),
            },
        };
        let user = UserInfo {
            username: format!("system:serviceaccount:kube-system:{}", self.name),
            uid: String::new(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:kube-system".into(),
                crate::auth::AUTHENTICATED.into(),
            ],
        };
        let options = WriteOptions {
            field_manager: Some(self.name.clone()),
            user: Some(user.clone()),
            ..WriteOptions::default()
        };
        let namespace = action.namespace.as_deref().filter(|_| resource.namespaced);
        // A uid precondition on an update or patch: the object must still be the one the
        // reconcile saw (the registry keeps uids its own, so it is checked here).
        if let (Some(uid), Verb::Update | Verb::Patch) = (&action.uid, action.verb) {
            match client.get(&resource, namespace, &action.name).await {
                Ok(current)
                    if current.get("metadata").and_then(|m| m.get("uid")) == Some(&Value::from(uid.as_str())) => {}
                Ok(_) => {
                    return Outcome::Conflict(format!("{} {:?} has another uid than {uid}", gvr.resource, action.name))
                }
                Err(e) => return Outcome::Conflict(e.to_string()),
            }
        }
        // A delete's precondition is a revision: one that is not a number is refused, never dropped.
        let delete_revision = action.resource_version.as_deref().filter(|_| action.verb == Verb::Delete);
        let resource_version = match delete_revision.map(str::parse::<crate::registry::Revision>) {
            None => None,
            Some(Ok(rv)) => Some(rv),
            Some(Err(_)) => {
                return Outcome::Failed(format!(
                    "resourceVersion {:?} is not one this server wrote",
                    action.resource_version
                ))
            }
        };
        let body = || -> Result<Value, Outcome> {
            let text =
                action.body.as_deref().ok_or_else(|| Outcome::Failed(format!("a {verb} action needs a body")))?;
            serde_json::from_str(text)
                .map_err(|e| Outcome::Failed(format!("the {verb} action's body is not JSON: {e}")))
        };
        let written = match action.verb {
            Verb::Create => match body() {
                Ok(body) => client.create(&resource, namespace, body, &options).await.map(|w| w.object),
                Err(outcome) => return outcome,
            },
            Verb::Update => match body() {
                Ok(mut body) => {
                    if let (Some(rv), Some(metadata)) =
                        (&action.resource_version, body.get_mut("metadata").and_then(Value::as_object_mut))
                    {
                        metadata.insert("resourceVersion".into(), Value::String(rv.clone()));
                    }
                    client.update(&resource, namespace, &action.name, body, part, &options).await.map(|w| w.object)
                }
                Err(outcome) => return outcome,
            },
            Verb::Patch => match body() {
                Ok(body) => {
                    let patch = match patch_of(action, body) {
                        Ok(patch) => patch,
                        Err(why) => return Outcome::Failed(why),
                    };
                    client.patch(&resource, namespace, &action.name, patch, part, &options).await.map(|w| w.object)
                }
                Err(outcome) => return outcome,
            },
            Verb::Delete => {
                let delete = DeleteOptions {
                    resource_version,
                    uid: action.uid.clone(),
                    propagation: action.propagation.map(|p| match p {
                        ActionPropagation::Background => Propagation::Background,
                        ActionPropagation::Foreground => Propagation::Foreground,
                        ActionPropagation::Orphan => Propagation::Orphan,
                    }),
                    user: Some(user),
                    ..DeleteOptions::default()
                };
                client.delete(&resource, namespace, &action.name, &delete).await
            }
        };
        match written {
            Ok(object) => Outcome::Done(
                object
                    .get("metadata")
                    .and_then(|m| m.get("resourceVersion"))
                    .and_then(Value::as_str)
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0),
            ),
            Err(e @ (Error::Conflict { .. } | Error::AlreadyExists { .. } | Error::NotFound { .. })) => {
                Outcome::Conflict(e.to_string())
            }
            Err(Error::Forbidden(why)) => Outcome::Forbidden(why),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

/// The registry's patch for an action, with its resourceVersion precondition.
fn patch_of(action: &Action, mut body: Value) -> Result<Patch, String> {
    match action.patch_type.unwrap_or(PatchType::Merge) {
        PatchType::Json => {
            let mut operations = body.as_array().cloned().ok_or("a JSON patch is a JSON array of operations")?;
            if let Some(rv) = &action.resource_version {
                operations
                    .insert(0, serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
            }
            serde_json::from_value(Value::Array(operations))
                .map(Patch::Json)
                .map_err(|e| format!("not a JSON patch: {e}"))
        }
        kind => {
            if let Some(rv) = &action.resource_version {
                let object = body.as_object_mut().ok_or("a merge patch is a JSON object")?;
                let metadata = object.entry("metadata").or_insert_with(|| serde_json::json!({}));
                if let Some(metadata) = metadata.as_object_mut() {
                    metadata.insert("resourceVersion".into(), Value::String(rv.clone()));
                }
            }
            Ok(if kind == PatchType::Strategic { Patch::Strategic(body) } else { Patch::Merge(body) })
        }
    }
}

/// How long a live reconcile waits for its shadows' answers before its actions land.
const SHADOW_WAIT: Duration = Duration::from_secs(2);

/// An action as a shadow comparison shows it: what it does to which object, and its body.
fn describe(action: &Action) -> (String, Value) {
    let body: Value = action.body.as_deref().and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    let name = if action.name.is_empty() {
        let metadata = body.get("metadata");
        match metadata.and_then(|m| m.get("name")).and_then(Value::as_str) {
            Some(name) => name.to_string(),
            None => {
                format!("{}*", metadata.and_then(|m| m.get("generateName")).and_then(Value::as_str).unwrap_or_default())
            }
        }
    } else {
        action.name.clone()
    };
    let sub = action.subresource.as_deref().map(|s| format!("/{s}")).unwrap_or_default();
    let place = action.namespace.as_deref().map_or(name.clone(), |ns| format!("{ns}/{name}"));
    (format!("{} {}{sub} {place}", verb_name(action.verb), action.resource.resource), body)
}

fn display_key(key: &ObjectRef) -> String {
    if key.namespace.is_empty() {
        key.name.clone()
    } else {
        format!("{}/{}", key.namespace, key.name)
    }
}

/// What a registration follows, comparable across versions.
fn followed(registration: &Registration) -> Vec<String> {
    std::iter::once(&registration.reconciles)
        .chain(&registration.owns)
        .chain(&registration.watches)
        .map(|r| format!("{}/{}/{}", r.group, r.version, r.resource))
        .collect()
}
