//! `wasmkube bench storage`: creates/s with 1 and 64 writers, gets/s, a 10k-key range,
//! watch events/s delivered to 100 watchers and peak RSS — for the embedded store, the
//! etcd backend and raw etcd through `etcd-client` (the baseline), in one run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::storage::cache::{CacheConfig, CacheItem, WatchCache, WatchRequest};
use crate::storage::embedded::EmbeddedStore;
use crate::storage::etcd::EtcdStore;
use crate::storage::local_etcd::LocalEtcd;
use crate::storage::{RangeRequest, StorageMetrics, Store, WatchItem};

#[derive(clap::Args, Debug)]
pub struct StorageBenchOptions {
    /// Directory for the embedded store and the local etcd (default: a temp dir). It should
    /// be on the disk you want to measure.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds per throughput figure.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// Use this etcd instead of starting one (it must be empty of /bench keys).
    #[arg(long)]
    etcd_endpoint: Option<String>,
    /// Rounds per target; each figure printed is the median over them. The etcd backend
    /// and raw etcd alternate which runs first, so an even number is fairest.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Measure only the embedded store (quick iteration; no baseline).
    #[arg(long)]
    embedded_only: bool,
}

/// The few operations measured, on a wasmkube store or on raw etcd.
#[async_trait]
trait Target: Send + Sync {
    async fn create(&self, key: String, value: Bytes) -> anyhow::Result<()>;
    async fn get(&self, key: String) -> anyhow::Result<()>;
    /// Every key under `prefix`; returns how many.
    async fn range(&self, prefix: &str) -> anyhow::Result<usize>;
    /// Watch `prefix` from the next write; the stream yields event counts.
    async fn watch(&self, prefix: &str) -> anyhow::Result<futures::stream::BoxStream<'static, anyhow::Result<usize>>>;
}

struct StoreTarget(Arc<dyn Store>);

#[async_trait]
impl Target for StoreTarget {
    async fn create(&self, key: String, value: Bytes) -> anyhow::Result<()> {
        self.0.create(key.into(), value).await?;
        Ok(())
    }
    async fn get(&self, key: String) -> anyhow::Result<()> {
        self.0.get(key.into()).await?.0.context("key missing")?;
        Ok(())
    }
    async fn range(&self, prefix: &str) -> anyhow::Result<usize> {
        let request = RangeRequest { prefix: Bytes::copy_from_slice(prefix.as_bytes()), ..Default::default() };
        Ok(self.0.range(request).await?.kvs.len())
    }
    async fn watch(&self, prefix: &str) -> anyhow::Result<futures::stream::BoxStream<'static, anyhow::Result<usize>>> {
        let stream = self.0.watch(Bytes::copy_from_slice(prefix.as_bytes()), 0).await?;
        Ok(stream
            .map(|item| match item {
                Ok(WatchItem::Events(events)) => Ok(events.len()),
                Ok(WatchItem::Progress(_)) => Ok(0),
                Err(e) => Err(e.into()),
            })
            .boxed())
    }
}

/// A wasmkube store whose watches go through a [`WatchCache`], as the API server's do.
struct CachedStore {
    store: StoreTarget,
    cache: WatchCache,
}

#[async_trait]
impl Target for CachedStore {
    async fn create(&self, key: String, value: Bytes) -> anyhow::Result<()> {
        self.store.create(key, value).await
    }
    async fn get(&self, key: String) -> anyhow::Result<()> {
        self.store.get(key).await
    }
    async fn range(&self, prefix: &str) -> anyhow::Result<usize> {
        self.store.range(prefix).await
    }
    async fn watch(&self, prefix: &str) -> anyhow::Result<futures::stream::BoxStream<'static, anyhow::Result<usize>>> {
        let request = WatchRequest {
            since: 0,
            key_prefix: Some(Bytes::copy_from_slice(prefix.as_bytes())),
            filter: None,
            bookmarks: false,
        };
        let stream = self.cache.watch(request).await?;
        Ok(stream
            .map(|item| match item {
                Ok(CacheItem::Event(_)) => Ok(1),
                Ok(CacheItem::Progress(_)) => Ok(0),
                Err(e) => Err(e.into()),
            })
            .boxed())
    }
}

/// etcd through etcd-client with no wasmkube layer: the same requests the etcd backend makes.
struct RawEtcd(etcd_client::Client);

