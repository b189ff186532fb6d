//! Custom resources: what a `CustomResourceDefinition` (apiextensions.k8s.io/v1) makes the
//! registry serve. [`Definition::parse`] reads a CRD into one [`Strategy`] per served
//! version — its schema (validation, defaults, pruning), status and scale subresources,
//! printer columns — and [`CustomResourceDefinitions`] is the strategy of the CRD kind
//! itself (its names and versions checked, its cleanup finalizer added).
//!
//! Knows objects and schemas only; installing the strategies (and the watch cache the
//! versions share) is the registry's, following CRDs is a controller's.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::object::ObjectExt;
use super::schema::{definitions, Schema};
use super::{ApiResource, Cause, NameRule, Object, Strategy};

/// The finalizer that holds a deleted CRD until its custom resources are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// A `&'static str` for `s`, leaked once per distinct string. Resources name themselves
/// with static strings (the built-in table is static); a CRD's names are few and rarely
/// change, so keeping each distinct one for the life of the process is cheap.
pub(super) fn intern(s: &str) -> &'static str {
    static STRINGS: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);
    let mut strings = STRINGS.lock();
    if let Some(found) = strings.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    strings.insert(leaked);
    leaked
}

/// A static list of interned strings (short names, categories, subresources).
fn intern_list(items: &[&str]) -> &'static [&'static str] {
    static LISTS: LazyLock<Mutex<HashSet<&'static [&'static str]>>> = LazyLock::new(Mutex::default);
    let interned: Vec<&'static str> = items.iter().map(|s| intern(s)).collect();
    let mut lists = LISTS.lock();
    if let Some(found) = lists.get(interned.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(interned.into_boxed_slice());
    lists.insert(leaked);
    leaked
}

/// One of a CRD version's `additionalPrinterColumns`: a Table column read by a JSONPath.
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    /// integer, number, string, boolean or date.
    pub type_name: String,
    pub format: String,
    pub description: String,
    /// 0: always shown; more: only with `-o wide`.
    pub priority: u8,
    /// A simple JSONPath such as `.spec.replicas` or `.status.conditions[?(@.type=="Ready")].status`.
    pub json_path: String,
}

/// Where a custom resource's `scale` subresource reads and writes (dotted paths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: Vec<String>,
    pub status_replicas: Vec<String>,
    pub label_selector: Option<Vec<String>>,
}

/// `.spec.replicas` as `["spec", "replicas"]`; only plain dotted paths are allowed.
fn dotted(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('.')?;
    let parts: Vec<String> = rest.split('.').map(str::to_owned).collect();
    parts.iter().all(|p| !p.is_empty() && !p.contains(['[', ']'])).then_some(parts)
}

/// What a CRD asks the registry to serve: every served version of one group and plural,
/// all stored under one prefix.
pub(super) struct Definition {
    pub group: &'static str,
    pub plural: &'static str,
    /// The served versions, in the CRD's order.
    pub versions: Vec<Arc<CustomResource>>,
    /// What `status.acceptedNames` reports.
    pub accepted_names: Value,
}

/// The strategy of one served version of a custom resource.
pub struct CustomResource {
    resource: ApiResource,
    /// The version's `openAPIV3Schema` with `apiVersion`, `kind` and `metadata` declared
    /// (metadata as Kubernetes' ObjectMeta), so the generic checks walk it like a built-in's.
    schema: Option<Value>,
    columns: Vec<PrinterColumn>,
    scale: Option<ScalePaths>,
    /// Whether the CRD serves several versions (objects then need their apiVersion set to
    /// the version asked through).
    several_versions: bool,
}

