//! The watch cache: one resource's lists and watches, served from memory (kube-apiserver's
//! "cacher").
//!
//! Start with [`WatchCache::start`]. For one key prefix (one resource) the cache owns one
//! upstream [`Store::watch`], driven by a background task: it lists the prefix in pages at
//! one revision, keeps the current state (key → latest [`KeyValue`]), follows the watch from
//! the listed revision, keeps a bounded window of recent events, and fans every event out to
//! any number of watchers. It only reads the store; it must never write, compact, or trust a
//! progress notification to answer a list that needs a revision it has not seen events up
//! to (it reads the store instead, see [`ListRequest::min_revision`]).
//!
//! Invariants:
//! - the state, the window and the revision change only on the background task, under one
//!   lock; a watcher is registered under that same lock, so its replay from the window and
//!   its live events meet with no gap and no duplicate;
//! - each event is one [`Arc<CachedEvent>`] shared by every watcher, and each encoding of
//!   it a reader asks for is computed at most once ([`CachedEvent::encoded`]); the cache
//!   itself knows no encoding;
//! - the dispatcher never waits for a watcher: each has a bounded buffer, and one that is
//!   full when an event arrives is ended with [`CacheError::Expired`] (the API's 410 Gone).
//!   Memory is bounded by the window, the buffers and the number of watchers;
//! - when the upstream watch breaks, the cache resumes it from the revision after its own;
//!   only when that history is gone (compacted) does it re-list, and then every watcher
//!   that could have missed events is expired, as in Kubernetes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::metrics::WatcherGuard;
use super::{Event, KeyValue, RangeRequest, Revision, StorageMetrics, Store, StoreError, WatchItem, WatchStream};

/// The metrics layer this module records under.
const LAYER: &str = "cache";
/// The shortest bookmark period; a zero period would make the timer spin.
const MIN_BOOKMARK_INTERVAL: Duration = Duration::from_millis(10);

/// How a [`WatchCache`] sizes its memory and how long it waits.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Recent events kept for watches that start from a past revision.
    pub window: usize,
    /// Items a watcher may leave unread before it is expired.
    pub watcher_buffer: usize,
    /// How long a list waits for the cache to reach its minimum revision (and any call for
    /// the initial list) before it reads the store instead.
    pub list_wait: Duration,
    /// Watchers that ask for bookmarks get a [`CacheItem::Progress`] this often.
    pub bookmark_interval: Duration,
    /// Keys per page when listing the store; 0 reads everything in one response.
    pub page_size: usize,
    /// First delay before retrying the store after a failure; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            window: 4096,
            watcher_buffer: 1024,
            list_wait: Duration::from_secs(3),
            bookmark_interval: Duration::from_secs(60),
            page_size: 1000,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// What an event did, in the API's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change to one key, shared by every watcher that receives it.
pub struct CachedEvent {
    revision: Revision,
    event_type: EventType,
    key: Bytes,
    object: Bytes,
    prev_object: Option<Bytes>,
    /// The encodings readers asked for, by name (a handful at most), each computed once.
    encodings: parking_lot::Mutex<Vec<(Box<str>, Arc<OnceLock<Bytes>>)>>,
}

impl CachedEvent {
    /// The revision of the write (of the delete, for [`EventType::Deleted`]).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    pub fn key(&self) -> &Bytes {
        &self.key
    }

    /// The object after the change; for a delete, its last value.
    pub fn object(&self) -> &Bytes {
        &self.object
    }

    /// The object before the change: `None` when it was created.
    pub fn prev_object(&self) -> Option<&Bytes> {
        self.prev_object.as_ref()
    }

    /// This event encoded as `shape`, computed by `encode` the first time anyone asks for
    /// that shape and shared afterwards (however many watchers ask at once, `encode` runs
    /// once). The cache does not know what a shape is: its readers name them, and every
    /// caller naming one shape must pass the same encoder.
    pub fn encoded(&self, shape: &str, encode: impl FnOnce(&CachedEvent) -> Bytes) -> Bytes {
        let cell = {
            let mut encodings = self.encodings.lock();
            match encodings.iter().find(|(name, _)| **name == *shape) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceLock::new());
                    encodings.push((shape.into(), cell.clone()));
                    cell
                }
            }
        };
        // Outside the lock: other shapes of this event are not held up by this one.
        cell.get_or_init(|| encode(self)).clone()
    }

    pub(crate) fn new(
        revision: Revision,
        event_type: EventType,
        key: Bytes,
        object: Bytes,
        prev_object: Option<Bytes>,
    ) -> Self {
        Self { revision, event_type, key, object, prev_object, encodings: Default::default() }
    }
}

