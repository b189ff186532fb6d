//! What a fresh cluster holds before anyone writes, as kube-apiserver's bootstrap
//! controllers make it: the four namespaces, the `kubernetes` Service with its endpoints,
//! the default ServiceCIDR, and the default RBAC roles (cluster-admin, admin, edit, view,
//! the discovery roles) with their bindings.
//!
//! The objects, and [`Registry::seed`], which creates them through the ordinary create path.

use std::net::SocketAddr;

use serde_json::{json, Value};

use super::{Error, Registry, Result, WriteOptions};

impl Registry {
    /// Create what a fresh cluster holds (namespaces, the `kubernetes` Service and its
    /// endpoints at `advertise`, default RBAC roles); what exists is left alone, except the
    /// endpoints, which follow the server's address.
    pub async fn seed(&self, advertise: Option<SocketAddr>) -> Result<()> {
        let options = WriteOptions { field_manager: Some("kube-apiserver".into()), ..WriteOptions::default() };
        for seed in objects(advertise) {
            let resource = self
                .resources()
                .into_iter()
                .find(|r| r.group == seed.group && r.plural == seed.plural)
                .ok_or_else(|| Error::Internal(format!("{}.{} is not served", seed.plural, seed.group)))?;
            let name = seed.body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            match self.create(&resource, seed.namespace, seed.body.clone(), &options).await {
                Ok(_) => {}
                Err(Error::AlreadyExists { .. }) if !seed.refresh.is_empty() => {
                    let current = Value::Object(self.get(&resource, seed.namespace, &name).await?);
                    let differs = seed.refresh.iter().any(|at| current.pointer(at) != seed.body.pointer(at));
                    if differs {
                        self.update(&resource, seed.namespace, &name, seed.body, None, &options).await?;
                    }
                }
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// One object to create: group, plural, namespace, body. An object that exists is replaced
/// when it differs from the body at one of the `refresh` JSON pointers (the API server's
/// own address may change between runs; a newer binary may serve a newer Plugin schema).
pub(super) struct Seed {
    pub group: &'static str,
    pub plural: &'static str,
    pub namespace: Option<&'static str>,
    pub body: Value,
    pub refresh: &'static [&'static str],
}

fn seed(group: &'static str, plural: &'static str, namespace: Option<&'static str>, body: Value) -> Seed {
    Seed { group, plural, namespace, body, refresh: &[] }
}

/// The annotation that holds the digest of a seeded CRD's spec, so a changed schema
/// replaces the stored one at the next start.
const SPEC_DIGEST: &str = "wasmkube.io/spec-digest";

/// The `Plugin` kind (`wasmkube.io/v1alpha1`): a plugin's manifest as an API object.
fn plugin_crd() -> Seed {
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let rule =
        json!({"type": "object", "properties": {"apiGroups": strings, "resources": strings, "operations": strings}});
    let capability =
        json!({"type": "object", "properties": {"apiGroups": strings, "resources": strings, "verbs": strings}});
    let quantity = json!({"x-kubernetes-int-or-string": true});
    let concurrency = json!({"type": "integer", "minimum": 1, "maximum": 64, "description": "A controller's reconciles at once (never two of one key)."});
    let weight = json!({"type": "integer", "minimum": 1, "maximum": 100, "description": "A scheduler policy's weight in the sum of scores."});
    let mut crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "plugins.wasmkube.io"},
        "spec": {
            "group": "wasmkube.io",
            "scope": "Cluster",
            "names": {"plural": "plugins", "singular": "plugin", "kind": "Plugin", "shortNames": ["plg"]},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Kind", "type": "string", "jsonPath": ".spec.kind"},
                    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Digest", "type": "string", "priority": 1, "jsonPath": ".status.digest"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A WebAssembly plugin: its world, module and how it is run.",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["kind", "module"],
                            "properties": {
                                "kind": {"type": "string", "enum": ["admission", "controller", "scheduler-policy"], "description": "The plugin world."},
                                "module": {"type": "string", "description": "An absolute path on the server, or builtin:<name>.wasm."},
                                "phases": {"type": "array", "items": {"type": "string", "enum": ["mutate", "validate"]}},
                                "rules": {"type": "array", "items": rule},
                                "capabilities": {"type": "array", "items": capability},
                                "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                "timeout": quantity,
                                "memoryLimit": quantity,
                                "failurePolicy": {"type": "string", "enum": ["Fail", "Ignore"]},
                                "mode": {"type": "string", "enum": ["Enforce", "Audit", "Shadow"]},
                                "shadowOf": {"type": "string"},
                                "order": {"type": "integer"},
                                "concurrency": concurrency,
                                "weight": weight,
                            },
                        },
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                }},
            }],
        },
    });
    let digest = crate::plugins::digest(crd["spec"].to_string().as_bytes());
    crd["metadata"]["annotations"] = json!({ SPEC_DIGEST: digest });
    Seed {
        refresh: &["/metadata/annotations/wasmkube.io~1spec-digest"],
        ..seed("apiextensions.k8s.io", "customresourcedefinitions", None, crd)
    }
}

