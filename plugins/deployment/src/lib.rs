//! The Deployment controller (kube-controller-manager's, as a plugin). A Deployment owns
//! ReplicaSets, one per pod template it has had: the *new* one (its template equals the
//! Deployment's, ignoring `pod-template-hash`) and *old* ones. It rolls from old to new
//! by the strategy:
//!
//! - `RollingUpdate`: the new ReplicaSet grows while all pods stay at most
//!   `replicas + maxSurge`; old ones shrink while available pods stay at least
//!   `replicas - maxUnavailable` (percentages: surge rounds up, unavailable down; both 0
//!   means maxUnavailable 1), as Kubernetes computes it;
//! - `Recreate`: old ReplicaSets go to 0 and their pods away first, then the new one grows.
//!
//! Around that: the `pod-template-hash` label (FNV-32a of the template, encoded as
//! Kubernetes encodes it), `deployment.kubernetes.io/revision` (the new ReplicaSet gets the
//! highest revision plus one, also when an old template comes back, as `rollout undo`
//! does), `revisionHistoryLimit` (old, empty ReplicaSets beyond it are deleted, oldest
//! first), `paused` (no rollout, scaling only), and the status that `kubectl rollout
//! status` reads: replicas, updatedReplicas, readyReplicas, availableReplicas,
//! unavailableReplicas, observedGeneration, and the Available and Progressing conditions.

use wasmkube_controller_sdk::meta::{controller_reference, controller_uid, is_empty_selector, text};
use wasmkube_controller_sdk::{
    client, gvr, json, selects, Action, Controller, GroupVersionResource, Map, Reconciled, Registration, Request, Value,
};

const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

fn deployments() -> GroupVersionResource {
    gvr("apps", "v1", "deployments")
}

fn replicasets() -> GroupVersionResource {
    gvr("apps", "v1", "replicasets")
}

fn number(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn revision(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// FNV-1a, 32 bits.
fn fnv32a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The template's hash as Kubernetes writes it: the decimal number, each digit mapped
/// into its vowel-free alphabet (rand.SafeEncodeString).
fn template_hash(template: &Value, collisions: i64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut canonical = template.to_string();
    if collisions > 0 {
        canonical.push_str(&collisions.to_string());
    }
    fnv32a(canonical.as_bytes())
        .to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// A template without the hash label and without zero values (null, false, 0, "", empty
/// lists and maps), for comparing a ReplicaSet's with the Deployment's as Kubernetes
/// compares them (semantically: a client that omits `stdin: false` or writes
/// `creationTimestamp: null` means the same template).
fn without_hash(template: &Value) -> Value {
    let mut template = zero_free(template).unwrap_or_else(|| json!({}));
    if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            if let Some(metadata) = template.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("labels");
            }
        }
    }
    template
}

