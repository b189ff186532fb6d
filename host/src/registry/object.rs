//! Object plumbing shared by every resource: decoding a request body, the metadata fields
//! the registry owns (uid, creationTimestamp, generation, resourceVersion), and the stored
//! encoding.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{ApiResource, Cause, Error, Object, Result};
use crate::storage::KeyValue;

pub(super) trait ObjectExt {
    fn metadata(&self) -> &Map<String, Value>;
    fn metadata_mut(&mut self) -> &mut Map<String, Value>;
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl ObjectExt for Object {
    fn metadata(&self) -> &Map<String, Value> {
        self.get("metadata").and_then(Value::as_object).unwrap_or(&EMPTY)
    }

    fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        let slot = self.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        match slot {
            Value::Object(map) => map,
            _ => unreachable!("metadata was just made an object"),
        }
    }
}

/// A request body as an object of `resource`: apiVersion and kind must match (or be absent).
pub(super) fn into_object(body: Value, resource: &ApiResource) -> Result<Object> {
    let Value::Object(mut object) = body else {
        return Err(Error::BadRequest("the request body must be a JSON object".into()));
    };
    let api_version = resource.api_version();
    for (field, what, expected) in
        [("apiVersion", "API version", api_version.as_str()), ("kind", "kind", resource.kind)]
    {
        match object.get(field).and_then(Value::as_str) {
            None | Some("") => {
                object.insert(field.into(), Value::String(expected.into()));
            }
            Some(given) if given == expected => {}
            Some(given) => {
                return Err(Error::BadRequest(format!(
                    "the {what} in the data ({given}) does not match the expected {what} ({expected})"
                )))
            }
        }
    }
    if object.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(Error::BadRequest("metadata must be an object".into()));
    }
    Ok(object)
}

/// The generic metadata rules: the kind's name rule, a namespace where one belongs, and
/// ObjectMeta's own (`validate::meta`: labels, annotations, finalizers, owners).
pub(super) fn validate_metadata(object: &Object, namespaced: bool, rule: NameRule) -> Vec<Cause> {
    let metadata = object.metadata();
    let mut causes = Vec::new();
    if let Some(name) = metadata.get("name").and_then(Value::as_str) {
        if let Some(problem) = rule.problem(name) {
            causes.push(Cause::invalid("metadata.name", format!("Invalid value: {name:?}: {problem}")));
        }
    }
    if namespaced && metadata.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty) {
        causes.push(Cause::required("metadata.namespace", "Required value"));
    }
    causes.extend(super::validate::meta::validate(metadata));
    causes
}

/// Which names a kind's objects may have (Kubernetes' `NameIsDNSSubdomain` and friends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: most kinds.
    Subdomain,
    /// DNS-1123 label (no dots, at most 63): namespaces.
    Label,
    /// DNS-1035 label (starts with a letter): services.
    Label1035,
    /// Any path segment (not "." or "..", no '/' or '%'): RBAC roles and bindings.
    PathSegment,
}

impl NameRule {
    pub(super) fn problem(self, name: &str) -> Option<&'static str> {
        match self {
            Self::Subdomain => dns_subdomain_problem(name),
            Self::Label => dns_subdomain_problem(name).or_else(|| {
                (name.len() > 63 || name.contains('.')).then_some(
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (at most 63 characters)",
                )
            }),
            Self::Label1035 => Self::Label.problem(name).or_else(|| {
                (!name.starts_with(|c: char| c.is_ascii_lowercase())).then_some(
                    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
                )
            }),
            Self::PathSegment => (name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']))
                .then_some("may not be '.' or '..' and may not contain '/' or '%'"),
        }
    }
}

/// Kubernetes' DNS-1123 subdomain rule: lowercase alphanumerics, '-' and '.', at most
/// 253 characters, starting and ending with an alphanumeric.
fn dns_subdomain_problem(name: &str) -> Option<&'static str> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > 253 {
        return Some("must be no more than 253 characters and not empty");
    }
    if !name.chars().all(ok_char) || !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        );
    }
    None
}

