//! Admission plugins in the real server: the default plugins (pod security, defaults)
//! decide real kubectl requests; a plugin folder is followed (load, reload, unload); a
//! plugin that traps, loops, eats memory or reads beyond its capabilities fails that call
//! only, as its failure policy says; a module that is not a component leaves the old
//! version serving.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmkube_tests::{plugin_component, wait_for, Backend, Cluster, KUBECTLS};

const PRIVILEGED: &str = "apiVersion: v1
kind: Pod
metadata: {name: root}
spec:
  hostNetwork: true
  containers:
  - {name: c, image: busybox, securityContext: {privileged: true}}
";

const PLAIN: &str = "apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  containers:
  - {name: c, image: busybox}
";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_plugins_enforce_pod_security_and_fill_defaults() {
    let cluster = Cluster::start_on(Backend::Embedded).await;
    let privileged = write(cluster.dir.path(), "root.yaml", PRIVILEGED);
    let plain = write(cluster.dir.path(), "plain.yaml", PLAIN);
    for kubectl in KUBECTLS {
        let (ok, _, err) = cluster.kubectl(kubectl, &["create", "-f", &privileged]);
        assert!(!ok, "a privileged pod is refused out of the box");
        assert!(
            err.contains("Forbidden")
                && err.contains(r#"pods "root" is forbidden"#)
                && err.contains(r#"violates PodSecurity "baseline:latest""#)
                && err.contains("privileged")
                && err.contains("hostNetwork=true"),
            "{err}"
        );
        let (ok, _, err) = cluster.kubectl(kubectl, &["create", "-f", &plain]);
        assert!(ok, "{err}");
        let (ok, out, err) = cluster.kubectl(kubectl, &["get", "pod", "plain", "-o", "json"]);
        assert!(ok, "{err}");
        let pod: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["resources"]["requests"], json!({"cpu": "100m", "memory": "128Mi"}));
        assert_eq!(pod["metadata"]["labels"]["wasmkube.io/defaulted"], "true");
        let (ok, _, err) = cluster.kubectl(kubectl, &["delete", "pod", "plain"]);
        assert!(ok, "{err}");
    }
    // The namespace's level decides: privileged allows, restricted refuses even a plain pod.
    let kubectl = KUBECTLS[0];
    for (namespace, level) in [("open", "privileged"), ("locked", "restricted")] {
        let (ok, _, err) = cluster.kubectl(kubectl, &["create", "namespace", namespace]);
        assert!(ok, "{err}");
        let label = format!("pod-security.kubernetes.io/enforce={level}");
        let (ok, _, err) = cluster.kubectl(kubectl, &["label", "namespace", namespace, &label]);
        assert!(ok, "{err}");
    }
    let (ok, _, err) = cluster.kubectl(kubectl, &["create", "-n", "open", "-f", &privileged]);
    assert!(ok, "privileged namespaces allow privileged pods: {err}");
    let (ok, _, err) = cluster.kubectl(kubectl, &["create", "-n", "locked", "-f", &plain]);
    assert!(
        !ok && err.contains(r#"violates PodSecurity "restricted:latest""#) && err.contains("runAsNonRoot"),
        "{err}"
    );

    // Every decision names the version that made it.
    let url = format!("{}/api/v1/namespaces/default/pods", cluster.api.base);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "seen"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let response = cluster.api.client.post(url).json(&pod).send().await.expect("create");
    assert_eq!(response.status().as_u16(), 201);
    let decided =
        response.headers().get("x-wasmkube-admission").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(decided.contains("defaults=sha256:") && decided.contains("pod-security=sha256:"), "{decided}");
    // ... and the plugins' calls are counted.
    let (_, metrics) = cluster.api.get("/metrics").await.expect("metrics");
    assert!(
        metrics.contains(r#"wasmkube_plugin_calls_total{function="validate",outcome="deny",plugin="pod-security"}"#),
        "{metrics}"
    );
}

/// A manifest for the misbehave plugin on ConfigMap creates.
fn manifest(behaviour: &str, policy: &str, extra: &str) -> String {
    format!(
        "apiVersion: wasmkube.io/v1alpha1
kind: Plugin
metadata: {{name: misbehave}}
spec:
  kind: admission
  module: misbehave.wasm
  phases: [validate]
  rules: [{{apiGroups: [''], resources: [configmaps], operations: [CREATE]}}]
  config: {{behaviour: {behaviour}}}
  failurePolicy: {policy}
  timeout: 300ms
{extra}"
    )
}

/// Replace a file atomically (what a deploy tool does), so the watcher never reads half of it.
fn replace(dir: &Path, name: &str, bytes: &[u8]) {
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, bytes).unwrap();
    std::fs::rename(&temp, dir.join(name)).unwrap();
}

/// Create a ConfigMap; the status code and the Status message (or "").
async fn create_configmap(cluster: &Cluster, name: &str) -> (u16, String) {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    let (code, answer) =
        cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/configmaps", Some(body)).await;
    (code, answer["message"].as_str().unwrap_or_default().to_string())
}

/// Wait until ConfigMap creates answer as `expected` says (each try with a new name).
async fn until(cluster: &Cluster, what: &str, expected: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let mut n = 0u32;
    wait_for(what, Duration::from_secs(20), || {
        n += 1;
        let name = format!("cm-{}-{n}", what.len());
        let expected = &expected;
        async move {
            let (code, message) = create_configmap(cluster, &name).await;
            expected(code, &message).then_some((code, message))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_folder_is_followed_and_misbehaving_plugins_fail_one_call() {
    let plugins = tempfile::tempdir().unwrap();
    let dir = plugins.path();
    std::fs::copy(plugin_component("misbehave"), dir.join("misbehave.wasm")).unwrap();
    replace(dir, "misbehave.yaml", manifest("deny", "Fail", "").as_bytes());
    let cluster = Cluster::start_with(Backend::Embedded, &["--plugin-dir", dir.to_str().unwrap()]).await;

    // Loaded before the server was ready: every create is refused with the plugin's message.
    let (code, message) = create_configmap(&cluster, "first").await;
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains(
            r#"configmaps "first" is forbidden: plugin "misbehave" denied the request: misbehave denies first"#
        ),
        "{message}"
    );

    // A trap fails that call; Fail refuses it, Ignore lets it through.
    replace(dir, "misbehave.yaml", manifest("trap", "Fail", "").as_bytes());
    let (_, message) = until(&cluster, "trap refused", |code, _| code == 500).await;
    assert!(message.contains("trapped"), "{message}");
    replace(dir, "misbehave.yaml", manifest("trap", "Ignore", "").as_bytes());
    until(&cluster, "trap ignored", |code, _| code == 201).await;

    // An endless loop is stopped at the deadline.
    replace(dir, "misbehave.yaml", manifest("loop", "Fail", "").as_bytes());
    let (_, message) = until(&cluster, "loop refused", |code, _| code == 500).await;
    assert!(message.contains("timed out after 300ms"), "{message}");
    let started = Instant::now();
    let (code, _) = create_configmap(&cluster, "timed").await;
    assert_eq!(code, 500);
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline holds: {:?}", started.elapsed());
    // Meanwhile everything else is served.
    let (code, _) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/configmaps", None).await;
    assert_eq!(code, 200);

    // Unbounded allocation ends at the memory limit.
    replace(dir, "misbehave.yaml", manifest("alloc", "Fail", "  memoryLimit: 16Mi\n").as_bytes());
    let (_, message) = until(&cluster, "alloc refused", |code, m| code == 500 && !m.contains("timed out")).await;
    assert!(message.contains("out of memory"), "counted as running out of memory, not as a trap: {message}");

    // Reading beyond the manifest's capabilities is Forbidden (the plugin reports the answer).
    replace(dir, "misbehave.yaml", manifest("read-secrets", "Fail", "").as_bytes());
    let (_, message) = until(&cluster, "client refused", |code, m| code == 403 && m.contains("client refused")).await;
    assert!(message.contains("Forbidden") && message.contains("may not list secrets"), "{message}");
    // Granted, it reads.
    let granted = "  capabilities: [{apiGroups: [''], resources: [secrets], verbs: [list]}]\n";
    replace(dir, "misbehave.yaml", manifest("read-secrets", "Fail", granted).as_bytes());
    until(&cluster, "client granted", |code, m| code == 403 && m.contains("read 0 secrets")).await;

    // A module that is not a component: refused, and the version serving stays.
    replace(dir, "misbehave.yaml", manifest("deny", "Fail", "").as_bytes());
    until(&cluster, "deny again", |code, m| code == 403 && m.contains("misbehave denies")).await;
    replace(dir, "misbehave.wasm", b"this is not WebAssembly");
    wait_for("the failed load to be counted", Duration::from_secs(20), || async {
        let (_, metrics) = cluster.api.get("/metrics").await?;
        metrics.contains(r#"wasmkube_plugin_loads_total{outcome="failed",plugin="misbehave"}"#).then_some(())
    })
    .await;
    let (code, message) = create_configmap(&cluster, "still").await;
    assert_eq!(code, 403, "the old version still serves: {message}");
    assert!(message.contains("misbehave denies still"), "{message}");

    // Removing the manifest unloads the plugin.
    std::fs::remove_file(dir.join("misbehave.yaml")).unwrap();
    until(&cluster, "unloaded", |code, _| code == 201).await;
    let (_, metrics) = cluster.api.get("/metrics").await.expect("metrics");
    for outcome in ["trap", "timeout", "oom"] {
        let line =
            format!(r#"wasmkube_plugin_calls_total{{function="validate",outcome="{outcome}",plugin="misbehave"}}"#);
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
}

/// One create under load: when it was sent and answered, its code, and which version of
/// the plugin decided it (the tag its warning names).
struct Answer {
    sent: Instant,
    received: Instant,
    code: u16,
    tag: Option<i64>,
}

/// The tag in a `misbehave[<tag>] saw ...` warning.
fn tag_of(warning: &str) -> Option<i64> {
    let rest = &warning[warning.find("misbehave[")? + "misbehave[".len()..];
    rest[..rest.find(']')?].parse().ok()
}

/// Where the plugin under load comes from.
enum Source {
    Folder(std::path::PathBuf),
    /// Plugin objects (server-side applied) naming this module.
    Objects(std::path::PathBuf),
}

/// Make version `tag` of the plugin (it warns naming `tag`) the one serving, through `source`.
async fn switch(cluster: &Cluster, source: &Source, tag: i64) {
    match source {
        Source::Folder(dir) => replace(
            dir,
            "misbehave.yaml",
            manifest(&format!("warn, tag: {tag}"), "Fail", &format!("  order: {tag}\n")).as_bytes(),
        ),
        Source::Objects(module) => {
            let object = json!({"apiVersion": "wasmkube.io/v1alpha1", "kind": "Plugin", "metadata": {"name": "misbehave"},
                "spec": {"kind": "admission", "module": module.to_str().unwrap(), "phases": ["validate"],
                    "rules": [{"apiGroups": [""], "resources": ["configmaps"], "operations": ["CREATE"]}],
                    "config": {"behaviour": "warn", "tag": tag}, "failurePolicy": "Fail", "timeout": "300ms", "order": tag}});
            let url = format!(
                "{}/apis/wasmkube.io/v1alpha1/plugins/misbehave?fieldManager=test&force=true",
                cluster.api.base
            );
            let response = cluster
                .api
                .client
                .patch(url)
                .header("content-type", "application/apply-patch+yaml")
                .body(object.to_string())
                .send()
                .await
                .expect("apply");
            assert!(response.status().is_success(), "apply: {}", response.status());
        }
    }
}

/// Creates from four clients while the plugin is replaced 20 times, each version naming
/// itself in its warning: none fails, each new version decides within 1 s, and once it has
/// answered no request sent after is decided by an older one.
async fn reload_under_load(cluster: std::sync::Arc<Cluster>, source: Source) {
    switch(&cluster, &source, 0).await;
    // Wait until the first version decides (a create it admitted names it), not merely
    // until creates pass (they pass before any plugin is loaded, too).
    let started = Instant::now();
    let mut n = 0u32;
    loop {
        n += 1;
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("first-{n}")}});
        let url = format!("{}/api/v1/namespaces/default/configmaps", cluster.api.base);
        if let Ok(response) = cluster.api.client.post(url).json(&body).send().await {
            let warning = response.headers().get("warning").and_then(|v| v.to_str().ok()).unwrap_or_default();
            if tag_of(warning) == Some(0) {
                break;
            }
        }
        // On a timeout the Cluster prints the server's last lines as it drops.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out after 20s waiting for the first version to decide"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answers = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<Answer>::new()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for client in 0..4 {
        let (cluster, answers, stopped) = (cluster.clone(), answers.clone(), stopped.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !*stopped.borrow() {
                n += 1;
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("load-{client}-{n}")}});
                let sent = Instant::now();
                let url = format!("{}/api/v1/namespaces/default/configmaps", cluster.api.base);
                let response = cluster.api.client.post(url).json(&body).send().await.expect("create under load");
                let tag = response.headers().get("warning").and_then(|v| v.to_str().ok()).and_then(tag_of);
                answers.lock().push(Answer { sent, received: Instant::now(), code: response.status().as_u16(), tag });
            }
        }));
    }
    let mut switches = Vec::new();
    for tag in 1..=20 {
        let at = Instant::now();
        switch(&cluster, &source, tag).await;
        let seen = wait_for("the new version to decide", Duration::from_secs(5), || {
            let answers = answers.clone();
            async move { answers.lock().iter().find(|a| a.sent >= at && a.tag == Some(tag)).map(|a| a.received) }
        })
        .await;
        switches.push((tag, at, seen));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let answers = answers.lock();
    let failed: Vec<u16> = answers.iter().filter(|a| a.code != 201).map(|a| a.code).collect();
    assert!(failed.is_empty(), "{} of {} creates failed during the reloads: {failed:?}", failed.len(), answers.len());
    let untagged = answers.iter().filter(|a| a.tag.is_none()).count();
    assert_eq!(untagged, 0, "every create is decided by some version of the plugin");
    for (tag, at, seen) in &switches {
        assert!(
            seen.duration_since(*at) < Duration::from_secs(1),
            "switch {tag} took {:?} to be seen",
            seen.duration_since(*at)
        );
        // Once version `tag` has answered, no request sent after that is decided by an
        // older version (a newer one may, once the next switch lands).
        let stale: Vec<i64> =
            answers.iter().filter(|a| a.sent > *seen).filter_map(|a| a.tag).filter(|t| t < tag).collect();
        assert!(
            stale.is_empty(),
            "after version {tag} answered, older versions decided {} requests: {stale:?}",
            stale.len()
        );
    }
    eprintln!("{} creates during 20 reloads, none failed", answers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_folder_plugin_under_load_fails_no_request() {
    let plugins = tempfile::tempdir().unwrap();
    let dir = plugins.path().to_path_buf();
    std::fs::copy(plugin_component("misbehave"), dir.join("misbehave.wasm")).unwrap();
    let cluster =
        std::sync::Arc::new(Cluster::start_with(Backend::Embedded, &["--plugin-dir", dir.to_str().unwrap()]).await);
    reload_under_load(cluster, Source::Folder(dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_plugin_object_under_load_fails_no_request() {
    let cluster = std::sync::Arc::new(Cluster::start_on(Backend::Embedded).await);
    reload_under_load(cluster, Source::Objects(plugin_component("misbehave"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_objects_load_report_and_unload() {
    let cluster = Cluster::start_on(Backend::Embedded).await;
    let module = plugin_component("misbehave");
    let object = |behaviour: &str, module: &str| {
        format!(
            "apiVersion: wasmkube.io/v1alpha1
kind: Plugin
metadata: {{name: gate}}
spec:
  kind: admission
  module: {module}
  phases: [validate]
  rules: [{{apiGroups: [''], resources: [configmaps], operations: [CREATE]}}]
  config: {{behaviour: {behaviour}}}
  timeout: 500ms
"
        )
    };
    let kubectl = KUBECTLS[0];
    let path = write(cluster.dir.path(), "gate.yaml", &object("deny", module.to_str().unwrap()));
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", &path]);
    assert!(ok, "{err}");
    let (_, message) =
        until(&cluster, "the Plugin to deny", |code, m| code == 403 && m.contains("plugin \"gate\"")).await;
    assert!(message.contains("misbehave denies"), "{message}");
    let status = wait_for("the Plugin's status", Duration::from_secs(20), || async {
        let (_, plugin) = cluster.request(reqwest::Method::GET, "/apis/wasmkube.io/v1alpha1/plugins/gate", None).await;
        let ready = plugin["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        ready.then(|| plugin["status"].clone())
    })
    .await;
    let digest = status["digest"].as_str().expect("a digest").to_string();
    assert!(digest.starts_with("sha256:"), "{status}");
    let (ok, out, err) = cluster.kubectl(kubectl, &["get", "plugins"]);
    assert!(
        ok && out.lines().any(|l| l.starts_with("gate") && l.contains("admission") && l.contains("True")),
        "{out}{err}"
    );

    // A broken version: the status says why, and the version serving stays.
    let broken = cluster.dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm garbage").unwrap();
    let path = write(cluster.dir.path(), "gate.yaml", &object("deny", broken.to_str().unwrap()));
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", &path]);
    assert!(ok, "{err}");
    let status = wait_for("the failed load in the status", Duration::from_secs(20), || async {
        let (_, plugin) = cluster.request(reqwest::Method::GET, "/apis/wasmkube.io/v1alpha1/plugins/gate", None).await;
        plugin["status"]["lastError"].as_str().is_some().then(|| plugin["status"].clone())
    })
    .await;
    assert!(status["lastError"].as_str().unwrap_or_default().contains("not a WebAssembly component"), "{status}");
    assert_eq!(status["digest"], digest, "{status}");
    let (code, _) = create_configmap(&cluster, "kept").await;
    assert_eq!(code, 403, "the old version still serves");
    // A component of the wrong world: refused with the world named; the old one serves on.
    let wrong = plugin_component("not_admission");
    let path = write(cluster.dir.path(), "gate.yaml", &object("deny", wrong.to_str().unwrap()));
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", &path]);
    assert!(ok, "{err}");
    let status = wait_for("the wrong world in the status", Duration::from_secs(20), || async {
        let (_, plugin) = cluster.request(reqwest::Method::GET, "/apis/wasmkube.io/v1alpha1/plugins/gate", None).await;
        let error = plugin["status"]["lastError"].as_str().unwrap_or_default().to_string();
        error.contains("does not implement the world").then(|| plugin["status"].clone())
    })
    .await;
    assert!(status["lastError"].as_str().unwrap_or_default().contains("wasmkube:plugin/admission"), "{status}");
    assert_eq!(status["digest"], digest, "{status}");
    let (code, _) = create_configmap(&cluster, "kept-again").await;
    assert_eq!(code, 403, "the old version still serves");

    // Deleting the Plugin unloads it; Plugin objects themselves never pass plugins.
    let (ok, _, err) = cluster.kubectl(kubectl, &["delete", "plugin", "gate"]);
    assert!(ok, "{err}");
    until(&cluster, "the Plugin to be unloaded", |code, _| code == 201).await;

    // A plugin that fails closed (failurePolicy defaults to Fail) and has never loaded
    // refuses what it would decide, as an unreachable webhook does; one that fails open
    // does not; a version that loads takes over, and deleting it ends the refusals.
    let path = write(cluster.dir.path(), "gate.yaml", &object("allow", broken.to_str().unwrap()));
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", &path]);
    assert!(ok, "{err}");
    let (_, message) =
        until(&cluster, "the unloadable Plugin to fail closed", |code, m| code == 500 && m.contains("plugin \"gate\""))
            .await;
    assert!(message.contains("not loaded") && message.contains("not a WebAssembly component"), "{message}");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "not-gated"}});
    let (code, answer) =
        cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/secrets", Some(secret)).await;
    assert_eq!(code, 201, "only what its rules name is refused: {answer}");
    let ignoring = object("allow", broken.to_str().unwrap())
        .replace("  timeout: 500ms\n", "  timeout: 500ms\n  failurePolicy: Ignore\n");
    let path = write(cluster.dir.path(), "gate.yaml", &ignoring);
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", &path]);
    assert!(ok, "{err}");
    until(&cluster, "the Plugin that fails open to let creates through", |code, _| code == 201).await;
    let path = write(cluster.dir.path(), "gate.yaml", &object("allow", broken.to_str().unwrap()));
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", &path]);
    assert!(ok, "{err}");
    until(&cluster, "the Plugin to fail closed again", |code, _| code == 500).await;
    let path = write(cluster.dir.path(), "gate.yaml", &object("deny", module.to_str().unwrap()));
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", &path]);
    assert!(ok, "{err}");
    until(&cluster, "a version that loads to decide", |code, m| code == 403 && m.contains("misbehave denies")).await;
    let path = write(cluster.dir.path(), "gate.yaml", &object("allow", broken.to_str().unwrap()));
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", &path]);
    assert!(ok, "{err}");
    wait_for("the failed load beside the version serving", Duration::from_secs(20), || async {
        let (_, plugin) = cluster.request(reqwest::Method::GET, "/apis/wasmkube.io/v1alpha1/plugins/gate", None).await;
        let reason = plugin["status"]["conditions"][0]["reason"].as_str().unwrap_or_default().to_string();
        (reason == "OldVersionServing").then_some(())
    })
    .await;
    let (code, message) = create_configmap(&cluster, "old-serves").await;
    assert_eq!(code, 403, "a version serving decides, not the failure to load the next: {message}");
    let (ok, _, err) = cluster.kubectl(kubectl, &["delete", "plugin", "gate"]);
    assert!(ok, "{err}");
    until(&cluster, "the Plugin to be unloaded", |code, _| code == 201).await;
}

/// Pods to decide, one image list each.
const FIXTURES: &[&[&str]] = &[
    &["nginx:1.27"],
    &["nginx"],
    &["nginx:latest"],
    &["registry.example.com/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
    &["busybox:1.36", "app:latest"],
    &["localhost:5000/app"],
    &["localhost:5000/app:2.1"],
];

/// Create each fixture pod; each answer's code and message.
async fn decide_fixtures(cluster: &Cluster, round: &str) -> Vec<(u16, String)> {
    let mut answers = Vec::new();
    for (i, images) in FIXTURES.iter().enumerate() {
        let containers: Vec<Value> =
            images.iter().enumerate().map(|(j, image)| json!({"name": format!("c{j}"), "image": image})).collect();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("{round}-{i}")}, "spec": {"containers": containers}});
        let (code, answer) = cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/pods", Some(pod)).await;
        let message = answer["message"].as_str().unwrap_or_default().replace(&format!("\"{round}-{i}\""), "\"<pod>\"");
        answers.push((code, message));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_decides_like_its_rust_twin() {
    let python = plugin_component("examples/no_latest_py");
    let rust = plugin_component("no_latest");
    let plugins = tempfile::tempdir().unwrap();
    let dir = plugins.path().to_path_buf();
    std::fs::copy(&python, dir.join("no_latest_py.wasm")).unwrap();
    std::fs::copy(&rust, dir.join("no_latest.wasm")).unwrap();
    let manifest = |module: &str| {
        format!(
            "apiVersion: wasmkube.io/v1alpha1\nkind: Plugin\nmetadata: {{name: no-latest}}\nspec:\n  kind: admission\n  module: {module}\n  phases: [validate]\n  rules: [{{apiGroups: [''], resources: [pods], operations: [CREATE]}}]\n  timeout: 5s\n  memoryLimit: 128Mi\n"
        )
    };
    replace(&dir, "no-latest.yaml", manifest("no_latest_py.wasm").as_bytes());
    let cluster =
        Cluster::start_with(Backend::Embedded, &["--no-default-plugins", "--plugin-dir", dir.to_str().unwrap()]).await;
    let python_digest = wasmkube::plugins::digest(&std::fs::read(&python).unwrap());
    let rust_digest = wasmkube::plugins::digest(&std::fs::read(&rust).unwrap());

    // Which version decided an allowed pod.
    let decided_by = |n: u32| {
        let cluster = &cluster;
        async move {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("probe-{n}")},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}});
            let url = format!("{}/api/v1/namespaces/default/pods", cluster.api.base);
            let response = cluster.api.client.post(url).json(&pod).send().await.expect("probe");
            assert_eq!(response.status().as_u16(), 201);
            response.headers().get("x-wasmkube-admission").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
        }
    };
    assert_eq!(decided_by(0).await, format!("no-latest={python_digest}"));
    let from_python = decide_fixtures(&cluster, "py").await;

    replace(&dir, "no-latest.yaml", manifest("no_latest.wasm").as_bytes());
    let mut n = 0;
    wait_for("the Rust twin to serve", Duration::from_secs(30), || {
        n += 1;
        let probe = decided_by(n);
        let wanted = format!("no-latest={rust_digest}");
        async move { (probe.await == wanted).then_some(()) }
    })
    .await;
    let from_rust = decide_fixtures(&cluster, "rs").await;

    assert_eq!(from_python, from_rust, "the twins disagree");
    let codes: Vec<u16> = from_rust.iter().map(|(code, _)| *code).collect();
    assert_eq!(codes, [201, 403, 403, 201, 403, 403, 201], "{from_rust:?}");
    assert!(from_rust[1].1.contains("nginx: pin a version instead of latest"), "{from_rust:?}");
}

/// A Plugin object applied with kubectl: `misbehave` as `name`, gating ConfigMap creates.
fn misbehave_plugin(name: &str, behaviour: &str, mode: &str) -> String {
    let module = plugin_component("misbehave");
    format!(
        "apiVersion: wasmkube.io/v1alpha1
kind: Plugin
metadata: {{name: {name}}}
spec:
  kind: admission
  module: {module}
  phases: [validate]
  rules: [{{apiGroups: [''], resources: [configmaps], operations: [CREATE]}}]
  config: {{behaviour: {behaviour}}}
  timeout: 500ms
{mode}",
        module = module.display()
    )
}

async fn plugin_status(cluster: &Cluster, name: &str) -> Value {
    let (_, plugin) =
        cluster.request(reqwest::Method::GET, &format!("/apis/wasmkube.io/v1alpha1/plugins/{name}"), None).await;
    plugin["status"].clone()
}

/// What the Plugin `name` did on the (one) server, from its `status.activity`.
async fn plugin_activity(cluster: &Cluster, name: &str) -> Value {
    let status = plugin_status(cluster, name).await;
    let activity = status["activity"].as_array().cloned().unwrap_or_default();
    assert!(activity.len() <= 1, "one server, one entry: {status}");
    let entry = activity.into_iter().next().unwrap_or(Value::Null);
    if !entry.is_null() {
        assert_eq!(entry["server"], cluster.api.base.trim_start_matches("https://"), "{status}");
    }
    entry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_plugin_records_its_disagreements_and_decides_nothing() {
    let cluster = Cluster::start_on(Backend::Embedded).await;
    let kubectl = KUBECTLS[0];
    let plugins = [
        misbehave_plugin("gate", "allow", ""),
        // A stricter candidate for `gate`, and one that agrees with it.
        misbehave_plugin("stricter", "deny", "  mode: Shadow\n  shadowOf: gate\n"),
        misbehave_plugin("twin", "allow", "  mode: Shadow\n  shadowOf: gate\n"),
    ];
    let path = write(cluster.dir.path(), "plugins.yaml", &plugins.join("---\n"));
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", &path]);
    assert!(ok, "{err}");
    for name in ["gate", "stricter", "twin"] {
        wait_for(&format!("{name} to be Ready"), Duration::from_secs(20), || async {
            let status = plugin_status(&cluster, name).await;
            status["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                .then_some(())
        })
        .await;
    }
    // Only the live plugin decides: the stricter candidate refuses nothing.
    until(&cluster, "the live plugin to decide", |code, _| code == 201).await;
    for i in 0..5 {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("watched-{i}")}});
        let url = format!("{}/api/v1/namespaces/default/configmaps", cluster.api.base);
        let response = cluster.api.client.post(url).json(&body).send().await.expect("create");
        assert_eq!(response.status().as_u16(), 201);
        let decided = response.headers().get("x-wasmkube-admission").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(
            decided.contains("gate=sha256:") && !decided.contains("stricter") && !decided.contains("twin"),
            "{decided}"
        );
    }

    // Each disagreement is in the candidate's status.activity (the last few) ...
    let stricter = wait_for("the disagreements in the candidate's status", Duration::from_secs(20), || async {
        let status = plugin_activity(&cluster, "stricter").await;
        // Shadow calls run in the background, so they may finish in any order.
        let seen = status["lastDisagreements"]
            .as_array()
            .is_some_and(|l| l.iter().any(|d| d["request"] == "CREATE configmaps default/watched-4"));
        seen.then_some(status)
    })
    .await;
    let disagreements = stricter["disagreements"].as_u64().expect("a count");
    assert!(disagreements >= 5, "{stricter}");
    assert_eq!(stricter["denials"], stricter["calls"], "{stricter}");
    let last = stricter["lastDisagreements"]
        .as_array()
        .and_then(|l| l.iter().find(|d| d["request"] == "CREATE configmaps default/watched-4"))
        .expect("the last create's disagreement");
    assert_eq!(last["live"]["allowed"], true, "{last}");
    assert_eq!((&last["shadow"]["allowed"], &last["shadow"]["code"]), (&json!(false), &json!(403)), "{last}");
    assert!(last["shadowDigest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{last}");
    assert!(last["liveDigest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{last}");
    // ... a metric, by candidate and live plugin ...
    let (_, metrics) = cluster.api.get("/metrics").await.expect("metrics");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("wasmkube_plugin_shadow_disagreements_total") && l.contains("plugin=\"stricter\""))
        .unwrap_or_else(|| panic!("no disagreement metric for stricter:\n{metrics}"));
    assert!(line.contains("live=\"gate\""), "{line}");
    let counted: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= 5.0, "{line}");
    // ... while the twin that agrees ran as often and disagreed never.
    let twin = wait_for("the twin's calls in its status", Duration::from_secs(20), || async {
        let status = plugin_activity(&cluster, "twin").await;
        (status["calls"].as_u64() >= Some(5)).then_some(status)
    })
    .await;
    assert_eq!((&twin["disagreements"], &twin["denials"]), (&json!(0), &json!(0)), "{twin}");
    assert_eq!(twin["lastDisagreements"], json!([]), "{twin}");
    let gate = wait_for("the live plugin's calls in its status", Duration::from_secs(20), || async {
        let status = plugin_activity(&cluster, "gate").await;
        (status["calls"].as_u64() >= Some(5)).then_some(status)
    })
    .await;
    assert!(gate.get("disagreements").is_none(), "only a shadow has disagreements: {gate}");

    // A shadow must name its live plugin: the status says so.
    let path = write(cluster.dir.path(), "lost.yaml", &misbehave_plugin("lost", "deny", "  mode: Shadow\n"));
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", &path]);
    assert!(ok, "{err}");
    let lost = wait_for("the shadow without shadowOf to be refused", Duration::from_secs(20), || async {
        let status = plugin_status(&cluster, "lost").await;
        status["lastError"].as_str().is_some().then_some(status)
    })
    .await;
    assert!(lost["lastError"].as_str().unwrap_or_default().contains("needs spec.shadowOf"), "{lost}");
}

/// `bytes` with a custom section of random bytes appended: the same component under a new
/// digest, so no artifact of it is cached anywhere yet.
fn never_compiled(bytes: &[u8]) -> Vec<u8> {
    let name = b"wasmkube-test";
    let payload: Vec<u8> = (0..16).map(|_| rand_byte()).collect();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // its size (< 128: one LEB128 byte)
    out.extend_from_slice(&section);
    out
}

fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish() as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_module_serves_from_the_baseline_compiler_until_the_optimized_one_is_ready() {
    let cluster = Cluster::start_on(Backend::Embedded).await;
    let module = cluster.dir.path().join("fresh.wasm");
    std::fs::write(&module, never_compiled(&std::fs::read(plugin_component("misbehave")).unwrap())).unwrap();
    let plugin = misbehave_plugin("fresh", "deny", "")
        .replace(&plugin_component("misbehave").display().to_string(), &module.display().to_string());
    let path = write(cluster.dir.path(), "fresh.yaml", &plugin);
    let (ok, _, err) = cluster.kubectl(KUBECTLS[0], &["apply", "-f", &path]);
    assert!(ok, "{err}");
    until(&cluster, "the new module to decide", |code, m| code == 403 && m.contains("plugin \"fresh\"")).await;
    let loads = |outcome: &'static str| {
        let cluster = &cluster;
        async move {
            let (_, metrics) = cluster.api.get("/metrics").await.expect("metrics");
            metrics
                .lines()
                .find(|l| {
                    l.starts_with("wasmkube_plugin_loads_total")
                        && l.contains("plugin=\"fresh\"")
                        && l.contains(&format!("outcome=\"{outcome}\""))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        }
    };
    assert_eq!(loads("loaded").await, Some(1.0));
    // Cranelift's version replaces Winch's in the background, once.
    wait_for("the optimized version to replace the baseline one", Duration::from_secs(60), || async {
        loads("optimized").await.filter(|n| *n == 1.0)
    })
    .await;
    let log = std::fs::read_to_string(cluster.dir.path().join("serve.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("plugin loaded") && l.contains("fresh") && l.contains("Baseline")),
        "the first load is Winch's"
    );
    assert!(log.contains("plugin now runs its optimized (Cranelift) version"), "then Cranelift's");
    // It decides as before, under the same digest.
    let (code, message) = create_configmap(&cluster, "after-optimizing").await;
    assert_eq!(code, 403, "{message}");
    let status = plugin_status(&cluster, "fresh").await;
    let digest = status["digest"].as_str().unwrap_or_default().to_string();
    assert_eq!(digest, wasmkube::plugins::digest(&std::fs::read(&module).unwrap()), "{status}");
}
