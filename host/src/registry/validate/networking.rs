//! The networking kinds' own rules (upstream's `networking/validation`, what a proxy or an
//! ingress controller relies on): an Ingress's hosts, paths and backends; an IngressClass's
//! controller; a NetworkPolicy's selectors, ports, peers and policy types. Also the
//! Namespace's spec finalizers, which sit with no other kind.

use serde_json::Value;

use super::{content, text, Field};
use crate::registry::{Cause, LabelSelector};

const PATH_TYPES: &[&str] = &["Exact", "Prefix", "ImplementationSpecific"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const POLICY_TYPES: &[&str] = &["Ingress", "Egress"];

/// Every problem of networking `kind`'s object; other kinds have none here.
pub(in crate::registry) fn validate(kind: &str, object: &serde_json::Map<String, Value>) -> Vec<Cause> {
    let null = Value::Null;
    let spec = object.get("spec").unwrap_or(&null);
    let at = Field::new("spec");
    match kind {
        "Ingress" => ingress(spec, &at),
        "IngressClass" => ingress_class(spec, &at),
        "NetworkPolicy" => network_policy(spec, &at),
        _ => Vec::new(),
    }
}

fn items<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = (usize, &'a Value)> {
    value.get(key).and_then(Value::as_array).into_iter().flatten().enumerate()
}

fn ingress(spec: &Value, at: &Field) -> Vec<Cause> {
    let mut causes = Vec::new();
    let rules = spec.get("rules").and_then(Value::as_array).filter(|r| !r.is_empty());
    let default_backend = spec.get("defaultBackend").filter(|b| !b.is_null());
    if rules.is_none() && default_backend.is_none() {
        causes.push(at.invalid(&Value::String(String::new()), "either `defaultBackend` or `rules` must be specified"));
    }
    if let Some(backend) = default_backend {
        causes.extend(backend_problems(backend, &at.child("defaultBackend")));
    }
    for (index, rule) in items(spec, "rules") {
        let at = at.child("rules").index(index);
        let host = text(rule, "host");
        if !host.is_empty() {
            let (checked, wildcard) = match host.strip_prefix("*.") {
                Some(rest) => (rest, true),
                None => (host, false),
            };
            let problems = content::dns1123_subdomain(checked);
            if !problems.is_empty() || (!wildcard && host.contains('*')) {
                let problem = if wildcard {
                    "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()
                } else {
                    problems
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| "must not contain '*' except as a leading '*.'".into())
                };
                causes.push(at.child("host").invalid(&Value::String(host.into()), &problem));
            }
        }
        let Some(http) = rule.get("http").filter(|h| !h.is_null()) else { continue };
        let at = at.child("http");
        let paths = http.get("paths").and_then(Value::as_array);
        if paths.is_none_or(|p| p.is_empty()) {
            causes.push(at.child("paths").required(""));
        }
        for (index, path) in items(http, "paths") {
            let at = at.child("paths").index(index);
            match path.get("pathType").filter(|t| !t.is_null()) {
                None => causes.push(at.child("pathType").required("pathType must be specified")),
                Some(kind) if !kind.as_str().is_some_and(|k| PATH_TYPES.contains(&k)) => {
                    causes.push(at.child("pathType").not_supported(kind, PATH_TYPES))
                }
                Some(_) => {}
            }
            let value = text(path, "path");
            if !value.is_empty() && !value.starts_with('/') {
                causes.push(at.child("path").invalid(&Value::String(value.into()), "must be an absolute path"));
            } else if value.is_empty() && path.get("pathType").and_then(Value::as_str) != Some("ImplementationSpecific")
            {
                causes.push(at.child("path").invalid(&Value::String(String::new()), "must be an absolute path"));
            }
            match path.get("backend").filter(|b| !b.is_null()) {
                Some(backend) => causes.extend(backend_problems(backend, &at.child("backend"))),
                None => causes.push(at.child("backend").required("")),
            }
        }
    }
    causes
}

