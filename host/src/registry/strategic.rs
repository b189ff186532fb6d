//! Strategic merge patch (`application/strategic-merge-patch+json`) as the API server
//! applies it: Kubernetes' `strategicpatch.StrategicMergeMapPatch`. The patch is merged
//! into the stored object field by field, and the kind's schema says how each field
//! merges: objects merge key by key (`null` deletes a key); lists are replaced whole
//! unless the field declares `x-kubernetes-patch-strategy: merge`, in which case lists of
//! objects merge element by element on `x-kubernetes-patch-merge-key` and lists of
//! scalars merge as ordered sets; an object field with the `replace` strategy is replaced
//! whole. Without a schema, or below a field the schema does not describe, the patch
//! merges like a JSON merge patch. `x-kubernetes-list-type` and `x-kubernetes-map-type`
//! belong to server-side apply and play no part here.
//!
//! A patch may carry directives, and no directive reaches the result:
//! - `$patch: replace` replaces an object by the rest of the patch object; a list element
//!   `{"$patch": "replace"}` replaces a merging list by the other patch elements;
//! - `$patch: delete` turns an object into `{}`; a list element `{<key>: v, "$patch":
//!   "delete"}` removes every element whose merge key is `v`;
//! - `$patch: merge` is the default and does nothing;
//! - `$retainKeys: [fields]` drops every stored field not listed (patch fields must be listed);
//! - `$setElementOrder/<list>: [...]` gives the order of a merging list after the merge;
//! - `$deleteFromPrimitiveList/<list>: [...]` removes values from a list of scalars.
//!
//! The order of a merged list follows Kubernetes' `normalizeElementOrder` exactly: the
//! elements the patch names take the patch's order, the other stored elements keep
//! theirs, and the two runs are interleaved by the stored order, so a new element lands
//! *before* the stored ones unless `$setElementOrder` places it.
//!
//! Values the patch introduces (a new field, a replaced list or object, a new list
//! element) are the patch value merged into nothing: directives inside them apply and
//! their `null` fields are dropped, where Kubernetes copies them verbatim and lets
//! decoding into the typed object drop what it does not know.
//!
//! Only applying a patch lives here; computing one (diffing two objects) does not.
//! Entry: [`apply`].

use std::fmt;

use serde_json::{Map, Value};

use super::schema::Schema;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// Why a strategic merge patch could not be applied. Each message starts with the path
/// of the field concerned (`spec.containers[1]`, index into the patch's list; `[stored 1]`
/// is an index into the stored list).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StrategicMergeError {
    /// Something that must be a JSON object is not: the patch itself, an element of a
    /// list merged by key, an entry of `$setElementOrder` for such a list.
    #[error("{path}: expected a JSON object, found {found}")]
    NotAnObject { path: String, found: &'static str },
    /// A directive is unknown (`$patch: bogus`) or misused (`$retainKeys` that is not a
    /// list or leaves out a field the patch sets, a patch list out of its
    /// `$setElementOrder`, ...).
    #[error("{path}: invalid {directive}: {reason}")]
    InvalidDirective { path: String, directive: String, reason: String },
    /// An element of a list merged by key lacks the key.
    #[error("{path}: list element has no merge key {key:?}")]
    MissingMergeKey { path: String, key: String },
    /// A list with the merge strategy whose elements cannot be merged.
    #[error("{path}: cannot merge list: {reason}")]
    UnmergeableList { path: String, reason: &'static str },
}

type Result<T, E = StrategicMergeError> = std::result::Result<T, E>;

/// Apply `patch` to `original`. `schema` is the kind's root schema (None = no schema
/// known: behave like JSON merge patch, lists replaced, directives still honoured where
/// meaningful).
///
/// `original` must be an object (`null` counts as `{}`), and so must `patch`.
pub fn apply(original: &Value, patch: &Value, schema: Option<Schema<'_>>) -> Result<Value, StrategicMergeError> {
    let root = Path::ROOT;
    let Value::Object(patch) = patch else { return Err(not_an_object(&root, patch)) };
    let original = match original {
        Value::Object(original) => original.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(StrategicMergeError::NotAnObject { path: "(stored object)".into(), found: kind_name(other) })
        }
    };
    merge_map(original, patch, schema, &root).map(Value::Object)
}

