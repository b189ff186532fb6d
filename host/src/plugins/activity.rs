//! What each plugin has done since this server started: calls, denials and failed calls,
//! and — for a `Shadow` candidate — where it decided otherwise than its live plugin (a
//! count and the last few cases). Kept by plugin name, so it spans reloads; the Plugin
//! controller copies it into each Plugin's status.
//!
//! Only counters and a short list: nothing here runs or decides.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::{json, Value};

/// How many disagreements a shadow keeps (oldest dropped first).
pub const KEPT_DISAGREEMENTS: usize = 10;

/// The most calls a shadow has under way; past it, requests go without its opinion (and
/// are counted as `skipped`), so a slow candidate never ties up the instance pool.
pub const SHADOW_IN_FLIGHT: usize = 16;

/// What one call decided, as a shadow is compared on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; with the JSON patch it answered (mutate), if any.
    Allowed {
        patch: Option<String>,
    },
    Denied {
        code: u16,
        message: String,
    },
    /// The call did not decide (trap, timeout, out of memory).
    Failed(String),
    /// A controller's reconcile: the writes it answered, each described (verb, resource,
    /// object) with its body.
    Actions(Vec<(String, Value)>),
    /// A scheduling decision: the node picked (none: the pod fits nowhere) and its score.
    Placement {
        node: Option<String>,
        score: i64,
    },
}

impl Verdict {
    /// Whether two verdicts decide the same: both allow with the same patch, both deny
    /// with the same code, or both fail. (Messages may be worded differently.)
    pub fn agrees_with(&self, other: &Verdict) -> bool {
        match (self, other) {
            (Verdict::Allowed { patch: a }, Verdict::Allowed { patch: b }) => same_patch(a.as_deref(), b.as_deref()),
            (Verdict::Denied { code: a, .. }, Verdict::Denied { code: b, .. }) => a == b,
            (Verdict::Failed(_), Verdict::Failed(_)) => true,
            (Verdict::Placement { node: a, .. }, Verdict::Placement { node: b, .. }) => a == b,
            // The same writes, in any order (bodies compared as JSON, key order aside).
            (Verdict::Actions(a), Verdict::Actions(b)) => {
                let mut unmatched: Vec<&(String, Value)> = b.iter().collect();
                a.len() == b.len()
                    && a.iter().all(|action| match unmatched.iter().position(|other| *other == action) {
                        Some(found) => {
                            unmatched.swap_remove(found);
                            true
                        }
                        None => false,
                    })
            }
            _ => false,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Verdict::Allowed { patch: None } => json!({"allowed": true}),
            Verdict::Allowed { patch: Some(patch) } => json!({"allowed": true, "patch": patch}),
            Verdict::Denied { code, message } => json!({"allowed": false, "code": code, "message": message}),
            Verdict::Failed(why) => json!({"failed": why}),
            Verdict::Placement { node, score } => json!({"node": node, "score": score}),
            Verdict::Actions(actions) => json!({
                "actions": actions.iter().map(|(what, body)| json!({"action": what, "body": body})).collect::<Vec<_>>()
            }),
        }
    }
}

/// Patches compared as JSON (an empty patch is no patch).
fn same_patch(a: Option<&str>, b: Option<&str>) -> bool {
    let parse = |p: Option<&str>| -> Value {
        match p.map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Array(ops))) if ops.is_empty() => Value::Null,
            Some(Ok(value)) => value,
            Some(Err(_)) => Value::String(p.unwrap_or_default().to_string()),
            None => Value::Null,
        }
    };
    parse(a) == parse(b)
}

/// One request on which a shadow and its live plugin decided differently.
#[derive(Clone, Debug)]
pub struct Disagreement {
    pub at: String,
    /// `CREATE pods default/web`.
    pub request: String,
    pub function: &'static str,
    pub live: Verdict,
    pub live_digest: String,
    pub shadow: Verdict,
    pub shadow_digest: String,
}

impl Disagreement {
    fn to_json(&self) -> Value {
        json!({
            "time": self.at,
            "request": self.request,
            "function": self.function,
            "live": self.live.to_json(),
            "liveDigest": self.live_digest,
            "shadow": self.shadow.to_json(),
            "shadowDigest": self.shadow_digest,
        })
    }
}

/// One plugin's activity.
#[derive(Default)]
pub struct Activity {
    calls: AtomicU64,
    denials: AtomicU64,
    errors: AtomicU64,
    disagreements: AtomicU64,
    recent: Mutex<VecDeque<Disagreement>>,
    /// A shadow controller's last reconciles beside its live one, agreeing or not.
    compared: Mutex<VecDeque<Disagreement>>,
    /// A shadow's calls under way, and the requests it skipped because too many were.
    in_flight: AtomicU64,
    skipped: AtomicU64,
    /// Bumped on every change: the controller writes status only when it moved.
    version: AtomicU64,
}

