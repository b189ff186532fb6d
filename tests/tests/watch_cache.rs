//! The watch cache end to end, on both backends: the embedded store in a temp dir and a
//! real etcd. Upstream failures are provoked through [`Flaky`], a store wrapper that can
//! cut the cache's upstream watch and refuse new ones while the real store keeps running,
//! so the history the cache resumes from (or finds compacted) is the backend's own.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use wasmkube::storage::cache::{
    CacheConfig, CacheError, CacheItem, CacheWatch, CachedEvent, EventType, ExpiredBecause, ListRequest, ListSource,
    WatchCache, WatchRequest,
};
use wasmkube::storage::{
    KeyValue, RangeRequest, RangeResponse, Revision, StorageMetrics, Store, StoreError, WatchItem, WatchStream,
};
use wasmkube_tests::{wait_for, TestStore};

wasmkube_tests::both_backends!(
    list_from_memory_matches_a_store_range,
    list_at_a_min_revision_waits_for_a_write_just_made,
    list_reads_the_store_when_the_cache_cannot_reach_the_revision,
    watch_replays_from_the_window_then_goes_live,
    watch_from_before_the_window_is_too_old,
    hundred_watchers_share_each_event_and_its_encoding,
    stuck_watcher_is_expired_while_others_keep_receiving,
    filters_and_key_prefixes_narrow_a_watch,
    bookmarks_report_the_cache_revision,
    resumes_without_relisting_after_the_upstream_watch_breaks,
    relists_and_expires_watchers_when_history_is_compacted_during_an_outage,
    stopping_ends_every_watcher,
);

/// Only the embedded store sends progress on a quiet prefix soon enough to test (etcd 3.4
/// sends it every 10 minutes).
mod embedded_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn upstream_progress_advances_the_cache_revision() {
        super::upstream_progress_advances_the_cache_revision(
            wasmkube_tests::TestStore::open(wasmkube_tests::Backend::Embedded).await,
        )
        .await
    }
}

/// How long any one expected thing may take.
const DEADLINE: Duration = Duration::from_secs(20);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Small pages (so the initial list takes several), quick retries, long waits.
fn config() -> CacheConfig {
    CacheConfig {
        page_size: 7,
        list_wait: Duration::from_secs(10),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..CacheConfig::default()
    }
}

async fn start(store: Arc<dyn Store>, prefix: &str, config: CacheConfig) -> WatchCache {
    let cache = WatchCache::start(store, b(prefix), config, StorageMetrics::unregistered());
    tokio::time::timeout(DEADLINE, cache.wait_ready())
        .await
        .expect("the cache lists within the deadline")
        .expect("the cache gets ready");
    cache
}

async fn caught_up(cache: &WatchCache, revision: Revision) {
    wait_for(&format!("the cache to reach revision {revision}"), DEADLINE, || async {
        (cache.revision() >= revision).then_some(())
    })
    .await
}

async fn watch_from(cache: &WatchCache, since: Revision) -> CacheWatch {
    cache.watch(WatchRequest { since, ..Default::default() }).await.expect("watch")
}

async fn next_item(watch: &mut CacheWatch) -> Option<Result<CacheItem, CacheError>> {
    tokio::time::timeout(DEADLINE, watch.next()).await.expect("a watch item within the deadline")
}

/// The next event, skipping bookmarks.
async fn next_event(watch: &mut CacheWatch) -> Arc<CachedEvent> {
    loop {
        match next_item(watch).await {
            Some(Ok(CacheItem::Event(event))) => return event,
            Some(Ok(CacheItem::Progress(_))) => continue,
            Some(Err(e)) => panic!("watch failed: {e}"),
            None => panic!("watch ended"),
        }
    }
}

/// What a test compares events by.
type Seen = (EventType, String, Revision, Bytes);

fn seen(event: &CachedEvent) -> Seen {
    (event.event_type(), String::from_utf8_lossy(event.key()).into_owned(), event.revision(), event.object().clone())
}

