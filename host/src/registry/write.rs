//! The generic store's writes: create, update (PUT) and patch, each through one read-modify-
//! write helper ([`Registry::guaranteed_update`], kube-apiserver's `GuaranteedUpdate`) and one
//! `replace` that runs an update's steps in kube-apiserver's order — defaults, mutating
//! admission, schema, managedFields, the strategy's begin hook, validation, validating
//! admission, the write at the revision read — and settles what the hook reserved by the
//! outcome. (The API runs each write on a task of its own, so a client that goes away
//! cannot leave a reservation unsettled.)
//!
//! An update that changes nothing (managedFields timestamps aside) writes nothing: no new
//! resourceVersion, no watch event ([`WriteOptions::rewrite`] forces the write).

use bytes::Bytes;
use serde_json::Value;

use super::admit::Request;
use super::object::{self, ObjectExt};
use super::options::{ManagedFields, Via};
use super::resource::Hook;
use super::{apply, defaults, schema, strategic, subresource, validation, ApiResource};
use super::{Cause, Error, FieldValidation, Object, Patch, Resource, Result, Revision, Subresource};
use super::{Registry, WriteOptions, Written};
use crate::plugins::Operation;
use crate::storage::{KeyValue, StoreError};

/// How long a read-modify-write goes on trying when concurrent writes keep winning.
/// kube-apiserver retries an unconditional update until it lands (bounded only by the
/// request's timeout), so a client never sees a Conflict for a write it did not pin: a
/// count of attempts is not enough while a controller writes an object's status in a
/// burst (a Deployment that is rolling out).
const UPDATE_PERSISTENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// What the `scale` subresource reads and writes.
const SCALE: ApiResource = ApiResource {
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    plural: "scale",
    singular: "scale",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
};

/// One attempt of a read-modify-write, given what is stored.
pub(super) type AttemptFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Attempt<T>> + Send + 'a>>;

/// What one attempt of a read-modify-write came to.
pub(super) enum Attempt<T> {
    /// Finished (written, or refused for good).
    Done(Result<T>),
    /// Lost to a concurrent write: read again and retry; this error if no attempt is left.
    Raced(Error),
}

