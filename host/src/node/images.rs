//! Pulling a container's image: the reference parsed, its manifest and component layer
//! read from the cluster's registry (a reference naming no registry, or the cluster's own
//! address, is the cluster's) or pulled from another one into the node's cache (with the
//! pod's `imagePullSecrets` or the node's `--registry-config` credentials), as
//! `imagePullPolicy` says, with the kubelet's reasons and words when that fails.

use base64::Engine;
use serde_json::Value;

use crate::client::Client;
use crate::oci::manifest::Manifest;
use crate::oci::remote::Remote;
use crate::oci::{BlobStore, Digest, Reference};

/// What a pull gave.
pub(super) struct Pulled {
    /// `<repository>@<manifest digest>`: the container status' imageID.
    pub image_id: String,
    /// The component layer's digest (what compiled artifacts are cached by).
    pub layer: String,
    pub bytes: Vec<u8>,
    /// The component layer's size (`node.status.images`).
    pub size: u64,
}

/// Why a pull failed: a waiting reason and the kubelet's message.
#[derive(Debug)]
pub(super) struct PullFailure {
    pub reason: &'static str,
    pub message: String,
}

/// Where images come from.
pub(super) struct Images {
    /// The cluster's own registry.
    pub store: BlobStore,
    /// `host:port` names under which the cluster's own registry is also reached.
    pub local_names: Vec<String>,
    /// The cluster's registry when it is another process's (a joined node's server).
    pub cluster_registry: Option<String>,
    /// Other registries, as `--registry-config` says to reach them.
    pub remote: Remote,
    /// What this node pulled from other registries (`<node dir>/registry/`), by digest.
    pub cache: BlobStore,
}

/// Credentials for one registry, in the order the kubelet tries them: the pod's pull
/// secrets', then the node's own.
pub(super) type Credentials = Vec<(String, String)>;

impl Images {
    /// Pull `image` (the container's `image:` text) for a container whose pull policy is
    /// `policy`, trying `credentials` in turn for another registry.
    pub async fn pull(
        &self,
        image: &str,
        policy: &str,
        credentials: &Credentials,
        runtime_has: impl Fn(&str) -> bool,
    ) -> Result<Pulled, PullFailure> {
        let reference = Reference::parse(image).map_err(|e| PullFailure {
            reason: "InvalidImageName",
            message: format!("Failed to apply default image tag {image:?}: {e}"),
        })?;
        let failed = |cause: String| PullFailure {
            reason: "ErrImagePull",
            message: format!("Failed to pull image {image:?}: {cause}"),
        };
        if let Some(registry) = reference.registry.as_deref().filter(|r| !self.local_names.iter().any(|n| n == r)) {
            return self.pull_remote(image, registry, &reference, policy, credentials, runtime_has).await;
        }
        if let Some(cluster) = &self.cluster_registry {
            // The cluster's registry, reached over HTTPS with the node's own credentials.
            let own: Credentials = self.remote.node_credentials(cluster).into_iter().collect();
            return self.pull_remote(image, cluster, &reference, policy, &own, runtime_has).await;
        }
        let manifest = match self.store.manifest(&reference.repository, reference.manifest_reference()).await {
            Ok(manifest) => manifest,
            Err(e) => {
                if policy == "Never" {
                    return Err(never_pulled(image));
                }
                return Err(failed(format!(
                    "rpc error: code = NotFound desc = {e} (push it with `wasmkube image push FILE.wasm {image}`)"
                )));
            }
        };
        let image_id = format!("{}@{}", reference.repository, manifest.digest);
        let layer = component_layer(&manifest.bytes, &manifest.digest.0).map_err(failed)?;
        if runtime_has(&layer.digest.0) {
            return Ok(Pulled { image_id, layer: layer.digest.0, bytes: Vec::new(), size: layer.size });
        }
        let bytes = self.store.read_blob(&layer.digest).await.map_err(|e| failed(e.to_string()))?;
        Ok(Pulled { image_id, layer: layer.digest.0, bytes, size: layer.size })
    }

