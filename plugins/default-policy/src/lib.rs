//! The default scheduler policy as a plugin (the `scheduler-policy` world): the guest
//! side of `policy.rs`, which holds the policy itself. One instance keeps one node table,
//! so the host calls an instance one call at a time.

mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "scheduler-policy" });
}

/// The WIT types `policy.rs` is written against (the host's native build names its own).
mod types {
    pub use crate::bindings::wasmkube::plugin::scheduler_types::*;
}

mod policy;

use std::cell::RefCell;

use bindings::exports::wasmkube::plugin::policy::Guest;
use types::{Change, Placement, Pod};

thread_local! {
    static POLICY: RefCell<Option<policy::DefaultPolicy>> = const { RefCell::new(None) };
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let policy = policy::DefaultPolicy::new(&config)?;
        POLICY.with(|p| *p.borrow_mut() = Some(policy));
        Ok(())
    }

    fn apply(changes: Vec<Change>) {
        POLICY.with(|p| {
            if let Some(policy) = p.borrow_mut().as_mut() {
                policy.apply(&changes);
            }
        });
    }

    fn schedule(pod: Pod, candidates: Vec<u32>) -> Result<Placement, String> {
        POLICY.with(|p| match p.borrow().as_ref() {
            Some(policy) => policy.schedule(&pod, &candidates),
            None => Err("the policy was not configured".into()),
        })
    }
}

bindings::export!(Plugin with_types_in bindings);
