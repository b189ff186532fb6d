//! A real OCI registry for pull tests: Debian's `docker-registry` (distribution 2.8) on a
//! free loopback port in a temp dir, over TLS with a certificate from a CA made for the test,
//! requiring a user from an htpasswd file (bcrypt), as a private registry is. Killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;

pub struct TestRegistry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// The CA that signed the registry's certificate (PEM file), for `--registry-config`.
    pub ca_file: PathBuf,
    pub user: String,
    pub password: String,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub async fn start() -> TestRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::free_port();
        let address = format!("127.0.0.1:{port}");
        // A CA, and the registry's certificate for 127.0.0.1.
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "wasmkube test registry CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().expect("an address"))];
        params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let ca_file = write("ca.pem", ca.pem());
        let cert_file = write("registry.pem", cert.pem());
        let key_file = write("registry-key.pem", key.serialize_pem());
        let (user, password) = ("puller".to_string(), "right-password".to_string());
        let hash = bcrypt::hash_with_result(&password, 4).expect("bcrypt").format_for_version(bcrypt::Version::TwoY);
        let htpasswd = write("htpasswd", format!("{user}:{hash}\n"));
        let storage = dir.path().join("storage");
        let config = write(
            "config.yml",
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: wasmkube-test\n    path: {}\n",
                storage.display(),
                cert_file.display(),
                key_file.display(),
                htpasswd.display()
            ),
        );
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (Debian's docker-registry package; scripts/test installs it)");
        crate::wait_for("docker-registry to listen", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(&address).await.ok()
        })
        .await;
        TestRegistry { child, address, ca_file, user, password, _dir: dir }
    }

    /// Push `component` as the wasm OCI artifact `repository:tag` (what `wkg`/`oras` push).
    pub async fn push(&self, component: &std::path::Path, repository: &str, tag: &str) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pem = std::fs::read(&self.ca_file).expect("the CA");
        let client = oci_client::Client::try_from(ClientConfig {
            extra_root_certificates: vec![Certificate { encoding: CertificateEncoding::Pem, data: pem }],
            ..ClientConfig::default()
        })
        .expect("an OCI client");
        let reference: oci_client::Reference =
            format!("{}/{repository}:{tag}", self.address).parse().expect("a reference");
        let layer = ImageLayer::new(std::fs::read(component).expect("the component"), "application/wasm".into(), None);
        let config = Config::new(b"{}".to_vec(), "application/vnd.wasm.config.v0+json".into(), None);
        let auth = RegistryAuth::Basic(self.user.clone(), self.password.clone());
        client.push(&reference, &[layer], config, &auth, None).await.expect("the push");
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
