//! The host side of the interfaces plugins import, one file per interface (`log.rs`,
//! `client.rs` with the controller world's `index`), each implemented on [`HostState`];
//! [`add_to_linker`] links them all. The worlds' own type interfaces have nothing to
//! implement.

mod client;
mod log;

use wasmtime::component::{HasSelf, Linker};

use super::bindings;
use super::error::LoadError;
use super::state::HostState;

/// Link every host interface of every world into `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<(), LoadError> {
    let link = |e: wasmtime::Error| LoadError::Runtime(format!("cannot link the plugins' host interfaces: {e}"));
    bindings::log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state).map_err(link)?;
    bindings::client::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state).map_err(link)?;
    bindings::controller::wasmkube::plugin::index::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| {
        state
    })
    .map_err(link)?;
    Ok(())
}

impl bindings::types::Host for HostState {}
impl bindings::admission::wasmkube::plugin::admission_types::Host for HostState {}
impl bindings::controller::wasmkube::plugin::controller_types::Host for HostState {}
impl bindings::policy::wasmkube::plugin::scheduler_types::Host for HostState {}
