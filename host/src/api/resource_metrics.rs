//! The resource metrics API, `metrics.k8s.io/v1beta1` (what metrics-server serves and
//! `kubectl top` reads): `NodeMetrics` and `PodMetrics`, made on each request from the stats
//! summaries of the node agents this server reaches, for the Nodes and Pods the registry
//! holds (so label selectors and namespaces work as on the objects). A pod with no running
//! container on a reachable node has no metrics, as with metrics-server. Never stored;
//! read-only: get and list.
//!
//! Also the node proxy's `stats/summary` and `healthz` (`/api/v1/nodes/<name>/proxy/...`).

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::kubelet::{CpuStats, MemoryStats, Summary};
use super::{ApiError, AppState};
use crate::registry::{ApiResource, ListOptions, Registry};

const GROUP: &str = "metrics.k8s.io";
const VERSION: &str = "v1beta1";

pub(super) const NODES: ApiResource = ApiResource {
    group: GROUP,
    version: VERSION,
    kind: "NodeMetrics",
    plural: "nodes",
    singular: "",
    namespaced: false,
    short_names: &[],
    categories: &[],
    subresources: &[],
};

pub(super) const PODS: ApiResource = ApiResource {
    group: GROUP,
    version: VERSION,
    kind: "PodMetrics",
    plural: "pods",
    singular: "",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
};

/// What it answers to.
pub(super) const VERBS: &[&str] = &["get", "list"];

/// A request below `/apis/metrics.k8s.io/v1beta1`.
pub(super) struct Target {
    pub pods: bool,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Target {
    /// The kind of the objects it reads (for their field selectors).
    pub(super) fn object_kind(&self) -> &'static str {
        if self.pods {
            "Pod"
        } else {
            "Node"
        }
    }
}

/// The metrics a path names, if it is this group's.
pub(super) fn find(group: &str, version: &str, path: &[String]) -> Option<Target> {
    if group != GROUP || version != VERSION {
        return None;
    }
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let target = |pods, namespace: Option<&str>, name: Option<&str>| Target {
        pods,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
    };
    match segments.as_slice() {
        ["nodes"] => Some(target(false, None, None)),
        ["nodes", name] => Some(target(false, None, Some(name))),
        ["pods"] => Some(target(true, None, None)),
        ["namespaces", ns, "pods"] => Some(target(true, Some(ns), None)),
        ["namespaces", ns, "pods", name] => Some(target(true, Some(ns), Some(name))),
        _ => None,
    }
}

pub(super) async fn answer(
    state: &AppState,
    registry: &Registry,
    method: &Method,
    target: Target,
    options: ListOptions,
) -> Result<Response, ApiError> {
    let resource = if target.pods { &PODS } else { &NODES };
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {}.{GROUP})",
            resource.plural
        )));
    }
    let summaries = summaries(state).await;
    let objects = registry
        .resource("", "v1", if target.pods { "pods" } else { "nodes" })
        .ok_or_else(|| ApiError::not_found("the objects measured are not served"))?;
    let mut items: Vec<Value> = Vec::new();
    match &target.name {
        Some(name) => {
            let object = registry.get(&objects, target.namespace.as_deref(), name).await?;
            items.extend(metrics_of(&Value::Object(object), target.pods, &summaries));
            if items.is_empty() {
                let kind = resource.kind.to_ascii_lowercase();
                return Err(ApiError::not_found(format!("{kind}.{GROUP} {name:?} not found")));
            }
        }
        None => {
            let list = registry.list(&objects, target.namespace.as_deref(), options).await?;
            for object in list.items {
                items.extend(metrics_of(&Value::Object(object), target.pods, &summaries));
            }
        }
    }
    let api_version = format!("{GROUP}/{VERSION}");
    let body = match (&target.name, items.pop()) {
        (Some(_), Some(item)) => item,
        (_, last) => {
            items.extend(last);
            json!({"kind": format!("{}List", resource.kind), "apiVersion": api_version, "metadata": {}, "items": items})
        }
    };
    Ok(Json(body).into_response())
}

/// `/api/v1/nodes/<name>/proxy/<path>`: the node agent's `stats/summary` and `healthz`.
pub(super) async fn node_proxy(state: &AppState, node: &str, path: &[String]) -> Result<Response, ApiError> {
    let kubelet = state.kubelets.get(node).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("no node agent for node {node:?} answers in this server"),
        )
    })?;
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match path.as_slice() {
        ["stats", "summary"] => Ok(Json(kubelet.stats().await).into_response()),
        ["healthz"] => Ok((StatusCode::OK, "ok").into_response()),
        _ => Err(ApiError::not_found(format!(
            "the node agent serves stats/summary and healthz, not /{}",
            path.join("/")
        ))),
    }
}

/// Every reachable node agent's summary, by node name.
async fn summaries(state: &AppState) -> Vec<(String, Summary)> {
    let kubelets = state.kubelets.all();
    let asked = kubelets.iter().map(|(_, kubelet)| kubelet.stats());
    let answers = futures::future::join_all(asked).await;
    kubelets.into_iter().map(|(name, _)| name).zip(answers).collect()
}

/// The NodeMetrics or PodMetrics of one object, if its node measured it.
fn metrics_of(object: &Value, pod: bool, summaries: &[(String, Summary)]) -> Option<Value> {
    let metadata = &object["metadata"];
    let mut meta = json!({
        "name": metadata["name"],
        "creationTimestamp": crate::registry::now(),
    });
    if let Some(labels) = metadata.get("labels") {
        meta["labels"] = labels.clone();
    }
    if pod {
        let uid = metadata["uid"].as_str()?;
        let node = object.pointer("/spec/nodeName").and_then(Value::as_str)?;
        let (_, summary) = summaries.iter().find(|(name, _)| name == node)?;
        let stats = summary.pods.iter().find(|p| p.pod_ref.uid == uid)?;
        meta["namespace"] = metadata["namespace"].clone();
        let containers: Vec<Value> =
            stats.containers.iter().map(|c| json!({"name": c.name, "usage": usage(&c.cpu, &c.memory)})).collect();
        Some(json!({
            "kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": meta,
            "timestamp": stats.cpu.time, "window": "1s", "containers": containers,
        }))
    } else {
        let name = metadata["name"].as_str()?;
        let (_, summary) = summaries.iter().find(|(node, _)| node == name)?;
        let node = &summary.node;
        Some(json!({
            "kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": meta,
            "timestamp": node.cpu.time, "window": "1s", "usage": usage(&node.cpu, &node.memory),
        }))
    }
}

/// `{"cpu": "123n", "memory": "456Ki"}`, as metrics-server writes usage.
fn usage(cpu: &CpuStats, memory: &MemoryStats) -> Value {
    json!({"cpu": format!("{}n", cpu.usage_nano_cores), "memory": format!("{}Ki", memory.working_set_bytes / 1024)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_lists_and_items() {
        let path = |p: &str| p.split('/').map(str::to_string).collect::<Vec<_>>();
        let pods = find(GROUP, VERSION, &path("namespaces/default/pods/web")).expect("a pod's metrics");
        assert!(pods.pods);
        assert_eq!((pods.namespace.as_deref(), pods.name.as_deref()), (Some("default"), Some("web")));
        let nodes = find(GROUP, VERSION, &path("nodes")).expect("the nodes' metrics");
        assert!(!nodes.pods && nodes.name.is_none());
        assert!(find(GROUP, VERSION, &path("services")).is_none());
        assert!(find("apps", "v1", &path("pods")).is_none());
    }
}
