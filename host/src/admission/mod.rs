//! The admission chain: every write passes the mutating plugins in order (their JSON
//! patches applied), then — after the registry's schema validation — the validating
//! plugins. A request carries what a Kubernetes AdmissionReview carries.
//!
//! - A denial is the plugin's message with its code (403 unless it says otherwise).
//! - A failed call (trap, timeout, out of memory) is decided by the plugin's failure
//!   policy: `Fail` refuses the request (500), `Ignore` lets it pass.
//! - `Audit` mode records every decision (log line, metric) and never refuses or patches.
//! - `Shadow` mode: a candidate runs on every request its live plugin (`shadowOf`) runs
//!   on, in the background once the live plugin has decided (so it adds no latency and
//!   cannot fail a request); a different decision is a disagreement: a metric, a log line
//!   and one of the last few kept for the candidate's status.
//! - Every decision names the plugin and the digest of the version that made it (the
//!   log line, and [`Admitted::decisions`] for the API's response header).
//! - Plugins never gate the objects that manage them (`wasmkube.io` Plugins) or the
//!   control plane's heartbeats (Leases), so a broken plugin can always be removed.
//!
//! Knows objects as JSON and plugins; nothing of HTTP or storage.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use crate::auth::UserInfo;
use crate::plugins::{
    self, AdmissionRequest, CallError, Disagreement, FailurePolicy, LoadedPlugin, Mode, Operation, Phase, PluginSet,
    Verdict,
};

/// What a request is, for the plugins (AdmissionReview's request, without the objects).
#[derive(Clone, Debug)]
pub struct Attributes {
    pub operation: Operation,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub user: UserInfo,
    pub dry_run: bool,
}

impl Attributes {
    fn operation_name(&self) -> &'static str {
        match self.operation {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// A request the chain let through: warnings for the client, and who decided.
#[derive(Debug, Default)]
pub struct Admitted {
    pub warnings: Vec<String>,
    /// (plugin, digest) of every plugin that decided, in order.
    pub decisions: Vec<(String, String)>,
}

impl Admitted {
    pub fn merge(&mut self, other: Admitted) {
        self.warnings.extend(other.warnings);
        self.decisions.extend(other.decisions);
    }
}

/// A request the chain refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    /// The HTTP code (403, or what the plugin said; 500 when a plugin failed).
    pub code: u16,
    pub message: String,
    pub plugin: String,
    pub digest: String,
}

/// The chain over a set of plugins.
pub struct Chain {
    plugins: Arc<PluginSet>,
}

/// Kinds no plugin gates: the plugins' own objects and the control plane's Leases.
pub fn exempt(group: &str, resource: &str) -> bool {
    group == "wasmkube.io" || (group == "coordination.k8s.io" && resource == "leases")
}

impl Chain {
    pub fn new(plugins: Arc<PluginSet>) -> Self {
        Self { plugins }
    }

    /// Whether any plugin would see this request (saves building one when none would).
    pub fn wants(&self, attributes: &Attributes, phase: Phase) -> bool {
        !exempt(&attributes.group, &attributes.resource)
            && (self.plugins.snapshot().iter().any(|p| applies(&p.manifest, attributes, phase))
                || self.plugins.unavailable().iter().any(|u| applies(&u.manifest, attributes, phase)))
    }

