//! The snapshot file format of the embedded store (`wasmkube store snapshot save|restore`).
//! Encoding only: the store hands in its records; restore hands them back.
//!
//! Layout: the magic line, `revision: i64`, `compacted: i64`, then per record
//! `len: u32 | log key (8 bytes) | record`, then `u32::MAX` and a CRC32 of everything
//! before it. Integers are big-endian.

use std::io::{Read, Write};

use serde::Serialize;

use crate::storage::{Result, Revision, StoreError};

const MAGIC: &[u8] = b"wasmkube-snapshot-v1\n";
const END: u32 = u32::MAX;

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub revision: Revision,
    pub compacted: Revision,
    pub records: u64,
}

struct Checksummed<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Checksummed<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes).map_err(io_error)
    }
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Internal(format!("snapshot I/O failed: {e}"))
}

pub(super) fn write(
    out: &mut dyn Write,
    revision: Revision,
    compacted: Revision,
    records: impl Iterator<Item = Result<(fjall::Slice, fjall::Slice)>>,
) -> Result<SnapshotInfo> {
    let mut out = Checksummed { inner: std::io::BufWriter::new(out), crc: crc32fast::Hasher::new() };
    out.put(MAGIC)?;
    out.put(&revision.to_be_bytes())?;
    out.put(&compacted.to_be_bytes())?;
    let mut count = 0u64;
    for record in records {
        let (key, value) = record?;
        let len = u32::try_from(key.len() + value.len())
            .map_err(|_| StoreError::Internal("record too large for a snapshot".into()))?;
        out.put(&len.to_be_bytes())?;
        out.put(&key)?;
        out.put(&value)?;
        count += 1;
    }
    out.put(&END.to_be_bytes())?;
    let crc = out.crc.clone().finalize();
    out.inner.write_all(&crc.to_be_bytes()).map_err(io_error)?;
    out.inner.flush().map_err(io_error)?;
    Ok(SnapshotInfo { revision, compacted, records: count })
}

pub(super) fn read(input: &mut dyn Read, mut record: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<SnapshotInfo> {
    let mut input = std::io::BufReader::new(input);
    let mut crc = crc32fast::Hasher::new();
    let invalid = |what: &str| StoreError::InvalidRequest(format!("not a valid wasmkube snapshot: {what}"));
    let mut take = |len: usize, crc: &mut crc32fast::Hasher| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        input.read_exact(&mut buf).map_err(|_| invalid("truncated"))?;
        crc.update(&buf);
        Ok(buf)
    };
    if take(MAGIC.len(), &mut crc)? != MAGIC {
        return Err(invalid("wrong header"));
    }
    let int = |raw: Vec<u8>| <[u8; 8]>::try_from(raw).map(i64::from_be_bytes).map_err(|_| invalid("bad integer"));
    let revision = int(take(8, &mut crc)?)?;
    let compacted = int(take(8, &mut crc)?)?;
    let mut records = 0u64;
    loop {
        let raw_len = take(4, &mut crc)?;
        let len = u32::from_be_bytes([raw_len[0], raw_len[1], raw_len[2], raw_len[3]]);
        if len == END {
            break;
        }
        if len < 8 || len as usize > 2 * crate::storage::MAX_VALUE_BYTES {
            return Err(invalid("bad record length"));
        }
        let body = take(len as usize, &mut crc)?;
        let (key, value) = body.split_at(8);
        record(key, value)?;
        records += 1;
    }
    let expected = crc.finalize();
    let stored = take(4, &mut crc32fast::Hasher::new())?;
    if stored != expected.to_be_bytes() {
        return Err(invalid("checksum mismatch"));
    }
    Ok(SnapshotInfo { revision, compacted, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let records = records
            .iter()
            .map(|(revision, body)| Ok((fjall::Slice::from(&revision.to_be_bytes()[..]), fjall::Slice::from(*body))));
        write(&mut out, 9, 3, records).expect("writing to memory");
        out
    }

    #[test]
    fn snapshot_round_trips_and_counts_records() {
        let bytes = image(&[(3, b"first"), (9, b"second")]);
        let mut seen = Vec::new();
        let info = read(&mut bytes.as_slice(), |key, body| {
            seen.push((key.to_vec(), body.to_vec()));
            Ok(())
        })
        .expect("a valid snapshot");
        assert_eq!(info, SnapshotInfo { revision: 9, compacted: 3, records: 2 });
        assert_eq!(seen[1], (9u64.to_be_bytes().to_vec(), b"second".to_vec()));
    }

    #[test]
    fn any_damage_is_an_error() {
        let bytes = image(&[(3, b"first"), (9, b"second")]);
        for cut in 0..bytes.len() {
            assert!(read(&mut &bytes[..cut], |_, _| Ok(())).is_err(), "truncated at {cut}");
        }
        for flip in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[flip] ^= 0x01;
            assert!(read(&mut damaged.as_slice(), |_, _| Ok(())).is_err(), "bit flipped at {flip}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(0u8.., 0..256)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = read(&mut bytes.as_slice(), |_, _| Ok(()));
            let _ = read(&mut with_magic.as_slice(), |_, _| Ok(()));
        }
    }
}
