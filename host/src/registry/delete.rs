//! The generic store's deletes: `delete` (preconditions, finalizers, propagation recorded
//! as the garbage collector's finalizer) and `deletecollection`. An object with finalizers
//! (or one its strategy holds, a namespace with `spec.finalizers`) is only marked with
//! `deletionTimestamp`; the write that removes the last finalizer removes it (`write.rs`).

use serde_json::Value;

use super::admit::Request;
use super::object::{self, ObjectExt};
use super::write::Attempt;
use super::{DeleteOptions, Error, ListOptions, Object, ObjectList, Propagation, Registry, Resource, Result};
use crate::plugins::Operation;
use crate::storage::StoreError;

impl Registry {
    /// Delete every object `options` selects (`deletecollection`); returns what was deleted.
    pub async fn delete_collection(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        options: ListOptions,
        delete: &DeleteOptions,
    ) -> Result<ObjectList> {
        let list = self.list(resource, namespace, options).await?;
        let mut deleted = Vec::with_capacity(list.items.len());
        for item in list.items {
            let metadata = item.metadata();
            let name = metadata.get("name").and_then(Value::as_str).unwrap_or_default();
            let ns = metadata.get("namespace").and_then(Value::as_str);
            match self.delete(resource, ns, name, delete).await {
                Ok(object) => deleted.push(object),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ObjectList { items: deleted, resource_version: list.resource_version, continue_token: None })
    }

    /// Delete an object. One with finalizers (or, for a namespace, `spec.finalizers`) is
    /// only marked: `deletionTimestamp` is set and it goes when its last finalizer is
    /// removed. Returns the object's last state (or its marked state).
    pub async fn delete(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Object> {
        let resource = self.current(resource)?;
        let resource: &Resource = &resource;
        Self::check_namespace(resource, namespace)?;
        let strategy = resource.strategy();
        let key = &resource.key(namespace, name);
        self.guaranteed_update(key, |stored| {
            Box::pin(async move {
                let Some(stored) = stored else { return Attempt::Done(Err(Error::not_found(resource, name))) };
                let mut object = match object::decode(&stored) {
                    Ok(object) => object,
                    Err(e) => return Attempt::Done(Err(e)),
                };
                let uid = object.metadata().get("uid").and_then(Value::as_str).unwrap_or_default();
                if let Some(wanted) = options.uid.as_deref().filter(|wanted| *wanted != uid) {
                    return Attempt::Done(Err(Error::uid_precondition_failed(resource, name, wanted, uid)));
                }
                if options.resource_version.is_some_and(|rv| rv != stored.mod_revision) {
                    return Attempt::Done(Err(Error::precondition_failed(resource, name)));
                }
                let attributes = self.admission.attributes(Request {
                    resource,
                    operation: Operation::Delete,
                    part: None,
                    namespace,
                    name,
                    user: options.user.as_ref(),
                    dry_run: options.dry_run,
                });
                if let Err(e) = self.admission.validate(attributes.as_ref(), None, Some(&object)).await {
                    return Attempt::Done(Err(e));
                }
                let mut finalizers = object::finalizers(&object);
                let added = match options.propagation {
                    Some(Propagation::Foreground) => Some("foregroundDeletion"),
                    Some(Propagation::Orphan) => Some("orphan"),
                    _ => None,
                };
                let grace = strategy.grace_period(&object, options.grace_period_seconds);
                let marked = object.metadata().get("deletionTimestamp").is_some();
                let marked_grace = object.metadata().get("deletionGracePeriodSeconds").and_then(Value::as_i64);
                // A graceful deletion under way is only brought forward, never put back.
                let shortens = marked_grace.is_none_or(|g| grace < g);
                if marked && !shortens && marked_grace.is_some_and(|g| g > 0) {
                    return Attempt::Done(Ok(object::stored_at(object, stored.mod_revision)));
                }
                let marking =
                    !finalizers.is_empty() || strategy.blocks_deletion(&object) || added.is_some() || grace > 0;
                let failed = if marking {
                    if let Some(added) = added.filter(|f| !finalizers.iter().any(|have| have == f)) {
                        finalizers.push(added.to_string());
                    }
                    let metadata = object.metadata_mut();
                    if !marked || shortens {
                        let at = std::time::SystemTime::now() + std::time::Duration::from_secs(grace.max(0) as u64);
                        metadata.insert(
                            "deletionTimestamp".into(),
                            Value::String(humantime::format_rfc3339_seconds(at).to_string()),
                        );
                        metadata.insert("deletionGracePeriodSeconds".into(), Value::from(grace.max(0)));
                    }
                    if !finalizers.is_empty() || metadata.contains_key("finalizers") {
                        metadata.insert("finalizers".into(), serde_json::json!(finalizers));
                    }
                    strategy.prepare_for_deletion(&mut object);
                    if options.dry_run {
                        return Attempt::Done(Ok(object));
                    }
                    object.metadata_mut().remove("resourceVersion");
                    let encoded = match object::encode(&object) {
                        Ok(encoded) => encoded,
                        Err(e) => return Attempt::Done(Err(e)),
                    };
                    match self.store.update(key.clone(), encoded, stored.mod_revision).await {
                        Ok(kv) => return Attempt::Done(Ok(object::stored_at(object, kv.mod_revision))),
                        Err(e) => e,
                    }
                } else {
                    if options.dry_run {
                        return Attempt::Done(Ok(object));
                    }
                    match self.store.delete(key.clone(), Some(stored.mod_revision)).await {
                        // As kube-apiserver answers: the last state, at the delete's revision
                        // (what a watcher's DELETED event carries).
                        Ok((kv, revision)) => {
                            let removed = object::decode_at(&kv.value, revision);
                            if let Ok(removed) = &removed {
                                strategy.after_delete(self, removed).await;
                            }
                            return Attempt::Done(removed);
                        }
                        Err(e) => e,
                    }
                };
                match failed {
                    StoreError::NotFound { .. } => Attempt::Raced(Error::not_found(resource, name)),
                    StoreError::Conflict { .. } => Attempt::Raced(Error::modified(resource, name)),
                    other => Attempt::Done(Err(Error::from_store(other))),
                }
            })
        })
        .await
    }
}
