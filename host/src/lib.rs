//! wasmkube: a Kubernetes-style control plane whose behaviour is pluggable WebAssembly.
//!
//! The layers (see ARCHITECTURE.md) stand on each other, never the other way round:
//! `cmd` drives everything; `storage` is the bottom and knows nothing above it.

// Storage errors carry the key's current value on a failed compare-and-swap, as etcd
// does, so callers need no second read; that makes them large, on the error path only.
#![allow(clippy::result_large_err)]

pub mod admission;
pub mod api;
pub mod auth;
pub mod client;
pub mod cmd;
pub mod controllers;
pub mod datadir;
#[cfg(test)]
mod fuzzing;
pub mod machinery;
pub mod node;
pub mod oci;
pub mod plugins;
pub mod quantity;
pub mod registry;
pub mod scheduler;
pub mod storage;
pub mod testing;