/// `value` without its zero values, or None if nothing but zeros is left.
fn zero_free(value: &Value) -> Option<Value> {
    match value {
        Value::Null | Value::Bool(false) => None,
        Value::Number(n) if n.as_f64() == Some(0.0) => None,
        Value::String(s) if s.is_empty() => None,
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().map(|i| zero_free(i).unwrap_or_else(|| json!({}))).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        Value::Object(fields) => {
            let kept: Map<String, Value> =
                fields.iter().filter_map(|(k, v)| zero_free(v).map(|v| (k.clone(), v))).collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        other => Some(other.clone()),
    }
}

/// An int-or-percent of `total`: percentages round up for surge, down for unavailable.
fn scaled(value: Option<&Value>, total: i64, default: &str, round_up: bool) -> i64 {
    let value = value.cloned().unwrap_or_else(|| json!(default));
    match value {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(percent) if round_up => (percent * total + 99) / 100,
            Some(percent) => percent * total / 100,
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// One ReplicaSet with the replicas this reconcile wants it to have.
struct Set {
    object: Value,
    replicas: i64,
}

impl Set {
    fn available(&self) -> i64 {
        number(&self.object, "/status/availableReplicas")
    }
    fn stored_replicas(&self) -> i64 {
        number(&self.object, "/spec/replicas")
    }
    /// How many pods this set may have right now: its target, or more while the
    /// ReplicaSet controller has not yet removed what a scale-down asked it to.
    fn pods_at_most(&self) -> i64 {
        self.replicas.max(number(&self.object, "/status/replicas"))
    }
}

struct Deployments;

impl Controller for Deployments {
    fn configure(_config: Value) -> Result<Registration, String> {
        Ok(Registration::reconciles(deployments()).owns(replicasets()))
    }

    fn reconcile(request: Request) -> Result<Reconciled, String> {
        let Some(deployment) = request.object else { return Ok(Reconciled::done("the Deployment is gone")) };
        if deployment.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Reconciled::done("the Deployment is being deleted"));
        }
        let namespace = request.key.namespace.as_deref();
        let uid = text(&deployment, "/metadata/uid").to_string();
        let name = text(&deployment, "/metadata/name").to_string();
        let selector = deployment.pointer("/spec/selector").cloned().unwrap_or_else(|| json!({}));
        if is_empty_selector(&selector) {
            // apps/v1 requires one; an empty selector would adopt every ReplicaSet around.
            return Ok(Reconciled::done("spec.selector is empty: it selects nothing"));
        }
        let desired = deployment.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0);
        let template = deployment.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
        let paused = deployment.pointer("/spec/paused").and_then(Value::as_bool).unwrap_or(false);
        let recreate = text(&deployment, "/spec/strategy/type") == "Recreate";
        let rolling = deployment.pointer("/spec/strategy/rollingUpdate");
        let mut max_surge = scaled(rolling.and_then(|r| r.get("maxSurge")), desired, "25%", true);
        let mut max_unavailable = scaled(rolling.and_then(|r| r.get("maxUnavailable")), desired, "25%", false);
        if recreate {
            (max_surge, max_unavailable) = (0, desired);
        } else if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }

        let mut actions = Vec::new();
        // The ReplicaSets it controls; orphans that match are adopted, like pods by a ReplicaSet.
        let all = client::selected_or_owned("apps", "v1", "replicasets", namespace, &selector, &uid)?;
        let mut owned: Vec<Value> = Vec::new();
        for rs in all {
            let matches = selects(&selector, rs.pointer("/metadata/labels"));
            match controller_uid(&rs) {
                Some(owner) if owner == uid => owned.push(rs),
                None if matches && rs.pointer("/metadata/deletionTimestamp").is_none() => {
                    let mut owners =
                        rs.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
                    owners.push(controller_reference("apps/v1", "Deployment", &deployment));
                    actions.push(Action::patch_of(
                        replicasets(),
                        &rs,
                        json!({"metadata": {"ownerReferences": owners}}),
                    ));
                    // Counted from the next reconcile, once adopted.
                }
                _ => {}
            }
        }
        if !actions.is_empty() {
            // Adopted sets count from the next round, once they are ours.
            return Ok(Reconciled::with(actions, "adopting ReplicaSets that match"));
        }
        owned.sort_by(|a, b| {
            text(a, "/metadata/creationTimestamp")
                .cmp(text(b, "/metadata/creationTimestamp"))
                .then(text(a, "/metadata/name").cmp(text(b, "/metadata/name")))
        });
        let max_revision = owned.iter().map(revision).max().unwrap_or(0);
        let new_index =
            owned.iter().position(|rs| rs.pointer("/spec/template").map(without_hash) == Some(without_hash(&template)));

        let reason;
        let mut sets: Vec<Set> =
            owned.into_iter().map(|object| Set { replicas: number(&object, "/spec/replicas"), object }).collect();
        let mut new_rs_created = false;
        let new_index = match new_index {
            Some(index) => Some(index),
            None if paused => None,
            None => {
                // A new template: a new ReplicaSet.
                let collisions = number(&deployment, "/status/collisionCount");
                let hash = template_hash(&without_hash(&template), collisions);
                // Sized at once as far as the strategy allows (as Kubernetes does), so a new
                // Deployment's pods start in this round.
                let others: i64 = sets.iter().map(|s| s.replicas).sum();
                let old_pods: i64 = sets.iter().map(|s| number(&s.object, "/status/replicas")).sum();
                let size = if recreate {
                    if others == 0 && old_pods == 0 {
                        desired
                    } else {
                        0
                    }
                } else {
                    (desired + max_surge - others).clamp(0, desired)
                };
                let rs = new_replicaset(&deployment, &template, &hash, max_revision + 1, size, desired, max_surge);
                actions.push(Action::create(replicasets(), namespace, &rs));
                new_rs_created = true;
                None
            }
        };
        let old_total: i64 =
            sets.iter().enumerate().filter(|(i, _)| Some(*i) != new_index).map(|(_, s)| s.replicas).sum();
        if new_rs_created {
            reason = format!("created the ReplicaSet of revision {}", max_revision + 1);
        } else if paused {
            reason = "paused: scaling only".into();
            // Scale without rolling: the new (or newest) set takes the difference.
            let total: i64 = sets.iter().map(|s| s.replicas).sum();
            if let Some(target) = new_index.or(if sets.is_empty() { None } else { Some(sets.len() - 1) }) {
                let others = total - sets[target].replicas;
                sets[target].replicas = (desired - others).max(0);
            }
        } else if let Some(new) = new_index {
            if recreate {
                if old_total > 0 {
                    for (i, set) in sets.iter_mut().enumerate() {
                        if i != new {
                            set.replicas = 0;
                        }
                    }
                    reason = "Recreate: scaling the old ReplicaSets down first".into();
                } else if sets.iter().enumerate().any(|(i, s)| i != new && number(&s.object, "/status/replicas") > 0) {
                    reason = "Recreate: waiting for the old pods to go".into();
                } else {
                    sets[new].replicas = desired;
                    reason = "Recreate: scaling the new ReplicaSet up".into();
                }
            } else {
                reason = rolling_update(&mut sets, new, desired, max_surge, max_unavailable);
            }
        } else {
            reason = "no ReplicaSet yet".into();
        }

        // Revision: the new set carries the highest one (an old template that comes back,
        // as `rollout undo` makes it, gets a new, higher revision).
        let new_revision = new_index.map(|n| {
            let own = revision(&sets[n].object);
            if own == max_revision && own > 0 {
                own
            } else {
                max_revision + 1
            }
        });
        let annotations = json!({DESIRED: desired.to_string(), MAX_REPLICAS: (desired + max_surge).to_string()});
        for (i, set) in sets.iter().enumerate() {
            let is_new = Some(i) == new_index;
            let resized = set.replicas != set.stored_replicas();
            let renumbered = is_new && new_revision.is_some_and(|r| r != revision(&set.object));
            if !resized && !renumbered {
                continue;
            }
            let mut patch = json!({});
            if resized {
                patch["spec"] = json!({"replicas": set.replicas});
            }
            if is_new {
                let mut annotations = annotations.clone();
                if let Some(r) = new_revision {
                    annotations[REVISION] = json!(r.to_string());
                }
                patch["metadata"] = json!({"annotations": annotations});
            }
            actions.push(Action::patch_of(replicasets(), &set.object, patch));
        }
        // History: old, empty ReplicaSets beyond the limit go, oldest first.
        let limit =
            deployment.pointer("/spec/revisionHistoryLimit").and_then(Value::as_i64).unwrap_or(10).max(0) as usize;
        let empty_old: Vec<&Set> = sets
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                Some(*i) != new_index
                    && s.replicas == 0
                    && number(&s.object, "/status/replicas") == 0
                    && s.object.pointer("/metadata/deletionTimestamp").is_none()
            })
            .map(|(_, s)| s)
            .collect();
        if empty_old.len() > limit {
            for set in empty_old.iter().take(empty_old.len() - limit) {
                actions.push(Action::delete_of(replicasets(), &set.object));
            }
        }

        // Status, from the ReplicaSets as they are now.
        let sum = |pointer: &str| sets.iter().map(|s| number(&s.object, pointer)).sum::<i64>();
        let replicas = sum("/status/replicas");
        let available = sum("/status/availableReplicas");
        let ready = sum("/status/readyReplicas");
        let updated = new_index.map(|n| number(&sets[n].object, "/status/replicas")).unwrap_or(0);
        let new_available = new_index.map(|n| number(&sets[n].object, "/status/availableReplicas")).unwrap_or(0);
        let new_name = new_index.map(|n| text(&sets[n].object, "/metadata/name").to_string());
        let complete = new_index.is_some()
            && updated == desired
            && replicas == desired
            && new_available == desired
            && new_index.is_some_and(|n| number(&sets[n].object, "/spec/replicas") == desired);
        let mut status = deployment.get("status").cloned().unwrap_or_else(|| json!({}));
        let before = status.clone();
        status["observedGeneration"] = deployment.pointer("/metadata/generation").cloned().unwrap_or(json!(1));
        status["replicas"] = json!(replicas);
        status["updatedReplicas"] = json!(updated);
        status["readyReplicas"] = json!(ready);
        status["availableReplicas"] = json!(available);
        status["unavailableReplicas"] = json!((desired - available).max(0));
        let minimum = available >= desired - max_unavailable;
        set_condition(
            &mut status,
            "Available",
            if minimum { "True" } else { "False" },
            if minimum { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
            if minimum {
                "Deployment has minimum availability."
            } else {
                "Deployment does not have minimum availability."
            },
        );
        // Progress: a new or resized ReplicaSet, or more pods updated, ready or available.
        let resized = sets.iter().any(|s| s.replicas != s.stored_replicas());
        let grew = ["updatedReplicas", "readyReplicas", "availableReplicas"]
            .iter()
            .any(|f| status[*f].as_i64().unwrap_or(0) > before[*f].as_i64().unwrap_or(0));
        let progressed = new_rs_created || resized || grew;
        let deadline = deployment.pointer("/spec/progressDeadlineSeconds").and_then(Value::as_i64).unwrap_or(600);
        let progressing = before["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Progressing"));
        let last_progress = progressing.and_then(|c| c["lastUpdateTime"].as_str()).and_then(epoch_seconds);
        let waited = last_progress.map(|t| now_seconds() - t);
        // Once past its deadline, a rollout stays there until it makes progress again.
        let was_timed_out = progressing.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded");
        let timed_out = !paused && !complete && !progressed && (was_timed_out || waited.is_some_and(|w| w >= deadline));
        let (progress, progress_reason, message) = if timed_out {
            (
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{}\" has timed out progressing.", new_name.clone().unwrap_or_default()),
            )
        } else if paused {
            ("Unknown", "DeploymentPaused", "Deployment is paused".to_string())
        } else if complete {
            (
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{}\" has successfully progressed.", new_name.clone().unwrap_or_default()),
            )
        } else if new_rs_created {
            (
                "True",
                "NewReplicaSetCreated",
                format!(
                    "Created new replica set \"{name}-{}\"",
                    template_hash(&without_hash(&template), number(&deployment, "/status/collisionCount"))
                ),
            )
        } else {
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{}\" is progressing.", new_name.clone().unwrap_or_default()),
            )
        };
        set_condition(&mut status, "Progressing", progress, progress_reason, &message);
        if progressed && !complete {
            touch_condition(&mut status, "Progressing");
        }
        if status != before {
            actions.push(Action::patch_status_of(deployments(), &deployment, status).unconditional());
        }
        // The Deployment shows its current revision, as kubectl reads it.
        if let Some(revision) = new_revision {
            let current =
                deployment.pointer("/metadata/annotations").and_then(|a| a.get(REVISION)).and_then(Value::as_str);
            if current != Some(revision.to_string().as_str()) {
                let patch = json!({"metadata": {"annotations": {REVISION: revision.to_string()}}});
                actions.push(Action::patch_of(deployments(), &deployment, patch).unconditional());
            }
        }
        let mut reconciled = Reconciled::with(actions, reason);
        if !paused && !complete && !timed_out {
            // Looked at again when the deadline would pass, whether or not anything changes.
            let left = deadline - if progressed { 0 } else { waited.unwrap_or(0) };
            reconciled = reconciled.requeue_after(std::time::Duration::from_secs(left.max(1) as u64));
        }
        Ok(reconciled)
    }
}

