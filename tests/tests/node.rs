//! The node agent and the WASI container runtime, end to end: `serve` runs a node, `wasmkube
//! image push` puts components into the cluster's registry, and pods of them really run —
//! commands to their exit code, HTTP servers answering on their pod IP — with the statuses,
//! restarts and logs kubectl shows.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use wasmkube_tests::{plugin_component, wait_for, workload_component, Cluster, KUBECTLS};

const KUBECTL: &str = KUBECTLS[0];

/// Push the example `name` as `name:v1`.
fn push(cluster: &Cluster, name: &str) {
    let file = workload_component(name);
    let reference = format!("{name}:v1");
    let (ok, out, err) = cluster.wasmkube(&["image", "push", file.to_str().unwrap(), &reference]);
    assert!(ok, "image push: {err}");
    assert!(out.contains(&format!("pushed {name}:v1")), "{out}");
}

async fn pod(cluster: &Cluster, name: &str) -> Value {
    cluster.request(Method::GET, &format!("/api/v1/namespaces/default/pods/{name}"), None).await.1
}

/// Wait until the pod's first container status satisfies `check`; that status.
async fn container_status(cluster: &Cluster, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, Duration::from_secs(60), || async {
        let pod = pod(cluster, name).await;
        let status = pod.pointer("/status/containerStatuses/0")?.clone();
        check(&status).then_some(status)
    })
    .await
}

