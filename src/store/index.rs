//! The redb index: records, content chunk lists, reference counts and the clock, changed only
//! in transactions so that a crash leaves the old state or the new.
//!
//! Tables:
//! - `records`: key -> CBOR [`Record`]: the key's current version (tombstones included).
//! - `conflicts`: key ++ 0x00 ++ version id -> CBOR [`Record`]: the key's other heads, versions
//!   concurrent with the current one (neither saw the other). A key's heads are its current
//!   version and its conflicts.
//! - `history`: key ++ 0x00 ++ clock (8 bytes, big-endian) ++ version id -> CBOR
//!   [`HistoryEntry`]: versions a later write replaced, and deletes, kept for the retention
//!   period (`store/history.rs`).
//! - `by_hash`: `key_hash` (8 bytes, big-endian) ++ key -> XOR of the fingerprints of the key's
//!   heads, for anti-entropy.
//! - `contents`: content id -> CBOR [`Content`] (size, chunk list, complete flag); present only
//!   while some head or history entry references the content id.
//! - `content_refs`: content id -> number of heads and history entries with that content id.
//! - `chunk_refs`: chunk hash -> number of references from the chunk lists in `contents`.
//!   A chunk file whose hash is not here is garbage.
//! - `inline_chunks`: chunk hash -> the chunk's bytes, for chunks shorter than
//!   [`INLINE_MAX`](super::INLINE_MAX) (instead of a file; see `store/mod.rs`). Like a file, an
//!   entry whose hash is not in `chunk_refs` is garbage. Added after the first release: an older
//!   index gains it, empty, when the store opens it (its small chunks stay files and still read).
//! - `author_seqs`: author peer id bytes ++ `seq` (8 bytes, big-endian) -> fingerprint of the
//!   record that author signed with that number: every record this node ever accepted, kept
//!   after the record is superseded, so that a second record under one number (what a revoked
//!   writer would need to back-date a write) is recognised and refused.
//! - `content_state`: content id -> 1 if complete, 0 if not: the `complete` flag of `contents`
//!   without its chunk list, so that listing keys or checking a transfer never decodes a list
//!   (a list can hold a million hashes).
//! - `grants`: grant id -> the signed grant's bytes (membership; interpreted by `crate::trust`).
//! - `meta`: `"clock"` -> the largest clock value issued or observed; `"seq"` -> the last
//!   sequence number this node signed; `"format"` -> the record format of the index (3);
//!   `"pending_hashes"` -> the number of chunk hashes in the lists of incomplete content (the
//!   budget of lists stored for content still arriving; see `Store::set_chunk_list`).

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::record::{key_hash, ContentId, Hash, Record, VersionId};

pub(crate) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
pub(crate) const BY_HASH: TableDefinition<&[u8], u64> = TableDefinition::new("by_hash");
pub(crate) const CONTENTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("contents");
pub(crate) const CONTENT_REFS: TableDefinition<&[u8; 32], u64> =
    TableDefinition::new("content_refs");
pub(crate) const CHUNK_REFS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("chunk_refs");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const INLINE: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("inline_chunks");
pub(crate) const AUTHOR_SEQS: TableDefinition<&[u8], u64> = TableDefinition::new("author_seqs");
pub(crate) const GRANTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("grants");
pub(crate) const CONTENT_STATE: TableDefinition<&[u8; 32], u64> =
    TableDefinition::new("content_state");
pub(crate) const CONFLICTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("conflicts");
pub(crate) const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");

/// Key of the clock's last value in `meta`.
pub(crate) const CLOCK: &str = "clock";
/// Key of the last sequence number this node signed, in `meta`.
pub(crate) const SEQ: &str = "seq";
/// Key of the number of chunk hashes in the lists of incomplete content, in `meta`.
pub(crate) const PENDING: &str = "pending_hashes";
/// Key of the index's record format in `meta`.
pub(crate) const FORMAT: &str = "format";
/// The record format this index holds: 3, signed records with causal contexts.
pub(crate) const RECORD_FORMAT: u64 = 3;