/// Kubernetes' rolling update step: grow the new set within the surge, then shrink old
/// sets within the unavailability budget. Returns why.
fn rolling_update(sets: &mut [Set], new: usize, desired: i64, max_surge: i64, max_unavailable: i64) -> String {
    // Kubernetes sums the sets' spec.replicas here, so pods of a shrinking old set and
    // of the growing new one can briefly exceed the surge together. Counting the pods an
    // old set still reports keeps the surge true of the pods that exist.
    let total: i64 = sets.iter().map(Set::pods_at_most).sum();
    // Grow (or shrink) the new ReplicaSet.
    if sets[new].replicas > desired {
        sets[new].replicas = desired;
    } else if sets[new].replicas < desired {
        let max_total = desired + max_surge;
        if total < max_total {
            let up = (max_total - total).min(desired - sets[new].replicas);
            sets[new].replicas += up;
        }
    }
    // Shrink old ones, never below what keeps the minimum available.
    let all_pods: i64 = sets.iter().map(|s| s.replicas).sum();
    let min_available = desired - max_unavailable;
    let new_unavailable = (sets[new].replicas - sets[new].available()).max(0);
    let mut budget = all_pods - min_available - new_unavailable;
    if budget > 0 {
        // First the old pods that are not available anyway.
        for (i, set) in sets.iter_mut().enumerate() {
            if i == new || budget <= 0 {
                continue;
            }
            let unhealthy = (set.replicas - set.available()).max(0).min(budget);
            set.replicas -= unhealthy;
            budget -= unhealthy;
        }
        // Then available ones, oldest set first, as far as availability allows.
        let available: i64 = sets.iter().map(|s| s.available().min(s.replicas)).sum();
        let mut scale_down = (available - min_available).min(budget).max(0);
        for (i, set) in sets.iter_mut().enumerate() {
            if i == new || scale_down <= 0 {
                continue;
            }
            let down = set.replicas.min(scale_down);
            set.replicas -= down;
            scale_down -= down;
        }
    }
    let old: i64 = sets.iter().enumerate().filter(|(i, _)| *i != new).map(|(_, s)| s.replicas).sum();
    if old == 0 && sets[new].replicas == desired {
        "rolled out".into()
    } else {
        format!("rolling: new {} of {desired}, old {old}", sets[new].replicas)
    }
}

