//! What a fresh cluster holds (the `kubernetes` Service and its endpoints, the default
//! roles), and Services holding their cluster IPs and node ports: allocated once,
//! never twice, kept across updates, released when no longer needed.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{json, Value};
use wasmkube_tests::{on_both_backends, Backend, Cluster, KUBECTLS};

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

async fn a_fresh_cluster_holds_what_kubernetes_bootstraps(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let (code, kubernetes) = cluster.request(Method::GET, "/api/v1/namespaces/default/services/kubernetes", None).await;
    assert_eq!(code, 200, "{kubernetes}");
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(kubernetes["spec"]["ports"][0]["port"], 443);
    let (_, endpoints) = cluster.request(Method::GET, "/api/v1/namespaces/default/endpoints/kubernetes", None).await;
    let port = cluster.api.base.rsplit(':').next().unwrap().parse::<u64>().unwrap();
    assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], port, "{endpoints}");
    assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    let (ok, out, err) = cluster.kubectl(KUBECTLS[0], &["get", "clusterroles", "-o", "name"]);
    assert!(ok, "{err}");
    for role in ["cluster-admin", "admin", "edit", "view", "system:discovery"] {
        assert!(out.lines().any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{role}")), "{role}: {out}");
    }
    let (_, admin) = cluster
        .request(Method::GET, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/cluster-admin", None)
        .await;
    assert_eq!(admin["subjects"][0]["name"], "system:masters");
}

async fn services_hold_addresses_once_and_release_them(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let base = "/api/v1/namespaces/default/services";

    // Concurrent creates never share an address.
    let creates = (0..16).map(|i| {
        let cluster = &cluster;
        async move {
            let spec = json!({"type": "NodePort", "ports": [{"port": 80}], "selector": {"app": "x"}});
            cluster.request(Method::POST, base, Some(service(&format!("s{i}"), spec))).await
        }
    });
    let created = futures::future::join_all(creates).await;
    let mut ips = HashSet::new();
    let mut node_ports = HashSet::new();
    for (code, svc) in &created {
        assert_eq!(*code, 201, "{svc}");
        let ip = svc["spec"]["clusterIP"].as_str().unwrap();
        assert!(ip.starts_with("10.") && ip != "10.96.0.1", "{ip}");
        ips.insert(ip.to_string());
        let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&node_port), "{node_port}");
        node_ports.insert(node_port);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    }
    assert_eq!((ips.len(), node_ports.len()), (16, 16), "every address is held once");
    let (_, ip_addresses) = cluster.request(Method::GET, "/apis/networking.k8s.io/v1/ipaddresses", None).await;
    assert_eq!(ip_addresses["items"].as_array().unwrap().len(), 17, "one IPAddress per cluster IP, with 10.96.0.1");

    // A taken address is refused by name; a cluster IP never moves.
    let held_ip = created[0].1["spec"]["clusterIP"].as_str().unwrap().to_string();
    let held_port = created[0].1["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let (code, status) = cluster
        .request(Method::POST, base, Some(service("copy", json!({"clusterIP": held_ip, "ports": [{"port": 1}]}))))
        .await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{status}");
    assert!(status["message"].as_str().unwrap().contains("provided IP is already allocated"), "{status}");
    let (code, status) = cluster
        .request(
            Method::POST,
            base,
            Some(service("copy", json!({"type": "NodePort", "ports": [{"port": 1, "nodePort": held_port}]}))),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    let (code, status) = cluster.request(Method::PATCH, &format!("{base}/s1"), None).await;
    assert_eq!(code, 415, "a PATCH needs a patch type: {status}");
    let moved = cluster
        .api
        .client
        .patch(format!("{}{base}/s1", cluster.api.base))
        .header("Content-Type", "application/merge-patch+json")
        .body(json!({"spec": {"clusterIP": "10.96.0.77"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status().as_u16(), 422);

    // Switching to ClusterIP frees the node port; deleting frees the cluster IP.
    let kubectl = KUBECTLS[0];
    let (ok, _, err) = cluster.kubectl(kubectl, &["patch", "svc", "s0", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    assert!(ok, "{err}");
    let (ok, out, err) = cluster.kubectl(kubectl, &["get", "svc", "s0", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    assert!(ok, "{err}");
    assert_eq!(out, "", "a ClusterIP service has no node port");
    let (code, taken) = cluster
        .request(
            Method::POST,
            base,
            Some(service("port-again", json!({"type": "NodePort", "ports": [{"port": 1, "nodePort": held_port}]}))),
        )
        .await;
    assert_eq!(code, 201, "the released node port is free: {taken}");
    let (ok, _, err) = cluster.kubectl(kubectl, &["delete", "svc", "s0"]);
    assert!(ok, "{err}");
    let (code, taken) = cluster
        .request(Method::POST, base, Some(service("ip-again", json!({"clusterIP": held_ip, "ports": [{"port": 1}]}))))
        .await;
    assert_eq!(code, 201, "the released cluster IP is free: {taken}");
    assert_eq!(taken["spec"]["clusterIP"], held_ip.as_str());

    // A headless Service holds no address; ExternalName neither.
    let (code, headless) = cluster
        .request(Method::POST, base, Some(service("headless", json!({"clusterIP": "None", "ports": [{"port": 1}]}))))
        .await;
    assert_eq!((code, headless["spec"]["clusterIPs"].clone()), (201, json!(["None"])), "{headless}");
    let (code, external) = cluster
        .request(
            Method::POST,
            base,
            Some(service("ext", json!({"type": "ExternalName", "externalName": "example.com"}))),
        )
        .await;
    assert_eq!(code, 201, "{external}");
    assert!(external["spec"].get("clusterIP").is_none(), "{external}");
}

on_both_backends!(a_fresh_cluster_holds_what_kubernetes_bootstraps, services_hold_addresses_once_and_release_them);
