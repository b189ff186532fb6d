//! The registry's errors: one variant per Kubernetes `Status` reason the registry can
//! produce. The API layer turns them into `Status` objects; nothing here knows HTTP.

use crate::storage::cache::CacheError;
use crate::storage::StoreError;

/// One problem with one field of an object (a `StatusCause`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, ...
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn required(field: &str, message: &str) -> Self {
        Self { reason: "FieldValueRequired", field: field.into(), message: message.into() }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self { reason: "FieldValueInvalid", field: field.into(), message: message.into() }
    }
}

/// Causes as Kubernetes' aggregate error prints them.
fn causes_text(causes: &[Cause]) -> String {
    let shown: Vec<String> = causes
        .iter()
        .map(|c| if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) })
        .collect();
    match shown.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", shown.join(", ")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `resource` is qualified ("configmaps", "deployments.apps"); `name` may be empty.
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    Conflict { resource: String, name: String, message: String },
    /// A server-side apply would take fields other managers own (409 with one cause per field).
    #[error("{message}")]
    ApplyConflict { resource: String, name: String, message: String, causes: Vec<Cause> },
    /// kube-apiserver's words: one cause bare, several in brackets.
    #[error("{kind} \"{name}\" is invalid: {}", causes_text(.causes))]
    Invalid { kind: String, name: String, causes: Vec<Cause> },
    #[error("{0}")]
    BadRequest(String),
    /// The body's media type cannot be used for this resource (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is understood and refused (403), e.g. a create in a terminating namespace.
    #[error("{0}")]
    Forbidden(String),
    /// The requested history is gone (410): list again.
    #[error("{0}")]
    Gone(String),
    /// The request asked for a future revision and waiting did not help (504).
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// An admission plugin refused the write (or failed under `failurePolicy: Fail`);
    /// `code` is the HTTP code to answer with.
    #[error("{message}")]
    Denied { code: u16, message: String },
}

impl Error {
    /// The object is not there.
    pub(super) fn not_found(resource: &super::ApiResource, name: &str) -> Self {
        Error::NotFound { resource: resource.qualified(), name: name.into() }
    }

    /// The write was made against an older version of the object than the stored one.
    pub(super) fn modified(resource: &super::ApiResource, name: &str) -> Self {
        Error::Conflict {
            resource: resource.qualified(),
            name: name.into(),
            message: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
        }
    }

    /// A delete's uid precondition does not hold (storage's `Preconditions.Check` words).
    pub(super) fn uid_precondition_failed(resource: &super::ApiResource, name: &str, wanted: &str, uid: &str) -> Self {
        Error::Conflict {
            resource: resource.qualified(),
            name: name.into(),
            message: format!("Precondition failed: UID in precondition: {wanted}, UID in object meta: {uid}"),
        }
    }

    /// A delete's resourceVersion precondition does not hold.
    pub(super) fn precondition_failed(resource: &super::ApiResource, name: &str) -> Self {
        Error::Conflict {
            resource: resource.qualified(),
            name: name.into(),
            message: "the ResourceVersion in the precondition does not match the ResourceVersion in record. The object might have been modified".into(),
        }
    }

    pub(super) fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { requested, .. } => Error::Gone(format!(
                "The provided continue parameter is too old to display a consistent list result (revision {requested} was compacted). You can start a new list without the continue parameter"
            )),
            StoreError::FutureRevision { requested, current } => {
                Error::Timeout(format!("Too large resource version: {requested}, current: {current}"))
            }
            StoreError::ValueTooLarge { size, limit } => {
                Error::TooLarge(format!("the object is {size} bytes; the limit is {limit}"))
            }
            StoreError::Unavailable(why) => Error::Unavailable(why),
            other => Error::Internal(other.to_string()),
        }
    }

    pub(super) fn from_cache(e: CacheError) -> Self {
        match e {
            CacheError::TooOld { requested, oldest } => {
                Error::Gone(format!("too old resource version: {requested} ({oldest})"))
            }
            CacheError::Expired { .. } => Error::Gone(e.to_string()),
            CacheError::FutureRevision { requested, current } => {
                Error::Timeout(format!("Too large resource version: {requested}, current: {current}"))
            }
            CacheError::NotReady => Error::Unavailable("the watch cache is not ready yet".into()),
            CacheError::Store(e) => Self::from_store(e),
            other => Error::Internal(other.to_string()),
        }
    }
}
