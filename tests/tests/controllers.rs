//! The controller host with the default controller plugins: the ReplicaSet controller
//! (replicas, adoption, release, status), the ServiceAccount controller, `--controllers`,
//! and leader election between two servers on one etcd.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use wasmkube_tests::{wait_for, Backend, Cluster, Process, FAST_ELECTION, KUBECTLS};

const DEADLINE: Duration = Duration::from_secs(30);

/// The pods in `default` that `selector` selects, not being deleted.
async fn pods(cluster: &Cluster, selector: &str) -> Vec<Value> {
    let (code, list) =
        cluster.request(Method::GET, &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"), None).await;
    assert_eq!(code, 200, "{list}");
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn controller_uid(pod: &Value) -> Option<String> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)
        .and_then(|o| o["uid"].as_str().map(String::from))
}

async fn replicaset(cluster: &Cluster, name: &str) -> Value {
    let (code, rs) =
        cluster.request(Method::GET, &format!("/apis/apps/v1/namespaces/default/replicasets/{name}"), None).await;
    assert_eq!(code, 200, "{rs}");
    rs
}

/// Wait until the ReplicaSet `name` has exactly `n` pods it controls, and its status says so.
async fn wait_replicas(cluster: &Cluster, name: &str, selector: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{name} to have {n} pods and report them"), DEADLINE, || async {
        let rs = replicaset(cluster, name).await;
        let uid = rs["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let owned: Vec<Value> =
            pods(cluster, selector).await.into_iter().filter(|p| controller_uid(p).as_deref() == Some(&uid)).collect();
        let reported = rs["status"]["replicas"].as_u64() == Some(n as u64)
            && rs["status"]["observedGeneration"] == rs["metadata"]["generation"];
        (owned.len() == n && reported).then_some(owned)
    })
    .await
}

const REPLICASET: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 5
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: front}}
    spec: {containers: [{name: c, image: "nginx:1.27"}]}
"#;

