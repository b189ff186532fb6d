//! The CRD controller (apiextensions-apiserver's, in part): every
//! `CustomResourceDefinition` is served by this server's registry as soon as it is seen,
//! and its status says so (`NamesAccepted`, `Established`, `acceptedNames`,
//! `storedVersions`). A CRD being deleted loses its custom resources first (the
//! `customresourcecleanup` finalizer), then it goes and its resources stop being served.
//!
//! Every API server runs it (each serves what the CRDs define); status writes are
//! idempotent, so servers sharing a store agree. It follows CRDs through the registry's
//! list and watch, never storage.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::registry::{
    DeleteOptions, Error, EventType, ListOptions, Object, Registry, Resource, Revision, Subresource, WatchEvent,
    WriteOptions, CLEANUP_FINALIZER,
};

/// Who writes CRD status (managedFields).
const MANAGER: &str = "wasmkube-apiextensions";

/// Serve every CRD that exists now (so a restarted server serves its custom resources
/// before it reports ready), then follow CRDs until `stop` turns true.
pub async fn start(registry: Arc<Registry>, stop: watch::Receiver<bool>) -> Result<(), Error> {
    let crds = crds(&registry)?;
    let list = registry.list(&crds, None, ListOptions::default()).await?;
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    for crd in &list.items {
        consider(&registry, &crds, crd, &in_flight).await;
    }
    tokio::spawn(run(registry, crds, list.resource_version, in_flight, stop));
    Ok(())
}

fn crds(registry: &Registry) -> Result<Resource, Error> {
    registry
        .resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .ok_or_else(|| Error::Internal("customresourcedefinitions are not served".into()))
}

async fn run(
    registry: Arc<Registry>,
    crds: Resource,
    mut since: Revision,
    in_flight: Arc<Mutex<HashSet<String>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    // Stop when told, or when the sender is gone (a dropped server).
    while !*stop.borrow() && stop.has_changed().is_ok() {
        match follow(&registry, &crds, since, &in_flight, &mut stop).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "CRD controller: watch failed; listing again");
                let delay = Duration::from_millis(200 * u64::from(failures.min(25)));
                tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = stop.changed() => return }
            }
        }
        // After a watch ends: list again, and drop what no longer exists.
        match registry.list(&crds, None, ListOptions::default()).await {
            Ok(list) => {
                let names: HashSet<String> = list.items.iter().map(name_of).collect();
                for gone in registry.custom_names().into_iter().filter(|n| !names.contains(n)) {
                    registry.unserve_custom(&gone);
                }
                for crd in &list.items {
                    consider(&registry, &crds, crd, &in_flight).await;
                }
                since = list.resource_version;
            }
            Err(e) => tracing::warn!(error = %e, "CRD controller: cannot list CRDs"),
        }
    }
}

/// One watch from `since`; returns when it ends.
async fn follow(
    registry: &Arc<Registry>,
    crds: &Resource,
    since: Revision,
    in_flight: &Arc<Mutex<HashSet<String>>>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut events = Box::pin(registry.watch(crds, None, since, false, Default::default()).await?);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(WatchEvent::Change(change)) => {
                    let Ok(crd) = change.object() else { continue };
                    if change.event_type() == EventType::Deleted {
                        registry.unserve_custom(&name_of(&crd));
                    } else {
                        consider(registry, crds, &crd, in_flight).await;
                    }
                }
                Some(WatchEvent::Bookmark(_)) => {}
                Some(WatchEvent::Expired(_)) | None => return Ok(()),
            },
            _ = stop.changed() => return Ok(()),
        }
    }
}

