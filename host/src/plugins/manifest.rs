//! A plugin's manifest: a `Plugin` object (`wasmkube.io/v1alpha1`), from a file in the
//! plugin folder (YAML or JSON). It names the world (`kind`), the module, config,
//! capabilities, timeout, failure policy, mode and order; for admission, the phases and
//! the requests it sees (`rules`, as in a webhook configuration).
//!
//! ```yaml
//! apiVersion: wasmkube.io/v1alpha1
//! kind: Plugin
//! metadata: {name: pod-security}
//! spec:
//!   kind: admission
//!   module: pod_security.wasm        # relative to the manifest, or absolute
//!   phases: [validate]               # mutate, validate
//!   rules: [{apiGroups: [""], resources: [pods], operations: [CREATE, UPDATE]}]
//!   capabilities: [{apiGroups: [""], resources: [namespaces], verbs: [get, list]}]
//!   config: {defaultLevel: baseline}
//!   timeout: 500ms
//!   memoryLimit: 64Mi
//!   failurePolicy: Fail              # or Ignore
//!   mode: Enforce                    # or Audit, or Shadow (with shadowOf: <live plugin>)
//!   order: 100
//! ```
//!
//! A controller (`kind: controller`) has no phases or rules: what it follows it answers
//! itself (`configure`), and its capabilities must grant `watch` on that and every verb
//! its actions use. `concurrency` (default 5) is how many keys it reconciles at once.
//!
//! A scheduler policy (`kind: scheduler-policy`) has a `weight` (default 1, at most 100):
//! its scores, normalized onto 0..=100, count that many times in the sum over policies.

use std::time::Duration;

use serde_json::Value;

/// Why a manifest cannot be used; every problem is listed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct ManifestError {
    pub problems: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Mutate,
    Validate,
}

/// What a failed call (trap, timeout, out of memory) does to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The request is refused.
    Fail,
    /// The request goes on as if the plugin had allowed it.
    Ignore,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Decisions apply.
    Enforce,
    /// Decisions are recorded (log, metrics), never applied.
    Audit,
    /// A candidate: it sees every request the live plugin `of` sees, beside it and off the
    /// request's path; where the two decide differently, that is recorded. Never applied.
    Shadow { of: String },
}

/// Which requests an admission plugin sees: any listed group, resource and operation
/// (`*` matches all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub operations: Vec<String>,
}

impl Rule {
    pub fn matches(&self, group: &str, resource: &str, subresource: Option<&str>, operation: &str) -> bool {
        let any = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        let resource_ok = match subresource {
            None => any(&self.resources, resource),
            // "pods" is not "pods/status": subresources are named, or matched by "*/*",
            // "pods/*" or "*/status", as in a webhook's rules.
            Some(sub) => self.resources.iter().any(|r| {
                r == "*/*"
                    || *r == format!("{resource}/{sub}")
                    || *r == format!("{resource}/*")
                    || *r == format!("*/{sub}")
            }),
        };
        any(&self.api_groups, group) && resource_ok && any(&self.operations, operation)
    }
}

/// A (group, resources, verbs) the plugin may read through `client`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

impl Capability {
    pub fn allows(&self, group: &str, resource: &str, verb: &str) -> bool {
        let any = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        any(&self.api_groups, group) && any(&self.resources, resource) && any(&self.verbs, verb)
    }
}

/// A parsed manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub name: String,
    /// The world: `admission`, `controller` or `scheduler-policy`.
    pub world: String,
    /// Where the module is (as written; the loader resolves it against the manifest's folder).
    pub module: String,
    pub phases: Vec<Phase>,
    pub rules: Vec<Rule>,
    pub capabilities: Vec<Capability>,
    /// The config as JSON text (`{}` when none).
    pub config: String,
    pub timeout: Duration,
    pub memory_limit: Option<usize>,
    pub failure_policy: FailurePolicy,
    pub mode: Mode,
    pub order: i64,
    /// A controller's reconciles at once.
    pub concurrency: usize,
    /// A scheduler policy's weight in the sum of scores.
    pub weight: i64,
}

