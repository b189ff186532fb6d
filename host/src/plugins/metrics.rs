//! Per-plugin Prometheus metrics: calls (by outcome), latency, denials, traps, timeouts,
//! out-of-memory ends, loads and failed loads, and shadows' disagreements.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

#[derive(Clone)]
pub struct PluginMetrics {
    /// plugin, function, outcome (ok | deny | trap | timeout | oom | error).
    pub calls: IntCounterVec,
    pub latency: HistogramVec,
    /// plugin, outcome (loaded | failed | unloaded).
    pub loads: IntCounterVec,
    /// plugin (a shadow), live: requests the two decided differently.
    pub disagreements: IntCounterVec,
}

impl PluginMetrics {
    /// Metrics registered in `registry`.
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.calls.clone()))?;
        registry.register(Box::new(metrics.latency.clone()))?;
        registry.register(Box::new(metrics.loads.clone()))?;
        registry.register(Box::new(metrics.disagreements.clone()))?;
        Ok(metrics)
    }

    /// Metrics no registry reports (tests, tools).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            calls: IntCounterVec::new(
                Opts::new("wasmkube_plugin_calls_total", "Plugin calls by plugin, function and outcome."),
                &["plugin", "function", "outcome"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new("wasmkube_plugin_call_duration_seconds", "Latency of plugin calls.")
                    .buckets(prometheus::exponential_buckets(0.000_005, 2.0, 20)?),
                &["plugin", "function"],
            )?,
            loads: IntCounterVec::new(
                Opts::new("wasmkube_plugin_loads_total", "Plugin loads, reloads, failed loads and unloads."),
                &["plugin", "outcome"],
            )?,
            disagreements: IntCounterVec::new(
                Opts::new(
                    "wasmkube_plugin_shadow_disagreements_total",
                    "Requests a Shadow plugin decided otherwise than the live plugin it runs beside.",
                ),
                &["plugin", "live"],
            )?,
        })
    }
}