impl Definition {
    /// Read `crd`; every problem is a cause naming its field.
    pub fn parse(crd: &Object) -> Result<Self, Vec<Cause>> {
        let mut causes = validate_definition(crd);
        if !causes.is_empty() {
            return Err(causes);
        }
        let spec = crd.get("spec").cloned().unwrap_or_default();
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let names = spec.get("names").cloned().unwrap_or_default();
        let group = intern(&text(&spec, "group"));
        let plural = intern(&text(&names, "plural"));
        let kind = text(&names, "kind");
        let singular = match text(&names, "singular") {
            s if s.is_empty() => kind.to_lowercase(),
            s => s,
        };
        let strings = |key: &str| -> Vec<String> {
            names
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        };
        let short_names = strings("shortNames");
        let categories = strings("categories");
        let namespaced = spec.get("scope").and_then(Value::as_str) == Some("Namespaced");
        let versions: Vec<&Value> = spec
            .get("versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
            .collect();
        let several_versions = versions.len() > 1;
        let mut served = Vec::new();
        for (index, version) in versions.iter().enumerate() {
            let name = text(version, "name");
            let mut subresources: Vec<&str> = Vec::new();
            let sub = version.get("subresources");
            if sub.and_then(|s| s.get("status")).is_some() {
                subresources.push("status");
            }
            let scale = match sub.and_then(|s| s.get("scale")) {
                Some(scale) => {
                    let path = |key: &str| scale.get(key).and_then(Value::as_str).and_then(dotted);
                    match (path("specReplicasPath"), path("statusReplicasPath")) {
                        (Some(spec_replicas), Some(status_replicas)) => {
                            subresources.push("scale");
                            Some(ScalePaths {
                                spec_replicas,
                                status_replicas,
                                label_selector: path("labelSelectorPath"),
                            })
                        }
                        _ => {
                            causes.push(Cause::invalid(
                                &format!("spec.versions[{index}].subresources.scale"),
                                "specReplicasPath and statusReplicasPath must be simple paths such as .spec.replicas",
                            ));
                            None
                        }
                    }
                }
                None => None,
            };
            let columns = version
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| PrinterColumn {
                    name: text(c, "name"),
                    type_name: text(c, "type"),
                    format: text(c, "format"),
                    description: text(c, "description"),
                    priority: c.get("priority").and_then(Value::as_u64).unwrap_or(0).min(255) as u8,
                    json_path: text(c, "jsonPath"),
                })
                .collect();
            let schema = version.pointer("/schema/openAPIV3Schema").map(|s| augmented_schema(s, group, &name, &kind));
            let resource = ApiResource {
                group,
                version: intern(&name),
                kind: intern(&kind),
                plural,
                singular: intern(&singular),
                namespaced,
                short_names: intern_list(&short_names.iter().map(String::as_str).collect::<Vec<_>>()),
                categories: intern_list(&categories.iter().map(String::as_str).collect::<Vec<_>>()),
                subresources: intern_list(&subresources),
            };
            served.push(Arc::new(CustomResource { resource, schema, columns, scale, several_versions }));
        }
        if !causes.is_empty() {
            return Err(causes);
        }
        let mut accepted = names.clone();
        if let Value::Object(accepted) = &mut accepted {
            accepted.insert("singular".into(), json!(singular));
            accepted.entry("listKind").or_insert_with(|| json!(format!("{kind}List")));
        }
        Ok(Self { group, plural, versions: served, accepted_names: accepted })
    }
}

/// The schema the registry checks objects against: the CRD's, with the fields every
/// object has declared as Kubernetes declares them.
fn augmented_schema(schema: &Value, group: &str, version: &str, kind: &str) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema {
        map.entry("type").or_insert_with(|| json!("object"));
        let properties = map.entry("properties").or_insert_with(|| json!({}));
        if let Value::Object(properties) = properties {
            properties.insert("apiVersion".into(), json!({"type": "string"}));
            properties.insert("kind".into(), json!({"type": "string"}));
            properties.insert(
                "metadata".into(),
                json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}),
            );
        }
        map.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": group, "version": version, "kind": kind}]),
        );
    }
    schema
}

impl CustomResource {
    fn schema_ref(&self) -> Option<Schema<'_>> {
        self.schema.as_ref().map(|s| Schema::inline(definitions(), s))
    }
}

impl Strategy for CustomResource {
    fn resource(&self) -> &ApiResource {
        &self.resource
    }

    fn schema(&self) -> Option<Schema<'_>> {
        self.schema_ref()
    }

    /// Custom resources count every change outside metadata and status, as kube-apiserver does.
    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, object: &mut Object) {
        if self.resource.has_subresource("status") {
            object.remove("status");
        }
        if let Some(schema) = self.schema_ref() {
            apply_defaults(object, schema);
        }
    }

    fn prepare_for_update(&self, object: &mut Object, _old: &Object) {
        if let Some(schema) = self.schema_ref() {
            apply_defaults(object, schema);
        }
    }

    fn validate(&self, object: &Object) -> Vec<Cause> {
        let Some(schema) = self.schema_ref() else { return Vec::new() };
        let mut causes = Vec::new();
        for (key, value) in object {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(field) = schema.field(key) {
                check_value(value, field, key, &mut causes);
            }
        }
        check_required(object, schema, "", &mut causes);
        causes
    }

    fn printer_columns(&self) -> Option<&[PrinterColumn]> {
        Some(&self.columns)
    }

    fn scale_paths(&self) -> Option<&ScalePaths> {
        self.scale.as_ref()
    }

    fn converts_versions(&self) -> bool {
        self.several_versions
    }

    fn openapi_schema(&self) -> Option<&Value> {
        self.schema.as_ref()
    }
}

