//! The node agent [kubelet] and the container runtime. `agent` runs one real node: its
//! pods (`pod`) are WebAssembly components run in-process (`runtime`), their images pulled
//! from the cluster's registry (`images`), their environment (`env`) and volumes
//! (`volumes`) made as the kubelet makes them, probed (`probe`), their output kept as the
//! kubelet keeps it (`logs`), their CPU and memory counted and limited (`usage`) and
//! reported (`stats`); exec and attach sessions run beside them (`exec`). `sim` registers
//! simulated nodes that run the pods bound to them on paper, for controllers, the
//! scheduler and scale tests. Both reach the API only through the [`Client`].

pub mod agent;
mod context;
mod env;
mod exec;
mod images;
mod logs;
mod pod;
mod probe;
mod runtime;
pub mod sim;
mod stats;
mod usage;
mod volumes;

use std::time::Duration;

use serde_json::json;

use crate::client::Client;
use crate::registry::{Error, Patch, WriteOptions};

/// How often a node's Lease is renewed and its Ready condition's heartbeat written
/// (the kubelet's defaults: 10 s, and a status update at most every minute).
const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_SECONDS: u64 = 40;
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// The machine's memory in bytes (`MemTotal`), the node's capacity; 1 GiB if unreadable.
fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(1 << 30, |kib| kib * 1024)
}

fn micro_now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// Renew (or create) the node's Lease in `kube-node-lease`, written by `manager`.
async fn renew_lease(client: &dyn Client, node: &str, manager: &str) -> Result<(), Error> {
    let leases = client
        .resource("coordination.k8s.io", "v1", "leases")
        .ok_or_else(|| Error::Internal("leases are not served".into()))?;
    let options = WriteOptions { field_manager: Some(manager.into()), ..WriteOptions::default() };
    let spec = json!({"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro_now()});
    let patch = Patch::Merge(json!({"spec": spec}));
    match client.patch(&leases, Some("kube-node-lease"), node, patch, None, &options).await {
        Ok(_) => Ok(()),
        Err(Error::NotFound { .. }) => {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"}, "spec": spec});
            match client.create(&leases, Some("kube-node-lease"), lease, &options).await {
                Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}
