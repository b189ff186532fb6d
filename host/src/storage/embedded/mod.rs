//! The embedded backend: a single-node [`Store`] durable on local disk.
//!
//! Start with [`EmbeddedStore::open`]. The layout follows etcd's own: every write is a
//! [`record::Record`] in fjall's `log` keyspace keyed by its revision, and an in-memory
//! [`index::KeyIndex`] maps each key to the revisions that wrote it (rebuilt from the log
//! at start). Writes go through a two-stage pipeline (group commit):
//! 1. the *committer* thread drains whatever requests are queued, checks their
//!    preconditions against the writes in flight and the index, assigns revisions, and
//!    writes them as one fjall batch to the journal — without syncing;
//! 2. the *syncer* thread takes every batch written since its last sync, makes them durable
//!    with one `fdatasync`, and only then applies them to the index, publishes the
//!    revision and the events, and acknowledges.
//!
//! While one sync runs, the next batch is already being decided and written, so 64 writers
//! share few syncs and the disk is never idle waiting for the CPU.
//!
//! Invariants: an acknowledged write is on disk; readers (who go through the index) never
//! see a write before it is durable; only the committer writes the journal and only the
//! syncer writes the index; compaction never drops the record that holds a key's value at
//! the compacted revision.

mod index;
mod record;
mod snapshot;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{KeyspaceCreateOptions, PersistMode, Readable};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use tokio::sync::{broadcast, mpsc, oneshot};

use self::index::{Entry, KeyIndex};
use self::record::{Record, RecordKind};
pub use self::snapshot::SnapshotInfo;
use super::{
    check_range, check_value, prefix_end, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision,
    StorageMetrics, Store, StoreError, WatchItem, WatchStream,
};

const BACKEND: &str = "embedded";
const LOCK: &str = "LOCK";
const DB: &str = "db";
/// Most writes one commit takes; bounds the latency of the first writer in a batch.
const MAX_BATCH: usize = 1024;
/// Most records one catch-up read takes while holding the index lock.
const CATCH_UP_CHUNK: usize = 512;
/// Committed batches a live watcher may fall behind before it catches up from disk.
const WATCH_BUFFER: usize = 1024;
/// A quiet watcher hears that the store moved on at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// A file holding a revision known to be durable, rewritten about once a second and at
/// close. Recovery must reach it: fjall truncates a damaged journal silently, and this is
/// how that loss is caught instead of serving an older store.
const DURABLE_REVISION: &str = "durable-revision";
const DURABLE_EVERY: Duration = Duration::from_secs(1);
const META_COMPACTED: &[u8] = b"compacted";
const META_REVISION_FLOOR: &[u8] = b"revision_floor";

/// The embedded store. Cheap to share behind an `Arc`; see the module doc.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// State readers and the committer share.
struct Shared {
    dir: PathBuf,
    db: fjall::Database,
    log: fjall::Keyspace,
    meta: fjall::Keyspace,
    index: RwLock<KeyIndex>,
    /// The latest committed and durable revision; readers read at or below it.
    revision: AtomicI64,
    compacted: AtomicI64,
    events: Mutex<Option<broadcast::Sender<Arc<Vec<Event>>>>>,
    metrics: StorageMetrics,
    _lock: File,
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Outcome>>,
}

enum Op {
    Create { key: Bytes, value: Bytes },
    Update { key: Bytes, value: Bytes, expected: Revision },
    Delete { key: Bytes, expected: Option<Revision> },
    Compact(Revision),
    Close,
}

enum Outcome {
    Put(KeyValue),
    Deleted(KeyValue, Revision),
    Done,
}

