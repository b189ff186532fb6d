//! Walking an OpenAPI schema by field: what strategic merge patch and server-side apply
//! need to know about a field (its sub-schemas, patch strategy and merge key, list type
//! and map keys). Schemas are borrowed JSON: the built-in kinds' OpenAPI v2 `definitions`
//! (`$ref: "#/definitions/<name>"`) or a CRD's inline `openAPIV3Schema`.
//!
//! This module only reads schemas; it knows nothing of objects or storage.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

/// The `definitions` a schema's `$ref`s point into.
pub type Definitions = Map<String, Value>;

/// Kubernetes 1.33's OpenAPI v2 definitions (`$ref: "#/definitions/<name>"`).
pub fn definitions() -> &'static Definitions {
    static DEFINITIONS: LazyLock<Definitions> = LazyLock::new(|| {
        serde_json::from_str(include_str!("../../openapi/k8s-1.33-definitions.json")).unwrap_or_default()
    });
    &DEFINITIONS
}

/// The definition name of each (group, version, kind) that has exactly one. Called on
/// every write, so the lookup borrows its key instead of allocating one.
pub fn definition_of(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    type Index = HashMap<(&'static str, &'static str, &'static str), &'static str>;
    static INDEX: LazyLock<Index> = LazyLock::new(|| {
        let mut index = HashMap::new();
        for (name, schema) in definitions() {
            let gvks = schema.get("x-kubernetes-group-version-kind").and_then(Value::as_array);
            if let Some([gvk]) = gvks.map(Vec::as_slice) {
                let part = |k: &str| gvk.get(k).and_then(Value::as_str).unwrap_or_default();
                index.insert((part("group"), part("version"), part("kind")), name.as_str());
            }
        }
        index
    });
    // The map is covariant in its key, so it can be read with keys that live less long.
    let index: &HashMap<(&str, &str, &str), &'static str> = &INDEX;
    index.get(&(group, version, kind)).copied()
}

/// One node of a schema, with the definitions its references resolve in.
#[derive(Clone, Copy, Debug)]
pub struct Schema<'a> {
    definitions: &'a Definitions,
    node: &'a Value,
}

/// How a list merges (`x-kubernetes-list-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole.
    Atomic,
    /// Scalars, each owned by itself.
    Set,
    /// Objects keyed by `x-kubernetes-list-map-keys`.
    Map,
}

impl<'a> Schema<'a> {
    /// The definition called `name`, e.g. `io.k8s.api.core.v1.Pod`.
    pub fn definition(definitions: &'a Definitions, name: &str) -> Option<Self> {
        definitions.get(name).map(|node| Self { definitions, node })
    }

