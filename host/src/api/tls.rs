//! TLS like k3s: on first start a CA, a serving certificate and an admin client
//! certificate are generated into `<data-dir>/tls/`, and `<data-dir>/kubeconfig`
//! points kubectl at the server with them. Later starts reuse them.
//!
//! [`TlsListener`] accepts TCP connections and runs each handshake on its own task, so a
//! slow or broken client never holds up the others. Client certificates are requested but
//! not required (tokens will authenticate too); authentication itself arrives with the
//! authenticator plugins. Owns certificates and handshakes only.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use super::conn::WriteDeadline;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot {what} {}: {source}", .path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{} is not a valid PEM file: {reason}", .path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The PEM files of a cluster's TLS identity.
pub struct TlsFiles {
    dir: PathBuf,
}

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";
const ADMIN_CERT: &str = "admin.crt";
const ADMIN_KEY: &str = "admin.key";

impl TlsFiles {
    /// Load the files in `<data_dir>/tls`, generating them first if there are none. The
    /// serving certificate names 127.0.0.1, ::1, localhost and `listen`'s address.
    pub fn ensure(data_dir: &Path, listen: SocketAddr) -> Result<Self, TlsError> {
        let dir = data_dir.join("tls");
        let files = Self { dir };
        if !files.path(CA_CERT).exists() {
            files.generate(listen)?;
        }
        Ok(files)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Result<String, TlsError> {
        let path = self.path(name);
        std::fs::read_to_string(&path).map_err(|source| TlsError::Io { what: "read", path, source })
    }

    fn write(&self, name: &str, content: &str, private: bool) -> Result<(), TlsError> {
        write_whole(&self.path(name), content, if private { 0o600 } else { 0o644 })
    }

    fn generate(&self, listen: SocketAddr) -> Result<(), TlsError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| TlsError::Io {
            what: "create",
            path: self.dir.clone(),
            source,
        })?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "wasmkube-ca");
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, &ca_key);

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec!["localhost".to_string(), "kubernetes".to_string()])?;
        let mut ips: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
        if !listen.ip().is_unspecified() && !ips.contains(&listen.ip()) {
            ips.push(listen.ip());
        }
        server.subject_alt_names.extend(ips.into_iter().map(SanType::IpAddress));
        server.distinguished_name.push(DnType::CommonName, "wasmkube-apiserver");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name.push(DnType::CommonName, "admin");
        admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        self.write(CA_KEY, &ca_key.serialize_pem(), true)?;
        self.write(SERVER_CERT, &server_cert.pem(), false)?;
        self.write(SERVER_KEY, &server_key.serialize_pem(), true)?;
        self.write(ADMIN_CERT, &admin_cert.pem(), false)?;
        self.write(ADMIN_KEY, &admin_key.serialize_pem(), true)?;
        // The CA certificate last: its presence says the set is complete.
        self.write(CA_CERT, &ca_cert.pem(), false)?;
        tracing::info!(dir = %self.dir.display(), "generated the cluster CA and certificates");
        Ok(())
    }

    /// The CA certificate in PEM, for clients.
    pub fn ca_pem(&self) -> Result<String, TlsError> {
        self.read(CA_CERT)
    }

    /// The CA's private key in PEM (what signs node certificates).
    pub fn ca_key_pem(&self) -> Result<String, TlsError> {
        self.read(CA_KEY)
    }

    /// The admin client certificate and key in PEM.
    pub fn admin_pem(&self) -> Result<(String, String), TlsError> {
        Ok((self.read(ADMIN_CERT)?, self.read(ADMIN_KEY)?))
    }

    /// The server's rustls configuration: our certificate; client certificates signed by
    /// our CA requested but optional.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let pem_error = |name: &str, e: rustls::pki_types::pem::Error| TlsError::Pem {
            path: self.path(name),
            reason: e.to_string(),
        };
        let certs = CertificateDer::pem_slice_iter(self.read(SERVER_CERT)?.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(SERVER_CERT, e))?;
        let key =
            PrivateKeyDer::from_pem_slice(self.read(SERVER_KEY)?.as_bytes()).map_err(|e| pem_error(SERVER_KEY, e))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.ca_pem()?.as_bytes()) {
            roots.add(ca.map_err(|e| pem_error(CA_CERT, e))?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Write a kubeconfig for the admin user to `path`, pointing at `server` (an https URL).
    pub fn write_kubeconfig(&self, path: &Path, server: &str) -> Result<(), TlsError> {
        use base64::Engine;
        let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
        let (cert, key) = self.admin_pem()?;
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: wasmkube\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: wasmkube\n  context:\n    cluster: wasmkube\n    user: admin\n    namespace: default\ncurrent-context: wasmkube\n",
            ca = b64(&self.ca_pem()?),
            cert = b64(&cert),
            key = b64(&key),
        );
        write_whole(path, &kubeconfig, 0o600)
    }
}

/// Write `content` to `path` so that a reader sees either no file or all of it (clients
/// poll for these files while the server starts): a temp file beside it, then a rename.
pub fn write_whole(path: &Path, content: &str, mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Io { what: "write", path: path.to_path_buf(), source };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&partial).map_err(io)?;
    std::io::Write::write_all(&mut file, content.as_bytes()).map_err(io)?;
    // Durable before it is visible: after a crash the file is whole or absent.
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&partial, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// Most TLS handshakes in progress before new connections wait.
const HANDSHAKES_IN_FLIGHT: usize = 256;

/// A TCP listener whose connections come out TLS-terminated; for `axum::serve`.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    write_timeout: std::time::Duration,
    write_timeouts: prometheus::IntCounter,
}

impl TlsListener {
    /// Accept on `listener`; a connection whose client reads nothing for `write_timeout`
    /// while the server writes to it is closed ([`WriteDeadline`]) and counted in
    /// `write_timeouts`.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        write_timeout: std::time::Duration,
        write_timeouts: prometheus::IntCounter,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (done, ready) = mpsc::channel(HANDSHAKES_IN_FLIGHT);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if done.is_closed() {
                    return;
                }
                // Answers are small and written whole: send them now, not after Nagle's delay.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, ready, write_timeout, write_timeouts })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = WriteDeadline<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some((tls, peer)) => (WriteDeadline::new(tls, self.write_timeout, self.write_timeouts.clone()), peer),
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client polling for the CA while the server generates its files (as the tests and
    /// scripts do) reads either nothing or a whole certificate, never an empty one.
    #[test]
    fn a_reader_never_sees_a_partial_file() {
        let root = tempfile::tempdir().expect("temp dir");
        for round in 0..20 {
            let data_dir = root.path().join(round.to_string());
            let ca = data_dir.join("tls").join(CA_CERT);
            let reader = std::thread::spawn(move || loop {
                if let Ok(text) = std::fs::read_to_string(&ca) {
                    return text;
                }
                std::thread::yield_now();
            });
            TlsFiles::ensure(&data_dir, "127.0.0.1:0".parse().expect("address")).expect("generate");
            let seen = reader.join().expect("reader");
            assert!(
                seen.starts_with("-----BEGIN CERTIFICATE-----")
                    && seen.trim_end().ends_with("-----END CERTIFICATE-----"),
                "round {round}: {seen:?}"
            );
            let left: Vec<_> = std::fs::read_dir(data_dir.join("tls"))
                .expect("tls dir")
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().ends_with(".partial"))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }
}