impl EmbeddedStore {
    /// Open (or create) the store in `dir`. A directory that is not empty and holds no
    /// wasmkube marker is refused untouched.
    pub async fn open(dir: &Path, metrics: StorageMetrics) -> Result<Self> {
        let dir = dir.to_path_buf();
        let shared = tokio::task::spawn_blocking(move || Shared::open(dir, metrics))
            .await
            .map_err(|e| StoreError::Internal(format!("open task failed: {e}")))??;
        let shared = Arc::new(shared);
        let (requests, receiver) = mpsc::channel(4 * MAX_BATCH);
        let committer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("store-committer".into())
                .spawn(move || Committer { shared, requests: receiver }.run())
                .map_err(|e| StoreError::Internal(format!("cannot start committer: {e}")))?
        };
        Ok(Self { shared, requests, committer: Mutex::new(Some(committer)) })
    }

    /// The data dir this store lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Write a consistent snapshot of the whole store to `out` (blocking; run it off the
    /// async workers). Writes may continue meanwhile.
    pub fn write_snapshot(&self, out: &mut dyn Write) -> Result<SnapshotInfo> {
        let (view, revision, compacted) = {
            let _index = self.shared.index.read();
            (
                self.shared.db.snapshot(),
                self.shared.revision.load(Ordering::Acquire),
                self.shared.compacted.load(Ordering::Acquire),
            )
        };
        // Records past `revision` may already be in fjall while the committer has not yet
        // published them; they belong to the next snapshot.
        let records = view
            .range(&self.shared.log, ..=Record::log_key(revision))
            .map(|guard| guard.into_inner().map_err(|e| StoreError::Internal(e.to_string())));
        snapshot::write(out, revision, compacted, records)
    }

    async fn submit(&self, op: Op) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request { op, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn read_at(&self, revision: Option<Revision>) -> Result<Revision> {
        let current = self.shared.revision.load(Ordering::Acquire);
        let Some(revision) = revision.filter(|r| *r > 0) else { return Ok(current) };
        if revision > current {
            return Err(StoreError::FutureRevision { requested: revision, current });
        }
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if revision < compacted {
            return Err(StoreError::Compacted { requested: revision, compacted });
        }
        Ok(revision)
    }
}

/// Restore a snapshot written by [`EmbeddedStore::write_snapshot`] into `dir`, which must
/// not exist or be empty. Returns what the snapshot held.
pub fn restore_snapshot(input: &mut dyn std::io::Read, dir: &Path) -> Result<SnapshotInfo> {
    let shared = Shared::create_empty(dir)?;
    let restored = restore_into(&shared, input);
    if restored.is_err() {
        // The directory was empty before; leave nothing half-restored behind.
        drop(shared);
        let _ = std::fs::remove_dir_all(dir);
    }
    restored
}

/// Read a whole snapshot and check its checksum without restoring it.
pub fn inspect_snapshot(input: &mut dyn std::io::Read) -> Result<SnapshotInfo> {
    snapshot::read(input, |_, _| Ok(()))
}

fn restore_into(shared: &Shared, input: &mut dyn std::io::Read) -> Result<SnapshotInfo> {
    let mut batch = shared.db.batch();
    let mut pending = 0usize;
    let info = snapshot::read(input, |log_key, record| {
        batch.insert(&shared.log, log_key.to_vec(), record.to_vec());
        pending += 1;
        if pending == 4096 {
            let full = std::mem::replace(&mut batch, shared.db.batch());
            full.commit().map_err(fjall_error)?;
            pending = 0;
        }
        Ok(())
    })?;
    batch.insert(&shared.meta, META_COMPACTED.to_vec(), info.compacted.to_be_bytes().to_vec());
    batch.insert(&shared.meta, META_REVISION_FLOOR.to_vec(), info.revision.to_be_bytes().to_vec());
    batch.durability(Some(PersistMode::SyncAll)).commit().map_err(fjall_error)?;
    shared.db.persist(PersistMode::SyncAll).map_err(fjall_error)?;
    write_durable_revision(&shared.dir, info.revision).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(info)
}

