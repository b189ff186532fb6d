//! A scheduler policy for tests (not loaded by default). By its config's `behavior`:
//!
//! - `default`: the default policy (the same `policy.rs`), except for pods annotated
//!   `wasmkube.io/test-policy`: `trap` traps, `loop` loops until the host's deadline
//!   stops it, `refuse` answers an error;
//! - `prefer-last-node`: every candidate is feasible; the score of a node is its rank by
//!   name (the last name scores highest), so a test can recompute its choice.

mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "scheduler-policy" });
}

mod types {
    pub use crate::bindings::wasmkube::plugin::scheduler_types::*;
}

#[path = "../../default-policy/src/policy.rs"]
mod policy;

use std::cell::RefCell;
use std::collections::HashMap;

use bindings::exports::wasmkube::plugin::policy::Guest;
use types::{Change, Placement, Pod};

enum Behavior {
    Default(policy::DefaultPolicy),
    PreferLastNode(HashMap<u32, String>),
}

thread_local! {
    static STATE: RefCell<Option<Behavior>> = const { RefCell::new(None) };
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let value: serde_json::Value = serde_json::from_str(&config).map_err(|e| e.to_string())?;
        let behavior = match value.get("behavior").and_then(|b| b.as_str()).unwrap_or("default") {
            "default" => Behavior::Default(policy::DefaultPolicy::new(&config)?),
            "prefer-last-node" => Behavior::PreferLastNode(HashMap::new()),
            other => return Err(format!("behavior must be default or prefer-last-node, not {other:?}")),
        };
        STATE.with(|s| *s.borrow_mut() = Some(behavior));
        Ok(())
    }

    fn apply(changes: Vec<Change>) {
        STATE.with(|s| match s.borrow_mut().as_mut() {
            Some(Behavior::Default(policy)) => policy.apply(&changes),
            Some(Behavior::PreferLastNode(names)) => {
                for change in changes {
                    match change {
                        Change::NodeSet(node) => {
                            names.insert(node.index, node.name);
                        }
                        Change::NodeRemoved(index) => {
                            names.remove(&index);
                        }
                        _ => {}
                    }
                }
            }
            None => {}
        });
    }

    fn schedule(pod: Pod, candidates: Vec<u32>) -> Result<Placement, String> {
        let misbehave = pod.annotations.iter().find(|(k, _)| k == "wasmkube.io/test-policy").map(|(_, v)| v.as_str());
        match misbehave {
            Some("trap") => panic!("the test policy traps for {}", pod.name),
            Some("loop") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("refuse") => return Err(format!("the test policy refuses {}", pod.name)),
            _ => {}
        }
        STATE.with(|s| match s.borrow().as_ref() {
            Some(Behavior::Default(policy)) => policy.schedule(&pod, &candidates),
            Some(Behavior::PreferLastNode(names)) => {
                let mut known: Vec<(&String, u32)> =
                    candidates.iter().filter_map(|c| names.get(c).map(|n| (n, *c))).collect();
                known.sort();
                Ok(Placement {
                    feasible: known.iter().map(|(_, node)| *node).collect(),
                    scores: (0..known.len() as i64).collect(),
                    rejections: Vec::new(),
                    reasons: Vec::new(),
                })
            }
            None => Err("not configured".into()),
        })
    }
}

bindings::export!(Plugin with_types_in bindings);
