//! Request bodies in `application/vnd.kubernetes.protobuf`, turned into the JSON object a JSON
//! client would have sent. Real kubectl and client-go send protobuf for typed writes
//! (`kubectl create deployment`, `kubectl run`, controllers); wasmkube still answers in JSON,
//! which client-go decodes by the response's Content-Type, so only decoding lives here.
//!
//! Owns the Kubernetes protobuf wire format: the `k8s\0` envelope (`runtime.Unknown`), the
//! proto2 wire types, and the JSON forms of the special types (Time, MicroTime, Duration,
//! Quantity, IntOrString, RawExtension, FieldsV1, inlined Go structs such as a Volume's
//! VolumeSource). Field numbers and JSON names come from the generated table
//! `host/openapi/k8s-protobuf-fields.json` (`scripts/gen-protobuf-fields`). It must not touch
//! routing, storage or what a field means: the caller passes the JSON on exactly as if it had
//! arrived as JSON, and validation and defaulting happen there.
//!
//! Every field present on the wire appears in the JSON, zero values included: a pointer field
//! set to 0 (`replicas: 0`) must survive. Go's gogo-protobuf also writes every non-pointer
//! field, so a kubectl body carries `"uid": ""`, `"generation": 0` or
//! `"creationTimestamp": null` where Go's JSON would have omitted them; Kubernetes reads those
//! zero values as unset. Absent fields stay absent.

use std::collections::HashMap;
use std::sync::LazyLock;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

/// The 4 bytes every Kubernetes protobuf body starts with.
const MAGIC: &[u8; 4] = b"k8s\0";

/// The only content type of `raw` this decoder reads (also what an empty one means).
const PROTOBUF_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// How deep the decoded object may nest: as deep as serde_json reads JSON (its recursion
/// limit), so that what is stored can be read back. Message nesting (a JSONSchemaProps inside
/// another, a RawExtension holding a protobuf object) is held to it as well, since each level
/// is a stack frame and a body of a few megabytes could otherwise nest a million deep.
const MAX_DEPTH: usize = 127;

static TABLE: LazyLock<Result<Table, String>> =
    LazyLock::new(|| Table::parse(include_str!("../../openapi/k8s-protobuf-fields.json")));

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic bytes \"k8s\\0\"")]
    MissingMagic,
    #[error("the protobuf envelope names no kind (typeMeta.apiVersion and typeMeta.kind are required)")]
    MissingTypeMeta,
    #[error("no protobuf message is known for kind {kind:?} in apiVersion {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("the protobuf envelope's contentEncoding {0:?} is not supported (only none)")]
    UnsupportedContentEncoding(String),
    #[error("the protobuf envelope's contentType {0:?} is not supported (only {PROTOBUF_CONTENT_TYPE})")]
    UnsupportedContentType(String),
    #[error("malformed protobuf at {path}: {problem}")]
    Malformed {
        /// Where, as a JSON path from the kind (`Deployment.spec.template.spec.containers[0]`).
        path: String,
        #[source]
        problem: MalformedReason,
    },
    #[error("the protobuf field table is broken (regenerate it with scripts/gen-protobuf-fields): {0}")]
    BrokenTable(String),
}

/// What is wrong at the place a [`ProtobufError::Malformed`] names.
#[derive(Debug, thiserror::Error)]
pub enum MalformedReason {
    #[error("the data ends in the middle of a field")]
    Truncated,
    #[error("a varint is longer than 10 bytes")]
    VarintTooLong,
    #[error("field number {0} is out of range")]
    BadFieldNumber(u64),
    #[error("wire type {0} does not exist")]
    UnknownWireType(u8),
    #[error("groups (wire types 3 and 4) are not used by Kubernetes")]
    Group,
    #[error("field {tag} has wire type {found}, expected {expected}")]
    WrongWireType { tag: u32, found: u8, expected: &'static str },
    #[error("a packed list of doubles is {0} bytes long, not a multiple of 8")]
    BadPackedLength(usize),
    #[error("a string is not valid UTF-8")]
    InvalidUtf8,
    #[error("a double is {0}, which JSON cannot hold")]
    NonFiniteDouble(f64),
    #[error("the time {seconds}s {nanos}ns since 1970 is outside the years 0 to 9999")]
    TimeOutOfRange { seconds: i64, nanos: i64 },
    #[error("the object nests deeper than {MAX_DEPTH} levels, more than a JSON body may")]
    TooDeep,
    #[error("the embedded JSON is invalid")]
    InvalidEmbeddedJson(#[source] serde_json::Error),
    #[error("the embedded object is invalid")]
    InvalidEmbeddedObject(#[source] Box<ProtobufError>),
}

/// Decode a `application/vnd.kubernetes.protobuf` body: the 4-byte magic `k8s\0`, then a
/// `runtime.Unknown` envelope (typeMeta{apiVersion=1, kind=2}=1, raw=2, contentEncoding=3,
/// contentType=4); `raw` is the message of the kind named by typeMeta. Returns the JSON object
/// (with apiVersion and kind set from the envelope).
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let object = decode_at_depth(body, 0)?;
    if nesting(&object) > MAX_DEPTH {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        return Err(ProtobufError::Malformed { path: kind, problem: MalformedReason::TooDeep });
    }
    Ok(object)
}

/// How many arrays and objects deep `value` goes.
fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

fn decode_at_depth(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or(ProtobufError::MissingMagic)?;
    let table = TABLE.as_ref().map_err(|problem| ProtobufError::BrokenTable(problem.clone()))?;
    let envelope = Envelope::parse(rest).map_err(|failure| failure.into_error("runtime.Unknown"))?;
    if envelope.api_version.is_empty() || envelope.kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    if !envelope.content_encoding.is_empty() {
        return Err(ProtobufError::UnsupportedContentEncoding(envelope.content_encoding));
    }
    if !envelope.content_type.is_empty() && envelope.content_type != PROTOBUF_CONTENT_TYPE {
        return Err(ProtobufError::UnsupportedContentType(envelope.content_type));
    }
    let index =
        table.kinds.get(&envelope.api_version).and_then(|kinds| kinds.get(&envelope.kind)).copied().ok_or_else(
            || ProtobufError::UnknownKind { api_version: envelope.api_version.clone(), kind: envelope.kind.clone() },
        )?;
    let decoded =
        Decoder { table }.message(index, envelope.raw, depth).map_err(|failure| failure.into_error(&envelope.kind))?;
    let Value::Object(fields) = decoded else {
        return Err(ProtobufError::BrokenTable(format!("kind {} is not an object message", envelope.kind)));
    };
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(envelope.api_version));
    object.insert("kind".into(), Value::String(envelope.kind));
    object.extend(fields);
    Ok(Value::Object(object))
}

/// `runtime.Unknown`, the envelope around every protobuf body.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

impl<'a> Envelope<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, Failure> {
        let mut envelope = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
            content_type: String::new(),
        };
        let mut reader = Reader(data);
        while let Some((tag, wire)) = reader.key()? {
            match tag {
                1 => {
                    let mut type_meta = Reader(reader.length_delimited(tag, wire)?);
                    while let Some((tag, wire)) = type_meta.key()? {
                        match tag {
                            1 => envelope.api_version = type_meta.string(tag, wire)?,
                            2 => envelope.kind = type_meta.string(tag, wire)?,
                            _ => type_meta.skip(wire)?,
                        }
                    }
                }
                2 => envelope.raw = reader.length_delimited(tag, wire)?,
                3 => envelope.content_encoding = reader.string(tag, wire)?,
                4 => envelope.content_type = reader.string(tag, wire)?,
                _ => reader.skip(wire)?,
            }
        }
        Ok(envelope)
    }
}

