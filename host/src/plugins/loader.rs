//! The loaded plugins ([`PluginSet`]) and where they come from: the defaults built into
//! the binary ([`Builtin`]) and a watched folder (`--plugin-dir`) of manifests and
//! components.
//!
//! Semantics: a new version is compiled and instantiated off the request path, then
//! swapped in atomically (the set is an `Arc` replaced whole; a call under way keeps the
//! version it started with). A version that fails to load leaves the old one serving and
//! its reason is kept (`last_error`) and logged. Removing a manifest unloads its plugin.
//!
//! Tiers: a module whose optimized artifact is not cached yet first serves from the
//! baseline compiler (Winch, several times faster to compile); Cranelift compiles it in
//! the background and the optimized module replaces the baseline one in place (same
//! digest, same decisions) unless a newer version was loaded meanwhile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::activity::Activity;
use super::admission::AdmissionModule;
use super::controller::ControllerModule;
use super::error::LoadError;
use super::instance::ModuleSettings;
use super::manifest::Manifest;
use super::metrics::{PluginMetrics, PluginSeries};
use super::policy::PolicyModule;
use super::runtime::{digest, Runtime};
use super::Client;

/// A plugin serving: its manifest, its module, and where it came from.
pub struct LoadedPlugin {
    pub manifest: Manifest,
    pub module: Arc<AdmissionModule>,
    /// "builtin", or the manifest's path.
    pub source: String,
    /// What it has done (shared by every version of this name).
    pub activity: Arc<Activity>,
    /// Its metric series for calls that decide.
    pub series: PluginSeries,
}

/// An admission plugin that fails closed and has no version serving: what it would
/// decide is refused, with why it is not loaded.
pub struct Unavailable {
    pub manifest: Manifest,
    pub why: String,
}

/// A controller plugin serving (the controller host runs it while it leads).
pub struct LoadedController {
    pub manifest: Manifest,
    pub module: Arc<ControllerModule>,
    /// "builtin", or the manifest's path.
    pub source: String,
    /// What it has done (shared by every version of this name).
    pub activity: Arc<Activity>,
}

/// A scheduler policy plugin serving (the scheduler asks it while it leads).
pub struct LoadedPolicy {
    pub manifest: Manifest,
    pub module: Arc<PolicyModule>,
    /// "builtin", or the manifest's path.
    pub source: String,
    /// What it has done (shared by every version of this name).
    pub activity: Arc<Activity>,
}

/// A default plugin compiled into the binary.
#[derive(Clone, Copy)]
pub struct Builtin {
    pub manifest: &'static str,
    pub module: &'static [u8],
}

/// Every loaded plugin, in call order (`order`, then name).
pub struct PluginSet {
    /// This set, for the background tasks it starts.
    me: std::sync::Weak<PluginSet>,
    runtime: Arc<Runtime>,
    /// Winch, for modules not compiled by Cranelift yet (None: always wait for Cranelift).
    baseline: Option<Arc<Runtime>>,
    client: OnceLock<Arc<dyn Client>>,
    /// What controllers read through `client` (the controller host's informer caches).
    controller_client: OnceLock<Arc<dyn Client>>,
    plugins: RwLock<Arc<Vec<Arc<LoadedPlugin>>>>,
    /// The controller plugins, by name.
    controllers: RwLock<Arc<Vec<Arc<LoadedController>>>>,
    /// The scheduler policy plugins, by name.
    policies: RwLock<Arc<Vec<Arc<LoadedPolicy>>>>,
    /// Bumped on every load and unload, for whoever follows the set.
    changes: tokio::sync::watch::Sender<u64>,
    /// Name -> why its last load failed (cleared by a load that works).
    errors: Mutex<HashMap<String, String>>,
    /// Admission plugins that fail closed but have no version serving: their requests
    /// are refused until one loads or the plugin goes.
    unavailable: RwLock<Arc<Vec<Arc<Unavailable>>>>,
    /// Per folder file: what was last loaded from it (manifest text + module digest).
    seen: Mutex<HashMap<PathBuf, (String, String)>>,
    /// Name -> what it has done (kept across its versions).
    activity: Mutex<HashMap<String, Arc<Activity>>>,
    metrics: PluginMetrics,
}

impl PluginSet {
    /// A set whose modules are compiled by `runtime` only.
    pub fn new(runtime: Arc<Runtime>, metrics: PluginMetrics) -> Arc<Self> {
        Self::tiered(runtime, None, metrics)
    }

