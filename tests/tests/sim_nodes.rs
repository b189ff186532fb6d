//! Simulated nodes (`serve --sim-nodes N`): Nodes that are Ready with their capacity and
//! labels, their Leases in kube-node-lease, and pods bound to them that become Running
//! and Ready on their own, so `kubectl rollout status` finishes without a test kubelet.

use std::time::Duration;

use reqwest::Method;
use wasmkube_tests::{wait_for, Backend, Cluster, KUBECTLS};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeName: sim-node-001
      containers: [{name: web, image: "nginx:1.27"}, {name: sidecar, image: "busybox:1.36"}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_are_ready_and_run_the_pods_bound_to_them() {
    let cluster = Cluster::start_with(
        Backend::Embedded,
        &["--sim-nodes", "3", "--sim-node-cpu", "8", "--sim-pod-start-delay", "100ms"],
    )
    .await;
    let kubectl = KUBECTLS[0];
    let (ok, out, err) = cluster.kubectl(kubectl, &["get", "nodes", "--no-headers"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines.iter().all(|l| l.split_whitespace().nth(1) == Some("Ready")), "{out}");
    let (_, node) = cluster.request(Method::GET, "/api/v1/nodes/sim-node-002", None).await;
    assert_eq!(node["status"]["allocatable"]["cpu"], "8", "{node}");
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "sim-node-002");
    assert_eq!(node["metadata"]["labels"]["topology.kubernetes.io/zone"], "zone-c");
    let (_, lease) = cluster
        .request(Method::GET, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/sim-node-000", None)
        .await;
    assert_eq!(lease["spec"]["holderIdentity"], "sim-node-000", "{lease}");

    let manifest = cluster.dir.path().join("deployment.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    let (ok, _, err) = cluster.kubectl(kubectl, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, out, err) = cluster.kubectl(kubectl, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(ok && out.contains("successfully rolled out"), "{out} {err}");
    let (_, pods) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods?labelSelector=app=web", None).await;
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        assert_eq!(pod["status"]["phase"], "Running", "{pod}");
        let statuses = pod["status"]["containerStatuses"].as_array().expect("containerStatuses");
        assert_eq!(statuses.len(), 2, "{pod}");
        assert!(statuses.iter().all(|s| s["ready"] == true && s["state"]["running"]["startedAt"].is_string()), "{pod}");
        assert!(pod["status"]["podIP"].is_string(), "{pod}");
    }

    // A pod no scheduler binds (it names a scheduler that does not run) stays Pending.
    let (ok, _, err) = cluster.kubectl(
        kubectl,
        &["run", "loose", "--image=nginx:1.27", "--overrides", r#"{"spec":{"schedulerName":"nobody"}}"#],
    );
    assert!(ok, "{err}");
    // Bind another to a simulated node: it starts.
    let (ok, _, err) = cluster.kubectl(
        kubectl,
        &["run", "bound", "--image=nginx:1.27", "--overrides", r#"{"spec":{"nodeName":"sim-node-000"}}"#],
    );
    assert!(ok, "{err}");
    wait_for("the bound pod to run", Duration::from_secs(30), || async {
        let (_, pod) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods/bound", None).await;
        (pod["status"]["phase"] == "Running").then_some(())
    })
    .await;
    let (_, loose) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods/loose", None).await;
    assert_ne!(loose["status"]["phase"], "Running", "nothing runs a pod no node took: {loose}");

    // Flags are checked.
    let mut serve = wasmkube_tests::Process::start(&["serve", "--sim-nodes", "3", "--sim-pod-start-delay", "soon"]);
    let (code, err) = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--sim-pod-start-delay \"soon\""), "{err}");
    let mut serve = wasmkube_tests::Process::start(&[
        "serve",
        "--sim-nodes",
        "3",
        "--sim-node-taints",
        "dedicated=gpu:Sometimes",
        "--sim-node-labels",
        "pool",
    ]);
    let (code, err) = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the effect must be NoSchedule, PreferNoSchedule or NoExecute"), "{err}");
    assert!(err.contains("--sim-node-labels: \"pool\" is not key=value"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_take_the_labels_and_taints_they_are_given() {
    let cluster = Cluster::start_with(
        Backend::Embedded,
        &["--sim-nodes", "2", "--sim-node-labels", "pool=gpu,tier=a", "--sim-node-taints", "dedicated=gpu:NoSchedule"],
    )
    .await;
    let (_, node) = cluster.request(Method::GET, "/api/v1/nodes/sim-node-001", None).await;
    assert_eq!(node["metadata"]["labels"]["pool"], "gpu", "{node}");
    assert_eq!(node["metadata"]["labels"]["tier"], "a", "{node}");
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "sim-node-001", "{node}");
    assert_eq!(
        node["spec"]["taints"][0],
        serde_json::json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"})
    );
    // The taint keeps a pod that does not tolerate it away: kubectl shows why.
    let (ok, _, err) = cluster.kubectl(KUBECTLS[0], &["run", "plain", "--image=nginx:1.27"]);
    assert!(ok, "{err}");
    let message = wait_for("the pod to be reported unschedulable", Duration::from_secs(30), || async {
        let (_, pod) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods/plain", None).await;
        pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "PodScheduled")?["message"]
            .as_str()
            .map(String::from)
    })
    .await;
    assert_eq!(message, "0/2 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}.");
    let (ok, out, err) = cluster.kubectl(KUBECTLS[0], &["describe", "pod", "plain"]);
    assert!(ok, "{err}");
    assert!(out.contains("FailedScheduling") && out.contains("untolerated taint {dedicated: gpu}"), "{out}");
}