/// A decoding failure on its way out: the path is collected innermost first, only on error.
#[derive(Debug)]
struct Failure {
    path: Vec<String>,
    reason: MalformedReason,
}

impl Failure {
    fn within(mut self, segment: impl Into<String>) -> Self {
        self.path.push(segment.into());
        self
    }

    fn into_error(self, root: &str) -> ProtobufError {
        let mut path = root.to_owned();
        for segment in self.path.iter().rev() {
            if !segment.starts_with('[') {
                path.push('.');
            }
            path.push_str(segment);
        }
        ProtobufError::Malformed { path, problem: self.reason }
    }
}

impl From<MalformedReason> for Failure {
    fn from(reason: MalformedReason) -> Self {
        Failure { path: Vec::new(), reason }
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const FIXED32: u8 = 5;

/// The unread rest of one message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, MalformedReason> {
        let mut value = 0u64;
        for (i, byte) in self.0.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.0.len() >= 10 { MalformedReason::VarintTooLong } else { MalformedReason::Truncated })
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], MalformedReason> {
        if len > self.0.len() {
            return Err(MalformedReason::Truncated);
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    fn key(&mut self) -> Result<Option<(u32, u8)>, MalformedReason> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).ok().filter(|tag| (1..=0x1fff_ffff).contains(tag));
        let tag = tag.ok_or(MalformedReason::BadFieldNumber(key >> 3))?;
        Ok(Some((tag, (key & 7) as u8)))
    }

    fn skip(&mut self, wire: u8) -> Result<(), MalformedReason> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LENGTH_DELIMITED => self.length_delimited_payload().map(drop),
            FIXED32 => self.take(4).map(drop),
            3 | 4 => Err(MalformedReason::Group),
            other => Err(MalformedReason::UnknownWireType(other)),
        }
    }

    fn length_delimited_payload(&mut self) -> Result<&'a [u8], MalformedReason> {
        let len = self.varint()?;
        self.take(usize::try_from(len).map_err(|_| MalformedReason::Truncated)?)
    }

    fn length_delimited(&mut self, tag: u32, wire: u8) -> Result<&'a [u8], MalformedReason> {
        expect_wire(tag, wire, LENGTH_DELIMITED, "2 (length-delimited)")?;
        self.length_delimited_payload()
    }

    fn string(&mut self, tag: u32, wire: u8) -> Result<String, MalformedReason> {
        let bytes = self.length_delimited(tag, wire)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| MalformedReason::InvalidUtf8)
    }
}

fn expect_wire(tag: u32, found: u8, wanted: u8, expected: &'static str) -> Result<(), MalformedReason> {
    if found == wanted {
        Ok(())
    } else {
        Err(MalformedReason::WrongWireType { tag, found, expected })
    }
}

/// Walks messages through the table.
struct Decoder<'t> {
    table: &'t Table,
}