async fn next_events(watch: &mut CacheWatch, n: usize) -> Vec<Seen> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(seen(&*next_event(watch).await));
    }
    events
}

async fn range_at(store: &dyn Store, prefix: &str, revision: Revision) -> Vec<KeyValue> {
    let request = RangeRequest { prefix: b(prefix), revision: Some(revision), ..Default::default() };
    store.range(request).await.expect("range").kvs
}

async fn list_from_memory_matches_a_store_range(store: TestStore) {
    // Some keys before the cache starts (the initial list, in pages), more after (events).
    for i in 0..10 {
        store.create(b(&format!("/pods/{i:02}")), b(&format!("v{i}"))).await.unwrap();
    }
    store.create(b("/pods-other/x"), b("outside")).await.unwrap();
    let cache = start(store.store.clone(), "/pods/", config()).await;
    for i in 10..20 {
        store.create(b(&format!("/pods/{i:02}")), b(&format!("v{i}"))).await.unwrap();
    }
    for i in [3, 12, 17] {
        let (kv, _) = store.get(b(&format!("/pods/{i:02}"))).await.unwrap();
        let kv = kv.expect("written above");
        store.update(kv.key, b("updated"), kv.mod_revision).await.unwrap();
    }
    store.delete(b("/pods/05"), None).await.unwrap();
    let (_, last) = store.delete(b("/pods/15"), None).await.unwrap();
    store.create(b("/other/y"), b("outside")).await.unwrap();
    caught_up(&cache, last).await;

    let list = cache.list(ListRequest::default()).await.unwrap();
    assert_eq!(list.source, ListSource::Cache);
    assert!(list.revision >= last);
    assert_eq!(list.items.len(), 18);
    assert_eq!(list.items, range_at(&*store, "/pods/", list.revision).await, "the cache matches the store");

    let narrow = cache.list(ListRequest { key_prefix: Some(b("/pods/1")), ..Default::default() }).await.unwrap();
    assert_eq!(narrow.items, range_at(&*store, "/pods/1", narrow.revision).await);
    assert_eq!(narrow.items.len(), 9);

    let outside = cache.list(ListRequest { key_prefix: Some(b("/other/")), ..Default::default() }).await;
    assert!(matches!(outside, Err(CacheError::InvalidRequest(_))), "{outside:?}");
}

async fn list_at_a_min_revision_waits_for_a_write_just_made(store: TestStore) {
    let cache = start(store.store.clone(), "/cm/", config()).await;
    for i in 0..10 {
        let kv = store.create(b(&format!("/cm/{i}")), b("v")).await.unwrap();
        let list = cache.list(ListRequest { min_revision: Some(kv.mod_revision), ..Default::default() }).await.unwrap();
        assert_eq!(list.source, ListSource::Cache, "the write's own event reaches the cache");
        assert!(list.revision >= kv.mod_revision);
        assert_eq!(list.items.last(), Some(&kv));
        assert_eq!(list.items.len(), i + 1);
    }
}

