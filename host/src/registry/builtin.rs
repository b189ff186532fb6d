//! The built-in resources of Kubernetes 1.33: one table row per resource (what discovery
//! says about it), and the few strategies with behaviour beyond the generic registry's.
//!
//! Adding a resource is adding a row. Review resources (TokenReview, SubjectAccessReview,
//! ...) are not stored and are not rows here.

use std::sync::Arc;

use serde_json::Value;

use super::{ApiResource, Cause, NameRule, Object, Strategy};

const NS: bool = true;
const CLUSTER: bool = false;
const ALL: &[&str] = &["all"];
const API_EXTENSIONS: &[&str] = &["api-extensions"];
const NONE: &[&str] = &[];
const STATUS: &[&str] = &["status"];
const STATUS_SCALE: &[&str] = &["status", "scale"];

/// One row: group, version, kind, plural, singular, scope, short names, categories, subresources.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

/// Every stored built-in resource a stock kube-apiserver 1.33 serves (GA groups; the
/// beta and alpha groups are off by default there too).
#[rustfmt::skip]
const ROWS: &[Row] = &[
    ("", "v1", "ConfigMap", "configmaps", "configmap", NS, &["cm"], NONE, NONE),
    ("", "v1", "Endpoints", "endpoints", "endpoints", NS, &["ep"], NONE, NONE),
    ("", "v1", "Event", "events", "event", NS, &["ev"], NONE, NONE),
    ("", "v1", "LimitRange", "limitranges", "limitrange", NS, &["limits"], NONE, NONE),
    ("", "v1", "Namespace", "namespaces", "namespace", CLUSTER, &["ns"], NONE, &["status", "finalize"]),
    ("", "v1", "Node", "nodes", "node", CLUSTER, &["no"], NONE, &["status", "proxy"]),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", NS, &["pvc"], NONE, STATUS),
    ("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", CLUSTER, &["pv"], NONE, STATUS),
    ("", "v1", "Pod", "pods", "pod", NS, &["po"], ALL,
        &["status", "binding", "eviction", "ephemeralcontainers", "log", "exec", "attach", "portforward", "proxy"]),
    ("", "v1", "PodTemplate", "podtemplates", "podtemplate", NS, NONE, NONE, NONE),
    ("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", NS, &["rc"], ALL, STATUS_SCALE),
    ("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", NS, &["quota"], NONE, STATUS),
    ("", "v1", "Secret", "secrets", "secret", NS, NONE, NONE, NONE),
    ("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", NS, &["sa"], NONE, &["token"]),
    ("", "v1", "Service", "services", "service", NS, &["svc"], ALL, &["status", "proxy"]),
    ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", "mutatingwebhookconfiguration", CLUSTER, NONE, API_EXTENSIONS, NONE),
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", "validatingadmissionpolicy", CLUSTER, NONE, API_EXTENSIONS, STATUS),
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", "validatingadmissionpolicybinding", CLUSTER, NONE, API_EXTENSIONS, NONE),
    ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", "validatingwebhookconfiguration", CLUSTER, NONE, API_EXTENSIONS, NONE),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", "customresourcedefinition", CLUSTER, &["crd", "crds"], API_EXTENSIONS, STATUS),
    ("apiregistration.k8s.io", "v1", "APIService", "apiservices", "apiservice", CLUSTER, NONE, API_EXTENSIONS, STATUS),
    ("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", NS, NONE, NONE, NONE),
    ("apps", "v1", "DaemonSet", "daemonsets", "daemonset", NS, &["ds"], ALL, STATUS),
    ("apps", "v1", "Deployment", "deployments", "deployment", NS, &["deploy"], ALL, STATUS_SCALE),
    ("apps", "v1", "ReplicaSet", "replicasets", "replicaset", NS, &["rs"], ALL, STATUS_SCALE),
    ("apps", "v1", "StatefulSet", "statefulsets", "statefulset", NS, &["sts"], ALL, STATUS_SCALE),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", NS, &["hpa"], ALL, STATUS),
    ("batch", "v1", "CronJob", "cronjobs", "cronjob", NS, &["cj"], ALL, STATUS),
    ("batch", "v1", "Job", "jobs", "job", NS, NONE, ALL, STATUS),
    ("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", CLUSTER, &["csr"], NONE, &["status", "approval"]),
    ("coordination.k8s.io", "v1", "Lease", "leases", "lease", NS, NONE, NONE, NONE),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", NS, NONE, NONE, NONE),
    ("events.k8s.io", "v1", "Event", "events", "event", NS, &["ev"], NONE, NONE),
    ("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema", "flowschemas", "flowschema", CLUSTER, NONE, NONE, STATUS),
    ("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration", "prioritylevelconfigurations", "prioritylevelconfiguration", CLUSTER, NONE, NONE, STATUS),
    ("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", CLUSTER, NONE, NONE, NONE),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", NS, &["ing"], NONE, STATUS),
    ("networking.k8s.io", "v1", "IPAddress", "ipaddresses", "ipaddress", CLUSTER, &["ip"], NONE, NONE),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", NS, &["netpol"], NONE, NONE),
    ("networking.k8s.io", "v1", "ServiceCIDR", "servicecidrs", "servicecidr", CLUSTER, NONE, NONE, STATUS),
    ("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", CLUSTER, NONE, NONE, NONE),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", NS, &["pdb"], NONE, STATUS),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", CLUSTER, NONE, NONE, NONE),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", CLUSTER, NONE, NONE, NONE),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", NS, NONE, NONE, NONE),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", NS, NONE, NONE, NONE),
    ("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", CLUSTER, &["pc"], NONE, NONE),
    ("storage.k8s.io", "v1", "CSIDriver", "csidrivers", "csidriver", CLUSTER, NONE, NONE, NONE),
    ("storage.k8s.io", "v1", "CSINode", "csinodes", "csinode", CLUSTER, NONE, NONE, NONE),
    ("storage.k8s.io", "v1", "CSIStorageCapacity", "csistoragecapacities", "csistoragecapacity", NS, NONE, NONE, NONE),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", CLUSTER, &["sc"], NONE, NONE),
    ("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", "volumeattachment", CLUSTER, NONE, NONE, STATUS),
];

