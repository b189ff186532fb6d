//! The registry's errors: one variant per Kubernetes `Status` reason the registry can
//! produce. The API layer turns them into `Status` objects; nothing here knows HTTP.

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
    #[error("{kind} \"{name}\" is invalid: {}", .causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect::<Vec<_>>().join(", "))]
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
