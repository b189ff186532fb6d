//! Controllers that run inside the server. Until the controller host (informers, work
//! queues, leader election, controllers as plugins) exists, the namespace finalizer lives
//! here, so that deleting a namespace works the way kubectl users expect; and the CRD
//! controller, which is part of the API server itself (every server runs it).

pub mod crd;
pub mod gc;
pub mod informer;
pub mod leader;
pub mod manager;
pub mod namespace;
pub mod plugins;
pub mod queue;

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
