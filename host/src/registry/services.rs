//! Services: their defaults, and the cluster IPs and node ports they hold. An address is
//! held by an object in the store, created atomically (an `IPAddress` named by the IP, as
//! kube-apiserver 1.33 does; a node port by a key of its own), so every API server on one
//! etcd allocates without double-booking. Allocation happens when a Service is written;
//! what a write no longer needs is released after it, and everything on removal.
//!
//! [`Services`] is the Service strategy: defaults in `prepare`, the claims made in its
//! begin hooks (settled by the generic store once the Service is written or refused) and
//! released in its after-delete hook. IPAddresses are written through the registry's own
//! create path; node ports, which have no API object, as keys under [`NODE_PORT_PREFIX`].

use std::net::Ipv4Addr;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::object::ObjectExt;
use super::resource::{Hook, Reservation, Reserved};
use super::{ApiResource, Cause, DeleteOptions, Error, NameRule, Object, Registry, Result, Strategy, WriteOptions};
use crate::storage::StoreError;

/// The service CIDR (kube-apiserver's default `--service-cluster-ip-range`).
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 12);
/// The `kubernetes` Service's cluster IP: the first of the range.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// kube-apiserver's default `--service-node-port-range`.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Where node-port claims live (one key per port held).
const NODE_PORT_PREFIX: &str = "/registry/wasmkube.io/nodeports/";

/// Who writes the IPAddress objects (managedFields), as kube-apiserver's allocator.
const ALLOCATOR: &str = "kube-apiserver";

/// The strategy of `services`.
pub(super) struct Services(pub ApiResource);

#[async_trait::async_trait]
impl Strategy for Services {
    fn resource(&self) -> &ApiResource {
        &self.0
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Label1035
    }

    /// A Service's status is the load balancer's to write.
    fn prepare_for_create(&self, object: &mut Object) {
        object.remove("status");
    }

    fn validate(&self, object: &Object) -> Vec<Cause> {
        super::validate::service::validate(object)
    }

    async fn begin_create(&self, hook: &Hook<'_>, object: &mut Object) -> Result<Reservation> {
        let needs = prepare(object, None)?;
        if hook.dry_run || needs.wanted.is_empty() {
            return Ok(Reservation::none());
        }
        // An existing Service is AlreadyExists, not a clash over its own addresses.
        if hook.registry.stored(hook.key).await?.is_some() {
            return Err(Error::AlreadyExists { resource: self.0.qualified(), name: hook.name.into() });
        }
        let claimed = claim_all(hook, &needs.wanted, object).await?;
        Ok(Reservation::new(Claims { claimed, released_on_commit: Vec::new() }))
    }

    async fn begin_update(&self, hook: &Hook<'_>, object: &mut Object, old: &Object) -> Result<Reservation> {
        let needs = prepare(object, Some(old))?;
        if hook.dry_run || (needs.wanted.is_empty() && needs.released.is_empty()) {
            return Ok(Reservation::none());
        }
        let claimed = claim_all(hook, &needs.wanted, object).await?;
        Ok(Reservation::new(Claims { claimed, released_on_commit: needs.released }))
    }

    async fn after_delete(&self, registry: &Registry, object: &Object) {
        release_all(registry, &claims(object)).await;
    }
}

/// What a Service write holds: the claims it made (released if the write fails) and the
/// ones its old version held that it no longer needs (released once it is written).
struct Claims {
    claimed: Vec<Claim>,
    released_on_commit: Vec<Claim>,
}

#[async_trait::async_trait]
impl Reserved for Claims {
    async fn commit(self: Box<Self>, registry: &Registry) {
        release_all(registry, &self.released_on_commit).await;
    }

    async fn release(self: Box<Self>, registry: &Registry) {
        release_all(registry, &self.claimed).await;
    }
}

/// Claim every address in `wanted` for the service, recording each in it; all or nothing.
async fn claim_all(hook: &Hook<'_>, wanted: &[Want], service: &mut Object) -> Result<Vec<Claim>> {
    let mut claimed = Vec::new();
    for want in wanted {
        match claim_one(hook, want).await {
            Ok(claim) => {
                record(service, want, &claim);
                claimed.push(claim);
            }
            Err(e) => {
                release_all(hook.registry, &claimed).await;
                return Err(e);
            }
        }
    }
    Ok(claimed)
}

