//! The plugin runtime: wasmtime with the component model. It compiles components (off
//! the request path, artifacts cached on disk by digest and engine), checks that each
//! implements the world its manifest declares, and runs calls on reused instances, each
//! with a deadline (epoch interruption) and a memory cap, so a plugin that traps, loops
//! or eats memory fails that call only.
//!
//! This module knows neither the API nor the registry: what a plugin may call on the
//! host (`client`) is the [`Client`] trait, implemented by a higher layer.
//!
//! - `runtime`: the engine, the epoch ticker, the artifact cache; `error`: its errors;
//! - `bindings`: every `bindgen!` of the WIT package; `host/`: one file per host
//!   interface (`log`, `client` and `index`), implemented on `state`'s per-store
//!   [`HostState`];
//! - `instance`: one loaded module over any world, and its pool of instances;
//! - `types`: the host's own types for what crosses the boundary; `convert`: to and from
//!   the generated ones;
//! - `admission`, `controller`, `policy`: each world's module (a pool per admission or
//!   controller module, one stateful instance per policy module);
//! - `manifest`: what a plugin's manifest (a `Plugin` object) says;
//! - `activity`: per-plugin counts and a shadow's disagreements, for status;
//! - `loader`: the plugin set and the watched `--plugin-dir` folder.

mod activity;
mod admission;
mod bindings;
pub mod builtin;
mod controller;
mod convert;
mod error;
mod host;
mod instance;
mod loader;
mod manifest;
mod metrics;
mod policy;
mod runtime;
mod state;
mod types;

pub use self::activity::{Activity, Disagreement, Verdict};
pub use self::admission::AdmissionModule;
pub use self::controller::ControllerModule;
pub use self::error::{CallError, ClientError, LoadError};
pub use self::loader::{Builtin, LoadedController, LoadedPlugin, LoadedPolicy, PluginSet, Unavailable};
pub use self::manifest::{Capability, FailurePolicy, Manifest, ManifestError, Mode, Phase, Rule};
pub use self::metrics::{PluginMetrics, PluginSeries};
pub use self::policy::{types as policy_types, PolicyModule, Session as PolicySession};
pub use self::runtime::{digest, Compiler, Runtime, RuntimeConfig};
pub use self::types::{
    Action, ActionPropagation, AdmissionRequest, AdmissionResponse, GroupVersionKind, GroupVersionResource, ObjectKey,
    Operation, PatchType, ReconcileRequest, ReconcileResult, Registration, UserInfo as PluginUser, Verb,
};

/// What a plugin reads through its `client` import: the host's view of cluster objects
/// (JSON text). Implemented above the registry; capabilities are checked before a call
/// reaches it.
#[async_trait::async_trait]
pub trait Client: Send + Sync + 'static {
    async fn get(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<String>, ClientError>;

    async fn list(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        label_selector: &str,
    ) -> Result<Vec<String>, ClientError>;

    /// The objects whose ownerReferences name `owner_uid` (an informer index lookup).
    async fn owned_by(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<String>, ClientError> {
        let _ = (group, version, resource, namespace, owner_uid);
        Err(ClientError::Unavailable("this host has no owner index for plugins".into()))
    }

    /// Every namespaced resource served: (group, version, plural).
    fn namespaced_resources(&self) -> Vec<(String, String, String)> {
        Vec::new()
    }
}
