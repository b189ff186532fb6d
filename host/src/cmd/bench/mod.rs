//! `wasmkube bench ...`: benchmarks that print their figures and, in the same run, a
//! baseline to compare against. Never timed assertions: the numbers are for people.

mod api;
mod storage;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// The Kubernetes API over HTTPS on both backends, beside the same operations on the store.
    Api(api::ApiBenchOptions),
    /// Storage: both backends and raw etcd through etcd-client, side by side.
    Storage(storage::StorageBenchOptions),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Api(options) => api::run(options).await,
        BenchCommand::Storage(options) => storage::run(options).await,
    }
}