impl fmt::Debug for CachedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedEvent")
            .field("revision", &self.revision)
            .field("event_type", &self.event_type)
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("object_len", &self.object.len())
            .field("prev_object_len", &self.prev_object.as_ref().map(Bytes::len))
            .field("encodings", &self.encodings.lock().iter().map(|(name, _)| name.clone()).collect::<Vec<_>>())
            .finish()
    }
}

/// One item of a cache watch.
#[derive(Clone, Debug)]
pub enum CacheItem {
    Event(Arc<CachedEvent>),
    /// A bookmark: every event up to this revision that the watcher wants has been sent.
    Progress(Revision),
}

/// Decides which events a watcher gets. It sees the object before and after, so a label
/// or field selector can tell an object entering or leaving the selection. It runs on the
/// dispatcher under the cache's lock: it must be cheap and must not panic.
pub type Filter = Arc<dyn Fn(&CachedEvent) -> bool + Send + Sync>;

/// What to watch, and from where.
#[derive(Clone, Default)]
pub struct WatchRequest {
    /// Deliver events with a revision strictly greater than this (Kubernetes'
    /// resourceVersion for a watch); 0 means from now.
    pub since: Revision,
    /// Only keys under this prefix, which must lie under the cache's.
    pub key_prefix: Option<Bytes>,
    pub filter: Option<Filter>,
    /// Send [`CacheItem::Progress`] every [`CacheConfig::bookmark_interval`].
    pub bookmarks: bool,
}

impl fmt::Debug for WatchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchRequest")
            .field("since", &self.since)
            .field("key_prefix", &self.key_prefix.as_ref().map(|p| String::from_utf8_lossy(p).into_owned()))
            .field("filter", &self.filter.is_some())
            .field("bookmarks", &self.bookmarks)
            .finish()
    }
}

/// What to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// Only keys under this prefix, which must lie under the cache's.
    pub key_prefix: Option<Bytes>,
    /// The list must reflect at least this revision (Kubernetes' resourceVersion with
    /// `NotOlderThan`). The cache waits up to [`CacheConfig::list_wait`] to reach it, then
    /// reads the store at its latest revision. A revision the cache learns of only from a
    /// write elsewhere may take the whole wait (etcd 3.4 reports progress on a quiet prefix
    /// every 10 minutes), so a consistent read is better sent to the store directly. `None`
    /// serves whatever the cache holds, without waiting.
    pub min_revision: Option<Revision>,
}

/// Where a list was served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListSource {
    Cache,
    Store,
}

/// The objects under a prefix at one revision, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheList {
    pub items: Vec<KeyValue>,
    pub revision: Revision,
    pub source: ListSource,
}

/// Why a watcher was expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiredBecause {
    /// Its buffer was full when an event arrived.
    FellBehind,
    /// The cache lost the store's history and re-listed; events in between are unknown.
    Relisted,
}

