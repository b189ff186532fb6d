//! Server-side apply: who owns which field of an object (`metadata.managedFields`), how an
//! applied configuration merges into the live object, and when a write conflicts with
//! another field manager. This follows sigs.k8s.io/structured-merge-diff v4 (field sets,
//! merge, compare, prune) and kube-apiserver's field manager around it (stripping of
//! server-owned metadata, one entry per manager, `before-first-apply`, the capped number of
//! `Update` entries, and kubectl's upgrade from client-side apply through the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation).
//!
//! Start with [`apply`] (an `application/apply-patch`) and [`record_update`] (every other
//! write). Both are pure: JSON in, JSON out; the [`Schema`] decides how maps and lists merge
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`).
//! Without a schema, or under `x-kubernetes-preserve-unknown-fields`, maps merge key by key
//! and lists are replaced whole.
//!
//! Invariants:
//! - a field set never names `apiVersion`, `kind`, `metadata` itself or the server-owned
//!   `metadata` fields (name, namespace, uid, resourceVersion, generation,
//!   creationTimestamp, deletionTimestamp, selfLink, managedFields);
//! - a manager entry with an empty field set is dropped, and `metadata.managedFields` is
//!   removed when no entry is left;
//! - apply only deletes a field the same manager applied before, omits now, and nobody
//!   else owns.
//!
//! Not modelled: conversion between API versions (every entry is read against the
//! object's own schema), `status` reset fields (the caller strips them), unions.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::OnceLock;

use serde_json::{Map, Number, Value};

use super::schema::{Definitions, ListType, Schema};

/// The annotation kubectl's client-side apply keeps its last configuration in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The only manager whose conflicts the last-applied annotation may excuse (kube-apiserver's rule).
const KUBECTL: &str = "kubectl";
/// The manager that takes the fields of an object that had no managedFields before its first apply.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";
/// At most this many `Update` entries are kept; older ones merge into [`ANCIENT_CHANGES`].
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";
/// kube-apiserver's limit on the total size of an object's annotations.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
const APPLY: &str = "Apply";
const UPDATE: &str = "Update";

/// One field a manager would take from another.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The field manager that owns the field now, e.g. `kubectl-client-side-apply`.
    pub manager: String,
    /// The field as kube-apiserver prints it: `.spec.replicas`,
    /// `.spec.containers[name="nginx"].image`, `.metadata.finalizers[="x"]`.
    pub path: String,
    /// The owner as kube-apiserver names it in messages and in a Status cause
    /// (`conflict with <owner>`): the quoted manager, then `with subresource "<s>"` for a
    /// subresource entry and `using <apiVersion>` for an `Update` entry, e.g.
    /// `"kubectl-client-side-apply" using v1`.
    pub owner: String,
}

/// Why an apply (or a recorded write) was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApplyError {
    /// Fields the applier would change are owned by other managers; re-apply with force to
    /// take them. The message is kube-apiserver's, e.g. `Apply failed with 1 conflict:
    /// conflict with "kubectl-client-side-apply" using v1: .data.key`.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The configuration or the stored managedFields cannot be used (a list-map item
    /// without its key, a value of the wrong shape, malformed managedFields, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Server-side apply of `config` (the applied object, already parsed from YAML/JSON) by
/// `manager` onto `live` (None = create).
///
/// Returns the new object with `metadata.managedFields` updated: this manager's `Apply`
/// entry (apiVersion from `config`, fieldsType `FieldsV1`) owns exactly the fields in
/// `config`; its time becomes `now` (RFC3339) when the object or the entry changed. Fields
/// this manager applied last time, omits now and nobody else owns are removed. Changing a
/// field another manager owns is a [`ApplyError::Conflicts`] unless `force`, which moves
/// the field to this manager; applying the value a field already has shares it.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    schema: Option<Schema<'_>>,
    now: &str,
) -> Result<Value, ApplyError> {
    if manager.is_empty() {
        return Err(invalid("fieldManager is required for apply"));
    }
    let Some(applied) = config.as_object() else {
        return Err(invalid("the applied configuration must be a JSON object"));
    };
    if metadata_field(config, "managedFields").is_some_and(|m| !m.is_null()) {
        return Err(invalid("metadata.managedFields must be nil"));
    }
    let Some(api_version) = applied.get("apiVersion").and_then(Value::as_str).filter(|v| !v.is_empty()) else {
        return Err(invalid("apiVersion must be set in the applied configuration"));
    };
    let ty = root_ty(schema);
    let (live, mut entries) = match live {
        None => (Value::Object(Map::new()), Vec::new()),
        Some(object) if object.is_object() => {
            let entries =
                decode_managed_fields(object).map_err(|e| invalid(format!("failed to decode managed fields: {e}")))?;
            (without_managed_fields(object), entries)
        }
        Some(_) => return Err(invalid("the live object must be a JSON object")),
    };
    if entries.is_empty() {
        // An object written before field management began: whatever it holds belongs to
        // `before-first-apply`, so the first apply conflicts instead of silently taking it.
        let existing = changed_fields(&compare(&Value::Object(Map::new()), &live, ty));
        if !existing.is_empty() {
            let version = live.get("apiVersion").and_then(Value::as_str).unwrap_or(api_version);
            entries.push(Entry::new(BEFORE_FIRST_APPLY, UPDATE, version, Some(now), existing));
        }
    }

    let attempt = |force| apply_once(&live, config, &entries, manager, api_version, force, ty, now);
    let outcome = match attempt(force) {
        // kubectl moving from client-side to server-side apply: fields whose live value
        // still matches the last-applied annotation are taken without a conflict.
        Err(Failure::Conflicts(found)) if manager == KUBECTL => match allowed_by_last_applied(&live, api_version, ty) {
            Some(allowed) => {
                let remaining: Vec<_> = found.into_iter().filter(|(path, _)| !allowed.has(path)).collect();
                if remaining.is_empty() {
                    attempt(true)
                } else {
                    Err(Failure::Conflicts(remaining))
                }
            }
            None => Err(Failure::Conflicts(found)),
        },
        other => other,
    };
    let (mut object, entries) = outcome.map_err(Failure::into_error)?;
    if manager == KUBECTL {
        sync_last_applied(&mut object, config);
    }
    write_managed_fields(&mut object, entries);
    Ok(object)
}

/// Record a non-apply write (create/update/patch) by `manager` (operation "Update"): the
/// fields that changed between `old` and `new` become owned by `manager` and are removed
/// from other managers' sets; returns `new` with managedFields updated. `old` None =
/// create (manager owns every field set).
///
/// As in kube-apiserver, managedFields sent in `new` replace the stored ones (`[]` or
/// `[{}]` resets them); otherwise the ones on `old` carry over.
pub fn record_update(
    old: Option<&Value>,
    new: Value,
    manager: &str,
    schema: Option<Schema<'_>>,
    now: &str,
) -> Result<Value, ApplyError> {
    if manager.is_empty() {
        return Err(invalid("fieldManager must not be empty"));
    }
    if !new.is_object() {
        return Err(invalid("the object must be a JSON object"));
    }
    let api_version = [Some(&new), old]
        .into_iter()
        .flatten()
        .find_map(|o| o.get("apiVersion").and_then(Value::as_str).filter(|v| !v.is_empty()))
        .ok_or_else(|| invalid("apiVersion must be set"))?
        .to_string();
    let ty = root_ty(schema);
    let mut entries = entries_for_update(old, &new);
    let before = old.map_or_else(|| Value::Object(Map::new()), without_managed_fields);
    let mut object = new;
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.shift_remove("managedFields");
    }

    let diff = compare(&before, &object, ty);
    if !entries.is_empty() {
        update_owners(&mut entries, &diff, None, true).map_err(Failure::into_error)?;
    }
    let taken = changed_fields(&diff);
    if !taken.is_empty() {
        match entries.iter_mut().find(|e| e.is_updater(manager, &api_version)) {
            Some(entry) => {
                entry.set = taken.union(&entry.set);
                entry.time = Some(now.to_string());
            }
            None => entries.push(Entry::new(manager, UPDATE, &api_version, Some(now), taken)),
        }
    }
    entries.retain(|e| !e.set.is_empty());
    cap_update_managers(&mut entries);
    write_managed_fields(&mut object, entries);
    Ok(object)
}

fn invalid(message: impl Into<String>) -> ApplyError {
    ApplyError::Invalid(message.into())
}

fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", only.owner, only.path);
    }
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for c in conflicts {
        match groups.iter_mut().find(|(owner, _)| *owner == c.owner) {
            Some((_, paths)) => paths.push(&c.path),
            None => groups.push((&c.owner, vec![&c.path])),
        }
    }
    let mut lines = Vec::new();
    for (owner, paths) in groups {
        lines.push(format!("conflicts with {owner}:"));
        lines.extend(paths.into_iter().map(|p| format!("- {p}")));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

// ---------------------------------------------------------------------------------------
// The apply and update algorithms (structured-merge-diff's `merge.Updater`).

/// What went wrong inside one attempt; conflicts keep their paths for the last-applied check.
enum Failure {
    Conflicts(Vec<(Path, Conflict)>),
    Invalid(String),
}

impl Failure {
    fn into_error(self) -> ApplyError {
        match self {
            Failure::Conflicts(found) => ApplyError::Conflicts(found.into_iter().map(|(_, c)| c).collect()),
            Failure::Invalid(message) => ApplyError::Invalid(message),
        }
    }
}

/// One apply: merge, take the config's fields, prune what this manager dropped, then
/// settle ownership against everyone else.
#[allow(clippy::too_many_arguments)]
fn apply_once(
    live: &Value,
    config: &Value,
    entries: &[Entry],
    manager: &str,
    api_version: &str,
    force: bool,
    ty: Ty<'_>,
    now: &str,
) -> Result<(Value, Vec<Entry>), Failure> {
    let config_set = field_set(config, ty, true).map_err(Failure::Invalid)?;
    let merged = merge(live, config, ty);
    let mut entries = entries.to_vec();
    let (me, last) = match entries.iter().position(|e| e.is_applier(manager)) {
        Some(i) => {
            let last = std::mem::replace(&mut entries[i].set, config_set);
            entries[i].api_version = api_version.to_string();
            (i, Some(last))
        }
        None => {
            entries.push(Entry::new(manager, APPLY, api_version, None, config_set));
            (entries.len() - 1, None)
        }
    };
    let object = match &last {
        Some(last) if !last.is_empty() => prune(merged, &entries, last, ty),
        _ => merged,
    };
    update_owners(&mut entries, &compare(live, &object, ty), Some(me), force)?;
    let mine = &mut entries[me];
    mine.set = mine.set.difference(strip_set());
    if object != *live || last.as_ref() != Some(&mine.set) {
        mine.time = Some(now.to_string());
    }
    entries.retain(|e| !e.set.is_empty());
    Ok((object, entries))
}

/// Removes what the applier owned last time and no longer does, unless someone else owns
/// it (structured-merge-diff's `prune`, `addBackOwnedItems`, `addBackDanglingItems`).
fn prune(merged: Value, entries: &[Entry], last: &Set, ty: Ty<'_>) -> Value {
    let last = ensure_named_fields(last, ty);
    let managed = entries.iter().fold(Set::default(), |all, e| all.union(&e.set));
    let fields_of = |v: &Value| ensure_named_fields(&field_set(v, ty, false).unwrap_or_default(), ty);
    let merged_set = fields_of(&merged);

    let pruned = remove_fields(&merged, &last, ty);
    let keep = fields_of(&pruned).union(&ensure_named_fields(&managed, ty));
    let pruned = remove_fields(&merged, &merged_set.difference(&keep), ty);
    let gone = merged_set.difference(&fields_of(&pruned)).intersection(&last);
    remove_fields(&merged, &gone, ty)
}

/// Takes the changed fields away from every manager but `acting` (structured-merge-diff's
/// `update`); without `force`, any such field owned by someone else is a conflict.
fn update_owners(entries: &mut [Entry], diff: &Comparison, acting: Option<usize>, force: bool) -> Result<(), Failure> {
    let changed = diff.modified.union(&diff.added);
    if !force {
        let mut found: Vec<(String, Vec<(Path, Conflict)>)> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let clash = entry.set.intersection(&changed);
            if Some(i) == acting || clash.is_empty() {
                continue;
            }
            let owner = entry.owner();
            let conflicts = clash
                .paths()
                .into_iter()
                .map(|path| {
                    let conflict =
                        Conflict { manager: entry.manager.clone(), path: path_string(&path), owner: owner.clone() };
                    (path, conflict)
                })
                .collect();
            found.push((entry.identifier(), conflicts));
        }
        if !found.is_empty() {
            found.sort_by(|a, b| a.0.cmp(&b.0));
            return Err(Failure::Conflicts(found.into_iter().flat_map(|(_, c)| c).collect()));
        }
    }
    for (i, entry) in entries.iter_mut().enumerate() {
        if Some(i) != acting {
            entry.set.remove_all(&changed);
            entry.set.remove_all(&diff.removed);
        }
    }
    Ok(())
}

/// The fields a write set or changed, less the ones nobody may own.
fn changed_fields(diff: &Comparison) -> Set {
    let mut changed = diff.modified.union(&diff.added);
    changed.remove_all(&diff.removed);
    changed.remove_all(strip_set());
    changed
}

/// kubectl's client-side apply recorded its intent in an annotation: the fields of that
/// configuration whose live value still matches it may be taken over without a conflict.
fn allowed_by_last_applied(live: &Value, api_version: &str, ty: Ty<'_>) -> Option<Set> {
    let text = metadata_field(live, "annotations")?.get(LAST_APPLIED)?.as_str().filter(|t| !t.is_empty())?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last.get("apiVersion").and_then(Value::as_str) != Some(api_version) {
        return None;
    }
    let set = field_set(&last, ty, true).ok()?;
    let diff = compare(&last, live, ty);
    Some(set.difference(&diff.modified).difference(&diff.added).difference(&diff.removed))
}

/// A server-side apply by kubectl keeps an existing last-applied annotation current, so a
/// later client-side apply still computes the right patch.
fn sync_last_applied(object: &mut Value, config: &Value) {
    let has_annotation = metadata_field(object, "annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if !has_annotation {
        return;
    }
    let mut applied = config.clone();
    if let Some(annotations) = applied.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        annotations.remove(LAST_APPLIED);
    }
    let mut text = go_json(&applied);
    text.push('\n');
    let Some(annotations) = object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) else {
        return;
    };
    annotations.insert(LAST_APPLIED.to_string(), Value::String(text));
    let size: usize = annotations.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
    if size > MAX_ANNOTATIONS_BYTES {
        annotations.remove(LAST_APPLIED);
    }
}

// ---------------------------------------------------------------------------------------
// managedFields entries.

/// One managedFields entry, decoded.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
    time: Option<String>,
    set: Set,
}

impl Entry {
    fn new(manager: &str, operation: &str, api_version: &str, time: Option<&str>, set: Set) -> Self {
        Self {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: api_version.to_string(),
            subresource: String::new(),
            time: time.map(str::to_string),
            set,
        }
    }

    fn is_applier(&self, manager: &str) -> bool {
        self.manager == manager && self.operation == APPLY && self.subresource.is_empty()
    }

    fn is_updater(&self, manager: &str, api_version: &str) -> bool {
        self.manager == manager
            && self.operation == UPDATE
            && self.api_version == api_version
            && self.subresource.is_empty()
    }

    /// kube-apiserver's manager identifier: the entry without fields and time, and without
    /// the apiVersion for an applier (one Apply entry per manager, whatever the version).
    fn identifier(&self) -> String {
        let mut out = String::from("{");
        let mut field = |name: &str, value: &str| {
            if !value.is_empty() {
                if out.len() > 1 {
                    out.push(',');
                }
                write_go_string(name, &mut out);
                out.push(':');
                write_go_string(value, &mut out);
            }
        };
        field("manager", &self.manager);
        field("operation", &self.operation);
        if self.operation != APPLY {
            field("apiVersion", &self.api_version);
        }
        field("subresource", &self.subresource);
        out.push('}');
        out
    }

    /// The manager as kube-apiserver prints it in a conflict.
    fn owner(&self) -> String {
        let mut owner = go_quote(&self.manager);
        if !self.subresource.is_empty() {
            let _ = write!(owner, " with subresource {}", go_quote(&self.subresource));
        }
        if self.operation == UPDATE {
            let _ = write!(owner, " using {}", self.api_version);
        }
        owner
    }

    fn to_json(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".into(), Value::String(self.manager.clone()));
        entry.insert("operation".into(), Value::String(self.operation.clone()));
        entry.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(time) = &self.time {
            entry.insert("time".into(), Value::String(time.clone()));
        }
        entry.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        entry.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            entry.insert("subresource".into(), Value::String(self.subresource.clone()));
        }
        Value::Object(entry)
    }
}

fn metadata_field<'v>(object: &'v Value, name: &str) -> Option<&'v Value> {
    object.get("metadata")?.get(name)
}

fn without_managed_fields(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(metadata) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    copy
}

fn decode_managed_fields(object: &Value) -> Result<Vec<Entry>, String> {
    let Some(raw) = metadata_field(object, "managedFields").filter(|m| !m.is_null()) else {
        return Ok(Vec::new());
    };
    let list = raw.as_array().ok_or("metadata.managedFields must be a list")?;
    let mut entries: Vec<Entry> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let fields = item.as_object().ok_or_else(|| format!("managed fields entry {i} must be an object"))?;
        let text = |key: &str| fields.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let operation = text("operation");
        if operation != APPLY && operation != UPDATE {
            return Err("operation must be `Apply` or `Update`".into());
        }
        let api_version = text("apiVersion");
        if api_version.is_empty() {
            return Err("apiVersion must not be empty".into());
        }
        match fields.get("fieldsType").and_then(Value::as_str) {
            Some("FieldsV1") => {}
            None | Some("") => return Err(format!("missing fieldsType in managed fields entry {i}")),
            Some(other) => return Err(format!("invalid fieldsType {other:?} in managed fields entry {i}")),
        }
        let set = match fields.get("fieldsV1").filter(|f| !f.is_null()) {
            None => Set::default(),
            Some(raw) => Set::from_fields_v1(raw).map_err(|e| format!("managed fields entry {i}: {e}"))?,
        };
        let entry = Entry {
            manager: text("manager"),
            operation,
            api_version,
            subresource: text("subresource"),
            time: fields.get("time").and_then(Value::as_str).map(str::to_string),
            set,
        };
        match entries.iter_mut().find(|e| e.identifier() == entry.identifier()) {
            Some(existing) => *existing = entry,
            None => entries.push(entry),
        }
    }
    Ok(entries)
}

/// The entries an update starts from: those sent with the object if any (`[]`/`[{}]`
/// resets them), else the stored ones; unreadable entries are dropped, as kube-apiserver does.
fn entries_for_update(old: Option<&Value>, new: &Value) -> Vec<Entry> {
    match metadata_field(new, "managedFields") {
        Some(Value::Array(sent)) if sent.is_empty() || (sent.len() == 1 && sent[0] == Value::Object(Map::new())) => {
            return Vec::new();
        }
        Some(sent) if !sent.is_null() => match decode_managed_fields(new) {
            Ok(entries) if !entries.is_empty() => return entries,
            _ => {}
        },
        _ => {}
    }
    old.and_then(|o| decode_managed_fields(o).ok()).unwrap_or_default()
}