/// Merge a patch object into a stored one (Go's `mergeMap`).
fn merge_map(
    original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Option<Schema<'_>>,
    path: &Path<'_>,
) -> Result<Map<String, Value>> {
    let Some(directive) = patch.get(PATCH) else { return merge_fields(original, patch, schema, path) };
    match directive.as_str() {
        Some("replace") => merge_fields(Map::new(), patch, schema, path),
        Some("delete") => Ok(Map::new()),
        Some("merge") => merge_fields(original, patch, schema, path),
        _ => Err(unknown_patch(path, directive)),
    }
}

/// Merge the fields of a patch object, `$patch` aside.
fn merge_fields(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Option<Schema<'_>>,
    path: &Path<'_>,
) -> Result<Map<String, Value>> {
    if let Some(keep) = patch.get(RETAIN_KEYS) {
        retain_keys(&mut original, patch, keep, path)?;
    }
    // Lists with a `$setElementOrder` merge first, together with their order.
    let mut ordered = Vec::new();
    for (key, order) in patch {
        if key.starts_with(SET_ELEMENT_ORDER) {
            let field = directive_field(key, SET_ELEMENT_ORDER, path)?;
            if set_element_order(&mut original, patch, key, field, order, schema, path)? {
                ordered.push(field);
            }
        }
    }
    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS || key.starts_with(SET_ELEMENT_ORDER) || ordered.contains(&key.as_str())
        {
            continue;
        }
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let field = directive_field(key, DELETE_FROM_PRIMITIVE_LIST, path)?;
            delete_from_list(&mut original, key, field, value, path)?;
            continue;
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        let schema = schema.and_then(|s| s.field(key));
        let path = path.field(key);
        let merged = match original.remove(key) {
            Some(stored) => merge_value(stored, value, schema, &path)?,
            None => fresh(value, schema, &path)?,
        };
        original.insert(key.clone(), merged);
    }
    Ok(original)
}

/// Merge one patch value into the stored value of the same field.
fn merge_value(stored: Value, patch: &Value, schema: Option<Schema<'_>>, path: &Path<'_>) -> Result<Value> {
    match (stored, patch) {
        (Value::Object(stored), Value::Object(patch)) if !schema.is_some_and(|s| s.has_patch_strategy("replace")) => {
            merge_map(stored, patch, schema, path).map(Value::Object)
        }
        (Value::Array(stored), Value::Array(patch)) if is_merging_list(schema) => {
            Ok(Value::Array(merge_list(stored, patch, schema, path)?.items))
        }
        (_, patch) => fresh(patch, schema, path),
    }
}

/// A value the patch introduces: the patch value merged into nothing.
fn fresh(patch: &Value, schema: Option<Schema<'_>>, path: &Path<'_>) -> Result<Value> {
    Ok(match patch {
        Value::Object(patch) => Value::Object(merge_map(Map::new(), patch, schema, path)?),
        Value::Array(patch) if is_merging_list(schema) => Value::Array(merge_list(Vec::new(), patch, schema, path)?.items),
        Value::Array(patch) => Value::Array(replace_list(patch, schema, path)?),
        scalar => scalar.clone(),
    })
}

/// A list without the merge strategy: the patch's list, `$patch` marker elements aside.
fn replace_list(patch: &[Value], schema: Option<Schema<'_>>, path: &Path<'_>) -> Result<Vec<Value>> {
    let items = schema.and_then(Schema::items);
    let mut list = Vec::with_capacity(patch.len());
    for (i, element) in patch.iter().enumerate() {
        let path = path.index(i);
        if let Some(directive) = element.get(PATCH) {
            match directive.as_str() {
                // The list is replaced anyway, and there is nothing stored to delete from.
                Some("replace" | "delete") => continue,
                Some("merge") => {}
                _ => return Err(unknown_patch(&path, directive)),
            }
        }
        list.push(fresh(element, items, &path)?);
    }
    Ok(list)
}