impl fmt::Display for ExpiredBecause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExpiredBecause::FellBehind => "the watcher fell too far behind",
            ExpiredBecause::Relisted => "the cache re-listed after losing the store's history",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The watch would start before the oldest event the cache holds (410 "too old
    /// resource version").
    #[error("revision {requested} is too old; the oldest a watch can start from is {oldest}")]
    TooOld { requested: Revision, oldest: Revision },
    /// A watch ended: the watcher must list again (410 Gone). Always a watch's last item;
    /// `at` is the cache's revision when it ended the watch.
    #[error("watch expired at revision {at}: {because}")]
    Expired { at: Revision, because: ExpiredBecause },
    /// The requested revision is newer than the store's.
    #[error("revision {requested} is in the future; the store is at {current}")]
    FutureRevision { requested: Revision, current: Revision },
    /// The initial list has not finished within [`CacheConfig::list_wait`].
    #[error("the watch cache is not ready yet")]
    NotReady,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The cache was stopped.
    #[error("the watch cache is stopped")]
    Closed,
    /// Reading the store instead of the cache failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A handle to one resource's watch cache. Cheap to clone; the cache stops when the last
/// handle is dropped or [`WatchCache::stop`] is called.
#[derive(Clone)]
pub struct WatchCache {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl WatchCache {
    /// Start caching the keys under `prefix`. Must be called inside a tokio runtime: the
    /// upstream list and watch run on a spawned task. See [`WatchCache::wait_ready`].
    pub fn start(store: Arc<dyn Store>, prefix: Bytes, mut config: CacheConfig, metrics: StorageMetrics) -> WatchCache {
        config.watcher_buffer = config.watcher_buffer.max(1);
        config.bookmark_interval = config.bookmark_interval.max(MIN_BOOKMARK_INTERVAL);
        config.retry_max = config.retry_max.max(config.retry_min);
        let (status, _) = watch::channel(Status::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                window: Window::new(config.window, 0),
                revision: 0,
                ready: false,
                stopped: false,
                watchers: HashMap::new(),
                next_id: 0,
            }),
            prefix,
            store,
            config,
            metrics,
            status,
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(run(shared.clone(), stopped));
        WatchCache { handle: Arc::new(Handle { shared, stop }) }
    }

    pub fn prefix(&self) -> &Bytes {
        &self.handle.shared.prefix
    }

    /// The revision the cache is known to be current at (0 before the initial list).
    pub fn revision(&self) -> Revision {
        self.handle.shared.state.lock().revision
    }

    /// The oldest revision a watch can start from: every event after it is in memory.
    pub fn oldest_revision(&self) -> Revision {
        self.handle.shared.state.lock().window.start
    }

    /// Forget the history at or below `revision`, as a store compaction does: a watch
    /// from before it is told to list again (410 Gone) instead of being replayed from memory.
    pub fn forget_history_through(&self, revision: Revision) {
        let mut state = self.handle.shared.state.lock();
        let through = revision.min(state.revision);
        state.window.forget_through(through);
    }

    /// Whether the initial list is done.
    pub fn ready(&self) -> bool {
        self.handle.shared.state.lock().ready
    }

    /// Wait (unbounded; wrap it in a timeout) for the initial list. Returns the revision it
    /// was read at or later.
    pub async fn wait_ready(&self) -> Result<Revision, CacheError> {
        let status = self.handle.shared.wait_status(|s| s.ready).await?;
        Ok(status.revision)
    }

    /// List the objects under the cache's prefix (or a narrower one). See
    /// [`ListRequest::min_revision`] for when this reads the store instead.
    pub async fn list(&self, request: ListRequest) -> Result<CacheList, CacheError> {
        let shared = &self.handle.shared;
        let prefix = shared.narrow(request.key_prefix)?.unwrap_or_else(|| shared.prefix.clone());
        let min = request.min_revision.unwrap_or(0);
        let reached =
            tokio::time::timeout(shared.config.list_wait, shared.wait_status(|s| s.ready && s.revision >= min)).await;
        if let Ok(status) = reached {
            status?;
            if let Some(list) = shared.snapshot(&prefix, min)? {
                return Ok(list);
            }
        }
        tracing::debug!(
            prefix = %String::from_utf8_lossy(&prefix),
            min_revision = min,
            cache_revision = self.revision(),
            "watch cache is behind; listing from the store"
        );
        let (items, revision) = list_store(&*shared.store, &prefix, shared.config.page_size).await?;
        if revision < min {
            return Err(CacheError::FutureRevision { requested: min, current: revision });
        }
        Ok(CacheList { items, revision, source: ListSource::Store })
    }

    /// The object at `key` once the cache has reached `min_revision` (waiting at most
    /// `wait`): `Ok(Some(..))` if it holds the key then, `Ok(None)` if it does not, `Err`
    /// (`NotReady`) if it did not get there in time — the caller then asks the store.
    pub async fn get(
        &self,
        key: &[u8],
        min_revision: Revision,
        wait: Duration,
    ) -> Result<Option<KeyValue>, CacheError> {
        let shared = &self.handle.shared;
        match tokio::time::timeout(wait, shared.wait_status(|s| s.ready && s.revision >= min_revision)).await {
            Ok(status) => {
                status?;
                Ok(shared.state.lock().objects.get(key).cloned())
            }
            Err(_) => Err(CacheError::NotReady),
        }
    }

    /// Watch the cache's prefix (or a narrower one): first the events in the window after
    /// [`WatchRequest::since`], then live ones. A start before
    /// [`WatchCache::oldest_revision`] fails with [`CacheError::TooOld`].
    pub async fn watch(&self, request: WatchRequest) -> Result<CacheWatch, CacheError> {
        let shared = &self.handle.shared;
        let key_prefix = shared.narrow(request.key_prefix.clone())?;
        let ready = tokio::time::timeout(shared.config.list_wait, shared.wait_status(|s| s.ready)).await;
        let status = ready.map_err(|_| CacheError::NotReady)??;
        if request.since > status.revision {
            // Ahead of the cache (a quiet prefix, or a revision from a store read): the
            // watch is served once the cache gets there, if the revision exists at all.
            let current = shared.store.current_revision().await?;
            if request.since > current {
                return Err(CacheError::FutureRevision { requested: request.since, current });
            }
        }
        shared.register(request, key_prefix)
    }

    /// Stop the cache: the upstream watch ends and every watcher ends with
    /// [`CacheError::Closed`].
    pub fn stop(&self) {
        self.handle.stop.send_replace(true);
    }
}

/// A watch on a [`WatchCache`]: a stream of [`CacheItem`]s. After an error it ends.
pub struct CacheWatch {
    id: u64,
    since: Revision,
    replay: VecDeque<Arc<CachedEvent>>,
    live: mpsc::Receiver<CacheItem>,
    end: Arc<OnceLock<End>>,
    done: bool,
    shared: Arc<Shared>,
    _gauge: WatcherGuard,
}

impl CacheWatch {
    /// The revision this watch delivers events after (the cache's revision for a watch
    /// "from now").
    pub fn since(&self) -> Revision {
        self.since
    }
}

impl Stream for CacheWatch {
    type Item = Result<CacheItem, CacheError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(event) = this.replay.pop_front() {
            return Poll::Ready(Some(Ok(CacheItem::Event(event))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match this.live.poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(Some(Err(match this.end.get() {
                    Some(End::Expired { at, because }) => CacheError::Expired { at: *at, because: *because },
                    Some(End::Closed) | None => CacheError::Closed,
                })))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for CacheWatch {
    fn drop(&mut self) {
        self.shared.state.lock().watchers.remove(&self.id);
    }
}

impl fmt::Debug for CacheWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheWatch").field("id", &self.id).field("since", &self.since).finish_non_exhaustive()
    }
}

/// How a watcher's stream ended, set before its sender is dropped.
#[derive(Clone, Copy, Debug)]
enum End {
    Expired { at: Revision, because: ExpiredBecause },
    Closed,
}

/// What waiters (lists, watches, `wait_ready`) need to see change.
#[derive(Clone, Copy, Debug, Default)]
struct Status {
    ready: bool,
    revision: Revision,
    stopped: bool,
}

struct Shared {
    prefix: Bytes,
    store: Arc<dyn Store>,
    config: CacheConfig,
    metrics: StorageMetrics,
    state: Mutex<State>,
    status: watch::Sender<Status>,
}

struct State {
    objects: BTreeMap<Bytes, KeyValue>,
    window: Window,
    /// Every event up to this revision has been applied.
    revision: Revision,
    ready: bool,
    stopped: bool,
    watchers: HashMap<u64, Slot>,
    next_id: u64,
}

/// The dispatcher's side of one watcher.
struct Slot {
    live: mpsc::Sender<CacheItem>,
    since: Revision,
    key_prefix: Option<Bytes>,
    filter: Option<Filter>,
    bookmarks: bool,
    end: Arc<OnceLock<End>>,
}

impl Slot {
    fn wants(&self, event: &CachedEvent) -> bool {
        event.revision > self.since
            && self.key_prefix.as_ref().is_none_or(|p| event.key.starts_with(p))
            && self.filter.as_ref().is_none_or(|f| f(event))
    }
}

/// The recent events, oldest first, bounded by `capacity`.
struct Window {
    events: VecDeque<Arc<CachedEvent>>,
    capacity: usize,
    /// Every event with a revision above this one is in `events`.
    start: Revision,
}

impl Window {
    fn new(capacity: usize, start: Revision) -> Self {
        Self { events: VecDeque::new(), capacity, start }
    }

    fn reset(&mut self, start: Revision) {
        self.events.clear();
        self.start = start;
    }

    fn push(&mut self, event: Arc<CachedEvent>) {
        if self.capacity == 0 {
            self.start = event.revision;
            return;
        }
        if self.events.len() == self.capacity {
            if let Some(oldest) = self.events.pop_front() {
                self.start = oldest.revision;
            }
        }
        self.events.push_back(event);
    }

    /// Drop the events at or below `revision` (what a compaction of the store removed).
    fn forget_through(&mut self, revision: Revision) {
        while self.events.front().is_some_and(|e| e.revision <= revision) {
            self.events.pop_front();
        }
        self.start = self.start.max(revision);
    }

    /// The events after `revision`, or the oldest revision a watch may start from.
    fn after(&self, revision: Revision) -> Result<impl Iterator<Item = &Arc<CachedEvent>>, Revision> {
        if revision < self.start {
            return Err(self.start);
        }
        let first = self.events.partition_point(|e| e.revision <= revision);
        Ok(self.events.range(first..))
    }
}

impl State {
    /// Apply one store event to the current state and turn it into the shared event.
    fn apply(&mut self, event: Event) -> CachedEvent {
        match event {
            Event::Put { kv, prev } => {
                let event_type = if prev.is_some() { EventType::Modified } else { EventType::Added };
                let cached = CachedEvent::new(
                    kv.mod_revision,
                    event_type,
                    kv.key.clone(),
                    kv.value.clone(),
                    prev.map(|p| p.value),
                );
                self.objects.insert(kv.key.clone(), kv);
                cached
            }
            Event::Delete { key, revision, prev } => {
                self.objects.remove(&key);
                CachedEvent::new(revision, EventType::Deleted, key, prev.value.clone(), Some(prev.value))
            }
        }
    }

    /// Hand `event` to every watcher that wants it; expire those whose buffer is full.
    fn fan_out(&mut self, event: &Arc<CachedEvent>) -> usize {
        let mut delivered = 0;
        let mut gone = Vec::new();
        for (id, slot) in &self.watchers {
            if !slot.wants(event) {
                continue;
            }
            match slot.live.try_send(CacheItem::Event(event.clone())) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    gone.push((*id, Some(End::Expired { at: self.revision, because: ExpiredBecause::FellBehind })))
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push((*id, None)),
            }
        }
        for (id, end) in gone {
            if end.is_some() {
                tracing::debug!(
                    watcher = id,
                    revision = event.revision,
                    "watch cache expired a watcher that fell behind"
                );
            }
            self.end(id, end);
        }
        delivered
    }

    /// Remove a watcher; its stream ends with `end` once it has read what is buffered.
    fn end(&mut self, id: u64, end: Option<End>) {
        if let Some(slot) = self.watchers.remove(&id) {
            if let Some(end) = end {
                let _ = slot.end.set(end);
            }
        }
    }
}

impl Shared {
    /// Check that a narrower prefix lies under the cache's.
    fn narrow(&self, key_prefix: Option<Bytes>) -> Result<Option<Bytes>, CacheError> {
        match key_prefix {
            Some(p) if !p.starts_with(&self.prefix) => Err(CacheError::InvalidRequest(format!(
                "prefix {:?} is not under the cache's prefix {:?}",
                String::from_utf8_lossy(&p),
                String::from_utf8_lossy(&self.prefix)
            ))),
            other => Ok(other),
        }
    }

    /// Wait until `ready` holds for the status; fails when the cache stops.
    async fn wait_status(&self, ready: impl Fn(&Status) -> bool) -> Result<Status, CacheError> {
        let mut status = self.status.subscribe();
        let seen = status.wait_for(|s| s.stopped || ready(s)).await.map(|s| *s).map_err(|_| CacheError::Closed)?;
        if seen.stopped {
            return Err(CacheError::Closed);
        }
        Ok(seen)
    }

    fn publish(&self, state: &State) {
        let (ready, revision, stopped) = (state.ready, state.revision, state.stopped);
        self.status.send_replace(Status { ready, revision, stopped });
    }

    /// The objects under `prefix` from memory, if the cache is ready and at `min` or later.
    fn snapshot(&self, prefix: &Bytes, min: Revision) -> Result<Option<CacheList>, CacheError> {
        let state = self.state.lock();
        if state.stopped {
            return Err(CacheError::Closed);
        }
        if !state.ready || state.revision < min {
            return Ok(None);
        }
        let items = state
            .objects
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok(Some(CacheList { items, revision: state.revision, source: ListSource::Cache }))
    }

    fn register(self: &Arc<Self>, request: WatchRequest, key_prefix: Option<Bytes>) -> Result<CacheWatch, CacheError> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if state.stopped {
            return Err(CacheError::Closed);
        }
        let since = if request.since <= 0 { state.revision } else { request.since };
        let (live, receiver) = mpsc::channel(self.config.watcher_buffer);
        let end = Arc::new(OnceLock::new());
        let slot =
            Slot { live, since, key_prefix, filter: request.filter, bookmarks: request.bookmarks, end: end.clone() };
        let replay: VecDeque<_> = state
            .window
            .after(since)
            .map_err(|oldest| CacheError::TooOld { requested: since, oldest })?
            .filter(|e| slot.wants(e))
            .cloned()
            .collect();
        let id = state.next_id;
        state.next_id += 1;
        state.watchers.insert(id, slot);
        drop(guard);
        if !replay.is_empty() {
            self.metrics.delivered(LAYER, replay.len());
        }
        Ok(CacheWatch {
            id,
            since,
            replay,
            live: receiver,
            end,
            done: false,
            shared: self.clone(),
            _gauge: self.metrics.watcher(LAYER),
        })
    }

    /// Open the upstream watch: resume after the cache's revision when it has one, else
    /// (or when that history is compacted) list and watch from the listed revision.
    async fn connect(&self) -> Result<WatchStream, StoreError> {
        let (ready, revision) = {
            let state = self.state.lock();
            (state.ready, state.revision)
        };
        if ready {
            match self.store.watch(self.prefix.clone(), revision + 1).await {
                Ok(stream) => {
                    tracing::info!(prefix = %String::from_utf8_lossy(&self.prefix), revision, "watch cache resumed its upstream watch");
                    return Ok(stream);
                }
                Err(StoreError::Compacted { compacted, .. }) => tracing::warn!(
                    prefix = %String::from_utf8_lossy(&self.prefix),
                    revision,
                    compacted,
                    "store history after the watch cache's revision is compacted; re-listing"
                ),
                Err(e) => return Err(e),
            }
        }
        let (kvs, listed) = list_store(&*self.store, &self.prefix, self.config.page_size).await?;
        let stream = self.store.watch(self.prefix.clone(), listed + 1).await?;
        self.install(kvs, listed);
        Ok(stream)
    }

    /// Replace the state with a fresh list read at `listed`.
    fn install(&self, kvs: Vec<KeyValue>, listed: Revision) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let (initial, previous) = (!state.ready, state.revision);
        let objects = kvs.len();
        state.objects = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        if initial || listed != previous {
            state.window.reset(listed);
        }
        if listed < previous {
            tracing::warn!(listed, previous, "the store's revision went backwards; expiring every watcher");
        }
        // A watcher is current up to the cache's revision (or its own start when later);
        // one behind the listed revision may have missed events.
        let stale: Vec<u64> = state
            .watchers
            .iter()
            .filter(|(_, slot)| listed < previous || slot.since.max(previous) < listed)
            .map(|(id, _)| *id)
            .collect();
        let expired = stale.len();
        for id in stale {
            state.end(id, Some(End::Expired { at: previous, because: ExpiredBecause::Relisted }));
        }
        state.revision = listed;
        state.ready = true;
        self.publish(state);
        drop(guard);
        let prefix = String::from_utf8_lossy(&self.prefix);
        if initial {
            // One per resource at start-up: detail, not news.
            tracing::debug!(%prefix, revision = listed, objects, "watch cache listed the store");
        } else {
            tracing::info!(%prefix, revision = listed, objects, expired, "watch cache listed the store again");
        }
    }

    fn apply(&self, events: Vec<Event>) {
        let mut delivered = 0;
        {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let floor = state.revision;
            for event in events {
                // A resumed watch may repeat what was applied already.
                if event.revision() <= floor {
                    continue;
                }
                let event = Arc::new(state.apply(event));
                state.revision = state.revision.max(event.revision);
                state.window.push(event.clone());
                delivered += state.fan_out(&event);
            }
            if state.revision != floor {
                self.publish(state);
            }
        }
        if delivered > 0 {
            self.metrics.delivered(LAYER, delivered);
        }
    }

    /// The store says every event on the prefix up to `revision` was delivered.
    fn progress(&self, revision: Revision) {
        let mut state = self.state.lock();
        if revision > state.revision {
            state.revision = revision;
            self.publish(&state);
        }
    }

    /// A bookmark to every watcher that asked; skipped for a watcher whose buffer is full.
    fn send_bookmarks(&self) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if !state.ready {
            return;
        }
        let revision = state.revision;
        let mut gone = Vec::new();
        for (id, slot) in &state.watchers {
            if !slot.bookmarks || revision < slot.since {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Closed(_)) = slot.live.try_send(CacheItem::Progress(revision)) {
                gone.push(*id);
            }
        }
        for id in gone {
            state.end(id, None);
        }
    }

    fn shut_down(&self) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.stopped = true;
        // Publish first: a caller that sees its watch closed must find the cache stopped.
        self.publish(state);
        for (_, slot) in state.watchers.drain() {
            let _ = slot.end.set(End::Closed);
        }
        drop(guard);
        tracing::debug!(prefix = %String::from_utf8_lossy(&self.prefix), "watch cache stopped");
    }
}

