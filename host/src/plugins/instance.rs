//! One loaded version of a plugin, over any world ([`Module`]), and its idle instances
//! ([`Pool`]): compile, check the component against the world, make and configure
//! instances, time each call with the manifest's deadline. Written once for every world;
//! a world says only how its bindings are made and configured ([`World`]).
//!
//! **Invariants:** a module is accepted only if it compiles, implements the world and its
//! first instance accepts its config ([`LoadError::Config`] if not); an instance whose
//! call failed (trap, timeout, out of memory) is dropped by its caller, never pooled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::InstancePre;

use super::error::{CallError, LoadError};
use super::manifest::Capability;
use super::runtime::Runtime;
use super::state::{self, HostState};
use super::Client;

/// How a module runs: its identity, limits and what it may read.
#[derive(Clone)]
pub struct ModuleSettings {
    pub name: String,
    pub config: String,
    pub timeout: Duration,
    pub memory_limit: usize,
    pub capabilities: Vec<Capability>,
    pub client: Option<Arc<dyn Client>>,
}

/// What the generic module needs of a world's generated bindings.
#[async_trait::async_trait]
pub(super) trait World: Send + Sync + 'static {
    /// Its name in the WIT package (for errors).
    const NAME: &'static str;
    /// The generated `…Pre`: a component checked against the world, ready to instantiate.
    type Pre: Send + Sync;
    /// The generated bindings of one instance.
    type Bindings: Send + Sync;
    /// What `configure` answers besides success (a controller's registration).
    type Configured: Send;

    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;

    async fn instantiate(pre: &Self::Pre, store: &mut wasmtime::Store<HostState>) -> wasmtime::Result<Self::Bindings>;

    /// Call the world's `configure`; `Ok(Err(why))` is the plugin refusing its config.
    async fn configure(
        bindings: &Self::Bindings,
        store: &mut wasmtime::Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<Self::Configured, String>>;
}

/// A ready instance: its store and its bindings.
pub(super) struct Instance<W: World> {
    pub(super) store: wasmtime::Store<HostState>,
    pub(super) bindings: W::Bindings,
}

/// One loaded version of a plugin of world `W`.
pub(super) struct Module<W: World> {
    pub(super) digest: String,
    runtime: Arc<Runtime>,
    pre: W::Pre,
    pub(super) settings: ModuleSettings,
    name: Arc<str>,
    digest_arc: Arc<str>,
    capabilities: Arc<[Capability]>,
}

impl<W: World> Module<W> {
    /// Compile `bytes` (off the executor), check the world and make a first instance,
    /// configured, so a module that cannot serve is refused here rather than on a call.
    pub(super) async fn load(
        runtime: Arc<Runtime>,
        bytes: Vec<u8>,
        settings: ModuleSettings,
    ) -> Result<(Self, Instance<W>, W::Configured), LoadError> {
        let (component, digest) = runtime.compile_off_executor(bytes, &settings.name).await?;
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld { world: W::NAME, why: format!("{e:#}") };
        let instance_pre = runtime.linker().instantiate_pre(&component).map_err(wrong_world)?;
        let pre = W::pre(instance_pre).map_err(wrong_world)?;
        let module = Self {
            name: settings.name.as_str().into(),
            digest_arc: digest.as_str().into(),
            capabilities: settings.capabilities.clone().into(),
            digest,
            runtime,
            pre,
            settings,
        };
        let (instance, configured) = module.instantiate().await.map_err(|e| match e {
            CallError::Configure(why) => LoadError::Config(why),
            other => LoadError::Runtime(format!("the first instance failed: {other}")),
        })?;
        Ok((module, instance, configured))
    }

    /// A store for one instance: the module's limits and what it may read.
    fn store(&self) -> wasmtime::Store<HostState> {
        let settings = &self.settings;
        let state = HostState::new(
            self.name.clone(),
            self.digest_arc.clone(),
            settings.memory_limit,
            self.capabilities.clone(),
            settings.client.clone(),
        );
        let mut store = state::store(self.runtime.engine(), state);
        store.data_mut().deadline = Instant::now() + settings.timeout;
        store
    }

    /// A new instance, configured; and what it answered `configure`.
    pub(super) async fn instantiate(&self) -> Result<(Instance<W>, W::Configured), CallError> {
        let mut store = self.store();
        let bindings =
            W::instantiate(&self.pre, &mut store).await.map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        let configured =
            W::configure(&bindings, &mut store, &self.settings.config).await.map_err(|e| self.classify(e))?;
        let configured = configured.map_err(CallError::Configure)?;
        Ok((Instance { store, bindings }, configured))
    }

    /// For the benchmark: `n` fresh instances, timing instantiation (from the pooling
    /// allocator's slots) and the `configure` call apart. The instances are dropped.
    pub(super) async fn time_instantiation(&self, n: usize) -> Result<(Vec<Duration>, Vec<Duration>), CallError> {
        let (mut instantiating, mut configuring) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let mut store = self.store();
            let started = Instant::now();
            let bindings =
                W::instantiate(&self.pre, &mut store).await.map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
            instantiating.push(started.elapsed());
            let started = Instant::now();
            let configured =
                W::configure(&bindings, &mut store, &self.settings.config).await.map_err(|e| self.classify(e))?;
            configured.map_err(CallError::Configure)?;
            configuring.push(started.elapsed());
        }
        Ok((instantiating, configuring))
    }

    /// Give `instance` the module's whole timeout for the call about to start.
    pub(super) fn arm(&self, instance: &mut Instance<W>) {
        instance.store.data_mut().deadline = Instant::now() + self.settings.timeout;
    }

    /// What a failed call of this module was.
    pub(super) fn classify(&self, error: wasmtime::Error) -> CallError {
        state::classify(error, self.settings.timeout, self.settings.memory_limit)
    }

    pub(super) fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}

/// A module's idle instances, reused so a call costs a call, not an instantiation.
pub(super) struct Pool<W: World> {
    idle: Mutex<Vec<Instance<W>>>,
    /// The most idle instances kept.
    size: usize,
}

impl<W: World> Pool<W> {
    pub(super) fn new(first: Instance<W>, size: usize) -> Self {
        Self { idle: Mutex::new(vec![first]), size }
    }

    /// An idle instance, or a new one.
    pub(super) async fn take(&self, module: &Module<W>) -> Result<Instance<W>, CallError> {
        let pooled = self.idle.lock().pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => module.instantiate().await?.0,
        };
        module.arm(&mut instance);
        Ok(instance)
    }

    /// Keep an instance whose call succeeded (one that failed is simply dropped).
    pub(super) fn give_back(&self, instance: Instance<W>) {
        let mut idle = self.idle.lock();
        if idle.len() < self.size {
            idle.push(instance);
        }
    }
}
