//! Continue tokens of paged lists: the revision the first page was read at and the key the
//! next page starts from, so every page of one list reads the same revision (and a token
//! from before a compaction is 410 Gone, from the store). Opaque to clients: base64 of a
//! small JSON document, checked against the list's own prefix.

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;

use super::{Error, Result, Revision};

/// The token of the page after one read at `revision`, starting at key `start`.
pub(super) fn encode(revision: Revision, start: &[u8]) -> String {
    let token = serde_json::json!({"v": "wasmkube.io/v1", "rv": revision, "start": String::from_utf8_lossy(start)});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

/// The revision and start key of `token`, which must continue a list of `prefix`.
pub(super) fn decode(token: &str, prefix: &[u8]) -> Result<(Revision, Bytes)> {
    let invalid = || Error::BadRequest("continue key is not valid: request a new list".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| invalid())?;
    let revision = value.get("rv").and_then(Value::as_i64).ok_or_else(invalid)?;
    let start = value.get("start").and_then(Value::as_str).ok_or_else(invalid)?;
    if !start.as_bytes().starts_with(prefix) {
        return Err(invalid());
    }
    Ok((revision, Bytes::copy_from_slice(start.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gives_back_its_revision_and_start() {
        let token = encode(42, b"/registry/core/configmaps/default/b");
        let (revision, start) = decode(&token, b"/registry/core/configmaps/").expect("valid");
        assert_eq!(revision, 42);
        assert_eq!(&start[..], b"/registry/core/configmaps/default/b");
    }

    #[test]
    fn a_token_of_another_list_or_garbage_is_refused() {
        let token = encode(7, b"/registry/core/secrets/default/a");
        for (token, prefix) in [
            (token.as_str(), &b"/registry/core/configmaps/"[..]),
            ("not base64 !", b"/registry/"),
            ("e30", b"/registry/"), // "{}"
        ] {
            match decode(token, prefix) {
                Err(Error::BadRequest(message)) => assert!(message.contains("continue key is not valid"), "{message}"),
                other => panic!("{token}: {other:?}"),
            }
        }
    }
}