impl Registry {
    /// kube-apiserver's GuaranteedUpdate: read the object at `key`, let `attempt` compute
    /// and write the change against what was read, and when a concurrent write wins, read
    /// again and retry (for up to [`UPDATE_PERSISTENCE`]). `attempt` decides what counts
    /// as a lost race: a write pinned to a resourceVersion never retries.
    ///
    /// Each attempt is a boxed `Send` future borrowing the request's data (an async
    /// closure's future is not provably `Send` across its higher-ranked borrows).
    pub(super) async fn guaranteed_update<'a, T>(
        &self,
        key: &Bytes,
        attempt: impl Fn(Option<KeyValue>) -> AttemptFuture<'a, T>,
    ) -> Result<T> {
        let started = std::time::Instant::now();
        loop {
            match attempt(self.stored(key).await?).await {
                Attempt::Done(result) => return result,
                Attempt::Raced(e) if started.elapsed() >= UPDATE_PERSISTENCE => return Err(e),
                // Let the writer that won finish what it is doing before reading again.
                Attempt::Raced(_) => tokio::task::yield_now().await,
            }
        }
    }

    /// Create `body` (generateName honoured); returns the stored object.
    /// With `dry_run`, everything happens but the write: the answer is what would be stored.
    pub async fn create(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Written> {
        self.create_as(resource, namespace, body, options, ManagedFields::Record).await
    }

    async fn create_as(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        body: Value,
        options: &WriteOptions,
        managed: ManagedFields,
    ) -> Result<Written> {
        let resource = self.current(resource)?;
        Self::check_namespace(&resource, namespace)?;
        let strategy = resource.strategy();
        let mut object = object::into_object(body, &resource)?;
        let name = object::prepare_new(&mut object, &resource, namespace, strategy.tracks_generation())?;
        fill_defaults(&resource, &mut object);
        let attributes = self.admission.attributes(Request {
            resource: &resource,
            operation: Operation::Create,
            part: None,
            namespace,
            name: &name,
            user: options.user.as_ref(),
            dry_run: options.dry_run,
        });
        let mut admitted = self.admission.mutate(attributes.as_ref(), &mut object, None).await?;
        // After mutating admission, as kube-apiserver's BeforeCreate: what it computes (a
        // pod's QoS class) sees the object admission made; the defaults then fill what it
        // cleared (a status' defaults), as kube-apiserver's defaulting on read does.
        strategy.prepare_for_create(&mut object);
        if resource.group == "certificates.k8s.io" && resource.kind == "CertificateSigningRequest" {
            record_requester(&mut object, options.user.as_ref());
        }
        fill_defaults(&resource, &mut object);
        let mut warnings = check_schema(&resource, &mut object, options)?;
        if managed == ManagedFields::Record {
            object = record_manager(&resource, None, object, options)?;
        }
        let key = resource.key(namespace, &name);
        let hook = Hook { registry: self, key: &key, namespace, name: &name, dry_run: options.dry_run };
        let reservation = strategy.begin_create(&hook, &mut object).await?;
        let outcome = async {
            validate(&resource, &object, &name, None)?;
            if let Some(ns) = namespace {
                self.namespace_exists(ns).await?;
            }
            admitted.merge(self.admission.validate(attributes.as_ref(), Some(&object), None).await?);
            warnings.extend(admitted.warnings);
            let decisions = admitted.decisions;
            if options.dry_run {
                return match self.stored(&key).await? {
                    Some(_) => Err(Error::AlreadyExists { resource: resource.qualified(), name: name.clone() }),
                    None => Ok(Written { object, warnings, decisions }),
                };
            }
            match self.store.create(key.clone(), object::encode(&object)?).await {
                Ok(kv) => Ok(Written { object: object::stored_at(object, kv.mod_revision), warnings, decisions }),
                Err(StoreError::AlreadyExists { .. }) => {
                    Err(Error::AlreadyExists { resource: resource.qualified(), name: name.clone() })
                }
                Err(e) => Err(Error::from_store(e)),
            }
        }
        .await;
        reservation.settle(self, &outcome).await;
        outcome
    }

    /// Replace an object, or write through `part`. A `metadata.resourceVersion` in the
    /// body must match the stored one; without one, the write goes over whatever is stored.
    pub async fn update(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Written> {
        let resource = self.current(resource)?;
        Self::check_namespace(&resource, namespace)?;
        let written = into_view(body, &resource, part)?;
        match written.metadata().get("name").and_then(Value::as_str) {
            Some(given) if given != name => {
                return Err(Error::BadRequest(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )))
            }
            _ => {}
        }
        let pinned = written.metadata().get("resourceVersion").and_then(Value::as_str).is_some_and(|v| !v.is_empty());
        let scale = resource.strategy().scale_paths();
        let key = resource.key(namespace, name);
        let (resource, body) = (&*resource, &written);
        let written = self
            .guaranteed_update(&key, |stored| {
                Box::pin(async move {
                    let Some(stored) = stored else { return Attempt::Done(Err(Error::not_found(resource, name))) };
                    let current = match object::decode(&stored) {
                        Ok(current) => current,
                        Err(e) => return Attempt::Done(Err(e)),
                    };
                    let object = match subresource::merge_back(part, resource, body.clone(), &current, scale) {
                        Ok(object) => object,
                        Err(e) => return Attempt::Done(Err(e)),
                    };
                    let via = Via::of(part);
                    match self
                        .replace(resource, namespace, name, object, &stored, via, options, ManagedFields::Record)
                        .await
                    {
                        Err(e @ Error::Conflict { .. }) if !pinned => Attempt::Raced(e),
                        result => Attempt::Done(result),
                    }
                })
            })
            .await?;
        Ok(Written { object: subresource::view(part, written.object, scale), ..written })
    }

    /// Store `object` over `current` (the stored value it was read against): the steps of
    /// an update after the body is merged, through the write at `current`'s revision (or
    /// the body's resourceVersion). A removed last finalizer removes the object.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn replace(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        mut object: Object,
        current: &KeyValue,
        via: Via,
        options: &WriteOptions,
        managed: ManagedFields,
    ) -> Result<Written> {
        let strategy = resource.strategy();
        let key = resource.key(namespace, name);
        let mut old = object::decode(current)?;
        // As kube-apiserver defaults what it reads from storage: an object stored before a
        // default existed compares equal to itself with the default.
        fill_defaults(resource, &mut old);
        let keep_status = match via {
            Via::Resource => true,
            Via::Subresource(part) => !part.writes_status(),
            Via::Host => false,
        };
        if keep_status && resource.has_subresource("status") {
            // Status is written through its subresource only.
            match old.get("status") {
                Some(status) => object.insert("status".into(), status.clone()),
                None => object.remove("status"),
            };
        }
        let expected = match object.metadata().get("resourceVersion") {
            None | Some(Value::Null) => current.mod_revision,
            Some(Value::String(rv)) if rv.is_empty() => current.mod_revision,
            Some(Value::String(rv)) => rv.parse::<Revision>().map_err(|_| {
                Error::BadRequest(format!("metadata.resourceVersion {rv:?} is not a valid resource version"))
            })?,
            // Go's decoder refuses it before anything else would look at it.
            Some(other) => {
                let kind = if other.is_number() {
                    "number"
                } else if other.is_boolean() {
                    "bool"
                } else {
                    "object"
                };
                return Err(Error::BadRequest(format!(
                    "{kind_name} in version \"{version}\" cannot be handled as a {kind_name}: json: cannot unmarshal {kind} into Go struct field ObjectMeta.metadata.resourceVersion of type string",
                    kind_name = resource.kind,
                    version = resource.version,
                )));
            }
        };
        object::carry_over_system_fields(&mut object, &old, resource, namespace, name)?;
        fill_defaults(resource, &mut object);
        let deleting = old.metadata().contains_key("deletionTimestamp");
        if deleting {
            let before = object::finalizers(&old);
            if let Some(new) = object::finalizers(&object).into_iter().find(|f| !before.contains(f)) {
                return Err(Error::Invalid {
                    kind: resource.kind.into(),
                    name: name.into(),
                    causes: vec![Cause {
                        reason: "FieldValueForbidden",
                        field: "metadata.finalizers".into(),
                        message: format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [{new:?}]"),
                    }],
                });
            }
        }
        if via == Via::Resource {
            strategy.prepare_for_update(&mut object, &old);
        }
        let part = match via {
            Via::Subresource(part) => Some(part),
            _ => None,
        };
        let attributes = match via {
            // The server's own writes (binding, finalizing) are not admitted again.
            Via::Host => None,
            _ => self.admission.attributes(Request {
                resource,
                operation: Operation::Update,
                part,
                namespace,
                name,
                user: options.user.as_ref(),
                dry_run: options.dry_run,
            }),
        };
        let mut admitted = self.admission.mutate(attributes.as_ref(), &mut object, Some(&old)).await?;
        fill_defaults(resource, &mut object);
        if strategy.tracks_generation() {
            object::bump_generation(&mut object, &old);
        }
        let mut warnings = check_schema(resource, &mut object, options)?;
        if managed == ManagedFields::Record {
            object = record_manager(resource, Some(&old), object, options)?;
        }
        let hook = Hook { registry: self, key: &key, namespace, name, dry_run: options.dry_run };
        let reservation = strategy.begin_update(&hook, &mut object, &old).await?;
        // Whether the new object is what storage holds afterwards (else the reservation goes).
        let mut kept = false;
        let outcome = async {
            validate(resource, &object, name, Some(&old))?;
            admitted.merge(self.admission.validate(attributes.as_ref(), Some(&object), Some(&old)).await?);
            warnings.extend(admitted.warnings);
            let decisions = admitted.decisions;
            if expected != current.mod_revision {
                return Err(Error::modified(resource, name));
            }
            // A graceful deletion under way (a pod its node is stopping) is not finished by
            // an update: its node removes it (upstream's shouldDeleteDuringUpdate).
            let graceful =
                old.metadata().get("deletionGracePeriodSeconds").and_then(Value::as_i64).is_some_and(|g| g > 0);
            let removing =
                deleting && !graceful && object::finalizers(&object).is_empty() && !strategy.blocks_deletion(&object);
            if !removing && !options.rewrite && object::unchanged(&object, &old) {
                // Nothing to write: the stored object, at the revision it has.
                return Ok(Written { object: old.clone(), warnings, decisions });
            }
            if options.dry_run {
                object.metadata_mut().insert("resourceVersion".into(), Value::String(current.mod_revision.to_string()));
                return Ok(Written { object, warnings, decisions });
            }
            if removing {
                // The last finalizer is gone: so is the object.
                return match self.store.delete(key.clone(), Some(expected)).await {
                    Ok(_) => {
                        strategy.after_delete(self, &old).await;
                        Ok(Written { object, warnings, decisions })
                    }
                    Err(StoreError::Conflict { .. }) => Err(Error::modified(resource, name)),
                    Err(StoreError::NotFound { .. }) => Err(Error::not_found(resource, name)),
                    Err(e) => Err(Error::from_store(e)),
                };
            }
            match self.store.update(key.clone(), object::encode(&object)?, expected).await {
                Ok(kv) => {
                    kept = true;
                    Ok(Written { object: object::stored_at(object, kv.mod_revision), warnings, decisions })
                }
                Err(StoreError::Conflict { .. }) => Err(Error::modified(resource, name)),
                Err(StoreError::NotFound { .. }) => Err(Error::not_found(resource, name)),
                Err(e) => Err(Error::from_store(e)),
            }
        }
        .await;
        if kept {
            reservation.commit(self).await;
        } else {
            reservation.release(self).await;
        }
        outcome
    }

    /// Apply `patch` to the current object and store the result. A patch that sets
    /// `metadata.resourceVersion` is a precondition; otherwise a concurrent write just
    /// makes it re-apply to the newer object (like kube-apiserver's GuaranteedUpdate).
    pub async fn patch(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        patch: Patch,
        part: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Written> {
        let resource = self.current(resource)?;
        Self::check_namespace(&resource, namespace)?;
        if options.force && !matches!(patch, Patch::Apply(_)) {
            return Err(Error::BadRequest("force may only be set for server-side apply".into()));
        }
        let resource: &Resource = &resource;
        let key = resource.key(namespace, name);
        let scale = resource.strategy().scale_paths();
        let patch = &patch;
        self.guaranteed_update(&key, |stored| {
            Box::pin(async move {
                let stored = match (stored, patch) {
                    (Some(stored), _) => stored,
                    (None, Patch::Apply(config)) if part.is_none() => {
                        return match self.create_by_apply(resource, namespace, name, config, options).await {
                            // Created meanwhile by another writer: patch that one.
                            Err(e @ Error::AlreadyExists { .. }) => Attempt::Raced(e),
                            result => Attempt::Done(result),
                        };
                    }
                    (None, _) => return Attempt::Done(Err(Error::not_found(resource, name))),
                };
                let (object, pinned) = match patched(resource, name, &stored, patch, part, options) {
                    Ok(patched) => patched,
                    Err(e) => return Attempt::Done(Err(e)),
                };
                let managed = match patch {
                    Patch::Apply(_) => ManagedFields::Recorded,
                    _ => ManagedFields::Record,
                };
                match self.replace(resource, namespace, name, object, &stored, Via::of(part), options, managed).await {
                    Err(e @ Error::Conflict { .. }) if !pinned => Attempt::Raced(e),
                    result => {
                        Attempt::Done(result.map(|w| Written { object: subresource::view(part, w.object, scale), ..w }))
                    }
                }
            })
        })
        .await
    }

    /// A server-side apply to an object that does not exist creates it.
    async fn create_by_apply(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        config: &Value,
        options: &WriteOptions,
    ) -> Result<Written> {
        let config = apply_config(resource, name, config, None)?;
        let schema = resource.strategy().schema();
        let object = apply::apply(None, &config, options.manager(), options.force, schema, &object::now())
            .map_err(|e| apply_error(resource, name, e))?;
        self.create_as(resource, namespace, object, options, ManagedFields::Recorded).await
    }
}