/// On update the client may not change what the registry owns: uid, creation time, the
/// name and namespace.
///
/// What kube-apiserver refuses instead of keeping: another name or namespace than the
/// request's (400, also when a patch changes them), another uid (422, immutable).
pub(super) fn carry_over_system_fields(
    object: &mut Object,
    old: &Object,
    resource: &ApiResource,
    namespace: Option<&str>,
    name: &str,
) -> Result<()> {
    const SYSTEM: [&str; 5] =
        ["uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"];
    let old_metadata = old.metadata();
    let text =
        |key: &str| object.metadata().get(key).and_then(Value::as_str).filter(|v| !v.is_empty()).map(String::from);
    if let Some(given) = text("name").filter(|given| given != name) {
        return Err(Error::BadRequest(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    if let (Some(given), Some(ns)) = (text("namespace"), namespace) {
        if given != ns {
            return Err(Error::BadRequest(format!(
                "the namespace of the object ({given}) does not match the namespace on the request ({ns})"
            )));
        }
    }
    let old_uid = old_metadata.get("uid").and_then(Value::as_str).unwrap_or_default();
    if let Some(given) = text("uid").filter(|given| given != old_uid) {
        return Err(Error::Invalid {
            kind: resource.kind.into(),
            name: name.into(),
            causes: vec![Cause::invalid("metadata.uid", format!("Invalid value: {given:?}: field is immutable"))],
        });
    }
    let metadata = object.metadata_mut();
    for field in SYSTEM {
        match old_metadata.get(field) {
            Some(value) => metadata.insert(field.into(), value.clone()),
            None => metadata.remove(field),
        };
    }
    metadata.insert("name".into(), Value::String(name.into()));
    if let Some(ns) = namespace {
        metadata.insert("namespace".into(), Value::String(ns.into()));
    }
    metadata.remove("resourceVersion");
    Ok(())
}

/// How much of `generateName` is kept (63 less the 5 random characters).
const MAX_GENERATED_BASE: usize = 58;

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate_at_char(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Set what the registry owns in a new object's metadata: its namespace (the request's),
/// its name (or one made from `generateName`), uid, creationTimestamp and generation.
/// Returns the name.
pub(super) fn prepare_new(
    object: &mut Object,
    resource: &ApiResource,
    namespace: Option<&str>,
    tracks_generation: bool,
) -> Result<String> {
    let metadata = object.metadata_mut();
    if let Some(ns) = namespace {
        match metadata.get("namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(Error::BadRequest(format!(
                    "the namespace of the object ({given}) does not match the namespace on the request ({ns})"
                )))
            }
            _ => {
                metadata.insert("namespace".into(), Value::String(ns.into()));
            }
        }
    } else {
        metadata.remove("namespace");
    }
    let name = match metadata.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        Some(name) => name.to_string(),
        None => match metadata.get("generateName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            // Kubernetes' SimpleNameGenerator: the base cut to 58 bytes, then 5 random characters.
            Some(base) => format!("{}{}", truncate_at_char(base, MAX_GENERATED_BASE), random_suffix()),
            None => {
                return Err(Error::Invalid {
                    kind: resource.kind.into(),
                    name: String::new(),
                    causes: vec![Cause::required("metadata.name", "name or generateName is required")],
                })
            }
        },
    };
    if metadata.get("resourceVersion").is_some_and(|rv| !rv.is_null() && rv.as_str() != Some("")) {
        return Err(Error::BadRequest("resourceVersion should not be set on objects to be created".into()));
    }
    metadata.insert("name".into(), Value::String(name.clone()));
    metadata.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
    metadata.insert("creationTimestamp".into(), Value::String(now()));
    metadata.remove("resourceVersion");
    metadata.remove("deletionTimestamp");
    metadata.remove("generation");
    if tracks_generation {
        metadata.insert("generation".into(), Value::from(1));
    }
    Ok(name)
}

/// Whether `new` would store what `old` holds: equal but for resourceVersion and the
/// managedFields timestamps (an update that changes nothing else is a no-op).
pub(super) fn unchanged(new: &Object, old: &Object) -> bool {
    if new.len() != old.len() || new.iter().any(|(k, v)| k != "metadata" && old.get(k) != Some(v)) {
        return false;
    }
    let (new, old) = (new.metadata(), old.metadata());
    let counted = |m: &Map<String, Value>| m.keys().filter(|k| k.as_str() != "resourceVersion").count();
    if counted(new) != counted(old) {
        return false;
    }
    new.iter().all(|(k, v)| match k.as_str() {
        "resourceVersion" => true,
        "managedFields" => match (v, old.get(k)) {
            (Value::Array(new), Some(Value::Array(old))) => {
                new.len() == old.len() && new.iter().zip(old).all(|(a, b)| same_but_time(a, b))
            }
            (new, old) => Some(new) == old,
        },
        _ => old.get(k) == Some(v),
    })
}

/// Two managedFields entries alike but for `time`.
fn same_but_time(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let counted = |m: &Map<String, Value>| m.keys().filter(|k| k.as_str() != "time").count();
            counted(a) == counted(b) && a.iter().all(|(k, v)| k == "time" || b.get(k) == Some(v))
        }
        _ => a == b,
    }
}