/// Whether `claim` was taken (false: someone holds it already).
async fn take(hook: &Hook<'_>, claim: &Claim) -> Result<bool> {
    let (namespace, name) = (hook.namespace.unwrap_or_default(), hook.name);
    let registry = hook.registry;
    match claim {
        Claim::ClusterIp(ip) => {
            let addresses = ip_addresses(registry)?;
            let options = WriteOptions { field_manager: Some(ALLOCATOR.into()), ..WriteOptions::default() };
            match registry.create(&addresses, None, ip_address(*ip, namespace, name), &options).await {
                Ok(_) => Ok(true),
                Err(Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        }
        Claim::NodePort(port) => {
            let key = Bytes::from(format!("{NODE_PORT_PREFIX}{port}"));
            let holder = Bytes::from(json!({"namespace": namespace, "name": name}).to_string());
            match registry.store.create(key, holder).await {
                Ok(_) => Ok(true),
                Err(StoreError::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(Error::from_store(e)),
            }
        }
    }
}

async fn claim_one(hook: &Hook<'_>, want: &Want) -> Result<Claim> {
    use rand::Rng;
    let start: u32 = rand::rng().random();
    for attempt in 0..attempts(want) {
        let Some(claim) = candidate(want, attempt, start) else { break };
        if take(hook, &claim).await? {
            return Ok(claim);
        }
        if let Want::Exactly(claim) = want {
            let (field, what) = match claim {
                Claim::ClusterIp(ip) => (
                    "spec.clusterIPs[0]",
                    format!("{ip:?}: failed to allocate IP {ip}: provided IP is already allocated"),
                ),
                Claim::NodePort(port) => {
                    ("spec.ports[].nodePort", format!("{port}: provided port is already allocated"))
                }
            };
            return Err(Error::Invalid {
                kind: "Service".into(),
                name: hook.name.into(),
                causes: vec![Cause::invalid(field, format!("Invalid value: {what}"))],
            });
        }
    }
    Err(Error::Internal(format!(
        "failed to allocate {} for service {}/{}: the range is full",
        match want {
            Want::AnyNodePort(_) => "a node port",
            _ => "a cluster IP",
        },
        hook.namespace.unwrap_or_default(),
        hook.name
    )))
}

/// Give every claim back; one that cannot be is logged and stays held (never double-booked).
async fn release_all(registry: &Registry, claims: &[Claim]) {
    for claim in claims {
        let released = match claim {
            Claim::ClusterIp(ip) => match ip_addresses(registry) {
                Ok(addresses) => {
                    match registry.delete(&addresses, None, &ip.to_string(), &DeleteOptions::default()).await {
                        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            },
            Claim::NodePort(port) => {
                match registry.store.delete(Bytes::from(format!("{NODE_PORT_PREFIX}{port}")), None).await {
                    Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        if let Err(error) = released {
            tracing::warn!(?claim, %error, "cannot release a service address; it stays held");
        }
    }
}

fn ip_addresses(registry: &Registry) -> Result<super::Resource> {
    registry
        .resource("networking.k8s.io", "v1", "ipaddresses")
        .ok_or_else(|| Error::Internal("ipaddresses are not served".into()))
}

/// One address a Service holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Claim {
    ClusterIp(Ipv4Addr),
    NodePort(u16),
}

/// What a Service written over `old` needs: claims it must hold that `old` did not, and
/// claims `old` held that it no longer needs.
#[derive(Debug, Default)]
struct Needs {
    /// Addresses to claim; `None` in a cluster IP or node port slot asks for any free one.
    wanted: Vec<Want>,
    released: Vec<Claim>,
}

/// A claim to make: a specific address, or any free one (filled in at `path`).
#[derive(Debug)]
enum Want {
    Exactly(Claim),
    AnyClusterIp,
    /// Any node port for the port at this index of `spec.ports`.
    AnyNodePort(usize),
}

fn str_at<'a>(object: &'a Object, path: &[&str]) -> Option<&'a str> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(object.get(*first)?, |v, k| v.get(k))?.as_str()
}

fn in_cidr(ip: Ipv4Addr) -> bool {
    let (base, bits) = SERVICE_CIDR;
    let mask = u32::MAX << (32 - bits);
    u32::from(ip) & mask == u32::from(base)
}

/// Fill a Service's defaults (type, protocols, target ports, policies), keep what `old`
/// allocated where the client left it out, and say what must be claimed and released.
fn prepare(service: &mut Object, old: Option<&Object>) -> Result<Needs> {
    let name = service.metadata().get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let invalid = |field: &str, message: String| Error::Invalid {
        kind: "Service".into(),
        name: name.clone(),
        causes: vec![Cause::invalid(field, message)],
    };
    let spec = match service.entry("spec").or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(spec) => spec,
        _ => return Err(invalid("spec", "must be an object".into())),
    };
    let kind = spec.get("type").and_then(Value::as_str).filter(|t| !t.is_empty()).unwrap_or("ClusterIP").to_string();
    if !matches!(kind.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
        return Err(invalid(
            "spec.type",
            format!("Unsupported value: {kind:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        ));
    }
    spec.insert("type".into(), Value::String(kind.clone()));
    spec.entry("sessionAffinity").or_insert_with(|| json!("None"));
    let old_spec = old.and_then(|o| o.get("spec"));
    let mut needs = Needs::default();

    // Cluster IP.
    let old_ip = old_spec.and_then(|s| s.get("clusterIP")).and_then(Value::as_str).filter(|ip| !ip.is_empty());
    if kind == "ExternalName" {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    } else {
        spec.entry("internalTrafficPolicy").or_insert_with(|| json!("Cluster"));
        spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert_with(|| json!("SingleStack"));
        let given = spec.get("clusterIP").and_then(Value::as_str).filter(|ip| !ip.is_empty()).map(String::from);
        match (given, old_ip) {
            (None, Some(old_ip)) => {
                spec.insert("clusterIP".into(), json!(old_ip));
                spec.insert("clusterIPs".into(), json!([old_ip]));
            }
            (Some(given), Some(old_ip)) if given != old_ip => {
                return Err(invalid(
                    "spec.clusterIPs[0]",
                    format!("Invalid value: {given:?}: may not change once set"),
                ));
            }
            (Some(_), Some(_)) => {}
            (Some(given), None) if given == "None" => {
                spec.insert("clusterIPs".into(), json!(["None"]));
            }
            (Some(given), None) => {
                let ip: Ipv4Addr = given.parse().map_err(|_| {
                    invalid("spec.clusterIPs[0]", format!("Invalid value: {given:?}: must be a valid IP address"))
                })?;
                if !in_cidr(ip) {
                    return Err(invalid(
                        "spec.clusterIPs[0]",
                        format!("Invalid value: {given:?}: failed to allocate IP {given}: the provided IP ({given}) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
                    ));
                }
                spec.insert("clusterIPs".into(), json!([given]));
                needs.wanted.push(Want::Exactly(Claim::ClusterIp(ip)));
            }
            (None, None) => needs.wanted.push(Want::AnyClusterIp),
        }
    }
    if let Some(old_ip) = old_ip.and_then(|ip| ip.parse::<Ipv4Addr>().ok()) {
        if kind == "ExternalName" {
            needs.released.push(Claim::ClusterIp(old_ip));
        }
    }

    // Ports: protocol and targetPort defaults, node ports for NodePort and LoadBalancer.
    let wants_node_ports = matches!(kind.as_str(), "NodePort" | "LoadBalancer");
    if wants_node_ports {
        spec.entry("externalTrafficPolicy").or_insert_with(|| json!("Cluster"));
    } else {
        spec.remove("externalTrafficPolicy");
    }
    let old_ports: Vec<(i64, String, u16)> = old_spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let node_port = p.get("nodePort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok())?;
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string();
            Some((p.get("port").and_then(Value::as_i64).unwrap_or(0), protocol, node_port))
        })
        .collect();
    let mut kept = Vec::new();
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for (index, port) in ports.iter_mut().enumerate() {
            let Value::Object(port) = port else {
                return Err(invalid(&format!("spec.ports[{index}]"), "must be an object".into()));
            };
            port.entry("protocol").or_insert_with(|| json!("TCP"));
            let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&number) {
                return Err(invalid(
                    &format!("spec.ports[{index}].port"),
                    format!("Invalid value: {number}: must be between 1 and 65535, inclusive"),
                ));
            }
            port.entry("targetPort").or_insert_with(|| json!(number));
            if !wants_node_ports {
                port.remove("nodePort");
                continue;
            }
            let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string();
            match port.get("nodePort").and_then(Value::as_u64) {
                Some(node_port) => {
                    let node_port = u16::try_from(node_port).ok().filter(|p| NODE_PORTS.contains(p)).ok_or_else(|| {
                        invalid(
                            &format!("spec.ports[{index}].nodePort"),
                            format!("Invalid value: {node_port}: provided port is not in the valid range. The range of valid ports is 30000-32767"),
                        )
                    })?;
                    if !old_ports.iter().any(|(_, _, held)| *held == node_port) {
                        needs.wanted.push(Want::Exactly(Claim::NodePort(node_port)));
                    }
                    kept.push(node_port);
                }
                None => match old_ports.iter().find(|(p, proto, _)| *p == number && *proto == protocol) {
                    Some((_, _, held)) => {
                        port.insert("nodePort".into(), json!(held));
                        kept.push(*held);
                    }
                    None => needs.wanted.push(Want::AnyNodePort(index)),
                },
            }
        }
    }
    needs.released.extend(
        old_ports.iter().filter(|(_, _, held)| !kept.contains(held)).map(|(_, _, held)| Claim::NodePort(*held)),
    );
    Ok(needs)
}

/// Every address `service` holds (what to release when it goes).
fn claims(service: &Object) -> Vec<Claim> {
    let mut claims = Vec::new();
    if let Some(ip) = str_at(service, &["spec", "clusterIP"]).and_then(|ip| ip.parse().ok()) {
        claims.push(Claim::ClusterIp(ip));
    }
    for port in service.get("spec").and_then(|s| s.get("ports")).and_then(Value::as_array).into_iter().flatten() {
        if let Some(node_port) = port.get("nodePort").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()) {
            claims.push(Claim::NodePort(node_port));
        }
    }
    claims
}

/// Record a claim in the Service: its cluster IP, or a port's node port.
fn record(service: &mut Object, want: &Want, claim: &Claim) {
    let Some(Value::Object(spec)) = service.get_mut("spec") else { return };
    match (want, claim) {
        (Want::AnyClusterIp, Claim::ClusterIp(ip)) => {
            spec.insert("clusterIP".into(), json!(ip.to_string()));
            spec.insert("clusterIPs".into(), json!([ip.to_string()]));
        }
        (Want::AnyNodePort(index), Claim::NodePort(port)) => {
            if let Some(Value::Object(entry)) = spec.get_mut("ports").and_then(|p| p.get_mut(*index)) {
                entry.insert("nodePort".into(), json!(port));
            }
        }
        _ => {}
    }
}

/// A random candidate for `want` (attempt counts up, so later tries scan on from it).
fn candidate(want: &Want, attempt: u32, start: u32) -> Option<Claim> {
    match want {
        Want::Exactly(claim) => (attempt == 0).then(|| claim.clone()),
        Want::AnyClusterIp => {
            let (base, bits) = SERVICE_CIDR;
            let size = 1u32 << (32 - bits);
            // Skip the network address and the kubernetes Service's address.
            let offset = 2 + (start.wrapping_add(attempt)) % (size - 3);
            Some(Claim::ClusterIp(Ipv4Addr::from(u32::from(base) + offset)))
        }
        Want::AnyNodePort(_) => {
            let size = u32::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1;
            let port = *NODE_PORTS.start() as u32 + (start.wrapping_add(attempt)) % size;
            u16::try_from(port).ok().map(Claim::NodePort)
        }
    }
}

/// How many candidates to try before calling a range full.
fn attempts(want: &Want) -> u32 {
    match want {
        Want::Exactly(_) => 1,
        Want::AnyClusterIp => 256,
        Want::AnyNodePort(_) => u32::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1,
    }
}

/// The `IPAddress` object that holds `ip` for `namespace/name`.
fn ip_address(ip: Ipv4Addr, namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip.to_string(),
            "labels": {
                "ipaddress.kubernetes.io/ip-family": "IPv4",
                "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
            },
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": namespace, "name": name}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(value: Value) -> Object {
        serde_json::from_value(value).expect("object")
    }

    #[test]
    fn a_new_service_gets_defaults_and_asks_for_addresses() {
        let mut svc =
            service(json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}));
        let needs = prepare(&mut svc, None).expect("valid");
        assert!(matches!(needs.wanted.as_slice(), [Want::AnyClusterIp, Want::AnyNodePort(0)]), "{needs:?}");
        assert_eq!(svc["spec"]["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    }

    #[test]
    fn an_update_keeps_what_was_allocated_and_releases_what_it_drops() {
        let old = service(json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.9",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}}));
        let mut same =
            service(json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}));
        let needs = prepare(&mut same, Some(&old)).expect("valid");
        assert!(needs.wanted.is_empty() && needs.released.is_empty(), "{needs:?}");
        assert_eq!(same["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(same["spec"]["ports"][0]["nodePort"], 30001);
        let mut cluster_ip = service(json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}));
        let needs = prepare(&mut cluster_ip, Some(&old)).expect("valid");
        assert_eq!(needs.released, [Claim::NodePort(30001)]);
        let mut moved = service(json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.96.0.10"}}));
        assert!(prepare(&mut moved, Some(&old)).is_err(), "a cluster IP may not change");
    }

    #[test]
    fn addresses_outside_the_ranges_are_refused() {
        let mut svc = service(json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "192.168.0.1"}}));
        assert!(prepare(&mut svc, None).is_err());
        let mut svc = service(
            json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 1, "nodePort": 80}]}}),
        );
        assert!(prepare(&mut svc, None).is_err());
        for attempt in 0..1000 {
            match candidate(&Want::AnyClusterIp, attempt, u32::MAX - 3) {
                Some(Claim::ClusterIp(ip)) => assert!(in_cidr(ip) && ip != KUBERNETES_SERVICE_IP, "{ip}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