    /// Refuse the request if a plugin that fails closed would decide it but cannot run.
    fn refuse_if_unavailable(&self, attributes: &Attributes, phase: Phase) -> Result<(), Denied> {
        let unavailable = self.plugins.unavailable();
        match unavailable.iter().find(|u| applies(&u.manifest, attributes, phase)) {
            None => Ok(()),
            Some(plugin) => {
                let name = plugin.manifest.name.as_str();
                tracing::warn!(plugin = name, function = phase_name(phase), request = %format!("{} {}", attributes.operation_name(), target_name(attributes)), "admission plugin not loaded; failing closed");
                Err(Denied {
                    code: 500,
                    message: format!(
                        "Internal error occurred: plugin {name:?} failed: it is not loaded ({}); its failurePolicy is Fail",
                        plugin.why
                    ),
                    plugin: name.to_string(),
                    digest: String::new(),
                })
            }
        }
    }
}

/// Whether the plugin of `manifest` decides this request itself (a shadow only runs
/// beside its live one).
fn applies(manifest: &plugins::Manifest, attributes: &Attributes, phase: Phase) -> bool {
    !matches!(manifest.mode, Mode::Shadow { .. })
        && manifest.phases.contains(&phase)
        && manifest.applies_to(
            &attributes.group,
            &attributes.resource,
            attributes.subresource.as_deref(),
            attributes.operation_name(),
        )
}

impl Chain {
    fn request(
        attributes: &Attributes,
        object: Option<&Map<String, Value>>,
        old: Option<&Map<String, Value>>,
    ) -> AdmissionRequest {
        let text = |o: Option<&Map<String, Value>>| o.map(|o| serde_json::to_string(o).unwrap_or_default());
        AdmissionRequest {
            uid: uuid::Uuid::new_v4().to_string(),
            kind: plugins_kind(attributes),
            resource: plugins_resource(attributes),
            sub_resource: attributes.subresource.clone(),
            name: attributes.name.clone(),
            namespace: attributes.namespace.clone(),
            operation: attributes.operation,
            user_info: plugins::PluginUser {
                username: attributes.user.username.clone(),
                uid: attributes.user.uid.clone(),
                groups: attributes.user.groups.clone(),
            },
            object: text(object),
            old_object: text(old),
            dry_run: attributes.dry_run,
        }
    }

    /// Run the mutating plugins over `object` (changed in place by their patches).
    pub async fn mutate(
        &self,
        attributes: &Attributes,
        object: &mut Map<String, Value>,
        old: Option<&Map<String, Value>>,
    ) -> Result<Admitted, Denied> {
        let mut admitted = Admitted::default();
        if exempt(&attributes.group, &attributes.resource) {
            return Ok(admitted);
        }
        self.refuse_if_unavailable(attributes, Phase::Mutate)?;
        let plugins = self.plugins.snapshot();
        // One request for the phase: the object is serialized again only after a patch.
        let mut request: Option<AdmissionRequest> = None;
        for plugin in plugins.iter().filter(|p| applies(&p.manifest, attributes, Phase::Mutate)) {
            let request = request.get_or_insert_with(|| Self::request(attributes, Some(object), old));
            let started = Instant::now();
            let result = plugin.module.mutate(request).await;
            self.shadow(&plugins, plugin, Phase::Mutate, attributes, request, &result);
            let decided = self.decide(plugin, Phase::Mutate, attributes, result, started)?;
            if let Some(response) = decided {
                if let Some(patch) = response.patch.filter(|_| plugin.manifest.mode == Mode::Enforce) {
                    apply_patch(object, &patch).map_err(|why| Denied {
                        code: 500,
                        message: format!(
                            "plugin {:?} answered with a patch that cannot be applied: {why}",
                            plugin.manifest.name
                        ),
                        plugin: plugin.manifest.name.clone(),
                        digest: plugin.module.digest.clone(),
                    })?;
                    request.object = Some(serde_json::to_string(object).unwrap_or_default());
                }
                admitted.merge(Admitted {
                    warnings: response.warnings,
                    decisions: vec![(plugin.manifest.name.clone(), plugin.module.digest.clone())],
                });
            }
        }
        Ok(admitted)
    }

