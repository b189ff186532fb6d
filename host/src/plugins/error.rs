//! The plugin runtime's errors: why a module could not be loaded ([`LoadError`]), why one
//! call failed ([`CallError`], which the plugin's failure policy judges), and what a
//! `client` call may fail with ([`ClientError`]).

use std::time::Duration;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the module {path}: {why}")]
    Read { path: String, why: String },
    #[error("the module is not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("the component does not implement the world wasmkube:plugin/{world}: {why}")]
    WrongWorld { world: &'static str, why: String },
    #[error("the plugin refused its config: {0}")]
    Config(String),
    #[error("the manifest is invalid: {0}")]
    Manifest(String),
    #[error("{0}")]
    Runtime(String),
}

/// Why one call failed (the plugin's failure policy decides what that means).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("ran out of memory (limit {0} bytes)")]
    OutOfMemory(usize),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    /// The plugin refused its config (`configure` answered an error).
    #[error("refused its config: {0}")]
    Configure(String),
}

impl CallError {
    /// The metric label of this outcome.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::OutOfMemory(_) => "oom",
            Self::Trap(_) => "trap",
            Self::Instantiate(_) | Self::Configure(_) => "error",
        }
    }
}

/// What a `client` call may fail with (the WIT `client-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}
