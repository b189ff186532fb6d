//! The node agent [kubelet] for one real node: registers the Node (capacity from the
//! machine, its address the `.1` of the `podCIDR` the node-IPAM controller gives it),
//! renews its Lease and Ready heartbeat, and runs every pod bound to it (`pod.rs`) on the
//! in-process WebAssembly runtime (`runtime.rs`), each with its own IP from the range. It
//! answers the API server's `pods/log`, `pods/exec`, `pods/attach` (`exec.rs`) and stats
//! (`stats.rs`) through [`crate::api::kubelet::Kubelet`].
//!
//! It reads and writes only through the [`Client`] (pods' status, its Node, its Lease).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::context::{Agent, PodMeta, MANAGER};
use super::images::Images;
use super::runtime::Runtime;
use crate::api::kubelet::{Kubelet, Kubelets, LogError, LogRequest, Session, StreamError, StreamRequest, Summary};
use crate::client::Client;
use crate::machinery::cidr::Ipv4Net;
use crate::machinery::informer::{Change, Informers};
use crate::registry::{Error, Patch, Subresource, WriteOptions};

pub use super::context::{AgentConfig, Backoff};

#[async_trait::async_trait]
impl Kubelet for Agent {
    async fn container_log(&self, request: LogRequest) -> Result<BoxStream<'static, Bytes>, LogError> {
        let containers = self.containers.lock();
        let (container, pod) = (&request.container, &request.pod);
        let Some(runs) = containers.get(&(request.uid.clone(), container.clone())) else {
            return Err(LogError(format!(
                "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
            )));
        };
        let log = if request.options.previous {
            if runs.runs.len() < 2 {
                return Err(LogError(format!("previous terminated container {container:?} in pod {pod:?} not found")));
            }
            runs.runs[runs.runs.len() - 2].clone()
        } else {
            match (runs.latest(), &runs.waiting) {
                (Some(log), _) => log.clone(),
                (None, Some(reason)) => {
                    return Err(LogError(format!(
                        "container {container:?} in pod {pod:?} is waiting to start: {reason}"
                    )))
                }
                (None, None) => {
                    return Err(LogError(format!(
                        "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
                    )))
                }
            }
        };
        Ok(super::logs::read(log, request.options))
    }

    async fn exec(&self, request: StreamRequest) -> Result<Session, StreamError> {
        let running = self.session_target(&request)?;
        Ok(super::exec::exec(self.runtime.clone(), running, request))
    }

    async fn attach(&self, request: StreamRequest) -> Result<Session, StreamError> {
        let running = self.session_target(&request)?;
        Ok(super::exec::attach(running, request))
    }

    async fn stats(&self) -> Summary {
        super::stats::summary(self)
    }
}

impl Agent {
    /// The running container a session is for, or the kubelet's words for its absence.
    fn session_target(&self, request: &StreamRequest) -> Result<Arc<super::context::Running>, StreamError> {
        self.running(&request.uid, &request.container)
            .ok_or_else(|| StreamError(format!("container not found ({:?})", request.container)))
    }
}