/// Fill each missing field that has a `default` in the schema, at every level present.
fn apply_defaults(object: &mut Map<String, Value>, schema: Schema<'_>) {
    if let Some(Value::Object(properties)) = schema.node().get("properties") {
        for (name, property) in properties {
            if matches!(name.as_str(), "metadata" | "apiVersion" | "kind") {
                continue;
            }
            if !object.contains_key(name) {
                if let Some(default) = property.get("default") {
                    object.insert(name.clone(), default.clone());
                }
            }
        }
    }
    for (name, value) in object.iter_mut() {
        if matches!(name.as_str(), "metadata" | "apiVersion" | "kind") {
            continue;
        }
        if let Some(field) = schema.field(name) {
            default_value(value, field);
        }
    }
}

fn default_value(value: &mut Value, schema: Schema<'_>) {
    match value {
        Value::Object(map) => apply_defaults(map, schema),
        Value::Array(items) => {
            if let Some(item) = schema.items() {
                items.iter_mut().for_each(|v| default_value(v, item));
            }
        }
        _ => {}
    }
}

fn check_required(map: &Map<String, Value>, schema: Schema<'_>, path: &str, causes: &mut Vec<Cause>) {
    for required in schema.node().get("required").and_then(Value::as_array).into_iter().flatten() {
        let Some(required) = required.as_str() else { continue };
        if !map.contains_key(required) {
            let field = if path.is_empty() { required.to_string() } else { format!("{path}.{required}") };
            causes.push(Cause::required(&field, "Required value"));
        }
    }
}

/// Check `value` at `path` against `schema`: type, enum, bounds, lengths, pattern, required.
fn check_value(value: &Value, schema: Schema<'_>, path: &str, causes: &mut Vec<Cause>) {
    let node = schema.node();
    let invalid = |causes: &mut Vec<Cause>, message: String| {
        causes.push(Cause::invalid(path, format!("Invalid value: {}: {message}", short(value))))
    };
    if value.is_null() {
        if !node.get("nullable").and_then(Value::as_bool).unwrap_or(false) && schema.type_name().is_some() {
            invalid(causes, format!("must be of type {}", schema.type_name().unwrap_or_default()));
        }
        return;
    }
    let int_or_string = schema.extension("x-kubernetes-int-or-string").and_then(Value::as_bool).unwrap_or(false);
    let type_ok = match (schema.type_name(), value) {
        _ if int_or_string => value.is_string() || value.is_i64() || value.is_u64(),
        (None, _) => true,
        (Some("object"), Value::Object(_)) | (Some("array"), Value::Array(_)) | (Some("string"), Value::String(_)) => {
            true
        }
        (Some("boolean"), Value::Bool(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Some("number"), Value::Number(_)) => true,
        _ => false,
    };
    if !type_ok {
        let expected = if int_or_string { "integer or string" } else { schema.type_name().unwrap_or_default() };
        return causes.push(Cause {
            reason: "FieldValueTypeInvalid",
            field: path.into(),
            message: format!("Invalid value: {}: {path} in body must be of type {expected}", short(value)),
        });
    }
    if let Some(allowed) = node.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: path.into(),
                message: format!("Unsupported value: {}: supported values: {}", short(value), list.join(", ")),
            });
        }
    }
    let number = |key: &str| node.get(key).and_then(Value::as_f64);
    let flag = |key: &str| node.get(key).and_then(Value::as_bool).unwrap_or(false);
    if let Some(n) = value.as_f64() {
        if let Some(min) = number("minimum") {
            if n < min || (flag("exclusiveMinimum") && n <= min) {
                invalid(causes, format!("{path} in body should be greater than or equal to {min}"));
            }
        }
        if let Some(max) = number("maximum") {
            if n > max || (flag("exclusiveMaximum") && n >= max) {
                invalid(causes, format!("{path} in body should be less than or equal to {max}"));
            }
        }
    }
    let count = |key: &str| node.get(key).and_then(Value::as_u64).map(|n| n as usize);
    match value {
        Value::String(s) => {
            let length = s.chars().count();
            if count("minLength").is_some_and(|min| length < min) {
                invalid(
                    causes,
                    format!("{path} in body should be at least {} chars long", count("minLength").unwrap_or(0)),
                );
            }
            if count("maxLength").is_some_and(|max| length > max) {
                causes.push(Cause {
                    reason: "FieldValueTooLong",
                    field: path.into(),
                    message: format!("Too long: may not be more than {} bytes", count("maxLength").unwrap_or(0)),
                });
            }
            if let Some(pattern) = node.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => {
                        invalid(causes, format!("{path} in body should match '{pattern}'"));
                    }
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            if count("minItems").is_some_and(|min| items.len() < min) {
                invalid(
                    causes,
                    format!("{path} in body should have at least {} items", count("minItems").unwrap_or(0)),
                );
            }
            if count("maxItems").is_some_and(|max| items.len() > max) {
                causes.push(Cause {
                    reason: "FieldValueTooMany",
                    field: path.into(),
                    message: format!(
                        "Too many: {}: must have at most {} items",
                        items.len(),
                        count("maxItems").unwrap_or(0)
                    ),
                });
            }
            if let Some(item) = schema.items() {
                for (index, entry) in items.iter().enumerate() {
                    check_value(entry, item, &format!("{path}[{index}]"), causes);
                }
            }
        }
        Value::Object(map) => {
            if count("minProperties").is_some_and(|min| map.len() < min) {
                invalid(
                    causes,
                    format!("{path} in body should have at least {} properties", count("minProperties").unwrap_or(0)),
                );
            }
            if count("maxProperties").is_some_and(|max| map.len() > max) {
                invalid(
                    causes,
                    format!("{path} in body should have at most {} properties", count("maxProperties").unwrap_or(0)),
                );
            }
            for (key, entry) in map {
                if let Some(field) = schema.field(key) {
                    check_value(entry, field, &format!("{path}.{key}"), causes);
                }
            }
            check_required(map, schema, path, causes);
        }
        _ => {}
    }
}

