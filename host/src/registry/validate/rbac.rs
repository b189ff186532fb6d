//! RBAC objects as upstream's `rbac/validation` checks them, for what authorization will
//! rely on: every rule has verbs, and resources come with API groups; a binding's roleRef
//! names a Role or ClusterRole of rbac.authorization.k8s.io, and every subject is a known
//! kind with a name (a ServiceAccount also a namespace, where the binding has none).

use serde_json::Value;

use super::Field;
use crate::registry::Cause;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Every problem of an RBAC object of `kind`.
pub(in crate::registry) fn validate(kind: &str, object: &serde_json::Map<String, Value>) -> Vec<Cause> {
    match kind {
        "Role" | "ClusterRole" => rules(object.get("rules"), kind == "ClusterRole"),
        "RoleBinding" | "ClusterRoleBinding" => binding(object, kind == "ClusterRoleBinding"),
        _ => Vec::new(),
    }
}

fn rules(rules: Option<&Value>, cluster_scoped: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (index, rule) in rules.and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = Field::new("rules").index(index);
        let list = |key: &str| rule.get(key).and_then(Value::as_array).map_or(0, Vec::len);
        if list("verbs") == 0 {
            causes.push(at.child("verbs").required("verbs must contain at least one value"));
        }
        let non_resource = list("nonResourceURLs") > 0;
        if non_resource {
            if !cluster_scoped {
                causes.push(at.child("nonResourceURLs").invalid(
                    rule.get("nonResourceURLs").unwrap_or(&Value::Null),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if list("apiGroups") > 0 || list("resources") > 0 || list("resourceNames") > 0 {
                causes.push(at.child("nonResourceURLs").invalid(
                    rule.get("nonResourceURLs").unwrap_or(&Value::Null),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
        } else {
            if list("apiGroups") == 0 {
                causes.push(at.child("apiGroups").required("resource rules must supply at least one api group"));
            }
            if list("resources") == 0 {
                causes.push(at.child("resources").required("resource rules must supply at least one resource"));
            }
        }
    }
    causes
}

fn binding(object: &serde_json::Map<String, Value>, cluster_scoped: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let null = Value::Null;
    let role = object.get("roleRef").unwrap_or(&null);
    let at = Field::new("roleRef");
    let kinds: &[&str] = if cluster_scoped { &["ClusterRole"] } else { &["Role", "ClusterRole"] };
    match role.get("kind") {
        Some(kind) if kind.as_str().is_some_and(|k| kinds.contains(&k)) => {}
        Some(kind) => causes.push(at.child("kind").not_supported(kind, kinds)),
        None => causes.push(at.child("kind").not_supported(&Value::String(String::new()), kinds)),
    }
    match role.get("apiGroup") {
        Some(group) if group.as_str() == Some(RBAC_GROUP) => {}
        other => causes
            .push(at.child("apiGroup").not_supported(other.unwrap_or(&Value::String(String::new())), &[RBAC_GROUP])),
    }
    if role.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
        causes.push(at.child("name").required(""));
    }
    const SUBJECT_KINDS: &[&str] = &["ServiceAccount", "User", "Group"];
    for (index, subject) in object.get("subjects").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = Field::new("subjects").index(index);
        let text = |key: &str| subject.get(key).and_then(Value::as_str).filter(|v| !v.is_empty());
        if text("name").is_none() {
            causes.push(at.child("name").required(""));
        }
        match text("kind") {
            Some("ServiceAccount") => {
                if cluster_scoped && text("namespace").is_none() {
                    causes.push(at.child("namespace").required(""));
                }
            }
            Some("User" | "Group") => {}
            _ => causes.push(
                at.child("kind")
                    .not_supported(subject.get("kind").unwrap_or(&Value::String(String::new())), SUBJECT_KINDS),
            ),
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(kind: &str, object: Value) -> Vec<String> {
        super::super::problems(|o| validate(kind, o), object)
    }

    #[test]
    fn rbac_objects_as_upstream_validates_them() {
        let role = json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
        assert_eq!(problems("Role", role), Vec::<String>::new());
        assert_eq!(
            problems("Role", json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}]})),
            ["rules[0].verbs: Required value: verbs must contain at least one value"]
        );
        assert_eq!(
            problems("ClusterRole", json!({"rules": [{"resources": ["pods"], "verbs": ["get"]}]})),
            ["rules[0].apiGroups: Required value: resource rules must supply at least one api group"]
        );
        assert_eq!(
            problems("ClusterRole", json!({"rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]})),
            Vec::<String>::new()
        );
        assert_eq!(problems("Role", json!({"rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]})).len(), 1);
        let binding = json!({"roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "bot"}, {"kind": "User", "name": "alice", "apiGroup": RBAC_GROUP}]});
        assert_eq!(problems("RoleBinding", binding), Vec::<String>::new());
        assert_eq!(
            problems("ClusterRoleBinding", json!({"roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"},
                "subjects": [{"kind": "Robot", "name": "x"}, {"kind": "ServiceAccount", "name": "bot"}]})),
            [
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[0].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
                "subjects[1].namespace: Required value",
            ]
        );
    }
}
