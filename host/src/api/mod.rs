//! The HTTP front: the Kubernetes API (`/version`, discovery, OpenAPI, every group's
//! resources with list and watch), the health endpoints (`/healthz`, `/livez`, `/readyz`) and
//! `/metrics`, and the cluster's OCI registry at `/v2/` (`oci.rs`).
//!
//! Owns routing and the wire format only: what an object may be is the registry's
//! business; what is healthy is decided by the components that report into [`Health`].
//! Every error leaves as a Kubernetes `Status` ([`ApiError`]).

mod authn;
mod body;
mod component_status;
mod conn;
mod discovery;
mod health;
pub mod kubelet;
mod logs;
mod modules;
mod oci;
pub mod openapi;
mod protobuf;
mod remotecommand;
mod resource_metrics;
mod resources;
mod reviews;
mod shape;
mod status;
mod table;
pub mod tls;
mod watch;

use std::sync::{Arc, OnceLock};

use axum::{
    routing::{any, get},
    Router,
};

pub use authn::Peer;
pub use conn::{write_timeouts, DEFAULT_WRITE_TIMEOUT};
pub use discovery::KUBERNETES_VERSION;
pub use health::Health;
pub use status::ApiError;

use crate::registry::Registry;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub health: Health,
    /// The controllers' health (`/healthz/controllers`), kept apart: a failing controller
    /// never makes the API unready.
    pub controller_health: Health,
    pub metrics: prometheus::Registry,
    /// Request latency by verb, path class and code (kube-apiserver's
    /// `apiserver_request_duration_seconds`, coarser).
    pub requests: prometheus::HistogramVec,
    /// Set once storage is open; until then resource requests get 503.
    pub registry: Arc<OnceLock<Arc<Registry>>>,
    /// The OpenAPI documents, built on first request.
    pub openapi: openapi::Cache,
    /// Signs and checks service-account tokens; its key is read from the store once.
    pub tokens: Arc<tokio::sync::OnceCell<Arc<crate::auth::tokens::TokenSigner>>>,
    /// The audiences a service-account token must be for to authenticate here
    /// (`--api-audiences`), and those a TokenRequest without audiences gets.
    pub api_audiences: Arc<[String]>,
    /// The cluster registry's blobs and manifests (`/v2/`).
    pub images: crate::oci::BlobStore,
    /// The node agents this process runs (`pods/log` reaches them).
    pub kubelets: kubelet::Kubelets,
    /// The cluster CA's certificate in PEM (`/cacerts`, which a joining node checks
    /// against its token's hash before it trusts this server).
    pub cluster_ca: Arc<str>,
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

    async fn token_signer(&self) -> Result<Arc<crate::auth::tokens::TokenSigner>, ApiError> {
        let registry = self.registry()?;
        let signer = self
            .tokens
            .get_or_try_init(|| async move {
                registry.signing_key().await.map(|key| Arc::new(crate::auth::tokens::TokenSigner::new(&key)))
            })
            .await?;
        Ok(signer.clone())
    }

    /// The service account a bearer token names, if the token verifies, is for one of
    /// `audiences` (none named: the API's own) and the account still exists with the uid
    /// the token was issued for; otherwise why not. With the user, the audiences of
    /// `audiences` the token is for.
    async fn authenticate_token(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<(crate::auth::UserInfo, Vec<String>), String> {
        if let Some(token) = crate::auth::bootstrap::BootstrapToken::parse(token) {
            return self.authenticate_bootstrap_token(&token).await.map(|user| (user, Vec::new()));
        }
        let audiences = if audiences.is_empty() { &self.api_audiences[..] } else { audiences };
        let signer = self.token_signer().await.map_err(|e| e.to_string())?;
        let claims = signer.verify(token, reviews::now_seconds(), audiences).map_err(|e| e.to_string())?;
        let matched = audiences.iter().filter(|a| claims.audiences.contains(a)).cloned().collect();
        let registry = self.registry().map_err(|e| e.to_string())?;
        let accounts = registry.resource("", "v1", "serviceaccounts").ok_or("service accounts are not served")?;
        let account = registry
            .get_cached(&accounts, Some(&claims.namespace), &claims.name)
            .await
            .map_err(|_| format!("service account {}/{} has been deleted", claims.namespace, claims.name))?;
        let uid = account.get("metadata").and_then(|m| m.get("uid")).and_then(serde_json::Value::as_str);
        if uid != Some(claims.uid.as_str()) {
            return Err(format!(
                "service account {}/{} was recreated since the token was issued",
                claims.namespace, claims.name
            ));
        }
        Ok((crate::auth::UserInfo::service_account(&claims.namespace, &claims.name, &claims.uid), matched))
    }

    /// A bootstrap token's user, if its Secret in kube-system makes it valid now.
    async fn authenticate_bootstrap_token(
        &self,
        token: &crate::auth::bootstrap::BootstrapToken,
    ) -> Result<crate::auth::UserInfo, String> {
        let registry = self.registry().map_err(|e| e.to_string())?;
        let secrets = registry.resource("", "v1", "secrets").ok_or("secrets are not served")?;
        let secret = registry
            .get_cached(&secrets, Some(crate::auth::bootstrap::NAMESPACE), &token.secret_name())
            .await
            .map_err(|_| "invalid bootstrap token".to_string())?;
        token.verify(&serde_json::Value::Object(secret), reviews::now_seconds().max(0) as u64)
    }

    fn openapi(&self) -> Result<Arc<openapi::Documents>, ApiError> {
        let registry = self.registry()?;
        let generation = registry.generation();
        let mut cached = self.openapi.lock();
        match &*cached {
            Some((built_at, documents)) if *built_at == generation => Ok(documents.clone()),
            _ => {
                let documents = Arc::new(openapi::Documents::build(&registry));
                *cached = Some((generation, documents.clone()));
                Ok(documents)
            }
        }
    }
}

