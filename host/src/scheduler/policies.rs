//! The policies a cycle asks, each with its own copy of the node table kept current from
//! the cache (its sink), and how their answers combine: the **normalize** and **weighted
//! sum** steps of the cycle. A policy is a loaded `scheduler-policy` plugin or the
//! default policy compiled natively (the benchmark's baseline).
//!
//! The set follows the plugin set: a policy loaded, replaced or unloaded changes the
//! next cycle's set, never one under way.

use std::sync::Arc;

use parking_lot::Mutex;

use super::cache::Cache;
use super::native::DefaultPolicy;
use crate::plugins::policy_types::{Placement, Pod};
use crate::plugins::{Activity, CallError, LoadedPolicy, Mode, PluginSet, PolicyModule};

/// Whether a policy decides or only shows what it would decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Live,
    /// A candidate beside the live policy `of`.
    Shadow {
        of: String,
    },
}

enum Engine {
    Wasm(Arc<PolicyModule>),
    Native(Mutex<DefaultPolicy>),
}

/// One policy, as the cycle runs it.
pub struct Policy {
    pub name: String,
    pub weight: i64,
    pub role: Role,
    pub digest: String,
    pub activity: Arc<Activity>,
    engine: Engine,
    /// Its sink in the cache.
    sink: u64,
}

impl Policy {
    /// Bring its table up to date, then ask it to filter and score `candidates` for `pod`.
    /// An answer whose two score lists differ in length is the policy's error.
    pub async fn ask(
        &self,
        cache: &Mutex<Cache>,
        pod: &Pod,
        candidates: &[u32],
    ) -> Result<Result<Placement, String>, CallError> {
        let answer = self.call(cache, pod, candidates).await?;
        Ok(answer.and_then(|placement| {
            if placement.feasible.len() == placement.scores.len() {
                Ok(placement)
            } else {
                Err(format!(
                    "the policy answered {} feasible nodes with {} scores (placement.feasible and placement.scores must be as long)",
                    placement.feasible.len(),
                    placement.scores.len()
                ))
            }
        }))
    }

    async fn call(
        &self,
        cache: &Mutex<Cache>,
        pod: &Pod,
        candidates: &[u32],
    ) -> Result<Result<Placement, String>, CallError> {
        match &self.engine {
            Engine::Native(policy) => {
                let changes = cache.lock().take(self.sink);
                let mut policy = policy.lock();
                policy.apply(&changes);
                Ok(policy.schedule(pod, candidates))
            }
            Engine::Wasm(module) => {
                let mut session = module.session().await?;
                if session.is_new {
                    // A new instance after a failed call: it starts from the whole table.
                    cache.lock().reset_sink(self.sink);
                }
                let changes = cache.lock().take(self.sink);
                session.apply(&changes).await?;
                session.schedule(pod, candidates).await
            }
        }
    }
}

/// The policies serving, kept in step with the plugin set.
pub struct Policies {
    plugins: Arc<PluginSet>,
    /// The plugin set's generation (bumped on every load and unload).
    changes: tokio::sync::watch::Receiver<u64>,
    native: bool,
    generation: Option<u64>,
    current: Vec<(Option<Arc<LoadedPolicy>>, Arc<Policy>)>,
}

impl Policies {
    /// The loaded policy plugins, or (`native`) only the default policy compiled in.
    pub fn new(plugins: Arc<PluginSet>, native: bool) -> Self {
        let changes = plugins.changes();
        Self { plugins, changes, native, generation: None, current: Vec::new() }
    }

    /// The policies for the next cycle (sinks opened for new ones, closed for gone ones).
    pub fn refresh(&mut self, cache: &Mutex<Cache>) -> Result<Vec<Arc<Policy>>, String> {
        let generation = *self.changes.borrow_and_update();
        if self.generation == Some(generation) {
            return Ok(self.current.iter().map(|(_, p)| p.clone()).collect());
        }
        self.generation = Some(generation);
        if self.native {
            if self.current.is_empty() {
                let policy = DefaultPolicy::new("{}")?;
                let sink = cache.lock().open_sink();
                self.current.push((
                    None,
                    Arc::new(Policy {
                        name: "default-policy (native)".into(),
                        weight: 1,
                        role: Role::Live,
                        digest: "native".into(),
                        activity: Arc::default(),
                        engine: Engine::Native(Mutex::new(policy)),
                        sink,
                    }),
                ));
            }
            return Ok(self.current.iter().map(|(_, p)| p.clone()).collect());
        }
        let loaded = self.plugins.policies();
        let mut next = Vec::with_capacity(loaded.len());
        for plugin in loaded.iter() {
            let kept = self.current.iter().position(|(l, _)| l.as_ref().is_some_and(|l| Arc::ptr_eq(l, plugin)));
            if let Some(at) = kept {
                next.push(self.current.swap_remove(at));
                continue;
            }
            let role = match &plugin.manifest.mode {
                Mode::Shadow { of } => Role::Shadow { of: of.clone() },
                Mode::Enforce => Role::Live,
                // Audit means nothing here: a policy that only advises is a shadow.
                Mode::Audit => continue,
            };
            let sink = cache.lock().open_sink();
            tracing::info!(policy = %plugin.manifest.name, digest = %plugin.module.digest, ?role, "scheduler policy in use");
            next.push((
                Some(plugin.clone()),
                Arc::new(Policy {
                    name: plugin.manifest.name.clone(),
                    weight: plugin.manifest.weight,
                    role,
                    digest: plugin.module.digest.clone(),
                    activity: plugin.activity.clone(),
                    engine: Engine::Wasm(plugin.module.clone()),
                    sink,
                }),
            ));
        }
        for (_, gone) in self.current.drain(..) {
            cache.lock().close_sink(gone.sink);
        }
        self.current = next;
        Ok(self.current.iter().map(|(_, p)| p.clone()).collect())
    }
}