#[async_trait]
impl Target for RawEtcd {
    async fn create(&self, key: String, value: Bytes) -> anyhow::Result<()> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self.0.kv_client().txn(txn).await?;
        anyhow::ensure!(response.succeeded(), "key exists");
        Ok(())
    }
    async fn get(&self, key: String) -> anyhow::Result<()> {
        let response = self.0.kv_client().get(key, None).await?;
        anyhow::ensure!(!response.kvs().is_empty(), "key missing");
        Ok(())
    }
    async fn range(&self, prefix: &str) -> anyhow::Result<usize> {
        let options = etcd_client::GetOptions::new().with_prefix();
        let mut kv = self.0.kv_client().max_decoding_message_size(256 << 20);
        Ok(kv.get(prefix, Some(options)).await?.kvs().len())
    }
    async fn watch(&self, prefix: &str) -> anyhow::Result<futures::stream::BoxStream<'static, anyhow::Result<usize>>> {
        let options = etcd_client::WatchOptions::new().with_prefix().with_prev_key();
        let stream = self.0.watch_client().watch(prefix, Some(options)).await?;
        Ok(futures::stream::unfold(stream, |mut stream| async move {
            match stream.message().await {
                Ok(Some(response)) => Some((Ok(response.events().len()), stream)),
                Ok(None) => None,
                Err(e) => Some((Err(e.into()), stream)),
            }
        })
        .boxed())
    }
}

/// One column of the report.
#[derive(Default, Clone)]
struct Figures {
    creates_1: f64,
    creates_64: f64,
    gets: f64,
    range_10k_ms: f64,
    watch_events: f64,
    /// Through the watch cache (wasmkube backends only).
    watch_events_cache: f64,
    peak_rss_mib: f64,
}

pub async fn run(options: StorageBenchOptions) -> anyhow::Result<()> {
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .context("creating a scratch directory")?;
    let value = Bytes::from(vec![b'v'; options.value_bytes]);
    let seconds = Duration::from_secs_f64(options.seconds);
    println!(
        "wasmkube bench storage: {}-byte values, {:.1} s per throughput figure, median of {} rounds, scratch dir {}",
        options.value_bytes,
        options.seconds,
        options.rounds.max(1),
        scratch.path().display()
    );

    // Rounds, with the etcd backend and raw etcd alternating, so drift in a shared machine
    // or a growing etcd hits both alike; each figure is the median over the rounds.
    let mut embedded = Vec::new();
    {
        reset_peak_rss();
        let store = EmbeddedStore::open(&scratch.path().join("embedded"), StorageMetrics::unregistered()).await?;
        let store: Arc<dyn Store> = Arc::new(store);
        for round in 0..options.rounds.max(1) {
            let mut figures = measure("embedded", round, &StoreTarget(store.clone()), &value, seconds).await?;
            figures.watch_events_cache = cache_fanout(&store, round, &value).await?;
            figures.peak_rss_mib = peak_rss_mib();
            embedded.push(figures);
        }
        store.close().await?;
    }
    let embedded = median(&embedded);
    if options.embedded_only {
        report(&embedded, &Figures::default(), &Figures::default(), &Figures::default());
        return Ok(());
    }

    let _local;
    let endpoint = match &options.etcd_endpoint {
        Some(endpoint) => endpoint.clone(),
        None => {
            _local = LocalEtcd::start(scratch.path(), 0).await?;
            _local.endpoint().to_string()
        }
    };
    let store =
        EtcdStore::connect(std::slice::from_ref(&endpoint), "/wasmkube".into(), StorageMetrics::unregistered()).await?;
    let store: Arc<dyn Store> = Arc::new(store);
    let raw_target = RawEtcd(
        etcd_client::Client::connect([endpoint.as_str()], Some(crate::storage::etcd::connect_options())).await?,
    );
    let (mut etcd, mut raw) = (Vec::new(), Vec::new());
    for round in 0..options.rounds.max(1) {
        // Alternate which goes first, so a drift within a round favours neither.
        for backend_turn in if round % 2 == 0 { [true, false] } else { [false, true] } {
            reset_peak_rss();
            if backend_turn {
                let mut figures = measure("etcd backend", round, &StoreTarget(store.clone()), &value, seconds).await?;
                figures.watch_events_cache = cache_fanout(&store, round, &value).await?;
                figures.peak_rss_mib = peak_rss_mib();
                etcd.push(figures);
            } else {
                let mut figures = measure("raw etcd", round, &raw_target, &value, seconds).await?;
                figures.peak_rss_mib = peak_rss_mib();
                raw.push(figures);
            }
        }
    }
    store.close().await?;
    // etcd slows down as its database grows over the rounds, so the ratio is taken per
    // round (the two runs of a round are adjacent) and then the median of those.
    let ratios = paired_ratios(&etcd, &raw);
    let (etcd, raw) = (median(&etcd), median(&raw));
    report(&embedded, &etcd, &raw, &ratios);
    Ok(())
}

