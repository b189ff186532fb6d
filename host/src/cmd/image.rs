//! `wasmkube image push FILE.wasm REF`, `image ls`, `image rm REF`: the cluster's own OCI
//! registry (`/v2/` on the API server), reached as kubectl reaches the API: `--kubeconfig`,
//! else `$KUBECONFIG`, else the kubeconfig `serve` wrote into the default data dir. A push
//! is a wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, one
//! `application/wasm` layer), what `wkg` and `oras` push.

use std::path::PathBuf;

use anyhow::Context;
use base64::Engine;
use serde_json::{json, Value};

use crate::oci::manifest::{Descriptor, Manifest, OCI_MANIFEST, WASM_CONFIG, WASM_LAYER};
use crate::oci::Reference;

#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Push a component to the cluster's registry as REF (e.g. hello:v1).
    Push(PushOptions),
    /// List the images the cluster's registry holds.
    Ls(ClientOptions),
    /// Remove a tag (or, by digest, a manifest and its tags) from the cluster's registry.
    Rm(RmOptions),
}

#[derive(clap::Args, Debug)]
pub struct ClientOptions {
    /// The kubeconfig to use (default: $KUBECONFIG, else the default data dir's).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct PushOptions {
    /// The component (.wasm) to push.
    file: PathBuf,
    /// Where: `name[:tag]`, optionally with the cluster's address as registry.
    reference: String,
    #[command(flatten)]
    client: ClientOptions,
}

#[derive(clap::Args, Debug)]
pub struct RmOptions {
    /// `name:tag` or `name@sha256:...`.
    reference: String,
    #[command(flatten)]
    client: ClientOptions,
}

pub async fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Push(options) => push(options).await,
        ImageCommand::Ls(options) => list(options).await,
        ImageCommand::Rm(options) => remove(options).await,
    }
}

/// The registry's base URL and a client with the kubeconfig's credentials.
pub(super) struct Registry {
    pub client: reqwest::Client,
    base: String,
    /// The API server's URL.
    pub api: String,
    /// `host:port` of the server.
    host: String,
}

/// The server and a client with the kubeconfig's credentials, as kubectl finds them.
pub(super) fn connect(options: &ClientOptions) -> anyhow::Result<Registry> {
    let path = match &options.kubeconfig {
        Some(path) => path.clone(),
        None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(paths) => std::env::split_paths(&paths).next().context("$KUBECONFIG names no file")?,
            None => super::serve::default_data_dir().join(super::serve::KUBECONFIG_FILE),
        },
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the kubeconfig {} (pass --kubeconfig, set $KUBECONFIG, or run `wasmkube serve` first)",
            path.display()
        )
    })?;
    let config: Value = serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
    let current = config["current-context"].as_str().unwrap_or_default();
    let named = |list: &str, name: &str| -> Option<Value> {
        config[list].as_array()?.iter().find(|e| e["name"].as_str() == Some(name)).cloned()
    };
    let context = named("contexts", current)
        .or_else(|| config["contexts"].get(0).cloned())
        .context("the kubeconfig has no context")?;
    let cluster_name = context["context"]["cluster"].as_str().unwrap_or_default();
    let user_name = context["context"]["user"].as_str().unwrap_or_default();
    let cluster =
        named("clusters", cluster_name).with_context(|| format!("the kubeconfig has no cluster {cluster_name:?}"))?;
    let user = named("users", user_name).unwrap_or(Value::Null);
    let base = cluster["cluster"]["server"]
        .as_str()
        .context("the kubeconfig's cluster has no server")?
        .trim_end_matches('/')
        .to_string();
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let read = |data: &Value, file: &Value| -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(data) = data.as_str() {
            return Ok(Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .context("bad base64 in the kubeconfig")?,
            ));
        }
        match file.as_str() {
            Some(file) => Ok(Some(std::fs::read(dir.join(file)).with_context(|| format!("reading {file}"))?)),
            None => Ok(None),
        }
    };
    let mut builder = reqwest::Client::builder().use_rustls_tls().user_agent("wasmkube-image");
    if let Some(ca) =
        read(&cluster["cluster"]["certificate-authority-data"], &cluster["cluster"]["certificate-authority"])?
    {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&ca)?);
    }
    let u = &user["user"];
    if let (Some(mut certificate), Some(key)) =
        (read(&u["client-certificate-data"], &u["client-certificate"])?, read(&u["client-key-data"], &u["client-key"])?)
    {
        certificate.extend(key);
        builder = builder.identity(reqwest::Identity::from_pem(&certificate)?);
    }
    if let Some(token) = u["token"].as_str() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
        builder = builder.default_headers(headers);
    }
    let host = base.split("://").nth(1).unwrap_or(&base).to_string();
    Ok(Registry { client: builder.build()?, base: format!("{base}/v2"), api: base, host })
}

/// The registry's error message from a failed answer.
async fn refused(response: reqwest::Response, what: &str) -> anyhow::Error {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    let message = body["errors"][0]["message"].as_str().or(body["message"].as_str()).unwrap_or_default().to_string();
    anyhow::anyhow!("the registry refused {what} ({status}): {message}")
}

