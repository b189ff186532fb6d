//! Storage: one [`Store`] trait with etcd v3 semantics, and its backends.
//!
//! Start with [`Store`]; open one with [`open`] from a [`StorageConfig`]. Two backends
//! implement it: [`embedded::EmbeddedStore`] (the default; durable on local disk through
//! fjall, group-committed) and [`etcd::EtcdStore`] (etcd v3 through `etcd-client`). The
//! [`cache::WatchCache`] sits in front of either for the API server's lists and watches.
//!
//! Invariants every backend keeps (the conformance suite in `tests/` checks them):
//! - one global revision, +1 per committed write; a failed write commits nothing;
//! - every key carries its create revision, mod revision and version (1 on create);
//! - a watch from revision `r` yields every event with revision ≥ `r` on its prefix, in
//!   revision order, with no gap and no duplicate, carrying the previous value on update and
//!   delete; a watch from below the compacted revision fails with
//!   [`StoreError::Compacted`] (the API turns that into 410 Gone).
//!
//! Only `registry` (the API server's generic store) may use this module; components talk
//! to the API, never to storage.

pub mod cache;
pub mod embedded;
pub mod etcd;
pub mod local_etcd;
mod metrics;

use std::{fmt, pin::Pin, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use metrics::StorageMetrics;

/// The largest value a write may carry: etcd's default request limit (1.5 MiB) less 8 KiB
/// for the key and the transaction around it, so both backends accept exactly the same
/// objects.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024 - 8 * 1024;

/// A revision of the store: the value of the global counter after some write.
pub type Revision = i64;

/// A key and its value at some revision, with etcd's bookkeeping.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// Revision of the write that created this key (since it was last deleted).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
    /// Number of writes since creation; 1 right after create.
    pub version: i64,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .finish()
    }
}

/// What a committed write did to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The key was created (`prev` is `None`) or updated (`prev` is the value it replaced).
    Put { kv: KeyValue, prev: Option<KeyValue> },
    /// The key was deleted; `prev` is its last value and `revision` the delete's revision.
    Delete { key: Bytes, revision: Revision, prev: KeyValue },
}

impl Event {
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    pub fn key(&self) -> &Bytes {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }
}

/// One item of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// Events in revision order; a batch never splits one revision.
    Events(Vec<Event>),
    /// Every event on the watched prefix up to this revision has been delivered.
    Progress(Revision),
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchItem, StoreError>> + Send>>;

/// Which keys a range reads and at which revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// Every key starting with this prefix.
    pub prefix: Bytes,
    /// Start at this key (inclusive) instead of the prefix; it must lie under the prefix.
    pub start: Option<Bytes>,
    /// Read at this revision; `None` reads the latest.
    pub revision: Option<Revision>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// The revision the range was read at.
    pub revision: Revision,
    /// More keys follow the last one returned.
    pub more: bool,
}