fn bootstrap_metadata(name: &str) -> Value {
    json!({
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

fn cluster_role(name: &str, rules: Value) -> Seed {
    seed(
        "rbac.authorization.k8s.io",
        "clusterroles",
        None,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": bootstrap_metadata(name), "rules": rules,
        }),
    )
}

fn cluster_role_binding(name: &str, role: &str, groups: &[&str]) -> Seed {
    let subjects: Vec<Value> =
        groups.iter().map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g})).collect();
    seed(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        None,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": bootstrap_metadata(name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects,
        }),
    )
}

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The roles users are given in namespaces: view ⊂ edit ⊂ admin (kube-apiserver's
/// bootstrap policy, flattened: the aggregated rules written out).
fn user_roles() -> Vec<Seed> {
    let workloads = json!({"apiGroups": ["apps"], "resources": ["daemonsets", "deployments", "deployments/scale", "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale", "controllerrevisions"]});
    let core_read = json!({"apiGroups": [""], "resources": ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods", "pods/log", "pods/status", "replicationcontrollers", "replicationcontrollers/scale", "replicationcontrollers/status", "serviceaccounts", "services", "services/status", "bindings", "events", "limitranges", "namespaces/status", "resourcequotas", "resourcequotas/status", "namespaces"]});
    let core_write = json!({"apiGroups": [""], "resources": ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "pods/eviction", "configmaps", "endpoints", "persistentvolumeclaims", "replicationcontrollers", "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy", "serviceaccounts/token"]});
    let others = json!({"apiGroups": ["autoscaling", "batch", "networking.k8s.io", "policy", "discovery.k8s.io", "coordination.k8s.io"], "resources": ["horizontalpodautoscalers", "cronjobs", "jobs", "ingresses", "networkpolicies", "poddisruptionbudgets", "endpointslices", "leases"]});
    let with = |rule: &Value, verbs: &[&str]| {
        let mut rule = rule.clone();
        rule["verbs"] = json!(verbs);
        rule
    };
    let view = json!([with(&core_read, &READ), with(&workloads, &READ), with(&others, &READ)]);
    let edit =
        json!([with(&core_read, &READ), with(&core_write, &WRITE), with(&workloads, &WRITE), with(&others, &WRITE),]);
    let mut admin = edit.as_array().cloned().unwrap_or_default();
    admin.push(
        json!({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": WRITE}),
    );
    admin.push(
        json!({"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]}),
    );
    vec![cluster_role("view", view), cluster_role("edit", edit), cluster_role("admin", Value::Array(admin))]
}

/// Every object of a fresh cluster. `advertise` is where the API server answers (the
/// `kubernetes` Service's endpoints).
pub(super) fn objects(advertise: Option<SocketAddr>) -> Vec<Seed> {
    let mut seeds: Vec<Seed> = ["default", "kube-system", "kube-public", "kube-node-lease"]
        .into_iter()
        .map(|name| {
            seed("", "namespaces", None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        })
        .collect();
    seeds.push(plugin_crd());
    seeds.push(seed(
        "networking.k8s.io",
        "servicecidrs",
        None,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
            "metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["10.96.0.0/12"]},
        }),
    ));
    seeds.push(seed("", "services", Some("default"), json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "clusterIP": super::services::KUBERNETES_SERVICE_IP.to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": advertise.map_or(6443, |a| a.port())}],
            "sessionAffinity": "None", "type": "ClusterIP",
        },
    })));
    if let Some(address) = advertise {
        let ip = if address.ip().is_unspecified() { "127.0.0.1".to_string() } else { address.ip().to_string() };
        let port = address.port();
        seeds.push(Seed {
            refresh: &["/subsets"],
            ..seed("", "endpoints", Some("default"), json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
            }))
        });
        seeds.push(Seed {
            refresh: &["/endpoints", "/ports"],
            ..seed(
                "discovery.k8s.io",
                "endpointslices",
                Some("default"),
                json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                }),
            )
        });
    }
    seeds.push(cluster_role(
        "cluster-admin",
        json!([
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ]),
    ));
    seeds.extend(user_roles());
    seeds.push(cluster_role("system:discovery", json!([
        {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]},
    ])));
    seeds.push(cluster_role("system:basic-user", json!([
        {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
    ])));
    seeds.push(cluster_role(
        "system:public-info-viewer",
        json!([
            {"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]},
        ]),
    ));
    seeds.push(cluster_role_binding("cluster-admin", "cluster-admin", &["system:masters"]));
    seeds.push(cluster_role_binding("system:discovery", "system:discovery", &["system:authenticated"]));
    seeds.push(cluster_role_binding("system:basic-user", "system:basic-user", &["system:authenticated"]));
    seeds.push(cluster_role_binding(
        "system:public-info-viewer",
        "system:public-info-viewer",
        &["system:authenticated", "system:unauthenticated"],
    ));
    seeds
}
