//! Deployments as kubectl users know them, run by the default controller plugins
//! (Deployment, ReplicaSet) and the garbage collector: create, scale, roll out within
//! maxSurge/maxUnavailable (checked on every event of a pod watch), Recreate, `kubectl
//! rollout status|history|undo|pause|resume|restart`, the three deletion propagations,
//! and a controller hot-reloaded in the middle of a rollout.
//!
//! Nodes come later: a "kubelet" task here marks every new pod Running and Ready, as a
//! node would after starting it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{json, Value};
use wasmkube_tests::{wait_for, Cluster, KUBECTLS};

const DEADLINE: Duration = Duration::from_secs(60);
const KUBECTL: &str = KUBECTLS[0];

/// Mark every pod of `default` that is not Ready yet Running and Ready, until dropped.
struct Kubelet(tokio::task::JoinHandle<()>);

impl Kubelet {
    fn start(cluster: &Arc<Cluster>) -> Self {
        let cluster = cluster.clone();
        Kubelet(tokio::spawn(async move {
            loop {
                let (_, list) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods", None).await;
                for pod in list["items"].as_array().cloned().unwrap_or_default() {
                    let ready = pod["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                    if ready || !pod["metadata"]["deletionTimestamp"].is_null() {
                        continue;
                    }
                    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                    let status =
                        json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
                    cluster.merge_patch(&format!("/api/v1/namespaces/default/pods/{name}/status"), &status).await;
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows the pods `selector` selects with a watch and records, at every event, the pods
/// that exist and how many of them are ready.
struct PodWatch {
    /// (pods, ready) after each event.
    steps: Arc<Mutex<Vec<(usize, usize, Vec<String>)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodWatch {
    async fn start(cluster: &Cluster, selector: &str) -> Self {
        let (_, list) = cluster
            .request(Method::GET, &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"), None)
            .await;
        let since = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
        let url = format!(
            "{}/api/v1/namespaces/default/pods?watch=true&labelSelector={selector}&resourceVersion={since}",
            cluster.api.base
        );
        let mut pods: HashMap<String, Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| (p["metadata"]["name"].as_str().unwrap_or_default().to_string(), p.clone()))
            .collect();
        let response = cluster.api.client.get(&url).send().await.expect("watch");
        let steps: Arc<Mutex<Vec<(usize, usize, Vec<String>)>>> = Arc::default();
        let recorded = steps.clone();
        let task = tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buffer = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let Ok(event) = serde_json::from_slice::<Value>(&line) else { continue };
                    let object = &event["object"];
                    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    if event["type"] == "DELETED" || !object["metadata"]["deletionTimestamp"].is_null() {
                        pods.remove(&name);
                    } else {
                        pods.insert(name, object.clone());
                    }
                    let ready = pods
                        .values()
                        .filter(|p| {
                            p["status"]["conditions"]
                                .as_array()
                                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                        })
                        .count();
                    let images: Vec<String> = pods
                        .values()
                        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string())
                        .collect();
                    recorded.lock().push((pods.len(), ready, images));
                }
            }
        });
        PodWatch { steps, task }
    }

    fn steps(&self) -> Vec<(usize, usize, Vec<String>)> {
        self.steps.lock().clone()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn deployment(cluster: &Cluster, name: &str) -> Value {
    cluster.request(Method::GET, &format!("/apis/apps/v1/namespaces/default/deployments/{name}"), None).await.1
}

/// The ReplicaSets the Deployment `name` controls.
async fn replicasets_of(cluster: &Cluster, name: &str) -> Vec<Value> {
    let uid = deployment(cluster, name).await["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let (_, list) = cluster.request(Method::GET, "/apis/apps/v1/namespaces/default/replicasets", None).await;
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|rs| rs["metadata"]["ownerReferences"][0]["uid"] == uid.as_str())
        .collect()
}

/// Pods of `default` selected by `selector` that are not being deleted.
async fn live_pods(cluster: &Cluster, selector: &str) -> Vec<Value> {
    let (_, list) =
        cluster.request(Method::GET, &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"), None).await;
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let (ok, out, err) = cluster.kubectl(KUBECTL, args);
    assert!(ok, "kubectl {args:?}: {err}");
    out
}

/// `kubectl rollout status` until it says the rollout finished.
async fn rollout_status(cluster: &Cluster, name: &str) {
    let (ok, out, err) =
        cluster.kubectl(KUBECTL, &["rollout", "status", &format!("deployment/{name}"), "--timeout=60s"]);
    if !ok || !out.contains("successfully rolled out") {
        let (_, pods) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods", None).await;
        let (_, sets) = cluster.request(Method::GET, "/apis/apps/v1/namespaces/default/replicasets", None).await;
        panic!(
            "rollout status: {out} {err}\ndeployment: {}\nreplicasets: {sets}\npods: {pods}",
            deployment(cluster, name).await
        );
    }
}

async fn wait_pods(cluster: &Cluster, selector: &str, n: usize, image: &str) {
    wait_for(&format!("{n} pods of {image}"), DEADLINE, || async {
        let pods = live_pods(cluster, selector).await;
        (pods.len() == n && pods.iter().all(|p| p["spec"]["containers"][0]["image"] == image)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_scales_rolls_out_within_its_budget_and_rolls_back() {
    let cluster = Arc::new(Cluster::start().await);
    let _kubelet = Kubelet::start(&cluster);
    kubectl(&cluster, &["create", "deployment", "web", "--image=nginx:1.27", "--replicas=5"]);
    wait_pods(&cluster, "app=web", 5, "nginx:1.27").await;
    let sets = replicasets_of(&cluster, "web").await;
    assert_eq!(sets.len(), 1, "one ReplicaSet: {sets:?}");
    let first = sets[0]["metadata"]["name"].as_str().unwrap().to_string();
    let hash = sets[0]["metadata"]["labels"]["pod-template-hash"].as_str().unwrap().to_string();
    assert_eq!(first, format!("web-{hash}"));
    for pod in live_pods(&cluster, "app=web").await {
        assert_eq!(pod["metadata"]["ownerReferences"][0]["name"], first.as_str(), "owned by the ReplicaSet: {pod}");
        assert_eq!(pod["metadata"]["labels"]["pod-template-hash"], hash.as_str());
    }
    rollout_status(&cluster, "web").await;

    for replicas in [10, 2] {
        kubectl(&cluster, &["scale", "deployment", "web", &format!("--replicas={replicas}")]);
        wait_pods(&cluster, "app=web", replicas, "nginx:1.27").await;
        rollout_status(&cluster, "web").await;
    }
    assert_eq!(replicasets_of(&cluster, "web").await.len(), 1, "scaling makes no new ReplicaSet");

    // A rolling update of 4 replicas with maxSurge 1, maxUnavailable 1.
    kubectl(&cluster, &["scale", "deployment", "web", "--replicas=4"]);
    let strategy =
        r#"{"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1,"maxUnavailable":1}}}}"#;
    kubectl(&cluster, &["patch", "deployment", "web", "--type=merge", "-p", strategy]);
    rollout_status(&cluster, "web").await;
    wait_pods(&cluster, "app=web", 4, "nginx:1.27").await;
    let watch = PodWatch::start(&cluster, "app=web").await;
    kubectl(&cluster, &["set", "image", "deployment/web", "nginx=nginx:1.28"]);
    rollout_status(&cluster, "web").await;
    wait_pods(&cluster, "app=web", 4, "nginx:1.28").await;
    let steps = watch.steps();
    assert!(steps.len() > 8, "the watch saw the rollout: {steps:?}");
    for (pods, ready, images) in &steps {
        assert!(*pods <= 4 + 1, "more than replicas + maxSurge pods at one point: {pods} {images:?}\n{steps:?}");
        assert!(*ready >= 4 - 1, "fewer than replicas - maxUnavailable ready at one point: {ready}\n{steps:?}");
    }
    drop(watch);
    let out = kubectl(&cluster, &["rollout", "history", "deployment/web"]);
    assert!(out.contains('1') && out.contains('2'), "{out}");

    // undo: back to the first ReplicaSet (as revision 3), not a new one.
    kubectl(&cluster, &["rollout", "undo", "deployment/web"]);
    rollout_status(&cluster, "web").await;
    wait_pods(&cluster, "app=web", 4, "nginx:1.27").await;
    let sets = replicasets_of(&cluster, "web").await;
    assert_eq!(sets.len(), 2, "undo reuses the old ReplicaSet: {sets:?}");
    let reused = sets.iter().find(|rs| rs["metadata"]["name"] == first.as_str()).expect("the first ReplicaSet");
    assert_eq!(reused["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
    assert_eq!(reused["spec"]["replicas"], 4);
    let out = kubectl(&cluster, &["rollout", "history", "deployment/web"]);
    assert!(out.contains('2') && out.contains('3') && !out.lines().any(|l| l.starts_with("1 ")), "{out}");

    // pause: a new template makes no ReplicaSet until resume.
    kubectl(&cluster, &["rollout", "pause", "deployment/web"]);
    kubectl(&cluster, &["set", "image", "deployment/web", "nginx=nginx:1.29"]);
    wait_for("the paused Deployment to be observed", DEADLINE, || async {
        let d = deployment(&cluster, "web").await;
        let paused = d["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused"));
        (paused && d["status"]["observedGeneration"] == d["metadata"]["generation"]).then_some(())
    })
    .await;
    assert_eq!(replicasets_of(&cluster, "web").await.len(), 2, "paused: no new ReplicaSet");
    kubectl(&cluster, &["rollout", "resume", "deployment/web"]);
    rollout_status(&cluster, "web").await;
    wait_pods(&cluster, "app=web", 4, "nginx:1.29").await;

    // restart: a new ReplicaSet with the restartedAt annotation, same image.
    kubectl(&cluster, &["rollout", "restart", "deployment/web"]);
    rollout_status(&cluster, "web").await;
    let sets = replicasets_of(&cluster, "web").await;
    let newest = sets.iter().find(|rs| rs["spec"]["replicas"] == 4).expect("the active ReplicaSet");
    assert!(
        newest["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(),
        "{newest}"
    );
    assert_eq!(sets.len(), 4, "{sets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_every_old_pod_before_a_new_one_starts() {
    let cluster = Arc::new(Cluster::start().await);
    let _kubelet = Kubelet::start(&cluster);
    kubectl(&cluster, &["create", "deployment", "db", "--image=postgres:16", "--replicas=3"]);
    kubectl(
        &cluster,
        &[
            "patch",
            "deployment",
            "db",
            "--type=merge",
            "-p",
            r#"{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}"#,
        ],
    );
    rollout_status(&cluster, "db").await;
    wait_pods(&cluster, "app=db", 3, "postgres:16").await;
    let watch = PodWatch::start(&cluster, "app=db").await;
    kubectl(&cluster, &["set", "image", "deployment/db", "postgres=postgres:17"]);
    rollout_status(&cluster, "db").await;
    wait_pods(&cluster, "app=db", 3, "postgres:17").await;
    let steps = watch.steps();
    assert!(steps.iter().any(|(pods, _, _)| *pods == 0), "every old pod went first: {steps:?}");
    for (_, _, images) in &steps {
        let old = images.iter().any(|i| i == "postgres:16");
        let new = images.iter().any(|i| i == "postgres:17");
        assert!(!(old && new), "old and new pods at once: {images:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_propagates_in_the_background_the_foreground_or_orphans() {
    let cluster = Arc::new(Cluster::start().await);
    for name in ["bg", "fg", "orphan"] {
        kubectl(&cluster, &["create", "deployment", name, "--image=nginx:1.27", "--replicas=2"]);
        wait_pods(&cluster, &format!("app={name}"), 2, "nginx:1.27").await;
    }
    // Background: the Deployment goes at once, then its ReplicaSet and pods.
    kubectl(&cluster, &["delete", "deployment", "bg", "--wait=false"]);
    wait_for("bg's ReplicaSet and pods to go", DEADLINE, || async {
        let (_, sets) = cluster
            .request(Method::GET, "/apis/apps/v1/namespaces/default/replicasets?labelSelector=app=bg", None)
            .await;
        let left = sets["items"].as_array().map_or(0, Vec::len) + live_pods(&cluster, "app=bg").await.len();
        (left == 0).then_some(())
    })
    .await;

    // Foreground: the Deployment stays (deleting) until its dependents are gone; kubectl waits for it.
    let (ok, _, err) =
        cluster.kubectl(KUBECTL, &["delete", "deployment", "fg", "--cascade=foreground", "--timeout=60s"]);
    assert!(ok, "{err}");
    let (code, _) = cluster.request(Method::GET, "/apis/apps/v1/namespaces/default/deployments/fg", None).await;
    assert_eq!(code, 404);
    assert!(live_pods(&cluster, "app=fg").await.is_empty(), "its pods went before it");

    // Orphan: the ReplicaSet and pods stay, without the Deployment as owner.
    kubectl(&cluster, &["delete", "deployment", "orphan", "--cascade=orphan"]);
    let (_, sets) = cluster
        .request(Method::GET, "/apis/apps/v1/namespaces/default/replicasets?labelSelector=app=orphan", None)
        .await;
    let sets = sets["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert!(sets[0]["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty), "{:?}", sets[0]);
    assert_eq!(live_pods(&cluster, "app=orphan").await.len(), 2, "the pods stay, owned by the ReplicaSet");
    // The orphaned ReplicaSet still keeps its pods.
    let victim = live_pods(&cluster, "app=orphan").await[0]["metadata"]["name"].as_str().unwrap().to_string();
    kubectl(&cluster, &["delete", "pod", &victim]);
    wait_for("the orphaned ReplicaSet to replace its pod", DEADLINE, || async {
        let pods = live_pods(&cluster, "app=orphan").await;
        (pods.len() == 2 && pods.iter().all(|p| p["metadata"]["name"] != victim.as_str())).then_some(())
    })
    .await;

    // A namespace deleted with a Deployment in it loses everything, then goes.
    kubectl(&cluster, &["create", "namespace", "doomed"]);
    kubectl(&cluster, &["create", "deployment", "web", "--image=nginx:1.27", "--replicas=2", "-n", "doomed"]);
    wait_for("doomed's pods", DEADLINE, || async {
        let (_, pods) = cluster.request(Method::GET, "/api/v1/namespaces/doomed/pods", None).await;
        (pods["items"].as_array().map_or(0, Vec::len) == 2).then_some(())
    })
    .await;
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["delete", "namespace", "doomed", "--timeout=60s"]);
    assert!(ok, "{err}");
    let (code, _) = cluster.request(Method::GET, "/api/v1/namespaces/doomed", None).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_replaced_during_a_rollout_finishes_it() {
    let cluster = Arc::new(Cluster::start().await);
    let _kubelet = Kubelet::start(&cluster);
    kubectl(&cluster, &["create", "deployment", "web", "--image=nginx:1.27", "--replicas=6"]);
    let strategy = r#"{"spec":{"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":1}}}}"#;
    kubectl(&cluster, &["patch", "deployment", "web", "--type=merge", "-p", strategy]);
    rollout_status(&cluster, "web").await;
    let watch = PodWatch::start(&cluster, "app=web").await;
    kubectl(&cluster, &["set", "image", "deployment/web", "nginx=nginx:1.28"]);
    // Replace the Deployment controller a few times while it rolls: a Plugin object of the
    // same name takes the place of the default one, each time with new config.
    for round in 0..4 {
        let plugin = json!({
            "apiVersion": "wasmkube.io/v1alpha1", "kind": "Plugin",
            "metadata": {"name": "deployment"},
            "spec": {
                "kind": "controller", "module": "builtin:deployment.wasm",
                "capabilities": [
                    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch", "update"]},
                    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
                ],
                "config": {"round": round},
            },
        });
        let path = cluster.dir.path().join("plugin.json");
        std::fs::write(&path, plugin.to_string()).unwrap();
        kubectl(&cluster, &["apply", "-f", path.to_str().unwrap()]);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    rollout_status(&cluster, "web").await;
    wait_pods(&cluster, "app=web", 6, "nginx:1.28").await;
    let log = cluster.log();
    assert!(log.contains("controller replaced in place"), "the controller was replaced:\n{log}");
    for (pods, ready, images) in watch.steps() {
        assert!(pods <= 7, "more than replicas + maxSurge: {images:?}");
        assert!(ready >= 5, "fewer than replicas - maxUnavailable ready: {ready}");
    }
    assert_eq!(replicasets_of(&cluster, "web").await.len(), 2, "no ReplicaSet made twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_makes_no_progress_exceeds_its_deadline() {
    // No kubelet here: the pods never become ready.
    let cluster = Arc::new(Cluster::start().await);
    kubectl(&cluster, &["create", "deployment", "stuck", "--image=nginx:1.27", "--replicas=2"]);
    kubectl(
        &cluster,
        &["patch", "deployment", "stuck", "--type=merge", "-p", r#"{"spec":{"progressDeadlineSeconds":2}}"#],
    );
    let (ok, out, err) = cluster.kubectl(KUBECTL, &["rollout", "status", "deployment/stuck", "--timeout=30s"]);
    assert!(!ok, "{out}");
    assert!(err.contains("exceeded its progress deadline"), "{out} {err}");
    let d = deployment(&cluster, "stuck").await;
    let progressing =
        d["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Progressing").unwrap().clone();
    assert_eq!(
        (progressing["status"].as_str(), progressing["reason"].as_str()),
        (Some("False"), Some("ProgressDeadlineExceeded")),
        "{d}"
    );
}
