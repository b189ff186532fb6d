//! Node certificates, as kube-controller-manager's csrapproving and csrsigning controllers
//! give them (and k3s, which also signs kubelet serving certificates): while leading, it
//! approves a CertificateSigningRequest for `kubernetes.io/kube-apiserver-client-kubelet`
//! made by a bootstrap token's user (`system:bootstrappers`) or by the node itself
//! (`system:node:<name>`, renewing), and one for `kubernetes.io/kubelet-serving` made by the
//! node it names, when the request is a node's (subject `system:node:<name>` in
//! `system:nodes`, no other names for a client certificate) — then signs every approved
//! request of those signers and of `kubernetes.io/kube-apiserver-client` with the cluster CA.
//!
//! It writes only the approval and status subresources of CSRs, through the [`Client`].

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::client::Client;
use crate::machinery::informer::{Change, Informers, ObjectRef};
use crate::registry::{Patch, Subresource, WriteOptions};

pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
pub const APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";

const MANAGER: &str = "wasmkube-csr-controller";

/// The cluster CA that signs, and how long what it signs lasts.
#[derive(Clone)]
pub struct CsrSigner {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// kube-controller-manager's `--cluster-signing-duration` (a year).
    pub duration: Duration,
}

pub async fn run(
    client: Arc<dyn Client>,
    informers: Arc<Informers>,
    signer: CsrSigner,
    leading: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) {
    crate::machinery::leader::while_leading(leading, stop, |finished| {
        work(client.clone(), informers.clone(), signer.clone(), finished)
    })
    .await;
}

async fn work(client: Arc<dyn Client>, informers: Arc<Informers>, signer: CsrSigner, mut stop: watch::Receiver<bool>) {
    let Some(csrs) = informers.informer("certificates.k8s.io", "v1", "certificatesigningrequests") else { return };
    let Some(resource) = client.resource("certificates.k8s.io", "v1", "certificatesigningrequests") else { return };
    let (changed, mut incoming) = mpsc::unbounded_channel::<String>();
    let id = csrs.subscribe(Arc::new(move |change: &Change| {
        if !matches!(change, Change::Deleted(_)) {
            let _ = changed.send(change.object().at.name.clone());
        }
    }));
    let options = WriteOptions { field_manager: Some(MANAGER.into()), ..WriteOptions::default() };
    loop {
        let name = tokio::select! {
            name = incoming.recv() => match name { Some(name) => name, None => break },
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(current) = csrs.get(&ObjectRef { namespace: String::new(), name: name.clone() }) else { continue };
        let Ok(csr) = serde_json::from_str::<Value>(&current.json) else { continue };
        let written = match decide(&csr, &signer) {
            Step::Nothing => continue,
            Step::Approve(message) => {
                let mut approved = csr.clone();
                let conditions = approved["status"]["conditions"].as_array().cloned().unwrap_or_default();
                let mut conditions = conditions;
                conditions.push(json!({"type": "Approved", "status": "True", "reason": "AutoApproved",
                    "message": message, "lastUpdateTime": crate::registry::now(), "lastTransitionTime": crate::registry::now()}));
                approved["status"]["conditions"] = json!(conditions);
                client.update(&resource, None, &name, approved, Some(Subresource::Approval), &options).await
            }
            Step::Sign(certificate) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(certificate);
                let patch = Patch::Merge(json!({"status": {"certificate": encoded}}));
                client.patch(&resource, None, &name, patch, Some(Subresource::Status), &options).await
            }
            Step::Fail(message) => {
                let patch = Patch::Merge(json!({"status": {"conditions": [{"type": "Failed", "status": "True",
                    "reason": "SignerValidationFailure", "message": message,
                    "lastUpdateTime": crate::registry::now(), "lastTransitionTime": crate::registry::now()}]}}));
                client.patch(&resource, None, &name, patch, Some(Subresource::Status), &options).await
            }
        };
        match written {
            Ok(_) => tracing::info!(csr = %name, "certificate signing request handled"),
            Err(e) => tracing::warn!(csr = %name, error = %e, "cannot write the certificate signing request"),
        }
    }
    csrs.unsubscribe(id);
}