/// The ReplicaSet of a new template, with `replicas` to start with.
fn new_replicaset(
    deployment: &Value,
    template: &Value,
    hash: &str,
    revision: i64,
    replicas: i64,
    desired: i64,
    max_surge: i64,
) -> Value {
    let mut template = template.clone();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = deployment.pointer("/spec/selector").cloned().unwrap_or_else(|| json!({}));
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut labels = template["metadata"]["labels"].clone();
    labels[HASH_LABEL] = json!(hash);
    let mut annotations = deployment.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({}));
    if let Some(a) = annotations.as_object_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        a.insert(REVISION.into(), json!(revision.to_string()));
        a.insert(DESIRED.into(), json!(desired.to_string()));
        a.insert(MAX_REPLICAS.into(), json!((desired + max_surge).to_string()));
    }
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", text(deployment, "/metadata/name")),
            "namespace": text(deployment, "/metadata/namespace"),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [controller_reference("apps/v1", "Deployment", deployment)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": deployment.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)),
            "selector": selector,
            "template": template,
        },
    })
}

/// Set condition `kind`, keeping its lastTransitionTime unless its status changes.
fn set_condition(status: &mut Value, kind: &str, value: &str, reason: &str, message: &str) {
    let mut conditions: Vec<Value> = status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let now = now();
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) => {
            if existing["status"] != value {
                existing["lastTransitionTime"] = json!(now);
            }
            if existing["status"] != value || existing["reason"] != reason || existing["message"] != message {
                existing["lastUpdateTime"] = json!(now);
            }
            existing["status"] = json!(value);
            existing["reason"] = json!(reason);
            existing["message"] = json!(message);
        }
        None => conditions.push(json!({"type": kind, "status": value, "reason": reason, "message": message, "lastTransitionTime": now, "lastUpdateTime": now})),
    }
    status["conditions"] = Value::Array(conditions);
}

/// Mark condition `kind` as updated now (progress was made).
fn touch_condition(status: &mut Value, kind: &str) {
    if let Some(condition) = status["conditions"].as_array_mut().and_then(|c| c.iter_mut().find(|c| c["type"] == kind))
    {
        condition["lastUpdateTime"] = json!(now());
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Seconds since the epoch of an RFC 3339 time (`2026-12-02T03:04:05Z`, fractions and
/// offsets other than Z not expected: Kubernetes writes conditions so).
fn epoch_seconds(text: &str) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn now() -> String {
    // WASI's clock: seconds since the epoch, written as RFC 3339.
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = seconds / 86_400;
    let (hour, minute, second) = ((seconds / 3600) % 24, (seconds / 60) % 60, seconds % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

wasmkube_controller_sdk::export_controller!(Deployments);
