//! The Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
//! as a validating admission plugin: each pod is checked against its namespace's level —
//! the `pod-security.kubernetes.io/enforce` label (`privileged`, `baseline`, `restricted`),
//! else the configured default (`baseline`) — and refused with every violation named, in
//! the words kube-apiserver's PodSecurity admission uses.
//!
//! Config: `{"defaultLevel": "baseline", "exemptNamespaces": ["kube-system"]}`.

use std::sync::Mutex;

mod policy;

use policy::{check, Level};
use wasmkube_sdk::{client, Admission, Operation, Request, Response, Value};

struct Config {
    default_level: Level,
    exempt_namespaces: Vec<String>,
}

static CONFIG: Mutex<Config> = Mutex::new(Config { default_level: Level::Baseline, exempt_namespaces: Vec::new() });

struct PodSecurity;

impl Admission for PodSecurity {
    fn configure(config: Value) -> Result<(), String> {
        let mut current = CONFIG.lock().map_err(|_| "config lock poisoned".to_string())?;
        if let Some(level) = config.get("defaultLevel").and_then(Value::as_str) {
            current.default_level = Level::parse(level)
                .ok_or_else(|| format!("unknown level {level:?}: privileged, baseline or restricted"))?;
        }
        current.exempt_namespaces = config
            .get("exemptNamespaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
        Ok(())
    }

    fn validate(request: Request) -> Response {
        if request.resource.group != "" || request.resource.resource != "pods" || request.sub_resource.is_some() {
            return Response::allow();
        }
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return Response::allow();
        }
        let (default_level, exempt) = match CONFIG.lock() {
            Ok(config) => (config.default_level, config.exempt_namespaces.clone()),
            Err(_) => (Level::Baseline, Vec::new()),
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        if exempt.contains(&namespace) {
            return Response::allow();
        }
        let label = match client::get("", "v1", "namespaces", None, &namespace) {
            Ok(found) => found.and_then(|ns| {
                ns.pointer("/metadata/labels/pod-security.kubernetes.io~1enforce")
                    .and_then(Value::as_str)
                    .map(String::from)
            }),
            Err(e) => {
                return Response::deny(format!(
                    "cannot read namespace {namespace:?} to find its pod security level: {e:?}"
                ))
            }
        };
        let level = label.as_deref().and_then(Level::parse).unwrap_or(default_level);
        let Some(spec) = request.field("/spec") else { return Response::allow() };
        let violations = check(spec, level);
        if violations.is_empty() {
            Response::allow()
        } else {
            Response::deny(format!("violates PodSecurity \"{}:latest\": {}", level.name(), violations.join(", ")))
        }
    }
}

wasmkube_sdk::export_admission!(PodSecurity);
