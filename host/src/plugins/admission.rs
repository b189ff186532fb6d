//! The `admission` world (wit/plugin.wit): its bindings, the host side of the imports
//! plugins use (`log`, `client`), and [`AdmissionModule`] — one loaded version of an
//! admission plugin with a pool of ready instances, so a call costs a call, not an
//! instantiation.
//!
//! A call takes an instance from the pool (or instantiates and configures a new one),
//! sets its deadline and runs; an instance whose call failed (trap, timeout, out of
//! memory) is dropped, never reused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::{Component, HasSelf, Linker};

use super::manifest::Capability;
use super::runtime::{self, CallError, HostState, LoadError, Runtime};
use super::{Client, ClientError};

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "admission",
        imports: { default: async },
        exports: { default: async },
    });
}

use bindings::exports::wasmkube::plugin::admit;
use bindings::wasmkube::plugin::{admission_types as wit, client, log, types};

pub use wit::Operation;

/// One request, as the world's `admission-request` (objects as JSON text).
pub type AdmissionRequest = wit::AdmissionRequest;
/// A plugin's answer.
pub type AdmissionResponse = wit::AdmissionResponse;
pub(super) use types::ClientError as WitClientError;
pub use types::{GroupVersionKind, GroupVersionResource, UserInfo};

/// Link the world's imports.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<(), LoadError> {
    log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
        .and_then(|()| client::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state))
        .map_err(|e| LoadError::Runtime(format!("cannot link the admission world's imports: {e}")))
}

impl types::Host for HostState {}
impl wit::Host for HostState {}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        let (plugin, digest) = (&*self.plugin, &*self.digest);
        match level {
            log::Level::Debug => tracing::debug!(plugin, digest, "{message}"),
            log::Level::Info => tracing::info!(plugin, digest, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, digest, "{message}"),
            log::Level::Error => tracing::error!(plugin, digest, "{message}"),
        }
    }
}

impl HostState {
    pub(super) fn granted(
        &self,
        resource: &types::GroupVersionResource,
        verb: &str,
    ) -> Result<Arc<dyn Client>, types::ClientError> {
        if !self.capabilities.iter().any(|c| c.allows(&resource.group, &resource.resource, verb)) {
            let group = if resource.group.is_empty() { "core" } else { &resource.group };
            return Err(types::ClientError::Forbidden(format!(
                "plugin {:?} may not {verb} {} in group {group}: its manifest's capabilities do not grant it",
                &*self.plugin, resource.resource
            )));
        }
        self.client.clone().ok_or_else(|| types::ClientError::Unavailable("this host has no client for plugins".into()))
    }
}

pub(super) fn wit_error(e: ClientError) -> types::ClientError {
    match e {
        ClientError::Forbidden(m) => types::ClientError::Forbidden(m),
        ClientError::Invalid(m) => types::ClientError::Invalid(m),
        ClientError::Unavailable(m) => types::ClientError::Unavailable(m),
    }
}

impl client::Host for HostState {
    async fn get(
        &mut self,
        resource: types::GroupVersionResource,
        namespace: Option<String>,
        name: String,
    ) -> Result<Option<String>, types::ClientError> {
        let client = self.granted(&resource, "get")?;
        client
            .get(&resource.group, &resource.version, &resource.resource, namespace.as_deref(), &name)
            .await
            .map_err(wit_error)
    }

    async fn list(
        &mut self,
        resource: types::GroupVersionResource,
        namespace: Option<String>,
        label_selector: String,
    ) -> Result<Vec<String>, types::ClientError> {
        let client = self.granted(&resource, "list")?;
        client
            .list(&resource.group, &resource.version, &resource.resource, namespace.as_deref(), &label_selector)
            .await
            .map_err(wit_error)
    }
}

/// A ready instance: its store and its bindings.
struct Instance {
    store: wasmtime::Store<HostState>,
    bindings: bindings::Admission,
}

/// How an admission module runs: its identity, limits and what it may read.
#[derive(Clone)]
pub struct ModuleSettings {
    pub name: String,
    pub config: String,
    pub timeout: Duration,
    pub memory_limit: usize,
    pub capabilities: Vec<Capability>,
    pub client: Option<Arc<dyn Client>>,
}

impl ModuleSettings {
    /// A store for one instance of this module: its limits, its deadline set for a first
    /// call, and what it may read.
    pub(super) fn store(
        &self,
        runtime: &Runtime,
        name: &Arc<str>,
        digest: &Arc<str>,
        capabilities: &Arc<[Capability]>,
    ) -> wasmtime::Store<HostState> {
        let state =
            HostState::new(name.clone(), digest.clone(), self.memory_limit, capabilities.clone(), self.client.clone());
        let mut store = runtime::store(runtime.engine(), state);
        store.data_mut().deadline = Instant::now() + self.timeout;
        store
    }

    /// What a failed call of this module was.
    pub(super) fn classify(&self, error: wasmtime::Error) -> CallError {
        runtime::classify(error, self.timeout, self.memory_limit)
    }
}