fn read_durable_revision(dir: &Path) -> Result<Revision> {
    match std::fs::read_to_string(dir.join(DURABLE_REVISION)) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| data_dir_error(dir, format!("{DURABLE_REVISION} holds {:?}, not a revision", text.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(data_dir_error(dir, format!("cannot read {DURABLE_REVISION}: {e}"))),
    }
}

/// Record that `revision` is durable (atomically: write, then rename over the old file).
fn write_durable_revision(dir: &Path, revision: Revision) -> std::io::Result<()> {
    let partial = dir.join(format!("{DURABLE_REVISION}.partial"));
    std::fs::write(&partial, format!("{revision}\n"))?;
    std::fs::rename(partial, dir.join(DURABLE_REVISION))
}

fn fjall_error(e: fjall::Error) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn data_dir_error(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::DataDir { path: path.to_path_buf(), reason: reason.into() }
}

impl Shared {
    /// Take the directory (creating and marking it when new), lock it, open the engine.
    fn prepare(dir: &Path, must_be_new: bool) -> Result<(File, fjall::Database)> {
        let io = |what: &str, e: std::io::Error| data_dir_error(dir, format!("{what}: {e}"));
        crate::datadir::claim(dir, must_be_new).map_err(|e| StoreError::DataDir { path: e.path, reason: e.reason })?;
        let lock = File::create(dir.join(LOCK)).map_err(|e| io("cannot create lock file", e))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StoreError::DataDirInUse(dir.to_path_buf()));
        }
        let db = fjall::Database::builder(dir.join(DB))
            .open()
            .map_err(|e| data_dir_error(dir, format!("the database is corrupt or unreadable: {e}")))?;
        Ok((lock, db))
    }

    fn create_empty(dir: &Path) -> Result<Self> {
        let (lock, db) = Self::prepare(dir, true)?;
        Self::from_db(dir.to_path_buf(), lock, db, StorageMetrics::unregistered())
    }

    fn open(dir: PathBuf, metrics: StorageMetrics) -> Result<Self> {
        let (lock, db) = Self::prepare(&dir, false)?;
        let shared = Self::from_db(dir, lock, db, metrics)?;
        shared.recover()?;
        Ok(shared)
    }

    fn from_db(dir: PathBuf, lock: File, db: fjall::Database, metrics: StorageMetrics) -> Result<Self> {
        let log = db.keyspace("log", KeyspaceCreateOptions::default).map_err(fjall_error)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default).map_err(fjall_error)?;
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Ok(Self {
            dir,
            db,
            log,
            meta,
            index: RwLock::new(KeyIndex::default()),
            revision: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            events: Mutex::new(Some(events)),
            metrics,
            _lock: lock,
        })
    }

    /// Rebuild the index from the log, then finish any compaction a crash interrupted.
    fn recover(&self) -> Result<()> {
        let started = Instant::now();
        let meta_i64 = |key: &[u8]| -> Result<Revision> {
            match self.meta.get(key).map_err(fjall_error)? {
                Some(raw) => <[u8; 8]>::try_from(&raw[..])
                    .map(i64::from_be_bytes)
                    .map_err(|_| data_dir_error(&self.dir, "corrupt metadata")),
                None => Ok(0),
            }
        };
        let compacted = meta_i64(META_COMPACTED)?;
        let mut revision = meta_i64(META_REVISION_FLOOR)?;
        let mut index = self.index.write();
        let mut records = 0u64;
        let mut previous = 0;
        for guard in self.log.iter() {
            let (key, value) = guard.into_inner().map_err(fjall_error)?;
            let record = Record::decode(&key, &value).map_err(|e| data_dir_error(&self.dir, e))?;
            if record.revision <= previous {
                return Err(data_dir_error(&self.dir, "log revisions are out of order"));
            }
            previous = record.revision;
            revision = revision.max(record.revision);
            index.push(record.key.clone(), record.entry());
            records += 1;
        }
        let durable = read_durable_revision(&self.dir)?;
        if revision < durable {
            return Err(data_dir_error(
                &self.dir,
                format!(
                    "is corrupt: its log ends at revision {revision} but revision {durable} was durable \
                     (recorded in {DURABLE_REVISION}); the journal is damaged. Restore from a snapshot \
                     (wasmkube store snapshot restore) into a new directory"
                ),
            ));
        }
        let leftovers = index.compact(compacted);
        drop(index);
        self.delete_records(&leftovers)?;
        self.revision.store(revision, Ordering::Release);
        self.compacted.store(compacted, Ordering::Release);
        tracing::info!(dir = %self.dir.display(), records, revision, compacted, elapsed = ?started.elapsed(), "embedded store recovered");
        Ok(())
    }

    fn delete_records(&self, revisions: &[Revision]) -> Result<()> {
        for chunk in revisions.chunks(8192) {
            let mut batch = self.db.batch();
            for revision in chunk {
                batch.remove(&self.log, Record::log_key(*revision).to_vec());
            }
            batch.commit().map_err(fjall_error)?;
        }
        Ok(())
    }

    /// Read the record at `revision` through `view`, or from the live tree (the committer,
    /// the only writer, needs no snapshot).
    fn read_record(&self, view: Option<&fjall::Snapshot>, revision: Revision) -> Result<Record> {
        let log_key = Record::log_key(revision);
        let raw = match view {
            Some(view) => view.get(&self.log, log_key),
            None => self.log.get(log_key),
        };
        let raw = raw
            .map_err(fjall_error)?
            .ok_or_else(|| StoreError::Internal(format!("record at revision {revision} is missing")))?;
        Record::decode(&Record::log_key(revision), &raw).map_err(StoreError::Internal)
    }

    fn read_value(&self, view: Option<&fjall::Snapshot>, key: &Bytes, entry: Entry) -> Result<KeyValue> {
        match self.read_record(view, entry.revision)?.kind {
            RecordKind::Put { value, create_revision, version } => {
                Ok(KeyValue { key: key.clone(), value, create_revision, mod_revision: entry.revision, version })
            }
            RecordKind::Delete => Err(StoreError::Internal(format!(
                "index points at a delete for a live key at revision {}",
                entry.revision
            ))),
        }
    }

    /// Events with revisions in `[from, upto]` on keys under `prefix`, from disk, at most
    /// `CATCH_UP_CHUNK` records. Returns the events and the next revision to read.
    fn catch_up(&self, prefix: &[u8], from: Revision, upto: Revision) -> Result<(Vec<Event>, Revision)> {
        let index = self.index.read();
        let compacted = self.compacted.load(Ordering::Acquire);
        if from < compacted {
            return Err(StoreError::Compacted { requested: from, compacted });
        }
        let view = self.db.snapshot();
        let mut events = Vec::new();
        let mut next = from;
        let start = Record::log_key(from);
        let end = Record::log_key(upto);
        for guard in view.range(&self.log, start..=end).take(CATCH_UP_CHUNK) {
            let (key, raw) = guard.into_inner().map_err(fjall_error)?;
            let record = Record::decode(&key, &raw).map_err(StoreError::Internal)?;
            next = record.revision + 1;
            if !record.key.starts_with(prefix) {
                continue;
            }
            let prev = match index.at(&record.key, record.revision - 1) {
                Some(entry) => Some(self.read_value(Some(&view), &record.key, entry)?),
                None => None,
            };
            events.push(match record.kind {
                RecordKind::Put { .. } => Event::Put {
                    kv: record.into_key_value().ok_or_else(|| StoreError::Internal("put without value".into()))?,
                    prev,
                },
                RecordKind::Delete => Event::Delete {
                    key: record.key,
                    revision: record.revision,
                    prev: prev.ok_or_else(|| StoreError::Internal("delete without previous value".into()))?,
                },
            });
        }
        // Revisions with no record (compacted away or never written to) are skipped.
        if events.is_empty() && next == from {
            next = upto + 1;
        }
        Ok((events, next))
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, key: Bytes, value: Bytes) -> Result<KeyValue> {
        let timer = self.shared.metrics.start(BACKEND, "create");
        let result = async {
            check_value(&value)?;
            match self.submit(Op::Create { key, value }).await? {
                Outcome::Put(kv) => Ok(kv),
                _ => Err(StoreError::Internal("unexpected outcome".into())),
            }
        }
        .await;
        timer.finish(result)
    }

    async fn get(&self, key: Bytes) -> Result<(Option<KeyValue>, Revision)> {
        let timer = self.shared.metrics.start(BACKEND, "get");
        let result = (|| {
            let (entry, view, revision) = {
                let index = self.shared.index.read();
                (index.latest(&key), self.shared.db.snapshot(), self.shared.revision.load(Ordering::Acquire))
            };
            match entry.filter(Entry::is_live) {
                Some(entry) => Ok((Some(self.shared.read_value(Some(&view), &key, entry)?), revision)),
                None => Ok((None, revision)),
            }
        })();
        timer.finish(result)
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let timer = self.shared.metrics.start(BACKEND, "range");
        let result = async {
            check_range(&request)?;
            let revision = self.read_at(request.revision)?;
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || {
                let start = request.start.as_ref().unwrap_or(&request.prefix);
                let end = prefix_end(&request.prefix);
                let (entries, more, view) = {
                    let index = shared.index.read();
                    let (entries, more) = index.range(start, &end, revision, request.limit);
                    (entries, more, shared.db.snapshot())
                };
                let kvs = entries
                    .into_iter()
                    .map(|(key, entry)| shared.read_value(Some(&view), &key, entry))
                    .collect::<Result<Vec<_>>>()?;
                Ok(RangeResponse { kvs, revision, more })
            })
            .await
            .map_err(|e| StoreError::Internal(format!("range task failed: {e}")))?
        }
        .await;
        timer.finish(result)
    }

    async fn update(&self, key: Bytes, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let timer = self.shared.metrics.start(BACKEND, "update");
        let result = async {
            check_value(&value)?;
            match self.submit(Op::Update { key, value, expected }).await? {
                Outcome::Put(kv) => Ok(kv),
                _ => Err(StoreError::Internal("unexpected outcome".into())),
            }
        }
        .await;
        timer.finish(result)
    }

    async fn delete(&self, key: Bytes, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        let timer = self.shared.metrics.start(BACKEND, "delete");
        let result = match self.submit(Op::Delete { key, expected }).await {
            Ok(Outcome::Deleted(kv, revision)) => Ok((kv, revision)),
            Ok(_) => Err(StoreError::Internal("unexpected outcome".into())),
            Err(e) => Err(e),
        };
        timer.finish(result)
    }

    async fn watch(&self, prefix: Bytes, from: Revision) -> Result<WatchStream> {
        let current = self.shared.revision.load(Ordering::Acquire);
        let from = if from <= 0 { current + 1 } else { from };
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if from < compacted {
            return Err(StoreError::Compacted { requested: from, compacted });
        }
        let live = self.shared.events.lock().as_ref().map(|s| s.subscribe()).ok_or(StoreError::Closed)?;
        let watcher = Watcher {
            shared: self.shared.clone(),
            prefix,
            next: from,
            live,
            last_progress: Instant::now(),
            _gauge: self.shared.metrics.watcher("store"),
        };
        Ok(Box::pin(futures::stream::unfold(Some(watcher), |state| async move {
            let mut watcher = state?;
            match watcher.step().await {
                Ok(item) => Some((Ok(item), Some(watcher))),
                Err(e) => Some((Err(e), None)),
            }
        })))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let timer = self.shared.metrics.start(BACKEND, "compact");
        let result = self.submit(Op::Compact(revision)).await.map(|_| ());
        timer.finish(result)
    }

    async fn current_revision(&self) -> Result<Revision> {
        let timer = self.shared.metrics.start(BACKEND, "current_revision");
        timer.finish(Ok(self.shared.revision.load(Ordering::Acquire)))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }

    async fn close(&self) -> Result<()> {
        let result = self.submit(Op::Close).await.map(|_| ());
        let committer = self.committer.lock().take();
        if let Some(committer) = committer {
            let _ = tokio::task::spawn_blocking(move || committer.join()).await;
        }
        match result {
            Err(StoreError::Closed) => Ok(()),
            other => other,
        }
    }
}