/// Sorts the entries as kube-apiserver does (Apply first, then oldest first) and stores them.
fn write_managed_fields(object: &mut Value, mut entries: Vec<Entry>) {
    entries.sort_by(|p, q| {
        p.operation
            .cmp(&q.operation)
            .then_with(|| unix_seconds(p.time.as_deref()).cmp(&unix_seconds(q.time.as_deref())))
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.subresource.cmp(&q.subresource))
    });
    let Some(object) = object.as_object_mut() else { return };
    if entries.is_empty() {
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
        return;
    }
    let metadata = object.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if let Some(metadata) = metadata.as_object_mut() {
        metadata.insert("managedFields".into(), Value::Array(entries.iter().map(Entry::to_json).collect()));
    }
}

/// Keeps at most [`MAX_UPDATE_MANAGERS`] `Update` entries by folding the oldest into one
/// `ancient-changes` entry per apiVersion (kube-apiserver's capManagersManager).
fn cap_update_managers(entries: &mut Vec<Entry>) {
    let mut updaters: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].operation != APPLY).collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by_cached_key(|&i| (unix_seconds(entries[i].time.as_deref()), entries[i].identifier()));
    let mut remaining = updaters.len();
    let mut first_of_version: BTreeMap<String, usize> = BTreeMap::new();
    let mut dropped = BTreeSet::new();
    for &i in &updaters {
        if remaining <= MAX_UPDATE_MANAGERS {
            break;
        }
        let version = entries[i].api_version.clone();
        let Some(&first) = first_of_version.get(&version) else {
            first_of_version.insert(version, i);
            continue;
        };
        let bucket = match entries.iter().position(|e| e.is_updater(ANCIENT_CHANGES, &version)) {
            Some(bucket) => bucket,
            None => {
                entries[first].manager = ANCIENT_CHANGES.to_string();
                entries[first].subresource.clear();
                first
            }
        };
        if bucket == i {
            continue;
        }
        entries[bucket].set = entries[i].set.union(&entries[bucket].set);
        entries[bucket].time = entries[i].time.clone();
        dropped.insert(i);
        remaining -= 1;
    }
    let mut index = 0;
    entries.retain(|_| {
        index += 1;
        !dropped.contains(&(index - 1))
    });
}

/// Seconds since the epoch of an RFC3339 time; 0 when absent or unreadable (as a nil time
/// sorts in kube-apiserver).
fn unix_seconds(time: Option<&str>) -> i64 {
    fn parse(t: &str) -> Option<i64> {
        let b = t.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Option<i64> { t.get(range)?.parse().ok() };
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let mut rest = t.get(19..)?;
        if let Some(frac) = rest.strip_prefix('.') {
            rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
        }
        let offset = match rest {
            "Z" | "z" => 0,
            _ => {
                let sign = match rest.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let hours: i64 = rest.get(1..3)?.parse().ok()?;
                let minutes: i64 = rest.get(4..6)?.parse().ok()?;
                sign * (hours * 3600 + minutes * 60)
            }
        };
        // Days from the civil date (Howard Hinnant's algorithm).
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
    }
    time.and_then(parse).unwrap_or(0)
}

/// The fields no manager owns: identity and bookkeeping the server keeps itself.
fn strip_set() -> &'static Set {
    static STRIP: OnceLock<Set> = OnceLock::new();
    STRIP.get_or_init(|| {
        let mut set = Set::default();
        for top in ["apiVersion", "kind", "metadata"] {
            set.insert(&[Pe::Field(top.into())]);
        }
        for field in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "selfLink",
            "managedFields",
        ] {
            set.insert(&[Pe::Field("metadata".into()), Pe::Field(field.into())]);
        }
        set
    })
}

// ---------------------------------------------------------------------------------------
// Paths and field sets (structured-merge-diff's `fieldpath`).

/// One step into an object: a field of a map, the item of a list-map with these keys, the
/// item of a set with this value, or (only read back from stored sets) a list index.
#[derive(Clone, Debug)]
enum Pe {
    Field(String),
    Key(Vec<(String, Value)>),
    Value(Value),
    Index(usize),
}

type Path = Vec<Pe>;

impl Pe {
    fn rank(&self) -> u8 {
        match self {
            Pe::Field(_) => 0,
            Pe::Key(_) => 1,
            Pe::Value(_) => 2,
            Pe::Index(_) => 3,
        }
    }

