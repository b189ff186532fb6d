//! The storage conformance suite, written once and run against both backends: the
//! embedded store in a temp dir and a real etcd started on free loopback ports.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;
use wasmkube::storage::{Event, KeyValue, RangeRequest, Revision, Store, StoreError, WatchItem, MAX_VALUE_BYTES};
use wasmkube_tests::TestStore;

wasmkube_tests::both_backends!(
    crud_tracks_revisions_and_versions,
    failed_writes_commit_nothing,
    values_over_the_limit_are_refused_on_both_backends,
    range_pages_stay_consistent_under_concurrent_writes,
    range_reads_history_at_a_revision,
    cas_races_have_exactly_one_winner,
    watch_replays_history_with_previous_values,
    watch_is_ordered_and_complete_under_concurrent_writes,
    slow_watcher_still_gets_every_event,
    compaction_drops_history_below_the_revision,
);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn crud_tracks_revisions_and_versions(store: TestStore) {
    let start = store.current_revision().await.unwrap();
    let created = store.create(b("/c/a"), b("1")).await.unwrap();
    assert_eq!((created.create_revision, created.mod_revision, created.version), (start + 1, start + 1, 1));

    let (got, at) = store.get(b("/c/a")).await.unwrap();
    assert_eq!(got.as_ref(), Some(&created));
    assert_eq!(at, start + 1);

    let updated = store.update(b("/c/a"), b("2"), created.mod_revision).await.unwrap();
    assert_eq!((updated.create_revision, updated.mod_revision, updated.version), (start + 1, start + 2, 2));
    assert_eq!(updated.value, b("2"));

    let (deleted, revision) = store.delete(b("/c/a"), Some(updated.mod_revision)).await.unwrap();
    assert_eq!(deleted, updated);
    assert_eq!(revision, start + 3);
    assert_eq!(store.get(b("/c/a")).await.unwrap(), (None, start + 3));

    let again = store.create(b("/c/a"), b("3")).await.unwrap();
    assert_eq!((again.create_revision, again.version), (start + 4, 1), "re-creating starts a new life");
    let (_, revision) = store.delete(b("/c/a"), None).await.unwrap();
    assert_eq!(revision, start + 5);
    assert_eq!(store.current_revision().await.unwrap(), start + 5);
}

async fn failed_writes_commit_nothing(store: TestStore) {
    let kv = store.create(b("/f/a"), b("1")).await.unwrap();
    let before = store.current_revision().await.unwrap();

    match store.create(b("/f/a"), b("x")).await {
        Err(StoreError::AlreadyExists { current }) => assert_eq!(current, kv),
        other => panic!("create of an existing key: {other:?}"),
    }
    match store.update(b("/f/a"), b("x"), kv.mod_revision - 1).await {
        Err(StoreError::Conflict { current: Some(current), .. }) => assert_eq!(current, kv),
        other => panic!("stale update: {other:?}"),
    }
    match store.delete(b("/f/a"), Some(kv.mod_revision + 100)).await {
        Err(StoreError::Conflict { current: Some(current), .. }) => assert_eq!(current, kv),
        other => panic!("stale delete: {other:?}"),
    }
    assert!(matches!(store.update(b("/f/missing"), b("x"), 1).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.update(b("/f/missing"), b("x"), 0).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.delete(b("/f/missing"), None).await, Err(StoreError::NotFound { .. })));
    assert_eq!(store.current_revision().await.unwrap(), before, "no failed write bumps the revision");
    assert_eq!(store.get(b("/f/a")).await.unwrap().0, Some(kv));
}

async fn values_over_the_limit_are_refused_on_both_backends(store: TestStore) {
    let key = "/registry/configmaps/some-namespace/a-configmap-with-a-long-name-of-sixty-three-characters";
    let largest = Bytes::from(vec![b'v'; MAX_VALUE_BYTES]);
    let kv = store.create(b(key), largest.clone()).await.expect("a value at the limit is accepted");
    store.update(b(key), largest, kv.mod_revision).await.expect("an update at the limit is accepted");
    let too_large = Bytes::from(vec![b'v'; MAX_VALUE_BYTES + 1]);
    assert!(matches!(store.create(b("/l/b"), too_large).await, Err(StoreError::ValueTooLarge { .. })));
}

