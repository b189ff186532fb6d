//! The `scheduler-policy` world (wit/plugin.wit): its bindings and [`PolicyModule`], one
//! loaded version of a scheduler policy plugin.
//!
//! A policy keeps state (its node table), so a module runs **one** instance, one call at
//! a time ([`PolicyModule::session`]). A call that fails (trap, timeout, out of memory)
//! drops the instance; the next session starts a new one and says so (`is_new`), and the
//! scheduler then sends it the whole table again. What the calls mean is the
//! scheduler's business: this module only runs them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Component;

use super::admission::ModuleSettings;
use super::runtime::{CallError, HostState, LoadError, Runtime};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "scheduler-policy",
        imports: { default: async },
        exports: { default: async },
        with: {
            "wasmkube:plugin/log": crate::plugins::admission::bindings::wasmkube::plugin::log,
        },
    });
}

/// The WIT types a policy is called with (the host's side of `scheduler-types`).
pub mod types {
    pub use super::bindings::wasmkube::plugin::scheduler_types::*;
}

impl types::Host for HostState {}

struct Instance {
    store: wasmtime::Store<HostState>,
    bindings: bindings::SchedulerPolicy,
}

/// One loaded version of a scheduler policy plugin.
pub struct PolicyModule {
    pub digest: String,
    runtime: Arc<Runtime>,
    pre: bindings::SchedulerPolicyPre<HostState>,
    settings: ModuleSettings,
    name: Arc<str>,
    digest_arc: Arc<str>,
    instance: tokio::sync::Mutex<Option<Instance>>,
}

impl PolicyModule {
    /// Compile `bytes` (off the executor), check the world and configure a first instance.
    pub async fn load(runtime: Arc<Runtime>, bytes: Vec<u8>, settings: ModuleSettings) -> Result<Arc<Self>, LoadError> {
        let (component, digest) = runtime.compile_off_executor(bytes, &settings.name).await?;
        let pre = Self::pre(&runtime, &component)?;
        let name: Arc<str> = settings.name.as_str().into();
        let digest_arc: Arc<str> = digest.as_str().into();
        let module = Self { digest, runtime, pre, settings, name, digest_arc, instance: tokio::sync::Mutex::new(None) };
        let first = module.instantiate().await.map_err(|e| match e {
            CallError::Instantiate(why) if why.starts_with("configure:") => {
                LoadError::Config(why.trim_start_matches("configure:").trim().to_string())
            }
            other => LoadError::Runtime(format!("the first instance failed: {other}")),
        })?;
        *module.instance.lock().await = Some(first);
        Ok(Arc::new(module))
    }

    fn pre(runtime: &Runtime, component: &Component) -> Result<bindings::SchedulerPolicyPre<HostState>, LoadError> {
        let wrong_world =
            |e: wasmtime::Error| LoadError::WrongWorld { world: "scheduler-policy", why: format!("{e:#}") };
        let instance_pre = runtime.linker().instantiate_pre(component).map_err(wrong_world)?;
        bindings::SchedulerPolicyPre::new(instance_pre).map_err(wrong_world)
    }

    /// The per-call timeout (the manifest's `timeout`).
    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    async fn instantiate(&self) -> Result<Instance, CallError> {
        // A policy reads nothing through the host: no capabilities, no client.
        let mut store = self.settings.store(&self.runtime, &self.name, &self.digest_arc, &Arc::from(Vec::new()));
        let bindings =
            self.pre.instantiate_async(&mut store).await.map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        let configured = bindings
            .wasmkube_plugin_policy()
            .call_configure(&mut store, &self.settings.config)
            .await
            .map_err(|e| self.classify(e))?;
        configured.map_err(|why| CallError::Instantiate(format!("configure: {why}")))?;
        Ok(Instance { store, bindings })
    }

    fn classify(&self, error: wasmtime::Error) -> CallError {
        self.settings.classify(error)
    }

    /// The instance, for calls one at a time; a new one if the last call failed.
    pub async fn session(&self) -> Result<Session<'_>, CallError> {
        let mut guard = self.instance.lock().await;
        let is_new = guard.is_none();
        if is_new {
            *guard = Some(self.instantiate().await?);
        }
        Ok(Session { module: self, guard, is_new })
    }
}

/// Exclusive use of a policy's instance.
pub struct Session<'a> {
    module: &'a PolicyModule,
    guard: tokio::sync::MutexGuard<'a, Option<Instance>>,
    /// The instance was made for this session: it knows nothing of the table yet.
    pub is_new: bool,
}

impl Session<'_> {
    fn instance(&mut self) -> Result<&mut Instance, CallError> {
        let timeout = self.module.settings.timeout;
        let instance = self.guard.as_mut().ok_or_else(|| CallError::Instantiate("the instance was dropped".into()))?;
        instance.store.data_mut().deadline = Instant::now() + timeout;
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
        self.module.classify(error)
    }
}