/// One watch: catches up from disk while behind, then follows committed batches live.
struct Watcher {
    shared: Arc<Shared>,
    prefix: Bytes,
    /// The next revision this watcher must deliver.
    next: Revision,
    live: broadcast::Receiver<Arc<Vec<Event>>>,
    last_progress: Instant,
    _gauge: super::metrics::WatcherGuard,
}

impl Watcher {
    async fn step(&mut self) -> Result<WatchItem> {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            // A batch is broadcast before its revision is published, so a batch already
            // waiting here is taken before the revision is looked at: a watcher that keeps
            // up never reads the log from disk.
            let received = match self.live.try_recv() {
                Ok(batch) => Ok(batch),
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Closed) => return Err(StoreError::Closed),
                Err(TryRecvError::Empty) => {
                    let current = self.shared.revision.load(Ordering::Acquire);
                    if self.next <= current {
                        let shared = self.shared.clone();
                        let (prefix, from) = (self.prefix.clone(), self.next);
                        let (events, next) =
                            tokio::task::spawn_blocking(move || shared.catch_up(&prefix, from, current))
                                .await
                                .map_err(|e| StoreError::Internal(format!("watch task failed: {e}")))??;
                        self.next = next;
                        if !events.is_empty() {
                            return Ok(self.deliver(events));
                        }
                        continue;
                    }
                    self.live.recv().await
                }
            };
            match received {
                Ok(batch) => {
                    let Some(first) = batch.first() else { continue };
                    if first.revision() > self.next {
                        continue; // a gap: the loop catches up from disk
                    }
                    let last = batch.last().map_or(self.next, Event::revision);
                    let events: Vec<Event> = batch
                        .iter()
                        .filter(|e| e.revision() >= self.next && e.key().starts_with(&self.prefix))
                        .cloned()
                        .collect();
                    self.next = self.next.max(last + 1);
                    if !events.is_empty() {
                        return Ok(self.deliver(events));
                    }
                    if self.last_progress.elapsed() >= PROGRESS_EVERY {
                        self.last_progress = Instant::now();
                        return Ok(WatchItem::Progress(self.next - 1));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Err(StoreError::Closed),
            }
        }
    }

