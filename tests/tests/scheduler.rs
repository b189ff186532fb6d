//! The scheduler (issue 7): the host's queue, cache and cycle with the default policy
//! plugin deciding, on simulated nodes. Every test runs the real binary; placements are
//! read back through the API and checked against what Kubernetes documents.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use wasmkube_tests::{plugin_component, wait_for, Backend, Cluster, FAST_ELECTION, KUBECTLS};

const DEADLINE: Duration = Duration::from_secs(60);
const KUBECTL: &str = KUBECTLS[0];

fn pod(name: &str, cpu: &str, extra: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "test"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27", "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}}}]},
    });
    merge(&mut pod, extra);
    pod
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

async fn create(cluster: &Cluster, namespace: &str, pod: Value) {
    let (code, body) = cluster.request(Method::POST, &format!("/api/v1/namespaces/{namespace}/pods"), Some(pod)).await;
    assert_eq!(code, 201, "{body}");
}

async fn get_pod(cluster: &Cluster, name: &str) -> Value {
    cluster.request(Method::GET, &format!("/api/v1/namespaces/default/pods/{name}"), None).await.1
}

/// The node `name` is bound to, once it is.
async fn bound(cluster: &Cluster, name: &str) -> String {
    wait_for(&format!("{name} to be bound"), DEADLINE, || async {
        let pod = get_pod(cluster, name).await;
        pod["spec"]["nodeName"].as_str().map(String::from)
    })
    .await
}

fn condition(pod: &Value, kind: &str) -> Option<Value> {
    pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind).cloned()
}

/// The PodScheduled=False condition of a pod left pending, once it is written.
async fn unschedulable(cluster: &Cluster, name: &str) -> Value {
    wait_for(&format!("{name} to be reported unschedulable"), DEADLINE, || async {
        let pod = get_pod(cluster, name).await;
        assert!(pod["spec"]["nodeName"].is_null(), "{name} was bound: {pod}");
        condition(&pod, "PodScheduled").filter(|c| c["status"] == "False")
    })
    .await
}

