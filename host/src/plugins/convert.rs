//! Between the generated WIT types (`bindings.rs`) and the host's own (`types.rs`): the one
//! place they meet. A request is copied into the generated record for each call (its
//! strings, the object's JSON among them: a memcpy beside the call's lowering of the same
//! bytes into the guest); answers come back by value (moved, not copied).

use super::bindings::admission::wasmkube::plugin::admission_types as admission;
use super::bindings::controller::wasmkube::plugin::controller_types as controller;
use super::bindings::types as wit;
use super::types::*;

impl From<&UserInfo> for wit::UserInfo {
    fn from(u: &UserInfo) -> Self {
        Self { username: u.username.clone(), uid: u.uid.clone(), groups: u.groups.clone() }
    }
}

impl From<&GroupVersionResource> for wit::GroupVersionResource {
    fn from(r: &GroupVersionResource) -> Self {
        Self { group: r.group.clone(), version: r.version.clone(), resource: r.resource.clone() }
    }
}

impl From<wit::GroupVersionResource> for GroupVersionResource {
    fn from(r: wit::GroupVersionResource) -> Self {
        Self { group: r.group, version: r.version, resource: r.resource }
    }
}

impl From<&GroupVersionKind> for wit::GroupVersionKind {
    fn from(k: &GroupVersionKind) -> Self {
        Self { group: k.group.clone(), version: k.version.clone(), kind: k.kind.clone() }
    }
}

impl From<Operation> for admission::Operation {
    fn from(o: Operation) -> Self {
        match o {
            Operation::Create => Self::Create,
            Operation::Update => Self::Update,
            Operation::Delete => Self::Delete,
            Operation::Connect => Self::Connect,
        }
    }
}

impl From<&AdmissionRequest> for admission::AdmissionRequest {
    fn from(r: &AdmissionRequest) -> Self {
        Self {
            uid: r.uid.clone(),
            kind: (&r.kind).into(),
            resource: (&r.resource).into(),
            sub_resource: r.sub_resource.clone(),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            operation: r.operation.into(),
            user_info: (&r.user_info).into(),
            object: r.object.clone(),
            old_object: r.old_object.clone(),
            dry_run: r.dry_run,
        }
    }
}

impl From<admission::AdmissionResponse> for AdmissionResponse {
    fn from(r: admission::AdmissionResponse) -> Self {
        Self { allowed: r.allowed, message: r.message, code: r.code, patch: r.patch, warnings: r.warnings }
    }
}

impl From<controller::Registration> for Registration {
    fn from(r: controller::Registration) -> Self {
        Self {
            reconciles: r.reconciles.into(),
            owns: r.owns.into_iter().map(Into::into).collect(),
            watches: r.watches.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<&ObjectKey> for controller::ObjectKey {
    fn from(k: &ObjectKey) -> Self {
        Self { namespace: k.namespace.clone(), name: k.name.clone() }
    }
}

impl From<controller::ObjectKey> for ObjectKey {
    fn from(k: controller::ObjectKey) -> Self {
        Self { namespace: k.namespace, name: k.name }
    }
}

impl From<&ReconcileRequest> for controller::ReconcileRequest {
    fn from(r: &ReconcileRequest) -> Self {
        Self { key: (&r.key).into(), object: r.object.clone() }
    }
}

impl From<controller::Action> for Action {
    fn from(a: controller::Action) -> Self {
        Self {
            verb: match a.verb {
                controller::Verb::Create => Verb::Create,
                controller::Verb::Update => Verb::Update,
                controller::Verb::Patch => Verb::Patch,
                controller::Verb::Delete => Verb::Delete,
            },
            resource: a.resource.into(),
            subresource: a.subresource,
            namespace: a.namespace,
            name: a.name,
            body: a.body,
            patch_type: a.patch_type.map(|p| match p {
                controller::PatchType::Merge => PatchType::Merge,
                controller::PatchType::Json => PatchType::Json,
                controller::PatchType::Strategic => PatchType::Strategic,
            }),
            resource_version: a.resource_version,
            uid: a.uid,
            propagation: a.propagation.map(|p| match p {
                controller::Propagation::Background => ActionPropagation::Background,
                controller::Propagation::Foreground => ActionPropagation::Foreground,
                controller::Propagation::Orphan => ActionPropagation::Orphan,
            }),
        }
    }
}

impl From<controller::ReconcileResult> for ReconcileResult {
    fn from(r: controller::ReconcileResult) -> Self {
        Self {
            actions: r.actions.into_iter().map(Into::into).collect(),
            requeue_after_ms: r.requeue_after_ms,
            reason: r.reason,
        }
    }
}
