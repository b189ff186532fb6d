//! `wasmkube bench controllers`: the controller host with its default controller plugins,
//! on a server with the embedded store (default plugins on, as `serve` runs):
//!
//! - one Deployment of 1,000 replicas: time until all 1,000 pods exist (and until the
//!   Deployment reports them);
//! - 100 Deployments of 10 replicas, created at once: time until all 1,000 pods exist;
//! - reconciles per second of a no-op controller plugin (`plugins/noop-controller`: the
//!   request's JSON crosses into the component and is parsed, an empty answer comes back)
//!   beside the same no-op compiled natively (parsing the same JSON), in the same run;
//! - informer memory per 10,000 pods: a fresh informer's cached JSON, and the process's
//!   resident memory before and after it lists them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::cmd::serve::{Server, ValidServeOptions};
use crate::plugins::{Manifest, ObjectKey, PluginMetrics, PluginSet, ReconcileRequest, Runtime, RuntimeConfig};
use crate::registry::{ListOptions, Registry, Resource, WriteOptions};

#[derive(clap::Args, Debug)]
pub struct ControllerBenchOptions {
    /// Scratch directory for the server and the artifact cache (default: a temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Replicas of the single Deployment.
    #[arg(long, default_value_t = 1000)]
    replicas: usize,
    /// Deployments of the second figure (each of --per replicas).
    #[arg(long, default_value_t = 100)]
    deployments: usize,
    #[arg(long, default_value_t = 10)]
    per: usize,
    /// Reconcile calls per no-op figure.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Pods for the informer-memory figure.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// A folder with noop_controller.wasm (scripts/build-plugins' output); default:
    /// plugins/target/wasm32-wasip2/release beside the source.
    #[arg(long)]
    plugins: Option<PathBuf>,
}

pub async fn run(options: ControllerBenchOptions) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("wasmkube-bench-controllers")
        .tempdir_in(options.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    println!("controller host benchmark (embedded store, default plugins)");
    noop_reconciles(&options, scratch.path()).await?;
    let mut server =
        Server::start(ValidServeOptions::embedded(scratch.path().join("data"), "127.0.0.1:0".parse()?)).await?;
    server.ready().await?;
    let registry = server.registry().context("the registry after ready")?;
    wait_leading(&registry).await?;
    one_big_deployment(&registry, options.replicas).await?;
    many_deployments(&registry, options.deployments, options.per).await?;
    informer_memory(&registry, options.pods).await?;
    server.shutdown().await
}

fn resource(registry: &Registry, group: &str, plural: &str) -> anyhow::Result<Resource> {
    let version = "v1";
    registry.resource(group, version, plural).with_context(|| format!("{plural} are not served"))
}

/// Until this server holds the controller manager's Lease (it is the only candidate).
async fn wait_leading(registry: &Registry) -> anyhow::Result<()> {
    let leases = resource(registry, "coordination.k8s.io", "leases")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(lease) = registry.get(&leases, Some("kube-system"), "wasmkube-controller-manager").await {
            if lease
                .get("spec")
                .and_then(|s| s.get("holderIdentity"))
                .and_then(Value::as_str)
                .is_some_and(|h| !h.is_empty())
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the server did not take the controller manager's Lease within 30 s")
}

async fn create_namespace(registry: &Registry, name: &str) -> anyhow::Result<()> {
    let namespaces = resource(registry, "", "namespaces")?;
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    registry.create(&namespaces, None, body, &WriteOptions::default()).await?;
    Ok(())
}

fn deployment(name: &str, replicas: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}},
        },
    })
}

/// Pods in `namespace`, from the watch cache.
async fn pod_count(registry: &Registry, pods: &Resource, namespace: &str) -> anyhow::Result<usize> {
    let options = ListOptions { resource_version: Some(0), ..ListOptions::default() };
    Ok(registry.list(pods, Some(namespace), options).await?.items.len())
}

