//! Controllers that run inside the server:
//!
//! - the controller host (kube-controller-manager): the controller plugins run while this
//!   server leads (`manager`) and the garbage collector (`gc`), over the shared informers,
//!   work queues and leader election of `crate::machinery`;
//! - the API server's own controllers, which every server runs: CRDs (`crd`) and Plugin
//!   objects (`plugins`).

pub mod crd;
pub mod csr;
pub mod gc;
pub mod manager;
mod metrics;
pub mod node_ipam;
pub mod plugins;

/// Set condition `kind` in `status`, keeping its transition time unless its status changes.
pub(crate) fn set_condition(status: &mut serde_json::Value, kind: &str, value: &str, reason: &str, message: &str) {
    if !status.is_object() {
        *status = serde_json::json!({});
    }
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let existing = conditions.iter().find(|c| c["type"] == kind);
    let since = match existing {
        Some(c) if c["status"] == value => c["lastTransitionTime"].clone(),
        _ => serde_json::json!(crate::registry::now()),
    };
    let condition = serde_json::json!({"type": kind, "status": value, "lastTransitionTime": since, "reason": reason, "message": message});
    let mut updated: Vec<serde_json::Value> = conditions.into_iter().filter(|c| c["type"] != kind).collect();
    updated.push(condition);
    updated.sort_by(|a, b| a["type"].as_str().cmp(&b["type"].as_str()));
    status["conditions"] = serde_json::Value::Array(updated);
}
