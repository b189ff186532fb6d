//! Who may talk to the API: client certificates and service-account tokens authenticate,
//! anything else is `system:anonymous` and may only read health and version; tokens come
//! from `serviceaccounts/<name>/token`, TokenReview accepts them, and they die with their
//! service account. Access reviews allow every authenticated user (no authorizer yet).

use reqwest::Method;
use serde_json::{json, Value};
use wasmkube_tests::{on_both_backends, Backend, Cluster, KUBECTLS};

/// The issuer of the API's tokens, and the audience they are made for by default.
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn anonymous_client(cluster: &Cluster) -> reqwest::Client {
    let ca = std::fs::read(cluster.dir.path().join("data/tls/ca.crt")).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap()
}

async fn anonymous_requests_may_only_read_health_and_version(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let client = anonymous_client(&cluster);
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        let response = client.get(format!("{}{path}", cluster.api.base)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    for (method, path) in [
        (Method::GET, "/api"),
        (Method::GET, "/api/v1/namespaces"),
        (Method::GET, "/openapi/v3"),
        (Method::GET, "/metrics"),
        (Method::POST, "/api/v1/namespaces/default/configmaps"),
    ] {
        let response = client.request(method.clone(), format!("{}{path}", cluster.api.base)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 403, "{method} {path}");
        let status: Value = response.json().await.unwrap();
        assert_eq!(status["reason"], "Forbidden");
        assert!(status["message"].as_str().unwrap().contains("system:anonymous"), "{status}");
    }
    let response =
        client.get(format!("{}/api/v1/namespaces", cluster.api.base)).bearer_auth("not.a.token").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401, "a token that does not verify is Unauthorized");
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["reason"], "Unauthorized");
}

async fn service_account_tokens_authenticate_until_the_account_goes(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let kubectl = KUBECTLS[0];
    let (ok, out, err) = cluster.kubectl(kubectl, &["auth", "whoami", "-o", "json"]);
    assert!(ok, "{err}");
    let me: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(me["status"]["userInfo"]["username"], "admin");
    let groups = me["status"]["userInfo"]["groups"].as_array().unwrap();
    assert!(groups.contains(&json!("system:masters")) && groups.contains(&json!("system:authenticated")), "{me}");

    let (ok, _, err) = cluster.kubectl(kubectl, &["create", "serviceaccount", "bot"]);
    assert!(ok, "{err}");
    let (ok, token, err) = cluster.kubectl(kubectl, &["create", "token", "bot", "--duration=1h"]);
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    // kubectl with only the token (no client certificate).
    let ca = cluster.dir.path().join("data/tls/ca.crt");
    let as_bot = |args: &[&str]| {
        let mut all = vec![
            "--kubeconfig=/dev/null".to_string(),
            format!("--server={}", cluster.api.base),
            format!("--certificate-authority={}", ca.display()),
            format!("--token={token}"),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let out = std::process::Command::new(kubectl).args(&all).env("HOME", cluster.dir.path()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = as_bot(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert!(ok, "{err}");
    assert_eq!(out, "system:serviceaccount:default:bot");
    let (ok, out, err) = as_bot(&["get", "namespaces", "-o", "name"]);
    assert!(ok && out.contains("namespace/default"), "{out}{err}");
    let (ok, out, err) = as_bot(&["auth", "can-i", "create", "deployments"]);
    assert!(ok && out.trim() == "yes", "{out}{err}");

    // TokenReview accepts it and names the account.
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let (code, reviewed) =
        cluster.request(Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews", Some(review.clone())).await;
    assert_eq!(code, 201, "{reviewed}");
    assert_eq!(reviewed["status"]["authenticated"], true, "{reviewed}");
    assert_eq!(reviewed["status"]["user"]["username"], "system:serviceaccount:default:bot");
    assert!(reviewed["status"]["user"]["groups"]
        .as_array()
        .unwrap()
        .contains(&json!("system:serviceaccounts:default")));
    assert_eq!(reviewed["status"]["audiences"], json!([ISSUER]), "{reviewed}");

    // A token made for another audience does not authenticate against the API; a
    // TokenReview that asks about that audience accepts it and says for which.
    let (ok, other, err) = cluster.kubectl(kubectl, &["create", "token", "bot", "--audience=other"]);
    assert!(ok, "{err}");
    let other = other.trim().to_string();
    // A client without the admin certificate, so that only the token speaks.
    let response = anonymous_client(&cluster)
        .get(format!("{}/api/v1/namespaces", cluster.api.base))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401, "a token for another audience is Unauthorized");
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["reason"], "Unauthorized", "{status}");
    let for_other = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": other}});
    let (_, reviewed_other) =
        cluster.request(Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews", Some(for_other)).await;
    assert_eq!(reviewed_other["status"]["authenticated"], false, "not for the API's audience: {reviewed_other}");
    let asking = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": other, "audiences": ["other", "third"]}});
    let (_, reviewed_other) =
        cluster.request(Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews", Some(asking)).await;
    assert_eq!(reviewed_other["status"]["authenticated"], true, "{reviewed_other}");
    assert_eq!(reviewed_other["status"]["audiences"], json!(["other"]), "{reviewed_other}");
    let (ok, out, err) = as_bot(&["get", "namespaces", "-o", "name"]);
    assert!(ok && out.contains("namespace/default"), "the API's own token still works: {out}{err}");

    let forged = json!({"spec": {"token": format!("{token}x")}});
    let (_, rejected) =
        cluster.request(Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews", Some(forged)).await;
    assert_eq!(rejected["status"]["authenticated"], false, "{rejected}");

    // Access reviews: authenticated subjects are allowed, the anonymous one is not.
    let sar = |user: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
               "spec": {"user": user, "resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "default"}}})
    };
    let (code, allowed) =
        cluster.request(Method::POST, "/apis/authorization.k8s.io/v1/subjectaccessreviews", Some(sar("alice"))).await;
    assert_eq!((code, allowed["status"]["allowed"].clone()), (201, json!(true)), "{allowed}");
    let (_, denied) = cluster
        .request(Method::POST, "/apis/authorization.k8s.io/v1/subjectaccessreviews", Some(sar("system:anonymous")))
        .await;
    assert_eq!(denied["status"]["allowed"], false, "{denied}");
    let (code, _) = cluster.request(Method::GET, "/apis/authorization.k8s.io/v1/subjectaccessreviews", None).await;
    assert_eq!(code, 405, "reviews are only created");

    // Too short a token is refused; a deleted account's token no longer authenticates.
    let (code, status) = cluster
        .request(
            Method::POST,
            "/api/v1/namespaces/default/serviceaccounts/bot/token",
            Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 60}})),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    let (ok, _, err) = cluster.kubectl(kubectl, &["delete", "serviceaccount", "bot"]);
    assert!(ok, "{err}");
    let (ok, _, err) = as_bot(&["get", "namespaces"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
    let (_, reviewed) =
        cluster.request(Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews", Some(review)).await;
    assert_eq!(reviewed["status"]["authenticated"], false, "{reviewed}");
}

on_both_backends!(
    anonymous_requests_may_only_read_health_and_version,
    service_account_tokens_authenticate_until_the_account_goes
);
