//! What one instance's store holds ([`HostState`]): WASI with nothing granted, the memory
//! limit, the call's deadline, and what the plugin may read through `client`. Also how a
//! store is made (limits and the epoch deadline callback) and how a failed call is told
//! apart (timeout, out of memory, trap).
//!
//! The host interfaces (`host/`) are implemented on this state; the engine (`runtime.rs`)
//! and the worlds' modules only make and use stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, StoreLimits, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::error::CallError;
use super::manifest::Capability;
use super::Client;

/// What a plugin call's store holds; see the module doc.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    /// When the call under way must end.
    pub(super) deadline: Instant,
    pub(super) plugin: Arc<str>,
    pub(super) digest: Arc<str>,
    pub(super) capabilities: Arc<[Capability]>,
    pub(super) client: Option<Arc<dyn Client>>,
}

impl HostState {
    pub(super) fn new(
        plugin: Arc<str>,
        digest: Arc<str>,
        memory: usize,
        capabilities: Arc<[Capability]>,
        client: Option<Arc<dyn Client>>,
    ) -> Self {
        Self {
            // Nothing inherited or preopened: no files, environment, arguments or sockets.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: wasmtime::StoreLimitsBuilder::new().memory_size(memory).trap_on_grow_failure(true).build(),
            deadline: Instant::now(),
            plugin,
            digest,
            capabilities,
            client,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// What a failed call was: a timeout (the epoch deadline), running out of memory, or a trap.
pub(super) fn classify(error: wasmtime::Error, timeout: Duration, memory_limit: usize) -> CallError {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::Interrupt {
            return CallError::Timeout(timeout);
        }
    }
    let text = format!("{error:#}");
    if text.contains("forcing a memory growth failure to be a trap") || text.contains("memory growth") {
        return CallError::OutOfMemory(memory_limit);
    }
    CallError::Trap(text)
}

/// A store for one instance: limits and the deadline callback set.
pub(super) fn store(engine: &Engine, state: HostState) -> wasmtime::Store<HostState> {
    let mut store = wasmtime::Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|context| {
        if Instant::now() >= context.data().deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}
