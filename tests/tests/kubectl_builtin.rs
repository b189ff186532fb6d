//! Every built-in group as real kubectl sees it: discovery of all groups, OpenAPI
//! (`explain`, client-side validation, server-side field validation), workloads in named
//! groups, the status, scale and binding subresources, deletecollection, and the
//! subresources that need a node answering with a clear Status.

use serde_json::{json, Value};
use wasmkube_tests::{on_both_backends, Backend, Cluster, KUBECTLS};

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports: [{containerPort: 80}]
";

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

async fn kubectl_discovers_every_group_and_explains_from_openapi(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    for kubectl in KUBECTLS {
        let (ok, out, err) = cluster.kubectl(kubectl, &["api-resources"]);
        assert!(ok, "{err}");
        for (name, api_version) in [
            ("deployments", "apps/v1"),
            ("cronjobs", "batch/v1"),
            ("leases", "coordination.k8s.io/v1"),
            ("clusterroles", "rbac.authorization.k8s.io/v1"),
            ("customresourcedefinitions", "apiextensions.k8s.io/v1"),
            ("horizontalpodautoscalers", "autoscaling/v2"),
            ("certificatesigningrequests", "certificates.k8s.io/v1"),
            ("pods", "v1"),
        ] {
            assert!(
                out.lines().any(|l| l.starts_with(name) && l.contains(api_version)),
                "{kubectl} api-resources lacks {name} ({api_version}):\n{out}"
            );
        }
        let (ok, out, err) = cluster.kubectl(kubectl, &["api-resources", "--api-group=apps", "-o", "name"]);
        assert!(ok, "{err}");
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "controllerrevisions.apps",
                "daemonsets.apps",
                "deployments.apps",
                "replicasets.apps",
                "statefulsets.apps"
            ]
        );

        let (ok, out, err) = cluster.kubectl(kubectl, &["explain", "pod.spec.containers.ports"]);
        assert!(ok, "{err}");
        assert!(out.contains("FIELD: ports <[]ContainerPort>") && out.contains("containerPort"), "{out}");
        let (ok, out, err) =
            cluster.kubectl(kubectl, &["explain", "deployments.spec.strategy", "--api-version=apps/v1"]);
        assert!(ok, "{err}");
        assert!(out.contains("rollingUpdate"), "{out}");
    }

    // The v3 root names each group-version by a content hash; a stale hash is redirected.
    let (code, root) = cluster.request(reqwest::Method::GET, "/openapi/v3", None).await;
    assert_eq!(code, 200);
    let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().expect("apps/v1 listed").to_string();
    assert!(url.contains("?hash="), "{url}");
    let (code, document) = cluster.request(reqwest::Method::GET, &url, None).await;
    assert_eq!(code, 200);
    assert!(document["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
    let patch = &document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "version": "v1", "kind": "Deployment"})
    );
    assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
    let stale =
        cluster.api.client.get(format!("{}/openapi/v3/apis/apps/v1?hash=0000", cluster.api.base)).send().await.unwrap();
    assert_eq!(stale.url().as_str(), format!("{}{url}", cluster.api.base), "followed the 301 to the current hash");
}

async fn kubectl_validates_fields_against_the_schema(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let files = tempfile::tempdir().unwrap();
    let typo =
        write(files.path(), "typo.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo}\ndataa: {a: b}\n");
    for kubectl in KUBECTLS {
        // kubectl asks the server for Strict validation once OpenAPI says it may.
        let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", &typo]);
        assert!(!ok, "an unknown field is refused");
        assert!(err.contains("strict decoding error: unknown field \"dataa\""), "{err}");
        let (ok, _, _) = cluster.kubectl(kubectl, &["get", "cm", "typo"]);
        assert!(!ok, "nothing was stored");
    }
    let kubectl = KUBECTLS[0];
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "--validate=warn", "-f", &typo]);
    assert!(ok, "{err}");
    assert!(err.contains("Warning: unknown field \"dataa\""), "{err}");
    let (ok, out, _) = cluster.kubectl(kubectl, &["get", "cm", "typo", "-o", "json"]);
    assert!(ok);
    let stored: Value = serde_json::from_str(&out).unwrap();
    assert!(stored.get("dataa").is_none(), "unknown fields are dropped: {stored}");

    // Wrong shapes are a 400 whatever the validation level.
    let (code, status) = cluster
        .request(
            reqwest::Method::POST,
            "/apis/apps/v1/namespaces/default/deployments?fieldValidation=Ignore",
            Some(json!({"metadata": {"name": "bad"}, "spec": {"replicas": "two"}})),
        )
        .await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")), "{status}");
    assert!(status["message"].as_str().unwrap().contains("spec.replicas"), "{status}");
    let (code, status) = cluster
        .request(
            reqwest::Method::POST,
            "/api/v1/namespaces/default/configmaps?fieldValidation=Sometimes",
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 400, "{status}");
}

