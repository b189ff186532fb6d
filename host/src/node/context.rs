//! What every pod worker of one node shares ([`Agent`]): the client, the runtime, where
//! images come from, the node's configuration, and what it knows of each container — the
//! logs of its runs (what `pods/log` reads) and its run now (what exec, attach and the stats
//! reach). The node agent (`agent.rs`) makes it; pod workers (`pod.rs`) fill it in.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;

use tokio::io::DuplexStream;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::images::Images;
use super::logs::ContainerLog;
use super::runtime::{Guest, GuestSpec, Runtime};
use crate::client::Client;

/// CrashLoopBackOff's delays: the first, and the most (`--crash-loop-backoff=10s,5m`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_secs(10), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// `10s,5m`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (initial, max) =
            text.split_once(',').ok_or_else(|| format!("{text:?} is not INITIAL,MAX such as 10s,5m"))?;
        let parse = |t: &str| humantime::parse_duration(t.trim()).ok().filter(|d| !d.is_zero());
        match (parse(initial), parse(max)) {
            (Some(initial), Some(max)) if initial <= max => Ok(Self { initial, max }),
            (Some(_), Some(_)) => Err(format!("{text:?}: the initial delay is longer than the maximum")),
            _ => Err(format!("{text:?} is not INITIAL,MAX such as 10s,5m (two durations)")),
        }
    }
}

/// How the node agent is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    /// Where pods' logs live (`<dir>/pods/<namespace>_<name>_<uid>/`).
    pub dir: PathBuf,
    pub max_pods: u32,
    pub backoff: Backoff,
    /// `host:port` names the cluster's own registry is reached by.
    pub local_registries: Vec<String>,
    /// How other registries are reached (`--registry-config`).
    pub registry_config: crate::oci::config::RegistryConfig,
    /// `host:port` of the cluster's registry when it is another process's (`wasmkube node`):
    /// a reference naming no registry is pulled from there over HTTPS.
    pub cluster_registry: Option<String>,
}

/// Who writes (managedFields).
pub(super) const MANAGER: &str = "wasmkube-node-agent";

/// What a pod worker knows of its pod.
pub(super) struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub restart_policy: String,
    pub start_time: String,
    pub dir: std::path::PathBuf,
    /// As the API server computed it at create.
    pub qos_class: String,
    /// The pod as the node got it (env and the downward API read it).
    pub pod: Value,
}

/// What the node knows of one container: the runs whose logs can be read (the latest and
/// the one before), why it waits, and its run now (what exec, attach and stats reach).
#[derive(Default)]
pub(super) struct ContainerRecord {
    pub runs: Vec<Arc<ContainerLog>>,
    pub waiting: Option<String>,
    pub running: Option<Arc<Running>>,
}

/// A container's run under way.
pub(super) struct Running {
    pub pod: Arc<PodMeta>,
    pub name: String,
    /// Its component's `wasi:cli/run`, if it exports one (exec needs it).
    pub command: Option<CommandPre<Guest>>,
    pub guest: GuestSpec,
    pub log: Arc<ContainerLog>,
    /// The write end of the run's stdin, with `stdin: true` (attach writes to it); closed
    /// after the first attach with `stdinOnce: true`.
    pub stdin: Option<Arc<tokio::sync::Mutex<Option<DuplexStream>>>>,
    pub stdin_once: bool,
    pub started_at: String,
}

/// What every pod worker of this node shares.
pub(super) struct Agent {
    pub client: Arc<dyn Client>,
    pub runtime: Arc<Runtime>,
    pub images: Images,
    pub config: AgentConfig,
    pub(super) containers: Mutex<HashMap<(String, String), ContainerRecord>>,
    /// Events about its pods (Pulling, Started, BackOff, ...), as the kubelet reports them.
    pub events: crate::machinery::events::Recorder,
    /// When the agent started, and the machine's CPU at the last stats (for its rate).
    pub started_at: String,
    pub(super) machine_cpu: Mutex<CpuSample>,
    /// The images this node holds (`node.status.images`): names and size by image ID.
    pub(super) images_held: Mutex<std::collections::BTreeMap<String, (std::collections::BTreeSet<String>, u64)>>,
    /// Told when an image is held that was not (the node's status is written again).
    pub(super) images_changed: tokio::sync::Notify,
}

impl Agent {
    pub(super) fn set_waiting(&self, uid: &str, container: &str, reason: &str) {
        self.containers.lock().entry((uid.into(), container.into())).or_default().waiting = Some(reason.into());
    }

    pub(super) fn add_run(&self, uid: &str, container: &str, log: Arc<ContainerLog>) {
        let mut containers = self.containers.lock();
        let entry = containers.entry((uid.into(), container.into())).or_default();
        entry.runs.push(log);
        if entry.runs.len() > 2 {
            entry.runs.remove(0);
        }
        entry.waiting = None;
    }

    /// The container's run now (or none, when it ended).
    pub(super) fn set_running(&self, uid: &str, container: &str, running: Option<Arc<Running>>) {
        self.containers.lock().entry((uid.into(), container.into())).or_default().running = running;
    }

    pub(super) fn running(&self, uid: &str, container: &str) -> Option<Arc<Running>> {
        self.containers.lock().get(&(uid.to_string(), container.to_string()))?.running.clone()
    }

    /// Note that the node holds image `id`, pulled as `name`.
    pub(super) fn hold_image(&self, id: &str, name: &str, size: u64) {
        let mut held = self.images_held.lock();
        let entry = held.entry(id.to_string()).or_insert_with(|| (Default::default(), size));
        if entry.0.insert(name.to_string()) {
            self.images_changed.notify_one();
        }
    }

    pub(super) fn forget(&self, uid: &str) {
        self.containers.lock().retain(|(u, _), _| u != uid);
    }
}

impl ContainerRecord {
    pub(super) fn latest(&self) -> Option<&Arc<ContainerLog>> {
        self.runs.last()
    }
}

/// The machine's busy CPU time at the last stats summary, for the node's rate.
#[derive(Default)]
pub(super) struct CpuSample {
    pub at: Option<std::time::Instant>,
    pub busy_ns: u64,
    pub rate: u64,
}
