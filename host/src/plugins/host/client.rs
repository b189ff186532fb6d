//! `wasmkube:plugin/client` (reads: get, list) and the controller world's
//! `wasmkube:plugin/index` (owned-by, namespaced-resources): each call is checked against
//! the manifest's capabilities before it reaches the host's [`Client`].

use std::sync::Arc;

use crate::plugins::bindings::controller::wasmkube::plugin::index;
use crate::plugins::bindings::{client, types};
use crate::plugins::state::HostState;
use crate::plugins::{Client, ClientError};

impl HostState {
    /// The client, if the manifest grants `verb` on `resource`; else the refusal, naming it.
    fn granted(
        &self,
        resource: &types::GroupVersionResource,
        verb: &str,
    ) -> Result<Arc<dyn Client>, types::ClientError> {
        if !self.capabilities.iter().any(|c| c.allows(&resource.group, &resource.resource, verb)) {
            let group = if resource.group.is_empty() { "core" } else { &resource.group };
            return Err(types::ClientError::Forbidden(format!(
                "plugin {:?} may not {verb} {} in group {group}: its manifest's capabilities do not grant it",
                &*self.plugin, resource.resource
            )));
        }
        self.client.clone().ok_or_else(|| types::ClientError::Unavailable("this host has no client for plugins".into()))
    }
}

fn wit_error(e: ClientError) -> types::ClientError {
    match e {
        ClientError::Forbidden(m) => types::ClientError::Forbidden(m),
        ClientError::Invalid(m) => types::ClientError::Invalid(m),
        ClientError::Unavailable(m) => types::ClientError::Unavailable(m),
    }
}

impl client::Host for HostState {
    async fn get(
        &mut self,
        resource: types::GroupVersionResource,
        namespace: Option<String>,
        name: String,
    ) -> Result<Option<String>, types::ClientError> {
        let client = self.granted(&resource, "get")?;
        client
            .get(&resource.group, &resource.version, &resource.resource, namespace.as_deref(), &name)
            .await
            .map_err(wit_error)
    }

    async fn list(
        &mut self,
        resource: types::GroupVersionResource,
        namespace: Option<String>,
        label_selector: String,
    ) -> Result<Vec<String>, types::ClientError> {
        let client = self.granted(&resource, "list")?;
        client
            .list(&resource.group, &resource.version, &resource.resource, namespace.as_deref(), &label_selector)
            .await
            .map_err(wit_error)
    }
}

impl index::Host for HostState {
    async fn owned_by(
        &mut self,
        resource: types::GroupVersionResource,
        namespace: Option<String>,
        owner_uid: String,
    ) -> Result<Vec<String>, types::ClientError> {
        let client = self.granted(&resource, "list")?;
        client
            .owned_by(&resource.group, &resource.version, &resource.resource, namespace.as_deref(), &owner_uid)
            .await
            .map_err(wit_error)
    }

    async fn namespaced_resources(&mut self) -> Vec<types::GroupVersionResource> {
        let Some(client) = self.client.clone() else { return Vec::new() };
        client
            .namespaced_resources()
            .into_iter()
            .map(|(group, version, resource)| types::GroupVersionResource { group, version, resource })
            .collect()
    }
}