/// An IngressBackend: a Service (by name, with a port by name or number) or a resource.
fn backend_problems(backend: &Value, at: &Field) -> Vec<Cause> {
    let mut causes = Vec::new();
    let service = backend.get("service").filter(|s| !s.is_null());
    let resource = backend.get("resource").filter(|r| !r.is_null());
    match (service, resource) {
        (Some(_), Some(_)) => causes.push(at.invalid(backend, "cannot set both service and resource backends")),
        (None, None) => causes.push(at.invalid(backend, "one backend (service or resource) must be specified")),
        (None, Some(resource)) => {
            for key in ["kind", "name"] {
                if text(resource, key).is_empty() {
                    causes.push(at.child("resource").child(key).required(""));
                }
            }
        }
        (Some(service), None) => {
            let at = at.child("service");
            let name = text(service, "name");
            if name.is_empty() {
                causes.push(at.child("name").required(""));
            } else {
                causes.extend(at.child("name").each_invalid(name, content::dns1035_label(name)));
            }
            let port = service.get("port").filter(|p| !p.is_null());
            let named = port.map(|p| text(p, "name")).filter(|n| !n.is_empty());
            let number = port.and_then(|p| p.get("number")).and_then(Value::as_i64).filter(|n| *n != 0);
            match (named, number) {
                (Some(_), Some(_)) => causes.push(
                    at.child("port").invalid(port.unwrap_or(&Value::Null), "cannot set both port name & port number"),
                ),
                (Some(name), None) => {
                    causes.extend(at.child("port").child("name").each_invalid(name, super::pod::port_name(name)))
                }
                (None, Some(number)) if !(1..=65535).contains(&number) => causes.push(
                    at.child("port")
                        .child("number")
                        .invalid(&Value::from(number), "must be between 1 and 65535, inclusive"),
                ),
                (None, Some(_)) => {}
                (None, None) => causes
                    .push(at.child("port").invalid(port.unwrap_or(&Value::Null), "port name or number is required")),
            }
        }
    }
    causes
}

fn ingress_class(spec: &Value, at: &Field) -> Vec<Cause> {
    let controller = text(spec, "controller");
    let at = at.child("controller");
    if controller.is_empty() {
        return vec![at.required("")];
    }
    let mut causes = Vec::new();
    if controller.len() > 250 {
        causes.push(at.too_long(250));
    }
    // A domain-prefixed path: `example.com/ingress-controller`.
    let (domain, path) = controller.split_once('/').unwrap_or((controller, ""));
    if !content::dns1123_subdomain(domain).is_empty() || path.is_empty() {
        causes.push(
            at.invalid(&Value::String(controller.into()), "must be a domain-prefixed path (such as \"acme.io/foo\")"),
        );
    }
    causes
}

fn network_policy(spec: &Value, at: &Field) -> Vec<Cause> {
    let mut causes = selector_problems(spec.get("podSelector"), &at.child("podSelector"));
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        for (index, rule) in items(spec, direction) {
            let at = at.child(direction).index(index);
            for (index, port) in items(rule, "ports") {
                causes.extend(port_problems(port, &at.child("ports").index(index)));
            }
            for (index, peer) in items(rule, peers) {
                causes.extend(peer_problems(peer, &at.child(peers).index(index)));
            }
        }
    }
    for (index, kind) in items(spec, "policyTypes") {
        if !kind.as_str().is_some_and(|k| POLICY_TYPES.contains(&k)) {
            causes.push(at.child("policyTypes").index(index).not_supported(kind, POLICY_TYPES));
        }
    }
    if spec.get("policyTypes").and_then(Value::as_array).is_some_and(|t| t.len() > POLICY_TYPES.len()) {
        causes.push(
            at.child("policyTypes")
                .invalid(spec.get("policyTypes").unwrap_or(&Value::Null), "may not specify more than two policyTypes"),
        );
    }
    causes
}

fn selector_problems(selector: Option<&Value>, at: &Field) -> Vec<Cause> {
    match selector.filter(|s| !s.is_null()) {
        Some(selector) => match LabelSelector::from_object(selector) {
            Ok(_) => Vec::new(),
            Err(problem) => vec![at.invalid(selector, &problem.to_string())],
        },
        None => Vec::new(),
    }
}