/// A value as an error message quotes it: strings quoted, long values cut.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(77).collect::<String>())
    } else {
        text
    }
}

/// Everything wrong with a CRD, each naming its field.
fn validate_definition(crd: &Object) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = crd.get("spec").cloned().unwrap_or_default();
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let group = text(&spec, "group");
    if group.is_empty() {
        causes.push(Cause::required("spec.group", "Required value"));
    } else if !group.contains('.') || NameRule::Subdomain.problem(&group).is_some() {
        causes.push(Cause::invalid(
            "spec.group",
            format!("Invalid value: {group:?}: should be a domain with at least one dot"),
        ));
    }
    let names = spec.get("names").cloned().unwrap_or_default();
    let plural = text(&names, "plural");
    let kind = text(&names, "kind");
    for (field, value) in [("plural", &plural), ("kind", &kind)] {
        if value.is_empty() {
            causes.push(Cause::required(&format!("spec.names.{field}"), "Required value"));
        }
    }
    if !plural.is_empty() && NameRule::Label.problem(&plural).is_some() {
        causes.push(Cause::invalid(
            "spec.names.plural",
            format!("Invalid value: {plural:?}: a lowercase RFC 1123 label"),
        ));
    }
    if !kind.is_empty() && !kind.starts_with(|c: char| c.is_ascii_alphabetic()) {
        causes.push(Cause::invalid("spec.names.kind", format!("Invalid value: {kind:?}: must start with a letter")));
    }
    let name = crd.metadata().get("name").and_then(Value::as_str).unwrap_or_default();
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced" | "Cluster") => {}
        Some(other) => causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.scope".into(),
            message: format!("Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""),
        }),
        None => causes.push(Cause::required("spec.scope", "Required value")),
    }
    let versions = spec.get("versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::required(
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        ));
    }
    let mut seen = HashSet::new();
    let mut storage = 0;
    for (index, version) in versions.iter().enumerate() {
        let name = text(version, "name");
        if name.is_empty() || NameRule::Label.problem(&name).is_some() {
            causes.push(Cause::invalid(
                &format!("spec.versions[{index}].name"),
                format!("Invalid value: {name:?}: a DNS-1035 label"),
            ));
        } else if !seen.insert(name.clone()) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("spec.versions[{index}].name"),
                message: format!("Duplicate value: {name:?}"),
            });
        }
        if version.get("storage").and_then(Value::as_bool).unwrap_or(false) {
            storage += 1;
        }
        if version.pointer("/schema/openAPIV3Schema").is_none() {
            causes.push(Cause::required(
                &format!("spec.versions[{index}].schema.openAPIV3Schema"),
                "Required value: schemas are required",
            ));
        }
        if version.pointer("/schema/openAPIV3Schema/type").and_then(Value::as_str).is_some_and(|t| t != "object") {
            causes.push(Cause::invalid(
                &format!("spec.versions[{index}].schema.openAPIV3Schema.type"),
                "Invalid value: must be object at the root",
            ));
        }
    }
    if !versions.is_empty() && storage != 1 {
        causes.push(Cause::invalid("spec.versions", format!("Invalid value: must have exactly one version marked as storage version, status.storedVersions has {storage}")));
    }
    causes
}

