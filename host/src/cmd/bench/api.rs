//! `wasmkube bench api`: the Kubernetes API over HTTPS, served in-process on each backend —
//! creates/s, gets/s and updates/s of ~1 KB ConfigMaps from 64 clients with p50/p99
//! latency, create latency at half the peak rate (open loop), list latency over 1k and 10k
//! objects, and watch delivery to many watchers — beside the same operations straight on
//! the [`Store`] (create, get, update, range), so the API layer's cost prints as api/store.
//!
//! Clients are the admin user (client certificate), one HTTP/1.1 connection over TLS per
//! concurrent client, in the same process as the server: on a small machine the clients
//! take CPU from the server, as they would on one node.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;

use super::cpu;
use crate::cmd::serve::{Server, ValidServeOptions};
use crate::storage::embedded::EmbeddedStore;
use crate::storage::etcd::EtcdStore;
use crate::storage::local_etcd::LocalEtcd;
use crate::storage::{RangeRequest, StorageMetrics, Store};

#[derive(clap::Args, Debug)]
pub struct ApiBenchOptions {
    /// Directory for the servers' data dirs, the stores and the local etcd (default: a temp
    /// dir). It should be on the disk you want to measure.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds per throughput figure, per open-loop run and of writes under the watchers.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds per backend; each figure printed is the median over them (the watch's missed
    /// and expired counts are the worst round's).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measure only the embedded store (quick iteration; no etcd).
    #[arg(long)]
    embedded_only: bool,
    /// Concurrent watch streams during the watch figure.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
}

/// Concurrent clients of the closed-loop figures (each waits for its answer, then asks again).
pub(super) const CLIENTS: usize = 64;
/// Writes per second under the watchers: the target's rate (every event delivered, p99
/// within 50 ms), then ten times it (how far the server gets, and its CPU per event).
const WATCH_WRITES_PER_SECOND: [f64; 2] = [100.0, 1000.0];
/// How long watchers may take to catch up after the last write; what they have not seen
/// by then counts as missing.
const WATCH_DRAIN: Duration = Duration::from_secs(30);
/// Objects in the namespaces the list figures read.
const LIST_SIZES: [usize; 2] = [1_000, 10_000];
/// Objects each client updates in turn (its own, so updates never conflict).
const UPDATED_PER_CLIENT: u64 = 16;
/// Bytes of filler in each ConfigMap: with the metadata the server adds, ~1 KB as stored.
const FILLER_BYTES: usize = 700;

/// `data` of a ConfigMap: `probe` first (keys are stored sorted, so a watcher finds it
/// near the start of each event), then the filler.
fn data(probe: &str) -> String {
    static FILLER: LazyLock<String> = LazyLock::new(|| "x".repeat(FILLER_BYTES));
    format!(r#"{{"probe":"{probe}","value":"{}"}}"#, *FILLER)
}

/// The data of every ConfigMap but the watched ones.
static DATA: LazyLock<String> = LazyLock::new(|| data("-"));

/// The operations measured, through the API or on the store.
#[async_trait]
trait Target: Send + Sync + 'static {
    /// Make `namespace` usable; returns the revision after.
    async fn namespace(&self, namespace: &str) -> anyhow::Result<i64>;
    /// Create ConfigMap `name` holding `data` (a JSON object); returns its resourceVersion.
    async fn create(&self, namespace: &str, name: &str, data: &str) -> anyhow::Result<i64>;
    /// Read it; returns its resourceVersion.
    async fn get(&self, namespace: &str, name: &str) -> anyhow::Result<i64>;
    /// Replace it if it is still at `revision`; returns the new resourceVersion.
    async fn update(&self, namespace: &str, name: &str, revision: i64, data: &str) -> anyhow::Result<i64>;
    /// Every object in `namespace`, read consistently (not from the watch cache).
    async fn list(&self, namespace: &str) -> anyhow::Result<Listed>;
}

/// What a list returned; counted after the clock stops.
enum Listed {
    Count(usize),
    /// A `ConfigMapList`: one `uid` per item.
    Body(Bytes),
}

impl Listed {
    fn count(&self) -> usize {
        match self {
            Listed::Count(n) => *n,
            Listed::Body(body) => occurrences(body, br#""uid":"#),
        }
    }
}

/// The API over HTTPS as the admin user, as kubectl talks to it with the kubeconfig.
pub(super) struct Api {
    pub(super) client: reqwest::Client,
    pub(super) base: String,
}

impl Api {
    /// A client of the server whose data dir is `data_dir`: it trusts the cluster's CA and
    /// presents the admin certificate. Each call makes its own connection pool.
    pub(super) fn connect(data_dir: &Path, base: &str) -> anyhow::Result<Self> {
        let client = crate::cmd::admin_https_client(data_dir, "wasmkube-bench")?;
        Ok(Self { client, base: base.to_string() })
    }

    pub(super) async fn send(&self, request: reqwest::RequestBuilder, expected: StatusCode) -> anyhow::Result<Bytes> {
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        anyhow::ensure!(status == expected, "{status}: {}", String::from_utf8_lossy(&body[..body.len().min(400)]));
        Ok(body)
    }

    fn configmaps(&self, namespace: &str) -> String {
        format!("{}/api/v1/namespaces/{namespace}/configmaps", self.base)
    }

