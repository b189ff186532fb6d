//! `/apis/wasmkube.io/v1alpha1/modules`: plugin modules uploaded through the API.
//! `POST` a component's bytes (`application/wasm`, up to 64 MiB) and get its digest; a
//! `Plugin` then names it as `spec.module: sha256:<hex>`. `GET .../modules/<digest>`
//! says whether (and how) it is stored. The registry keeps the bytes (`registry/modules.rs`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{resources, ApiError, AppState};
use crate::registry::modules::MAX_MODULE_BYTES;

pub(super) async fn collection(
    State(state): State<AppState>,
    method: Method,
    body: Body,
) -> Result<Response, ApiError> {
    if method != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} pluginmodules.wasmkube.io): modules are only uploaded (POST) and read one by one"
        )));
    }
    let registry = state.registry()?;
    let bytes = resources::body_within(body, MAX_MODULE_BYTES).await?;
    let (info, created) = registry.put_module(&bytes).await?;
    tracing::info!(digest = %info.digest, size = info.size, chunks = info.chunks, created, "plugin module uploaded");
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((code, Json(info.to_json())).into_response())
}

pub(super) async fn item(
    State(state): State<AppState>,
    method: Method,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} pluginmodules.wasmkube.io): a module is immutable (upload another)"
        )));
    }
    let registry = state.registry()?;
    match registry.module_info(&digest).await? {
        Some(info) => Ok(Json(info.to_json()).into_response()),
        None => Err(ApiError::not_found(format!("pluginmodules.wasmkube.io \"{digest}\" not found"))),
    }
}
