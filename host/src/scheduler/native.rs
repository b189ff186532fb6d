//! The default policy compiled natively: `plugins/default-policy/src/policy.rs`, the
//! same source the plugin is built from, over the host's bindings of the same WIT types.
//! It is the benchmark's baseline (`bench scheduler`), and what `--scheduler-policy=native`
//! runs.

/// What `policy.rs` names as `super::types`.
mod types {
    pub use crate::plugins::policy_types::*;
}

#[path = "../../../plugins/default-policy/src/policy.rs"]
mod policy;

pub use policy::DefaultPolicy;