    fn deliver(&mut self, events: Vec<Event>) -> WatchItem {
        self.shared.metrics.delivered("store", events.len());
        self.last_progress = Instant::now();
        WatchItem::Events(events)
    }
}

/// A key's state as the writes in flight left it.
#[derive(Clone)]
enum Pending {
    Live(KeyValue),
    Deleted,
}

/// Writes in the journal but not yet synced, applied or acknowledged: for each key the
/// newest such write. The sequencer adds to it; the syncer removes a key once the index
/// holds that write. The sequencer reads it before the index, so it always decides against
/// the latest state even while a sync is under way.
type InFlight = Mutex<HashMap<Bytes, (Revision, Pending)>>;

/// What the sequencer hands the syncer, in revision order.
enum Stage {
    /// A batch written to the journal (not yet synced).
    Written {
        events: Vec<Event>,
        replies: Vec<(oneshot::Sender<Result<Outcome>>, Result<Event>)>,
    },
    Compact(Revision, oneshot::Sender<Result<Outcome>>),
    Close(oneshot::Sender<Result<Outcome>>),
}

/// The first stage of the write pipeline and the only writer of the journal: see the
/// module doc. It decides each write against the in-flight writes and the index, assigns
/// revisions and writes the batch to fjall's journal without syncing, then hands it to
/// the syncer and goes on with the next batch while that one syncs.
struct Committer {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
}

