//! Authentication in front of every route: the TLS client certificate (verified against
//! the cluster CA during the handshake) or an `Authorization: Bearer` service-account
//! token names the user; without either the request is `system:anonymous`, which may
//! only read `/healthz`, `/livez`, `/readyz` and `/version`. A token that does not verify
//! is 401 Unauthorized. The user travels on as a request extension ([`UserInfo`]).
//!
//! Authorization comes later (plugins); until then an authenticated user may do anything.

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;

use super::tls::TlsListener;
use super::{ApiError, AppState};
use crate::auth::{self, UserInfo};

/// What a connection says about its client: the user of its certificate, if any.
#[derive(Clone, Debug)]
pub struct Peer {
    pub certificate_user: Option<UserInfo>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, connection) = stream.io().get_ref().get_ref();
        let certificate_user = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| auth::certificate_user(leaf));
        Self { certificate_user }
    }
}

/// The password of HTTP Basic credentials (`base64(user:password)`).
fn basic_password(encoded: &str) -> Option<String> {
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_string())
}

/// Paths the anonymous user may read.
fn public(method: &Method, path: &str) -> bool {
    method == Method::GET && matches!(path, "/healthz" | "/livez" | "/readyz" | "/version" | "/version/" | "/cacerts")
}

pub(super) async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let registry_path = path == "/v2" || path.starts_with("/v2/");
    let bearer = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(|t| t.trim().to_string()).or_else(|| {
            // The registry's clients (docker login, oras) send Basic; the password is a token.
            let basic = v.strip_prefix("Basic ")?;
            registry_path.then(|| basic_password(basic)).flatten()
        })
    });
    let certificate = request.extensions().get::<ConnectInfo<Peer>>().and_then(|p| p.0.certificate_user.clone());
    let user = match (certificate, bearer) {
        (Some(user), _) => user,
        (None, Some(token)) => match state.authenticate_token(&token, &[]).await.map(|(user, _)| user) {
            Ok(user) => user,
            Err(why) => {
                return ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", format!("Unauthorized: {why}"))
                    .into_response()
            }
        },
        (None, None) => UserInfo::anonymous(),
    };
    if user.is_anonymous() && registry_path {
        return super::oci::RegistryError::unauthorized();
    }
    if user.is_anonymous() && !public(request.method(), request.uri().path()) {
        let verb = request.method().as_str().to_lowercase();
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "forbidden: User \"system:anonymous\" cannot {verb} path \"{}\": present a client certificate or a service-account token",
                request.uri().path()
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(user);
    next.run(request).await
}
