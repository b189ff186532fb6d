//! `/version` and discovery (`/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//! `/apis/{group}/{version}`): what kubectl asks first. Everything is derived from the
//! registry's resources, so a resource served is a resource discovered.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::registry::{ApiResource as Resource, Registry};

/// The Kubernetes minor whose API wasmkube serves.
pub const KUBERNETES_VERSION: (&str, &str) = ("1", "33");

pub(super) async fn version() -> Json<Value> {
    let (major, minor) = KUBERNETES_VERSION;
    Json(json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{major}.{minor}.0+wasmkube-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    }))
}

/// The media type of aggregated discovery, which kubectl 1.30+ asks for first.
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The verbs of every stored resource.
const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// Every resource discovery lists: the registry's, the review resources, ComponentStatus
/// and the resource metrics.
fn served(registry: &Registry) -> Vec<Resource> {
    registry
        .resources()
        .iter()
        .map(|r| **r)
        .chain(super::reviews::REVIEWS.iter().copied())
        .chain([super::component_status::RESOURCE, super::resource_metrics::NODES, super::resource_metrics::PODS])
        .collect()
}

/// What a resource answers to: reviews are only created, ComponentStatus only read.
fn verbs_of(resource: &Resource) -> &'static [&'static str] {
    if super::reviews::REVIEWS.contains(resource) {
        &["create"]
    } else if *resource == super::component_status::RESOURCE {
        super::component_status::VERBS
    } else if *resource == super::resource_metrics::NODES || *resource == super::resource_metrics::PODS {
        super::resource_metrics::VERBS
    } else {
        &VERBS
    }
}

fn wants_aggregated(headers: &HeaderMap) -> bool {
    super::accepts(headers, |media| {
        media.contains("as=APIGroupDiscoveryList") && media.contains("v=v2") && !media.contains("v2beta1")
    })
}

fn aggregated(items: Vec<Value>) -> Response {
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    ([(header::CONTENT_TYPE, AGGREGATED)], Json(body)).into_response()
}

/// What a subresource answers with and which verbs it takes.
fn subresource_shape(resource: &Resource, sub: &str) -> (Value, &'static [&'static str]) {
    let own = json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
    let kind = |group: &str, version: &str, kind: &str| json!({"group": group, "version": version, "kind": kind});
    const READ_WRITE: &[&str] = &["get", "patch", "update"];
    match sub {
        "scale" => (kind("autoscaling", "v1", "Scale"), READ_WRITE),
        "binding" => (kind("", "v1", "Binding"), &["create"]),
        "eviction" => (kind("policy", "v1", "Eviction"), &["create"]),
        "finalize" => (own, &["update"]),
        "token" => (kind("authentication.k8s.io", "v1", "TokenRequest"), &["create"]),
        "log" => (kind("", "v1", "Pod"), &["get"]),
        "exec" | "attach" | "portforward" => {
            (kind("", "v1", &format!("{}{}Options", resource.kind, capitalized(sub))), &["create", "get"])
        }
        "proxy" => {
            (kind("", "v1", &format!("{}ProxyOptions", resource.kind)), &["create", "delete", "get", "patch", "update"])
        }
        _ => (own, READ_WRITE),
    }
}

fn capitalized(word: &str) -> String {
    match word {
        "portforward" => "PortForward".into(),
        _ => word[..1].to_uppercase() + &word[1..],
    }
}

/// One resource in an aggregated discovery document.
fn aggregated_resource(r: &Resource) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|sub| {
            let (kind, verbs) = subresource_shape(r, sub);
            json!({"subresource": sub, "responseKind": kind, "verbs": verbs})
        })
        .collect();
    let mut entry = json!({
        "resource": r.plural,
        "singularResource": r.singular,
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "verbs": verbs_of(r),
    });
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        entry["subresources"] = Value::Array(subresources);
    }
    entry
}

/// The versions of one group, most preferred first, each with its resources.
type Versions = Vec<(&'static str, Vec<Resource>)>;

/// The served resources grouped by API group (named groups only, or the core group only),
/// each group's versions in Kubernetes' order of preference.
fn groups(resources: impl IntoIterator<Item = Resource>, core: bool) -> BTreeMap<&'static str, Versions> {
    let mut groups: BTreeMap<&'static str, BTreeMap<&'static str, Vec<Resource>>> = BTreeMap::new();
    for resource in resources.into_iter().filter(|r| r.group.is_empty() == core) {
        groups.entry(resource.group).or_default().entry(resource.version).or_default().push(resource);
    }
    groups
        .into_iter()
        .map(|(group, versions)| {
            let mut versions: Versions = versions.into_iter().collect();
            versions.sort_by(|(a, _), (b, _)| version_priority(b).cmp(&version_priority(a)).then(a.cmp(b)));
            (group, versions)
        })
        .collect()
}

