//! A mutating admission plugin in the spirit of LimitRanger: every container of a new pod
//! that asks for no resources gets the configured requests and limits, and the pod gets
//! the configured labels it does not already have.
//!
//! Config: `{"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"},
//! "labels": {"wasmkube.io/defaulted": "true"}}` (these are the defaults).

use std::sync::Mutex;

use wasmkube_sdk::{json, patch, Admission, Operation, Request, Response, Value};

static CONFIG: Mutex<Option<Value>> = Mutex::new(None);

fn default_config() -> Value {
    json!({
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
        "labels": {"wasmkube.io/defaulted": "true"},
    })
}

struct Defaults;

impl Admission for Defaults {
    fn configure(config: Value) -> Result<(), String> {
        let mut merged = default_config();
        if let (Some(merged), Some(given)) = (merged.as_object_mut(), config.as_object()) {
            for (key, value) in given {
                merged.insert(key.clone(), value.clone());
            }
        }
        *CONFIG.lock().map_err(|_| "config lock poisoned".to_string())? = Some(merged);
        Ok(())
    }

    fn mutate(request: Request) -> Response {
        if request.resource.group != "" || request.resource.resource != "pods" || request.operation != Operation::Create
        {
            return Response::allow();
        }
        let config = CONFIG.lock().ok().and_then(|c| c.clone()).unwrap_or_else(default_config);
        let mut operations = Vec::new();
        for field in ["initContainers", "containers"] {
            let containers =
                request.field(&format!("/spec/{field}")).and_then(Value::as_array).cloned().unwrap_or_default();
            for (index, container) in containers.iter().enumerate() {
                let resources = container.get("resources");
                let empty = resources.is_none_or(|r| r.as_object().is_none_or(|o| o.is_empty()));
                if empty {
                    operations.push(patch::add(
                        &format!("/spec/{field}/{index}/resources"),
                        json!({"requests": config["requests"], "limits": config["limits"]}),
                    ));
                }
            }
        }
        let labels = config["labels"].as_object().cloned().unwrap_or_default();
        let existing = request.field("/metadata/labels").and_then(Value::as_object).cloned();
        if existing.is_none() && !labels.is_empty() {
            operations.push(patch::add("/metadata/labels", Value::Object(labels)));
        } else if let Some(existing) = existing {
            for (key, value) in labels {
                if !existing.contains_key(&key) {
                    operations.push(patch::add(&format!("/metadata/labels/{}", patch::escape(&key)), value));
                }
            }
        }
        Response::patch(operations)
    }
}

wasmkube_sdk::export_admission!(Defaults);