/// The kinds whose strategies count spec changes in `metadata.generation` (those with a
/// controller that reports `observedGeneration`).
const GENERATION_KINDS: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "ReplicationController",
    "Job",
    "CronJob",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Ingress",
    "NetworkPolicy",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "FlowSchema",
    "PriorityLevelConfiguration",
];

/// A kind with no behaviour beyond the generic registry's: a status subresource (if
/// listed) keeps spec and status apart.
struct Generic(ApiResource);

impl Strategy for Generic {
    fn resource(&self) -> &ApiResource {
        &self.0
    }

    fn tracks_generation(&self) -> bool {
        GENERATION_KINDS.contains(&self.0.kind)
    }

    fn name_rule(&self) -> NameRule {
        match self.0.kind {
            "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => NameRule::PathSegment,
            _ => NameRule::Subdomain,
        }
    }

    /// The kind's own rules: workloads' selectors, replicas and pod templates; RBAC rules
    /// and bindings; Node taints; Lease durations; core Events' namespaces.
    fn validate(&self, object: &Object) -> Vec<Cause> {
        use super::validate::{node, rbac, workload};
        match (self.0.group, self.0.kind) {
            ("rbac.authorization.k8s.io", kind) => rbac::validate(kind, object),
            ("", "Node") => node::validate_node(object),
            ("coordination.k8s.io", "Lease") => node::validate_lease(object),
            ("", "Event") => super::validate::event::validate(object),
            ("networking.k8s.io", kind) => super::validate::networking::validate(kind, object),
            (group @ ("autoscaling" | "policy" | "scheduling.k8s.io" | "storage.k8s.io"), kind) => {
                super::validate::capacity::validate(group, kind, object)
            }
            ("", kind @ ("PersistentVolume" | "PersistentVolumeClaim")) => {
                super::validate::capacity::validate("", kind, object)
            }
            (_, kind) => workload::validate(kind, object),
        }
    }

