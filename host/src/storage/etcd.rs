//! The etcd backend: a [`Store`] on etcd v3, through the `etcd-client` crate.
//!
//! Start with [`EtcdStore::connect`]. This module owns one etcd client (its KV and watch
//! clients, with the decode limit raised so ranges over many keys fit), the translation
//! between the caller's keys and etcd's key space, and the mapping of etcd's answers onto
//! [`StoreError`] — the same errors, in the same cases, as the embedded store.
//!
//! Every key lives in etcd under `prefix ++ key`, so several clusters can share one etcd;
//! keys in results and events are stripped back to the caller's. This module must not
//! touch anything outside its prefix, and never deletes or compacts on its own: compaction
//! happens only when asked through [`Store::compact`] (and compacts the whole etcd, which
//! is etcd's only kind).
//!
//! Writes are single-key transactions: a compare (exists / mod revision) then the write,
//! else a read of the current value, so a failed precondition reports what the key holds
//! in the same round trip. Connecting never dials: an unreachable etcd shows up as
//! [`StoreError::Unavailable`] on each call, and every call is bounded by
//! [`REQUEST_TIMEOUT`] even when the client library would wait for a connection forever.
//!
//! etcd 3.4 caveats (Debian ships 3.4.23):
//! - progress notifications: 3.4 before 3.4.31 can report a progress revision ahead of
//!   events still queued for a watcher when asked on demand (`RequestProgress`), so this
//!   backend never requests progress and never uses watch progress to learn the store
//!   revision; [`Store::current_revision`] is a linearizable read. Periodic progress notify
//!   is enabled (etcd sends it only to watchers that are caught up; by default every 10
//!   minutes).
//! - the compacted revision: etcd has no API for it (3.4's status has no such field, and
//!   the "compacted" error does not carry it). [`Store::compacted_revision`] tracks the
//!   highest compaction seen (our own compactions, compacted errors, watch cancellations)
//!   and checks it against etcd with one read at that revision; when someone else has
//!   compacted further, it finds the exact revision by bisecting reads at old revisions.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KvClient, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
};
use tokio::sync::watch;

use super::metrics::WatcherGuard;
use super::{
    check_etcd_endpoint, check_range, check_value, prefix_end, Event, KeyValue, RangeRequest, RangeResponse, Result,
    Revision, StorageMetrics, Store, StoreError, WatchItem, WatchStream,
};

const BACKEND: &str = "etcd";
/// How long dialing one etcd endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any one call may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keep-alive on open streams, so a watch on a vanished etcd fails instead of
/// hanging. etcd refuses pings more often than every 5 s, and pings on idle connections.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response the client decodes (tonic's default of 4 MiB is too small for a
/// range over a few thousand objects).
const MAX_DECODING_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// What etcd says (as gRPC `OutOfRange`) about a compacted or a future revision.
const COMPACTED_MESSAGE: &str = "required revision has been compacted";
const FUTURE_MESSAGE: &str = "required revision is a future revision";
/// What etcd says (as gRPC `InvalidArgument`) about a request over `--max-request-bytes`.
const TOO_LARGE_MESSAGE: &str = "request is too large";
const EXPECTED_ENDPOINT: &str = "expected http://host:port or host:port";

/// gRPC status codes, by number (`tonic` is not a direct dependency, so its `Code` cannot
/// be named here).
mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const INTERNAL: i32 = 13;
    pub const DATA_LOSS: i32 = 15;
}

/// The etcd store. Cheap to share behind an `Arc`; see the module doc.
pub struct EtcdStore {
    /// Kept for the endpoint set its balanced channel is built on.
    _client: Client,
    kv: KvClient,
    watch: WatchClient,
    /// Prepended to every key in etcd.
    prefix: Bytes,
    /// The highest compacted revision seen so far (see the module doc).
    compacted: Arc<AtomicI64>,
    /// Set once by [`Store::close`]; open watches end when it flips.
    closed: watch::Sender<bool>,
    metrics: StorageMetrics,
}