    /// Open `CLIENTS` connections, so the first figure measures requests, not handshakes.
    pub(super) async fn warm_up(self: &Arc<Self>) -> anyhow::Result<()> {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let api = self.clone();
                tokio::spawn(async move {
                    for _ in 0..4 {
                        api.send(api.client.get(format!("{}/version", api.base)), StatusCode::OK).await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        Ok(())
    }

    /// A ConfigMap as the server stores it (read back through the API): the store figures' value.
    async fn sample(&self) -> anyhow::Result<Bytes> {
        self.namespace("bench-sample").await?;
        self.create("bench-sample", "sample", &DATA).await?;
        self.send(self.client.get(format!("{}/sample", self.configmaps("bench-sample"))), StatusCode::OK).await
    }
}

#[async_trait]
impl Target for Api {
    async fn namespace(&self, namespace: &str) -> anyhow::Result<i64> {
        let body = format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{namespace}"}}}}"#);
        let request = self.client.post(format!("{}/api/v1/namespaces", self.base));
        resource_version(
            &self.send(request.header(CONTENT_TYPE, "application/json").body(body), StatusCode::CREATED).await?,
        )
    }
    async fn create(&self, namespace: &str, name: &str, data: &str) -> anyhow::Result<i64> {
        let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{data}}}"#);
        let request = self.client.post(self.configmaps(namespace)).header(CONTENT_TYPE, "application/json").body(body);
        resource_version(&self.send(request, StatusCode::CREATED).await?)
    }
    async fn get(&self, namespace: &str, name: &str) -> anyhow::Result<i64> {
        let request = self.client.get(format!("{}/{name}", self.configmaps(namespace)));
        resource_version(&self.send(request, StatusCode::OK).await?)
    }
    async fn update(&self, namespace: &str, name: &str, revision: i64, data: &str) -> anyhow::Result<i64> {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","resourceVersion":"{revision}"}},"data":{data}}}"#
        );
        let request = self
            .client
            .put(format!("{}/{name}", self.configmaps(namespace)))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        resource_version(&self.send(request, StatusCode::OK).await?)
    }
    async fn list(&self, namespace: &str) -> anyhow::Result<Listed> {
        Ok(Listed::Body(self.send(self.client.get(self.configmaps(namespace)), StatusCode::OK).await?))
    }
}

/// The store with no API in front: keys as the registry lays them out, and one stored
/// ConfigMap as every value (the `data` argument is not encoded: that is the API's work).
struct StoreTarget {
    store: Arc<dyn Store>,
    value: Bytes,
}

fn store_key(namespace: &str, name: &str) -> Bytes {
    format!("/registry/core/configmaps/{namespace}/{name}").into()
}

#[async_trait]
impl Target for StoreTarget {
    async fn namespace(&self, _namespace: &str) -> anyhow::Result<i64> {
        Ok(self.store.current_revision().await?)
    }
    async fn create(&self, namespace: &str, name: &str, _data: &str) -> anyhow::Result<i64> {
        Ok(self.store.create(store_key(namespace, name), self.value.clone()).await?.mod_revision)
    }
    async fn get(&self, namespace: &str, name: &str) -> anyhow::Result<i64> {
        Ok(self.store.get(store_key(namespace, name)).await?.0.context("key missing")?.mod_revision)
    }
    async fn update(&self, namespace: &str, name: &str, revision: i64, _data: &str) -> anyhow::Result<i64> {
        Ok(self.store.update(store_key(namespace, name), self.value.clone(), revision).await?.mod_revision)
    }
    async fn list(&self, namespace: &str) -> anyhow::Result<Listed> {
        let prefix = format!("/registry/core/configmaps/{namespace}/").into();
        Ok(Listed::Count(self.store.range(RangeRequest { prefix, ..Default::default() }).await?.kvs.len()))
    }
}

/// One column of the report: NaN where a figure does not apply (watch on the store).
#[derive(Clone)]
struct Figures {
    creates: f64,
    create_p50: f64,
    create_p99: f64,
    /// The open-loop rate achieved; half the API's peak creates/s is offered (to the store too).
    half_rate: f64,
    half_p50: f64,
    half_p99: f64,
    gets: f64,
    get_p50: f64,
    get_p99: f64,
    updates: f64,
    update_p50: f64,
    update_p99: f64,
    list_1k_p50: f64,
    list_1k_p99: f64,
    list_10k_p50: f64,
    list_10k_p99: f64,
    /// The server's CPU per create in the closed loop, microseconds (its own threads only).
    create_cpu_us: f64,
    /// The watch figures at each of `WATCH_WRITES_PER_SECOND`.
    slow: WatchFigures,
    fast: WatchFigures,
}

/// The watch figures at one write rate.
#[derive(Clone, Copy)]
struct WatchFigures {
    /// Events some watcher never saw, summed over watchers.
    missing: f64,
    /// Writes/s achieved under the watchers.
    writes: f64,
    /// Watchers the server ended with 410 Expired (too slow to keep up).
    expired: f64,
    p50: f64,
    p99: f64,
    /// The server's CPU per event delivered, microseconds.
    cpu_us: f64,
}

impl WatchFigures {
    fn from_fn(value: impl Fn(&dyn Fn(&WatchFigures) -> f64) -> f64) -> Self {
        Self {
            missing: value(&|w| w.missing),
            writes: value(&|w| w.writes),
            expired: value(&|w| w.expired),
            p50: value(&|w| w.p50),
            p99: value(&|w| w.p99),
            cpu_us: value(&|w| w.cpu_us),
        }
    }
}

impl Figures {
    /// A `Figures` whose every field is `value(field getter)`.
    fn from_fn(value: impl Fn(&dyn Fn(&Figures) -> f64) -> f64) -> Figures {
        Figures {
            creates: value(&|f| f.creates),
            create_p50: value(&|f| f.create_p50),
            create_p99: value(&|f| f.create_p99),
            half_rate: value(&|f| f.half_rate),
            half_p50: value(&|f| f.half_p50),
            half_p99: value(&|f| f.half_p99),
            gets: value(&|f| f.gets),
            get_p50: value(&|f| f.get_p50),
            get_p99: value(&|f| f.get_p99),
            updates: value(&|f| f.updates),
            update_p50: value(&|f| f.update_p50),
            update_p99: value(&|f| f.update_p99),
            list_1k_p50: value(&|f| f.list_1k_p50),
            list_1k_p99: value(&|f| f.list_1k_p99),
            list_10k_p50: value(&|f| f.list_10k_p50),
            list_10k_p99: value(&|f| f.list_10k_p99),
            create_cpu_us: value(&|f| f.create_cpu_us),
            slow: WatchFigures::from_fn(|w| value(&|f| w(&f.slow))),
            fast: WatchFigures::from_fn(|w| value(&|f| w(&f.fast))),
        }
    }