async fn range_pages_stay_consistent_under_concurrent_writes(store: TestStore) {
    for i in 0..25 {
        store.create(b(&format!("/r/{i:02}")), b(&i.to_string())).await.unwrap();
    }
    store.create(b("/r0"), b("outside the prefix")).await.unwrap();
    let request = RangeRequest { prefix: b("/r/"), limit: 10, ..Default::default() };
    let first = store.range(request.clone()).await.unwrap();
    assert_eq!(first.kvs.len(), 10);
    assert!(first.more);
    let expected: Vec<String> = (0..25).map(|i| format!("/r/{i:02}")).collect();

    // Writes between pages: none of them may show up in later pages.
    store.delete(b("/r/15"), None).await.unwrap();
    store.create(b("/r/10a"), b("new")).await.unwrap();
    let (kv, _) = store.get(b("/r/20")).await.unwrap();
    store.update(b("/r/20"), b("changed"), kv.unwrap().mod_revision).await.unwrap();

    let mut keys: Vec<String> = first.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into()).collect();
    let mut page = first.clone();
    let mut next = page.next_page(&request);
    while let Some(request) = next {
        page = store.range(request.clone()).await.unwrap();
        assert_eq!(page.revision, first.revision, "every page reads at the first page's revision");
        assert!(page.kvs.iter().all(|kv| kv.value != b("changed")));
        keys.extend(page.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into()));
        next = page.next_page(&request);
    }
    assert_eq!(keys, expected);

    let all = store.range(RangeRequest { prefix: b("/r/"), ..Default::default() }).await.unwrap();
    assert_eq!(all.kvs.len(), 25, "latest: one deleted, one added");
    assert!(!all.more);
}

async fn range_reads_history_at_a_revision(store: TestStore) {
    let a1 = store.create(b("/h/a"), b("a1")).await.unwrap();
    let a2 = store.update(b("/h/a"), b("a2"), a1.mod_revision).await.unwrap();
    let b1 = store.create(b("/h/b"), b("b1")).await.unwrap();
    store.delete(b("/h/a"), None).await.unwrap();
    let at = |revision: Revision| {
        let store = store.store.clone();
        async move {
            let request = RangeRequest { prefix: b("/h/"), revision: Some(revision), ..Default::default() };
            let page = store.range(request).await.unwrap();
            page.kvs.into_iter().map(|kv| (String::from_utf8_lossy(&kv.key).to_string(), kv.value)).collect::<Vec<_>>()
        }
    };
    assert_eq!(at(a1.mod_revision).await, vec![("/h/a".into(), b("a1"))]);
    assert_eq!(at(a2.mod_revision).await, vec![("/h/a".into(), b("a2"))]);
    assert_eq!(at(b1.mod_revision).await, vec![("/h/a".into(), b("a2")), ("/h/b".into(), b("b1"))]);
    assert_eq!(at(b1.mod_revision + 1).await, vec![("/h/b".into(), b("b1"))]);
    let future = RangeRequest { prefix: b("/h/"), revision: Some(b1.mod_revision + 100), ..Default::default() };
    assert!(matches!(store.range(future).await, Err(StoreError::FutureRevision { .. })));
}

async fn cas_races_have_exactly_one_winner(store: TestStore) {
    let kv = store.create(b("/cas/k"), b("0")).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.store.clone();
            tokio::spawn(async move { store.update(b("/cas/k"), b(&i.to_string()), kv.mod_revision).await })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error in a CAS race: {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one compare-and-swap wins");

    let creates: Vec<_> = (0..32)
        .map(|i| {
            let store = store.store.clone();
            tokio::spawn(async move { store.create(b("/cas/new"), b(&i.to_string())).await })
        })
        .collect();
    let mut created = 0;
    for task in creates {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("unexpected error in a create race: {e}"),
        }
    }
    assert_eq!(created, 1, "exactly one create wins");
}