/// Register the node, then (in the background) wait for its range, keep it alive and run
/// its pods until `stop`.
pub async fn run(
    client: Arc<dyn Client>,
    informers: Arc<Informers>,
    images: crate::oci::BlobStore,
    kubelets: Kubelets,
    config: AgentConfig,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let nodes = client.resource("", "v1", "nodes").ok_or_else(|| Error::Internal("nodes are not served".into()))?;
    let name = config.node_name.clone();
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "wasm32",
            "node.kubernetes.io/instance-type": "wasmkube",
            "wasmkube.io/runtime": "wasmtime",
        }},
        "spec": {},
    });
    match client.create(&nodes, None, node, &options()).await {
        Ok(_) | Err(Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    let runtime = Runtime::new().map_err(|e| Error::Internal(format!("cannot start the container runtime: {e:#}")))?;
    let agent = Arc::new(Agent {
        client: client.clone(),
        runtime,
        images: Images {
            store: images,
            local_names: config.local_registries.clone(),
            cluster_registry: config.cluster_registry.clone(),
            remote: crate::oci::remote::Remote::new(config.registry_config.clone()),
            cache: crate::oci::BlobStore::new(&config.dir),
        },
        config,
        containers: Default::default(),
        events: crate::machinery::events::Recorder::start(client.clone(), "kubelet", &name, dropped_events()),
        started_at: crate::registry::now(),
        machine_cpu: Default::default(),
        images_held: Default::default(),
        images_changed: Default::default(),
    });
    kubelets.register(&name, agent.clone());
    tokio::spawn(async move {
        let range = match wait_for_range(agent.client.as_ref(), &name, stop.clone()).await {
            Some(range) => range,
            None => return,
        };
        let Some(node_ip) = range.host(1) else {
            tracing::error!(node = %name, pod_cidr = %range, "the node's range has no address for the node");
            return;
        };
        tracing::info!(node = %name, pod_cidr = %range, %node_ip, "node agent running");
        if let Err(e) = write_node_status(&agent, node_ip).await {
            tracing::warn!(node = %name, error = %e, "cannot write the node's status yet");
        }
        tokio::spawn(heartbeat(agent.clone(), node_ip, stop.clone()));
        run_pods(agent, informers, range, node_ip, stop).await;
        kubelets.unregister(&name);
    });
    Ok(())
}

/// Counts the events the node's recorder had to drop (a full backlog).
fn dropped_events() -> prometheus::IntCounter {
    #[allow(clippy::expect_used)] // a constant, valid metric name
    prometheus::IntCounter::new(
        "wasmkube_node_events_dropped_total",
        "Events the node agent dropped: its backlog was full.",
    )
    .expect("a valid metric name")
}

fn options() -> WriteOptions {
    WriteOptions { field_manager: Some(MANAGER.into()), ..WriteOptions::default() }
}

/// The node's `spec.podCIDR`, once the node-IPAM controller has set it.
async fn wait_for_range(client: &dyn Client, name: &str, mut stop: watch::Receiver<bool>) -> Option<Ipv4Net> {
    let nodes = client.resource("", "v1", "nodes")?;
    let mut waited = Duration::ZERO;
    loop {
        if let Ok(node) = client.get(&nodes, None, name).await {
            if let Some(range) = node.get("spec").and_then(|spec| spec.get("podCIDR")).and_then(Value::as_str) {
                match Ipv4Net::parse(range) {
                    Ok(range) => return Some(range),
                    Err(e) => tracing::error!(node = name, error = %e, "the node's podCIDR is not an IPv4 range"),
                }
            }
        }
        if !waited.is_zero() && waited.as_millis() % 10_000 == 0 {
            tracing::info!(node = name, waited = ?waited, "waiting for the node-IPAM controller to give the node a podCIDR (is --allocate-node-cidrs on?)");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {},
            _ = stop.wait_for(|s| *s) => return None,
        }
        waited += Duration::from_millis(250);
    }
}

async fn write_node_status(agent: &Agent, node_ip: Ipv4Addr) -> Result<(), Error> {
    let (client, config) = (agent.client.as_ref(), &agent.config);
    let nodes = client.resource("", "v1", "nodes").ok_or_else(|| Error::Internal("nodes are not served".into()))?;
    // The kubelet lists the largest images first.
    let mut images: Vec<Value> = agent
        .images_held
        .lock()
        .iter()
        .map(|(id, (names, size))| {
            let mut names: Vec<&String> = names.iter().collect();
            names.insert(0, id);
            json!({"names": names, "sizeBytes": size})
        })
        .collect();
    images.sort_by_key(|image| std::cmp::Reverse(image["sizeBytes"].as_u64().unwrap_or_default()));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", super::machine_memory() / 1024),
        "pods": config.max_pods.to_string(),
        "ephemeral-storage": "100Gi",
    });
    let now = crate::registry::now();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| json!({"type": kind, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now});
    let status = json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": node_ip.to_string()}, {"type": "Hostname", "address": config.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "images": images,
        "nodeInfo": {
            "kubeletVersion": format!("v{}.{}.0-wasmkube", crate::api::KUBERNETES_VERSION.0, crate::api::KUBERNETES_VERSION.1),
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "wasmtime://48.0.8",
            "operatingSystem": "linux", "architecture": "wasm32",
            "osImage": "wasmkube (WASI 0.2 components)", "kernelVersion": "",
            "machineID": config.node_name, "systemUUID": config.node_name, "bootID": uuid::Uuid::new_v4().to_string(),
        },
    }});
    client.patch(&nodes, None, &config.node_name, Patch::Merge(status), Some(Subresource::Status), &options()).await?;
    Ok(())
}