    /// A status subresource's status is the controllers' to write, not the creator's
    /// (Nodes excepted: a kubelet registers its node with its status).
    fn prepare_for_create(&self, object: &mut Object) {
        if self.0.has_subresource("status") && self.0.kind != "Node" {
            object.remove("status");
        }
    }
}

/// Namespaces are Active from birth (the namespace controller will move them to Terminating).
struct Namespaces(ApiResource);

impl Strategy for Namespaces {
    fn resource(&self) -> &ApiResource {
        &self.0
    }

    fn prepare_for_create(&self, object: &mut Object) {
        object.insert("status".into(), serde_json::json!({"phase": "Active"}));
        object.insert("spec".into(), serde_json::json!({"finalizers": ["kubernetes"]}));
        let name = object.get("metadata").and_then(|m| m.get("name")).cloned();
        if let (Some(Value::String(name)), Some(Value::Object(metadata))) = (name, object.get_mut("metadata")) {
            let labels = metadata.entry("labels").or_insert_with(|| serde_json::json!({}));
            if let Value::Object(labels) = labels {
                labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
        }
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }

    /// Only the `finalize` subresource changes `spec.finalizers` (and a namespace has no other spec).
    fn prepare_for_update(&self, object: &mut Object, old: &Object) {
        match old.get("spec") {
            Some(spec) => object.insert("spec".into(), spec.clone()),
            None => object.remove("spec"),
        };
    }

    /// The namespace finalizer (`spec.finalizers`) holds a namespace until its content is gone.
    fn validate(&self, object: &Object) -> Vec<Cause> {
        super::validate::networking::namespace(object)
    }

    fn blocks_deletion(&self, object: &Object) -> bool {
        object.get("spec").and_then(|s| s.get("finalizers")).and_then(Value::as_array).is_some_and(|f| !f.is_empty())
    }

    fn prepare_for_deletion(&self, object: &mut Object) {
        object.insert("status".into(), serde_json::json!({"phase": "Terminating"}));
    }
}

/// ConfigMaps and Secrets carry string maps. A Secret's `stringData` is written into
/// `data` (base64) and never stored, and its `type` defaults to Opaque; once `immutable`
/// is set, neither the data nor the flag may change.
struct DataMaps(ApiResource);

impl DataMaps {
    fn is_secret(&self) -> bool {
        self.0.kind == "Secret"
    }

    /// Upstream's Secret `PrepareForCreate`/`PrepareForUpdate`: `stringData` wins over
    /// `data` key by key, as base64.
    fn merge_string_data(&self, object: &mut Object) {
        if !self.is_secret() {
            return;
        }
        use base64::Engine;
        if let Some(Value::Object(strings)) = object.remove("stringData") {
            let data = object.entry("data").or_insert_with(|| Value::Object(serde_json::Map::new()));
            if data.is_null() {
                *data = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(data) = data {
                for (key, value) in strings {
                    let text = value.as_str().unwrap_or_default();
                    data.insert(key, Value::String(base64::engine::general_purpose::STANDARD.encode(text)));
                }
            }
        }
        if object.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
            object.insert("type".into(), Value::String("Opaque".into()));
        }
    }
}

impl Strategy for DataMaps {
    fn resource(&self) -> &ApiResource {
        &self.0
    }

    fn prepare_for_create(&self, object: &mut Object) {
        self.merge_string_data(object);
    }

    fn prepare_for_update(&self, object: &mut Object, _old: &Object) {
        self.merge_string_data(object);
    }