impl Committer {
    fn run(mut self) {
        let in_flight: Arc<InFlight> = Arc::default();
        let (stages, staged) = std::sync::mpsc::channel();
        let syncer = {
            let syncer = Syncer { shared: self.shared.clone(), in_flight: in_flight.clone() };
            std::thread::Builder::new().name("store-syncer".into()).spawn(move || syncer.run(staged))
        };
        let syncer = match syncer {
            Ok(syncer) => syncer,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the store's syncer thread");
                self.refuse_all(StoreError::Internal(format!("cannot start the syncer: {e}")));
                return;
            }
        };
        let mut next = self.shared.revision.load(Ordering::Acquire) + 1;
        'serve: while let Some(first) = self.requests.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let mut writes = Vec::with_capacity(batch.len());
            for request in batch {
                let stage = match request.op {
                    Op::Compact(revision) => Stage::Compact(revision, request.reply),
                    Op::Close => Stage::Close(request.reply),
                    _ => {
                        writes.push(request);
                        continue;
                    }
                };
                // Keep revision order: the writes before it go first.
                if !writes.is_empty() {
                    let stage = self.write(std::mem::take(&mut writes), &in_flight, &mut next);
                    let _ = stages.send(stage);
                }
                let closing = matches!(stage, Stage::Close(_));
                let _ = stages.send(stage);
                if closing {
                    break 'serve;
                }
            }
            if !writes.is_empty() {
                let stage = self.write(writes, &in_flight, &mut next);
                let _ = stages.send(stage);
            }
        }
        drop(stages);
        let _ = syncer.join();
        self.refuse_all(StoreError::Closed);
    }

    fn refuse_all(&mut self, error: StoreError) {
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            let _ = request.reply.send(Err(match &error {
                StoreError::Closed => StoreError::Closed,
                other => StoreError::Internal(other.to_string()),
            }));
        }
    }

    fn current(&self, in_flight: &InFlight, index: &KeyIndex, key: &Bytes) -> Result<Option<KeyValue>> {
        if let Some((_, pending)) = in_flight.lock().get(key) {
            return Ok(match pending {
                Pending::Live(kv) => Some(kv.clone()),
                Pending::Deleted => None,
            });
        }
        match index.latest(key).filter(Entry::is_live) {
            Some(entry) => Ok(Some(self.shared.read_value(None, key, entry)?)),
            None => Ok(None),
        }
    }

    /// Decide every write, write the successful ones to the journal (no sync).
    fn write(&mut self, requests: Vec<Request>, in_flight: &InFlight, next: &mut Revision) -> Stage {
        let shared = self.shared.clone();
        let first = *next;
        let mut batch = shared.db.batch();
        let mut events = Vec::new();
        let mut replies = Vec::with_capacity(requests.len());
        {
            let index = shared.index.read();
            for request in requests {
                let outcome = self.decide(request.op, &index, in_flight, *next);
                if let Ok((record, event)) = &outcome {
                    batch.insert(&shared.log, Record::log_key(record.revision).to_vec(), record.encode());
                    events.push(event.clone());
                    *next += 1;
                }
                replies.push((request.reply, outcome.map(|(_, event)| event)));
            }
        }
        if let Err(e) = batch.commit() {
            tracing::error!(error = %e, "embedded store journal write failed; the store refuses writes from now on");
            // Nothing of this batch reached the journal: its revisions are free again.
            *next = first;
            let mut in_flight = in_flight.lock();
            for event in &events {
                in_flight.remove(event.key());
            }
            let failed = replies
                .into_iter()
                .map(|(reply, outcome)| {
                    let outcome = outcome.and(Err(StoreError::Internal(format!("journal write failed: {e}"))));
                    (reply, outcome)
                })
                .collect();
            return Stage::Written { events: Vec::new(), replies: failed };
        }
        Stage::Written { events, replies }
    }

    /// Check one write against the state so far and build its record and event.
    fn decide(&self, op: Op, index: &KeyIndex, in_flight: &InFlight, revision: Revision) -> Result<(Record, Event)> {
        let (key, value, expected) = match op {
            Op::Create { key, value } => {
                if let Some(current) = self.current(in_flight, index, &key)? {
                    return Err(StoreError::AlreadyExists { current });
                }
                let kv =
                    KeyValue { key: key.clone(), value, create_revision: revision, mod_revision: revision, version: 1 };
                return Ok(put(in_flight, kv, None));
            }
            Op::Update { key, value, expected } => (key, Some(value), Some(expected)),
            Op::Delete { key, expected } => (key, None, expected),
            Op::Compact(_) | Op::Close => return Err(StoreError::Internal("not a write".into())),
        };
        let Some(current) = self.current(in_flight, index, &key)? else {
            return Err(StoreError::NotFound { key });
        };
        if let Some(expected) = expected.filter(|e| *e != current.mod_revision) {
            return Err(StoreError::Conflict { key, expected, current: Some(current) });
        }
        match value {
            Some(value) => {
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: current.create_revision,
                    mod_revision: revision,
                    version: current.version + 1,
                };
                Ok(put(in_flight, kv, Some(current)))
            }
            None => {
                in_flight.lock().insert(key.clone(), (revision, Pending::Deleted));
                let record = Record { revision, key: key.clone(), kind: RecordKind::Delete };
                Ok((record, Event::Delete { key, revision, prev: current }))
            }
        }
    }
}