    /// A set that serves new modules from `baseline` (Winch) until `runtime` (Cranelift)
    /// has compiled them.
    pub fn tiered(runtime: Arc<Runtime>, baseline: Option<Arc<Runtime>>, metrics: PluginMetrics) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            runtime,
            baseline,
            client: OnceLock::new(),
            controller_client: OnceLock::new(),
            plugins: RwLock::default(),
            controllers: RwLock::default(),
            policies: RwLock::default(),
            changes: tokio::sync::watch::Sender::new(0),
            errors: Mutex::default(),
            unavailable: RwLock::default(),
            seen: Mutex::default(),
            activity: Mutex::default(),
            metrics,
        })
    }

    /// What plugins read through `client` (set once, before plugins load).
    pub fn set_client(&self, client: Arc<dyn Client>) {
        let _ = self.client.set(client);
    }

    /// What controller plugins read through `client` (set once, before they load).
    pub fn set_controller_client(&self, client: Arc<dyn Client>) {
        let _ = self.controller_client.set(client);
    }

    /// Changes every time a plugin is loaded, replaced or unloaded.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// The controller plugins serving now.
    pub fn controllers(&self) -> Arc<Vec<Arc<LoadedController>>> {
        self.controllers.read().clone()
    }

    /// The scheduler policy plugins serving now.
    pub fn policies(&self) -> Arc<Vec<Arc<LoadedPolicy>>> {
        self.policies.read().clone()
    }

    pub fn metrics(&self) -> &PluginMetrics {
        &self.metrics
    }

    /// What the plugin `name` has done since this server started.
    pub fn activity(&self, name: &str) -> Arc<Activity> {
        self.activity.lock().entry(name.to_string()).or_default().clone()
    }

    /// The plugins serving now, in call order.
    pub fn snapshot(&self) -> Arc<Vec<Arc<LoadedPlugin>>> {
        self.plugins.read().clone()
    }

    /// The admission plugins that fail closed and cannot run: none of their versions loaded.
    pub fn unavailable(&self) -> Arc<Vec<Arc<Unavailable>>> {
        self.unavailable.read().clone()
    }

    /// `manifest` could not be loaded (its module is missing or does not compile, `why`).
    /// An enforcing admission plugin with `failurePolicy: Fail` and no version serving
    /// then refuses what it would have decided, as a webhook kube-apiserver cannot reach
    /// does; other plugins are only reported.
    pub fn failed_to_load(&self, manifest: &Manifest, why: &str) {
        self.errors.lock().insert(manifest.name.clone(), why.to_string());
        let closed = manifest.world == "admission"
            && manifest.failure_policy == super::FailurePolicy::Fail
            && manifest.mode == super::Mode::Enforce;
        if !closed || self.serving(&manifest.name).is_some() {
            self.available_again(&manifest.name);
            return;
        }
        let entry = Arc::new(Unavailable { manifest: manifest.clone(), why: why.to_string() });
        let mut unavailable = self.unavailable.write();
        let mut next: Vec<Arc<Unavailable>> =
            unavailable.iter().filter(|u| u.manifest.name != manifest.name).cloned().collect();
        next.push(entry);
        *unavailable = Arc::new(next);
        drop(unavailable);
        tracing::warn!(plugin = %manifest.name, "admission plugin fails closed: its requests are refused until it loads");
        self.changed();
    }

    /// `name` serves, or is gone: it no longer refuses anything for being unavailable.
    fn available_again(&self, name: &str) {
        if remove_named(&self.unavailable, name, |u| &u.manifest.name) {
            self.changed();
        }
    }

    /// The digest of the version of `name` serving, if one is.
    pub fn serving(&self, name: &str) -> Option<String> {
        let admission = self.snapshot().iter().find(|p| p.manifest.name == name).map(|p| p.module.digest.clone());
        admission
            .or_else(|| self.controllers().iter().find(|c| c.manifest.name == name).map(|c| c.module.digest.clone()))
            .or_else(|| self.policies().iter().find(|p| p.manifest.name == name).map(|p| p.module.digest.clone()))
    }

    /// Every plugin serving: (name, source, digest), admission and controllers.
    pub fn names(&self) -> Vec<(String, String, String)> {
        let admission = self
            .snapshot()
            .iter()
            .map(|p| (p.manifest.name.clone(), p.source.clone(), p.module.digest.clone()))
            .collect::<Vec<_>>();
        let controllers = self
            .controllers()
            .iter()
            .map(|c| (c.manifest.name.clone(), c.source.clone(), c.module.digest.clone()))
            .collect::<Vec<_>>();
        let policies = self
            .policies()
            .iter()
            .map(|p| (p.manifest.name.clone(), p.source.clone(), p.module.digest.clone()))
            .collect::<Vec<_>>();
        admission.into_iter().chain(controllers).chain(policies).collect()
    }

    /// Why the last load of `name` failed, if it did.
    pub fn last_error(&self, name: &str) -> Option<String> {
        self.errors.lock().get(name).cloned()
    }

    /// Load (or replace) the plugin `manifest` names with `bytes`. On failure the version
    /// serving (if any) stays; the reason is kept and returned.
    pub async fn load(&self, manifest: Manifest, bytes: Vec<u8>, source: &str) -> Result<String, LoadError> {
        if manifest.world == "controller" {
            return self.load_controller(manifest, bytes, source).await;
        }
        if manifest.world == "scheduler-policy" {
            return self.load_policy(manifest, bytes, source).await;
        }
        let name = manifest.name.clone();
        let settings = self.settings(&manifest, self.client.get().cloned());
        let baseline = self.baseline.clone().filter(|_| !self.runtime.is_cached(&super::runtime::digest(&bytes)));
        // The optimized compile still to do, once the baseline module serves.
        let mut optimize = None;
        let loaded = match baseline {
            Some(baseline) => match AdmissionModule::load(baseline, bytes.clone(), settings.clone()).await {
                Ok(module) => {
                    optimize = Some((module.clone(), bytes, settings));
                    Ok(module)
                }
                // Whatever Winch refuses, Cranelift decides (and names the reason, if it refuses too).
                Err(e) => {
                    tracing::debug!(plugin = %name, error = %e, "the baseline compiler cannot take this module; compiling it optimized");
                    AdmissionModule::load(self.runtime.clone(), bytes, settings).await
                }
            },
            None => AdmissionModule::load(self.runtime.clone(), bytes, settings).await,
        };
        match loaded {
            Ok(module) => {
                let digest = module.digest.clone();
                let compiler = module.compiler();
                let activity = self.activity(&name);
                let series = self.metrics.series(&name);
                let loaded = Arc::new(LoadedPlugin { manifest, module, source: source.to_string(), activity, series });
                let mut plugins = self.plugins.write();
                let mut next: Vec<Arc<LoadedPlugin>> =
                    plugins.iter().filter(|p| p.manifest.name != name).cloned().collect();
                next.push(loaded);
                next.sort_by(|a, b| (a.manifest.order, &a.manifest.name).cmp(&(b.manifest.order, &b.manifest.name)));
                *plugins = Arc::new(next);
                drop(plugins);
                self.errors.lock().remove(&name);
                self.available_again(&name);
                self.metrics.loads.with_label_values(&[name.as_str(), "loaded"]).inc();
                tracing::info!(plugin = %name, %digest, source, ?compiler, "plugin loaded");
                self.changed();
                if let Some((baseline, bytes, settings)) = optimize {
                    self.optimize_later(baseline, bytes, settings);
                }
                Ok(digest)
            }
            Err(e) => {
                self.failed_to_load(&manifest, &e.to_string());
                self.metrics.loads.with_label_values(&[name.as_str(), "failed"]).inc();
                tracing::error!(plugin = %name, source, error = %e, "plugin not loaded; the version serving (if any) stays");
                Err(e)
            }
        }
    }

    /// How a module of `manifest` runs (its memory capped by the runtime's).
    fn settings(&self, manifest: &Manifest, client: Option<Arc<dyn Client>>) -> ModuleSettings {
        ModuleSettings {
            name: manifest.name.clone(),
            config: manifest.config.clone(),
            timeout: manifest.timeout,
            memory_limit: manifest.memory_limit.unwrap_or(64 << 20).min(self.runtime.max_memory()),
            capabilities: manifest.capabilities.clone(),
            client,
        }
    }

    /// Load (or replace) a controller plugin. Controllers are compiled by Cranelift only:
    /// a reconcile is not on a request's path, so there is nothing to gain from Winch.
    async fn load_controller(&self, manifest: Manifest, bytes: Vec<u8>, source: &str) -> Result<String, LoadError> {
        let name = manifest.name.clone();
        let settings = self.settings(&manifest, self.controller_client.get().or(self.client.get()).cloned());
        let loaded = ControllerModule::load(self.runtime.clone(), bytes, settings).await.map(|module| {
            let activity = self.activity(&name);
            LoadedController { manifest, module, source: source.to_string(), activity }
        });
        self.swap_in(&self.controllers, &name, source, "controller", loaded, |c| (&c.manifest.name, &c.module.digest))
    }

    /// Load (or replace) a scheduler policy plugin (Cranelift only: a policy is on every
    /// pod's path, so it runs optimized from the start). A policy reads nothing through
    /// the host: it has no `client`.
    async fn load_policy(&self, manifest: Manifest, bytes: Vec<u8>, source: &str) -> Result<String, LoadError> {
        let name = manifest.name.clone();
        let settings = self.settings(&manifest, None);
        let loaded = PolicyModule::load(self.runtime.clone(), bytes, settings).await.map(|module| {
            let activity = self.activity(&name);
            LoadedPolicy { manifest, module, source: source.to_string(), activity }
        });
        self.swap_in(&self.policies, &name, source, "scheduler policy", loaded, |p| {
            (&p.manifest.name, &p.module.digest)
        })
    }

    /// Put a loaded version in `list` in the place of the one of the same name (the list
    /// sorted by name), or keep the reason it failed; either way counted and logged.
    fn swap_in<T>(
        &self,
        list: &RwLock<Arc<Vec<Arc<T>>>>,
        name: &str,
        source: &str,
        kind: &str,
        loaded: Result<T, LoadError>,
        identity: impl Fn(&T) -> (&String, &String),
    ) -> Result<String, LoadError> {
        match loaded {
            Ok(loaded) => {
                let digest = identity(&loaded).1.clone();
                let mut serving = list.write();
                let mut next: Vec<Arc<T>> = serving.iter().filter(|p| identity(p).0 != name).cloned().collect();
                next.push(Arc::new(loaded));
                next.sort_by(|a, b| identity(a).0.cmp(identity(b).0));
                *serving = Arc::new(next);
                drop(serving);
                self.errors.lock().remove(name);
                self.available_again(name);
                self.metrics.loads.with_label_values(&[name, "loaded"]).inc();
                tracing::info!(plugin = %name, %digest, source, "{kind} plugin loaded");
                self.changed();
                Ok(digest)
            }
            Err(e) => {
                self.errors.lock().insert(name.to_string(), e.to_string());
                self.metrics.loads.with_label_values(&[name, "failed"]).inc();
                tracing::error!(plugin = %name, source, error = %e, "{kind} plugin not loaded; the version serving (if any) stays");
                Err(e)
            }
        }
    }

    /// Compile `bytes` with Cranelift in the background, then put the optimized module in
    /// the place of `baseline` (if that version still serves: a newer load wins).
    fn optimize_later(&self, baseline: Arc<AdmissionModule>, bytes: Vec<u8>, settings: ModuleSettings) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let name = settings.name.clone();
            let optimized = match AdmissionModule::load(me.runtime.clone(), bytes, settings).await {
                Ok(module) => module,
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, "cannot compile the optimized version; the baseline one serves on");
                    return;
                }
            };
            let mut plugins = me.plugins.write();
            let Some(position) = plugins.iter().position(|p| Arc::ptr_eq(&p.module, &baseline)) else {
                tracing::debug!(plugin = %name, "a newer version replaced the baseline one before it was optimized");
                return;
            };
            let current = &plugins[position];
            let replacement = Arc::new(LoadedPlugin {
                manifest: current.manifest.clone(),
                module: optimized,
                source: current.source.clone(),
                activity: current.activity.clone(),
                series: current.series.clone(),
            });
            let mut next = (**plugins).clone();
            next[position] = replacement;
            *plugins = Arc::new(next);
            drop(plugins);
            me.metrics.loads.with_label_values(&[name.as_str(), "optimized"]).inc();
            me.changed();
            tracing::info!(plugin = %name, digest = %baseline.digest, elapsed = ?started.elapsed(), "plugin now runs its optimized (Cranelift) version");
        });
    }

    /// Stop serving `name` (calls under way finish on it).
    pub fn unload(&self, name: &str) {
        // Every world is asked (a name is in at most one, but `|` keeps all three calls).
        let unloaded = remove_named(&self.plugins, name, |p| &p.manifest.name)
            | remove_named(&self.controllers, name, |c| &c.manifest.name)
            | remove_named(&self.policies, name, |p| &p.manifest.name);
        self.available_again(name);
        if unloaded {
            self.metrics.loads.with_label_values(&[name, "unloaded"]).inc();
            tracing::info!(plugin = %name, "plugin unloaded");
            self.changed();
        }
    }

    /// Load the defaults compiled into the binary.
    pub async fn load_builtins(&self, builtins: &[Builtin]) -> Result<(), LoadError> {
        for builtin in builtins {
            let manifest = Manifest::parse(builtin.manifest).map_err(|e| LoadError::Manifest(e.to_string()))?;
            self.load(manifest, builtin.module.to_vec(), "builtin").await?;
        }
        Ok(())
    }

    /// Load what `dir` holds now, then follow it: a manifest (`*.yaml`, `*.yml`,
    /// `*.json`) added or changed, or its module changed, (re)loads its plugin; one
    /// removed unloads it. Runs until `stop` turns true.
    pub async fn follow_dir(
        self: Arc<Self>,
        dir: PathBuf,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), LoadError> {
        use notify::Watcher;
        let (changed, mut changes) = tokio::sync::mpsc::channel::<()>(16);
        let mut watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
            let _ = changed.try_send(());
        })
        .map_err(|e| LoadError::Runtime(format!("cannot watch {}: {e}", dir.display())))?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| LoadError::Runtime(format!("cannot watch {}: {e}", dir.display())))?;
        self.rescan(&dir).await;
        tokio::spawn(async move {
            let _watcher = watcher;
            loop {
                tokio::select! {
                    change = changes.recv() => {
                        if change.is_none() { return; }
                        // Let a burst of writes (a copy, an editor's save) settle first.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        while changes.try_recv().is_ok() {}
                        self.rescan(&dir).await;
                    }
                    _ = stop.changed() => return,
                }
            }
        });
        Ok(())
    }

    /// Compare `dir` with what was loaded from it and load, reload or unload accordingly.
    async fn rescan(&self, dir: &Path) {
        let mut present = HashMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read the plugin folder");
                return;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_manifest =
                path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if !is_manifest {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let manifest = match Manifest::parse(&text) {
                Ok(manifest) => manifest,
                Err(e) => {
                    tracing::error!(manifest = %path.display(), error = %e, "a plugin manifest is invalid; ignored");
                    continue;
                }
            };
            let module_path = dir.join(&manifest.module);
            let bytes = match std::fs::read(&module_path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    let why = LoadError::Read { path: module_path.display().to_string(), why: e.to_string() };
                    tracing::error!(plugin = %manifest.name, error = %why, "plugin not loaded");
                    self.failed_to_load(&manifest, &why.to_string());
                    present.insert(path.clone(), manifest.name.clone());
                    continue;
                }
            };
            present.insert(path.clone(), manifest.name.clone());
            let fingerprint = (text.clone(), digest(&bytes));
            if self.seen.lock().get(&path) == Some(&fingerprint) {
                continue;
            }
            let source = path.display().to_string();
            // Remember the attempt either way: a failed version is not retried until it changes.
            self.seen.lock().insert(path.clone(), fingerprint);
            let _ = self.load(manifest, bytes, &source).await;
        }
        let gone: Vec<(PathBuf, String)> = {
            let seen = self.seen.lock();
            seen.keys().filter(|p| !present.contains_key(*p)).map(|p| (p.clone(), String::new())).collect()
        };
        for (path, _) in gone {
            self.seen.lock().remove(&path);
            let source = path.display().to_string();
            let names: Vec<String> =
                self.names().into_iter().filter(|(_, from, _)| *from == source).map(|(name, _, _)| name).collect();
            for name in names {
                self.unload(&name);
            }
        }
    }
}

/// Drop `name` from one world's serving list; whether it was there.
fn remove_named<T>(list: &RwLock<Arc<Vec<Arc<T>>>>, name: &str, name_of: impl Fn(&T) -> &String) -> bool {
    let mut serving = list.write();
    if !serving.iter().any(|p| name_of(p) == name) {
        return false;
    }
    *serving = Arc::new(serving.iter().filter(|p| name_of(p) != name).cloned().collect());
    true
}
