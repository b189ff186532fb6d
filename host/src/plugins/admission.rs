//! The `admission` world (wit/plugin.wit): [`AdmissionModule`], one loaded version of an
//! admission plugin with a pool of ready instances, so a call costs a call, not an
//! instantiation. Loading, configuring and pooling are `instance.rs`'s; this file says how
//! the world's bindings are made and called.

use std::sync::Arc;
use std::time::Duration;

use super::bindings::admission::exports::wasmkube::plugin::admit;
use super::bindings::admission::wasmkube::plugin::admission_types as wit;
use super::bindings::admission::{Admission, AdmissionPre};
use super::error::{CallError, LoadError};
use super::instance::{Module, ModuleSettings, Pool, World};
use super::runtime::Runtime;
use super::state::HostState;
use super::types::{AdmissionRequest, AdmissionResponse};

/// The `admission` world, for the generic module.
pub(super) struct AdmissionWorld;

#[async_trait::async_trait]
impl World for AdmissionWorld {
    const NAME: &'static str = "admission";
    type Pre = AdmissionPre<HostState>;
    type Bindings = Admission;
    type Configured = ();

    fn pre(instance_pre: wasmtime::component::InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        AdmissionPre::new(instance_pre)
    }

    async fn instantiate(pre: &Self::Pre, store: &mut wasmtime::Store<HostState>) -> wasmtime::Result<Admission> {
        pre.instantiate_async(store).await
    }

    async fn configure(
        bindings: &Admission,
        store: &mut wasmtime::Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        bindings.wasmkube_plugin_admit().call_configure(store, config).await
    }
}

/// One loaded version of an admission plugin.
pub struct AdmissionModule {
    pub digest: String,
    module: Module<AdmissionWorld>,
    pool: Pool<AdmissionWorld>,
}

/// The most idle instances a module keeps.
const POOL_SIZE: usize = 64;

impl AdmissionModule {
    /// Compile `bytes`, check that they implement the admission world, and make (and
    /// configure) a first instance, so a module that cannot serve is refused here rather
    /// than on a request. Compilation runs off the executor.
    pub async fn load(runtime: Arc<Runtime>, bytes: Vec<u8>, settings: ModuleSettings) -> Result<Arc<Self>, LoadError> {
        let (module, first, ()) = Module::load(runtime, bytes, settings).await?;
        Ok(Arc::new(Self { digest: module.digest.clone(), module, pool: Pool::new(first, POOL_SIZE) }))
    }

    /// Which compiler made this module's code.
    pub fn compiler(&self) -> super::runtime::Compiler {
        self.module.runtime().compiler()
    }

    /// Run `function` on an instance; the instance goes back to the pool only if the call
    /// succeeded.
    async fn call(&self, function: Function, request: &AdmissionRequest) -> Result<AdmissionResponse, CallError> {
        let request = wit::AdmissionRequest::from(request);
        let mut instance = self.pool.take(&self.module).await?;
        let admit: &admit::Guest = instance.bindings.wasmkube_plugin_admit();
        let result = match function {
            Function::Mutate => admit.call_mutate(&mut instance.store, &request).await,
            Function::Validate => admit.call_validate(&mut instance.store, &request).await,
        };
        match result {
            Ok(response) => {
                self.pool.give_back(instance);
                Ok(response.into())
            }
            Err(e) => Err(self.module.classify(e)),
        }
    }

    /// For the benchmark: `n` fresh instances, timing instantiation (from the pooling
    /// allocator's slots) and the `configure` call apart. The instances are dropped.
    pub async fn time_instantiation(&self, n: usize) -> Result<(Vec<Duration>, Vec<Duration>), CallError> {
        self.module.time_instantiation(n).await
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