async fn list_reads_the_store_when_the_cache_cannot_reach_the_revision(store: TestStore) {
    // Progress notifications are dropped, so a write elsewhere never reaches the cache.
    let flaky = Flaky::wrap(store.store.clone());
    flaky.drop_progress.store(true, Ordering::SeqCst);
    let config = CacheConfig { list_wait: Duration::from_millis(300), ..config() };
    let cache = start(flaky.clone(), "/cm/", config).await;
    let a = store.create(b("/cm/a"), b("1")).await.unwrap();
    let elsewhere = store.create(b("/other/x"), b("2")).await.unwrap().mod_revision;

    let list = cache.list(ListRequest { min_revision: Some(elsewhere), ..Default::default() }).await.unwrap();
    assert_eq!(list.source, ListSource::Store);
    assert!(list.revision >= elsewhere);
    assert_eq!(list.items, vec![a]);

    let future = elsewhere + 1000;
    match cache.list(ListRequest { min_revision: Some(future), ..Default::default() }).await {
        Err(CacheError::FutureRevision { requested, current }) => assert_eq!((requested, current), (future, elsewhere)),
        other => panic!("a list from the future: {other:?}"),
    }
    match cache.watch(WatchRequest { since: future, ..Default::default() }).await {
        Err(CacheError::FutureRevision { requested, .. }) => assert_eq!(requested, future),
        other => panic!("a watch from the future: {other:?}"),
    }

    // A watch from the revision the store read returned starts there, cache behind or not.
    let mut from_store_read = watch_from(&cache, list.revision).await;
    let kv = store.create(b("/cm/b"), b("3")).await.unwrap();
    caught_up(&cache, kv.mod_revision).await;
    let list = cache.list(ListRequest { min_revision: Some(kv.mod_revision), ..Default::default() }).await.unwrap();
    assert_eq!(list.source, ListSource::Cache, "a write on the prefix brings the cache up to date");
    assert_eq!(list.items.len(), 2);
    assert_eq!(
        next_events(&mut from_store_read, 1).await,
        vec![(EventType::Added, "/cm/b".into(), kv.mod_revision, b("3"))]
    );
}

async fn watch_replays_from_the_window_then_goes_live(store: TestStore) {
    let cache = start(store.store.clone(), "/w/", config()).await;
    let a = store.create(b("/w/a"), b("a1")).await.unwrap();
    let bee = store.create(b("/w/b"), b("b1")).await.unwrap();
    let c = store.create(b("/w/c"), b("c1")).await.unwrap();
    store.create(b("/other"), b("not watched")).await.unwrap();
    let a2 = store.update(b("/w/a"), b("a2"), a.mod_revision).await.unwrap();
    let (_, b_deleted) = store.delete(b("/w/b"), None).await.unwrap();
    caught_up(&cache, b_deleted).await;

    let mut replay = watch_from(&cache, bee.mod_revision).await;
    assert_eq!(replay.since(), bee.mod_revision);
    let mut now = watch_from(&cache, 0).await;
    assert_eq!(now.since(), cache.revision(), "revision 0 watches from now");
    assert_eq!(
        next_events(&mut replay, 3).await,
        vec![
            (EventType::Added, "/w/c".into(), c.mod_revision, b("c1")),
            (EventType::Modified, "/w/a".into(), a2.mod_revision, b("a2")),
            (EventType::Deleted, "/w/b".into(), b_deleted, b("b1")),
        ]
    );

    let d = store.create(b("/w/d"), b("d1")).await.unwrap();
    let c2 = store.update(b("/w/c"), b("c2"), c.mod_revision).await.unwrap();
    let live = vec![
        (EventType::Added, "/w/d".into(), d.mod_revision, b("d1")),
        (EventType::Modified, "/w/c".into(), c2.mod_revision, b("c2")),
    ];
    assert_eq!(next_events(&mut replay, 2).await, live, "replay then live, no gap, no duplicate");
    assert_eq!(next_events(&mut now, 2).await, live, "from now: only what came after");
}

async fn watch_from_before_the_window_is_too_old(store: TestStore) {
    let cache = start(store.store.clone(), "/old/", CacheConfig { window: 8, ..config() }).await;
    let mut revisions = Vec::new();
    for i in 0..20 {
        revisions.push(store.create(b(&format!("/old/{i:02}")), b("v")).await.unwrap().mod_revision);
    }
    caught_up(&cache, revisions[19]).await;
    assert_eq!(cache.oldest_revision(), revisions[11], "the window holds the last 8 events");

    match cache.watch(WatchRequest { since: revisions[0], ..Default::default() }).await {
        Err(CacheError::TooOld { requested, oldest }) => assert_eq!((requested, oldest), (revisions[0], revisions[11])),
        other => panic!("a watch from before the window: {other:?}"),
    }
    let mut oldest = watch_from(&cache, revisions[11]).await;
    let replayed: Vec<Revision> = next_events(&mut oldest, 8).await.into_iter().map(|e| e.2).collect();
    assert_eq!(replayed, revisions[12..]);
}

