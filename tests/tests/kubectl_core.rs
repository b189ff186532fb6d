//! The core API as real kubectl (1.32 and 1.33) and a raw HTTP client see it: version,
//! discovery, create/get/replace/delete of ConfigMaps and Namespaces, Tables, watch, and
//! every error as a Kubernetes `Status`.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use wasmkube_tests::{on_both_backends, Backend, Cluster, KUBECTLS};

fn write_manifest(dir: &std::path::Path, name: &str, value: &str) -> String {
    let path = dir.join(format!("{name}-{value}.yaml"));
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: \"{value}\"\n"),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

async fn kubectl_creates_gets_replaces_and_deletes(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let files = tempfile::tempdir().unwrap();
    // The dispatcher kubectl picks the binary matching the server's /version.
    let (ok, out, err) = cluster.kubectl("/usr/bin/kubectl", &["version"]);
    assert!(ok && out.contains("Server Version: v1.33"), "{out}{err}");
    for kubectl in KUBECTLS {
        let (ok, out, err) = cluster.kubectl(kubectl, &["version"]);
        assert!(ok, "{kubectl} version: {err}");
        assert!(out.contains("Server Version: v1.33"), "{out}");

        let (ok, out, err) = cluster.kubectl(kubectl, &["get", "namespaces"]);
        assert!(ok, "{err}");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            assert!(out.contains(ns), "a fresh cluster has namespace {ns}:\n{out}");
        }
        assert!(out.starts_with("NAME"), "a table: {out}");

        let ns = if kubectl.ends_with("1.33") { "team-a" } else { "team-b" };
        let namespace = files.path().join(format!("{ns}.yaml"));
        std::fs::write(&namespace, format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")).unwrap();
        let (ok, _, err) = cluster.kubectl(kubectl, &["create", "-f", namespace.to_str().unwrap()]);
        assert!(ok, "{err}");
        let manifest = write_manifest(files.path(), "demo", "1");
        let (ok, out, err) = cluster.kubectl(kubectl, &["-n", ns, "create", "-f", &manifest]);
        assert!(ok, "{err}");
        assert!(out.contains("configmap/demo created"), "{out}");
        let (ok, _, err) = cluster.kubectl(kubectl, &["-n", ns, "create", "-f", &manifest]);
        assert!(!ok);
        assert!(err.contains("AlreadyExists") && err.contains("configmaps \"demo\" already exists"), "{err}");

        let (ok, out, err) = cluster.kubectl(kubectl, &["-n", ns, "get", "configmap", "demo", "-o", "json"]);
        assert!(ok, "{err}");
        let object: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(object["data"]["key"], "1");
        assert_eq!(object["metadata"]["namespace"], ns);
        assert!(object["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
        assert!(object["metadata"]["resourceVersion"].as_str().is_some_and(|rv| rv.parse::<i64>().is_ok()));

        let changed = write_manifest(files.path(), "demo", "2");
        let (ok, _, err) = cluster.kubectl(kubectl, &["-n", ns, "replace", "-f", &changed]);
        assert!(ok, "{err}");
        let (ok, out, _) = cluster.kubectl(kubectl, &["-n", ns, "get", "cm", "demo", "-o", "jsonpath={.data.key}"]);
        assert!(ok);
        assert_eq!(out, "2");

        let (ok, out, err) = cluster.kubectl(kubectl, &["-n", ns, "get", "cm"]);
        assert!(ok, "{err}");
        assert!(out.lines().nth(1).is_some_and(|row| row.starts_with("demo ")), "{out}");

        let (ok, _, err) = cluster.kubectl(kubectl, &["-n", ns, "delete", "configmap", "demo"]);
        assert!(ok, "{err}");
        let (ok, _, err) = cluster.kubectl(kubectl, &["-n", ns, "get", "configmap", "demo"]);
        assert!(!ok);
        assert!(err.contains("NotFound") && err.contains("configmaps \"demo\" not found"), "{err}");
    }
}

async fn errors_are_kubernetes_statuses(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let cm =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}});
    let post = reqwest::Method::POST;

    let (code, created) = cluster.request(post.clone(), "/api/v1/namespaces/default/configmaps", Some(cm("one"))).await;
    assert_eq!(code, 201, "{created}");

    // A stale resourceVersion is a 409 Conflict, and nothing changes.
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["data"]["a"] = json!("changed");
    let (code, status) =
        cluster.request(reqwest::Method::PUT, "/api/v1/namespaces/default/configmaps/one", Some(stale)).await;
    assert_eq!(
        (code, status["kind"].as_str(), status["reason"].as_str()),
        (409, Some("Status"), Some("Conflict")),
        "{status}"
    );
    assert_eq!(status["code"], 409);
    let (_, current) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/configmaps/one", None).await;
    assert_eq!(current["data"]["a"], "1");

    // An invalid name is a 422 naming the field.
    let (code, status) =
        cluster.request(post.clone(), "/api/v1/namespaces/default/configmaps", Some(cm("Not_Valid"))).await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");

    // A missing namespace is a 404 about the namespace.
    let (code, status) = cluster.request(post.clone(), "/api/v1/namespaces/nowhere/configmaps", Some(cm("x"))).await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")), "{status}");
    assert!(status["message"].as_str().unwrap().contains("namespaces \"nowhere\" not found"), "{status}");

    // Wrong kind, bad JSON, unknown resources, unsupported methods.
    let wrong = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
    let (code, status) = cluster.request(post.clone(), "/api/v1/namespaces/default/configmaps", Some(wrong)).await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")), "{status}");
    let (code, status) = cluster.request(reqwest::Method::GET, "/api/v1/widgets", None).await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")), "{status}");
    let (code, status) =
        cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/configmaps/one", Some(cm("one"))).await;
    assert_eq!((code, status["reason"].as_str()), (405, Some("MethodNotAllowed")), "{status}");

    // generateName makes a fresh name.
    let generated = json!({"metadata": {"generateName": "gen-"}, "data": {}});
    let (code, object) = cluster.request(post, "/api/v1/namespaces/default/configmaps", Some(generated)).await;
    assert_eq!(code, 201, "{object}");
    assert!(object["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("gen-") && n.len() == 9), "{object}");
}

async fn list_pages_and_watch_follow_the_store(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    for i in 0..7 {
        let cm = json!({"metadata": {"name": format!("cm-{i}")}, "data": {}});
        let (code, _) = cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/configmaps", Some(cm)).await;
        assert_eq!(code, 201);
    }
    // Pages of 3 with continue tokens.
    let mut names = Vec::new();
    let mut path = "/api/v1/namespaces/default/configmaps?limit=3".to_string();
    loop {
        let (code, list) = cluster.request(reqwest::Method::GET, &path, None).await;
        assert_eq!(code, 200, "{list}");
        assert_eq!(list["kind"], "ConfigMapList");
        names.extend(
            list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match list["metadata"]["continue"].as_str() {
            Some(token) => path = format!("/api/v1/namespaces/default/configmaps?limit=3&continue={token}"),
            None => break,
        }
    }
    assert_eq!(names, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());

    // A watch from the list's resourceVersion sees the next change, and only that.
    let (_, list) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/configmaps", None).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let url = format!("{}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}", cluster.api.base);
    let response = cluster.api.client.get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.bytes_stream();
    let (code, _) = cluster.request(reqwest::Method::DELETE, "/api/v1/namespaces/default/configmaps/cm-3", None).await;
    assert_eq!(code, 200);
    let chunk =
        tokio::time::timeout(Duration::from_secs(10), body.next()).await.expect("a watch event").unwrap().unwrap();
    let event: Value = serde_json::from_slice(chunk.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(event["type"], "DELETED");
    assert_eq!(event["object"]["metadata"]["name"], "cm-3");
    assert!(
        event["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>().unwrap() > rv.parse().unwrap()
    );

    // kubectl's own watch: the initial state as ADDED events, then changes.
    let url = format!("{}/api/v1/namespaces/default/configmaps?watch=true", cluster.api.base);
    let mut body = cluster.api.client.get(&url).send().await.unwrap().bytes_stream();
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await.expect("events").unwrap().unwrap();
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let event: Value = serde_json::from_slice(line).unwrap();
            assert_eq!(event["type"], "ADDED");
            seen.push(event["object"]["metadata"]["name"].as_str().unwrap().to_string());
        }
    }
    assert!(!seen.contains(&"cm-3".to_string()));
}

async fn kubectl_patch_merges_and_applies_json_patches(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let kubectl = KUBECTLS[0];
    let create =
        json!({"metadata": {"name": "p", "labels": {"keep": "yes", "drop": "me"}}, "data": {"a": "1", "b": "2"}});
    let (code, _) = cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/configmaps", Some(create)).await;
    assert_eq!(code, 201);

    let merge = r#"{"metadata":{"labels":{"drop":null,"new":"x"}},"data":{"b":"3"}}"#;
    let (ok, _, err) = cluster.kubectl(kubectl, &["patch", "configmap", "p", "--type=merge", "-p", merge]);
    assert!(ok, "{err}");
    let json_patch = r#"[{"op":"remove","path":"/data/a"},{"op":"add","path":"/data/c","value":"4"}]"#;
    let (ok, _, err) = cluster.kubectl(kubectl, &["patch", "configmap", "p", "--type=json", "-p", json_patch]);
    assert!(ok, "{err}");
    let (_, object) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/configmaps/p", None).await;
    assert_eq!(object["data"], json!({"b": "3", "c": "4"}));
    assert_eq!(object["metadata"]["labels"], json!({"keep": "yes", "new": "x"}));

    // A JSON patch that cannot apply is a 422; a stale resourceVersion in a patch is a 409.
    let bad = r#"[{"op":"remove","path":"/data/missing"}]"#;
    let (ok, _, err) = cluster.kubectl(kubectl, &["patch", "configmap", "p", "--type=json", "-p", bad]);
    assert!(!ok && err.contains("is invalid"), "{err}");
    let stale = r#"{"metadata":{"resourceVersion":"1"},"data":{"b":"stale"}}"#;
    let (ok, _, err) = cluster.kubectl(kubectl, &["patch", "configmap", "p", "--type=merge", "-p", stale]);
    assert!(!ok && err.contains("Conflict"), "{err}");
    // Strategic merge patch, kubectl's default for built-in kinds; a bad directive is a 400.
    let (ok, _, err) = cluster.kubectl(kubectl, &["patch", "configmap", "p", "-p", r#"{"data":{"z":"1"}}"#]);
    assert!(ok, "{err}");
    let (_, object) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/configmaps/p", None).await;
    assert_eq!(object["data"], json!({"b": "3", "c": "4", "z": "1"}));
    let (ok, _, err) = cluster.kubectl(kubectl, &["patch", "configmap", "p", "-p", r#"{"data":{"$patch":"explode"}}"#]);
    assert!(!ok && err.contains("BadRequest"), "{err}");
}

async fn label_selectors_filter_lists_and_watches(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    for (name, app) in [("a", "web"), ("b", "db"), ("c", "web")] {
        let cm = json!({"metadata": {"name": name, "labels": {"app": app}}, "data": {}});
        let (code, _) = cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/configmaps", Some(cm)).await;
        assert_eq!(code, 201);
    }
    let (ok, out, err) = cluster.kubectl(KUBECTLS[0], &["get", "cm", "-l", "app=web", "-o", "name"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["configmap/a", "configmap/c"]);
    let (ok, out, _) = cluster.kubectl(KUBECTLS[0], &["get", "cm", "-l", "app notin (web)", "-o", "name"]);
    assert!(ok);
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["configmap/b"]);
    let (code, status) =
        cluster.request(reqwest::Method::GET, "/api/v1/configmaps?labelSelector=app%20in%20web", None).await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")), "{status}");
    // Field selectors on name and namespace, as kubectl's `get NAME -w` and informers use them.
    let path = "/api/v1/configmaps?fieldSelector=metadata.name%3Db,metadata.namespace%3Ddefault";
    let (code, list) = cluster.request(reqwest::Method::GET, path, None).await;
    assert_eq!(code, 200, "{list}");
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["b"]);
    let (code, status) =
        cluster.request(reqwest::Method::GET, "/api/v1/configmaps?fieldSelector=spec.x%3Dy", None).await;
    assert_eq!(code, 400, "{status}");
    assert!(status["message"].as_str().unwrap().contains("field label not supported: spec.x"), "{status}");

    // A watch with a selector: an object that enters the selection is ADDED, one that
    // leaves it is DELETED, others are not seen at all.
    let (_, list) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/configmaps", None).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let url = format!(
        "{}/api/v1/namespaces/default/configmaps?watch=true&labelSelector=app%3Dweb&resourceVersion={rv}",
        cluster.api.base
    );
    let mut body = cluster.api.client.get(&url).send().await.unwrap().bytes_stream();
    let relabel = |name: &'static str, app: &'static str| {
        let patch = json!({"metadata": {"labels": {"app": app}}});
        let client = cluster.api.client.clone();
        let url = format!("{}/api/v1/namespaces/default/configmaps/{name}", cluster.api.base);
        async move {
            let response = client
                .patch(url)
                .header("Content-Type", "application/merge-patch+json")
                .body(patch.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }
    };
    relabel("b", "web").await; // enters
    relabel("a", "db").await; // leaves
    relabel("b", "web2").await; // leaves again
    let mut events = Vec::new();
    while events.len() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await.expect("events").unwrap().unwrap();
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let event: Value = serde_json::from_slice(line).unwrap();
            events.push(format!(
                "{} {}",
                event["type"].as_str().unwrap(),
                event["object"]["metadata"]["name"].as_str().unwrap()
            ));
        }
    }
    assert_eq!(events, vec!["ADDED b", "DELETED a", "DELETED b"]);
}

async fn server_dry_run_validates_but_writes_nothing(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let files = tempfile::tempdir().unwrap();
    let kubectl = KUBECTLS[0];
    let manifest = write_manifest(files.path(), "dry", "1");
    let (ok, out, err) = cluster.kubectl(kubectl, &["create", "--dry-run=server", "-f", &manifest]);
    assert!(ok, "{err}");
    assert!(out.contains("configmap/dry created (server dry run)"), "{out}");
    let (ok, _, _) = cluster.kubectl(kubectl, &["get", "cm", "dry"]);
    assert!(!ok, "a dry-run create stores nothing");

    let (ok, _, err) = cluster.kubectl(kubectl, &["create", "-f", &manifest]);
    assert!(ok, "{err}");
    let (_, before) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/configmaps/dry", None).await;
    let (ok, _, err) = cluster
        .kubectl(kubectl, &["patch", "cm", "dry", "--type=merge", "-p", r#"{"data":{"key":"9"}}"#, "--dry-run=server"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cluster.kubectl(kubectl, &["delete", "cm", "dry", "--dry-run=server"]);
    assert!(ok, "{err}");
    let (_, after) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/configmaps/dry", None).await;
    assert_eq!(before, after, "dry-run patch and delete change nothing");

    // A dry run still fails where the real request would.
    let (ok, _, err) = cluster.kubectl(kubectl, &["create", "--dry-run=server", "-f", &manifest]);
    assert!(!ok && err.contains("AlreadyExists"), "{err}");
    let (code, status) =
        cluster.request(reqwest::Method::DELETE, "/api/v1/namespaces/default/configmaps/dry?dryRun=Some", None).await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")), "{status}");
}

async fn discovery_answers_aggregated_and_legacy_clients(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let get = |path: &'static str, accept: &'static str| {
        let request = cluster.api.client.get(format!("{}{path}", cluster.api.base)).header("Accept", accept);
        async move {
            let response = request.send().await.unwrap();
            let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
            (content_type, response.json::<Value>().await.unwrap())
        }
    };
    let (content_type, core) = get("/api", accept).await;
    assert!(content_type.contains("as=APIGroupDiscoveryList"), "{content_type}");
    let resources = &core["items"][0]["versions"][0]["resources"];
    let configmaps = resources.as_array().unwrap().iter().find(|r| r["resource"] == "configmaps").expect("configmaps");
    assert_eq!(configmaps["scope"], "Namespaced");
    assert_eq!(configmaps["responseKind"]["kind"], "ConfigMap");
    let (content_type, groups) = get("/apis", accept).await;
    assert!(content_type.contains("as=APIGroupDiscoveryList"), "{content_type}");
    assert_eq!(groups["kind"], "APIGroupDiscoveryList");

    let (_, legacy) = get("/api", "application/json").await;
    assert_eq!(legacy["kind"], "APIVersions");
    let (_, list) = get("/api/v1", "application/json").await;
    assert!(list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "namespaces" && r["namespaced"] == false));

    for kubectl in KUBECTLS {
        let (ok, out, err) = cluster.kubectl(kubectl, &["api-resources", "--no-headers"]);
        assert!(ok, "{err}");
        assert!(out.lines().any(|l| l.starts_with("configmaps") && l.contains("cm")), "{out}");
        // ComponentStatus: discovered (read-only), printed with kube-apiserver's columns
        // and its deprecation warning.
        assert!(out.lines().any(|l| l.starts_with("componentstatuses") && l.contains(" cs ")), "{out}");
        let (ok, out, err) = cluster.kubectl(kubectl, &["get", "cs"]);
        assert!(ok, "{err}");
        assert!(err.contains("v1 ComponentStatus is deprecated in v1.19+"), "{err}");
        let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header, ["NAME", "STATUS", "MESSAGE", "ERROR"], "{out}");
        assert!(out.lines().any(|l| l.starts_with("etcd-0") && l.contains("Healthy") && l.contains("ok")), "{out}");
        let (ok, _, err) = cluster.kubectl(kubectl, &["delete", "cs", "etcd-0"]);
        assert!(!ok && (err.contains("MethodNotAllowed") || err.contains("not allow")), "{err}");
    }
}

on_both_backends!(
    kubectl_creates_gets_replaces_and_deletes,
    errors_are_kubernetes_statuses,
    list_pages_and_watch_follow_the_store,
    kubectl_patch_merges_and_applies_json_patches,
    label_selectors_filter_lists_and_watches,
    server_dry_run_validates_but_writes_nothing,
    discovery_answers_aggregated_and_legacy_clients,
    responses_are_written_like_kube_apiserver
);

/// Objects leave as kube-apiserver writes them: compact JSON, `kind` and `apiVersion`
/// first, metadata in ObjectMeta's order, the rest as the client wrote it.
async fn responses_are_written_like_kube_apiserver(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let body = json!({"data": {"z": "1", "a": "2"}, "metadata": {"labels": {"app": "x"}, "name": "ordered"}});
    let (code, _) = cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/configmaps", Some(body)).await;
    assert_eq!(code, 201);
    let url = format!("{}/api/v1/namespaces/default/configmaps/ordered", cluster.api.base);
    let text = cluster.api.client.get(url).send().await.expect("get").text().await.expect("body");
    assert!(
        text.starts_with(
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"ordered","namespace":"default","uid":""#
        ),
        "{text}"
    );
    let after_uid = text.split_once(r#""uid":""#).map(|(_, rest)| rest).unwrap_or_default();
    let rest = after_uid.split_once('"').map(|(_, rest)| rest).unwrap_or_default();
    assert!(rest.starts_with(r#","resourceVersion":""#), "{text}");
    assert!(text.contains(r#""labels":{"app":"x"}"#) && text.ends_with(r#""data":{"z":"1","a":"2"}}"#), "{text}");
    let url = format!("{}/api/v1/namespaces/default/configmaps", cluster.api.base);
    let list = cluster.api.client.get(url).send().await.expect("list").text().await.expect("body");
    assert!(list.starts_with(r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":""#), "{list}");
}
