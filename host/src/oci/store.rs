//! The cluster registry's storage, under `<data dir>/registry/`:
//!
//! ```text
//! blobs/sha256/<hex>                         every blob and manifest, content-addressed
//! uploads/<uuid>                             blob uploads under way
//! repositories/<name>/manifests/<hex>        a manifest the repository holds (holds its media type)
//! repositories/<name>/tags/<tag>             the digest a tag points at
//! ```
//!
//! A blob is written to a temporary file and renamed into place once its digest checks, so a
//! reader never sees half a blob. It knows nothing of HTTP or of who may push.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::reference::valid_tag;

/// A content digest, `sha256:<64 lowercase hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub String);

impl Digest {
    /// Parse `sha256:<hex>`; other algorithms are not supported.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Digest(text.to_string()))
    }

    fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    #[error("upload unknown to registry: {0}")]
    UploadUnknown(String),
    #[error("provided digest did not match uploaded content: expected {expected}, got {actual}")]
    DigestInvalid { expected: String, actual: String },
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("registry storage: {0}")]
    Io(#[from] std::io::Error),
}

/// The registry's files; cheap to clone.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

/// A manifest as stored: its bytes, media type and digest.
#[derive(Clone, Debug)]
pub struct StoredManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl BlobStore {
    /// The store under `data_dir/registry` (created on first write).
    pub fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.join("registry") }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn repository(&self, name: &str) -> Result<PathBuf, StoreError> {
        if !super::reference::valid_repository(name) {
            return Err(StoreError::NameUnknown(name.to_string()));
        }
        Ok(self.root.join("repositories").join(name))
    }

    /// The size of a blob, if held.
    pub async fn blob_size(&self, digest: &Digest) -> Option<u64> {
        tokio::fs::metadata(self.blob_path(digest)).await.ok().map(|m| m.len())
    }

    pub async fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        match tokio::fs::read(self.blob_path(digest)).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::BlobUnknown(digest.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Store `bytes`, which must hash to `expected` when one is given; the digest.
    pub async fn put_blob(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest, StoreError> {
        let digest = super::sha256(bytes);
        if let Some(expected) = expected.filter(|e| **e != digest) {
            return Err(StoreError::DigestInvalid { expected: expected.to_string(), actual: digest.to_string() });
        }
        let path = self.blob_path(&digest);
        if tokio::fs::metadata(&path).await.is_ok() {
            return Ok(digest);
        }
        write_atomically(&path, bytes).await?;
        Ok(digest)
    }

    /// Begin an upload; its id.
    pub async fn start_upload(&self) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let path = self.root.join("uploads").join(&id);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&path, b"").await?;
        Ok(id)
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        uuid::Uuid::parse_str(id)
            .map(|_| self.root.join("uploads").join(id))
            .map_err(|_| StoreError::UploadUnknown(id.to_string()))
    }

    /// Append a chunk to an upload; how many bytes it holds now.
    pub async fn append_upload(&self, id: &str, chunk: &[u8]) -> Result<u64, StoreError> {
        let path = self.upload_path(id)?;
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .await
            .map_err(|_| StoreError::UploadUnknown(id.to_string()))?;
        file.write_all(chunk).await?;
        file.flush().await?;
        Ok(file.metadata().await?.len())
    }

    /// How many bytes an upload holds.
    pub async fn upload_size(&self, id: &str) -> Result<u64, StoreError> {
        let path = self.upload_path(id)?;
        tokio::fs::metadata(&path).await.map(|m| m.len()).map_err(|_| StoreError::UploadUnknown(id.to_string()))
    }

    /// Finish an upload with a last chunk; the blob must hash to `digest`.
    pub async fn finish_upload(&self, id: &str, last: &[u8], digest: &Digest) -> Result<Digest, StoreError> {
        let path = self.upload_path(id)?;
        let mut bytes = tokio::fs::read(&path).await.map_err(|_| StoreError::UploadUnknown(id.to_string()))?;
        bytes.extend_from_slice(last);
        let stored = self.put_blob(&bytes, Some(digest)).await;
        let _ = tokio::fs::remove_file(&path).await;
        stored
    }

    pub async fn cancel_upload(&self, id: &str) -> Result<(), StoreError> {
        let path = self.upload_path(id)?;
        tokio::fs::remove_file(&path).await.map_err(|_| StoreError::UploadUnknown(id.to_string()))
    }

    /// Store a manifest under `repository` at `reference` (a tag, or its own digest). Every
    /// blob it names must be held already.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, StoreError> {
        let repo = self.repository(repository)?;
        let parsed: super::manifest::Manifest =
            serde_json::from_slice(bytes).map_err(|e| StoreError::ManifestInvalid(e.to_string()))?;
        for blob in parsed.blobs() {
            let digest = Digest::parse(&blob.digest)
                .ok_or_else(|| StoreError::ManifestInvalid(format!("{:?} is not a sha256 digest", blob.digest)))?;
            if self.blob_size(&digest).await.is_none() {
                return Err(StoreError::BlobUnknown(digest.to_string()));
            }
        }
        let as_digest = Digest::parse(reference);
        let digest = self.put_blob(bytes, as_digest.as_ref()).await?;
        write_atomically(&repo.join("manifests").join(digest.hex()), media_type.as_bytes()).await?;
        if as_digest.is_none() {
            if !valid_tag(reference) {
                return Err(StoreError::ManifestInvalid(format!("{reference:?} is not a valid tag")));
            }
            write_atomically(&repo.join("tags").join(reference), digest.0.as_bytes()).await?;
        }
        Ok(digest)
    }

    /// The manifest `repository` holds at `reference` (tag or digest).
    pub async fn manifest(&self, repository: &str, reference: &str) -> Result<StoredManifest, StoreError> {
        let repo = self.repository(repository)?;
        let unknown = || StoreError::ManifestUnknown(format!("{repository}:{reference}"));
        let digest = match Digest::parse(reference) {
            Some(digest) => digest,
            None if valid_tag(reference) => {
                let text = tokio::fs::read_to_string(repo.join("tags").join(reference)).await.map_err(|_| unknown())?;
                Digest::parse(text.trim()).ok_or_else(unknown)?
            }
            None => return Err(unknown()),
        };
        let media_type =
            tokio::fs::read_to_string(repo.join("manifests").join(digest.hex())).await.map_err(|_| unknown())?;
        let bytes = self.read_blob(&digest).await.map_err(|_| unknown())?;
        Ok(StoredManifest { bytes, media_type, digest })
    }

    /// Remove `reference` from `repository`: a tag alone, or a digest with every tag
    /// pointing at it. (Blobs stay; nothing collects them yet.)
    pub async fn delete_manifest(&self, repository: &str, reference: &str) -> Result<(), StoreError> {
        let repo = self.repository(repository)?;
        let held = self.manifest(repository, reference).await?;
        let tags = self.tags(repository).await?;
        for tag in tags {
            let path = repo.join("tags").join(&tag);
            let points = tokio::fs::read_to_string(&path).await.unwrap_or_default();
            if tag == reference || (Digest::parse(reference).is_some() && points.trim() == held.digest.0) {
                tokio::fs::remove_file(&path).await?;
            }
        }
        if Digest::parse(reference).is_some() {
            let _ = tokio::fs::remove_file(repo.join("manifests").join(held.digest.hex())).await;
        }
        Ok(())
    }

    /// The tags of `repository`, sorted.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.repository(repository)?.join("tags");
        let mut tags = Vec::new();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(_) if tokio::fs::metadata(self.repository(repository)?).await.is_ok() => return Ok(tags),
            Err(_) => return Err(StoreError::NameUnknown(repository.to_string())),
        };
        while let Some(entry) = entries.next_entry().await? {
            if let Some(name) = entry.file_name().to_str().filter(|n| !n.starts_with('.')) {
                tags.push(name.to_string());
            }
        }
        tags.sort();
        Ok(tags)
    }

    /// Every repository, sorted.
    pub async fn repositories(&self) -> Result<Vec<String>, StoreError> {
        let root = self.root.join("repositories");
        let mut found = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(mut entries) = tokio::fs::read_dir(&dir).await else { continue };
            while let Some(entry) = entries.next_entry().await? {
                let path = entry.path();
                if !entry.file_type().await?.is_dir() {
                    continue;
                }
                if path.join("manifests").is_dir() {
                    if let Some(name) = path.strip_prefix(&root).ok().and_then(|p| p.to_str()) {
                        found.push(name.to_string());
                    }
                }
                if entry.file_name() != "manifests" && entry.file_name() != "tags" {
                    stack.push(path);
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(parent).await?;
    let temporary = parent.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    tokio::fs::write(&temporary, bytes).await?;
    tokio::fs::rename(&temporary, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pushed_image_reads_back_by_tag_and_digest_and_a_delete_forgets_the_tag() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path());
        let layer = store.put_blob(b"\0asm", None).await.unwrap();
        let config = store.put_blob(b"{}", None).await.unwrap();
        let wrong = store.put_blob(b"x", Some(&config)).await;
        assert!(matches!(wrong, Err(StoreError::DigestInvalid { .. })));
        let upload = store.start_upload().await.unwrap();
        assert_eq!(store.append_upload(&upload, b"ab").await.unwrap(), 2);
        assert_eq!(
            store.finish_upload(&upload, b"c", &crate::oci::sha256(b"abc")).await.unwrap(),
            crate::oci::sha256(b"abc")
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config.0, "size": 2},
            "layers": [{"mediaType": "application/wasm", "digest": layer.0, "size": 4}],
        })
        .to_string();
        let digest = store
            .put_manifest("team/app", "v1", manifest.as_bytes(), "application/vnd.oci.image.manifest.v1+json")
            .await
            .unwrap();
        assert_eq!(store.manifest("team/app", "v1").await.unwrap().digest, digest);
        assert_eq!(store.manifest("team/app", &digest.0).await.unwrap().bytes, manifest.as_bytes());
        assert_eq!(store.tags("team/app").await.unwrap(), vec!["v1"]);
        assert_eq!(store.repositories().await.unwrap(), vec!["team/app"]);
        let missing = manifest.replace(&layer.0, &crate::oci::sha256(b"nope").0);
        assert!(matches!(
            store.put_manifest("team/app", "v2", missing.as_bytes(), "x").await,
            Err(StoreError::BlobUnknown(_))
        ));
        store.delete_manifest("team/app", "v1").await.unwrap();
        assert!(store.manifest("team/app", "v1").await.is_err());
        assert!(store.tags("team/other").await.is_err());
    }
}