/// The object `patch` makes of `stored`, merged back from `part`'s view, and whether the
/// patch pinned it to a resourceVersion (a precondition: a conflict is then final).
fn patched(
    resource: &Resource,
    name: &str,
    stored: &KeyValue,
    patch: &Patch,
    part: Option<Subresource>,
    options: &WriteOptions,
) -> Result<(Object, bool)> {
    let strategy = resource.strategy();
    let scale = strategy.scale_paths();
    let mut current = object::decode(stored)?;
    if strategy.converts_versions() {
        // Stored through another version of the kind: patched as this one.
        current.insert("apiVersion".into(), Value::String(resource.api_version()));
    }
    let viewed = subresource::view(part, current.clone(), scale);
    let revision = viewed.metadata().get("resourceVersion").cloned();
    let mut document = Value::Object(viewed);
    match patch {
        Patch::Json(operations) => json_patch::patch(&mut document, operations).map_err(|e| Error::Invalid {
            kind: resource.kind.into(),
            name: name.into(),
            causes: vec![Cause::invalid("", format!("the JSON patch cannot be applied: {e}"))],
        })?,
        Patch::Merge(merge) => json_patch::merge(&mut document, merge),
        Patch::Apply(config) => {
            let config = apply_config(resource, name, config, part)?;
            let schema = strategy.schema();
            let manager = options.manager();
            document = apply::apply(Some(&document), &config, manager, options.force, schema, &object::now())
                .map_err(|e| apply_error(resource, name, e))?;
            // The document keeps the version it was applied to, unless the
            // configuration names one (then it is a precondition).
            let pinned_to = config.pointer("/metadata/resourceVersion").cloned().or_else(|| revision.clone());
            if let (Some(rv), Some(Value::Object(metadata))) = (pinned_to, document.get_mut("metadata")) {
                metadata.insert("resourceVersion".into(), rv);
            }
        }
        Patch::Strategic(patch) => {
            let schema = match part {
                Some(Subresource::Scale) => schema::Schema::builtin("autoscaling", "v1", "Scale"),
                _ => schema::Schema::builtin(resource.group, resource.version, resource.kind),
            };
            if schema.is_none() {
                return Err(Error::UnsupportedMediaType(format!(
                    "strategic merge patch is not supported for {}: use a JSON merge patch (--type=merge)",
                    resource.qualified()
                )));
            }
            document = strategic::apply(&document, patch, schema)
                .map_err(|e| Error::BadRequest(format!("the strategic merge patch cannot be applied: {e}")))?;
        }
    }
    // A patch that changes resourceVersion makes it a precondition; otherwise the
    // document still carries the version it was applied to, so only that one is replaced.
    let pinned = document.pointer("/metadata/resourceVersion").cloned() != revision;
    let written = into_view(document, resource, part)?;
    let object = subresource::merge_back(part, resource, written, &current, scale)?;
    Ok((object, pinned))
}