/// The strategy of `customresourcedefinitions`: names and versions checked, defaults filled,
/// and the cleanup finalizer added so a deleted CRD first loses its custom resources.
pub(super) struct CustomResourceDefinitions(pub ApiResource);

impl Strategy for CustomResourceDefinitions {
    fn resource(&self) -> &ApiResource {
        &self.0
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, object: &mut Object) {
        object.remove("status");
        default_names(object);
        let metadata = object.metadata_mut();
        let finalizers = metadata.entry("finalizers").or_insert_with(|| json!([]));
        if let Value::Array(finalizers) = finalizers {
            if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
                finalizers.push(json!(CLEANUP_FINALIZER));
            }
        }
    }

    fn prepare_for_update(&self, object: &mut Object, _old: &Object) {
        default_names(object);
    }

    fn validate(&self, object: &Object) -> Vec<Cause> {
        validate_definition(object)
    }
}

/// `names.singular` (the kind in lower case) and `names.listKind` (`<kind>List`) when missing.
fn default_names(object: &mut Object) {
    let Some(Value::Object(names)) = object.get_mut("spec").and_then(|s| s.get_mut("names")) else { return };
    let kind = names.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    if kind.is_empty() {
        return;
    }
    names.entry("singular").or_insert_with(|| json!(kind.to_lowercase()));
    names.entry("listKind").or_insert_with(|| json!(format!("{kind}List")));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Object {
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {"group": "stable.example.com", "scope": "Namespaced",
                "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "required": ["cronSpec"], "properties": {
                            "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                            "image": {"type": "string", "default": "busybox"},
                            "replicas": {"type": "integer", "minimum": 1, "maximum": 10}}},
                        "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}}}},
                    {"name": "v1beta1", "served": true, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                    {"name": "v1alpha1", "served": false, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}},
                ]},
        }))
        .expect("crd")
    }

    #[test]
    fn a_definition_serves_its_served_versions() {
        let definition = Definition::parse(&crd()).expect("valid");
        let versions: Vec<&str> = definition.versions.iter().map(|v| v.resource().version).collect();
        assert_eq!(versions, ["v1", "v1beta1"]);
        let v1 = &definition.versions[0];
        assert_eq!(v1.resource().subresources, ["status", "scale"]);
        assert_eq!(v1.resource().short_names, ["ct"]);
        assert_eq!(v1.resource().singular, "crontab");
        assert!(v1.converts_versions());
        assert_eq!(definition.accepted_names["listKind"], "CronTabList");
    }

    #[test]
    fn custom_objects_are_defaulted_and_validated() {
        let definition = Definition::parse(&crd()).expect("valid");
        let v1 = &definition.versions[0];
        let mut object: Object =
            serde_json::from_value(json!({"spec": {"cronSpec": "* * * * */5", "replicas": 3}})).expect("object");
        v1.prepare_for_create(&mut object);
        assert_eq!(object["spec"]["image"], "busybox");
        assert!(v1.validate(&object).is_empty(), "{:?}", v1.validate(&object));
        let bad: Object =
            serde_json::from_value(json!({"spec": {"cronSpec": "nope", "replicas": 11, "image": 5}})).expect("object");
        let mut fields: Vec<String> = v1.validate(&bad).into_iter().map(|c| c.field).collect();
        fields.sort();
        assert_eq!(fields, ["spec.cronSpec", "spec.image", "spec.replicas"]);
        let missing: Object = serde_json::from_value(json!({"spec": {}})).expect("object");
        assert_eq!(v1.validate(&missing)[0].field, "spec.cronSpec");
    }

    #[test]
    fn bad_definitions_name_every_problem() {
        let mut bad = crd();
        bad["spec"]["group"] = json!("nodots");
        bad["spec"]["scope"] = json!("Everywhere");
        bad["spec"]["versions"][1]["storage"] = json!(true);
        let fields: Vec<String> = validate_definition(&bad).into_iter().map(|c| c.field).collect();
        assert!(fields.contains(&"spec.group".to_string()), "{fields:?}");
        assert!(fields.contains(&"spec.scope".to_string()), "{fields:?}");
        assert!(fields.contains(&"spec.versions".to_string()), "{fields:?}");
        assert!(fields.contains(&"metadata.name".to_string()), "{fields:?}");
    }

    #[test]
    fn interned_strings_are_shared() {
        let a = intern("widgets");
        let b = intern(&String::from("widgets"));
        assert!(std::ptr::eq(a, b));
    }
}
