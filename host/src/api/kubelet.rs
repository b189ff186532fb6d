//! What the API server asks of a node agent [kubelet API], and where it finds them: each
//! node agent in this process registers itself in [`Kubelets`] by node name. `pods/log`
//! is answered through it. (A node agent in another process will be reached over its
//! HTTPS endpoint through the same trait.)

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use parking_lot::RwLock;

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

/// A node agent, as the API server reaches it.
#[async_trait::async_trait]
pub trait Kubelet: Send + Sync {
    async fn container_log(&self, request: LogRequest) -> Result<BoxStream<'static, Bytes>, LogError>;
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
}