/// One loaded version of an admission plugin.
pub struct AdmissionModule {
    pub digest: String,
    runtime: Arc<Runtime>,
    pre: bindings::AdmissionPre<HostState>,
    settings: ModuleSettings,
    name: Arc<str>,
    digest_arc: Arc<str>,
    capabilities: Arc<[Capability]>,
    pool: Mutex<Vec<Instance>>,
}

/// The most idle instances a module keeps.
const POOL_SIZE: usize = 64;

impl AdmissionModule {
    /// Compile `bytes`, check that they implement the admission world, and make (and
    /// configure) a first instance, so a module that cannot serve is refused here rather
    /// than on a request. Blocking (compilation): call it off the executor.
    pub async fn load(runtime: Arc<Runtime>, bytes: Vec<u8>, settings: ModuleSettings) -> Result<Arc<Self>, LoadError> {
        let (component, digest) = runtime.compile_off_executor(bytes, &settings.name).await?;
        let module = Self::from_component(runtime, component, digest, settings)?;
        let instance = module.instantiate().await.map_err(|e| match e {
            CallError::Instantiate(why) if why.starts_with("configure:") => {
                LoadError::Config(why.trim_start_matches("configure:").trim().to_string())
            }
            other => LoadError::Runtime(format!("the first instance failed: {other}")),
        })?;
        module.pool.lock().push(instance);
        Ok(module)
    }

    /// Which compiler made this module's code.
    pub fn compiler(&self) -> super::runtime::Compiler {
        self.runtime.compiler()
    }

    fn from_component(
        runtime: Arc<Runtime>,
        component: Component,
        digest: String,
        settings: ModuleSettings,
    ) -> Result<Arc<Self>, LoadError> {
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld { world: "admission", why: format!("{e:#}") };
        let instance_pre = runtime.linker().instantiate_pre(&component).map_err(wrong_world)?;
        let pre = bindings::AdmissionPre::new(instance_pre).map_err(wrong_world)?;
        Ok(Arc::new(Self {
            name: settings.name.as_str().into(),
            digest_arc: digest.as_str().into(),
            capabilities: settings.capabilities.clone().into(),
            digest,
            runtime,
            pre,
            settings,
            pool: Mutex::new(Vec::new()),
        }))
    }

    /// A new instance, configured.
    async fn instantiate(&self) -> Result<Instance, CallError> {
        let mut store = self.settings.store(&self.runtime, &self.name, &self.digest_arc, &self.capabilities);
        let bindings =
            self.pre.instantiate_async(&mut store).await.map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        let configured = bindings
            .wasmkube_plugin_admit()
            .call_configure(&mut store, &self.settings.config)
            .await
            .map_err(|e| self.classify(e))?;
        configured.map_err(|why| CallError::Instantiate(format!("configure: {why}")))?;
        Ok(Instance { store, bindings })
    }

    fn classify(&self, error: wasmtime::Error) -> CallError {
        self.settings.classify(error)
    }

    /// Run `function` on an instance; the instance goes back to the pool only if the call
    /// succeeded.
    async fn call(&self, function: Function, request: &AdmissionRequest) -> Result<AdmissionResponse, CallError> {
        let pooled = self.pool.lock().pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => self.instantiate().await?,
        };
        instance.store.data_mut().deadline = Instant::now() + self.settings.timeout;
        let admit: &admit::Guest = instance.bindings.wasmkube_plugin_admit();
        let result = match function {
            Function::Mutate => admit.call_mutate(&mut instance.store, request).await,
            Function::Validate => admit.call_validate(&mut instance.store, request).await,
        };
        match result {
            Ok(response) => {
                let mut pool = self.pool.lock();
                if pool.len() < POOL_SIZE {
                    pool.push(instance);
                }
                Ok(response)
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    /// For the benchmark: `n` fresh instances, timing instantiation (from the pooling
    /// allocator's slots) and the `configure` call apart. The instances are dropped.
    pub async fn time_instantiation(&self, n: usize) -> Result<(Vec<Duration>, Vec<Duration>), CallError> {
        let (mut instantiating, mut configuring) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let mut store = self.settings.store(&self.runtime, &self.name, &self.digest_arc, &self.capabilities);
            let started = Instant::now();
            let bindings =
                self.pre.instantiate_async(&mut store).await.map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
            instantiating.push(started.elapsed());
            let started = Instant::now();
            let configured = bindings
                .wasmkube_plugin_admit()
                .call_configure(&mut store, &self.settings.config)
                .await
                .map_err(|e| self.classify(e))?;
            configured.map_err(|why| CallError::Instantiate(format!("configure: {why}")))?;
            configuring.push(started.elapsed());
        }
        Ok((instantiating, configuring))
    }

    pub async fn mutate(&self, request: &AdmissionRequest) -> Result<AdmissionResponse, CallError> {
        self.call(Function::Mutate, request).await
    }

    pub async fn validate(&self, request: &AdmissionRequest) -> Result<AdmissionResponse, CallError> {
        self.call(Function::Validate, request).await
    }
}

#[derive(Clone, Copy)]
enum Function {
    Mutate,
    Validate,
}
