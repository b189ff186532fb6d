//! The client: how the components (controllers, the garbage collector, the scheduler, the
//! node agent, leader election, informers) reach the API — the verbs with the API's
//! semantics and errors, over resources named as discovery names them ([`ApiResource`]).
//! One interface, two implementations (DESIGN.md): [`RegistryClient`], the registry in
//! this process; and, for a component in a process of its own (`wasmkube node`),
//! [`HttpsClient`], HTTPS to an API server. A component holds an `Arc<dyn Client>` and behaves the
//! same over either; authorization will sit where every in-process caller passes.
//!
//! The same in-process client answers plugins' `client` import ([`crate::plugins::Client`]:
//! read-only lookups from the watch caches).
//!
//! It knows neither HTTP routing nor storage: it calls the registry's verbs.

mod https;
mod in_process;

use futures::stream::BoxStream;
use serde_json::{Map, Value};

pub use self::https::HttpsClient;
pub use self::in_process::RegistryClient;
use crate::registry::{
    ApiResource, DeleteOptions, Error, ListOptions, Object, ObjectList, Patch, Revision, Selectors, Subresource,
    WatchEvent, WriteOptions, Written,
};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The API's verbs, as kube-apiserver answers them (a `Status` is an [`Error`] variant).
/// A resource is named by its [`ApiResource`] (from [`Client::resource`] or
/// [`Client::resources`]); one that is no longer served answers NotFound.
#[async_trait::async_trait]
pub trait Client: Send + Sync {
    /// `plural` in `group/version`, if served.
    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ApiResource>;

    /// Every served resource (a snapshot: CRDs change it).
    fn resources(&self) -> Vec<ApiResource>;

    /// Changes whenever the set of served resources does.
    fn served_generation(&self) -> u64;

    async fn get(&self, resource: &ApiResource, namespace: Option<&str>, name: &str) -> Result<Object>;

    async fn list(&self, resource: &ApiResource, namespace: Option<&str>, options: ListOptions) -> Result<ObjectList>;

    /// Every change from `since` (exclusive; 0 = from now); ends with
    /// [`WatchEvent::Expired`] (410 Gone) when the history it needs is gone.
    async fn watch(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        since: Revision,
        bookmarks: bool,
        selectors: Selectors,
    ) -> Result<BoxStream<'static, WatchEvent>>;

    async fn create(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Written>;

    /// PUT, to the object or to one of its subresources (`part`).
    async fn update(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Written>;

    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        patch: Patch,
        part: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Written>;

    async fn delete(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Object>;

    /// `pods/binding`: put the pod on `node`.
    #[allow(clippy::too_many_arguments)]
    async fn bind(
        &self,
        pods: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        node: &str,
        annotations: Map<String, Value>,
        options: &WriteOptions,
    ) -> Result<Written>;
}
