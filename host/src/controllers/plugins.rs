//! `Plugin` objects (`wasmkube.io/v1alpha1`): a plugin applied with kubectl is loaded into
//! this server's plugin set, replaced when its spec changes, unloaded when it is deleted,
//! and its status says how that went: a `Ready` condition, the digest serving, the last
//! few digests (so a rollback is one apply of an older module), the last load error; and,
//! every [`REPORT_EVERY`], what it has done on each server (`status.activity`, one entry
//! per API server): calls, denials, errors, and for a shadow its disagreements with the
//! live plugin and the last few of them.
//!
//! Every API server runs it (each has its own plugin set); status writes are idempotent
//! (the counts are this server's).
//! It follows Plugin objects through the registry's list and watch, never storage.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::plugins::{Manifest, PluginSet};
use crate::registry::{
    Error, EventType, ListOptions, Object, Registry, Resource, Subresource, WatchEvent, WriteOptions,
};

/// How many earlier digests a Plugin's status keeps.
const HISTORY: usize = 5;

/// Who writes Plugin status (managedFields).
const MANAGER: &str = "wasmkube-plugins";

/// How often a Plugin's counts reach its status (when they changed).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Load every Plugin object that exists now, then follow them until `stop` turns true.
/// `server` names this API server in the Plugins' `status.activity` (its address).
pub async fn start(
    registry: Arc<Registry>,
    plugins: Arc<PluginSet>,
    server: String,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let resource = registry
        .resource("wasmkube.io", "v1alpha1", "plugins")
        .ok_or_else(|| Error::Internal("plugins.wasmkube.io is not served".into()))?;
    let list = registry.list(&resource, None, ListOptions::default()).await?;
    for object in &list.items {
        consider(&registry, &plugins, &resource, object).await;
    }
    tokio::spawn(report(registry.clone(), plugins.clone(), resource.clone(), server, stop.clone()));
    tokio::spawn(run(registry, plugins, resource, list.resource_version, stop));
    Ok(())
}