/// A request body as what `part` of `resource` reads and writes.
fn into_view(body: Value, resource: &ApiResource, part: Option<Subresource>) -> Result<Object> {
    match part {
        Some(Subresource::Scale) => object::into_object(body, &SCALE),
        _ => object::into_object(body, resource),
    }
}

/// The configuration of a server-side apply, checked: an object naming `name` (or no
/// name: then `name`), without a status when applied to the resource itself (status is
/// its subresource's).
fn apply_config(resource: &ApiResource, name: &str, config: &Value, part: Option<Subresource>) -> Result<Value> {
    let Value::Object(map) = config else {
        return Err(Error::BadRequest("the applied configuration must be an object".into()));
    };
    let mut map = map.clone();
    match map.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str) {
        Some(given) if given == name => {}
        Some(given) => {
            return Err(Error::BadRequest(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )))
        }
        // As kube-apiserver: a configuration without a name applies to the one on the URL
        // (kube-rs applies partial objects this way).
        None => {
            let metadata = map.entry("metadata").or_insert(Value::Null);
            if metadata.is_null() {
                *metadata = Value::Object(serde_json::Map::new());
            }
            match metadata {
                Value::Object(metadata) => {
                    metadata.insert("name".into(), Value::String(name.to_string()));
                }
                _ => return Err(Error::BadRequest("metadata of the applied configuration must be an object".into())),
            }
        }
    }
    if part.is_none() && resource.has_subresource("status") {
        map.remove("status");
    }
    Ok(Value::Object(map))
}

