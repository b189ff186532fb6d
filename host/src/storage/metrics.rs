//! Storage figures for `/metrics`: operation latency, commit batch sizes, watch counts.
//! Owns only the metric handles; the backends record into them.

use std::time::Instant;

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Handles to the storage metrics. Cheap to clone; every clone records into the same series.
#[derive(Clone)]
pub struct StorageMetrics {
    op_seconds: HistogramVec,
    commit_batch_size: Histogram,
    watchers: IntGaugeVec,
    watch_events: IntCounterVec,
}

impl StorageMetrics {
    /// Create the metrics and register them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self::unregistered();
        registry.register(Box::new(metrics.op_seconds.clone()))?;
        registry.register(Box::new(metrics.commit_batch_size.clone()))?;
        registry.register(Box::new(metrics.watchers.clone()))?;
        registry.register(Box::new(metrics.watch_events.clone()))?;
        Ok(metrics)
    }

    /// Metrics that record but are not exported (tools and tests).
    pub fn unregistered() -> Self {
        #[allow(clippy::expect_used)] // constant, valid metric definitions
        let build = || -> prometheus::Result<Self> {
            Ok(Self {
                op_seconds: HistogramVec::new(
                    HistogramOpts::new(
                        "wasmkube_storage_operation_duration_seconds",
                        "Latency of storage operations, by backend, operation and result.",
                    )
                    .buckets(exponential_buckets(0.000_05, 2.0, 18)?),
                    &["backend", "operation", "result"],
                )?,
                commit_batch_size: Histogram::with_opts(
                    HistogramOpts::new(
                        "wasmkube_storage_commit_batch_size",
                        "Writes made durable by one fsync of the embedded store (group commit).",
                    )
                    .buckets(exponential_buckets(1.0, 2.0, 12)?),
                )?,
                watchers: IntGaugeVec::new(
                    Opts::new("wasmkube_storage_watchers", "Open watches, by layer."),
                    &["layer"],
                )?,
                watch_events: IntCounterVec::new(
                    Opts::new("wasmkube_storage_watch_events_total", "Watch events delivered to watchers, by layer."),
                    &["layer"],
                )?,
            })
        };
        let metrics = build().expect("storage metric definitions are valid");
        // Export every layer's series from the start, at zero.
        for layer in ["store", "cache"] {
            metrics.watchers.with_label_values(&[layer]);
            metrics.watch_events.with_label_values(&[layer]);
        }
        metrics
    }

    /// Time one operation; the guard records when [`OpTimer::finish`] is called.
    pub(crate) fn start(&self, backend: &'static str, operation: &'static str) -> OpTimer<'_> {
        OpTimer { metrics: self, backend, operation, start: Instant::now() }
    }

    pub(crate) fn observe_batch(&self, writes: usize) {
        self.commit_batch_size.observe(writes as f64);
    }

    /// Count an open watch on `layer` ("store" or "cache") until the guard drops.
    pub(crate) fn watcher(&self, layer: &'static str) -> WatcherGuard {
        let gauge = self.watchers.with_label_values(&[layer]);
        gauge.inc();
        WatcherGuard { gauge }
    }

    pub(crate) fn delivered(&self, layer: &'static str, events: usize) {
        self.watch_events.with_label_values(&[layer]).inc_by(events as u64);
    }
}

pub(crate) struct OpTimer<'a> {
    metrics: &'a StorageMetrics,
    backend: &'static str,
    operation: &'static str,
    start: Instant,
}

impl OpTimer<'_> {
    pub(crate) fn finish<T, E>(self, result: Result<T, E>) -> Result<T, E> {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .op_seconds
            .with_label_values(&[self.backend, self.operation, outcome])
            .observe(self.start.elapsed().as_secs_f64());
        result
    }
}

pub(crate) struct WatcherGuard {
    gauge: prometheus::IntGauge,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
