//! Request bodies into JSON values: objects (JSON, YAML, Kubernetes protobuf) and patches
//! (JSON patch, merge, strategic merge, apply YAML), each with its `Status` when it cannot
//! be read.
//!
//! Owns the bounds on what decoding may cost: every format refuses a body nested deeper
//! than a decoder can take before the work grows with it (serde_json and the protobuf
//! reader stop at their depth as they go; YAML is scanned first, as libyaml builds every
//! event of a document before anything can stop it, and slows down more than linearly on
//! deep flow collections), and YAML is decoded off the async workers. It does not know
//! what an object may contain: that is the registry's.

use axum::http::{header, HeaderMap, StatusCode};
use serde_json::Value;

use super::ApiError;
use crate::registry::Patch;

/// How deep a YAML body may nest (flow and block collections together) to be decoded at
/// all. The decoder itself refuses more than 128 levels; this bound only keeps libyaml's
/// work, done before that check, small (a thousand levels take it about a millisecond).
const MAX_YAML_DEPTH: usize = 1000;

/// A body of an object as JSON, from any media type kube-apiserver takes for objects:
/// JSON, YAML, or Kubernetes protobuf (what kubectl's generator commands send).
pub(super) async fn object(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    object_checked(headers, body).await.map(|(value, _)| value)
}

/// [`object`], and the paths of the keys a JSON body repeats (`spec.replicas`; the last
/// one is kept, as Go's decoder keeps it), which `fieldValidation` reports or refuses.
pub(super) async fn object_checked(headers: &HeaderMap, body: &[u8]) -> Result<(Value, Vec<String>), ApiError> {
    match media_type(headers, "application/json") {
        "application/json" | "" => json_noting_duplicates(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
        _ => object_of_other_media(headers, body).await.map(|value| (value, Vec::new())),
    }
}

async fn object_of_other_media(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    match media_type(headers, "application/json") {
        "application/yaml" => yaml(body, "the request body is not valid YAML").await,
        "application/vnd.kubernetes.protobuf" => {
            let mut value = super::protobuf::decode(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            drop_unset(&mut value);
            Ok(value)
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({other}); send application/json, application/yaml or application/vnd.kubernetes.protobuf"
            ),
        )),
    }
}

/// A PATCH body, by its content type.
pub(super) async fn patch(headers: &HeaderMap, body: &[u8]) -> Result<Patch, ApiError> {
    let invalid = |e: serde_json::Error| ApiError::bad_request(format!("the patch is not valid JSON: {e}"));
    match media_type(headers, "") {
        "application/json-patch+json" => serde_json::from_slice(body).map(Patch::Json).map_err(invalid),
        "application/merge-patch+json" => serde_json::from_slice(body).map(Patch::Merge).map_err(invalid),
        "application/strategic-merge-patch+json" => serde_json::from_slice(body).map(Patch::Strategic).map_err(invalid),
        "application/apply-patch+yaml" => yaml(body, "the applied configuration is not valid YAML").await.map(Patch::Apply),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the patch type {other:?} is not supported; use application/merge-patch+json or application/json-patch+json"),
        )),
    }
}

/// JSON into a value, noting the dotted path of every key an object repeats.
fn json_noting_duplicates(body: &[u8]) -> Result<(Value, Vec<String>), serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut duplicates = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = Noting { at: None, duplicates: &mut duplicates }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok((value, duplicates))
}

/// Where a value is, as a chain of borrowed keys and indices: a path is only spelled out
/// (allocated) for a repeated key.
#[derive(Clone, Copy)]
struct Segment<'p> {
    parent: Option<&'p Segment<'p>>,
    key: Option<&'p str>,
    index: usize,
}

impl Segment<'_> {
    /// `spec.containers[0].name`.
    fn dotted(&self) -> String {
        let mut parts = Vec::new();
        let mut at = Some(self);
        while let Some(segment) = at {
            parts.push(match segment.key {
                Some(key) => format!(".{key}"),
                None => format!("[{}]", segment.index),
            });
            at = segment.parent;
        }
        let path: String = parts.into_iter().rev().collect();
        path.strip_prefix('.').unwrap_or(&path).to_string()
    }
}