/// Collect events from `stream` until one at `until` has arrived.
async fn collect_until(stream: &mut wasmkube::storage::WatchStream, until: Revision) -> Vec<Event> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while events.last().is_none_or(|e: &Event| e.revision() < until) {
        let item = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("watch did not reach revision {until}; got {} events", events.len()))
            .expect("watch ended early")
            .expect("watch failed");
        if let WatchItem::Events(batch) = item {
            events.extend(batch);
        }
    }
    events
}

async fn watch_replays_history_with_previous_values(store: TestStore) {
    let a = store.create(b("/w/a"), b("1")).await.unwrap();
    store.create(b("/other/x"), b("not watched")).await.unwrap();
    let a2 = store.update(b("/w/a"), b("2"), a.mod_revision).await.unwrap();
    let (_, deleted_at) = store.delete(b("/w/a"), None).await.unwrap();
    let mut watch = store.watch(b("/w/"), a.mod_revision).await.unwrap();
    let events = collect_until(&mut watch, deleted_at).await;
    assert_eq!(
        events,
        vec![
            Event::Put { kv: a.clone(), prev: None },
            Event::Put { kv: a2.clone(), prev: Some(a) },
            Event::Delete { key: b("/w/a"), revision: deleted_at, prev: a2 },
        ]
    );
    // And it goes on live from there.
    let live = store.create(b("/w/b"), b("live")).await.unwrap();
    assert_eq!(collect_until(&mut watch, live.mod_revision).await, vec![Event::Put { kv: live, prev: None }]);
}

/// One write of a generated workload.
#[derive(Clone, Debug)]
enum Op {
    Create(u8),
    Update(u8),
    Delete(u8),
}

fn ops() -> impl Strategy<Value = Vec<Vec<Op>>> {
    let op =
        prop_oneof![(0u8..12).prop_map(Op::Create), (0u8..12).prop_map(Op::Update), (0u8..12).prop_map(Op::Delete),];
    prop::collection::vec(prop::collection::vec(op, 1..40), 2..8)
}

