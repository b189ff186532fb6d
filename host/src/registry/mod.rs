//! The registry: ONE generic REST store for every resource (Kubernetes' generic registry
//! `Store`). Create, get, list, update, delete and watch, optimistic concurrency on
//! `resourceVersion`, finalizers, dry run and the keys in storage are written once; a
//! resource differs only by its [`Strategy`] (what it is called, defaults, validation, and
//! the hooks that reserve what an object holds besides its key).
//!
//! Start with [`Registry::new`], then [`Registry::resource`] to resolve a resource into the
//! [`Resource`] handle every verb takes. Objects are JSON (`serde_json::Map`); the API layer
//! decodes and encodes the wire format. Only this module talks to `storage`.
//!
//! Where things are:
//! - `resource.rs`: [`ApiResource`] (names), [`Resource`] (the handle), [`Strategy`] and its hooks;
//! - `served.rs`: the served set, built-ins and what CRDs define (`custom.rs`, `schema.rs`);
//! - `store.rs`: [`Registry`] and its reads (get, list); `watch.rs`: watches and their typed
//!   events ([`WatchEvent`], [`Change`]); `write.rs`: create, update, patch and the one
//!   read-modify-write loop; `delete.rs`; `pods.rs`: binding; `services.rs`: the Service
//!   strategy and its address claims; `admit.rs`: the admission chain's glue;
//! - `options.rs`: the verbs' options and answers; `continuation.rs`: continue tokens;
//! - `object.rs`: metadata the registry owns and the stored encoding; `validation.rs`,
//!   `apply.rs`, `strategic.rs`, `subresource.rs`, `selector.rs`: what their names say;
//! - `bootstrap.rs`: what a fresh cluster holds; `signing_key.rs`; `modules.rs`: uploaded
//!   plugin modules.
//!
//! Invariants:
//! - an object is stored without `metadata.resourceVersion`; every object leaving the
//!   registry carries the store revision that wrote it as its resourceVersion;
//! - an update whose resourceVersion is stale fails with [`Error::Conflict`], never
//!   overwrites; an update that changes nothing writes nothing;
//! - what a strategy's begin hook reserved is committed if the write is stored and
//!   released if it is not;
//! - a namespaced object can only be created in a namespace that exists.

mod admit;
mod apply;
mod bootstrap;
mod builtin;
mod continuation;
mod custom;
mod defaults;
mod delete;
mod error;
pub mod modules;
mod object;
mod options;
mod pods;
mod resource;
pub mod schema;
mod selector;
mod served;
mod services;
mod signing_key;
mod store;
mod strategic;
mod subresource;
mod validate;
mod validation;
mod watch;
mod write;

pub use self::builtin::resources as builtin_resources;
pub use self::custom::{CustomResource, PrinterColumn, ScalePaths, CLEANUP_FINALIZER};
pub use self::error::{Cause, Error};
pub use self::object::NameRule;
pub use self::options::{DeleteOptions, ListOptions, ObjectList, Patch, Propagation, Selectors, WriteOptions, Written};
pub use self::resource::{ApiResource, Hook, Reservation, Reserved, Resource, Strategy};
pub use self::selector::{FieldSelector, LabelSelector};
pub use self::store::Registry;
pub use self::subresource::Subresource;
pub use self::validation::FieldValidation;
pub use self::watch::{Change, EventType, WatchEvent};
pub use crate::storage::Revision;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A JSON object as the registry handles it.
pub type Object = serde_json::Map<String, serde_json::Value>;

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds).
pub fn now() -> String {
    object::now()
}

/// Decode a stored value for tests and the API: the object with its resourceVersion.
pub fn decode(kv: &crate::storage::KeyValue) -> Result<Object> {
    object::decode(kv)
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

/// Why `name` is not a DNS-1123 subdomain (a Node's or most objects' name), in
/// kube-apiserver's words; None if it is one.
pub fn dns1123_subdomain_problem(name: &str) -> Option<String> {
    let problems = validate::content::dns1123_subdomain(name);
    (!problems.is_empty()).then(|| problems.join("; "))
}
