//! Pulling from registries other than the cluster's, with oci-client (over rustls with
//! ring): the system's roots plus a registry's own CA, plain HTTP for the loopback
//! registries the config names, Basic credentials (oci-client trades them for a bearer
//! token when the registry asks for one) or none.
//!
//! Owns the network side only: what a manifest must hold is `manifest.rs`'s, what a pod
//! shows when a pull fails the node agent's.

use std::collections::HashMap;
use std::sync::Arc;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use parking_lot::Mutex;

use super::config::{ConfigError, RegistryConfig};
use super::manifest::{DOCKER_MANIFEST, OCI_MANIFEST};
use super::Reference;

/// Registries reached over the network: a client per registry and credentials (a client
/// keeps the first credentials it is given for a registry, and the token they bought, so
/// two pods with different pull secrets must not share one).
#[derive(Default)]
pub struct Remote {
    config: RegistryConfig,
    clients: Mutex<HashMap<(String, Option<(String, String)>), Arc<oci_client::Client>>>,
}

/// A manifest as the registry sent it, with its digest.
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub digest: String,
}

/// Why a pull from another registry failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("pulling from host {registry} failed: 401 Unauthorized ({detail}): check the pod's imagePullSecrets or the registry config's credentials")]
    Unauthorized { registry: String, detail: String },
    #[error("{reference}: not found in {registry}")]
    NotFound { registry: String, reference: String },
    #[error("pulling from host {registry} failed: {detail}")]
    Failed { registry: String, detail: String },
}

impl Remote {
    pub fn new(config: RegistryConfig) -> Self {
        Self { config, clients: Mutex::default() }
    }

    /// The client for `registry` with `credentials`, made once from its config.
    fn client(
        &self,
        registry: &str,
        credentials: Option<&(String, String)>,
    ) -> Result<(Arc<oci_client::Client>, String), RemoteError> {
        let host = self.config.host(registry)?;
        let key = (registry.to_string(), credentials.cloned());
        if let Some(client) = self.clients.lock().get(&key) {
            return Ok((client.clone(), host.address));
        }
        let config = ClientConfig {
            protocol: if host.plain_http { ClientProtocol::Http } else { ClientProtocol::Https },
            accept_invalid_certificates: host.insecure_skip_verify,
            extra_root_certificates: host
                .ca_pem
                .iter()
                .map(|pem| Certificate { encoding: CertificateEncoding::Pem, data: pem.clone() })
                .collect(),
            ..ClientConfig::default()
        };
        // oci-client's rustls needs a process-wide provider: ring, as everywhere here.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = oci_client::Client::try_from(config).map_err(|e| RemoteError::Failed {
            registry: registry.to_string(),
            detail: format!("cannot make a client with the registry config's TLS settings: {e}"),
        })?;
        let client = Arc::new(client);
        self.clients.lock().insert(key, client.clone());
        Ok((client, host.address))
    }

    /// The node's own credentials for `registry`, if the config has some.
    pub fn node_credentials(&self, registry: &str) -> Option<(String, String)> {
        self.config.host(registry).ok()?.credentials
    }

    /// The manifest `reference` names.
    pub async fn manifest(
        &self,
        registry: &str,
        reference: &Reference,
        credentials: Option<&(String, String)>,
    ) -> Result<FetchedManifest, RemoteError> {
        let (client, address) = self.client(registry, credentials)?;
        let target = target(&address, reference, reference.manifest_reference())?;
        let (bytes, digest) = client
            .pull_manifest_raw(&target, &auth(credentials), &[OCI_MANIFEST, DOCKER_MANIFEST])
            .await
            .map_err(|e| explain(registry, reference, e))?;
        Ok(FetchedManifest { bytes: bytes.to_vec(), digest })
    }

    /// The blob `digest` of `reference`'s repository (its digest checked by the client).
    pub async fn blob(
        &self,
        registry: &str,
        reference: &Reference,
        digest: &str,
        credentials: Option<&(String, String)>,
    ) -> Result<Vec<u8>, RemoteError> {
        let (client, address) = self.client(registry, credentials)?;
        let target = target(&address, reference, digest)?;
        client.store_auth_if_needed(target.resolve_registry(), &auth(credentials)).await;
        let mut bytes = Vec::new();
        client.pull_blob(&target, digest, &mut bytes).await.map_err(|e| explain(registry, reference, e))?;
        Ok(bytes)
    }
}

fn auth(credentials: Option<&(String, String)>) -> RegistryAuth {
    match credentials {
        Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
        None => RegistryAuth::Anonymous,
    }
}

/// `address/repository:tag` or `@digest`, as oci-client parses references.
fn target(address: &str, reference: &Reference, at: &str) -> Result<oci_client::Reference, RemoteError> {
    let separator = if at.starts_with("sha256:") { '@' } else { ':' };
    let text = format!("{address}/{}{separator}{at}", reference.repository);
    text.parse().map_err(|e| RemoteError::Failed { registry: address.to_string(), detail: format!("{text}: {e}") })
}

fn explain(registry: &str, reference: &Reference, error: OciDistributionError) -> RemoteError {
    let registry = registry.to_string();
    match error {
        OciDistributionError::UnauthorizedError { url } => RemoteError::Unauthorized { registry, detail: url },
        OciDistributionError::AuthenticationFailure(detail) => RemoteError::Unauthorized { registry, detail },
        OciDistributionError::ServerError { code: 401, url, .. } => RemoteError::Unauthorized { registry, detail: url },
        OciDistributionError::ImageManifestNotFoundError(_) | OciDistributionError::ServerError { code: 404, .. } => {
            RemoteError::NotFound {
                registry,
                reference: format!("{}:{}", reference.repository, reference.manifest_reference()),
            }
        }
        OciDistributionError::RegistryError { envelope, url }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::Unauthorized | oci_client::errors::OciErrorCode::Denied
                )
            }) =>
        {
            RemoteError::Unauthorized { registry, detail: url }
        }
        OciDistributionError::RegistryError { envelope, url }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown | oci_client::errors::OciErrorCode::NameUnknown
                )
            }) =>
        {
            let _ = url;
            RemoteError::NotFound {
                registry,
                reference: format!("{}:{}", reference.repository, reference.manifest_reference()),
            }
        }
        OciDistributionError::RequestError(e) => {
            // The cause chain says what went wrong (refused, a certificate, a timeout).
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                detail.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            RemoteError::Failed { registry, detail }
        }
        other => RemoteError::Failed { registry, detail: other.to_string() },
    }
}