    /// The FieldsV1 key: `f:name`, `k:{"name":"x"}`, `v:"x"`, `i:0`.
    fn serialize(&self) -> String {
        match self {
            Pe::Field(name) => format!("f:{name}"),
            Pe::Key(fields) => {
                let mut out = String::from("k:{");
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_go_string(name, &mut out);
                    out.push(':');
                    write_go_json(value, &mut out);
                }
                out.push('}');
                out
            }
            Pe::Value(value) => format!("v:{}", go_json(value)),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    /// Reads a FieldsV1 key; `Ok(None)` for a kind of key this version does not know.
    fn parse(key: &str) -> Result<Option<Pe>, String> {
        let bytes = key.as_bytes();
        if bytes.len() < 2 {
            return Err(format!("key must be 2 characters long: {key:?}"));
        }
        if bytes[1] != b':' || !bytes[0].is_ascii() {
            return Err(format!("missing colon: {key:?}"));
        }
        let body = &key[2..];
        let json = |what: &str| serde_json::from_str::<Value>(body).map_err(|e| format!("bad {what} in {key:?}: {e}"));
        Ok(Some(match bytes[0] {
            b'f' => Pe::Field(body.to_string()),
            b'v' => Pe::Value(json("value")?),
            b'k' => match json("key")? {
                Value::Object(fields) => {
                    let mut fields: Vec<(String, Value)> = fields.into_iter().collect();
                    fields.sort_by(|a, b| a.0.cmp(&b.0));
                    Pe::Key(fields)
                }
                _ => return Err(format!("key is not an object: {key:?}")),
            },
            b'i' => Pe::Index(body.parse().map_err(|_| format!("bad index in {key:?}"))?),
            _ => return Ok(None),
        }))
    }
}

impl Ord for Pe {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Pe::Field(a), Pe::Field(b)) => a.cmp(b),
            (Pe::Key(a), Pe::Key(b)) => {
                for ((an, av), (bn, bv)) in a.iter().zip(b) {
                    let order = an.cmp(bn).then_with(|| cmp_values(av, bv));
                    if order != Ordering::Equal {
                        return order;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Pe::Value(a), Pe::Value(b)) => cmp_values(a, b),
            (Pe::Index(a), Pe::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Pe {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pe {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pe {}

/// A path as kube-apiserver prints it: `.spec.ports[port=80,protocol="TCP"].name`.
fn path_string(path: &[Pe]) -> String {
    let mut out = String::new();
    for pe in path {
        match pe {
            Pe::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Pe::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(n, v)| format!("{n}={}", go_to_string(v))).collect();
                let _ = write!(out, "[{}]", parts.join(","));
            }
            Pe::Value(value) => {
                let _ = write!(out, "[={}]", go_to_string(value));
            }
            Pe::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// A set of fields: a trie whose `members` are the owned children of this node and whose
/// `children` lead further down. A child is never empty.
#[derive(Clone, Debug, Default, PartialEq)]
struct Set {
    members: BTreeSet<Pe>,
    children: BTreeMap<Pe, Set>,
}

impl Set {
    fn insert(&mut self, path: &[Pe]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    fn has(&self, path: &[Pe]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(Set::is_empty)
    }

    fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    fn intersection(&self, other: &Set) -> Set {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, c)| Some((pe.clone(), c.intersection(other.children.get(pe)?))))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        Set { members, children }
    }

    /// Members of `self` not in `other`, node by node (a parent in `other` does not remove
    /// its children from `self`, as in structured-merge-diff).
    /// `self.difference(other)` in place: nothing is copied.
    fn remove_all(&mut self, other: &Set) {
        if !other.members.is_empty() {
            self.members.retain(|pe| !other.members.contains(pe));
        }
        if !other.children.is_empty() {
            self.children.retain(|pe, child| {
                if let Some(other) = other.children.get(pe) {
                    child.remove_all(other);
                }
                !child.is_empty()
            });
        }
    }

    fn difference(&self, other: &Set) -> Set {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .map(|(pe, c)| (pe.clone(), other.children.get(pe).map_or_else(|| c.clone(), |o| c.difference(o))))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        Set { members, children }
    }

    /// Every member path, this node's members first, then depth first.
    fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for pe in &self.members {
            let mut path = prefix.clone();
            path.push(pe.clone());
            out.push(path);
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The FieldsV1 form: `{"f:metadata":{"f:labels":{".":{},"f:app":{}}}}`.
    fn to_fields_v1(&self) -> Value {
        let mut out = Map::new();
        let keys: BTreeSet<&Pe> = self.members.iter().chain(self.children.keys()).collect();
        for pe in keys {
            let value = match self.children.get(pe) {
                Some(child) => {
                    let mut inner = match child.to_fields_v1() {
                        Value::Object(inner) => inner,
                        _ => Map::new(),
                    };
                    if self.members.contains(pe) {
                        inner.insert(".".into(), Value::Object(Map::new()));
                    }
                    Value::Object(inner)
                }
                None => Value::Object(Map::new()),
            };
            out.insert(pe.serialize(), value);
        }
        Value::Object(out)
    }

    fn from_fields_v1(raw: &Value) -> Result<Set, String> {
        let node = raw.as_object().ok_or("fieldsV1 must be an object")?;
        Ok(Self::read_node(node)?.0)
    }

    /// A node's children, and whether the node is itself a member (it is `{}`, or has `.`).
    fn read_node(node: &Map<String, Value>) -> Result<(Set, bool), String> {
        let mut set = Set::default();
        let mut is_member = false;
        let mut has_children = false;
        for (key, value) in node {
            if key == "." {
                is_member = true;
                continue;
            }
            let Some(pe) = Pe::parse(key)? else { continue };
            let child = value.as_object().ok_or_else(|| format!("{key:?} must map to an object"))?;
            let (grandchildren, child_is_member) = Self::read_node(child)?;
            has_children = true;
            if child_is_member {
                set.members.insert(pe.clone());
            }
            if !grandchildren.is_empty() {
                set.children.insert(pe, grandchildren);
            }
        }
        Ok((set, is_member || !has_children))
    }
}

// ---------------------------------------------------------------------------------------
// Types: what the schema says a value is (structured-merge-diff's schema atoms).

/// The type of a value being walked.
#[derive(Clone, Copy, Debug)]
enum Ty<'a> {
    /// No schema: maps merge key by key, lists are atomic.
    Deduced,
    /// Anything, owned and replaced as one leaf.
    Untyped,
    Typed(Schema<'a>),
    /// The schema of a whole object: like `Typed`, but `metadata` is always ObjectMeta.
    Root(Schema<'a>),
}

/// What a type is, before looking at a value.
enum Kind<'a> {
    Untyped,
    Scalar,
    /// Deduced: a map if the value is one, else a leaf.
    Any,
    Map {
        atomic: bool,
    },
    /// `rel` is None for an atomic list.
    List {
        rel: Option<Rel<'a>>,
        elem: Ty<'a>,
    },
}

/// How the items of a granular list are told apart.
#[derive(Clone, Debug)]
enum Rel<'a> {
    Set,
    Map(Vec<&'a str>),
}

/// How a value of some type is walked: as one leaf, key by key, or item by item.
enum Atom<'a> {
    Leaf,
    Map(Ty<'a>),
    List(Rel<'a>, Ty<'a>),
}

impl Atom<'_> {
    fn same_as(&self, other: &Atom<'_>) -> bool {
        matches!(
            (self, other),
            (Atom::Leaf, Atom::Leaf) | (Atom::Map(_), Atom::Map(_)) | (Atom::List(..), Atom::List(..))
        )
    }
}

fn root_ty(schema: Option<Schema<'_>>) -> Ty<'_> {
    schema.map_or(Ty::Deduced, Ty::Root)
}

fn kind(ty: Ty<'_>) -> Kind<'_> {
    let s = match ty {
        Ty::Deduced => return Kind::Any,
        Ty::Untyped => return Kind::Untyped,
        Ty::Typed(s) | Ty::Root(s) => s,
    };
    let type_name = s.type_name();
    let untyped = type_name.is_none();
    if type_name == Some("array") || (untyped && s.extension("items").is_some()) {
        let rel = match s.list_type() {
            ListType::Atomic => None,
            ListType::Set => Some(Rel::Set),
            ListType::Map => {
                let keys = s.list_map_keys();
                Some(if keys.is_empty() { Rel::Set } else { Rel::Map(keys) })
            }
        };
        return Kind::List { rel, elem: s.items().map_or(Ty::Untyped, Ty::Typed) };
    }
    if type_name == Some("object")
        || (untyped && (s.extension("properties").is_some() || s.extension("additionalProperties").is_some()))
    {
        return Kind::Map { atomic: s.is_atomic_map() };
    }
    if !untyped || s.extension("x-kubernetes-int-or-string").is_some() {
        Kind::Scalar
    } else if s.preserves_unknown_fields() {
        Kind::Any
    } else {
        Kind::Untyped
    }
}

/// The type of field `name` of a map of type `ty`, and whether the schema declares it (a
/// struct field rather than a map key).
fn field_ty<'a>(ty: Ty<'a>, name: &str) -> (Ty<'a>, bool) {
    let s = match ty {
        Ty::Deduced => return (Ty::Deduced, false),
        Ty::Untyped => return (Ty::Untyped, false),
        Ty::Root(s) if name == "metadata" => {
            let declared = s.field(name).filter(|m| m.extension("properties").is_some());
            let meta = match declared {
                Some(schema) => Ty::Typed(schema),
                None => object_meta(),
            };
            return (meta, true);
        }
        Ty::Typed(s) | Ty::Root(s) => s,
    };
    let properties = s.extension("properties");
    if properties.is_some_and(|p| p.get(name).is_some()) {
        return (s.field(name).map_or(Ty::Untyped, Ty::Typed), true);
    }
    let child = match s.extension("additionalProperties") {
        Some(schema) if schema.is_object() => s.field(name).map_or(Ty::Untyped, Ty::Typed),
        _ if properties.is_some() || s.preserves_unknown_fields() => Ty::Deduced,
        Some(Value::Bool(true)) => Ty::Deduced,
        _ => Ty::Untyped,
    };
    (child, false)
}

/// ObjectMeta for schemas that leave `metadata` open (CRDs): kube-apiserver always types it.
fn object_meta() -> Ty<'static> {
    static META: OnceLock<(Definitions, Value)> = OnceLock::new();
    let (definitions, node) = META.get_or_init(|| {
        let string = serde_json::json!({"type": "string"});
        let node = serde_json::json!({
            "type": "object",
            "properties": {
                "name": string, "namespace": string, "generateName": string, "uid": string,
                "resourceVersion": string, "selfLink": string, "creationTimestamp": string,
                "deletionTimestamp": string, "generation": {"type": "integer"},
                "deletionGracePeriodSeconds": {"type": "integer"},
                "labels": {"type": "object", "additionalProperties": string},
                "annotations": {"type": "object", "additionalProperties": string},
                "finalizers": {"type": "array", "items": string, "x-kubernetes-list-type": "set"},
                "ownerReferences": {
                    "type": "array",
                    "items": {"type": "object", "properties": {
                        "apiVersion": string, "kind": string, "name": string, "uid": string,
                        "controller": {"type": "boolean"}, "blockOwnerDeletion": {"type": "boolean"},
                    }},
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["uid"],
                },
                "managedFields": {"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "atomic"},
            },
        });
        (Definitions::new(), node)
    });
    Ty::Typed(Schema::inline(definitions, node))
}

fn atom<'a>(ty: Ty<'a>, value: &Value) -> Atom<'a> {
    let map_like = value.is_object() || value.is_null();
    match kind(ty) {
        Kind::Any | Kind::Map { atomic: false } if map_like => Atom::Map(ty),
        Kind::List { rel: Some(rel), elem } if value.is_array() || value.is_null() => Atom::List(rel, elem),
        _ => Atom::Leaf,
    }
}

/// The path element of a granular list's item: its keys (defaults filled in) or its value.
fn item_pe(rel: &Rel<'_>, elem: Ty<'_>, item: &Value) -> Result<Pe, String> {
    match rel {
        Rel::Set => match item {
            Value::Object(_) => Err("associative list without keys has an element that's a map type".into()),
            Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
            Value::Null => Err("associative list without keys has an element that's an explicit null".into()),
            scalar => Ok(Pe::Value(scalar.clone())),
        },
        Rel::Map(keys) => {
            let fields = match item {
                Value::Object(fields) => fields,
                Value::Null => return Err("associative list with keys may not have a null element".into()),
                _ => return Err("associative list with keys may not have non-map elements".into()),
            };
            let mut key = Vec::with_capacity(keys.len());
            for name in keys {
                let value = match fields.get(*name) {
                    Some(value) => value.clone(),
                    None => key_default(elem, name).ok_or_else(|| {
                        format!("associative list with keys has an element that omits key field {name:?} (and doesn't have default value)")
                    })?,
                };
                key.push((name.to_string(), value));
            }
            key.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(Pe::Key(key))
        }
    }
}

/// The default of a list-map key field: the schema's `default`, else `protocol: TCP`, the
/// default of every built-in port list (the vendored OpenAPI v2 omits defaults).
fn key_default(elem: Ty<'_>, name: &str) -> Option<Value> {
    let declared = match elem {
        Ty::Typed(s) | Ty::Root(s) => s.field(name).and_then(|f| f.extension("default")).cloned(),
        _ => None,
    };
    declared.or_else(|| (name == "protocol").then(|| Value::String("TCP".into())))
}

/// The items of a granular list with their path elements; None if `value` is not such a
/// list or an item has no usable key (the list is then treated as one leaf).
fn keyed_items<'v>(rel: &Rel<'_>, elem: Ty<'_>, value: &'v Value) -> Option<Vec<(Pe, &'v Value)>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(|item| item_pe(rel, elem, item).ok().map(|pe| (pe, item))).collect(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Walks over values (structured-merge-diff's `typed` package).

/// The fields `value` sets: leaves, list items, map keys (not declared struct fields).
/// `strict` rejects values the schema cannot place (for an applied configuration).
fn field_set(value: &Value, ty: Ty<'_>, strict: bool) -> Result<Set, String> {
    let mut set = Set::default();
    collect_fields(value, ty, &mut Vec::new(), &mut set, strict)?;
    Ok(set)
}

fn collect_fields(value: &Value, ty: Ty<'_>, path: &mut Path, set: &mut Set, strict: bool) -> Result<(), String> {
    if strict {
        check_shape(value, ty, path)?;
    }
    match atom(ty, value) {
        Atom::Leaf => set.insert(path),
        Atom::Map(ty) => {
            for (name, child) in value.as_object().into_iter().flatten() {
                let (child_ty, declared) = field_ty(ty, name);
                path.push(Pe::Field(name.clone()));
                collect_fields(child, child_ty, path, set, strict)?;
                if !declared {
                    set.insert(path);
                }
                path.pop();
            }
        }
        Atom::List(rel, elem) => {
            let items = value.as_array().map_or(&[][..], Vec::as_slice);
            let mut pes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item_pe(&rel, elem, item) {
                    Ok(pe) => pes.push(pe),
                    Err(e) if strict => return Err(format!("{}: element {i}: {e}", path_string(path))),
                    Err(_) => {
                        set.insert(path);
                        return Ok(());
                    }
                }
            }
            if strict {
                let mut seen = BTreeSet::new();
                if let Some(dup) = pes.iter().find(|pe| !seen.insert(*pe)) {
                    return Err(format!(
                        "{}: duplicate entries for key {}",
                        path_string(path),
                        path_string(std::slice::from_ref(dup))
                    ));
                }
            }
            for (pe, item) in pes.into_iter().zip(items) {
                path.push(pe);
                collect_fields(item, elem, path, set, strict)?;
                set.insert(path);
                path.pop();
            }
        }
    }
    Ok(())
}

fn check_shape(value: &Value, ty: Ty<'_>, path: &[Pe]) -> Result<(), String> {
    let (expected, fits) = match kind(ty) {
        Kind::Map { .. } => ("map", value.is_object() || value.is_null()),
        Kind::List { .. } => ("list", value.is_array() || value.is_null()),
        Kind::Scalar => ("scalar", !value.is_object() && !value.is_array()),
        _ => return Ok(()),
    };
    if fits {
        return Ok(());
    }
    let got = match value {
        Value::Object(_) => "map",
        Value::Array(_) => "list",
        _ => "scalar",
    };
    let at = if path.is_empty() { "the object".to_string() } else { path_string(path) };
    Err(format!("{at}: expected {expected}, got {got}"))
}

/// How two versions of an object differ, field by field.
#[derive(Default)]
struct Comparison {
    added: Set,
    modified: Set,
    removed: Set,
}

fn compare(old: &Value, new: &Value, ty: Ty<'_>) -> Comparison {
    let mut diff = Comparison::default();
    compare_at(Some(old), Some(new), ty, &mut Vec::new(), &mut diff);
    diff
}

fn compare_at(old: Option<&Value>, new: Option<&Value>, ty: Ty<'_>, path: &mut Path, diff: &mut Comparison) {
    match (old.map(|v| atom(ty, v)), new.map(|v| atom(ty, v))) {
        (None, None) => {}
        (Some(a), None) | (None, Some(a)) => compare_as(&a, old, new, path, diff),
        (Some(a), Some(b)) if a.same_as(&b) => compare_as(&b, old, new, path, diff),
        (Some(a), Some(b)) => {
            compare_as(&a, old, new, path, diff);
            compare_as(&b, old, new, path, diff);
        }
    }
}

fn compare_as(atom: &Atom<'_>, old: Option<&Value>, new: Option<&Value>, path: &mut Path, diff: &mut Comparison) {
    match atom {
        Atom::Leaf => compare_leaf(old, new, path, diff),
        Atom::Map(ty) => {
            let (a, b) = (old.and_then(Value::as_object), new.and_then(Value::as_object));
            if a.is_none_or(Map::is_empty) && b.is_none_or(Map::is_empty) {
                return compare_leaf(old, new, path, diff);
            }
            for (name, child) in a.into_iter().flatten() {
                path.push(Pe::Field(name.clone()));
                compare_at(Some(child), b.and_then(|b| b.get(name)), field_ty(*ty, name).0, path, diff);
                path.pop();
            }
            for (name, child) in b.into_iter().flatten().filter(|(name, _)| a.is_none_or(|a| !a.contains_key(*name))) {
                path.push(Pe::Field(name.clone()));
                compare_at(None, Some(child), field_ty(*ty, name).0, path, diff);
                path.pop();
            }
            compare_container(old, new, path, diff);
        }
        Atom::List(rel, elem) => {
            let (a, b) = (index_items(rel, *elem, old), index_items(rel, *elem, new));
            if a.is_empty() && b.is_empty() {
                return compare_leaf(old, new, path, diff);
            }
            for (pe, item) in &a {
                path.push(pe.clone());
                compare_at(Some(*item), b.get(pe).copied(), *elem, path, diff);
                path.pop();
            }
            for (pe, item) in b.iter().filter(|(pe, _)| !a.contains_key(*pe)) {
                path.push(pe.clone());
                compare_at(None, Some(*item), *elem, path, diff);
                path.pop();
            }
            compare_container(old, new, path, diff);
        }
    }
}

/// A list's items by path element, the first of duplicates winning.
fn index_items<'v>(rel: &Rel<'_>, elem: Ty<'_>, list: Option<&'v Value>) -> BTreeMap<Pe, &'v Value> {
    let mut items = BTreeMap::new();
    for (pe, item) in list.and_then(|v| keyed_items(rel, elem, v)).unwrap_or_default() {
        items.entry(pe).or_insert(item);
    }
    items
}

fn compare_leaf(old: Option<&Value>, new: Option<&Value>, path: &Path, diff: &mut Comparison) {
    match (old, new) {
        (None, Some(_)) => diff.added.insert(path),
        (Some(_), None) => diff.removed.insert(path),
        (Some(a), Some(b)) if cmp_values(a, b) != Ordering::Equal => diff.modified.insert(path),
        _ => {}
    }
}

/// A map or list item added or removed as a whole is itself added or removed.
fn compare_container(old: Option<&Value>, new: Option<&Value>, path: &Path, diff: &mut Comparison) {
    if old.is_none() {
        diff.added.insert(path);
    } else if new.is_none() {
        diff.removed.insert(path);
    }
}

/// `config` merged into `live`: config's leaves win, maps merge key by key, granular lists
/// item by item (in config's order where config orders them), atomic values are replaced.
fn merge(live: &Value, config: &Value, ty: Ty<'_>) -> Value {
    match (atom(ty, live), atom(ty, config)) {
        (Atom::Map(ty), Atom::Map(_)) => {
            let (a, b) = (live.as_object(), config.as_object());
            if a.is_none_or(Map::is_empty) && b.is_none_or(Map::is_empty) {
                return config.clone();
            }
            let mut out = Map::new();
            for (name, old) in a.into_iter().flatten() {
                let value = match b.and_then(|b| b.get(name)) {
                    Some(new) => merge(old, new, field_ty(ty, name).0),
                    None => old.clone(),
                };
                out.insert(name.clone(), value);
            }
            for (name, new) in b.into_iter().flatten() {
                if !out.contains_key(name) {
                    out.insert(name.clone(), new.clone());
                }
            }
            Value::Object(out)
        }
        (Atom::List(rel, elem), Atom::List(..)) => {
            match (keyed_items(&rel, elem, live), keyed_items(&rel, elem, config)) {
                (Some(a), Some(b)) if !(a.is_empty() && b.is_empty()) => Value::Array(merge_items(&a, &b, elem)),
                _ => config.clone(),
            }
        }
        _ => config.clone(),
    }
}

/// Orders merged list items as structured-merge-diff does: live items the config does not
/// mention keep their place; the config's items come in the config's order.
fn merge_items(live: &[(Pe, &Value)], config: &[(Pe, &Value)], elem: Ty<'_>) -> Vec<Value> {
    let mut first_live: BTreeMap<&Pe, &Value> = BTreeMap::new();
    let mut live_order: Vec<(&Pe, &Value, bool)> = Vec::with_capacity(live.len());
    for (pe, item) in live {
        let repeated = first_live.contains_key(pe);
        first_live.entry(pe).or_insert(*item);
        live_order.push((pe, *item, repeated));
    }
    let mut wanted: BTreeMap<&Pe, &Value> = BTreeMap::new();
    let mut config_order: Vec<&Pe> = Vec::with_capacity(config.len());
    for (pe, item) in config {
        if !wanted.contains_key(pe) {
            wanted.insert(pe, *item);
            config_order.push(pe);
        }
    }
    let mut shared = config_order.iter().copied().filter(|pe| first_live.contains_key(*pe));
    let mut next_shared = shared.next();

    let mut out = Vec::with_capacity(live.len().max(config.len()));
    let (mut l, mut r) = (0, 0);
    while l < live_order.len() || r < config_order.len() {
        if let Some(&(pe, item, repeated)) = live_order.get(l) {
            if repeated {
                // A duplicate in the stored list: kept unless the config sets that item.
                if !wanted.contains_key(pe) {
                    out.push(item.clone());
                }
                l += 1;
                continue;
            }
            if let Some(&next) = config_order.get(r) {
                if pe == next {
                    out.push(merge(item, wanted[pe], elem));
                    l += 1;
                    r += 1;
                    next_shared = shared.next();
                    continue;
                }
                if wanted.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                    l += 1;
                    continue;
                }
            }
            if !wanted.contains_key(pe) {
                out.push(item.clone());
                l += 1;
                continue;
            }
        }
        if let Some(&pe) = config_order.get(r) {
            out.push(match first_live.get(pe) {
                Some(old) => merge(old, wanted[pe], elem),
                None => wanted[pe].clone(),
            });
            r += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
            continue;
        }
        l += 1;
    }
    out
}