    /// The schema of a built-in kind.
    pub fn builtin(group: &str, version: &str, kind: &str) -> Option<Schema<'static>> {
        definition_of(group, version, kind).and_then(|name| Schema::definition(definitions(), name))
    }

    /// An inline schema (a CRD's `openAPIV3Schema`); `$ref`s, if any, resolve in `definitions`.
    pub fn inline(definitions: &'a Definitions, node: &'a Value) -> Self {
        Self { definitions, node }
    }

    /// The node with its `$ref` (or a single-element `allOf` of one) followed.
    fn resolved(self) -> &'a Value {
        let mut node = self.node;
        for _ in 0..16 {
            let target = node
                .get("$ref")
                .or_else(|| node.get("allOf").and_then(Value::as_array).filter(|a| a.len() == 1)?[0].get("$ref"))
                .and_then(Value::as_str)
                .and_then(|r| r.rsplit('/').next())
                .and_then(|name| self.definitions.get(name));
            match target {
                Some(next) => node = next,
                None => break,
            }
        }
        node
    }

    fn with(self, node: &'a Value) -> Self {
        Self { definitions: self.definitions, node }
    }

    /// The schema of field `name` of an object: a declared property, or the
    /// `additionalProperties` schema of a map.
    pub fn field(self, name: &str) -> Option<Self> {
        let node = self.resolved();
        node.get("properties")
            .and_then(|p| p.get(name))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
            .map(|n| self.with(n))
    }

    /// The schema of a list's items.
    pub fn items(self) -> Option<Self> {
        self.resolved().get("items").filter(|i| i.is_object()).map(|n| self.with(n))
    }

    /// Whether the schema names the fields an object may have: declared properties and
    /// no `additionalProperties`, so any other field is unknown.
    pub fn is_closed_object(self) -> bool {
        let node = self.resolved();
        node.get("properties").is_some_and(Value::is_object)
            && node.get("additionalProperties").is_none()
            && !self.preserves_unknown_fields()
    }

    /// Whether unknown fields are kept (`x-kubernetes-preserve-unknown-fields`).
    pub fn preserves_unknown_fields(self) -> bool {
        self.extension("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool).unwrap_or(false)
    }

    /// An `x-kubernetes-*` extension, on the node itself or on the definition it references.
    pub fn extension(self, key: &str) -> Option<&'a Value> {
        self.node.get(key).or_else(|| self.resolved().get(key))
    }

    /// The strategies of `x-kubernetes-patch-strategy` ("merge", "retainKeys", "replace").
    pub fn patch_strategies(self) -> impl Iterator<Item = &'a str> {
        self.extension("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// Whether `strategy` is one of this field's patch strategies.
    pub fn has_patch_strategy(self, strategy: &str) -> bool {
        self.patch_strategies().any(|s| s == strategy)
    }

    /// `x-kubernetes-patch-merge-key`.
    pub fn patch_merge_key(self) -> Option<&'a str> {
        self.extension("x-kubernetes-patch-merge-key").and_then(Value::as_str)
    }

    /// `x-kubernetes-list-type`; a list without one is atomic.
    pub fn list_type(self) -> ListType {
        match self.extension("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map,
            _ => ListType::Atomic,
        }
    }

    /// `x-kubernetes-list-map-keys` (for a list of type map).
    pub fn list_map_keys(self) -> Vec<&'a str> {
        self.extension("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|keys| keys.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// Whether a map or struct is replaced whole (`x-kubernetes-map-type: atomic`).
    pub fn is_atomic_map(self) -> bool {
        self.extension("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
    }

    /// The schema node itself, its `$ref` followed.
    pub fn node(self) -> &'a Value {
        self.resolved()
    }

    /// The declared `type`, if any ("object", "array", "string", ...).
    pub fn type_name(self) -> Option<&'a str> {
        self.resolved().get("type").and_then(Value::as_str)
    }

    /// The `format` of the type (`int32`, `date-time`, `int-or-string`, `byte`, ...).
    pub fn format(self) -> Option<&'a str> {
        self.node.get("format").or_else(|| self.resolved().get("format")).and_then(Value::as_str)
    }

    /// The definition this node refers to (`io.k8s.api.core.v1.Container`), if it is a
    /// reference.
    pub fn reference(self) -> Option<&'a str> {
        self.node
            .get("$ref")
            .or_else(|| self.node.get("allOf").and_then(Value::as_array).filter(|a| a.len() == 1)?[0].get("$ref"))
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_patch_metadata_through_references() {
        let defs = definitions();
        assert!(defs.len() > 700, "the vendored definitions parse");
        let pod = Schema::definition(defs, "io.k8s.api.core.v1.Pod").expect("Pod");
        let containers = pod.field("spec").and_then(|s| s.field("containers")).expect("containers");
        assert_eq!(containers.patch_merge_key(), Some("name"));
        assert!(containers.has_patch_strategy("merge"));
        assert_eq!(containers.list_type(), ListType::Map);
        assert_eq!(containers.list_map_keys(), vec!["name"]);
        let ports = containers.items().and_then(|c| c.field("ports")).expect("ports");
        assert_eq!(ports.patch_merge_key(), Some("containerPort"));
        assert_eq!(ports.list_map_keys(), vec!["containerPort", "protocol"]);
        let labels = pod.field("metadata").and_then(|m| m.field("labels")).expect("labels");
        assert_eq!(labels.type_name(), Some("object"));
        assert_eq!(labels.field("anything").and_then(Schema::type_name), Some("string"));
        let finalizers = pod.field("metadata").and_then(|m| m.field("finalizers")).expect("finalizers");
        assert_eq!(finalizers.list_type(), ListType::Set);
        assert!(pod.field("nonsense").is_none());
    }
}