/// Most heads (current version and conflicts) a key keeps. Beyond, the lowest by the current
/// order go to history, where `dfs log` shows them and `dfs restore` brings them back.
pub const MAX_HEADS: usize = 64;

/// A version that left the heads, kept for the retention period.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HistoryEntry {
    pub record: Record,
    /// When it left the heads (or arrived already replaced), by this node's wall clock, in ms.
    pub left: u64,
    /// It holds a reference to its content: the content was complete here when it entered
    /// history. (A replaced version's content is not fetched, and its chunk list does not keep
    /// taking the budget of lists of content still arriving.)
    pub holds: bool,
}

/// The `conflicts` key of one head.
pub(crate) fn conflict_key(key: &str, version: &VersionId) -> Vec<u8> {
    let mut k = key_prefix(key);
    k.extend_from_slice(&version.0);
    k
}

/// `key ++ 0x00`: the prefix of a key's entries in `conflicts` and `history` (keys hold no NUL).
pub(crate) fn key_prefix(key: &str) -> Vec<u8> {
    let mut k = key.as_bytes().to_vec();
    k.push(0);
    k
}

/// The `history` key of one version.
pub(crate) fn history_key(record: &Record, version: &VersionId) -> Vec<u8> {
    let mut k = key_prefix(&record.key);
    k.extend_from_slice(&record.time.to_be_bytes());
    k.extend_from_slice(&version.0);
    k
}

/// The range of a key's entries in `conflicts` or `history`: from `key ++ 0x00` to
/// `key ++ 0x01` (exclusive).
pub(crate) fn key_range(key: &str) -> (Vec<u8>, Vec<u8>) {
    let lo = key_prefix(key);
    let mut hi = key.as_bytes().to_vec();
    hi.push(1);
    (lo, hi)
}

/// XOR of the fingerprints of a key's heads: its entry in `by_hash`.
pub(crate) fn heads_fingerprint(heads: &[Record]) -> u64 {
    heads.iter().fold(0, |acc, r| acc ^ r.fingerprint())
}

/// The `author_seqs` key of one signed number.
pub(crate) fn seq_key(author: &[u8], seq: u64) -> Vec<u8> {
    let mut k = author.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// What the index knows of one content id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Content {
    pub size: u64,
    /// Every chunk is verified and durable on this node.
    pub complete: bool,
    pub chunks: Vec<Hash>,
}

macro_rules! index_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Index(e.to_string())
            }
        }
    )*};
}
index_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("encoding to a Vec cannot fail");
    out
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    ciborium::from_reader(bytes).map_err(|e| StoreError::Index(format!("corrupt entry: {e}")))
}

/// The `by_hash` key of a record key.
pub(crate) fn hash_key(key: &str) -> Vec<u8> {
    let mut k = key_hash(key).to_be_bytes().to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

/// All tables, opened in one write transaction.
pub(crate) struct Tables<'t> {
    records: Table<'t, &'static str, &'static [u8]>,
    by_hash: Table<'t, &'static [u8], u64>,
    contents: Table<'t, &'static [u8; 32], &'static [u8]>,
    content_refs: Table<'t, &'static [u8; 32], u64>,
    chunk_refs: Table<'t, &'static [u8; 32], u64>,
    meta: Table<'t, &'static str, u64>,
    inline: Table<'t, &'static [u8; 32], &'static [u8]>,
    author_seqs: Table<'t, &'static [u8], u64>,
    grants: Table<'t, &'static [u8; 32], &'static [u8]>,
    content_state: Table<'t, &'static [u8; 32], u64>,
    conflicts: Table<'t, &'static [u8], &'static [u8]>,
    history: Table<'t, &'static [u8], &'static [u8]>,
}

