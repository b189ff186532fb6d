//! The default scheduling policy: kube-scheduler's default filters and scores, over the
//! node table the host keeps this policy told of (nodes, and the pods bound or assumed on
//! them).
//!
//! Filters, in kube-scheduler's order (a node is rejected by the first that fails, with
//! Kubernetes' reason): NodeUnschedulable, NodeName, TaintToleration, NodeAffinity
//! (`nodeSelector` and required node affinity), NodeResourcesFit (cpu, memory,
//! ephemeral-storage, pods), PodTopologySpread (`DoNotSchedule` constraints).
//! Scores (each 0..=100, weighted as kube-scheduler's default profile): TaintToleration
//! ×3 (fewer untolerated `PreferNoSchedule` taints), NodeAffinity ×2 (preferred terms),
//! NodeResourcesFit ×1 (`LeastAllocated`, or `MostAllocated` by config), PodTopologySpread
//! ×2 (`ScheduleAnyway` constraints).
//!
//! This file is compiled twice over the same WIT types: into the plugin (`lib.rs`, the
//! guest bindings) and natively into the host (`host/src/scheduler/native.rs`, the host
//! bindings), so the benchmark's native baseline is this very code. It may use only
//! `std`, `serde_json` and the types of `super::types`.

use std::collections::{HashMap, HashSet};

use super::types::{
    Change, LabelSelector, Node, NodeScore, NodeSelectorTerm, PlacedPod, Placement, Pod, Rejection, SelectorOperator,
    SelectorRequirement, SpreadConstraint, TaintEffect, TolerationOperator, UnsatisfiableAction,
};

/// What kube-scheduler assumes a container asks for when it names nothing (for scores only).
const DEFAULT_MILLI_CPU: u64 = 100;
const DEFAULT_MEMORY: u64 = 200 << 20;
const MAX_SCORE: i64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scoring {
    LeastAllocated,
    MostAllocated,
}

/// The policy's config (the Plugin's `spec.config`).
#[derive(Clone, Debug)]
struct Config {
    scoring: Scoring,
    fit_weight: i64,
    taint_weight: i64,
    affinity_weight: i64,
    spread_weight: i64,
}

impl Config {
    fn parse(text: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("config is not JSON: {e}"))?;
        let scoring = match value.get("scoringStrategy").and_then(|s| s.as_str()) {
            None | Some("LeastAllocated") => Scoring::LeastAllocated,
            Some("MostAllocated") => Scoring::MostAllocated,
            Some(other) => {
                return Err(format!("scoringStrategy must be LeastAllocated or MostAllocated, not {other:?}"))
            }
        };
        let weight = |name: &str, default: i64| -> Result<i64, String> {
            match value.pointer(&format!("/weights/{name}")) {
                None => Ok(default),
                Some(w) => w
                    .as_i64()
                    .filter(|w| (0..=100).contains(w))
                    .ok_or_else(|| format!("weights.{name} must be a number from 0 to 100, not {w}")),
            }
        };
        Ok(Self {
            scoring,
            fit_weight: weight("NodeResourcesFit", 1)?,
            taint_weight: weight("TaintToleration", 3)?,
            affinity_weight: weight("NodeAffinity", 2)?,
            spread_weight: weight("PodTopologySpread", 2)?,
        })
    }
}

/// What is allocated on a node: the sum of its pods' requests.
#[derive(Clone, Copy, Debug, Default)]
struct Allocated {
    milli_cpu: u64,
    memory: u64,
    ephemeral_storage: u64,
    pods: u32,
    /// With kube-scheduler's defaults for pods that ask for nothing (for scores).
    nonzero_milli_cpu: u64,
    nonzero_memory: u64,
}

impl Allocated {
    fn add(&mut self, pod: &PlacedPod, sign: i64) {
        let apply = |total: &mut u64, amount: u64| {
            *total = if sign > 0 { total.saturating_add(amount) } else { total.saturating_sub(amount) }
        };
        let r = &pod.requests;
        apply(&mut self.milli_cpu, r.milli_cpu);
        apply(&mut self.memory, r.memory);
        apply(&mut self.ephemeral_storage, r.ephemeral_storage);
        apply(&mut self.nonzero_milli_cpu, nonzero(r.milli_cpu, DEFAULT_MILLI_CPU));
        apply(&mut self.nonzero_memory, nonzero(r.memory, DEFAULT_MEMORY));
        self.pods = if sign > 0 { self.pods.saturating_add(1) } else { self.pods.saturating_sub(1) };
    }
}

