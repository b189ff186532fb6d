//! The secret service-account tokens are signed with (`auth::tokens` signs and checks; the
//! key lives here because only the registry reaches storage): made once, kept at
//! [`SIGNING_KEY`], so every API server on one store signs and checks with the same one.

use base64::Engine;
use bytes::Bytes;

use super::{Error, Registry, Result};
use crate::storage::StoreError;

/// Where the service-account token signing key lives.
const SIGNING_KEY: &str = "/registry/wasmkube.io/signing-key";

impl Registry {
    /// The token signing key: the stored one, or a new one if there is none yet.
    pub async fn signing_key(&self) -> Result<Vec<u8>> {
        let key = Bytes::from_static(SIGNING_KEY.as_bytes());
        loop {
            if let Some(kv) = self.stored(&key).await? {
                return base64::engine::general_purpose::STANDARD
                    .decode(&kv.value)
                    .map_err(|e| Error::Internal(format!("the stored signing key is not base64: {e}")));
            }
            let secret: [u8; 32] = rand::random();
            let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
            match self.store.create(key.clone(), Bytes::from(encoded)).await {
                Ok(_) => return Ok(secret.to_vec()),
                // Another server made it first: use theirs.
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(Error::from_store(e)),
            }
        }
    }
}
