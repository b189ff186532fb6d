//! Health checks in kube-apiserver's format: `ok` with 200, or one `[+]name ok` /
//! `[-]name failed: reason` line per check and 503. `?verbose` lists every check.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use parking_lot::RwLock;

use super::AppState;

/// Named readiness checks; each component sets its own. Liveness only says the process
/// serves HTTP; readiness also needs every check to pass.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<RwLock<BTreeMap<String, Result<(), String>>>>,
}

impl Health {
    /// Record the state of check `name`: `Ok(())`, or why it is not ready.
    pub fn set(&self, name: impl Into<String>, state: Result<(), String>) {
        self.checks.write().insert(name.into(), state);
    }

    /// Drop check `name` (a component that stopped).
    pub fn remove(&self, name: &str) {
        self.checks.write().remove(name);
    }

    /// Every check passes.
    pub fn ready(&self) -> bool {
        self.checks.read().values().all(Result::is_ok)
    }

    /// The state of check `name`, if it was ever set.
    pub fn check(&self, name: &str) -> Option<Result<(), String>> {
        self.checks.read().get(name).cloned()
    }

    /// Every failing check, as `name: reason`.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .read()
            .iter()
            .filter_map(|(name, state)| state.as_ref().err().map(|why| format!("{name}: {why}")))
            .collect()
    }

    fn report(&self, verbose: bool, what: &str) -> (StatusCode, String) {
        let checks = self.checks.read();
        let ok = checks.values().all(Result::is_ok);
        if ok && !verbose {
            return (StatusCode::OK, "ok".into());
        }
        let mut out = String::from("[+]ping ok\n");
        for (name, state) in checks.iter() {
            match state {
                Ok(()) => out.push_str(&format!("[+]{name} ok\n")),
                Err(reason) => out.push_str(&format!("[-]{name} failed: {reason}\n")),
            }
        }
        if ok {
            out.push_str(&format!("{what} check passed\n"));
            (StatusCode::OK, out)
        } else {
            out.push_str(&format!("{what} check failed\n"));
            (StatusCode::SERVICE_UNAVAILABLE, out)
        }
    }
}

#[derive(serde::Deserialize)]
pub(super) struct HealthQuery {
    verbose: Option<String>,
}

pub(super) async fn healthz(State(state): State<AppState>, Query(q): Query<HealthQuery>) -> (StatusCode, String) {
    state.health.report(q.verbose.is_some(), "healthz")
}

pub(super) async fn livez(Query(q): Query<HealthQuery>) -> (StatusCode, String) {
    if q.verbose.is_some() {
        (StatusCode::OK, "[+]ping ok\nlivez check passed\n".into())
    } else {
        (StatusCode::OK, "ok".into())
    }
}

/// `/healthz/controllers`: one check per controller this server runs (none while it does
/// not lead), as kube-controller-manager's `/healthz` has.
pub(super) async fn controllers(State(state): State<AppState>, Query(q): Query<HealthQuery>) -> (StatusCode, String) {
    state.controller_health.report(q.verbose.is_some(), "controllers")
}

pub(super) async fn readyz(State(state): State<AppState>, Query(q): Query<HealthQuery>) -> (StatusCode, String) {
    state.health.report(q.verbose.is_some(), "readyz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_check_makes_report_503_and_names_reason() {
        let health = Health::default();
        health.set("storage", Err("etcd unreachable".into()));
        let (code, body) = health.report(false, "readyz");
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("[-]storage failed: etcd unreachable"), "{body}");
        health.set("storage", Ok(()));
        assert_eq!(health.report(false, "readyz"), (StatusCode::OK, "ok".into()));
    }
}