fn port_problems(port: &Value, at: &Field) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(protocol) = port.get("protocol").filter(|p| !p.is_null()) {
        if !protocol.as_str().is_some_and(|p| PROTOCOLS.contains(&p)) {
            causes.push(at.child("protocol").not_supported(protocol, PROTOCOLS));
        }
    }
    let number = port.get("port").and_then(Value::as_i64);
    match port.get("port") {
        Some(Value::Number(_)) => {
            if let Some(n) = number.filter(|n| !(1..=65535).contains(n)) {
                causes.push(at.child("port").invalid(&Value::from(n), "must be between 1 and 65535, inclusive"));
            }
        }
        Some(Value::String(name)) => causes.extend(at.child("port").each_invalid(name, super::pod::port_name(name))),
        _ => {}
    }
    if let Some(end) = port.get("endPort").and_then(Value::as_i64) {
        match number {
            None => causes.push(
                at.child("endPort").invalid(&Value::from(end), "may not be specified when `port` is non-numeric"),
            ),
            Some(start) if end < start => {
                causes.push(at.child("endPort").invalid(&Value::from(end), "must be greater than or equal to `port`"))
            }
            Some(_) => {}
        }
    }
    causes
}

fn peer_problems(peer: &Value, at: &Field) -> Vec<Cause> {
    let mut causes = selector_problems(peer.get("podSelector"), &at.child("podSelector"));
    causes.extend(selector_problems(peer.get("namespaceSelector"), &at.child("namespaceSelector")));
    let block = peer.get("ipBlock").filter(|b| !b.is_null());
    let selects = ["podSelector", "namespaceSelector"].iter().any(|k| peer.get(*k).is_some_and(|v| !v.is_null()));
    match (block, selects) {
        (None, false) => causes.push(at.required("must specify a peer")),
        (Some(_), true) => causes.push(at.forbidden("may not specify both ipBlock and another peer")),
        (Some(block), false) => {
            let at = at.child("ipBlock");
            let cidr = text(block, "cidr");
            match Cidr::parse(cidr) {
                Err(_) if cidr.is_empty() => causes.push(at.child("cidr").required("")),
                Err(_) => causes.push(at.child("cidr").invalid(
                    &Value::String(cidr.into()),
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                )),
                Ok(network) => {
                    for (index, except) in items(block, "except") {
                        let at = at.child("except").index(index);
                        let text = except.as_str().unwrap_or_default();
                        match Cidr::parse(text) {
                            Err(_) => causes.push(
                                at.invalid(except, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"),
                            ),
                            Ok(inner) if !network.strictly_contains(&inner) => {
                                causes.push(at.invalid(except, "must be a strict subset of `cidr`"))
                            }
                            Ok(_) => {}
                        }
                    }
                }
            }
        }
        (None, true) => {}
    }
    causes
}

/// An address range as `netip` would hold one (`10.0.0.0/8`, `2001:db8::/64`).
#[derive(PartialEq, Eq)]
struct Cidr {
    bits: u128,
    prefix: u8,
    v6: bool,
}

impl Cidr {
    fn parse(text: &str) -> Result<Self, ()> {
        let (address, prefix) = text.split_once('/').ok_or(())?;
        let prefix: u8 = prefix.parse().map_err(|_| ())?;
        let (bits, v6, width) = match address.parse::<std::net::IpAddr>().map_err(|_| ())? {
            std::net::IpAddr::V4(v4) => (u128::from(u32::from(v4)), false, 32u8),
            std::net::IpAddr::V6(v6) => (u128::from(v6), true, 128u8),
        };
        if prefix > width {
            return Err(());
        }
        // Held left-aligned, so both families compare the same way.
        Ok(Self { bits: bits << (128 - u32::from(width)), prefix, v6 })
    }

    fn mask(prefix: u8) -> u128 {
        if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(prefix))
        }
    }

    /// Whether `inner` is a smaller range inside this one.
    fn strictly_contains(&self, inner: &Cidr) -> bool {
        self.v6 == inner.v6
            && inner.prefix > self.prefix
            && inner.bits & Self::mask(self.prefix) == self.bits & Self::mask(self.prefix)
    }
}