    fn none() -> Figures {
        Figures::from_fn(|_| f64::NAN)
    }
}

/// One backend: the API's figures, the store's, and the per-round api/store ratios.
struct Column {
    api: Figures,
    store: Figures,
    ratio: Figures,
}

pub async fn run(options: ApiBenchOptions) -> anyhow::Result<()> {
    if !(options.seconds.is_finite() && options.seconds > 0.0) {
        return Err(crate::cmd::InvalidOptions(vec![format!("--seconds {} must be above 0", options.seconds)]).into());
    }
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .context("creating a scratch directory")?;
    println!(
        "wasmkube bench api: ConfigMaps through HTTPS (HTTP/1.1, a connection per client) and straight on the store, \
         {CLIENTS} clients in this process on {} cores, {:.1} s per figure, {} watchers, median of {} rounds, scratch dir {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.seconds,
        options.watchers,
        options.rounds.max(1),
        scratch.path().display()
    );

    // The servers run on a runtime of their own, so their CPU is told from the clients'.
    let servers = cpu::server_runtime().context("starting the servers' runtime")?;
    let handle = servers.handle().clone();
    let start = move |options: ValidServeOptions| {
        let handle = handle.clone();
        async move {
            let started: anyhow::Result<Server> =
                handle.spawn(Server::start(options)).await.context("the server's start panicked")?;
            started
        }
    };
    let embedded = {
        let data_dir = scratch.path().join("embedded-server");
        let server = start(ValidServeOptions::embedded(data_dir.clone(), "127.0.0.1:0".parse()?)).await?;
        let store = EmbeddedStore::open(&scratch.path().join("embedded-store"), StorageMetrics::unregistered()).await?;
        bench_backend("embedded", server, &data_dir, Arc::new(store), &options).await?
    };
    if options.embedded_only {
        let none = Column { api: Figures::none(), store: Figures::none(), ratio: Figures::none() };
        report(&options, &embedded, &none);
        servers.shutdown_background();
        return Ok(());
    }

    let etcd = LocalEtcd::start(scratch.path(), 0).await?;
    let endpoints = vec![etcd.endpoint().to_string()];
    let mut etcd_column = {
        let data_dir = scratch.path().join("etcd-server");
        let listen = "127.0.0.1:0".parse()?;
        let server = start(ValidServeOptions::etcd(data_dir.clone(), listen, endpoints.clone(), "/wasmkube")).await?;
        let store = EtcdStore::connect(&endpoints, "/bench-store".into(), StorageMetrics::unregistered()).await?;
        bench_backend("etcd", server, &data_dir, Arc::new(store), &options).await?
    };
    // The watch's baseline beside the etcd backend's: the same watchers and writes on etcd itself.
    eprintln!("-- raw etcd watches");
    let seconds = Duration::from_secs_f64(options.seconds);
    let [slow, fast] = WATCH_WRITES_PER_SECOND;
    etcd_column.store.slow = raw_etcd_watch(&etcd, "/raw-watch/slow/", options.watchers, seconds, slow).await?;
    etcd_column.store.fast = raw_etcd_watch(&etcd, "/raw-watch/fast/", options.watchers, seconds, fast).await?;
    drop(etcd);
    servers.shutdown_background();
    report(&options, &embedded, &etcd_column);
    Ok(())
}

/// Every round on one backend: the API (then its watchers), then the store at the same load.
async fn bench_backend(
    name: &str,
    mut server: Server,
    data_dir: &Path,
    store: Arc<dyn Store>,
    options: &ApiBenchOptions,
) -> anyhow::Result<Column> {
    server.ready().await?;
    let api = Arc::new(Api::connect(data_dir, &format!("https://{}", server.advertise))?);
    api.warm_up().await?;
    let value = api.sample().await?;
    eprintln!("-- {name}: a ConfigMap is {} bytes as stored; filling the list namespaces", value.len());
    let api_target: Arc<dyn Target> = api.clone();
    let store_target: Arc<dyn Target> = Arc::new(StoreTarget { store: store.clone(), value });
    for target in [&api_target, &store_target] {
        for size in LIST_SIZES {
            fill(target, &format!("list-{size}"), size).await?;
        }
    }
    let seconds = Duration::from_secs_f64(options.seconds);
    let (mut apis, mut stores) = (Vec::new(), Vec::new());
    for round in 0..options.rounds.max(1) {
        let mut figures = measure(&api_target, &format!("{name} api"), round, seconds, None).await?;
        let [slow, fast] = WATCH_WRITES_PER_SECOND;
        figures.slow = watch(&api, data_dir, &format!("r{round}-ws"), options.watchers, seconds, slow).await?;
        figures.fast = watch(&api, data_dir, &format!("r{round}-wf"), options.watchers, seconds, fast).await?;
        let half_rate = figures.creates / 2.0;
        apis.push(figures);
        stores.push(measure(&store_target, &format!("{name} store"), round, seconds, Some(half_rate)).await?);
    }
    server.shutdown().await?;
    store.close().await?;
    let ratio = Figures::from_fn(|get| {
        median_of(
            apis.iter().zip(&stores).map(|(a, s)| if get(s) > 0.0 { get(a) / get(s) } else { f64::NAN }).collect(),
        )
    });
    Ok(Column { api: median(&apis), store: median(&stores), ratio })
}

/// `count` ConfigMaps in a new `namespace`, written by `CLIENTS` clients; checked by a list.
async fn fill(target: &Arc<dyn Target>, namespace: &str, count: usize) -> anyhow::Result<()> {
    target.namespace(namespace).await?;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (target, namespace) = (target.clone(), namespace.to_string());
            tokio::spawn(async move {
                for n in (client..count).step_by(CLIENTS) {
                    target.create(&namespace, &format!("o{n:05}"), &DATA).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let listed = target.list(namespace).await?.count();
    anyhow::ensure!(listed == count, "{namespace} lists {listed} objects, not {count}");
    Ok(())
}

/// Every figure but the watch's once, in namespaces of this round. The open-loop creates
/// run at `half_rate`, or at half the creates/s just measured.
async fn measure(
    target: &Arc<dyn Target>,
    name: &str,
    round: usize,
    seconds: Duration,
    half_rate: Option<f64>,
) -> anyhow::Result<Figures> {
    eprintln!("-- {name}, round {round}");
    let namespace: Arc<str> = format!("r{round}-c").into();
    target.namespace(&namespace).await?;
    let cpu_before = cpu::server_cpu();
    let creates = {
        let (target, namespace) = (target.clone(), namespace.clone());
        closed_loop(seconds, move |client, n| {
            let (target, namespace) = (target.clone(), namespace.clone());
            async move { target.create(&namespace, &format!("c{client}-{n}"), &DATA).await.map(drop) }
        })
        .await?
    };
    let create_cpu_us = cpu::micros_per(cpu_before, cpu::server_cpu(), creates.latencies.len() as f64);
    creates.print("creates");

    let half_rate = half_rate.unwrap_or(creates.rate / 2.0);
    let open: Arc<str> = format!("r{round}-o").into();
    target.namespace(&open).await?;
    let half = {
        let target = target.clone();
        open_loop(half_rate, (half_rate * seconds.as_secs_f64()).round() as u64, move |n| {
            let (target, open) = (target.clone(), open.clone());
            async move { target.create(&open, &format!("o{n}"), &DATA).await.map(drop) }
        })
        .await?
    };
    half.print("creates, open loop");

    // Gets spread over every object the creates wrote (each client wrote at least `written`).
    let written = creates.fewest.max(1);
    let gets = {
        let (target, namespace) = (target.clone(), namespace.clone());
        closed_loop(seconds, move |client, n| {
            let (target, namespace) = (target.clone(), namespace.clone());
            async move {
                let x =
                    (((client as u64) << 40) | n).wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407)
                        >> 20;
                let (owner, index) = (x % CLIENTS as u64, (x / CLIENTS as u64) % written);
                target.get(&namespace, &format!("c{owner}-{index}")).await.map(drop)
            }
        })
        .await?
    };
    gets.print("gets");

    // Each client updates its own first objects in turn, carrying each one's resourceVersion.
    let per_client = UPDATED_PER_CLIENT.min(written);
    let revisions: Arc<Vec<AtomicI64>> =
        Arc::new((0..CLIENTS as u64 * per_client).map(|_| AtomicI64::new(0)).collect());
    for client in 0..CLIENTS as u64 {
        for index in 0..per_client {
            let revision = target.get(&namespace, &format!("c{client}-{index}")).await?;
            revisions[(client * per_client + index) as usize].store(revision, Ordering::Relaxed);
        }
    }
    let updates = {
        let (target, namespace) = (target.clone(), namespace.clone());
        closed_loop(seconds, move |client, n| {
            let (target, namespace, revisions) = (target.clone(), namespace.clone(), revisions.clone());
            async move {
                let index = n % per_client;
                let slot = &revisions[(client as u64 * per_client + index) as usize];
                let name = format!("c{client}-{index}");
                let revision = target.update(&namespace, &name, slot.load(Ordering::Relaxed), &DATA).await?;
                slot.store(revision, Ordering::Relaxed);
                Ok(())
            }
        })
        .await?
    };
    updates.print("updates");

    let list_1k = lists(target, LIST_SIZES[0], seconds).await?;
    let list_10k = lists(target, LIST_SIZES[1], seconds).await?;
    Ok(Figures {
        creates: creates.rate,
        create_p50: creates.p50(),
        create_p99: creates.p99(),
        half_rate: half.rate,
        half_p50: half.p50(),
        half_p99: half.p99(),
        gets: gets.rate,
        get_p50: gets.p50(),
        get_p99: gets.p99(),
        updates: updates.rate,
        update_p50: updates.p50(),
        update_p99: updates.p99(),
        list_1k_p50: list_1k.p50(),
        list_1k_p99: list_1k.p99(),
        list_10k_p50: list_10k.p50(),
        list_10k_p99: list_10k.p99(),
        create_cpu_us,
        ..Figures::none()
    })
}

/// Lists of the namespace holding `size` objects, one after another, for `seconds` (at
/// least five).
async fn lists(target: &Arc<dyn Target>, size: usize, seconds: Duration) -> anyhow::Result<Run> {
    let namespace = format!("list-{size}");
    let start = Instant::now();
    let mut latencies = Vec::new();
    while start.elapsed() < seconds || latencies.len() < 5 {
        let began = Instant::now();
        let listed = target.list(&namespace).await?;
        latencies.push(micros(began.elapsed()));
        let count = listed.count();
        anyhow::ensure!(count == size, "a list of {namespace} returned {count} objects");
    }
    let run = Run::new(latencies, start.elapsed(), 0);
    run.print(&format!("lists of {size}"));
    Ok(run)
}

/// Latencies of one load (microseconds, sorted) and its rate.
pub(super) struct Run {
    pub(super) rate: f64,
    pub(super) latencies: Vec<u32>,
    /// The fewest calls any one client made (closed loop).
    fewest: u64,
}

impl Run {
    fn new(mut latencies: Vec<u32>, elapsed: Duration, fewest: u64) -> Self {
        latencies.sort_unstable();
        Self { rate: latencies.len() as f64 / elapsed.as_secs_f64(), latencies, fewest }
    }
    pub(super) fn p50(&self) -> f64 {
        percentile_ms(&self.latencies, 0.50)
    }
    pub(super) fn p99(&self) -> f64 {
        percentile_ms(&self.latencies, 0.99)
    }
    pub(super) fn print(&self, what: &str) {
        eprintln!(
            "   {what}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} calls)",
            self.rate,
            self.p50(),
            self.p99(),
            percentile_ms(&self.latencies, 1.0),
            self.latencies.len()
        );
    }
}

/// The `q` quantile of sorted microseconds, in milliseconds (nearest rank).
fn percentile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}

/// `CLIENTS` clients, each calling `op(client, n)` for n = 0, 1, ... (waiting for each
/// answer) until `seconds` pass.
pub(super) async fn closed_loop<F, Fut>(seconds: Duration, op: F) -> anyhow::Result<Run>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let deadline = start + seconds;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let began = Instant::now();
                    op(client, latencies.len() as u64).await?;
                    latencies.push(micros(began.elapsed()));
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let (mut all, mut fewest) = (Vec::new(), u64::MAX);
    for task in tasks {
        let latencies = task.await??;
        fewest = fewest.min(latencies.len() as u64);
        all.extend(latencies);
    }
    Ok(Run::new(all, start.elapsed(), fewest))
}

/// `count` calls of `op(n)` issued at `rate` per second whether or not earlier ones have
/// answered (open loop), each timed from its issue; the rate is the one achieved. The
/// timer ticks in milliseconds, so calls leave in per-millisecond bursts on schedule. At
/// most `CLIENTS` calls are outstanding (so an overloaded server is not also flooded with
/// new connections and handshakes): beyond that the generator falls behind, and says so.
async fn open_loop<F, Fut>(rate: f64, count: u64, op: F) -> anyhow::Result<Run>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let outstanding = Arc::new(tokio::sync::Semaphore::new(CLIENTS));
    let start = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let mut behind = Duration::ZERO;
    for n in 0..count {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = outstanding.clone().acquire_owned().await?;
        let call = op(n);
        let issued = Instant::now();
        behind = behind.max(issued.saturating_duration_since(due));
        calls.spawn(async move {
            call.await?;
            drop(permit);
            anyhow::Ok(micros(issued.elapsed()))
        });
    }
    let issuing = start.elapsed();
    let mut latencies = Vec::with_capacity(count as usize);
    while let Some(latency) = calls.join_next().await {
        latencies.push(latency??);
    }
    if behind > Duration::from_millis(5) {
        eprintln!(
            "   (the load generator fell {:.1} ms behind its schedule at worst: {CLIENTS} calls outstanding, or no CPU)",
            behind.as_secs_f64() * 1000.0
        );
    }
    Ok(Run::new(latencies, issuing, 0))
}

