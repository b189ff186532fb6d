//! `wasmkube bench plugins`: what running policy as WebAssembly costs, each figure beside
//! its baseline in the same run:
//!
//! - per call: the pod-security policy as the built-in WASM plugin (a reused instance;
//!   the host sends the pod as JSON, the plugin parses it and asks the host for the
//!   namespace) beside the same policy source (`plugins/pod-security/src/policy.rs`)
//!   compiled into this binary (parsing the pod and the namespace too);
//! - instantiation from the pooling allocator (and the plugin's `configure` call apart);
//! - reload: from a changed module to serving it (compile, check the world, first
//!   instance, swap), with an empty artifact cache and with the artifact cached;
//! - API creates of pods through HTTPS with no admission plugins and with three.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use super::api::{closed_loop, Api, Run, CLIENTS};
use crate::cmd::serve::{Server, ValidServeOptions};
use crate::plugins::{
    AdmissionRequest, Client, ClientError, GroupVersionKind, GroupVersionResource, Manifest, Operation, PluginMetrics,
    PluginSet, PluginUser, Runtime, RuntimeConfig,
};

#[path = "../../../../plugins/pod-security/src/policy.rs"]
#[allow(dead_code)]
mod native_policy;

#[derive(clap::Args, Debug)]
pub struct PluginBenchOptions {
    /// Scratch directory for the servers and artifact caches (default: a temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Calls per per-call figure.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Seconds per API throughput figure.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// A component to time reloads with (default: the built-in pod-security plugin).
    /// Its manifest is the pod-security one, so it must implement the admission world.
    #[arg(long)]
    module: Option<PathBuf>,
    /// A folder with misbehave.wasm (scripts/build-plugins' output) for the third plugin
    /// of the API figure; default: plugins/target/wasm32-wasip2/release beside the source.
    #[arg(long)]
    plugins: Option<PathBuf>,
}

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-7d4b9c","namespace":"default","labels":{"app":"web","tier":"frontend"},"annotations":{"team":"platform"}},"spec":{"containers":[{"name":"web","image":"nginx:1.27","ports":[{"containerPort":80,"protocol":"TCP"}],"resources":{"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"memory":"256Mi"}},"securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}},"volumeMounts":[{"name":"config","mountPath":"/etc/web"}]},{"name":"sidecar","image":"busybox:1.36","command":["sh","-c","sleep 3600"]}],"volumes":[{"name":"config","configMap":{"name":"web-config"}}],"restartPolicy":"Always","dnsPolicy":"ClusterFirst"}}"#;
const NAMESPACE: &str = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default","labels":{"kubernetes.io/metadata.name":"default","pod-security.kubernetes.io/enforce":"baseline"}},"spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}}"#;

/// Answers every `get` with the namespace above, as the host's cache would.
struct FixedNamespace;

#[async_trait::async_trait]
impl Client for FixedNamespace {
    async fn get(&self, _: &str, _: &str, _: &str, _: Option<&str>, _: &str) -> Result<Option<String>, ClientError> {
        Ok(Some(NAMESPACE.to_string()))
    }
    async fn list(&self, _: &str, _: &str, _: &str, _: Option<&str>, _: &str) -> Result<Vec<String>, ClientError> {
        Ok(Vec::new())
    }
}

fn request() -> AdmissionRequest {
    AdmissionRequest {
        uid: "bench".into(),
        kind: GroupVersionKind { group: String::new(), version: "v1".into(), kind: "Pod".into() },
        resource: GroupVersionResource { group: String::new(), version: "v1".into(), resource: "pods".into() },
        sub_resource: None,
        name: "web-7d4b9c".into(),
        namespace: Some("default".into()),
        operation: Operation::Create,
        user_info: PluginUser { username: "bench".into(), uid: String::new(), groups: Vec::new() },
        object: Some(POD.into()),
        old_object: None,
        dry_run: false,
    }
}

fn nanos_run(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len().max(1));
        samples.get(rank - 1).map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
    };
    (at(0.5), at(0.99))
}

