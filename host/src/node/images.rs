//! Pulling a container's image: the reference parsed, its manifest and component layer
//! read from the cluster's registry (a reference naming no registry, or the cluster's own
//! address, is the cluster's), with the kubelet's reasons and words when that fails.

use crate::oci::manifest::Manifest;
use crate::oci::{BlobStore, Digest, Reference};

/// What a pull gave.
pub(super) struct Pulled {
    /// `<repository>@<manifest digest>`: the container status' imageID.
    pub image_id: String,
    /// The component layer's digest (what compiled artifacts are cached by).
    pub layer: String,
    pub bytes: Vec<u8>,
}

/// Why a pull failed: a waiting reason and the kubelet's message.
#[derive(Debug)]
pub(super) struct PullFailure {
    pub reason: &'static str,
    pub message: String,
}

/// Where images come from.
pub(super) struct Images {
    pub store: BlobStore,
    /// `host:port` names under which the cluster's own registry is also reached.
    pub local_names: Vec<String>,
}

impl Images {
    /// Pull `image` (the container's `image:` text) for a container whose pull policy is `policy`.
    pub async fn pull(
        &self,
        image: &str,
        policy: &str,
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
            return Err(failed(format!(
                "registry {registry} is not this cluster's, and pulling from other registries is not supported yet: push the component with `wasmkube image push FILE.wasm {}` and name it without a registry",
                Reference { registry: None, ..reference.clone() }
            )));
        }
        let manifest = match self.store.manifest(&reference.repository, reference.manifest_reference()).await {
            Ok(manifest) => manifest,
            Err(e) => {
                if policy == "Never" {
                    return Err(PullFailure {
                        reason: "ErrImageNeverPull",
                        message: format!("Container image {image:?} is not present with pull policy of Never"),
                    });
                }
                return Err(failed(format!(
                    "rpc error: code = NotFound desc = {e} (push it with `wasmkube image push FILE.wasm {image}`)"
                )));
            }
        };
        let parsed: Manifest = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| failed(format!("the manifest {} does not parse: {e}", manifest.digest)))?;
        let layer = parsed.component_layer().map_err(|e| failed(e.to_string()))?;
        let layer_digest = Digest::parse(&layer.digest)
            .ok_or_else(|| failed(format!("layer digest {:?} is not sha256", layer.digest)))?;
        let image_id = format!("{}@{}", reference.repository, manifest.digest);
        if runtime_has(&layer_digest.0) {
            return Ok(Pulled { image_id, layer: layer_digest.0, bytes: Vec::new() });
        }
        let bytes = self.store.read_blob(&layer_digest).await.map_err(|e| failed(e.to_string()))?;
        Ok(Pulled { image_id, layer: layer_digest.0, bytes })
    }
}
