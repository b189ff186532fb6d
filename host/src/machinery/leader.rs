//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's algorithm:
//!
//! - a candidate takes the Lease if nobody holds it (no Lease, an empty
//!   `holderIdentity`), or if the record has not changed for `lease_duration` *by its own
//!   clock* (it never trusts the holder's `renewTime`); it tries every `retry_period`
//!   (with jitter), and at once when it sees the Lease change (it watches it), so a
//!   released Lease is taken immediately;
//! - the leader renews every `retry_period`; if it cannot renew within `renew_deadline`
//!   (shorter than the lease), it stops leading before the Lease can expire;
//! - a leader that shuts down releases the Lease (empty holder, duration 1 s).
//!
//! Every write is a compare-and-swap on the Lease's resourceVersion, through the [`Client`].
//! `holderIdentity`, `acquireTime`, `renewTime`, `leaseDurationSeconds` and
//! `leaseTransitions` are kept as client-go keeps them.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::client::Client;
use crate::registry::{ApiResource, Error, WatchEvent, WriteOptions};

/// How a Lease is held.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    pub namespace: String,
    pub name: String,
    /// Who this process is (`<hostname>_<uuid>`).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A fresh identity for this process, as kube-controller-manager makes one.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{}_{}", if host.is_empty() { "wasmkube" } else { &host }, uuid::Uuid::new_v4())
}

/// What this candidate last saw of the Lease, and when (by its own clock) it changed.
struct Observed {
    record: Value,
    at: Instant,
}

impl Observed {
    /// Note the Lease's record as read now: the clock restarts only if it changed (a
    /// holder's renewals change it; clocks of other machines are never compared).
    fn see(observed: &mut Option<Observed>, record: &Value) {
        if observed.as_ref().is_none_or(|o| o.record != *record) {
            *observed = Some(Observed { record: record.clone(), at: Instant::now() });
        }
    }

    /// Whether the holder's claim still stands: its record changed less than `held_for` ago.
    fn still_valid(observed: &Option<Observed>, held_for: Duration) -> bool {
        observed.as_ref().is_some_and(|o| o.at.elapsed() < held_for)
    }
}

/// Take part in the election until `stop`: `leading` is true exactly while this process
/// holds the Lease.
/// `idle` is true once the work guarded by the Lease has stopped: a leader that shuts down
/// releases the Lease only then (within a bound), so its successor never overlaps it.
pub async fn run(
    client: Arc<dyn Client>,
    config: ElectionConfig,
    leading: watch::Sender<bool>,
    mut idle: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(leases) = client.resource("coordination.k8s.io", "v1", "leases") else {
        tracing::error!("leases are not served: this server cannot take part in leader election");
        return;
    };
    let changed = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(follow_lease(client.clone(), leases, config.clone(), changed.clone(), stop.clone()));
    let mut observed: Option<Observed> = None;
    loop {
        // Candidate: try until the Lease is ours.
        loop {
            if *stop.borrow() || stop.has_changed().is_err() {
                return;
            }
            match try_acquire_or_renew(client.as_ref(), &leases, &config, &mut observed).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::debug!(lease = %config.name, error = %e, "cannot read or take the lease yet"),
            }
            let jitter = config.retry_period.mul_f64(rand::random::<f64>() * 1.2);
            tokio::select! {
                _ = tokio::time::sleep(config.retry_period + jitter) => {}
                _ = changed.notified() => {}
                _ = stop.changed() => {}
            }
        }
        tracing::info!(lease = %format!("{}/{}", config.namespace, config.name), identity = %config.identity, "became leader");
        leading.send_replace(true);
        // Leader: renew every retry period; give up if no renewal succeeds within the deadline.
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(config.retry_period) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() || stop.has_changed().is_err() {
                leading.send_replace(false);
                if tokio::time::timeout(config.renew_deadline, idle.wait_for(|i| *i)).await.is_err() {
                    tracing::warn!(lease = %config.name, "the controllers did not stop in time; releasing the lease anyway");
                }
                release(client.as_ref(), &leases, &config).await;
                return;
            }
            let attempt = tokio::time::timeout(
                config.renew_deadline.saturating_sub(renewed.elapsed()),
                try_acquire_or_renew(client.as_ref(), &leases, &config, &mut observed),
            )
            .await;
            match attempt {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %config.name, "another process holds the lease: no longer leading");
                    break;
                }
                Ok(Err(e)) => tracing::warn!(lease = %config.name, error = %e, "cannot renew the lease"),
                Err(_) => {}
            }
            if renewed.elapsed() >= config.renew_deadline {
                tracing::warn!(lease = %config.name, deadline = ?config.renew_deadline, "could not renew the lease in time: no longer leading");
                break;
            }
        }
        leading.send_replace(false);
    }
}