/// Kubernetes' version order: GA before beta before alpha, higher numbers first; a version
/// not in that form comes last (then alphabetical, by the caller).
fn version_priority(version: &str) -> (u8, u64, u64) {
    let Some(rest) = version.strip_prefix('v') else { return (0, 0, 0) };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let Ok(major) = rest[..digits].parse::<u64>() else { return (0, 0, 0) };
    let tail = &rest[digits..];
    let (class, minor) = match tail {
        "" => (3, 0),
        _ if tail.starts_with("beta") => (2, tail[4..].parse().unwrap_or(u64::MAX)),
        _ if tail.starts_with("alpha") => (1, tail[5..].parse().unwrap_or(u64::MAX)),
        _ => return (0, 0, 0),
    };
    if class < 3 && tail[if class == 2 { 4 } else { 5 }..].is_empty() {
        return (0, 0, 0);
    }
    (class, major, minor)
}

fn aggregated_group(name: &str, versions: &Versions) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|(version, resources)| {
            json!({
                "version": version,
                "freshness": "Current",
                "resources": resources.iter().map(aggregated_resource).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"metadata": {"name": name}, "versions": versions})
}

/// `/api`: the core group's versions, or with the aggregated Accept, every core resource.
pub(super) async fn api_versions(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !wants_aggregated(&headers) {
        return Ok(Json(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }))
        .into_response());
    }
    let registry = state.registry()?;
    let core = groups(served(&registry), true);
    Ok(aggregated(core.iter().map(|(name, resources)| aggregated_group(name, resources)).collect()))
}

fn legacy_group(name: &str, versions: &Versions) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|(version, _)| json!({"groupVersion": format!("{name}/{version}"), "version": version}))
        .collect();
    let preferred = gvs.first().cloned().unwrap_or_else(|| json!({}));
    json!({"name": name, "versions": gvs, "preferredVersion": preferred})
}

/// `/apis`: the named groups.
pub(super) async fn api_groups(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let registry = state.registry()?;
    let named = groups(served(&registry), false);
    if wants_aggregated(&headers) {
        return Ok(aggregated(named.iter().map(|(name, resources)| aggregated_group(name, resources)).collect()));
    }
    let list: Vec<Value> = named.iter().map(|(name, versions)| legacy_group(name, versions)).collect();
    Ok(Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})).into_response())
}

/// `/apis/{group}`.
pub(super) async fn api_group(State(state): State<AppState>, Path(group): Path<String>) -> Result<Response, ApiError> {
    let registry = state.registry()?;
    let named = groups(served(&registry), false);
    match named.get(group.as_str()) {
        Some(versions) => {
            let mut body = legacy_group(&group, versions);
            body["kind"] = json!("APIGroup");
            body["apiVersion"] = json!("v1");
            Ok(Json(body).into_response())
        }
        None => Err(ApiError::not_found(format!("the server could not find the requested resource (/apis/{group})"))),
    }
}

/// `/api/v1` and `/apis/{group}/{version}`: an APIResourceList, subresources as `plural/sub`.
fn resource_list(resources: &[Resource], group_version: &str) -> Value {
    let mut entries = Vec::new();
    for r in resources {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs_of(r),
            "storageVersionHash": "",
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        entries.push(entry);
        for sub in r.subresources {
            let (kind, verbs) = subresource_shape(r, sub);
            let mut entry = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind["kind"],
                "verbs": verbs,
            });
            if kind["group"] != r.group || kind["version"] != r.version {
                entry["group"] = kind["group"].clone();
                entry["version"] = kind["version"].clone();
            }
            entries.push(entry);
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries})
}

pub(super) async fn core_resources(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let registry = state.registry()?;
    let resources: Vec<Resource> = served(&registry).into_iter().filter(|r| r.group.is_empty()).collect();
    Ok(Json(resource_list(&resources, "v1")))
}

pub(super) async fn group_resources(
    State(state): State<AppState>,
    Path((group, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let registry = state.registry()?;
    let resources: Vec<Resource> = served(&registry)
        .into_iter()
        .filter(|r| r.group == group && r.version == version && !group.is_empty())
        .collect();
    if resources.is_empty() {
        return Err(ApiError::not_found(format!(
            "the server could not find the requested resource (/apis/{group}/{version})"
        )));
    }
    Ok(Json(resource_list(&resources, &format!("{group}/{version}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut versions = vec!["v1alpha1", "v2", "v1beta2", "foo", "v1", "v1beta1", "v10", "v11alpha2"];
        versions.sort_by(|a, b| version_priority(b).cmp(&version_priority(a)).then(a.cmp(b)));
        assert_eq!(versions, ["v10", "v2", "v1", "v1beta2", "v1beta1", "v11alpha2", "v1alpha1", "foo"]);
    }
}
