//! The scheduler's cache: the nodes, and the pods that hold resources on them — bound
//! (the pod informer shows `spec.nodeName`) or **assumed** (the scheduler picked the node
//! and the binding is in flight), so the next cycle never double-books a node. An
//! assumption that fails to bind is forgotten.
//!
//! Policies keep their own copy of this table. The cache is where their copies come
//! from: each policy has a *sink*, the changes it has not been sent yet, filled as the
//! cache changes; a new sink (a new policy, or a new instance after a failed call) starts
//! with the whole table ([`Cache::snapshot`]). Node indices are never reused.
//!
//! It holds records, not objects: parsing the API's JSON into them is the caller's.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::plugins::policy_types::{Change, Node, PlacedPod, Resources};

/// A pod as the cache keeps it.
struct CachedPod {
    id: u64,
    node: String,
    namespace: String,
    labels: Vec<(String, String)>,
    requests: Resources,
    assumed: bool,
}

#[derive(Default)]
pub struct Cache {
    /// By name.
    nodes: HashMap<String, Node>,
    /// Node names by index, in order (the candidates).
    by_index: BTreeMap<u32, String>,
    next_index: u32,
    /// By uid.
    pods: HashMap<String, CachedPod>,
    /// Pod uids by node name (also for nodes not known yet).
    on_node: HashMap<String, HashSet<String>>,
    next_pod_id: u64,
    sinks: HashMap<u64, Vec<Change>>,
    next_sink: u64,
}

/// A node as the API describes it, before the cache gives it an index.
pub struct NodeSpec {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub allocatable: Resources,
    pub taints: Vec<crate::plugins::policy_types::Taint>,
    pub unschedulable: bool,
}

fn same_node(a: &Node, b: &NodeSpec) -> bool {
    let r = (&a.allocatable, &b.allocatable);
    a.labels == b.labels
        && a.unschedulable == b.unschedulable
        && (r.0.milli_cpu, r.0.memory, r.0.ephemeral_storage, r.0.pods)
            == (r.1.milli_cpu, r.1.memory, r.1.ephemeral_storage, r.1.pods)
        && a.taints.len() == b.taints.len()
        && a.taints.iter().zip(&b.taints).all(|(x, y)| x.key == y.key && x.value == y.value && x.effect == y.effect)
}

impl Cache {
    fn publish(&mut self, change: Change) {
        let mut sinks = self.sinks.values_mut().peekable();
        while let Some(sink) = sinks.next() {
            if sinks.peek().is_none() {
                sink.push(change);
                return;
            }
            sink.push(change.clone());
        }
    }

    fn placed(&self, pod: &CachedPod) -> Option<PlacedPod> {
        let node = self.nodes.get(&pod.node)?;
        Some(PlacedPod {
            id: pod.id,
            node: node.index,
            namespace: pod.namespace.clone(),
            labels: pod.labels.clone(),
            requests: pod.requests.clone(),
        })
    }

    /// A node added or changed; whether anything a policy reads changed.
    pub fn set_node(&mut self, spec: NodeSpec) -> bool {
        let (index, new) = match self.nodes.get(&spec.name) {
            Some(existing) if same_node(existing, &spec) => return false,
            Some(existing) => (existing.index, false),
            None => {
                self.next_index += 1;
                (self.next_index - 1, true)
            }
        };
        let node = Node {
            index,
            name: spec.name.clone(),
            labels: spec.labels,
            allocatable: spec.allocatable,
            taints: spec.taints,
            unschedulable: spec.unschedulable,
        };
        self.by_index.insert(index, spec.name.clone());
        self.nodes.insert(spec.name.clone(), node.clone());
        self.publish(Change::NodeSet(node));
        if new {
            // Pods already bound to it (seen before the node) now count on it.
            let uids: Vec<String> = self.on_node.get(&spec.name).into_iter().flatten().cloned().collect();
            for uid in uids {
                if let Some(placed) = self.pods.get(&uid).and_then(|p| self.placed(p)) {
                    self.publish(Change::PodPlaced(placed));
                }
            }
        }
        true
    }

    pub fn remove_node(&mut self, name: &str) -> bool {
        let Some(node) = self.nodes.remove(name) else { return false };
        self.by_index.remove(&node.index);
        self.publish(Change::NodeRemoved(node.index));
        true
    }

    /// A pod holds resources on `node` (bound, or `assumed`). A pod placed again replaces
    /// its earlier placement.
    pub fn place(
        &mut self,
        uid: &str,
        node: &str,
        namespace: &str,
        labels: Vec<(String, String)>,
        requests: Resources,
        assumed: bool,
    ) {
        let id = match self.pods.get(uid) {
            Some(existing) if existing.node == node => {
                // Same place: a binding confirmed, or a status change; labels may change.
                let changed = existing.labels != labels;
                let existing = self.pods.get_mut(uid);
                if let Some(existing) = existing {
                    existing.assumed = assumed && existing.assumed;
                    if changed {
                        existing.labels = labels;
                    }
                }
                if changed {
                    if let Some(placed) = self.pods.get(uid).and_then(|p| self.placed(p)) {
                        self.publish(Change::PodPlaced(placed));
                    }
                }
                return;
            }
            Some(existing) => {
                let id = existing.id;
                let old = existing.node.clone();
                if let Some(set) = self.on_node.get_mut(&old) {
                    set.remove(uid);
                }
                id
            }
            None => {
                self.next_pod_id += 1;
                self.next_pod_id
            }
        };
        let pod = CachedPod { id, node: node.to_string(), namespace: namespace.to_string(), labels, requests, assumed };
        self.on_node.entry(node.to_string()).or_default().insert(uid.to_string());
        match self.placed(&pod) {
            Some(placed) => self.publish(Change::PodPlaced(placed)),
            // On a node not known (yet): nothing to count it against; a removal undoes it.
            None => self.publish(Change::PodRemoved(id)),
        }
        self.pods.insert(uid.to_string(), pod);
    }