fn nonzero(amount: u64, default: u64) -> u64 {
    if amount == 0 {
        default
    } else {
        amount
    }
}

struct NodeState {
    node: Node,
    allocated: Allocated,
}

/// The policy and its node table.
pub struct DefaultPolicy {
    config: Config,
    /// By node index (the host's; indices of removed nodes stay empty).
    nodes: Vec<Option<NodeState>>,
    pods: HashMap<u64, PlacedPod>,
    /// Pod ids by namespace (topology spread counts pods of the pod's namespace).
    by_namespace: HashMap<String, HashSet<u64>>,
}

/// Reasons, each once, as the placement names them.
#[derive(Default)]
struct Reasons {
    texts: Vec<String>,
    index: HashMap<String, u32>,
}

impl Reasons {
    fn of(&mut self, text: &str) -> u32 {
        if let Some(i) = self.index.get(text) {
            return *i;
        }
        let i = self.texts.len() as u32;
        self.texts.push(text.to_string());
        self.index.insert(text.to_string(), i);
        i
    }
}

/// A topology spread constraint's counts for one pod: matching pods per domain, over
/// the nodes the pod could go to that have the topology label.
struct Spread<'a> {
    constraint: &'a SpreadConstraint,
    counts: HashMap<&'a str, i64>,
    /// The fewest matching pods in a domain (0 if there are fewer domains than minDomains).
    min: i64,
    self_match: i64,
}

impl DefaultPolicy {
    pub fn new(config: &str) -> Result<Self, String> {
        Ok(Self {
            config: Config::parse(config)?,
            nodes: Vec::new(),
            pods: HashMap::new(),
            by_namespace: HashMap::new(),
        })
    }