/// Every key under `prefix`, read in pages at the revision of the first.
async fn list_store(
    store: &dyn Store,
    prefix: &Bytes,
    page_size: usize,
) -> Result<(Vec<KeyValue>, Revision), StoreError> {
    let mut request = RangeRequest { prefix: prefix.clone(), limit: page_size, ..Default::default() };
    let mut kvs = Vec::new();
    loop {
        let page = store.range(request.clone()).await?;
        let next = page.next_page(&request);
        let revision = page.revision;
        kvs.extend(page.kvs);
        match next {
            Some(next) => request = next,
            None => return Ok((kvs, revision)),
        }
    }
}

/// Resolves when the cache is told to stop or every handle is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The background task: owns the upstream watch until the cache stops.
async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let prefix = String::from_utf8_lossy(&shared.prefix).into_owned();
    let mut backoff = Backoff::new(shared.config.retry_min, shared.config.retry_max);
    let mut ticker = tokio::time::interval(shared.config.bookmark_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'connect: loop {
        let connected = tokio::select! {
            biased;
            () = stopped(&mut stop) => break 'connect,
            connected = shared.connect() => connected,
        };
        let mut upstream = match connected {
            Ok(upstream) => upstream,
            Err(error) => {
                let delay = backoff.next();
                tracing::warn!(%prefix, %error, retry_in = ?delay, "watch cache cannot read the store");
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => break 'connect,
                    () = tokio::time::sleep(delay) => continue 'connect,
                }
            }
        };
        let mut received = false;
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break 'connect,
                item = upstream.next() => match item {
                    Some(Ok(WatchItem::Events(events))) => {
                        received = true;
                        shared.apply(events);
                    }
                    Some(Ok(WatchItem::Progress(revision))) => {
                        received = true;
                        shared.progress(revision);
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%prefix, %error, "watch cache lost its upstream watch");
                        break;
                    }
                    None => {
                        tracing::warn!(%prefix, "watch cache's upstream watch ended");
                        break;
                    }
                },
                _ = ticker.tick() => shared.send_bookmarks(),
            }
        }
        // A watch that worked for a while is resumed at once; one that breaks straight
        // away waits, so a failing store is not hammered.
        if received {
            backoff.reset();
        } else {
            let delay = backoff.next();
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break 'connect,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
    shared.shut_down();
}