fn is_merging_list(schema: Option<Schema<'_>>) -> bool {
    schema.is_some_and(|s| s.has_patch_strategy("merge"))
}

/// `$retainKeys`: the stored object keeps only the listed fields, and the patch may set
/// no other (Go's `applyRetainKeysDirective`).
fn retain_keys(original: &mut Map<String, Value>, patch: &Map<String, Value>, keep: &Value, path: &Path<'_>) -> Result<()> {
    let Value::Array(keep) = keep else {
        return Err(invalid(path, RETAIN_KEYS, format!("expected a list of field names, found {}", kind_name(keep))));
    };
    let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
    for (key, value) in patch {
        let directive = key == PATCH
            || key == RETAIN_KEYS
            || key.starts_with(SET_ELEMENT_ORDER)
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST);
        if !directive && !value.is_null() && !keep.contains(&key.as_str()) {
            return Err(invalid(path, RETAIN_KEYS, format!("the patch sets {key:?}, which the list leaves out")));
        }
    }
    original.retain(|key, _| keep.contains(&key.as_str()));
    Ok(())
}

/// `$deleteFromPrimitiveList/<field>`: remove the given values from a stored list of
/// scalars, whatever the field's strategy (as Kubernetes does since 1.25).
fn delete_from_list(
    original: &mut Map<String, Value>,
    directive: &str,
    field: &str,
    values: &Value,
    path: &Path<'_>,
) -> Result<()> {
    let path = path.field(field);
    let Value::Array(values) = values else {
        return Err(invalid(&path, directive, format!("expected a list, found {}", kind_name(values))));
    };
    let Some(Value::Array(list)) = original.get_mut(field) else { return Ok(()) };
    if list.iter().chain(values).any(|v| v.is_object() || v.is_array()) {
        return Err(invalid(&path, directive, "only applies to a list of scalars"));
    }
    list.retain(|v| !values.contains(v));
    Ok(())
}

/// `$setElementOrder/<field>`: merge the patch's list `field` (if any) into the stored one
/// and put the result in the given order (Go's `mergePatchIntoOriginal`). Returns whether
/// the patch's `field` was merged; the directive is ignored on a list without the merge
/// strategy, which the patch replaces anyway.
fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    directive: &str,
    field: &str,
    order: &Value,
    schema: Option<Schema<'_>>,
    path: &Path<'_>,
) -> Result<bool> {
    let schema = schema.and_then(|s| s.field(field));
    if !is_merging_list(schema) {
        return Ok(false);
    }
    let Value::Array(order) = order else {
        let path = path.field(directive);
        return Err(invalid(&path, directive, format!("expected a list, found {}", kind_name(order))));
    };
    let key = schema.and_then(Schema::patch_merge_key);
    let order_path = path.field(directive);
    let path = path.field(field);
    let stored = match original.remove(field) {
        None | Some(Value::Null) => None,
        Some(Value::Array(stored)) => Some(stored),
        Some(other) => {
            let reason = format!("the stored {field:?} is {}, not a list", kind_name(&other));
            return Err(invalid(&path, directive, reason));
        }
    };
    let patched = match patch.get(field) {
        None => None,
        Some(Value::Array(patched)) => Some(patched),
        Some(other) => {
            let reason = format!("the patch's {field:?} is {}, not a list", kind_name(other));
            return Err(invalid(&path, directive, reason));
        }
    };
    if let Some(patched) = patched {
        check_order(patched, order, key, directive, &path, &order_path)?;
    }
    let (merged, stored_order) = match (stored, patched) {
        (None, None) => return Ok(true),
        (Some(stored), None) => {
            let stored_order = identities(&stored, key, |i| path.stored(i))?;
            (stored, stored_order)
        }
        (None, Some(patched)) => (merge_list(Vec::new(), patched, schema, &path)?.items, Vec::new()),
        (Some(stored), Some(patched)) => {
            let merged = merge_list(stored, patched, schema, &path)?;
            (merged.items, merged.stored_order)
        }
    };
    let order = identities(order, key, |i| order_path.index(i))?;
    original.insert(field.to_owned(), Value::Array(order_merged(merged, &order, &stored_order, key)));
    Ok(true)
}