    fn validate_update(&self, object: &Object, old: &Object) -> Vec<Cause> {
        let mut causes = self.validate(object);
        if old.get("immutable").and_then(Value::as_bool) == Some(true) {
            const IMMUTABLE: &str = "field is immutable when `immutable` is set";
            for field in ["data", "binaryData"] {
                let empty =
                    |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_object().is_some_and(|m| m.is_empty()));
                let same = object.get(field) == old.get(field) || (empty(object.get(field)) && empty(old.get(field)));
                if !same {
                    causes.push(super::validate::Field::new(field).forbidden(IMMUTABLE));
                }
            }
            if object.get("immutable").and_then(Value::as_bool) != Some(true) {
                causes.push(super::validate::Field::new("immutable").forbidden(IMMUTABLE));
            }
        }
        if self.is_secret() && object.get("type") != old.get("type") {
            causes.push(
                super::validate::Field::new("type")
                    .invalid(object.get("type").unwrap_or(&Value::Null), "field is immutable"),
            );
        }
        causes
    }

    /// Values are strings and keys are config keys (`IsConfigMapKey`), a key is in one
    /// of `data` and `binaryData` only, and all of it fits in 1 MiB (`MaxSecretSize`).
    fn validate(&self, object: &Object) -> Vec<Cause> {
        const MAX_SIZE: usize = 1024 * 1024;
        let mut causes: Vec<Cause> = ["data", "binaryData", "stringData"]
            .into_iter()
            .filter(|field| match object.get(*field) {
                None | Some(Value::Null) => false,
                Some(Value::Object(map)) => !map.values().all(Value::is_string),
                Some(_) => true,
            })
            .map(|field| Cause::invalid(field, "must map keys to strings"))
            .collect();
        let mut size = 0;
        for field in ["data", "binaryData", "stringData"] {
            let at = super::validate::Field::new(field);
            for (key, value) in object.get(field).and_then(Value::as_object).into_iter().flatten() {
                causes.extend(at.key(key).each_invalid(key, super::validate::content::config_map_key(key)));
                size += value.as_str().map_or(0, str::len);
                if field == "data" && object.get("binaryData").and_then(|b| b.get(key)).is_some() {
                    causes.push(
                        at.key(key).invalid(&Value::String(key.clone()), "duplicate of key present in binaryData"),
                    );
                }
            }
        }
        if size > MAX_SIZE {
            let field = if self.0.kind == "Secret" { "data" } else { "" };
            causes.push(super::validate::Field::new(field).too_long(MAX_SIZE));
        }
        causes
    }
}

/// Every built-in resource's names (what a client in another process may name without
/// asking discovery).
pub fn resources() -> Vec<ApiResource> {
    strategies().iter().map(|s| *s.resource()).collect()
}

pub(super) fn strategies() -> Vec<Arc<dyn Strategy>> {
    ROWS.iter()
        .map(|&(group, version, kind, plural, singular, namespaced, short_names, categories, subresources)| {
            let resource = ApiResource {
                group,
                version,
                kind,
                plural,
                singular,
                namespaced,
                short_names,
                categories,
                subresources,
            };
            let strategy: Arc<dyn Strategy> = match (group, plural) {
                ("", "namespaces") => Arc::new(Namespaces(resource)),
                ("", "configmaps" | "secrets") => Arc::new(DataMaps(resource)),
                ("", "services") => Arc::new(super::services::Services(resource)),
                ("", "pods") => Arc::new(super::pods::Pods(resource)),
                ("apiextensions.k8s.io", "customresourcedefinitions") => {
                    Arc::new(super::custom::CustomResourceDefinitions(resource))
                }
                _ => Arc::new(Generic(resource)),
            };
            strategy
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row names a kind the vendored OpenAPI definitions know, so discovery and
    /// schemas agree.
    #[test]
    fn every_row_has_a_schema() {
        let definitions: serde_json::Map<String, Value> =
            serde_json::from_str(include_str!("../../openapi/k8s-1.33-definitions.json")).expect("definitions");
        for (group, version, kind, ..) in ROWS {
            let found = definitions.values().any(|d| {
                d.get("x-kubernetes-group-version-kind").and_then(Value::as_array).is_some_and(|gvks| {
                    gvks.iter().any(|g| g["group"] == *group && g["version"] == *version && g["kind"] == *kind)
                })
            });
            assert!(found, "{group}/{version} {kind} has no schema");
        }
    }
}
