//! A pod's requests as kube-scheduler sums them: its containers, at least each init
//! container, plus its overhead.

use serde_json::Value;

use crate::plugins::policy_types::Resources;
use crate::quantity::{milli, whole};

/// One container's (or the overhead's) requests: `requests`, else `limits` (what the API
/// server defaults requests to).
fn amounts(resources: &Value) -> Resources {
    let pick = |name: &str, parse: fn(&str) -> Option<u64>| -> u64 {
        resources
            .pointer(&format!("/requests/{name}"))
            .or_else(|| resources.pointer(&format!("/limits/{name}")))
            .and_then(Value::as_str)
            .and_then(parse)
            .unwrap_or(0)
    };
    Resources {
        milli_cpu: pick("cpu", milli),
        memory: pick("memory", whole),
        ephemeral_storage: pick("ephemeral-storage", whole),
        pods: 0,
    }
}

/// kube-scheduler's pod requests: the sum over containers, at least each init container's
/// (they run one at a time, before), plus the pod's overhead; one pod.
pub fn pod_requests(spec: &Value) -> Resources {
    let mut total = Resources { milli_cpu: 0, memory: 0, ephemeral_storage: 0, pods: 1 };
    let containers = |key: &str| spec.get(key).and_then(Value::as_array).into_iter().flatten();
    for container in containers("containers") {
        let r = amounts(&container["resources"]);
        total.milli_cpu = total.milli_cpu.saturating_add(r.milli_cpu);
        total.memory = total.memory.saturating_add(r.memory);
        total.ephemeral_storage = total.ephemeral_storage.saturating_add(r.ephemeral_storage);
    }
    for container in containers("initContainers") {
        let r = amounts(&container["resources"]);
        total.milli_cpu = total.milli_cpu.max(r.milli_cpu);
        total.memory = total.memory.max(r.memory);
        total.ephemeral_storage = total.ephemeral_storage.max(r.ephemeral_storage);
    }
    if let Some(overhead) = spec.get("overhead") {
        let r = amounts(&serde_json::json!({ "requests": overhead.clone() }));
        total.milli_cpu = total.milli_cpu.saturating_add(r.milli_cpu);
        total.memory = total.memory.saturating_add(r.memory);
        total.ephemeral_storage = total.ephemeral_storage.saturating_add(r.ephemeral_storage);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_sum_containers_and_take_the_largest_init_container() {
        let spec = serde_json::json!({
            "containers": [
                {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                {"resources": {"limits": {"cpu": "500m"}}},
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "32Mi"}}}],
            "overhead": {"cpu": "10m"},
        });
        let r = pod_requests(&spec);
        assert_eq!((r.milli_cpu, r.memory, r.pods), (1010, 64 << 20, 1));
    }
}