/// Every figure once, under keys `/bench/<round>/...`.
async fn measure(
    name: &str,
    round: usize,
    target: &dyn Target,
    value: &Bytes,
    seconds: Duration,
) -> anyhow::Result<Figures> {
    eprintln!("-- {name}, round {round}");
    let root = format!("/bench/{round}");
    let creates_1 = creates(target, &format!("{root}/c1/"), 1, value, seconds).await?;
    let creates_64 = creates(target, &format!("{root}/c64/"), 64, value, seconds).await?;
    let gets = gets(target, &format!("{root}/c64/"), creates_64.1, 64, seconds).await?;
    let range_10k_ms = range_10k(target, &format!("{root}/range/"), value).await?;
    let watch_events = watch_fanout(target, &format!("{root}/watch/"), 100, 10_000, value).await?;
    Ok(Figures {
        creates_1: creates_1.0,
        creates_64: creates_64.0,
        gets,
        range_10k_ms,
        watch_events,
        ..Figures::default()
    })
}

/// Creates/s from `writers` concurrent writers for `seconds`; returns (rate, keys per writer written).
async fn creates(
    target: &dyn Target,
    prefix: &str,
    writers: usize,
    value: &Bytes,
    seconds: Duration,
) -> anyhow::Result<(f64, u64)> {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + seconds;
    let mut min_per_writer = u64::MAX;
    let results = futures::future::join_all((0..writers).map(|w| {
        let done = done.clone();
        async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                target.create(format!("{prefix}{w}/{n}"), value.clone()).await?;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(n)
        }
    }))
    .await;
    for result in results {
        min_per_writer = min_per_writer.min(result?);
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    eprintln!("   creates/s with {writers} writer(s): {rate:.0}");
    Ok((rate, min_per_writer))
}

