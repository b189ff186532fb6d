//! The `controller` world (wit/plugin.wit): [`ControllerModule`], one loaded version of a
//! controller plugin with a pool of configured instances (loading and pooling are
//! `instance.rs`'s; the imports, `log`, `client`, `index`, are `host/`'s).
//!
//! A module is accepted only if it implements the world, its first instance accepts its
//! config, and what it follows (its `registration`) is granted by the manifest's
//! capabilities (`watch`). What a reconcile answers is returned as it is: checking each
//! action against the capabilities and running it is the controller host's work.

use std::sync::Arc;
use std::time::Duration;

use super::bindings::controller::wasmkube::plugin::controller_types as wit;
use super::bindings::controller::{Controller, ControllerPre};
use super::error::{CallError, LoadError};
use super::instance::{Module, ModuleSettings, Pool, World};
use super::runtime::Runtime;
use super::state::HostState;
use super::types::{GroupVersionResource, ObjectKey, ReconcileRequest, ReconcileResult, Registration};

/// The `controller` world, for the generic module.
pub(super) struct ControllerWorld;

#[async_trait::async_trait]
impl World for ControllerWorld {
    const NAME: &'static str = "controller";
    type Pre = ControllerPre<HostState>;
    type Bindings = Controller;
    type Configured = wit::Registration;

    fn pre(instance_pre: wasmtime::component::InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        ControllerPre::new(instance_pre)
    }

    async fn instantiate(pre: &Self::Pre, store: &mut wasmtime::Store<HostState>) -> wasmtime::Result<Controller> {
        pre.instantiate_async(store).await
    }

    async fn configure(
        bindings: &Controller,
        store: &mut wasmtime::Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<wit::Registration, String>> {
        bindings.wasmkube_plugin_reconciler().call_configure(store, config).await
    }
}

/// One loaded version of a controller plugin.
pub struct ControllerModule {
    pub digest: String,
    /// What it follows, as its first instance answered `configure`.
    pub registration: Registration,
    module: Module<ControllerWorld>,
    pool: Pool<ControllerWorld>,
}

/// The most idle instances a module keeps (a controller runs a few reconciles at once).
const POOL_SIZE: usize = 16;

impl ControllerModule {
    /// Compile `bytes`, check the world, configure a first instance and check that the
    /// capabilities grant what it follows. Compilation runs off the executor.
    pub async fn load(runtime: Arc<Runtime>, bytes: Vec<u8>, settings: ModuleSettings) -> Result<Arc<Self>, LoadError> {
        let (module, first, registration) = Module::<ControllerWorld>::load(runtime, bytes, settings).await?;
        let registration = Registration::from(registration);
        let capabilities = &module.settings.capabilities;
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
        Ok(Arc::new(Self { digest: module.digest.clone(), registration, module, pool: Pool::new(first, POOL_SIZE) }))
    }

    /// The reconcile timeout (the manifest's `timeout`).
    pub fn timeout(&self) -> Duration {
        self.module.settings.timeout
    }

    /// One reconcile. `Ok(Err(why))` is the plugin's own error; `Err` is a failed call
    /// (trap, timeout, out of memory), after which the instance is dropped.
    pub async fn reconcile(&self, request: &ReconcileRequest) -> Result<Result<ReconcileResult, String>, CallError> {
        let request = wit::ReconcileRequest::from(request);
        let mut instance = self.pool.take(&self.module).await?;
        let result = instance.bindings.wasmkube_plugin_reconciler().call_reconcile(&mut instance.store, &request).await;
        match result {
            Ok(answer) => {
                self.pool.give_back(instance);
                Ok(answer.map(Into::into))
            }
            Err(e) => Err(self.module.classify(e)),
        }
    }

    /// The keys a watched object's change enqueues.
    pub async fn map(&self, resource: &GroupVersionResource, object: &str) -> Result<Vec<ObjectKey>, CallError> {
        let resource = super::bindings::types::GroupVersionResource::from(resource);
        let mut instance = self.pool.take(&self.module).await?;
        let result =
            instance.bindings.wasmkube_plugin_reconciler().call_map(&mut instance.store, &resource, object).await;
        match result {
            Ok(keys) => {
                self.pool.give_back(instance);
                Ok(keys.into_iter().map(Into::into).collect())
            }
            Err(e) => Err(self.module.classify(e)),
        }
    }
}