async fn hundred_watchers_share_each_event_and_its_encoding(store: TestStore) {
    let cache = start(store.store.clone(), "/h/", config()).await;
    let encodings = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..100 {
        let mut watch = watch_from(&cache, 0).await;
        let encodings = encodings.clone();
        readers.push(tokio::spawn(async move {
            let mut events = Vec::new();
            for _ in 0..20 {
                let event = next_event(&mut watch).await;
                let wire = event.encoded("test", |e| {
                    encodings.fetch_add(1, Ordering::SeqCst);
                    Bytes::from(format!("{:?} {}", e.event_type(), e.revision()))
                });
                assert_eq!(wire, Bytes::from(format!("{:?} {}", event.event_type(), event.revision())));
                events.push(event);
            }
            events
        }));
    }
    let mut written = Vec::new();
    let mut kvs = Vec::new();
    for i in 0..10 {
        let kv = store.create(b(&format!("/h/{i}")), b("v1")).await.unwrap();
        written.push((EventType::Added, kv.mod_revision));
        kvs.push(kv);
    }
    for kv in &kvs[..5] {
        let updated = store.update(kv.key.clone(), b("v2"), kv.mod_revision).await.unwrap();
        written.push((EventType::Modified, updated.mod_revision));
    }
    for kv in &kvs[5..] {
        let (_, revision) = store.delete(kv.key.clone(), None).await.unwrap();
        written.push((EventType::Deleted, revision));
    }

    let mut all = Vec::new();
    for reader in readers {
        all.push(tokio::time::timeout(DEADLINE, reader).await.expect("every watcher gets every event").unwrap());
    }
    let first = &all[0];
    assert_eq!(first.iter().map(|e| (e.event_type(), e.revision())).collect::<Vec<_>>(), written);
    for events in &all[1..] {
        for (mine, theirs) in events.iter().zip(first) {
            assert!(Arc::ptr_eq(mine, theirs), "every watcher gets the same shared event");
        }
    }
    assert_eq!(encodings.load(Ordering::SeqCst), 20, "each event is encoded once for 100 watchers");
}

async fn stuck_watcher_is_expired_while_others_keep_receiving(store: TestStore) {
    // A reader may be starved of the CPU for a while: the buffer gives it ~100 ms at
    // etcd's write rate, and the stuck watcher still overflows it several times over.
    const WRITES: usize = 400;
    const BUFFER: usize = 128;
    let cache = start(store.store.clone(), "/s/", CacheConfig { watcher_buffer: BUFFER, ..config() }).await;
    let mut stuck = watch_from(&cache, 0).await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut watch = watch_from(&cache, 0).await;
        readers.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for _ in 0..WRITES {
                revisions.push(next_event(&mut watch).await.revision());
            }
            revisions
        }));
    }
    // Two writers at once; neither may wait on the watcher that never reads.
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let store = store.store.clone();
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                for i in 0..WRITES / 2 {
                    revisions.push(store.create(b(&format!("/s/{w}/{i:03}")), b("v")).await.unwrap().mod_revision);
                }
                revisions
            })
        })
        .collect();
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(tokio::time::timeout(DEADLINE, writer).await.expect("writers never block").unwrap());
    }
    acked.sort_unstable();
    for reader in readers {
        let revisions = tokio::time::timeout(DEADLINE, reader).await.expect("readers keep receiving").unwrap();
        assert_eq!(revisions, acked, "each reading watcher gets every write, in order");
    }

    let mut buffered = 0;
    loop {
        match next_item(&mut stuck).await {
            Some(Ok(CacheItem::Event(_))) => buffered += 1,
            Some(Ok(CacheItem::Progress(_))) => {}
            Some(Err(CacheError::Expired { because: ExpiredBecause::FellBehind, .. })) => break,
            other => panic!("the stuck watcher should end expired: {other:?}"),
        }
    }
    assert!(buffered <= BUFFER, "at most a buffer's worth is held for a stuck watcher: {buffered}");
    assert!(next_item(&mut stuck).await.is_none(), "expired is the last item");
}