impl Decoder<'_> {
    /// One message of the table, as its JSON form.
    fn message(&self, index: usize, data: &[u8], depth: usize) -> Result<Value, Failure> {
        if depth >= MAX_DEPTH {
            return Err(MalformedReason::TooDeep.into());
        }
        let message = &self.table.messages[index];
        let mut object = Map::new();
        let mut reader = Reader(data);
        while let Some((tag, wire)) = reader.key()? {
            match message.field(tag) {
                Some(field) => self.field(field, wire, &mut reader, &mut object, depth)?,
                None => reader.skip(wire)?,
            }
        }
        message.form.to_json(message, object)
    }

    /// One field into `object`. A field sent twice keeps its last value (protobuf would merge
    /// two messages; Kubernetes' encoder never sends one twice).
    fn field(
        &self,
        field: &FieldType,
        wire: u8,
        reader: &mut Reader<'_>,
        object: &mut Map<String, Value>,
        depth: usize,
    ) -> Result<(), Failure> {
        let name = field.json_name.as_str();
        match field.cardinality {
            Cardinality::Single => {
                let value = self.value(field.kind, field.tag, wire, reader, depth).map_err(|f| f.within(name))?;
                object.insert(field.json_name.clone(), value);
            }
            Cardinality::Inline => {
                // No path segment: in JSON the inlined fields are the parent's.
                let inlined = self.value(field.kind, field.tag, wire, reader, depth)?;
                if let Value::Object(inlined) = inlined {
                    object.extend(inlined);
                }
            }
            Cardinality::Repeated => {
                let items = slot_of(object, name, |v| v.is_array(), Value::Array(Vec::new()));
                let Value::Array(items) = items else { unreachable!("slot_of just made it an array") };
                if wire == LENGTH_DELIMITED && field.kind.is_packable() {
                    let mut packed =
                        Reader(reader.length_delimited_payload().map_err(|r| Failure::from(r).within(name))?);
                    if field.kind == Kind::Double && packed.0.len() % 8 != 0 {
                        return Err(Failure::from(MalformedReason::BadPackedLength(packed.0.len())).within(name));
                    }
                    while !packed.0.is_empty() {
                        let wire = if field.kind == Kind::Double { FIXED64 } else { VARINT };
                        items.push(
                            self.value(field.kind, field.tag, wire, &mut packed, depth).map_err(|f| f.within(name))?,
                        );
                    }
                } else {
                    let position = format!("[{}]", items.len());
                    let item = self.value(field.kind, field.tag, wire, reader, depth);
                    items.push(item.map_err(|f| f.within(position).within(name))?);
                }
            }
            Cardinality::Map => {
                let entry = reader.length_delimited(field.tag, wire).map_err(|r| Failure::from(r).within(name))?;
                let (key, value) = self.map_entry(field, entry, depth).map_err(|f| f.within(name))?;
                let entries = slot_of(object, name, |v| v.is_object(), Value::Object(Map::new()));
                let Value::Object(entries) = entries else { unreachable!("slot_of just made it an object") };
                entries.insert(key, value);
            }
        }
        Ok(())
    }

    /// A map entry: key = 1 (string), value = 2; a missing one is its zero value.
    fn map_entry(&self, field: &FieldType, data: &[u8], depth: usize) -> Result<(String, Value), Failure> {
        let (mut key, mut value) = (String::new(), None);
        let mut reader = Reader(data);
        while let Some((tag, wire)) = reader.key()? {
            match tag {
                1 => key = reader.string(tag, wire)?,
                2 => {
                    value = Some(
                        self.value(field.kind, tag, wire, &mut reader, depth)
                            .map_err(|f| f.within(format!("[{key:?}]")))?,
                    )
                }
                _ => reader.skip(wire)?,
            }
        }
        let value = match value {
            Some(value) => value,
            None => self.zero_value(field.kind, depth)?,
        };
        Ok((key, value))
    }

    fn zero_value(&self, kind: Kind, depth: usize) -> Result<Value, Failure> {
        Ok(match kind {
            Kind::String | Kind::Bytes => Value::String(String::new()),
            Kind::Bool => Value::Bool(false),
            Kind::Int32 | Kind::Int64 | Kind::Double => Value::from(0),
            Kind::Json => Value::Null,
            Kind::Message(index) => self.message(index, &[], depth + 1)?,
        })
    }

    /// One value of `kind` at the reader.
    fn value(&self, kind: Kind, tag: u32, wire: u8, reader: &mut Reader<'_>, depth: usize) -> Result<Value, Failure> {
        Ok(match kind {
            Kind::String => Value::String(reader.string(tag, wire)?),
            Kind::Bytes => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(reader.length_delimited(tag, wire)?))
            }
            Kind::Json => embedded_json(reader.length_delimited(tag, wire)?, depth)?,
            Kind::Bool => {
                expect_wire(tag, wire, VARINT, "0 (varint)")?;
                Value::Bool(reader.varint()? != 0)
            }
            Kind::Int32 => {
                expect_wire(tag, wire, VARINT, "0 (varint)")?;
                Value::from(reader.varint()? as i32)
            }
            Kind::Int64 => {
                expect_wire(tag, wire, VARINT, "0 (varint)")?;
                Value::from(reader.varint()? as i64)
            }
            Kind::Double => {
                expect_wire(tag, wire, FIXED64, "1 (64-bit)")?;
                let bytes = reader.take(8)?;
                double(f64::from_le_bytes(bytes.try_into().map_err(|_| MalformedReason::Truncated)?))?
            }
            Kind::Message(index) => self.message(index, reader.length_delimited(tag, wire)?, depth + 1)?,
        })
    }
}

/// The value under `name`, replaced by `empty` unless it `fits` (an inlined struct could have
/// put something else there).
fn slot_of<'m>(
    object: &'m mut Map<String, Value>,
    name: &str,
    fits: fn(&Value) -> bool,
    empty: Value,
) -> &'m mut Value {
    let slot = object.entry(name).or_insert(Value::Null);
    if !fits(slot) {
        *slot = empty;
    }
    slot
}

