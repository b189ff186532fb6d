//! The command line: `wasmkube serve`, `wasmkube kubeconfig`, `wasmkube store ...`,
//! `wasmkube bench ...`, `wasmkube plugin ...`, `wasmkube image ...`, `wasmkube token ...`.
//!
//! Every command follows Kubernetes' pattern: flags parse into `Options`, `complete()`
//! fills defaults, `validate()` returns every problem at once ([`InvalidOptions`], exit
//! code 2), `run()` does the work. This is the binary's edge: errors here are `anyhow`.

mod bench;
mod image;
mod kubeconfig;
mod node;
mod plugin;
pub(crate) mod serve;
mod store;
mod token;

use clap::{Parser, Subcommand};

pub use serve::ServeOptions;

#[derive(Parser, Debug)]
#[command(
    name = "wasmkube",
    version,
    about = "A Kubernetes-style control plane whose behaviour is pluggable WebAssembly"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane (API server, storage, and every component) until SIGINT/SIGTERM.
    Serve(ServeOptions),
    /// Print the admin kubeconfig `serve` wrote into the data dir.
    Kubeconfig(kubeconfig::KubeconfigOptions),
    /// Work with the embedded store's data dir: snapshots, load generation.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Benchmarks that print their figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Plugins: check a component, test it on fixtures, load it into a server, list them.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Images in the cluster's registry: push a component, list, remove.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Run a node agent alone, joining the cluster at --server with a join token.
    Node(node::NodeOptions),
    /// Bootstrap tokens for joining nodes.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// Every problem found on the command line, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid options:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct InvalidOptions(pub Vec<String>);

impl InvalidOptions {
    /// `Ok` when no problem was found.
    pub fn check(problems: Vec<String>) -> Result<(), InvalidOptions> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidOptions(problems))
        }
    }
}

/// An HTTPS client that trusts the cluster CA in `data_dir` and presents its admin
/// certificate, as kubectl does with the kubeconfig `serve` wrote.
pub(crate) fn admin_https_client(data_dir: &std::path::Path, user_agent: &str) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    let tls = data_dir.join("tls");
    let read = |file: &str| {
        std::fs::read(tls.join(file))
            .with_context(|| format!("reading {file} in {} (is it the server's data dir?)", tls.display()))
    };
    let mut identity = read("admin.crt")?;
    identity.extend(read("admin.key")?);
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.crt")?)?)
        .identity(reqwest::Identity::from_pem(&identity)?)
        .user_agent(user_agent)
        .build()
        .context("building the HTTPS client")
}

/// Log through `tracing` to stderr; `RUST_LOG` filters (default: info). Colours only
/// when stderr is a terminal (a log file or a pipe gets plain text).
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Run one command to completion on a fresh tokio runtime.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(options) => serve::run(options).await,
            Command::Kubeconfig(options) => kubeconfig::run(options),
            Command::Store(command) => store::run(command).await,
            Command::Bench(command) => bench::run(command).await,
            Command::Plugin(command) => plugin::run(command).await,
            Command::Image(command) => image::run(command).await,
            Command::Token(command) => token::run(command).await,
            Command::Node(options) => node::run(options).await,
        }
    })
}