/// Exponential backoff with jitter between `min` and `max`.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next delay: the current step with up to half of it taken off at random.
    fn next(&mut self) -> Duration {
        let step = self.next;
        self.next = step.saturating_mul(2).min(self.max);
        step.mul_f64(1.0 - rand::random::<f64>() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn event(revision: Revision) -> Arc<CachedEvent> {
        Arc::new(CachedEvent::new(revision, EventType::Added, format!("/k/{revision}").into(), "v".into(), None))
    }

    fn revisions<'a>(events: impl Iterator<Item = &'a Arc<CachedEvent>>) -> Vec<Revision> {
        events.map(|e| e.revision).collect()
    }

    #[test]
    fn window_replays_events_after_a_revision() {
        let mut window = Window::new(4, 10);
        for revision in [12, 13, 15] {
            window.push(event(revision));
        }
        assert_eq!(revisions(window.after(10).expect("in window")), vec![12, 13, 15]);
        assert_eq!(revisions(window.after(13).expect("in window")), vec![15]);
        assert_eq!(revisions(window.after(14).expect("in window")), vec![15]);
        assert!(window.after(15).expect("current").next().is_none());
        assert!(window.after(99).expect("ahead").next().is_none());
        assert_eq!(window.after(9).err(), Some(10), "before the listed revision");
    }

    #[test]
    fn window_evicts_oldest_and_moves_its_start() {
        let mut window = Window::new(3, 0);
        for revision in 1..=5 {
            window.push(event(revision));
        }
        assert_eq!(window.start, 2, "events 1 and 2 were evicted; everything after 2 is kept");
        assert_eq!(revisions(window.after(2).expect("in window")), vec![3, 4, 5]);
        assert_eq!(window.after(1).err(), Some(2));
        window.reset(7);
        assert_eq!(window.after(6).err(), Some(7));
        assert!(window.after(7).expect("empty after reset").next().is_none());
    }

    #[test]
    fn window_of_zero_keeps_nothing() {
        let mut window = Window::new(0, 0);
        window.push(event(3));
        assert_eq!(window.start, 3);
        assert!(window.after(3).expect("current").next().is_none());
        assert_eq!(window.after(2).err(), Some(3));
    }

    #[test]
    fn encoding_runs_once() {
        let runs = AtomicUsize::new(0);
        let e = event(1);
        for _ in 0..3 {
            let encoded = e.encoded("rev", |e| {
                runs.fetch_add(1, Ordering::SeqCst);
                Bytes::from(format!("rev {}", e.revision()))
            });
            assert_eq!(encoded, Bytes::from("rev 1"));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Another shape is another encoding, also computed once.
        for _ in 0..2 {
            let encoded = e.encoded("twice", |e| {
                runs.fetch_add(1, Ordering::SeqCst);
                Bytes::from(format!("{0} {0}", e.revision()))
            });
            assert_eq!(encoded, Bytes::from("1 1"));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(e.encoded("rev", |_| Bytes::from("not run")), Bytes::from("rev 1"));
    }

    /// A ready cache state with nothing in it and a window of 8 events.
    fn empty_state() -> State {
        State {
            objects: BTreeMap::new(),
            window: Window::new(8, 0),
            revision: 0,
            ready: true,
            stopped: false,
            watchers: HashMap::new(),
            next_id: 0,
        }
    }

    #[test]
    fn store_events_become_typed_cache_events() {
        let mut state = empty_state();
        let kv = |value: &'static str, revision, version| KeyValue {
            key: "/k/a".into(),
            value: value.into(),
            create_revision: 1,
            mod_revision: revision,
            version,
        };
        let added = state.apply(Event::Put { kv: kv("1", 1, 1), prev: None });
        assert_eq!((added.event_type(), added.prev_object()), (EventType::Added, None));
        let modified = state.apply(Event::Put { kv: kv("2", 2, 2), prev: Some(kv("1", 1, 1)) });
        assert_eq!(modified.event_type(), EventType::Modified);
        assert_eq!((modified.object(), modified.prev_object()), (&Bytes::from("2"), Some(&Bytes::from("1"))));
        assert_eq!(state.objects.get(&Bytes::from("/k/a")), Some(&kv("2", 2, 2)));
        let deleted = state.apply(Event::Delete { key: "/k/a".into(), revision: 3, prev: kv("2", 2, 2) });
        assert_eq!((deleted.event_type(), deleted.revision()), (EventType::Deleted, 3));
        assert_eq!(deleted.object(), &Bytes::from("2"), "a delete carries the last value");
        assert!(state.objects.is_empty());
    }

    #[test]
    fn full_watchers_are_expired_and_others_keep_receiving() {
        let mut state = empty_state();
        let mut receivers = Vec::new();
        let mut ends = Vec::new();
        for (id, buffer) in [(0, 1), (1, 8)] {
            let (live, receiver) = mpsc::channel(buffer);
            let end = Arc::new(OnceLock::new());
            state.watchers.insert(
                id,
                Slot { live, since: 0, key_prefix: None, filter: None, bookmarks: false, end: end.clone() },
            );
            receivers.push(receiver);
            ends.push(end);
        }
        assert_eq!(state.fan_out(&event(1)), 2);
        assert_eq!(state.fan_out(&event(2)), 1, "the watcher with a buffer of one is full");
        assert!(matches!(ends[0].get(), Some(End::Expired { because: ExpiredBecause::FellBehind, .. })));
        assert!(!state.watchers.contains_key(&0));
        assert_eq!(state.fan_out(&event(3)), 1);
        assert!(ends[1].get().is_none());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let steps: Vec<Duration> = (0..4).map(|_| backoff.next()).collect();
        let caps = [100, 200, 350, 350].map(Duration::from_millis);
        for (step, cap) in steps.iter().zip(caps) {
            assert!(*step <= cap && *step >= cap / 2, "{step:?} within [{:?}, {cap:?}]", cap / 2);
        }
        backoff.reset();
        assert!(backoff.next() <= Duration::from_millis(100));
    }
}
