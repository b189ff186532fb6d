//! `--registry-config`: how the node reaches registries other than the cluster's, in the
//! shape of k3s' `registries.yaml` (what containerd's hosts config says, in one file):
//!
//! ```yaml
//! mirrors:
//!   "127.0.0.1:5000":
//!     endpoint: ["http://127.0.0.1:5000"]   # plain HTTP: loopback registries only
//! configs:
//!   "127.0.0.1:5443":
//!     auth: {username: alice, password: s3cret}   # or auth: base64("user:password")
//!     tls: {ca_file: /etc/wasmkube/registry-ca.pem}
//! ```
//!
//! Owns reading and checking the file; reaching a registry is `remote.rs`'s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

/// The file as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default)]
    mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    configs: BTreeMap<String, HostConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mirror {
    #[serde(default)]
    endpoint: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostConfig {
    auth: Option<Auth>,
    tls: Option<Tls>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Auth {
    username: Option<String>,
    password: Option<String>,
    /// base64 of `user:password`, as in a docker config.
    auth: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// How one registry is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    /// `host:port` requests go to (a mirror's endpoint, or the registry itself).
    pub address: String,
    pub plain_http: bool,
    /// PEM certificates trusted besides the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
    /// The node's own credentials for it (a pod's pull secrets come first).
    pub credentials: Option<(String, String)>,
}

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the registry config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the registry config {path} is not valid YAML of mirrors and configs: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("registry config, {registry}: {message}")]
    Invalid { registry: String, message: String },
}

impl RegistryConfig {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let config: RegistryConfig = serde_yaml_ng::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        for registry in config.mirrors.keys().chain(config.configs.keys()) {
            config.host(registry)?;
        }
        Ok(config)
    }

    /// Reach `registry` with `ca_file`'s CA and `credentials` (what a joined node does for
    /// the cluster's own registry).
    pub fn add_host(&mut self, registry: &str, ca_file: &Path, credentials: (String, String)) {
        let auth = Auth { username: Some(credentials.0), password: Some(credentials.1), auth: None };
        let tls = Tls { ca_file: Some(ca_file.to_path_buf()), insecure_skip_verify: false };
        self.configs.insert(registry.to_string(), HostConfig { auth: Some(auth), tls: Some(tls) });
    }

    /// How `registry` (`host[:port]`) is reached.
    pub fn host(&self, registry: &str) -> Result<Host, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { registry: registry.to_string(), message };
        let mut host = Host { address: registry.to_string(), ..Host::default() };
        if let Some(endpoint) = self.mirrors.get(registry).and_then(|m| m.endpoint.first()) {
            let (scheme, rest) = endpoint.split_once("://").ok_or_else(|| {
                invalid(format!("endpoint {endpoint:?} is not http://HOST[:PORT] or https://HOST[:PORT]"))
            })?;
            let address = rest.trim_end_matches('/');
            match scheme {
                "https" => {}
                "http" if is_loopback(address) => host.plain_http = true,
                "http" => {
                    return Err(invalid(format!(
                        "endpoint {endpoint:?}: plain HTTP is allowed only for loopback registries (127.0.0.0/8, ::1, localhost), as containerd allows it for localhost"
                    )))
                }
                other => return Err(invalid(format!("endpoint {endpoint:?}: unknown scheme {other:?}"))),
            }
            host.address = address.to_string();
        }
        if let Some(config) = self.configs.get(registry) {
            if let Some(tls) = &config.tls {
                if let Some(file) = &tls.ca_file {
                    let pem = std::fs::read(file)
                        .map_err(|e| invalid(format!("cannot read ca_file {}: {e}", file.display())))?;
                    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                        return Err(invalid(format!("ca_file {} holds no PEM certificate", file.display())));
                    }
                    host.ca_pem = Some(pem);
                }
                host.insecure_skip_verify = tls.insecure_skip_verify;
            }
            if let Some(auth) = &config.auth {
                host.credentials = Some(credentials(auth).map_err(invalid)?);
            }
        }
        Ok(host)
    }
}

fn credentials(auth: &Auth) -> Result<(String, String), String> {
    match (&auth.username, &auth.password, &auth.auth) {
        (Some(user), Some(password), _) => Ok((user.clone(), password.clone())),
        (_, _, Some(encoded)) => decode_auth(encoded),
        _ => Err("auth needs username and password, or auth (base64 of user:password)".into()),
    }
}

/// `base64(user:password)`, as docker config files and pull secrets write credentials.
pub fn decode_auth(encoded: &str) -> Result<(String, String), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| format!("auth is not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "auth is not UTF-8 text".to_string())?;
    let (user, password) = text.split_once(':').ok_or("auth is not base64 of user:password")?;
    Ok((user.to_string(), password.to_string()))
}

/// Whether `host[:port]` is on this machine.
fn is_loopback(address: &str) -> bool {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> RegistryConfig {
        serde_yaml_ng::from_str(yaml).expect("valid")
    }

    #[test]
    fn plain_http_only_for_loopback_registries() {
        let config = parse("mirrors:\n  \"127.0.0.1:5000\":\n    endpoint: [\"http://127.0.0.1:5000\"]\n");
        let host = config.host("127.0.0.1:5000").expect("loopback");
        assert!(host.plain_http);
        assert_eq!(host.address, "127.0.0.1:5000");
        let config = parse("mirrors:\n  \"example.com\":\n    endpoint: [\"http://example.com\"]\n");
        let err = config.host("example.com").expect_err("not loopback");
        assert!(err.to_string().contains("only for loopback"), "{err}");
        assert!(is_loopback("localhost:5000") && is_loopback("[::1]:5000") && !is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn credentials_as_fields_or_as_docker_auth() {
        let config =
            parse("configs:\n  r:\n    auth: {username: alice, password: s3cret}\n  s:\n    auth: {auth: Ym9iOnB3}\n");
        assert_eq!(config.host("r").expect("r").credentials, Some(("alice".into(), "s3cret".into())));
        assert_eq!(config.host("s").expect("s").credentials, Some(("bob".into(), "pw".into())));
        assert_eq!(config.host("elsewhere").expect("default"), Host { address: "elsewhere".into(), ..Host::default() });
        assert!(
            serde_yaml_ng::from_str::<RegistryConfig>("configs:\n  r:\n    tsl: {}\n").is_err(),
            "typos are refused"
        );
    }
}
