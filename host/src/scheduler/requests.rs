//! A pod's requests as kube-scheduler sums them: its containers, at least each init
//! container, plus its overhead.

use serde_json::Value;

use crate::plugins::policy_types::Resources;
use crate::quantity::{milli, whole};

/// One container's requests (`requests`, else `limits`, what the API server defaults
/// requests to), or the overhead's (`in_requests`: the amounts themselves).
fn amounts(resources: &Value, in_requests: bool) -> Resources {
    let pick = |name: &str, parse: fn(&str) -> Option<u64>| -> u64 {
        let found = if in_requests {
            resources.get(name)
        } else {
            resources.pointer(&format!("/requests/{name}")).or_else(|| resources.pointer(&format!("/limits/{name}")))
        };
        found.and_then(Value::as_str).and_then(parse).unwrap_or(0)
    };
    Resources {
        milli_cpu: pick("cpu", milli),
        memory: pick("memory", whole),
        ephemeral_storage: pick("ephemeral-storage", whole),
        pods: 0,
    }
}

/// `total` and `r` combined amount by amount with `op` (sum, or the larger).
fn combine(total: &mut Resources, r: &Resources, op: fn(u64, u64) -> u64) {
    total.milli_cpu = op(total.milli_cpu, r.milli_cpu);
    total.memory = op(total.memory, r.memory);
    total.ephemeral_storage = op(total.ephemeral_storage, r.ephemeral_storage);
}

/// kube-scheduler's pod requests: the sum over containers, at least each init container's
/// (they run one at a time, before), plus the pod's overhead; one pod.
pub fn pod_requests(spec: &Value) -> Resources {
    let mut total = Resources { milli_cpu: 0, memory: 0, ephemeral_storage: 0, pods: 1 };
    let containers = |key: &str| spec.get(key).and_then(Value::as_array).into_iter().flatten();
    for container in containers("containers") {
        combine(&mut total, &amounts(&container["resources"], false), u64::saturating_add);
    }
    for container in containers("initContainers") {
        combine(&mut total, &amounts(&container["resources"], false), u64::max);
    }
    if let Some(overhead) = spec.get("overhead") {
        combine(&mut total, &amounts(overhead, true), u64::saturating_add);
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