/// Copy each Plugin object's activity on this server into its status when it changed;
/// and, every few rounds, retry Plugins that failed for want of an uploaded module that
/// has been uploaded since (nothing else would tell the controller).
async fn report(
    registry: Arc<Registry>,
    plugins: Arc<PluginSet>,
    resource: Resource,
    server: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut reported: std::collections::HashMap<String, u64> = Default::default();
    let mut round = 0u64;
    loop {
        tokio::select! { _ = tokio::time::sleep(REPORT_EVERY) => {}, _ = stop.changed() => return }
        if *stop.borrow() {
            return;
        }
        round += 1;
        if round % 5 == 0 {
            retry_missing_modules(&registry, &plugins, &resource).await;
        }
        let admission = plugins
            .snapshot()
            .iter()
            .map(|p| (p.source.clone(), p.activity.clone(), p.manifest.mode.clone()))
            .collect::<Vec<_>>();
        let controllers = plugins
            .controllers()
            .iter()
            .map(|c| (c.source.clone(), c.activity.clone(), c.manifest.mode.clone()))
            .collect::<Vec<_>>();
        let policies = plugins
            .policies()
            .iter()
            .map(|p| (p.source.clone(), p.activity.clone(), p.manifest.mode.clone()))
            .collect::<Vec<_>>();
        for (source, activity, mode) in admission.into_iter().chain(controllers).chain(policies) {
            let Some(name) = source.strip_prefix("plugin/") else { continue };
            let version = activity.version();
            if reported.get(name) == Some(&version) {
                continue;
            }
            let shadow = matches!(mode, crate::plugins::Mode::Shadow { .. });
            match write_activity(&registry, &resource, name, &server, activity.status_fields(shadow)).await {
                Ok(()) => {
                    reported.insert(name.to_string(), version);
                }
                // Changed meanwhile, or gone: the next round sees.
                Err(Error::Conflict { .. } | Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(plugin = %name, error = %e, "cannot report a Plugin's activity"),
            }
        }
    }
}

/// Load the Plugins that name an uploaded module which was missing when they were seen.
async fn retry_missing_modules(registry: &Registry, plugins: &PluginSet, resource: &Resource) {
    let Ok(list) = registry.list(resource, None, ListOptions::default()).await else { return };
    for object in &list.items {
        let module = object.get("spec").and_then(|s| s.get("module")).and_then(Value::as_str).unwrap_or_default();
        let waiting = plugins.serving(&name_of(object)).is_none()
            && module.starts_with("sha256:")
            && object
                .get("status")
                .and_then(|s| s.get("lastError"))
                .and_then(Value::as_str)
                .is_some_and(|e| e.contains("was uploaded"));
        if waiting && matches!(registry.module_info(module).await, Ok(Some(_))) {
            let mut retry = object.clone();
            // Not observed yet, as far as `consider` is concerned.
            if let Some(Value::Object(status)) = retry.get_mut("status") {
                status.remove("observedGeneration");
            }
            consider(registry, plugins, resource, &retry).await;
        }
    }
}

/// Put this server's `fields` in the Plugin's `status.activity` (one entry per server,
/// so API servers on one store never overwrite each other's counts).
async fn write_activity(
    registry: &Registry,
    resource: &Resource,
    name: &str,
    server: &str,
    fields: serde_json::Map<String, Value>,
) -> Result<(), Error> {
    let mut object = registry.get(resource, None, name).await?;
    let mut status = object.get("status").filter(|s| s.is_object()).cloned().unwrap_or_else(|| json!({}));
    let mut entry = serde_json::Map::new();
    entry.insert("server".into(), json!(server));
    entry.extend(fields);
    let mut activity: Vec<Value> = status["activity"].as_array().cloned().unwrap_or_default();
    activity.retain(|e| e.get("server").and_then(Value::as_str) != Some(server));
    activity.push(Value::Object(entry));
    activity.sort_by(|a, b| a["server"].as_str().cmp(&b["server"].as_str()));
    status["activity"] = Value::Array(activity);
    object.insert("status".into(), status);
    let options = WriteOptions { field_manager: Some(MANAGER.into()), ..WriteOptions::default() };
    registry.update(resource, None, name, Value::Object(object), Some(Subresource::Status), &options).await.map(|_| ())
}

async fn run(
    registry: Arc<Registry>,
    plugins: Arc<PluginSet>,
    resource: Resource,
    mut since: i64,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    // Stop when told, or when the sender is gone (a dropped server).
    while !*stop.borrow() && stop.has_changed().is_ok() {
        match registry.watch(&resource, None, since, false, Default::default()).await {
            Ok(events) => {
                failures = 0;
                let mut events = Box::pin(events);
                loop {
                    tokio::select! {
                        event = events.next() => match event {
                            Some(WatchEvent::Change(change)) => {
                                let Ok(object) = change.object() else { continue };
                                if change.event_type() == EventType::Deleted {
                                    plugins.unload(&name_of(&object));
                                } else {
                                    consider(&registry, &plugins, &resource, &object).await;
                                }
                            }
                            Some(WatchEvent::Bookmark(_)) => {}
                            Some(WatchEvent::Expired(_)) | None => break,
                        },
                        _ = stop.changed() => return,
                    }
                }
            }
            // Whatever the reason — most often a revision older than the watch cache's
            // window (410 Gone: the cache listed after this controller did) — only a new
            // list gives a revision to watch from; retrying the same one would fail forever.
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "Plugin controller: cannot watch; listing again");
                let delay = Duration::from_millis(200 * u64::from(failures.min(25)));
                tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = stop.changed() => return }
            }
        }
        // The watch ended or could not start: list again (and unload what is gone).
        match registry.list(&resource, None, ListOptions::default()).await {
            Ok(list) => {
                let names: Vec<String> = list.items.iter().map(name_of).collect();
                for (name, _, _) in plugins.names().into_iter().filter(|(_, source, _)| source.starts_with("plugin/")) {
                    if !names.contains(&name) {
                        plugins.unload(&name);
                    }
                }
                for object in &list.items {
                    consider(&registry, &plugins, &resource, object).await;
                }
                since = list.resource_version;
            }
            Err(e) => tracing::warn!(error = %e, "Plugin controller: cannot list Plugins"),
        }
    }
}

