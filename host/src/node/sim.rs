//! Simulated nodes (in the spirit of KWOK), standing in for the node agent: `serve
//! --sim-nodes N` registers N Nodes with the configured capacity and labels, keeps them
//! Ready (a heartbeat in their status and their Lease in `kube-node-lease`, as the kubelet
//! does), and moves every pod bound to one of them to Running and Ready, with its
//! containers' statuses, after `start_delay`, so controllers and `kubectl rollout status`
//! see real-looking progress.
//!
//! It reads pods through a shared informer and writes through the [`Client`] (the status
//! subresource), never storage. Every server started with the flag runs it for its nodes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::client::Client;
use crate::machinery::informer::{Change, Informers};
use crate::registry::{Error, Patch, Subresource, WriteOptions};

/// What the simulated nodes are like.
#[derive(Clone, Debug)]
pub struct SimNodes {
    pub count: usize,
    /// Capacity of each node (Kubernetes quantities).
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    /// Labels besides each node's own (hostname, zone, os, arch).
    pub labels: Vec<(String, String)>,
    /// Taints (as the API writes them: key, value, effect).
    pub taints: Vec<Value>,
    /// How long a bound pod takes to be Running and Ready.
    pub start_delay: Duration,
}

/// A taint as `kubectl taint` writes it: `key=value:Effect` or `key:Effect`.
pub fn parse_taint(text: &str) -> Result<Value, String> {
    let (key_value, effect) =
        text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not key=value:Effect (the effect is missing)"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!("{text:?}: the effect must be NoSchedule, PreferNoSchedule or NoExecute, not {effect:?}"));
    }
    let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
    if key.is_empty() {
        return Err(format!("{text:?} has no key"));
    }
    Ok(json!({"key": key, "value": value, "effect": effect}))
}

impl SimNodes {
    /// The name of node `i`.
    pub fn name(i: usize) -> String {
        format!("sim-node-{i:03}")
    }
}

use super::{LEASE_RENEW, STATUS_EVERY};
/// Who writes (managedFields).
const MANAGER: &str = "wasmkube-sim-node";

fn options() -> WriteOptions {
    WriteOptions { field_manager: Some(MANAGER.into()), ..WriteOptions::default() }
}

fn now() -> String {
    crate::registry::now()
}

/// Register the nodes, then keep them alive and run their pods until `stop`.
pub async fn run(
    client: Arc<dyn Client>,
    informers: Arc<Informers>,
    config: SimNodes,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let names: Arc<HashSet<String>> = Arc::new((0..config.count).map(SimNodes::name).collect());
    for i in 0..config.count {
        register(client.as_ref(), &config, i).await?;
    }
    tracing::info!(nodes = config.count, cpu = %config.cpu, memory = %config.memory, pods = config.pods, "simulated nodes registered");
    tokio::spawn(heartbeat(client.clone(), config.clone(), stop.clone()));
    let Some(pods) = informers.informer("", "v1", "pods") else {
        return Err(Error::Internal("pods are not served".into()));
    };
    // Pods already started (or being started): each is started once.
    let starting: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (client, delay) = (client.clone(), config.start_delay);
    // Pods marked for deletion that this node was asked to remove (each once).
    let removing: Arc<Mutex<HashSet<String>>> = Arc::default();
    let id = pods.subscribe(Arc::new(move |change: &Change| {
        let pod = match change {
            Change::Added(pod) | Change::Updated { new: pod, .. } => pod,
            Change::Deleted(pod) => {
                removing.lock().remove(&pod.uid);
                return;
            }
        };
        let Ok(object) = serde_json::from_str::<Value>(&pod.json) else { return };
        let node = object.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
        if pod.deleting {
            // Graceful deletion: nothing runs on a simulated node, so it is stopped at once.
            if names.contains(node) && removing.lock().insert(pod.uid.clone()) {
                let (client, uid) = (client.clone(), pod.uid.clone());
                let (namespace, name) = (pod.at.namespace.clone(), pod.at.name.clone());
                tokio::spawn(async move {
                    let Some(pods) = client.resource("", "v1", "pods") else { return };
                    let options = crate::registry::DeleteOptions {
                        uid: Some(uid),
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    };
                    if let Err(e) = client.delete(&pods, Some(&namespace), &name, &options).await {
                        tracing::debug!(pod = %name, error = %e, "simulated node: cannot remove the pod");
                    }
                });
            }
            return;
        }
        if !names.contains(node) || is_running(&object) {
            return;
        }
        if !starting.lock().insert(pod.uid.clone()) {
            return;
        }
        let (client, starting, uid) = (client.clone(), starting.clone(), pod.uid.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = start(client.as_ref(), &object).await {
                let name = object.pointer("/metadata/name").and_then(|n| n.as_str()).unwrap_or_default();
                tracing::debug!(pod = %name, error = %e, "simulated node: cannot start the pod yet");
                // Looked at again on its next change.
                starting.lock().remove(&uid);
            }
        });
    }));
    let mut stop = stop;
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        pods.unsubscribe(id);
    });
    Ok(())
}

