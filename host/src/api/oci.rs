//! `/v2/`: the cluster's own OCI registry, the distribution API's pull and push over
//! [`crate::oci::BlobStore`] — what `wasmkube image push` writes to and the node agent runs
//! images from. Every request needs an authenticated user (a client certificate, a bearer
//! token, or HTTP Basic with a token as the password, as `docker login` and `oras` send);
//! errors are the distribution spec's `{"errors":[{code,message}]}`, not `Status`.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{resources, AppState};
use crate::oci::store::StoredManifest;
use crate::oci::{Digest, StoreError};

/// The largest blob a push may send (a componentize-py component is ~40 MB).
pub const MAX_BLOB_BYTES: usize = 512 << 20;
/// The largest manifest (the distribution spec's recommendation is 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A distribution-spec error.
pub(super) struct RegistryError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl RegistryError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 401 with the challenge clients answer with credentials.
    pub(super) fn unauthorized() -> Response {
        let mut response = Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required: present a client certificate, a bearer token, or Basic auth with a token as the password",
        )
        .into_response();
        if let Ok(value) = header::HeaderValue::from_str("Basic realm=\"wasmkube\"") {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = json!({"errors": [{"code": self.code, "message": self.message}]});
        (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            StoreError::ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            StoreError::NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            StoreError::UploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            StoreError::DigestInvalid { .. } => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            StoreError::ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            StoreError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        };
        if matches!(e, StoreError::Io(_)) {
            tracing::warn!(error = %e, "registry storage failed");
        }
        Self::new(status, code, e.to_string())
    }
}

/// What a `/v2/...` path names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    Uploads(String),
    Upload(String, String),
}

fn parse(path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Target::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Target::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Target::Tags(name.into()));
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
        return Some(Target::Uploads(name.into()));
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        return Some(Target::Upload(name.into(), id.into()));
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Some(Target::Blob(name.into(), digest.into()));
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Some(Target::Manifest(name.into(), reference.into()));
    }
    None
}

#[derive(serde::Deserialize, Default)]
pub(super) struct RegistryQuery {
    digest: Option<String>,
}

fn digest_of(text: &str) -> Result<Digest, RegistryError> {
    Digest::parse(text).ok_or_else(|| {
        RegistryError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", format!("{text:?} is not a sha256 digest"))
    })
}

