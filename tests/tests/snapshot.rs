//! `wasmkube store snapshot save|restore`: consistent while the server runs (through its
//! admin socket) and while writes go on; restores only into a new directory; a damaged
//! snapshot is refused and leaves nothing behind.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wasmkube::storage::{embedded, embedded::EmbeddedStore, RangeRequest, StorageMetrics, Store};
use wasmkube_tests::{free_port, wait_for, wasmkube_bin, Api, Process};

fn wasmkube(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(wasmkube_bin()).args(args).output().expect("running wasmkube");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

async fn contents(dir: &Path, revision: Option<i64>) -> (BTreeMap<Bytes, (Bytes, i64, i64, i64)>, i64) {
    let store = EmbeddedStore::open(dir, StorageMetrics::unregistered()).await.unwrap();
    let page = store.range(RangeRequest { prefix: "/".into(), revision, ..Default::default() }).await.unwrap();
    let current = store.current_revision().await.unwrap();
    store.close().await.unwrap();
    let map =
        page.kvs.into_iter().map(|kv| (kv.key, (kv.value, kv.create_revision, kv.mod_revision, kv.version))).collect();
    (map, current)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_saved_from_a_running_server_restores_the_same_store() {
    let root = tempfile::tempdir().unwrap();
    let (data, restored, snap) = (root.path().join("data"), root.path().join("restored"), root.path().join("snap.db"));
    let middle = {
        let store = EmbeddedStore::open(&data, StorageMetrics::unregistered()).await.unwrap();
        for i in 0..100 {
            store.create(format!("/k/{i}").into(), format!("v{i}").into()).await.unwrap();
        }
        let middle = store.current_revision().await.unwrap();
        for i in 0..30 {
            let (kv, _) = store.get(format!("/k/{i}").into()).await.unwrap();
            store.update(format!("/k/{i}").into(), "changed".into(), kv.unwrap().mod_revision).await.unwrap();
        }
        for i in 90..100 {
            store.delete(format!("/k/{i}").into(), None).await.unwrap();
        }
        store.close().await.unwrap();
        middle
    };

    let listen = format!("127.0.0.1:{}", free_port());
    // No controllers and no Lease to renew: nothing writes after the snapshot, so the
    // restored store must equal the stopped one exactly.
    let mut serve = Process::start(&[
        "serve",
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().unwrap(),
        "--controllers=",
        "--leader-elect=false",
    ]);
    Api::connect(&data, &listen).await.wait_ready().await;
    let (ok, stdout, stderr) =
        wasmkube(&["store", "snapshot", "save", "--data-dir", data.to_str().unwrap(), snap.to_str().unwrap()]);
    assert!(ok, "save while serving: {stderr}");
    assert!(stdout.contains("saved snapshot"), "{stdout}");
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.wait_exit(Duration::from_secs(30)).await.0, Some(0));

    let (ok, stdout, stderr) =
        wasmkube(&["store", "snapshot", "restore", "--data-dir", restored.to_str().unwrap(), snap.to_str().unwrap()]);
    assert!(ok, "restore: {stderr}");
    assert!(stdout.contains("restored revision"), "{stdout}");
    assert_eq!(contents(&restored, None).await, contents(&data, None).await, "latest state and revision match");
    assert_eq!(contents(&restored, Some(middle)).await.0, contents(&data, Some(middle)).await.0, "history matches too");

    // Restoring over an existing data dir is refused, and it stays as it was.
    let before = contents(&data, None).await;
    let (ok, _, stderr) =
        wasmkube(&["store", "snapshot", "restore", "--data-dir", data.to_str().unwrap(), snap.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains(data.to_str().unwrap()) && stderr.contains("not empty"), "{stderr}");
    assert_eq!(contents(&data, None).await, before);

    // A damaged snapshot is refused and leaves no half-restored directory behind.
    let bytes = std::fs::read(&snap).unwrap();
    let damaged = root.path().join("damaged.db");
    std::fs::write(&damaged, &bytes[..bytes.len() - 10]).unwrap();
    let target = root.path().join("from-damaged");
    let (ok, _, stderr) =
        wasmkube(&["store", "snapshot", "restore", "--data-dir", target.to_str().unwrap(), damaged.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("not a valid wasmkube snapshot"), "{stderr}");
    assert!(!target.exists(), "nothing left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_under_concurrent_writes_is_a_consistent_cut() {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&root.path().join("live"), StorageMetrics::unregistered()).await.unwrap());
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..300 {
                    let key = format!("/w/{w}/{n}");
                    let kv = store.create(key.clone().into(), "v".into()).await.unwrap();
                    acked.push((key, kv.mod_revision));
                }
                acked
            })
        })
        .collect();
    // Take the snapshot once the load is well under way.
    wait_for("some writes", Duration::from_secs(30), || {
        let store = store.clone();
        async move { (store.current_revision().await.unwrap() > 500).then_some(()) }
    })
    .await;
    let snapshotter = store.clone();
    let image = tokio::task::spawn_blocking(move || {
        let mut image = Vec::new();
        let info = snapshotter.write_snapshot(&mut image).unwrap();
        (image, info)
    })
    .await
    .unwrap();
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }
    let (image, info) = image;
    assert!(info.revision > 500 && info.revision < 4800, "the snapshot was taken mid-load ({})", info.revision);

    let restored_dir = root.path().join("restored");
    embedded::restore_snapshot(&mut image.as_slice(), &restored_dir).unwrap();
    let restored = EmbeddedStore::open(&restored_dir, StorageMetrics::unregistered()).await.unwrap();
    assert_eq!(restored.current_revision().await.unwrap(), info.revision);
    for (key, revision) in acked {
        let (kv, _) = restored.get(key.clone().into()).await.unwrap();
        if revision <= info.revision {
            assert_eq!(kv.map(|kv| kv.mod_revision), Some(revision), "{key} was written before the cut");
        } else {
            assert!(kv.is_none(), "{key} (revision {revision}) was written after the cut at {}", info.revision);
        }
    }
    let next = restored.create("/after".into(), "x".into()).await.unwrap();
    assert_eq!(next.mod_revision, info.revision + 1);
}
