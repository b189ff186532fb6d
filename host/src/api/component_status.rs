//! `v1 ComponentStatus` (`/api/v1/componentstatuses`, `kubectl get cs`): deprecated since
//! 1.19 but still served by 1.33, and read by clients as an always-there cluster-scoped
//! object. Never stored; each item is this server's health as kube-apiserver names its
//! components: `etcd-0` is the storage check, `controller-manager` the controllers'
//! checks, and `scheduler` the registry's readiness (the scheduler runs in this process
//! once the registry is open). Read-only: get and list.

use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{table, ApiError, AppState};
use crate::registry::{ApiResource, Object};

/// The resource, as discovery lists it.
pub(super) const RESOURCE: ApiResource = ApiResource {
    group: "",
    version: "v1",
    kind: "ComponentStatus",
    plural: "componentstatuses",
    singular: "componentstatus",
    namespaced: false,
    short_names: &["cs"],
    categories: &[],
    subresources: &[],
};

/// What it answers to.
pub(super) const VERBS: &[&str] = &["get", "list"];

/// The item a path names below `/api/v1`: `Some(None)` for the list, `Some(Some(name))`
/// for one; `None` if the path is not this resource's.
pub(super) fn find(group: &str, path: &[String]) -> Option<Option<String>> {
    match (group, path) {
        ("", [plural]) if plural == RESOURCE.plural => Some(None),
        ("", [plural, name]) if plural == RESOURCE.plural => Some(Some(name.clone())),
        _ => None,
    }
}

/// Answer a request for the list (`name` None) or one item.
pub(super) fn answer(
    state: &AppState,
    method: &Method,
    name: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} componentstatuses)"
        )));
    }
    let mut items = components(state);
    if let Some(name) = name {
        items.retain(|item| item["metadata"]["name"] == name);
        if items.is_empty() {
            return Err(ApiError::not_found(format!("componentstatuses \"{name}\" not found")));
        }
    }
    // kube-apiserver's deprecation warning, which kubectl prints.
    let warning = [(axum::http::header::WARNING, "299 - \"v1 ComponentStatus is deprecated in v1.19+\"")];
    if table::wanted(headers) {
        return Ok((warning, Json(as_table(&items))).into_response());
    }
    let mut items: Vec<Value> = items.into_iter().map(Value::Object).collect();
    let body = match (name, items.pop()) {
        (Some(_), Some(item)) => item,
        (_, last) => {
            items.extend(last);
            json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items})
        }
    };
    Ok((warning, Json(body)).into_response())
}

/// The components, in kube-apiserver's order.
fn components(state: &AppState) -> Vec<Object> {
    let storage = state.health.check("storage").unwrap_or_else(|| Err("not opened yet".into()));
    let registry = state.health.check("registry").unwrap_or_else(|| Err("not opened yet".into()));
    let failures = state.controller_health.failures();
    let controllers = if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) };
    [("scheduler", registry), ("controller-manager", controllers), ("etcd-0", storage)]
        .into_iter()
        .map(|(name, state)| {
            let condition = match state {
                Ok(()) => json!({"type": "Healthy", "status": "True", "message": "ok"}),
                Err(why) => json!({"type": "Healthy", "status": "False", "error": why}),
            };
            let item = json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": name},
                "conditions": [condition]});
            match item {
                Value::Object(item) => item,
                _ => Object::new(),
            }
        })
        .collect()
}

/// kube-apiserver's printer for ComponentStatus: Name, Status, Message, Error.
fn as_table(items: &[Object]) -> Value {
    let column = |name: &str, description: &str| json!({"name": name, "type": "string", "format": "", "priority": 0, "description": description});
    let definitions = vec![
        json!({"name": "Name", "type": "string", "format": "name", "priority": 0, "description": "Name must be unique within a namespace."}),
        column("Status", "Status of the component conditions"),
        column("Message", "Message of the component conditions"),
        column("Error", "Error of the component conditions"),
    ];
    let rows = items
        .iter()
        .map(|item| {
            let condition = &item["conditions"][0];
            let status = if condition["status"] == "True" { "Healthy" } else { "Unhealthy" };
            let text = |key: &str| Value::String(condition[key].as_str().unwrap_or_default().to_string());
            table::row(item, vec![item["metadata"]["name"].clone(), json!(status), text("message"), text("error")])
        })
        .collect();
    table::table_of(definitions, rows, 0)
}