/// Go's `validatePatchWithSetOrderList`: the patch list's elements (`$patch` ones aside)
/// must all appear in the order list, in the same relative order.
fn check_order(
    patch: &[Value],
    order: &[Value],
    key: Option<&str>,
    directive: &str,
    path: &Path<'_>,
    order_path: &Path<'_>,
) -> Result<()> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut elements = Vec::with_capacity(patch.len());
    for (i, element) in patch.iter().enumerate() {
        if key.is_some() {
            let Value::Object(fields) = element else { return Err(not_an_object(&path.index(i), element)) };
            if fields.get(PATCH).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        elements.push((i, element));
    }
    let (mut p, mut o) = (0, 0);
    while p < elements.len() && o < order.len() {
        let (i, element) = elements[p];
        if element.get(PATCH).is_some() {
            p += 1;
            continue;
        }
        let same = match key {
            None => element == &order[o],
            Some(_) => identity(element, key, &path.index(i))? == identity(&order[o], key, &order_path.index(o))?,
        };
        if same {
            p += 1;
        }
        o += 1;
    }
    if p < elements.len() {
        return Err(invalid(path, directive, "the patch list has elements missing from the order or out of it"));
    }
    Ok(())
}

/// A merged list, and what Kubernetes then sorts stored elements by.
struct MergedList {
    items: Vec<Value>,
    /// The identities of the stored list as Go's slice over it reads after the merge:
    /// deletions shift it left in place and the first new elements fill the room they
    /// leave (the merge key values for objects, the values for scalars).
    stored_order: Vec<Value>,
}

/// Merge two lists of a field with the merge strategy (Go's `mergeSlice`).
fn merge_list(stored: Vec<Value>, patch: &[Value], schema: Option<Schema<'_>>, path: &Path<'_>) -> Result<MergedList> {
    if stored.is_empty() && patch.is_empty() {
        return Ok(MergedList { items: stored, stored_order: Vec::new() });
    }
    if !of_objects(&stored, patch, path)? {
        return Ok(merge_scalars(stored, patch));
    }
    let Some(key) = schema.and_then(Schema::patch_merge_key) else {
        return Err(unmergeable(path, "its elements are objects but the schema declares no merge key"));
    };
    merge_objects(stored, patch, key, schema.and_then(Schema::items), path)
}

/// Whether the elements of a merging list are objects (else scalars); they must all be
/// of one kind (Go's `sliceElementType`).
fn of_objects(stored: &[Value], patch: &[Value], path: &Path<'_>) -> Result<bool> {
    let mut kind = None;
    for value in stored.iter().chain(patch) {
        let this = match value {
            Value::Object(_) => 0,
            Value::String(_) => 1,
            Value::Number(_) => 2,
            Value::Bool(_) => 3,
            Value::Array(_) => return Err(unmergeable(path, "lists of lists cannot be merged")),
            Value::Null => return Err(unmergeable(path, "null elements cannot be merged")),
        };
        if kind.is_some_and(|kind| kind != this) {
            return Err(unmergeable(path, "its elements are not all of the same type"));
        }
        kind = Some(this);
    }
    Ok(kind == Some(0))
}

/// A set of scalars: the union, ordered as [`order_merged`] says.
fn merge_scalars(stored: Vec<Value>, patch: &[Value]) -> MergedList {
    let mut union: Vec<Value> = Vec::with_capacity(stored.len() + patch.len());
    for value in stored.iter().chain(patch) {
        if !union.contains(value) {
            union.push(value.clone());
        }
    }
    let items = order_merged(union, patch, &stored, None);
    MergedList { items, stored_order: stored }
}