/// Poll until `namespace` holds `n` pods; the time it took from `since`.
async fn until_pods(registry: &Registry, namespace: &str, n: usize, since: Instant) -> anyhow::Result<Duration> {
    let pods = resource(registry, "", "pods")?;
    loop {
        if pod_count(registry, &pods, namespace).await? >= n {
            return Ok(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("{namespace}: fewer than {n} pods after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn one_big_deployment(registry: &Registry, replicas: usize) -> anyhow::Result<()> {
    create_namespace(registry, "bench-one").await?;
    let deployments = resource(registry, "apps", "deployments")?;
    let started = Instant::now();
    registry.create(&deployments, Some("bench-one"), deployment("web", replicas), &WriteOptions::default()).await?;
    let pods = until_pods(registry, "bench-one", replicas, started).await?;
    let reported = loop {
        let object = registry.get(&deployments, Some("bench-one"), "web").await?;
        let status = object.get("status").and_then(|s| s.get("replicas")).and_then(Value::as_u64).unwrap_or(0);
        if status as usize >= replicas {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "  1 Deployment x {replicas} replicas: all pods exist after {:.2} s ({:.0} pods/s); status reports them after {:.2} s   (target: <= 2 s)",
        pods.as_secs_f64(),
        replicas as f64 / pods.as_secs_f64(),
        reported.as_secs_f64()
    );
    Ok(())
}

async fn many_deployments(registry: &Registry, count: usize, per: usize) -> anyhow::Result<()> {
    create_namespace(registry, "bench-many").await?;
    let deployments = resource(registry, "apps", "deployments")?;
    let started = Instant::now();
    let creates = (0..count).map(|i| {
        let deployments = deployments.clone();
        async move {
            registry
                .create(
                    &deployments,
                    Some("bench-many"),
                    deployment(&format!("web-{i}"), per),
                    &WriteOptions::default(),
                )
                .await
        }
    });
    for created in futures::future::join_all(creates).await {
        created?;
    }
    let took = until_pods(registry, "bench-many", count * per, started).await?;
    println!(
        "  {count} Deployments x {per} replicas: all {} pods exist after {:.2} s ({:.0} pods/s)",
        count * per,
        took.as_secs_f64(),
        (count * per) as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// What the SDK's no-op does natively: parse the object's JSON, answer nothing.
fn native_noop(request: &ReconcileRequest) -> Result<(usize, String), String> {
    let parsed: Option<Value> = match &request.object {
        Some(text) => Some(serde_json::from_str(text).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok((0, if parsed.is_some() { "exists".into() } else { "gone".into() }))
}

async fn noop_reconciles(options: &ControllerBenchOptions, scratch: &Path) -> anyhow::Result<()> {
    let built = options
        .plugins
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-wasip2/release"));
    let path = built.join("noop_controller.wasm");
    let bytes = std::fs::read(&path)
        .with_context(|| format!("reading {} (run scripts/build-plugins, or pass --plugins)", path.display()))?;
    let runtime =
        Runtime::new(RuntimeConfig { cache_dir: Some(scratch.join("artifacts")), ..RuntimeConfig::default() })?;
    let set = PluginSet::new(runtime, PluginMetrics::unregistered()?);
    let manifest = Manifest::parse(
        "apiVersion: wasmkube.io/v1alpha1\nkind: Plugin\nmetadata: {name: noop}\nspec:\n  kind: controller\n  module: noop_controller.wasm\n  capabilities: [{apiGroups: [''], resources: [configmaps], verbs: [watch]}]\n",
    )?;
    set.load(manifest, bytes, "bench").await?;
    let module = set.controllers().first().map(|c| c.module.clone()).context("the no-op controller loaded")?;
    let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "default", "uid": "0b5c5a3e-7a43-4d1c-9f0e-2d4b1c1d0a11", "resourceVersion": "4242", "labels": {"app": "web"}}, "data": {"mode": "fast", "replicas": "3"}});
    let request = ReconcileRequest {
        key: ObjectKey { namespace: Some("default".into()), name: "settings".into() },
        object: Some(object.to_string()),
    };
    // Warm up both, then time each alone.
    for _ in 0..200 {
        module.reconcile(&request).await?.map_err(anyhow::Error::msg)?;
        native_noop(&request).map_err(anyhow::Error::msg)?;
    }
    let started = Instant::now();
    for _ in 0..options.calls {
        module.reconcile(&request).await?.map_err(anyhow::Error::msg)?;
    }
    let wasm = started.elapsed();
    let started = Instant::now();
    for _ in 0..options.calls {
        std::hint::black_box(native_noop(std::hint::black_box(&request)).map_err(anyhow::Error::msg)?);
    }
    let native = started.elapsed();
    let per_second = |d: Duration| options.calls as f64 / d.as_secs_f64();
    println!(
        "  no-op reconcile: wasm {:.0}/s ({:.1} us each), native {:.0}/s ({:.1} us each): wasm/native time {:.2}x",
        per_second(wasm),
        wasm.as_secs_f64() * 1e6 / options.calls as f64,
        per_second(native),
        native.as_secs_f64() * 1e6 / options.calls as f64,
        wasm.as_secs_f64() / native.as_secs_f64()
    );
    Ok(())
}

/// The process's resident memory (bytes), from /proc.
fn resident() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()))
        .map_or(0, |pages| pages * 4096)
}

async fn informer_memory(registry: &Arc<Registry>, count: usize) -> anyhow::Result<()> {
    create_namespace(registry, "bench-memory").await?;
    let pods = resource(registry, "", "pods")?;
    let started = Instant::now();
    let write = WriteOptions::default();
    for batch in (0..count).collect::<Vec<_>>().chunks(64) {
        let creates = batch.iter().map(|i| {
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("pod-{i}"), "labels": {"app": "memory", "shard": (i % 16).to_string()}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            });
            registry.create(&pods, Some("bench-memory"), pod, &write)
        });
        for created in futures::future::join_all(creates).await {
            created?;
        }
    }
    let created = started.elapsed();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let before = resident();
    let informers = crate::machinery::informer::Informers::new(crate::client::RegistryClient::new(registry), stopped);
    let informer = informers.informer("", "v1", "pods").context("a pods informer")?;
    let started = Instant::now();
    informer.wait_synced().await;
    let listed = started.elapsed();
    let after = resident();
    let total = informer.len();
    println!(
        "  informer of {total} pods (created in {:.1} s): listed in {:.2} s; held {:.2} KiB/pod ({:.1} MiB per 10k pods; {:.2} KiB of it the JSON); resident memory +{:.1} MiB ({:.2} KiB/pod, with the list's transient copies)",
        created.as_secs_f64(),
        listed.as_secs_f64(),
        informer.estimated_bytes() as f64 / total.max(1) as f64 / 1024.0,
        informer.estimated_bytes() as f64 / total.max(1) as f64 * 10_000.0 / (1 << 20) as f64,
        informer.json_bytes() as f64 / total.max(1) as f64 / 1024.0,
        after.saturating_sub(before) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / total.max(1) as f64 / 1024.0,
    );
    let _ = stop.send(true);
    Ok(())
}