pub async fn run(options: PluginBenchOptions) -> anyhow::Result<()> {
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let builtins = crate::plugins::builtin::defaults();
    let pod_security = builtins
        .iter()
        .find(|b| b.manifest.contains("name: pod-security"))
        .context("this binary was built without its default plugins: run scripts/build-plugins, then build again")?;
    eprintln!(
        "wasmkube bench plugins: {} calls per figure, {:.1} s per API figure, scratch dir {}",
        options.calls,
        options.seconds,
        scratch.path().display()
    );

    // Per call: native and WASM, the same policy on the same pod.
    let mut native = Vec::with_capacity(options.calls);
    for _ in 0..options.calls.min(2000) {
        native_call();
    }
    for _ in 0..options.calls {
        let started = Instant::now();
        std::hint::black_box(native_call());
        native.push(started.elapsed());
    }
    let runtime =
        Runtime::new(RuntimeConfig { cache_dir: Some(scratch.path().join("cache")), ..RuntimeConfig::default() })?;
    let set = PluginSet::new(runtime.clone(), PluginMetrics::unregistered()?);
    set.set_client(Arc::new(FixedNamespace));
    let manifest = Manifest::parse(pod_security.manifest).map_err(|e| anyhow::anyhow!("{e}"))?;
    set.load(manifest.clone(), pod_security.module.to_vec(), "bench").await?;
    let module = set.snapshot().first().map(|p| p.module.clone()).context("the plugin loaded")?;
    let request = request();
    let answer = module.validate(&request).await?;
    anyhow::ensure!(answer.allowed, "the sample pod should be allowed at baseline: {:?}", answer.message);
    for _ in 0..options.calls.min(2000) {
        module.validate(&request).await?;
    }
    let mut wasm = Vec::with_capacity(options.calls);
    for _ in 0..options.calls {
        let started = Instant::now();
        std::hint::black_box(module.validate(&request).await?);
        wasm.push(started.elapsed());
    }
    let (native_p50, native_p99) = nanos_run(native);
    let (wasm_p50, wasm_p99) = nanos_run(wasm);

    // Instantiation.
    let (instantiating, configuring) = module.time_instantiation(options.calls.min(2000)).await?;
    let (inst_p50, inst_p99) = nanos_run(instantiating);
    let (conf_p50, conf_p99) = nanos_run(configuring);

    // Reload: cold cache, then warm (a new engine each time, so only the disk cache helps).
    let reload_bytes = match &options.module {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => pod_security.module.to_vec(),
    };
    let reload = |cache: PathBuf| {
        let (manifest, bytes) = (manifest.clone(), reload_bytes.clone());
        async move {
            let runtime = Runtime::new(RuntimeConfig { cache_dir: Some(cache), ..RuntimeConfig::default() })?;
            let set = PluginSet::new(runtime, PluginMetrics::unregistered()?);
            set.set_client(Arc::new(FixedNamespace));
            let started = Instant::now();
            set.load(manifest, bytes, "bench").await?;
            anyhow::Ok(started.elapsed())
        }
    };
    // The same cold reload as the server does it: serving first from Winch (the time
    // measured), then waiting (untimed) for Cranelift's version to take over.
    let tiered = |cache: PathBuf| {
        let (manifest, bytes) = (manifest.clone(), reload_bytes.clone());
        async move {
            let config = RuntimeConfig { cache_dir: Some(cache), ..RuntimeConfig::default() };
            let baseline = Runtime::new(config.baseline())?;
            let set = PluginSet::tiered(Runtime::new(config)?, Some(baseline), PluginMetrics::unregistered()?);
            set.set_client(Arc::new(FixedNamespace));
            let started = Instant::now();
            set.load(manifest, bytes, "bench").await?;
            let serving = started.elapsed();
            let deadline = Instant::now() + Duration::from_secs(120);
            while set.snapshot().iter().any(|p| p.module.compiler() != crate::plugins::Compiler::Optimizing) {
                anyhow::ensure!(Instant::now() < deadline, "Cranelift did not take over within 120 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(serving)
        }
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut baseline_first = Vec::new();
    for round in 0..3 {
        let cache = scratch.path().join(format!("reload-cache-{round}"));
        cold.push(reload(cache.clone()).await?);
        warm.push(reload(cache).await?);
        baseline_first.push(tiered(scratch.path().join(format!("tiered-cache-{round}"))).await?);
    }
    cold.sort();
    warm.sort();
    baseline_first.sort();

    // API creates with no plugins and with three (pod-security, defaults, misbehave allowing).
    let plugin_folder = scratch.path().join("plugin-dir");
    std::fs::create_dir_all(&plugin_folder)?;
    let built = options
        .plugins
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-wasip2/release"));
    std::fs::copy(built.join("misbehave.wasm"), plugin_folder.join("misbehave.wasm")).with_context(|| {
        format!("copying misbehave.wasm from {} (run scripts/build-plugins, or pass --plugins)", built.display())
    })?;
    std::fs::write(
        plugin_folder.join("misbehave.yaml"),
        "apiVersion: wasmkube.io/v1alpha1\nkind: Plugin\nmetadata: {name: misbehave}\nspec:\n  kind: admission\n  module: misbehave.wasm\n  phases: [validate]\n  rules: [{apiGroups: [''], resources: [pods], operations: [CREATE]}]\n  config: {behaviour: allow}\n",
    )?;
    let seconds = Duration::from_secs_f64(options.seconds);
    let none = api_creates(scratch.path(), "no-plugins", None, false, seconds).await?;
    let three = api_creates(scratch.path(), "three-plugins", Some(plugin_folder), true, seconds).await?;

    println!();
    println!("{:<58} {:>12} {:>12} {:>8}   target", "figure", "wasm", "native", "ratio");
    println!(
        "{:<58} {:>12.1} {:>12.1} {:>8.2}   <= 1.5",
        "pod-security per call p50, µs",
        wasm_p50,
        native_p50,
        wasm_p50 / native_p50
    );
    println!(
        "{:<58} {:>12.1} {:>12.1} {:>8.2}",
        "pod-security per call p99, µs",
        wasm_p99,
        native_p99,
        wasm_p99 / native_p99
    );
    println!("{:<58} {:>12.1} {:>12} {:>8}   <= 10", "instantiation (pooling) p50, µs", inst_p50, "-", "-");
    println!("{:<58} {:>12.1} {:>12} {:>8}", "instantiation (pooling) p99, µs", inst_p99, "-", "-");
    println!(
        "{:<58} {:>12.1} {:>12} {:>8}",
        "configure call after instantiation p50 / p99, µs",
        conf_p50,
        format!("{conf_p99:.1}"),
        "-"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let size_kib = reload_bytes.len() as f64 / 1024.0;
    println!(
        "{:<58} {:>12.1} {:>12} {:>8}   <= 300",
        format!("reload of a {size_kib:.0} KiB module, cold cache (median of 3), ms"),
        ms(cold[1]),
        "-",
        "-"
    );
    println!(
        "{:<58} {:>12.1} {:>12} {:>8}   <= 300",
        "  the same, serving first from Winch (median of 3), ms",
        ms(baseline_first[1]),
        "-",
        "-"
    );
    println!(
        "{:<58} {:>12.1} {:>12} {:>8}   <= 20",
        "reload, artifact cached (median of 3), ms",
        ms(warm[1]),
        "-",
        "-"
    );
    println!(
        "{:<58} {:>12.0} {:>12.0} {:>8.2}   >= 0.70",
        "API pod creates/s: 3 plugins (wasm) vs none (native)",
        three.rate,
        none.rate,
        three.rate / none.rate
    );
    println!("{:<58} {:>12.2} {:>12.2} {:>8.2}", "  create p50, ms", three.p50(), none.p50(), three.p50() / none.p50());
    println!("{:<58} {:>12.2} {:>12.2} {:>8.2}", "  create p99, ms", three.p99(), none.p99(), three.p99() / none.p99());
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("targets (this machine):");
    println!(
        "  WASM <= 1.5x native per call: {:.2}x -> {}",
        wasm_p50 / native_p50,
        verdict(wasm_p50 / native_p50 <= 1.5)
    );
    println!("  instantiation <= 10 µs: {inst_p50:.1} µs -> {}", verdict(inst_p50 <= 10.0));
    println!(
        "  reload <= 300 ms cold: {:.1} ms (Cranelift), {:.1} ms (Winch first, as serve does) -> {}",
        ms(cold[1]),
        ms(baseline_first[1]),
        verdict(ms(baseline_first[1]).min(ms(cold[1])) <= 300.0)
    );
    println!("  reload <= 20 ms cached: {:.1} ms -> {}", ms(warm[1]), verdict(ms(warm[1]) <= 20.0));
    println!(
        "  creates with 3 plugins >= 70% of none: {:.0}% -> {}",
        100.0 * three.rate / none.rate,
        verdict(three.rate / none.rate >= 0.7)
    );
    Ok(())
}

/// The native baseline: parse the pod and the namespace, find the level, check.
fn native_call() -> usize {
    let pod: Value = serde_json::from_str(POD).unwrap_or(Value::Null);
    let namespace: Value = serde_json::from_str(NAMESPACE).unwrap_or(Value::Null);
    let level = namespace
        .pointer("/metadata/labels/pod-security.kubernetes.io~1enforce")
        .and_then(Value::as_str)
        .and_then(native_policy::Level::parse)
        .unwrap_or(native_policy::Level::Baseline);
    native_policy::check(&pod["spec"], level).len()
}

/// Pod creates through HTTPS from `CLIENTS` clients against a fresh embedded server.
async fn api_creates(
    scratch: &Path,
    name: &str,
    plugin_dir: Option<PathBuf>,
    defaults: bool,
    seconds: Duration,
) -> anyhow::Result<Run> {
    let data_dir = scratch.join(name);
    let listen = "127.0.0.1:0".parse()?;
    let mut server =
        // No scheduler: with no nodes it would write a FailedScheduling Event and a condition
        // for every pod, measuring itself rather than the admission plugins.
        Server::start(
            ValidServeOptions::embedded(data_dir.clone(), listen).with_plugins(plugin_dir, defaults).without_scheduler(),
        )
        .await?;
    server.ready().await?;
    let api = Arc::new(Api::connect(&data_dir, &format!("https://{}", server.advertise))?);
    api.warm_up().await?;
    let url = format!("{}/api/v1/namespaces/default/pods", api.base);
    let run = closed_loop(seconds, move |client, n| {
        let (api, url) = (api.clone(), url.clone());
        async move {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p-{client}-{n}")},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}});
            api.send(api.client.post(&url).json(&pod), reqwest::StatusCode::CREATED).await.map(drop)
        }
    })
    .await?;
    run.print(&format!("{name}: pod creates, {CLIENTS} clients"));
    server.shutdown().await?;
    Ok(run)
}
