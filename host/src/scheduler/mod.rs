//! The scheduler (kube-scheduler, rebuilt): the host owns the queue, the cache and the
//! cycle; what decides is `scheduler-policy` plugins.
//!
//! - `queue`: active (priority, then age), backoff, unschedulable (retried on cluster
//!   events), in flight;
//! - `cache`: nodes and the pods bound or assumed on them, and each policy's pending
//!   changes (policies keep their own copy of the table);
//! - `records`, `requests`: the API's JSON as the compact records policies read;
//! - `policies`: the policies serving (plugins, or the native default), normalize and
//!   weighted sum;
//! - `native`: the default policy compiled into the host (the benchmark's baseline);
//! - `events`: `Scheduled` and `FailedScheduling` Events.
//!
//! The cycle, one pod at a time: pre-filter (the pod's records) → filter and score (each
//! policy, one call) → normalize → weighted sum → select (the best, ties broken at random)
//! → reserve (assume it in the cache) → bind (`pods/binding`, in a task of its own, so
//! the next cycle starts at once). A binding that fails forgets the assumption and the
//! pod backs off. A pod that fits nowhere gets `PodScheduled=False` with Kubernetes'
//! reasons and an Event, and waits for a cluster event. Shadow policies are asked after
//! the live ones, on the same table; where they would pick another node, that is recorded.
//!
//! It runs only while this server holds the Lease `kube-system/wasmkube-scheduler`
//! (leader election is the controller host's), reads through informers and writes through
//! the [`Client`], never storage. Pods naming another `schedulerName` are left alone.

mod cache;
mod native;
mod policies;
mod queue;
mod records;
mod requests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::client::Client;
use crate::machinery::events;
use crate::machinery::informer::{Change, Informer, Informers};
use crate::plugins::policy_types::Pod;
use crate::plugins::{Disagreement, PluginSet, Verdict};
use crate::registry::{ApiResource, Error, Patch, Subresource, WriteOptions};
use cache::Cache;
use policies::{Policies, Policy, Role};
use queue::SchedulingQueue;

pub use native::DefaultPolicy;
pub use records::pod as pod_record;

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// The `schedulerName` it serves.
    pub name: String,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Run the default policy compiled into the host instead of the policy plugins.
    pub native_policy: bool,
    /// Bindings and status writes under way at most.
    pub writes_in_flight: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            name: "default-scheduler".into(),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            native_policy: false,
            writes_in_flight: 256,
        }
    }
}

/// The scheduler's metrics (kube-scheduler's names, prefixed `wasmkube_`).
#[derive(Clone)]
pub struct SchedulerMetrics {
    attempts: prometheus::IntCounterVec,
    attempt_duration: prometheus::Histogram,
    e2e: prometheus::Histogram,
    pending: prometheus::IntGaugeVec,
    shadow_disagreements: prometheus::IntCounterVec,
    events_dropped: prometheus::IntCounter,
    leading: prometheus::IntGauge,
}