/// A Namespace's spec finalizers are qualified names.
pub(in crate::registry) fn namespace(object: &serde_json::Map<String, Value>) -> Vec<Cause> {
    let finalizers = object.get("spec").and_then(|s| s.get("finalizers")).and_then(Value::as_array);
    let mut causes = Vec::new();
    for (index, finalizer) in finalizers.into_iter().flatten().enumerate() {
        let at = Field::new("spec").child("finalizers").index(index);
        let name = finalizer.as_str().unwrap_or_default();
        causes.extend(at.each_invalid(name, content::qualified_name(name)));
    }
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::problems;
    use super::*;

    fn check(kind: &str, spec: Value) -> Vec<String> {
        problems(|o| validate(kind, o), json!({"spec": spec}))
    }

    #[test]
    fn an_ingress_needs_a_backend_and_absolute_typed_paths() {
        assert_eq!(
            check("Ingress", json!({})),
            ["spec: Invalid value: \"\": either `defaultBackend` or `rules` must be specified"]
        );
        let good = json!({"rules": [{"host": "*.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]});
        assert!(check("Ingress", good).is_empty());
        let bad = json!({"rules": [{"host": "Bad_Host", "http": {"paths": [
            {"path": "api", "pathType": "Regex", "backend": {"service": {"name": "web", "port": {"number": 99999}}}}]}}]});
        let found = check("Ingress", bad);
        assert!(found[0].starts_with("spec.rules[0].host: Invalid value: \"Bad_Host\""), "{found:?}");
        assert!(found.contains(&"spec.rules[0].http.paths[0].pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"Prefix\", \"ImplementationSpecific\"".to_string()), "{found:?}");
        assert!(
            found.contains(
                &"spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path".to_string()
            ),
            "{found:?}"
        );
        assert!(found.contains(&"spec.rules[0].http.paths[0].backend.service.port.number: Invalid value: 99999: must be between 1 and 65535, inclusive".to_string()), "{found:?}");
    }

    #[test]
    fn an_ingress_class_names_a_domain_prefixed_controller() {
        assert_eq!(check("IngressClass", json!({})), ["spec.controller: Required value"]);
        assert!(check("IngressClass", json!({"controller": "example.com/ingress"})).is_empty());
        assert_eq!(check("IngressClass", json!({"controller": "nginx"})).len(), 1);
    }

    #[test]
    fn a_network_policy_has_valid_ports_peers_and_types() {
        let good = json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "127.0.0.0/8", "except": ["127.1.0.0/16"]}}],
            "ports": [{"protocol": "TCP", "port": 5432, "endPort": 5440}]}], "policyTypes": ["Ingress"]});
        assert!(check("NetworkPolicy", good).is_empty());
        let bad = json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
            "ingress": [{"from": [{}, {"ipBlock": {"cidr": "300.0.0.0/8"}}], "ports": [{"protocol": "ICMP", "port": 0, "endPort": 1}]}],
            "policyTypes": ["Sideways"]});
        let found = check("NetworkPolicy", bad);
        for expected in [
            "spec.ingress[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
            "spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ingress[0].from[0]: Required value: must specify a peer",
            "spec.ingress[0].from[1].ipBlock.cidr: Invalid value: \"300.0.0.0/8\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            "spec.policyTypes[0]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\"",
        ] {
            assert!(found.contains(&expected.to_string()), "{expected}\n{found:#?}");
        }
        assert!(found.iter().any(|f| f.starts_with("spec.podSelector: Invalid value")), "{found:?}");
    }

    #[test]
    fn namespace_finalizers_are_qualified_names() {
        assert!(problems(namespace, json!({"spec": {"finalizers": ["kubernetes", "example.com/x"]}})).is_empty());
        assert_eq!(problems(namespace, json!({"spec": {"finalizers": ["bad key!"]}})).len(), 1);
    }
}
