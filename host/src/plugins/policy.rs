//! The `scheduler-policy` world (wit/plugin.wit): [`PolicyModule`], one loaded version of a
//! scheduler policy plugin (loading is `instance.rs`'s).
//!
//! A policy keeps state (its node table), so a module runs **one** instance, one call at
//! a time ([`PolicyModule::session`]). A call that fails (trap, timeout, out of memory)
//! drops the instance; the next session starts a new one and says so (`is_new`), and the
//! scheduler then sends it the whole table again. What the calls mean is the
//! scheduler's business: this module only runs them.

use std::sync::Arc;
use std::time::Duration;

use super::bindings::policy::{SchedulerPolicy, SchedulerPolicyPre};
use super::error::{CallError, LoadError};
use super::instance::{Instance, Module, ModuleSettings, World};
use super::runtime::Runtime;
use super::state::HostState;

/// The WIT types a policy is called with (the host's side of `scheduler-types`). The
/// scheduler builds these generated records itself: its per-pod path is hot, and a
/// conversion per pod and per node would cost there.
pub mod types {
    pub use crate::plugins::bindings::policy::wasmkube::plugin::scheduler_types::*;
}

/// The `scheduler-policy` world, for the generic module.
pub(super) struct PolicyWorld;

#[async_trait::async_trait]
impl World for PolicyWorld {
    const NAME: &'static str = "scheduler-policy";
    type Pre = SchedulerPolicyPre<HostState>;
    type Bindings = SchedulerPolicy;
    type Configured = ();

    fn pre(instance_pre: wasmtime::component::InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        SchedulerPolicyPre::new(instance_pre)
    }

    async fn instantiate(pre: &Self::Pre, store: &mut wasmtime::Store<HostState>) -> wasmtime::Result<SchedulerPolicy> {
        pre.instantiate_async(store).await
    }

    async fn configure(
        bindings: &SchedulerPolicy,
        store: &mut wasmtime::Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        bindings.wasmkube_plugin_policy().call_configure(store, config).await
    }
}

/// One loaded version of a scheduler policy plugin.
pub struct PolicyModule {
    pub digest: String,
    module: Module<PolicyWorld>,
    instance: tokio::sync::Mutex<Option<Instance<PolicyWorld>>>,
}

impl PolicyModule {
    /// Compile `bytes` (off the executor), check the world and configure a first instance.
    pub async fn load(runtime: Arc<Runtime>, bytes: Vec<u8>, settings: ModuleSettings) -> Result<Arc<Self>, LoadError> {
        // A policy reads nothing through the host: no capabilities, no client.
        let settings = ModuleSettings { capabilities: Vec::new(), client: None, ..settings };
        let (module, first, ()) = Module::load(runtime, bytes, settings).await?;
        let instance = tokio::sync::Mutex::new(Some(first));
        Ok(Arc::new(Self { digest: module.digest.clone(), module, instance }))
    }

    /// The per-call timeout (the manifest's `timeout`).
    pub fn timeout(&self) -> Duration {
        self.module.settings.timeout
    }

    /// The instance, for calls one at a time; a new one if the last call failed.
    pub async fn session(&self) -> Result<Session<'_>, CallError> {
        let mut guard = self.instance.lock().await;
        let is_new = guard.is_none();
        if is_new {
            *guard = Some(self.module.instantiate().await?.0);
        }
        Ok(Session { module: self, guard, is_new })
    }
}

/// Exclusive use of a policy's instance.
pub struct Session<'a> {
    module: &'a PolicyModule,
    guard: tokio::sync::MutexGuard<'a, Option<Instance<PolicyWorld>>>,
    /// The instance was made for this session: it knows nothing of the table yet.
    pub is_new: bool,
}

impl Session<'_> {
    fn instance(&mut self) -> Result<&mut Instance<PolicyWorld>, CallError> {
        let instance = self.guard.as_mut().ok_or_else(|| CallError::Instantiate("the instance was dropped".into()))?;
        self.module.module.arm(instance);
        Ok(instance)
    }

    /// Send changes to the node table. A failure drops the instance.
    pub async fn apply(&mut self, changes: &[types::Change]) -> Result<(), CallError> {
        if changes.is_empty() {
            return Ok(());
        }
        let instance = self.instance()?;
        let result = instance.bindings.wasmkube_plugin_policy().call_apply(&mut instance.store, changes).await;
        result.map_err(|e| self.fail(e))
    }

    /// Filter and score `candidates` for `pod`. `Ok(Err(why))` is the policy's own
    /// answer; `Err` a failed call, after which the instance is dropped.
    pub async fn schedule(
        &mut self,
        pod: &types::Pod,
        candidates: &[u32],
    ) -> Result<Result<types::Placement, String>, CallError> {
        let instance = self.instance()?;
        let result =
            instance.bindings.wasmkube_plugin_policy().call_schedule(&mut instance.store, pod, candidates).await;
        result.map_err(|e| self.fail(e))
    }

    fn fail(&mut self, error: wasmtime::Error) -> CallError {
        *self.guard = None;
        self.module.module.classify(error)
    }
}
