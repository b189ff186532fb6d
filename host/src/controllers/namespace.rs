//! The namespace finalizer: a namespace being deleted (`deletionTimestamp` set, phase
//! Terminating) loses everything in it, then its `kubernetes` finalizer, and then it is
//! gone. Objects with finalizers of their own hold the namespace until those are removed.
//!
//! It follows namespaces with a list and a watch through the registry and retries with
//! backoff; it never touches storage directly. (The controller issue replaces it with a
//! plugin on the controller host.)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;

use crate::registry::{DeleteOptions, ListOptions, Object, Registry, Resource, Subresource, WatchEvent, WriteOptions};

/// The finalizer kube-apiserver puts in every namespace's `spec.finalizers`.
const FINALIZER: &str = "kubernetes";

/// Finalize terminating namespaces until `stop` turns true.
pub async fn run(registry: Arc<Registry>, mut stop: watch::Receiver<bool>) {
    let Some(namespaces) = registry.resource("", "v1", "namespaces") else { return };
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut failures = 0u32;
    // Stop when told, or when the sender is gone (a dropped server).
    while !*stop.borrow() && stop.has_changed().is_ok() {
        let pass = follow(&registry, &namespaces, &in_flight, &mut stop);
        if let Err(e) = pass.await {
            failures += 1;
            tracing::warn!(error = %e, "namespace finalizer: list or watch failed; retrying");
            let delay = Duration::from_millis(200 * u64::from(failures.min(25)));
            tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = stop.changed() => {} }
        } else {
            failures = 0;
        }
    }
}

/// One list and the watch after it; returns when the watch ends.
async fn follow(
    registry: &Arc<Registry>,
    namespaces: &Resource,
    in_flight: &Arc<Mutex<HashSet<String>>>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), crate::registry::Error> {
    let list = registry.list(namespaces, None, ListOptions::default()).await?;
    for namespace in &list.items {
        consider(registry, namespace, in_flight);
    }
    let mut events =
        Box::pin(registry.watch(namespaces, None, list.resource_version, false, Default::default()).await?);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(WatchEvent::Change(line)) => {
                    let object = serde_json::from_slice::<Value>(&line).ok().and_then(|e| match e.get("object") {
                        Some(Value::Object(object)) => Some(object.clone()),
                        _ => None,
                    });
                    if let Some(object) = object {
                        consider(registry, &object, in_flight);
                    }
                }
                Some(WatchEvent::Bookmark(_)) => {}
                Some(WatchEvent::Expired(_)) | None => return Ok(()),
            },
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// Start finalizing `namespace` if it is terminating and nobody is on it yet.
fn consider(registry: &Arc<Registry>, namespace: &Object, in_flight: &Arc<Mutex<HashSet<String>>>) {
    let metadata = namespace.get("metadata");
    let terminating = metadata.and_then(|m| m.get("deletionTimestamp")).is_some();
    let Some(name) = metadata.and_then(|m| m.get("name")).and_then(Value::as_str) else { return };
    if !terminating || !in_flight.lock().insert(name.to_string()) {
        return;
    }
    let (registry, in_flight, name) = (registry.clone(), in_flight.clone(), name.to_string());
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(50);
        loop {
            match finalize(&registry, &name).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(namespace = %name, error = %e, "cannot finalize namespace yet"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        in_flight.lock().remove(&name);
    });
}

/// Delete what is left in `name`; once nothing is, remove the namespace's finalizer.
/// Returns whether the namespace is done (finalized or already gone).
async fn finalize(registry: &Registry, name: &str) -> Result<bool, crate::registry::Error> {
    let mut remaining = 0;
    let contents: Vec<Resource> = registry.resources().into_iter().filter(|r| r.namespaced).collect();
    for resource in &contents {
        registry.delete_collection(resource, Some(name), ListOptions::default(), &DeleteOptions::default()).await?;
        remaining += registry.list(resource, Some(name), ListOptions::default()).await?.items.len();
    }
    if remaining > 0 {
        tracing::debug!(namespace = %name, remaining, "waiting for finalizers in a terminating namespace");
        return Ok(false);
    }
    let Some(namespaces) = registry.resource("", "v1", "namespaces") else { return Ok(true) };
    let mut namespace = match registry.get(&namespaces, None, name).await {
        Ok(namespace) => namespace,
        Err(crate::registry::Error::NotFound { .. }) => return Ok(true),
        Err(e) => return Err(e),
    };
    let finalizers: Vec<Value> = namespace
        .get("spec")
        .and_then(|s| s.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| f.iter().filter(|f| *f != FINALIZER).cloned().collect())
        .unwrap_or_default();
    namespace.insert("spec".into(), serde_json::json!({"finalizers": finalizers}));
    let body = Value::Object(namespace);
    match registry.update(&namespaces, None, name, body, Some(Subresource::Finalize), &WriteOptions::default()).await {
        Ok(_) | Err(crate::registry::Error::NotFound { .. }) => Ok(true),
        Err(crate::registry::Error::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
