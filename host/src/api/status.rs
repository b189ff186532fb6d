//! Every API error as a Kubernetes `Status` object with the right `reason` and `code`.
//! [`ApiError`] implements `IntoResponse`, so handlers just use `?`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::registry;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    /// The `Status` object, also used for ERROR events in watch streams.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let (Some(details), Some(map)) = (&self.details, status.as_object_mut()) {
            map.insert("details".into(), details.clone());
        }
        status
    }
}

impl From<registry::Error> for ApiError {
    fn from(error: registry::Error) -> Self {
        use registry::Error as E;
        let message = error.to_string();
        let (code, reason, details) = match &error {
            E::NotFound { resource, name } => (
                StatusCode::NOT_FOUND,
                "NotFound",
                Some(json!({"name": name, "kind": resource_kind(resource), "group": resource_group(resource)})),
            ),
            E::AlreadyExists { resource, name } => (
                StatusCode::CONFLICT,
                "AlreadyExists",
                Some(json!({"name": name, "kind": resource_kind(resource), "group": resource_group(resource)})),
            ),
            E::Conflict { resource, name, .. } => (
                StatusCode::CONFLICT,
                "Conflict",
                Some(json!({"name": name, "kind": resource_kind(resource), "group": resource_group(resource)})),
            ),
            E::ApplyConflict { resource, name, causes, .. } => (
                StatusCode::CONFLICT,
                "Conflict",
                Some(json!({
                    "name": name,
                    "kind": resource_kind(resource),
                    "group": resource_group(resource),
                    "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
                })),
            ),
            E::Invalid { kind, name, causes } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid", {
                let (kind, group) = kind.split_once('.').unwrap_or((kind.as_str(), ""));
                let mut details = json!({
                    "name": name,
                    "kind": kind,
                    "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
                });
                if !group.is_empty() {
                    details["group"] = json!(group);
                }
                Some(details)
            }),
            E::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest", None),
            E::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden", None),
            E::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", None),
            E::Gone(_) => (StatusCode::GONE, "Expired", None),
            E::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "Timeout", None),
            E::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", None),
            E::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", None),
            E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", None),
            E::Denied { code, .. } => {
                let code = StatusCode::from_u16(*code).unwrap_or(StatusCode::FORBIDDEN);
                let reason = match code {
                    StatusCode::BAD_REQUEST => "BadRequest",
                    StatusCode::UNAUTHORIZED => "Unauthorized",
                    StatusCode::NOT_FOUND => "NotFound",
                    StatusCode::CONFLICT => "Conflict",
                    StatusCode::UNPROCESSABLE_ENTITY => "Invalid",
                    StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
                    c if c.is_server_error() => "InternalError",
                    _ => "Forbidden",
                };
                (code, reason, None)
            }
        };
        Self { code, reason, message, details }
    }
}

fn resource_kind(qualified: &str) -> &str {
    qualified.split_once('.').map_or(qualified, |(plural, _)| plural)
}

fn resource_group(qualified: &str) -> &str {
    qualified.split_once('.').map_or("", |(_, group)| group)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code.is_server_error() {
            tracing::warn!(code = self.code.as_u16(), reason = self.reason, message = %self.message, "request failed");
        }
        (self.code, axum::Json(self.status())).into_response()
    }
}
