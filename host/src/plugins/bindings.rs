//! Every `bindgen!` of the WIT package (`wit/`), in one place, as wasmtime's WASI crate
//! keeps its own (`crates/wasi/src/p2/bindings.rs`). The worlds share their common
//! interfaces (`types`, `log`, `client`) through `with`, so each is one Rust type and one
//! host implementation (`host/`).
//!
//! Generated types stay inside `plugins`: the module files convert them to and from the
//! host's own types, except on the scheduler's per-pod path (`policy`), where the generated
//! records are what the scheduler builds (a conversion per pod and node would cost there).

/// The `admission` world; the home of the shared interfaces.
pub(super) mod admission {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "admission",
        imports: { default: async },
        exports: { default: async },
    });
}

/// The `controller` world.
pub(super) mod controller {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "controller",
        imports: { default: async },
        exports: { default: async },
        with: {
            "wasmkube:plugin/types": crate::plugins::bindings::admission::wasmkube::plugin::types,
            "wasmkube:plugin/log": crate::plugins::bindings::admission::wasmkube::plugin::log,
            "wasmkube:plugin/client": crate::plugins::bindings::admission::wasmkube::plugin::client,
        },
    });
}

/// The `scheduler-policy` world.
pub(super) mod policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "scheduler-policy",
        imports: { default: async },
        exports: { default: async },
        with: {
            "wasmkube:plugin/log": crate::plugins::bindings::admission::wasmkube::plugin::log,
        },
    });
}

/// The interfaces every world imports or shares.
pub(super) use admission::wasmkube::plugin::{client, log, types};