/// Create a Node through the API (as a kubelet registers one): labels and taints from
/// the start, then its allocatable through the status subresource.
async fn add_node(cluster: &Cluster, name: &str, labels: Value, taints: Value, cpu: &str) {
    let mut all_labels = json!({"kubernetes.io/hostname": name});
    merge(&mut all_labels, labels);
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": all_labels}, "spec": {"taints": taints}});
    let (code, body) = cluster.request(Method::POST, "/api/v1/nodes", Some(node)).await;
    assert_eq!(code, 201, "{body}");
    let amounts = json!({"cpu": cpu, "memory": "16Gi", "pods": "110"});
    let status = json!({"status": {"allocatable": amounts, "capacity": amounts}});
    let (code, body) = cluster.merge_patch(&format!("/api/v1/nodes/{name}/status"), &status).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_affinity_and_spread_decide_as_kubernetes_documents() {
    let cluster = Cluster::start_with(Backend::Embedded, &["--sim-nodes", "3", "--sim-node-cpu", "4"]).await;
    // A tainted node of its own zone: only pods that tolerate the taint go there.
    let taint = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    add_node(&cluster, "gpu-node", json!({"topology.kubernetes.io/zone": "zone-gpu"}), taint, "4").await;
    let gpu_zone = json!({"topology.kubernetes.io/zone": "zone-gpu"});
    create(&cluster, "default", pod("no-toleration", "100m", json!({"spec": {"nodeSelector": gpu_zone}}))).await;
    let reason = unschedulable(&cluster, "no-toleration").await;
    assert_eq!(reason["reason"], "Unschedulable");
    assert_eq!(
        reason["message"],
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 3 node(s) didn't match Pod's node affinity/selector."
    );
    let tolerant = json!({"spec": {"nodeSelector": gpu_zone,
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}});
    create(&cluster, "default", pod("tolerant", "100m", tolerant)).await;
    assert_eq!(bound(&cluster, "tolerant").await, "gpu-node");
    let exists = json!({"spec": {"nodeSelector": gpu_zone, "tolerations": [{"operator": "Exists"}]}});
    create(&cluster, "default", pod("tolerates-all", "100m", exists)).await;
    assert_eq!(bound(&cluster, "tolerates-all").await, "gpu-node");
    let wrong_value = json!({"spec": {"nodeSelector": gpu_zone,
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "tpu", "effect": "NoSchedule"}]}});
    create(&cluster, "default", pod("wrong-value", "100m", wrong_value)).await;
    unschedulable(&cluster, "wrong-value").await;

    // A label added later: a pod that requires it waits, then goes on the node's change.
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["label", "nodes", "sim-node-002", "disk=ssd"]);
    assert!(ok, "{err}");
    // Required node affinity: In, NotIn; preferred: the heavier term wins.
    let required = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}}});
    create(&cluster, "default", pod("wants-ssd", "100m", required)).await;
    assert_eq!(bound(&cluster, "wants-ssd").await, "sim-node-002");
    let not_in = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["sim-node-000", "sim-node-002"]}]}]}}}}});
    create(&cluster, "default", pod("not-0-or-2", "100m", not_in)).await;
    assert_eq!(bound(&cluster, "not-0-or-2").await, "sim-node-001", "gpu-node is tainted, 000 and 002 excluded");
    let preferred = json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["sim-node-001"]}]}},
        {"weight": 80, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}},
    ]}}}});
    create(&cluster, "default", pod("prefers-ssd", "100m", preferred)).await;
    assert_eq!(bound(&cluster, "prefers-ssd").await, "sim-node-002");

    // Topology spread: maxSkew 1 over hostname on the simulated nodes (the node selector
    // leaves gpu-node out of the domains): 6 pods go 2, 2 and 2.
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["create", "namespace", "spread"]);
    assert!(ok, "{err}");
    for i in 0..6 {
        let spread = json!({"metadata": {"labels": {"app": "spread"}}, "spec": {"nodeSelector": {"type": "sim"}, "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "spread"}}}]}});
        create(&cluster, "spread", pod(&format!("s{i}"), "10m", spread)).await;
        // One at a time, so each sees the last one placed (the skew is checked per pod).
        wait_for("the spread pod bound", DEADLINE, || async {
            let (_, p) = cluster.request(Method::GET, &format!("/api/v1/namespaces/spread/pods/s{i}"), None).await;
            p["spec"]["nodeName"].as_str().map(|_| ())
        })
        .await;
    }
    let (_, pods) = cluster.request(Method::GET, "/api/v1/namespaces/spread/pods", None).await;
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in pods["items"].as_array().unwrap() {
        *per_node.entry(p["spec"]["nodeName"].as_str().unwrap().to_string()).or_default() += 1;
    }
    for node in ["sim-node-000", "sim-node-001", "sim-node-002"] {
        assert_eq!(per_node.get(node), Some(&2), "{per_node:?}");
    }

    // A pod naming another scheduler is left alone.
    create(&cluster, "default", pod("elsewhere", "100m", json!({"spec": {"schedulerName": "my-scheduler"}}))).await;
    // ... while one created after it is scheduled (the scheduler did look at both).
    create(&cluster, "default", pod("after-elsewhere", "100m", json!({}))).await;
    bound(&cluster, "after-elsewhere").await;
    let elsewhere = get_pod(&cluster, "elsewhere").await;
    assert!(elsewhere["spec"]["nodeName"].is_null() && condition(&elsewhere, "PodScheduled").is_none(), "{elsewhere}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_fits_nowhere_waits_then_takes_a_node_added_for_it() {
    let cluster = Cluster::start_with(Backend::Embedded, &["--sim-nodes", "2", "--sim-node-cpu", "1"]).await;
    create(&cluster, "default", pod("big", "3", json!({}))).await;
    let reason = unschedulable(&cluster, "big").await;
    assert_eq!(reason["message"], "0/2 nodes are available: 2 Insufficient cpu.", "{reason}");
    // kubectl describe shows the Event.
    let (ok, out, err) =
        cluster.kubectl(KUBECTL, &["get", "events", "--field-selector", "reason=FailedScheduling", "-o", "json"]);
    assert!(ok, "{err}");
    let events: Value = serde_json::from_str(&out).unwrap();
    assert!(
        events["items"].as_array().unwrap().iter().any(|e| e["involvedObject"]["name"] == "big"
            && e["type"] == "Warning"
            && e["message"] == "0/2 nodes are available: 2 Insufficient cpu."),
        "{out}"
    );
    // A node that fits: the pod goes there on the node's event, not on a timer.
    add_node(&cluster, "big-node", json!({}), json!([]), "8").await;
    let started = std::time::Instant::now();
    assert_eq!(bound(&cluster, "big").await, "big-node");
    assert!(started.elapsed() < Duration::from_secs(5), "scheduled on the node's event, within its backoff");
    let (ok, out, _) =
        cluster.kubectl(KUBECTL, &["get", "events", "--field-selector", "reason=Scheduled", "-o", "json"]);
    assert!(ok && out.contains("Successfully assigned default/big to big-node"), "{out}");
}

/// Requests per node must fit its allocatable: checked from what the API holds.
async fn assert_no_overcommit(cluster: &Cluster, cpu_per_node: u64, pods_per_node: usize) -> (usize, usize) {
    let (_, pods) = cluster.request(Method::GET, "/api/v1/pods?limit=0", None).await;
    let mut cpu: HashMap<String, u64> = HashMap::new();
    let mut count: HashMap<String, usize> = HashMap::new();
    let (mut placed, mut pending) = (0, 0);
    for p in pods["items"].as_array().unwrap() {
        let Some(node) = p["spec"]["nodeName"].as_str() else {
            pending += 1;
            continue;
        };
        placed += 1;
        let milli: u64 = p["spec"]["containers"][0]["resources"]["requests"]["cpu"]
            .as_str()
            .and_then(|c| c.strip_suffix('m'))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        *cpu.entry(node.to_string()).or_default() += milli;
        *count.entry(node.to_string()).or_default() += 1;
    }
    for (node, used) in &cpu {
        assert!(*used <= cpu_per_node, "{node} is over-committed: {used}m of {cpu_per_node}m");
    }
    for (node, n) in &count {
        assert!(*n <= pods_per_node, "{node} holds {n} pods, more than {pods_per_node}");
    }
    (placed, pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pods_on_a_hundred_nodes_never_overcommit_one() {
    let cluster = Arc::new(
        Cluster::start_with(
            Backend::Embedded,
            &["--sim-nodes", "100", "--sim-node-cpu", "4", "--sim-node-pods", "110", "--sim-pod-start-delay", "1h"],
        )
        .await,
    );
    // 10,000 pods of 20m..80m: 500 cores asked of 400, so the nodes fill up.
    let total = 10_000;
    let sizes = ["20m", "40m", "60m", "80m"];
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let cluster = cluster.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while i < total {
                create(&cluster, "default", pod(&format!("p{i:05}"), sizes[i % 4], json!({}))).await;
                i += 16;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Until every pod is decided: bound, or reported unschedulable.
    wait_for("every pod to be decided", Duration::from_secs(240), || async {
        let (_, pods) = cluster.request(Method::GET, "/api/v1/pods?limit=0", None).await;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        let decided = items
            .iter()
            .filter(|p| {
                p["spec"]["nodeName"].is_string()
                    || condition(p, "PodScheduled").is_some_and(|c| c["status"] == "False")
            })
            .count();
        (items.len() == total && decided == total).then_some(())
    })
    .await;
    let (placed, pending) = assert_no_overcommit(&cluster, 4000, 110).await;
    assert_eq!(placed + pending, total);
    // The nodes are nearly full: at most one 80m pod's room left on any node, or it is at 110 pods.
    assert!(placed > 7_500, "only {placed} placed: the scheduler left room unused");
    assert!(pending > 0, "500 cores asked of 400: some must wait");
}

/// A Plugin object (applied with kubectl) for a scheduler policy of plugins/ or examples/
/// (`component`, as `plugin_component` names it): `spec` on top of its kind and module.
fn policy_plugin(cluster: &Cluster, component: &str, name: &str, spec: Value) -> std::path::PathBuf {
    let module = cluster.dir.path().join(format!("{}.wasm", component.replace('/', "_")));
    if !module.exists() {
        std::fs::copy(plugin_component(component), &module).unwrap();
    }
    let mut full = json!({"kind": "scheduler-policy", "module": module.to_str().unwrap()});
    merge(&mut full, spec);
    let plugin =
        json!({"apiVersion": "wasmkube.io/v1alpha1", "kind": "Plugin", "metadata": {"name": name}, "spec": full});
    let path = cluster.dir.path().join(format!("{name}.json"));
    std::fs::write(&path, plugin.to_string()).unwrap();
    path
}

/// The test policy (plugins/test-policy), with a short timeout.
fn test_policy(cluster: &Cluster, name: &str, spec: Value) -> std::path::PathBuf {
    let mut full = json!({"timeout": "200ms"});
    merge(&mut full, spec);
    policy_plugin(cluster, "test_policy", name, full)
}

fn apply(cluster: &Cluster, path: &std::path::Path) {
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["apply", "-f", path.to_str().unwrap()]);
    assert!(ok, "{err}");
}

/// Until the Plugin `name` is Ready with a module serving.
async fn plugin_ready(cluster: &Cluster, name: &str) -> Value {
    wait_for(&format!("Plugin {name} to be ready"), DEADLINE, || async {
        let (_, plugin) =
            cluster.request(Method::GET, &format!("/apis/wasmkube.io/v1alpha1/plugins/{name}"), None).await;
        let ready =
            plugin["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(plugin)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_traps_or_times_out_backs_its_pod_off_while_others_proceed() {
    let cluster = Cluster::start_with(Backend::Embedded, &["--sim-nodes", "3"]).await;
    // Beside the default policy: the test policy, which misbehaves for annotated pods.
    apply(&cluster, &test_policy(&cluster, "misbehaving", json!({})));
    plugin_ready(&cluster, "misbehaving").await;
    for (name, how) in [("trapped", "trap"), ("looped", "loop")] {
        let annotated = json!({"metadata": {"annotations": {"wasmkube.io/test-policy": how}}});
        create(&cluster, "default", pod(name, "10m", annotated)).await;
    }
    for i in 0..20 {
        create(&cluster, "default", pod(&format!("fine-{i}"), "10m", json!({}))).await;
    }
    for i in 0..20 {
        bound(&cluster, &format!("fine-{i}")).await;
    }
    for name in ["trapped", "looped"] {
        let reason = unschedulable(&cluster, name).await;
        assert_eq!(reason["reason"], "SchedulerError", "{reason}");
        let message = reason["message"].as_str().unwrap();
        assert!(message.starts_with("scheduler policy misbehaving failed: "), "{message}");
    }
    let looped = unschedulable(&cluster, "looped").await;
    assert!(looped["message"].as_str().unwrap().contains("timed out"), "{looped}");
    // It backs off and is tried again (the count of failed calls grows), never bound.
    let errors = |plugin: &Value| plugin["status"]["activity"][0]["errors"].as_u64().unwrap_or(0);
    let first = errors(&plugin_ready(&cluster, "misbehaving").await);
    wait_for("a retry after the backoff", DEADLINE, || async {
        (errors(&plugin_ready(&cluster, "misbehaving").await) > first).then_some(())
    })
    .await;
    // Once the policy stops misbehaving, the pods go.
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["delete", "plugin", "misbehaving"]);
    assert!(ok, "{err}");
    bound(&cluster, "trapped").await;
    bound(&cluster, "looped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_policy_while_pods_are_scheduled_loses_or_doubles_none() {
    let cluster = Arc::new(Cluster::start_with(Backend::Embedded, &["--sim-nodes", "10", "--sim-node-cpu", "2"]).await);
    let total = 400;
    let creator = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            for i in 0..total {
                create(&cluster, "default", pod(&format!("r{i:03}"), "40m", json!({}))).await;
            }
        })
    };
    // The default policy's Plugin object replaced three times, by config, while pods arrive.
    for (round, strategy) in ["MostAllocated", "LeastAllocated", "MostAllocated"].iter().enumerate() {
        let plugin = json!({"apiVersion": "wasmkube.io/v1alpha1", "kind": "Plugin", "metadata": {"name": "default-policy"},
            "spec": {"kind": "scheduler-policy", "module": "builtin:default_policy.wasm", "config": {"scoringStrategy": strategy, "round": round}}});
        let path = cluster.dir.path().join("policy.json");
        std::fs::write(&path, plugin.to_string()).unwrap();
        apply(&cluster, &path);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    creator.await.unwrap();
    wait_for("every pod bound", DEADLINE, || async {
        let (_, pods) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods", None).await;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        (items.len() == total && items.iter().all(|p| p["spec"]["nodeName"].is_string())).then_some(())
    })
    .await;
    let (placed, pending) = assert_no_overcommit(&cluster, 2000, 110).await;
    assert_eq!((placed, pending), (total, 0));
    let log = cluster.log();
    assert!(!log.contains("binding refused"), "no pod was bound twice:\n{log}");
    let versions =
        log.lines().filter(|l| l.contains("scheduler policy in use") && l.contains("default-policy")).count();
    assert!(versions >= 2, "the cycle moved to a replaced policy while pods were coming ({versions} versions used)");
    // Every pod got exactly one Scheduled event.
    let (_, events) =
        cluster.request(Method::GET, "/api/v1/namespaces/default/events?fieldSelector=reason%3DScheduled", None).await;
    let mut per_pod: HashMap<String, usize> = HashMap::new();
    for e in events["items"].as_array().unwrap() {
        *per_pod.entry(e["involvedObject"]["name"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_pod.len(), total);
    assert!(per_pod.values().all(|n| *n == 1), "{per_pod:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_policy_records_where_it_would_pick_another_node_and_decides_nothing() {
    let cluster = Cluster::start_with(Backend::Embedded, &["--sim-nodes", "4"]).await;
    apply(
        &cluster,
        &test_policy(
            &cluster,
            "prefers-last",
            json!({"mode": "Shadow", "shadowOf": "default-policy", "config": {"behavior": "prefer-last-node"}}),
        ),
    );
    plugin_ready(&cluster, "prefers-last").await;
    let total = 24;
    for i in 0..total {
        create(&cluster, "default", pod(&format!("sh{i:02}"), "50m", json!({}))).await;
    }
    let mut placed = HashMap::new();
    for i in 0..total {
        let name = format!("sh{i:02}");
        placed.insert(name.clone(), bound(&cluster, &name).await);
    }
    // The live policy spreads (LeastAllocated); the shadow would put every pod on the last node.
    let spread: std::collections::HashSet<&String> = placed.values().collect();
    assert!(spread.len() > 1, "the live policy decided, not the shadow: {placed:?}");
    let expected: Vec<&String> = {
        let mut names: Vec<&String> =
            placed.iter().filter(|(_, node)| *node != "sim-node-003").map(|(p, _)| p).collect();
        names.sort();
        names
    };
    let plugin = wait_for("the shadow's report", DEADLINE, || async {
        let plugin = plugin_ready(&cluster, "prefers-last").await;
        let count = plugin["status"]["activity"][0]["disagreements"].as_u64()?;
        (count as usize == expected.len()).then_some(plugin)
    })
    .await;
    let activity = &plugin["status"]["activity"][0];
    for d in activity["lastDisagreements"].as_array().unwrap() {
        let pod = d["request"].as_str().unwrap().trim_start_matches("SCHEDULE pods default/");
        assert_eq!(d["live"]["node"], placed[pod].as_str(), "{d}");
        assert_eq!(d["shadow"]["node"], "sim-node-003", "{d}");
        assert!(expected.iter().any(|e| e.as_str() == pod), "{pod} was placed on the shadow's pick: {d}");
    }
    let (_, metrics) = {
        let response = cluster.api.client.get(format!("{}/metrics", cluster.api.base)).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    };
    let line = format!(
        "wasmkube_scheduler_shadow_disagreements_total{{live=\"default-policy\",policy=\"prefers-last\"}} {}",
        expected.len()
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
}

async fn scheduler_holder(cluster: &Cluster) -> Option<String> {
    let (code, lease) = cluster
        .request(Method::GET, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/wasmkube-scheduler", None)
        .await;
    (code == 200).then(|| lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string())
}

/// Who reported the Scheduled event of `pod` (the scheduling server's identity).
async fn scheduled_by(cluster: &Cluster, pod: &str) -> String {
    wait_for(&format!("the Scheduled event of {pod}"), DEADLINE, || async {
        let path =
            format!("/api/v1/namespaces/default/events?fieldSelector=reason%3DScheduled,involvedObject.name%3D{pod}");
        let (_, events) = cluster.request(Method::GET, &path, None).await;
        events["items"].as_array()?.first()?["reportingInstance"].as_str().map(String::from)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_of_the_scheduler_lease_schedules() {
    let mut flags = FAST_ELECTION.to_vec();
    flags.extend(["--sim-nodes", "2"]);
    let first = Cluster::start_with(Backend::Etcd, &flags).await;
    let second = first.another_server_with(&FAST_ELECTION).await;
    let identities = [first.identity().await, second.identity().await];
    let leader =
        wait_for("a scheduler leader", DEADLINE, || async { scheduler_holder(&first).await.filter(|h| !h.is_empty()) })
            .await;
    let leading_index = identities.iter().position(|i| *i == leader).expect("the holder is one of the servers");
    let mut leading = 0;
    for server in [&first, &second] {
        let (_, metrics) = server.api.get("/metrics").await.expect("metrics");
        if metrics.lines().any(|l| l == "wasmkube_scheduler_leader 1") {
            leading += 1;
        }
    }
    assert_eq!(leading, 1, "exactly one server schedules");
    create(&first, "default", pod("before", "10m", json!({}))).await;
    bound(&first, "before").await;
    assert_eq!(scheduled_by(&first, "before").await, leader);

    // The leader stops: the other takes the Lease at once (it watches it) and schedules.
    let servers = [&first, &second];
    let survivor = servers[1 - leading_index];
    servers[leading_index].signal(libc::SIGTERM);
    let next = wait_for("the other server to lead", DEADLINE, || async {
        scheduler_holder(survivor).await.filter(|h| !h.is_empty() && *h != leader)
    })
    .await;
    assert_eq!(next, identities[1 - leading_index]);
    create(survivor, "default", pod("after", "10m", json!({}))).await;
    bound(survivor, "after").await;
    assert_eq!(scheduled_by(survivor, "after").await, next);
}

/// The Python zone policy (examples/python-zone-policy), weighted 100 against the default's 1.
fn zone_policy(cluster: &Cluster, name: &str, config: Value) -> std::path::PathBuf {
    let spec = json!({"weight": 100, "timeout": "2s", "config": config});
    policy_plugin(cluster, "examples/zone_policy_py", name, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_written_in_python_decides_beside_the_default_one() {
    // Six simulated nodes: zone-b holds sim-node-001 and sim-node-004.
    let cluster = Cluster::start_with(Backend::Embedded, &["--sim-nodes", "6"]).await;
    // A config it refuses: the Plugin reports why, and nothing else changes.
    apply(&cluster, &zone_policy(&cluster, "zone-preference", json!({})));
    let refused = wait_for("the refused config to be reported", DEADLINE, || async {
        let (_, plugin) =
            cluster.request(Method::GET, "/apis/wasmkube.io/v1alpha1/plugins/zone-preference", None).await;
        plugin["status"]["lastError"].as_str().map(str::to_owned)
    })
    .await;
    assert!(refused.contains("config needs \"zone\""), "{refused}");
    // Cordoned sim-node-004 both policies will reject.
    let (ok, _, err) = cluster.kubectl(KUBECTL, &["cordon", "sim-node-004"]);
    assert!(ok, "{err}");
    // Requiring a zone no node is in: its reason is the pod's, in Kubernetes' words.
    apply(&cluster, &zone_policy(&cluster, "zone-preference", json!({"zone": "zone-x", "required": true})));
    plugin_ready(&cluster, "zone-preference").await;
    create(&cluster, "default", pod("waiting", "10m", json!({}))).await;
    let reason = unschedulable(&cluster, "waiting").await;
    let expected = "0/6 nodes are available: 1 node(s) were unschedulable, 5 node(s) were not in zone zone-x.";
    assert_eq!(reason["message"], expected, "{reason}");
    // The policy replaced (requiring zone-b): the waiting pod is tried again without any
    // other event, and it and the pods after it go where the new policy says.
    apply(&cluster, &zone_policy(&cluster, "zone-preference", json!({"zone": "zone-b", "required": true})));
    assert_eq!(bound(&cluster, "waiting").await, "sim-node-001");
    for i in 0..12 {
        create(&cluster, "default", pod(&format!("p-{i}"), "10m", json!({}))).await;
    }
    for i in 0..12 {
        assert_eq!(bound(&cluster, &format!("p-{i}")).await, "sim-node-001", "p-{i}");
    }
    // The Plugin's activity counts its calls (one per pod at least; the status catches up).
    wait_for("the policy's calls in its status", DEADLINE, || async {
        let plugin = plugin_ready(&cluster, "zone-preference").await;
        (plugin["status"]["activity"][0]["calls"].as_u64().unwrap_or(0) >= 12).then_some(())
    })
    .await;
}