async fn gets(
    target: &dyn Target,
    prefix: &str,
    per_writer: u64,
    readers: usize,
    seconds: Duration,
) -> anyhow::Result<f64> {
    let per_writer = per_writer.max(1);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + seconds;
    let results = futures::future::join_all((0..readers).map(|r| {
        let done = done.clone();
        async move {
            let mut n = r as u64;
            while Instant::now() < deadline {
                target.get(format!("{prefix}{}/{}", n % 64, (n / 64) % per_writer)).await?;
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }
    }))
    .await;
    for result in results {
        result?;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    eprintln!("   gets/s with {readers} readers: {rate:.0}");
    Ok(rate)
}

/// Median time of five full ranges over 10,000 keys.
async fn range_10k(target: &dyn Target, prefix: &str, value: &Bytes) -> anyhow::Result<f64> {
    let results = futures::future::join_all((0..64).map(|w| async move {
        for n in (w..10_000).step_by(64) {
            target.create(format!("{prefix}{n:05}"), value.clone()).await?;
        }
        anyhow::Ok(())
    }))
    .await;
    for result in results {
        result?;
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let count = target.range(prefix).await?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(count == 10_000, "range returned {count} keys");
    }
    times.sort_by(f64::total_cmp);
    eprintln!("   10k-key range: {:.1} ms (median of 5)", times[2]);
    Ok(times[2])
}

/// `watchers` watch one prefix while 64 writers create `events` keys under it; the figure
/// is events delivered to all watchers per second, from the first write to the last delivery.
async fn watch_fanout(
    target: &dyn Target,
    prefix: &str,
    watchers: usize,
    events: usize,
    value: &Bytes,
) -> anyhow::Result<f64> {
    let mut streams = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        streams.push(target.watch(prefix).await?);
    }
    let start = Instant::now();
    let counters = streams.into_iter().map(|mut stream| {
        tokio::spawn(async move {
            let mut seen = 0usize;
            while seen < events {
                match stream.next().await {
                    Some(Ok(n)) => seen += n,
                    Some(Err(e)) => return Err(e),
                    None => anyhow::bail!("watch ended after {seen} events"),
                }
            }
            Ok(seen)
        })
    });
    let counters: Vec<_> = counters.collect();
    let writes = futures::future::join_all((0..64).map(|w| async move {
        for n in (w..events).step_by(64) {
            target.create(format!("{prefix}{n}"), value.clone()).await?;
        }
        anyhow::Ok(())
    }))
    .await;
    for write in writes {
        write?;
    }
    let written = start.elapsed();
    let mut delivered = 0usize;
    for counter in counters {
        delivered += counter.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rate = delivered as f64 / elapsed;
    eprintln!(
        "   watch: {delivered} events to {watchers} watchers in {elapsed:.2} s ({rate:.0}/s; the writes alone took {:.2} s)",
        written.as_secs_f64()
    );
    Ok(rate)
}

/// The watch figure again, with the 100 watchers on a watch cache over the store (one
/// upstream watch; each event shared by all watchers).
async fn cache_fanout(store: &Arc<dyn Store>, round: usize, value: &Bytes) -> anyhow::Result<f64> {
    let prefix = format!("/bench/{round}/cached/");
    let config = CacheConfig { watcher_buffer: 16_384, ..CacheConfig::default() };
    let cache = WatchCache::start(store.clone(), prefix.clone().into(), config, StorageMetrics::unregistered());
    tokio::time::timeout(Duration::from_secs(60), cache.wait_ready()).await.context("cache not ready")??;
    let target = CachedStore { store: StoreTarget(store.clone()), cache: cache.clone() };
    let rate = watch_fanout(&target, &prefix, 100, 10_000, value).await?;
    cache.stop();
    Ok(rate)
}

/// The median of each figure over rounds.
impl Figures {
    /// A `Figures` whose every field is `value(field getter)`.
    fn from_fn(value: impl Fn(fn(&Figures) -> f64) -> f64) -> Figures {
        Figures {
            creates_1: value(|f| f.creates_1),
            creates_64: value(|f| f.creates_64),
            gets: value(|f| f.gets),
            range_10k_ms: value(|f| f.range_10k_ms),
            watch_events: value(|f| f.watch_events),
            watch_events_cache: value(|f| f.watch_events_cache),
            peak_rss_mib: value(|f| f.peak_rss_mib),
        }
    }
}

fn median(rounds: &[Figures]) -> Figures {
    Figures {
        // Peak memory is a maximum, not a typical value.
        peak_rss_mib: rounds.iter().map(|f| f.peak_rss_mib).fold(0.0, f64::max),
        ..Figures::from_fn(|get| median_of(rounds.iter().map(get).collect()))
    }
}

/// Per figure, the median over rounds of `ours[i] / baseline[i]`.
fn paired_ratios(ours: &[Figures], baseline: &[Figures]) -> Figures {
    Figures::from_fn(|get| {
        median_of(
            ours.iter().zip(baseline).map(|(o, b)| if get(b) > 0.0 { get(o) / get(b) } else { f64::NAN }).collect(),
        )
    })
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

/// Reset the kernel's peak-RSS mark (VmHWM) so each column reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Print the table and the targets; `ratios` are the paired etcd-backend/raw-etcd ratios.
fn report(embedded: &Figures, etcd: &Figures, raw: &Figures, ratios: &Figures) {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!();
    println!(
        "{:<40} {:>12} {:>12} {:>12} {:>10}",
        "figure (median over rounds)", "embedded", "etcd", "raw etcd", "etcd/raw"
    );
    type Row = (&'static str, fn(&Figures) -> f64);
    let rows: [Row; 7] = [
        ("creates/s, 1 writer", |f| f.creates_1),
        ("creates/s, 64 writers", |f| f.creates_64),
        ("gets/s, 64 readers", |f| f.gets),
        ("range of 10k keys, ms (lower is better)", |f| f.range_10k_ms),
        ("watch events/s to 100 store watchers", |f| f.watch_events),
        ("watch events/s to 100 cache watchers", |f| f.watch_events_cache),
        ("peak RSS of the process, MiB", |f| f.peak_rss_mib),
    ];
    for (name, get) in rows {
        let (e, d, r) = (get(embedded), get(etcd), get(raw));
        println!("{name:<40} {e:>12.1} {d:>12.1} {r:>12.1} {:>10.2}", get(ratios));
    }
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("targets:");
    println!(
        "  embedded >= 50k durable creates/s with 64 writers: {:.0} ({:.1}x raw etcd) -> {}",
        embedded.creates_64,
        ratio(embedded.creates_64, raw.creates_64),
        verdict(embedded.creates_64 >= 50_000.0)
    );
    println!(
        "  embedded >= 5k creates/s with 1 writer: {:.0} -> {}",
        embedded.creates_1,
        verdict(embedded.creates_1 >= 5_000.0)
    );
    let worst = [ratios.creates_1, ratios.creates_64, ratios.gets, 1.0 / ratios.range_10k_ms, ratios.watch_events]
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    println!(
        "  etcd backend within 10% of raw etcd (paired per-round ratios, worst figure): {worst:.2} -> {}",
        verdict(worst >= 0.9)
    );
    println!(
        "  >= 500k watch events/s to 100 watchers (through the watch cache, as the API serves them): embedded {:.0}, etcd backend {:.0} -> {}",
        embedded.watch_events_cache,
        etcd.watch_events_cache,
        verdict(embedded.watch_events_cache >= 500_000.0)
    );
}