async fn workloads_scale_and_keep_status_apart(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let files = tempfile::tempdir().unwrap();
    let manifest = write(files.path(), "web.yaml", DEPLOYMENT);
    let kubectl = KUBECTLS[0];
    let (ok, out, err) = cluster.kubectl(kubectl, &["apply", "-f", &manifest]);
    assert!(ok, "{err}");
    assert!(out.contains("deployment.apps/web created"), "{out}");

    let (ok, _, err) = cluster.kubectl(kubectl, &["scale", "deployment", "web", "--replicas=5"]);
    assert!(ok, "{err}");
    let (ok, out, _) =
        cluster.kubectl(kubectl, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.metadata.generation}"]);
    assert!(ok);
    assert_eq!(out, "5 2", "scale changed the spec and the generation");
    let (code, scale) =
        cluster.request(reqwest::Method::GET, "/apis/apps/v1/namespaces/default/deployments/web/scale", None).await;
    assert_eq!(code, 200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");
    let (code, status) = cluster
        .request(
            reqwest::Method::PUT,
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            Some(json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"}, "spec": {"replicas": -1}})),
        )
        .await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{status}");

    // Status goes through its subresource only; the main resource ignores it.
    let (ok, _, err) = cluster.kubectl(
        kubectl,
        &["patch", "deploy", "web", "--subresource=status", "--type=merge", "-p", r#"{"status":{"replicas":5}}"#],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cluster.kubectl(
        kubectl,
        &[
            "patch",
            "deploy",
            "web",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":9},"metadata":{"labels":{"x":"y"}}}"#,
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, _) = cluster.kubectl(
        kubectl,
        &["get", "deploy", "web", "-o", "jsonpath={.status.replicas} {.metadata.labels.x} {.metadata.generation}"],
    );
    assert!(ok);
    assert_eq!(out, "5 y 2", "status kept; labels changed; generation counts spec changes only");

    // A status written on create is dropped: it is the controllers' to write (what is
    // left is the empty status Go's encoder always writes).
    let (code, created) = cluster
        .request(
            reqwest::Method::POST,
            "/apis/batch/v1/namespaces/default/jobs",
            Some(json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}}}, "status": {"succeeded": 3}})),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["status"], json!({}), "{created}");
    assert_eq!(created["metadata"]["generation"], 1);

    let (ok, out, err) = cluster.kubectl(kubectl, &["get", "deployments"]);
    assert!(ok, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], "{out}");
    assert!(out.lines().nth(1).is_some_and(|row| row.starts_with("web ") && row.contains(" 0/5 ")), "{out}");

    let (ok, out, err) = cluster.kubectl(kubectl, &["get", "all"]);
    assert!(ok, "{err}");
    assert!(out.contains("deployment.apps/web") && out.contains("job.batch/j"), "{out}");
}

async fn pods_bind_once_and_node_subresources_explain_themselves(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (code, created) = cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/pods", Some(pod)).await;
    assert_eq!(code, 201, "{created}");
    let binding = |node: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": node}});
    let (code, answer) = cluster
        .request(reqwest::Method::POST, "/api/v1/namespaces/default/pods/p/binding", Some(binding("node-1")))
        .await;
    assert_eq!((code, answer["status"].as_str()), (201, Some("Success")), "{answer}");
    let (_, bound) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/pods/p", None).await;
    assert_eq!(bound["spec"]["nodeName"], "node-1");
    let scheduled = bound["status"]["conditions"].as_array().unwrap();
    assert!(scheduled.iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "True"), "{bound}");
    let (code, conflict) = cluster
        .request(reqwest::Method::POST, "/api/v1/namespaces/default/pods/p/binding", Some(binding("node-2")))
        .await;
    assert_eq!((code, conflict["reason"].as_str()), (409, Some("Conflict")), "{conflict}");
    assert!(conflict["message"].as_str().unwrap().contains("already assigned to node \"node-1\""), "{conflict}");

    for kubectl in KUBECTLS {
        let (ok, out, err) = cluster.kubectl(kubectl, &["get", "pods", "-o", "wide"]);
        assert!(ok, "{err}");
        let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header[..6], ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"], "{out}");
        let row: Vec<&str> = out.lines().nth(1).unwrap_or_default().split_whitespace().collect();
        assert_eq!((row[0], row[1], row[2], row[3], row[6]), ("p", "0/1", "Pending", "0", "node-1"), "{out}");
    }

    // node-1 is no node this server runs: its logs cannot be had, and the error says why.
    let (ok, _, err) = cluster.kubectl(KUBECTLS[0], &["logs", "p"]);
    assert!(!ok);
    assert!(err.contains("no node agent for node \"node-1\" answers in this server"), "{err}");
    let (code, missing) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/pods/p/bogus", None).await;
    assert_eq!((code, missing["reason"].as_str()), (404, Some("NotFound")), "{missing}");
}

