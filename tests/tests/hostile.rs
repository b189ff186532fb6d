//! What a careless or hostile client sends: the corpus in `tests/hostile/corpus.json`
//! (bodies, paths, query strings) replayed against the real binary, each answered with
//! the expected code and `Status` reason, and nothing stored. Bodies that would cost the
//! server its responsiveness (deep nesting) are refused while it keeps answering.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use wasmkube_tests::{wait_for, Backend, Cluster};

/// One hostile request and what the server must answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    name: String,
    method: String,
    path: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    body: Option<Body>,
    code: u16,
    reason: String,
    /// Words the Status message must contain.
    #[serde(default)]
    message: Option<String>,
}

/// A body as text, or built by repeating a piece (what a corpus file cannot hold).
#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Text(String),
    #[serde(rename_all = "camelCase")]
    Repeated {
        #[serde(default)]
        prefix: String,
        repeat: String,
        times: usize,
        #[serde(default)]
        suffix: String,
    },
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Text(text) => text.clone().into_bytes(),
            Body::Repeated { prefix, repeat, times, suffix } => {
                format!("{prefix}{}{suffix}", repeat.repeat(*times)).into_bytes()
            }
        }
    }
}

fn corpus() -> Vec<Case> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hostile/corpus.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn send(cluster: &Cluster, case: &Case) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("a method");
    let mut request = cluster.api.client.request(method, format!("{}{}", cluster.api.base, case.path));
    if let Some(content_type) = &case.content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(body) = &case.body {
        request = request.body(body.bytes());
    }
    let response = request.timeout(Duration::from_secs(60)).send().await.expect("an answer");
    let code = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (code, serde_json::from_str(&text).unwrap_or_else(|_| json!({"unparsed": text})))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostile_corpus_gets_statuses_and_stores_nothing() {
    let cluster = Cluster::start_on(Backend::Embedded).await;
    // What an escaped slash used to reach: the Secret named `configmaps`.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "configmaps"},
        "stringData": {"password": "hunter2"}});
    let (code, answer) =
        cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/secrets", Some(secret)).await;
    assert_eq!(code, 201, "{answer}");

    let cases = corpus();
    assert!(cases.len() >= 32, "the corpus is read whole");
    let mut failures = Vec::new();
    for case in &cases {
        let (code, status) = send(&cluster, case).await;
        let message = status["message"].as_str().unwrap_or_default();
        let as_expected = code == case.code
            && status["kind"] == "Status"
            && status["reason"] == case.reason.as_str()
            && case.message.as_deref().is_none_or(|m| message.contains(m))
            && !status.to_string().contains("hunter2")
            && !status.to_string().contains("aHVudGVyMg");
        if !as_expected {
            failures.push(format!(
                "{}: {} {} answered {code} {status}, expected {} {} {:?}",
                case.name, case.method, case.path, case.code, case.reason, case.message
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));

    // Nothing was stored by any of them.
    for collection in [
        "/api/v1/configmaps",
        "/api/v1/secrets",
        "/api/v1/pods",
        "/api/v1/services",
        "/api/v1/nodes",
        "/apis/apps/v1/deployments",
        "/apis/rbac.authorization.k8s.io/v1/rolebindings",
    ] {
        let (code, list) = cluster.request(reqwest::Method::GET, collection, None).await;
        assert_eq!(code, 200, "{list}");
        let stored: Vec<&str> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str())
            .filter(|name| name.starts_with("hostile"))
            .collect();
        assert!(stored.is_empty(), "stored by hostile requests: {stored:?}");
    }
}

/// Deep YAML bodies sent at once are refused while the server goes on answering others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_bodies_at_once_leave_the_server_answering() {
    let cluster = Cluster::start_on(Backend::Embedded).await;
    let deep = corpus().into_iter().find(|c| c.content_type.as_deref() == Some("application/yaml")).expect("a case");
    let (first, second, ready, list) = tokio::join!(
        send(&cluster, &deep),
        send(&cluster, &deep),
        cluster.api.get("/readyz"),
        cluster.request(reqwest::Method::GET, "/api/v1/namespaces", None),
    );
    assert_eq!((first.0, second.0), (400, 400), "{first:?} {second:?}");
    assert_eq!(ready.map(|(code, _)| code), Some(200));
    assert_eq!(list.0, 200, "{}", list.1);
}

/// The value of an unlabelled counter in Prometheus text, 0 when absent.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

/// A watcher that stops reading while events pile up loses its connection once a write
/// has waited `--write-timeout` for it: the server counts it, and the client, reading
/// again, finds the stream cut instead of live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_loses_its_connection() {
    use futures::StreamExt;
    let cluster = Cluster::start_with(Backend::Embedded, &["--write-timeout", "1s"]).await;
    let url = format!("{}/api/v1/namespaces/default/configmaps?watch=true", cluster.api.base);
    let response = cluster.api.client.get(url).send().await.expect("a watch");
    assert_eq!(response.status().as_u16(), 200);
    // The stream is not polled from here on: the client reads nothing more from the socket.
    let mut stalled = response.bytes_stream();

    // Events of ~900 KB each until the socket buffers are full and a write has waited 1s.
    let data = "x".repeat(900 * 1024);
    let mut written = 0;
    wait_for("a write to the stalled watcher to time out", Duration::from_secs(120), || {
        written += 1;
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("big-{written}")},
            "data": {"d": data}});
        let cluster = &cluster;
        async move {
            let (code, answer) =
                cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/configmaps", Some(body)).await;
            assert_eq!(code, 201, "{answer}");
            let (_, metrics) = cluster.api.get("/metrics").await?;
            (counter(&metrics, "wasmkube_apiserver_write_timeouts_total") >= 1).then_some(())
        }
    })
    .await;

    // Read again: what was buffered arrives, then the stream ends (cut), where a live
    // watch would wait for the next event.
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = stalled.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled watcher's connection is still open after {written} writes");
    // The server goes on serving everyone else.
    let (code, _) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/configmaps?limit=1", None).await;
    assert_eq!(code, 200);
}

