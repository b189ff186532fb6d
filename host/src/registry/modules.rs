//! Plugin modules uploaded through the API, kept in the store by digest: every API server
//! on one store can load a `Plugin` whose `spec.module` is `sha256:<hex>`, wherever the
//! component was built. A module is split into chunks of [`CHUNK_BYTES`] (under the
//! store's value limit) at `/registry/wasmkube.io/modules/<hex>/<n>`; its index
//! (`/registry/wasmkube.io/modules/<hex>`: size and chunk count) is written last, so an
//! index that exists names a whole module. Content-addressed, so writing one twice is a
//! no-op and two servers uploading the same module at once agree.
//!
//! Knows the store and digests; nothing of plugins or HTTP.

use bytes::Bytes;
use serde_json::{json, Value};

use super::{Error, Registry, Result};
use crate::storage::StoreError;

/// The size of one stored chunk (the store takes values up to ~1.5 MiB).
pub const CHUNK_BYTES: usize = 1 << 20;

/// The largest module accepted (a Python component is ~18 MB).
pub const MAX_MODULE_BYTES: usize = 64 << 20;

const PREFIX: &str = "/registry/wasmkube.io/modules/";

/// What is stored of a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: usize,
    pub chunks: usize,
}

impl ModuleInfo {
    /// The object the API answers with.
    pub fn to_json(&self) -> Value {
        json!({
            "kind": "PluginModule",
            "apiVersion": "wasmkube.io/v1alpha1",
            "digest": self.digest,
            "size": self.size,
            "chunks": self.chunks,
        })
    }
}

/// The hex of a `sha256:<64 hex>` digest, or why it is not one.
fn hex_of(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            Ok(hex)
        }
        _ => Err(Error::BadRequest(format!(
            "{digest:?} is not a module digest: expected sha256: and 64 lowercase hex digits"
        ))),
    }
}

fn index_key(hex: &str) -> Bytes {
    Bytes::from(format!("{PREFIX}{hex}"))
}

fn chunk_key(hex: &str, n: usize) -> Bytes {
    Bytes::from(format!("{PREFIX}{hex}/{n:05}"))
}

impl Registry {
    /// Store `bytes` as a module (a WebAssembly binary); its digest and size. `created`
    /// is false when it was stored already.
    pub async fn put_module(&self, bytes: &[u8]) -> Result<(ModuleInfo, bool)> {
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(Error::TooLarge(format!(
                "a module may be at most {} MiB; this one is {} bytes",
                MAX_MODULE_BYTES >> 20,
                bytes.len()
            )));
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(Error::BadRequest(
                "the body is not WebAssembly (it does not start with \\0asm): upload the component file itself".into(),
            ));
        }
        // A component's preamble: the magic, version 0x0d, layer 1 (a core module has layer 0).
        if bytes.get(4..8) != Some(&[0x0d, 0x00, 0x01, 0x00]) {
            return Err(Error::BadRequest(
                "the body is a core WebAssembly module, not a component: build for wasm32-wasip2 (or run wasm-tools component new)".into(),
            ));
        }
        let digest = crate::plugins::digest(bytes);
        let hex = hex_of(&digest)?.to_string();
        if let Some(info) = self.module_info(&digest).await? {
            return Ok((info, false));
        }
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
        for (n, chunk) in chunks.iter().enumerate() {
            match self.store.create(chunk_key(&hex, n), Bytes::copy_from_slice(chunk)).await {
                // Content-addressed: a chunk already there (an interrupted or concurrent upload) is this one.
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(Error::from_store(e)),
            }
        }
        let info = ModuleInfo { digest, size: bytes.len(), chunks: chunks.len() };
        let index = json!({"size": info.size, "chunks": info.chunks}).to_string();
        match self.store.create(index_key(&hex), Bytes::from(index)).await {
            Ok(_) => Ok((info, true)),
            Err(StoreError::AlreadyExists { .. }) => Ok((info, false)),
            Err(e) => Err(Error::from_store(e)),
        }
    }

    /// What is stored of the module `digest`, if it was uploaded.
    pub async fn module_info(&self, digest: &str) -> Result<Option<ModuleInfo>> {
        let hex = hex_of(digest)?;
        let Some(kv) = self.store.get(index_key(hex)).await.map_err(Error::from_store)?.0 else {
            return Ok(None);
        };
        let index: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| Error::Internal(format!("the stored index of module {digest} is not JSON: {e}")))?;
        let field = |name: &str| index.get(name).and_then(Value::as_u64).map(|n| n as usize);
        match (field("size"), field("chunks")) {
            (Some(size), Some(chunks)) => Ok(Some(ModuleInfo { digest: digest.to_string(), size, chunks })),
            _ => Err(Error::Internal(format!("the stored index of module {digest} lacks size or chunks: {index}"))),
        }
    }

    /// The bytes of the module `digest` (checked against it), if it was uploaded.
    pub async fn module(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let Some(info) = self.module_info(digest).await? else { return Ok(None) };
        let hex = hex_of(digest)?;
        let mut bytes = Vec::with_capacity(info.size);
        for n in 0..info.chunks {
            let (kv, _) = self.store.get(chunk_key(hex, n)).await.map_err(Error::from_store)?;
            let kv =
                kv.ok_or_else(|| Error::Internal(format!("chunk {n} of module {digest} is missing from the store")))?;
            bytes.extend_from_slice(&kv.value);
        }
        if crate::plugins::digest(&bytes) != digest {
            return Err(Error::Internal(format!("the stored chunks of module {digest} do not match its digest")));
        }
        Ok(Some(bytes))
    }
}
