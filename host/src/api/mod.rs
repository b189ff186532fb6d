//! The HTTP front: the Kubernetes API (`/version`, discovery, the core group's resources
//! with list and watch), the health endpoints (`/healthz`, `/livez`, `/readyz`) and
//! `/metrics`.
//!
//! Owns routing and the wire format only: what an object may be is the registry's
//! business; what is healthy is decided by the components that report into [`Health`].
//! Every error leaves as a Kubernetes `Status` ([`ApiError`]).

mod discovery;
mod health;
mod resources;
mod status;
pub mod tls;

use std::sync::{Arc, OnceLock};

use axum::{
    routing::{any, get},
    Router,
};

pub use discovery::KUBERNETES_VERSION;
pub use health::Health;
pub use status::ApiError;

use crate::registry::Registry;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub health: Health,
    pub metrics: prometheus::Registry,
    /// Set once storage is open; until then resource requests get 503.
    pub registry: Arc<OnceLock<Arc<Registry>>>,
}

impl AppState {
    fn registry(&self) -> Result<Arc<Registry>, ApiError> {
        self.registry.get().cloned().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "storage is not ready yet; see /readyz?verbose",
            )
        })
    }
}

/// The router; tests call it in-process, `serve` binds it to a socket.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics))
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::api_groups))
        .route("/api/v1/{*path}", any(resources::core))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("the server could not find the requested resource ({})", uri.path()))
}

async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&state.metrics.gather()) {
        Ok(text) => ([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => {
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}\n")).into_response()
        }
    }
}
