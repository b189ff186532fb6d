//! `wasmkube bench ...`: benchmarks that print their figures and, in the same run, a
//! baseline to compare against. Never timed assertions: the numbers are for people.

mod storage;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Storage: both backends and raw etcd through etcd-client, side by side.
    Storage(storage::StorageBenchOptions),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Storage(options) => storage::run(options).await,
    }
}