impl SchedulerMetrics {
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let buckets = prometheus::exponential_buckets(0.00001, 4.0, 12)?;
        let metrics = Self {
            attempts: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "wasmkube_scheduler_schedule_attempts_total",
                    "Scheduling attempts by result (scheduled, unschedulable, error).",
                ),
                &["result"],
            )?,
            attempt_duration: prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "wasmkube_scheduler_scheduling_attempt_duration_seconds",
                    "One cycle: the policies' calls, combining, selecting and reserving (not the binding).",
                )
                .buckets(buckets.clone()),
            )?,
            e2e: prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "wasmkube_scheduler_pod_scheduling_duration_seconds",
                    "From a pod entering the queue to its binding, over every attempt.",
                )
                .buckets(buckets),
            )?,
            pending: prometheus::IntGaugeVec::new(
                prometheus::Opts::new("wasmkube_scheduler_pending_pods", "Pods waiting, by queue."),
                &["queue"],
            )?,
            shadow_disagreements: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "wasmkube_scheduler_shadow_disagreements_total",
                    "Pods for which a shadow policy would have picked another node than the live one did.",
                ),
                &["policy", "live"],
            )?,
            events_dropped: prometheus::IntCounter::new(
                "wasmkube_scheduler_events_dropped_total",
                "Events not written because too many were waiting.",
            )?,
            leading: prometheus::IntGauge::new(
                "wasmkube_scheduler_leader",
                "1 while this server holds the scheduler's Lease.",
            )?,
        };
        registry.register(Box::new(metrics.attempts.clone()))?;
        registry.register(Box::new(metrics.attempt_duration.clone()))?;
        registry.register(Box::new(metrics.e2e.clone()))?;
        registry.register(Box::new(metrics.pending.clone()))?;
        registry.register(Box::new(metrics.shadow_disagreements.clone()))?;
        registry.register(Box::new(metrics.events_dropped.clone()))?;
        registry.register(Box::new(metrics.leading.clone()))?;
        Ok(metrics)
    }
}

/// The scheduler of one server.
pub struct Scheduler {
    pub client: Arc<dyn Client>,
    pub informers: Arc<Informers>,
    pub plugins: Arc<PluginSet>,
    pub config: SchedulerConfig,
    pub metrics: SchedulerMetrics,
    /// This server (events' reportingInstance).
    pub identity: String,
    /// True while no cycle runs: a leader that shuts down releases its Lease only then.
    pub idle: watch::Sender<bool>,
}

impl Scheduler {
    /// Schedule while `lead` is true, until `stop`.
    pub async fn run(self: Arc<Self>, mut lead: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = lead.wait_for(|l| *l) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if *stop.borrow() {
                return;
            }
            self.metrics.leading.set(1);
            self.idle.send_replace(false);
            tracing::info!(scheduler = %self.config.name, "leading: scheduling");
            let running = match Running::start(self.clone()).await {
                Ok(running) => running,
                Err(e) => {
                    tracing::error!(error = %e, "the scheduler cannot start");
                    self.idle.send_replace(true);
                    return;
                }
            };
            tokio::select! {
                _ = lead.wait_for(|l| !*l) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            running.stop();
            self.metrics.leading.set(0);
            self.idle.send_replace(true);
            tracing::info!(scheduler = %self.config.name, "stopped scheduling");
            if *stop.borrow() {
                return;
            }
        }
    }
}

/// What one term of leadership holds.
struct Shared {
    scheduler: Arc<Scheduler>,
    pods: Arc<Informer>,
    /// The pods resource, which bindings and status patches write.
    pods_resource: ApiResource,
    cache: Mutex<Cache>,
    queue: SchedulingQueue,
    /// When each pod entered the queue (for the end-to-end latency).
    arrived: Mutex<std::collections::HashMap<String, Instant>>,
    writes: Arc<Semaphore>,
    events: events::Recorder,
}

/// The node the live policies chose for a pod, and its summed score.
#[derive(Clone, Copy)]
struct Chosen<'a> {
    index: u32,
    node: &'a str,
    score: i64,
}