/// Wait for the pod's phase; on a timeout the panic shows the pod's last status.
async fn phase(cluster: &Cluster, name: &str, want: &str) -> Value {
    let last = parking_lot::Mutex::new(Value::Null);
    let waited = tokio::time::timeout(
        Duration::from_secs(60),
        wait_for(&format!("pod {name} to be {want}"), Duration::from_secs(120), || async {
            let pod = pod(cluster, name).await;
            *last.lock() = pod["status"].clone();
            (pod.pointer("/status/phase")? == want).then_some(pod)
        }),
    )
    .await;
    waited.unwrap_or_else(|_| panic!("pod {name} was not {want} within 60s; its status: {}", last.lock()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_pods_end_with_their_exit_code_and_their_logs_are_read() {
    let cluster = Cluster::start_with_node(&[]).await;
    // The node registers with the first range of the cluster CIDR and its .1 as address.
    let range = cluster.range.as_ref().unwrap().second_octet;
    let node = wait_for("the node to be Ready with its address", Duration::from_secs(30), || async {
        let (_, node) = cluster.request(Method::GET, "/api/v1/nodes/node-a", None).await;
        let ready =
            node["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        (ready && node["status"]["addresses"][0]["address"].is_string()).then_some(node)
    })
    .await;
    assert_eq!(node["spec"]["podCIDR"], format!("127.{range}.0.0/24"), "{node}");
    assert_eq!(
        node["status"]["addresses"][0],
        serde_json::json!({"type": "InternalIP", "address": format!("127.{range}.0.1")})
    );
    push(&cluster, "hello-command");

    let (ok, _, err) = cluster
        .kubectl(KUBECTL, &["run", "ok", "--image=hello-command:v1", "--restart=Never", "--", "echo", "hi", "there"]);
    assert!(ok, "{err}");
    let (ok, _, err) =
        cluster.kubectl(KUBECTL, &["run", "bad", "--image=hello-command:v1", "--restart=Never", "--", "exit", "3"]);
    assert!(ok, "{err}");

    let done = phase(&cluster, "ok", "Succeeded").await;
    let terminated = &done["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 0, "{done}");
    assert_eq!(terminated["reason"], "Completed", "{done}");
    let status = &done["status"];
    assert!(status["podIP"].as_str().unwrap().starts_with(&format!("127.{range}.0.")), "{status}");
    assert_eq!(status["hostIP"], format!("127.{range}.0.1"));
    // BestEffort unless something (the default `defaults` plugin) gave it resources.
    let resources = &done["spec"]["containers"][0]["resources"];
    let best_effort =
        resources.as_object().is_none_or(|r| r.values().all(|v| v.as_object().is_none_or(|m| m.is_empty())));
    assert_eq!(status["qosClass"], if best_effort { "BestEffort" } else { "Burstable" }, "{done}");
    assert!(status["containerStatuses"][0]["containerID"].as_str().unwrap().starts_with("wasmtime://"), "{status}");
    assert!(
        status["containerStatuses"][0]["imageID"].as_str().unwrap().starts_with("hello-command@sha256:"),
        "{status}"
    );
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!((&ready["status"], &ready["reason"]), (&Value::from("False"), &Value::from("PodCompleted")), "{status}");
    let (ok, out, err) = cluster.kubectl(KUBECTL, &["logs", "ok"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hi there\n");
    let (ok, out, _) = cluster.kubectl(KUBECTL, &["logs", "ok", "--timestamps"]);
    assert!(ok && out.ends_with("Z hi there\n") && out.len() > 20, "{out}");
    // kubectl describe shows the kubelet's events.
    let described = wait_for("the node's events", Duration::from_secs(30), || async {
        let (ok, out, _) = cluster.kubectl(KUBECTL, &["describe", "pod", "ok"]);
        (ok && out.contains("Started container ok")).then_some(out)
    })
    .await;
    for said in ["Scheduled", "Pulled", "Created container: ok", "kubelet"] {
        assert!(described.contains(said), "{said:?} missing from:\n{described}");
    }

    let failed = phase(&cluster, "bad", "Failed").await;
    let terminated = &failed["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!((terminated["exitCode"].as_i64(), terminated["reason"].as_str()), (Some(3), Some("Error")), "{failed}");
    let (ok, out, _) = cluster.kubectl(KUBECTL, &["get", "pods"]);
    assert!(ok && out.lines().any(|l| l.starts_with("bad ") && l.contains("Error")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("ok ") && l.contains("Completed")), "{out}");

    // A container over its memory limit is OOMKilled (137) and costs nothing else.
    let overrides = r#"{"spec":{"containers":[{"name":"oom","image":"hello-command:v1","args":["alloc","64"],"resources":{"limits":{"memory":"16Mi"}}}]}}"#;
    let (ok, _, err) = cluster.kubectl(
        KUBECTL,
        &["run", "oom", "--image=hello-command:v1", "--restart=Never", &format!("--overrides={overrides}")],
    );
    assert!(ok, "{err}");
    let oom = phase(&cluster, "oom", "Failed").await;
    let terminated = &oom["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (terminated["exitCode"].as_i64(), terminated["reason"].as_str()),
        (Some(137), Some("OOMKilled")),
        "{oom}"
    );
    assert_eq!(oom["status"]["qosClass"], "Burstable");

    // kubectl's words for logs that cannot be had.
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["logs", "ok", "--previous"]);
    assert!(!ok && err.contains("previous terminated container \"ok\" in pod \"ok\" not found"), "{err}");
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["logs", "ok", "-c", "nope"]);
    assert!(!ok && err.contains("container nope is not valid for pod ok"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_deployment_answers_on_its_pod_ip_and_a_trapping_request_costs_only_itself() {
    let cluster = Cluster::start_with_node(&[]).await;
    push(&cluster, "hello-http");
    let (ok, _, err) =
        cluster.kubectl(KUBECTL, &["create", "deployment", "web", "--image=hello-http:v1", "--port=8080"]);
    assert!(ok, "{err}");
    let (ok, out, err) = cluster.kubectl(KUBECTL, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(ok, "rollout: {out} {err}");
    let (ok, out, err) = cluster.kubectl(
        KUBECTL,
        &["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name} {.items[0].status.podIP}"],
    );
    assert!(ok, "{err}");
    let (name, ip) = out.split_once(' ').unwrap();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("http://{ip}:8080{path}"));
        async move {
            let response = request.send().await.expect("the pod answers");
            (response.status().as_u16(), response.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get("/").await, (200, format!("hello from {name}\n")));
    let (code, body) = get("/trap").await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("trapped"), "{body}");
    assert_eq!(get("/").await.0, 200, "a trapping request does not stop the pod");
    assert_eq!(get("/env/HOSTNAME").await, (200, format!("{name}\n")));

    // kubectl logs -f follows: a request made while following shows up.
    let mut follow = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&cluster.api.kubeconfig)
        .args(["logs", "-f", name])
        .env("HOME", cluster.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let marker = "/followed-request";
    let seen = wait_for("kubectl logs -f to show a new request", Duration::from_secs(30), || {
        let request = get(marker);
        let received = &received;
        async move {
            request.await;
            std::iter::from_fn(|| received.recv_timeout(Duration::from_millis(200)).ok()).find(|l| l.contains(marker))
        }
    })
    .await;
    assert!(seen.contains("Get"), "{seen}");
    let _ = follow.kill();
    let _ = follow.wait();
    let (ok, out, _) = cluster.kubectl(KUBECTL, &["logs", name, "--tail=1"]);
    assert!(ok && out.lines().count() == 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_backs_off_with_growing_delays() {
    let cluster = Cluster::start_with_node(&["--crash-loop-backoff", "1s,4s"]).await;
    push(&cluster, "hello-command");
    let (ok, _, err) =
        cluster.kubectl(KUBECTL, &["run", "crash", "--image=hello-command:v1", "--", "echo", "crashing"]);
    assert!(ok, "{err}");
    let seen = std::cell::RefCell::new(Vec::<String>::new());
    let status = wait_for("three restarts", Duration::from_secs(60), || {
        let (seen, cluster) = (&seen, &cluster);
        async move {
            let pod = pod(cluster, "crash").await;
            let status = pod.pointer("/status/containerStatuses/0")?.clone();
            if let Some(message) = status.pointer("/state/waiting/message").and_then(Value::as_str) {
                let delay = message.strip_prefix("back-off ")?.split_whitespace().next()?.to_string();
                let mut seen = seen.borrow_mut();
                if seen.last() != Some(&delay) {
                    seen.push(delay);
                }
            }
            (status["restartCount"].as_u64()? >= 3).then_some(status)
        }
    })
    .await;
    let delays = seen.into_inner();
    // Each wait doubles, up to the maximum.
    assert!(delays.windows(2).all(|w| w[0] != w[1]), "{delays:?}");
    assert!(delays.starts_with(&["1s".to_string(), "2s".to_string()]), "{delays:?}");
    assert_eq!(status["lastState"]["terminated"]["reason"], "Completed", "{status}");
    let (ok, out, err) = cluster.kubectl(KUBECTL, &["logs", "crash", "--previous"]);
    assert!(ok, "{err}");
    assert_eq!(out, "crashing\n");
    let pod = pod(&cluster, "crash").await;
    assert_eq!(pod["status"]["phase"], "Running", "restartPolicy Always keeps it Running: {pod}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_that_cannot_run_say_why_on_their_pod() {
    let cluster = Cluster::start_with_node(&["--crash-loop-backoff", "1s,2s"]).await;
    // Nothing pushed under this name.
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["run", "missing", "--image=nothing:v9", "--restart=Never"]);
    assert!(ok, "{err}");
    let status = container_status(&cluster, "missing", "ErrImagePull or ImagePullBackOff", |s| {
        matches!(s.pointer("/state/waiting/reason").and_then(Value::as_str), Some("ErrImagePull" | "ImagePullBackOff"))
    })
    .await;
    let message = status.pointer("/state/waiting/message").and_then(Value::as_str).unwrap();
    assert!(message.contains("\"nothing:v9\"") && message.contains("manifest unknown"), "{message}");
    container_status(&cluster, "missing", "ImagePullBackOff", |s| {
        s.pointer("/state/waiting/reason") == Some(&"ImagePullBackOff".into())
    })
    .await;

    // A name that does not parse.
    // (kubectl run checks names itself; the API does not, as kube-apiserver does not.)
    let bad = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "badname"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "Not_A:Name"}]}});
    let (code, answer) = cluster.request(Method::POST, "/api/v1/namespaces/default/pods", Some(bad)).await;
    assert_eq!(code, 201, "{answer}");
    let status = container_status(&cluster, "badname", "InvalidImageName", |s| {
        s.pointer("/state/waiting/reason") == Some(&"InvalidImageName".into())
    })
    .await;
    assert!(status["state"]["waiting"]["message"].as_str().unwrap().contains("invalid reference format"), "{status}");

    // A component that is neither a command nor an HTTP server (a plugin).
    let plugin = plugin_component("no_latest");
    let (ok, _, err) = cluster.wasmkube(&["image", "push", plugin.to_str().unwrap(), "plugin:v1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["run", "plugin", "--image=plugin:v1", "--restart=Never"]);
    assert!(ok, "{err}");
    let status = container_status(&cluster, "plugin", "CreateContainerError", |s| {
        s.pointer("/state/waiting/reason") == Some(&"CreateContainerError".into())
    })
    .await;
    assert!(
        status["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("exports neither wasi:cli/run nor wasi:http/incoming-handler"),
        "{status}"
    );
    // The node keeps running pods meanwhile.
    push(&cluster, "hello-command");
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["run", "fine", "--image=hello-command:v1", "--restart=Never"]);
    assert!(ok, "{err}");
    phase(&cluster, "fine", "Succeeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_push_refuses_what_is_not_a_component_and_the_registry_wants_a_user() {
    let cluster = Cluster::start_with_node(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let (ok, _, err) = cluster.wasmkube(&["image", "push", core.to_str().unwrap(), "core:v1"]);
    assert!(!ok && err.contains("is a core WebAssembly module, not a component"), "{err}");
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, b"hello").unwrap();
    let (ok, _, err) = cluster.wasmkube(&["image", "push", text.to_str().unwrap(), "text:v1"]);
    assert!(!ok && err.contains("is not WebAssembly"), "{err}");
    let file = workload_component("hello-command");
    let (ok, _, err) = cluster.wasmkube(&["image", "push", file.to_str().unwrap(), "example.com/team/app:v1"]);
    assert!(!ok && err.contains("names the registry example.com"), "{err}");
    let (ok, _, err) = cluster.wasmkube(&["image", "push", file.to_str().unwrap(), "Bad:Name"]);
    assert!(!ok && err.contains("invalid reference format"), "{err}");

    // ls and rm.
    push(&cluster, "hello-command");
    let (ok, out, err) = cluster.wasmkube(&["image", "ls"]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("hello-command ") && l.contains(" v1 ")), "{out}");
    let (ok, _, err) = cluster.wasmkube(&["image", "rm", "hello-command:v1"]);
    assert!(ok, "{err}");
    let (_, out, _) = cluster.wasmkube(&["image", "ls"]);
    assert!(!out.contains("hello-command "), "{out}");
    let (ok, _, err) = cluster.wasmkube(&["image", "rm", "hello-command:v1"]);
    assert!(!ok && err.contains("manifest unknown"), "{err}");

    // Anonymous clients get the registry's challenge.
    let anonymous = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let response = anonymous.get(format!("{}/v2/", cluster.api.base)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Basic realm=\"wasmkube\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{body}");
}

/// Create `object` (JSON) at `path`; panics unless 201.
async fn create(cluster: &Cluster, path: &str, object: Value) {
    let (code, answer) = cluster.request(Method::POST, path, Some(object)).await;
    assert_eq!(code, 201, "{answer}");
}

/// The lines pod `name`'s container `container` printed.
fn logs(cluster: &Cluster, name: &str, container: &str) -> String {
    let (ok, out, err) = cluster.kubectl(KUBECTL, &["logs", name, "-c", container]);
    assert!(ok, "{err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_volumes_reach_the_component() {
    let cluster = Cluster::start_with_node(&["--crash-loop-backoff", "1s,2s"]).await;
    push(&cluster, "hello-command");
    create(
        &cluster,
        "/api/v1/namespaces/default/configmaps",
        serde_json::json!({
        "metadata": {"name": "settings"}, "data": {"greeting": "hello", "file.txt": "from a configmap"}}),
    )
    .await;
    create(
        &cluster,
        "/api/v1/namespaces/default/secrets",
        serde_json::json!({
        "metadata": {"name": "creds"}, "stringData": {"password": "hunter2"}}),
    )
    .await;
    let args = [
        "env",
        "GREETING",
        "env",
        "PASSWORD",
        "env",
        "POD_NAME",
        "env",
        "EXPANDED",
        "env",
        "CFG_greeting",
        "cat",
        "/etc/config/file.txt",
        "cat",
        "/etc/info/labels",
        "write",
        "/scratch/x",
        "scratched",
        "cat",
        "/scratch/x",
        "write",
        "/etc/config/nope",
        "x",
    ];
    create(&cluster, "/api/v1/namespaces/default/pods", serde_json::json!({
        "metadata": {"name": "reader", "labels": {"app": "reader"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "c", "image": "hello-command:v1", "args": args,
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "EXPANDED", "value": "$(GREETING)-world-$$(GREETING)"},
                ],
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/config", "readOnly": true},
                    {"name": "info", "mountPath": "/etc/info"},
                    {"name": "scratch", "mountPath": "/scratch"},
                ],
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": "settings"}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "scratch", "emptyDir": {}},
            ],
        }})).await;
    phase(&cluster, "reader", "Succeeded").await;
    let out = logs(&cluster, "reader", "c");
    for line in [
        "GREETING=hello",
        "PASSWORD=hunter2",
        "POD_NAME=reader",
        "EXPANDED=hello-world-$(GREETING)",
        "CFG_greeting=hello",
        "from a configmap",
        "app=\"reader\"",
        "scratched",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} missing from:\n{out}");
    }
    // The configMap volume is read-only.
    assert!(out.lines().any(|l| l.starts_with("write /etc/config/nope:")), "{out}");

    // What is missing is said on the pod, as the kubelet says it.
    create(
        &cluster,
        "/api/v1/namespaces/default/pods",
        serde_json::json!({
        "metadata": {"name": "noenv"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "hello-command:v1",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]}]}}),
    )
    .await;
    let status = container_status(&cluster, "noenv", "CreateContainerConfigError", |s| {
        s.pointer("/state/waiting/reason") == Some(&"CreateContainerConfigError".into())
    })
    .await;
    assert_eq!(status["state"]["waiting"]["message"], "configmap \"nope\" not found", "{status}");
    create(
        &cluster,
        "/api/v1/namespaces/default/pods",
        serde_json::json!({
        "metadata": {"name": "novolume"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "hello-command:v1",
            "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
            "volumes": [{"name": "v", "configMap": {"name": "nope"}}]}}),
    )
    .await;
    let status = container_status(&cluster, "novolume", "the mount failure", |s| {
        s.pointer("/state/waiting/message")
            .and_then(Value::as_str)
            .is_some_and(|m| m.starts_with("MountVolume.SetUp failed"))
    })
    .await;
    assert_eq!(status["state"]["waiting"]["reason"], "ContainerCreating", "{status}");
    assert!(
        status["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("for volume \"v\" : configmap \"nope\" not found"),
        "{status}"
    );
    // Once the ConfigMap exists, the pod runs.
    create(
        &cluster,
        "/api/v1/namespaces/default/configmaps",
        serde_json::json!({"metadata": {"name": "nope"}, "data": {"k": "v"}}),
    )
    .await;
    phase(&cluster, "novolume", "Succeeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_before_the_containers() {
    let cluster = Cluster::start_with_node(&["--crash-loop-backoff", "1s,2s"]).await;
    push(&cluster, "hello-command");
    let container = |name: &str, args: &[&str]| {
        serde_json::json!({"name": name, "image": "hello-command:v1", "args": args,
            "volumeMounts": [{"name": "work", "mountPath": "/work"}]})
    };
    create(
        &cluster,
        "/api/v1/namespaces/default/pods",
        serde_json::json!({
        "metadata": {"name": "staged"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [
                container("first", &["write", "/work/a", "one"]),
                container("second", &["cat", "/work/a", "write", "/work/b", "two"]),
            ],
            "containers": [container("main", &["ls", "/work"])],
            "volumes": [{"name": "work", "emptyDir": {}}],
        }}),
    )
    .await;
    let done = phase(&cluster, "staged", "Succeeded").await;
    let inits = done["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2, "{done}");
    assert!(inits.iter().all(|s| s["state"]["terminated"]["reason"] == "Completed"), "{done}");
    assert_eq!(logs(&cluster, "staged", "second"), "one\n");
    assert_eq!(logs(&cluster, "staged", "main"), "a b\n");
    let initialized =
        done["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Initialized").unwrap().clone();
    assert_eq!(initialized["status"], "True", "{done}");

    // An init container that fails with restartPolicy Never fails the pod; the app never starts.
    create(
        &cluster,
        "/api/v1/namespaces/default/pods",
        serde_json::json!({
        "metadata": {"name": "blocked"},
        "spec": {"restartPolicy": "Never",
            "initContainers": [{"name": "gate", "image": "hello-command:v1", "args": ["exit", "4"]}],
            "containers": [{"name": "main", "image": "hello-command:v1"}]}}),
    )
    .await;
    let failed = phase(&cluster, "blocked", "Failed").await;
    assert_eq!(failed["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 4, "{failed}");
    assert_eq!(failed["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing", "{failed}");
    let (ok, out, _) = cluster.kubectl(KUBECTL, &["get", "pod", "blocked"]);
    assert!(ok && out.contains("Init:Error"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_gate_readiness_and_a_failing_liveness_probe_restarts() {
    let cluster = Cluster::start_with_node(&["--crash-loop-backoff", "1s,2s"]).await;
    push(&cluster, "hello-http");
    push(&cluster, "hello-command");
    let pod = |name: &str, image: &str, args: Value, probes: Value| {
        let mut container = serde_json::json!({"name": "c", "image": image, "args": args, "ports": [{"name": "http", "containerPort": 8080}]});
        for (k, v) in probes.as_object().unwrap() {
            container[k] = v.clone();
        }
        serde_json::json!({"metadata": {"name": name}, "spec": {"containers": [container]}})
    };
    let http_probe = |path: &str| serde_json::json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": 1, "failureThreshold": 2});
    // Ready once the readiness probe answers 200.
    create(
        &cluster,
        "/api/v1/namespaces/default/pods",
        pod("ready", "hello-http:v1", serde_json::json!([]), serde_json::json!({"readinessProbe": http_probe("/")})),
    )
    .await;
    container_status(&cluster, "ready", "the readiness probe to pass", |s| s["ready"] == true).await;
    // Never Ready while its probe finds nothing listening.
    create(
        &cluster,
        "/api/v1/namespaces/default/pods",
        pod(
            "unready",
            "hello-http:v1",
            serde_json::json!([]),
            serde_json::json!({
        "readinessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1}}),
        ),
    )
    .await;
    let status = container_status(&cluster, "unready", "running", |s| s.pointer("/state/running").is_some()).await;
    assert_eq!(status["ready"], false, "{status}");
    // A liveness probe answered 404 restarts the container.
    create(
        &cluster,
        "/api/v1/namespaces/default/pods",
        pod(
            "sick",
            "hello-http:v1",
            serde_json::json!([]),
            serde_json::json!({"livenessProbe": http_probe("/missing")}),
        ),
    )
    .await;
    let status = container_status(&cluster, "sick", "a restart", |s| s["restartCount"].as_u64() >= Some(1)).await;
    let message = status.pointer("/lastState/terminated/message").and_then(Value::as_str).unwrap_or_default();
    assert!(message.contains("Liveness probe failed: HTTP probe failed with statuscode: 404"), "{status}");
    // An exec probe runs the component as a command: `exit 1` fails it.
    create(
        &cluster,
        "/api/v1/namespaces/default/pods",
        pod(
            "execed",
            "hello-command:v1",
            serde_json::json!(["sleep", "600000"]),
            serde_json::json!({
        "livenessProbe": {"exec": {"command": ["probe", "exit", "1"]}, "periodSeconds": 1, "failureThreshold": 1}}),
        ),
    )
    .await;
    let status =
        container_status(&cluster, "execed", "an exec-probe restart", |s| s["restartCount"].as_u64() >= Some(1)).await;
    assert!(
        status
            .pointer("/lastState/terminated/message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .contains("command exited with 1"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pod_is_graceful_and_the_node_removes_it_once_stopped() {
    let cluster = Cluster::start_with_node(&[]).await;
    push(&cluster, "hello-command");
    create(&cluster, "/api/v1/namespaces/default/pods", serde_json::json!({
        "metadata": {"name": "sleeper"},
        "spec": {"terminationGracePeriodSeconds": 3, "containers": [{"name": "c", "image": "hello-command:v1", "args": ["sleep", "600000"]}]}})).await;
    container_status(&cluster, "sleeper", "running", |s| s.pointer("/state/running").is_some()).await;
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["delete", "pod", "sleeper", "--wait=false"]);
    assert!(ok, "{err}");
    // Marked, not gone: the node has the grace period to stop it.
    let marked = pod(&cluster, "sleeper").await;
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 3, "{marked}");
    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    let (ok, out, _) = cluster.kubectl(KUBECTL, &["get", "pod", "sleeper"]);
    assert!(ok && out.contains("Terminating"), "{out}");
    // The command does not end on its own: it is stopped at the deadline, then the pod goes.
    wait_for("the pod to be removed", Duration::from_secs(30), || async {
        let (code, _) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods/sleeper", None).await;
        (code == 404).then_some(())
    })
    .await;

    // --grace-period=0 --force removes it at once; a pod no node took goes at once too.
    create(
        &cluster,
        "/api/v1/namespaces/default/pods",
        serde_json::json!({
        "metadata": {"name": "forced"},
        "spec": {"containers": [{"name": "c", "image": "hello-command:v1", "args": ["sleep", "600000"]}]}}),
    )
    .await;
    container_status(&cluster, "forced", "running", |s| s.pointer("/state/running").is_some()).await;
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["delete", "pod", "forced", "--grace-period=0", "--force"]);
    assert!(ok, "{err}");
    let (code, _) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods/forced", None).await;
    assert_eq!(code, 404);
    create(
        &cluster,
        "/api/v1/namespaces/default/pods",
        serde_json::json!({
        "metadata": {"name": "nowhere"},
        "spec": {"nodeSelector": {"no": "such-node"}, "containers": [{"name": "c", "image": "hello-command:v1"}]}}),
    )
    .await;
    let (code, gone) = cluster.request(Method::DELETE, "/api/v1/namespaces/default/pods/nowhere", None).await;
    assert_eq!(code, 200, "{gone}");
    let (code, _) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods/nowhere", None).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_reads_a_pods_log() {
    use kube::api::{Api, LogParams};
    let cluster = Cluster::start_with_node(&[]).await;
    push(&cluster, "hello-command");
    let (ok, _, err) = cluster
        .kubectl(KUBECTL, &["run", "said", "--image=hello-command:v1", "--restart=Never", "--", "count", "2", "1"]);
    assert!(ok, "{err}");
    phase(&cluster, "said", "Succeeded").await;
    let kubeconfig = kube::config::Kubeconfig::read_from(&cluster.api.kubeconfig).expect("the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(kube::Client::try_from(config).expect("client"), "default");
    assert_eq!(pods.logs("said", &LogParams::default()).await.expect("logs"), "1\n2\n");
    let last = pods
        .logs("said", &LogParams { tail_lines: Some(1), timestamps: true, ..Default::default() })
        .await
        .expect("logs");
    assert!(last.ends_with("Z 2\n") && last.lines().count() == 1, "{last}");
    let err = pods.logs("said", &LogParams { container: Some("nope".into()), ..Default::default() }).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 400 && s.message.contains("container nope is not valid for pod said")),
        "{err:?}"
    );
}

/// Run kubectl with `input` on its stdin.
fn kubectl_with_input(cluster: &Cluster, args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&cluster.api.kubeconfig)
        .args(args)
        .env("HOME", cluster.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_runs_the_component_as_a_command_beside_the_container() {
    let cluster = Cluster::start_with_node(&[]).await;
    push(&cluster, "hello-http");
    push(&cluster, "hello-command");
    push(&cluster, "hello-http-py");
    let (ok, _, err) =
        cluster.kubectl(KUBECTL, &["run", "web", "--image=hello-http:v1", "--port=8080", "--env=GREETING=hi there"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cluster
        .kubectl(KUBECTL, &["run", "waits", "--image=hello-command:v1", "--restart=Never", "--", "sleep", "600000"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["run", "py", "--image=hello-http-py:v1", "--port=8080"]);
    assert!(ok, "{err}");
    for name in ["web", "waits", "py"] {
        container_status(&cluster, name, &format!("{name} to run"), |s| s["state"]["running"].is_object()).await;
    }

    // The container's environment, its output on stdout.
    let (ok, out, err) = cluster.kubectl(KUBECTL, &["exec", "web", "--", "hello-http", "env", "GREETING"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hi there\n");
    // An exit code, and stderr apart from stdout.
    let (ok, out, err) = cluster.kubectl(KUBECTL, &["exec", "web", "--", "hello-http", "exit", "3"]);
    assert!(!ok, "{out}");
    assert!(err.contains("exiting with 3"), "the command's stderr: {err}");
    assert!(err.contains("command terminated with exit code 3"), "{err}");
    // stdin: what is typed is read until it ends.
    let (ok, out, err) =
        kubectl_with_input(&cluster, &["exec", "-i", "waits", "--", "hello-command", "stdin"], "typed\nlines\n");
    assert!(ok, "{err}");
    assert_eq!(out, "typed\nlines\n");
    // A component with no wasi:cli/run: 126 and why.
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["exec", "py", "--", "anything"]);
    assert!(!ok);
    assert!(err.contains("exports no wasi:cli/run"), "{err}");
    assert!(err.contains("command terminated with exit code 126"), "{err}");
    // The API server's words for a container that is not there.
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["exec", "web", "-c", "nope", "--", "x"]);
    assert!(!ok);
    assert!(err.contains("container nope is not valid for pod web"), "{err}");
    // The Python server answers on its pod IP.
    let ip = pod(&cluster, "py").await["status"]["podIP"].as_str().unwrap().to_string();
    let answer = wait_for("the Python server to answer", Duration::from_secs(60), || async {
        reqwest::get(format!("http://{ip}:8080/")).await.ok()?.text().await.ok()
    })
    .await;
    assert_eq!(answer, "hello from py in Python\n");
}

/// One container's CPU nanoseconds and memory bytes in the node's stats summary.
async fn container_usage(cluster: &Cluster, pod: &str) -> Option<(u64, u64)> {
    let (code, summary) = cluster.request(Method::GET, "/api/v1/nodes/node-a/proxy/stats/summary", None).await;
    assert_eq!(code, 200, "{summary}");
    let stats = summary["pods"].as_array()?.iter().find(|p| p["podRef"]["name"] == pod)?;
    let container = &stats["containers"][0];
    Some((container["cpu"]["usageCoreNanoSeconds"].as_u64()?, container["memory"]["workingSetBytes"].as_u64()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_shows_usage_and_a_cpu_limit_holds_a_spinning_container() {
    let cluster = Cluster::start_with_node(&[]).await;
    push(&cluster, "hello-command");
    let spinner = |name: &str, limits: Value| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "spin"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "spin", "image": "hello-command:v1",
                "args": ["alloc", "4", "spin", "600000"], "resources": {"limits": limits}}]}})
    };
    create(&cluster, "/api/v1/namespaces/default/pods", spinner("capped", serde_json::json!({"cpu": "100m"}))).await;
    create(&cluster, "/api/v1/namespaces/default/pods", spinner("free", serde_json::json!({}))).await;
    for name in ["capped", "free"] {
        container_status(&cluster, name, &format!("{name} to run"), |s| s["state"]["running"].is_object()).await;
    }

    // kubectl top reads metrics.k8s.io: both pods, with CPU and memory (4 MiB allocated and more).
    let top = wait_for("kubectl top pods to list both pods", Duration::from_secs(30), || async {
        let (ok, out, _) = cluster.kubectl(KUBECTL, &["top", "pods", "-l", "app=spin", "--no-headers"]);
        (ok && out.lines().count() == 2).then_some(out)
    })
    .await;
    for line in top.lines() {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let mebibytes: u64 = columns[2].trim_end_matches("Mi").parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(columns[1].ends_with('m') && mebibytes >= 4, "NAME CPU MEMORY: {line}");
    }
    let (ok, out, err) = cluster.kubectl(KUBECTL, &["top", "node", "--no-headers"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("node-a ") && out.contains('%'), "{out}");
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["top", "pod", "nowhere"]);
    assert!(!ok && err.contains("not found"), "{err}");

    // The limit holds: over a few seconds the capped container gets 100m (a tenth of a
    // core), with a period's slack; the other one is counted too. Only an upper bound is
    // asserted: a busy machine gives either of them less, never the capped one more.
    let (capped_before, _) = container_usage(&cluster, "capped").await.expect("capped's stats");
    let (free_before, _) = container_usage(&cluster, "free").await.expect("free's stats");
    let started = std::time::Instant::now();
    wait_for("three seconds of the spinners", Duration::from_secs(10), || async {
        (started.elapsed() >= Duration::from_secs(3)).then_some(())
    })
    .await;
    let (capped_after, capped_memory) = container_usage(&cluster, "capped").await.expect("capped's stats");
    let (free_after, _) = container_usage(&cluster, "free").await.expect("free's stats");
    let wall = started.elapsed().as_secs_f64();
    let capped_cores = (capped_after - capped_before) as f64 / 1e9 / wall;
    let free_cores = (free_after - free_before) as f64 / 1e9 / wall;
    eprintln!("over {wall:.1} s: capped {capped_cores:.3} cores, free {free_cores:.3} cores");
    assert!(capped_cores <= 0.1 + 0.05 / wall + 0.02, "the capped container used {capped_cores:.3} cores");
    assert!(free_after > free_before, "the free container's CPU time grows");
    assert!(capped_memory >= 4 << 20, "4 MiB allocated are counted: {capped_memory}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_runs_exec_and_reads_the_exit_status() {
    use kube::api::{Api, AttachParams};
    use tokio::io::AsyncReadExt;
    let cluster = Cluster::start_with_node(&[]).await;
    push(&cluster, "hello-http");
    let (ok, _, err) =
        cluster.kubectl(KUBECTL, &["run", "web", "--image=hello-http:v1", "--env=GREETING=from kube-rs"]);
    assert!(ok, "{err}");
    container_status(&cluster, "web", "web to run", |s| s["state"]["running"].is_object()).await;
    let kubeconfig = kube::config::Kubeconfig::read_from(&cluster.api.kubeconfig).expect("the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(kube::Client::try_from(config).expect("client"), "default");
    let run = |argv: Vec<&'static str>| {
        let pods = pods.clone();
        async move {
            let mut process =
                pods.exec("web", argv, &AttachParams::default().stderr(true)).await.expect("exec is accepted");
            let mut out = String::new();
            process.stdout().expect("stdout").read_to_string(&mut out).await.expect("stdout is read");
            let mut err = String::new();
            process.stderr().expect("stderr").read_to_string(&mut err).await.expect("stderr is read");
            let status = process.take_status().expect("a status").await.expect("the status arrives");
            (out, err, status)
        }
    };
    let (out, _, status) = run(vec!["hello-http", "env", "GREETING"]).await;
    assert_eq!(out, "from kube-rs\n");
    assert_eq!(status.status.as_deref(), Some("Success"), "{status:?}");
    let (_, err, status) = run(vec!["hello-http", "exit", "3"]).await;
    assert_eq!(err, "exiting with 3\n");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"), "{status:?}");
    let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
    assert_eq!((causes[0].reason.as_deref(), causes[0].message.as_deref()), (Some("ExitCode"), Some("3")));
}

/// A `kubernetes.io/dockerconfigjson` Secret for `registry` (as `kubectl create secret
/// docker-registry` makes one).
fn pull_secret(name: &str, registry: &str, user: &str, password: &str) -> Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let config = serde_json::json!({"auths": {registry: {"username": user, "password": password, "auth": b64(&format!("{user}:{password}"))}}});
    serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64(&config.to_string())}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_pull_from_another_registry_with_their_pull_secrets() {
    let registry = wasmkube_tests::registry::TestRegistry::start().await;
    registry.push(&workload_component("hello-command"), "team/hello", "v1").await;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("configs:\n  \"{}\":\n    tls:\n      ca_file: {}\n", registry.address, registry.ca_file.display()),
    )
    .unwrap();
    let cluster = Cluster::start_with_node(&["--registry-config", config.path().to_str().unwrap()]).await;
    let secrets = "/api/v1/namespaces/default/secrets";
    create(&cluster, secrets, pull_secret("good", &registry.address, &registry.user, &registry.password)).await;
    create(&cluster, secrets, pull_secret("wrong", &registry.address, &registry.user, "wrong-password")).await;
    let image = format!("{}/team/hello:v1", registry.address);
    let pod = |name: &str, secret: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "imagePullSecrets": [{"name": secret}],
                "containers": [{"name": "c", "image": image, "args": ["echo", "pulled"]}]}})
    };
    create(&cluster, "/api/v1/namespaces/default/pods", pod("pulled", "good")).await;
    create(&cluster, "/api/v1/namespaces/default/pods", pod("refused", "wrong")).await;

    let done = phase(&cluster, "pulled", "Succeeded").await;
    let status = &done["status"]["containerStatuses"][0];
    let image_id = status["imageID"].as_str().unwrap();
    assert!(image_id.starts_with(&format!("{}/team/hello@sha256:", registry.address)), "{status}");
    assert_eq!(logs(&cluster, "pulled", "c"), "pulled\n");
    // The wrong password: ErrImagePull (then ImagePullBackOff) naming the 401.
    let waiting = container_status(&cluster, "refused", "the pull to fail", |s| {
        matches!(s["state"]["waiting"]["reason"].as_str(), Some("ErrImagePull" | "ImagePullBackOff"))
    })
    .await;
    let message = waiting["state"]["waiting"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("401 Unauthorized") && message.contains(&image), "{waiting}");
    // The node lists what it holds.
    let listed = wait_for("node.status.images to list the image", Duration::from_secs(30), || async {
        let (_, node) = cluster.request(Method::GET, "/api/v1/nodes/node-a", None).await;
        let images = node["status"]["images"].as_array()?.clone();
        images.into_iter().find(|i| i["names"].as_array().is_some_and(|n| n.iter().any(|n| n == image.as_str())))
    })
    .await;
    assert_eq!(listed["names"][0], image_id, "{listed}");
    assert!(listed["sizeBytes"].as_u64().unwrap() > 10_000, "{listed}");
    // Without a secret the registry says 401 as well; with imagePullPolicy: Never a second pod
    // of the image starts from the node's cache.
    let cached = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cached"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": image,
            "imagePullPolicy": "Never", "args": ["echo", "from the cache"]}]}});
    create(&cluster, "/api/v1/namespaces/default/pods", cached).await;
    phase(&cluster, "cached", "Succeeded").await;
    assert_eq!(logs(&cluster, "cached", "c"), "from the cache\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_writes_to_a_containers_stdin_and_follows_its_output() {
    let cluster = Cluster::start_with_node(&[]).await;
    push(&cluster, "hello-command");
    let reader = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "hello-command:v1",
            "args": ["stdin"], "stdin": true, "stdinOnce": true}]}});
    create(&cluster, "/api/v1/namespaces/default/pods", reader).await;
    container_status(&cluster, "reader", "reader to run", |s| s["state"]["running"].is_object()).await;
    // What is typed reaches the container; what it prints comes back; the end of input
    // (stdinOnce) ends the container, and with it the session.
    let (ok, out, err) = kubectl_with_input(&cluster, &["attach", "-i", "reader"], "typed in\n");
    assert!(ok, "{err}");
    assert!(out.contains("typed in"), "{out}");
    phase(&cluster, "reader", "Succeeded").await;
    assert_eq!(logs(&cluster, "reader", "c"), "typed in\n");
}
