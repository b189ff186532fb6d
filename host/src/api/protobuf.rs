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

/// How deep messages may nest (a JSONSchemaProps inside another, a RawExtension holding a
/// protobuf object...). Each level is a stack frame, and a body of a few megabytes could
/// otherwise nest a million deep; serde_json refuses JSON deeper than 128 as well.
const MAX_DEPTH: usize = 100;

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
    #[error("messages are nested more than {MAX_DEPTH} deep")]
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
    decode_at_depth(body, 0)
}

fn decode_at_depth(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or(ProtobufError::MissingMagic)?;
    let table = TABLE.as_ref().map_err(|problem| ProtobufError::BrokenTable(problem.clone()))?;
    let envelope =
        Envelope::parse(rest).map_err(|failure| failure.into_error("runtime.Unknown"))?;
    if envelope.api_version.is_empty() || envelope.kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    if !envelope.content_encoding.is_empty() {
        return Err(ProtobufError::UnsupportedContentEncoding(envelope.content_encoding));
    }
    if !envelope.content_type.is_empty() && envelope.content_type != PROTOBUF_CONTENT_TYPE {
        return Err(ProtobufError::UnsupportedContentType(envelope.content_type));
    }
    let index = table.kinds.get(&envelope.api_version).and_then(|kinds| kinds.get(&envelope.kind)).copied().ok_or_else(
        || ProtobufError::UnknownKind { api_version: envelope.api_version.clone(), kind: envelope.kind.clone() },
    )?;
    let decoded = Decoder { table }
        .message(index, envelope.raw, depth)
        .map_err(|failure| failure.into_error(&envelope.kind))?;
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
                let inlined = self.value(field.kind, field.tag, wire, reader, depth).map_err(|f| f.within(name))?;
                if let Value::Object(inlined) = inlined {
                    object.extend(inlined);
                }
            }
            Cardinality::Repeated => {
                let items = slot_of(object, name, |v| v.is_array(), Value::Array(Vec::new()));
                let Value::Array(items) = items else { unreachable!("slot_of just made it an array") };
                if wire == LENGTH_DELIMITED && field.kind.is_packable() {
                    let mut packed = Reader(reader.length_delimited_payload().map_err(|r| Failure::from(r).within(name))?);
                    if field.kind == Kind::Double && packed.0.len() % 8 != 0 {
                        return Err(Failure::from(MalformedReason::BadPackedLength(packed.0.len())).within(name));
                    }
                    while !packed.0.is_empty() {
                        let wire = if field.kind == Kind::Double { FIXED64 } else { VARINT };
                        items.push(self.value(field.kind, field.tag, wire, &mut packed, depth).map_err(|f| f.within(name))?);
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
                2 => value = Some(self.value(field.kind, field.tag, wire, &mut reader, depth).map_err(|f| f.within(format!("[{key:?}]")))?),
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
            Form::Unwrap => message.fields.first().and_then(|f| object.get(&f.json_name)).cloned().unwrap_or(Value::Null),
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
            let message = MessageType::parse(entry, entries.len()).map_err(|problem| format!("{entry:.80}: {problem}"))?;
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
                        return Err(format!("{}.{} inlines a message that is not an object", message.name, field.json_name));
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
            Some(Value::Number(index)) => {
                Kind::Message(index.as_u64().and_then(|i| usize::try_from(i).ok()).filter(|&i| i < message_count).ok_or("no such message")?)
            }
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