/// `watchers` watch streams on a fresh namespace while `rate` creates a second go on for
/// `seconds`; each object carries its sequence number and the time its create was sent, so
/// each watcher counts what it saw and how late.
async fn watch(
    api: &Arc<Api>,
    data_dir: &Path,
    namespace: &str,
    watchers: usize,
    seconds: Duration,
    rate: f64,
) -> anyhow::Result<WatchFigures> {
    let namespace: Arc<str> = namespace.into();
    let since = api.namespace(&namespace).await?;
    // A pool of its own: every stream holds a connection. The server ends the streams
    // (timeoutSeconds) even if it does not notice the client leaving.
    let client = Api::connect(data_dir, &api.base)?.client;
    let timeout = (seconds + WATCH_DRAIN).as_secs() + 60;
    let url = format!("{}?watch=1&resourceVersion={since}&timeoutSeconds={timeout}", api.configmaps(&namespace));
    let opened = Instant::now();
    let streams: Vec<reqwest::Response> = futures::stream::iter(0..watchers)
        .map(|_| {
            let request = client.get(&url);
            async move {
                let response = request.send().await?;
                anyhow::ensure!(response.status() == StatusCode::OK, "watch answered {}", response.status());
                anyhow::Ok(response)
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    eprintln!("   {watchers} watch streams open in {:.2} s", opened.elapsed().as_secs_f64());

    let writes = (rate * seconds.as_secs_f64()).round() as u64;
    let epoch = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let readers = streams
        .into_iter()
        .map(|stream| tokio::spawn(read_watch(stream, writes as usize, epoch, stopped.clone())))
        .collect();
    let api = api.clone();
    let write = move |n: u64, sent: u128| {
        let (api, namespace) = (api.clone(), namespace.clone());
        async move { api.create(&namespace, &format!("w{n}"), &data(&format!("{n}.{sent}"))).await.map(drop) }
    };
    under_watchers(readers, stop, epoch, rate, writes, write, "server", cpu::server_cpu).await
}

/// Write `writes` objects at `rate` through `write` (its sequence number and the time it is
/// sent, the probe each watcher reads) while `readers` watch; then wait for them (at most
/// `WATCH_DRAIN` after the last write) and tally what they saw. `cpu` reads the CPU time
/// of `who` serves the watches.
#[allow(clippy::too_many_arguments)]
async fn under_watchers<W, Fut>(
    readers: Vec<tokio::task::JoinHandle<Watched>>,
    stop: tokio::sync::watch::Sender<bool>,
    epoch: Instant,
    rate: f64,
    writes: u64,
    write: W,
    who: &str,
    cpu: impl Fn() -> Duration,
) -> anyhow::Result<WatchFigures>
where
    W: Fn(u64, u128) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let watchers = readers.len();
    let cpu_before = cpu();
    let written = open_loop(rate, writes, move |n| write(n, epoch.elapsed().as_micros())).await?;
    written.print(&format!("writes under the watchers ({rate:.0}/s offered)"));
    let writes_done = epoch.elapsed();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(WATCH_DRAIN).await;
        let _ = stop.send(true);
    });
    let (mut missing, mut expired, mut ended, mut latencies) = (0usize, 0usize, 0usize, Vec::new());
    for reader in readers {
        let watched = reader.await?;
        missing += writes as usize - watched.distinct;
        expired += usize::from(watched.expired);
        ended += usize::from(watched.ended.is_some());
        if let Some(reason) = watched.ended.filter(|_| ended == 1) {
            eprintln!("   a watch stream ended early: {reason}");
        }
        latencies.extend(watched.latencies);
    }
    timer.abort();
    let cpu_us = cpu::micros_per(cpu_before, cpu(), latencies.len() as f64);
    let delivered = latencies.len();
    let run = Run::new(latencies, epoch.elapsed(), 0);
    eprintln!(
        "   watch: {delivered} events to {watchers} watchers ({:.0}/s over {:.1} s; writes took {:.1} s), missing={missing}, \
         expired={expired}, streams ended early={ended}, delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, \
         {who} CPU {cpu_us:.2} µs per event delivered",
        run.rate,
        epoch.elapsed().as_secs_f64(),
        writes_done.as_secs_f64(),
        run.p50(),
        run.p99(),
        percentile_ms(&run.latencies, 1.0)
    );
    Ok(WatchFigures {
        missing: missing as f64,
        writes: written.rate,
        expired: expired as f64,
        p50: run.p50(),
        p99: run.p99(),
        cpu_us,
    })
}