fn apply_error(resource: &ApiResource, name: &str, error: apply::ApplyError) -> Error {
    match error {
        apply::ApplyError::Conflicts(conflicts) => Error::ApplyConflict {
            resource: resource.qualified(),
            name: name.into(),
            message: apply::ApplyError::Conflicts(conflicts.clone()).to_string(),
            causes: conflicts
                .into_iter()
                .map(|c| Cause {
                    reason: "FieldManagerConflict",
                    field: c.path,
                    message: format!("conflict with {}", c.owner),
                })
                .collect(),
        },
        apply::ApplyError::Invalid(why) => Error::BadRequest(why),
    }
}

/// Record `options`' manager as owning what changed from `old` to `object`.
fn record_manager(resource: &Resource, old: Option<&Object>, object: Object, options: &WriteOptions) -> Result<Object> {
    let schema = resource.strategy().schema();
    let old = old.map(|o| Value::Object(o.clone()));
    match apply::record_update(old.as_ref(), Value::Object(object), options.manager(), schema, &object::now()) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Error::Internal("recording managedFields did not give an object".into())),
        Err(e) => Err(Error::BadRequest(e.to_string())),
    }
}

/// Drop the fields the kind's schema does not declare; refuse them under Strict, and
/// refuse values of the wrong shape. Returns the warnings for the client.
fn check_schema(resource: &Resource, object: &mut Object, options: &WriteOptions) -> Result<Vec<String>> {
    let validation = options.field_validation;
    let Some(schema) = resource.strategy().schema() else {
        return Ok(Vec::new());
    };
    // Built-in kinds are decoded by Go types in kube-apiserver; custom ones by their schema.
    let typed = resource.strategy().openapi_schema().is_none();
    let findings = validation::check(object, schema, typed);
    let cannot = |why: String| {
        Error::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {why}",
            kind = resource.kind,
            version = resource.version
        ))
    };
    if !findings.wrong_shape.is_empty() {
        return Err(cannot(findings.wrong_shape.join(", ")));
    }
    let problems: Vec<String> = findings
        .unknown
        .iter()
        .map(|path| format!("unknown field \"{path}\""))
        .chain(options.duplicate_fields.iter().map(|path| format!("duplicate field \"{path}\"")))
        .collect();
    match validation {
        FieldValidation::Strict if !problems.is_empty() => {
            Err(cannot(format!("strict decoding error: {}", problems.join(", "))))
        }
        FieldValidation::Warn => Ok(problems),
        _ => Ok(Vec::new()),
    }
}

