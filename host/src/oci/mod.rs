//! OCI images of WebAssembly components: references (`reference`), the cluster's own
//! registry storage under the data dir (`store`: blobs by digest, manifests, tags), what
//! a pod's image must look like to run (`manifest`: the wasm artifact media types), and
//! other registries (`remote`, configured by `config`: `--registry-config`).
//!
//! It knows nothing of the API: `api::oci` serves the distribution API over the store, the
//! node agent reads images from it or pulls them with `remote`, `cmd::image` pushes to it.

pub mod config;
pub mod manifest;
pub mod reference;
pub mod remote;
pub mod store;

pub use reference::Reference;
pub use store::{BlobStore, Digest, StoreError};

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
    Digest(format!("sha256:{}", hash.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()))
}
