//! Per-plugin Prometheus metrics: calls (by outcome), latency, denials, traps, timeouts,
//! out-of-memory ends, loads and failed loads, and shadows' disagreements.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

use super::Phase;

/// One plugin's hot-path series, looked up once when it loads (a labelled lookup hashes
/// every label on every call).
#[derive(Clone)]
pub struct PluginSeries {
    latency: [Histogram; 2],
    allowed: [IntCounter; 2],
    denied: [IntCounter; 2],
}

impl PluginSeries {
    fn index(phase: Phase) -> usize {
        match phase {
            Phase::Mutate => 0,
            Phase::Validate => 1,
        }
    }

    pub fn observe(&self, phase: Phase, seconds: f64, allowed: bool) {
        let i = Self::index(phase);
        self.latency[i].observe(seconds);
        if allowed { &self.allowed[i] } else { &self.denied[i] }.inc();
    }

    pub fn observe_latency(&self, phase: Phase, seconds: f64) {
        self.latency[Self::index(phase)].observe(seconds);
    }
}

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

    /// The series of plugin `name`'s calls that succeed.
    pub fn series(&self, name: &str) -> PluginSeries {
        let functions = ["mutate", "validate"];
        PluginSeries {
            latency: functions.map(|f| self.latency.with_label_values(&[name, f])),
            allowed: functions.map(|f| self.calls.with_label_values(&[name, f, "allow"])),
            denied: functions.map(|f| self.calls.with_label_values(&[name, f, "deny"])),
        }
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
