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

/// Paths the anonymous user may read.
fn public(method: &Method, path: &str) -> bool {
    method == Method::GET && matches!(path, "/healthz" | "/livez" | "/readyz" | "/version" | "/version/")
}

pub(super) async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string());
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