#[tokio::test]
async fn a_replicaset_keeps_its_replicas_adopts_and_releases() {
    let cluster = Cluster::start().await;
    let kubectl = KUBECTLS[0];
    let manifest = cluster.dir.path().join("rs.yaml");
    std::fs::write(&manifest, REPLICASET).unwrap();
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(ok, "{err}");

    let created = wait_replicas(&cluster, "web", "app=web", 5).await;
    let rs = replicaset(&cluster, "web").await;
    for pod in &created {
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["name"].as_str(), owner["blockOwnerDeletion"].as_bool()),
            (Some("ReplicaSet"), Some("web"), Some(true)),
            "{pod}"
        );
        assert!(pod["metadata"]["name"].as_str().unwrap_or_default().starts_with("web-"), "{pod}");
        assert_eq!(pod["metadata"]["labels"]["tier"], "front", "the template's labels: {pod}");
    }
    assert_eq!(rs["status"]["fullyLabeledReplicas"], 5, "{rs}");

    for replicas in ["10", "2"] {
        let (ok, _, err) = cluster.kubectl(kubectl, &["scale", "rs", "web", &format!("--replicas={replicas}")]);
        assert!(ok, "{err}");
        wait_replicas(&cluster, "web", "app=web", replicas.parse().unwrap()).await;
    }

    // A deleted pod is replaced.
    let before = wait_replicas(&cluster, "web", "app=web", 2).await;
    let victim = before[0]["metadata"]["name"].as_str().unwrap().to_string();
    let (ok, _, err) = cluster.kubectl(kubectl, &["delete", "pod", &victim, "--wait=false"]);
    assert!(ok, "{err}");
    wait_for("a replacement pod", DEADLINE, || async {
        let now = wait_replicas(&cluster, "web", "app=web", 2).await;
        now.iter().all(|p| p["metadata"]["name"] != victim.as_str()).then_some(())
    })
    .await;

    // Readiness (nodes come later: the test sets the condition) is reported.
    let ready = pods(&cluster, "app=web").await[0]["metadata"]["name"].as_str().unwrap().to_string();
    let status = r#"{"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}"#;
    let (ok, _, err) =
        cluster.kubectl(kubectl, &["patch", "pod", &ready, "--subresource=status", "--type=merge", "-p", status]);
    assert!(ok, "{err}");
    wait_for("readyReplicas 1", DEADLINE, || async {
        let rs = replicaset(&cluster, "web").await;
        (rs["status"]["readyReplicas"] == 1 && rs["status"]["availableReplicas"] == 1).then_some(())
    })
    .await;

    // An orphan that matches is adopted, and the surplus deleted (not the ready pod).
    let orphan = json!({"metadata": {"name": "orphan", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}});
    let (code, answer) = cluster.request(Method::POST, "/api/v1/namespaces/default/pods", Some(orphan)).await;
    assert_eq!(code, 201, "{answer}");
    let rs_uid = replicaset(&cluster, "web").await["metadata"]["uid"].as_str().unwrap().to_string();
    wait_for("the orphan to be adopted (or replaced by it)", DEADLINE, || async {
        let (code, pod) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods/orphan", None).await;
        let adopted = code == 200 && controller_uid(&pod).as_deref() == Some(rs_uid.as_str());
        let gone = code == 404 || !pod["metadata"]["deletionTimestamp"].is_null();
        (adopted || gone).then_some(())
    })
    .await;
    let settled = wait_replicas(&cluster, "web", "app=web", 2).await;
    assert!(settled.iter().any(|p| p["metadata"]["name"] == ready.as_str()), "the ready pod stays: {settled:?}");

    // A pod relabelled out of the selector is released and replaced.
    let released = settled.iter().find(|p| p["metadata"]["name"] != ready.as_str()).unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, _, err) = cluster.kubectl(kubectl, &["label", "pod", &released, "app=other", "--overwrite"]);
    assert!(ok, "{err}");
    wait_for("the relabelled pod to be released", DEADLINE, || async {
        let (_, pod) = cluster.request(Method::GET, &format!("/api/v1/namespaces/default/pods/{released}"), None).await;
        controller_uid(&pod).is_none().then_some(())
    })
    .await;
    wait_replicas(&cluster, "web", "app=web", 2).await;

    // What the controller did is in the metrics.
    let (_, metrics) = cluster.api.get("/metrics").await.expect("metrics");
    assert!(
        metrics.contains(r#"wasmkube_controller_actions_total{controller="replicaset",outcome="ok",verb="create"}"#),
        "{metrics}"
    );
    assert!(metrics.lines().any(|l| l == "wasmkube_controller_manager_leading 1"), "{metrics}");
    // Each controller has a health check.
    let (code, health) = cluster.api.get("/healthz/controllers?verbose").await.expect("controller health");
    assert_eq!(code, 200, "{health}");
    for name in ["replicaset", "deployment", "serviceaccount", "gc"] {
        assert!(health.contains(&format!("[+]{name} ok")), "{health}");
    }
}

#[tokio::test]
async fn every_namespace_gets_a_default_service_account_and_controllers_can_be_left_out() {
    let cluster = Cluster::start().await;
    let kubectl = KUBECTLS[0];
    let (ok, _, err) = cluster.kubectl(kubectl, &["create", "namespace", "team-a"]);
    assert!(ok, "{err}");
    let path = "/api/v1/namespaces/team-a/serviceaccounts/default";
    wait_for("team-a's default ServiceAccount", DEADLINE, || async {
        (cluster.request(Method::GET, path, None).await.0 == 200).then_some(())
    })
    .await;
    let (ok, _, err) = cluster.kubectl(kubectl, &["delete", "serviceaccount", "default", "-n", "team-a"]);
    assert!(ok, "{err}");
    wait_for("the default ServiceAccount to be made again", DEADLINE, || async {
        (cluster.request(Method::GET, path, None).await.0 == 200).then_some(())
    })
    .await;

    // Without the ServiceAccount controller, only the ReplicaSet controller acts.
    let cluster = Cluster::start_with(Backend::Embedded, &["--controllers=*,-serviceaccount"]).await;
    let (ok, _, err) = cluster.kubectl(kubectl, &["create", "namespace", "team-b"]);
    assert!(ok, "{err}");
    let manifest = cluster.dir.path().join("rs.yaml");
    std::fs::write(&manifest, REPLICASET).unwrap();
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(ok, "{err}");
    wait_replicas(&cluster, "web", "app=web", 5).await;
    let (code, _) = cluster.request(Method::GET, "/api/v1/namespaces/team-b/serviceaccounts/default", None).await;
    assert_eq!(code, 404, "the ServiceAccount controller is off");
    let log = cluster.log();
    assert!(!log.contains("controller=serviceaccount"), "it never started:\n{log}");

    // A bad selection is refused with what to write instead.
    let mut serve = Process::start(&["serve", "--controllers", "*,-", "--leader-elect-renew-deadline", "20s"]);
    let (code, err) = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--controllers") && err.contains("-<name>"), "{err}");
    assert!(err.contains("must be shorter than --leader-elect-lease-duration"), "{err}");
}

