//! The ReplicaSet controller (kube-controller-manager's, as a plugin): keeps
//! `spec.replicas` pods that match the selector and name the ReplicaSet as their
//! controller; adopts orphans that match; releases pods that stop matching; reports
//! `replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas` and
//! `observedGeneration`.
//!
//! Like Kubernetes it creates or deletes at most `burstReplicas` (500; config
//! `burstReplicas`) pods per reconcile; the host waits until its caches show those writes before it reconciles the
//! ReplicaSet again. Pods to delete are chosen as Kubernetes chooses them: unscheduled
//! before scheduled, pending before running, not ready before ready, newest first.

use wasmkube_controller_sdk::meta::{controller_reference, controller_uid, is_empty_selector, text};
use wasmkube_controller_sdk::{
    client, gvr, json, selects, Action, Controller, GroupVersionResource, Reconciled, Registration, Request, Value,
};

/// The most pods one reconcile creates or deletes (kube-controller-manager's burstReplicas),
/// unless the config's `burstReplicas` says otherwise.
const BURST: usize = 500;

static CONFIGURED_BURST: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(BURST);

fn burst() -> usize {
    CONFIGURED_BURST.load(std::sync::atomic::Ordering::Relaxed)
}

fn replicasets() -> GroupVersionResource {
    gvr("apps", "v1", "replicasets")
}

fn pods() -> GroupVersionResource {
    gvr("", "v1", "pods")
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Counted as a replica: not being deleted, not finished.
fn is_active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(text(pod, "/status/phase"), "Succeeded" | "Failed")
}

/// A new pod from the ReplicaSet's template.
fn new_pod(rs: &Value) -> Value {
    let template = rs.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut metadata = json!({
        "generateName": format!("{}-", text(rs, "/metadata/name")),
        "namespace": text(rs, "/metadata/namespace"),
        "ownerReferences": [controller_reference("apps/v1", "ReplicaSet", rs)],
    });
    for field in ["labels", "annotations", "finalizers"] {
        if let Some(value) = template.pointer(&format!("/metadata/{field}")) {
            metadata[field] = value.clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template.get("spec").cloned().unwrap_or_else(|| json!({}))})
}

/// Kubernetes' order for pods to delete first (ActivePods' Less): lower sorts first.
fn deletion_rank(pod: &Value) -> (bool, u8, bool, std::cmp::Reverse<String>) {
    let scheduled = !text(pod, "/spec/nodeName").is_empty();
    let phase = match text(pod, "/status/phase") {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let created = text(pod, "/metadata/creationTimestamp").to_string();
    (scheduled, phase, is_ready(pod), std::cmp::Reverse(created))
}

struct ReplicaSets;

impl Controller for ReplicaSets {
    fn configure(config: Value) -> Result<Registration, String> {
        if let Some(burst) = config.get("burstReplicas") {
            let burst = burst.as_u64().filter(|b| *b > 0).ok_or("burstReplicas must be a number above 0")?;
            CONFIGURED_BURST.store(burst as usize, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Registration::reconciles(replicasets()).owns(pods()))
    }

    fn reconcile(request: Request) -> Result<Reconciled, String> {
        // Gone: its pods are the garbage collector's (ownerReferences).
        let Some(rs) = request.object else { return Ok(Reconciled::done("the ReplicaSet is gone")) };
        let namespace = request.key.namespace.as_deref();
        let uid = text(&rs, "/metadata/uid");
        let selector = rs.pointer("/spec/selector").cloned().unwrap_or_else(|| json!({}));
        if is_empty_selector(&selector) {
            // apps/v1 requires one; an empty selector would adopt every pod of the namespace.
            return Ok(Reconciled::done("spec.selector is empty: it selects no pods"));
        }
        let deleting = rs.pointer("/metadata/deletionTimestamp").is_some();
        let all = client::selected_or_owned("", "v1", "pods", namespace, &selector, uid)?;
        let mut actions = Vec::new();
        let mut mine = Vec::new();
        for pod in &all {
            let labels = pod.pointer("/metadata/labels");
            let matches = selects(&selector, labels);
            match controller_uid(pod) {
                Some(owner) if owner == uid => {
                    if matches {
                        mine.push(pod);
                    } else if !deleting {
                        // Release it: drop our ownerReference.
                        let owners: Vec<Value> = pod
                            .pointer("/metadata/ownerReferences")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter(|o| o["uid"] != uid)
                            .cloned()
                            .collect();
                        actions.push(Action::patch_of(pods(), pod, json!({"metadata": {"ownerReferences": owners}})));
                    }
                }
                None if matches && !deleting && is_active(pod) => {
                    // Adopt it.
                    let mut owners =
                        pod.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
                    owners.push(controller_reference("apps/v1", "ReplicaSet", &rs));
                    actions.push(Action::patch_of(pods(), pod, json!({"metadata": {"ownerReferences": owners}})));
                    mine.push(pod);
                }
                _ => {}
            }
        }
        let mut active: Vec<&Value> = mine.iter().copied().filter(|p| is_active(p)).collect();
        let wanted = rs.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1) as usize;
        let mut reason = String::from("in sync");
        if !deleting {
            if active.len() < wanted {
                let missing = (wanted - active.len()).min(burst());
                let pod = new_pod(&rs);
                actions.extend((0..missing).map(|_| Action::create(pods(), namespace, &pod)));
                reason = format!("{} of {wanted} replicas: creating {missing}", active.len());
            } else if active.len() > wanted {
                let surplus = (active.len() - wanted).min(burst());
                active.sort_by_key(|p| deletion_rank(p));
                actions.extend(active.iter().take(surplus).map(|p| Action::delete_of(pods(), p)));
                reason = format!("{} of {wanted} replicas: deleting {surplus}", active.len());
            }
        }
        let ready = active.iter().filter(|p| is_ready(p)).count();
        let labels = rs.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
        let fully_labeled = active
            .iter()
            .filter(|p| {
                let have = p.pointer("/metadata/labels").and_then(Value::as_object);
                labels.is_none_or(|wanted| wanted.iter().all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v)))
            })
            .count();
        let mut status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        });
        if let Some(conditions) = rs.pointer("/status/conditions") {
            status["conditions"] = conditions.clone();
        }
        let current = rs.get("status").cloned().unwrap_or_else(|| json!({}));
        let changed = ["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"]
            .iter()
            .any(|field| {
                current.get(*field).and_then(Value::as_u64).unwrap_or(0) != status[*field].as_u64().unwrap_or(0)
            });
        if changed {
            actions.push(Action::patch_status_of(replicasets(), &rs, status));
        }
        Ok(Reconciled::with(actions, reason))
    }
}

wasmkube_controller_sdk::export_controller!(ReplicaSets);
