//! `/version` and discovery (`/api`, `/api/v1`, `/apis`): what kubectl asks first.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

/// The Kubernetes minor whose API wasmkube serves.
pub const KUBERNETES_VERSION: (&str, &str) = ("1", "33");

pub(super) async fn version() -> Json<Value> {
    let (major, minor) = KUBERNETES_VERSION;
    Json(json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{major}.{minor}.0+wasmkube-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    }))
}

pub(super) async fn api_versions() -> Json<Value> {
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
}

pub(super) async fn api_groups() -> Json<Value> {
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
}

pub(super) async fn core_resources(State(state): State<AppState>) -> Result<Json<Value>, super::ApiError> {
    let registry = state.registry()?;
    let resources: Vec<Value> = registry
        .resources()
        .filter(|r| r.group.is_empty())
        .map(|r| {
            json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                "shortNames": r.short_names,
            })
        })
        .collect();
    Ok(Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resources})))
}