fn put(in_flight: &InFlight, kv: KeyValue, prev: Option<KeyValue>) -> (Record, Event) {
    in_flight.lock().insert(kv.key.clone(), (kv.mod_revision, Pending::Live(kv.clone())));
    let record = Record {
        revision: kv.mod_revision,
        key: kv.key.clone(),
        kind: RecordKind::Put { value: kv.value.clone(), create_revision: kv.create_revision, version: kv.version },
    };
    (record, Event::Put { kv, prev })
}

/// The second stage: one `fdatasync` for every batch written since the last one, then
/// each batch in order is applied to the index, published and acknowledged. Owns the
/// index's writes and compaction.
struct Syncer {
    shared: Arc<Shared>,
    in_flight: Arc<InFlight>,
}

impl Syncer {
    fn run(self, staged: std::sync::mpsc::Receiver<Stage>) {
        let (mut total_writes, mut total_syncs) = (0u64, 0u64);
        let mut durable_written = Instant::now();
        let mut closing = None;
        while closing.is_none() {
            let Ok(first) = staged.recv() else { break };
            let mut stages = vec![first];
            stages.extend(staged.try_iter());
            let writes: usize =
                stages.iter().map(|s| if let Stage::Written { events, .. } = s { events.len() } else { 0 }).sum();
            let synced = if writes > 0 {
                self.shared.db.persist(PersistMode::SyncData).map_err(|e| {
                    tracing::error!(error = %e, "embedded store sync failed; the store refuses writes from now on");
                    StoreError::Internal(format!("sync failed: {e}"))
                })
            } else {
                Ok(())
            };
            if writes > 0 && synced.is_ok() {
                self.shared.metrics.observe_batch(writes);
                total_writes += writes as u64;
                total_syncs += 1;
            }
            for stage in stages {
                match stage {
                    Stage::Written { events, replies } => self.publish(events, replies, &synced),
                    Stage::Compact(revision, reply) => {
                        let _ = reply.send(self.compact(revision).map(|()| Outcome::Done));
                    }
                    Stage::Close(reply) => closing = Some(reply),
                }
            }
            if writes > 0 && durable_written.elapsed() >= DURABLE_EVERY {
                self.record_durable();
                durable_written = Instant::now();
            }
        }
        self.shared.events.lock().take();
        tracing::info!(writes = total_writes, syncs = total_syncs, "embedded store closing");
        let flushed = self.shared.db.persist(PersistMode::SyncAll).map_err(fjall_error);
        if flushed.is_ok() {
            self.record_durable();
        }
        if let Some(reply) = closing {
            let _ = reply.send(flushed.map(|()| Outcome::Done));
        }
    }

