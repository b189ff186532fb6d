//! The in-memory key index: for every key, the revisions that wrote it (like etcd's
//! `treeIndex`). Values live on disk, keyed by revision; the index says which revision
//! holds a key's value at any readable revision. Pure data structure: no I/O, no locking.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::storage::Revision;

/// One write to a key. A delete has `create_revision == 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub revision: Revision,
    pub create_revision: Revision,
    pub version: i64,
}

impl Entry {
    pub fn deletion(revision: Revision) -> Self {
        Self { revision, create_revision: 0, version: 0 }
    }

    pub fn is_live(&self) -> bool {
        self.create_revision != 0
    }
}

#[derive(Default)]
pub(super) struct KeyIndex {
    keys: BTreeMap<Bytes, Vec<Entry>>,
}

impl KeyIndex {
    /// Record a write; entries of one key arrive in increasing revision order.
    pub fn push(&mut self, key: Bytes, entry: Entry) {
        self.keys.entry(key).or_default().push(entry);
    }

    /// The key's latest entry, live or not.
    pub fn latest(&self, key: &[u8]) -> Option<Entry> {
        self.keys.get(key).and_then(|entries| entries.last().copied())
    }

    /// The live entry of `key` at `revision`, if the key existed then.
    pub fn at(&self, key: &[u8], revision: Revision) -> Option<Entry> {
        self.keys.get(key).and_then(|entries| live_at(entries, revision))
    }

    /// Live entries of keys in `[start, end)` at `revision`, in key order, at most `limit`
    /// (0: no limit). Returns whether more live keys follow.
    pub fn range(&self, start: &[u8], end: &[u8], revision: Revision, limit: usize) -> (Vec<(Bytes, Entry)>, bool) {
        let upper = if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) };
        let mut found = Vec::new();
        for (key, entries) in self.keys.range::<[u8], _>((Bound::Included(start), upper)) {
            if let Some(entry) = live_at(entries, revision) {
                if limit != 0 && found.len() == limit {
                    return (found, true);
                }
                found.push((key.clone(), entry));
            }
        }
        (found, false)
    }

    /// Forget history below `revision`: per key, keep every entry at or above it and the
    /// newest entry below it if that one is live (it is the key's value at `revision`).
    /// Returns the revisions whose records may be deleted from disk.
    pub fn compact(&mut self, revision: Revision) -> Vec<Revision> {
        let mut dropped = Vec::new();
        self.keys.retain(|_, entries| {
            let below = entries.partition_point(|e| e.revision < revision);
            if below == 0 {
                return true;
            }
            let keep_from = match entries.get(below - 1) {
                Some(newest_below) if newest_below.is_live() => below - 1,
                _ => below,
            };
            dropped.extend(entries.drain(..keep_from).map(|e| e.revision));
            !entries.is_empty()
        });
        dropped
    }
}

fn live_at(entries: &[Entry], revision: Revision) -> Option<Entry> {
    let upto = entries.partition_point(|e| e.revision <= revision);
    let entry = entries.get(upto.checked_sub(1)?)?;
    entry.is_live().then_some(*entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: Revision, create_revision: Revision, version: i64) -> Entry {
        Entry { revision, create_revision, version }
    }

    #[test]
    fn at_reads_history_and_hides_deleted_keys() {
        let mut index = KeyIndex::default();
        index.push("a".into(), put(1, 1, 1));
        index.push("a".into(), put(3, 1, 2));
        index.push("a".into(), Entry::deletion(5));
        assert_eq!(index.at(b"a", 0), None);
        assert_eq!(index.at(b"a", 2), Some(put(1, 1, 1)));
        assert_eq!(index.at(b"a", 4), Some(put(3, 1, 2)));
        assert_eq!(index.at(b"a", 5), None);
    }

    #[test]
    fn range_honours_limit_and_reports_more() {
        let mut index = KeyIndex::default();
        for (i, key) in ["/p/a", "/p/b", "/p/c", "/q/a"].into_iter().enumerate() {
            let rev = i as Revision + 1;
            index.push(key.into(), put(rev, rev, 1));
        }
        let (page, more) = index.range(b"/p/", b"/p0", 10, 2);
        assert_eq!(page.len(), 2);
        assert!(more);
        let (page, more) = index.range(b"/p/", b"/p0", 10, 3);
        assert_eq!(page.len(), 3);
        assert!(!more);
        let (page, _) = index.range(b"/p/", b"/p0", 1, 0);
        assert_eq!(page.len(), 1, "only /p/a existed at revision 1");
    }

    proptest::proptest! {
        /// The index against a model that keeps every state: reads at any revision at or
        /// above the compaction agree, before and after compacting.
        #[test]
        fn index_matches_a_full_history_model(ops in proptest::collection::vec((0u8..6, proptest::bool::ANY), 1..80), compact_at in 0usize..80) {
            use std::collections::BTreeMap;
            let mut index = KeyIndex::default();
            let mut states: Vec<BTreeMap<u8, Entry>> = vec![BTreeMap::new()];
            for (i, (key, put)) in ops.iter().enumerate() {
                let revision = i as Revision + 1;
                let mut state = states.last().cloned().unwrap_or_default();
                let entry = match (put, state.get(key)) {
                    (true, Some(live)) => Entry { revision, create_revision: live.create_revision, version: live.version + 1 },
                    (true, None) => Entry { revision, create_revision: revision, version: 1 },
                    (false, Some(_)) => Entry::deletion(revision),
                    (false, None) => { states.push(state); continue; }
                };
                if entry.is_live() { state.insert(*key, entry); } else { state.remove(key); }
                index.push(Bytes::from(vec![*key]), entry);
                states.push(state);
            }
            let check = |index: &KeyIndex, from: usize| {
                for (revision, state) in states.iter().enumerate().skip(from) {
                    for key in 0u8..6 {
                        assert_eq!(index.at(&[key], revision as Revision), state.get(&key).copied(), "key {key} at {revision}");
                    }
                    let (all, more) = index.range(&[], &[], revision as Revision, 0);
                    assert!(!more);
                    assert_eq!(all.len(), state.len());
                }
            };
            check(&index, 0);
            let compact_at = compact_at.min(states.len() - 1).max(1);
            index.compact(compact_at as Revision);
            check(&index, compact_at);
        }
    }

    #[test]
    fn compact_keeps_value_at_compaction_revision() {
        let mut index = KeyIndex::default();
        index.push("a".into(), put(1, 1, 1));
        index.push("a".into(), put(2, 1, 2));
        index.push("a".into(), put(4, 1, 3));
        index.push("b".into(), put(3, 3, 1));
        index.push("b".into(), Entry::deletion(5));
        let mut dropped = index.compact(6);
        dropped.sort();
        assert_eq!(dropped, vec![1, 2, 3, 5]);
        assert_eq!(index.at(b"a", 6), Some(put(4, 1, 3)));
        assert_eq!(index.latest(b"b"), None, "a key deleted before compaction is forgotten");
    }
}