/// Renew the Lease every 10 s and the Ready heartbeat every minute.
async fn heartbeat(agent: Arc<Agent>, node_ip: Ipv4Addr, mut stop: watch::Receiver<bool>) {
    let mut since_status = Duration::ZERO;
    loop {
        if let Err(e) = super::renew_lease(agent.client.as_ref(), &agent.config.node_name, MANAGER).await {
            tracing::warn!(node = %agent.config.node_name, error = %e, "cannot renew the node's Lease");
        }
        if since_status >= super::STATUS_EVERY {
            since_status = Duration::ZERO;
            if let Err(e) = write_node_status(&agent, node_ip).await {
                tracing::warn!(node = %agent.config.node_name, error = %e, "cannot write the node's status");
            }
        }
        let images_changed = tokio::select! {
            _ = tokio::time::sleep(super::LEASE_RENEW) => false,
            _ = agent.images_changed.notified() => true,
            _ = stop.wait_for(|s| *s) => return,
        };
        if images_changed {
            // A new image is on the node: its status says so now, not at the next minute.
            if let Err(e) = write_node_status(&agent, node_ip).await {
                tracing::warn!(node = %agent.config.node_name, error = %e, "cannot write the node's status");
            }
            continue;
        }
        since_status += super::LEASE_RENEW;
    }
}

/// What the informer tells the pod loop.
enum PodEvent {
    Seen(Value),
    Gone(String),
}

/// A running pod worker.
struct Worker {
    stop: watch::Sender<bool>,
    /// The deadline of a graceful deletion, once the pod has one.
    terminate: watch::Sender<Option<std::time::Instant>>,
    task: tokio::task::JoinHandle<()>,
    ip: Ipv4Addr,
    dir: PathBuf,
}

/// When a pod marked for deletion must be stopped by: its `deletionTimestamp`.
fn deadline(pod: &Value) -> std::time::Instant {
    let left = pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
        .unwrap_or_default();
    std::time::Instant::now() + left
}

/// Remove a pod whose containers are all stopped (grace 0, only that very pod).
async fn remove(client: Arc<dyn Client>, namespace: String, name: String, uid: String) {
    let Some(pods) = client.resource("", "v1", "pods") else { return };
    let options =
        crate::registry::DeleteOptions { uid: Some(uid), grace_period_seconds: Some(0), ..Default::default() };
    match client.delete(&pods, Some(&namespace), &name, &options).await {
        Ok(_) | Err(Error::NotFound { .. }) | Err(Error::Conflict { .. }) => {}
        Err(e) => tracing::warn!(pod = %name, %namespace, error = %e, "cannot remove the stopped pod"),
    }
}

