//! `wasmkube node --server URL --token TOKEN [--node-name N] [--data-dir D]`: a node agent
//! in a process of its own, joining the Kubernetes way. The token is a join token (k3s'
//! `K10<CA hash>::<id>.<secret>`, or a bare bootstrap token with `--ca-cert-hash`): the node
//! reads the cluster CA from `/cacerts` and refuses a server whose CA is not the one the
//! token names; then, as `system:bootstrap:<id>`, it asks for a client certificate
//! (a CSR for `kubernetes.io/kube-apiserver-client-kubelet`, which the server approves and
//! signs) and from then on talks to the API only over HTTPS as `system:node:<name>`, with
//! the same agent code `serve` runs in-process (over [`HttpsClient`]). Its images come from
//! the cluster's registry over HTTPS too. The certificate is kept in the data dir, so a
//! restarted node does not ask again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::auth::bootstrap::{ca_hash, JoinToken};
use crate::client::{Client, HttpsClient};
use crate::controllers::csr::KUBELET_CLIENT;

#[derive(clap::Args, Debug)]
pub struct NodeOptions {
    /// The API server to join (`https://host:port`).
    #[arg(long)]
    server: String,
    /// The join token (`K10<CA hash>::<id>.<secret>`, from the server's data dir `node-token`
    /// or `wasmkube token create`), or a bare `<id>.<secret>` with --ca-cert-hash.
    #[arg(long, env = "WASMKUBE_TOKEN")]
    token: String,
    /// `sha256:<hex>` of the cluster CA's PEM, for a bare bootstrap token.
    #[arg(long)]
    ca_cert_hash: Option<String>,
    /// This node's name (default: the host's).
    #[arg(long)]
    node_name: Option<String>,
    /// Where the node keeps its certificate, pods' files and pulled images.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How many pods this node runs at most.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// CrashLoopBackOff's first and longest delay between restarts (the kubelet's 10s,5m).
    #[arg(long, default_value = "10s,5m")]
    crash_loop_backoff: String,
    /// How the node reaches registries other than the cluster's (see `serve --help`).
    #[arg(long, value_name = "FILE")]
    registry_config: Option<PathBuf>,
}

pub async fn run(options: NodeOptions) -> anyhow::Result<()> {
    let join = JoinToken::parse(&options.token).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let expected = match (&join.ca_hash, &options.ca_cert_hash) {
        (Some(hash), _) => hash.clone(),
        (None, Some(hash)) => hash.trim().to_ascii_lowercase(),
        (None, None) => bail!(
            "--token has no CA hash: give a K10 token (the server's <data dir>/node-token, or `wasmkube token create`) or --ca-cert-hash sha256:<hex>, so the node can check the server before trusting it"
        ),
    };
    let node_name = options.node_name.clone().unwrap_or_else(super::serve::host_name);
    if let Some(problem) = crate::registry::dns1123_subdomain_problem(&node_name) {
        bail!("--node-name {node_name:?}: {problem}");
    }
    let backoff = crate::node::agent::Backoff::parse(&options.crash_loop_backoff)
        .map_err(|e| anyhow::anyhow!("--crash-loop-backoff {e}"))?;
    let data_dir = options.data_dir.clone().unwrap_or_else(|| super::serve::default_data_dir().join("agent"));
    let dir = data_dir.join("node");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let server = options.server.trim_end_matches('/').to_string();

    // 1. The server's CA, checked against the token before anything is sent to it.
    let ca = fetch_ca(&server).await?;
    let found = ca_hash(&ca);
    if found != expected {
        bail!(
            "the server at {server} shows a CA whose hash is {found}, not the {expected} the token names: refusing to trust it (a wrong token, or not the server you meant)"
        );
    }
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, &ca).with_context(|| format!("writing {}", ca_file.display()))?;

    // 2. A client certificate, asked for with the bootstrap token (kept for next time).
    let (cert_file, key_file) = (dir.join("client.crt"), dir.join("client.key"));
    if !cert_file.exists() || !key_file.exists() {
        let (certificate, key) = request_certificate(&server, &ca, &join, &node_name).await?;
        std::fs::write(&key_file, &key).with_context(|| format!("writing {}", key_file.display()))?;
        std::fs::write(&cert_file, &certificate).with_context(|| format!("writing {}", cert_file.display()))?;
    }
    let mut identity = std::fs::read(&cert_file)?;
    identity.extend(std::fs::read(&key_file)?);
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
        .identity(reqwest::Identity::from_pem(&identity).context("the node's certificate and key")?)
        .user_agent(format!("wasmkube-node/{node_name}"))
        .build()?;
    let client: Arc<dyn Client> = Arc::new(HttpsClient::new(&server, http));

    // 3. The node agent, the same as serve's, over HTTPS; its images from the cluster's
    // registry over HTTPS, with the bootstrap token as the registry password.
    let registry_host = server.split("://").nth(1).unwrap_or(&server).to_string();
    let mut registry_config = match &options.registry_config {
        Some(path) => crate::oci::config::RegistryConfig::load(path)?,
        None => Default::default(),
    };
    registry_config.add_host(&registry_host, &ca_file, ("node".into(), join.token.to_string()));
    let (stop, stopped) = watch::channel(false);
    let informers = crate::machinery::informer::Informers::new(client.clone(), stopped.clone());
    let config = crate::node::agent::AgentConfig {
        node_name: node_name.clone(),
        dir: dir.clone(),
        max_pods: options.max_pods,
        backoff,
        local_registries: Vec::new(),
        registry_config,
        cluster_registry: Some(registry_host),
    };
    let kubelets = crate::api::kubelet::Kubelets::default();
    crate::node::agent::run(client, informers, crate::oci::BlobStore::new(&dir), kubelets, config, stopped)
        .await
        .map_err(|e| anyhow::anyhow!("registering node {node_name:?}: {e}"))?;
    tracing::info!(node = %node_name, %server, "joined; the node agent runs");
    let signal = super::serve::shutdown_signal().await;
    tracing::info!(signal, "shutting down");
    let _ = stop.send(true);
    Ok(())
}