impl Registry {
    fn reference(&self, text: &str) -> anyhow::Result<Reference> {
        let reference =
            Reference::parse(text).map_err(|e| anyhow::anyhow!("{e}; expected name[:tag], e.g. hello:v1"))?;
        if let Some(registry) = reference.registry.as_deref().filter(|r| *r != self.host) {
            anyhow::bail!(
                "{text:?} names the registry {registry}, but this pushes to the cluster's registry at {}: name the image without a registry (e.g. {})",
                self.host,
                Reference { registry: None, ..reference.clone() }
            );
        }
        Ok(reference)
    }

    async fn put_blob(&self, repository: &str, bytes: Vec<u8>) -> anyhow::Result<Descriptor> {
        let digest = crate::oci::sha256(&bytes);
        let size = bytes.len() as u64;
        let head = self
            .client
            .head(format!("{}/{repository}/blobs/{digest}", self.base))
            .send()
            .await
            .with_context(|| format!("reaching {}", self.base))?;
        if !head.status().is_success() {
            let upload = self
                .client
                .post(format!("{}/{repository}/blobs/uploads/?digest={digest}", self.base))
                .header("content-type", "application/octet-stream")
                .body(bytes)
                .send()
                .await?;
            if !upload.status().is_success() {
                return Err(refused(upload, &format!("the blob {digest}")).await);
            }
        }
        Ok(Descriptor { media_type: String::new(), digest: digest.0, size })
    }
}

async fn push(options: PushOptions) -> anyhow::Result<()> {
    let registry = connect(&options.client)?;
    let reference = registry.reference(&options.reference)?;
    let bytes = std::fs::read(&options.file).with_context(|| format!("reading {}", options.file.display()))?;
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => anyhow::bail!(
            "{} is a core WebAssembly module, not a component: build it for wasm32-wasip2 (cargo build --target wasm32-wasip2) or adapt it with `wasm-tools component new`",
            options.file.display()
        ),
        Some([0, b'a', b's', b'm', ..]) => {}
        _ => anyhow::bail!("{} is not WebAssembly (it does not start with \\0asm)", options.file.display()),
    }
    let repository = reference.repository.clone();
    let mut layer = registry.put_blob(&repository, bytes).await?;
    layer.media_type = WASM_LAYER.into();
    let config = json!({
        "created": crate::registry::now(), "architecture": "wasm", "os": "wasip2",
        "layerDigests": [layer.digest], "component": {},
    });
    let mut config = registry.put_blob(&repository, config.to_string().into_bytes()).await?;
    config.media_type = WASM_CONFIG.into();
    let manifest =
        Manifest { schema_version: 2, media_type: Some(OCI_MANIFEST.into()), config, layers: vec![layer.clone()] };
    let body = serde_json::to_vec(&manifest)?;
    let tag = reference.digest.clone().or(reference.tag.clone()).unwrap_or_else(|| "latest".into());
    let put = registry
        .client
        .put(format!("{}/{repository}/manifests/{tag}", registry.base))
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await?;
    if !put.status().is_success() {
        return Err(refused(put, "the manifest").await);
    }
    let digest =
        put.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    println!("pushed {repository}:{tag} ({} bytes, manifest {digest}, layer {})", layer.size, layer.digest);
    Ok(())
}

async fn list(options: ClientOptions) -> anyhow::Result<()> {
    let registry = connect(&options)?;
    let catalog = registry
        .client
        .get(format!("{}/_catalog", registry.base))
        .send()
        .await
        .with_context(|| format!("reaching {}", registry.base))?;
    if !catalog.status().is_success() {
        return Err(refused(catalog, "the catalog").await);
    }
    let catalog: Value = catalog.json().await?;
    println!("{:<40} {:<20} {:<20} SIZE", "REPOSITORY", "TAG", "DIGEST");
    for repository in catalog["repositories"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let tags: Value =
            registry.client.get(format!("{}/{repository}/tags/list", registry.base)).send().await?.json().await?;
        for tag in tags["tags"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let manifest = registry
                .client
                .get(format!("{}/{repository}/manifests/{tag}", registry.base))
                .header("accept", OCI_MANIFEST)
                .send()
                .await?;
            let digest = manifest
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let parsed: Option<Manifest> = manifest.json().await.ok();
            let size: u64 = parsed.map(|m| m.layers.iter().map(|l| l.size).sum()).unwrap_or_default();
            let short = digest.get(..19).unwrap_or(&digest);
            println!("{repository:<40} {tag:<20} {short:<20} {size}");
        }
    }
    Ok(())
}

async fn remove(options: RmOptions) -> anyhow::Result<()> {
    let registry = connect(&options.client)?;
    let reference = registry.reference(&options.reference)?;
    let target = reference.manifest_reference().to_string();
    let response = registry
        .client
        .delete(format!("{}/{}/manifests/{target}", registry.base, reference.repository))
        .send()
        .await
        .with_context(|| format!("reaching {}", registry.base))?;
    if !response.status().is_success() {
        return Err(refused(response, &format!("removing {}", options.reference)).await);
    }
    println!("removed {}", options.reference);
    Ok(())
}