/// The policies' answers combined: per candidate, the weighted sum of each policy's
/// scores normalized onto 0..=100 (None where any policy rejected it), and the reasons.
pub struct Combined {
    /// By node index.
    pub totals: Vec<Option<i64>>,
    /// (reason, nodes it rejected), as Kubernetes counts them.
    pub reasons: Vec<(String, usize)>,
}

/// kube-scheduler's normalize and weighted-sum steps over `answers` (policy weight,
/// placement). A candidate a policy neither scores nor rejects counts as rejected.
pub fn combine(candidates: &[u32], answers: &[(i64, &Placement)]) -> Combined {
    let size = candidates.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut totals: Vec<Option<i64>> = vec![None; size];
    for &c in candidates {
        totals[c as usize] = Some(0);
    }
    let mut rejected: std::collections::HashMap<&str, std::collections::HashSet<u32>> = Default::default();
    for (weight, placement) in answers {
        let max = placement.scores.iter().copied().max().unwrap_or(0);
        let mut scored = vec![false; size];
        for (&node, &score) in placement.feasible.iter().zip(&placement.scores) {
            let Some(slot) = totals.get_mut(node as usize) else { continue };
            let normalized = if max > 100 { score.max(0) * 100 / max } else { score.clamp(0, 100) };
            if let Some(total) = slot {
                *total += weight * normalized;
            }
            scored[node as usize] = true;
        }
        for r in &placement.rejections {
            if let Some(text) = placement.reasons.get(r.reason as usize) {
                rejected.entry(text.as_str()).or_default().insert(r.node);
            }
        }
        for (i, total) in totals.iter_mut().enumerate() {
            if !scored[i] {
                *total = None;
            }
        }
    }
    let mut reasons: Vec<(String, usize)> =
        rejected.into_iter().map(|(r, nodes)| (r.to_string(), nodes.len())).collect();
    reasons.sort();
    Combined { totals, reasons }
}

/// "0/3 nodes are available: 1 node(s) had untolerated taint {a: b}, 2 Insufficient cpu."
pub fn unschedulable_message(nodes: usize, reasons: &[(String, usize)]) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut parts: Vec<String> = reasons.iter().map(|(reason, count)| format!("{count} {reason}")).collect();
    parts.sort();
    if parts.is_empty() {
        return format!("0/{nodes} nodes are available.");
    }
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::policy_types::Rejection;

    #[test]
    fn scores_normalize_per_policy_and_sum_by_weight_and_rejections_count_per_node() {
        let a = Placement {
            feasible: vec![0, 1],
            scores: vec![800, 400],
            rejections: vec![Rejection { node: 2, reason: 0 }, Rejection { node: 2, reason: 1 }],
            reasons: vec!["Insufficient cpu".into(), "Insufficient memory".into()],
        };
        let b = Placement {
            feasible: vec![0, 1],
            scores: vec![10, 90],
            rejections: vec![Rejection { node: 2, reason: 0 }],
            reasons: vec!["Insufficient cpu".into()],
        };
        let combined = combine(&[0, 1, 2], &[(1, &a), (2, &b)]);
        assert_eq!(combined.totals, vec![Some(100 + 20), Some(50 + 180), None]);
        assert_eq!(combined.reasons, vec![("Insufficient cpu".into(), 1), ("Insufficient memory".into(), 1)]);
        assert_eq!(
            unschedulable_message(3, &combined.reasons),
            "0/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
        );
        assert_eq!(unschedulable_message(0, &[]), "no nodes available to schedule pods");
    }
}