/// Bytes holding a JSON document (RawExtension, FieldsV1, apiextensions JSON); empty is
/// `null`, and a protobuf object (`k8s\0...`, which Kubernetes nests in a RawExtension) is
/// decoded too.
fn embedded_json(bytes: &[u8], depth: usize) -> Result<Value, MalformedReason> {
    if bytes.is_empty() {
        Ok(Value::Null)
    } else if bytes.starts_with(MAGIC) {
        decode_at_depth(bytes, depth + 1).map_err(|error| MalformedReason::InvalidEmbeddedObject(Box::new(error)))
    } else {
        serde_json::from_slice(bytes).map_err(MalformedReason::InvalidEmbeddedJson)
    }
}

/// A double as Go's JSON writes it: whole numbers without a fraction.
fn double(value: f64) -> Result<Value, MalformedReason> {
    if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        return Ok(Value::from(value as i64));
    }
    Number::from_f64(value).map(Value::Number).ok_or(MalformedReason::NonFiniteDouble(value))
}

/// The field table, loaded once from the generated JSON.
#[derive(Debug)]
struct Table {
    /// apiVersion → kind → index into `messages`.
    kinds: HashMap<String, HashMap<String, usize>>,
    messages: Vec<MessageType>,
}

#[derive(Debug)]
struct MessageType {
    name: String,
    /// Sorted by tag.
    fields: Vec<FieldType>,
    form: Form,
}

impl MessageType {
    fn field(&self, tag: u32) -> Option<&FieldType> {
        self.fields.binary_search_by_key(&tag, |field| field.tag).ok().map(|i| &self.fields[i])
    }

    fn get<'v>(&self, object: &'v Map<String, Value>, tag: u32) -> Option<&'v Value> {
        self.field(tag).and_then(|field| object.get(&field.json_name))
    }
}

#[derive(Debug)]
struct FieldType {
    tag: u32,
    json_name: String,
    kind: Kind,
    cardinality: Cardinality,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    String,
    Bool,
    Int32,
    Int64,
    Double,
    /// JSON: base64.
    Bytes,
    /// Bytes holding a JSON document.
    Json,
    Message(usize),
}

impl Kind {
    fn is_packable(self) -> bool {
        matches!(self, Kind::Bool | Kind::Int32 | Kind::Int64 | Kind::Double)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cardinality {
    Single,
    Repeated,
    /// String keys.
    Map,
    /// A Go struct embedded with `json:",inline"`: its fields join the parent's.
    Inline,
}

/// How a message appears in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// An object of its fields.
    Object,
    /// `meta.v1.Time`: RFC 3339 to the second; empty is `null`.
    Time,
    /// `meta.v1.MicroTime`: RFC 3339 with 6 fractional digits; empty is `null`.
    MicroTime,
    /// `meta.v1.Duration`: Go's duration string (`1h0m0s`).
    Duration,
    /// `resource.Quantity`: its string.
    Quantity,
    /// `intstr.IntOrString`: a number or a string as its type says.
    IntOrString,
    /// The value of its one field (RawExtension, FieldsV1, Go named slices such as ExtraValue).
    Unwrap,
    /// apiextensions JSONSchemaPropsOrArray: a schema, or a list of them.
    SchemaOrArray,
    /// apiextensions JSONSchemaPropsOrBool: a schema, or a bool.
    SchemaOrBool,
    /// apiextensions JSONSchemaPropsOrStringArray: a list of strings, or a schema.
    SchemaOrStringArray,
}

impl Form {
    fn parse(name: &str) -> Option<Form> {
        Some(match name {
            "time" => Form::Time,
            "microTime" => Form::MicroTime,
            "duration" => Form::Duration,
            "quantity" => Form::Quantity,
            "intOrString" => Form::IntOrString,
            "unwrap" => Form::Unwrap,
            "schemaOrArray" => Form::SchemaOrArray,
            "schemaOrBool" => Form::SchemaOrBool,
            "schemaOrStringArray" => Form::SchemaOrStringArray,
            _ => return None,
        })
    }