/// Why an etcd call failed. Compacted and future revisions carry no numbers in etcd's
/// answer; the caller knows which revision it asked for and fills them in.
#[derive(Debug)]
enum Failure {
    Compacted,
    Future,
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<Failure> for StoreError {
    /// For calls that read at the latest revision, where neither revision error can occur.
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Compacted => StoreError::Internal(format!("etcd: unexpected \"{COMPACTED_MESSAGE}\"")),
            Failure::Future => StoreError::Internal(format!("etcd: unexpected \"{FUTURE_MESSAGE}\"")),
            Failure::Store(e) => e,
        }
    }
}

fn classify(error: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    let store = match error {
        E::GRpcStatus(status) => {
            let message = status.message();
            if message.contains(COMPACTED_MESSAGE) {
                return Failure::Compacted;
            }
            if message.contains(FUTURE_MESSAGE) {
                return Failure::Future;
            }
            let described = if message.is_empty() { format!("{:?}", status.code()) } else { message.to_string() };
            match i32::from(status.code()) {
                code::INVALID_ARGUMENT | code::FAILED_PRECONDITION | code::OUT_OF_RANGE => {
                    StoreError::InvalidRequest(format!("etcd: {described}"))
                }
                code::INTERNAL | code::DATA_LOSS => StoreError::Internal(format!("etcd: {described}")),
                // Unavailable, DeadlineExceeded, Cancelled, Unknown (how tonic reports most
                // transport failures), Unimplemented (something else answers there),
                // ResourceExhausted, Aborted, PermissionDenied, ...: nothing this call did
                // wrong; it may succeed once etcd (or its configuration) is back.
                _ => StoreError::Unavailable(format!("etcd: {described}")),
            }
        }
        E::TransportError(e) => StoreError::Unavailable(format!("etcd: {e}")),
        E::IoError(e) => StoreError::Unavailable(format!("etcd: {e}")),
        E::WatchError(e) => StoreError::Unavailable(format!("etcd watch: {e}")),
        E::EndpointError(e) => StoreError::Unavailable(format!("etcd endpoint: {e}")),
        E::InvalidArgs(e) => StoreError::InvalidRequest(format!("etcd: {e}")),
        E::InvalidUri(e) => StoreError::InvalidRequest(format!("etcd: invalid endpoint: {e}; {EXPECTED_ENDPOINT}")),
        other => StoreError::Internal(format!("etcd: {other}")),
    };
    Failure::Store(store)
}

/// Run one etcd call, bounded by [`REQUEST_TIMEOUT`].
async fn bounded<T>(what: &str, call: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(result) => result.map_err(classify),
        Err(_) => Err(Failure::Store(StoreError::Unavailable(format!(
            "etcd did not answer {what} within {}s",
            REQUEST_TIMEOUT.as_secs()
        )))),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>, what: &str) -> Result<Revision> {
    header.map(|h| h.revision()).ok_or_else(|| StoreError::Internal(format!("etcd answered {what} without a header")))
}

/// How the backend connects to etcd; the benchmark's raw-etcd baseline uses the same.
pub fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
        // etcd answers pings on a connection with no stream with GOAWAY ("too many pings").
        .with_keep_alive_while_idle(false)
        // Fail fast with "no leader" instead of waiting on a member cut off from the quorum.
        .with_require_leader(true)
}