fn micro_time() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// One step of client-go's `tryAcquireOrRenew`: true if this process holds the Lease after it.
async fn try_acquire_or_renew(
    client: &dyn Client,
    leases: &ApiResource,
    config: &ElectionConfig,
    observed: &mut Option<Observed>,
) -> Result<bool, Error> {
    let options = WriteOptions { field_manager: Some("wasmkube-leader-election".into()), ..WriteOptions::default() };
    let now = micro_time();
    // Whole seconds, rounded up: a lease that others see as shorter than the leader's
    // renew deadline could be taken while it still acts.
    let duration = (config.lease_duration.as_secs_f64().ceil() as u64).max(1);
    let current = match client.get(leases, Some(&config.namespace), &config.name).await {
        Ok(lease) => lease,
        Err(Error::NotFound { .. }) => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": config.name, "namespace": config.namespace},
                "spec": {
                    "holderIdentity": config.identity, "leaseDurationSeconds": duration,
                    "acquireTime": now, "renewTime": now, "leaseTransitions": 0,
                },
            });
            return match client.create(leases, Some(&config.namespace), lease, &options).await {
                Ok(_) => Ok(true),
                Err(Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let spec = current.get("spec").cloned().unwrap_or_else(|| json!({}));
    let holder = spec.get("holderIdentity").and_then(Value::as_str).unwrap_or_default().to_string();
    Observed::see(observed, &spec);
    let held_for = spec.get("leaseDurationSeconds").and_then(Value::as_u64).unwrap_or(duration);
    let still_valid = Observed::still_valid(observed, Duration::from_secs(held_for));
    if !holder.is_empty() && holder != config.identity && still_valid {
        return Ok(false);
    }
    let transitions = spec.get("leaseTransitions").and_then(Value::as_i64).unwrap_or(0);
    let acquire_time = if holder == config.identity {
        spec.get("acquireTime").cloned().unwrap_or_else(|| json!(now))
    } else {
        json!(now)
    };
    let mut lease = current.clone();
    lease.insert(
        "spec".into(),
        json!({
            "holderIdentity": config.identity,
            "leaseDurationSeconds": duration,
            "acquireTime": acquire_time,
            "renewTime": now,
            "leaseTransitions": if holder == config.identity { transitions } else { transitions + 1 },
        }),
    );
    match client.update(leases, Some(&config.namespace), &config.name, Value::Object(lease), None, &options).await {
        Ok(written) => {
            let spec = written.object.get("spec").cloned().unwrap_or_default();
            *observed = Some(Observed { record: spec, at: Instant::now() });
            Ok(true)
        }
        Err(Error::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Give the Lease up (client-go's ReleaseOnCancel): no holder, so a candidate takes it at once.
async fn release(client: &dyn Client, leases: &ApiResource, config: &ElectionConfig) {
    let Ok(mut lease) = client.get(leases, Some(&config.namespace), &config.name).await else { return };
    let spec = lease.get("spec").cloned().unwrap_or_default();
    if spec.get("holderIdentity").and_then(Value::as_str) != Some(config.identity.as_str()) {
        return;
    }
    let now = micro_time();
    lease.insert(
        "spec".into(),
        json!({
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": spec.get("leaseTransitions").cloned().unwrap_or(json!(0)),
        }),
    );
    let options = WriteOptions { field_manager: Some("wasmkube-leader-election".into()), ..WriteOptions::default() };
    match client.update(leases, Some(&config.namespace), &config.name, Value::Object(lease), None, &options).await {
        Ok(_) => tracing::info!(lease = %config.name, identity = %config.identity, "released the lease"),
        Err(e) => tracing::warn!(lease = %config.name, error = %e, "cannot release the lease"),
    }
}

/// Wake the candidate whenever the Lease changes.
async fn follow_lease(
    client: Arc<dyn Client>,
    leases: ApiResource,
    config: ElectionConfig,
    changed: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let needle = format!("\"name\":\"{}\"", config.name);
    while !*stop.borrow() && stop.has_changed().is_ok() {
        let events = match client.watch(&leases, Some(&config.namespace), 0, false, Default::default()).await {
            Ok(events) => events,
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the lease; retrying");
                tokio::select! { _ = tokio::time::sleep(config.retry_period) => continue, _ = stop.changed() => return }
            }
        };
        let mut events = Box::pin(events);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(WatchEvent::Change(change)) => {
                        if change.stored().windows(needle.len()).any(|w| w == needle.as_bytes()) {
                            changed.notify_one();
                        }
                    }
                    Some(WatchEvent::Bookmark(_)) => {}
                    Some(WatchEvent::Expired(_)) | None => break,
                },
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A candidate takes a Lease only once its record has not changed for the lease's
    /// duration on the candidate's own clock (paused tokio time: no store is touched).
    #[tokio::test(start_paused = true)]
    async fn a_lease_expires_only_after_its_record_stops_changing_for_its_duration() {
        let held_for = Duration::from_secs(15);
        let renewed = |at: &str| json!({"holderIdentity": "other", "renewTime": at, "leaseDurationSeconds": 15});
        let mut observed = None;
        assert!(!Observed::still_valid(&observed, held_for), "nothing seen: nothing holds");
        Observed::see(&mut observed, &renewed("t1"));
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(Observed::still_valid(&observed, held_for));
        // A renewal restarts the clock, whatever time it says it was written at.
        Observed::see(&mut observed, &renewed("t2"));
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(Observed::still_valid(&observed, held_for));
        // The same record read again does not.
        Observed::see(&mut observed, &renewed("t2"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!Observed::still_valid(&observed, held_for), "15 s without a change: expired");
    }
}

/// Run `work` on a task of its own each time `leading` turns true, telling it to stop (its
/// receiver turns true) and awaiting it when leadership is lost; return at `stop`. What a
/// leader-only controller of the host does with its term.
pub async fn while_leading<F, Fut>(mut leading: watch::Receiver<bool>, mut stop: watch::Receiver<bool>, mut work: F)
where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        if *leading.borrow_and_update() {
            let (done, finished) = watch::channel(false);
            let handle = tokio::spawn(work(finished));
            tokio::select! {
                _ = leading.wait_for(|l| !*l) => {},
                _ = stop.wait_for(|s| *s) => {},
            }
            let _ = done.send(true);
            let _ = handle.await;
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}
