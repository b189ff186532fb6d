//! The registry's side of admission: which writes the chain is told about (the
//! `Attributes` built only when some plugin's rules select the request), and a denial as
//! the registry's error in kube-apiserver's words. The chain itself (plugins, failure
//! policy, shadows) is `crate::admission`'s; this file only calls it.

use std::sync::{Arc, OnceLock};

use super::{ApiResource, Error, Object, Result, Subresource};
use crate::admission::{Admitted, Attributes, Chain, Denied};
use crate::auth::UserInfo;
use crate::plugins::{Operation, Phase};

/// The admission chain every write passes, once set.
#[derive(Default)]
pub(super) struct Admission(OnceLock<Arc<Chain>>);

/// What a write is, as admission sees it.
pub(super) struct Request<'a> {
    pub resource: &'a ApiResource,
    pub operation: Operation,
    pub part: Option<Subresource>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub user: Option<&'a UserInfo>,
    pub dry_run: bool,
}

impl Admission {
    /// Send every write through `chain` from now on (set once).
    pub(super) fn set(&self, chain: Arc<Chain>) {
        let _ = self.0.set(chain);
    }

    /// What admission is told about a write, if a plugin wants to see it.
    pub(super) fn attributes(&self, request: Request<'_>) -> Option<Attributes> {
        let chain = self.0.get()?;
        let resource = request.resource;
        let attributes = Attributes {
            operation: request.operation,
            group: resource.group.to_string(),
            version: resource.version.to_string(),
            kind: resource.kind.to_string(),
            resource: resource.plural.to_string(),
            subresource: request.part.map(|p| p.name().to_string()),
            namespace: request.namespace.filter(|_| resource.namespaced).map(str::to_owned),
            name: request.name.to_string(),
            user: request.user.cloned().unwrap_or_else(UserInfo::server),
            dry_run: request.dry_run,
        };
        let wanted = chain.wants(&attributes, Phase::Mutate) || chain.wants(&attributes, Phase::Validate);
        wanted.then_some(attributes)
    }

    /// Run the mutating plugins over `object`.
    pub(super) async fn mutate(
        &self,
        attributes: Option<&Attributes>,
        object: &mut Object,
        old: Option<&Object>,
    ) -> Result<Admitted> {
        match (attributes, self.0.get()) {
            (Some(attributes), Some(chain)) => {
                chain.mutate(attributes, object, old).await.map_err(|d| denied(attributes, d))
            }
            _ => Ok(Admitted::default()),
        }
    }

    /// Run the validating plugins over `object` (None: a delete of `old`).
    pub(super) async fn validate(
        &self,
        attributes: Option<&Attributes>,
        object: Option<&Object>,
        old: Option<&Object>,
    ) -> Result<Admitted> {
        match (attributes, self.0.get()) {
            (Some(attributes), Some(chain)) => {
                chain.validate(attributes, object, old).await.map_err(|d| denied(attributes, d))
            }
            _ => Ok(Admitted::default()),
        }
    }
}

/// A denial as kube-apiserver words it: `<resource> "<name>" is forbidden: ...` for 403.
fn denied(attributes: &Attributes, denied: Denied) -> Error {
    let resource = if attributes.group.is_empty() {
        attributes.resource.clone()
    } else {
        format!("{}.{}", attributes.resource, attributes.group)
    };
    let message = match denied.code {
        403 => format!("{resource} \"{}\" is forbidden: {}", attributes.name, denied.message),
        _ => denied.message,
    };
    Error::Denied { code: denied.code, message }
}