impl Manifest {
    /// Read a manifest (YAML or JSON text).
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let value: Value = serde_yaml_ng::from_str(text)
            .map_err(|e| ManifestError { problems: vec![format!("not YAML or JSON: {e}")] })?;
        Self::from_value(&value)
    }

    pub fn from_value(value: &Value) -> Result<Self, ManifestError> {
        let mut problems = Vec::new();
        if value.get("kind").and_then(Value::as_str) != Some("Plugin") {
            problems.push("kind must be Plugin".to_string());
        }
        match value.get("apiVersion").and_then(Value::as_str) {
            Some("wasmkube.io/v1alpha1") => {}
            other => problems.push(format!("apiVersion must be wasmkube.io/v1alpha1, not {other:?}")),
        }
        let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty() {
            problems.push("metadata.name is required".into());
        }
        let spec = value.get("spec").cloned().unwrap_or_default();
        let text = |key: &str| spec.get(key).and_then(Value::as_str).map(str::to_owned);
        let world = text("kind").unwrap_or_default();
        if !matches!(world.as_str(), "admission" | "controller" | "scheduler-policy") {
            problems.push(format!(
                "spec.kind must name a plugin world (admission, controller or scheduler-policy), not {world:?}"
            ));
        }
        let module = text("module").unwrap_or_default();
        if module.is_empty() {
            problems.push("spec.module is required (a path to the component)".into());
        }
        let strings = |v: &Value, key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        };
        let mut phases = Vec::new();
        for phase in strings(&spec, "phases") {
            match phase.as_str() {
                "mutate" => phases.push(Phase::Mutate),
                "validate" => phases.push(Phase::Validate),
                other => problems.push(format!("spec.phases: {other:?} is not mutate or validate")),
            }
        }
        if phases.is_empty() {
            phases.push(Phase::Validate);
        }
        let rules = match spec.get("rules").and_then(Value::as_array) {
            Some(rules) => rules
                .iter()
                .map(|r| Rule {
                    api_groups: strings(r, "apiGroups"),
                    resources: strings(r, "resources"),
                    operations: strings(r, "operations"),
                })
                .collect(),
            None => {
                vec![Rule { api_groups: vec!["*".into()], resources: vec!["*".into()], operations: vec!["*".into()] }]
            }
        };
        let capabilities = spec
            .get("capabilities")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| Capability {
                api_groups: strings(c, "apiGroups"),
                resources: strings(c, "resources"),
                verbs: strings(c, "verbs"),
            })
            .collect();
        let config = spec.get("config").map_or_else(|| "{}".to_string(), Value::to_string);
        let timeout = match spec.get("timeout") {
            None => Duration::from_secs(1),
            Some(Value::String(t)) => humantime::parse_duration(t).unwrap_or_else(|e| {
                problems.push(format!("spec.timeout {t:?} is not a duration such as 500ms: {e}"));
                Duration::from_secs(1)
            }),
            Some(Value::Number(n)) => Duration::from_millis(n.as_u64().unwrap_or(1000)),
            Some(other) => {
                problems.push(format!("spec.timeout {other} is not a duration"));
                Duration::from_secs(1)
            }
        };
        if timeout.is_zero() || timeout > Duration::from_secs(30) {
            problems.push(format!("spec.timeout must be between 1ms and 30s, not {timeout:?}"));
        }
        let memory_limit = match spec.get("memoryLimit") {
            None => None,
            Some(Value::String(q)) => match crate::quantity::whole(q).and_then(|b| usize::try_from(b).ok()) {
                Some(bytes) => Some(bytes),
                None => {
                    problems.push(format!("spec.memoryLimit {q:?} is not a quantity such as 64Mi"));
                    None
                }
            },
            Some(Value::Number(n)) => n.as_u64().map(|n| n as usize),
            Some(other) => {
                problems.push(format!("spec.memoryLimit {other} is not a quantity"));
                None
            }
        };
        let failure_policy = match text("failurePolicy").as_deref() {
            None | Some("Fail") => FailurePolicy::Fail,
            Some("Ignore") => FailurePolicy::Ignore,
            Some(other) => {
                problems.push(format!("spec.failurePolicy must be Fail or Ignore, not {other:?}"));
                FailurePolicy::Fail
            }
        };
        let shadow_of = text("shadowOf").filter(|s| !s.is_empty());
        let mode = match (text("mode").as_deref(), shadow_of) {
            (None | Some("Enforce"), None) => Mode::Enforce,
            (Some("Audit"), None) => Mode::Audit,
            (Some("Shadow"), Some(of)) => {
                if of == name {
                    problems.push(format!(
                        "spec.shadowOf names the plugin itself ({of:?}): name the live plugin it is a candidate for"
                    ));
                }
                Mode::Shadow { of }
            }
            (Some("Shadow"), None) => {
                problems.push("spec.mode Shadow needs spec.shadowOf: the name of the live plugin to run beside".into());
                Mode::Audit
            }
            (mode @ (None | Some("Enforce" | "Audit")), Some(_)) => {
                problems.push(format!(
                    "spec.shadowOf is only for spec.mode Shadow, not {}",
                    mode.unwrap_or("Enforce (the default)")
                ));
                Mode::Audit
            }
            (Some(other), _) => {
                problems.push(format!("spec.mode must be Enforce, Audit or Shadow, not {other:?}"));
                Mode::Enforce
            }
        };
        let order = spec.get("order").and_then(Value::as_i64).unwrap_or(100);
        let concurrency = match spec.get("concurrency") {
            None => 5,
            Some(n) => match n.as_u64().filter(|n| (1..=64).contains(n)) {
                Some(n) => n as usize,
                None => {
                    problems.push(format!("spec.concurrency must be a number from 1 to 64, not {n}"));
                    5
                }
            },
        };
        let weight = match spec.get("weight") {
            None => 1,
            Some(n) => match n.as_i64().filter(|n| (1..=100).contains(n)) {
                Some(n) => n,
                None => {
                    problems.push(format!("spec.weight must be a number from 1 to 100, not {n}"));
                    1
                }
            },
        };
        if !problems.is_empty() {
            return Err(ManifestError { problems });
        }
        Ok(Self {
            name,
            world,
            module,
            phases,
            rules,
            capabilities,
            config,
            timeout,
            memory_limit,
            failure_policy,
            mode,
            order,
            concurrency,
            weight,
        })
    }

    /// Whether this plugin sees a request.
    pub fn applies_to(&self, group: &str, resource: &str, subresource: Option<&str>, operation: &str) -> bool {
        self.rules.iter().any(|r| r.matches(group, resource, subresource, operation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_every_field() {
        let manifest = Manifest::parse(
            "apiVersion: wasmkube.io/v1alpha1\nkind: Plugin\nmetadata: {name: p}\nspec:\n  kind: admission\n  module: p.wasm\n  phases: [mutate, validate]\n  rules: [{apiGroups: [''], resources: [pods], operations: [CREATE]}]\n  capabilities: [{apiGroups: [''], resources: [namespaces], verbs: [get]}]\n  config: {a: 1}\n  timeout: 250ms\n  memoryLimit: 32Mi\n  failurePolicy: Ignore\n  mode: Audit\n  order: 5\n",
        )
        .expect("valid");
        assert_eq!(manifest.phases, [Phase::Mutate, Phase::Validate]);
        assert!(manifest.applies_to("", "pods", None, "CREATE"));
        assert!(!manifest.applies_to("", "pods", None, "DELETE"));
        assert!(!manifest.applies_to("", "pods", Some("status"), "CREATE"));
        assert!(manifest.capabilities[0].allows("", "namespaces", "get"));
        assert!(!manifest.capabilities[0].allows("", "secrets", "get"));
        assert_eq!(
            (manifest.timeout, manifest.memory_limit, manifest.order),
            (Duration::from_millis(250), Some(32 << 20), 5)
        );
        assert_eq!(manifest.config, r#"{"a":1}"#);
        assert_eq!((manifest.failure_policy, manifest.mode), (FailurePolicy::Ignore, Mode::Audit));
    }

    #[test]
    fn a_shadow_names_its_live_plugin() {
        let parse = |spec: &str| {
            Manifest::parse(&format!(
                "apiVersion: wasmkube.io/v1alpha1\nkind: Plugin\nmetadata: {{name: candidate}}\nspec: {{kind: admission, module: c.wasm, {spec}}}\n"
            ))
        };
        assert_eq!(parse("mode: Shadow, shadowOf: live").expect("valid").mode, Mode::Shadow { of: "live".into() });
        let without = parse("mode: Shadow").expect_err("no shadowOf");
        assert!(without.to_string().contains("needs spec.shadowOf"), "{without}");
        let stray = parse("mode: Audit, shadowOf: live").expect_err("shadowOf without Shadow");
        assert!(stray.to_string().contains("only for spec.mode Shadow"), "{stray}");
        let itself = parse("mode: Shadow, shadowOf: candidate").expect_err("itself");
        assert!(itself.to_string().contains("names the plugin itself"), "{itself}");
    }

    #[test]
    fn every_problem_is_named() {
        let error = Manifest::parse(
            "apiVersion: v1\nkind: Plugin\nspec: {kind: scheduler, timeout: forever, failurePolicy: Maybe}\n",
        )
        .expect_err("invalid");
        assert_eq!(error.problems.len(), 6, "{error}");
    }
}