/// Builds a `Value` like serde_json's own, recording repeated keys.
struct Noting<'p, 'd> {
    at: Option<&'p Segment<'p>>,
    duplicates: &'d mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Noting<'_, '_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Noting<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let segment = Segment { parent: self.at, key: None, index: items.len() };
            let next = Noting { at: Some(&segment), duplicates: &mut *self.duplicates };
            match seq.next_element_seed(next)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let segment = Segment { parent: self.at, key: Some(&key), index: 0 };
            let value = map.next_value_seed(Noting { at: Some(&segment), duplicates: &mut *self.duplicates })?;
            if object.contains_key(&key) {
                self.duplicates.push(segment.dotted());
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn media_type<'h>(headers: &'h HeaderMap, absent: &'h str) -> &'h str {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or(absent);
    content_type.split(';').next().unwrap_or_default().trim()
}

/// YAML (or JSON, which is YAML) into a value: refused at once past [`MAX_YAML_DEPTH`],
/// else decoded on a blocking thread.
async fn yaml(body: &[u8], invalid: &'static str) -> Result<Value, ApiError> {
    if yaml_too_deep(body, MAX_YAML_DEPTH) {
        return Err(ApiError::bad_request(format!("{invalid}: it nests deeper than {MAX_YAML_DEPTH} levels")));
    }
    let body = body.to_vec();
    tokio::task::spawn_blocking(move || serde_yaml_ng::from_slice::<Value>(&body))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("decoding the YAML body failed: {e}"),
            )
        })?
        .map_err(|e| ApiError::bad_request(format!("{invalid}: {e}")))
}