    /// Follow the host's changes to the node table.
    pub fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::NodeSet(node) => {
                    let i = node.index as usize;
                    if self.nodes.len() <= i {
                        self.nodes.resize_with(i + 1, || None);
                    }
                    let allocated = self.nodes[i].as_ref().map(|s| s.allocated).unwrap_or_default();
                    self.nodes[i] = Some(NodeState { node: node.clone(), allocated });
                }
                Change::NodeRemoved(index) => {
                    if let Some(slot) = self.nodes.get_mut(*index as usize) {
                        *slot = None;
                    }
                }
                Change::PodPlaced(pod) => {
                    self.remove_pod(pod.id);
                    if let Some(Some(state)) = self.nodes.get_mut(pod.node as usize) {
                        state.allocated.add(pod, 1);
                    }
                    self.by_namespace.entry(pod.namespace.clone()).or_default().insert(pod.id);
                    self.pods.insert(pod.id, pod.clone());
                }
                Change::PodRemoved(id) => self.remove_pod(*id),
            }
        }
    }

    fn remove_pod(&mut self, id: u64) {
        let Some(old) = self.pods.remove(&id) else { return };
        if let Some(Some(state)) = self.nodes.get_mut(old.node as usize) {
            state.allocated.add(&old, -1);
        }
        if let Some(ids) = self.by_namespace.get_mut(&old.namespace) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_namespace.remove(&old.namespace);
            }
        }
    }

    /// Filter and score `candidates` for `pod`.
    pub fn schedule(&self, pod: &Pod, candidates: &[u32]) -> Result<Placement, String> {
        let mut reasons = Reasons::default();
        let mut rejections = Vec::new();
        let hard: Vec<Spread> = pod
            .spread_constraints
            .iter()
            .filter(|c| matches!(c.when_unsatisfiable, UnsatisfiableAction::DoNotSchedule))
            .map(|c| self.spread(pod, c))
            .collect();
        let mut feasible: Vec<&NodeState> = Vec::with_capacity(candidates.len());
        for &index in candidates {
            let Some(Some(state)) = self.nodes.get(index as usize) else {
                rejections.push(Rejection { node: index, reason: reasons.of("node(s) were not found") });
                continue;
            };
            match self.filter(pod, state, &hard) {
                Ok(()) => feasible.push(state),
                Err(why) => {
                    for text in why {
                        rejections.push(Rejection { node: index, reason: reasons.of(&text) });
                    }
                }
            }
        }
        let scores = self.score(pod, &feasible);
        Ok(Placement { scores, rejections, reasons: reasons.texts })
    }

    /// Why `state` cannot take `pod` (empty: it can).
    fn filter(&self, pod: &Pod, state: &NodeState, spread: &[Spread]) -> Result<(), Vec<String>> {
        let node = &state.node;
        // NodeUnschedulable
        if node.unschedulable
            && !pod
                .tolerations
                .iter()
                .any(|t| tolerates(t, "node.kubernetes.io/unschedulable", "", TaintEffect::NoSchedule))
        {
            return Err(vec!["node(s) were unschedulable".into()]);
        }
        // NodeName
        if let Some(name) = pod.node_name.as_deref().filter(|n| !n.is_empty()) {
            if name != node.name {
                return Err(vec!["node(s) didn't match the requested node name".into()]);
            }
        }
        // TaintToleration
        for taint in &node.taints {
            if matches!(taint.effect, TaintEffect::PreferNoSchedule) {
                continue;
            }
            if !pod.tolerations.iter().any(|t| tolerates(t, &taint.key, &taint.value, taint.effect)) {
                return Err(vec![format!("node(s) had untolerated taint {{{}: {}}}", taint.key, taint.value)]);
            }
        }
        // NodeAffinity
        if !node_affinity_matches(pod, node) {
            return Err(vec!["node(s) didn't match Pod's node affinity/selector".into()]);
        }
        // NodeResourcesFit
        let (have, r) = (&state.allocated, &pod.requests);
        let mut insufficient = Vec::new();
        if have.pods.saturating_add(1) > node.allocatable.pods {
            insufficient.push("Too many pods".to_string());
        }
        if r.milli_cpu > 0 && have.milli_cpu.saturating_add(r.milli_cpu) > node.allocatable.milli_cpu {
            insufficient.push("Insufficient cpu".into());
        }
        if r.memory > 0 && have.memory.saturating_add(r.memory) > node.allocatable.memory {
            insufficient.push("Insufficient memory".into());
        }
        if r.ephemeral_storage > 0
            && have.ephemeral_storage.saturating_add(r.ephemeral_storage) > node.allocatable.ephemeral_storage
        {
            insufficient.push("Insufficient ephemeral-storage".into());
        }
        if !insufficient.is_empty() {
            return Err(insufficient);
        }
        // PodTopologySpread (DoNotSchedule)
        for s in spread {
            let Some(domain) = label(&node.labels, &s.constraint.topology_key) else {
                return Err(vec![
                    "node(s) didn't match pod topology spread constraints (missing required label)".into()
                ]);
            };
            let count = s.counts.get(domain).copied().unwrap_or(0);
            if count + s.self_match - s.min > i64::from(s.constraint.max_skew) {
                return Err(vec!["node(s) didn't match pod topology spread constraints".into()]);
            }
        }
        Ok(())
    }

    /// Matching pods per domain of `constraint`, over the nodes `pod` may go to.
    fn spread<'a>(&'a self, pod: &'a Pod, constraint: &'a SpreadConstraint) -> Spread<'a> {
        let key = constraint.topology_key.as_str();
        let mut counts: HashMap<&str, i64> = HashMap::new();
        let mut eligible = vec![false; self.nodes.len()];
        for (i, state) in self.nodes.iter().enumerate() {
            let Some(state) = state else { continue };
            if !node_affinity_matches(pod, &state.node) {
                continue;
            }
            if let Some(domain) = label(&state.node.labels, key) {
                counts.entry(domain).or_insert(0);
                eligible[i] = true;
            }
        }
        for id in self.by_namespace.get(&pod.namespace).into_iter().flatten() {
            let Some(placed) = self.pods.get(id) else { continue };
            if !eligible.get(placed.node as usize).copied().unwrap_or(false)
                || !selects(&constraint.selector, &placed.labels)
            {
                continue;
            }
            if let Some(Some(state)) = self.nodes.get(placed.node as usize) {
                if let Some(domain) = label(&state.node.labels, key) {
                    *counts.entry(domain).or_insert(0) += 1;
                }
            }
        }
        let domains = counts.len() as u32;
        let min = if constraint.min_domains.is_some_and(|m| domains < m) {
            0
        } else {
            counts.values().copied().min().unwrap_or(0)
        };
        let self_match = i64::from(selects(&constraint.selector, &pod.labels));
        Spread { constraint, counts, min, self_match }
    }

    /// The weighted score of each feasible node.
    fn score(&self, pod: &Pod, feasible: &[&NodeState]) -> Vec<NodeScore> {
        if feasible.is_empty() {
            return Vec::new();
        }
        let c = &self.config;
        // TaintToleration: untolerated PreferNoSchedule taints, fewer is better.
        let taints: Vec<i64> = feasible
            .iter()
            .map(|s| {
                s.node
                    .taints
                    .iter()
                    .filter(|t| matches!(t.effect, TaintEffect::PreferNoSchedule))
                    .filter(|t| !pod.tolerations.iter().any(|tol| tolerates(tol, &t.key, &t.value, t.effect)))
                    .count() as i64
            })
            .collect();
        let taints = normalize(&taints, true);
        // NodeAffinity: the weights of the preferred terms a node matches.
        let affinity: Vec<i64> = feasible
            .iter()
            .map(|s| {
                pod.preferred_node_affinity
                    .iter()
                    .filter(|p| term_matches(&p.preference, &s.node))
                    .map(|p| i64::from(p.weight))
                    .sum()
            })
            .collect();
        let affinity = normalize(&affinity, false);
        // PodTopologySpread (ScheduleAnyway): fewer matching pods in the node's domains is better.
        let soft: Vec<Spread> = pod
            .spread_constraints
            .iter()
            .filter(|c| matches!(c.when_unsatisfiable, UnsatisfiableAction::ScheduleAnyway))
            .map(|c| self.spread(pod, c))
            .collect();
        let spread = if soft.is_empty() { vec![MAX_SCORE; feasible.len()] } else { spread_scores(&soft, feasible) };
        feasible
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let fit = fit_score(c.scoring, pod, s);
                NodeScore {
                    node: s.node.index,
                    score: fit * c.fit_weight
                        + taints[i] * c.taint_weight
                        + affinity[i] * c.affinity_weight
                        + spread[i] * c.spread_weight,
                }
            })
            .collect()
    }
}