/// The object's metadata and the strategy's own checks (of an update over `old`, if
/// given), every problem at once.
/// Kubernetes' defaults and the fields Go always writes, for a built-in kind (a custom
/// resource's defaults are its schema's, applied with the schema check). A write fills
/// them twice, as kube-apiserver does: into the body it decodes (what the strategy and
/// admission see), and again after them (kube-apiserver decodes what it stored, so a
/// status a strategy reset comes back as `status: {}`, a PersistentVolume's as Pending).
fn fill_defaults(resource: &Resource, object: &mut Object) {
    let strategy = resource.strategy();
    if strategy.openapi_schema().is_some() {
        return;
    }
    let r = strategy.resource();
    if let Some(definition) = schema::definition_of(r.group, r.version, r.kind) {
        defaults::apply(definition, object);
    }
}

fn validate(resource: &Resource, object: &Object, name: &str, old: Option<&Object>) -> Result<()> {
    let strategy = resource.strategy();
    let mut causes = object::validate_metadata(object, resource.namespaced, strategy.name_rule());
    causes.extend(match old {
        None => strategy.validate(object),
        Some(old) => strategy.validate_update(object, old),
    });
    if causes.is_empty() {
        Ok(())
    } else {
        // kube-apiserver names the kind with its group: `Deployment.apps "web" is invalid`.
        let kind = if resource.group.is_empty() {
            resource.kind.to_string()
        } else {
            format!("{}.{}", resource.kind, resource.group)
        };
        Err(Error::Invalid { kind, name: name.into(), causes })
    }
}

/// A CertificateSigningRequest says who asked (`spec.username`, `uid`, `groups`, `extra`),
/// set from the request's user whatever the body said, as kube-apiserver's strategy does;
/// approvers decide on it.
fn record_requester(object: &mut Object, user: Option<&crate::auth::UserInfo>) {
    let user = user.cloned().unwrap_or_else(crate::auth::UserInfo::server);
    let spec = object.entry("spec").or_insert_with(|| Value::Object(Object::new()));
    if let Value::Object(spec) = spec {
        spec.insert("username".into(), Value::String(user.username));
        spec.insert("uid".into(), Value::String(user.uid));
        spec.insert("groups".into(), Value::Array(user.groups.into_iter().map(Value::String).collect()));
        spec.remove("extra");
    }
}
