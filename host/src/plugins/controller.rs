//! The `controller` world (wit/plugin.wit): its bindings and [`ControllerModule`], one
//! loaded version of a controller plugin with a pool of configured instances. The host
//! side of the imports (`log`, `client`) is the admission world's, shared through
//! bindgen's `with`.
//!
//! A module is accepted only if it implements the world, its first instance accepts its
//! config, and what it follows (its `registration`) is granted by the manifest's
//! capabilities (`watch`). What a reconcile answers is returned as it is: checking each
//! action against the capabilities and running it is the controller host's work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::Component;

use super::admission::ModuleSettings;
use super::manifest::Capability;
use super::runtime::{CallError, HostState, LoadError, Runtime};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "controller",
        imports: { default: async },
        exports: { default: async },
        with: {
            "wasmkube:plugin/types": crate::plugins::admission::bindings::wasmkube::plugin::types,
            "wasmkube:plugin/log": crate::plugins::admission::bindings::wasmkube::plugin::log,
            "wasmkube:plugin/client": crate::plugins::admission::bindings::wasmkube::plugin::client,
        },
    });
}

use bindings::wasmkube::plugin::controller_types as wit;
use bindings::wasmkube::plugin::index;

/// Link the imports only the controller world has (`index`).
pub(super) fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> Result<(), LoadError> {
    index::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(linker, |state| state)
        .map_err(|e| LoadError::Runtime(format!("cannot link the controller world's imports: {e}")))
}

impl index::Host for HostState {
    async fn owned_by(
        &mut self,
        resource: wit::GroupVersionResource,
        namespace: Option<String>,
        owner_uid: String,
    ) -> Result<Vec<String>, super::admission::WitClientError> {
        let client = self.granted(&resource, "list")?;
        client
            .owned_by(&resource.group, &resource.version, &resource.resource, namespace.as_deref(), &owner_uid)
            .await
            .map_err(super::admission::wit_error)
    }

    async fn namespaced_resources(&mut self) -> Vec<wit::GroupVersionResource> {
        let Some(client) = self.client.clone() else { return Vec::new() };
        client
            .namespaced_resources()
            .into_iter()
            .map(|(group, version, resource)| wit::GroupVersionResource { group, version, resource })
            .collect()
    }
}

pub use wit::{
    Action, ObjectKey, PatchType, Propagation as ActionPropagation, ReconcileRequest, ReconcileResult, Registration,
    Verb,
};

impl wit::Host for HostState {}

/// A ready instance: its store and its bindings.
struct Instance {
    store: wasmtime::Store<HostState>,
    bindings: bindings::Controller,
}

/// One loaded version of a controller plugin.
pub struct ControllerModule {
    pub digest: String,
    /// What it follows, as its first instance answered `configure`.
    pub registration: Registration,
    runtime: Arc<Runtime>,
    pre: bindings::ControllerPre<HostState>,
    settings: ModuleSettings,
    name: Arc<str>,
    digest_arc: Arc<str>,
    capabilities: Arc<[Capability]>,
    pool: Mutex<Vec<Instance>>,
}

/// The most idle instances a module keeps (a controller runs a few reconciles at once).
const POOL_SIZE: usize = 16;

