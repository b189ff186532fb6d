//! Deletion as Kubernetes does it: finalizers hold an object (only marked with a
//! deletionTimestamp) until the last is removed; propagationPolicy is recorded as the
//! garbage collector's finalizer (which it then removes); a terminating namespace refuses new content, loses what
//! it holds, and then goes.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use wasmkube_tests::{on_both_backends, wait_for, Backend, Cluster, KUBECTLS};

async fn finalizers_hold_an_object_until_the_last_is_removed(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let kubectl = KUBECTLS[0];
    let held = json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}, "data": {"a": "1"}});
    let (code, created) = cluster.request(Method::POST, "/api/v1/namespaces/default/configmaps", Some(held)).await;
    assert_eq!(code, 201, "{created}");

    let (ok, _, err) = cluster.kubectl(kubectl, &["delete", "configmap", "held", "--wait=false"]);
    assert!(ok, "{err}");
    let (code, marked) = cluster.request(Method::GET, "/api/v1/namespaces/default/configmaps/held", None).await;
    assert_eq!(code, 200, "still there: {marked}");
    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    // Deleting again changes nothing; a new finalizer is refused while deleting.
    let (code, _) = cluster.request(Method::DELETE, "/api/v1/namespaces/default/configmaps/held", None).await;
    assert_eq!(code, 200);
    let (ok, _, err) = cluster.kubectl(
        kubectl,
        &["patch", "cm", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":["example.com/hold","x/y"]}}"#],
    );
    assert!(!ok);
    assert!(err.contains("no new finalizers can be added if the object is being deleted"), "{err}");

    let (ok, _, err) = cluster.kubectl(
        kubectl,
        &["patch", "cm", "held", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#],
    );
    assert!(ok, "{err}");
    let (code, gone) = cluster.request(Method::GET, "/api/v1/namespaces/default/configmaps/held", None).await;
    assert_eq!((code, gone["reason"].as_str()), (404, Some("NotFound")), "the last finalizer took the object: {gone}");

    // Foreground propagation is recorded for the garbage collector.
    let (code, _) = cluster
        .request(Method::POST, "/api/v1/namespaces/default/configmaps", Some(json!({"metadata": {"name": "owner"}})))
        .await;
    assert_eq!(code, 201);
    let (code, marked) = cluster
        .request(
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/owner",
            Some(json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"})),
        )
        .await;
    assert_eq!(code, 200, "{marked}");
    assert_eq!(marked["metadata"]["finalizers"], json!(["foregroundDeletion"]), "{marked}");
    // With no dependents, the garbage collector removes the finalizer, and so the object.
    wait_for("the garbage collector to finish the foreground deletion", Duration::from_secs(30), || async {
        let (code, _) = cluster.request(Method::GET, "/api/v1/namespaces/default/configmaps/owner", None).await;
        (code == 404).then_some(())
    })
    .await;

    // A uid precondition that does not hold is a conflict.
    let (code, _) = cluster
        .request(Method::POST, "/api/v1/namespaces/default/configmaps", Some(json!({"metadata": {"name": "kept"}})))
        .await;
    assert_eq!(code, 201);
    let (code, status) = cluster
        .request(
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/kept",
            Some(json!({"preconditions": {"uid": "not-the-uid"}})),
        )
        .await;
    assert_eq!((code, status["reason"].as_str()), (409, Some("Conflict")), "{status}");
}

async fn a_deleted_namespace_empties_then_goes(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let kubectl = KUBECTLS[0];
    let (code, namespace) =
        cluster.request(Method::POST, "/api/v1/namespaces", Some(json!({"metadata": {"name": "doomed"}}))).await;
    assert_eq!(code, 201);
    assert_eq!(namespace["spec"]["finalizers"], json!(["kubernetes"]));
    for (name, finalizers) in [("plain", json!([])), ("held", json!(["example.com/hold"]))] {
        let cm = json!({"metadata": {"name": name, "finalizers": finalizers}});
        let (code, body) = cluster.request(Method::POST, "/api/v1/namespaces/doomed/configmaps", Some(cm)).await;
        assert_eq!(code, 201, "{body}");
    }
    let lease = json!({"metadata": {"name": "l"}, "spec": {}});
    let (code, _) =
        cluster.request(Method::POST, "/apis/coordination.k8s.io/v1/namespaces/doomed/leases", Some(lease)).await;
    assert_eq!(code, 201);

    let (ok, _, err) = cluster.kubectl(kubectl, &["delete", "namespace", "doomed", "--wait=false"]);
    assert!(ok, "{err}");
    let (ok, out, _) = cluster.kubectl(kubectl, &["get", "namespace", "doomed", "-o", "jsonpath={.status.phase}"]);
    assert!(ok);
    assert_eq!(out, "Terminating");
    let (code, refused) = cluster
        .request(Method::POST, "/api/v1/namespaces/doomed/configmaps", Some(json!({"metadata": {"name": "late"}})))
        .await;
    assert_eq!((code, refused["reason"].as_str()), (403, Some("Forbidden")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("because it is being terminated"), "{refused}");

    // Everything without a finalizer goes; the held ConfigMap holds the namespace.
    wait_for("the namespace's content to be deleted", Duration::from_secs(30), || async {
        let (_, leases) =
            cluster.request(Method::GET, "/apis/coordination.k8s.io/v1/namespaces/doomed/leases", None).await;
        let (_, plain) = cluster.request(Method::GET, "/api/v1/namespaces/doomed/configmaps/plain", None).await;
        (leases["items"].as_array().is_some_and(|i| i.is_empty()) && plain["reason"] == "NotFound").then_some(())
    })
    .await;
    let (code, held) = cluster.request(Method::GET, "/api/v1/namespaces/doomed/configmaps/held", None).await;
    assert_eq!(code, 200);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    let (code, _) = cluster.request(Method::GET, "/api/v1/namespaces/doomed", None).await;
    assert_eq!(code, 200, "the namespace waits for the held object");

    let (ok, _, err) = cluster.kubectl(
        kubectl,
        &["-n", "doomed", "patch", "cm", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#],
    );
    assert!(ok, "{err}");
    wait_for("the namespace to go", Duration::from_secs(30), || async {
        let (code, _) = cluster.request(Method::GET, "/api/v1/namespaces/doomed", None).await;
        (code == 404).then_some(())
    })
    .await;
    // The name is free again.
    let (code, _) =
        cluster.request(Method::POST, "/api/v1/namespaces", Some(json!({"metadata": {"name": "doomed"}}))).await;
    assert_eq!(code, 201);
}

on_both_backends!(finalizers_hold_an_object_until_the_last_is_removed, a_deleted_namespace_empties_then_goes);
