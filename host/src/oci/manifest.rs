//! Image manifests, as far as running a component needs them: which layer is the
//! component. Accepted layer media types are the wasm artifact's (`application/wasm`, with
//! config `application/vnd.wasm.config.v0+json`, what `wkg` and `oras` push) and the two
//! older ones runwasi accepts; a Linux image's tar layers are told apart with a message
//! saying so.

use serde::{Deserialize, Serialize};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";
/// The layer media types a component may come in.
pub const COMPONENT_LAYERS: &[&str] = &[
    WASM_LAYER,
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];

/// A content descriptor.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// Why a manifest holds no component to run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotAComponent {
    #[error("the image is a Linux container image (layer {0}), not a WebAssembly component: build the program for wasm32-wasip2 and push the .wasm with `wasmkube image push`")]
    LinuxImage(String),
    #[error("the image has no WebAssembly layer (layer media types: {0}); expected one of application/wasm, application/vnd.wasm.content.layer.v1+wasm, application/vnd.bytecodealliance.wasm.component.layer.v0+wasm")]
    NoWasmLayer(String),
}

impl Manifest {
    /// The config and every layer.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    /// The layer holding the component.
    pub fn component_layer(&self) -> Result<&Descriptor, NotAComponent> {
        if let Some(layer) = self.layers.iter().find(|l| COMPONENT_LAYERS.contains(&l.media_type.as_str())) {
            return Ok(layer);
        }
        let types: Vec<&str> = self.layers.iter().map(|l| l.media_type.as_str()).collect();
        match types.iter().find(|t| t.contains("tar")) {
            Some(tar) => Err(NotAComponent::LinuxImage(tar.to_string())),
            None => Err(NotAComponent::NoWasmLayer(types.join(", "))),
        }
    }
}