impl ControllerModule {
    /// Compile `bytes`, check the world, configure a first instance and check that the
    /// capabilities grant what it follows. Compilation runs off the executor.
    pub async fn load(runtime: Arc<Runtime>, bytes: Vec<u8>, settings: ModuleSettings) -> Result<Arc<Self>, LoadError> {
        let (component, digest) = runtime.compile_off_executor(bytes, &settings.name).await?;
        let pre = Self::pre(&runtime, &component)?;
        let name: Arc<str> = settings.name.as_str().into();
        let digest_arc: Arc<str> = digest.as_str().into();
        let capabilities: Arc<[Capability]> = settings.capabilities.clone().into();
        let (instance, registration) =
            instantiate(&runtime, &pre, &settings, &name, &digest_arc, &capabilities).await.map_err(|e| match e {
                CallError::Instantiate(why) if why.starts_with("configure:") => {
                    LoadError::Config(why.trim_start_matches("configure:").trim().to_string())
                }
                other => LoadError::Runtime(format!("the first instance failed: {other}")),
            })?;
        let ungranted: Vec<String> = std::iter::once(&registration.reconciles)
            .chain(&registration.owns)
            .chain(&registration.watches)
            .filter(|r| !capabilities.iter().any(|c| c.allows(&r.group, &r.resource, "watch")))
            .map(|r| if r.group.is_empty() { r.resource.clone() } else { format!("{}.{}", r.resource, r.group) })
            .collect();
        if !ungranted.is_empty() {
            return Err(LoadError::Manifest(format!(
                "the controller follows {} but its manifest's capabilities do not grant watch on {}",
                ungranted.join(", "),
                if ungranted.len() == 1 { "it" } else { "them" }
            )));
        }
        Ok(Arc::new(Self {
            digest,
            registration,
            runtime,
            pre,
            settings,
            name,
            digest_arc,
            capabilities,
            pool: Mutex::new(vec![instance]),
        }))
    }

    fn pre(runtime: &Runtime, component: &Component) -> Result<bindings::ControllerPre<HostState>, LoadError> {
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld { world: "controller", why: format!("{e:#}") };
        let instance_pre = runtime.linker().instantiate_pre(component).map_err(wrong_world)?;
        bindings::ControllerPre::new(instance_pre).map_err(wrong_world)
    }

    /// The reconcile timeout (the manifest's `timeout`).
    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    async fn take(&self) -> Result<Instance, CallError> {
        let pooled = self.pool.lock().pop();
        match pooled {
            Some(instance) => Ok(instance),
            None => {
                instantiate(&self.runtime, &self.pre, &self.settings, &self.name, &self.digest_arc, &self.capabilities)
                    .await
                    .map(|(instance, _)| instance)
            }
        }
    }

    fn give_back(&self, instance: Instance) {
        let mut pool = self.pool.lock();
        if pool.len() < POOL_SIZE {
            pool.push(instance);
        }
    }

    /// One reconcile. `Ok(Err(why))` is the plugin's own error; `Err` is a failed call
    /// (trap, timeout, out of memory), after which the instance is dropped.
    pub async fn reconcile(&self, request: &ReconcileRequest) -> Result<Result<ReconcileResult, String>, CallError> {
        let mut instance = self.take().await?;
        instance.store.data_mut().deadline = Instant::now() + self.settings.timeout;
        let result = instance.bindings.wasmkube_plugin_reconciler().call_reconcile(&mut instance.store, request).await;
        match result {
            Ok(answer) => {
                self.give_back(instance);
                Ok(answer)
            }
            Err(e) => Err(self.settings.classify(e)),
        }
    }

    /// The keys a watched object's change enqueues.
    pub async fn map(&self, resource: &wit::GroupVersionResource, object: &str) -> Result<Vec<ObjectKey>, CallError> {
        let mut instance = self.take().await?;
        instance.store.data_mut().deadline = Instant::now() + self.settings.timeout;
        let result =
            instance.bindings.wasmkube_plugin_reconciler().call_map(&mut instance.store, resource, object).await;
        match result {
            Ok(keys) => {
                self.give_back(instance);
                Ok(keys)
            }
            Err(e) => Err(self.settings.classify(e)),
        }
    }
}

/// A new instance, configured; and what it answered `configure`.
async fn instantiate(
    runtime: &Runtime,
    pre: &bindings::ControllerPre<HostState>,
    settings: &ModuleSettings,
    name: &Arc<str>,
    digest: &Arc<str>,
    capabilities: &Arc<[Capability]>,
) -> Result<(Instance, Registration), CallError> {
    let mut store = settings.store(runtime, name, digest, capabilities);
    let bindings = pre.instantiate_async(&mut store).await.map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
    let configured = bindings
        .wasmkube_plugin_reconciler()
        .call_configure(&mut store, &settings.config)
        .await
        .map_err(|e| settings.classify(e))?;
    let registration = configured.map_err(|why| CallError::Instantiate(format!("configure: {why}")))?;
    Ok((Instance { store, bindings }, registration))
}