/// A list of objects merged by `key`.
fn merge_objects(
    stored: Vec<Value>,
    patch: &[Value],
    key: &str,
    items: Option<Schema<'_>>,
    path: &Path<'_>,
) -> Result<MergedList> {
    // Go's backing array of the stored list, which `stored_order` reports.
    let capacity = stored.len();
    let mut backing: Vec<Value> = stored.iter().map(|e| e.get(key).cloned().unwrap_or(Value::Null)).collect();
    let mut len = capacity;
    let mut list = stored;

    let mut merging = Vec::with_capacity(patch.len());
    let mut replace = false;
    for (i, element) in patch.iter().enumerate() {
        let path = path.index(i);
        let Value::Object(fields) = element else { return Err(not_an_object(&path, element)) };
        let Some(directive) = fields.get(PATCH) else {
            merging.push((i, fields));
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let value = identity(element, Some(key), &path)?;
                while let Some(at) = list.iter().position(|e| e.get(key) == Some(value)) {
                    list.remove(at);
                    // Go's append(s[:at], s[at+1:]...): the tail shifts left, the last slot keeps its value.
                    for j in at..len - 1 {
                        backing[j] = backing[j + 1].clone();
                    }
                    len -= 1;
                }
            }
            Some("replace") => replace = true,
            Some("merge") => merging.push((i, fields)),
            _ => return Err(unknown_patch(&path, directive)),
        }
    }

    if replace {
        // The list becomes the other patch elements, ordered (grouped) by first occurrence.
        let mut replacement = Vec::with_capacity(merging.len());
        for (i, fields) in merging {
            replacement.push(Value::Object(merge_map(Map::new(), fields, items, &path.index(i))?));
        }
        let order = identities(&replacement, Some(key), |i| path.index(i))?;
        let items = order_merged(replacement, &[], &order, Some(key));
        return Ok(MergedList { items, stored_order: backing });
    }

    let stored_order = identities(&list, Some(key), |i| path.stored(i))?;
    let mut patch_order = Vec::with_capacity(merging.len());
    for &(i, fields) in &merging {
        let path = path.index(i);
        let value = identity_of(fields, key, &path)?;
        match list.iter().position(|e| e.get(key) == Some(value)) {
            Some(at) => {
                let Value::Object(existing) = std::mem::take(&mut list[at]) else {
                    return Err(unmergeable(&path, "its elements are not all of the same type"));
                };
                list[at] = Value::Object(merge_map(existing, fields, items, &path)?);
            }
            None => {
                list.push(Value::Object(merge_map(Map::new(), fields, items, &path)?));
                // Go appends in place while the room the deletions left lasts, then reallocates.
                if len < capacity {
                    backing[len] = value.clone();
                    len += 1;
                }
            }
        }
        patch_order.push(value.clone());
    }
    let items = order_merged(list, &patch_order, &stored_order, Some(key));
    Ok(MergedList { items, stored_order: backing })
}

/// Go's `normalizeElementOrder`: the elements named in `patch_order` take its order, the
/// others keep their `stored_order` order, and the two runs are interleaved: a stored
/// element goes first only when it and the next patch element are both stored and it
/// comes first there. Elements are identified by `key`'s value, or by value for scalars.
fn order_merged(items: Vec<Value>, patch_order: &[Value], stored_order: &[Value], key: Option<&str>) -> Vec<Value> {
    let position = |order: &[Value], item: &Value| {
        let id = match key {
            None => Some(item),
            Some(key) => item.get(key),
        };
        id.and_then(|id| order.iter().position(|o| o == id))
    };
    let mut named = Vec::new();
    let mut others = Vec::new();
    for item in items {
        let stored_at = position(stored_order, &item);
        match position(patch_order, &item) {
            Some(at) => named.push((at, stored_at, item)),
            None => others.push((stored_at.unwrap_or(usize::MAX), stored_at, item)),
        }
    }
    named.sort_by_key(|e| e.0);
    others.sort_by_key(|e| e.0);

    let mut ordered = Vec::with_capacity(named.len() + others.len());
    let mut named = named.into_iter().peekable();
    let mut others = others.into_iter().peekable();
    loop {
        let stored_first = match (others.peek(), named.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(other), Some(next)) => matches!((other.1, next.1), (Some(a), Some(b)) if a < b),
        };
        let next = if stored_first { others.next() } else { named.next() };
        ordered.extend(next.map(|e| e.2));
    }
    ordered
}