/// The watch figure's baseline: `watchers` watches straight on etcd through etcd-client
/// (one connection, a gRPC stream each) while `rate` puts a second go on for `seconds`, each
/// value the same ConfigMap-sized JSON with the same probe; the CPU is etcd's whole process.
async fn raw_etcd_watch(
    etcd: &LocalEtcd,
    prefix: &str,
    watchers: usize,
    seconds: Duration,
    rate: f64,
) -> anyhow::Result<WatchFigures> {
    let client = etcd_client::Client::connect([etcd.endpoint()], Some(crate::storage::etcd::connect_options())).await?;
    let mut streams = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let options = etcd_client::WatchOptions::new().with_prefix();
        streams.push(client.watch_client().watch(prefix, Some(options)).await?);
    }
    eprintln!("   {watchers} raw etcd watches open");
    let writes = (rate * seconds.as_secs_f64()).round() as u64;
    let epoch = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let readers = streams
        .into_iter()
        .map(|stream| tokio::spawn(read_etcd_watch(stream, writes as usize, epoch, stopped.clone())))
        .collect();
    let (kv, prefix) = (client.kv_client(), prefix.to_string());
    let write = move |n: u64, sent: u128| {
        let (mut kv, key) = (kv.clone(), format!("{prefix}{n}"));
        async move {
            kv.put(key, data(&format!("{n}.{sent}")), None).await?;
            Ok(())
        }
    };
    let pid = etcd.pid();
    under_watchers(readers, stop, epoch, rate, writes, write, "etcd", move || cpu::process_cpu(pid)).await
}