/// `metadata.generation` counts changes to everything but metadata and status.
pub(super) fn bump_generation(object: &mut Object, old: &Object) {
    let spec_changed = object.iter().any(|(k, v)| k != "metadata" && k != "status" && old.get(k) != Some(v))
        || old.keys().any(|k| k != "metadata" && k != "status" && !object.contains_key(k));
    let generation = old.metadata().get("generation").and_then(Value::as_i64).unwrap_or(1);
    let next = if spec_changed { generation + 1 } else { generation };
    object.metadata_mut().insert("generation".into(), Value::from(next));
}

/// `metadata.finalizers`.
pub(super) fn finalizers(object: &Object) -> Vec<String> {
    object
        .metadata()
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

/// Set the field at `path`, creating the objects on the way (replacing non-objects).
pub(super) fn set_path(object: &mut Object, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut map = object;
    for segment in parents {
        let slot = map.entry(*segment).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        map = match slot {
            Value::Object(inner) => inner,
            _ => return,
        };
    }
    map.insert((*last).into(), value);
}

/// Set condition `kind` in `status.conditions` to `status`, moving lastTransitionTime only
/// when the status changes.
pub(super) fn set_condition(object: &mut Object, kind: &str, status: &str, reason: Option<&str>) {
    let now = now();
    let conditions =
        object.get("status").and_then(|s| s.get("conditions")).and_then(Value::as_array).cloned().unwrap_or_default();
    let mut found = false;
    let mut updated: Vec<Value> = conditions
        .into_iter()
        .map(|mut condition| {
            if condition.get("type").and_then(Value::as_str) == Some(kind) {
                found = true;
                if condition.get("status").and_then(Value::as_str) != Some(status) {
                    condition["status"] = Value::String(status.into());
                    condition["lastTransitionTime"] = Value::String(now.clone());
                }
                condition["lastProbeTime"] = Value::Null;
                if let Some(reason) = reason {
                    condition["reason"] = Value::String(reason.into());
                }
            }
            condition
        })
        .collect();
    if !found {
        let mut condition =
            serde_json::json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
        if let Some(reason) = reason {
            condition["reason"] = Value::String(reason.into());
        }
        updated.push(condition);
    }
    set_path(object, &["status", "conditions"], Value::Array(updated));
}

/// An object as stored: compact JSON with its fields in kube-apiserver's order (`kind`,
/// `apiVersion`, `metadata` in ObjectMeta's order, then the rest as they came), so every
/// object read back is written out the way kube-apiserver writes it.
pub(super) fn encode(object: &Object) -> Result<Bytes> {
    serde_json::to_vec(&Ordered(object))
        .map(Bytes::from)
        .map_err(|e| Error::Internal(format!("cannot encode object: {e}")))
}

/// ObjectMeta's fields in the order of its Go struct (resourceVersion is not stored).
const METADATA_ORDER: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Serializes an object's fields in kube-apiserver's order without copying it.
struct Ordered<'a>(&'a Object);

/// Serializes `metadata` in ObjectMeta's order.
struct OrderedMetadata<'a>(&'a Object);