    /// The JSON of a decoded message whose fields are in `object` (keyed by JSON name); the
    /// tags used here are checked against k8s-pb by the generator.
    fn to_json(self, message: &MessageType, object: Map<String, Value>) -> Result<Value, Failure> {
        let int = |tag| message.get(&object, tag).and_then(Value::as_i64).unwrap_or(0);
        let non_empty = |tag| message.get(&object, tag).filter(|v| v.as_array().is_none_or(|a| !a.is_empty()));
        Ok(match self {
            Form::Object => Value::Object(object),
            Form::Time | Form::MicroTime if object.is_empty() => Value::Null,
            Form::Time => Value::String(rfc3339(int(1), int(2), false)?),
            Form::MicroTime => Value::String(rfc3339(int(1), int(2), true)?),
            Form::Duration => Value::String(go_duration(int(1))),
            Form::Quantity => message.get(&object, 1).cloned().unwrap_or_else(|| Value::String("0".into())),
            Form::IntOrString if int(1) == 1 => {
                message.get(&object, 3).cloned().unwrap_or_else(|| Value::String(String::new()))
            }
            Form::IntOrString => Value::from(int(2)),
            Form::Unwrap => {
                message.fields.first().and_then(|f| object.get(&f.json_name)).cloned().unwrap_or(Value::Null)
            }
            Form::SchemaOrArray => non_empty(2).or_else(|| non_empty(1)).cloned().unwrap_or(Value::Null),
            Form::SchemaOrBool => match message.get(&object, 2) {
                Some(schema) => schema.clone(),
                None => Value::Bool(message.get(&object, 1).and_then(Value::as_bool).unwrap_or(false)),
            },
            Form::SchemaOrStringArray => non_empty(2).or_else(|| non_empty(1)).cloned().unwrap_or(Value::Null),
        })
    }
}

/// `seconds` and `nanos` since 1970 in UTC as Go formats `time.RFC3339` (or `RFC3339Micro`).
fn rfc3339(seconds: i64, nanos: i64, micro: bool) -> Result<String, MalformedReason> {
    let out_of_range = MalformedReason::TimeOutOfRange { seconds, nanos };
    let Some(total) = seconds.checked_add(nanos.div_euclid(1_000_000_000)) else { return Err(out_of_range) };
    let nanos = nanos.rem_euclid(1_000_000_000);
    let (days, second_of_day) = (total.div_euclid(86_400), total.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return Err(out_of_range);
    }
    let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if micro {
        text.push_str(&format!(".{:06}", nanos / 1000));
    }
    text.push('Z');
    Ok(text)
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// Nanoseconds as Go's `time.Duration.String()`: `1h0m0s`, `1.5s`, `500ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    if u < 1_000_000_000 {
        let (unit, precision) = match u {
            0..1_000 => ("ns", 0),
            1_000..1_000_000 => ("µs", 3),
            _ => ("ms", 6),
        };
        return format!("{sign}{}{unit}", with_fraction(u, precision));
    }
    let (seconds, fraction) = (u / 1_000_000_000, u % 1_000_000_000);
    let seconds_text = with_fraction(seconds % 60 * 1_000_000_000 + fraction, 9);
    let minutes = seconds / 60;
    match (minutes / 60, minutes % 60) {
        (0, 0) => format!("{sign}{seconds_text}s"),
        (0, m) => format!("{sign}{m}m{seconds_text}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds_text}s"),
    }
}

/// `value / 10^precision` with the fraction's trailing zeros (and a bare point) dropped.
fn with_fraction(value: u64, precision: u32) -> String {
    let scale = 10u64.pow(precision);
    let (whole, fraction) = (value / scale, value % scale);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:0width$}", width = precision as usize);
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl Table {
    /// Reads the generated table (its format is in `scripts/gen-protobuf-fields`) and checks
    /// that every reference in it resolves, so decoding can index without checks.
    fn parse(text: &str) -> Result<Table, String> {
        let root: Value = serde_json::from_str(text).map_err(|error| error.to_string())?;
        let entries = root.get("messages").and_then(Value::as_array).ok_or("no \"messages\" list")?;
        let mut messages = Vec::with_capacity(entries.len());
        for entry in entries {
            let message =
                MessageType::parse(entry, entries.len()).map_err(|problem| format!("{entry:.80}: {problem}"))?;
            messages.push(message);
        }
        let mut kinds = HashMap::new();
        for (api_version, by_kind) in root.get("kinds").and_then(Value::as_object).ok_or("no \"kinds\" object")? {
            let by_kind = by_kind.as_object().ok_or_else(|| format!("kinds of {api_version} are not an object"))?;
            let mut indices = HashMap::new();
            for (kind, index) in by_kind {
                let index = index.as_u64().and_then(|i| usize::try_from(i).ok()).filter(|&i| i < messages.len());
                let index = index.ok_or_else(|| format!("kind {api_version} {kind} has no message"))?;
                if messages[index].form != Form::Object {
                    return Err(format!("kind {api_version} {kind} is not an object message"));
                }
                indices.insert(kind.clone(), index);
            }
            kinds.insert(api_version.clone(), indices);
        }
        for message in &messages {
            for field in message.fields.iter().filter(|field| field.cardinality == Cardinality::Inline) {
                if let Kind::Message(index) = field.kind {
                    if messages[index].form != Form::Object {
                        return Err(format!(
                            "{}.{} inlines a message that is not an object",
                            message.name, field.json_name
                        ));
                    }
                }
            }
        }
        Ok(Table { kinds, messages })
    }
}

impl MessageType {
    fn parse(entry: &Value, message_count: usize) -> Result<MessageType, String> {
        let parts = entry.as_array().ok_or("not a list")?;
        let name = parts.first().and_then(Value::as_str).ok_or("no name")?.to_owned();
        let form = match parts.get(2) {
            None => Form::Object,
            Some(form) => form.as_str().and_then(Form::parse).ok_or_else(|| format!("unknown form {form}"))?,
        };
        let mut fields = Vec::new();
        for field in parts.get(1).and_then(Value::as_array).ok_or("no field list")? {
            fields.push(FieldType::parse(field, message_count).map_err(|problem| format!("field {field}: {problem}"))?);
        }
        fields.sort_by_key(|field| field.tag);
        if fields.windows(2).any(|pair| pair[0].tag == pair[1].tag) {
            return Err("two fields share a tag".into());
        }
        if form == Form::Unwrap && fields.len() != 1 {
            return Err("an unwrapped message needs exactly one field".into());
        }
        Ok(MessageType { name, fields, form })
    }
}