impl<'t> Tables<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, StoreError> {
        Ok(Tables {
            records: txn.open_table(RECORDS)?,
            by_hash: txn.open_table(BY_HASH)?,
            contents: txn.open_table(CONTENTS)?,
            content_refs: txn.open_table(CONTENT_REFS)?,
            chunk_refs: txn.open_table(CHUNK_REFS)?,
            meta: txn.open_table(META)?,
            inline: txn.open_table(INLINE)?,
            author_seqs: txn.open_table(AUTHOR_SEQS)?,
            grants: txn.open_table(GRANTS)?,
            content_state: txn.open_table(CONTENT_STATE)?,
            conflicts: txn.open_table(CONFLICTS)?,
            history: txn.open_table(HISTORY)?,
        })
    }

    /// Takes the next sequence number this node signs with (1 for the first), durably with
    /// the transaction, so a number is never used twice even across a crash.
    ///
    /// It also goes past every number of `own` (this node's peer id) that the index holds in
    /// `author_seqs`: after `dfs repair` (an empty index) the counter restarts, but the node's
    /// own records come back from its peers, and numbering goes on after them.
    pub fn next_seq(&mut self, own: &[u8]) -> Result<u64, StoreError> {
        let counted = self.meta.get(SEQ)?.map_or(0, |v| v.value());
        let from = seq_key(own, 0);
        let to = seq_key(own, u64::MAX);
        let seen = match self
            .author_seqs
            .range(from.as_slice()..=to.as_slice())?
            .next_back()
        {
            Some(item) => {
                let (k, _) = item?;
                let k = k.value();
                u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8 bytes"))
            }
            None => 0,
        };
        let next = counted.max(seen) + 1;
        self.meta.insert(SEQ, next)?;
        Ok(next)
    }

    /// The last sequence number this node signed (0 if none).
    pub fn signed_seq(&self) -> Result<u64, StoreError> {
        Ok(self.meta.get(SEQ)?.map_or(0, |v| v.value()))
    }

    /// Notes that `author` signed `fingerprint` under number `seq`; `Some(known)` (and nothing
    /// noted) when that number already names another record, `known` (the author signed two
    /// records with one number).
    pub fn note_seq_or_known(
        &mut self,
        author: &[u8],
        seq: u64,
        fingerprint: u64,
    ) -> Result<Option<u64>, StoreError> {
        let k = seq_key(author, seq);
        if let Some(known) = self.author_seqs.get(k.as_slice())? {
            let known = known.value();
            return Ok((known != fingerprint).then_some(known));
        }
        self.author_seqs.insert(k.as_slice(), fingerprint)?;
        Ok(None)
    }

    /// Notes that `author` signed `fingerprint` under number `seq`. False when that number
    /// already names another record (the author signed two records with one number).
    pub fn note_seq(
        &mut self,
        author: &[u8],
        seq: u64,
        fingerprint: u64,
    ) -> Result<bool, StoreError> {
        let k = seq_key(author, seq);
        if let Some(known) = self.author_seqs.get(k.as_slice())? {
            return Ok(known.value() == fingerprint);
        }
        self.author_seqs.insert(k.as_slice(), fingerprint)?;
        Ok(true)
    }

    /// Stores a grant's bytes under its id; false if it was there already.
    pub fn add_grant(&mut self, id: &Hash, bytes: &[u8]) -> Result<bool, StoreError> {
        if self.grants.get(&id.0)?.is_some() {
            return Ok(false);
        }
        self.grants.insert(&id.0, bytes)?;
        Ok(true)
    }

    /// Every head (current version or conflict) for which `pick` is true.
    pub fn heads_where(&self, pick: impl Fn(&Record) -> bool) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        for item in self.records.iter()? {
            let (_, v) = item?;
            let r: Record = decode(v.value())?;
            if pick(&r) {
                out.push(r);
            }
        }
        for item in self.conflicts.iter()? {
            let (_, v) = item?;
            let r: Record = decode(v.value())?;
            if pick(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// A key's heads: its current version first, then its conflicts (empty if the key is
    /// unknown).
    pub fn heads(&self, key: &str) -> Result<Vec<Record>, StoreError> {
        let Some(current) = self.record(key)? else {
            return Ok(Vec::new());
        };
        let mut out = vec![current];
        let (lo, hi) = key_range(key);
        for item in self.conflicts.range(lo.as_slice()..hi.as_slice())? {
            let (_, v) = item?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Sets a key's heads from `old` (what [`Tables::heads`] returned) to `new` (any order;
    /// empty removes the key), moving content references: a head keeps one reference to its
    /// content. The current version is the greatest by [`Record::cmp_current`]. Returns the
    /// key's change for the sync tree.
    pub fn set_heads(
        &mut self,
        key: &str,
        old: &[Record],
        new: &[Record],
        freed: &mut Vec<Hash>,
    ) -> Result<HeadsChange, StoreError> {
        let old_versions: Vec<VersionId> = old.iter().map(Record::version).collect();
        let new_versions: Vec<VersionId> = new.iter().map(Record::version).collect();
        for (r, v) in new.iter().zip(&new_versions) {
            if !old_versions.contains(v) {
                if let Some(cid) = &r.cid {
                    self.add_content_ref(cid)?;
                }
            }
        }
        for (r, v) in old.iter().zip(&old_versions) {
            if !new_versions.contains(v) {
                if let Some(cid) = &r.cid {
                    self.release_content_ref(cid, freed)?;
                }
            }
            self.conflicts.remove(conflict_key(key, v).as_slice())?;
        }
        let current = new.iter().max_by(|a, b| a.cmp_current(b));
        match current {
            Some(current) => {
                self.records.insert(key, encode(current).as_slice())?;
                for (r, v) in new.iter().zip(&new_versions) {
                    if !std::ptr::eq(r, current) {
                        self.conflicts
                            .insert(conflict_key(key, v).as_slice(), encode(r).as_slice())?;
                    }
                }
                self.by_hash
                    .insert(hash_key(key).as_slice(), heads_fingerprint(new))?;
            }
            None => {
                self.records.remove(key)?;
                self.by_hash.remove(hash_key(key).as_slice())?;
            }
        }
        Ok(HeadsChange {
            key: key.to_string(),
            before: (heads_fingerprint(old), old.len() as u64),
            after: (heads_fingerprint(new), new.len() as u64),
        })
    }

    /// Keeps a version in history (with a reference to its content if it is complete here);
    /// false if it was there.
    pub fn add_history(&mut self, record: &Record, left: u64) -> Result<bool, StoreError> {
        let k = history_key(record, &record.version());
        if self.history.get(k.as_slice())?.is_some() {
            return Ok(false);
        }
        let holds = match &record.cid {
            Some(cid) => self.content(cid)?.is_some_and(|c| c.complete),
            None => false,
        };
        let entry = HistoryEntry {
            record: record.clone(),
            left,
            holds,
        };
        self.history
            .insert(k.as_slice(), encode(&entry).as_slice())?;
        if let (true, Some(cid)) = (holds, &record.cid) {
            self.add_content_ref(cid)?;
        }
        Ok(true)
    }

    /// Makes a history entry hold its content (a reference, so that a fetch of it is kept);
    /// false if the version is not in history or holds it already.
    pub fn hold_history(&mut self, record: &Record) -> Result<bool, StoreError> {
        let k = history_key(record, &record.version());
        let mut entry: HistoryEntry = match self.history.get(k.as_slice())? {
            Some(v) => decode(v.value())?,
            None => return Ok(false),
        };
        let Some(cid) = (!entry.holds).then_some(record.cid).flatten() else {
            return Ok(false);
        };
        entry.holds = true;
        self.history
            .insert(k.as_slice(), encode(&entry).as_slice())?;
        self.add_content_ref(&cid)?;
        Ok(true)
    }

    /// Whether history holds this version.
    pub fn in_history(&self, record: &Record, version: &VersionId) -> Result<bool, StoreError> {
        Ok(self
            .history
            .get(history_key(record, version).as_slice())?
            .is_some())
    }

    /// A key's history, oldest first.
    pub fn history_of(&self, key: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let (lo, hi) = key_range(key);
        let mut out = Vec::new();
        for item in self.history.range(lo.as_slice()..hi.as_slice())? {
            let (_, v) = item?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Every history entry, in key order.
    pub fn all_history(&self) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.history.iter()? {
            let (_, v) = item?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Drops a version from history, releasing its content.
    pub fn remove_history(
        &mut self,
        record: &Record,
        freed: &mut Vec<Hash>,
    ) -> Result<bool, StoreError> {
        let k = history_key(record, &record.version());
        let entry: HistoryEntry = match self.history.remove(k.as_slice())? {
            Some(old) => decode(old.value())?,
            None => return Ok(false),
        };
        if let (true, Some(cid)) = (entry.holds, &record.cid) {
            self.release_content_ref(cid, freed)?;
        }
        Ok(true)
    }

    /// Stores a small chunk's bytes in `inline_chunks` unless they are there already. The
    /// caller has verified them against `hash`.
    pub fn put_inline(&mut self, hash: &Hash, bytes: &[u8]) -> Result<(), StoreError> {
        if self.inline.get(&hash.0)?.is_none() {
            self.inline.insert(&hash.0, bytes)?;
        }
        Ok(())
    }

    pub fn record(&self, key: &str) -> Result<Option<Record>, StoreError> {
        match self.records.get(key)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn content(&self, cid: &ContentId) -> Result<Option<Content>, StoreError> {
        match self.contents.get(&cid.0)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn content_refs(&self, cid: &ContentId) -> Result<u64, StoreError> {
        Ok(self.content_refs.get(&cid.0)?.map_or(0, |v| v.value()))
    }

    pub fn set_clock(&mut self, last: u64) -> Result<(), StoreError> {
        let stored = self.meta.get(CLOCK)?.map_or(0, |v| v.value());
        if last > stored {
            self.meta.insert(CLOCK, last)?;
        }
        Ok(())
    }

    /// Chunk hashes in the lists of incomplete content.
    pub fn pending_hashes(&self) -> Result<u64, StoreError> {
        Ok(self.meta.get(PENDING)?.map_or(0, |v| v.value()))
    }

    fn add_pending(&mut self, delta: i64) -> Result<(), StoreError> {
        let now = self.pending_hashes()?;
        let next = now.saturating_add_signed(delta);
        self.meta.insert(PENDING, next)?;
        Ok(())
    }

    /// Records a chunk list (adding its chunk references) if the content id has none yet.
    /// With `complete`, also marks existing content complete.
    pub fn add_content(
        &mut self,
        cid: &ContentId,
        size: u64,
        chunks: &[Hash],
        complete: bool,
    ) -> Result<(), StoreError> {
        if let Some(mut c) = self.content(cid)? {
            if complete && !c.complete {
                c.complete = true;
                self.contents.insert(&cid.0, encode(&c).as_slice())?;
                self.content_state.insert(&cid.0, 1)?;
                self.add_pending(-(c.chunks.len() as i64))?;
            }
            return Ok(());
        }
        if !complete {
            self.add_pending(chunks.len() as i64)?;
        }
        for h in chunks {
            let n = self.chunk_refs.get(&h.0)?.map_or(0, |v| v.value());
            self.chunk_refs.insert(&h.0, n + 1)?;
        }
        let c = Content {
            size,
            complete,
            chunks: chunks.to_vec(),
        };
        self.contents.insert(&cid.0, encode(&c).as_slice())?;
        self.content_state.insert(&cid.0, u64::from(complete))?;
        Ok(())
    }

    /// Marks known content complete; false if the content id has no chunk list.
    pub fn set_complete(&mut self, cid: &ContentId) -> Result<bool, StoreError> {
        match self.content(cid)? {
            Some(c) if c.complete => Ok(true),
            Some(mut c) => {
                c.complete = true;
                self.contents.insert(&cid.0, encode(&c).as_slice())?;
                self.content_state.insert(&cid.0, 1)?;
                self.add_pending(-(c.chunks.len() as i64))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn add_content_ref(&mut self, cid: &ContentId) -> Result<(), StoreError> {
        let n = self.content_refs(cid)?;
        self.content_refs.insert(&cid.0, n + 1)?;
        Ok(())
    }

    /// Drops one reference to a content id; at zero, drops its chunk list and pushes the chunks
    /// left without any reference onto `freed`.
    fn release_content_ref(
        &mut self,
        cid: &ContentId,
        freed: &mut Vec<Hash>,
    ) -> Result<(), StoreError> {
        let n = self.content_refs(cid)?;
        if n > 1 {
            self.content_refs.insert(&cid.0, n - 1)?;
            return Ok(());
        }
        self.content_refs.remove(&cid.0)?;
        let Some(content) = self.content(cid)? else {
            return Ok(());
        };
        self.contents.remove(&cid.0)?;
        self.content_state.remove(&cid.0)?;
        if !content.complete {
            self.add_pending(-(content.chunks.len() as i64))?;
        }
        for h in &content.chunks {
            let n = self.chunk_refs.get(&h.0)?.map_or(0, |v| v.value());
            if n > 1 {
                self.chunk_refs.insert(&h.0, n - 1)?;
            } else {
                self.chunk_refs.remove(&h.0)?;
                freed.push(*h);
            }
        }
        Ok(())
    }
}

/// How one key's heads changed: XOR of their fingerprints and their number, before and after.
#[derive(Debug)]
pub(crate) struct HeadsChange {
    pub key: String,
    pub before: (u64, u64),
    pub after: (u64, u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::Database;

    fn rec(key: &str, time: u64, cid: Option<ContentId>) -> Record {
        Record {
            key: key.into(),
            cid,
            size: 0,
            time,
            author: vec![1],
            seq: 1,
            seen: Vec::new(),
            sig: Vec::new(),
        }
    }

    #[test]
    fn references_move_with_records_and_free_chunks_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("index.redb")).unwrap();
        let (a, b, c) = (Hash::of(b"a"), Hash::of(b"b"), Hash::of(b"c"));
        let (cid1, cid2) = (Hash::of(b"content 1"), Hash::of(b"content 2"));
        let txn = db.begin_write().unwrap();
        let mut t = Tables::open(&txn).unwrap();
        let mut freed = Vec::new();

        // Two keys share content 1 (chunks a, b, a); a third key has content 2 (b, c).
        t.add_content(&cid1, 3, &[a, b, a], true).unwrap();
        t.add_content(&cid2, 2, &[b, c], true).unwrap();
        let (k1, k2) = (rec("k1", 1, Some(cid1)), rec("k2", 1, Some(cid1)));
        t.set_heads("k1", &[], std::slice::from_ref(&k1), &mut freed)
            .unwrap();
        t.set_heads("k2", &[], std::slice::from_ref(&k2), &mut freed)
            .unwrap();
        t.set_heads("k3", &[], &[rec("k3", 1, Some(cid2))], &mut freed)
            .unwrap();
        assert_eq!(t.content_refs(&cid1).unwrap(), 2);

        // Deleting one sharer frees nothing.
        t.set_heads("k1", &[k1], &[rec("k1", 2, None)], &mut freed)
            .unwrap();
        assert!(freed.is_empty());
        assert!(t.content(&cid1).unwrap().is_some());

        // Kept in history, the other sharer still holds its content.
        t.add_history(&k2, 0).unwrap();
        t.set_heads(
            "k2",
            std::slice::from_ref(&k2),
            &[rec("k2", 2, None)],
            &mut freed,
        )
        .unwrap();
        assert!(freed.is_empty());
        // Dropped from history, it frees the chunk only content 1 had; b is still in content 2.
        t.remove_history(&k2, &mut freed).unwrap();
        assert_eq!(freed, vec![a]);
        assert_eq!(t.content_refs(&cid1).unwrap(), 0);
        assert!(t.content(&cid1).unwrap().is_none());
        assert_eq!(t.record("k2").unwrap().unwrap().time, 2);
    }
}
