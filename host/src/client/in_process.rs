//! [`RegistryClient`]: the registry of this process behind the [`Client`] interface (the
//! API's semantics without HTTP), and behind plugins' `client` import (read-only lookups
//! answered from the registry's watch caches).
//!
//! It holds the registry weakly: the registry's admission chain holds the plugins, which
//! hold this client, and a server that is dropped must not be kept alive by that ring (nor
//! by a component that outlives it: its calls then answer Unavailable).

use std::sync::{Arc, Weak};

use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{Map, Value};

use super::{Client, Result};
use crate::plugins::ClientError;
use crate::registry::{
    ApiResource, DeleteOptions, Error, LabelSelector, ListOptions, Object, ObjectList, Patch, Registry, Resource,
    Revision, Selectors, Subresource, WatchEvent, WriteOptions, Written,
};

/// The registry of this process, as a client.
pub struct RegistryClient {
    registry: Weak<Registry>,
}

impl RegistryClient {
    pub fn new(registry: &Arc<Registry>) -> Arc<Self> {
        Arc::new(Self { registry: Arc::downgrade(registry) })
    }

    fn upgrade(&self) -> Result<Arc<Registry>> {
        self.registry.upgrade().ok_or_else(|| Error::Unavailable("the server is shutting down".into()))
    }

    /// The registry and `resource` as served now (NotFound when it no longer is).
    fn served(&self, resource: &ApiResource) -> Result<(Arc<Registry>, Resource)> {
        let registry = self.upgrade()?;
        let served = registry
            .resource(resource.group, resource.version, resource.plural)
            .ok_or_else(|| Error::NotFound { resource: resource.qualified(), name: String::new() })?;
        Ok((registry, served))
    }

    fn registry(&self) -> std::result::Result<Arc<Registry>, ClientError> {
        self.upgrade().map_err(client_error)
    }
}

#[async_trait::async_trait]
impl Client for RegistryClient {
    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ApiResource> {
        Some(*self.upgrade().ok()?.resource(group, version, plural)?)
    }

    fn resources(&self) -> Vec<ApiResource> {
        self.upgrade().map(|r| r.resources().iter().map(|r| **r).collect()).unwrap_or_default()
    }

    fn served_generation(&self) -> u64 {
        self.upgrade().map(|r| r.generation()).unwrap_or_default()
    }

    async fn get(&self, resource: &ApiResource, namespace: Option<&str>, name: &str) -> Result<Object> {
        let (registry, resource) = self.served(resource)?;
        registry.get(&resource, namespace, name).await
    }

    async fn list(&self, resource: &ApiResource, namespace: Option<&str>, options: ListOptions) -> Result<ObjectList> {
        let (registry, resource) = self.served(resource)?;
        registry.list(&resource, namespace, options).await
    }

    async fn watch(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        since: Revision,
        bookmarks: bool,
        selectors: Selectors,
    ) -> Result<BoxStream<'static, WatchEvent>> {
        let (registry, resource) = self.served(resource)?;
        Ok(registry.watch(&resource, namespace, since, bookmarks, selectors).await?.boxed())
    }

    async fn create(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Written> {
        let (registry, resource) = self.served(resource)?;
        registry.create(&resource, namespace, body, options).await
    }

    async fn update(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Written> {
        let (registry, resource) = self.served(resource)?;
        registry.update(&resource, namespace, name, body, part, options).await
    }

    async fn patch(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        patch: Patch,
        part: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Written> {
        let (registry, resource) = self.served(resource)?;
        registry.patch(&resource, namespace, name, patch, part, options).await
    }

    async fn delete(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Object> {
        let (registry, resource) = self.served(resource)?;
        registry.delete(&resource, namespace, name, options).await
    }

    async fn bind(
        &self,
        pods: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        node: &str,
        annotations: Map<String, Value>,
        options: &WriteOptions,
    ) -> Result<Written> {
        let (registry, pods) = self.served(pods)?;
        registry.bind(&pods, namespace, name, node, annotations, options).await
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