fn is_running(pod: &Value) -> bool {
    pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        || pod.pointer("/status/phase").and_then(Value::as_str) == Some("Succeeded")
        || pod.pointer("/status/phase").and_then(Value::as_str) == Some("Failed")
}

/// Create (or refresh) node `i`: capacity, labels, Ready, and its Lease.
async fn register(client: &dyn Client, config: &SimNodes, i: usize) -> Result<(), Error> {
    let nodes = client.resource("", "v1", "nodes").ok_or_else(|| Error::Internal("nodes are not served".into()))?;
    let name = SimNodes::name(i);
    let capacity = json!({"cpu": config.cpu, "memory": config.memory, "pods": config.pods.to_string(), "ephemeral-storage": "100Gi"});
    let mut labels = json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "wasmkube-sim",
        "topology.kubernetes.io/zone": format!("zone-{}", ["a", "b", "c"][i % 3]),
        "type": "sim",
    });
    for (key, value) in &config.labels {
        labels[key] = json!(value);
    }
    let spec = if config.taints.is_empty() { json!({}) } else { json!({"taints": config.taints}) };
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    });
    match client.create(&nodes, None, node, &options()).await {
        Ok(_) | Err(Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    let status = json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "the simulated node is ready",
            "lastHeartbeatTime": now(), "lastTransitionTime": now(),
        }],
        "addresses": [{"type": "InternalIP", "address": format!("10.240.{}.{}", i / 250, i % 250 + 1)}, {"type": "Hostname", "address": name}],
        "nodeInfo": {
            "kubeletVersion": "v1.33.0-wasmkube-sim", "kubeProxyVersion": "v1.33.0-wasmkube-sim",
            "containerRuntimeVersion": "wasmkube-sim://0.1", "operatingSystem": "linux", "architecture": "amd64",
            "osImage": "wasmkube simulated node", "kernelVersion": "sim", "machineID": name, "systemUUID": name, "bootID": name,
        },
    }});
    client.patch(&nodes, None, &name, Patch::Merge(status), Some(Subresource::Status), &options()).await?;
    super::renew_lease(client, &name, MANAGER).await
}

/// Renew every node's Lease every 10 s, and its Ready heartbeat every minute.
async fn heartbeat(client: Arc<dyn Client>, config: SimNodes, mut stop: watch::Receiver<bool>) {
    let mut since_status = Duration::ZERO;
    loop {
        tokio::select! { _ = tokio::time::sleep(LEASE_RENEW) => {}, _ = stop.changed() => return }
        if *stop.borrow() {
            return;
        }
        since_status += LEASE_RENEW;
        let refresh = since_status >= STATUS_EVERY;
        if refresh {
            since_status = Duration::ZERO;
        }
        for i in 0..config.count {
            let outcome = if refresh {
                register(client.as_ref(), &config, i).await
            } else {
                super::renew_lease(client.as_ref(), &SimNodes::name(i), MANAGER).await
            };
            if let Err(e) = outcome {
                tracing::warn!(node = %SimNodes::name(i), error = %e, "simulated node: cannot renew");
            }
        }
    }
}

/// Move a pod bound to a simulated node to Running and Ready.
async fn start(client: &dyn Client, pod: &Value) -> Result<(), Error> {
    let pods = client.resource("", "v1", "pods").ok_or_else(|| Error::Internal("pods are not served".into()))?;
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str);
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    let started = now();
    let statuses: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c["name"], "image": c["image"], "imageID": format!("sim://{}", c["image"].as_str().unwrap_or_default()),
                "containerID": format!("sim://{name}/{}", c["name"].as_str().unwrap_or_default()),
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            })
        })
        .collect();
    let condition =
        |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": started});
    let digits: u32 =
        pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().bytes().map(u32::from).sum();
    let status = json!({"status": {
        "phase": "Running",
        "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
        "hostIP": format!("10.240.0.{}", node.bytes().map(u32::from).sum::<u32>() % 250 + 1),
        "podIP": format!("10.244.{}.{}", digits / 250 % 250, digits % 250 + 1),
        "startTime": started,
        "containerStatuses": statuses,
    }});
    client.patch(&pods, namespace, name, Patch::Merge(status), Some(Subresource::Status), &options()).await.map(|_| ())
}
