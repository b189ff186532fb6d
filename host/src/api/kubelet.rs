//! What the API server asks of a node agent [kubelet API], and where it finds them: each
//! node agent in this process registers itself in [`Kubelets`] by node name. `pods/log`,
//! `pods/exec`, `pods/attach`, the stats summary (`/stats/summary`, what metrics.k8s.io is
//! made of) are answered through it. (A node agent in another process will be reached over
//! its HTTPS endpoint through the same trait.)
//!
//! Owns the vocabulary between the two sides only: the wire protocols of exec and attach
//! are `remotecommand.rs`'s, what runs is the node agent's.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use parking_lot::RwLock;
use tokio::sync::mpsc;

/// `pods/log`'s options, as kubectl sends them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    /// The previous run's log (the container restarted).
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    /// Only lines written at or after this time (RFC 3339, from sinceSeconds or sinceTime).
    pub since: Option<std::time::SystemTime>,
    pub limit_bytes: Option<u64>,
}

/// Which container's log.
#[derive(Clone, Debug)]
pub struct LogRequest {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    pub options: LogOptions,
}

/// Why a node cannot give a log: the message is the kubelet's (`container "x" in pod "y"
/// is waiting to start: ContainerCreating`, ...), answered as 400 BadRequest.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LogError(pub String);

/// `pods/exec` and `pods/attach`: which container, what to run (exec's argv; empty for
/// attach), and which streams the client asked for.
#[derive(Clone, Debug, Default)]
pub struct StreamRequest {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The client's side of a session: what it types (closed when the receiver ends) and
/// where the output goes (each present only when the client asked for it).
pub struct StreamIo {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
}

/// How a session ended: the command's exit code, or why it could not run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    Exited(i32),
    Failed(String),
}

/// A session the node agent has agreed to run, started once the client's streams are up.
pub type Session = Box<dyn FnOnce(StreamIo) -> BoxFuture<'static, StreamEnd> + Send>;

/// Why a node cannot start a session (`container not found ("x")`), answered 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StreamError(pub String);

/// A node agent, as the API server reaches it.
#[async_trait::async_trait]
pub trait Kubelet: Send + Sync {
    async fn container_log(&self, request: LogRequest) -> Result<BoxStream<'static, Bytes>, LogError>;
    /// Run `request.command` in the container: a fresh instance of its component's
    /// `wasi:cli/run` with the container's environment and volumes.
    async fn exec(&self, request: StreamRequest) -> Result<Session, StreamError>;
    /// Join the container's own run: its output from now on, its stdin if it has one.
    async fn attach(&self, request: StreamRequest) -> Result<Session, StreamError>;
    /// What the node and its pods use now (`/stats/summary`).
    async fn stats(&self) -> Summary;
}

/// The kubelet's `/stats/summary` (k8s.io/kubelet/pkg/apis/stats/v1alpha1), the parts
/// wasmkube measures.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    pub start_time: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    pub start_time: String,
    pub containers: Vec<ContainerStats>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    pub start_time: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

/// CPU: the rate over the last `window` (`usageNanoCores`) and the total.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: String,
    pub usage_nano_cores: u64,
    pub usage_core_nano_seconds: u64,
}

/// Memory now: for a container, what its instances' linear memories and tables hold.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    pub rss_bytes: u64,
}

/// The node agents this process runs, by node name.
#[derive(Clone, Default)]
pub struct Kubelets(Arc<RwLock<HashMap<String, Arc<dyn Kubelet>>>>);

impl Kubelets {
    pub fn register(&self, node: &str, kubelet: Arc<dyn Kubelet>) {
        self.0.write().insert(node.to_string(), kubelet);
    }

    pub fn unregister(&self, node: &str) {
        self.0.write().remove(node);
    }

    pub fn get(&self, node: &str) -> Option<Arc<dyn Kubelet>> {
        self.0.read().get(node).cloned()
    }

    /// Every node agent, by node name.
    pub fn all(&self) -> Vec<(String, Arc<dyn Kubelet>)> {
        self.0.read().iter().map(|(name, kubelet)| (name.clone(), kubelet.clone())).collect()
    }
}