/// NodeResourcesFit's score of cpu and memory (equal weights), 0..=100.
fn fit_score(scoring: Scoring, pod: &Pod, state: &NodeState) -> i64 {
    let one = |allocated: u64, asked: u64, capacity: u64| -> i64 {
        if capacity == 0 {
            return 0;
        }
        let requested = allocated.saturating_add(asked);
        match scoring {
            Scoring::LeastAllocated if requested > capacity => 0,
            Scoring::LeastAllocated => percent_of(capacity - requested, capacity),
            Scoring::MostAllocated => percent_of(requested.min(capacity), capacity),
        }
    };
    let a = &state.allocated;
    let cpu =
        one(a.nonzero_milli_cpu, nonzero(pod.requests.milli_cpu, DEFAULT_MILLI_CPU), state.node.allocatable.milli_cpu);
    let memory = one(a.nonzero_memory, nonzero(pod.requests.memory, DEFAULT_MEMORY), state.node.allocatable.memory);
    (cpu + memory) / 2
}

/// `part` × 100 / `whole` (`part` ≤ `whole`, `whole` > 0), rounded down. In u64 unless
/// the product overflows: a u128 division is a slow library call, in WebAssembly most.
fn percent_of(part: u64, whole: u64) -> i64 {
    match part.checked_mul(MAX_SCORE as u64) {
        Some(product) => (product / whole) as i64,
        None => (part as u128 * MAX_SCORE as u128 / whole as u128) as i64,
    }
}

