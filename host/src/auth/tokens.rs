//! Service-account tokens: JWTs (HS256) with Kubernetes' bound-token claims
//! (`iss`, `sub` = `system:serviceaccount:<ns>:<name>`, `aud`, `exp`, and the
//! `kubernetes.io` claim naming the service account and its uid). The key is one
//! secret shared by every API server on a store (the registry keeps it there).
//!
//! Signing and checking only: whether the service account still exists is the caller's
//! question.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde_json::{json, Value};

/// The issuer and default audience of every token, as kube-apiserver names itself.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not for this audience")]
    WrongAudience,
    #[error("the token was not issued by this cluster")]
    WrongIssuer,
}

/// The service account a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub audiences: Vec<String>,
    /// Seconds since the epoch.
    pub expires: i64,
}

/// Signs and checks tokens with one key.
pub struct TokenSigner {
    key: hmac::Key,
}

impl TokenSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// A token for service account `namespace/name` (uid `uid`), valid from `now` for
    /// `seconds`, for `audiences` (empty: the API server's own).
    pub fn issue(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        audiences: &[String],
        now: i64,
        seconds: i64,
    ) -> String {
        let audiences = if audiences.is_empty() { vec![ISSUER.to_string()] } else { audiences.to_vec() };
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let claims = json!({
            "aud": audiences,
            "exp": now + seconds,
            "iat": now,
            "nbf": now,
            "iss": ISSUER,
            "jti": uuid::Uuid::new_v4().to_string(),
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// Check `token` at `now`: signature, issuer, expiry, and that it is meant for one of
    /// `audiences` (none: no token is).
    pub fn verify(&self, token: &str, now: i64, audiences: &[String]) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, format!("{header}.{claims}").as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Value = URL_SAFE_NO_PAD
            .decode(claims)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or(TokenError::Malformed)?;
        if claims["iss"] != ISSUER {
            return Err(TokenError::WrongIssuer);
        }
        let expires = claims["exp"].as_i64().ok_or(TokenError::Malformed)?;
        if now >= expires {
            return Err(TokenError::Expired);
        }
        let token_audiences: Vec<String> =
            claims["aud"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
        if !audiences.iter().any(|a| token_audiences.contains(a)) {
            return Err(TokenError::WrongAudience);
        }
        let account = &claims["kubernetes.io"];
        let text = |v: &Value| v.as_str().map(String::from).ok_or(TokenError::Malformed);
        Ok(Claims {
            namespace: text(&account["namespace"])?,
            name: text(&account["serviceaccount"]["name"])?,
            uid: text(&account["serviceaccount"]["uid"])?,
            audiences: token_audiences,
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_until_it_expires_and_only_with_its_key() {
        let signer = TokenSigner::new(b"0123456789abcdef0123456789abcdef");
        let token = signer.issue("default", "bot", "uid-1", &[], 1_000, 600);
        let api = [ISSUER.to_string()];
        let claims = signer.verify(&token, 1_100, &api).expect("valid");
        assert_eq!((claims.namespace.as_str(), claims.name.as_str(), claims.uid.as_str()), ("default", "bot", "uid-1"));
        assert_eq!(claims.audiences, [ISSUER]);
        assert_eq!(signer.verify(&token, 1_600, &api), Err(TokenError::Expired));
        assert_eq!(signer.verify(&token, 1_100, &["vault".into()]), Err(TokenError::WrongAudience));
        assert_eq!(signer.verify(&token, 1_100, &[]), Err(TokenError::WrongAudience), "no audience, no token");
        let for_vault = signer.issue("default", "bot", "uid-1", &["vault".into()], 1_000, 600);
        assert_eq!(signer.verify(&for_vault, 1_100, &api), Err(TokenError::WrongAudience));
        let other = TokenSigner::new(b"another key, another cluster....");
        assert_eq!(other.verify(&token, 1_100, &api), Err(TokenError::BadSignature));
        let mut tampered = token.clone();
        tampered.replace_range(token.find('.').unwrap() + 2..token.find('.').unwrap() + 3, "A");
        assert!(signer.verify(&tampered, 1_100, &api).is_err());
        assert_eq!(signer.verify("not-a-jwt", 1_100, &api), Err(TokenError::Malformed));
    }
}
