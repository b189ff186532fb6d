//! A throwaway single-member etcd (Debian's `etcd-server`) on free loopback ports in a
//! directory of the caller's: what the tests and `wasmkube bench storage` run the etcd
//! backend against. Owns only the child process; killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{etcd::EtcdStore, StorageMetrics, Store};

/// Where etcd may be installed, in the order tried.
const ETCD_BINARIES: [&str; 2] = ["/usr/bin/etcd", "/usr/local/bin/etcd"];

#[derive(Debug, thiserror::Error)]
pub enum LocalEtcdError {
    #[error("etcd is not installed (looked for {ETCD_BINARIES:?}); install Debian's etcd-server: apt-get install etcd-server")]
    NotInstalled,
    #[error("cannot start etcd: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("no free loopback port: {0}")]
    NoPort(#[source] std::io::Error),
    #[error("etcd did not become healthy within {0:?}")]
    NotHealthy(Duration),
}

/// A running etcd; see the module doc.
pub struct LocalEtcd {
    child: Child,
    endpoint: String,
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalEtcd {
    /// Start etcd with its data in `dir`, serving clients on `client_port` (0: a free one),
    /// and wait until it answers.
    pub async fn start(dir: &Path, client_port: u16) -> Result<Self, LocalEtcdError> {
        let binary =
            ETCD_BINARIES.iter().map(PathBuf::from).find(|p| p.exists()).ok_or(LocalEtcdError::NotInstalled)?;
        let client_port = if client_port == 0 { free_port().map_err(LocalEtcdError::NoPort)? } else { client_port };
        let peer_port = free_port().map_err(LocalEtcdError::NoPort)?;
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new(binary)
            .arg("--name=local")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=local={peer}"))
            .arg("--log-level=error")
            .arg("--logger=zap")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(LocalEtcdError::Spawn)?;
        let etcd = Self { child, endpoint };
        let deadline = Duration::from_secs(30);
        let started = Instant::now();
        let probe =
            EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/".into(), StorageMetrics::unregistered()).await;
        if let Ok(probe) = probe {
            while started.elapsed() < deadline {
                if probe.current_revision().await.is_ok() {
                    return Ok(etcd);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err(LocalEtcdError::NotHealthy(deadline))
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The etcd process's id (a benchmark reads its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
