//! `/openapi/v2` and `/openapi/v3`: the schemas of every served kind, from Kubernetes'
//! own 1.33 definitions (vendored in `host/openapi/`, see `scripts/regen-openapi-definitions`),
//! and the paths of every served resource. kubectl reads them for `explain`, for client-side
//! apply's strategic merge patches, and to learn that the server validates fields
//! (the `fieldValidation` parameter on each PATCH operation).
//!
//! Custom resources carry their CRD's schema as a definition named like kube-apiserver
//! names it (`com.example.stable.v1.CronTab` for group `stable.example.com`).
//!
//! The documents are built from the registry's resources and kept until the set of served
//! resources changes (a CRD comes or goes); each v3 group-version document is addressed
//! by the hash of its content, as kube-apiserver does, so clients may cache it forever.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::{ApiError, AppState};
use crate::registry::schema::{definition_of, definitions};
use crate::registry::{ApiResource as Resource, Registry};

/// The built documents: v2 whole, v3 per group-version with its hash.
pub struct Documents {
    v2: Bytes,
    /// "api/v1", "apis/apps/v1" -> (document, hash).
    v3: BTreeMap<String, (Bytes, String)>,
    v3_root: Bytes,
}

impl Documents {
    /// Build every document for what `registry` serves.
    pub fn build(registry: &Registry) -> Self {
        let served = registry.resources();
        let mut custom = Map::new();
        for resource in &served {
            if let Some(schema) = resource.strategy().openapi_schema().cloned() {
                let name = custom_definition_name(resource, resource.kind);
                let list = custom_list_schema(resource, &name);
                custom.insert(name, schema);
                custom.insert(custom_definition_name(resource, &format!("{}List", resource.kind)), list);
            }
        }
        let definition_name = |resource: &Resource, kind: &str| -> Option<String> {
            definition_of(resource.group, resource.version, kind).map(str::to_owned).or_else(|| {
                let name = custom_definition_name(resource, kind);
                custom.contains_key(&name).then_some(name)
            })
        };
        let resources: Vec<Resource> = served.iter().map(|r| **r).collect();
        let mut by_group_version: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
        for resource in &resources {
            let key = if resource.group.is_empty() {
                "api/v1".to_string()
            } else {
                format!("apis/{}/{}", resource.group, resource.version)
            };
            by_group_version.entry(key).or_default().push(resource);
        }
        let mut v2_paths = Map::new();
        let mut v2_roots = BTreeSet::new();
        let mut v3 = BTreeMap::new();
        let mut root_paths = Map::new();
        for (group_version, resources) in &by_group_version {
            let mut roots = BTreeSet::new();
            let mut paths = Map::new();
            for resource in resources {
                let Some(definition) = definition_name(resource, resource.kind) else {
                    continue;
                };
                roots.insert(definition.clone());
                let list = definition_name(resource, &format!("{}List", resource.kind));
                if let Some(list) = &list {
                    roots.insert(list.clone());
                }
                add_paths(&mut paths, resource, &definition, list.as_deref());
            }
            for common in COMMON_DEFINITIONS {
                roots.insert(common.to_string());
            }
            let schemas = reachable(&roots, &custom);
            let document = json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.33.0"},
                "paths": rewrite_refs(&Value::Object(paths.clone()), "#/components/schemas/"),
                "components": {"schemas": rewrite_refs(&Value::Object(schemas), "#/components/schemas/")},
            });
            let bytes = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
            let hash = sha512_hex(&bytes);
            root_paths.insert(
                group_version.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{group_version}?hash={hash}")}),
            );
            v3.insert(group_version.clone(), (bytes, hash));
            v2_paths.extend(paths);
            v2_roots.extend(roots);
        }
        let v2 = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": v2_paths,
            "definitions": reachable(&v2_roots, &custom),
        });
        Self {
            v2: Bytes::from(serde_json::to_vec(&v2).unwrap_or_default()),
            v3,
            v3_root: Bytes::from(serde_json::to_vec(&json!({"paths": root_paths})).unwrap_or_default()),
        }
    }
}

/// Definitions every group-version document carries (what its operations answer with).
const COMMON_DEFINITIONS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
];

/// kube-apiserver's name for a custom kind's definition: the group reversed, the version,
/// the kind (`com.example.stable.v1.CronTab`).
fn custom_definition_name(resource: &Resource, kind: &str) -> String {
    let group: Vec<&str> = resource.group.split('.').rev().collect();
    format!("{}.{}.{kind}", group.join("."), resource.version)
}

/// The `<Kind>List` definition of a custom kind.
fn custom_list_schema(resource: &Resource, item: &str) -> Value {
    json!({
        "description": format!("{}List is a list of {}", resource.kind, resource.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": format!("#/definitions/{item}")}},
            "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"},
        },
        "x-kubernetes-group-version-kind": [{
            "group": resource.group, "version": resource.version, "kind": format!("{}List", resource.kind),
        }],
    })
}

/// `roots` and every definition they reference, transitively (built-in or in `custom`).
fn reachable(roots: &BTreeSet<String>, custom: &Map<String, Value>) -> Map<String, Value> {
    let definitions = definitions();
    let mut found = Map::new();
    let mut pending: Vec<String> = roots.iter().cloned().collect();
    while let Some(name) = pending.pop() {
        if found.contains_key(&name) {
            continue;
        }
        let Some(schema) = definitions.get(&name).or_else(|| custom.get(&name)) else { continue };
        collect_refs(schema, &mut pending);
        found.insert(name, schema.clone());
    }
    found.sort_keys();
    found
}

fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => {
                        if let Some(name) = target.strip_prefix("#/definitions/") {
                            into.push(name.to_string());
                        }
                    }
                    _ => collect_refs(value, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}

/// `value` with every `$ref` string pointing into `prefix` instead of `#/definitions/`.
fn rewrite_refs(value: &Value, prefix: &str) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => {
                        (key.clone(), Value::String(target.replacen("#/definitions/", prefix, 1)))
                    }
                    _ => (key.clone(), rewrite_refs(value, prefix)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| rewrite_refs(v, prefix)).collect()),
        other => other.clone(),
    }
}

fn sha512_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA512, bytes).as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

fn query_parameter(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

/// The operations of a resource's collection and item paths, each carrying the
/// `x-kubernetes-group-version-kind` and `x-kubernetes-action` kubectl looks for.
fn add_paths(paths: &mut Map<String, Value>, resource: &Resource, definition: &str, list: Option<&str>) {
    let base = if resource.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    let collection = if resource.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", resource.plural)
    } else {
        format!("{base}/{}", resource.plural)
    };
    let gvk = json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
    let reference = |name: &str| json!({"$ref": format!("#/definitions/{name}")});
    let answer =
        |schema: Value| json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}});
    let write_parameters = || {
        json!([
            query_parameter("dryRun", "When present, indicates that modifications should not be persisted."),
            query_parameter("fieldManager", "A name associated with the actor or entity that is making these changes."),
            query_parameter(
                "fieldValidation",
                "Whether the server rejects (Strict), warns about (Warn) or ignores (Ignore) unknown or duplicate fields.",
            ),
        ])
    };
    let operation = |action: &str, verb: &str, schema: Value, parameters: Value| {
        json!({
            "description": format!("{verb} {}", resource.kind),
            "operationId": format!("{verb}{}", resource.kind),
            "parameters": parameters,
            "responses": answer(schema),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        })
    };
    let list_schema = list.map(reference).unwrap_or_else(|| json!({"type": "object"}));
    paths.insert(
        collection.clone(),
        json!({
            "get": operation("list", "list", list_schema, json!([])),
            "post": operation("post", "create", reference(definition), write_parameters()),
            "delete": operation("deletecollection", "deletecollection", reference("io.k8s.apimachinery.pkg.apis.meta.v1.Status"), json!([])),
        }),
    );
    let mut patch_parameters = write_parameters();
    if let Value::Array(parameters) = &mut patch_parameters {
        parameters.push(query_parameter("force", "Force is going to \"force\" Apply requests."));
    }
    paths.insert(
        format!("{collection}/{{name}}"),
        json!({
            "get": operation("get", "read", reference(definition), json!([])),
            "put": operation("put", "replace", reference(definition), write_parameters()),
            "patch": operation("patch", "patch", reference(definition), patch_parameters),
            "delete": operation("delete", "delete", reference("io.k8s.apimachinery.pkg.apis.meta.v1.Status"), json!([])),
        }),
    );
}

#[derive(serde::Deserialize)]
pub(super) struct HashQuery {
    hash: Option<String>,
}

fn json_response(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// `/openapi/v2`: JSON only. kubectl asks for protobuf only when v3 fails, and a JSON body
/// would not decode there, so a protobuf-only Accept is told 406.
pub(super) async fn v2(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let json_ok = headers.get_all(header::ACCEPT).iter().next().is_none()
        || super::accepts(&headers, |m| m.contains("json") || m.trim().starts_with("*/*"));
    if !json_ok {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            "only application/json is served at /openapi/v2; use /openapi/v3",
        ));
    }
    Ok(json_response(state.openapi()?.v2.clone()))
}

/// `/openapi/v3`: the group-versions and the hashed URL of each document.
pub(super) async fn v3_root(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(json_response(state.openapi()?.v3_root.clone()))
}

/// `/openapi/v3/{api/v1 | apis/group/version}`: one document. A stale `hash` is redirected
/// to the current one; a matching one may be cached forever.
pub(super) async fn v3_document(
    State(state): State<AppState>,
    Path(group_version): Path<String>,
    Query(query): Query<HashQuery>,
) -> Result<Response, ApiError> {
    let documents = state.openapi()?;
    let Some((bytes, hash)) = documents.v3.get(group_version.trim_end_matches('/')) else {
        return Err(ApiError::not_found(format!("no OpenAPI v3 document for {group_version}")));
    };
    let etag = format!("\"{hash}\"");
    match query.hash.as_deref() {
        Some(asked) if asked != hash => {
            let location = format!("/openapi/v3/{group_version}?hash={hash}");
            Ok((StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, location)]).into_response())
        }
        Some(_) => Ok((
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "public, immutable"),
                (header::ETAG, etag.as_str()),
                (header::VARY, "Accept"),
            ],
            bytes.clone(),
        )
            .into_response()),
        None => Ok(([(header::CONTENT_TYPE, "application/json"), (header::ETAG, etag.as_str())], bytes.clone())
            .into_response()),
    }
}

/// The documents last built, with the registry generation they were built at.
pub type Cache = Arc<parking_lot::Mutex<Option<(u64, Arc<Documents>)>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_reference_resolves() {
        let roots: BTreeSet<String> = definitions().keys().cloned().collect();
        let mut refs = Vec::new();
        for schema in definitions().values() {
            collect_refs(schema, &mut refs);
        }
        let missing: Vec<_> = refs.iter().filter(|r| !roots.contains(*r)).collect();
        assert!(missing.is_empty(), "dangling references: {missing:?}");
        assert_eq!(definition_of("apps", "v1", "Deployment"), Some("io.k8s.api.apps.v1.Deployment"));
    }
}
