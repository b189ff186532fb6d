//! `wasmkube kubeconfig [--data-dir D]`: print the admin kubeconfig `serve` wrote, so
//! `wasmkube kubeconfig > ~/.kube/config` (or `KUBECONFIG=<(wasmkube kubeconfig)`) works.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::serve::{default_data_dir, KUBECONFIG_FILE};

#[derive(clap::Args, Debug)]
pub struct KubeconfigOptions {
    /// The data dir `serve` ran with (same default as `serve`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn run(options: KubeconfigOptions) -> anyhow::Result<()> {
    let data_dir = options.data_dir.unwrap_or_else(default_data_dir);
    let path = data_dir.join(KUBECONFIG_FILE);
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "no kubeconfig at {}: run `wasmkube serve --data-dir {}` first (it writes one on start)",
            path.display(),
            data_dir.display()
        )
    })?;
    std::io::stdout().write_all(&text).context("writing to stdout")?;
    Ok(())
}
