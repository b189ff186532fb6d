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
//! The table keeps labels as symbols (each distinct string once, as a number), and a
//! pod's selectors are translated to symbols once per call, so the loops over nodes and
//! placed pods compare integers, not strings.
//!
//! This file is compiled twice over the same WIT types: into the plugin (`lib.rs`, the
//! guest bindings) and natively into the host (`host/src/scheduler/native.rs`, the host
//! bindings), so the benchmark's native baseline is this very code. It may use only
//! `std`, `serde_json`, `rustc_hash` and the types of `super::types`.

use std::cell::{Cell, RefCell};

use rustc_hash::FxHashMap;

use super::types::{
    Change, LabelSelector, Node, NodeSelectorTerm, PlacedPod, Placement, Pod, Rejection, SelectorOperator,
    SelectorRequirement, SpreadConstraint, Taint, TaintEffect, Toleration, TolerationOperator, UnsatisfiableAction,
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

/// A string of the table, as a number.
type Sym = u32;

/// Strings the table has held, each once. Symbols are never freed: a set grows with the
/// distinct strings a cluster has used, which is small.
#[derive(Default)]
struct Symbols {
    ids: FxHashMap<String, Sym>,
    /// By symbol: the text parsed as an integer (what `Gt` and `Lt` compare).
    numbers: Vec<Option<i64>>,
}

impl Symbols {
    fn intern(&mut self, text: &str) -> Sym {
        if let Some(&sym) = self.ids.get(text) {
            return sym;
        }
        let sym = self.numbers.len() as Sym;
        self.numbers.push(text.parse().ok());
        self.ids.insert(text.to_string(), sym);
        sym
    }

    /// None: no node or placed pod has this string, so it equals none of theirs.
    fn get(&self, text: &str) -> Option<Sym> {
        self.ids.get(text).copied()
    }

    fn number(&self, sym: Sym) -> Option<i64> {
        self.numbers.get(sym as usize).copied().flatten()
    }

    fn labels(&mut self, labels: &[(String, String)]) -> Vec<(Sym, Sym)> {
        labels.iter().map(|(k, v)| (self.intern(k), self.intern(v))).collect()
    }
}

fn label_of(labels: &[(Sym, Sym)], key: Sym) -> Option<Sym> {
    labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Amounts of cpu (millicores), memory and ephemeral storage (bytes).
#[derive(Clone, Copy, Debug, Default)]
struct Amounts {
    milli_cpu: u64,
    memory: u64,
    ephemeral_storage: u64,
}

/// What is allocated on a node: the sum of its pods' requests.
#[derive(Clone, Copy, Debug, Default)]
struct Allocated {
    amounts: Amounts,
    pods: u32,
    /// With kube-scheduler's defaults for pods that ask for nothing (for scores).
    nonzero_milli_cpu: u64,
    nonzero_memory: u64,
}

impl Allocated {
    fn add(&mut self, r: &Amounts, sign: i64) {
        let apply = |total: &mut u64, amount: u64| {
            *total = if sign > 0 { total.saturating_add(amount) } else { total.saturating_sub(amount) }
        };
        apply(&mut self.amounts.milli_cpu, r.milli_cpu);
        apply(&mut self.amounts.memory, r.memory);
        apply(&mut self.amounts.ephemeral_storage, r.ephemeral_storage);
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

/// A node of the table.
struct NodeState {
    index: u32,
    name: String,
    labels: Vec<(Sym, Sym)>,
    allocatable: Amounts,
    allocatable_pods: u32,
    taints: Vec<Taint>,
    /// Whether any taint is `NoSchedule` or `NoExecute` (filters), `PreferNoSchedule` (scores).
    hard_taints: bool,
    soft_taints: bool,
    unschedulable: bool,
    allocated: Allocated,
}

impl NodeState {
    fn new(node: &Node, symbols: &mut Symbols, allocated: Allocated) -> Self {
        let a = &node.allocatable;
        let soft = |t: &Taint| matches!(t.effect, TaintEffect::PreferNoSchedule);
        Self {
            index: node.index,
            name: node.name.clone(),
            labels: symbols.labels(&node.labels),
            allocatable: Amounts { milli_cpu: a.milli_cpu, memory: a.memory, ephemeral_storage: a.ephemeral_storage },
            allocatable_pods: a.pods,
            taints: node.taints.clone(),
            hard_taints: node.taints.iter().any(|t| !soft(t)),
            soft_taints: node.taints.iter().any(soft),
            unschedulable: node.unschedulable,
            allocated,
        }
    }
}

/// A pod bound or assumed on a node.
struct Placed {
    id: u64,
    node: u32,
    labels: Vec<(Sym, Sym)>,
    requests: Amounts,
}

/// The policy and its node table.
pub struct DefaultPolicy {
    config: Config,
    /// Nodes' label keys and values; placed pods' label keys and values and namespaces
    /// (apart, so that a spread's counts by domain are as long as the nodes' strings).
    node_symbols: Symbols,
    pod_symbols: Symbols,
    /// By node index (the host's; indices of removed nodes stay empty).
    nodes: Vec<Option<NodeState>>,
    /// Placed pods by namespace (topology spread counts pods of the pod's namespace).
    by_namespace: FxHashMap<Sym, Vec<Placed>>,
    /// Where each placed pod is: its namespace and position there.
    placed: FxHashMap<u64, (Sym, usize)>,
    /// Matching pods per node for the selectors spread constraints have asked about,
    /// kept current by `apply`; a miss in `schedule` adds an entry (the rest of the
    /// table `schedule` only reads).
    matches: RefCell<Vec<Matches>>,
    /// Ticks once per lookup in `matches` (its least recently used entry goes first).
    clock: Cell<u64>,
}

/// How many (namespace, selector) pairs `matches` keeps.
const MATCHES_KEPT: usize = 32;

/// The pods of one namespace a label selector selects, counted per node: what a spread
/// constraint counts, without a pass over the namespace's pods per call.
struct Matches {
    namespace: Sym,
    /// The selector, as text (`Debug`; the WIT types have no `Eq`), and as given.
    key: String,
    selector: LabelSelector,
    /// By node index.
    per_node: Vec<i64>,
    used: u64,
}

impl Matches {
    fn count(&mut self, node: u32, by: i64) {
        let i = node as usize;
        if self.per_node.len() <= i {
            self.per_node.resize(i + 1, 0);
        }
        self.per_node[i] += by;
    }
}

/// Reasons, each once, as the placement names them.
#[derive(Default)]
struct Reasons {
    texts: Vec<String>,
    /// The index of each fixed reason (by the slot `Why::record` names) once it is in `texts`.
    fixed: [Option<u32>; FIXED_REASONS],
}

const FIXED_REASONS: usize = 10;

impl Reasons {
    /// A reason that is always the same text: found by its slot, not by comparing text.
    fn fixed(&mut self, slot: usize, text: &'static str) -> u32 {
        if let Some(i) = self.fixed[slot] {
            return i;
        }
        let i = self.of(text);
        self.fixed[slot] = Some(i);
        i
    }

    fn of(&mut self, text: &str) -> u32 {
        if let Some(i) = self.texts.iter().position(|t| t == text) {
            return i as u32;
        }
        self.texts.push(text.to_string());
        (self.texts.len() - 1) as u32
    }
}

/// Why a filter rejects a node.
enum Why<'a> {
    Unschedulable,
    NodeName,
    Taint(&'a Taint),
    Affinity,
    Resources { pods: bool, cpu: bool, memory: bool, ephemeral_storage: bool },
    SpreadLabel,
    Spread,
}

impl Why<'_> {
    /// Its reasons, in Kubernetes' words, as indices into `reasons`.
    fn record(&self, node: u32, reasons: &mut Reasons, rejections: &mut Vec<Rejection>) {
        let mut reject =
            |slot: usize, text: &'static str| rejections.push(Rejection { node, reason: reasons.fixed(slot, text) });
        match self {
            Why::Unschedulable => reject(0, "node(s) were unschedulable"),
            Why::NodeName => reject(1, "node(s) didn't match the requested node name"),
            Why::Taint(t) => {
                let text = format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value);
                rejections.push(Rejection { node, reason: reasons.of(&text) });
            }
            Why::Affinity => reject(2, "node(s) didn't match Pod's node affinity/selector"),
            Why::Resources { pods, cpu, memory, ephemeral_storage } => {
                for (slot, short, text) in [
                    (3, pods, "Too many pods"),
                    (4, cpu, "Insufficient cpu"),
                    (5, memory, "Insufficient memory"),
                    (6, ephemeral_storage, "Insufficient ephemeral-storage"),
                ] {
                    if *short {
                        reject(slot, text);
                    }
                }
            }
            Why::SpreadLabel => {
                reject(7, "node(s) didn't match pod topology spread constraints (missing required label)")
            }
            Why::Spread => reject(8, "node(s) didn't match pod topology spread constraints"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

impl From<&SelectorOperator> for Operator {
    fn from(operator: &SelectorOperator) -> Self {
        match operator {
            SelectorOperator::In => Operator::In,
            SelectorOperator::NotIn => Operator::NotIn,
            SelectorOperator::Exists => Operator::Exists,
            SelectorOperator::DoesNotExist => Operator::DoesNotExist,
            SelectorOperator::Gt => Operator::Gt,
            SelectorOperator::Lt => Operator::Lt,
        }
    }
}

/// Whether a requirement holds for `value` (None: no such label): the one definition,
/// over symbols or over text. `listed` says whether a value is among the requirement's
/// values, `number` reads one as an integer, `bound` is the first value's integer.
fn holds<V>(
    operator: Operator,
    value: Option<V>,
    listed: impl Fn(&V) -> bool,
    number: impl Fn(&V) -> Option<i64>,
    bound: Option<i64>,
) -> bool {
    match operator {
        Operator::In => value.is_some_and(|v| listed(&v)),
        Operator::NotIn => value.is_none_or(|v| !listed(&v)),
        Operator::Exists => value.is_some(),
        Operator::DoesNotExist => value.is_none(),
        Operator::Gt => matches!((value.and_then(|v| number(&v)), bound), (Some(v), Some(b)) if v > b),
        Operator::Lt => matches!((value.and_then(|v| number(&v)), bound), (Some(v), Some(b)) if v < b),
    }
}

/// A requirement over text (a node's name, the pod's own labels).
fn text_holds(r: &SelectorRequirement, value: Option<&str>) -> bool {
    let number = |text: &&str| text.parse::<i64>().ok();
    let bound = r.values.first().and_then(|v| v.parse().ok());
    holds(Operator::from(&r.operator), value, |v| r.values.iter().any(|x| x == v), number, bound)
}

/// A selector requirement over symbols. An unknown key or value is one no label has.
struct Requirement {
    key: Option<Sym>,
    operator: Operator,
    values: Vec<Sym>,
    bound: Option<i64>,
}

impl Requirement {
    fn new(r: &SelectorRequirement, symbols: &Symbols) -> Self {
        Self {
            key: symbols.get(&r.key),
            operator: Operator::from(&r.operator),
            values: r.values.iter().filter_map(|v| symbols.get(v)).collect(),
            bound: r.values.first().and_then(|v| v.parse().ok()),
        }
    }

    fn holds(&self, labels: &[(Sym, Sym)], symbols: &Symbols) -> bool {
        let value = self.key.and_then(|k| label_of(labels, k));
        holds(self.operator, value, |v| self.values.contains(v), |v| symbols.number(*v), self.bound)
    }
}

/// `matchLabels` over symbols; None if a key or value is unknown (nothing has it).
fn pairs_of(pairs: &[(String, String)], symbols: &Symbols) -> Option<Vec<(Sym, Sym)>> {
    pairs.iter().map(|(k, v)| Some((symbols.get(k)?, symbols.get(v)?))).collect()
}

fn has_all(labels: &[(Sym, Sym)], pairs: &[(Sym, Sym)]) -> bool {
    pairs.iter().all(|(k, v)| label_of(labels, *k) == Some(*v))
}

/// A node selector term over symbols: every expression and field requirement holds (an
/// empty term matches nothing, as in Kubernetes; `match-fields` knows `metadata.name`).
struct Term<'a> {
    expressions: Vec<Requirement>,
    fields: &'a [SelectorRequirement],
}

impl<'a> Term<'a> {
    fn new(term: &'a NodeSelectorTerm, symbols: &Symbols) -> Self {
        Self {
            expressions: term.match_expressions.iter().map(|r| Requirement::new(r, symbols)).collect(),
            fields: &term.match_fields,
        }
    }

    fn matches(&self, node: &NodeState, symbols: &Symbols) -> bool {
        if self.expressions.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.expressions.iter().all(|r| r.holds(&node.labels, symbols))
            && self.fields.iter().all(|r| text_holds(r, (r.key == "metadata.name").then_some(node.name.as_str())))
    }
}

/// A label selector over symbols, for placed pods.
struct Selector {
    /// None: a `matchLabels` pair no placed pod has.
    labels: Option<Vec<(Sym, Sym)>>,
    expressions: Vec<Requirement>,
}

impl Selector {
    fn new(selector: &LabelSelector, symbols: &Symbols) -> Self {
        Self {
            labels: pairs_of(&selector.match_labels, symbols),
            expressions: selector.match_expressions.iter().map(|r| Requirement::new(r, symbols)).collect(),
        }
    }

    fn selects(&self, labels: &[(Sym, Sym)], symbols: &Symbols) -> bool {
        self.labels.as_deref().is_some_and(|pairs| has_all(labels, pairs))
            && self.expressions.iter().all(|r| r.holds(labels, symbols))
    }
}

/// Whether a label selector selects the pod's own labels (text: they are not in the table).
fn selects_text(selector: &LabelSelector, labels: &[(String, String)]) -> bool {
    let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    selector.match_labels.iter().all(|(k, v)| label(k) == Some(v.as_str()))
        && selector.match_expressions.iter().all(|r| text_holds(r, label(&r.key)))
}

/// What the pod asks of a node's labels, over symbols: `nodeSelector` and the required
/// node affinity (terms ORed), and the preferred terms.
struct Asked<'a> {
    pod: &'a Pod,
    /// None: a pair no node has, so no node matches.
    node_selector: Option<Vec<(Sym, Sym)>>,
    required: Vec<Term<'a>>,
    preferred: Vec<(i64, Term<'a>)>,
}

impl<'a> Asked<'a> {
    fn new(pod: &'a Pod, symbols: &Symbols) -> Self {
        Self {
            pod,
            node_selector: pairs_of(&pod.node_selector, symbols),
            required: pod.required_node_affinity.iter().map(|t| Term::new(t, symbols)).collect(),
            preferred: pod
                .preferred_node_affinity
                .iter()
                .map(|p| (i64::from(p.weight), Term::new(&p.preference, symbols)))
                .collect(),
        }
    }

    fn affinity_matches(&self, node: &NodeState, symbols: &Symbols) -> bool {
        self.node_selector.as_deref().is_some_and(|pairs| has_all(&node.labels, pairs))
            && (self.required.is_empty() || self.required.iter().any(|t| t.matches(node, symbols)))
    }
}

/// A topology spread constraint's counts for one pod: matching pods per domain, over
/// the nodes the pod could go to that have the topology label.
struct Spread<'a> {
    constraint: &'a SpreadConstraint,
    /// None: no node has the topology label.
    key: Option<Sym>,
    /// By domain (the topology label's value): its matching pods, or -1 where no node the
    /// pod may go to is in it. Indexed by symbol, so the loops over nodes and pods hash nothing.
    counts: Vec<i64>,
    /// How many domains there are.
    domains: usize,
    /// The fewest matching pods in a domain (0 if there are fewer domains than minDomains).
    min: i64,
    self_match: i64,
}

impl Spread<'_> {
    fn domain(&self, node: &NodeState) -> Option<Sym> {
        self.key.and_then(|k| label_of(&node.labels, k))
    }

    /// The matching pods in `domain` (0 if no node the pod may go to is in it).
    fn count(&self, domain: Sym) -> i64 {
        self.counts.get(domain as usize).copied().unwrap_or(0).max(0)
    }
}

impl DefaultPolicy {
    pub fn new(config: &str) -> Result<Self, String> {
        Ok(Self {
            config: Config::parse(config)?,
            node_symbols: Symbols::default(),
            pod_symbols: Symbols::default(),
            nodes: Vec::new(),
            by_namespace: FxHashMap::default(),
            placed: FxHashMap::default(),
            matches: RefCell::default(),
            clock: Cell::new(0),
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
                    self.nodes[i] = Some(NodeState::new(node, &mut self.node_symbols, allocated));
                }
                Change::NodeRemoved(index) => {
                    if let Some(slot) = self.nodes.get_mut(*index as usize) {
                        *slot = None;
                    }
                }
                Change::PodPlaced(pod) => self.place(pod),
                Change::PodRemoved(id) => self.remove_pod(*id),
            }
        }
    }

    fn place(&mut self, pod: &PlacedPod) {
        self.remove_pod(pod.id);
        let r = &pod.requests;
        let requests = Amounts { milli_cpu: r.milli_cpu, memory: r.memory, ephemeral_storage: r.ephemeral_storage };
        if let Some(Some(state)) = self.nodes.get_mut(pod.node as usize) {
            state.allocated.add(&requests, 1);
        }
        let namespace = self.pod_symbols.intern(&pod.namespace);
        let labels = self.pod_symbols.labels(&pod.labels);
        self.count_matches(namespace, &labels, pod.node, 1);
        let pods = self.by_namespace.entry(namespace).or_default();
        self.placed.insert(pod.id, (namespace, pods.len()));
        pods.push(Placed { id: pod.id, node: pod.node, labels, requests });
    }

    fn remove_pod(&mut self, id: u64) {
        let Some((namespace, at)) = self.placed.remove(&id) else { return };
        let Some(pods) = self.by_namespace.get_mut(&namespace) else { return };
        if at >= pods.len() {
            return;
        }
        let old = pods.swap_remove(at);
        if let Some(moved) = pods.get(at) {
            self.placed.insert(moved.id, (namespace, at));
        }
        if pods.is_empty() {
            self.by_namespace.remove(&namespace);
        }
        if let Some(Some(state)) = self.nodes.get_mut(old.node as usize) {
            state.allocated.add(&old.requests, -1);
        }
        self.count_matches(namespace, &old.labels, old.node, -1);
    }

    /// A pod with `labels` came to (`by` 1) or left (-1) `node`: count it in every kept
    /// selector of its namespace that selects it. Its labels are all symbols by now.
    fn count_matches(&mut self, namespace: Sym, labels: &[(Sym, Sym)], node: u32, by: i64) {
        for m in self.matches.get_mut().iter_mut().filter(|m| m.namespace == namespace) {
            if Selector::new(&m.selector, &self.pod_symbols).selects(labels, &self.pod_symbols) {
                m.count(node, by);
            }
        }
    }

    /// Run `f` with the matching pods per node of `selector` in `namespace`: kept, or
    /// counted now (one pass over the namespace's pods) and kept from then on.
    fn with_matches<T>(&self, namespace: Sym, selector: &LabelSelector, f: impl FnOnce(&[i64]) -> T) -> T {
        let key = format!("{selector:?}");
        let now = self.clock.get() + 1;
        self.clock.set(now);
        let mut kept = self.matches.borrow_mut();
        let at = match kept.iter().position(|m| m.namespace == namespace && m.key == key) {
            Some(at) => at,
            None => {
                let compiled = Selector::new(selector, &self.pod_symbols);
                let mut m = Matches { namespace, key, selector: selector.clone(), per_node: Vec::new(), used: now };
                for placed in self.by_namespace.get(&namespace).into_iter().flatten() {
                    if compiled.selects(&placed.labels, &self.pod_symbols) {
                        m.count(placed.node, 1);
                    }
                }
                if kept.len() >= MATCHES_KEPT {
                    if let Some(oldest) = (0..kept.len()).min_by_key(|&i| kept[i].used) {
                        kept.swap_remove(oldest);
                    }
                }
                kept.push(m);
                kept.len() - 1
            }
        };
        kept[at].used = now;
        f(&kept[at].per_node)
    }

    /// Filter and score `candidates` for `pod`.
    pub fn schedule(&self, pod: &Pod, candidates: &[u32]) -> Result<Placement, String> {
        let asked = Asked::new(pod, &self.node_symbols);
        let mut reasons = Reasons::default();
        let mut rejections = Vec::new();
        let hard: Vec<Spread> = pod
            .spread_constraints
            .iter()
            .filter(|c| matches!(c.when_unsatisfiable, UnsatisfiableAction::DoNotSchedule))
            .map(|c| self.spread(&asked, c))
            .collect();
        let mut feasible: Vec<&NodeState> = Vec::with_capacity(candidates.len());
        for &index in candidates {
            let Some(Some(state)) = self.nodes.get(index as usize) else {
                rejections.push(Rejection { node: index, reason: reasons.fixed(9, "node(s) were not found") });
                continue;
            };
            match self.filter(&asked, state, &hard) {
                Ok(()) => feasible.push(state),
                Err(why) => why.record(index, &mut reasons, &mut rejections),
            }
        }
        let scores = self.score(&asked, &feasible);
        Ok(Placement {
            feasible: feasible.iter().map(|s| s.index).collect(),
            scores,
            rejections,
            reasons: reasons.texts,
        })
    }

    /// Why `node` cannot take the pod, if it cannot.
    fn filter<'n>(&self, asked: &Asked, node: &'n NodeState, spread: &[Spread]) -> Result<(), Why<'n>> {
        let pod = asked.pod;
        // NodeUnschedulable
        if node.unschedulable
            && !pod
                .tolerations
                .iter()
                .any(|t| tolerates(t, "node.kubernetes.io/unschedulable", "", TaintEffect::NoSchedule))
        {
            return Err(Why::Unschedulable);
        }
        // NodeName
        if let Some(name) = pod.node_name.as_deref().filter(|n| !n.is_empty()) {
            if name != node.name {
                return Err(Why::NodeName);
            }
        }
        // TaintToleration
        if node.hard_taints {
            for taint in &node.taints {
                if matches!(taint.effect, TaintEffect::PreferNoSchedule) {
                    continue;
                }
                if !pod.tolerations.iter().any(|t| tolerates(t, &taint.key, &taint.value, taint.effect)) {
                    return Err(Why::Taint(taint));
                }
            }
        }
        // NodeAffinity
        if !asked.affinity_matches(node, &self.node_symbols) {
            return Err(Why::Affinity);
        }
        // NodeResourcesFit
        let (have, r, can) = (&node.allocated.amounts, &pod.requests, &node.allocatable);
        let over = |asked: u64, have: u64, capacity: u64| asked > 0 && have.saturating_add(asked) > capacity;
        let pods = node.allocated.pods.saturating_add(1) > node.allocatable_pods;
        let cpu = over(r.milli_cpu, have.milli_cpu, can.milli_cpu);
        let memory = over(r.memory, have.memory, can.memory);
        let ephemeral_storage = over(r.ephemeral_storage, have.ephemeral_storage, can.ephemeral_storage);
        if pods || cpu || memory || ephemeral_storage {
            return Err(Why::Resources { pods, cpu, memory, ephemeral_storage });
        }
        // PodTopologySpread (DoNotSchedule)
        for s in spread {
            let Some(domain) = s.domain(node) else { return Err(Why::SpreadLabel) };
            if s.count(domain) + s.self_match - s.min > i64::from(s.constraint.max_skew) {
                return Err(Why::Spread);
            }
        }
        Ok(())
    }

    /// Matching pods per domain of `constraint`, over the nodes the pod may go to.
    fn spread<'a>(&self, asked: &Asked, constraint: &'a SpreadConstraint) -> Spread<'a> {
        let key = self.node_symbols.get(&constraint.topology_key);
        let mut counts: Vec<i64> = Vec::new();
        let mut seen: Vec<Sym> = Vec::new();
        if let Some(key) = key {
            counts = vec![-1; self.node_symbols.numbers.len()];
            // The domain of each node the pod may go to, by index.
            let mut domains: Vec<Option<Sym>> = vec![None; self.nodes.len()];
            for (i, state) in self.nodes.iter().enumerate() {
                let Some(state) = state else { continue };
                let Some(domain) = label_of(&state.labels, key) else { continue };
                if asked.affinity_matches(state, &self.node_symbols) {
                    let count = &mut counts[domain as usize];
                    if *count < 0 {
                        *count = 0;
                        seen.push(domain);
                    }
                    domains[i] = Some(domain);
                }
            }
            // Pods on the nodes the pod may go to: none if no placed pod is in its namespace.
            if let Some(namespace) = self.pod_symbols.get(&asked.pod.namespace) {
                self.with_matches(namespace, &constraint.selector, |per_node| {
                    for (i, &matching) in per_node.iter().enumerate() {
                        if let (true, Some(domain)) = (matching != 0, domains.get(i).copied().flatten()) {
                            counts[domain as usize] += matching;
                        }
                    }
                });
            }
        }
        let min = if constraint.min_domains.is_some_and(|m| (seen.len() as u32) < m) {
            0
        } else {
            seen.iter().map(|&d| counts[d as usize]).min().unwrap_or(0)
        };
        let self_match = i64::from(selects_text(&constraint.selector, &asked.pod.labels));
        Spread { constraint, key, counts, domains: seen.len(), min, self_match }
    }

    /// The weighted score of each feasible node, in order.
    fn score(&self, asked: &Asked, feasible: &[&NodeState]) -> Vec<i64> {
        if feasible.is_empty() {
            return Vec::new();
        }
        let (c, pod) = (&self.config, asked.pod);
        // TaintToleration: untolerated PreferNoSchedule taints, fewer is better (all
        // equal where no node has one).
        let taints = feasible.iter().any(|s| s.soft_taints).then(|| {
            let counts: Vec<i64> = feasible
                .iter()
                .map(|s| {
                    s.taints
                        .iter()
                        .filter(|t| matches!(t.effect, TaintEffect::PreferNoSchedule))
                        .filter(|t| !pod.tolerations.iter().any(|tol| tolerates(tol, &t.key, &t.value, t.effect)))
                        .count() as i64
                })
                .collect();
            normalize(&counts, true)
        });
        // NodeAffinity: the weights of the preferred terms a node matches.
        let affinity = (!asked.preferred.is_empty()).then(|| {
            let weights: Vec<i64> = feasible
                .iter()
                .map(|s| asked.preferred.iter().filter(|(_, t)| t.matches(s, &self.node_symbols)).map(|(w, _)| w).sum())
                .collect();
            normalize(&weights, false)
        });
        // PodTopologySpread (ScheduleAnyway): fewer matching pods in the node's domains is better.
        let soft: Vec<Spread> = pod
            .spread_constraints
            .iter()
            .filter(|c| matches!(c.when_unsatisfiable, UnsatisfiableAction::ScheduleAnyway))
            .map(|c| self.spread(asked, c))
            .collect();
        let spread = (!soft.is_empty()).then(|| spread_scores(&soft, feasible));
        let at = |scores: &Option<Vec<i64>>, i: usize, otherwise: i64| scores.as_ref().map_or(otherwise, |s| s[i]);
        let requests = &pod.requests;
        let asked_cpu = nonzero(requests.milli_cpu, DEFAULT_MILLI_CPU);
        let asked_memory = nonzero(requests.memory, DEFAULT_MEMORY);
        feasible
            .iter()
            .enumerate()
            .map(|(i, s)| {
                fit_score(c.scoring, asked_cpu, asked_memory, s) * c.fit_weight
                    + at(&taints, i, MAX_SCORE) * c.taint_weight
                    + at(&affinity, i, 0) * c.affinity_weight
                    + at(&spread, i, MAX_SCORE) * c.spread_weight
            })
            .collect()
    }
}