    /// Pull from another registry into the node's cache (kept by digest), as the policy says:
    /// `Never` and `IfNotPresent` use what the cache holds, `Always` asks the registry for the
    /// manifest each time (its blobs still come from the cache when held).
    async fn pull_remote(
        &self,
        image: &str,
        registry: &str,
        reference: &Reference,
        policy: &str,
        credentials: &Credentials,
        runtime_has: impl Fn(&str) -> bool,
    ) -> Result<Pulled, PullFailure> {
        let failed = |cause: String| PullFailure {
            reason: "ErrImagePull",
            message: format!("Failed to pull image {image:?}: {cause}"),
        };
        let key = cache_key(registry, &reference.repository);
        let at = reference.manifest_reference();
        let cached = match policy {
            "Always" => None,
            _ => self.cache.manifest(&key, at).await.ok(),
        };
        let (manifest, digest, creds) = match cached {
            Some(manifest) => (manifest.bytes, manifest.digest.0, None),
            None if policy == "Never" => return Err(never_pulled(image)),
            None => {
                let mut last = None;
                let mut fetched = None;
                let anonymous = [None];
                let attempts: Vec<Option<&(String, String)>> =
                    if credentials.is_empty() { anonymous.to_vec() } else { credentials.iter().map(Some).collect() };
                for creds in attempts {
                    match self.remote.manifest(registry, reference, creds).await {
                        Ok(manifest) => {
                            fetched = Some((manifest, creds));
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let Some((manifest, creds)) = fetched else {
                    return Err(failed(last.map_or_else(|| "no credentials worked".to_string(), |e| e.to_string())));
                };
                (manifest.bytes, manifest.digest, creds)
            }
        };
        let layer = component_layer(&manifest, &digest).map_err(failed)?;
        let image_id = format!("{registry}/{}@{digest}", reference.repository);
        if runtime_has(&layer.digest.0) {
            return Ok(Pulled { image_id, layer: layer.digest.0, bytes: Vec::new(), size: layer.size });
        }
        // Every blob the manifest names, from the cache or the registry, then the manifest.
        let parsed: Manifest = serde_json::from_slice(&manifest).map_err(|e| failed(e.to_string()))?;
        for blob in parsed.blobs() {
            let Some(blob_digest) = Digest::parse(&blob.digest) else { continue };
            if self.cache.blob_size(&blob_digest).await.is_some() {
                continue;
            }
            let bytes = self
                .remote
                .blob(registry, reference, &blob.digest, creds.or(credentials.first()))
                .await
                .map_err(|e| failed(e.to_string()))?;
            self.cache.put_blob(&bytes, Some(&blob_digest)).await.map_err(|e| failed(e.to_string()))?;
        }
        let media_type = parsed.media_type.as_deref().unwrap_or(crate::oci::manifest::OCI_MANIFEST);
        for at in [Some(digest.as_str()), reference.tag.as_deref()].into_iter().flatten() {
            if let Err(e) = self.cache.put_manifest(&key, at, &manifest, media_type).await {
                tracing::warn!(image, error = %e, "cannot keep the pulled manifest in the node's cache");
            }
        }
        let bytes = self.cache.read_blob(&layer.digest).await.map_err(|e| failed(e.to_string()))?;
        Ok(Pulled { image_id, layer: layer.digest.0, bytes, size: layer.size })
    }
}

/// The kubelet's words for an image a `Never` policy finds absent.
fn never_pulled(image: &str) -> PullFailure {
    PullFailure {
        reason: "ErrImageNeverPull",
        message: format!("Container image {image:?} is not present with pull policy of Never"),
    }
}

/// The component layer a manifest names.
struct Layer {
    digest: Digest,
    size: u64,
}

fn component_layer(manifest: &[u8], digest: &str) -> Result<Layer, String> {
    let parsed: Manifest =
        serde_json::from_slice(manifest).map_err(|e| format!("the manifest {digest} does not parse: {e}"))?;
    let layer = parsed.component_layer().map_err(|e| e.to_string())?;
    let layer_digest =
        Digest::parse(&layer.digest).ok_or_else(|| format!("layer digest {:?} is not sha256", layer.digest))?;
    Ok(Layer { digest: layer_digest, size: layer.size })
}

/// Where the node's cache keeps a remote repository (a valid repository name whatever the
/// registry's address looks like).
fn cache_key(registry: &str, repository: &str) -> String {
    let host = crate::oci::sha256(registry.as_bytes()).0;
    format!("remote/{}/{repository}", &host["sha256:".len().."sha256:".len() + 16])
}

/// The credentials for `registry` in the pod's `imagePullSecrets` (dockerconfigjson or
/// dockercfg Secrets of its namespace), in order; and the secrets that could not be read.
pub(super) async fn pull_secret_credentials(
    client: &dyn Client,
    pod: &Value,
    registry: &str,
) -> (Credentials, Vec<String>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let Some(secrets) = client.resource("", "v1", "secrets") else { return (found, missing) };
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    let names = pod.pointer("/spec/imagePullSecrets").and_then(Value::as_array).cloned().unwrap_or_default();
    for name in names.iter().filter_map(|s| s["name"].as_str()) {
        let Ok(secret) = client.get(&secrets, Some(namespace), name).await else {
            missing.push(name.to_string());
            continue;
        };
        let data = |key: &str| {
            let encoded = secret.get("data")?.get(key)?.as_str()?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
            serde_json::from_slice::<Value>(&bytes).ok()
        };
        let auths = match (data(".dockerconfigjson"), data(".dockercfg")) {
            (Some(config), _) => config.get("auths").cloned().unwrap_or_default(),
            (None, Some(cfg)) => cfg,
            (None, None) => {
                missing.push(name.to_string());
                continue;
            }
        };
        for (host, entry) in auths.as_object().into_iter().flatten() {
            if docker_config_host(host) != registry {
                continue;
            }
            let user = entry["username"].as_str();
            let password = entry["password"].as_str();
            match (user, password, entry["auth"].as_str()) {
                (Some(user), Some(password), _) => found.push((user.to_string(), password.to_string())),
                (_, _, Some(auth)) => found.extend(crate::oci::config::decode_auth(auth).ok()),
                _ => {}
            }
        }
    }
    (found, missing)
}

/// The `host[:port]` a docker config's key names (`https://host/v1/`, `host`, ...).
fn docker_config_host(key: &str) -> &str {
    let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_keys_name_their_host() {
        assert_eq!(docker_config_host("https://127.0.0.1:5443/v1/"), "127.0.0.1:5443");
        assert_eq!(docker_config_host("registry.example.com"), "registry.example.com");
        assert!(crate::oci::reference::valid_repository(&cache_key("[::1]:5000", "team/app")));
    }
}