/// `value` without the fields in `set`; a map or list emptied by the removal goes too.
fn remove_fields(value: &Value, set: &Set, ty: Ty<'_>) -> Value {
    remove_at(value, set, ty).unwrap_or_else(|| Value::Object(Map::new()))
}

fn remove_at(value: &Value, set: &Set, ty: Ty<'_>) -> Option<Value> {
    match atom(ty, value) {
        Atom::Leaf => Some(value.clone()),
        Atom::Map(ty) => {
            let Some(fields) = value.as_object() else { return Some(value.clone()) };
            let mut out = Map::new();
            for (name, child) in fields {
                let pe = Pe::Field(name.clone());
                if set.members.contains(&pe) {
                    continue;
                }
                let kept = match set.children.get(&pe) {
                    Some(inner) => remove_at(child, inner, field_ty(ty, name).0),
                    None => Some(child.clone()),
                };
                if let Some(kept) = kept {
                    out.insert(name.clone(), kept);
                }
            }
            (fields.is_empty() || !out.is_empty()).then_some(Value::Object(out))
        }
        Atom::List(rel, elem) => {
            let Some(items) = value.as_array() else { return Some(value.clone()) };
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Ok(pe) = item_pe(&rel, elem, item) else { return Some(value.clone()) };
                if set.members.contains(&pe) {
                    continue;
                }
                let kept = match set.children.get(&pe) {
                    Some(inner) => remove_at(item, inner, elem),
                    None => Some(item.clone()),
                };
                out.extend(kept);
            }
            (items.is_empty() || !out.is_empty()).then_some(Value::Array(out))
        }
    }
}