    /// Run the validating plugins over the object as it will be stored (`None` for a delete).
    pub async fn validate(
        &self,
        attributes: &Attributes,
        object: Option<&Map<String, Value>>,
        old: Option<&Map<String, Value>>,
    ) -> Result<Admitted, Denied> {
        let mut admitted = Admitted::default();
        if exempt(&attributes.group, &attributes.resource) {
            return Ok(admitted);
        }
        self.refuse_if_unavailable(attributes, Phase::Validate)?;
        let plugins = self.plugins.snapshot();
        let mut request: Option<AdmissionRequest> = None;
        for plugin in plugins.iter().filter(|p| applies(&p.manifest, attributes, Phase::Validate)) {
            let request = request.get_or_insert_with(|| Self::request(attributes, object, old));
            let started = Instant::now();
            let result = plugin.module.validate(request).await;
            self.shadow(&plugins, plugin, Phase::Validate, attributes, request, &result);
            if let Some(response) = self.decide(plugin, Phase::Validate, attributes, result, started)? {
                admitted.merge(Admitted {
                    warnings: response.warnings,
                    decisions: vec![(plugin.manifest.name.clone(), plugin.module.digest.clone())],
                });
            }
        }
        Ok(admitted)
    }

    /// Run the shadows of `live` (in `plugins`) on `request` in the background and compare
    /// what they decide with what `live` did (`result`).
    fn shadow(
        &self,
        plugins: &[Arc<LoadedPlugin>],
        live: &LoadedPlugin,
        phase: Phase,
        attributes: &Attributes,
        request: &AdmissionRequest,
        result: &Result<plugins::AdmissionResponse, CallError>,
    ) {
        let mut shadows = plugins
            .iter()
            .filter(|p| matches!(&p.manifest.mode, Mode::Shadow { of } if *of == live.manifest.name))
            .filter(|p| p.manifest.phases.contains(&phase))
            .peekable();
        if shadows.peek().is_none() {
            return;
        }
        let live_verdict = verdict(result);
        let target = format!("{} {}", attributes.operation_name(), target_name(attributes));
        let function = phase_name(phase);
        for shadow in shadows {
            let Some(slot) = shadow.activity.enter_shadow() else {
                tracing::debug!(plugin = %shadow.manifest.name, "shadow busy: this request goes without its opinion");
                continue;
            };
            let (shadow, set, request) = (shadow.clone(), self.plugins.clone(), request.clone());
            let (live_name, live_digest) = (live.manifest.name.clone(), live.module.digest.clone());
            let (live_verdict, target) = (live_verdict.clone(), target.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let started = Instant::now();
                let result = match phase {
                    Phase::Mutate => shadow.module.mutate(&request).await,
                    Phase::Validate => shadow.module.validate(&request).await,
                };
                let name = shadow.manifest.name.as_str();
                let metrics = set.metrics();
                let seconds = started.elapsed().as_secs_f64();
                match &result {
                    Ok(response) => shadow.series.observe(phase, seconds, response.allowed),
                    Err(e) => {
                        shadow.series.observe_latency(phase, seconds);
                        metrics.calls.with_label_values(&[name, function, e.outcome()]).inc();
                    }
                }
                shadow.activity.record(result.as_ref().ok().map(|r| r.allowed));
                let shadow_verdict = verdict(&result);
                if shadow_verdict.agrees_with(&live_verdict) {
                    return;
                }
                metrics.disagreements.with_label_values(&[name, live_name.as_str()]).inc();
                tracing::info!(
                    plugin = name, digest = %shadow.module.digest, live = %live_name, live_digest = %live_digest,
                    function, request = %target, live_verdict = ?live_verdict, shadow_verdict = ?shadow_verdict,
                    "shadow plugin disagrees with the live one"
                );
                shadow.activity.disagreed(Disagreement {
                    at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                    request: target,
                    function,
                    live: live_verdict,
                    live_digest,
                    shadow: shadow_verdict,
                    shadow_digest: shadow.module.digest.clone(),
                });
            });
        }
    }

