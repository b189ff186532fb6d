//! The served set: every resource the registry serves, as [`Resource`] handles by (group,
//! version, plural). Built-ins from the start; a CRD's versions are installed and removed
//! as the CRD comes and goes (every version of one kind shares one watch cache, as they
//! share one storage prefix). A replaced or removed entry is retired, so handles resolved
//! before follow the change.
//!
//! Owns the map and the watch caches it starts; knows nothing of verbs or objects beyond a
//! CRD's definition (`custom.rs` parses it).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use super::object::ObjectExt;
use super::{builtin, custom, Cause, Object, Resource, Strategy};
use crate::storage::cache::{CacheConfig, WatchCache};
use crate::storage::{StorageMetrics, Store};

/// Where an entry is found: group, version, plural.
type Key = (&'static str, &'static str, &'static str);

/// What one CRD made the registry serve.
struct Custom {
    /// The CRD's spec as last installed: a CRD event with the same spec changes nothing.
    spec: Value,
    group: &'static str,
    plural: &'static str,
    versions: Vec<&'static str>,
    cache: Arc<WatchCache>,
    /// What the CRD's status reports as `acceptedNames`.
    accepted_names: Value,
}

pub(super) struct ServedSet {
    store: Arc<dyn Store>,
    metrics: StorageMetrics,
    entries: RwLock<BTreeMap<Key, Resource>>,
    /// CRD name -> what it serves.
    custom: Mutex<HashMap<String, Custom>>,
    /// Bumped whenever the set of served resources changes (discovery and OpenAPI follow it).
    generation: AtomicU64,
}

impl ServedSet {
    /// Every built-in resource, each with its own watch cache.
    pub(super) fn new(store: Arc<dyn Store>, metrics: StorageMetrics) -> Self {
        let set = Self {
            store,
            metrics,
            entries: RwLock::default(),
            custom: Mutex::default(),
            generation: AtomicU64::new(0),
        };
        {
            let mut entries = set.entries.write();
            for strategy in builtin::strategies() {
                let r = *strategy.resource();
                let cache = set.start_cache(r.prefix());
                entries.insert((r.group, r.version, r.plural), Resource::new(strategy, cache));
            }
        }
        set
    }

    fn start_cache(&self, prefix: String) -> Arc<WatchCache> {
        Arc::new(WatchCache::start(
            self.store.clone(),
            Bytes::from(prefix),
            CacheConfig::default(),
            self.metrics.clone(),
        ))
    }

    /// The resource `plural` in `group` at `version`, if served.
    pub(super) fn find(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        let entries = self.entries.read();
        // The map is covariant in its key, so it can be read with keys that live less long.
        let entries: &BTreeMap<(&str, &str, &str), Resource> = &entries;
        entries.get(&(group, version, plural)).cloned()
    }

    /// Every served resource, in a stable order.
    pub(super) fn all(&self) -> Vec<Resource> {
        self.entries.read().values().cloned().collect()
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Serve what `crd` defines (every served version), or change what it serves to match
    /// it. Returns the names the CRD was accepted with, or the CRD's problems.
    pub(super) fn serve_custom(&self, crd: &Object) -> Result<Value, Vec<Cause>> {
        let name = crd.metadata().get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let spec = crd.get("spec").cloned().unwrap_or_default();
        if let Some(served) = self.custom.lock().get(&name).filter(|served| served.spec == spec) {
            // Every event of a CRD (its status writes too) lands here: nothing to parse.
            return Ok(served.accepted_names.clone());
        }
        let definition = custom::Definition::parse(crd)?;
        let mut custom = self.custom.lock();
        let mut entries = self.entries.write();
        let claimed_elsewhere = definition.versions.iter().any(|v| {
            let r = v.resource();
            entries.contains_key(&(r.group, r.version, r.plural))
                && !custom.get(&name).is_some_and(|s| s.group == r.group && s.plural == r.plural)
        });
        if claimed_elsewhere {
            return Err(vec![Cause::invalid(
                "spec.names.plural",
                format!("Invalid value: {:?}: is already served in group {}", definition.plural, definition.group),
            )]);
        }
        let prefix = || format!("/registry/{}/{}/", definition.group, definition.plural);
        let cache = match custom.remove(&name) {
            Some(old) => {
                for version in &old.versions {
                    if let Some(retired) = entries.remove(&(old.group, *version, old.plural)) {
                        retired.retire();
                    }
                }
                if old.group == definition.group && old.plural == definition.plural {
                    old.cache
                } else {
                    old.cache.stop();
                    self.start_cache(prefix())
                }
            }
            None => self.start_cache(prefix()),
        };
        let mut versions = Vec::new();
        for version in definition.versions {
            let r = *version.resource();
            versions.push(r.version);
            let strategy: Arc<dyn Strategy> = version;
            entries.insert((r.group, r.version, r.plural), Resource::new(strategy, cache.clone()));
        }
        let accepted_names = definition.accepted_names.clone();
        custom.insert(
            name,
            Custom { spec, group: definition.group, plural: definition.plural, versions, cache, accepted_names },
        );
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(definition.accepted_names)
    }

    /// Stop serving what the CRD called `name` served (its objects stay in storage).
    pub(super) fn unserve_custom(&self, name: &str) {
        let Some(served) = self.custom.lock().remove(name) else { return };
        let mut entries = self.entries.write();
        for version in &served.versions {
            if let Some(retired) = entries.remove(&(served.group, *version, served.plural)) {
                retired.retire();
            }
        }
        served.cache.stop();
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The names of the CRDs whose resources are served.
    pub(super) fn custom_names(&self) -> Vec<String> {
        self.custom.lock().keys().cloned().collect()
    }
}