impl Activity {
    /// Count one call: `Some(allowed)` if it decided, `None` if it failed.
    pub fn record(&self, decided: Option<bool>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match decided {
            Some(true) => {}
            Some(false) => {
                self.denials.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    pub fn disagreed(&self, disagreement: Disagreement) {
        self.disagreements.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock();
        if recent.len() == KEPT_DISAGREEMENTS {
            recent.pop_front();
        }
        recent.push_back(disagreement);
        drop(recent);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Keep a shadow controller's reconcile beside its live one (the last
    /// [`KEPT_DISAGREEMENTS`]), and count it as a disagreement if the two differ.
    pub fn compared(&self, comparison: Disagreement) {
        let agrees = comparison.live.agrees_with(&comparison.shadow);
        {
            let mut compared = self.compared.lock();
            if compared.len() == KEPT_DISAGREEMENTS {
                compared.pop_front();
            }
            compared.push_back(comparison.clone());
        }
        if agrees {
            self.version.fetch_add(1, Ordering::Release);
        } else {
            self.disagreed(comparison);
        }
    }

    /// Take one of a shadow's [`SHADOW_IN_FLIGHT`] call slots; `None` (counted) when all
    /// are taken. The slot is given back when the guard drops.
    pub fn enter_shadow(self: &std::sync::Arc<Self>) -> Option<ShadowSlot> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= SHADOW_IN_FLIGHT as u64 {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.skipped.fetch_add(1, Ordering::Relaxed);
            self.version.fetch_add(1, Ordering::Release);
            return None;
        }
        Some(ShadowSlot(self.clone()))
    }

    /// Changes whenever anything here does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The fields of a Plugin's status this owns: `calls`, `denials`, `errors`, and for a
    /// shadow `disagreements` and `lastDisagreements` (newest first).
    pub fn status_fields(&self, shadow: bool) -> serde_json::Map<String, Value> {
        let mut fields = serde_json::Map::new();
        fields.insert("calls".into(), json!(self.calls.load(Ordering::Relaxed)));
        fields.insert("denials".into(), json!(self.denials.load(Ordering::Relaxed)));
        fields.insert("errors".into(), json!(self.errors.load(Ordering::Relaxed)));
        if shadow {
            fields.insert("disagreements".into(), json!(self.disagreements.load(Ordering::Relaxed)));
            fields.insert("skipped".into(), json!(self.skipped.load(Ordering::Relaxed)));
            let recent: Vec<Value> = self.recent.lock().iter().rev().map(Disagreement::to_json).collect();
            fields.insert("lastDisagreements".into(), Value::Array(recent));
            let compared: Vec<Value> = self.compared.lock().iter().rev().map(Disagreement::to_json).collect();
            if !compared.is_empty() {
                fields.insert("lastReconciles".into(), Value::Array(compared));
            }
        }
        fields
    }
}

/// One of a shadow's call slots, held while its call runs.
pub struct ShadowSlot(std::sync::Arc<Activity>);

impl Drop for ShadowSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_agree_on_the_decision_not_the_wording() {
        let allow = Verdict::Allowed { patch: None };
        let empty_patch = Verdict::Allowed { patch: Some("[]".into()) };
        let deny = |code: u16, message: &str| Verdict::Denied { code, message: message.into() };
        assert!(allow.agrees_with(&empty_patch));
        assert!(deny(403, "no").agrees_with(&deny(403, "nope")));
        assert!(!deny(403, "no").agrees_with(&deny(422, "no")));
        assert!(!allow.agrees_with(&deny(403, "no")));
        assert!(!allow.agrees_with(&Verdict::Failed("trap".into())));
        let patch = |text: &str| Verdict::Allowed { patch: Some(text.into()) };
        assert!(patch(r#"[{"op":"add","path":"/a","value":1}]"#)
            .agrees_with(&patch(r#"[{"path":"/a","op":"add","value":1}]"#)));
        assert!(!patch(r#"[{"op":"add","path":"/a","value":1}]"#)
            .agrees_with(&patch(r#"[{"op":"add","path":"/a","value":2}]"#)));
    }

    #[test]
    fn a_shadow_keeps_its_last_disagreements_newest_first() {
        let activity = Activity::default();
        for i in 0..(KEPT_DISAGREEMENTS + 3) {
            activity.record(Some(false));
            activity.disagreed(Disagreement {
                at: String::new(),
                request: format!("CREATE pods default/p{i}"),
                function: "validate",
                live: Verdict::Allowed { patch: None },
                live_digest: "sha256:a".into(),
                shadow: Verdict::Denied { code: 403, message: "no".into() },
                shadow_digest: "sha256:b".into(),
            });
        }
        let fields = activity.status_fields(true);
        assert_eq!(fields["calls"], json!(KEPT_DISAGREEMENTS + 3));
        assert_eq!(fields["denials"], json!(KEPT_DISAGREEMENTS + 3));
        assert_eq!(fields["disagreements"], json!(KEPT_DISAGREEMENTS + 3));
        let last = fields["lastDisagreements"].as_array().expect("list");
        let activity = std::sync::Arc::new(activity);
        let slots: Vec<ShadowSlot> = (0..SHADOW_IN_FLIGHT).filter_map(|_| activity.enter_shadow()).collect();
        assert_eq!(slots.len(), SHADOW_IN_FLIGHT);
        assert!(activity.enter_shadow().is_none(), "all slots taken");
        drop(slots);
        assert!(activity.enter_shadow().is_some(), "given back");
        assert_eq!(activity.status_fields(true)["skipped"], json!(1));
        assert_eq!(last.len(), KEPT_DISAGREEMENTS);
        assert_eq!(last[0]["request"], format!("CREATE pods default/p{}", KEPT_DISAGREEMENTS + 2));
    }
}