/// What to do with a request now.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Nothing,
    Approve(String),
    Sign(String),
    Fail(String),
}

fn decide(csr: &Value, signer: &CsrSigner) -> Step {
    let spec = &csr["spec"];
    let signer_name = spec["signerName"].as_str().unwrap_or_default();
    let conditions = csr.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let has = |kind: &str| conditions.iter().any(|c| c["type"] == kind && c["status"] == "True");
    if has("Denied") || has("Failed") || csr.pointer("/status/certificate").is_some_and(|c| !c.is_null()) {
        return Step::Nothing;
    }
    if !matches!(signer_name, KUBELET_CLIENT | KUBELET_SERVING | APISERVER_CLIENT) {
        return Step::Nothing;
    }
    let request = match request_pem(spec) {
        Ok(request) => request,
        Err(why) => return if has("Approved") { Step::Fail(why) } else { Step::Nothing },
    };
    if !has("Approved") {
        return match approvable(spec, signer_name, &request) {
            Some(message) => Step::Approve(message),
            None => Step::Nothing,
        };
    }
    match sign(&request, signer_name, signer) {
        Ok(certificate) => Step::Sign(certificate),
        Err(why) => Step::Fail(why),
    }
}

/// `spec.request`: base64 of a PEM CERTIFICATE REQUEST.
fn request_pem(spec: &Value) -> Result<String, String> {
    let encoded = spec["request"].as_str().ok_or("spec.request is missing")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("spec.request is not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "spec.request is not a PEM CERTIFICATE REQUEST".into())
}

/// Why the request may be approved without a person, if it may.
fn approvable(spec: &Value, signer_name: &str, request: &str) -> Option<String> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(request).ok()?;
    let subject = &csr.params.distinguished_name;
    let common_name = dn_text(subject.get(&rcgen::DnType::CommonName)?);
    let organizations: Vec<String> = subject
        .iter()
        .filter(|(kind, _)| **kind == rcgen::DnType::OrganizationName)
        .map(|(_, value)| dn_text(value))
        .collect();
    let node = common_name.strip_prefix("system:node:")?;
    if node.is_empty() || organizations != ["system:nodes"] {
        return None;
    }
    let username = spec["username"].as_str().unwrap_or_default();
    let groups: Vec<&str> = spec["groups"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    match signer_name {
        KUBELET_CLIENT if !csr.params.subject_alt_names.is_empty() => None,
        KUBELET_CLIENT if groups.contains(&crate::auth::bootstrap::BOOTSTRAPPERS) => {
            Some("Auto approving kubelet client certificate after SubjectAccessReview.".into())
        }
        KUBELET_CLIENT | KUBELET_SERVING if username == common_name => {
            Some(format!("Auto approving {signer_name} certificate for node {node}, requested by the node itself."))
        }
        _ => None,
    }
}

fn dn_text(value: &rcgen::DnValue) -> String {
    match value {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
        rcgen::DnValue::TeletexString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

/// The certificate for an approved request, signed by the cluster CA.
fn sign(request: &str, signer_name: &str, signer: &CsrSigner) -> Result<String, String> {
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(request)
        .map_err(|e| format!("the request does not parse as a PKCS#10 certificate request: {e}"))?;
    let key = rcgen::KeyPair::from_pem(&signer.ca_key_pem).map_err(|e| format!("the CA key: {e}"))?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&signer.ca_cert_pem, key).map_err(|e| format!("the CA: {e}"))?;
    let now = time::OffsetDateTime::now_utc();
    csr.params.not_before = now - time::Duration::minutes(5);
    csr.params.not_after = now + time::Duration::seconds(signer.duration.as_secs() as i64);
    csr.params.is_ca = rcgen::IsCa::ExplicitNoCa;
    csr.params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature, rcgen::KeyUsagePurpose::KeyEncipherment];
    csr.params.extended_key_usages = if signer_name == KUBELET_SERVING {
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]
    } else {
        vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]
    };
    csr.signed_by(&issuer).map(|certificate| certificate.pem()).map_err(|e| format!("signing failed: {e}"))
}
