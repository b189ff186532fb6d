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
use wasmtime::{Engine, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::error::CallError;
use super::manifest::Capability;
use super::Client;

/// What a plugin call's store holds; see the module doc.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: Limits,
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
            limits: Limits { memory },
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

/// A plugin's memory limit, enforced by the store: growing a memory past it fails the
/// call with [`MemoryExhausted`], which is how [`classify`] tells it apart (by type: the
/// words wasmtime's own limiter writes change between versions). A module's own declared
/// maximum keeps WebAssembly's meaning (`memory.grow` answers -1).
pub(super) struct Limits {
    memory: usize,
}

/// A call that wanted more memory than its plugin may have.
#[derive(Debug, thiserror::Error)]
#[error("the plugin asked for {desired} bytes of memory, past its limit of {limit}")]
pub(super) struct MemoryExhausted {
    desired: usize,
    limit: usize,
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            return Err(wasmtime::Error::new(MemoryExhausted { desired, limit: self.memory }));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    /// The allocator could not give what the limit allows (a pooling slot is smaller).
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        tracing::debug!(error = %error, "a plugin's memory could not grow");
        Err(wasmtime::Error::new(MemoryExhausted { desired: 0, limit: self.memory }))
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

/// What a failed call was: a timeout (the epoch deadline), running out of memory, or a trap.
pub(super) fn classify(error: wasmtime::Error, timeout: Duration, memory_limit: usize) -> CallError {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::Interrupt {
            return CallError::Timeout(timeout);
        }
    }
    if error.downcast_ref::<MemoryExhausted>().is_some() {
        return CallError::OutOfMemory(memory_limit);
    }
    CallError::Trap(format!("{error:#}"))
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