async fn run_pods(
    agent: Arc<Agent>,
    informers: Arc<Informers>,
    range: Ipv4Net,
    node_ip: Ipv4Addr,
    mut stop: watch::Receiver<bool>,
) {
    let Some(pods) = informers.informer("", "v1", "pods") else { return };
    let (events, mut incoming) = mpsc::unbounded_channel();
    let node = agent.config.node_name.clone();
    let id = pods.subscribe(Arc::new(move |change: &Change| {
        let object = change.object();
        if let Change::Deleted(_) = change {
            let _ = events.send(PodEvent::Gone(object.uid.clone()));
            return;
        }
        let Ok(pod) = serde_json::from_str::<Value>(&object.json) else { return };
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node.as_str()) {
            let _ = events.send(PodEvent::Seen(pod));
        }
    }));
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut used: HashSet<Ipv4Addr> = HashSet::from([node_ip]);
    // Pods this agent asked to remove (each once).
    let mut removing: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            event = incoming.recv() => match event { Some(event) => event, None => break },
            _ = stop.wait_for(|s| *s) => break,
        };
        match event {
            PodEvent::Gone(uid) => {
                removing.remove(&uid);
                if let Some(worker) = workers.remove(&uid) {
                    let _ = worker.stop.send(true);
                    used.remove(&worker.ip);
                    agent.forget(&uid);
                    let _ = tokio::fs::remove_dir_all(&worker.dir).await;
                }
            }
            PodEvent::Seen(pod) => {
                let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
                let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
                if deleting {
                    // Graceful deletion: the worker stops the containers by the deadline,
                    // then removes the pod; a pod with no worker running goes at once.
                    let running = workers.get(&uid).filter(|w| !w.task.is_finished());
                    match running {
                        Some(worker) => {
                            if worker.terminate.borrow().is_none() {
                                worker.terminate.send_replace(Some(deadline(&pod)));
                            }
                        }
                        None if removing.insert(uid.clone()) => {
                            let namespace =
                                pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
                            let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                            tokio::spawn(remove(agent.client.clone(), namespace.into(), name.into(), uid));
                        }
                        None => {}
                    }
                    continue;
                }
                let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
                if workers.contains_key(&uid) || matches!(phase, "Succeeded" | "Failed") {
                    continue;
                }
                if workers.len() >= agent.config.max_pods as usize {
                    // The kubelet's admission: the pod fails, it does not wait.
                    let message = format!(
                        "Pod Node didn't have enough resource: pods, requested: 1, used: {}, capacity: {}",
                        workers.len(),
                        agent.config.max_pods
                    );
                    let status = json!({"status": {"phase": "Failed", "reason": "OutOfpods", "message": message}});
                    let namespace =
                        pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string();
                    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
                    let client = agent.client.clone();
                    tokio::spawn(async move {
                        let Some(pods) = client.resource("", "v1", "pods") else { return };
                        let patch = Patch::Merge(status);
                        if let Err(e) = client
                            .patch(&pods, Some(&namespace), &name, patch, Some(Subresource::Status), &options())
                            .await
                        {
                            tracing::warn!(pod = %name, error = %e, "cannot fail a pod the node has no room for");
                        }
                    });
                    continue;
                }
                let previous = pod
                    .pointer("/status/podIP")
                    .and_then(Value::as_str)
                    .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                    .filter(|ip| range.contains(*ip) && !used.contains(ip));
                let ip = previous.or_else(|| {
                    (2..range.size().saturating_sub(1) as u32)
                        .filter_map(|n| range.host(n))
                        .find(|ip| !used.contains(ip))
                });
                let Some(ip) = ip else {
                    tracing::warn!(node = %agent.config.node_name, pod_cidr = %range, "no pod address left in the node's range");
                    continue;
                };
                used.insert(ip);
                let namespace =
                    pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string();
                let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
                let dir = agent.config.dir.join("pods").join(format!("{namespace}_{name}_{uid}"));
                let meta = Arc::new(PodMeta {
                    namespace,
                    name,
                    uid: uid.clone(),
                    ip,
                    host_ip: node_ip,
                    restart_policy: pod
                        .pointer("/spec/restartPolicy")
                        .and_then(Value::as_str)
                        .unwrap_or("Always")
                        .to_string(),
                    start_time: pod
                        .pointer("/status/startTime")
                        .and_then(Value::as_str)
                        .map_or_else(crate::registry::now, str::to_string),
                    dir: dir.clone(),
                    qos_class: pod
                        .pointer("/status/qosClass")
                        .and_then(Value::as_str)
                        .unwrap_or("BestEffort")
                        .to_string(),
                    pod,
                });
                let (stop_pod, pod_stop) = watch::channel(false);
                let (terminate, terminating) = watch::channel(None);
                let task = tokio::spawn(super::pod::run(agent.clone(), meta, pod_stop, terminating));
                workers.insert(uid, Worker { stop: stop_pod, terminate, task, ip, dir });
            }
        }
    }
    pods.unsubscribe(id);
    for worker in workers.values() {
        let _ = worker.stop.send(true);
    }
}