struct Running {
    shared: Arc<Shared>,
    subscriptions: Vec<(Arc<Informer>, u64)>,
    cycle: tokio::task::JoinHandle<()>,
    policies_changed: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(scheduler: Arc<Scheduler>) -> Result<Self, Error> {
        let informer = |resource: &str| {
            scheduler
                .informers
                .informer("", "v1", resource)
                .ok_or_else(|| Error::Internal(format!("{resource} are not served")))
        };
        let (pods, nodes) = (informer("pods")?, informer("nodes")?);
        nodes.wait_synced().await;
        pods.wait_synced().await;
        let config = &scheduler.config;
        let pods_resource =
            scheduler.client.resource("", "v1", "pods").ok_or_else(|| Error::Internal("pods are not served".into()))?;
        let shared = Arc::new(Shared {
            pods: pods.clone(),
            pods_resource,
            cache: Mutex::default(),
            queue: SchedulingQueue::new(config.initial_backoff, config.max_backoff),
            arrived: Mutex::default(),
            writes: Arc::new(Semaphore::new(config.writes_in_flight.max(1))),
            events: events::Recorder::start(
                scheduler.client.clone(),
                &config.name,
                &scheduler.identity,
                scheduler.metrics.events_dropped.clone(),
            ),
            scheduler: scheduler.clone(),
        });
        let on_node = {
            let shared = shared.clone();
            nodes.subscribe(Arc::new(move |change: &Change| shared.node_changed(change)))
        };
        let on_pod = {
            let shared = shared.clone();
            pods.subscribe(Arc::new(move |change: &Change| shared.pod_changed(change)))
        };
        let cycle = tokio::spawn(shared.clone().cycle());
        let policies_changed = tokio::spawn(shared.clone().retry_when_policies_change());
        Ok(Self { shared, subscriptions: vec![(nodes, on_node), (pods, on_pod)], cycle, policies_changed })
    }

    fn stop(self) {
        self.cycle.abort();
        self.policies_changed.abort();
        for (informer, id) in self.subscriptions {
            informer.unsubscribe(id);
        }
        drop(self.shared);
    }
}

impl Shared {
    /// A policy loaded, replaced or unloaded may place what the old set could not: move
    /// the unschedulable pods to be tried again, as a cluster event does.
    async fn retry_when_policies_change(self: Arc<Self>) {
        let plugins = &self.scheduler.plugins;
        let mut changes = plugins.changes();
        let mut serving = plugins.policies();
        while changes.changed().await.is_ok() {
            let now = plugins.policies();
            if !Arc::ptr_eq(&now, &serving) {
                serving = now;
                self.queue.move_all();
            }
        }
    }

    fn node_changed(&self, change: &Change) {
        let moved = match change {
            Change::Added(node) | Change::Updated { new: node, .. } => {
                let Ok(object) = serde_json::from_str::<Value>(&node.json) else { return };
                self.cache.lock().set_node(records::node(&object))
            }
            Change::Deleted(node) => self.cache.lock().remove_node(&node.at.name),
        };
        if moved {
            self.queue.move_all();
        }
    }

    fn pod_changed(&self, change: &Change) {
        let cached = change.object();
        if let Change::Deleted(_) = change {
            self.queue.remove(&cached.uid);
            self.arrived.lock().remove(&cached.uid);
            if self.cache.lock().remove_pod(&cached.uid) {
                self.queue.move_all();
            }
            return;
        }
        let Ok(object) = serde_json::from_str::<Value>(&cached.json) else { return };
        if let Some(node) = records::bound_node(&object) {
            self.queue.remove(&cached.uid);
            if records::is_finished(&object) {
                if self.cache.lock().remove_pod(&cached.uid) {
                    self.queue.move_all();
                }
                return;
            }
            let namespace = cached.at.namespace.as_str();
            let labels: Vec<(String, String)> = cached.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let requests = requests::pod_requests(object.get("spec").unwrap_or(&Value::Null));
            self.cache.lock().place(&cached.uid, node, namespace, labels, requests, false);
            return;
        }
        let ours = records::scheduler_name(&object) == self.scheduler.config.name;
        if !ours || cached.deleting || records::is_finished(&object) || self.cache.lock().is_assumed(&cached.uid) {
            return;
        }
        let priority = object.pointer("/spec/priority").and_then(Value::as_i64).unwrap_or(0);
        self.arrived.lock().entry(cached.uid.clone()).or_insert_with(Instant::now);
        self.queue.add(&cached.uid, i32::try_from(priority).unwrap_or(0));
    }

