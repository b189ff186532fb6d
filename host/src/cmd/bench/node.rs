//! `wasmkube bench node`: one server with its node agent, in-process, on the embedded store.
//!
//! - **startup**: `--pods` pods of a command (the example `hello-command`, sleeping, so it
//!   stays Ready) and then of an HTTP server (`hello-http`), created already bound to the
//!   node (`spec.nodeName`, so the scheduler is not what is measured), `--batch` at a time;
//!   per pod, the time from its create returning to a watch seeing it Ready; pods/s from the
//!   first create to the last Ready; p50/p99. The image is compiled once before (a cached
//!   artifact, as on a node that ran it before).
//! - **memory**: the process's RSS growth over the idle HTTP pods, per pod.
//! - **requests**: HTTP requests/s and p99 through one pod, `--connections` clients for
//!   `--seconds`; beside `wasmtime serve` of the same component when `--wasmtime PATH` names
//!   a wasmtime CLI (48.0.8, built with `serve`), alternating rounds, median ratio.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::cmd::serve::{Server, ValidServeOptions};
use crate::registry::{ListOptions, Registry, WatchEvent, WriteOptions};

#[derive(clap::Args, Debug)]
pub struct NodeBenchOptions {
    /// Scratch directory for the server (default: a temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Pods of each kind.
    #[arg(long, default_value_t = 500)]
    pods: usize,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Pods per second offered for the latency figure (one create at a time, paced).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// The command component (default: the example's build).
    #[arg(long)]
    command: Option<PathBuf>,
    /// The HTTP component (default: the example's build).
    #[arg(long)]
    http: Option<PathBuf>,
    /// A wasmtime CLI with `serve`, for the baseline of the request figure.
    #[arg(long)]
    wasmtime: Option<PathBuf>,
    /// Concurrent clients for the request figure.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds per round of the request figure.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Rounds of each (alternating with the baseline).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn example(name: &str) -> PathBuf {
    let target = std::env::var_os("WASMKUBE_PLUGINS_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("plugins/target"));
    target.join("wasm32-wasip2/release").join(format!("{name}.wasm"))
}

pub async fn run(options: NodeBenchOptions) -> anyhow::Result<()> {
    let command = options.command.clone().unwrap_or_else(|| example("hello-command"));
    let http = options.http.clone().unwrap_or_else(|| example("hello-http"));
    for file in [&command, &http] {
        anyhow::ensure!(
            file.exists(),
            "{} is missing: run scripts/build-examples (or pass --command/--http)",
            file.display()
        );
    }
    let scratch = tempfile::Builder::new()
        .prefix("wasmkube-bench-node")
        .tempdir_in(options.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let data = scratch.path().join("data");
    let serve = ValidServeOptions::embedded(data.clone(), "127.0.0.1:0".parse()?).with_node_agent(
        "bench-node",
        "127.208.0.0/12",
        18,
        options.pods * 3 + 100,
    );
    let mut server = Server::start(serve).await?;
    server.ready().await?;
    let registry = server.registry().context("the registry after ready")?;
    push(&data, &command, "hello-command").await?;
    push(&data, &http, "hello-http").await?;
    println!(
        "node benchmark ({} pods of each kind, {} creates in flight, one node, embedded store)",
        options.pods, options.batch
    );
    wait_node_ready(&registry).await?;
    // Compile both images once (the artifact cache a node keeps).
    startup(&registry, "warm", "hello-command:v1", &["sleep", "600000"], false, 2, 2, None).await?;
    startup(&registry, "warmhttp", "hello-http:v1", &[], true, 1, 1, None).await?;
    // Latency at an offered rate the node keeps up with.
    let paced = (options.pods / 5).max(10);
    let interval = Duration::from_secs_f64(1.0 / options.rate.max(1) as f64);
    let offered =
        startup(&registry, "paced", "hello-command:v1", &["sleep", "600000"], false, paced, 1, Some(interval)).await?;
    println!(
        "  latency at {} pods/s offered ({paced} command pods, one create at a time): create to Ready p50 {:.1} ms, p99 {:.1} ms   (target: p99 <= 50 ms)",
        options.rate,
        offered.p50.as_secs_f64() * 1e3,
        offered.p99.as_secs_f64() * 1e3
    );
    let rss_before = rss_bytes();
    let commands =
        startup(&registry, "cmd", "hello-command:v1", &["sleep", "600000"], false, options.pods, options.batch, None)
            .await?;
    commands.print("command (sleeping)");
    let rss_commands = rss_bytes();
    let servers = startup(&registry, "web", "hello-http:v1", &[], true, options.pods, options.batch, None).await?;
    servers.print("HTTP server");
    let rss_servers = rss_bytes();
    println!(
        "  memory: {:.1} KiB RSS per idle command pod, {:.1} KiB per idle HTTP pod (RSS {:.0} MiB -> {:.0} MiB -> {:.0} MiB)   (goal: 10,000 idle HTTP pods in <= 2 GiB, 210 KiB each)",
        rss_commands.saturating_sub(rss_before) as f64 / 1024.0 / options.pods as f64,
        rss_servers.saturating_sub(rss_commands) as f64 / 1024.0 / options.pods as f64,
        rss_before as f64 / 1048576.0,
        rss_commands as f64 / 1048576.0,
        rss_servers as f64 / 1048576.0,
    );
    requests(&registry, &options, &http).await?;
    server.shutdown().await
}

/// Push `file` as `name:v1` straight into the server's registry files (same process).
async fn push(data: &Path, file: &Path, name: &str) -> anyhow::Result<()> {
    use crate::oci::manifest::{Descriptor, Manifest, OCI_MANIFEST, WASM_CONFIG, WASM_LAYER};
    let store = crate::oci::BlobStore::new(data);
    let bytes = std::fs::read(file)?;
    let size = bytes.len() as u64;
    let layer = store.put_blob(&bytes, None).await?;
    let config_bytes = json!({"architecture": "wasm", "os": "wasip2", "layerDigests": [layer.0]}).to_string();
    let config = store.put_blob(config_bytes.as_bytes(), None).await?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor { media_type: WASM_CONFIG.into(), digest: config.0, size: config_bytes.len() as u64 },
        layers: vec![Descriptor { media_type: WASM_LAYER.into(), digest: layer.0, size }],
    };
    store.put_manifest(name, "v1", &serde_json::to_vec(&manifest)?, OCI_MANIFEST).await?;
    Ok(())
}

async fn wait_node_ready(registry: &Registry) -> anyhow::Result<()> {
    let nodes = registry.resource("", "v1", "nodes").context("nodes are served")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(node) = registry.get(&nodes, None, "bench-node").await {
            let node = Value::Object(node);
            if node.pointer("/status/addresses/0/address").is_some() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the node did not register with an address within 60 s")
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

struct Startup {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

impl Startup {
    fn print(&self, what: &str) {
        println!(
            "  {what}, created as fast as the API takes them: {:.0} pods/s from create to Ready; per pod p50 {:.1} ms, p99 {:.1} ms (queueing included)   (target: >= 500 pods/s)",
            self.per_second,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        );
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Create `count` pods bound to the node, `batch` at a time (every `pace`, when given),
/// and time each to Ready.
#[allow(clippy::too_many_arguments)]
async fn startup(
    registry: &Arc<Registry>,
    prefix: &str,
    image: &str,
    args: &[&str],
    http: bool,
    count: usize,
    batch: usize,
    pace: Option<Duration>,
) -> anyhow::Result<Startup> {
    let pods = registry.resource("", "v1", "pods").context("pods are served")?;
    let since = registry.list(&pods, Some("default"), ListOptions::default()).await?.resource_version;
    let ready: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Arc::default();
    let watcher = {
        let (registry, pods, ready, prefix) = (registry.clone(), pods.clone(), ready.clone(), format!("{prefix}-"));
        tokio::spawn(async move {
            let Ok(mut events) = registry.watch(&pods, Some("default"), since, false, Default::default()).await else {
                return;
            };
            while let Some(event) = events.next().await {
                let WatchEvent::Change(change) = event else { continue };
                let Ok(object) = change.object() else { continue };
                let object = Value::Object(object);
                let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) else { continue };
                if !name.starts_with(&prefix) {
                    continue;
                }
                let is_ready = object
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                if is_ready {
                    ready.lock().entry(name.to_string()).or_insert_with(Instant::now);
                }
            }
        })
    };
    let created: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Arc::default();
    let first = Instant::now();
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for chunk in names.chunks(batch.max(1)) {
        let writes = chunk.iter().map(|name| {
            let mut container = json!({"name": "c", "image": image, "args": args});
            if http {
                container["ports"] = json!([{"containerPort": 8080}]);
            }
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"nodeName": "bench-node", "containers": [container]}});
            let (registry, pods, created, name) = (registry.clone(), pods.clone(), created.clone(), name.clone());
            async move {
                registry.create(&pods, Some("default"), pod, &WriteOptions::default()).await?;
                created.lock().insert(name, Instant::now());
                anyhow::Ok(())
            }
        });
        for outcome in futures::future::join_all(writes).await {
            outcome?;
        }
        if let Some(pace) = pace {
            tokio::time::sleep(pace).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120 + count as u64 / 10);
    while ready.lock().len() < count {
        anyhow::ensure!(Instant::now() < deadline, "only {} of {count} {prefix} pods became Ready", ready.lock().len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    watcher.abort();
    let ready = ready.lock();
    let created = created.lock();
    let last = ready.values().max().copied().unwrap_or(first);
    let mut latencies: Vec<Duration> =
        created.iter().filter_map(|(name, at)| ready.get(name).map(|r| r.saturating_duration_since(*at))).collect();
    latencies.sort();
    Ok(Startup {
        per_second: count as f64 / last.duration_since(first).as_secs_f64().max(1e-9),
        p50: quantile(&latencies, 0.5),
        p99: quantile(&latencies, 0.99),
    })
}

/// Requests/s and p99 through one pod at `url`, `connections` clients for `seconds`.
async fn load(url: &str, connections: usize, seconds: u64) -> (f64, Duration) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(connections).build().unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(seconds);
    let workers = (0..connections).map(|_| {
        let (client, url) = (client.clone(), url.to_string());
        async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let began = Instant::now();
                if let Ok(response) = client.get(&url).send().await {
                    if response.bytes().await.is_ok() {
                        latencies.push(began.elapsed());
                    }
                }
            }
            latencies
        }
    });
    let began = Instant::now();
    let mut all: Vec<Duration> = futures::future::join_all(workers).await.into_iter().flatten().collect();
    let elapsed = began.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / elapsed, quantile(&all, 0.99))
}

async fn requests(registry: &Registry, options: &NodeBenchOptions, http: &Path) -> anyhow::Result<()> {
    let pods = registry.resource("", "v1", "pods").context("pods are served")?;
    let pod = Value::Object(registry.get(&pods, Some("default"), "web-0").await?);
    let ip = pod.pointer("/status/podIP").and_then(Value::as_str).context("web-0 has no IP")?.to_string();
    let ours = format!("http://{ip}:8080/");
    let mut baseline = None;
    if let Some(wasmtime) = &options.wasmtime {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = tokio::process::Command::new(wasmtime)
            .args(["serve", "-Scli", "--addr", &format!("127.0.0.1:{port}")])
            .arg(http)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", wasmtime.display()))?;
        let url = format!("http://127.0.0.1:{port}/");
        let started = Instant::now();
        while reqwest::get(&url).await.is_err() {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "wasmtime serve did not answer within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        baseline = Some((child, url));
    }
    let (mut ours_rates, mut theirs_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        let (rate, p99) = load(&ours, options.connections, options.seconds).await;
        ours_rates.push((rate, p99));
        if let Some((_, url)) = &baseline {
            let (theirs, theirs_p99) = load(url, options.connections, options.seconds).await;
            theirs_rates.push((theirs, theirs_p99));
            ratios.push(rate / theirs.max(1e-9));
        }
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(|a, b| a.total_cmp(b));
        values.get(values.len() / 2).copied().unwrap_or_default()
    };
    let rate = median(ours_rates.iter().map(|r| r.0).collect());
    let p99 = ours_rates.iter().map(|r| r.1).max().unwrap_or_default();
    println!(
        "  requests through one HTTP pod: {rate:.0}/s, p99 {:.1} ms ({} clients, {} s x {} rounds, median)",
        p99.as_secs_f64() * 1e3,
        options.connections,
        options.seconds,
        options.rounds
    );
    if baseline.is_some() {
        let theirs = median(theirs_rates.iter().map(|r| r.0).collect());
        let theirs_p99 = theirs_rates.iter().map(|r| r.1).max().unwrap_or_default();
        println!(
            "  wasmtime serve, same component: {theirs:.0}/s, p99 {:.1} ms; ratio (median of rounds) {:.2}   (target: >= 0.9)",
            theirs_p99.as_secs_f64() * 1e3,
            median(ratios)
        );
    } else {
        println!("  (baseline not run: pass --wasmtime PATH to a wasmtime CLI 48.0.8 built with `serve`)");
    }
    Ok(())
}
