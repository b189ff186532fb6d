//! `wasmkube bench ...`: benchmarks that print their figures (never timed assertions).

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {}
}