    /// Whether the pod is assumed (its binding in flight).
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| p.assumed)
    }

    /// Whether the pod holds resources on a node (bound or assumed).
    #[cfg(test)]
    pub fn is_placed(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// The pod no longer holds resources (deleted, finished, or its assumption failed).
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(pod) = self.pods.remove(uid) else { return false };
        if let Some(set) = self.on_node.get_mut(&pod.node) {
            set.remove(uid);
            if set.is_empty() {
                self.on_node.remove(&pod.node);
            }
        }
        self.publish(Change::PodRemoved(pod.id));
        true
    }

    /// Forget an assumption whose binding failed (a bound pod stays).
    pub fn forget(&mut self, uid: &str) {
        if self.is_assumed(uid) {
            self.remove_pod(uid);
        }
    }

    /// The whole table as changes: every node, then every pod placed on one.
    pub fn snapshot(&self) -> Vec<Change> {
        let mut changes: Vec<Change> =
            self.by_index.values().filter_map(|n| self.nodes.get(n)).cloned().map(Change::NodeSet).collect();
        changes.extend(self.pods.values().filter_map(|p| self.placed(p)).map(Change::PodPlaced));
        changes
    }

    /// A new sink, holding the whole table to start with.
    pub fn open_sink(&mut self) -> u64 {
        self.next_sink += 1;
        let snapshot = self.snapshot();
        self.sinks.insert(self.next_sink, snapshot);
        self.next_sink
    }

    pub fn close_sink(&mut self, sink: u64) {
        self.sinks.remove(&sink);
    }

    /// What `sink` has not been sent yet (emptying it).
    pub fn take(&mut self, sink: u64) -> Vec<Change> {
        self.sinks.get_mut(&sink).map(std::mem::take).unwrap_or_default()
    }

    /// Start `sink` over with the whole table (its policy lost its copy).
    pub fn reset_sink(&mut self, sink: u64) {
        let snapshot = self.snapshot();
        if let Some(pending) = self.sinks.get_mut(&sink) {
            *pending = snapshot;
        }
    }

    /// Every node's index, in order.
    pub fn candidates(&self) -> Vec<u32> {
        self.by_index.keys().copied().collect()
    }

    pub fn node_name(&self, index: u32) -> Option<&str> {
        self.by_index.get(&index).map(String::as_str)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, cpu: u64) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            labels: vec![("kubernetes.io/hostname".into(), name.into())],
            allocatable: Resources { milli_cpu: cpu, memory: 1 << 30, ephemeral_storage: 0, pods: 110 },
            taints: Vec::new(),
            unschedulable: false,
        }
    }

    fn requests() -> Resources {
        Resources { milli_cpu: 100, memory: 0, ephemeral_storage: 0, pods: 1 }
    }

    #[test]
    fn sinks_get_the_table_then_its_changes() {
        let mut cache = Cache::default();
        assert!(cache.set_node(spec("a", 1000)));
        assert!(!cache.set_node(spec("a", 1000)), "the same node again changes nothing");
        cache.place("u1", "a", "default", Vec::new(), requests(), true);
        let sink = cache.open_sink();
        let first = cache.take(sink);
        assert!(matches!(first.as_slice(), [Change::NodeSet(n), Change::PodPlaced(p)] if n.index == 0 && p.node == 0));
        assert!(cache.set_node(spec("b", 2000)));
        cache.forget("u1");
        let next = cache.take(sink);
        assert!(matches!(next.as_slice(), [Change::NodeSet(n), Change::PodRemoved(1)] if n.index == 1), "{next:?}");
        assert!(cache.take(sink).is_empty());
        assert_eq!(cache.candidates(), vec![0, 1]);
    }

    #[test]
    fn a_confirmed_binding_is_no_longer_an_assumption() {
        let mut cache = Cache::default();
        cache.set_node(spec("a", 1000));
        cache.place("u1", "a", "default", Vec::new(), requests(), true);
        assert!(cache.is_assumed("u1"));
        cache.place("u1", "a", "default", Vec::new(), requests(), false);
        assert!(!cache.is_assumed("u1"));
        cache.forget("u1");
        assert!(cache.is_placed("u1"), "forget leaves a bound pod");
    }

    #[test]
    fn pods_bound_before_their_node_is_known_count_once_it_is() {
        let mut cache = Cache::default();
        let sink = cache.open_sink();
        cache.place("u1", "later", "default", Vec::new(), requests(), false);
        cache.set_node(spec("later", 1000));
        let changes = cache.take(sink);
        assert!(matches!(changes.last(), Some(Change::PodPlaced(p)) if p.node == 0), "{changes:?}");
        assert!(cache.remove_node("later"));
        cache.set_node(spec("later", 1000));
        assert_eq!(cache.candidates(), vec![1], "indices are never reused");
    }
}
