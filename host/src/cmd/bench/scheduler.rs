//! `wasmkube bench scheduler`: the scheduler on simulated nodes, with the default policy
//! as WebAssembly and the same policy compiled natively, in one run.
//!
//! - **end to end**: a server on the embedded store with `--nodes` simulated nodes and
//!   the scheduler; `--pods` pods created as fast as the API takes them (in-process
//!   creates, 64 at a time); per pod, the time from its create returning to a watch
//!   seeing it bound; pods/s from the first create to the last binding; p50/p99. Once
//!   with the policy plugin, once with `--scheduler-policy=native`.
//! - **the policy alone**: one filter-and-score call for a pod over all `--nodes` nodes,
//!   on the plugin (through the component boundary, the node table already in the
//!   plugin) and on the native build of the same source, alternating; the ratio is what
//!   running the policy as WebAssembly costs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::cmd::serve::{Server, ValidServeOptions};
use crate::plugins::policy_types::{Change, Node, PlacedPod, Pod, Resources};
use crate::plugins::{Manifest, PluginMetrics, PluginSet, Runtime, RuntimeConfig};
use crate::registry::{ListOptions, Registry, WatchEvent, WriteOptions};
use crate::scheduler::DefaultPolicy;

#[derive(clap::Args, Debug)]
pub struct SchedulerBenchOptions {
    /// Scratch directory for the servers and the artifact cache (default: a temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods to schedule.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Filter-and-score calls per policy for the policy-alone figure.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
}

pub async fn run(options: SchedulerBenchOptions) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("wasmkube-bench-scheduler")
        .tempdir_in(options.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    println!("scheduler benchmark ({} simulated nodes, {} pods, embedded store)", options.nodes, options.pods);
    policy_alone(&options, scratch.path()).await?;
    let wasm = end_to_end(&options, &scratch.path().join("wasm"), false).await?;
    let native = end_to_end(&options, &scratch.path().join("native"), true).await?;
    println!(
        "  end to end, wasm/native: throughput {:.2}x, p50 {:.2}x   (target: >= 1000 pods/s with wasm)",
        native.per_second / wasm.per_second,
        wasm.p50.as_secs_f64() / native.p50.as_secs_f64().max(1e-9),
    );
    Ok(())
}

struct Figures {
    per_second: f64,
    p50: Duration,
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn end_to_end(options: &SchedulerBenchOptions, dir: &std::path::Path, native: bool) -> anyhow::Result<Figures> {
    std::fs::create_dir_all(dir)?;
    let serve = ValidServeOptions::embedded(dir.join("data"), "127.0.0.1:0".parse()?).with_sim_nodes(
        options.nodes,
        "64",
        native,
    );
    let mut server = Server::start(serve).await?;
    server.ready().await?;
    let registry = server.registry().context("the registry after ready")?;
    wait_leading(&registry, "wasmkube-scheduler").await?;
    let pods = registry.resource("", "v1", "pods").context("pods are served")?;
    // Follow bindings from now on; a watch that ends (a slow watcher is expired under
    // this load) is started again from the last revision seen, or from a fresh list.
    let total = options.pods;
    let bound: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Arc::default();
    let follower = {
        let (bound, registry, pods) = (bound.clone(), registry.clone(), pods.clone());
        tokio::spawn(async move {
            let mut since = registry.list(&pods, Some("default"), ListOptions::default()).await?.resource_version;
            loop {
                let mut events = match registry.watch(&pods, Some("default"), since, false, Default::default()).await {
                    Ok(events) => events,
                    Err(_) => {
                        let list = registry.list(&pods, Some("default"), ListOptions::default()).await?;
                        let now = Instant::now();
                        let mut seen = bound.lock();
                        for pod in &list.items {
                            let name = pod.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str);
                            let node = pod.get("spec").and_then(|s| s.get("nodeName")).and_then(Value::as_str);
                            if let (Some(name), Some(_)) = (name, node) {
                                seen.entry(name.to_string()).or_insert(now);
                            }
                        }
                        since = list.resource_version;
                        continue;
                    }
                };
                while let Some(event) = events.next().await {
                    let WatchEvent::Change(change) = event else { continue };
                    since = change.revision();
                    let Ok(object) = change.object() else { continue };
                    let object = Value::Object(object);
                    let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) else { continue };
                    if object.pointer("/spec/nodeName").and_then(Value::as_str).is_some() {
                        let mut bound = bound.lock();
                        bound.entry(name.to_string()).or_insert_with(Instant::now);
                        if bound.len() >= total {
                            return anyhow::Ok(());
                        }
                    }
                }
            }
        })
    };
    let created: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    let write = WriteOptions::default();
    let names: Vec<usize> = (0..total).collect();
    futures::stream::iter(names)
        .map(|i| {
            let (registry, pods, write, created) = (registry.clone(), pods.clone(), write.clone(), created.clone());
            async move {
                let name = format!("bench-{i:05}");
                let pod = json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"app": "bench", "shard": (i % 16).to_string()}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
                });
                registry.create(&pods, Some("default"), pod, &write).await?;
                created.lock().insert(name, Instant::now());
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let created_in = started.elapsed();
    match tokio::time::timeout(Duration::from_secs(600), follower).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e.context("following the bindings")),
        Ok(Err(e)) => anyhow::bail!("the binding follower failed: {e}"),
        Err(_) => anyhow::bail!("not every pod was bound within 600 s ({} of {total})", bound.lock().len()),
    }
    anyhow::ensure!(bound.lock().len() == total, "only {} of {total} pods were seen bound", bound.lock().len());
    let bound = bound.lock().clone();
    let last = bound.values().max().copied().unwrap_or(started);
    let span = last.duration_since(started);
    let created = created.lock().clone();
    let mut latencies: Vec<Duration> =
        bound.iter().filter_map(|(name, at)| created.get(name).map(|c| at.saturating_duration_since(*c))).collect();
    latencies.sort();
    let per_second = total as f64 / span.as_secs_f64();
    let (p50, p99) = (quantile(&latencies, 0.5), quantile(&latencies, 0.99));
    println!(
        "  end to end, {} policy: {total} pods created in {:.2} s ({:.0}/s), all bound after {:.2} s: {per_second:.0} pods/s; create-to-bound p50 {:.1} ms, p99 {:.1} ms",
        if native { "native" } else { "wasm" },
        created_in.as_secs_f64(),
        total as f64 / created_in.as_secs_f64(),
        span.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
    );
    server.shutdown().await?;
    Ok(Figures { per_second, p50 })
}

