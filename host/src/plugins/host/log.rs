//! `wasmkube:plugin/log`: a plugin's log lines, as the host's tracing events named by the
//! plugin and its digest.

use crate::plugins::bindings::log::{Host, Level};
use crate::plugins::state::HostState;

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) {
        let (plugin, digest) = (&*self.plugin, &*self.digest);
        match level {
            Level::Debug => tracing::debug!(plugin, digest, "{message}"),
            Level::Info => tracing::info!(plugin, digest, "{message}"),
            Level::Warn => tracing::warn!(plugin, digest, "{message}"),
            Level::Error => tracing::error!(plugin, digest, "{message}"),
        }
    }
}
