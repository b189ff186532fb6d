//! What every pod worker of one node shares ([`Agent`]): the client, the runtime, where
//! images come from, the node's configuration, and the logs of each container's runs (what
//! `pods/log` reads). The node agent (`agent.rs`) makes it; pod workers (`pod.rs`) use it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::images::Images;
use super::logs::ContainerLog;
use super::runtime::Runtime;
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
}

/// Who writes (managedFields).
pub(super) const MANAGER: &str = "wasmkube-node-agent";

/// The runs of one container whose logs can be read: the latest and the one before.
#[derive(Default)]
pub(super) struct RunLogs {
    pub runs: Vec<Arc<ContainerLog>>,
    pub waiting: Option<String>,
}

/// What every pod worker of this node shares.
pub(super) struct Agent {
    pub client: Arc<dyn Client>,
    pub runtime: Arc<Runtime>,
    pub images: Images,
    pub config: AgentConfig,
    pub(super) logs: Mutex<HashMap<(String, String), RunLogs>>,
    /// Events about its pods (Pulling, Started, BackOff, ...), as the kubelet reports them.
    pub events: crate::machinery::events::Recorder,
}

impl Agent {
    pub(super) fn set_waiting(&self, uid: &str, container: &str, reason: &str) {
        self.logs.lock().entry((uid.into(), container.into())).or_default().waiting = Some(reason.into());
    }

    pub(super) fn add_run(&self, uid: &str, container: &str, log: Arc<ContainerLog>) {
        let mut logs = self.logs.lock();
        let entry = logs.entry((uid.into(), container.into())).or_default();
        entry.runs.push(log);
        if entry.runs.len() > 2 {
            entry.runs.remove(0);
        }
        entry.waiting = None;
    }

    pub(super) fn forget(&self, uid: &str) {
        self.logs.lock().retain(|(u, _), _| u != uid);
    }
}

impl RunLogs {
    pub(super) fn latest(&self) -> Option<&Arc<ContainerLog>> {
        self.runs.last()
    }
}