    fn record_durable(&self) {
        let revision = self.shared.revision.load(Ordering::Acquire);
        if let Err(e) = write_durable_revision(&self.shared.dir, revision) {
            tracing::warn!(error = %e, "cannot record the durable revision");
        }
    }

    fn publish(
        &self,
        events: Vec<Event>,
        replies: Vec<(oneshot::Sender<Result<Outcome>>, Result<Event>)>,
        synced: &Result<()>,
    ) {
        if let Err(e) = synced {
            for (reply, outcome) in replies {
                let _ = reply.send(outcome.and(Err(StoreError::Internal(e.to_string()))));
            }
            return;
        }
        if let Some(last) = events.last().map(Event::revision) {
            let mut index = self.shared.index.write();
            for event in &events {
                let entry = match event {
                    Event::Put { kv, .. } => {
                        Entry { revision: kv.mod_revision, create_revision: kv.create_revision, version: kv.version }
                    }
                    Event::Delete { revision, .. } => Entry::deletion(*revision),
                };
                index.push(event.key().clone(), entry);
            }
            // Broadcast, then publish the revision, under the lock watchers subscribe
            // under: a new watcher either gets this batch live or sees its revision and
            // reads it from the log; one that keeps up finds it waiting (Watcher::step).
            let events = Arc::new(events);
            {
                let sender = self.shared.events.lock();
                if let Some(sender) = sender.as_ref() {
                    let _ = sender.send(events.clone());
                }
                self.shared.revision.store(last, Ordering::Release);
            }
            drop(index);
            let mut in_flight = self.in_flight.lock();
            for event in events.iter() {
                if in_flight.get(event.key()).is_some_and(|(revision, _)| *revision == event.revision()) {
                    in_flight.remove(event.key());
                }
            }
            drop(in_flight);
        }
        for (reply, outcome) in replies {
            let _ = reply.send(outcome.map(|event| match event {
                Event::Put { kv, .. } => Outcome::Put(kv),
                Event::Delete { revision, prev, .. } => Outcome::Deleted(prev, revision),
            }));
        }
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        let shared = &self.shared;
        let current = shared.revision.load(Ordering::Acquire);
        if revision > current {
            return Err(StoreError::FutureRevision { requested: revision, current });
        }
        if revision <= shared.compacted.load(Ordering::Acquire) {
            return Ok(());
        }
        // Record the compaction durably first: after a crash, recovery finishes it.
        let mut batch = shared.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(&shared.meta, META_COMPACTED.to_vec(), revision.to_be_bytes().to_vec());
        batch.insert(&shared.meta, META_REVISION_FLOOR.to_vec(), current.to_be_bytes().to_vec());
        batch.commit().map_err(fjall_error)?;
        let dropped = {
            let mut index = shared.index.write();
            shared.compacted.store(revision, Ordering::Release);
            index.compact(revision)
        };
        shared.delete_records(&dropped)?;
        tracing::debug!(revision, dropped = dropped.len(), "embedded store compacted");
        Ok(())
    }
}
