//! Joining a node, the Kubernetes way (issue 16, step 5, as far as it goes): the join token
//! `serve` writes to its data dir (k3s' K10 form: the CA's hash, then a bootstrap token), the
//! cluster CA at `/cacerts` checked against that hash, the bootstrap token's user, and a
//! CertificateSigningRequest for `kubernetes.io/kube-apiserver-client-kubelet` that the
//! server approves and signs, after which the node is `system:node:<name>` in `system:nodes`.

use std::time::Duration;

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use wasmkube::auth::bootstrap::{ca_hash, JoinToken};
use wasmkube_tests::{wait_for, Cluster};

/// Who a client is, as SelfSubjectReview says.
async fn whoami(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let response = client
        .post(format!("{base}/apis/authentication.k8s.io/v1/selfsubjectreviews"))
        .json(&review)
        .send()
        .await
        .expect("the server answers");
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_gets_a_node_its_client_certificate() {
    let cluster = Cluster::start().await;
    let path = cluster.dir.path().join("data/node-token");
    let text = wait_for("serve to write its join token", Duration::from_secs(30), || {
        let path = path.clone();
        async move { std::fs::read_to_string(path).ok() }
    })
    .await;
    let join = JoinToken::parse(&text).expect("a K10 token");

    // The node does not trust the server yet: it reads the CA and checks its hash.
    let untrusting = reqwest::Client::builder().use_rustls_tls().danger_accept_invalid_certs(true).build().unwrap();
    let ca = untrusting.get(format!("{}/cacerts", cluster.api.base)).send().await.unwrap().text().await.unwrap();
    assert_eq!(Some(ca_hash(&ca)), join.ca_hash, "the CA the server shows is the one the token names");

    // Trusting that CA, the bootstrap token is a user in system:bootstrappers.
    let trusting = |extra: reqwest::ClientBuilder| {
        extra
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .build()
            .unwrap()
    };
    let bearer = |token: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        reqwest::Client::builder().default_headers(headers)
    };
    let bootstrap = trusting(bearer(&join.token.to_string()));
    let (code, review) = whoami(&bootstrap, &cluster.api.base).await;
    assert_eq!(code, 201, "{review}");
    assert_eq!(review["status"]["userInfo"]["username"], format!("system:bootstrap:{}", join.token.id));
    let groups = review["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:bootstrappers"), "{groups}");
    let wrong = trusting(bearer(&format!("{}.0000000000000000", join.token.id)));
    assert_eq!(whoami(&wrong, &cluster.api.base).await.0, 401, "a wrong secret is refused");

    // The node's key and request; the server approves and signs it.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "system:node:node-b");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key).unwrap().pem().unwrap();
    let csr = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "node-csr-node-b"},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(&request),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"]}});
    let created = bootstrap
        .post(format!("{}/apis/certificates.k8s.io/v1/certificatesigningrequests", cluster.api.base))
        .json(&csr)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201, "{}", created.text().await.unwrap_or_default());
    let signed = wait_for("the CSR to be approved and signed", Duration::from_secs(30), || async {
        let (_, csr) = cluster
            .request(Method::GET, "/apis/certificates.k8s.io/v1/certificatesigningrequests/node-csr-node-b", None)
            .await;
        csr.pointer("/status/certificate").and_then(Value::as_str).map(|c| (c.to_string(), csr.clone()))
    })
    .await;
    let (certificate, csr) = signed;
    assert_eq!(csr["spec"]["username"], format!("system:bootstrap:{}", join.token.id), "{csr}");
    assert_eq!(csr["status"]["conditions"][0]["reason"], "AutoApproved", "{csr}");
    let mut identity = base64::engine::general_purpose::STANDARD.decode(certificate).unwrap();
    identity.extend(key.serialize_pem().into_bytes());
    let node = trusting(reqwest::Client::builder().identity(reqwest::Identity::from_pem(&identity).unwrap()));
    let (code, review) = whoami(&node, &cluster.api.base).await;
    assert_eq!(code, 201, "{review}");
    assert_eq!(review["status"]["userInfo"]["username"], "system:node:node-b");
    assert!(review["status"]["userInfo"]["groups"].to_string().contains("system:nodes"), "{review}");

    // A request for someone else's name is left for a person to approve.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "admin");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
    let request = params.serialize_request(&key).unwrap().pem().unwrap();
    let mut sneaky = csr_body("sneaky", &request);
    sneaky["spec"]["signerName"] = json!("kubernetes.io/kube-apiserver-client-kubelet");
    let created = bootstrap
        .post(format!("{}/apis/certificates.k8s.io/v1/certificatesigningrequests", cluster.api.base))
        .json(&sneaky)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    // The good request above was handled after it; give the controller the same chance here
    // by waiting for a later one to be signed.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "system:node:node-c");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    let later = csr_body("node-csr-node-c", &params.serialize_request(&key).unwrap().pem().unwrap());
    bootstrap
        .post(format!("{}/apis/certificates.k8s.io/v1/certificatesigningrequests", cluster.api.base))
        .json(&later)
        .send()
        .await
        .unwrap();
    wait_for("a later CSR to be signed", Duration::from_secs(30), || async {
        let (_, csr) = cluster
            .request(Method::GET, "/apis/certificates.k8s.io/v1/certificatesigningrequests/node-csr-node-c", None)
            .await;
        csr.pointer("/status/certificate").and_then(Value::as_str).map(|_| ())
    })
    .await;
    let (_, sneaky) =
        cluster.request(Method::GET, "/apis/certificates.k8s.io/v1/certificatesigningrequests/sneaky", None).await;
    assert!(
        sneaky.pointer("/status/certificate").is_none() && sneaky.pointer("/status/conditions").is_none(),
        "{sneaky}"
    );

    // `wasmkube token create` makes another token that works the same way.
    let (ok, out, err) = cluster.wasmkube(&["token", "create", "--ttl", "1h"]);
    assert!(ok, "{err}");
    let made = JoinToken::parse(&out).expect("a K10 token");
    assert_eq!(made.ca_hash, join.ca_hash);
    let (code, review) = whoami(&trusting(bearer(&made.token.to_string())), &cluster.api.base).await;
    assert_eq!(code, 201, "{review}");
}