async fn filters_and_key_prefixes_narrow_a_watch(store: TestStore) {
    let cache = start(store.store.clone(), "/f/", config()).await;
    let mut under_a = cache.watch(WatchRequest { key_prefix: Some(b("/f/a/")), ..Default::default() }).await.unwrap();
    // Like a selector: events where the object matches now or matched before.
    let keep = |value: &Bytes| value.starts_with(b"keep");
    let mut kept = cache
        .watch(WatchRequest {
            filter: Some(Arc::new(move |e: &CachedEvent| keep(e.object()) || e.prev_object().is_some_and(keep))),
            ..Default::default()
        })
        .await
        .unwrap();

    let a1 = store.create(b("/f/a/1"), b("keep")).await.unwrap();
    let b1 = store.create(b("/f/b/1"), b("drop")).await.unwrap();
    let a2 = store.create(b("/f/a/2"), b("drop")).await.unwrap();
    let b2 = store.create(b("/f/b/2"), b("keep")).await.unwrap();
    let b1_kept = store.update(b("/f/b/1"), b("keep now"), b1.mod_revision).await.unwrap();
    store.create(b("/f/c/1"), b("drop")).await.unwrap();
    let end = store.create(b("/f/a/end"), b("keep end")).await.unwrap();

    assert_eq!(
        next_events(&mut under_a, 3).await,
        vec![
            (EventType::Added, "/f/a/1".into(), a1.mod_revision, b("keep")),
            (EventType::Added, "/f/a/2".into(), a2.mod_revision, b("drop")),
            (EventType::Added, "/f/a/end".into(), end.mod_revision, b("keep end")),
        ]
    );
    assert_eq!(
        next_events(&mut kept, 4).await,
        vec![
            (EventType::Added, "/f/a/1".into(), a1.mod_revision, b("keep")),
            (EventType::Added, "/f/b/2".into(), b2.mod_revision, b("keep")),
            (EventType::Modified, "/f/b/1".into(), b1_kept.mod_revision, b("keep now")),
            (EventType::Added, "/f/a/end".into(), end.mod_revision, b("keep end")),
        ]
    );
    let outside = cache.watch(WatchRequest { key_prefix: Some(b("/g/")), ..Default::default() }).await;
    assert!(matches!(outside, Err(CacheError::InvalidRequest(_))), "{outside:?}");
}

async fn bookmarks_report_the_cache_revision(store: TestStore) {
    let config = CacheConfig { bookmark_interval: Duration::from_millis(50), ..config() };
    let cache = start(store.store.clone(), "/bm/", config).await;
    let mut watch = cache.watch(WatchRequest { bookmarks: true, ..Default::default() }).await.unwrap();
    let kv = store.create(b("/bm/a"), b("v")).await.unwrap();
    let mut saw_event = false;
    loop {
        match next_item(&mut watch).await {
            Some(Ok(CacheItem::Event(event))) => {
                assert_eq!(event.revision(), kv.mod_revision);
                saw_event = true;
            }
            Some(Ok(CacheItem::Progress(revision))) if saw_event => {
                assert!(revision >= kv.mod_revision, "a bookmark never goes behind a delivered event");
                break;
            }
            Some(Ok(CacheItem::Progress(revision))) => assert!(revision < kv.mod_revision),
            other => panic!("bookmark watch: {other:?}"),
        }
    }
}