impl FieldType {
    fn parse(field: &Value, message_count: usize) -> Result<FieldType, String> {
        let parts = field.as_array().ok_or("not a list")?;
        let tag = parts.first().and_then(Value::as_u64).and_then(|tag| u32::try_from(tag).ok()).ok_or("no tag")?;
        let json_name = parts.get(1).and_then(Value::as_str).ok_or("no JSON name")?.to_owned();
        let kind = match parts.get(2) {
            Some(Value::Number(index)) => Kind::Message(
                index
                    .as_u64()
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|&i| i < message_count)
                    .ok_or("no such message")?,
            ),
            Some(Value::String(scalar)) => match scalar.as_str() {
                "string" => Kind::String,
                "bool" => Kind::Bool,
                "int32" => Kind::Int32,
                "int64" => Kind::Int64,
                "double" => Kind::Double,
                "bytes" => Kind::Bytes,
                "json" => Kind::Json,
                other => return Err(format!("unknown type {other:?}")),
            },
            _ => return Err("no type".into()),
        };
        let cardinality = match parts.get(3).map(|c| c.as_str()) {
            None => Cardinality::Single,
            Some(Some("repeated")) => Cardinality::Repeated,
            Some(Some("map")) => Cardinality::Map,
            Some(Some("inline")) if matches!(kind, Kind::Message(_)) => Cardinality::Inline,
            Some(other) => return Err(format!("unknown cardinality {other:?}")),
        };
        Ok(FieldType { tag, json_name, kind, cardinality })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `kubectl create deployment x --image=nginx --replicas=2` with a cpu limit, as
    /// k8s-pb/prost encode it (printed by the scratch crate's `print_vectors`).
    const DEPLOYMENT: &str = "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412500a0d0a01785a080a03617070120178\
        123f0802120a0a080a036170701201781a2f0a0a5a080a036170701201781221121f0a056e67696e7812056e67696e78420f0a0d0a0363\
        707512060a043530306d1a002200";
    /// A Secret `s` with data `k: [0x00, 0xff]` and type Opaque.
    const SECRET: &str = "6b3873000a0c0a027631120653656372657412160a030a017312070a016b120200ff1a064f70617175651a002200";

    fn unhex(hex: &str) -> Vec<u8> {
        let digits: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
    }

    fn varint(mut value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
        out
    }

    fn varint_field(tag: u32, value: u64) -> Vec<u8> {
        [varint(u64::from(tag) << 3), varint(value)].concat()
    }

    fn bytes_field(tag: u32, payload: &[u8]) -> Vec<u8> {
        [varint(u64::from(tag) << 3 | 2), varint(payload.len() as u64), payload.to_vec()].concat()
    }

    fn body(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [bytes_field(1, api_version.as_bytes()), bytes_field(2, kind.as_bytes())].concat();
        [b"k8s\0".to_vec(), bytes_field(1, &type_meta), bytes_field(2, raw)].concat()
    }

