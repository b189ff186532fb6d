//! The node-IPAM controller [kube-controller-manager's nodeipam, range allocator]: every
//! Node without a `spec.podCIDR` gets the next free `--node-cidr-mask-size` range of
//! `--cluster-cidr`. The node agent then takes the range's `.1` as its own address and
//! gives its pods the rest. A Node's range is never changed once set (upstream's
//! validation forbids it). It runs while this server leads the controller manager.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::client::Client;
use crate::machinery::cidr::Ipv4Net;
use crate::machinery::informer::{Change, Informers};
use crate::registry::{Patch, WriteOptions};

/// What ranges nodes get.
#[derive(Clone, Debug)]
pub struct NodeIpam {
    pub cluster_cidr: Ipv4Net,
    pub node_mask: u8,
}

const MANAGER: &str = "wasmkube-node-ipam-controller";

/// Allocate while `leading` is true, until `stop`.
pub async fn run(
    client: Arc<dyn Client>,
    informers: Arc<Informers>,
    config: NodeIpam,
    leading: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) {
    crate::machinery::leader::while_leading(leading, stop, |finished| {
        allocate(client.clone(), informers.clone(), config.clone(), finished)
    })
    .await;
}

async fn allocate(
    client: Arc<dyn Client>,
    informers: Arc<Informers>,
    config: NodeIpam,
    mut stop: watch::Receiver<bool>,
) {
    let Some(nodes) = informers.informer("", "v1", "nodes") else { return };
    let Some(resource) = client.resource("", "v1", "nodes") else { return };
    nodes.wait_synced().await;
    let used: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let (wanted, mut want) = mpsc::unbounded_channel::<String>();
    let handler_used = used.clone();
    let cluster = config.cluster_cidr;
    let id = nodes.subscribe(Arc::new(move |change: &Change| {
        let object = change.object();
        let Ok(node) = serde_json::from_str::<Value>(&object.json) else { return };
        let cidr = node.pointer("/spec/podCIDR").and_then(Value::as_str).and_then(|c| Ipv4Net::parse(c).ok());
        let index = cidr.and_then(|c| cluster.index_of(config.node_mask, &c));
        match (change, index) {
            (Change::Deleted(_), Some(index)) => {
                handler_used.lock().remove(&index);
            }
            (Change::Deleted(_), None) => {}
            (_, Some(index)) => {
                handler_used.lock().insert(index);
            }
            (_, None) if cidr.is_none() && !object.deleting => {
                let _ = wanted.send(object.at.name.clone());
            }
            _ => {}
        }
    }));
    let options = WriteOptions { field_manager: Some(MANAGER.into()), ..WriteOptions::default() };
    let mut next = 0u64;
    let mut exhausted_said = false;
    loop {
        let name = tokio::select! {
            name = want.recv() => match name { Some(name) => name, None => break },
            _ = stop.wait_for(|s| *s) => break,
        };
        // Still without a range (the event may be old)?
        let current =
            nodes.get(&crate::machinery::informer::ObjectRef { namespace: String::new(), name: name.clone() });
        let has_range = current
            .and_then(|o| serde_json::from_str::<Value>(&o.json).ok())
            .is_none_or(|n| n.pointer("/spec/podCIDR").and_then(Value::as_str).is_some_and(|c| !c.is_empty()));
        if has_range {
            continue;
        }
        let total = cluster.subnets(config.node_mask);
        let free = {
            let used = used.lock();
            (0..total).map(|i| (next + i) % total).find(|i| !used.contains(i))
        };
        let Some(index) = free else {
            if !exhausted_said {
                tracing::warn!(node = %name, cluster_cidr = %cluster, "CIDRNotAvailable: every node range of the cluster CIDR is taken");
                exhausted_said = true;
            }
            continue;
        };
        let Some(range) = cluster.subnet(config.node_mask, index) else { continue };
        used.lock().insert(index);
        next = index + 1;
        let patch = Patch::Merge(json!({"spec": {"podCIDR": range.to_string(), "podCIDRs": [range.to_string()]}}));
        match client.patch(&resource, None, &name, patch, None, &options).await {
            Ok(_) => tracing::info!(node = %name, pod_cidr = %range, "node range allocated"),
            Err(e) => {
                used.lock().remove(&index);
                tracing::warn!(node = %name, error = %e, "cannot give the node its range");
            }
        }
    }
    nodes.unsubscribe(id);
}