fn repository(name: &str) -> Result<&str, RegistryError> {
    if crate::oci::reference::valid_repository(name) {
        Ok(name)
    } else {
        Err(RegistryError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", format!("invalid repository name {name:?}")))
    }
}

fn manifest_response(manifest: StoredManifest, head: bool) -> Response {
    let headers = [
        (header::CONTENT_TYPE, manifest.media_type.clone()),
        (header::HeaderName::from_static("docker-content-digest"), manifest.digest.0.clone()),
        (header::CONTENT_LENGTH, manifest.bytes.len().to_string()),
    ];
    if head {
        (StatusCode::OK, headers).into_response()
    } else {
        (StatusCode::OK, headers, manifest.bytes).into_response()
    }
}

pub(super) async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    Query(query): Query<RegistryQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match serve(&state, method, &uri, query, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn serve(
    state: &AppState,
    method: Method,
    uri: &Uri,
    query: RegistryQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let store = &state.images;
    let target = parse(uri.path()).ok_or_else(|| {
        RegistryError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", format!("no registry endpoint at {}", uri.path()))
    })?;
    let unsupported =
        || RegistryError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", format!("{method} is not supported here"));
    let head = method == Method::HEAD;
    let read_body = |limit: usize| async move {
        resources::body_within(body, limit).await.map_err(|_| {
            RegistryError::new(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID", format!("more than {limit} bytes"))
        })
    };
    match target {
        Target::Base if method == Method::GET || head => {
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{}").into_response())
        }
        Target::Catalog if method == Method::GET => {
            let repositories = store.repositories().await?;
            Ok(axum::Json(json!({"repositories": repositories})).into_response())
        }
        Target::Tags(name) if method == Method::GET => {
            let tags = store.tags(repository(&name)?).await?;
            Ok(axum::Json(json!({"name": name, "tags": tags})).into_response())
        }
        Target::Manifest(name, reference) => {
            let name = repository(&name)?;
            match method {
                Method::GET | Method::HEAD => Ok(manifest_response(store.manifest(name, &reference).await?, head)),
                Method::PUT => {
                    let media_type = headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(crate::oci::manifest::OCI_MANIFEST)
                        .to_string();
                    let bytes = read_body(MAX_MANIFEST_BYTES).await?;
                    let digest = store.put_manifest(name, &reference, &bytes, &media_type).await?;
                    tracing::info!(repository = name, reference, %digest, "image manifest pushed");
                    Ok((
                        StatusCode::CREATED,
                        [
                            (header::LOCATION, format!("/v2/{name}/manifests/{digest}")),
                            (header::HeaderName::from_static("docker-content-digest"), digest.0),
                        ],
                    )
                        .into_response())
                }
                Method::DELETE => {
                    store.delete_manifest(name, &reference).await?;
                    Ok(StatusCode::ACCEPTED.into_response())
                }
                _ => Err(unsupported()),
            }
        }
        Target::Blob(name, digest) => {
            repository(&name)?;
            let digest = digest_of(&digest)?;
            match method {
                Method::HEAD => {
                    let size = store.blob_size(&digest).await.ok_or(StoreError::BlobUnknown(digest.0.clone()))?;
                    Ok((
                        StatusCode::OK,
                        [
                            (header::CONTENT_LENGTH, size.to_string()),
                            (header::HeaderName::from_static("docker-content-digest"), digest.0),
                        ],
                    )
                        .into_response())
                }
                Method::GET => {
                    let bytes = store.read_blob(&digest).await?;
                    Ok((
                        StatusCode::OK,
                        [
                            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                            (header::HeaderName::from_static("docker-content-digest"), digest.0),
                        ],
                        bytes,
                    )
                        .into_response())
                }
                _ => Err(unsupported()),
            }
        }
        Target::Uploads(name) if method == Method::POST => {
            let name = repository(&name)?;
            if let Some(digest) = query.digest.as_deref() {
                // A monolithic upload: the blob is this request's body.
                let digest = digest_of(digest)?;
                let bytes = read_body(MAX_BLOB_BYTES).await?;
                let stored = store.put_blob(&bytes, Some(&digest)).await?;
                return Ok(created_blob(name, &stored));
            }
            let id = store.start_upload().await?;
            Ok((
                StatusCode::ACCEPTED,
                [
                    (header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
                    (header::RANGE, "0-0".to_string()),
                    (header::HeaderName::from_static("docker-upload-uuid"), id),
                ],
            )
                .into_response())
        }
        Target::Upload(name, id) => {
            let name = repository(&name)?;
            match method {
                Method::PATCH => {
                    let bytes = read_body(MAX_BLOB_BYTES).await?;
                    let size = store.append_upload(&id, &bytes).await?;
                    Ok((
                        StatusCode::ACCEPTED,
                        [
                            (header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
                            (header::RANGE, format!("0-{}", size.saturating_sub(1))),
                            (header::HeaderName::from_static("docker-upload-uuid"), id),
                        ],
                    )
                        .into_response())
                }
                Method::PUT => {
                    let digest = digest_of(query.digest.as_deref().unwrap_or_default())?;
                    let bytes = read_body(MAX_BLOB_BYTES).await?;
                    let stored = store.finish_upload(&id, &bytes, &digest).await?;
                    Ok(created_blob(name, &stored))
                }
                Method::GET => {
                    let size = store.upload_size(&id).await?;
                    Ok((
                        StatusCode::NO_CONTENT,
                        [
                            (header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
                            (header::RANGE, format!("0-{}", size.saturating_sub(1))),
                        ],
                    )
                        .into_response())
                }
                Method::DELETE => {
                    store.cancel_upload(&id).await?;
                    Ok(StatusCode::NO_CONTENT.into_response())
                }
                _ => Err(unsupported()),
            }
        }
        _ => Err(unsupported()),
    }
}

fn created_blob(name: &str, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v2/{name}/blobs/{digest}")),
            (header::HeaderName::from_static("docker-content-digest"), digest.0.clone()),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_what_the_distribution_spec_says() {
        assert_eq!(parse("/v2/"), Some(Target::Base));
        assert_eq!(parse("/v2/_catalog"), Some(Target::Catalog));
        assert_eq!(parse("/v2/a/b/tags/list"), Some(Target::Tags("a/b".into())));
        assert_eq!(parse("/v2/a/b/manifests/v1"), Some(Target::Manifest("a/b".into(), "v1".into())));
        assert_eq!(parse("/v2/a/blobs/sha256:00"), Some(Target::Blob("a".into(), "sha256:00".into())));
        assert_eq!(parse("/v2/a/blobs/uploads/"), Some(Target::Uploads("a".into())));
        assert_eq!(parse("/v2/a/blobs/uploads/x"), Some(Target::Upload("a".into(), "x".into())));
        assert_eq!(parse("/v2/a"), None);
    }
}