/// NodeResourcesFit's score of cpu and memory (equal weights), 0..=100.
fn fit_score(scoring: Scoring, asked_cpu: u64, asked_memory: u64, state: &NodeState) -> i64 {
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
    let cpu = one(a.nonzero_milli_cpu, asked_cpu, state.allocatable.milli_cpu);
    let memory = one(a.nonzero_memory, asked_memory, state.allocatable.memory);
    (cpu + memory) / 2
}

/// `part` × 100 / `whole` (`part` ≤ `whole`, `whole` > 0), rounded down. In u64 unless
/// the product would overflow: u128 arithmetic is a slow library call, in WebAssembly most.
fn percent_of(part: u64, whole: u64) -> i64 {
    // Not `checked_mul`: WebAssembly has no overflow flag, so that is a u128 multiply.
    if part <= u64::MAX / MAX_SCORE as u64 {
        (part * MAX_SCORE as u64 / whole) as i64
    } else {
        (part as u128 * MAX_SCORE as u128 / whole as u128) as i64
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
                let domain = spread.domain(s)?;
                let weight = ((spread.domains + 2) as f64).ln();
                total += spread.count(domain) as f64 * weight;
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
            let n = if max == 0 { 0 } else { s * MAX_SCORE / max };
            if reverse {
                MAX_SCORE - n
            } else {
                n
            }
        })
        .collect()
}