async fn upstream_progress_advances_the_cache_revision(store: TestStore) {
    let cache = start(store.store.clone(), "/quiet/", config()).await;
    let first = store.create(b("/busy/0"), b("v")).await.unwrap().mod_revision;
    // Progress comes with later writes; keep writing elsewhere until it does.
    let mut i = 0;
    wait_for("progress to advance the cache on a quiet prefix", DEADLINE, || {
        i += 1;
        let (store, cache) = (store.store.clone(), cache.clone());
        async move {
            store.create(b(&format!("/busy/{i}")), b("v")).await.unwrap();
            (cache.revision() >= first).then_some(())
        }
    })
    .await;
    let list = cache.list(ListRequest { min_revision: Some(first), ..Default::default() }).await.unwrap();
    assert_eq!((list.source, list.items.len()), (ListSource::Cache, 0));
}

async fn resumes_without_relisting_after_the_upstream_watch_breaks(store: TestStore) {
    let flaky = Flaky::wrap(store.store.clone());
    let cache = start(flaky.clone(), "/r/", config()).await;
    let mut watch = watch_from(&cache, 0).await;
    let a = store.create(b("/r/a"), b("1")).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), a.mod_revision);

    let (ranges, watches) = (flaky.range_calls(), flaky.watch_calls());
    flaky.refuse.store(true, Ordering::SeqCst);
    flaky.break_watches();
    // The cache notices and retries (refused) before the writes made during the outage.
    wait_for("the cache to retry its upstream watch", DEADLINE, || async {
        (flaky.watch_calls() > watches).then_some(())
    })
    .await;
    let bee = store.create(b("/r/b"), b("2")).await.unwrap();
    let a2 = store.update(b("/r/a"), b("3"), a.mod_revision).await.unwrap();
    flaky.refuse.store(false, Ordering::SeqCst);

    assert_eq!(
        next_events(&mut watch, 2).await,
        vec![
            (EventType::Added, "/r/b".into(), bee.mod_revision, b("2")),
            (EventType::Modified, "/r/a".into(), a2.mod_revision, b("3")),
        ],
        "the resumed watch replays what happened during the outage"
    );
    let c = store.create(b("/r/c"), b("4")).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), c.mod_revision, "and goes on live");
    assert_eq!(flaky.range_calls(), ranges, "resuming needs no re-list");
    let list = cache.list(ListRequest::default()).await.unwrap();
    assert_eq!(list.items, range_at(&*store, "/r/", list.revision).await);
}

async fn relists_and_expires_watchers_when_history_is_compacted_during_an_outage(store: TestStore) {
    let flaky = Flaky::wrap(store.store.clone());
    let cache = start(flaky.clone(), "/r/", config()).await;
    let a = store.create(b("/r/a"), b("1")).await.unwrap();
    store.create(b("/r/b"), b("2")).await.unwrap();
    let c = store.create(b("/r/c"), b("3")).await.unwrap();
    caught_up(&cache, c.mod_revision).await;
    let mut watch = watch_from(&cache, 0).await;
    let before_outage = watch.since();

    let (ranges, watches) = (flaky.range_calls(), flaky.watch_calls());
    flaky.refuse.store(true, Ordering::SeqCst);
    flaky.break_watches();
    wait_for("the cache to retry its upstream watch", DEADLINE, || async {
        (flaky.watch_calls() > watches).then_some(())
    })
    .await;
    store.update(b("/r/a"), b("1b"), a.mod_revision).await.unwrap();
    store.delete(b("/r/b"), None).await.unwrap();
    let d = store.create(b("/r/d"), b("4")).await.unwrap();
    store.compact(d.mod_revision).await.unwrap();
    flaky.refuse.store(false, Ordering::SeqCst);

    match next_item(&mut watch).await {
        Some(Err(CacheError::Expired { because: ExpiredBecause::Relisted, .. })) => {}
        other => panic!("a watcher that missed events must be expired: {other:?}"),
    }
    assert!(next_item(&mut watch).await.is_none());
    caught_up(&cache, d.mod_revision).await;
    assert!(flaky.range_calls() > ranges, "the cache re-listed");
    let list = cache.list(ListRequest::default()).await.unwrap();
    assert_eq!(list.items, range_at(&*store, "/r/", list.revision).await);
    assert_eq!(list.items.iter().map(|kv| kv.value.clone()).collect::<Vec<_>>(), vec![b("1b"), b("3"), b("4")]);

    assert!(matches!(
        cache.watch(WatchRequest { since: before_outage, ..Default::default() }).await,
        Err(CacheError::TooOld { .. })
    ));
    let mut fresh = watch_from(&cache, 0).await;
    let e = store.create(b("/r/e"), b("5")).await.unwrap();
    assert_eq!(next_event(&mut fresh).await.revision(), e.mod_revision, "the cache goes on after re-listing");
}