/// Whether YAML text nests collections deeper than `limit`, judged in one pass without
/// parsing it: flow collections by their brackets (outside quoted strings and comments),
/// block collections by their indentation and `- ` markers. It may count more levels than
/// a parser would (a bracket that opens a plain scalar), never fewer, so a document it lets
/// through nests at most `limit` levels.
fn yaml_too_deep(text: &[u8], limit: usize) -> bool {
    // Each open block collection: its indentation, and whether it is a sequence (a `- `
    // line) rather than a mapping (or the content after a `- `).
    let mut blocks: Vec<(usize, bool)> = Vec::new();
    let mut flow = 0usize;
    // In flow context, a quoted string may span lines.
    let mut quote: Option<u8> = None;
    // The indentation of the line that opened a block scalar (`|`, `>`), while in one.
    let mut block_scalar: Option<usize> = None;
    for line in text.split(|b| *b == b'\n') {
        let indent = line.iter().take_while(|b| **b == b' ').count();
        let rest = &line[indent..];
        let blank = rest.iter().all(u8::is_ascii_whitespace);
        if let Some(opened_at) = block_scalar {
            if blank || indent > opened_at {
                continue;
            }
            block_scalar = None;
        }
        let mut at = 0;
        if flow == 0 && quote.is_none() {
            if blank || rest[0] == b'#' {
                continue;
            }
            let entry =
                |rest: &[u8], at: usize| rest.get(at) == Some(&b'-') && rest.get(at + 1).is_none_or(|b| *b == b' ');
            if entry(rest, 0) {
                // A sequence entry: a sibling of an open sequence at its indentation, or
                // (YAML lets `key:` take a sequence at the key's own indentation) a
                // sequence inside an open mapping there.
                while blocks.last().is_some_and(|(open, _)| *open > indent) {
                    blocks.pop();
                }
                if blocks.last() != Some(&(indent, true)) {
                    blocks.push((indent, true));
                }
            } else {
                while blocks.last().is_some_and(|(open, _)| *open >= indent) {
                    blocks.pop();
                }
                blocks.push((indent, false));
            }
            // `- - - x`: a sequence in a sequence on one line, one level each, then what
            // the last entry holds.
            while entry(rest, at) {
                at += 1;
                while rest.get(at) == Some(&b' ') {
                    at += 1;
                }
                blocks.push((indent + at, entry(rest, at)));
            }
            if blocks.len() > limit {
                return true;
            }
        }
        let mut value_start = flow == 0;
        while at < rest.len() {
            let byte = rest[at];
            if let Some(q) = quote {
                match byte {
                    b'\\' if q == b'"' => at += 1,
                    b'\'' if q == b'\'' && rest.get(at + 1) == Some(&b'\'') => at += 1,
                    _ if byte == q => quote = None,
                    _ => {}
                }
                at += 1;
                continue;
            }
            match byte {
                b'#' if at == 0 || rest[at - 1] == b' ' || rest[at - 1] == b'\t' => break,
                b'"' | b'\'' if flow > 0 || value_start => quote = Some(byte),
                b'[' | b'{' if flow > 0 || value_start => {
                    flow += 1;
                    if blocks.len() + flow > limit {
                        return true;
                    }
                }
                b']' | b'}' if flow > 0 => flow -= 1,
                b'|' | b'>' if flow == 0 && value_start => {
                    let tail = &rest[at + 1..];
                    let header_ends = tail
                        .iter()
                        .position(|b| !(b.is_ascii_digit() || *b == b'+' || *b == b'-'))
                        .map_or(tail.len(), |i| i);
                    let after = &tail[header_ends..];
                    let trimmed = after.iter().skip_while(|b| **b == b' ' || **b == b'\t');
                    if trimmed.clone().next().is_none_or(|b| *b == b'#' || *b == b'\r') {
                        block_scalar = Some(indent);
                        break;
                    }
                }
                b' ' | b'\t' => {}
                b':' | b'?' | b'-' | b',' => {}
                _ => {}
            }
            // A flow collection, a quote or a block scalar starts a value: at the line's
            // start, after `key: `, `- `, `? `, or anywhere inside a flow collection.
            value_start = match byte {
                b' ' | b'\t' => value_start || matches!(rest.get(at.wrapping_sub(1)), Some(b':' | b'-' | b'?')),
                _ => false,
            };
            at += 1;
        }
    }
    false
}

