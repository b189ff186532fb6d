//! The on-disk record of one write, stored in the `log` keyspace under its revision
//! (big-endian, so key order is revision order). Encoding only; no I/O.
//!
//! Layout: `kind: u8 | create_revision: i64 | version: i64 | key_len: u32 | key | value`,
//! integers big-endian. A delete carries the deleted key's create revision and version and
//! an empty value.

use bytes::{BufMut, Bytes, BytesMut};

use super::index::Entry;
use crate::storage::{KeyValue, Revision};

const PUT: u8 = 1;
const DELETE: u8 = 2;
const HEADER: usize = 1 + 8 + 8 + 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub revision: Revision,
    pub key: Bytes,
    pub kind: RecordKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RecordKind {
    Put { value: Bytes, create_revision: Revision, version: i64 },
    Delete,
}

impl Record {
    pub fn log_key(revision: Revision) -> [u8; 8] {
        (revision as u64).to_be_bytes()
    }

    pub fn encode(&self) -> Vec<u8> {
        let (kind, value, create_revision, version) = match &self.kind {
            RecordKind::Put { value, create_revision, version } => (PUT, &value[..], *create_revision, *version),
            RecordKind::Delete => (DELETE, &[][..], 0, 0),
        };
        let mut out = BytesMut::with_capacity(HEADER + self.key.len() + value.len());
        out.put_u8(kind);
        out.put_i64(create_revision);
        out.put_i64(version);
        out.put_u32(self.key.len() as u32);
        out.put_slice(&self.key);
        out.put_slice(value);
        out.to_vec()
    }

    pub fn decode(log_key: &[u8], bytes: &[u8]) -> Result<Self, String> {
        let revision = <[u8; 8]>::try_from(log_key)
            .map(|b| u64::from_be_bytes(b) as Revision)
            .map_err(|_| format!("log key of {} bytes, expected 8", log_key.len()))?;
        let corrupt = |what: &str| format!("record at revision {revision} is corrupt: {what}");
        let header = bytes.get(..HEADER).ok_or_else(|| corrupt("short header"))?;
        let int = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&header[at..at + 8]);
            i64::from_be_bytes(raw)
        };
        let (create_revision, version) = (int(1), int(9));
        let mut raw_len = [0u8; 4];
        raw_len.copy_from_slice(&header[17..21]);
        let key_len = u32::from_be_bytes(raw_len) as usize;
        let key = bytes.get(HEADER..HEADER + key_len).ok_or_else(|| corrupt("short key"))?;
        let value = &bytes[HEADER + key_len..];
        let kind = match header[0] {
            PUT => RecordKind::Put { value: Bytes::copy_from_slice(value), create_revision, version },
            DELETE => RecordKind::Delete,
            other => return Err(corrupt(&format!("unknown kind {other}"))),
        };
        Ok(Self { revision, key: Bytes::copy_from_slice(key), kind })
    }

    /// The index entry this record makes.
    pub fn entry(&self) -> Entry {
        match &self.kind {
            RecordKind::Put { create_revision, version, .. } => {
                Entry { revision: self.revision, create_revision: *create_revision, version: *version }
            }
            RecordKind::Delete => Entry::deletion(self.revision),
        }
    }

    /// The key-value a put record holds.
    pub fn into_key_value(self) -> Option<KeyValue> {
        match self.kind {
            RecordKind::Put { value, create_revision, version } => {
                Some(KeyValue { key: self.key, value, create_revision, mod_revision: self.revision, version })
            }
            RecordKind::Delete => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_delete_round_trip() {
        for kind in [RecordKind::Put { value: "v".into(), create_revision: 3, version: 2 }, RecordKind::Delete] {
            let record = Record { revision: 7, key: "/registry/a".into(), kind };
            let decoded = Record::decode(&Record::log_key(7), &record.encode());
            assert_eq!(decoded, Ok(record));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_to_a_record_or_an_error(key in proptest::collection::vec(0u8.., 0..12), bytes in proptest::collection::vec(0u8.., 0..64)) {
            let _ = Record::decode(&key, &bytes);
        }

        #[test]
        fn every_record_round_trips(revision in 1i64.., key in proptest::collection::vec(0u8.., 0..40), value in proptest::collection::vec(0u8.., 0..200), create in 1i64.., version in 1i64..) {
            let record = Record { revision, key: key.into(), kind: RecordKind::Put { value: value.into(), create_revision: create, version } };
            proptest::prop_assert_eq!(Record::decode(&Record::log_key(revision), &record.encode()), Ok(record));
        }
    }

    #[test]
    fn truncated_record_is_an_error_not_a_panic() {
        let record = Record { revision: 1, key: "k".into(), kind: RecordKind::Delete };
        let bytes = record.encode();
        for cut in 0..bytes.len() {
            let _ = Record::decode(&Record::log_key(1), &bytes[..cut]);
        }
        assert!(Record::decode(&[1, 2], &bytes).is_err());
    }
}