/// Read one raw etcd watch until it has seen `writes` distinct writes, ends, or `stopped`.
async fn read_etcd_watch(
    mut stream: etcd_client::WatchStream,
    writes: usize,
    epoch: Instant,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Watched {
    let mut watched = Watched::new(writes);
    while watched.distinct < writes {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = stopped.wait_for(|s| *s) => break,
        };
        match message {
            Ok(Some(response)) => {
                let now = epoch.elapsed().as_micros();
                for event in response.events() {
                    if let Some((seq, sent)) = event.kv().and_then(|kv| probe(kv.value())) {
                        watched.saw(seq, sent, now);
                    }
                }
            }
            Ok(None) => {
                watched.ended = Some("etcd closed the stream".into());
                break;
            }
            Err(e) => {
                watched.ended = Some(e.to_string());
                break;
            }
        }
    }
    watched
}

/// What one watcher saw.
struct Watched {
    /// Distinct writes seen.
    distinct: usize,
    /// Delivery latency of each event seen, microseconds.
    latencies: Vec<u32>,
    /// The server ended the watch with 410 Expired.
    expired: bool,
    /// Why the stream ended before every write was seen, if it did on its own.
    ended: Option<String>,
    /// Which writes were seen.
    seen: Vec<bool>,
}

impl Watched {
    fn new(writes: usize) -> Self {
        Self {
            distinct: 0,
            latencies: Vec::with_capacity(writes),
            expired: false,
            ended: None,
            seen: vec![false; writes],
        }
    }