/// `set` plus every declared struct field on the way to its members (structured-merge-diff's
/// `EnsureNamedFieldsAreMembers`), so pruning can drop a struct nobody owns any more.
fn ensure_named_fields(set: &Set, ty: Ty<'_>) -> Set {
    let mut out = Set { members: set.members.clone(), children: BTreeMap::new() };
    let kind = kind(ty);
    for (pe, child) in &set.children {
        let child_ty = match (pe, &kind) {
            (Pe::Field(name), Kind::Map { .. } | Kind::Any) => {
                let (child_ty, declared) = field_ty(ty, name);
                if declared {
                    out.members.insert(pe.clone());
                }
                child_ty
            }
            (Pe::Key(_), Kind::List { elem, .. }) => *elem,
            _ => Ty::Untyped,
        };
        out.children.insert(pe.clone(), ensure_named_fields(child, child_ty));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Values as Go prints and orders them.

/// structured-merge-diff's value order: numbers < strings < booleans < lists < maps < null.
fn cmp_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => cmp_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            x.iter().zip(y).map(|(p, q)| cmp_values(p, q)).find(|o| o.is_ne()).unwrap_or_else(|| x.len().cmp(&y.len()))
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut xs: Vec<_> = x.iter().collect();
            let mut ys: Vec<_> = y.iter().collect();
            xs.sort_by(|p, q| p.0.cmp(q.0));
            ys.sort_by(|p, q| p.0.cmp(q.0));
            xs.iter()
                .zip(&ys)
                .map(|(p, q)| p.0.cmp(q.0).then_with(|| cmp_values(p.1, q.1)))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| xs.len().cmp(&ys.len()))
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

fn cmp_numbers(a: &Number, b: &Number) -> Ordering {
    let integer = |n: &Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let (x, y) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

/// JSON as Go's encoding/json writes it: map keys sorted, `<`, `>`, `&` escaped.
fn go_json(value: &Value) -> String {
    let mut out = String::new();
    write_go_json(value, &mut out);
    out
}

fn write_go_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_go_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            let mut fields: Vec<_> = fields.iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (name, item)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(name, out);
                out.push(':');
                write_go_json(item, out);
            }
            out.push('}');
        }
    }
}

fn write_go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A value as structured-merge-diff prints it inside a path (`value.ToString`).
fn go_to_string(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        Value::String(s) => go_quote(s),
        Value::Array(items) => format!("[{}]", items.iter().map(go_to_string).collect::<Vec<_>>().join(",")),
        Value::Object(fields) => {
            let mut fields: Vec<_> = fields.iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            fields.into_iter().map(|(k, v)| format!("{k}={}", go_to_string(v))).collect()
        }
    }
}