/// The holder of the controller manager's Lease, as `cluster` reads it.
async fn holder(cluster: &Cluster) -> Option<String> {
    let (code, lease) = cluster
        .request(
            Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/wasmkube-controller-manager",
            None,
        )
        .await;
    (code == 200).then(|| lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string())
}

async fn lease(cluster: &Cluster) -> Value {
    cluster
        .request(
            Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/wasmkube-controller-manager",
            None,
        )
        .await
        .1
}

/// Every "action" line a server logged: (time, identity).
fn actions(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| l.contains("wasmkube::controllers::actions") && l.contains(" action "))
        .filter_map(|l| {
            let time = l.split_whitespace().next()?.to_string();
            let identity = l.split("identity=").nth(1)?.split_whitespace().next()?.to_string();
            Some((time, identity))
        })
        .collect()
}

#[tokio::test]
async fn one_of_two_servers_leads_and_the_other_takes_over() {
    let first = Cluster::start_with(Backend::Etcd, &FAST_ELECTION).await;
    let second = first.another_server_with(&FAST_ELECTION).await;
    let third = first.another_server_with(&FAST_ELECTION).await;
    let identities = [first.identity().await, second.identity().await, third.identity().await];
    let leader = wait_for("a leader", DEADLINE, || async { holder(&first).await.filter(|h| !h.is_empty()) }).await;
    assert!(identities.contains(&leader), "{leader} is one of {identities:?}");
    let servers = [&first, &second, &third];
    let leading_index = identities.iter().position(|i| *i == leader).unwrap();
    // Exactly one says it leads.
    let mut leading = 0;
    for server in servers {
        let (_, metrics) = server.api.get("/metrics").await.expect("metrics");
        if metrics.lines().any(|l| l == "wasmkube_controller_manager_leading 1") {
            leading += 1;
        }
    }
    assert_eq!(leading, 1, "exactly one server leads");

    // The leader works: a ReplicaSet gets its pods.
    let manifest = first.dir.path().join("rs.yaml");
    std::fs::write(&manifest, REPLICASET).unwrap();
    let (ok, _, err) = first.kubectl(KUBECTLS[0], &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(ok, "{err}");
    wait_replicas(&first, "web", "app=web", 5).await;

    // SIGTERM: the leader releases the Lease and another takes it within a second.
    let transitions = lease(&first).await["spec"]["leaseTransitions"].as_i64().unwrap_or_default();
    let survivor = servers[(leading_index + 1) % 3];
    servers[leading_index].signal(libc::SIGTERM);
    let stopped = Instant::now();
    let next = wait_for("another leader after SIGTERM", DEADLINE, || async {
        holder(survivor).await.filter(|h| !h.is_empty() && *h != leader)
    })
    .await;
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(1), "a released Lease is taken at once, not at the next retry: {took:?}");
    let after = lease(survivor).await;
    assert_eq!(after["spec"]["leaseTransitions"].as_i64(), Some(transitions + 1), "{after}");

    // kill -9: the last one takes over within lease duration + retry period, and finishes the work.
    let next_index = identities.iter().position(|i| *i == next).unwrap();
    let last = servers.iter().enumerate().find(|(i, _)| *i != leading_index && *i != next_index).unwrap().1;
    let (ok, _, err) = last.kubectl(KUBECTLS[0], &["scale", "rs", "web", "--replicas=8"]);
    assert!(ok, "{err}");
    servers[next_index].signal(libc::SIGKILL);
    let killed = Instant::now();
    wait_for("the last server to lead after kill -9", DEADLINE, || async {
        holder(last).await.filter(|h| *h == identities[3 - leading_index - next_index]).map(|_| ())
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(3000 + 500) + Duration::from_secs(2),
        "lease duration + retry period (and some slack for a loaded machine): {took:?}"
    );
    wait_replicas(last, "web", "app=web", 8).await;

    // Leaders never acted at the same time: each identity's actions fall in its own span.
    let mut all: Vec<(String, String)> = servers.iter().flat_map(|s| actions(&s.log())).collect();
    all.sort();
    let mut order: Vec<String> = Vec::new();
    for (_, identity) in &all {
        if order.last() != Some(identity) {
            assert!(!order.contains(identity), "{identity} acted again after another leader acted: {all:?}");
            order.push(identity.clone());
        }
    }
    assert!(order.len() >= 2, "more than one leader acted: {order:?}");
}

fn candidate(name: &str, config: Value) -> Value {
    json!({
        "apiVersion": "wasmkube.io/v1alpha1", "kind": "Plugin",
        "metadata": {"name": name},
        "spec": {
            "kind": "controller", "module": "builtin:replicaset.wasm",
            "mode": "Shadow", "shadowOf": "replicaset",
            "capabilities": [
                {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list", "watch", "patch", "update"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            ],
            "config": config,
        },
    })
}

/// This server's entry in the Plugin's `status.activity`.
async fn activity(cluster: &Cluster, plugin: &str) -> Option<Value> {
    let (code, object) =
        cluster.request(Method::GET, &format!("/apis/wasmkube.io/v1alpha1/plugins/{plugin}"), None).await;
    if code != 200 {
        return None;
    }
    object["status"]["activity"].as_array().and_then(|a| a.first().cloned())
}

#[tokio::test]
async fn a_shadow_controller_records_what_it_would_do_and_changes_nothing() {
    let cluster = Cluster::start().await;
    // Two candidates beside the live ReplicaSet controller: the same code, and one that
    // would create at most 2 pods per reconcile.
    for (name, config) in [("rs-same", json!({})), ("rs-slow", json!({"burstReplicas": 2}))] {
        let (code, answer) =
            cluster.request(Method::POST, "/apis/wasmkube.io/v1alpha1/plugins", Some(candidate(name, config))).await;
        assert_eq!(code, 201, "{answer}");
        wait_for(&format!("{name} to load"), DEADLINE, || async {
            let (_, plugin) =
                cluster.request(Method::GET, &format!("/apis/wasmkube.io/v1alpha1/plugins/{name}"), None).await;
            plugin["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                .then_some(())
        })
        .await;
    }
    wait_for("both shadows to ride on the live controller", DEADLINE, || async {
        let log = cluster.log();
        log.lines()
            .any(|l| l.contains("shadow controllers beside it") && l.contains("rs-same") && l.contains("rs-slow"))
            .then_some(())
    })
    .await;
    let manifest = cluster.dir.path().join("rs.yaml");
    std::fs::write(&manifest, REPLICASET).unwrap();
    let (ok, _, err) = cluster.kubectl(KUBECTLS[0], &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(ok, "{err}");
    let created = wait_replicas(&cluster, "web", "app=web", 5).await;

    // Nothing was written by a candidate: every pod and the ReplicaSet's status are the live
    // one's (the scheduler may have written why a pod waits: there are no nodes).
    for pod in &created {
        let managers: Vec<&str> = pod["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .filter(|m| *m != "default-scheduler")
            .collect();
        assert_eq!(managers, ["replicaset"], "{pod}");
    }
    let rs = replicaset(&cluster, "web").await;
    assert!(rs["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| !m["manager"].as_str().unwrap().starts_with("rs-")));

    // The same code agrees on every reconcile; what it would do is in its status.
    let creates = |verdict: &Value| {
        verdict["actions"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|a| a["action"].as_str().is_some_and(|a| a.starts_with("create "))).count())
    };
    let same = wait_for("rs-same's reconciles in its status", DEADLINE, || async {
        activity(&cluster, "rs-same")
            .await
            .filter(|a| a["lastReconciles"].as_array().is_some_and(|r| r.iter().any(|r| creates(&r["live"]) == 5)))
    })
    .await;
    assert_eq!(same["disagreements"], 0, "{same}");
    let first_create = same["lastReconciles"].as_array().unwrap().iter().find(|r| creates(&r["live"]) == 5).unwrap();
    assert_eq!(first_create["live"], first_create["shadow"], "the same 5 creates: {first_create}");
    assert!(first_create["shadow"]["actions"][0]["action"].as_str().unwrap().starts_with("create pods default/web-*"));

    // The slower one disagrees where the live controller created 5 at once.
    let slow = wait_for("rs-slow's disagreement", DEADLINE, || async {
        activity(&cluster, "rs-slow").await.filter(|a| a["disagreements"].as_u64().is_some_and(|d| d > 0))
    })
    .await;
    let disagreement = &slow["lastDisagreements"][0];
    assert_eq!(creates(&disagreement["live"]), 5, "{disagreement}");
    assert_eq!(creates(&disagreement["shadow"]), 2, "{disagreement}");
    let (_, metrics) = cluster.api.get("/metrics").await.expect("metrics");
    assert!(
        metrics.contains(r#"wasmkube_plugin_shadow_disagreements_total{live="replicaset",plugin="rs-slow"}"#),
        "{metrics}"
    );
    assert!(cluster.log().contains("outcome=\"shadowed\""), "the shadow's actions are logged");
}

#[tokio::test]
async fn the_garbage_collector_follows_custom_resources_served_after_it_started() {
    let cluster = Cluster::start().await;
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    });
    let (code, answer) =
        cluster.request(Method::POST, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", Some(crd)).await;
    assert_eq!(code, 201, "{answer}");
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    wait_for("widgets to be served", DEADLINE, || async {
        (cluster.request(Method::GET, widgets, None).await.0 == 200).then_some(())
    })
    .await;

    // A custom resource owned by a ConfigMap goes with it (background).
    let (_, owner) = cluster
        .request(Method::POST, "/api/v1/namespaces/default/configmaps", Some(json!({"metadata": {"name": "owner"}})))
        .await;
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]}});
    let (code, answer) = cluster.request(Method::POST, widgets, Some(widget)).await;
    assert_eq!(code, 201, "{answer}");
    let (ok, _, err) = cluster.kubectl(KUBECTLS[0], &["delete", "configmap", "owner"]);
    assert!(ok, "{err}");
    wait_for("the owned widget to be collected", DEADLINE, || async {
        (cluster.request(Method::GET, &format!("{widgets}/w1"), None).await.0 == 404).then_some(())
    })
    .await;

    // A custom resource deleted in the foreground waits for its dependents, then goes.
    let (_, parent) = cluster
        .request(
            Method::POST,
            widgets,
            Some(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "parent"}})),
        )
        .await;
    let child = json!({"metadata": {"name": "child", "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Widget",
        "name": "parent", "uid": parent["metadata"]["uid"], "blockOwnerDeletion": true}]}});
    let (code, answer) = cluster.request(Method::POST, "/api/v1/namespaces/default/configmaps", Some(child)).await;
    assert_eq!(code, 201, "{answer}");
    let (ok, _, err) =
        cluster.kubectl(KUBECTLS[0], &["delete", "widget", "parent", "--cascade=foreground", "--timeout=30s"]);
    assert!(ok, "{err}");
    let (code, _) = cluster.request(Method::GET, "/api/v1/namespaces/default/configmaps/child", None).await;
    assert_eq!(code, 404, "the dependent went first");
}