/// kube-scheduler's PodTopologySpread score: per node the matching pods of its domains,
/// each constraint weighted by log(domains + 2), then reversed onto 0..=100.
fn spread_scores(soft: &[Spread], feasible: &[&NodeState]) -> Vec<i64> {
    let raw: Vec<Option<f64>> = feasible
        .iter()
        .map(|s| {
            let mut total = 0.0;
            for spread in soft {
                let domain = label(&s.node.labels, &spread.constraint.topology_key)?;
                let weight = ((spread.counts.len() + 2) as f64).ln();
                total += spread.counts.get(domain).copied().unwrap_or(0) as f64 * weight;
            }
            Some(total)
        })
        .collect();
    let present = raw.iter().flatten().copied();
    let max = present.clone().fold(f64::MIN, f64::max);
    let min = present.fold(f64::MAX, f64::min);
    raw.iter()
        .map(|score| match score {
            None => 0,
            Some(_) if max <= 0.0 => MAX_SCORE,
            Some(s) => (MAX_SCORE as f64 * (max + min - s) / max) as i64,
        })
        .collect()
}

/// kube-scheduler's DefaultNormalizeScore: onto 0..=100 by the highest, reversed if asked.
fn normalize(scores: &[i64], reverse: bool) -> Vec<i64> {
    let max = scores.iter().copied().max().unwrap_or(0);
    scores
        .iter()
        .map(|&s| {
            if max == 0 {
                if reverse {
                    MAX_SCORE
                } else {
                    0
                }
            } else {
                let n = s * MAX_SCORE / max;
                if reverse {
                    MAX_SCORE - n
                } else {
                    n
                }
            }
        })
        .collect()
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Whether toleration `t` tolerates the taint (key, value, effect), as Kubernetes decides.
fn tolerates(t: &super::types::Toleration, key: &str, value: &str, effect: TaintEffect) -> bool {
    if let Some(e) = t.effect {
        if std::mem::discriminant(&e) != std::mem::discriminant(&effect) {
            return false;
        }
    }
    if !t.key.is_empty() && t.key != key {
        return false;
    }
    match t.operator {
        TolerationOperator::Exists => true,
        TolerationOperator::Equal => t.value == value,
    }
}

/// `nodeSelector` and the required node affinity (terms ORed).
fn node_affinity_matches(pod: &Pod, node: &Node) -> bool {
    if !pod.node_selector.iter().all(|(k, v)| label(&node.labels, k) == Some(v.as_str())) {
        return false;
    }
    pod.required_node_affinity.is_empty() || pod.required_node_affinity.iter().any(|term| term_matches(term, node))
}

/// A node selector term: every expression and field requirement holds (an empty term
/// matches nothing, as in Kubernetes).
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return false;
    }
    term.match_expressions.iter().all(|r| requirement_matches(r, label(&node.labels, &r.key)))
        && term.match_fields.iter().all(|r| {
            let field = (r.key == "metadata.name").then_some(node.name.as_str());
            requirement_matches(r, field)
        })
}

fn requirement_matches(r: &SelectorRequirement, value: Option<&str>) -> bool {
    let number = |text: &str| text.parse::<i64>().ok();
    match r.operator {
        SelectorOperator::In => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
        SelectorOperator::NotIn => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
        SelectorOperator::Exists => value.is_some(),
        SelectorOperator::DoesNotExist => value.is_none(),
        SelectorOperator::Gt => match (value.and_then(number), r.values.first().and_then(|x| number(x))) {
            (Some(v), Some(bound)) => v > bound,
            _ => false,
        },
        SelectorOperator::Lt => match (value.and_then(number), r.values.first().and_then(|x| number(x))) {
            (Some(v), Some(bound)) => v < bound,
            _ => false,
        },
    }
}

/// Whether a label selector selects `labels` (an empty selector selects everything).
fn selects(selector: &LabelSelector, labels: &[(String, String)]) -> bool {
    selector.match_labels.iter().all(|(k, v)| label(labels, k) == Some(v.as_str()))
        && selector.match_expressions.iter().all(|r| requirement_matches(r, label(labels, &r.key)))
}