/// Until this server holds the Lease `kube-system/<name>` (it is the only candidate).
async fn wait_leading(registry: &Registry, name: &str) -> anyhow::Result<()> {
    let leases = registry.resource("coordination.k8s.io", "v1", "leases").context("leases are served")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(lease) = registry.get(&leases, Some("kube-system"), name).await {
            let holder = lease.get("spec").and_then(|s| s.get("holderIdentity")).and_then(Value::as_str);
            if holder.is_some_and(|h| !h.is_empty()) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the server did not take the Lease {name} within 60 s")
}

/// A table of `nodes` nodes (three zones) with a few pods placed, as both policies get it.
fn table(nodes: usize) -> Vec<Change> {
    let mut changes: Vec<Change> = (0..nodes)
        .map(|i| {
            let name = format!("sim-node-{i:03}");
            Change::NodeSet(Node {
                index: i as u32,
                labels: vec![
                    ("kubernetes.io/hostname".into(), name.clone()),
                    ("topology.kubernetes.io/zone".into(), format!("zone-{}", ["a", "b", "c"][i % 3])),
                    ("type".into(), "sim".into()),
                ],
                name,
                allocatable: Resources { milli_cpu: 64_000, memory: 64 << 30, ephemeral_storage: 100 << 30, pods: 110 },
                taints: Vec::new(),
                unschedulable: false,
            })
        })
        .collect();
    for i in 0..(nodes * 5) {
        changes.push(Change::PodPlaced(PlacedPod {
            id: i as u64 + 1,
            node: (i % nodes) as u32,
            namespace: "default".into(),
            labels: vec![("app".into(), "bench".into())],
            requests: Resources {
                milli_cpu: 100 + (i % 7) as u64 * 50,
                memory: 128 << 20,
                ephemeral_storage: 0,
                pods: 1,
            },
        }));
    }
    changes
}

fn bench_pod(object: &Value) -> Pod {
    crate::scheduler::pod_record(object)
}

async fn policy_alone(options: &SchedulerBenchOptions, scratch: &std::path::Path) -> anyhow::Result<()> {
    let bytes = crate::plugins::builtin::module("default_policy.wasm")
        .context("this binary was built without its default plugins (run scripts/build-plugins, then build again)")?
        .to_vec();
    let runtime =
        Runtime::new(RuntimeConfig { cache_dir: Some(scratch.join("artifacts")), ..RuntimeConfig::default() })?;
    let set = PluginSet::new(runtime, PluginMetrics::unregistered()?);
    let manifest = Manifest::parse(
        "apiVersion: wasmkube.io/v1alpha1\nkind: Plugin\nmetadata: {name: default-policy}\nspec: {kind: scheduler-policy, module: default_policy.wasm, timeout: 5s}\n",
    )?;
    set.load(manifest, bytes, "bench").await?;
    let module = set.policies().first().map(|p| p.module.clone()).context("the policy loaded")?;
    let mut native = DefaultPolicy::new("{}").map_err(anyhow::Error::msg)?;
    let changes = table(options.nodes);
    native.apply(&changes);
    let mut session = module.session().await?;
    session.apply(&changes).await?;
    let candidates: Vec<u32> = (0..options.nodes as u32).collect();
    let plain = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "web", "image": "nginx", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]}});
    let spread = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "web", "image": "nginx", "resources": {"requests": {"cpu": "250m"}}}],
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a"]}]}}]}},
            "topologySpreadConstraints": [{"maxSkew": 5, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "bench"}}}]}});
    for (what, object) in [("a plain pod", plain), ("a pod with affinity, tolerations and zone spread", spread)] {
        let pod = bench_pod(&object);
        for _ in 0..50 {
            session.schedule(&pod, &candidates).await?.map_err(anyhow::Error::msg)?;
            native.schedule(&pod, &candidates).map_err(anyhow::Error::msg)?;
        }
        // Alternate rounds, so both see the same machine.
        let (mut wasm, mut host) = (Duration::ZERO, Duration::ZERO);
        let rounds = 10;
        for _ in 0..rounds {
            let started = Instant::now();
            for _ in 0..options.calls / rounds {
                std::hint::black_box(session.schedule(&pod, &candidates).await?.map_err(anyhow::Error::msg)?);
            }
            wasm += started.elapsed();
            let started = Instant::now();
            for _ in 0..options.calls / rounds {
                std::hint::black_box(
                    native.schedule(std::hint::black_box(&pod), &candidates).map_err(anyhow::Error::msg)?,
                );
            }
            host += started.elapsed();
        }
        let calls = (options.calls / rounds * rounds) as f64;
        println!(
            "  policy alone, {what}, {} nodes: wasm {:.1} us/pod, native {:.1} us/pod: wasm/native {:.2}x   (target: <= 1.3x)",
            options.nodes,
            wasm.as_secs_f64() * 1e6 / calls,
            host.as_secs_f64() * 1e6 / calls,
            wasm.as_secs_f64() / host.as_secs_f64(),
        );
    }
    Ok(())
}
