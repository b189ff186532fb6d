//! The ServiceAccount controller (kube-controller-manager's `serviceaccount-controller`,
//! as a plugin): every namespace that is not being deleted has a `default`
//! ServiceAccount; one deleted is made again.

use wasmkube_controller_sdk::{
    client, gvr, json, Action, Controller, GroupVersionResource, Key, Reconciled, Registration, Request, Value,
};

/// The ServiceAccounts every namespace gets.
const DEFAULT: &str = "default";

fn namespaces() -> GroupVersionResource {
    gvr("", "v1", "namespaces")
}

fn serviceaccounts() -> GroupVersionResource {
    gvr("", "v1", "serviceaccounts")
}

struct ServiceAccounts;

impl Controller for ServiceAccounts {
    fn configure(_config: Value) -> Result<Registration, String> {
        Ok(Registration::reconciles(namespaces()).watches(serviceaccounts()))
    }

    fn reconcile(request: Request) -> Result<Reconciled, String> {
        let Some(namespace) = request.object else { return Ok(Reconciled::done("the namespace is gone")) };
        if namespace.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Reconciled::done("the namespace is being deleted"));
        }
        let name = request.key.name;
        let existing = client::get("", "v1", "serviceaccounts", Some(&name), DEFAULT)
            .map_err(|e| format!("cannot read serviceaccount {name}/{DEFAULT}: {e:?}"))?;
        if existing.is_some() {
            return Ok(Reconciled::done("it has its default ServiceAccount"));
        }
        let account =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": DEFAULT, "namespace": name}});
        Ok(Reconciled::with(
            vec![Action::create(serviceaccounts(), Some(&name), &account)],
            "create its default ServiceAccount",
        ))
    }

    fn map(_resource: &GroupVersionResource, object: Value) -> Vec<Key> {
        // A default ServiceAccount that changed (or went): check its namespace.
        let metadata = &object["metadata"];
        match (metadata["name"].as_str(), metadata["namespace"].as_str()) {
            (Some(DEFAULT), Some(namespace)) => vec![Key { namespace: None, name: namespace.to_string() }],
            _ => Vec::new(),
        }
    }
}

wasmkube_controller_sdk::export_controller!(ServiceAccounts);