/// Run natively in the host's unit tests (`host/src/scheduler/native.rs` includes this
/// file): each filter and score against what Kubernetes documents.
#[cfg(test)]
mod tests {
    use super::super::types::{
        Change, LabelSelector, Node, NodeSelectorTerm, PlacedPod, Pod, PreferredTerm, Resources, SelectorOperator,
        SelectorRequirement, SpreadConstraint, Taint, TaintEffect, Toleration, TolerationOperator, UnsatisfiableAction,
    };
    use super::DefaultPolicy;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn resources(milli_cpu: u64, pods: u32) -> Resources {
        Resources { milli_cpu, memory: 8 << 30, ephemeral_storage: 0, pods }
    }

    fn node(index: u32, labels: &[(&str, &str)], taints: Vec<Taint>) -> Change {
        Change::NodeSet(Node {
            index,
            name: format!("node-{index}"),
            labels: pairs(labels),
            allocatable: resources(1000, 10),
            taints,
            unschedulable: false,
        })
    }

    fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint { key: key.into(), value: value.into(), effect }
    }

    fn placed(id: u64, node: u32, labels: &[(&str, &str)], milli_cpu: u64) -> Change {
        Change::PodPlaced(PlacedPod {
            id,
            node,
            namespace: "default".into(),
            labels: pairs(labels),
            requests: Resources { milli_cpu, memory: 0, ephemeral_storage: 0, pods: 1 },
        })
    }

    fn pod(milli_cpu: u64) -> Pod {
        Pod {
            namespace: "default".into(),
            name: "p".into(),
            uid: "u".into(),
            labels: pairs(&[("app", "web")]),
            annotations: Vec::new(),
            requests: Resources { milli_cpu, memory: 0, ephemeral_storage: 0, pods: 1 },
            node_name: None,
            node_selector: Vec::new(),
            required_node_affinity: Vec::new(),
            preferred_node_affinity: Vec::new(),
            tolerations: Vec::new(),
            spread_constraints: Vec::new(),
            priority: 0,
        }
    }

    fn requirement(key: &str, operator: SelectorOperator, values: &[&str]) -> SelectorRequirement {
        SelectorRequirement { key: key.into(), operator, values: values.iter().map(|v| v.to_string()).collect() }
    }

    fn term(expressions: Vec<SelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm { match_expressions: expressions, match_fields: Vec::new() }
    }

    fn policy(config: &str, changes: &[Change]) -> DefaultPolicy {
        let mut policy = DefaultPolicy::new(config).expect("config");
        policy.apply(changes);
        policy
    }

    /// (feasible node indices, by score, best first; each rejected index with its reasons).
    fn ask(policy: &DefaultPolicy, pod: &Pod, candidates: &[u32]) -> (Vec<u32>, Vec<(u32, String)>) {
        let placement = policy.schedule(pod, candidates).expect("placement");
        let mut scores = placement.scores.clone();
        scores.sort_by(|a, b| b.score.cmp(&a.score).then(a.node.cmp(&b.node)));
        let mut rejected: Vec<(u32, String)> =
            placement.rejections.iter().map(|r| (r.node, placement.reasons[r.reason as usize].clone())).collect();
        rejected.sort();
        (scores.iter().map(|s| s.node).collect(), rejected)
    }

    #[test]
    fn resources_fit_counts_what_is_placed_and_forgets_what_is_removed() {
        let mut p = policy("{}", &[node(0, &[], vec![]), node(1, &[], vec![]), placed(1, 0, &[], 600)]);
        let (feasible, rejected) = ask(&p, &pod(500), &[0, 1, 7]);
        assert_eq!(feasible, vec![1]);
        assert_eq!(
            rejected,
            vec![(0, "Insufficient cpu".into()), (7, "node(s) were not found".into())]
        );
        p.apply(&[Change::PodRemoved(1)]);
        assert_eq!(ask(&p, &pod(500), &[0, 1]).0.len(), 2);
        // LeastAllocated prefers the emptier node; MostAllocated the fuller one.
        let changes = [node(0, &[], vec![]), node(1, &[], vec![]), placed(1, 0, &[], 300)];
        assert_eq!(ask(&policy("{}", &changes), &pod(100), &[0, 1]).0, vec![1, 0]);
        let most = policy(r#"{"scoringStrategy": "MostAllocated"}"#, &changes);
        assert_eq!(ask(&most, &pod(100), &[0, 1]).0, vec![0, 1]);
        // Ten pods fill a node's pod capacity.
        let full: Vec<Change> = std::iter::once(node(0, &[], vec![])).chain((0..10).map(|i| placed(i, 0, &[], 0))).collect();
        assert_eq!(ask(&policy("{}", &full), &pod(0), &[0]).1, vec![(0, "Too many pods".into())]);
        assert!(DefaultPolicy::new(r#"{"scoringStrategy": "Random"}"#).is_err());
    }

    #[test]
    fn taints_reject_unless_tolerated_and_prefer_no_schedule_only_scores() {
        let p = policy(
            "{}",
            &[
                node(0, &[], vec![taint("dedicated", "gpu", TaintEffect::NoSchedule)]),
                node(1, &[], vec![taint("spot", "", TaintEffect::PreferNoSchedule)]),
                node(2, &[], vec![]),
            ],
        );
        let (feasible, rejected) = ask(&p, &pod(100), &[0, 1, 2]);
        assert_eq!(feasible, vec![2, 1], "PreferNoSchedule scores lower, does not reject");
        assert_eq!(rejected, vec![(0, "node(s) had untolerated taint {dedicated: gpu}".into())]);
        let tolerate = |operator, value: &str, effect| Toleration {
            key: "dedicated".into(),
            operator,
            value: value.into(),
            effect,
        };
        for (toleration, tolerated) in [
            (tolerate(TolerationOperator::Exists, "", None), true),
            (tolerate(TolerationOperator::Equal, "gpu", Some(TaintEffect::NoSchedule)), true),
            (tolerate(TolerationOperator::Equal, "cpu", None), false),
            (tolerate(TolerationOperator::Exists, "", Some(TaintEffect::NoExecute)), false),
        ] {
            let mut asking = pod(100);
            asking.tolerations = vec![toleration.clone()];
            assert_eq!(ask(&p, &asking, &[0]).0.len() == 1, tolerated, "{toleration:?}");
        }
        let mut cordoned = policy("{}", &[node(0, &[], vec![])]);
        if let Change::NodeSet(mut n) = node(0, &[], vec![]) {
            n.unschedulable = true;
            cordoned.apply(&[Change::NodeSet(n)]);
        }
        assert_eq!(ask(&cordoned, &pod(100), &[0]).1, vec![(0, "node(s) were unschedulable".into())]);
    }

    #[test]
    fn node_selector_and_affinity_match_as_kubernetes_documents() {
        let p = policy(
            "{}",
            &[
                node(0, &[("zone", "a"), ("cores", "8")], vec![]),
                node(1, &[("zone", "b"), ("cores", "32")], vec![]),
                node(2, &[], vec![]),
            ],
        );
        let with = |terms: Vec<NodeSelectorTerm>| {
            let mut asking = pod(100);
            asking.required_node_affinity = terms;
            ask(&p, &asking, &[0, 1, 2]).0.into_iter().collect::<std::collections::BTreeSet<u32>>()
        };
        let set = |nodes: &[u32]| nodes.iter().copied().collect::<std::collections::BTreeSet<u32>>();
        use SelectorOperator::*;
        assert_eq!(with(vec![term(vec![requirement("zone", In, &["a", "c"])])]), set(&[0]));
        assert_eq!(with(vec![term(vec![requirement("zone", NotIn, &["a"])])]), set(&[1, 2]));
        assert_eq!(with(vec![term(vec![requirement("zone", Exists, &[])])]), set(&[0, 1]));
        assert_eq!(with(vec![term(vec![requirement("zone", DoesNotExist, &[])])]), set(&[2]));
        assert_eq!(with(vec![term(vec![requirement("cores", Gt, &["16"])])]), set(&[1]));
        assert_eq!(with(vec![term(vec![requirement("cores", Lt, &["16"])])]), set(&[0]));
        // Terms are ORed, a term's expressions ANDed; an empty term matches nothing.
        assert_eq!(
            with(vec![term(vec![requirement("zone", In, &["a"])]), term(vec![requirement("cores", In, &["32"])])]),
            set(&[0, 1])
        );
        assert_eq!(
            with(vec![term(vec![requirement("zone", In, &["a"]), requirement("cores", In, &["32"])])]),
            set(&[])
        );
        assert_eq!(with(vec![term(vec![])]), set(&[]));
        let by_name = NodeSelectorTerm {
            match_expressions: Vec::new(),
            match_fields: vec![requirement("metadata.name", In, &["node-2"])],
        };
        assert_eq!(with(vec![by_name]), set(&[2]));
        let mut selecting = pod(100);
        selecting.node_selector = pairs(&[("zone", "b")]);
        let (feasible, rejected) = ask(&p, &selecting, &[0, 1]);
        assert_eq!(feasible, vec![1]);
        assert_eq!(rejected, vec![(0, "node(s) didn't match Pod's node affinity/selector".into())]);
        let mut named = pod(100);
        named.node_name = Some("node-1".into());
        assert_eq!(ask(&p, &named, &[0, 1, 2]).0, vec![1]);
        // Preferred terms: the heavier match scores higher.
        let mut preferring = pod(100);
        preferring.preferred_node_affinity = vec![
            PreferredTerm { weight: 10, preference: term(vec![requirement("zone", In, &["a"])]) },
            PreferredTerm { weight: 50, preference: term(vec![requirement("zone", In, &["b"])]) },
        ];
        assert_eq!(ask(&p, &preferring, &[0, 1, 2]).0, vec![1, 0, 2]);
    }

    #[test]
    fn topology_spread_keeps_the_skew_and_prefers_the_emptier_domain() {
        let mut changes = vec![
            node(0, &[("zone", "a")], vec![]),
            node(1, &[("zone", "b")], vec![]),
            node(2, &[("zone", "c")], vec![]),
            node(3, &[], vec![]),
        ];
        // zone a: 2 matching pods, b: 1, c: 1 and one that does not match.
        changes.extend([
            placed(1, 0, &[("app", "web")], 0),
            placed(2, 0, &[("app", "web")], 0),
            placed(3, 1, &[("app", "web")], 0),
            placed(4, 2, &[("app", "web")], 0),
            placed(5, 2, &[("app", "db")], 0),
        ]);
        let p = policy("{}", &changes);
        let spread = |action| SpreadConstraint {
            max_skew: 1,
            topology_key: "zone".into(),
            when_unsatisfiable: action,
            selector: LabelSelector { match_labels: pairs(&[("app", "web")]), match_expressions: Vec::new() },
            min_domains: None,
        };
        let mut hard = pod(100);
        hard.spread_constraints = vec![spread(UnsatisfiableAction::DoNotSchedule)];
        let (feasible, rejected) = ask(&p, &hard, &[0, 1, 2, 3]);
        assert_eq!(feasible.len(), 2);
        assert_eq!(
            rejected,
            vec![
                (0, "node(s) didn't match pod topology spread constraints".into()),
                (3, "node(s) didn't match pod topology spread constraints (missing required label)".into()),
            ]
        );
        // minDomains above the domains there are: the minimum counts as 0, so b and c
        // (1 + 1 - 0 > 1) are rejected too.
        let mut few = hard.clone();
        few.spread_constraints[0].min_domains = Some(4);
        assert_eq!(ask(&p, &few, &[0, 1, 2]).0, Vec::<u32>::new());
        let mut soft = pod(100);
        soft.spread_constraints = vec![spread(UnsatisfiableAction::ScheduleAnyway)];
        let (feasible, rejected) = ask(&p, &soft, &[0, 1, 2, 3]);
        assert!(rejected.is_empty());
        assert_eq!(feasible.last(), Some(&3), "a node without the topology label scores lowest");
        assert_eq!(feasible[2], 0, "the fuller zone scores below the emptier ones");
    }
}
