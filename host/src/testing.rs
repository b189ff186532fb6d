//! An API server in-process for tests: `TestServer::start()` serves the whole API on a
//! free loopback port over a throwaway embedded store, and hands back its URL and an
//! admin kubeconfig. A kube-rs controller's tests run against the real API in
//! milliseconds, without a cluster (what kube-rs issue 1108 asks for):
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let server = wasmkube::testing::TestServer::start().await?;
//! // kube::Config::from_custom_kubeconfig(kube::config::Kubeconfig::read_from(server.kubeconfig())?, &Default::default())
//! println!("{}", server.url());
//! server.stop().await?;
//! # Ok(()) }
//! ```
//!
//! It is `wasmkube serve` itself (same router, registry and store), started in the
//! caller's tokio runtime; nothing here is a fake.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::Context;

use crate::cmd::serve::{Server, ValidServeOptions};

/// A running in-process API server; see the module doc. Dropping it stops serving;
/// [`TestServer::stop`] also waits for the store to close.
pub struct TestServer {
    server: Option<Server>,
    url: String,
    dir: tempfile::TempDir,
}

impl TestServer {
    /// Start on 127.0.0.1 with a free port and a fresh data dir; returns once the API
    /// serves resources (namespaces default, kube-system, ... exist).
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("wasmkube-test-").tempdir().context("creating a data dir")?;
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let mut server = Server::start(ValidServeOptions::embedded(dir.path().join("data"), listen)).await?;
        server.ready().await?;
        let url = format!("https://{}", server.advertise);
        Ok(Self { server: Some(server), url, dir })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin kubeconfig (client certificate; the cluster CA inline).
    pub fn kubeconfig(&self) -> &Path {
        self.server.as_ref().map_or(self.dir.path(), |s| s.kubeconfig.as_path())
    }

    /// The throwaway data dir (removed when the server is dropped).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Compact the store at its current revision, as etcd's periodic compaction does:
    /// watches that reconnect from an older resourceVersion get 410 Gone and relist.
    pub async fn compact(&self) -> anyhow::Result<i64> {
        let registry = self.server.as_ref().and_then(|s| s.registry()).context("the server is stopped")?;
        Ok(registry.compact().await?)
    }

    /// Stop serving and close the store.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        match self.server.take() {
            Some(server) => server.shutdown().await,
            None => Ok(()),
        }
    }
}
