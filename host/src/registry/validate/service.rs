//! A Service's spec as upstream's `ValidateService` checks it, for what the service proxy
//! and DNS rely on: ports present (unless headless or ExternalName), named uniquely as DNS
//! labels when there are several, in range, with a known protocol and a target port that
//! is a number in range or a port name; a known type and session affinity; selector labels;
//! an ExternalName's name a DNS subdomain. Addresses are checked where they are claimed
//! (`services.rs`).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{content, Field};
use crate::registry::Cause;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const AFFINITIES: &[&str] = &["ClientIP", "None"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

pub(in crate::registry) fn validate(service: &serde_json::Map<String, Value>) -> Vec<Cause> {
    let at = Field::new("spec");
    let null = Value::Null;
    let spec = service.get("spec").unwrap_or(&null);
    let text = |key: &str| spec.get(key).and_then(Value::as_str);
    let mut causes = Vec::new();
    let kind = text("type").unwrap_or("ClusterIP");
    if let Some(given) = spec.get("type").filter(|t| !t.is_null()) {
        if !given.as_str().is_some_and(|t| TYPES.contains(&t)) {
            causes.push(at.child("type").not_supported(given, TYPES));
        }
    }
    if let Some(given) = spec.get("sessionAffinity").filter(|a| !a.is_null()) {
        if !given.as_str().is_some_and(|a| AFFINITIES.contains(&a)) {
            causes.push(at.child("sessionAffinity").not_supported(given, AFFINITIES));
        }
    }
    let headless = text("clusterIP") == Some("None");
    let ports = spec.get("ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if ports.is_empty() && !headless && kind != "ExternalName" {
        causes.push(at.child("ports").required(""));
    }
    let mut names = BTreeSet::new();
    for (index, port) in ports.iter().enumerate() {
        let at = at.child("ports").index(index);
        match port.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => causes.push(at.child("name").required("")),
            None => {}
            Some(name) => {
                causes.extend(at.child("name").each_invalid(name, content::dns1123_label(name)));
                if !names.insert(name.to_string()) {
                    causes.push(at.child("name").duplicate(&Value::String(name.into())));
                }
            }
        }
        match port.get("port").and_then(Value::as_i64) {
            None | Some(0) => causes.push(at.child("port").required("")),
            Some(number) if !(1..=65535).contains(&number) => {
                causes.push(at.child("port").invalid(&Value::from(number), "must be between 1 and 65535, inclusive"))
            }
            Some(_) => {}
        }
        if let Some(protocol) = port.get("protocol").filter(|p| !p.is_null()) {
            if !protocol.as_str().is_some_and(|p| PROTOCOLS.contains(&p)) {
                causes.push(at.child("protocol").not_supported(protocol, PROTOCOLS));
            }
        }
        match port.get("targetPort") {
            None | Some(Value::Null) => {}
            Some(Value::Number(number)) => match number.as_i64() {
                Some(0) => {}
                Some(n) if (1..=65535).contains(&n) => {}
                _ => causes.push(
                    at.child("targetPort")
                        .invalid(&Value::Number(number.clone()), "must be between 1 and 65535, inclusive"),
                ),
            },
            Some(Value::String(name)) if !name.is_empty() => {
                causes.extend(at.child("targetPort").each_invalid(name, super::pod::port_name(name)))
            }
            Some(_) => {}
        }
    }
    let selector = at.child("selector");
    for (key, value) in spec.get("selector").and_then(Value::as_object).into_iter().flatten() {
        causes.extend(selector.each_invalid(key, content::qualified_name(key)));
        if let Some(value) = value.as_str() {
            causes.extend(selector.each_invalid(value, content::label_value(value)));
        }
    }
    if kind == "ExternalName" {
        match text("externalName").filter(|n| !n.is_empty()) {
            None => causes.push(at.child("externalName").required("")),
            Some(name) => {
                let name = name.strip_suffix('.').unwrap_or(name);
                causes.extend(at.child("externalName").each_invalid(name, content::dns1123_subdomain(name)));
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(service: Value) -> Vec<String> {
        super::super::problems(validate, service)
    }

    #[test]
    fn services_as_upstream_validates_them() {
        let ok = json!({"spec": {"type": "NodePort", "selector": {"app": "web"}, "sessionAffinity": "None",
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                      {"name": "metrics", "port": 9090, "targetPort": 9090}]}});
        assert_eq!(problems(ok), Vec::<String>::new());
        assert_eq!(problems(json!({"spec": {"clusterIP": "None"}})), Vec::<String>::new(), "headless needs no ports");
        assert_eq!(problems(json!({"spec": {}})), ["spec.ports: Required value"]);
        assert_eq!(
            problems(json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}})),
            ["spec.ports[0].name: Required value", "spec.ports[1].name: Required value"]
        );
        assert_eq!(
            problems(json!({"spec": {"ports": [{"port": 70000}]}})),
            ["spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"]
        );
        assert_eq!(
            problems(json!({"spec": {"type": "Bogus", "ports": [{"port": 80}]}})),
            ["spec.type: Unsupported value: \"Bogus\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""]
        );
        assert_eq!(problems(json!({"spec": {"type": "ExternalName"}})), ["spec.externalName: Required value"]);
        assert_eq!(
            problems(json!({"spec": {"type": "ExternalName", "externalName": "db.example.com."}})),
            Vec::<String>::new()
        );
        assert_eq!(problems(json!({"spec": {"ports": [{"port": 80, "targetPort": "HTTP!"}]}})).len(), 2);
        assert_eq!(problems(json!({"spec": {"ports": [{"port": 80}], "selector": {"bad key!": "x"}}})).len(), 1);
    }
}
