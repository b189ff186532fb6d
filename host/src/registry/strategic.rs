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
//! decoding into the typed object drop what it does not know. A new list keeps its
//! elements as given, duplicates included.
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
        if key == PATCH || key == RETAIN_KEYS || key.starts_with(SET_ELEMENT_ORDER) || ordered.contains(&key.as_str()) {
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
        Value::Array(patch) => Value::Array(new_list(patch, schema, path)?),
        scalar => scalar.clone(),
    })
}

/// A list the patch introduces (replacing a list without the merge strategy, or where
/// nothing is stored): the patch's elements as they are, duplicates included, each merged
/// into nothing, `$patch` marker elements aside.
fn new_list(patch: &[Value], schema: Option<Schema<'_>>, path: &Path<'_>) -> Result<Vec<Value>> {
    let items = schema.and_then(Schema::items);
    let mut list = Vec::with_capacity(patch.len());
    for (i, element) in patch.iter().enumerate() {
        let path = path.index(i);
        if let Some(directive) = element.get(PATCH) {
            match directive.as_str() {
                // The list is new anyway: nothing stored to replace or delete from.
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
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    keep: &Value,
    path: &Path<'_>,
) -> Result<()> {
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
        (None, Some(patched)) => (new_list(patched, schema, &path)?, Vec::new()),
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
        let mut order = Vec::with_capacity(merging.len());
        for (i, fields) in merging {
            let path = path.index(i);
            order.push(identity_of(fields, key, &path)?.clone());
            replacement.push(Value::Object(merge_map(Map::new(), fields, items, &path)?));
        }
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
    StrategicMergeError::InvalidDirective {
        path: path.to_string(),
        directive: directive.to_owned(),
        reason: reason.into(),
    }
}

fn unknown_patch(path: &Path<'_>, value: &Value) -> StrategicMergeError {
    invalid(path, PATCH, format!("unknown value {value}; expected \"replace\", \"delete\" or \"merge\""))
}

fn unmergeable(path: &Path<'_>, reason: &'static str) -> StrategicMergeError {
    StrategicMergeError::UnmergeableList { path: path.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use serde_json::json;

    use super::super::schema::Definitions;
    use super::*;

    fn definitions() -> &'static Definitions {
        static DEFINITIONS: OnceLock<Definitions> = OnceLock::new();
        DEFINITIONS.get_or_init(|| {
            serde_json::from_str(include_str!("../../openapi/k8s-1.33-definitions.json")).expect("vendored definitions")
        })
    }

    fn schema(kind: &str) -> Schema<'static> {
        Schema::definition(definitions(), kind).expect(kind)
    }

    const POD: &str = "io.k8s.api.core.v1.Pod";
    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";

    fn patched(kind: &str, original: Value, patch: Value) -> Value {
        apply(&original, &patch, Some(schema(kind))).expect("the patch applies")
    }

    fn rejected(kind: &str, original: Value, patch: Value) -> StrategicMergeError {
        apply(&original, &patch, Some(schema(kind))).expect_err("the patch is rejected")
    }

    /// A pod whose spec has these containers.
    fn pod(containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    fn containers(pod: &Value) -> &Value {
        &pod["spec"]["containers"]
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array().expect("a list").iter().map(|e| e["name"].as_str().expect("a name")).collect()
    }

    fn has_directive(value: &Value) -> bool {
        match value {
            Value::Object(fields) => fields.iter().any(|(k, v)| {
                k == PATCH
                    || k == RETAIN_KEYS
                    || k.starts_with(SET_ELEMENT_ORDER)
                    || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
                    || has_directive(v)
            }),
            Value::Array(items) => items.iter().any(has_directive),
            _ => false,
        }
    }

    /// `patch_test.go`'s `MergeItem`, as an OpenAPI definition.
    fn merge_item() -> Definitions {
        let merging_list = |strategy: &str| {
            json!({
                "type": "array",
                "items": {"$ref": "#/definitions/mergeItem"},
                "x-kubernetes-patch-strategy": strategy,
                "x-kubernetes-patch-merge-key": "name",
            })
        };
        let item = json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "value": {"type": "string"},
            "other": {"type": "string"},
            "mergingList": merging_list("merge"),
            "nonMergingList": {"type": "array", "items": {"$ref": "#/definitions/mergeItem"}},
            "mergingIntList": {"type": "array", "items": {"type": "integer"}, "x-kubernetes-patch-strategy": "merge"},
            "nonMergingIntList": {"type": "array", "items": {"type": "integer"}},
            "simpleMap": {"type": "object", "additionalProperties": {"type": "string"}},
            "replacingItem": {"type": "object", "x-kubernetes-patch-strategy": "replace"},
            "retainKeysMap": {"$ref": "#/definitions/mergeItem", "x-kubernetes-patch-strategy": "retainKeys"},
            "retainKeysMergingList": merging_list("merge,retainKeys"),
        }});
        Map::from_iter([("mergeItem".to_owned(), item)])
    }

    /// `patch_test.go` cases (current object, patch, expected result), applied with its
    /// `MergeItem` schema; the order of every list is checked.
    #[test]
    fn kubernetes_patch_test_cases() {
        let cases = [
            // "unique scalars when merging lists"
            (
                json!({"mergingIntList": [1, 2]}),
                json!({"mergingIntList": [2, 3]}),
                json!({"mergingIntList": [1, 2, 3]}),
            ),
            // "delete map from nested map"
            (json!({"simpleMap": {"key1": "1"}}), json!({"simpleMap": {"$patch": "delete"}}), json!({"simpleMap": {}})),
            // "delete all keys from map"
            (json!({"name": "1", "value": "1"}), json!({"$patch": "replace"}), json!({})),
            // "merge empty merging lists"
            (json!({"mergingList": []}), json!({"mergingList": []}), json!({"mergingList": []})),
            // "defined null values should propagate overwrite current fields (with conflict)"
            (
                json!({"name": "a", "other": "a"}),
                json!({"name": "1", "value": "1", "other": null}),
                json!({"name": "1", "value": "1"}),
            ),
            // "delete field from nested map"
            (
                json!({"simpleMap": {"key1": "1", "key2": "1", "other": "a"}}),
                json!({"simpleMap": {"key2": null}}),
                json!({"simpleMap": {"key1": "1", "other": "a"}}),
            ),
            // "replace list of scalars with conflict"
            (
                json!({"nonMergingIntList": [1, 4]}),
                json!({"nonMergingIntList": [2, 3]}),
                json!({"nonMergingIntList": [2, 3]}),
            ),
            // "delete all maps from merging list with conflict"
            (
                json!({"mergingList": [{"name": "1", "other": "a"}, {"name": "2", "other": "b"}]}),
                json!({"mergingList": [{"name": "1", "$patch": "delete"}, {"name": "2", "$patch": "delete"}]}),
                json!({"mergingList": []}),
            ),
            // "merge lists of maps"
            (
                json!({"mergingList": [{"name": "1", "other": "a"}, {"name": "2", "value": "2", "other": "b"}]}),
                json!({
                    "$setElementOrder/mergingList": [{"name": "4"}, {"name": "1"}, {"name": "2"}, {"name": "3"}],
                    "mergingList": [{"name": "4", "value": "4"}, {"name": "3", "value": "3"}],
                }),
                json!({"mergingList": [
                    {"name": "4", "value": "4"},
                    {"name": "1", "other": "a"},
                    {"name": "2", "value": "2", "other": "b"},
                    {"name": "3", "value": "3"},
                ]}),
            ),
            // "add field to map in merging list with conflict"
            (
                json!({"mergingList": [{"name": "1", "other": "a"}, {"name": "3", "value": "2", "other": "b"}]}),
                json!({
                    "$setElementOrder/mergingList": [{"name": "1"}, {"name": "2"}],
                    "mergingList": [{"name": "1", "value": "1"}, {"name": "2", "value": "2"}],
                }),
                json!({"mergingList": [
                    {"name": "1", "value": "1", "other": "a"},
                    {"name": "2", "value": "2"},
                    {"name": "3", "value": "2", "other": "b"},
                ]}),
            ),
            // "delete missing field from map in merging list with conflict"
            (
                json!({"mergingList": [{"name": "1", "other": "a"}, {"name": "2", "other": "b"}]}),
                json!({
                    "$setElementOrder/mergingList": [{"name": "1"}, {"name": "2"}],
                    "mergingList": [{"name": "1", "value": null}, {"name": "2", "value": "2"}],
                }),
                json!({"mergingList": [{"name": "1", "other": "a"}, {"name": "2", "value": "2", "other": "b"}]}),
            ),
            // "replace non merging list nested in merging list"
            (
                json!({"mergingList": [
                    {"name": "1", "other": "a", "nonMergingList": [{"name": "1"}, {"name": "2", "value": "2"}]},
                    {"name": "2", "other": "b"},
                ]}),
                json!({
                    "$setElementOrder/mergingList": [{"name": "1"}, {"name": "2"}],
                    "mergingList": [{"name": "1", "nonMergingList": [{"name": "1", "value": "1"}]}],
                }),
                json!({"mergingList": [
                    {"name": "1", "other": "a", "nonMergingList": [{"name": "1", "value": "1"}]},
                    {"name": "2", "other": "b"},
                ]}),
            ),
            // "add field to map in merging list nested in merging list with deletion conflict" (the second)
            (
                json!({"mergingList": [
                    {"name": "1", "other": "a", "mergingList": [{"name": "2", "value": "2", "other": "d"}]},
                    {"name": "2", "other": "b"},
                ]}),
                json!({
                    "$setElementOrder/mergingList": [{"name": "1"}, {"name": "2"}],
                    "mergingList": [{
                        "$setElementOrder/mergingList": [{"name": "2"}, {"name": "1"}],
                        "name": "1",
                        "mergingList": [{"name": "1", "value": "1"}],
                    }],
                }),
                json!({"mergingList": [
                    {"name": "1", "other": "a", "mergingList": [
                        {"name": "2", "value": "2", "other": "d"},
                        {"name": "1", "value": "1"},
                    ]},
                    {"name": "2", "other": "b"},
                ]}),
            ),
            // "add an item in a list of primitives and preserve order"
            (
                json!({"mergingIntList": [1, 4, 2]}),
                json!({"$setElementOrder/mergingIntList": [3, 1, 2], "mergingIntList": [3]}),
                json!({"mergingIntList": [3, 1, 4, 2]}),
            ),
            // "delete an item in a list and preserve order"
            (
                json!({"mergingList": [
                    {"name": "1", "other": "a"},
                    {"name": "2", "value": "2", "other": "b"},
                    {"name": "3", "value": "3"},
                ]}),
                json!({
                    "$setElementOrder/mergingList": [{"name": "2"}, {"name": "1"}],
                    "mergingList": [{"name": "3", "$patch": "delete"}],
                }),
                json!({"mergingList": [{"name": "2", "value": "2", "other": "b"}, {"name": "1", "other": "a"}]}),
            ),
            // "add and delete an item in a list and preserve order"
            (
                json!({"mergingList": [
                    {"name": "1", "other": "a"},
                    {"name": "2", "value": "2", "other": "b"},
                    {"name": "3", "value": "3"},
                ]}),
                json!({
                    "$setElementOrder/mergingList": [{"name": "4"}, {"name": "2"}, {"name": "1"}],
                    "mergingList": [{"name": "4", "value": "4"}, {"name": "3", "$patch": "delete"}],
                }),
                json!({"mergingList": [
                    {"name": "4", "value": "4"},
                    {"name": "2", "value": "2", "other": "b"},
                    {"name": "1", "other": "a"},
                ]}),
            ),
            // "set elements order in a list with server-only items 3"
            (
                json!({"mergingList": [
                    {"name": "1", "other": "a"},
                    {"name": "2"},
                    {"name": "7"},
                    {"name": "9"},
                    {"name": "8"},
                    {"name": "3"},
                    {"name": "4"},
                ]}),
                json!({"$setElementOrder/mergingList": [{"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}]}),
                json!({"mergingList": [
                    {"name": "2"},
                    {"name": "1", "other": "a"},
                    {"name": "7"},
                    {"name": "9"},
                    {"name": "8"},
                    {"name": "4"},
                    {"name": "3"},
                ]}),
            ),
            // "set elements order in a int list with server-only items 2"
            (
                json!({"mergingIntList": [1, 2, 9, 3, 4]}),
                json!({"$setElementOrder/mergingIntList": [2, 1, 4, 3]}),
                json!({"mergingIntList": [2, 1, 9, 4, 3]}),
            ),
            // "add and delete an item in a int list and preserve order"
            (
                json!({"mergingIntList": [1, 2, 3]}),
                json!({
                    "$setElementOrder/mergingIntList": [4, 2, 1],
                    "mergingIntList": [4],
                    "$deleteFromPrimitiveList/mergingIntList": [3],
                }),
                json!({"mergingIntList": [4, 2, 1]}),
            ),
            // "behavior of set element order for a merging list with duplicate"
            (
                json!({"mergingList": [
                    {"name": "1"},
                    {"name": "2", "value": "dup1"},
                    {"name": "3"},
                    {"name": "2", "value": "dup2"},
                    {"name": "4"},
                ]}),
                json!({"$setElementOrder/mergingList": [
                    {"name": "2"},
                    {"name": "1"},
                    {"name": "4"},
                    {"name": "3"},
                    {"name": "2"},
                ]}),
                json!({"mergingList": [
                    {"name": "2", "value": "dup1"},
                    {"name": "2", "value": "dup2"},
                    {"name": "1"},
                    {"name": "4"},
                    {"name": "3"},
                ]}),
            ),
            // "behavior of set element order for a merging int list with duplicate"
            (
                json!({"mergingIntList": [1, 2, 3, 2, 4]}),
                json!({"$setElementOrder/mergingIntList": [2, 1, 4, 3, 2]}),
                json!({"mergingIntList": [2, 2, 1, 4, 3]}),
            ),
            // "retainKeys map should clear defaulted field with conflict (discriminated union)"
            (
                json!({"retainKeysMap": {"name": "type1", "value": "foo"}}),
                json!({"retainKeysMap": {"$retainKeys": ["name", "other"], "name": "type2", "other": "bar"}}),
                json!({"retainKeysMap": {"name": "type2", "other": "bar"}}),
            ),
            // "retainKeys map deletes a field and clears a field"
            (
                json!({"retainKeysMap": {"name": "foo", "value": "bar", "other": "a"}}),
                json!({"retainKeysMap": {"$retainKeys": ["name"], "value": null}}),
                json!({"retainKeysMap": {"name": "foo"}}),
            ),
            // "retainKeys list can change a field when no retainKeys directive present"
            (
                json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a"}]}),
                json!({"retainKeysMergingList": [{"name": "foo", "value": "b"}]}),
                json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "b"}]}),
            ),
            // A field with the replace strategy.
            (
                json!({"replacingItem": {"a": 1, "b": 2}}),
                json!({"replacingItem": {"c": 3}}),
                json!({"replacingItem": {"c": 3}}),
            ),
        ];
        let definitions = merge_item();
        let schema = Schema::definition(&definitions, "mergeItem");
        for (current, patch, expected) in cases {
            let result = apply(&current, &patch, schema).unwrap_or_else(|e| panic!("{patch}: {e}"));
            assert_eq!(result, expected, "patch {patch} on {current}");
        }
    }

    #[test]
    fn containers_merge_by_name_and_the_others_stay() {
        let original = pod(json!([
            {"name": "app", "image": "nginx:1", "args": ["-v"]},
            {"name": "sidecar", "image": "envoy"},
        ]));
        let result = patched(POD, original, json!({"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}));
        assert_eq!(
            containers(&result),
            &json!([{"name": "app", "image": "nginx:2", "args": ["-v"]}, {"name": "sidecar", "image": "envoy"}])
        );
        assert_eq!(result["metadata"], json!({"name": "p"}));
    }

    #[test]
    fn new_container_lands_before_the_stored_ones() {
        // The kubectl patch task page: patch-demo-ctr-2 (redis) is listed first afterwards.
        let original = pod(json!([{"name": "patch-demo-ctr", "image": "nginx"}]));
        let patch = json!({"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}});
        let result = patched(POD, original, patch);
        assert_eq!(names(containers(&result)), ["patch-demo-ctr-2", "patch-demo-ctr"]);
    }

    #[test]
    fn set_element_order_places_a_new_container() {
        let original = pod(json!([{"name": "patch-demo-ctr", "image": "nginx"}]));
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "patch-demo-ctr"}, {"name": "patch-demo-ctr-2"}],
            "containers": [{"name": "patch-demo-ctr-2", "image": "redis"}],
        }});
        let result = patched(POD, original, patch);
        assert_eq!(
            containers(&result),
            &json!([{"name": "patch-demo-ctr", "image": "nginx"}, {"name": "patch-demo-ctr-2", "image": "redis"}])
        );
        assert!(!has_directive(&result));
    }

    #[test]
    fn env_merges_by_name_inside_a_container() {
        let original = pod(json!([{"name": "app", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]));
        let patch = json!({"spec": {"containers": [
            {"name": "app", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
        ]}});
        let result = patched(POD, original, patch);
        assert_eq!(
            containers(&result)[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
    }

    #[test]
    fn ports_merge_by_container_port() {
        let original = pod(json!([{"name": "app", "ports": [{"containerPort": 80, "name": "http"}]}]));
        let patch = json!({"spec": {"containers": [{"name": "app", "ports": [
            {"containerPort": 80, "protocol": "TCP"},
            {"containerPort": 443, "name": "https"},
        ]}]}});
        let result = patched(POD, original, patch);
        assert_eq!(
            containers(&result)[0]["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 443, "name": "https"}])
        );
    }

    #[test]
    fn delete_directive_removes_the_keyed_element() {
        let original = pod(json!([{"name": "a"}, {"name": "b", "image": "x"}]));
        let result = patched(POD, original, json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}));
        assert_eq!(containers(&result), &json!([{"name": "b", "image": "x"}]));
    }

    #[test]
    fn delete_directive_removes_every_duplicate() {
        // patch_test.go: "delete all duplicate entries in a merging list".
        let env = json!([{"name": "1"}, {"name": "1"}, {"name": "2", "value": "a"}, {"name": "3"}, {"name": "3"}]);
        let original = pod(json!([{"name": "app", "env": env}]));
        let patch = json!({"spec": {"containers": [{"name": "app", "env": [
            {"name": "1", "$patch": "delete"},
            {"name": "3", "$patch": "delete"},
        ]}]}});
        let result = patched(POD, original, patch);
        assert_eq!(containers(&result)[0]["env"], json!([{"name": "2", "value": "a"}]));
    }

    #[test]
    fn delete_directive_for_a_missing_element_changes_nothing() {
        let original = pod(json!([{"name": "a"}]));
        let result =
            patched(POD, original.clone(), json!({"spec": {"containers": [{"name": "z", "$patch": "delete"}]}}));
        assert_eq!(result, original);
    }

    #[test]
    fn replace_directive_element_replaces_the_list() {
        let original = pod(json!([{"name": "a", "image": "x"}, {"name": "b"}]));
        let patch = json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "y"}]}});
        let result = patched(POD, original, patch);
        assert_eq!(containers(&result), &json!([{"name": "c", "image": "y"}]));
    }

    #[test]
    fn replace_directive_alone_empties_the_list() {
        // patch_test.go: "delete all items from merging list".
        let original = pod(json!([{"name": "a"}, {"name": "b"}]));
        let result = patched(POD, original, json!({"spec": {"containers": [{"$patch": "replace"}]}}));
        assert_eq!(containers(&result), &json!([]));
    }

    #[test]
    fn replace_directive_replaces_an_object() {
        let original =
            json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}, "spec": {"nodeSelector": {"x": "y"}}});
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}});
        let result = patched(POD, original, patch);
        assert_eq!(result["metadata"], json!({"name": "p", "labels": {"c": "3"}}));
        assert_eq!(result["spec"]["nodeSelector"], json!({"x": "y"}));
    }

    #[test]
    fn replace_directive_at_the_top_replaces_the_object() {
        // patch_test.go: "add key and delete all keys from map".
        let original = json!({"kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {}});
        let patch = json!({"$patch": "replace", "kind": "Pod", "metadata": {"name": "q"}});
        assert_eq!(patched(POD, original, patch), json!({"kind": "Pod", "metadata": {"name": "q"}}));
    }

    #[test]
    fn delete_directive_empties_an_object() {
        // patch_test.go: "delete map from nested map".
        let original = json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}});
        let result = patched(POD, original, json!({"metadata": {"labels": {"$patch": "delete"}}}));
        assert_eq!(result["metadata"], json!({"name": "p", "labels": {}}));
    }

    #[test]
    fn merge_directive_changes_nothing() {
        let original =
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let patch = json!({
            "metadata": {"labels": {"$patch": "merge", "b": "2"}},
            "spec": {"containers": [{"name": "c", "$patch": "merge", "image": "y"}]},
        });
        let result = patched(POD, original, patch);
        assert_eq!(result["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(containers(&result), &json!([{"name": "c", "image": "y"}]));
    }

    #[test]
    fn null_deletes_a_field_and_adds_none() {
        let original =
            json!({"metadata": {"name": "p", "annotations": {"a": "1", "b": "2"}}, "spec": {"nodeName": "n1"}});
        let patch =
            json!({"metadata": {"annotations": {"a": null, "zz": null}}, "spec": {"nodeName": null, "hostname": null}});
        let result = patched(POD, original, patch);
        assert_eq!(result, json!({"metadata": {"name": "p", "annotations": {"b": "2"}}, "spec": {}}));
    }

    #[test]
    fn lists_without_the_merge_strategy_are_replaced() {
        let original = json!({"spec": {
            "tolerations": [{"key": "a", "operator": "Exists"}],
            "containers": [{"name": "c", "args": ["-a", "-b"]}],
        }});
        let patch = json!({"spec": {
            "tolerations": [{"key": "b", "operator": "Exists"}],
            "containers": [{"name": "c", "args": ["-c"]}],
        }});
        let result = patched(POD, original, patch);
        assert_eq!(result["spec"]["tolerations"], json!([{"key": "b", "operator": "Exists"}]));
        assert_eq!(containers(&result)[0]["args"], json!(["-c"]));
    }

    #[test]
    fn replace_strategy_replaces_the_disruption_budget_selector() {
        let original = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "minAvailable": 1}});
        let patch = json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}});
        let result = patched("io.k8s.api.policy.v1.PodDisruptionBudget", original, patch);
        assert_eq!(result["spec"], json!({"selector": {"matchLabels": {"b": "2"}}, "minAvailable": 1}));
    }

    #[test]
    fn retain_keys_clears_the_deployment_strategy() {
        let original =
            json!({"spec": {"replicas": 2, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let result = patched(DEPLOYMENT, original, patch);
        assert_eq!(result["spec"], json!({"replicas": 2, "strategy": {"type": "Recreate"}}));
    }

    #[test]
    fn retain_keys_strategy_without_the_directive_merges() {
        // patch_test.go: "retainKeys map can add a field when no retainKeys directive present".
        let original = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"rollingUpdate": {"maxUnavailable": 0}}}});
        let result = patched(DEPLOYMENT, original, patch);
        assert_eq!(
            result["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
        );
    }

    #[test]
    fn retain_keys_switches_a_volume_source() {
        let original = json!({"spec": {"volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "cfg", "configMap": {"name": "c"}},
        ]}});
        let patch = json!({"spec": {"volumes": [
            {"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/srv"}},
        ]}});
        let result = patched(POD, original, patch);
        assert_eq!(
            result["spec"]["volumes"],
            json!([{"name": "data", "hostPath": {"path": "/srv"}}, {"name": "cfg", "configMap": {"name": "c"}}])
        );
    }

    #[test]
    fn retain_keys_rejects_a_field_it_leaves_out() {
        let original = json!({"spec": {"strategy": {"type": "RollingUpdate"}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {}}}});
        let error = rejected(DEPLOYMENT, original, patch);
        assert!(matches!(&error, StrategicMergeError::InvalidDirective { path, directive, .. }
            if path == "spec.strategy" && directive == "$retainKeys"));
        let patch = json!({"spec": {"strategy": {"$retainKeys": "type"}}});
        assert!(matches!(rejected(DEPLOYMENT, json!({}), patch), StrategicMergeError::InvalidDirective { .. }));
    }

    #[test]
    fn delete_from_primitive_list_removes_finalizers() {
        let original = json!({"metadata": {"finalizers": ["a", "b", "c", "b"]}});
        let result = patched(POD, original, json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "z"]}}));
        assert_eq!(result["metadata"], json!({"finalizers": ["a", "c"]}));
    }

    #[test]
    fn delete_from_primitive_list_without_a_stored_list_adds_nothing() {
        let result =
            patched(POD, json!({"metadata": {}}), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}));
        assert_eq!(result, json!({"metadata": {}}));
    }

    #[test]
    fn delete_from_primitive_list_rejects_objects() {
        let original = pod(json!([{"name": "a"}]));
        let patch = json!({"spec": {"$deleteFromPrimitiveList/containers": [{"name": "a"}]}});
        assert!(matches!(rejected(POD, original, patch), StrategicMergeError::InvalidDirective { .. }));
    }

    #[test]
    fn finalizers_merge_as_an_ordered_set() {
        // patch_test.go: "unique scalars when merging lists".
        let result = patched(
            POD,
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        );
        assert_eq!(result["metadata"]["finalizers"], json!(["a", "b", "c"]));
    }

    #[test]
    fn scalar_merge_follows_the_patch_order() {
        // patch_test.go: "preserve the order from the patch in a merging int list".
        let original = json!({"metadata": {"finalizers": ["x", "y", "z"]}});
        let result = patched(POD, original, json!({"metadata": {"finalizers": ["z", "x"]}}));
        assert_eq!(result["metadata"]["finalizers"], json!(["y", "z", "x"]));
    }

    #[test]
    fn object_merge_follows_the_patch_order() {
        // patch_test.go: "preserve the order from the patch in a merging list" (1 and 2).
        let original = pod(json!([{"name": "1"}, {"name": "2", "image": "b"}, {"name": "3"}]));
        let patch = json!({"spec": {"containers": [
            {"name": "3", "image": "c"},
            {"name": "1", "image": "a"},
            {"name": "2", "workingDir": "x"},
        ]}});
        let result = patched(POD, original.clone(), patch);
        assert_eq!(
            containers(&result),
            &json!([
                {"name": "3", "image": "c"},
                {"name": "1", "image": "a"},
                {"name": "2", "image": "b", "workingDir": "x"},
            ])
        );
        let patch = json!({"spec": {"containers": [{"name": "3", "image": "c"}, {"name": "1", "image": "a"}]}});
        let result = patched(POD, original, patch);
        assert_eq!(
            containers(&result),
            &json!([{"name": "2", "image": "b"}, {"name": "3", "image": "c"}, {"name": "1", "image": "a"}])
        );
    }

    #[test]
    fn set_element_order_with_an_addition_and_a_deletion() {
        // patch_test.go: "add map and delete map from merging list" (three-way result).
        let original = pod(json!([{"name": "1"}, {"name": "2", "image": "b"}, {"name": "4", "image": "c"}]));
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "2"}, {"name": "3"}],
            "containers": [{"name": "3"}, {"name": "1", "$patch": "delete"}],
        }});
        let result = patched(POD, original, patch);
        assert_eq!(
            containers(&result),
            &json!([{"name": "2", "image": "b"}, {"name": "4", "image": "c"}, {"name": "3"}])
        );
    }

    #[test]
    fn set_element_order_with_additions_and_a_deletion_of_server_only_elements() {
        // patch_test.go: "add map and delete map from merging list with conflict".
        let original = pod(json!([{"name": "1", "image": "a"}, {"name": "4", "image": "c"}]));
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "2"}, {"name": "3"}],
            "containers": [{"name": "2"}, {"name": "3"}, {"name": "1", "$patch": "delete"}],
        }});
        let result = patched(POD, original, patch);
        assert_eq!(names(containers(&result)), ["4", "2", "3"]);
        // patch_test.go: "delete missing map from merging list with conflict".
        let original = pod(json!([{"name": "3", "image": "a"}]));
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "2"}],
            "containers": [{"name": "2"}, {"name": "1", "$patch": "delete"}],
        }});
        assert_eq!(names(containers(&patched(POD, original, patch))), ["2", "3"]);
    }

    #[test]
    fn set_element_order_alone_reorders() {
        // patch_test.go: "$setElementOrder contains item that is not present in the (int) list to be merged".
        let result = patched(
            POD,
            json!({"metadata": {"finalizers": ["a", "c"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"]}}),
        );
        assert_eq!(result, json!({"metadata": {"finalizers": ["c", "a"]}}));
        let original = pod(json!([{"name": "1"}, {"name": "3"}]));
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}],
            "containers": [{"name": "3", "image": "x"}, {"name": "1", "image": "y"}],
        }});
        let result = patched(POD, original, patch);
        assert_eq!(containers(&result), &json!([{"name": "3", "image": "x"}, {"name": "1", "image": "y"}]));
    }

    #[test]
    fn set_element_order_with_scalar_additions_and_deletions() {
        // patch_test.go: "add and delete items in lists of scalars" (three-way result).
        let original = json!({"metadata": {"finalizers": ["a", "b", "c", "d"]}});
        let patch = json!({"metadata": {
            "$setElementOrder/finalizers": ["a", "b", "d"],
            "$deleteFromPrimitiveList/finalizers": ["c"],
            "finalizers": ["d"],
        }});
        assert_eq!(patched(POD, original, patch), json!({"metadata": {"finalizers": ["a", "b", "d"]}}));
    }

    #[test]
    fn set_element_order_that_contradicts_the_patch_is_an_error() {
        // patch_test.go: "should check if order in $setElementOrder and patch list match".
        let original = pod(json!([{"name": "1"}, {"name": "3"}, {"name": "2"}]));
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
            "containers": [{"name": "3", "image": "x"}, {"name": "1", "image": "y"}],
        }});
        let error = rejected(POD, original, patch);
        assert!(matches!(&error, StrategicMergeError::InvalidDirective { path, directive, .. }
            if path == "spec.containers" && directive == "$setElementOrder/containers"));
    }

    #[test]
    fn set_element_order_on_a_replaced_list_is_ignored() {
        let original = json!({"spec": {"tolerations": [{"key": "a"}]}});
        let patch = json!({"spec": {"$setElementOrder/tolerations": [{"key": "b"}], "tolerations": [{"key": "b"}]}});
        assert_eq!(patched(POD, original, patch), json!({"spec": {"tolerations": [{"key": "b"}]}}));
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let original = json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "kind": "ReplicaSet", "name": "rs", "controller": true},
        ]}});
        let patch = json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "controller": false},
            {"uid": "u2", "kind": "Job", "name": "j"},
        ]}});
        let result = patched(POD, original, patch);
        assert_eq!(
            result["metadata"]["ownerReferences"],
            json!([
                {"uid": "u1", "kind": "ReplicaSet", "name": "rs", "controller": false},
                {"uid": "u2", "kind": "Job", "name": "j"},
            ])
        );
    }

    #[test]
    fn unknown_fields_merge_like_a_json_merge_patch() {
        let original = json!({"spec": {"future": {"a": 1, "list": [{"name": "x"}]}}});
        let patch = json!({"spec": {"future": {"list": [{"name": "y"}], "b": {"c": null, "d": 2}}}});
        let result = patched(POD, original, patch);
        assert_eq!(result["spec"]["future"], json!({"a": 1, "list": [{"name": "y"}], "b": {"d": 2}}));
    }

    #[test]
    fn a_value_of_another_type_replaces_the_stored_one() {
        let original = json!({"spec": {"future": "text", "hostname": "h"}});
        let patch = json!({"spec": {"future": {"a": null, "b": 1}, "hostname": ["h"]}});
        let result = patched(POD, original, patch);
        assert_eq!(result["spec"], json!({"future": {"b": 1}, "hostname": ["h"]}));
    }

    #[test]
    fn without_a_schema_objects_merge_and_lists_are_replaced() {
        let original = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "m": {"x": 1, "y": 2}}});
        let patch = json!({"spec": {"containers": [{"name": "b"}], "m": {"x": null, "z": 3}}});
        let result = apply(&original, &patch, None).expect("the patch applies");
        assert_eq!(result, json!({"spec": {"containers": [{"name": "b"}], "m": {"y": 2, "z": 3}}}));
    }

    #[test]
    fn without_a_schema_directives_still_apply() {
        let original = json!({"a": {"x": 1, "y": 2}, "b": {"x": 1}, "c": {"keep": 1, "drop": 2}, "d": [1, 2]});
        let patch = json!({
            "a": {"$patch": "replace", "z": 3},
            "b": {"$patch": "delete"},
            "c": {"$retainKeys": ["keep"]},
            "d": [{"$patch": "replace"}, 3],
        });
        let result = apply(&original, &patch, None).expect("the patch applies");
        assert_eq!(result, json!({"a": {"z": 3}, "b": {}, "c": {"keep": 1}, "d": [3]}));
    }

    #[test]
    fn dollar_fields_that_are_not_directives_are_kept() {
        let original = json!({"schema": {"type": "object"}});
        let patch = json!({"schema": {"$ref": "#/definitions/x", "$schema": "draft-04"}});
        let result = apply(&original, &patch, None).expect("the patch applies");
        assert_eq!(result, json!({"schema": {"type": "object", "$ref": "#/definitions/x", "$schema": "draft-04"}}));
    }

    #[test]
    fn directives_inside_new_values_apply_and_never_reach_the_result() {
        let original = pod(json!([{"name": "app"}]));
        let patch = json!({
            "metadata": {"labels": {"$patch": "replace", "a": "1", "gone": null}},
            "spec": {"containers": [{
                "name": "new",
                "$setElementOrder/env": [{"name": "B"}, {"name": "A"}],
                "env": [{"name": "C", "$patch": "delete"}, {"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
                "resources": {"limits": {"cpu": "1", "memory": null}},
            }]},
        });
        let result = patched(POD, original, patch);
        assert!(!has_directive(&result), "{result}");
        assert_eq!(result["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(
            containers(&result),
            &json!([
                {
                    "name": "new",
                    "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
                    "resources": {"limits": {"cpu": "1"}},
                },
                {"name": "app"},
            ])
        );
    }

    #[test]
    fn a_new_list_is_taken_as_the_patch_gives_it() {
        let original = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}});
        let patch = json!({
            "metadata": {"finalizers": ["a", "a"]},
            "spec": {"containers": [{"name": "app", "env": [
                {"name": "X", "value": "1"},
                {"name": "X", "value": "2"},
                {"name": "Y", "$patch": "delete"},
            ]}]},
        });
        let result = patched(POD, original, patch);
        assert_eq!(result["metadata"]["finalizers"], json!(["a", "a"]));
        assert_eq!(containers(&result)[0]["env"], json!([{"name": "X", "value": "1"}, {"name": "X", "value": "2"}]));
    }

    #[test]
    fn an_empty_patch_changes_nothing() {
        let original = pod(json!([{"name": "a", "env": [{"name": "X"}]}]));
        assert_eq!(patched(POD, original.clone(), json!({})), original);
        assert_eq!(patched(POD, Value::Null, json!({"kind": "Pod"})), json!({"kind": "Pod"}));
    }

    #[test]
    fn unknown_patch_directive_is_an_error() {
        let original = json!({"metadata": {"labels": {"a": "1"}}});
        let error = rejected(POD, original, json!({"metadata": {"labels": {"$patch": "bogus"}}}));
        assert!(matches!(&error, StrategicMergeError::InvalidDirective { path, directive, .. }
            if path == "metadata.labels" && directive == "$patch"));
        let error =
            rejected(POD, pod(json!([{"name": "a"}])), json!({"spec": {"containers": [{"name": "a", "$patch": 1}]}}));
        assert!(matches!(&error, StrategicMergeError::InvalidDirective { path, .. } if path == "spec.containers[0]"));
    }

    #[test]
    fn list_element_without_its_merge_key_is_an_error() {
        // patch_test.go: "missing merge key should error out".
        let error = rejected(POD, pod(json!([{"name": "a"}])), json!({"spec": {"containers": [{"image": "b"}]}}));
        assert_eq!(
            error,
            StrategicMergeError::MissingMergeKey { path: "spec.containers[0]".into(), key: "name".into() }
        );
        assert_eq!(error.to_string(), "spec.containers[0]: list element has no merge key \"name\"");
        let error = rejected(POD, pod(json!([{"name": "a"}])), json!({"spec": {"containers": [{"$patch": "delete"}]}}));
        assert!(matches!(error, StrategicMergeError::MissingMergeKey { .. }));
        let error = rejected(POD, pod(json!([{"image": "a"}])), json!({"spec": {"containers": [{"name": "b"}]}}));
        assert_eq!(
            error,
            StrategicMergeError::MissingMergeKey { path: "spec.containers[stored 0]".into(), key: "name".into() }
        );
    }

    #[test]
    fn a_patch_that_is_not_an_object_is_an_error() {
        let error = apply(&json!({}), &json!(["a"]), None).expect_err("rejected");
        assert_eq!(error, StrategicMergeError::NotAnObject { path: "(patch)".into(), found: "a list" });
        assert!(apply(&json!({}), &json!("x"), Some(schema(POD))).is_err());
        assert!(apply(&json!([1]), &json!({}), None).is_err());
        let error = rejected(POD, pod(json!([{"name": "a"}])), json!({"spec": {"containers": ["a"]}}));
        assert!(matches!(error, StrategicMergeError::UnmergeableList { .. }));
    }

    #[test]
    fn a_merging_list_of_mixed_elements_is_an_error() {
        let original = json!({"metadata": {"finalizers": ["a"]}});
        let error = rejected(POD, original, json!({"metadata": {"finalizers": [{"x": 1}]}}));
        assert!(matches!(&error, StrategicMergeError::UnmergeableList { path, .. } if path == "metadata.finalizers"));
        let original = json!({"metadata": {"finalizers": ["a"]}});
        let error = rejected(POD, original, json!({"metadata": {"finalizers": [["b"]]}}));
        assert!(matches!(error, StrategicMergeError::UnmergeableList { .. }));
    }

    /// The fuzz target of the strategic merge patch (bounded: see `crate::fuzzing`).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::fuzzing;

        proptest! {
            #![proptest_config(fuzzing::config())]

            /// Any patch over any stored value, with the Pod's patch strategies: never a
            /// panic, and what is applied is an object.
            #[test]
            fn any_patch_applies_or_is_refused(
                original in fuzzing::json_value(),
                patch in fuzzing::json_value(),
                spec in fuzzing::json_value(),
            ) {
                let schema = Schema::definition(definitions(), "io.k8s.api.core.v1.Pod");
                // Also with the values one level down, where the merge keys are.
                let nested = serde_json::json!({"spec": {"containers": [spec]}});
                for (original, patch) in [(&original, &patch), (&nested, &patch), (&original, &nested)] {
                    if let Ok(applied) = apply(original, patch, schema) {
                        prop_assert!(applied.is_object());
                    }
                }
            }
        }
    }
}