impl RangeResponse {
    /// Where the next page starts, if there is one: read it at the same revision so pages
    /// stay consistent however many writes happen in between.
    pub fn next_page(&self, request: &RangeRequest) -> Option<RangeRequest> {
        let last = self.kvs.last().filter(|_| self.more)?;
        let mut start = last.key.to_vec();
        start.push(0);
        Some(RangeRequest {
            prefix: request.prefix.clone(),
            start: Some(start.into()),
            revision: Some(self.revision),
            limit: request.limit,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {} already exists", String::from_utf8_lossy(&.current.key))]
    AlreadyExists { current: KeyValue },
    #[error("key {} not found", String::from_utf8_lossy(.key))]
    NotFound { key: Bytes },
    /// The compare-and-swap precondition failed; `current` is what the key holds now.
    #[error("conflict on key {}: expected mod revision {expected}, found {}", String::from_utf8_lossy(.key), .current.as_ref().map_or(0, |kv| kv.mod_revision))]
    Conflict { key: Bytes, expected: Revision, current: Option<KeyValue> },
    /// The requested revision has been compacted away.
    #[error("revision {requested} has been compacted; the oldest available is {compacted}")]
    Compacted { requested: Revision, compacted: Revision },
    /// The requested revision is newer than the store's.
    #[error("revision {requested} is in the future; the store is at {current}")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge { size: usize, limit: usize },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The store cannot be reached or did not answer; retrying may help.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store is closed (shutting down).
    #[error("storage is closed")]
    Closed,
    /// Local storage failed (I/O, corruption).
    #[error("storage failed: {0}")]
    Internal(String),
    /// The data dir cannot be used: not ours, corrupt, or unreadable. Nothing was written.
    #[error("data dir {}: {reason}", .path.display())]
    DataDir { path: std::path::PathBuf, reason: String },
    /// Another process holds the data dir open.
    #[error("data dir {} is in use by another wasmkube process", .0.display())]
    DataDirInUse(std::path::PathBuf),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A key-value store with etcd v3 semantics. See the module doc for the invariants.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for metrics and logs ("embedded", "etcd").
    fn backend(&self) -> &'static str;

    /// Create `key`; fails with [`StoreError::AlreadyExists`] if it exists.
    async fn create(&self, key: Bytes, value: Bytes) -> Result<KeyValue>;

    /// The current value of `key`, and the store revision it was read at.
    async fn get(&self, key: Bytes) -> Result<(Option<KeyValue>, Revision)>;

    /// Keys under a prefix at a revision, in key order.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// Replace `key`'s value if its mod revision is still `expected`.
    async fn update(&self, key: Bytes, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Delete `key`, if its mod revision is still `expected` when given. Returns the
    /// deleted value and the revision of the delete.
    async fn delete(&self, key: Bytes, expected: Option<Revision>) -> Result<(KeyValue, Revision)>;

    /// Events on keys under `prefix` from revision `from` (inclusive) onwards. `from` of 0
    /// means "from the next write".
    async fn watch(&self, prefix: Bytes, from: Revision) -> Result<WatchStream>;

    /// Drop history older than `revision`; reads and watches below it fail afterwards.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The latest committed revision, read consistently from the store itself.
    async fn current_revision(&self) -> Result<Revision>;

    /// The compacted revision: the oldest one still readable.
    async fn compacted_revision(&self) -> Result<Revision>;

    /// Make everything acknowledged durable and stop; later calls fail with `Closed`.
    async fn close(&self) -> Result<()>;
}

/// Which backend to open, and where.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    Embedded { data_dir: std::path::PathBuf },
    Etcd { endpoints: Vec<String>, prefix: Bytes },
}

/// Open the configured backend.
pub async fn open(config: &StorageConfig, metrics: StorageMetrics) -> Result<Arc<dyn Store>> {
    match config {
        StorageConfig::Embedded { data_dir } => {
            let store = embedded::EmbeddedStore::open(data_dir, metrics).await?;
            Ok(Arc::new(store))
        }
        StorageConfig::Etcd { endpoints, prefix } => {
            let store = etcd::EtcdStore::connect(endpoints, prefix.clone(), metrics).await?;
            Ok(Arc::new(store))
        }
    }
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix);
/// empty when no such key exists (the prefix is all 0xff or empty).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// Check that `endpoint` is an etcd client URL this backend can dial: `http://host:port`
/// (or `host:port`). Returns the problem in words otherwise.
pub fn check_etcd_endpoint(endpoint: &str) -> std::result::Result<(), String> {
    let expected = "expected a URL like http://127.0.0.1:2379";
    let rest = match endpoint.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => return Err(format!("{endpoint:?}: TLS to etcd is not supported yet; {expected}")),
        Some((scheme, _)) => return Err(format!("{endpoint:?}: unknown scheme {scheme:?}; {expected}")),
        None => endpoint,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(format!("{endpoint:?} has no port; {expected}"));
    };
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(format!("{endpoint:?} has no valid host; {expected}"));
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{endpoint:?} has no valid port; {expected}"));
    }
    Ok(())
}

pub(crate) fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::ValueTooLarge { size: value.len(), limit: MAX_VALUE_BYTES });
    }
    Ok(())
}

pub(crate) fn check_range(request: &RangeRequest) -> Result<()> {
    if let Some(start) = &request.start {
        if !start.starts_with(&request.prefix) {
            return Err(StoreError::InvalidRequest(format!(
                "range start {:?} is not under prefix {:?}",
                String::from_utf8_lossy(start),
                String::from_utf8_lossy(&request.prefix)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte_and_drops_trailing_ff() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
        assert_eq!(prefix_end(b""), Vec::<u8>::new());
    }

    #[test]
    fn etcd_endpoints_are_checked() {
        for good in ["http://127.0.0.1:2379", "127.0.0.1:2379", "http://etcd-0:2379/"] {
            assert_eq!(check_etcd_endpoint(good), Ok(()), "{good}");
        }
        for bad in ["http://127.0.0.1", "ftp://x:1", "http://:2379", "http://h:99999", "not a url"] {
            assert!(check_etcd_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_page_starts_after_last_key_at_same_revision() {
        let request = RangeRequest { prefix: "/p/".into(), limit: 2, ..Default::default() };
        let kv = |k: &'static str| KeyValue {
            key: k.into(),
            value: Bytes::new(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
        };
        let page = RangeResponse { kvs: vec![kv("/p/a"), kv("/p/b")], revision: 9, more: true };
        let next = page.next_page(&request).expect("a next page");
        assert_eq!(next.start.as_deref(), Some(&b"/p/b\0"[..]));
        assert_eq!(next.revision, Some(9));
        let last = RangeResponse { more: false, ..page };
        assert!(last.next_page(&request).is_none());
    }
}
