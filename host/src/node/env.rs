//! A container's environment, as the kubelet makes it: `envFrom` (ConfigMaps and Secrets,
//! with `prefix`), then `env` in order — `value` with `$(VAR)` expanded from what came
//! before (`$$` escapes), and `valueFrom` `configMapKeyRef`, `secretKeyRef`, `fieldRef`,
//! `resourceFieldRef` — and `command`/`args` expanded the same way. A reference that does
//! not resolve is the kubelet's CreateContainerConfigError with its words, unless `optional`.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Map, Value};

use crate::client::Client;

/// Why the environment cannot be made: the message of CreateContainerConfigError.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ConfigError(pub String);

/// The values ConfigMaps and Secrets hold, read once per container start.
struct Sources<'a> {
    client: &'a dyn Client,
    namespace: &'a str,
    read: HashMap<(&'static str, String), Option<Map<String, Value>>>,
}

impl Sources<'_> {
    /// The data of ConfigMap or Secret `name` (a Secret's values decoded), None if it does not exist.
    async fn data(&mut self, kind: &'static str, name: &str) -> Result<Option<&Map<String, Value>>, ConfigError> {
        let key = (kind, name.to_string());
        if !self.read.contains_key(&key) {
            let plural = if kind == "ConfigMap" { "configmaps" } else { "secrets" };
            let resource = self
                .client
                .resource("", "v1", plural)
                .ok_or_else(|| ConfigError(format!("{plural} are not served")))?;
            let object = match self.client.get(&resource, Some(self.namespace), name).await {
                Ok(object) => Some(object),
                Err(crate::registry::Error::NotFound { .. }) => None,
                Err(e) => return Err(ConfigError(format!("cannot read {kind} {}/{name}: {e}", self.namespace))),
            };
            let data = object.map(|object| {
                let mut data = Map::new();
                if kind == "Secret" {
                    for (k, v) in object.get("data").and_then(Value::as_object).into_iter().flatten() {
                        let decoded = v
                            .as_str()
                            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default();
                        data.insert(k.clone(), Value::String(decoded));
                    }
                    for (k, v) in object.get("stringData").and_then(Value::as_object).into_iter().flatten() {
                        data.insert(k.clone(), v.clone());
                    }
                } else {
                    for (k, v) in object.get("data").and_then(Value::as_object).into_iter().flatten() {
                        data.insert(k.clone(), v.clone());
                    }
                }
                data
            });
            self.read.insert(key.clone(), data);
        }
        Ok(self.read.get(&key).and_then(Option::as_ref))
    }
}

fn lower(kind: &str) -> &'static str {
    if kind == "ConfigMap" {
        "configmap"
    } else {
        "secret"
    }
}

/// The environment of `container` in `pod` (whose status is as the node knows it: `pod_ip`,
/// `host_ip`), in order.
pub(super) async fn environment(
    client: &dyn Client,
    pod: &Value,
    container: &Value,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    let mut sources = Sources { client, namespace, read: HashMap::new() };
    let mut env: Vec<(String, String)> = Vec::new();
    let set =
        |env: &mut Vec<(String, String)>, name: String, value: String| match env.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => env.push((name, value)),
        };
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        let (kind, reference) = match (from.get("configMapRef"), from.get("secretRef")) {
            (Some(r), _) => ("ConfigMap", r),
            (_, Some(r)) => ("Secret", r),
            _ => continue,
        };
        let name = reference["name"].as_str().unwrap_or_default();
        let optional = reference["optional"].as_bool().unwrap_or(false);
        match sources.data(kind, name).await? {
            Some(data) => {
                for (key, value) in data {
                    set(&mut env, format!("{prefix}{key}"), value.as_str().unwrap_or_default().to_string());
                }
            }
            None if optional => {}
            None => return Err(ConfigError(format!("{} {name:?} not found", lower(kind)))),
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let Some(name) = var["name"].as_str() else { continue };
        let value = if let Some(from) = var.get("valueFrom") {
            match value_from(&mut sources, pod, container, from, pod_ip, host_ip).await? {
                Some(value) => value,
                None => continue,
            }
        } else {
            expand(var["value"].as_str().unwrap_or_default(), &env)
        };
        set(&mut env, name.to_string(), value);
    }
    Ok(env)
}

async fn value_from(
    sources: &mut Sources<'_>,
    pod: &Value,
    container: &Value,
    from: &Value,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Option<String>, ConfigError> {
    for (field, kind) in [("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")] {
        let Some(reference) = from.get(field) else { continue };
        let name = reference["name"].as_str().unwrap_or_default();
        let key = reference["key"].as_str().unwrap_or_default();
        let optional = reference["optional"].as_bool().unwrap_or(false);
        let namespace = sources.namespace.to_string();
        return match sources.data(kind, name).await? {
            Some(data) => match data.get(key).and_then(Value::as_str) {
                Some(value) => Ok(Some(value.to_string())),
                None if optional => Ok(None),
                None => Err(ConfigError(format!("couldn't find key {key} in {kind} {namespace}/{name}"))),
            },
            None if optional => Ok(None),
            None => Err(ConfigError(format!("{} {name:?} not found", lower(kind)))),
        };
    }
    if let Some(reference) = from.get("fieldRef") {
        let path = reference["fieldPath"].as_str().unwrap_or_default();
        return field_value(pod, path, pod_ip, host_ip)
            .map(Some)
            .ok_or_else(|| ConfigError(format!("unsupported fieldPath: {path}")));
    }
    if let Some(reference) = from.get("resourceFieldRef") {
        let target = match reference["containerName"].as_str().filter(|n| !n.is_empty()) {
            Some(name) => pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["name"] == name))
                .unwrap_or(container),
            None => container,
        };
        let resource = reference["resource"].as_str().unwrap_or_default();
        let divisor = reference["divisor"].as_str().unwrap_or("1");
        return resource_value(target, resource, divisor)
            .map(Some)
            .ok_or_else(|| ConfigError(format!("unsupported container resource: {resource}")));
    }
    Ok(Some(String::new()))
}

