//! The redb index: records, content chunk lists, reference counts and the clock, changed only
//! in transactions so that a crash leaves the old state or the new.
//!
//! Tables:
//! - `records`: key -> CBOR [`Record`] (tombstones included).
//! - `by_hash`: `key_hash` (8 bytes, big-endian) ++ key -> record fingerprint, for anti-entropy.
//! - `contents`: content id -> CBOR [`Content`] (size, chunk list, complete flag); present only
//!   while some live record references the content id.
//! - `content_refs`: content id -> number of live records with that content id.
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
//!   sequence number this node signed; `"format"` -> the record format of the index (2);
//!   `"pending_hashes"` -> the number of chunk hashes in the lists of incomplete content (the
//!   budget of lists stored for content still arriving; see `Store::set_chunk_list`).

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::record::{key_hash, ContentId, Hash, Record};

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

/// Key of the clock's last value in `meta`.
pub(crate) const CLOCK: &str = "clock";
/// Key of the last sequence number this node signed, in `meta`.
pub(crate) const SEQ: &str = "seq";
/// Key of the number of chunk hashes in the lists of incomplete content, in `meta`.
pub(crate) const PENDING: &str = "pending_hashes";
/// Key of the index's record format in `meta`.
pub(crate) const FORMAT: &str = "format";
/// The record format this index holds: 2, signed records.
pub(crate) const RECORD_FORMAT: u64 = 2;

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

    /// Every record for which `pick` is true.
    pub fn records_where(&self, pick: impl Fn(&Record) -> bool) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        for item in self.records.iter()? {
            let (_, v) = item?;
            let r: Record = decode(v.value())?;
            if pick(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Removes a key's record without leaving a tombstone (a record that no longer counts),
    /// releasing its content.
    pub fn remove(&mut self, old: &Record, freed: &mut Vec<Hash>) -> Result<(), StoreError> {
        if let Some(cid) = &old.cid {
            self.release_content_ref(cid, freed)?;
        }
        self.records.remove(old.key.as_str())?;
        self.by_hash.remove(hash_key(&old.key).as_slice())?;
        Ok(())
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

    /// Replaces `old` (the key's current record, if any) by `new`, moving content references.
    pub fn replace(
        &mut self,
        old: Option<&Record>,
        new: &Record,
        freed: &mut Vec<Hash>,
    ) -> Result<(), StoreError> {
        if let Some(cid) = &new.cid {
            self.add_content_ref(cid)?;
        }
        if let Some(cid) = old.and_then(|o| o.cid.as_ref()) {
            self.release_content_ref(cid, freed)?;
        }
        self.records
            .insert(new.key.as_str(), encode(new).as_slice())?;
        self.by_hash
            .insert(hash_key(&new.key).as_slice(), new.fingerprint())?;
        Ok(())
    }
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
            replaces: Vec::new(),
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
        t.replace(None, &k1, &mut freed).unwrap();
        t.replace(None, &k2, &mut freed).unwrap();
        t.replace(None, &rec("k3", 1, Some(cid2)), &mut freed)
            .unwrap();
        assert_eq!(t.content_refs(&cid1).unwrap(), 2);

        // Deleting one sharer frees nothing.
        t.replace(Some(&k1), &rec("k1", 2, None), &mut freed)
            .unwrap();
        assert!(freed.is_empty());
        assert!(t.content(&cid1).unwrap().is_some());

        // Deleting the other frees the chunk only content 1 had; b is still in content 2.
        t.replace(Some(&k2), &rec("k2", 2, None), &mut freed)
            .unwrap();
        assert_eq!(freed, vec![a]);
        assert_eq!(t.content_refs(&cid1).unwrap(), 0);
        assert!(t.content(&cid1).unwrap().is_none());
        assert_eq!(t.record("k2").unwrap().unwrap().time, 2);
    }
}