/// What identifies a stored object is not changed by a write, and preconditions say why
/// they failed: a patch that renames or moves it is 400, another uid 422, a resourceVersion
/// of the wrong JSON type 400, a delete's uid precondition 409 naming both uids; the object
/// is as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_fields_are_not_rewritten_by_writes() {
    let cluster = Cluster::start_on(Backend::Embedded).await;
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}, "data": {"a": "1"}});
    let (code, created) =
        cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/configmaps", Some(body)).await;
    assert_eq!(code, 201, "{created}");
    let uid = created["metadata"]["uid"].as_str().expect("a uid").to_string();
    let path = "/api/v1/namespaces/default/configmaps/keep";
    let cases = [
        (
            json!({"metadata": {"name": "other"}, "data": {"a": "2"}}),
            400,
            "BadRequest",
            "the name of the object (other) does not match the name on the URL (keep)".to_string(),
        ),
        (
            json!({"metadata": {"namespace": "kube-system"}, "data": {"a": "2"}}),
            400,
            "BadRequest",
            "the namespace of the object (kube-system) does not match the namespace on the request (default)"
                .to_string(),
        ),
        (
            json!({"metadata": {"uid": "not-the-uid"}, "data": {"a": "2"}}),
            422,
            "Invalid",
            "metadata.uid: Invalid value: \"not-the-uid\": field is immutable".to_string(),
        ),
        (
            json!({"metadata": {"resourceVersion": 1}, "data": {"a": "2"}}),
            400,
            "BadRequest",
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.resourceVersion of type string"
                .to_string(),
        ),
    ];
    for (patch, code, reason, message) in cases {
        let (answered, status) = cluster.merge_patch(path, &patch).await;
        assert_eq!((answered, status["reason"].as_str()), (code, Some(reason)), "{patch}: {status}");
        assert!(status["message"].as_str().unwrap_or_default().contains(&message), "{patch}: {status}");
    }
    let delete = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "not-the-uid"}});
    let (code, status) = cluster.request(reqwest::Method::DELETE, path, Some(delete)).await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(
        status["message"],
        format!("Operation cannot be fulfilled on configmaps \"keep\": Precondition failed: UID in precondition: not-the-uid, UID in object meta: {uid}")
    );
    let (code, stored) = cluster.request(reqwest::Method::GET, path, None).await;
    assert_eq!(code, 200);
    assert_eq!((stored["metadata"]["uid"].as_str(), stored["data"]["a"].as_str()), (Some(uid.as_str()), Some("1")));
}

/// A repeated key is a warning by default (the last value kept, as Go's decoder keeps it)
/// and refused under `fieldValidation=Strict` (in the corpus).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_key_is_a_warning_by_default() {
    let cluster = Cluster::start_on(Backend::Embedded).await;
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"twice"},"data":{"a":"1","a":"2"}}"#;
    let response = cluster
        .api
        .client
        .post(format!("{}/api/v1/namespaces/default/configmaps", cluster.api.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 201);
    let warning = response.headers().get("warning").and_then(|w| w.to_str().ok()).unwrap_or_default().to_string();
    assert!(
        warning.contains(r#"duplicate field \"data.a\""#) || warning.contains(r#"duplicate field "data.a""#),
        "{warning}"
    );
    let stored: Value = response.json().await.expect("the object");
    assert_eq!(stored["data"]["a"], "2");
}

/// An upload far past the size limit, over HTTP/2 (kubectl, like every client-go client,
/// speaks it to a TLS server): the client gets the 413 Status, not a reset stream, and the
/// server answers the next request. 80 MB is past the part of a body the server reads and
/// drops (64 MiB), so the rest is refused unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upload_over_http2_gets_a_413_status() {
    let cluster = Cluster::start_on(Backend::Embedded).await;
    let body = cluster.dir.path().join("huge.json");
    let mut text = String::from(
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hostile-huge"}, "data": {"a": ""#,
    );
    text.push_str(&"a".repeat(80_000_000));
    text.push_str(r#""}}"#);
    std::fs::write(&body, text).expect("the body");
    let body = body.to_string_lossy().into_owned();
    let kubectl = wasmkube_tests::KUBECTLS[0];
    let (ok, out, err) =
        cluster.kubectl(kubectl, &["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", &body]);
    assert!(!ok, "{out}");
    assert!(err.contains("Error from server (RequestEntityTooLarge)"), "{err}");
    let (ok, out, err) = cluster.kubectl(kubectl, &["get", "configmaps", "-o", "name"]);
    assert!(ok && !out.contains("hostile-huge"), "{out} {err}");
}