/// A pod field the downward API exposes (`metadata.name`, `metadata.labels['k']`, ...).
pub(super) fn field_value(pod: &Value, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let text = |pointer: &str| pod.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    let map_entry = |field: &str, key: &str| {
        pod.pointer(&format!("/metadata/{field}"))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let subscript = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_prefix('[')?.strip_suffix(']')?;
        Some(rest.trim_matches(|c| c == '\'' || c == '"').to_string())
    };
    match path {
        "metadata.name" => Some(text("/metadata/name")),
        "metadata.namespace" => Some(text("/metadata/namespace")),
        "metadata.uid" => Some(text("/metadata/uid")),
        "spec.nodeName" => Some(text("/spec/nodeName")),
        "spec.serviceAccountName" => Some(text("/spec/serviceAccountName")),
        "status.hostIP" | "status.hostIPs" => Some(host_ip.to_string()),
        "status.podIP" | "status.podIPs" => Some(pod_ip.to_string()),
        "metadata.labels" | "metadata.annotations" => {
            let field = path.trim_start_matches("metadata.");
            let mut lines: Vec<String> = pod
                .pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", Value::String(v.as_str().unwrap_or_default().to_string())))
                .collect();
            lines.sort();
            Some(lines.join("\n"))
        }
        _ => {
            if let Some(key) = subscript("metadata.labels") {
                Some(map_entry("labels", &key))
            } else {
                subscript("metadata.annotations").map(|key| map_entry("annotations", &key))
            }
        }
    }
}

/// `limits.cpu`, `requests.memory`, ... in units of `divisor`, rounded up as the kubelet
/// does; a limit not set is the node's capacity (here: the machine's).
pub(super) fn resource_value(container: &Value, resource: &str, divisor: &str) -> Option<String> {
    let (kind, name) = resource.split_once('.')?;
    if !matches!(kind, "limits" | "requests") || !matches!(name, "cpu" | "memory" | "ephemeral-storage") {
        return None;
    }
    let given = container.pointer(&format!("/resources/{kind}/{name}")).and_then(Value::as_str);
    let given = given.or_else(|| {
        (kind == "requests")
            .then(|| container.pointer(&format!("/resources/limits/{name}")).and_then(Value::as_str))
            .flatten()
    });
    if name == "cpu" {
        let millis = match given {
            Some(q) => crate::quantity::milli(q)?,
            None if kind == "limits" => std::thread::available_parallelism().map_or(1, |n| n.get()) as u64 * 1000,
            None => 0,
        };
        let divisor = crate::quantity::milli(divisor).filter(|d| *d > 0)?;
        return Some(millis.div_ceil(divisor).to_string());
    }
    let bytes = match given {
        Some(q) => crate::quantity::whole(q)?,
        None if kind == "limits" => super::machine_memory(),
        None => 0,
    };
    let divisor = crate::quantity::whole(divisor).filter(|d| *d > 0)?;
    Some(bytes.div_ceil(divisor).to_string())
}

/// Kubernetes' `$(VAR)` expansion: a defined VAR is replaced, `$$` is a literal `$`, and
/// anything else (an undefined name, an unclosed `$(`) is left as written.
pub(super) fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(n, _)| n == name) {
                        Some((_, value)) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expansion_follows_the_kubelets_rules() {
        let env = vec![("A".to_string(), "one".to_string()), ("B".to_string(), "two".to_string())];
        assert_eq!(expand("$(A)-$(B)", &env), "one-two");
        assert_eq!(expand("$$(A) $(C) $(A", &env), "$(A) $(C) $(A");
        assert_eq!(expand("cost: $5", &env), "cost: $5");
        assert_eq!(expand("$$", &env), "$");
    }

    #[test]
    fn the_downward_api_reads_fields_and_resources() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "tier": "a"}},
            "spec": {"nodeName": "node-a"}});
        assert_eq!(field_value(&pod, "metadata.name", "", "").as_deref(), Some("p"));
        assert_eq!(field_value(&pod, "metadata.labels['app']", "", "").as_deref(), Some("web"));
        assert_eq!(field_value(&pod, "metadata.labels", "", "").as_deref(), Some("app=\"web\"\ntier=\"a\""));
        assert_eq!(field_value(&pod, "status.podIP", "127.64.0.2", "").as_deref(), Some("127.64.0.2"));
        assert_eq!(field_value(&pod, "spec.nope", "", ""), None);
        let container = json!({"resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}});
        assert_eq!(resource_value(&container, "limits.cpu", "1").as_deref(), Some("1"));
        assert_eq!(resource_value(&container, "limits.cpu", "1m").as_deref(), Some("500"));
        assert_eq!(resource_value(&container, "limits.memory", "1Mi").as_deref(), Some("64"));
        assert_eq!(resource_value(&container, "requests.memory", "1Mi").as_deref(), Some("64"));
    }
}