    fn table() -> &'static Table {
        TABLE.as_ref().expect("the generated table loads")
    }

    fn index_of(name: &str) -> usize {
        table().messages.iter().position(|m| m.name == name).unwrap_or_else(|| panic!("{name} is in the table"))
    }

    fn tag_of(message: &str, json_name: &str) -> u32 {
        let fields = &table().messages[index_of(message)].fields;
        fields.iter().find(|f| f.json_name == json_name).unwrap_or_else(|| panic!("{message}.{json_name}")).tag
    }

    fn decode_message(name: &str, data: &[u8]) -> Result<Value, Failure> {
        Decoder { table: table() }.message(index_of(name), data, 0)
    }

    const CORE: &str = "io.k8s.api.core.v1.";
    const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

    #[test]
    fn table_loads_and_knows_the_kinds_kubectl_creates() {
        for (api_version, kind) in [
            ("v1", "Pod"),
            ("v1", "Service"),
            ("v1", "Secret"),
            ("v1", "ConfigMap"),
            ("v1", "Namespace"),
            ("v1", "ServiceAccount"),
            ("apps/v1", "Deployment"),
            ("batch/v1", "Job"),
            ("batch/v1", "CronJob"),
            ("networking.k8s.io/v1", "Ingress"),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            ("policy/v1", "PodDisruptionBudget"),
        ] {
            assert!(
                table().kinds.get(api_version).is_some_and(|kinds| kinds.contains_key(kind)),
                "{api_version} {kind}"
            );
        }
    }

    #[test]
    fn kubectl_create_deployment_decodes_to_its_json() {
        let decoded = decode(&unhex(DEPLOYMENT)).expect("decodes");
        assert_eq!(
            decoded,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "x", "labels": {"app": "x"}},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "x"}},
                    "template": {
                        "metadata": {"labels": {"app": "x"}},
                        "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {"limits": {"cpu": "500m"}}}]}
                    }
                }
            })
        );
    }

    #[test]
    fn secret_bytes_become_base64() {
        let decoded = decode(&unhex(SECRET)).expect("decodes");
        assert_eq!(
            decoded,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "AP8="}, "type": "Opaque"})
        );
    }

    #[test]
    fn truncated_or_corrupted_bodies_are_errors_never_panics() {
        let bytes = unhex(DEPLOYMENT);
        for len in 0..bytes.len() {
            let _ = decode(&bytes[..len]);
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x02, 0x08, 0x80, 0xff] {
                let mut corrupt = bytes.clone();
                corrupt[at] ^= flip;
                let _ = decode(&corrupt);
            }
        }
        assert!(matches!(decode(&bytes[..bytes.len() - 1]), Err(ProtobufError::Malformed { .. })));
    }

    #[test]
    fn envelope_problems_are_named() {
        assert!(matches!(decode(b""), Err(ProtobufError::MissingMagic)));
        assert!(matches!(decode(b"{\"kind\":\"Pod\"}"), Err(ProtobufError::MissingMagic)));
        assert!(matches!(decode(b"k8s\0"), Err(ProtobufError::MissingTypeMeta)));
        assert!(matches!(
            decode(&body("v1", "Gadget", &[])),
            Err(ProtobufError::UnknownKind { api_version, kind }) if api_version == "v1" && kind == "Gadget"
        ));
        let gzip = [body("v1", "Namespace", &[]), bytes_field(3, b"gzip")].concat();
        assert!(matches!(decode(&gzip), Err(ProtobufError::UnsupportedContentEncoding(e)) if e == "gzip"));
        let json = [body("v1", "Namespace", &[]), bytes_field(4, b"application/json")].concat();
        assert!(matches!(decode(&json), Err(ProtobufError::UnsupportedContentType(_))));
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        let metadata = bytes_field(1, &bytes_field(1, b"ns"));
        let unknown = [
            varint_field(90, 300),
            [varint(91 << 3 | 1), vec![0; 8]].concat(),
            bytes_field(92, b"whatever"),
            [varint(93 << 3 | 5), vec![0; 4]].concat(),
        ]
        .concat();
        let decoded = decode(&body("v1", "Namespace", &[metadata, unknown].concat())).expect("decodes");
        assert_eq!(decoded, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}));
    }

    #[test]
    fn wrong_wire_types_and_groups_are_errors_with_a_path() {
        let name_as_varint = bytes_field(1, &varint_field(1, 7));
        let error = decode(&body("v1", "Namespace", &name_as_varint)).expect_err("a string sent as a varint");
        assert_eq!(
            error.to_string(),
            "malformed protobuf at Namespace.metadata.name: field 1 has wire type 0, expected 2 (length-delimited)"
        );
        let group = varint(95 << 3 | 3);
        let error = decode(&body("v1", "Namespace", &group)).expect_err("a group");
        assert!(matches!(error, ProtobufError::Malformed { problem: MalformedReason::Group, .. }));
        let overlong = [varint(1 << 3), vec![0xff; 11]].concat();
        assert!(matches!(
            decode_message(&format!("{META}ObjectMeta"), &overlong),
            Err(Failure { reason: MalformedReason::WrongWireType { .. }, .. })
        ));
        let overlong = [varint(7 << 3), vec![0xff; 11]].concat();
        assert!(matches!(
            decode_message(&format!("{META}ObjectMeta"), &overlong),
            Err(Failure { reason: MalformedReason::VarintTooLong, .. })
        ));
    }

    #[test]
    fn repeated_scalars_read_packed_and_unpacked_and_int32_may_be_negative() {
        let context = format!("{CORE}PodSecurityContext");
        let groups = tag_of(&context, "supplementalGroups");
        let packed: Vec<u8> = [varint(5), varint(1 << 40)].concat();
        let data =
            [varint_field(groups, 1), bytes_field(groups, &packed), varint_field(groups, (-2i64) as u64)].concat();
        assert_eq!(
            decode_message(&context, &data).expect("decodes"),
            json!({"supplementalGroups": [1, 5, 1_u64 << 40, -2]})
        );

        let port = format!("{CORE}ContainerPort");
        let data =
            [varint_field(tag_of(&port, "hostPort"), (-1i64) as u64), varint_field(tag_of(&port, "containerPort"), 80)]
                .concat();
        assert_eq!(decode_message(&port, &data).expect("decodes"), json!({"hostPort": -1, "containerPort": 80}));
    }

    #[test]
    fn map_entries_without_key_or_value_get_zero_values() {
        let labels = tag_of(&format!("{META}ObjectMeta"), "labels");
        let data =
            [bytes_field(labels, &bytes_field(1, b"only-key")), bytes_field(labels, &bytes_field(2, b"only-value"))]
                .concat();
        assert_eq!(
            decode_message(&format!("{META}ObjectMeta"), &data).expect("decodes"),
            json!({"labels": {"only-key": "", "": "only-value"}})
        );
    }

    #[test]
    fn special_types_take_their_json_forms() {
        let time = format!("{META}Time");
        assert_eq!(decode_message(&time, &[]).expect("empty"), Value::Null);
        assert_eq!(decode_message(&time, &varint_field(1, 0)).expect("epoch"), json!("1970-01-01T00:00:00Z"));
        let quantity = "io.k8s.apimachinery.pkg.api.resource.Quantity";
        assert_eq!(decode_message(quantity, &bytes_field(1, b"1Gi")).expect("quantity"), json!("1Gi"));
        let int_or_string = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
        assert_eq!(decode_message(int_or_string, &varint_field(2, 8080)).expect("int"), json!(8080));
        let named = [varint_field(1, 1), bytes_field(3, b"http")].concat();
        assert_eq!(decode_message(int_or_string, &named).expect("string"), json!("http"));
        let raw = "io.k8s.apimachinery.pkg.runtime.RawExtension";
        assert_eq!(decode_message(raw, &bytes_field(1, br#"{"a":[1]}"#)).expect("json"), json!({"a": [1]}));
        assert_eq!(decode_message(raw, &[]).expect("absent"), Value::Null);
        assert!(matches!(
            decode_message(raw, &bytes_field(1, b"{not json")),
            Err(Failure { reason: MalformedReason::InvalidEmbeddedJson(_), .. })
        ));
    }

    #[test]
    fn times_format_as_go_does() {
        assert_eq!(rfc3339(0, 0, false).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_164_645, 999_999_999, false).unwrap(), "2024-01-02T03:04:05Z");
        assert_eq!(rfc3339(-1, 0, false).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(951_782_400, 0, false).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-62_135_596_800, 0, false).unwrap(), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799, 0, false).unwrap(), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(1_704_164_645, 123_456_789, true).unwrap(), "2024-01-02T03:04:05.123456Z");
        assert_eq!(rfc3339(10, -1, true).unwrap(), "1970-01-01T00:00:09.999999Z");
        assert!(matches!(rfc3339(253_402_300_800, 0, false), Err(MalformedReason::TimeOutOfRange { .. })));
        assert!(matches!(rfc3339(i64::MAX, 1_000_000_000, false), Err(MalformedReason::TimeOutOfRange { .. })));
        assert!(rfc3339(i64::MIN, -1, false).is_err());
    }

    #[test]
    fn durations_format_as_go_does() {
        for (nanos, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (1_500_000_000, "1.5s"),
            (4_000_000_001, "4.000000001s"),
            (90_000_000_000, "1m30s"),
            (-90_000_000_000, "-1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ] {
            assert_eq!(go_duration(nanos), text, "{nanos}ns");
        }
    }

    #[test]
    fn doubles_are_written_like_go_and_non_finite_ones_refused() {
        assert_eq!(double(10.0).unwrap(), json!(10));
        assert_eq!(double(0.5).unwrap(), json!(0.5));
        assert!(matches!(double(f64::NAN), Err(MalformedReason::NonFiniteDouble(_))));
        assert!(matches!(double(f64::INFINITY), Err(MalformedReason::NonFiniteDouble(_))));
    }

    #[test]
    fn max_depth_is_what_serde_json_reads_back() {
        let nested = |levels: usize| "[".repeat(levels) + &"]".repeat(levels);
        let parsed: Value = serde_json::from_str(&nested(MAX_DEPTH)).expect("the deepest allowed JSON reads back");
        assert_eq!(nesting(&parsed), MAX_DEPTH);
        assert!(serde_json::from_str::<Value>(&nested(MAX_DEPTH + 1)).is_err());
    }

    #[test]
    fn objects_nesting_deeper_than_json_may_are_refused() {
        let schema = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
        let not = tag_of(schema, "not");
        let nest = |levels: usize| (0..levels).fold(Vec::new(), |inner, _| bytes_field(not, &inner));
        // CustomResourceDefinition.spec.versions[0].schema.openAPIV3Schema: 6 levels of JSON.
        let apiext = |kind: &str| format!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.{kind}");
        let crd = |levels: usize| {
            let validation = bytes_field(tag_of(&apiext("CustomResourceValidation"), "openAPIV3Schema"), &nest(levels));
            let version = bytes_field(tag_of(&apiext("CustomResourceDefinitionVersion"), "schema"), &validation);
            let spec = bytes_field(tag_of(&apiext("CustomResourceDefinitionSpec"), "versions"), &version);
            let crd = bytes_field(tag_of(&apiext("CustomResourceDefinition"), "spec"), &spec);
            body("apiextensions.k8s.io/v1", "CustomResourceDefinition", &crd)
        };
        assert!(decode(&crd(MAX_DEPTH - 6)).is_ok());
        let error = decode(&crd(MAX_DEPTH - 5)).expect_err("one level too deep");
        assert!(matches!(error, ProtobufError::Malformed { problem: MalformedReason::TooDeep, .. }));
        assert_eq!(
            error.to_string(),
            "malformed protobuf at CustomResourceDefinition: the object nests deeper than 127 levels, more than a JSON body may"
        );
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let schema = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
        let not = tag_of(schema, "not");
        let nest = |levels: usize| (0..levels).fold(Vec::new(), |inner, _| bytes_field(not, &inner));
        assert!(decode_message(schema, &nest(MAX_DEPTH - 1)).is_ok());
        assert!(matches!(
            decode_message(schema, &nest(MAX_DEPTH + 50)),
            Err(Failure { reason: MalformedReason::TooDeep, .. })
        ));
    }

    /// The fuzz target of the protobuf decoder (bounded: see `crate::fuzzing`).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        /// An envelope with the magic, a typeMeta for a kind with a message, and arbitrary
        /// bytes as its `raw`: inputs that get past the first checks.
        fn body() -> impl Strategy<Value = Vec<u8>> {
            (proptest::collection::vec(any::<u8>(), 0..200), any::<bool>()).prop_map(|(raw, wrapped)| {
                if !wrapped {
                    return [b"k8s\0".as_slice(), &raw].concat();
                }
                let type_meta = [&[0x0a, 2][..], b"v1", &[0x12, 3], b"Pod"].concat();
                let mut body = b"k8s\0".to_vec();
                body.extend([0x0a, type_meta.len() as u8]);
                body.extend(type_meta);
                body.push(0x12);
                let mut len = raw.len();
                while len >= 0x80 {
                    body.push((len as u8) | 0x80);
                    len >>= 7;
                }
                body.push(len as u8);
                body.extend(raw);
                body
            })
        }

        proptest! {
            #![proptest_config(crate::fuzzing::config())]

            /// Never a panic; what decodes is within the depth bound.
            #[test]
            fn protobuf_bodies_decode_or_are_refused(bytes in body()) {
                if let Ok(value) = decode(&bytes) {
                    prop_assert!(nesting(&value) <= MAX_DEPTH);
                }
            }
        }
    }
}