/// Run the writers concurrently; return every acknowledged write's revision.
async fn run_workload(store: Arc<dyn Store>, prefix: String, writers: Vec<Vec<Op>>) -> Vec<Revision> {
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, ops)| {
            let (store, prefix) = (store.clone(), prefix.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for (i, op) in ops.into_iter().enumerate() {
                    let result = match op {
                        Op::Create(k) => store
                            .create(b(&format!("{prefix}{k}")), b(&format!("{w}.{i}")))
                            .await
                            .map(|kv| kv.mod_revision),
                        Op::Update(k) => {
                            let key = b(&format!("{prefix}{k}"));
                            match store.get(key.clone()).await.unwrap().0 {
                                Some(kv) => store
                                    .update(key, b(&format!("{w}.{i}")), kv.mod_revision)
                                    .await
                                    .map(|kv| kv.mod_revision),
                                None => continue,
                            }
                        }
                        Op::Delete(k) => store.delete(b(&format!("{prefix}{k}")), None).await.map(|(_, rev)| rev),
                    };
                    match result {
                        Ok(revision) => acked.push(revision),
                        Err(
                            StoreError::AlreadyExists { .. }
                            | StoreError::Conflict { .. }
                            | StoreError::NotFound { .. },
                        ) => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    acked.sort_unstable();
    acked
}

/// Check a watch's events against the acknowledged writes: ordered, gap-free, and every
/// `prev` equal to what the key held before (replaying the events themselves).
fn check_events(events: &[Event], acked: &[Revision]) {
    let revisions: Vec<Revision> = events.iter().map(Event::revision).collect();
    assert_eq!(revisions, acked, "the watch delivers exactly the acknowledged writes, in revision order");
    let mut state: HashMap<Bytes, KeyValue> = HashMap::new();
    for event in events {
        match event {
            Event::Put { kv, prev } => {
                assert_eq!(prev.as_ref(), state.get(&kv.key), "prev of put at {}", kv.mod_revision);
                state.insert(kv.key.clone(), kv.clone());
            }
            Event::Delete { key, prev, revision } => {
                assert_eq!(Some(prev), state.get(key), "prev of delete at {revision}");
                state.remove(key);
            }
        }
    }
}

async fn watch_is_ordered_and_complete_under_concurrent_writes(store: TestStore) {
    let config = ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let handle = tokio::runtime::Handle::current();
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&ops(), |writers| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("/prop/{n}/");
        let store = store.store.clone();
        let events_and_acks = tokio::task::block_in_place(|| {
            handle.block_on(async {
                let from = store.current_revision().await.unwrap() + 1;
                let mut live = store.watch(b(&prefix), 0).await.unwrap();
                let acked = run_workload(store.clone(), prefix.clone(), writers).await;
                let last = acked.last().copied().unwrap_or(from - 1);
                let live_events = if acked.is_empty() { vec![] } else { collect_until(&mut live, last).await };
                // A second watch from the start replays the same history.
                let mut replay = store.watch(b(&prefix), from).await.unwrap();
                let replayed = if acked.is_empty() { vec![] } else { collect_until(&mut replay, last).await };
                (live_events, replayed, acked)
            })
        });
        let (live_events, replayed, acked) = events_and_acks;
        check_events(&live_events, &acked);
        prop_assert_eq!(&live_events, &replayed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn slow_watcher_still_gets_every_event(store: TestStore) {
    let from = store.current_revision().await.unwrap() + 1;
    let mut watch = store.watch(b("/slow/"), from).await.unwrap();
    // Many single-write commits while the watcher reads nothing.
    let mut acked = Vec::new();
    for i in 0..3000 {
        acked.push(store.create(b(&format!("/slow/{i}")), b("v")).await.unwrap().mod_revision);
    }
    let events = collect_until(&mut watch, *acked.last().unwrap()).await;
    check_events(&events, &acked);
}

async fn compaction_drops_history_below_the_revision(store: TestStore) {
    let a1 = store.create(b("/k/a"), b("1")).await.unwrap();
    let a2 = store.update(b("/k/a"), b("2"), a1.mod_revision).await.unwrap();
    let b1 = store.create(b("/k/b"), b("1")).await.unwrap();
    store.delete(b("/k/b"), None).await.unwrap();
    let c1 = store.create(b("/k/c"), b("1")).await.unwrap();
    store.compact(c1.mod_revision).await.unwrap();
    assert!(store.compacted_revision().await.unwrap() >= c1.mod_revision);

    let old = RangeRequest { prefix: b("/k/"), revision: Some(b1.mod_revision), ..Default::default() };
    assert!(matches!(store.range(old).await, Err(StoreError::Compacted { .. })));
    match store.watch(b("/k/"), a2.mod_revision).await {
        Err(StoreError::Compacted { .. }) => {}
        Ok(mut stream) => assert!(
            matches!(stream.next().await, Some(Err(StoreError::Compacted { .. }))),
            "a watch below the compacted revision fails"
        ),
        Err(e) => panic!("watch below compaction: {e}"),
    }
    // The state at the compacted revision is intact, and so is everything after.
    let at = RangeRequest { prefix: b("/k/"), revision: Some(c1.mod_revision), ..Default::default() };
    let kept: BTreeMap<_, _> = store.range(at).await.unwrap().kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    assert_eq!(kept, BTreeMap::from([(b("/k/a"), b("2")), (b("/k/c"), b("1"))]));
    let c2 = store.update(b("/k/c"), b("2"), c1.mod_revision).await.unwrap();
    let mut watch = store.watch(b("/k/"), c1.mod_revision).await.unwrap();
    assert_eq!(
        collect_until(&mut watch, c2.mod_revision).await,
        vec![Event::Put { kv: c1.clone(), prev: None }, Event::Put { kv: c2, prev: Some(c1.clone()) }]
    );
    // Compacting again at or below is a no-op; beyond the present is refused.
    store.compact(c1.mod_revision).await.unwrap();
    let future = store.current_revision().await.unwrap() + 10;
    assert!(matches!(store.compact(future).await, Err(StoreError::FutureRevision { .. })));
}