    fn publish_depths(&self) {
        let depths = self.queue.depths();
        let pending = &self.scheduler.metrics.pending;
        pending.with_label_values(&["active"]).set(depths.active as i64);
        pending.with_label_values(&["backoff"]).set(depths.backoff as i64);
        pending.with_label_values(&["unschedulable"]).set(depths.unschedulable as i64);
    }

    /// Schedule pods one at a time, for as long as this term lasts.
    async fn cycle(self: Arc<Self>) {
        let mut policies = Policies::new(self.scheduler.plugins.clone(), self.scheduler.config.native_policy);
        let mut cycles: u64 = 0;
        loop {
            let uid = self.queue.pop().await;
            self.schedule_one(&mut policies, &uid).await;
            cycles += 1;
            if cycles % 64 == 0 {
                self.publish_depths();
            }
        }
    }

    async fn schedule_one(self: &Arc<Self>, policies: &mut Policies, uid: &str) {
        let started = Instant::now();
        let Some(cached) = self.pods.by_uid(uid) else {
            self.queue.done(uid);
            return;
        };
        let Ok(object) = serde_json::from_str::<Value>(&cached.json) else {
            self.queue.done(uid);
            return;
        };
        if records::bound_node(&object).is_some() || cached.deleting {
            self.queue.done(uid);
            return;
        }
        // Pre-filter: the pod as policies read it.
        let pod = records::pod(&object);
        let set = match policies.refresh(&self.cache) {
            Ok(set) => set,
            Err(e) => {
                tracing::error!(error = %e, "the scheduler's policies cannot start");
                self.queue.retry(uid, pod.priority);
                return;
            }
        };
        let (candidates, nodes) = {
            let cache = self.cache.lock();
            (cache.candidates(), cache.node_count())
        };
        let live: Vec<&Arc<Policy>> = set.iter().filter(|p| p.role == Role::Live).collect();
        if live.is_empty() {
            self.failed(
                &pod,
                &object,
                "no scheduler policy is loaded (load one: a Plugin of kind scheduler-policy)",
                true,
            );
            return;
        }
        // Filter and score: each live policy, one call.
        let mut answers = Vec::with_capacity(live.len());
        for policy in &live {
            match policy.ask(&self.cache, &pod, &candidates).await {
                Ok(Ok(placement)) => {
                    policy.activity.record(Some(true));
                    answers.push((policy.weight, placement));
                }
                Ok(Err(why)) => {
                    policy.activity.record(Some(false));
                    self.failed(&pod, &object, &format!("0/{nodes} nodes are available: {why}."), false);
                    return;
                }
                Err(e) => {
                    policy.activity.record(None);
                    tracing::warn!(policy = %policy.name, pod = %format!("{}/{}", pod.namespace, pod.name), error = %e, "a scheduler policy failed; the pod backs off");
                    self.failed(&pod, &object, &format!("scheduler policy {} failed: {e}", policy.name), true);
                    return;
                }
            }
        }
        let weighted: Vec<(i64, &_)> = answers.iter().map(|(w, p)| (*w, p)).collect();
        let combined = policies::combine(&candidates, &weighted);
        let Some((chosen, score)) = select(&combined.totals) else {
            let message = policies::unschedulable_message(nodes, &combined.reasons);
            self.failed(&pod, &object, &message, false);
            return;
        };
        let node = self.cache.lock().node_name(chosen).map(String::from).unwrap_or_default();
        // Shadows, on the same table, before the pod is assumed.
        for shadow in set.iter().filter(|p| matches!(&p.role, Role::Shadow { .. })) {
            self.compare(shadow, &live, &answers, &pod, &candidates, Chosen { index: chosen, node: &node, score })
                .await;
        }
        // Reserve, then bind.
        let labels: Vec<(String, String)> = pod.labels.clone();
        self.cache.lock().place(uid, &node, &pod.namespace, labels, pod.requests.clone(), true);
        self.queue.done(uid);
        self.scheduler.metrics.attempt_duration.observe(started.elapsed().as_secs_f64());
        self.bind(pod, node);
    }