/// Go's protobuf encoder writes every non-pointer field, so a decoded body carries empty
/// strings and nulls where a JSON client would have sent nothing: drop them, as Go's
/// `omitempty` would.
fn drop_unset(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !matches!(v, Value::Null) && v.as_str() != Some(""));
            map.values_mut().for_each(drop_unset);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_unset),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_yaml_is_not_too_deep() {
        let manifest = r#"
apiVersion: v1   # a comment with [ and {
kind: ConfigMap
metadata:
  name: "a [b"
  labels: {app: web, tier: "x{"}
  annotations:
    note: 'it''s [fine'
data:
  script: |
    [[[[[[[[[[ brackets in a block scalar ]]
    {{{{{{
  list: [1, [2, [3]], {a: [b]}]
  items:
  - - - a
    - b
  - c: d
"#;
        assert!(!yaml_too_deep(manifest.as_bytes(), 8));
        let value: Value = serde_yaml_ng::from_str(manifest).expect("valid YAML");
        assert_eq!(value["data"]["script"], "[[[[[[[[[[ brackets in a block scalar ]]\n{{{{{{\n");
    }

    #[test]
    fn deep_flow_block_and_compact_nesting_is_too_deep() {
        let flow = "[".repeat(2000);
        assert!(yaml_too_deep(flow.as_bytes(), MAX_YAML_DEPTH));
        let mapped = format!("a: {}", "{b: ".repeat(1500));
        assert!(yaml_too_deep(mapped.as_bytes(), MAX_YAML_DEPTH));
        let compact = format!("{}x", "- ".repeat(1500));
        assert!(yaml_too_deep(compact.as_bytes(), MAX_YAML_DEPTH));
        let indented: String = (0..1200).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert!(yaml_too_deep(indented.as_bytes(), MAX_YAML_DEPTH));
        // Deep, but within the bound.
        assert!(!yaml_too_deep("[".repeat(500).as_bytes(), MAX_YAML_DEPTH));
        // Found by the fuzz target: a sequence at its key's own indentation nests inside
        // the key's mapping (4 levels), and long lists do not pile up levels.
        assert!(yaml_too_deep(b"\n  - b: \n\n    - b: ", 3));
        let list: String = (0..5000).map(|i| format!("- item{i}\n")).collect();
        assert!(!yaml_too_deep(format!("a:\n{list}b: 1\n").as_bytes(), 3));
    }

    #[test]
    fn repeated_keys_are_noted_by_path_and_the_last_one_kept() {
        let body = br#"{"spec": {"replicas": 1, "replicas": 3, "template": {"spec": {"containers": [{"name": "a", "name": "b"}]}}}, "kind": "Deployment"}"#;
        let (value, duplicates) = json_noting_duplicates(body).expect("JSON");
        assert_eq!(duplicates, ["spec.replicas", "spec.template.spec.containers[0].name"]);
        assert_eq!(value["spec"]["replicas"], 3);
        assert_eq!(value["spec"]["template"]["spec"]["containers"][0]["name"], "b");
        let plain: Value = serde_json::from_slice(br#"{"a": [1, 2.5, -3, null, true, "x", {"b": {}}]}"#).expect("JSON");
        assert_eq!(
            json_noting_duplicates(br#"{"a": [1, 2.5, -3, null, true, "x", {"b": {}}]}"#).expect("JSON").0,
            plain
        );
        assert!(json_noting_duplicates(b"{} trailing").is_err());
        assert!(json_noting_duplicates("[".repeat(1000).as_bytes()).is_err(), "the depth limit holds");
    }

    #[tokio::test]
    async fn a_hundred_thousand_nested_brackets_are_refused_at_once() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/yaml".parse().expect("header"));
        let error = object(&headers, "[".repeat(100_000).as_bytes()).await.expect_err("too deep");
        assert_eq!(error.status()["code"], 400);
        // The scan's words: refused before libyaml saw it.
        assert!(error.to_string().contains("nests deeper than 1000 levels"), "{error}");
    }

    /// The fuzz targets of the JSON and YAML decoders (bounded: see `crate::fuzzing`).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::fuzzing;

        fn depth(value: &Value) -> usize {
            match value {
                Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
                Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
                _ => 0,
            }
        }

        /// YAML-ish text from the pieces that open, close and indent collections.
        fn yaml_text() -> impl Strategy<Value = String> {
            const PIECES: &[&str] = &[
                "[", "]", "{", "}", "- ", ": ", "\n", "  ", "a", "b: ", "'", "\"", "# ", "|", ">", ", ", "? ",
                "\n  - ", "\n    ",
            ];
            proptest::collection::vec(proptest::sample::select(PIECES), 0..40).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #![proptest_config(fuzzing::config())]

            /// Never a panic, and the same verdict and value as serde_json's own decoder.
            #[test]
            fn json_bodies_decode_as_serde_json_decodes_them(text in fuzzing::json_text()) {
                let ours = json_noting_duplicates(&text).map(|(value, _)| value).ok();
                let theirs = serde_json::from_slice::<Value>(&text).ok();
                prop_assert_eq!(ours, theirs);
            }

            /// A document the depth scan lets through nests no deeper than its bound.
            #[test]
            fn the_yaml_depth_scan_never_counts_too_few_levels(text in yaml_text()) {
                let limit = 3;
                if !yaml_too_deep(text.as_bytes(), limit) {
                    if let Ok(value) = serde_yaml_ng::from_str::<Value>(&text) {
                        prop_assert!(depth(&value) <= limit, "{text:?} nests {} levels", depth(&value));
                    }
                }
            }
        }
    }
}
