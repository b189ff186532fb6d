//! wasmkube: a Kubernetes-style control plane whose behaviour is pluggable WebAssembly.
//!
//! The layers (see ARCHITECTURE.md) stand on each other, never the other way round:
//! `cmd` drives everything; `storage` is the bottom and knows nothing above it.

pub mod api;
pub mod cmd;
pub mod datadir;
pub mod registry;
pub mod storage;
