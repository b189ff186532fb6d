//! The HTTP front: for now the health endpoints (`/healthz`, `/livez`, `/readyz`) and
//! `/metrics`. The Kubernetes API joins this router in the API issue.
//!
//! Owns routing and response shapes only; what is healthy is decided by the components
//! that report into [`Health`].

mod health;

use axum::{routing::get, Router};

pub use health::Health;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub health: Health,
    pub metrics: prometheus::Registry,
}

/// The router; tests call it in-process, `serve` binds it to a socket.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
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