impl serde::Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let object = self.0;
        let mut map = serializer.serialize_map(Some(object.len()))?;
        for key in ["kind", "apiVersion"] {
            if let Some(value) = object.get(key) {
                map.serialize_entry(key, value)?;
            }
        }
        match object.get("metadata") {
            Some(Value::Object(metadata)) => map.serialize_entry("metadata", &OrderedMetadata(metadata))?,
            Some(other) => map.serialize_entry("metadata", other)?,
            None => {}
        }
        for (key, value) in object {
            if !matches!(key.as_str(), "kind" | "apiVersion" | "metadata") {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

impl serde::Serialize for OrderedMetadata<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let metadata = self.0;
        let mut map = serializer.serialize_map(Some(metadata.len()))?;
        for key in METADATA_ORDER {
            if let Some(value) = metadata.get(*key) {
                map.serialize_entry(key, value)?;
            }
        }
        for (key, value) in metadata {
            if !METADATA_ORDER.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// A stored value as the API serves it: compact JSON in kube-apiserver's field order with
/// `revision` as its resourceVersion — what `encode(&decode_at(value, revision)?)` gives,
/// without building the object: the fields are copied as raw JSON and only the
/// resourceVersion is written in. A value this cannot read that way (not an object, no
/// metadata object, escaped keys) takes the decoding path.
pub(super) fn served_json(value: &[u8], revision: i64) -> Result<Bytes> {
    fn spliced(value: &[u8], revision: i64) -> Option<Vec<u8>> {
        let object: RawFields = serde_json::from_slice(value).ok()?;
        let metadata = object.get("metadata")?;
        let metadata: RawFields = serde_json::from_str(metadata.get()).ok()?;
        let revision = revision.to_string();
        /// `"key":`, after a comma unless it is the object's first field.
        fn key(out: &mut Vec<u8>, first: &mut bool, key: &str) {
            if !std::mem::take(first) {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
        }
        let mut out = Vec::with_capacity(value.len() + 32);
        out.push(b'{');
        let mut first = true;
        for name in ["kind", "apiVersion"] {
            if let Some(raw) = object.get(name) {
                key(&mut out, &mut first, name);
                out.extend_from_slice(raw.get().as_bytes());
            }
        }
        key(&mut out, &mut first, "metadata");
        out.push(b'{');
        let mut first_in_metadata = true;
        for name in METADATA_ORDER {
            if *name == "resourceVersion" {
                key(&mut out, &mut first_in_metadata, name);
                out.push(b'"');
                out.extend_from_slice(revision.as_bytes());
                out.push(b'"');
            } else if let Some(raw) = metadata.get(name) {
                key(&mut out, &mut first_in_metadata, name);
                out.extend_from_slice(raw.get().as_bytes());
            }
        }
        for (name, raw) in &metadata.0 {
            if !METADATA_ORDER.contains(name) {
                key(&mut out, &mut first_in_metadata, name);
                out.extend_from_slice(raw.get().as_bytes());
            }
        }
        out.push(b'}');
        for (name, raw) in &object.0 {
            if !matches!(*name, "kind" | "apiVersion" | "metadata") {
                key(&mut out, &mut first, name);
                out.extend_from_slice(raw.get().as_bytes());
            }
        }
        out.push(b'}');
        Some(out)
    }
    match spliced(value, revision) {
        Some(json) => Ok(Bytes::from(json)),
        None => decode_at(value, revision).and_then(|object| encode(&object)),
    }
}

/// A JSON object's fields as borrowed raw values, in their order. Keys must be unescaped
/// (they are borrowed), so an object with an escaped key, or a repeated one, is refused
/// and the caller decodes it the ordinary way.
struct RawFields<'a>(Vec<(&'a str, &'a serde_json::value::RawValue)>);

impl<'a> RawFields<'a> {
    fn get(&self, key: &str) -> Option<&'a serde_json::value::RawValue> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, raw)| *raw)
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawFields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RawFields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> std::result::Result<Self::Value, M::Error> {
                let mut fields: Vec<(&'de str, &'de serde_json::value::RawValue)> = Vec::new();
                while let Some(key) = map.next_key::<&'de str>()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom("a repeated key"));
                    }
                    fields.push((key, map.next_value()?));
                }
                Ok(RawFields(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A stored value as an object carrying its resourceVersion.
pub(super) fn decode(kv: &KeyValue) -> Result<Object> {
    decode_at(&kv.value, kv.mod_revision)
}

pub(super) fn decode_at(value: &[u8], revision: i64) -> Result<Object> {
    let mut object: Object = serde_json::from_slice(value)
        .map_err(|e| Error::Internal(format!("stored object at revision {revision} is not valid JSON: {e}")))?;
    // In its place in ObjectMeta's order: after the fields that come before it.
    let metadata = object.metadata_mut();
    metadata.shift_remove("resourceVersion");
    let before = &METADATA_ORDER[..METADATA_ORDER.iter().position(|k| *k == "resourceVersion").unwrap_or(0)];
    let at = metadata.keys().rposition(|k| before.contains(&k.as_str())).map_or(0, |i| i + 1);
    metadata.shift_insert(at, "resourceVersion".into(), Value::String(revision.to_string()));
    Ok(object)
}

/// An object just stored at `revision`, as reading it back would give it (fields in the
/// stored order, the revision as its resourceVersion), without encoding and decoding it.
pub(super) fn stored_at(mut object: Object, revision: i64) -> Object {
    let mut ordered = Map::with_capacity(object.len());
    for key in ["kind", "apiVersion", "metadata"] {
        if let Some((key, value)) = object.shift_remove_entry(key) {
            ordered.insert(key, value);
        }
    }
    if let Some(Value::Object(metadata)) = ordered.get_mut("metadata") {
        let mut fields = std::mem::take(metadata);
        fields.shift_remove("resourceVersion");
        for key in METADATA_ORDER {
            if *key == "resourceVersion" {
                metadata.insert("resourceVersion".into(), Value::String(revision.to_string()));
            } else if let Some((key, value)) = fields.shift_remove_entry(*key) {
                metadata.insert(key, value);
            }
        }
        metadata.extend(fields);
    }
    ordered.extend(object);
    ordered
}

pub(super) fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Five characters from Kubernetes' generateName alphabet (no vowels, no confusables).
pub(super) fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_stored_and_read_in_kube_apiservers_field_order() {
        let object: Object = serde_json::from_str(
            r#"{"data":{"b":"1","a":"2"},"metadata":{"labels":{"x":"y"},"uid":"u","namespace":"n","name":"c"},"apiVersion":"v1","kind":"ConfigMap"}"#,
        )
        .expect("object");
        let stored = encode(&object).expect("encoded");
        let read = decode_at(&stored, 7).expect("decoded");
        assert_eq!(
            served_json(&stored, 7).expect("served"),
            encode(&read).expect("encoded"),
            "the spliced JSON is the decoded object's"
        );
        assert_eq!(
            serde_json::to_string(&read).expect("json"),
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","namespace":"n","uid":"u","resourceVersion":"7","labels":{"x":"y"}},"data":{"b":"1","a":"2"}}"#
        );
    }

    #[test]
    fn served_json_is_the_decoded_objects_encoding_whatever_the_stored_order() {
        let cases = [
            // Stored by an older writer in another order, with fields of every JSON type.
            r#"{"spec":{"n":1.5,"b":true,"z":null,"l":[1,{"a":"é\"q\n"}]},"metadata":{"x-other":1,"managedFields":[{"manager":"m"}],"name":"a","generation":3},"kind":"K","apiVersion":"g/v1"}"#,
            // A stale resourceVersion stored by mistake is replaced, not repeated.
            r#"{"kind":"K","metadata":{"resourceVersion":"1","uid":"u"}}"#,
            // Empty metadata; and an escaped key, which takes the decoding path.
            r#"{"metadata":{}}"#,
            r#"{"metadata":{"name":"a"},"we\u0069rd":1}"#,
            // No metadata at all: the decoding path gives it one.
            r#"{"kind":"K"}"#,
        ];
        for stored in cases {
            let expected = encode(&decode_at(stored.as_bytes(), 42).expect("decoded")).expect("encoded");
            let served = served_json(stored.as_bytes(), 42).expect("served");
            assert_eq!(String::from_utf8_lossy(&served), String::from_utf8_lossy(&expected), "{stored}");
        }
        assert!(served_json(b"[1]", 42).is_err(), "a stored value that is not an object is an error");
    }

    #[test]
    fn names_follow_dns_1123() {
        for good in ["a", "my-config", "a.b-c", "x1"] {
            assert_eq!(dns_subdomain_problem(good), None, "{good}");
        }
        for bad in ["", "A", "-a", "a-", "a_b", &"x".repeat(254)] {
            assert!(dns_subdomain_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn generate_name_keeps_58_bytes_of_its_base_and_a_create_may_not_pin_a_version() {
        let resource = ApiResource {
            group: "",
            version: "v1",
            kind: "ConfigMap",
            plural: "configmaps",
            singular: "configmap",
            namespaced: true,
            short_names: &[],
            categories: &[],
            subresources: &[],
        };
        let mut object: Object =
            serde_json::from_value(serde_json::json!({"metadata": {"generateName": "x".repeat(80)}})).expect("object");
        let name = prepare_new(&mut object, &resource, Some("default"), false).expect("named");
        assert_eq!(name.len(), 63, "{name}");
        assert!(name.starts_with(&"x".repeat(58)), "{name}");
        let mut pinned: Object =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "a", "resourceVersion": "5"}}))
                .expect("object");
        let refused = prepare_new(&mut pinned, &resource, Some("default"), false).expect_err("refused");
        assert_eq!(refused.to_string(), "resourceVersion should not be set on objects to be created");
    }

    #[test]
    fn generation_moves_only_when_the_spec_changes() {
        let old: Object =
            serde_json::from_value(serde_json::json!({"metadata": {"generation": 3}, "data": {"a": "1"}})).unwrap();
        let mut same: Object =
            serde_json::from_value(serde_json::json!({"metadata": {"labels": {"x": "y"}}, "data": {"a": "1"}}))
                .unwrap();
        bump_generation(&mut same, &old);
        assert_eq!(same.metadata()["generation"], 3);
        let mut changed: Object =
            serde_json::from_value(serde_json::json!({"metadata": {}, "data": {"a": "2"}})).unwrap();
        bump_generation(&mut changed, &old);
        assert_eq!(changed.metadata()["generation"], 4);
    }
}