/// The router; tests call it in-process, `serve` binds it to a socket.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/healthz/controllers", get(health::controllers))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics))
        .route("/version", get(discovery::version))
        .route("/version/", get(discovery::version))
        .route("/cacerts", get(cacerts))
        .route("/api", get(discovery::api_versions))
        // As kube-apiserver, which some clients' discovery URLs end with a slash for.
        .route("/api/", get(discovery::api_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::api_groups))
        .route("/apis/", get(discovery::api_groups))
        .route("/apis/{group}", get(discovery::api_group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::v3_root))
        .route("/openapi/v3/{*group_version}", get(openapi::v3_document))
        .route("/apis/wasmkube.io/v1alpha1/modules", any(modules::collection))
        .route("/apis/wasmkube.io/v1alpha1/modules/{digest}", any(modules::item))
        .route("/v2", any(oci::handle))
        .route("/v2/", any(oci::handle))
        .route("/v2/{*path}", any(oci::handle))
        .route("/api/v1/{*path}", any(resources::core))
        .route("/apis/{group}/{version}/{*path}", any(resources::grouped))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(resources::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authn::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The request-latency histogram, registered in `registry`.
pub fn request_metrics(registry: &prometheus::Registry) -> prometheus::Result<prometheus::HistogramVec> {
    let histogram = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(
            "wasmkube_apiserver_request_duration_seconds",
            "Latency of API requests by verb, path class and response code (watches: until the stream is set up).",
        )
        .buckets(prometheus::exponential_buckets(0.000_1, 2.0, 18)?),
        &["verb", "path", "code"],
    )?;
    registry.register(Box::new(histogram.clone()))?;
    Ok(histogram)
}

async fn observe(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let verb = request.method().as_str().to_owned();
    let path = request.uri().path();
    let class = match path {
        "/healthz" | "/livez" | "/readyz" | "/healthz/controllers" => "health",
        "/metrics" => "metrics",
        "/version" | "/version/" | "/api" | "/api/" | "/apis" | "/apis/" | "/api/v1" => "discovery",
        p if p.starts_with("/openapi/") => "openapi",
        p if p.starts_with("/api/") || p.starts_with("/apis/") => "resource",
        _ => "other",
    };
    let response = next.run(request).await;
    state
        .requests
        .with_label_values(&[verb.as_str(), class, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Whether any media range in the request's Accept headers satisfies `wanted`.
fn accepts(headers: &axum::http::HeaderMap, wanted: impl Fn(&str) -> bool) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(wanted)
}

/// A known path asked with a method it does not take (`POST /version`): 405 as a Status.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({method} {})",
        uri.path()
    ))
}

/// `/cacerts` (k3s' path): the cluster CA, to anyone; a joining node trusts it only if its
/// hash is the one its token carries.
async fn cacerts(axum::extract::State(state): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "application/x-pem-file")], state.cluster_ca.to_string()).into_response()
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