fn name_of(object: &Object) -> String {
    object.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// The module a Plugin names: `sha256:<hex>` (uploaded through the API), `builtin:<file>`
/// or an absolute path on the server.
async fn module_bytes(registry: &Registry, module: &str) -> Result<Vec<u8>, String> {
    if module.starts_with("sha256:") {
        return match registry.module(module).await {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(format!(
                "no module {module} was uploaded (POST it to /apis/wasmkube.io/v1alpha1/modules, or use wasmkube plugin load)"
            )),
            Err(e) => Err(format!("cannot read the module {module}: {e}")),
        };
    }
    if let Some(file) = module.strip_prefix("builtin:") {
        return crate::plugins::builtin::module(file)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("no built-in module {file:?} in this binary"));
    }
    if !std::path::Path::new(module).is_absolute() {
        return Err(format!(
            "spec.module {module:?} must be an uploaded module's digest (sha256:...), an absolute path on the server, or builtin:<file>"
        ));
    }
    std::fs::read(module).map_err(|e| format!("cannot read the module {module}: {e}"))
}

/// Load `object` if its spec changed since it was last loaded, and report in its status.
async fn consider(registry: &Registry, plugins: &PluginSet, resource: &Resource, object: &Object) {
    let name = name_of(object);
    let metadata = object.get("metadata");
    if metadata.and_then(|m| m.get("deletionTimestamp")).is_some() {
        return;
    }
    let generation = metadata.and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(0);
    let status = object.get("status").filter(|s| s.is_object()).cloned().unwrap_or_else(|| json!({}));
    let observed = status.get("observedGeneration").and_then(Value::as_i64);
    // This generation was tried already on this server: it serves, or its failure is on
    // record (retrying would only fail again; a missing uploaded module is retried by
    // `report`). A failure another server (or this one before a restart) recorded is
    // tried again, so that a plugin failing closed fails closed here too.
    let tried = plugins.serving(&name).is_some()
        || (status.get("lastError").is_some_and(|e| !e.is_null()) && plugins.last_error(&name).is_some());
    if observed == Some(generation) && tried {
        return;
    }
    let mut manifest_value = Value::Object(object.clone());
    if let Some(Value::Object(m)) = manifest_value.get_mut("metadata") {
        m.retain(|k, _| k == "name");
    }
    let outcome = match Manifest::from_value(&manifest_value) {
        Err(e) => Err(format!("invalid manifest: {e}")),
        Ok(manifest) => match module_bytes(registry, &manifest.module).await {
            Err(e) => {
                plugins.failed_to_load(&manifest, &e);
                Err(e)
            }
            Ok(bytes) => plugins.load(manifest, bytes, &format!("plugin/{name}")).await.map_err(|e| e.to_string()),
        },
    };
    let mut status = status;
    status["observedGeneration"] = json!(generation);
    let serving = plugins.serving(&name);
    match (&outcome, &serving) {
        (Ok(digest), _) => {
            let mut history: Vec<Value> = status["digests"].as_array().cloned().unwrap_or_default();
            history.retain(|d| d != digest);
            history.insert(0, json!(digest));
            history.truncate(HISTORY);
            status["digest"] = json!(digest);
            status["digests"] = Value::Array(history);
            status["lastError"] = Value::Null;
            super::set_condition(&mut status, "Ready", "True", "Loaded", &format!("serving {digest}"));
        }
        (Err(why), Some(old)) => {
            status["lastError"] = json!(why);
            super::set_condition(
                &mut status,
                "Ready",
                "True",
                "OldVersionServing",
                &format!("the new version failed to load; {old} still serves: {why}"),
            );
        }
        (Err(why), None) => {
            status["lastError"] = json!(why);
            super::set_condition(&mut status, "Ready", "False", "LoadFailed", why);
        }
    }
    if let Value::Object(map) = &mut status {
        map.retain(|_, v| !v.is_null());
    }
    // Another server reporting the same is a no-op update (no write, no event).
    let mut body = object.clone();
    body.insert("status".into(), status.clone());
    let options = WriteOptions { field_manager: Some(MANAGER.into()), ..WriteOptions::default() };
    // A conflict with a write that kept the spec (the activity report, another server's
    // status) is retried on the newer object, or observedGeneration would stay behind and
    // the next event would load this version again; a newer spec is its own event.
    for _ in 0..5 {
        match registry.update(resource, None, &name, Value::Object(body), Some(Subresource::Status), &options).await {
            Ok(_) | Err(Error::NotFound { .. }) => return,
            Err(Error::Conflict { .. }) => {
                let Ok(mut latest) = registry.get(resource, None, &name).await else { return };
                let latest_generation =
                    latest.get("metadata").and_then(|m| m.get("generation")).and_then(Value::as_i64);
                if latest_generation != Some(generation) {
                    return;
                }
                let mut merged = latest.get("status").cloned().unwrap_or_else(|| json!({}));
                if let (Value::Object(merged), Value::Object(ours)) = (&mut merged, &status) {
                    for key in ["observedGeneration", "digest", "digests", "lastError", "conditions"] {
                        match ours.get(key) {
                            Some(value) => merged.insert(key.into(), value.clone()),
                            None => merged.remove(key),
                        };
                    }
                }
                latest.insert("status".into(), merged);
                body = latest;
            }
            Err(e) => {
                tracing::warn!(plugin = %name, error = %e, "cannot report a Plugin's status");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{PluginMetrics, Runtime, RuntimeConfig};
    use crate::registry::testing::TestRegistry;
    use crate::storage::StorageMetrics;

    /// A watch the cache refuses as too old (it listed after this controller did: 410 Gone)
    /// is followed by a new list, not retried from the same revision forever — which left
    /// every Plugin created afterwards unloaded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_refused_as_too_old_lists_again() {
        // A cluster seeded before this registry (and its watch caches) start: each cache's
        // window begins after those writes, so a watch from revision 1 is too old.
        let seeded = TestRegistry::start().await;
        let registry = Arc::new(Registry::new(seeded.store.clone(), StorageMetrics::unregistered()));
        // Plugin is a kind the seed defines by a CRD (the CRD controller serves it).
        let crds = registry.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("served");
        let crd = registry.get(&crds, None, "plugins.wasmkube.io").await.expect("the Plugin CRD");
        registry.serve_custom(&crd).expect("the Plugin CRD is served");
        let resource = registry.resource("wasmkube.io", "v1alpha1", "plugins").expect("plugins are served");
        let plugin = json!({
            "apiVersion": "wasmkube.io/v1alpha1", "kind": "Plugin", "metadata": {"name": "gate"},
            "spec": {"kind": "admission", "module": "/nonexistent/gate.wasm", "phases": ["validate"],
                     "rules": [{"apiGroups": [""], "resources": ["configmaps"], "operations": ["CREATE"]}]},
        });
        registry.create(&resource, None, plugin, &WriteOptions::default()).await.expect("create");
        let set = PluginSet::new(
            Runtime::new(RuntimeConfig { cache_dir: None, instance_slots: 4, ..RuntimeConfig::default() })
                .expect("runtime"),
            PluginMetrics::unregistered().expect("metrics"),
        );
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(run(registry.clone(), set, resource.clone(), 1, stopped));
        // Found by the list that follows the refused watch: its failure is in its status.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            let object = registry.get(&resource, None, "gate").await.expect("get");
            if let Some(status) = object.get("status").filter(|s| s.get("observedGeneration").is_some()) {
                break status.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "the Plugin was never considered: {object:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status["conditions"][0]["reason"], "LoadFailed", "{status}");
        assert!(status["lastError"].as_str().is_some_and(|e| e.contains("/nonexistent/gate.wasm")), "{status}");
        stop.send_replace(true);
    }
}
