//! The Rust SDK for wasmkube plugins: the bindings of the `wasmkube:plugin` WIT package
//! (`wit/plugin.wit`), a request type with the object already parsed, answers built in
//! one call, JSON patch helpers, and [`export_admission!`] to export a plugin.
//!
//! An admission plugin implements [`Admission`] (both methods have defaults that allow
//! everything) and exports itself:
//!
//! ```ignore
//! use wasmkube_sdk::{Admission, Request, Response};
//!
//! struct NoLatest;
//!
//! impl Admission for NoLatest {
//!     fn validate(request: Request) -> Response {
//!         let images = request.object_pointer_all("/spec/containers", "image");
//!         match images.iter().find(|i| i.ends_with(":latest")) {
//!             Some(image) => Response::deny(format!("{image}: pin a version instead of :latest")),
//!             None => Response::allow(),
//!         }
//!     }
//! }
//!
//! wasmkube_sdk::export_admission!(NoLatest);
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "admission",
        pub_export_macro: true,
        default_bindings_module: "wasmkube_sdk::bindings",
    });
}

use bindings::exports::wasmkube::plugin::admit;
use bindings::wasmkube::plugin::admission_types as wit;
pub use bindings::wasmkube::plugin::types::{ClientError, GroupVersionKind, GroupVersionResource, UserInfo};
pub use serde_json::{json, Value};

/// What a request does to its object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

/// One admission request, its objects parsed.
#[derive(Debug)]
pub struct Request {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user: UserInfo,
    /// The object as it would be stored (`Value::Null` for a delete).
    pub object: Value,
    /// The stored object before the change (`Value::Null` for a create).
    pub old_object: Value,
    pub dry_run: bool,
}

impl Request {
    fn from_wit(request: wit::AdmissionRequest) -> Self {
        let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
        Self {
            uid: request.uid,
            kind: request.kind,
            resource: request.resource,
            sub_resource: request.sub_resource,
            name: request.name,
            namespace: request.namespace,
            operation: match request.operation {
                wit::Operation::Create => Operation::Create,
                wit::Operation::Update => Operation::Update,
                wit::Operation::Delete => Operation::Delete,
                wit::Operation::Connect => Operation::Connect,
            },
            user: request.user_info,
            object: parse(request.object),
            old_object: parse(request.old_object),
            dry_run: request.dry_run,
        }
    }

    /// The object's field at a JSON pointer (`/spec/replicas`), if any.
    pub fn field(&self, pointer: &str) -> Option<&Value> {
        self.object.pointer(pointer)
    }

    /// The string field `key` of every item of the list at `pointer`, e.g. every
    /// container's image: `object_pointer_all("/spec/containers", "image")`.
    pub fn object_pointer_all(&self, pointer: &str, key: &str) -> Vec<String> {
        self.field(pointer)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| item.get(key).and_then(Value::as_str).map(String::from))
            .collect()
    }

    /// A label of the object.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.object.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str)
    }
}

/// An answer to an admission request.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub allowed: bool,
    pub message: Option<String>,
    pub code: Option<u16>,
    /// RFC 6902 operations.
    pub patch: Vec<Value>,
    pub warnings: Vec<String>,
}

impl Response {
    pub fn allow() -> Self {
        Self { allowed: true, ..Self::default() }
    }

    /// Refuse with `message` (403 Forbidden).
    pub fn deny(message: impl Into<String>) -> Self {
        Self { allowed: false, message: Some(message.into()), ..Self::default() }
    }

    /// Refuse with `message` and an HTTP `code` (e.g. 422).
    pub fn deny_with(code: u16, message: impl Into<String>) -> Self {
        Self { allowed: false, message: Some(message.into()), code: Some(code), ..Self::default() }
    }

    /// Allow, changing the object by `patch` (a list of RFC 6902 operations).
    pub fn patch(patch: Vec<Value>) -> Self {
        Self { allowed: true, patch, ..Self::default() }
    }

    /// Add a warning for the client.
    pub fn warn(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    #[doc(hidden)]
    pub fn into_wit(self) -> wit::AdmissionResponse {
        wit::AdmissionResponse {
            allowed: self.allowed,
            message: self.message,
            code: self.code,
            patch: (!self.patch.is_empty()).then(|| Value::Array(self.patch).to_string()),
            warnings: self.warnings,
        }
    }
}

/// JSON patch operations, built by path (`/spec/containers/0/resources`).
pub mod patch {
    use serde_json::{json, Value};

    /// `add`: sets a field (or inserts into a list at an index, or appends at `-`).
    pub fn add(path: &str, value: Value) -> Value {
        json!({"op": "add", "path": path, "value": value})
    }

    pub fn replace(path: &str, value: Value) -> Value {
        json!({"op": "replace", "path": path, "value": value})
    }

    pub fn remove(path: &str) -> Value {
        json!({"op": "remove", "path": path})
    }

    /// A map key as one JSON pointer segment (`~` and `/` escaped), e.g. a label key.
    pub fn escape(key: &str) -> String {
        key.replace('~', "~0").replace('/', "~1")
    }
}

/// Lookups through the host's caches, as the plugin's manifest allows.
pub mod client {
    use super::bindings::wasmkube::plugin::client;
    use super::{ClientError, GroupVersionResource, Value};

    fn gvr(group: &str, version: &str, resource: &str) -> GroupVersionResource {
        GroupVersionResource { group: group.into(), version: version.into(), resource: resource.into() }
    }

    /// The object, if it exists.
    pub fn get(
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ClientError> {
        let found = client::get(&gvr(group, version, resource), namespace, name)?;
        Ok(found.and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// The objects a label selector selects ("" for all).
    pub fn list(
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<Vec<Value>, ClientError> {
        let found = client::list(&gvr(group, version, resource), namespace, selector)?;
        Ok(found.iter().filter_map(|text| serde_json::from_str(text).ok()).collect())
    }
}

/// Log through the host (the line carries the plugin's name and version).
pub mod log {
    use super::bindings::wasmkube::plugin::log::{log, Level};

    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// An admission plugin. Both methods allow everything unless implemented.
pub trait Admission {
    /// The manifest's `config`, once per instance; an error refuses the plugin.
    fn configure(_config: Value) -> Result<(), String> {
        Ok(())
    }

    fn mutate(_request: Request) -> Response {
        Response::allow()
    }

    fn validate(_request: Request) -> Response {
        Response::allow()
    }
}

#[doc(hidden)]
pub struct Exported<T>(std::marker::PhantomData<T>);

impl<T: Admission> admit::Guest for Exported<T> {
    fn configure(config: String) -> Result<(), String> {
        let config = serde_json::from_str(&config).map_err(|e| format!("config is not JSON: {e}"))?;
        T::configure(config)
    }

    fn mutate(request: wit::AdmissionRequest) -> wit::AdmissionResponse {
        T::mutate(Request::from_wit(request)).into_wit()
    }

    fn validate(request: wit::AdmissionRequest) -> wit::AdmissionResponse {
        T::validate(Request::from_wit(request)).into_wit()
    }
}

/// Export `$plugin` (a type implementing [`Admission`]) as the component's admission world.
#[macro_export]
macro_rules! export_admission {
    ($plugin:ty) => {
        type __WasmkubeAdmission = $crate::Exported<$plugin>;
        $crate::bindings::export!(__WasmkubeAdmission with_types_in $crate::bindings);
    };
}