fn name_of(object: &Object) -> String {
    object.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Serve `crd` and report it in its status; or, if it is being deleted, clean it up.
async fn consider(registry: &Arc<Registry>, crds: &Resource, crd: &Object, in_flight: &Arc<Mutex<HashSet<String>>>) {
    let name = name_of(crd);
    let deleting = crd.get("metadata").and_then(|m| m.get("deletionTimestamp")).is_some();
    let served = registry.serve_custom(crd);
    if deleting {
        if in_flight.lock().insert(name.clone()) {
            let (registry, crds, in_flight) = (registry.clone(), crds.clone(), in_flight.clone());
            let uid = crd.get("metadata").and_then(|m| m.get("uid")).cloned().unwrap_or_default();
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(50);
                loop {
                    match clean_up(&registry, &crds, &name, &uid).await {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(crd = %name, error = %e, "cannot clean up a deleted CRD yet"),
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                in_flight.lock().remove(&name);
            });
        }
        return;
    }
    let mut status = crd.get("status").cloned().unwrap_or_else(|| json!({}));
    match served {
        Ok(accepted) => {
            super::set_condition(&mut status, "NamesAccepted", "True", "NoConflicts", "no conflicts found");
            super::set_condition(
                &mut status,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            );
            status["acceptedNames"] = accepted;
            let storage = crd
                .get("spec")
                .and_then(|s| s.get("versions"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|v| v.get("storage").and_then(Value::as_bool).unwrap_or(false))
                .and_then(|v| v.get("name").cloned());
            let stored = status["storedVersions"].as_array().cloned().unwrap_or_default();
            if let Some(storage) = storage.filter(|s| !stored.contains(s)) {
                status["storedVersions"] = Value::Array(stored.into_iter().chain([storage]).collect());
            }
        }
        Err(causes) => {
            let why: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
            tracing::warn!(crd = %name, problems = %why.join("; "), "cannot serve a CRD");
            super::set_condition(&mut status, "NamesAccepted", "False", "InvalidDefinition", &why.join("; "));
            super::set_condition(&mut status, "Established", "False", "NotAccepted", "not all names are accepted");
        }
    }
    // The same status again (every server reports it) is a no-op update: no write, no event.
    let mut body = crd.clone();
    body.insert("status".into(), status);
    let options = WriteOptions { field_manager: Some(MANAGER.into()), ..WriteOptions::default() };
    match registry.update(crds, None, &name, Value::Object(body), Some(Subresource::Status), &options).await {
        // A newer version of the CRD is on its way as a watch event; it is considered then.
        Ok(_) | Err(Error::Conflict { .. } | Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!(crd = %name, error = %e, "cannot report a CRD's status"),
    }
}

/// Delete the custom resources of the CRD `name` (the one with `uid`, being deleted);
/// once none is left, remove its cleanup finalizer (which removes the CRD). Returns
/// whether the CRD is done with (also when it is gone, or a new CRD took its name).
async fn clean_up(registry: &Registry, crds: &Resource, name: &str, uid: &Value) -> Result<bool, Error> {
    let crd = match registry.get(crds, None, name).await {
        Ok(crd) => crd,
        Err(Error::NotFound { .. }) => return Ok(true),
        Err(e) => return Err(e),
    };
    let metadata = crd.get("metadata");
    if metadata.and_then(|m| m.get("uid")) != Some(uid) || metadata.and_then(|m| m.get("deletionTimestamp")).is_none() {
        return Ok(true);
    }
    let spec = crd.get("spec");
    let group = spec.and_then(|s| s.get("group")).and_then(Value::as_str).unwrap_or_default();
    let plural = spec.and_then(|s| s.pointer("/names/plural")).and_then(Value::as_str).unwrap_or_default();
    // Every version shares one storage prefix: deleting through one of them is enough.
    let resource = registry.resources().into_iter().find(|r| r.group == group && r.plural == plural);
    if let Some(resource) = resource {
        let deleted =
            registry.delete_collection(&resource, None, ListOptions::default(), &DeleteOptions::default()).await?;
        let remaining = registry.list(&resource, None, ListOptions::default()).await?.items.len();
        if remaining > 0 {
            tracing::debug!(crd = %name, deleted = deleted.items.len(), remaining, "waiting for custom resources' finalizers");
            return Ok(false);
        }
    }
    let mut crd = crd;
    let finalizers: Vec<Value> = crd
        .get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| f.iter().filter(|f| *f != CLEANUP_FINALIZER).cloned().collect())
        .unwrap_or_default();
    if let Some(Value::Object(metadata)) = crd.get_mut("metadata") {
        metadata.insert("finalizers".into(), Value::Array(finalizers));
    }
    let options = WriteOptions { field_manager: Some(MANAGER.into()), ..WriteOptions::default() };
    match registry.update(crds, None, name, Value::Object(crd), None, &options).await {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(true),
        Err(Error::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
