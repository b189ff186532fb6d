//! The host's own types for what crosses the plugin boundary: an admission request and its
//! answer, a controller's registration, reconcile request and result. The admission chain
//! and the controller host use these; each world's module converts them to and from the
//! generated WIT types (`bindings.rs`) at its edge, so a second version of the WIT package
//! can be served beside the first behind the same types. (The scheduler's per-pod types
//! are the generated ones, `policy::types`: see `bindings.rs`.)

/// Who made a request (Kubernetes' UserInfo).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// A resource as the API names it: group ("" for core), version, plural.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GroupVersionResource {
    pub group: String,
    pub version: String,
    pub resource: String,
}

/// A kind: group ("" for core), version, kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupVersionKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// What a write does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

/// One request to admit (AdmissionReview's `request`); objects as JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    /// The object as it would be stored; none for a delete.
    pub object: Option<String>,
    /// The stored object before the change; none for a create.
    pub old_object: Option<String>,
    pub dry_run: bool,
}

/// A plugin's answer (AdmissionReview's `response`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdmissionResponse {
    pub allowed: bool,
    pub message: Option<String>,
    pub code: Option<u16>,
    /// An RFC 6902 JSON patch (a JSON array) of the request's object.
    pub patch: Option<String>,
    pub warnings: Vec<String>,
}

/// Which resources a controller follows, as it answered `configure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    pub reconciles: GroupVersionResource,
    pub owns: Vec<GroupVersionResource>,
    pub watches: Vec<GroupVersionResource>,
}

/// An object's key: its namespace (none for a cluster-scoped object) and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

/// A reconcile: the key, and the object as the cache holds it (JSON), or none if gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileRequest {
    pub key: ObjectKey,
    pub object: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    Create,
    Update,
    Patch,
    Delete,
}

/// How a `patch` action's body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
}

/// What a delete does to the object's dependents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionPropagation {
    Background,
    Foreground,
    Orphan,
}

/// One write a controller wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    pub verb: Verb,
    pub resource: GroupVersionResource,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    /// On a create, "" takes the name from the body.
    pub name: String,
    /// create and update: the object (JSON); patch: the patch; delete: none.
    pub body: Option<String>,
    pub patch_type: Option<PatchType>,
    /// Precondition: the object is still at this resourceVersion.
    pub resource_version: Option<String>,
    /// Precondition: the object still has this uid.
    pub uid: Option<String>,
    pub propagation: Option<ActionPropagation>,
}

/// What a reconcile answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileResult {
    pub actions: Vec<Action>,
    /// Reconcile again after this many milliseconds; none: only on a change.
    pub requeue_after_ms: Option<u64>,
    /// Why, in a few words (logged with the actions).
    pub reason: String,
}
