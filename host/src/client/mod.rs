//! The in-process client: the API's semantics without HTTP, for the components inside
//! the server. Today it serves plugins' `client` import (read-only lookups answered from
//! the registry's watch caches); the controller host will read and write through it.
//!
//! It holds the registry weakly: the registry's admission chain holds the plugins, which
//! hold this client, and a server that is dropped must not be kept alive by that ring.

use std::sync::{Arc, Weak};

use crate::plugins::ClientError;
use crate::registry::{Error, LabelSelector, ListOptions, Registry, Selectors};

/// Lookups through a registry.
pub struct RegistryClient {
    registry: Weak<Registry>,
}

impl RegistryClient {
    pub fn new(registry: &Arc<Registry>) -> Arc<Self> {
        Arc::new(Self { registry: Arc::downgrade(registry) })
    }

    fn registry(&self) -> Result<Arc<Registry>, ClientError> {
        self.registry.upgrade().ok_or_else(|| ClientError::Unavailable("the server is shutting down".into()))
    }
}

fn client_error(e: Error) -> ClientError {
    match e {
        Error::BadRequest(m) => ClientError::Invalid(m),
        Error::Forbidden(m) => ClientError::Forbidden(m),
        other => ClientError::Unavailable(other.to_string()),
    }
}

#[async_trait::async_trait]
impl crate::plugins::Client for RegistryClient {
    async fn get(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<String>, ClientError> {
        let registry = self.registry()?;
        let served = registry
            .resource(group, version, resource)
            .ok_or_else(|| ClientError::Invalid(format!("{resource} in {group}/{version} is not served")))?;
        let namespace = namespace.filter(|_| served.namespaced);
        match registry.get_cached_json(&served, namespace, name).await {
            Ok(json) => Ok(Some(json)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(client_error(e)),
        }
    }

    async fn list(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        label_selector: &str,
    ) -> Result<Vec<String>, ClientError> {
        let registry = self.registry()?;
        let served = registry
            .resource(group, version, resource)
            .ok_or_else(|| ClientError::Invalid(format!("{resource} in {group}/{version} is not served")))?;
        let labels = LabelSelector::parse(label_selector).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let options = ListOptions {
            // From the watch cache: what the cache holds, without a round trip to storage.
            resource_version: Some(0),
            selectors: Selectors { labels, ..Selectors::default() },
            ..ListOptions::default()
        };
        let namespace = namespace.filter(|_| served.namespaced);
        let list = registry.list(&served, namespace, options).await.map_err(client_error)?;
        list.items
            .iter()
            .map(|o| serde_json::to_string(o).map_err(|e| ClientError::Unavailable(e.to_string())))
            .collect()
    }

    fn namespaced_resources(&self) -> Vec<(String, String, String)> {
        let Ok(registry) = self.registry() else { return Vec::new() };
        registry
            .resources()
            .into_iter()
            .filter(|r| r.namespaced)
            .map(|r| (r.group.to_string(), r.version.to_string(), r.plural.to_string()))
            .collect()
    }
}
