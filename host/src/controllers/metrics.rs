//! The controller host's metrics (work queues, reconciles, actions, leadership), shared by
//! the controller plugins' host (`manager.rs`) and the garbage collector (`gc.rs`).

/// The controller host's metrics.
#[derive(Clone)]
pub struct ControllerMetrics {
    pub(super) depth: prometheus::IntGaugeVec,
    pub(super) adds: prometheus::IntGaugeVec,
    pub(super) retries: prometheus::IntGaugeVec,
    pub(super) latency: prometheus::HistogramVec,
    pub(super) errors: prometheus::IntCounterVec,
    pub(super) actions: prometheus::IntCounterVec,
    pub(super) leading: prometheus::IntGauge,
}

impl ControllerMetrics {
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let gauge =
            |name: &str, help: &str| prometheus::IntGaugeVec::new(prometheus::Opts::new(name, help), &["controller"]);
        let metrics = Self {
            depth: gauge("wasmkube_controller_queue_depth", "Keys waiting for a worker.")?,
            adds: gauge(
                "wasmkube_controller_queue_adds",
                "Keys added to the work queue since the controller started.",
            )?,
            retries: gauge(
                "wasmkube_controller_queue_retries",
                "Keys requeued with backoff since the controller started.",
            )?,
            latency: prometheus::HistogramVec::new(
                prometheus::HistogramOpts::new(
                    "wasmkube_controller_reconcile_duration_seconds",
                    "Reconcile latency (the plugin call and its actions).",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 4.0, 10)?),
                &["controller"],
            )?,
            errors: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "wasmkube_controller_reconcile_errors_total",
                    "Reconciles that failed (the plugin's error, a failed call, or a failed action).",
                ),
                &["controller"],
            )?,
            actions: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "wasmkube_controller_actions_total",
                    "Actions controllers answered, by verb and outcome (ok, conflict, forbidden, error, shadowed).",
                ),
                &["controller", "verb", "outcome"],
            )?,
            leading: prometheus::IntGauge::new(
                "wasmkube_controller_manager_leading",
                "Whether this server holds the controller manager's Lease (and runs controllers).",
            )?,
        };
        registry.register(Box::new(metrics.depth.clone()))?;
        registry.register(Box::new(metrics.adds.clone()))?;
        registry.register(Box::new(metrics.retries.clone()))?;
        registry.register(Box::new(metrics.latency.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        registry.register(Box::new(metrics.actions.clone()))?;
        registry.register(Box::new(metrics.leading.clone()))?;
        Ok(metrics)
    }
}
