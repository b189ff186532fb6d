//! Events about pods (the scheduler's `Scheduled`, `FailedScheduling`; the node agent's
//! `Pulling`, `Started`, `BackOff`, ...), as core/v1 Events the way client-go's recorder
//! writes them. Writing them never holds up the caller: they queue in a bounded channel and
//! a writer task creates them; when it is full, events are dropped (and counted), as
//! client-go's broadcaster drops them.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::registry::WriteOptions;

/// Events waiting to be written, at most.
const BACKLOG: usize = 4096;

pub struct Recorder {
    sender: mpsc::Sender<Value>,
    component: String,
    instance: String,
    dropped: prometheus::IntCounter,
}

/// Who an event is about.
pub struct About<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl Recorder {
    /// Start the writer; it ends when the recorder is dropped.
    pub fn start(client: Arc<dyn Client>, component: &str, instance: &str, dropped: prometheus::IntCounter) -> Self {
        let (sender, mut events) = mpsc::channel::<Value>(BACKLOG);
        let manager = component.to_string();
        tokio::spawn(async move {
            let Some(resource) = client.resource("", "v1", "events") else {
                tracing::warn!("events are not served: none are reported");
                return;
            };
            let options = WriteOptions { field_manager: Some(manager), ..WriteOptions::default() };
            while let Some(event) = events.recv().await {
                let namespace = event.pointer("/metadata/namespace").and_then(Value::as_str).map(String::from);
                if let Err(e) = client.create(&resource, namespace.as_deref(), event, &options).await {
                    tracing::debug!(error = %e, "cannot write an event");
                }
            }
        });
        Self { sender, component: component.into(), instance: instance.into(), dropped }
    }

    /// Report `reason` about the pod (`warning`: type Warning, else Normal); `action` is
    /// what the reporter was doing (events.k8s.io's field).
    pub fn pod_event(&self, about: &About, warning: bool, reason: &str, message: &str, action: &str) {
        let now = crate::registry::now();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.{nanos:x}", about.name), "namespace": about.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": about.namespace, "name": about.name, "uid": about.uid},
            "reason": reason, "message": message,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": self.component},
            "reportingComponent": self.component, "reportingInstance": self.instance,
            "action": action,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        if self.sender.try_send(event).is_err() {
            self.dropped.inc();
        }
    }
}