/// Whether toleration `t` tolerates the taint (key, value, effect), as Kubernetes decides.
fn tolerates(t: &Toleration, key: &str, value: &str, effect: TaintEffect) -> bool {
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
        assert_eq!(placement.feasible.len(), placement.scores.len());
        let mut scores: Vec<(u32, i64)> =
            placement.feasible.iter().copied().zip(placement.scores.iter().copied()).collect();
        scores.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut rejected: Vec<(u32, String)> =
            placement.rejections.iter().map(|r| (r.node, placement.reasons[r.reason as usize].clone())).collect();
        rejected.sort();
        (scores.iter().map(|s| s.0).collect(), rejected)
    }

    #[test]
    fn resources_fit_counts_what_is_placed_and_forgets_what_is_removed() {
        let mut p = policy("{}", &[node(0, &[], vec![]), node(1, &[], vec![]), placed(1, 0, &[], 600)]);
        let (feasible, rejected) = ask(&p, &pod(500), &[0, 1, 7]);
        assert_eq!(feasible, vec![1]);
        assert_eq!(rejected, vec![(0, "Insufficient cpu".into()), (7, "node(s) were not found".into())]);
        p.apply(&[Change::PodRemoved(1)]);
        assert_eq!(ask(&p, &pod(500), &[0, 1]).0.len(), 2);
        // LeastAllocated prefers the emptier node; MostAllocated the fuller one.
        let changes = [node(0, &[], vec![]), node(1, &[], vec![]), placed(1, 0, &[], 300)];
        assert_eq!(ask(&policy("{}", &changes), &pod(100), &[0, 1]).0, vec![1, 0]);
        let most = policy(r#"{"scoringStrategy": "MostAllocated"}"#, &changes);
        assert_eq!(ask(&most, &pod(100), &[0, 1]).0, vec![0, 1]);
        // Ten pods fill a node's pod capacity.
        let full: Vec<Change> =
            std::iter::once(node(0, &[], vec![])).chain((0..10).map(|i| placed(i, 0, &[], 0))).collect();
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

    #[test]
    fn spread_counts_kept_between_calls_match_a_table_built_afresh() {
        let mut changes: Vec<Change> =
            (0..6).map(|i| node(i, &[("zone", ["a", "b", "c"][i as usize % 3])], vec![])).collect();
        changes.extend((1..=8).map(|id| placed(id, (id % 6) as u32, &[("app", "web")], 0)));
        let mut kept = policy("{}", &changes);
        let mut asking = pod(100);
        asking.spread_constraints = vec![SpreadConstraint {
            max_skew: 1,
            topology_key: "zone".into(),
            when_unsatisfiable: UnsatisfiableAction::ScheduleAnyway,
            selector: LabelSelector { match_labels: pairs(&[("app", "web")]), match_expressions: Vec::new() },
            min_domains: None,
        }];
        let mut hard = asking.clone();
        hard.spread_constraints[0].when_unsatisfiable = UnsatisfiableAction::DoNotSchedule;
        let candidates: Vec<u32> = (0..6).collect();
        let answer = |p: &DefaultPolicy, pod: &Pod| {
            let placement = p.schedule(pod, &candidates).expect("placement");
            (placement.feasible, placement.scores, ask(p, pod, &candidates).1)
        };
        // The first calls keep the counts; what follows must update them.
        answer(&kept, &asking);
        answer(&kept, &hard);
        let steps = [
            vec![placed(9, 0, &[("app", "web")], 0), placed(10, 0, &[("app", "web")], 0)],
            vec![Change::PodRemoved(3), placed(11, 1, &[("app", "db")], 0)],
            // Placed again elsewhere, and with labels the selector no longer selects.
            vec![placed(9, 2, &[("app", "web")], 0), placed(10, 0, &[("app", "db")], 0)],
            vec![Change::NodeRemoved(5), placed(12, 4, &[("app", "web"), ("tier", "new")], 0)],
        ];
        for step in steps {
            kept.apply(&step);
            changes.extend(step);
            let fresh = policy("{}", &changes);
            for pod in [&asking, &hard] {
                assert_eq!(answer(&kept, pod), answer(&fresh, pod), "after {changes:?}");
            }
        }
    }
}
