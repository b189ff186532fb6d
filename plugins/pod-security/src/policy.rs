//! The Pod Security Standards' checks, in plain Rust over JSON: shared by the plugin
//! (lib.rs) and, compiled natively, by the host's plugin benchmark as the baseline the
//! WebAssembly version is measured against.

use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

const RESTRICTED_VOLUMES: &[&str] =
    &["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

/// Every container of the pod spec, with the field it is listed under.
fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| spec.get(*field).and_then(Value::as_array).into_iter().flatten())
        .collect()
}

fn name_of(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("")
}

/// Containers (quoted, comma separated) for which `bad` holds.
fn offenders(spec: &Value, bad: impl Fn(&Value) -> bool) -> Vec<String> {
    containers(spec).into_iter().filter(|c| bad(c)).map(|c| format!("{:?}", name_of(c))).collect()
}

fn plural(names: &[String]) -> &'static str {
    if names.len() == 1 {
        "container"
    } else {
        "containers"
    }
}

/// The violations of `spec` at `level`, as PodSecurity words them.
pub fn check(spec: &Value, level: Level) -> Vec<String> {
    let mut violations = Vec::new();
    if level == Level::Privileged {
        return violations;
    }
    let security = |c: &Value, field: &str| c.get("securityContext").and_then(|s| s.get(field)).cloned();
    let pod_security = |field: &str| spec.get("securityContext").and_then(|s| s.get(field)).cloned();

    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|f| spec.get(**f).and_then(Value::as_bool) == Some(true))
        .map(|f| format!("{f}=true"))
        .collect();
    if !host.is_empty() {
        violations.push(format!("host namespaces ({})", host.join(", ")));
    }
    let privileged = offenders(spec, |c| security(c, "privileged").and_then(|v| v.as_bool()) == Some(true));
    if !privileged.is_empty() {
        violations.push(format!(
            "privileged ({} {} must not set securityContext.privileged=true)",
            plural(&privileged),
            privileged.join(", ")
        ));
    }
    let added = |c: &Value| -> Vec<String> {
        c.pointer("/securityContext/capabilities/add")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()
    };
    let mut extra: Vec<String> = containers(spec)
        .into_iter()
        .flat_map(added)
        .filter(|cap| !BASELINE_CAPABILITIES.contains(&cap.as_str()))
        .collect();
    extra.dedup();
    if !extra.is_empty() {
        let who = offenders(spec, |c| added(c).iter().any(|cap| !BASELINE_CAPABILITIES.contains(&cap.as_str())));
        violations.push(format!(
            "capabilities ({} {} must not include {:?} in securityContext.capabilities.add)",
            plural(&who),
            who.join(", "),
            extra
        ));
    }
    let volumes: Vec<&Value> = spec.get("volumes").and_then(Value::as_array).into_iter().flatten().collect();
    let host_paths: Vec<String> = volumes
        .iter()
        .filter(|v| v.get("hostPath").is_some())
        .map(|v| format!("{:?}", v.get("name").and_then(Value::as_str).unwrap_or("")))
        .collect();
    if !host_paths.is_empty() {
        violations.push(format!("hostPath volumes (volumes {})", host_paths.join(", ")));
    }
    let ports: Vec<String> = containers(spec)
        .into_iter()
        .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|p| p.get("hostPort").and_then(Value::as_i64).filter(|p| *p != 0))
        .map(|p| p.to_string())
        .collect();
    if !ports.is_empty() {
        violations.push(format!("hostPort (hostPorts {})", ports.join(", ")));
    }
    let unmasked = offenders(spec, |c| {
        security(c, "procMount").and_then(|v| v.as_str().map(String::from)).is_some_and(|m| m != "Default")
    });
    if !unmasked.is_empty() {
        violations.push(format!(
            "procMount ({} {} must not set securityContext.procMount to \"Unmasked\")",
            plural(&unmasked),
            unmasked.join(", ")
        ));
    }
    let unconfined = |profile: Option<Value>| {
        profile.and_then(|p| p.get("type").and_then(Value::as_str).map(String::from)).is_some_and(|t| t == "Unconfined")
    };
    if unconfined(pod_security("seccompProfile"))
        || !offenders(spec, |c| unconfined(security(c, "seccompProfile"))).is_empty()
    {
        violations.push(
            "seccompProfile (pod or containers must not set securityContext.seccompProfile.type to \"Unconfined\")"
                .into(),
        );
    }
    let sysctls: Vec<String> = pod_security("sysctls")
        .and_then(|s| s.as_array().cloned())
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str).map(String::from))
        .filter(|s| !SAFE_SYSCTLS.contains(&s.as_str()))
        .collect();
    if !sysctls.is_empty() {
        violations.push(format!("forbidden sysctls ({})", sysctls.join(", ")));
    }
    if level < Level::Restricted {
        return violations;
    }

    let bad_volumes: Vec<String> = volumes
        .iter()
        .filter(|v| {
            v.as_object().is_some_and(|o| o.keys().any(|k| k != "name" && !RESTRICTED_VOLUMES.contains(&k.as_str())))
        })
        .map(|v| format!("{:?}", v.get("name").and_then(Value::as_str).unwrap_or("")))
        .collect();
    if !bad_volumes.is_empty() {
        violations
            .push(format!("restricted volume types (volumes {} use restricted volume types)", bad_volumes.join(", ")));
    }
    let escalating =
        offenders(spec, |c| security(c, "allowPrivilegeEscalation").and_then(|v| v.as_bool()) != Some(false));
    if !escalating.is_empty() {
        violations.push(format!(
            "allowPrivilegeEscalation != false ({} {} must set securityContext.allowPrivilegeEscalation=false)",
            plural(&escalating),
            escalating.join(", ")
        ));
    }
    let drops_all = |c: &Value| {
        c.pointer("/securityContext/capabilities/drop")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|cap| cap == "ALL"))
    };
    let keeping = offenders(spec, |c| !drops_all(c));
    if !keeping.is_empty() {
        violations.push(format!(
            "unrestricted capabilities ({} {} must set securityContext.capabilities.drop=[\"ALL\"])",
            plural(&keeping),
            keeping.join(", ")
        ));
    }
    let pod_non_root = pod_security("runAsNonRoot").and_then(|v| v.as_bool()) == Some(true);
    let root = offenders(spec, |c| match security(c, "runAsNonRoot").and_then(|v| v.as_bool()) {
        Some(value) => !value,
        None => !pod_non_root,
    });
    if !root.is_empty() {
        violations.push(format!(
            "runAsNonRoot != true (pod or {} {} must set securityContext.runAsNonRoot=true)",
            plural(&root),
            root.join(", ")
        ));
    }
    let seccomp_ok = |profile: Option<Value>| {
        profile
            .and_then(|p| p.get("type").and_then(Value::as_str).map(String::from))
            .is_some_and(|t| t == "RuntimeDefault" || t == "Localhost")
    };
    if !seccomp_ok(pod_security("seccompProfile")) {
        let missing = offenders(spec, |c| !seccomp_ok(security(c, "seccompProfile")));
        if !missing.is_empty() {
            violations.push(format!(
                "seccompProfile (pod or {} {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
                plural(&missing),
                missing.join(", ")
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn baseline_refuses_privileged_and_host_namespaces() {
        let spec = json!({"hostNetwork": true, "containers": [{"name": "c", "securityContext": {"privileged": true}}]});
        let violations = check(&spec, Level::Baseline);
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(check(&spec, Level::Privileged).is_empty());
        assert!(check(&json!({"containers": [{"name": "c", "image": "nginx"}]}), Level::Baseline).is_empty());
        assert!(!check(&json!({"containers": [{"name": "c", "image": "nginx"}]}), Level::Restricted).is_empty());
    }
}