impl EtcdStore {
    /// A store on the etcd cluster at `endpoints` (`http://host:port` or `host:port`),
    /// keeping every key under `prefix`. Does not dial: an etcd that is down makes calls
    /// fail with [`StoreError::Unavailable`], not this.
    pub async fn connect(endpoints: &[String], prefix: Bytes, metrics: StorageMetrics) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(StoreError::InvalidRequest(format!("no etcd endpoints given; {EXPECTED_ENDPOINT}")));
        }
        for endpoint in endpoints {
            check_etcd_endpoint(endpoint)
                .map_err(|problem| StoreError::InvalidRequest(format!("etcd endpoint {problem}")))?;
        }
        let options = connect_options();
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(endpoints, Some(options))).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(match StoreError::from(classify(e)) {
                    StoreError::InvalidRequest(reason) => {
                        StoreError::InvalidRequest(format!("etcd endpoints {endpoints:?}: {reason}"))
                    }
                    other => other,
                })
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "etcd client for {endpoints:?} not ready within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
        };
        let kv = client.kv_client().max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES);
        let watch = client.watch_client().max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES);
        let (closed, _) = watch::channel(false);
        tracing::info!(?endpoints, prefix = %String::from_utf8_lossy(&prefix), "etcd store configured");
        Ok(Self { _client: client, kv, watch, prefix, compacted: Arc::new(AtomicI64::new(0)), closed, metrics })
    }

    fn check_open(&self) -> Result<()> {
        if *self.closed.borrow() {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// `key` in etcd's key space.
    fn etcd_key(&self, key: &[u8]) -> Vec<u8> {
        let mut etcd_key = Vec::with_capacity(self.prefix.len() + key.len());
        etcd_key.extend_from_slice(&self.prefix);
        etcd_key.extend_from_slice(key);
        etcd_key
    }

    /// Where a range (or watch) from `key` starts in etcd's key space.
    fn etcd_range_start(&self, key: &[u8]) -> Vec<u8> {
        let start = self.etcd_key(key);
        if start.is_empty() {
            // etcd has no empty key (it would read it as "no key"); "\0" is the smallest.
            return vec![0];
        }
        start
    }

    /// The etcd range end for every key under `prefix` (in the caller's key space).
    fn etcd_range_end(&self, prefix: &[u8]) -> Vec<u8> {
        let end = prefix_end(prefix);
        if !end.is_empty() {
            let mut etcd_end = self.prefix.to_vec();
            etcd_end.extend_from_slice(&end);
            return etcd_end;
        }
        // No key follows every key under `prefix`: the range ends where ours does.
        let ours = prefix_end(&self.prefix);
        if ours.is_empty() {
            vec![0] // etcd's "to the end of the key space"
        } else {
            ours
        }
    }

    /// A key read to learn revisions: any key will do; this one is ours.
    fn probe_key(&self) -> Vec<u8> {
        self.etcd_range_start(b"")
    }

    fn user_key(&self, etcd_key: Vec<u8>) -> Result<Bytes> {
        if !etcd_key.starts_with(&self.prefix) {
            return Err(StoreError::Internal(format!(
                "etcd returned key {:?} outside prefix {:?}",
                String::from_utf8_lossy(&etcd_key),
                String::from_utf8_lossy(&self.prefix)
            )));
        }
        Ok(Bytes::from(etcd_key).slice(self.prefix.len()..))
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        let key = self.user_key(kv.key().to_vec())?;
        Ok(KeyValue {
            key,
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
        })
    }

    fn owned_key_value(&self, kv: etcd_client::KeyValue) -> Result<KeyValue> {
        let (create_revision, mod_revision, version) = (kv.create_revision(), kv.mod_revision(), kv.version());
        let (key, value) = kv.into_key_value();
        Ok(KeyValue { key: self.user_key(key)?, value: value.into(), create_revision, mod_revision, version })
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        self.check_open()?;
        bounded(what, self.kv.clone().txn(txn)).await.map_err(|failure| match StoreError::from(failure) {
            // etcd's limit is on the whole request: a value just under MAX_VALUE_BYTES
            // plus its key (three times: compare, write, read) and framing can exceed it.
            StoreError::InvalidRequest(reason) if reason.contains(TOO_LARGE_MESSAGE) => {
                StoreError::InvalidRequest(format!(
                    "{reason}: etcd refused {what} whose value, with its key and the transaction around it, \
                     exceeds etcd's --max-request-bytes (1.5 MiB by default)"
                ))
            }
            other => other,
        })
    }

    /// The value the `else` branch of a write read: the key's current value, if any.
    fn current_from(&self, response: &TxnResponse) -> Result<Option<KeyValue>> {
        match response.op_responses().into_iter().next() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| self.key_value(kv)).transpose(),
            _ => Err(StoreError::Internal("etcd answered a failed transaction without its read".into())),
        }
    }

    /// The latest revision, by a linearizable read.
    async fn read_revision(&self) -> Result<Revision> {
        self.check_open()?;
        let options = GetOptions::new().with_count_only();
        let response = bounded("a revision read", self.kv.clone().get(self.probe_key(), Some(options))).await?;
        header_revision(response.header(), "a revision read")
    }

    /// Whether history at `revision` is still there (`false`: compacted away). A future
    /// revision is not compacted.
    async fn readable_at(&self, revision: Revision) -> Result<bool> {
        self.check_open()?;
        let options = GetOptions::new().with_count_only().with_revision(revision);
        match bounded("a revision read", self.kv.clone().get(self.probe_key(), Some(options))).await {
            Ok(_) | Err(Failure::Future) => Ok(true),
            Err(Failure::Compacted) => Ok(false),
            Err(Failure::Store(e)) => Err(e),
        }
    }

    /// The compacted revision according to etcd (see the module doc).
    async fn find_compacted(&self) -> Result<Revision> {
        let known = self.compacted.load(Ordering::Acquire);
        let probe = known.max(1);
        if self.readable_at(probe).await? {
            // Compaction only moves forward: nothing beyond what we knew.
            return Ok(known);
        }
        // Find the oldest readable revision in (probe, current]; the current one always
        // is, etcd compacts at most up to it.
        let (mut unreadable, mut readable) = (probe, self.read_revision().await?);
        while readable - unreadable > 1 {
            let middle = unreadable + (readable - unreadable) / 2;
            if self.readable_at(middle).await? {
                readable = middle;
            } else {
                unreadable = middle;
            }
        }
        Ok(self.saw_compacted(readable))
    }

    /// Record that etcd is compacted at least up to `revision`; returns the best known.
    fn saw_compacted(&self, revision: Revision) -> Revision {
        saw_compacted(&self.compacted, revision)
    }

    /// The [`StoreError::Compacted`] for a read at `requested`, with the compacted revision
    /// as exact as etcd lets us learn it.
    async fn compacted_error(&self, requested: Revision) -> StoreError {
        let at_least = self.saw_compacted(requested + 1);
        let compacted = self.find_compacted().await.unwrap_or(at_least);
        StoreError::Compacted { requested, compacted }
    }

    async fn future_error(&self, requested: Revision) -> StoreError {
        match self.read_revision().await {
            Ok(current) => StoreError::FutureRevision { requested, current },
            Err(e) => e,
        }
    }

    async fn do_range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.check_open()?;
        check_range(&request)?;
        let start = self.etcd_range_start(request.start.as_ref().unwrap_or(&request.prefix));
        let mut options = GetOptions::new().with_range(self.etcd_range_end(&request.prefix));
        let at = request.revision.filter(|r| *r > 0);
        if let Some(revision) = at {
            options = options.with_revision(revision);
        }
        if request.limit > 0 {
            let limit = i64::try_from(request.limit).unwrap_or(i64::MAX);
            options = options.with_limit(limit);
        }
        let mut response = match bounded("a range", self.kv.clone().get(start, Some(options))).await {
            Ok(response) => response,
            Err(Failure::Compacted) => return Err(self.compacted_error(at.unwrap_or(0)).await),
            Err(Failure::Future) => return Err(self.future_error(at.unwrap_or(0)).await),
            Err(Failure::Store(e)) => return Err(e),
        };
        let revision = match at {
            Some(revision) => revision,
            None => header_revision(response.header(), "a range")?,
        };
        let more = response.more();
        let kvs = response.take_kvs().into_iter().map(|kv| self.owned_key_value(kv)).collect::<Result<Vec<_>>>()?;
        Ok(RangeResponse { kvs, revision, more })
    }

    async fn do_create(&self, key: Bytes, value: Bytes) -> Result<KeyValue> {
        check_value(&value)?;
        let etcd_key = self.etcd_key(&key);
        let txn = Txn::new()
            .when([Compare::create_revision(etcd_key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(etcd_key.clone(), value.to_vec(), None)])
            .or_else([TxnOp::get(etcd_key, None)]);
        let response = self.txn("a create", txn).await?;
        if !response.succeeded() {
            return match self.current_from(&response)? {
                Some(current) => Err(StoreError::AlreadyExists { current }),
                None => Err(StoreError::Internal("etcd refused a create of a key it does not hold".into())),
            };
        }
        let revision = header_revision(response.header(), "a create")?;
        Ok(KeyValue { key, value, create_revision: revision, mod_revision: revision, version: 1 })
    }

    /// A write guarded by "the key exists" and, when given, "its mod revision is
    /// `expected`"; the `else` branch reads the key. On a failed guard, the error.
    fn guarded(etcd_key: &[u8], expected: Option<Revision>, then: TxnOp) -> Txn {
        let mut compares = vec![Compare::version(etcd_key.to_vec(), CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            compares.push(Compare::mod_revision(etcd_key.to_vec(), CompareOp::Equal, expected));
        }
        Txn::new().when(compares).and_then([then]).or_else([TxnOp::get(etcd_key.to_vec(), None)])
    }

    /// The error for a guarded write whose guard failed.
    fn guard_failed(&self, response: &TxnResponse, key: Bytes, expected: Option<Revision>) -> StoreError {
        match self.current_from(response) {
            Err(e) => e,
            Ok(None) => StoreError::NotFound { key },
            Ok(Some(current)) => match expected {
                Some(expected) => StoreError::Conflict { key, expected, current: Some(current) },
                None => StoreError::Internal("etcd refused a write to a key it holds".into()),
            },
        }
    }

    async fn do_update(&self, key: Bytes, value: Bytes, expected: Revision) -> Result<KeyValue> {
        check_value(&value)?;
        let etcd_key = self.etcd_key(&key);
        let put = TxnOp::put(etcd_key.clone(), value.to_vec(), Some(PutOptions::new().with_prev_key()));
        let response = self.txn("an update", Self::guarded(&etcd_key, Some(expected), put)).await?;
        if !response.succeeded() {
            return Err(self.guard_failed(&response, key, Some(expected)));
        }
        let revision = header_revision(response.header(), "an update")?;
        let prev = match response.op_responses().into_iter().next() {
            Some(TxnOpResponse::Put(put)) => put.prev_key().map(|kv| (kv.create_revision(), kv.version())),
            _ => None,
        };
        let (create_revision, version) =
            prev.ok_or_else(|| StoreError::Internal("etcd answered an update without the previous value".into()))?;
        Ok(KeyValue { key, value, create_revision, mod_revision: revision, version: version + 1 })
    }

    async fn do_delete(&self, key: Bytes, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        let etcd_key = self.etcd_key(&key);
        let delete = TxnOp::delete(etcd_key.clone(), Some(DeleteOptions::new().with_prev_key()));
        let response = self.txn("a delete", Self::guarded(&etcd_key, expected, delete)).await?;
        if !response.succeeded() {
            return Err(self.guard_failed(&response, key, expected));
        }
        let revision = header_revision(response.header(), "a delete")?;
        let prev = match response.op_responses().into_iter().next() {
            Some(TxnOpResponse::Delete(delete)) => {
                delete.prev_kvs().first().map(|kv| self.key_value(kv)).transpose()?
            }
            _ => None,
        };
        let prev =
            prev.ok_or_else(|| StoreError::Internal("etcd answered a delete without the deleted value".into()))?;
        Ok((prev, revision))
    }

    async fn do_watch(&self, prefix: Bytes, from: Revision) -> Result<WatchStream> {
        self.check_open()?;
        let from = from.max(0);
        // etcd would accept the watch and cancel it a moment later; answer like the
        // embedded store does, at once. etcd still has the last word (see `Watch::step`).
        if from > 0 && !self.readable_at(from).await? {
            return Err(self.compacted_error(from).await);
        }
        let mut options =
            WatchOptions::new().with_range(self.etcd_range_end(&prefix)).with_prev_key().with_progress_notify();
        if from > 0 {
            options = options.with_start_revision(from);
        }
        let start = self.etcd_range_start(&prefix);
        let mut stream = bounded("a watch", self.watch.clone().watch(start, Some(options))).await?;
        // Wait until etcd has registered the watch, so every write after this returns is
        // seen even from revision 0 ("from the next write").
        let created = match bounded("a watch", stream.message()).await? {
            Some(response) if response.created() && !response.canceled() => response,
            Some(response) if response.compact_revision() > 0 => {
                let compacted = self.saw_compacted(response.compact_revision());
                return Err(StoreError::Compacted { requested: from, compacted });
            }
            Some(response) => {
                return Err(StoreError::Unavailable(format!(
                    "etcd refused the watch: {}",
                    if response.cancel_reason().is_empty() { "no reason given" } else { response.cancel_reason() }
                )))
            }
            None => return Err(StoreError::Unavailable("etcd closed the watch stream".into())),
        };
        let next = if from > 0 { from } else { header_revision(created.header(), "a watch")? + 1 };
        let watch = Watch {
            stream,
            prefix: self.prefix.clone(),
            next,
            compacted: self.compacted.clone(),
            closed: self.closed.subscribe(),
            metrics: self.metrics.clone(),
            _gauge: self.metrics.watcher("store"),
        };
        Ok(Box::pin(futures::stream::unfold(Some(watch), |state| async move {
            let mut watch = state?;
            match watch.step().await {
                Ok(item) => Some((Ok(item), Some(watch))),
                Err(e) => Some((Err(e), None)),
            }
        })))
    }

    async fn do_compact(&self, revision: Revision) -> Result<()> {
        self.check_open()?;
        if revision <= 0 {
            return Ok(()); // nothing is older than the first revision
        }
        match bounded("a compaction", self.kv.clone().compact(revision, None)).await {
            Ok(_) => {
                self.saw_compacted(revision);
                tracing::debug!(revision, "etcd compacted");
                Ok(())
            }
            // Compacted at or past `revision` already: done, as the embedded store says.
            Err(Failure::Compacted) => {
                self.saw_compacted(revision);
                Ok(())
            }
            Err(Failure::Future) => Err(self.future_error(revision).await),
            Err(Failure::Store(e)) => Err(e),
        }
    }
}

fn saw_compacted(compacted: &AtomicI64, revision: Revision) -> Revision {
    compacted.fetch_max(revision, Ordering::AcqRel).max(revision)
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, key: Bytes, value: Bytes) -> Result<KeyValue> {
        let timer = self.metrics.start(BACKEND, "create");
        timer.finish(self.do_create(key, value).await)
    }

    async fn get(&self, key: Bytes) -> Result<(Option<KeyValue>, Revision)> {
        let timer = self.metrics.start(BACKEND, "get");
        let result = async {
            self.check_open()?;
            let mut response = bounded("a get", self.kv.clone().get(self.etcd_key(&key), None)).await?;
            let revision = header_revision(response.header(), "a get")?;
            let kv = response.take_kvs().into_iter().next().map(|kv| self.owned_key_value(kv)).transpose()?;
            Ok((kv, revision))
        }
        .await;
        timer.finish(result)
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let timer = self.metrics.start(BACKEND, "range");
        timer.finish(self.do_range(request).await)
    }

    async fn update(&self, key: Bytes, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let timer = self.metrics.start(BACKEND, "update");
        timer.finish(self.do_update(key, value, expected).await)
    }

    async fn delete(&self, key: Bytes, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        let timer = self.metrics.start(BACKEND, "delete");
        timer.finish(self.do_delete(key, expected).await)
    }

    async fn watch(&self, prefix: Bytes, from: Revision) -> Result<WatchStream> {
        let timer = self.metrics.start(BACKEND, "watch");
        timer.finish(self.do_watch(prefix, from).await)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let timer = self.metrics.start(BACKEND, "compact");
        timer.finish(self.do_compact(revision).await)
    }

    async fn current_revision(&self) -> Result<Revision> {
        let timer = self.metrics.start(BACKEND, "current_revision");
        timer.finish(self.read_revision().await)
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        let timer = self.metrics.start(BACKEND, "compacted_revision");
        let result = async {
            self.check_open()?;
            self.find_compacted().await
        }
        .await;
        timer.finish(result)
    }

    async fn close(&self) -> Result<()> {
        // Nothing is buffered here: every acknowledged write is already in etcd.
        self.closed.send_replace(true);
        Ok(())
    }
}