    /// Turn one call's result into the chain's decision: a refusal (enforced), or the
    /// response to go on with (None: a failed call its policy ignores).
    fn decide(
        &self,
        plugin: &LoadedPlugin,
        phase: Phase,
        attributes: &Attributes,
        result: Result<plugins::AdmissionResponse, plugins::CallError>,
        started: Instant,
    ) -> Result<Option<plugins::AdmissionResponse>, Denied> {
        let name = plugin.manifest.name.as_str();
        let digest = plugin.module.digest.as_str();
        let function = phase_name(phase);
        let enforce = plugin.manifest.mode == Mode::Enforce;
        plugin.activity.record(result.as_ref().ok().map(|r| r.allowed));
        let target = || format!("{} {}", attributes.operation_name(), target_name(attributes));
        match result {
            Ok(response) => {
                plugin.series.observe(phase, started.elapsed().as_secs_f64(), response.allowed);
                // The audit trail: a refusal at info, the (many) admissions at debug.
                if response.allowed {
                    tracing::debug!(plugin = name, digest, function, request = %target(), enforce, "admission: allowed");
                } else {
                    tracing::info!(plugin = name, digest, function, request = %target(), enforce, message = response.message.as_deref().unwrap_or_default(), "admission: denied");
                }
                if !response.allowed && enforce {
                    let message = response.message.clone().unwrap_or_else(|| "denied".into());
                    return Err(Denied {
                        code: response.code.filter(|c| (400..600).contains(c)).unwrap_or(403),
                        message: format!("plugin {name:?} denied the request: {message}"),
                        plugin: name.to_string(),
                        digest: digest.to_string(),
                    });
                }
                Ok(Some(response))
            }
            Err(error) => {
                plugin.series.observe_latency(phase, started.elapsed().as_secs_f64());
                self.plugins.metrics().calls.with_label_values(&[name, function, error.outcome()]).inc();
                tracing::warn!(plugin = name, digest, function, request = %target(), error = %error, policy = ?plugin.manifest.failure_policy, "admission plugin failed");
                match (plugin.manifest.failure_policy, enforce) {
                    (FailurePolicy::Fail, true) => Err(Denied {
                        code: 500,
                        message: format!("Internal error occurred: plugin {name:?} failed: {error}"),
                        plugin: name.to_string(),
                        digest: digest.to_string(),
                    }),
                    _ => Ok(None),
                }
            }
        }
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Mutate => "mutate",
        Phase::Validate => "validate",
    }
}

/// What a call decided, to count it and to compare a shadow with its live plugin.
fn verdict(result: &Result<plugins::AdmissionResponse, CallError>) -> Verdict {
    match result {
        Ok(response) if response.allowed => Verdict::Allowed { patch: response.patch.clone() },
        Ok(response) => Verdict::Denied {
            code: response.code.filter(|c| (400..600).contains(c)).unwrap_or(403),
            message: response.message.clone().unwrap_or_default(),
        },
        Err(error) => Verdict::Failed(error.to_string()),
    }
}

/// `namespace/name`, or `name` for a cluster-scoped object.
fn target_name(attributes: &Attributes) -> String {
    let resource = match &attributes.subresource {
        Some(sub) => format!("{}/{sub}", attributes.resource),
        None => attributes.resource.clone(),
    };
    match &attributes.namespace {
        Some(ns) => format!("{resource} {ns}/{}", attributes.name),
        None => format!("{resource} {}", attributes.name),
    }
}

fn plugins_kind(attributes: &Attributes) -> plugins::GroupVersionKind {
    plugins::GroupVersionKind {
        group: attributes.group.clone(),
        version: attributes.version.clone(),
        kind: attributes.kind.clone(),
    }
}

fn plugins_resource(attributes: &Attributes) -> plugins::GroupVersionResource {
    plugins::GroupVersionResource {
        group: attributes.group.clone(),
        version: attributes.version.clone(),
        resource: attributes.resource.clone(),
    }
}

/// Apply a plugin's RFC 6902 patch (JSON text) to `object`.
fn apply_patch(object: &mut Map<String, Value>, patch: &str) -> Result<(), String> {
    let patch: json_patch::Patch = serde_json::from_str(patch).map_err(|e| format!("not a JSON patch: {e}"))?;
    let mut document = Value::Object(std::mem::take(object));
    let result = json_patch::patch(&mut document, &patch).map_err(|e| e.to_string());
    match document {
        Value::Object(map) => *object = map,
        _ => return Err("the patch made the object something other than an object".into()),
    }
    result
}