    /// Write `seq`, sent at `sent`, arrived at `now` (microseconds since the epoch).
    fn saw(&mut self, seq: usize, sent: u128, now: u128) {
        if seq < self.seen.len() && !self.seen[seq] {
            self.seen[seq] = true;
            self.distinct += 1;
            self.latencies.push(u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX));
        }
    }
}

/// Read one watch stream until it has seen `writes` distinct writes, ends, or `stopped`.
async fn read_watch(
    mut response: reqwest::Response,
    writes: usize,
    epoch: Instant,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Watched {
    let mut watched = Watched::new(writes);
    let mut pending: Vec<u8> = Vec::new();
    while watched.distinct < writes && !watched.expired {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let chunk = match chunk {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                watched.ended = Some("the server closed the stream".into());
                break;
            }
            Err(e) => {
                watched.ended = Some(format!("{e:#}"));
                break;
            }
        };
        let now = epoch.elapsed().as_micros();
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end];
            start += end + 1;
            if line.ends_with(br#""type":"ERROR"}"#) {
                watched.expired = true;
                watched.ended = Some(String::from_utf8_lossy(line).chars().take(300).collect());
                break;
            }
            let Some((seq, sent)) = probe(line) else { continue };
            watched.saw(seq, sent, now);
        }
        pending.drain(..start);
    }
    watched
}

/// `(sequence number, microseconds since the epoch it was sent)` from a watch event line.
fn probe(line: &[u8]) -> Option<(usize, u128)> {
    const FIELD: &[u8] = br#""probe":""#;
    let at = find(line, FIELD)? + FIELD.len();
    let len = line[at..].iter().position(|&b| b == b'"')?;
    let (seq, sent) = std::str::from_utf8(&line[at..at + len]).ok()?.split_once('.')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

/// The first `"resourceVersion":"N"` in a response (the object's own, in metadata).
fn resource_version(body: &[u8]) -> anyhow::Result<i64> {
    const FIELD: &[u8] = br#""resourceVersion":""#;
    let at = find(body, FIELD).context("no resourceVersion in the response")? + FIELD.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])?.parse().context("resourceVersion is not a number")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    let (mut count, mut at) = (0, 0);
    while let Some(found) = find(&haystack[at..], needle) {
        count += 1;
        at += found + needle.len();
    }
    count
}

/// The median of each figure over rounds; the watch's missed and expired counts are the
/// worst round's, since one miss matters.
fn median(rounds: &[Figures]) -> Figures {
    let worst = |get: fn(&Figures) -> f64| rounds.iter().map(get).fold(f64::NAN, f64::max);
    let mut median = Figures::from_fn(|get| median_of(rounds.iter().map(get).collect()));
    median.slow.missing = worst(|f| f.slow.missing);
    median.slow.expired = worst(|f| f.slow.expired);
    median.fast.missing = worst(|f| f.fast.missing);
    median.fast.expired = worst(|f| f.fast.expired);
    median
}