fn csr_body(name: &str, request: &str) -> Value {
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_process_joins_with_its_token_and_runs_pods() {
    let cluster = Cluster::start_with_node(&[]).await;
    let path = cluster.dir.path().join("data/node-token");
    let token = wait_for("serve to write its join token", Duration::from_secs(30), || {
        let path = path.clone();
        async move { std::fs::read_to_string(path).ok() }
    })
    .await;
    let token = token.trim().to_string();
    let node_dir = tempfile::tempdir().unwrap();
    let data = node_dir.path().join("data");

    // A token whose CA hash is not the server's: the node refuses to talk to it.
    let mut forged = token.clone();
    let flipped = if forged.as_bytes()[3] == b'0' { "1" } else { "0" };
    forged.replace_range(3..4, flipped);
    let mut refusing = wasmkube_tests::Process::start(&[
        "node",
        "--server",
        &cluster.api.base,
        "--token",
        &forged,
        "--node-name",
        "node-x",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let (code, said) = refusing.wait_exit(Duration::from_secs(30)).await;
    assert_ne!(code, Some(0));
    assert!(said.contains("refusing to trust it"), "{said}");

    // The real token: the node joins, registers, gets a range and runs what is bound to it.
    let log = node_dir.path().join("node.log");
    let _node = wasmkube_tests::Process::start_logged(
        &[
            "node",
            "--server",
            &cluster.api.base,
            "--token",
            &token,
            "--node-name",
            "node-b",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &log,
    );
    let node = wait_for("node-b to be Ready", Duration::from_secs(60), || async {
        let (_, node) = cluster.request(Method::GET, "/api/v1/nodes/node-b", None).await;
        let ready =
            node["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(node)
    })
    .await;
    let node_ip = node["status"]["addresses"][0]["address"].as_str().unwrap().to_string();
    assert!(data.join("node/client.crt").exists(), "the node keeps its certificate");
    let component = wasmkube_tests::workload_component("hello-command");
    let (ok, _, err) = cluster.wasmkube(&["image", "push", component.to_str().unwrap(), "hello-command:v1"]);
    assert!(ok, "{err}");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-b"},
        "spec": {"nodeName": "node-b", "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "hello-command:v1", "args": ["echo", "joined"]}]}});
    let (code, answer) = cluster.request(Method::POST, "/api/v1/namespaces/default/pods", Some(pod)).await;
    assert_eq!(code, 201, "{answer}");
    let done = wait_for("the pod on node-b to succeed", Duration::from_secs(60), || async {
        let (_, pod) = cluster.request(Method::GET, "/api/v1/namespaces/default/pods/on-b", None).await;
        (pod["status"]["phase"] == "Succeeded").then_some(pod)
    })
    .await
    .clone();
    assert_eq!(done["status"]["hostIP"], node_ip, "{done}");
    assert_eq!(done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said.contains("joined; the node agent runs"), "{said}");
}