/// The CA the server shows at `/cacerts` (read without trusting it: the caller checks it).
async fn fetch_ca(server: &str) -> anyhow::Result<String> {
    let untrusting = reqwest::Client::builder().use_rustls_tls().danger_accept_invalid_certs(true).build()?;
    let response = untrusting
        .get(format!("{server}/cacerts"))
        .send()
        .await
        .with_context(|| format!("reaching {server}/cacerts"))?;
    if !response.status().is_success() {
        bail!("{server}/cacerts answered {}: is it a wasmkube server?", response.status());
    }
    Ok(response.text().await?)
}

/// A key and a client certificate for `system:node:<name>`, asked for with the bootstrap token.
async fn request_certificate(
    server: &str,
    ca: &str,
    join: &JoinToken,
    node_name: &str,
) -> anyhow::Result<(String, String)> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", join.token).parse()?);
    let bootstrap = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
        .default_headers(headers)
        .build()?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node_name}"));
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key)?.pem()?;
    let name = format!("node-csr-{node_name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let csr = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(&request),
            "signerName": KUBELET_CLIENT, "usages": ["digital signature", "client auth"]}});
    let url = format!("{server}/apis/certificates.k8s.io/v1/certificatesigningrequests");
    let created = bootstrap.post(&url).json(&csr).send().await.with_context(|| format!("reaching {url}"))?;
    if !created.status().is_success() {
        let status = created.status();
        let body: Value = created.json().await.unwrap_or_default();
        bail!(
            "the server refused the node's certificate request ({status}): {}",
            body["message"].as_str().unwrap_or("no message")
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let csr: Value = bootstrap.get(format!("{url}/{name}")).send().await?.json().await.unwrap_or_default();
        if let Some(certificate) = csr.pointer("/status/certificate").and_then(Value::as_str) {
            let pem = base64::engine::general_purpose::STANDARD.decode(certificate)?;
            return Ok((String::from_utf8(pem)?, key.serialize_pem()));
        }
        let conditions = csr.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        if let Some(refused) = conditions.iter().find(|c| c["type"] == "Denied" || c["type"] == "Failed") {
            bail!("the node's certificate request {name} was {}: {}", refused["type"], refused["message"]);
        }
        if std::time::Instant::now() > deadline {
            bail!("the node's certificate request {name} was not signed within 60 s (is the server's controller manager running?)");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
