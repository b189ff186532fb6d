//! Who a request comes from: the user a client certificate, a service-account token or a
//! bootstrap token (`bootstrap`) names, or `system:anonymous`. Until authorization plugins exist, every authenticated
//! user may do everything and the anonymous user may only read the health and version
//! endpoints.
//!
//! Owns identities and tokens; knows nothing of HTTP (the API's middleware extracts the
//! credential) or of storage (the registry keeps the signing key).

pub mod bootstrap;
pub mod tokens;

use serde_json::{json, Value};

/// The user a request runs as (Kubernetes' `user.Info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// Every authenticated user is in this group.
pub const AUTHENTICATED: &str = "system:authenticated";

impl UserInfo {
    /// The server itself (its own writes: seeding, controllers in the process).
    pub fn server() -> Self {
        Self {
            username: "system:apiserver".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), AUTHENTICATED.into()],
        }
    }

    /// The user of a request without a valid credential.
    pub fn anonymous() -> Self {
        Self { username: "system:anonymous".into(), uid: String::new(), groups: vec!["system:unauthenticated".into()] }
    }

    pub fn is_anonymous(&self) -> bool {
        self.username == "system:anonymous"
    }

    /// A client certificate's user: the subject's common name, its organizations as groups.
    pub fn from_certificate(common_name: String, organizations: Vec<String>) -> Self {
        let mut groups = organizations;
        groups.push(AUTHENTICATED.into());
        Self { username: common_name, uid: String::new(), groups }
    }

    /// A service account's user.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.into(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.into(),
            ],
        }
    }

    /// The `UserInfo` object of authentication.k8s.io reviews.
    pub fn to_json(&self) -> Value {
        let mut user = json!({"username": self.username, "groups": self.groups});
        if !self.uid.is_empty() {
            user["uid"] = json!(self.uid);
        }
        user
    }
}

/// The user of a client certificate (already verified against the cluster CA by TLS).
pub fn certificate_user(der: &[u8]) -> Option<UserInfo> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = certificate.subject();
    let common_name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let organizations = subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect();
    Some(UserInfo::from_certificate(common_name, organizations))
}
