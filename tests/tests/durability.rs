//! An acknowledged write survives `kill -9`: a separate `wasmkube store load` process
//! writes from 64 concurrent writers and prints every acknowledged key; the test kills it
//! with SIGKILL mid-load, reopens the data dir, and finds every acknowledged write with its
//! revision — and revisions keep increasing afterwards. Three rounds on one data dir.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use wasmkube::storage::{embedded::EmbeddedStore, RangeRequest, StorageMetrics, Store};
use wasmkube_tests::Process;

/// Run one load process, kill it once `min_acks` writes are acknowledged; return the acks.
fn load_and_kill(dir: &std::path::Path, min_acks: usize) -> BTreeMap<String, i64> {
    let mut load = Process::start(&["store", "load", "--data-dir", dir.to_str().unwrap(), "--writers", "64"]);
    let stdout = load.child.stdout.take().expect("piped stdout");
    let mut acked = BTreeMap::new();
    let started = Instant::now();
    let mut lines = BufReader::new(stdout).lines();
    while acked.len() < min_acks {
        assert!(started.elapsed() < Duration::from_secs(120), "load too slow: {} acks", acked.len());
        let line = lines.next().expect("load ended before it was killed").expect("reading acks");
        record(&mut acked, &line);
    }
    load.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL
                                         // Acks printed before the kill are still in the pipe: every one of them counts.
    for line in lines {
        let Ok(line) = line else { break };
        record(&mut acked, &line);
    }
    let _ = load.child.wait();
    acked
}

fn record(acked: &mut BTreeMap<String, i64>, line: &str) {
    let mut parts = line.split_whitespace();
    if parts.next() != Some("ACK") {
        return; // a partial last line cut by the kill
    }
    let (Some(key), Some(revision)) = (parts.next(), parts.next().and_then(|r| r.parse().ok())) else { return };
    acked.insert(key.to_string(), revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut all_acked = BTreeMap::new();
    let mut highest = 0;
    for round in 0..3 {
        let acked = load_and_kill(dir.path(), 2000);
        assert!(acked.len() >= 2000);
        let store = EmbeddedStore::open(dir.path(), StorageMetrics::unregistered()).await.expect("reopen after kill");
        let revisions: Vec<i64> = acked.values().copied().collect();
        let min = revisions.iter().min().copied().unwrap();
        assert!(min > highest, "round {round}: revisions start above the previous round's ({min} <= {highest})");
        all_acked.extend(acked);
        for (key, revision) in &all_acked {
            let (kv, _) = store.get(key.clone().into()).await.unwrap();
            let kv = kv.unwrap_or_else(|| panic!("round {round}: acknowledged key {key} lost after SIGKILL"));
            assert_eq!(kv.mod_revision, *revision, "{key} has the revision it was acknowledged with");
        }
        let mut distinct: Vec<i64> = all_acked.values().copied().collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), all_acked.len(), "no two writes share a revision");
        highest = *distinct.last().unwrap();
        let current = store.current_revision().await.unwrap();
        assert!(current >= highest);
        let next = store.create(format!("/after/{round}").into(), "x".into()).await.unwrap();
        assert!(next.mod_revision > current, "the revision keeps increasing after recovery");
        highest = next.mod_revision;
        // The whole history is readable and consistent with the index.
        let all = store.range(RangeRequest { prefix: "/load/".into(), ..Default::default() }).await.unwrap();
        assert!(all.kvs.len() >= all_acked.len());
        store.close().await.unwrap();
    }
}