/// The median; the mean of the middle two for an even count.
fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Print the table and the targets.
fn report(options: &ApiBenchOptions, embedded: &Column, etcd: &Column) {
    let cell = |value: f64, decimals: usize| {
        if value.is_nan() {
            "-".to_string()
        } else {
            format!("{value:.decimals$}")
        }
    };
    println!();
    println!(
        "{:<50} {:>11} {:>10} {:>9} {:>11} {:>10} {:>9} {:>10}",
        format!("figure (median of {} rounds)", options.rounds.max(1)),
        "embedded",
        "store",
        "api/store",
        "etcd",
        "store",
        "api/store",
        "target"
    );
    type Row = (&'static str, fn(&Figures) -> f64, usize, &'static str);
    let rows: [Row; 28] = [
        ("creates/s, 64 clients", |f| f.creates, 0, ">= 15000"),
        ("  server CPU per create, µs", |f| f.create_cpu_us, 1, ""),
        ("  create p50, ms", |f| f.create_p50, 2, ""),
        ("  create p99, ms", |f| f.create_p99, 2, ""),
        ("open-loop creates/s (half the API's peak offered)", |f| f.half_rate, 0, ""),
        ("  create p50 at that rate, ms", |f| f.half_p50, 2, ""),
        ("  create p99 at that rate, ms", |f| f.half_p99, 2, "<= 5"),
        ("gets/s, 64 clients", |f| f.gets, 0, ">= 30000"),
        ("  get p50, ms", |f| f.get_p50, 2, ""),
        ("  get p99, ms", |f| f.get_p99, 2, ""),
        ("updates/s (PUT with resourceVersion), 64 clients", |f| f.updates, 0, ""),
        ("  update p50, ms", |f| f.update_p50, 2, ""),
        ("  update p99, ms", |f| f.update_p99, 2, ""),
        ("list of 1k objects p50, ms", |f| f.list_1k_p50, 1, ""),
        ("list of 1k objects p99, ms", |f| f.list_1k_p99, 1, ""),
        ("list of 10k objects p50, ms", |f| f.list_10k_p50, 1, ""),
        ("list of 10k objects p99, ms", |f| f.list_10k_p99, 1, ""),
        ("watch at 100 writes/s: writes/s achieved", |f| f.slow.writes, 0, ""),
        ("  events missed (worst round)", |f| f.slow.missing, 0, "0"),
        ("  watchers expired, 410 (worst round)", |f| f.slow.expired, 0, "0"),
        ("  delivery p50, ms", |f| f.slow.p50, 1, ""),
        ("  delivery p99, ms", |f| f.slow.p99, 1, "<= 50"),
        ("  server CPU per event delivered, µs", |f| f.slow.cpu_us, 2, ""),
        ("watch at 1000 writes/s: writes/s achieved", |f| f.fast.writes, 0, ""),
        ("  events missed (worst round)", |f| f.fast.missing, 0, ""),
        ("  watchers expired, 410 (worst round)", |f| f.fast.expired, 0, ""),
        ("  delivery p99, ms", |f| f.fast.p99, 1, ""),
        ("  server CPU per event delivered, µs", |f| f.fast.cpu_us, 2, ""),
    ];
    for (name, get, decimals, target) in rows {
        println!(
            "{name:<50} {:>11} {:>10} {:>9} {:>11} {:>10} {:>9} {target:>10}",
            cell(get(&embedded.api), decimals),
            cell(get(&embedded.store), decimals),
            cell(get(&embedded.ratio), 2),
            cell(get(&etcd.api), decimals),
            cell(get(&etcd.store), decimals),
            cell(get(&etcd.ratio), 2),
        );
    }
    println!(
        "(api/store is the median of per-round ratios; the store runs the open loop at the API's rate; the watches \
         write {:?}/s for {:.1} s to {} watchers, and the etcd store column's watch rows are the same watchers \
         straight on etcd through etcd-client, with etcd's whole CPU; server CPU counts the server's threads \
         only, not the clients' in the same process nor etcd's)",
        WATCH_WRITES_PER_SECOND, options.seconds, options.watchers
    );
    println!();
    let verdict = |column: &Column, ok: fn(&Figures) -> bool| {
        if column.api.creates.is_nan() {
            "-"
        } else if ok(&column.api) {
            "met"
        } else {
            "MISSED"
        }
    };
    type Goal = (&'static str, fn(&Figures) -> String, fn(&Figures) -> bool);
    let targets: [Goal; 4] = [
        (">= 15k creates/s through the API", |f| format!("{:.0}", f.creates), |f| f.creates >= 15_000.0),
        (">= 30k gets/s through the API", |f| format!("{:.0}", f.gets), |f| f.gets >= 30_000.0),
        (
            "create p99 <= 5 ms at half the peak rate",
            |f| format!("{:.2} ms at {:.0}/s", f.half_p99, f.half_rate),
            |f| f.half_p99 <= 5.0,
        ),
        (
            "watch at 100 writes/s: p99 <= 50 ms, every event delivered",
            |f| format!("{:.1} ms, missing={:.0}, expired={:.0}", f.slow.p99, f.slow.missing, f.slow.expired),
            |f| f.slow.p99 <= 50.0 && f.slow.missing == 0.0 && f.slow.expired == 0.0,
        ),
    ];
    println!("targets (this machine):");
    for (name, shown, ok) in targets {
        let etcd_part = if etcd.api.creates.is_nan() {
            String::new()
        } else {
            format!("; etcd {} -> {}", shown(&etcd.api), verdict(etcd, ok))
        };
        println!("  {name}: embedded {} -> {}{etcd_part}", shown(&embedded.api), verdict(embedded, ok));
    }
}
