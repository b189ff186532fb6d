//! `wasmkube bench ...`: benchmarks that print their figures and, in the same run, a
//! baseline to compare against. Never timed assertions: the numbers are for people.

mod api;
mod controllers;
mod cpu;
mod node;
mod plugins;
mod scheduler;
mod storage;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// The Kubernetes API over HTTPS on both backends, beside the same operations on the store.
    Api(api::ApiBenchOptions),
    /// Storage: both backends and raw etcd through etcd-client, side by side.
    Storage(storage::StorageBenchOptions),
    /// Controllers: a 1,000-replica Deployment, 100 x 10, a no-op reconcile as WebAssembly
    /// beside the same no-op native, informer memory per 10,000 pods.
    Controllers(controllers::ControllerBenchOptions),
    /// Plugins: a policy as WebAssembly beside the same policy compiled in; instantiation;
    /// reloads with a cold and a warm artifact cache; API creates with 0 and 3 plugins.
    Plugins(plugins::PluginBenchOptions),
    /// Scheduler: 10,000 pods on 1,000 simulated nodes with the default policy as
    /// WebAssembly and compiled natively; the policy's call alone, both ways.
    Scheduler(scheduler::SchedulerBenchOptions),
    /// The node agent: pods/s and latency from create to Ready for commands and HTTP
    /// servers, memory per idle pod, requests/s through one pod beside `wasmtime serve`.
    Node(node::NodeBenchOptions),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Api(options) => api::run(options).await,
        BenchCommand::Storage(options) => storage::run(options).await,
        BenchCommand::Plugins(options) => plugins::run(options).await,
        BenchCommand::Controllers(options) => controllers::run(options).await,
        BenchCommand::Scheduler(options) => scheduler::run(options).await,
        BenchCommand::Node(options) => node::run(options).await,
    }
}
