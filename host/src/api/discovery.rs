//! `/version` and discovery (`/api`, `/api/v1`, `/apis`): what kubectl asks first.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};

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

/// The media type of aggregated discovery, which kubectl 1.30+ asks for first.
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn wants_aggregated(headers: &HeaderMap) -> bool {
    super::accepts(headers, |media| {
        media.contains("as=APIGroupDiscoveryList") && media.contains("v=v2") && !media.contains("v2beta1")
    })
}

fn aggregated(items: Vec<Value>) -> Response {
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    ([(header::CONTENT_TYPE, AGGREGATED)], Json(body)).into_response()
}

/// `/api`: the core group's versions, or with the aggregated Accept, every core resource.
pub(super) async fn api_versions(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !wants_aggregated(&headers) {
        return Ok(Json(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }))
        .into_response());
    }
    let registry = state.registry()?;
    let resources: Vec<Value> = registry
        .resources()
        .filter(|r| r.group.is_empty())
        .map(|r| {
            json!({
                "resource": r.plural,
                "singularResource": r.singular,
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "verbs": VERBS,
                "shortNames": r.short_names,
            })
        })
        .collect();
    Ok(aggregated(vec![json!({
        "metadata": {"name": ""},
        "versions": [{"version": "v1", "freshness": "Current", "resources": resources}],
    })]))
}

/// `/apis`: the named groups (none are served yet).
pub(super) async fn api_groups(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(Vec::new());
    }
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})).into_response()
}

/// The verbs every served resource supports.
const VERBS: [&str; 7] = ["create", "delete", "get", "list", "patch", "update", "watch"];

pub(super) async fn core_resources(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
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
                "verbs": VERBS,
                "shortNames": r.short_names,
            })
        })
        .collect();
    Ok(Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resources})))
}