    /// Ask `shadow` what it would pick in the place of its live policy, and record where
    /// that differs from `chosen`.
    async fn compare(
        &self,
        shadow: &Arc<Policy>,
        live: &[&Arc<Policy>],
        answers: &[(i64, crate::plugins::policy_types::Placement)],
        pod: &Pod,
        candidates: &[u32],
        chosen: Chosen<'_>,
    ) {
        let Role::Shadow { of } = &shadow.role else { return };
        let Some(replaced) = live.iter().position(|p| &p.name == of) else { return };
        let placement = match shadow.ask(&self.cache, pod, candidates).await {
            Ok(Ok(placement)) => {
                shadow.activity.record(Some(true));
                placement
            }
            Ok(Err(_)) => {
                shadow.activity.record(Some(false));
                return;
            }
            Err(e) => {
                shadow.activity.record(None);
                tracing::debug!(policy = %shadow.name, error = %e, "a shadow policy failed");
                return;
            }
        };
        let mut weighted: Vec<(i64, &crate::plugins::policy_types::Placement)> =
            answers.iter().map(|(w, p)| (*w, p)).collect();
        weighted[replaced] = (shadow.weight, &placement);
        let combined = policies::combine(candidates, &weighted);
        let best = combined.totals.iter().flatten().copied().max();
        let cache = self.cache.lock();
        // Agreement: the live choice is among the shadow's best (ties are not disagreements).
        let agrees = best.is_some() && combined.totals.get(chosen.index as usize).copied().flatten() == best;
        if agrees {
            return;
        }
        // The shadow's pick: the best, the first by name among ties (so a test can recompute it).
        let pick = combined
            .totals
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_some() && **t == best)
            .filter_map(|(i, _)| cache.node_name(i as u32))
            .min()
            .map(String::from);
        drop(cache);
        let metrics = &self.scheduler.metrics;
        metrics.shadow_disagreements.with_label_values(&[shadow.name.as_str(), of.as_str()]).inc();
        self.scheduler.plugins.metrics().disagreements.with_label_values(&[shadow.name.as_str(), of.as_str()]).inc();
        let request = format!("SCHEDULE pods {}/{}", pod.namespace, pod.name);
        tracing::info!(policy = %shadow.name, live = %of, pod = %format!("{}/{}", pod.namespace, pod.name), live_node = %chosen.node, shadow_node = ?pick, "shadow policy would pick another node");
        let live_digest = live[replaced].digest.clone();
        shadow.activity.disagreed(Disagreement {
            at: crate::registry::now(),
            request,
            function: "schedule",
            live: Verdict::Placement { node: Some(chosen.node.to_string()), score: chosen.score },
            live_digest,
            shadow: Verdict::Placement { node: pick, score: best.unwrap_or(0) },
            shadow_digest: shadow.digest.clone(),
        });
    }

    /// The pod could not be placed: `PodScheduled=False` with `message` and an Event; it
    /// waits for a cluster event, or (`error`) backs off.
    fn failed(self: &Arc<Self>, pod: &Pod, object: &Value, message: &str, error: bool) {
        let metrics = &self.scheduler.metrics;
        if error {
            metrics.attempts.with_label_values(&["error"]).inc();
            self.queue.retry(&pod.uid, pod.priority);
        } else {
            metrics.attempts.with_label_values(&["unschedulable"]).inc();
            self.queue.unschedulable(&pod.uid);
        }
        let reason = if error { "SchedulerError" } else { "Unschedulable" };
        let current = object
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"));
        let unchanged =
            current.is_some_and(|c| c["status"] == "False" && c["reason"] == reason && c["message"] == message);
        if unchanged {
            return;
        }
        let about = events::About { namespace: &pod.namespace, name: &pod.name, uid: &pod.uid };
        self.events.pod_event(&about, true, "FailedScheduling", message, "Scheduling");
        // Pinned to the version the attempt read: a pod bound meanwhile (a later attempt
        // won) must not be marked unschedulable after the fact.
        let version = object.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
        let patch = json!({"metadata": {"resourceVersion": version}, "status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
            "lastProbeTime": null, "lastTransitionTime": crate::registry::now(),
        }]}});
        let (shared, namespace, name) = (self.clone(), pod.namespace.clone(), pod.name.clone());
        tokio::spawn(async move {
            let Ok(_permit) = shared.writes.clone().acquire_owned().await else { return };
            let client = &shared.scheduler.client;
            let options = shared.write_options();
            let result = client
                .patch(
                    &shared.pods_resource,
                    Some(&namespace),
                    &name,
                    Patch::Strategic(patch),
                    Some(Subresource::Status),
                    &options,
                )
                .await;
            if let Err(e) = result {
                tracing::debug!(pod = %format!("{namespace}/{name}"), error = %e, "cannot record why a pod is unschedulable");
            }
        });
    }

    fn write_options(&self) -> WriteOptions {
        WriteOptions { field_manager: Some(self.scheduler.config.name.clone()), ..WriteOptions::default() }
    }

    /// Bind in a task of its own: the next cycle does not wait for the write.
    fn bind(self: &Arc<Self>, pod: Pod, node: String) {
        let shared = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = shared.writes.clone().acquire_owned().await else { return };
            let client = &shared.scheduler.client;
            let options = shared.write_options();
            let result = client
                .bind(&shared.pods_resource, Some(&pod.namespace), &pod.name, &node, serde_json::Map::new(), &options)
                .await;
            let metrics = &shared.scheduler.metrics;
            match result {
                Ok(_) => {
                    metrics.attempts.with_label_values(&["scheduled"]).inc();
                    if let Some(arrived) = shared.arrived.lock().remove(&pod.uid) {
                        metrics.e2e.observe(arrived.elapsed().as_secs_f64());
                    }
                    let about = events::About { namespace: &pod.namespace, name: &pod.name, uid: &pod.uid };
                    let message = format!("Successfully assigned {}/{} to {node}", pod.namespace, pod.name);
                    shared.events.pod_event(&about, false, "Scheduled", &message, "Binding");
                }
                // Gone, or bound by someone else: the informer tells the cache what is true.
                Err(Error::NotFound { .. }) => shared.cache.lock().forget(&pod.uid),
                Err(e @ Error::Conflict { .. }) => {
                    tracing::debug!(pod = %format!("{}/{}", pod.namespace, pod.name), error = %e, "binding refused");
                    shared.cache.lock().forget(&pod.uid);
                }
                Err(e) => {
                    tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), %node, error = %e, "binding failed; the pod backs off");
                    shared.cache.lock().forget(&pod.uid);
                    metrics.attempts.with_label_values(&["error"]).inc();
                    shared.queue.retry(&pod.uid, pod.priority);
                }
            }
        });
    }
}

/// The candidate with the highest total; ties broken uniformly at random (reservoir
/// sampling, as kube-scheduler's selectHost).
fn select(totals: &[Option<i64>]) -> Option<(u32, i64)> {
    let mut best: Option<(u32, i64)> = None;
    let mut ties = 0u32;
    let mut rng = rand::rng();
    for (i, total) in totals.iter().enumerate() {
        let Some(total) = *total else { continue };
        match best {
            Some((_, b)) if total < b => {}
            Some((_, b)) if total == b => {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = Some((i as u32, total));
                }
            }
            _ => {
                best = Some((i as u32, total));
                ties = 1;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_picks_the_best_and_spreads_ties() {
        assert_eq!(select(&[None, Some(3), Some(7), None]), Some((2, 7)));
        assert_eq!(select(&[None, None]), None);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(select(&[Some(5), Some(1), Some(5), Some(5)]).map(|(i, _)| i));
        }
        assert_eq!(seen.len(), 3, "every tied node gets picked: {seen:?}");
        assert!(!seen.contains(&Some(1)));
    }
}
