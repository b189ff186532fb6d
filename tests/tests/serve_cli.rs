//! `wasmkube serve` as a user runs it: flag validation, health endpoints, clean shutdown,
//! refusing a foreign data dir, riding out an unreachable etcd.

use std::time::Duration;

use wasmkube_tests::{free_port, wait_for, Api, Etcd, Process};

#[tokio::test]
async fn conflicting_flags_are_all_reported_with_exit_code_2() {
    let mut serve = Process::start(&["serve", "--storage", "etcd", "--listen", "nope", "--etcd-prefix", "x"]);
    let (code, stderr) = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--listen \"nope\""), "{stderr}");
    assert!(stderr.contains("--storage etcd needs --etcd-endpoints"), "{stderr}");
    assert!(stderr.contains("--etcd-prefix"), "{stderr}");

    let mut serve = Process::start(&["serve", "--storage", "etcd", "--etcd-endpoints", "http://127.0.0.1"]);
    let (code, stderr) = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("has no port"), "{stderr}");
}

#[tokio::test]
async fn embedded_serve_is_ready_exports_metrics_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Process::start(&["serve", "--listen", &listen, "--data-dir", dir.path().to_str().unwrap()]);
    let api = Api::connect(dir.path(), &listen).await;
    api.wait_ready().await;
    for path in ["/healthz", "/livez", "/readyz?verbose"] {
        let (code, body) = api.get(path).await.unwrap();
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (_, verbose) = api.get("/readyz?verbose").await.unwrap();
    assert!(verbose.contains("[+]storage ok"), "{verbose}");
    let (code, metrics) = api.get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    for name in [
        "wasmkube_storage_operation_duration_seconds",
        "wasmkube_storage_commit_batch_size",
        "wasmkube_storage_watchers",
        "wasmkube_apiserver_request_duration_seconds_count{code=\"200\",path=\"health\",verb=\"GET\"}",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    serve.signal(libc::SIGTERM);
    let (code, stderr) = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");

    // The same data dir opens again (the lock was released, the store flushed).
    let mut again = Process::start(&["serve", "--listen", &listen, "--data-dir", dir.path().to_str().unwrap()]);
    api.wait_ready().await;
    again.signal(libc::SIGINT);
    assert_eq!(again.wait_exit(Duration::from_secs(30)).await.0, Some(0));
}

#[tokio::test]
async fn a_data_dir_that_is_not_ours_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "do not touch").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut serve = Process::start(&["serve", "--listen", &listen, "--data-dir", dir.path().to_str().unwrap()]);
    let (code, stderr) = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(dir.path().to_str().unwrap()), "the error names the path: {stderr}");
    assert!(stderr.contains("not a wasmkube data dir"), "{stderr}");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("precious.txt")], "nothing was written");
    assert_eq!(std::fs::read_to_string(dir.path().join("precious.txt")).unwrap(), "do not touch");
}

#[tokio::test]
async fn a_corrupt_data_dir_is_reported_by_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wasmkube.json"), "{\"kind\":\"something-else\"}\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut serve = Process::start(&["serve", "--listen", &listen, "--data-dir", dir.path().to_str().unwrap()]);
    let (code, stderr) = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(dir.path().to_str().unwrap()) && stderr.contains("not a format"), "{stderr}");
}

#[tokio::test]
async fn unreachable_etcd_keeps_serve_alive_and_not_ready_until_it_appears() {
    let etcd_port = free_port();
    let listen = format!("127.0.0.1:{}", free_port());
    let endpoint = format!("http://127.0.0.1:{etcd_port}");
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Process::start(&[
        "serve",
        "--listen",
        &listen,
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--storage",
        "etcd",
        "--etcd-endpoints",
        &endpoint,
    ]);
    let api = Api::connect(dir.path(), &listen).await;
    // Until the first connection attempt fails, readyz says only "not opened yet".
    let (_, why) = wait_for("/readyz to say storage is not ready, naming etcd", Duration::from_secs(30), || async {
        api.get("/readyz")
            .await
            .filter(|(code, body)| *code == 503 && body.contains("[-]storage") && body.contains("etcd"))
    })
    .await;
    assert!(why.contains("etcd"), "readyz names the backend: {why}");
    assert_eq!(api.get("/livez").await.map(|r| r.0), Some(200), "alive while storage is down");
    assert!(serve.child.try_wait().unwrap().is_none(), "serve keeps running");

    let _etcd = Etcd::start_on(etcd_port).await;
    api.wait_ready().await;
    serve.signal(libc::SIGTERM);
    let (code, stderr) = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn a_damaged_journal_is_reported_instead_of_serving_an_older_store() {
    use wasmkube::storage::{embedded::EmbeddedStore, StorageMetrics, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), StorageMetrics::unregistered()).await.unwrap();
    for i in 0..200 {
        store.create(format!("/k/{i}").into(), "v".into()).await.unwrap();
    }
    store.close().await.unwrap();
    drop(store);
    // Overwrite the start of every journal: the writes it held are gone.
    for entry in std::fs::read_dir(dir.path().join("db")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jnl") {
            use std::io::{Seek, Write};
            let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.seek(std::io::SeekFrom::Start(0)).unwrap();
            file.write_all(&vec![0x5a; 64 * 1024]).unwrap();
        }
    }
    let listen = format!("127.0.0.1:{}", free_port());
    let mut serve = Process::start(&["serve", "--listen", &listen, "--data-dir", dir.path().to_str().unwrap()]);
    let (code, stderr) = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(dir.path().to_str().unwrap()) && stderr.contains("is corrupt"), "{stderr}");
    assert!(stderr.contains("revision 200 was durable"), "{stderr}");
}

/// A log written to a file (not a terminal) is plain text: no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_of_a_server_writing_to_a_file_has_no_colour_codes() {
    let cluster = wasmkube_tests::Cluster::start().await;
    let raw = std::fs::read_to_string(cluster.dir.path().join("serve.log")).expect("the log");
    assert!(raw.contains("INFO"), "the server logged: {raw}");
    assert!(!raw.contains('\u{1b}'), "colour codes in a log file: {raw:?}");
}