async fn stopping_ends_every_watcher(store: TestStore) {
    let cache = start(store.store.clone(), "/x/", config()).await;
    let mut watch = watch_from(&cache, 0).await;
    cache.stop();
    assert!(matches!(next_item(&mut watch).await, Some(Err(CacheError::Closed))));
    assert!(next_item(&mut watch).await.is_none());
    assert!(matches!(cache.list(ListRequest::default()).await, Err(CacheError::Closed)));
}

/// A store that passes everything to a real one, except that the test can cut every open
/// watch, refuse new ones, and drop progress notifications.
struct Flaky {
    inner: Arc<dyn Store>,
    drop_progress: Arc<AtomicBool>,
    refuse: AtomicBool,
    breaks: tokio::sync::watch::Sender<u64>,
    watch_calls: AtomicUsize,
    range_calls: AtomicUsize,
}

impl Flaky {
    fn wrap(inner: Arc<dyn Store>) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner,
            drop_progress: Arc::new(AtomicBool::new(false)),
            refuse: AtomicBool::new(false),
            breaks: tokio::sync::watch::channel(0).0,
            watch_calls: AtomicUsize::new(0),
            range_calls: AtomicUsize::new(0),
        })
    }

    /// Every watch open now fails with `Unavailable` at its next item.
    fn break_watches(&self) {
        self.breaks.send_modify(|n| *n += 1);
    }

    fn watch_calls(&self) -> usize {
        self.watch_calls.load(Ordering::SeqCst)
    }

    fn range_calls(&self) -> usize {
        self.range_calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Store for Flaky {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn create(&self, key: Bytes, value: Bytes) -> Result<KeyValue, StoreError> {
        self.inner.create(key, value).await
    }

    async fn get(&self, key: Bytes) -> Result<(Option<KeyValue>, Revision), StoreError> {
        self.inner.get(key).await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.range_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.range(request).await
    }

    async fn update(&self, key: Bytes, value: Bytes, expected: Revision) -> Result<KeyValue, StoreError> {
        self.inner.update(key, value, expected).await
    }

    async fn delete(&self, key: Bytes, expected: Option<Revision>) -> Result<(KeyValue, Revision), StoreError> {
        self.inner.delete(key, expected).await
    }

    async fn watch(&self, prefix: Bytes, from: Revision) -> Result<WatchStream, StoreError> {
        self.watch_calls.fetch_add(1, Ordering::SeqCst);
        if self.refuse.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test: watches are refused".into()));
        }
        let inner = self.inner.watch(prefix, from).await?;
        let breaks = self.breaks.subscribe();
        let drop_progress = self.drop_progress.clone();
        let stream = futures::stream::unfold(Some((inner, breaks)), move |state| {
            let drop_progress = drop_progress.clone();
            async move {
                let (mut inner, mut breaks) = state?;
                loop {
                    tokio::select! {
                        _ = breaks.changed() => {
                            return Some((Err(StoreError::Unavailable("test: watch cut".into())), None));
                        }
                        item = inner.next() => match item {
                            Some(Ok(WatchItem::Progress(_))) if drop_progress.load(Ordering::SeqCst) => continue,
                            Some(item) => return Some((item, Some((inner, breaks)))),
                            None => return None,
                        },
                    }
                }
            }
        });
        Ok(Box::pin(stream) as WatchStream)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.inner.compacted_revision().await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}