/// One open watch: etcd's stream, converted item by item.
struct Watch {
    /// etcd's watch stream. It holds the request half too: dropping that would make
    /// etcd-client end the watch, so both live exactly as long as this.
    stream: etcd_client::WatchStream,
    /// The store's key prefix in etcd.
    prefix: Bytes,
    /// The next revision this watch must deliver.
    next: Revision,
    compacted: Arc<AtomicI64>,
    closed: watch::Receiver<bool>,
    metrics: StorageMetrics,
    _gauge: WatcherGuard,
}

impl Watch {
    async fn step(&mut self) -> Result<WatchItem> {
        loop {
            let closed = &mut self.closed;
            let message = tokio::select! {
                biased;
                () = async {
                    if closed.wait_for(|closed| *closed).await.is_err() {
                        // The store was dropped without closing: keep following etcd.
                        std::future::pending::<()>().await;
                    }
                } => return Err(StoreError::Closed),
                message = self.stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return Err(StoreError::Unavailable("etcd closed the watch stream".into())),
                Err(e) => {
                    return Err(match classify(e) {
                        Failure::Store(e) => e,
                        other => StoreError::Unavailable(format!("etcd watch failed: {other:?}")),
                    })
                }
            };
            if response.compact_revision() > 0 {
                let compacted = saw_compacted(&self.compacted, response.compact_revision());
                return Err(StoreError::Compacted { requested: self.next, compacted });
            }
            if response.canceled() {
                let reason = response.cancel_reason();
                return Err(StoreError::Unavailable(format!(
                    "etcd canceled the watch: {}",
                    if reason.is_empty() { "no reason given" } else { reason }
                )));
            }
            if response.created() {
                continue;
            }
            if response.events().is_empty() {
                // A progress notification: everything up to its revision was delivered.
                let Some(revision) = response.header().map(|h| h.revision()) else { continue };
                if revision < self.next - 1 {
                    continue;
                }
                self.next = revision + 1;
                return Ok(WatchItem::Progress(revision));
            }
            let events = response.events().iter().map(|event| self.event(event)).collect::<Result<Vec<_>>>()?;
            if let Some(last) = events.last() {
                self.next = self.next.max(last.revision() + 1);
            }
            self.metrics.delivered("store", events.len());
            return Ok(WatchItem::Events(events));
        }
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        let key = kv.key().strip_prefix(&self.prefix[..]).ok_or_else(|| {
            StoreError::Internal(format!(
                "etcd watch returned key {:?} outside prefix {:?}",
                String::from_utf8_lossy(kv.key()),
                String::from_utf8_lossy(&self.prefix)
            ))
        })?;
        Ok(KeyValue {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
        })
    }

    fn event(&self, event: &etcd_client::Event) -> Result<Event> {
        let kv = event.kv().ok_or_else(|| StoreError::Internal("etcd watch event without a key".into()))?;
        let prev = event.prev_kv().map(|kv| self.key_value(kv)).transpose()?;
        let revision = kv.mod_revision();
        // etcd leaves out the previous value when the revision before the event is
        // compacted away. An update or delete without it cannot be delivered faithfully.
        let history_gone =
            || StoreError::Compacted { requested: self.next, compacted: saw_compacted(&self.compacted, revision) };
        // A delete's kv is etcd's tombstone: version 0 (every put has version ≥ 1). This
        // reads the kind without `Event::event_type`, which panics on an unknown type.
        if kv.version() == 0 {
            let key = self.key_value(kv)?.key;
            return Ok(Event::Delete { key, revision, prev: prev.ok_or_else(history_gone)? });
        }
        if kv.version() > 1 && prev.is_none() {
            return Err(history_gone());
        }
        Ok(Event::Put { kv: self.key_value(kv)?, prev })
    }
}
