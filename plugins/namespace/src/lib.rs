//! The namespace controller (kube-controller-manager's, as a plugin): a namespace being
//! deleted (`deletionTimestamp` set, phase Terminating) loses everything in it — every
//! namespaced resource the API serves, custom ones included — and once nothing is left,
//! its `kubernetes` finalizer, which lets it go. Objects with finalizers of their own hold
//! the namespace until those are removed; it looks again every half second meanwhile.

use std::time::Duration;

use wasmkube_controller_sdk::{client, gvr, json, Action, Controller, Reconciled, Registration, Request, Value};

/// The finalizer kube-apiserver puts in every namespace's `spec.finalizers`.
const FINALIZER: &str = "kubernetes";
/// How soon a namespace still holding objects is looked at again.
const AGAIN: Duration = Duration::from_millis(500);

struct Namespaces;

impl Controller for Namespaces {
    fn configure(_config: Value) -> Result<Registration, String> {
        Ok(Registration::reconciles(gvr("", "v1", "namespaces")))
    }

    fn reconcile(request: Request) -> Result<Reconciled, String> {
        let Some(namespace) = request.object else { return Ok(Reconciled::done("the namespace is gone")) };
        if namespace.pointer("/metadata/deletionTimestamp").is_none() {
            return Ok(Reconciled::done("not being deleted"));
        }
        let finalizers: Vec<Value> =
            namespace.pointer("/spec/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(Reconciled::done("already finalized"));
        }
        let name = request.key.name;
        let mut actions = Vec::new();
        let mut remaining = 0;
        for resource in client::namespaced_resources() {
            let objects = client::list(&resource.group, &resource.version, &resource.resource, Some(&name), "")
                .map_err(|e| format!("cannot list {} in {name}: {e:?}", resource.resource))?;
            remaining += objects.len();
            for object in objects.iter().filter(|o| o.pointer("/metadata/deletionTimestamp").is_none()) {
                actions.push(Action::delete_of(resource.clone(), object));
            }
        }
        if remaining > 0 {
            let reason = format!("{remaining} objects left in {name}");
            return Ok(Reconciled::with(actions, reason).requeue_after(AGAIN));
        }
        let kept: Vec<Value> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
        let mut finalized = namespace.clone();
        finalized["spec"] = json!({"finalizers": kept});
        let finalize = Action::update(gvr("", "v1", "namespaces"), &finalized).subresource("finalize");
        Ok(Reconciled::with(vec![finalize], "empty: remove the kubernetes finalizer"))
    }
}

wasmkube_controller_sdk::export_controller!(Namespaces);