/// What identifies a list element: its merge key's value, or itself without a key.
fn identity<'v>(element: &'v Value, key: Option<&str>, path: &Path<'_>) -> Result<&'v Value> {
    match (key, element) {
        (None, element) => Ok(element),
        (Some(key), Value::Object(fields)) => identity_of(fields, key, path),
        (Some(_), other) => Err(not_an_object(path, other)),
    }
}

fn identity_of<'v>(fields: &'v Map<String, Value>, key: &str, path: &Path<'_>) -> Result<&'v Value> {
    fields
        .get(key)
        .filter(|v| !v.is_null())
        .ok_or_else(|| StrategicMergeError::MissingMergeKey { path: path.to_string(), key: key.to_owned() })
}

fn identities<'p>(list: &[Value], key: Option<&str>, path: impl Fn(usize) -> Path<'p>) -> Result<Vec<Value>> {
    list.iter().enumerate().map(|(i, element)| identity(element, key, &path(i)).cloned()).collect()
}

/// `"$setElementOrder/containers"` → `"containers"`.
fn directive_field<'k>(key: &'k str, prefix: &str, path: &Path<'_>) -> Result<&'k str> {
    match key.split_once('/') {
        Some((head, field)) if head == prefix => Ok(field),
        _ => Err(invalid(path, key, format!("expected {prefix}/<field>"))),
    }
}

/// Where a value sits in the patch; rendered only when an error names it.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    step: Step<'a>,
}

#[derive(Clone, Copy)]
enum Step<'a> {
    Root,
    Field(&'a str),
    /// An element of the patch's list.
    Index(usize),
    /// An element of the stored list.
    Stored(usize),
}

impl<'a> Path<'a> {
    const ROOT: Path<'static> = Path { parent: None, step: Step::Root };

    fn field(&'a self, name: &'a str) -> Path<'a> {
        Path { parent: Some(self), step: Step::Field(name) }
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path { parent: Some(self), step: Step::Index(index) }
    }

    fn stored(&'a self, index: usize) -> Path<'a> {
        Path { parent: Some(self), step: Step::Stored(index) }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut steps = Vec::new();
        let mut at = Some(self);
        while let Some(path) = at {
            steps.push(path.step);
            at = path.parent;
        }
        let mut first = true;
        for step in steps.into_iter().rev() {
            match step {
                Step::Root => continue,
                Step::Field(name) if first => f.write_str(name)?,
                Step::Field(name) => write!(f, ".{name}")?,
                Step::Index(i) => write!(f, "[{i}]")?,
                Step::Stored(i) => write!(f, "[stored {i}]")?,
            }
            first = false;
        }
        if first {
            f.write_str("(patch)")?;
        }
        Ok(())
    }
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn not_an_object(path: &Path<'_>, value: &Value) -> StrategicMergeError {
    StrategicMergeError::NotAnObject { path: path.to_string(), found: kind_name(value) }
}

fn invalid(path: &Path<'_>, directive: &str, reason: impl Into<String>) -> StrategicMergeError {
    StrategicMergeError::InvalidDirective { path: path.to_string(), directive: directive.to_owned(), reason: reason.into() }
}

fn unknown_patch(path: &Path<'_>, value: &Value) -> StrategicMergeError {
    invalid(path, PATCH, format!("unknown value {value}; expected \"replace\", \"delete\" or \"merge\""))
}

fn unmergeable(path: &Path<'_>, reason: &'static str) -> StrategicMergeError {
    StrategicMergeError::UnmergeableList { path: path.to_string(), reason }
}
