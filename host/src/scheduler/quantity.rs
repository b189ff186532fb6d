//! Kubernetes quantities ("500m", "1.5Gi", "2e3") as the integers the scheduler counts
//! in, and a pod's requests as kube-scheduler sums them.

use serde_json::Value;

use crate::plugins::policy_types::Resources;

/// `text` × `scale`, rounded up (a quantity is never less than it says); None if it is
/// not a quantity or is negative or too large.
fn scaled(text: &str, scale: i128) -> Option<u64> {
    let text = text.trim();
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    if digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    // value = mantissa × 2^binary × 10^decimal / 10^len(fraction)
    let (binary, mut decimal): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exponent if exponent.starts_with(['e', 'E']) => (0, exponent[1..].parse().ok()?),
        _ => return None,
    };
    decimal -= fraction.len() as i32;
    let mut numerator = mantissa.checked_mul(scale)?.checked_mul(1i128.checked_shl(binary)?)?;
    let mut denominator: i128 = 1;
    if decimal >= 0 {
        numerator = numerator.checked_mul(10i128.checked_pow(decimal as u32)?)?;
    } else {
        denominator = 10i128.checked_pow(decimal.unsigned_abs())?;
    }
    let value = (numerator + denominator - 1) / denominator;
    u64::try_from(value).ok()
}

/// A quantity in thousandths (cpu in millicores).
pub fn milli(text: &str) -> Option<u64> {
    scaled(text, 1000)
}

/// A quantity as a whole number (bytes, counts), rounded up.
pub fn whole(text: &str) -> Option<u64> {
    scaled(text, 1)
}

fn quantity(value: &Value) -> Option<&str> {
    value.as_str()
}

/// One container's (or the overhead's) requests: `requests`, else `limits` (what the API
/// server defaults requests to).
fn amounts(resources: &Value) -> Resources {
    let pick = |name: &str, parse: fn(&str) -> Option<u64>| -> u64 {
        resources
            .pointer(&format!("/requests/{name}"))
            .or_else(|| resources.pointer(&format!("/limits/{name}")))
            .and_then(quantity)
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
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(milli("500m"), Some(500));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(milli("0.1"), Some(100));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("100u"), Some(1), "rounded up");
        assert_eq!(whole("1Gi"), Some(1 << 30));
        assert_eq!(whole("1.5Gi"), Some(3 << 29));
        assert_eq!(whole("128974848"), Some(128_974_848));
        assert_eq!(whole("129e6"), Some(129_000_000));
        assert_eq!(whole("123M"), Some(123_000_000));
        assert_eq!(whole("1k"), Some(1000));
        for bad in ["", "abc", "1Xi", "-1", "1.2.3", "."] {
            assert_eq!(whole(bad), None, "{bad:?}");
        }
    }

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
