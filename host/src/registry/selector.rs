//! Label selectors (`-l app=web,tier!=db,env in (a,b),!legacy`) and field selectors
//! (`metadata.name=x,metadata.namespace!=y`): parsing Kubernetes' string forms and
//! matching objects. Pure; no I/O.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parse Kubernetes' string form; the error says what is wrong where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// A `LabelSelector` object (`matchLabels`, `matchExpressions` with In, NotIn, Exists,
    /// DoesNotExist), as `metav1.LabelSelectorAsSelector` reads it.
    pub fn from_object(selector: &Value) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for (key, value) in selector.get("matchLabels").and_then(Value::as_object).into_iter().flatten() {
            requirements.push(Requirement::Equals(key.clone(), value.as_str().unwrap_or_default().to_string()));
        }
        for expression in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key = expression.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
            let values: BTreeSet<String> = expression
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            requirements.push(match expression.get("operator").and_then(Value::as_str) {
                Some("In") => Requirement::In(key, values),
                Some("NotIn") => Requirement::NotIn(key, values),
                Some("Exists") => Requirement::Exists(key),
                Some("DoesNotExist") => Requirement::NotExists(key),
                other => return Err(format!("{:?} is not a valid label selector operator", other.unwrap_or_default())),
            });
        }
        Ok(Self { requirements })
    }

    /// Whether an object with these `metadata.labels` is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.matches_with(|key| labels.and_then(|l| l.get(key)).and_then(Value::as_str))
    }

    /// Whether labels looked up by `get` are selected.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, set) => get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => get(k).is_none_or(|v| !set.contains(v)),
        })
    }

    /// Whether an object (a JSON document) is selected.
    pub fn matches_object(&self, object: &Map<String, Value>) -> bool {
        self.is_empty() || self.matches(object.get("metadata").and_then(|m| m.get("labels")).and_then(Value::as_object))
    }
}

/// The fields every resource can be selected by.
const SELECTABLE_FIELDS: [&str; 2] = ["metadata.name", "metadata.namespace"];

/// The fields a kind can also be selected by, as kube-apiserver's strategies declare them
/// (`GetAttrs`); `source` on an Event is `source.component`.
fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "Secret" => &["type"],
        "ReplicaSet" | "ReplicationController" => &["status.replicas"],
        "Job" => &["status.successful"],
        "CertificateSigningRequest" => &["spec.signerName"],
        _ => &[],
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, comma separated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (field, value, equal)
    terms: Vec<(&'static str, String, bool)>,
}

impl FieldSelector {
    /// A selector over the fields every kind has (name, namespace).
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_for("", text)
    }

    /// A selector over the fields `kind` can be selected by.
    pub fn parse_for(kind: &str, text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(format!("invalid field selector {part:?}: expected field=value or field!=value"));
            };
            let field = SELECTABLE_FIELDS
                .iter()
                .chain(kind_fields(kind))
                .copied()
                .find(|known| *known == field.trim())
                .ok_or_else(|| format!("field label not supported: {}", field.trim()))?;
            terms.push((field, value.trim().to_string(), equal));
        }
        Ok(Self { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches_object(&self, object: &Map<String, Value>) -> bool {
        self.terms.iter().all(|(field, value, equal)| {
            let path = if *field == "source" { "source.component" } else { field };
            let mut at = path.split('.');
            let first = at.next().and_then(|key| object.get(key));
            let found = at.try_fold(first, |v, key| Some(v.and_then(|v| v.get(key)))).flatten();
            // Absent reads as "" (and false for a bool), as Kubernetes' field sets do.
            let actual = match found {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ if path == "spec.unschedulable" || path == "spec.hostNetwork" => "false".into(),
                _ => String::new(),
            };
            (actual == *value) == *equal
        })
    }
}

/// Split at commas that are not inside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced parentheses in label selector {text:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in label selector {text:?}"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(check_key(key.trim())?));
    }
    for (word, make) in [
        (" notin ", Requirement::NotIn as fn(String, BTreeSet<String>) -> Requirement),
        (" in ", Requirement::In as fn(String, BTreeSet<String>) -> Requirement),
    ] {
        if let Some((key, set)) = part.split_once(word) {
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("{part:?}: the values of '{}' must be in parentheses", word.trim()))?;
            let values = inner.split(',').map(|v| check_value(v.trim())).collect::<Result<BTreeSet<_>, _>>()?;
            return Ok(make(check_key(key.trim())?, values));
        }
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(check_key(key.trim())?, check_value(value.trim())?));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(check_key(key.trim())?, check_value(value.trim())?));
    }
    Ok(Requirement::Exists(check_key(part)?))
}

fn check_key(key: &str) -> Result<String, String> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 63 || !key.chars().all(|c| valid(c) || c == '/') {
        return Err(format!("invalid label key {key:?}: a qualified name of alphanumerics, '-', '_' or '.'"));
    }
    Ok(key.to_string())
}

fn check_value(value: &str) -> Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if value.len() > 63 || !value.chars().all(valid) {
        return Err(format!("invalid label value {value:?}: at most 63 alphanumerics, '-', '_' or '.'"));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect()
    }

    /// (selector, labels, expected) as Kubernetes documents them.
    #[test]
    fn selectors_match_as_kubernetes_documents() {
        let web = labels(&[("app", "web"), ("env", "prod")]);
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("tier!=db", true),
            ("app", true),
            ("!app", false),
            ("!tier", true),
            ("env in (prod, staging)", true),
            ("env notin (prod)", false),
            ("tier notin (db)", true),
            ("tier in (db)", false),
            ("app=web,env=prod", true),
            ("app=web,env=dev", false),
            ("app=web, env in (dev,prod), !legacy", true),
        ];
        for (selector, expected) in cases {
            let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
            assert_eq!(parsed.matches(Some(&web)), *expected, "{selector:?}");
        }
        assert!(!LabelSelector::parse("app").unwrap().matches(None));
    }

    #[test]
    fn field_selectors_match_name_and_namespace() {
        let object: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "a", "namespace": "ns"}})).unwrap();
        for (selector, expected) in [
            ("metadata.name=a", true),
            ("metadata.name==b", false),
            ("metadata.name!=b,metadata.namespace=ns", true),
            ("metadata.namespace!=ns", false),
            ("", true),
        ] {
            assert_eq!(FieldSelector::parse(selector).unwrap().matches_object(&object), expected, "{selector}");
        }
        assert!(FieldSelector::parse("spec.nodeName=x").unwrap_err().contains("not supported"));
        assert!(FieldSelector::parse("metadata.name").is_err());
        let pod: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}))
        .unwrap();
        let pods = |s: &str| FieldSelector::parse_for("Pod", s).unwrap().matches_object(&pod);
        assert!(pods("spec.nodeName=n1,status.phase!=Pending"));
        assert!(!pods("spec.nodeName="), "unscheduled pods are selected by an empty nodeName");
        assert!(pods("spec.hostNetwork=false"), "an absent bool is false");
        assert!(FieldSelector::parse_for("ConfigMap", "spec.nodeName=n1").is_err());
        let event: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "involvedObject": {"kind": "Pod", "name": "a"}, "reason": "Scheduled", "source": {"component": "default-scheduler"}}))
        .unwrap();
        let events = |s: &str| FieldSelector::parse_for("Event", s).unwrap().matches_object(&event);
        assert!(events("involvedObject.name=a,involvedObject.kind=Pod,reason=Scheduled,source=default-scheduler"));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in ["env in prod", "env in (a", "a=b c", "=x", "x=(", "a b"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?}");
        }
    }
}
