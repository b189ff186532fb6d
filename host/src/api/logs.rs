//! `GET pods/<name>/log`: which container (kube-apiserver's checks and words), then the log
//! streamed from the pod's node agent as `text/plain` (followed with `follow=true`).

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;

use super::kubelet::{LogOptions, LogRequest};
use super::{ApiError, AppState};
use crate::registry::{Registry, Resource};

pub(super) async fn answer(
    state: &AppState,
    registry: &Registry,
    pods: &Resource,
    namespace: &str,
    name: &str,
    container: Option<&str>,
    options: LogOptions,
) -> Result<Response, ApiError> {
    let pod = Value::Object(registry.get(pods, Some(namespace), name).await?);
    let container = container_of(&pod, name, container)?;
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    }
    let kubelet = state.kubelets.get(node).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("no node agent for node {node:?} answers in this server: its logs cannot be read from here"),
        )
    })?;
    let request = LogRequest {
        namespace: namespace.to_string(),
        pod: name.to_string(),
        uid: pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string(),
        container,
        options,
    };
    let stream = kubelet.container_log(request).await.map_err(|e| ApiError::bad_request(e.0))?;
    let body = Body::from_stream(stream.map(Ok::<_, std::io::Error>));
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response())
}

/// The container a request names, or the pod's only one: kube-apiserver's checks and words
/// (shared by `log`, `exec` and `attach`).
pub(super) fn container_of(pod: &Value, name: &str, container: Option<&str>) -> Result<String, ApiError> {
    let names = |path: &str| -> Vec<String> {
        pod.pointer(path)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let (containers, init) = (names("/spec/containers"), names("/spec/initContainers"));
    let container = match container.filter(|c| !c.is_empty()) {
        Some(c) => c.to_string(),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            let mut message =
                format!("a container name must be specified for pod {name}, choose one of: [{}]", containers.join(" "));
            if !init.is_empty() {
                message.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
            }
            return Err(ApiError::bad_request(message));
        }
    };
    if !containers.contains(&container) && !init.contains(&container) {
        return Err(ApiError::bad_request(format!("container {container} is not valid for pod {name}")));
    }
    Ok(container)
}
