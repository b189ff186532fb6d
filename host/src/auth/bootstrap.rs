//! Bootstrap tokens, as Kubernetes has them: `<id>.<secret>` (6 and 16 characters of
//! `[a-z0-9]`), each the Secret `bootstrap-token-<id>` in kube-system of type
//! `bootstrap.kubernetes.io/token`. A token authenticates as `system:bootstrap:<id>` in
//! `system:bootstrappers` (and the Secret's `auth-extra-groups`) while the Secret says
//! `usage-bootstrap-authentication: "true"` and has not expired. A node joins with one.
//!
//! The join token a node is given is k3s' form, `K10<sha256 of the CA's PEM>::<id>.<secret>`:
//! the hash lets the node check the server it reached before it trusts it.
//!
//! Owns the token's shapes and checks; where Secrets live is the registry's business.

use base64::Engine;
use serde_json::{json, Value};

use super::{UserInfo, AUTHENTICATED};

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const NAMESPACE: &str = "kube-system";
/// The group every bootstrap token's user is in.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The extra group of the tokens wasmkube makes for nodes (kubeadm's is
/// `system:bootstrappers:kubeadm:default-node-token`).
pub const NODE_GROUP: &str = "system:bootstrappers:wasmkube:default-node-token";

/// A token's two halves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

/// A join token: the bootstrap token and the hash of the CA the node must find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// `sha256:<hex>` of the CA certificate's PEM text.
    pub ca_hash: Option<String>,
    pub token: BootstrapToken,
}

impl BootstrapToken {
    /// `<id>.<secret>`, if `text` has that shape.
    pub fn parse(text: &str) -> Option<Self> {
        let (id, secret) = text.split_once('.')?;
        let valid = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        (valid(id, 6) && valid(secret, 16)).then(|| Self { id: id.into(), secret: secret.into() })
    }

    /// A fresh random token.
    pub fn generate() -> Self {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let mut pick =
            |n: usize| -> String { (0..n).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect() };
        Self { id: pick(6), secret: pick(16) }
    }

    pub fn secret_name(&self) -> String {
        format!("bootstrap-token-{}", self.id)
    }

    /// The Secret that makes this token valid for joining nodes, expiring at `expiration`
    /// (RFC 3339) if given.
    pub fn secret(&self, description: &str, expiration: Option<&str>) -> Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut data = json!({
            "token-id": b64(&self.id),
            "token-secret": b64(&self.secret),
            "description": b64(description),
            "usage-bootstrap-authentication": b64("true"),
            "usage-bootstrap-signing": b64("true"),
            "auth-extra-groups": b64(NODE_GROUP),
        });
        if let Some(expiration) = expiration {
            data["expiration"] = json!(b64(expiration));
        }
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": self.secret_name(), "namespace": NAMESPACE},
            "data": data,
        })
    }

    /// The user this token is, if `secret` (its Secret) makes it valid at `now` (Unix seconds).
    pub fn verify(&self, secret: &Value, now: u64) -> Result<UserInfo, String> {
        let field = |key: &str| -> Option<String> {
            let encoded = secret.get("data")?.get(key)?.as_str()?;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).ok()?).ok()
        };
        if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
            return Err(format!("secret {} is not of type {SECRET_TYPE}", self.secret_name()));
        }
        let matches = field("token-id").as_deref() == Some(self.id.as_str())
            && field("token-secret").is_some_and(|s| same_secret(s.as_bytes(), self.secret.as_bytes()));
        if !matches {
            return Err("invalid bootstrap token".into());
        }
        if field("usage-bootstrap-authentication").as_deref() != Some("true") {
            return Err(format!("bootstrap token {} is not for authentication", self.id));
        }
        if let Some(expiration) = field("expiration") {
            let expires = humantime::parse_rfc3339_weak(&expiration)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            if expires.is_none_or(|at| at <= now) {
                return Err(format!("bootstrap token {} has expired", self.id));
            }
        }
        let mut groups = vec![BOOTSTRAPPERS.to_string()];
        groups.extend(
            field("auth-extra-groups")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|g| g.starts_with("system:bootstrappers:"))
                .map(str::to_string),
        );
        groups.push(AUTHENTICATED.into());
        Ok(UserInfo { username: format!("system:bootstrap:{}", self.id), uid: String::new(), groups })
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

impl std::fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl JoinToken {
    /// `K10<hex>::<id>.<secret>` (k3s' form), or a bare `<id>.<secret>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (ca_hash, token) = match text.strip_prefix("K10") {
            Some(rest) => {
                let (hash, token) = rest.split_once("::").ok_or("a K10 token is K10<CA hash>::<id>.<secret>")?;
                let (_, token) = token.rsplit_once(':').unwrap_or(("", token));
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err("the CA hash of a K10 token is 64 hex digits (sha256)".into());
                }
                (Some(format!("sha256:{}", hash.to_ascii_lowercase())), token)
            }
            None => (None, text),
        };
        let token = BootstrapToken::parse(token)
            .ok_or("a bootstrap token is <id>.<secret>: 6 and 16 characters of a-z and 0-9")?;
        Ok(Self { ca_hash, token })
    }

    /// `K10<hex>::<id>.<secret>` for a cluster whose CA is `ca_pem`.
    pub fn format(ca_pem: &str, token: &BootstrapToken) -> String {
        format!("K10{}::{token}", &ca_hash(ca_pem)["sha256:".len()..])
    }
}

/// `sha256:<hex>` of the CA's PEM text (what a join token carries).
pub fn ca_hash(ca_pem: &str) -> String {
    crate::oci::sha256(ca_pem.as_bytes()).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_in_both_forms_and_check_their_secret() {
        let token = BootstrapToken::generate();
        assert_eq!(BootstrapToken::parse(&token.to_string()), Some(token.clone()));
        assert_eq!(BootstrapToken::parse("ABCDEF.0123456789abcdef"), None, "lower case only");
        let ca = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let join = JoinToken::parse(&JoinToken::format(ca, &token)).expect("K10 form");
        assert_eq!((join.ca_hash, join.token.clone()), (Some(ca_hash(ca)), token.clone()));
        assert_eq!(JoinToken::parse(&token.to_string()).expect("bare").ca_hash, None);
        assert!(JoinToken::parse("K10abc::abcdef.0123456789abcdef").is_err(), "a short hash");

        let secret = token.secret("a node", Some("2030-01-01T00:00:00Z"));
        let user = token.verify(&secret, 1_800_000_000).expect("valid");
        assert_eq!(user.username, format!("system:bootstrap:{}", token.id));
        assert!(user.groups.contains(&BOOTSTRAPPERS.to_string()) && user.groups.contains(&NODE_GROUP.to_string()));
        assert!(token.verify(&secret, 1_900_000_000).unwrap_err().contains("expired"));
        let wrong = BootstrapToken { secret: "0000000000000000".into(), ..token.clone() };
        assert_eq!(wrong.verify(&secret, 1_800_000_000).unwrap_err(), "invalid bootstrap token");
    }
}