/// A string quoted as Go's `%q` does.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: &str = "2025-01-01T00:00:00Z";
    const LATER: &str = "2025-01-01T00:05:00Z";

    fn definitions() -> Definitions {
        serde_json::from_str(include_str!("../../openapi/k8s-1.33-definitions.json")).expect("vendored definitions")
    }

    fn schema<'a>(defs: &'a Definitions, name: &str) -> Option<Schema<'a>> {
        Some(Schema::definition(defs, name).expect("definition"))
    }

    fn entry<'v>(object: &'v Value, manager: &str, operation: &str) -> &'v Value {
        object["metadata"]["managedFields"]
            .as_array()
            .and_then(|list| list.iter().find(|e| e["manager"] == manager && e["operation"] == operation))
            .unwrap_or_else(|| panic!("no {operation} entry for {manager} in {object}"))
    }

    fn owned<'v>(object: &'v Value, manager: &str, operation: &str) -> &'v Value {
        &entry(object, manager, operation)["fieldsV1"]
    }

    fn managers(object: &Value) -> Vec<(String, String)> {
        object["metadata"]["managedFields"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| (e["manager"].as_str().unwrap_or("").into(), e["operation"].as_str().unwrap_or("").into()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn config_map(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "test-cm", "namespace": "default"}, "data": data})
    }

    fn deployment(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nginx-deployment"}, "spec": spec})
    }

    fn nginx(image: &str, replicas: i64) -> Value {
        let mut d = deployment(json!({
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": image, "ports": [{"containerPort": 80}]}]},
            },
        }));
        d["metadata"]["labels"] = json!({"app": "nginx"});
        d
    }

    fn conflicts(result: Result<Value, ApplyError>) -> Vec<Conflict> {
        match result {
            Err(ApplyError::Conflicts(c)) => c,
            other => panic!("expected conflicts, got {other:?}"),
        }
    }

    #[test]
    fn apply_on_create_records_an_apply_entry() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let mut config = config_map(json!({"key": "some value"}));
        config["metadata"]["labels"] = json!({"test-label": "test"});
        let out = apply(None, &config, "kubectl", false, cm, NOW).expect("apply");
        assert_eq!(
            out["metadata"]["managedFields"],
            json!([{
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": "v1",
                "time": NOW,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:key": {}}, "f:metadata": {"f:labels": {"f:test-label": {}}}},
            }])
        );
        assert_eq!(out["data"], json!({"key": "some value"}));
        assert_eq!(out["metadata"]["name"], "test-cm");
    }

    #[test]
    fn reapply_without_a_field_deletes_it() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let mut first = config_map(json!({"a": "1", "b": "2"}));
        first["metadata"]["labels"] = json!({"app": "x"});
        let live = apply(None, &first, "kubectl", false, cm, NOW).expect("first apply");
        let out =
            apply(Some(&live), &config_map(json!({"a": "1"})), "kubectl", false, cm, LATER).expect("second apply");
        assert_eq!(out["data"], json!({"a": "1"}));
        assert!(out["metadata"].get("labels").is_none(), "emptied labels are dropped: {out}");
        assert_eq!(owned(&out, "kubectl", "Apply"), &json!({"f:data": {"f:a": {}}}));
        assert_eq!(entry(&out, "kubectl", "Apply")["time"], LATER);
    }

    #[test]
    fn a_field_dropped_by_one_applier_stays_while_another_owns_it() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let live = apply(None, &config_map(json!({"a": "1", "b": "1"})), "alice", false, cm, NOW).expect("alice");
        let live = apply(Some(&live), &config_map(json!({"b": "1"})), "bob", false, cm, NOW).expect("bob shares b");
        assert_eq!(owned(&live, "bob", "Apply"), &json!({"f:data": {"f:b": {}}}));
        assert_eq!(owned(&live, "alice", "Apply"), &json!({"f:data": {"f:a": {}, "f:b": {}}}));
        let out = apply(Some(&live), &config_map(json!({"a": "1"})), "alice", false, cm, LATER).expect("alice drops b");
        assert_eq!(out["data"], json!({"a": "1", "b": "1"}));
        assert_eq!(owned(&out, "alice", "Apply"), &json!({"f:data": {"f:a": {}}}));
        assert_eq!(owned(&out, "bob", "Apply"), &json!({"f:data": {"f:b": {}}}));
    }

    #[test]
    fn two_appliers_share_a_field_and_hand_it_over() {
        // The docs' "transferring ownership" example: an autoscaler applies the same
        // replicas, then the user stops managing them.
        let defs = definitions();
        let d = schema(&defs, "io.k8s.api.apps.v1.Deployment");
        let live = apply(None, &nginx("nginx:1.14.2", 3), "kubectl", false, d, NOW).expect("kubectl");
        let hpa = deployment(json!({"replicas": 3}));
        let live = apply(Some(&live), &hpa, "handover-to-hpa", false, d, NOW).expect("same value is shared");
        assert_eq!(owned(&live, "handover-to-hpa", "Apply"), &json!({"f:spec": {"f:replicas": {}}}));
        assert!(owned(&live, "kubectl", "Apply")["f:spec"].get("f:replicas").is_some());

        let mut without = nginx("nginx:1.14.2", 3);
        without["spec"].as_object_mut().expect("spec").remove("replicas");
        let out = apply(Some(&live), &without, "kubectl", false, d, LATER).expect("kubectl lets go");
        assert_eq!(out["spec"]["replicas"], 3, "still owned by the autoscaler");
        assert!(owned(&out, "kubectl", "Apply")["f:spec"].get("f:replicas").is_none());
    }

    #[test]
    fn conflicting_values_fail_with_kube_apiservers_message() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let live = apply(None, &config_map(json!({"key": "a"})), "alice", false, cm, NOW).expect("alice");
        let err = apply(Some(&live), &config_map(json!({"key": "b"})), "bob", false, cm, NOW).expect_err("conflict");
        assert_eq!(err.to_string(), r#"Apply failed with 1 conflict: conflict with "alice": .data.key"#);
        assert_eq!(
            err,
            ApplyError::Conflicts(vec![Conflict {
                manager: "alice".into(),
                path: ".data.key".into(),
                owner: r#""alice""#.into()
            }])
        );

        let live = apply(None, &config_map(json!({"a": "1", "b": "1"})), "alice", false, cm, NOW).expect("alice");
        let mut edited = live.clone();
        edited["data"]["c"] = json!("1");
        let live = record_update(Some(&live), edited.clone(), "carol", cm, NOW).expect("carol");
        let err = apply(Some(&live), &config_map(json!({"a": "2", "b": "2", "c": "2"})), "bob", false, cm, NOW)
            .expect_err("conflicts");
        assert_eq!(
            err.to_string(),
            "Apply failed with 3 conflicts: conflicts with \"alice\":\n- .data.a\n- .data.b\n\
             conflicts with \"carol\" using v1:\n- .data.c"
        );
    }

    #[test]
    fn force_moves_ownership() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let live = apply(None, &config_map(json!({"key": "a"})), "alice", false, cm, NOW).expect("alice");
        let out = apply(Some(&live), &config_map(json!({"key": "b"})), "bob", true, cm, LATER).expect("forced");
        assert_eq!(out["data"]["key"], "b");
        assert_eq!(owned(&out, "bob", "Apply"), &json!({"f:data": {"f:key": {}}}));
        assert_eq!(managers(&out), vec![("bob".to_string(), "Apply".to_string())], "alice owned nothing else");
    }

    #[test]
    fn an_update_takes_a_field_and_the_next_apply_conflicts() {
        let defs = definitions();
        let d = schema(&defs, "io.k8s.api.apps.v1.Deployment");
        let live = apply(None, &nginx("nginx:1.14.2", 3), "kubectl", false, d, NOW).expect("kubectl");
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        let live = record_update(Some(&live), scaled.clone(), "kube-controller-manager", d, LATER).expect("scale");
        assert_eq!(owned(&live, "kube-controller-manager", "Update"), &json!({"f:spec": {"f:replicas": {}}}));
        assert_eq!(entry(&live, "kube-controller-manager", "Update")["apiVersion"], "apps/v1");
        assert!(owned(&live, "kubectl", "Apply")["f:spec"].get("f:replicas").is_none());

        let err = apply(Some(&live), &nginx("nginx:1.14.2", 3), "kubectl", false, d, LATER).expect_err("conflict");
        assert_eq!(
            err.to_string(),
            r#"Apply failed with 1 conflict: conflict with "kube-controller-manager" using apps/v1: .spec.replicas"#
        );

        let mut edited = live.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.16");
        let live = record_update(Some(&live), edited.clone(), "kubectl-edit", d, LATER).expect("edit");
        let found = conflicts(apply(Some(&live), &nginx("nginx:1.14.2", 5), "kubectl", false, d, LATER));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, r#".spec.template.spec.containers[name="nginx"].image"#);
        assert_eq!(found[0].owner, r#""kubectl-edit" using apps/v1"#);
    }

    #[test]
    fn containers_are_owned_by_name() {
        let defs = definitions();
        let d = schema(&defs, "io.k8s.api.apps.v1.Deployment");
        let live = apply(None, &nginx("nginx:1.14.2", 3), "kubectl", false, d, NOW).expect("kubectl");
        assert_eq!(
            owned(&live, "kubectl", "Apply"),
            &json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {r#"k:{"name":"nginx"}"#: {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {r#"k:{"containerPort":80,"protocol":"TCP"}"#: {".": {}, "f:containerPort": {}}},
                        }}},
                    },
                },
            })
        );

        let sidecar =
            deployment(json!({"template": {"spec": {"containers": [{"name": "sidecar", "image": "envoy"}]}}}));
        let live = apply(Some(&live), &sidecar, "injector", false, d, NOW).expect("sidecar");
        let names: Vec<&Value> = live["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("list")
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, vec!["nginx", "sidecar"]);
        assert_eq!(
            owned(&live, "injector", "Apply"),
            &json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                r#"k:{"name":"sidecar"}"#: {".": {}, "f:image": {}, "f:name": {}}
            }}}}})
        );

        let out = apply(Some(&live), &nginx("nginx:1.16", 3), "kubectl", false, d, LATER).expect("new image");
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:1.16");
        assert_eq!(containers[1]["name"], "sidecar", "the other applier's item stays");
    }

    #[test]
    fn dropping_a_container_removes_only_it_and_keeps_unowned_defaults() {
        let defs = definitions();
        let d = schema(&defs, "io.k8s.api.apps.v1.Deployment");
        let with = |names: &[&str]| {
            let containers: Vec<Value> = names.iter().map(|n| json!({"name": n, "image": format!("{n}:1")})).collect();
            deployment(json!({"template": {"spec": {"containers": containers}}}))
        };
        let mut live = apply(None, &with(&["a", "b"]), "kubectl", false, d, NOW).expect("create");
        assert!(live["metadata"].get("annotations").is_none(), "no last-applied annotation is invented");
        // What defaulting would add: nobody owns it.
        live["spec"]["template"]["spec"]["dnsPolicy"] = json!("ClusterFirst");
        live["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"] = json!("IfNotPresent");

        let reordered = apply(Some(&live), &with(&["b", "a"]), "kubectl", false, d, NOW).expect("reorder");
        let names: Vec<&Value> = reordered["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("list")
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, vec!["b", "a"]);

        let out = apply(Some(&live), &with(&["a"]), "kubectl", false, d, LATER).expect("drop b");
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(spec["containers"], json!([{"name": "a", "image": "a:1"}]));
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    }

    #[test]
    fn service_ports_are_keyed_by_port_and_protocol() {
        let defs = definitions();
        let svc = schema(&defs, "io.k8s.api.core.v1.Service");
        let config = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
            "spec": {"ports": [
                {"port": 53, "protocol": "UDP", "name": "dns"},
                {"port": 53, "name": "dns-tcp"},
            ]},
        });
        let out = apply(None, &config, "kubectl", false, svc, NOW).expect("apply");
        assert_eq!(
            owned(&out, "kubectl", "Apply"),
            &json!({"f:spec": {"f:ports": {
                r#"k:{"port":53,"protocol":"TCP"}"#: {".": {}, "f:name": {}, "f:port": {}},
                r#"k:{"port":53,"protocol":"UDP"}"#: {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}},
            }}})
        );
        let update = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
            "spec": {"ports": [{"port": 53, "protocol": "UDP", "name": "renamed"}]},
        });
        let err = apply(Some(&out), &update, "other", false, svc, NOW).expect_err("conflict");
        assert_eq!(
            err.to_string(),
            r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.ports[port=53,protocol="UDP"].name"#
        );

        let missing = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"name": "web"}]}});
        assert_eq!(
            apply(None, &missing, "kubectl", false, svc, NOW),
            Err(ApplyError::Invalid(
                r#".spec.ports: element 0: associative list with keys has an element that omits key field "port" (and doesn't have default value)"#
                    .into()
            ))
        );
    }

    #[test]
    fn finalizers_are_a_set() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let with = |finalizers: Value| {
            let mut c = config_map(json!({}));
            c["metadata"]["finalizers"] = finalizers;
            c.as_object_mut().expect("object").remove("data");
            c
        };
        let live = apply(None, &with(json!(["a.example.com/x"])), "alice", false, cm, NOW).expect("alice");
        let live = apply(Some(&live), &with(json!(["b.example.com/y"])), "bob", false, cm, NOW).expect("bob");
        assert_eq!(live["metadata"]["finalizers"], json!(["a.example.com/x", "b.example.com/y"]));
        assert_eq!(
            owned(&live, "alice", "Apply"),
            &json!({"f:metadata": {"f:finalizers": {r#"v:"a.example.com/x""#: {}}}})
        );
        let out = apply(Some(&live), &with(json!([])), "alice", false, cm, LATER).expect("alice lets go");
        assert_eq!(out["metadata"]["finalizers"], json!(["b.example.com/y"]));
        assert_eq!(managers(&out), vec![("bob".to_string(), "Apply".to_string())]);
    }

    #[test]
    fn atomic_lists_are_one_field() {
        let defs = definitions();
        let d = schema(&defs, "io.k8s.api.apps.v1.Deployment");
        let args = |args: Value| {
            deployment(
                json!({"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx", "args": args}]}}}),
            )
        };
        let live = apply(None, &args(json!(["--a", "--b"])), "alice", false, d, NOW).expect("alice");
        let container =
            &owned(&live, "alice", "Apply")["f:spec"]["f:template"]["f:spec"]["f:containers"][r#"k:{"name":"nginx"}"#];
        assert_eq!(container["f:args"], json!({}));
        let found = conflicts(apply(Some(&live), &args(json!(["--c"])), "bob", false, d, NOW));
        assert_eq!(
            found.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
            vec![r#".spec.template.spec.containers[name="nginx"].args"#]
        );
        let out = apply(Some(&live), &args(json!(["--c"])), "bob", true, d, NOW).expect("forced");
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["args"], json!(["--c"]));
    }

    #[test]
    fn record_update_on_create_owns_everything_set() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let mut object = config_map(json!({"key": "v"}));
        object["metadata"]["labels"] = json!({"app": "x"});
        object["metadata"]["uid"] = json!("1234");
        let out = record_update(None, object.clone(), "kubectl-create", cm, NOW).expect("create");
        assert_eq!(
            out["metadata"]["managedFields"],
            json!([{
                "manager": "kubectl-create",
                "operation": "Update",
                "apiVersion": "v1",
                "time": NOW,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {".": {}, "f:key": {}}, "f:metadata": {"f:labels": {".": {}, "f:app": {}}}},
            }])
        );
    }

    #[test]
    fn record_update_moves_changed_fields() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let live = apply(None, &config_map(json!({"a": "1", "b": "1"})), "alice", false, cm, NOW).expect("alice");
        let same = record_update(Some(&live), live.clone(), "editor", cm, LATER).expect("no-op");
        assert_eq!(managers(&same), vec![("alice".to_string(), "Apply".to_string())]);

        let mut edited = live.clone();
        edited["data"]["b"] = json!("2");
        edited["data"]["c"] = json!("3");
        let out = record_update(Some(&live), edited.clone(), "editor", cm, LATER).expect("edit");
        assert_eq!(owned(&out, "editor", "Update"), &json!({"f:data": {"f:b": {}, "f:c": {}}}));
        assert_eq!(owned(&out, "alice", "Apply"), &json!({"f:data": {"f:a": {}}}));
        assert_eq!(entry(&out, "editor", "Update")["time"], LATER);

        let mut removed = out.clone();
        removed["data"].as_object_mut().expect("data").remove("a");
        let out = record_update(Some(&out), removed.clone(), "editor", cm, LATER).expect("remove");
        assert_eq!(managers(&out), vec![("editor".to_string(), "Update".to_string())], "alice owned only a");

        let mut reset = out.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        let out = record_update(Some(&out), reset.clone(), "editor", cm, LATER).expect("reset");
        assert!(out["metadata"].get("managedFields").is_none(), "nothing changed after the reset: {out}");
    }

    #[test]
    fn kubectl_server_side_apply_takes_over_from_client_side_apply() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        // `kubectl apply` (client-side) creates the object with its annotation.
        let first = config_map(json!({"key": "a"}));
        let mut created = first.clone();
        created["metadata"]["annotations"] = json!({LAST_APPLIED: format!("{}\n", go_json(&first))});
        let live = record_update(None, created.clone(), "kubectl-client-side-apply", cm, NOW).expect("create");

        // Another manager still conflicts (the documented opt-out of the upgrade).
        let second = config_map(json!({"key": "b"}));
        let err = apply(Some(&live), &second, "my-manager", false, cm, LATER).expect_err("conflict");
        assert_eq!(
            err.to_string(),
            r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .data.key"#
        );

        // `kubectl apply --server-side` takes what the annotation says client-side apply set.
        let out = apply(Some(&live), &second, "kubectl", false, cm, LATER).expect("upgrade");
        assert_eq!(out["data"]["key"], "b");
        assert_eq!(owned(&out, "kubectl", "Apply"), &json!({"f:data": {"f:key": {}}}));
        assert!(owned(&out, "kubectl-client-side-apply", "Update")["f:data"].get("f:key").is_none());
        assert_eq!(out["metadata"]["annotations"][LAST_APPLIED], format!("{}\n", go_json(&second)));

        // A value changed since the last client-side apply is not client-side apply's to give.
        let mut edited = live.clone();
        edited["data"]["key"] = json!("c");
        let live = record_update(Some(&live), edited.clone(), "kubectl-edit", cm, LATER).expect("edit");
        let err = apply(Some(&live), &second, "kubectl", false, cm, LATER).expect_err("conflict");
        assert_eq!(
            err.to_string(),
            r#"Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .data.key"#
        );
    }

    #[test]
    fn an_object_without_managed_fields_belongs_to_before_first_apply() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let live = config_map(json!({"key": "a"}));
        let err = apply(Some(&live), &config_map(json!({"key": "b"})), "x", false, cm, NOW).expect_err("conflict");
        assert_eq!(
            err.to_string(),
            r#"Apply failed with 1 conflict: conflict with "before-first-apply" using v1: .data.key"#
        );
        let out = apply(Some(&live), &config_map(json!({"key": "a"})), "x", false, cm, NOW).expect("shared");
        assert_eq!(
            managers(&out),
            vec![("x".to_string(), "Apply".to_string()), ("before-first-apply".to_string(), "Update".to_string())]
        );
    }

    #[test]
    fn entries_sort_apply_first_then_oldest() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let live = record_update(None, config_map(json!({"a": "1"})), "kubectl-create", cm, NOW).expect("create");
        let out = apply(Some(&live), &config_map(json!({"b": "1"})), "kubectl", false, cm, LATER).expect("apply");
        assert_eq!(
            managers(&out),
            vec![("kubectl".to_string(), "Apply".to_string()), ("kubectl-create".to_string(), "Update".to_string())]
        );
    }

    #[test]
    fn a_no_op_apply_keeps_the_entry_time() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let config = config_map(json!({"a": "1"}));
        let live = apply(None, &config, "kubectl", false, cm, NOW).expect("apply");
        let out = apply(Some(&live), &config, "kubectl", false, cm, LATER).expect("again");
        assert_eq!(out, live);
    }

    #[test]
    fn rejects_bad_configurations_and_managed_fields() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let mut config = config_map(json!({}));
        config["metadata"]["managedFields"] = json!([]);
        assert_eq!(apply(None, &config, "m", false, cm, NOW), Err(invalid("metadata.managedFields must be nil")));
        let mut live = config_map(json!({}));
        live["metadata"]["managedFields"] = json!([{"manager": "m", "operation": "Patch", "apiVersion": "v1"}]);
        let err = apply(Some(&live), &config_map(json!({})), "m", false, cm, NOW).expect_err("bad entries");
        assert!(err.to_string().starts_with("failed to decode managed fields"), "{err}");
        let wrong = config_map(json!(["not", "a", "map"]));
        assert_eq!(apply(None, &wrong, "m", false, cm, NOW), Err(invalid(".data: expected map, got list")));
        let no_version = json!({"kind": "ConfigMap"});
        assert!(matches!(apply(None, &no_version, "m", false, cm, NOW), Err(ApplyError::Invalid(_))));
    }

    #[test]
    fn without_a_schema_maps_merge_and_lists_are_atomic() {
        let config = json!({
            "apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t", "labels": {"a": "1"}},
            "spec": {"nested": {"x": 1}, "list": [1, 2]},
        });
        let live = apply(None, &config, "alice", false, None, NOW).expect("alice");
        assert_eq!(
            owned(&live, "alice", "Apply"),
            &json!({
                "f:metadata": {"f:labels": {".": {}, "f:a": {}}},
                "f:spec": {".": {}, "f:list": {}, "f:nested": {".": {}, "f:x": {}}},
            })
        );
        let other = json!({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"nested": {"y": 2}}});
        let live = apply(Some(&live), &other, "bob", false, None, NOW).expect("bob");
        assert_eq!(live["spec"]["nested"], json!({"x": 1, "y": 2}));
        let list =
            json!({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"list": [3]}});
        let found = conflicts(apply(Some(&live), &list, "bob", false, None, NOW));
        assert_eq!(found[0].path, ".spec.list");
    }

    #[test]
    fn crd_schemas_get_typed_metadata_and_preserve_unknown_fields() {
        let defs = Definitions::new();
        let node = json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                    "items": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}}},
                              "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
                }},
            },
        });
        let crd = Some(Schema::inline(&defs, &node));
        let config = json!({
            "apiVersion": "example.com/v1", "kind": "Thing",
            "metadata": {"name": "t", "labels": {"app": "x"}, "finalizers": ["f"]},
            "spec": {"free": {"form": true}, "items": [{"id": "one", "v": 1}]},
        });
        let out = apply(None, &config, "alice", false, crd, NOW).expect("apply");
        assert_eq!(
            owned(&out, "alice", "Apply"),
            &json!({
                "f:metadata": {"f:finalizers": {r#"v:"f""#: {}}, "f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:free": {".": {}, "f:form": {}},
                    "f:items": {r#"k:{"id":"one"}"#: {".": {}, "f:id": {}, "f:v": {}}},
                },
            })
        );
    }

    #[test]
    fn update_entries_are_capped() {
        let defs = definitions();
        let cm = schema(&defs, "io.k8s.api.core.v1.ConfigMap");
        let mut live = config_map(json!({}));
        for i in 0..12 {
            let mut next = live.clone();
            next["data"][format!("k{i}")] = json!("v");
            live = record_update(Some(&live), next.clone(), &format!("m{i}"), cm, &format!("2025-01-01T00:00:{i:02}Z"))
                .expect("update");
        }
        let list = live["metadata"]["managedFields"].as_array().expect("entries");
        assert_eq!(list.len(), MAX_UPDATE_MANAGERS);
        assert_eq!(owned(&live, ANCIENT_CHANGES, "Update"), &json!({"f:data": {"f:k0": {}, "f:k1": {}, "f:k2": {}}}));
        assert_eq!(owned(&live, "m11", "Update"), &json!({"f:data": {"f:k11": {}}}));
    }

    #[test]
    fn fields_v1_round_trips() {
        let raw = json!({
            "f:metadata": {"f:finalizers": {".": {}, r#"v:"a""#: {}}},
            "f:spec": {"f:ports": {r#"k:{"port":80,"protocol":"TCP"}"#: {".": {}, "f:port": {}}}, "f:x": {}},
        });
        let set = Set::from_fields_v1(&raw).expect("parse");
        assert_eq!(set.to_fields_v1(), raw);
        let paths: Vec<String> = set.paths().iter().map(|p| path_string(p)).collect();
        assert_eq!(
            paths,
            vec![
                ".metadata.finalizers",
                r#".metadata.finalizers[="a"]"#,
                ".spec.x",
                r#".spec.ports[port=80,protocol="TCP"]"#,
                r#".spec.ports[port=80,protocol="TCP"].port"#,
            ]
        );
        assert!(Set::from_fields_v1(&json!({"x": {}})).is_err());
        assert_eq!(Pe::Key(vec![("a".into(), json!("<&>"))]).serialize(), r#"k:{"a":"\u003c\u0026\u003e"}"#);
    }

    #[test]
    fn reads_rfc3339_times() {
        assert_eq!(unix_seconds(Some("1970-01-01T00:00:00Z")), 0);
        assert_eq!(unix_seconds(Some("2025-01-01T01:00:00+01:00")), 1_735_689_600);
        assert_eq!(unix_seconds(Some("2025-01-01T00:00:00.123Z")), 1_735_689_600);
        assert_eq!(unix_seconds(Some("garbage")), 0);
    }
}