async fn deletecollection_deletes_what_the_selector_selects(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        let lease = json!({"metadata": {"name": name, "labels": {"tier": tier}}, "spec": {"holderIdentity": name}});
        let (code, body) = cluster
            .request(reqwest::Method::POST, "/apis/coordination.k8s.io/v1/namespaces/default/leases", Some(lease))
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let (code, deleted) = cluster
        .request(
            reqwest::Method::DELETE,
            "/apis/coordination.k8s.io/v1/namespaces/default/leases?labelSelector=tier%3Dweb",
            None,
        )
        .await;
    assert_eq!(code, 200, "{deleted}");
    assert_eq!(deleted["kind"], "LeaseList");
    let mut names: Vec<&str> =
        deleted["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    let (_, left) =
        cluster.request(reqwest::Method::GET, "/apis/coordination.k8s.io/v1/namespaces/default/leases", None).await;
    let left: Vec<&str> =
        left["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(left, ["c"]);
}

async fn kubectl_applies_client_side_and_server_side(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let files = tempfile::tempdir().unwrap();
    for kubectl in KUBECTLS {
        let ns = if kubectl.ends_with("1.33") { "apply-33" } else { "apply-32" };
        let (ok, _, err) = cluster.kubectl(kubectl, &["create", "namespace", ns]);
        assert!(ok, "{err}");
        // Client-side apply, twice: the second is a strategic merge patch built from the schema.
        let first = write(files.path(), &format!("{ns}-1.yaml"), DEPLOYMENT);
        let second = write(files.path(), &format!("{ns}-2.yaml"), &DEPLOYMENT.replace("nginx:1.27", "nginx:1.28"));
        let (ok, out, err) = cluster.kubectl(kubectl, &["-n", ns, "apply", "-f", &first]);
        assert!(ok && out.contains("created"), "{out}{err}");
        let (ok, out, err) = cluster.kubectl(kubectl, &["-n", ns, "apply", "-f", &second]);
        assert!(ok && out.contains("configured"), "{out}{err}");
        // A strategic merge patch adds a container by name, keeping the other.
        let sidecar = r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox"}]}}}}"#;
        let (ok, _, err) = cluster.kubectl(kubectl, &["-n", ns, "patch", "deploy", "web", "-p", sidecar]);
        assert!(ok, "{err}");
        let (ok, out, _) = cluster.kubectl(
            kubectl,
            &[
                "-n",
                ns,
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={range .spec.template.spec.containers[*]}{.name}={.image} {end}",
            ],
        );
        assert!(ok);
        assert_eq!(out.trim(), "sidecar=busybox nginx=nginx:1.28");

        // Server-side apply: ownership, conflicts, force.
        let shared = |value: &str| {
            write(
                files.path(),
                &format!("{ns}-{value}.yaml"),
                &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: shared}}\ndata: {{key: {value}}}\n"),
            )
        };
        let (ok, out, err) = cluster
            .kubectl(kubectl, &["-n", ns, "apply", "--server-side", "--field-manager=alice", "-f", &shared("one")]);
        assert!(ok && out.contains("serverside-applied"), "{out}{err}");
        let (ok, _, err) = cluster
            .kubectl(kubectl, &["-n", ns, "apply", "--server-side", "--field-manager=bob", "-f", &shared("two")]);
        assert!(!ok);
        assert!(err.contains(r#"Apply failed with 1 conflict: conflict with "alice": .data.key"#), "{err}");
        let (ok, _, err) = cluster.kubectl(
            kubectl,
            &["-n", ns, "apply", "--server-side", "--field-manager=bob", "--force-conflicts", "-f", &shared("two")],
        );
        assert!(ok, "{err}");
        let (ok, out, _) =
            cluster.kubectl(kubectl, &["-n", ns, "get", "cm", "shared", "-o", "json", "--show-managed-fields"]);
        assert!(ok);
        let object: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(object["data"]["key"], "two");
        let managers: Vec<&str> = object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert_eq!(managers, ["bob"], "force moved the only field; alice's emptied entry is gone");

        // Server-side apply of the Deployment the client-side applies made.
        let (ok, out, err) = cluster.kubectl(kubectl, &["-n", ns, "apply", "--server-side", "-f", &second]);
        assert!(ok && out.contains("serverside-applied"), "{out}{err}");
        // Removing a field from the applied configuration removes it from the object.
        let fewer = write(files.path(), &format!("{ns}-3.yaml"), &DEPLOYMENT.replace("nginx:1.27", "nginx:1.28"));
        let text = std::fs::read_to_string(&fewer).unwrap().replace("  labels: {app: web}\n", "");
        std::fs::write(&fewer, text).unwrap();
        let (ok, _, err) = cluster.kubectl(kubectl, &["-n", ns, "apply", "--server-side", "-f", &fewer]);
        assert!(ok, "{err}");
        let (ok, out, _) =
            cluster.kubectl(kubectl, &["-n", ns, "get", "deploy", "web", "-o", "jsonpath={.metadata.labels}"]);
        assert!(ok);
        assert_eq!(out, "", "the label the applier dropped is gone");
    }
}

async fn kubectl_generators_send_protobuf_and_it_is_understood(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    for kubectl in KUBECTLS {
        let ns = if kubectl.ends_with("1.33") { "gen-33" } else { "gen-32" };
        for args in [
            vec!["create", "namespace", ns],
            vec!["-n", ns, "create", "deployment", "web", "--image=nginx:1.27", "--replicas=3", "--port=80"],
            vec!["-n", ns, "create", "secret", "generic", "s", "--from-literal=password=hunter2"],
            vec!["-n", ns, "create", "configmap", "c", "--from-literal=k=v"],
            vec!["-n", ns, "create", "job", "j", "--image=busybox"],
            vec!["-n", ns, "create", "cronjob", "cj", "--image=busybox", "--schedule=*/5 * * * *"],
            vec!["-n", ns, "create", "serviceaccount", "bot"],
            vec!["-n", ns, "create", "role", "r", "--verb=get", "--resource=pods"],
            vec!["-n", ns, "create", "rolebinding", "rb", "--role=r", "--user=u"],
            vec!["-n", ns, "run", "p", "--image=nginx", "--labels=app=p"],
            vec!["-n", ns, "expose", "deployment", "web", "--port=8080", "--target-port=80"],
        ] {
            let (ok, out, err) = cluster.kubectl(kubectl, &args);
            assert!(ok, "{kubectl} {args:?}: {out}{err}");
        }
        let get = |what: &str, path: &str| {
            let (ok, out, err) = cluster.kubectl(kubectl, &["-n", ns, "get", what, "-o", &format!("jsonpath={path}")]);
            assert!(ok, "{err}");
            out
        };
        assert_eq!(get("deploy/web", "{.spec.replicas} {.spec.template.spec.containers[0].image}"), "3 nginx:1.27");
        assert_eq!(get("deploy/web", "{.spec.template.spec.containers[0].ports[0].containerPort}"), "80");
        assert_eq!(get("secret/s", "{.data.password}"), "aHVudGVyMg==");
        assert_eq!(get("cm/c", "{.data.k}"), "v");
        assert_eq!(get("cronjob/cj", "{.spec.schedule}"), "*/5 * * * *");
        assert_eq!(get("role/r", "{.rules[0].verbs[0]} {.rules[0].resources[0]}"), "get pods");
        assert_eq!(get("pod/p", "{.metadata.labels.app} {.spec.containers[0].image}"), "p nginx");
        assert_eq!(get("svc/web", "{.spec.ports[0].port} {.spec.ports[0].targetPort}"), "8080 80");
        let (ok, out, _) = cluster.kubectl(kubectl, &["-n", ns, "get", "deploy", "web", "-o", "json"]);
        assert!(ok);
        let deployment: Value = serde_json::from_str(&out).unwrap();
        assert!(deployment["metadata"].get("uid").is_some_and(|u| u.as_str().is_some_and(|u| u.len() == 36)));
        assert!(!out.contains(r#""""#), "no empty strings decoded from unset protobuf fields: {out}");
    }
}

async fn query_parameters_read_like_kube_apiserver(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    // Booleans in any case (older Python clients send watch=True).
    let response = cluster
        .api
        .client
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=True&timeoutSeconds=1&allowWatchBookmarks=True",
            cluster.api.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.unwrap();
    assert!(!body.contains("ConfigMapList"), "a watch, not a list: {body}");
    let (code, list) =
        cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/configmaps?watch=false", None).await;
    assert_eq!((code, list["kind"].as_str()), (200, Some("ConfigMapList")));
    // A malformed query is a Status, not plain text.
    let (code, status) =
        cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/configmaps?limit=many", None).await;
    assert_eq!((code, status["kind"].as_str(), status["reason"].as_str()), (400, Some("Status"), Some("BadRequest")));
    let (code, version) = cluster.request(reqwest::Method::GET, "/version/", None).await;
    assert_eq!((code, version["major"].as_str()), (200, Some("1")));
}

async fn resource_version_match_initial_events_and_body_limits(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let base = "/api/v1/namespaces/default/configmaps";
    // Only x is looked at, whatever else the namespace holds.
    let x = |list: &Value| {
        list["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["metadata"]["name"] == "x"))
            .cloned()
            .unwrap_or_default()
    };
    let (_, created) = cluster
        .request(reqwest::Method::POST, base, Some(json!({"metadata": {"name": "x"}, "data": {"v": "old"}})))
        .await;
    let old_rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let (code, _) = cluster
        .request(
            reqwest::Method::PUT,
            &format!("{base}/x"),
            Some(json!({"metadata": {"name": "x"}, "data": {"v": "new"}})),
        )
        .await;
    assert_eq!(code, 200);
    // Exact: the list as it was.
    let (code, then) = cluster
        .request(reqwest::Method::GET, &format!("{base}?resourceVersion={old_rv}&resourceVersionMatch=Exact"), None)
        .await;
    assert_eq!(code, 200, "{then}");
    assert_eq!(x(&then)["data"]["v"], "old");
    assert_eq!(then["metadata"]["resourceVersion"], old_rv.as_str());
    let (code, now) = cluster
        .request(
            reqwest::Method::GET,
            &format!("{base}?resourceVersion={old_rv}&resourceVersionMatch=NotOlderThan"),
            None,
        )
        .await;
    assert_eq!((code, x(&now)["data"]["v"].as_str()), (200, Some("new")));
    let (code, _) = cluster.request(reqwest::Method::GET, &format!("{base}?resourceVersionMatch=Exact"), None).await;
    assert_eq!(code, 400, "resourceVersionMatch needs a resourceVersion");

    // A streaming list: the current state as ADDED, then the bookmark that ends it.
    let response = cluster
        .api
        .client
        .get(format!(
            "{}{base}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
            cluster.api.base
        ))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["data"]["v"], "new");
    let end = events.iter().position(|e| e["type"] == "BOOKMARK").expect("a bookmark");
    assert_eq!(end, 1, "{text}");
    assert_eq!(events[end]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");

    // A metadata-only watch.
    let response = cluster
        .api
        .client
        .get(format!("{}{base}?watch=1&timeoutSeconds=1", cluster.api.base))
        .header("Accept", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["object"]["kind"], "PartialObjectMetadata", "{text}");
    assert_eq!(first["object"]["metadata"]["name"], "x");
    assert!(first["object"].get("data").is_none());

    // A watch for `kubectl get -w`: one-row Tables, the columns only in the first.
    let (code, _) = cluster
        .request(reqwest::Method::POST, base, Some(json!({"metadata": {"name": "y"}, "data": {"a": "1", "b": "2"}})))
        .await;
    assert_eq!(code, 201);
    let response = cluster
        .api
        .client
        .get(format!("{}{base}?watch=1&timeoutSeconds=1", cluster.api.base))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(events[0]["object"]["kind"], "Table");
    let columns: Vec<&str> = events[0]["object"]["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["Name", "Data", "Age"]);
    assert_eq!(events[1]["object"]["columnDefinitions"], json!([]));
    assert_eq!(events[1]["object"]["rows"][0]["cells"][0], "y");
    assert_eq!(events[1]["object"]["rows"][0]["cells"][1], 2);

    // Bodies over 3 MiB are refused with a Status.
    let big = json!({"metadata": {"name": "big"}, "data": {"blob": "x".repeat(4 * 1024 * 1024)}});
    let (code, status) = cluster.request(reqwest::Method::POST, base, Some(big)).await;
    assert_eq!((code, status["reason"].as_str()), (413, Some("RequestEntityTooLarge")), "{status}");
}

on_both_backends!(
    kubectl_discovers_every_group_and_explains_from_openapi,
    kubectl_validates_fields_against_the_schema,
    workloads_scale_and_keep_status_apart,
    pods_bind_once_and_node_subresources_explain_themselves,
    deletecollection_deletes_what_the_selector_selects,
    kubectl_applies_client_side_and_server_side,
    kubectl_generators_send_protobuf_and_it_is_understood,
    query_parameters_read_like_kube_apiserver,
    resource_version_match_initial_events_and_body_limits
);
