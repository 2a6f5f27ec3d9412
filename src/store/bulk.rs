//! Paged reads of the sync index for bulk paths: the heads of the keys of one anti-entropy
//! leaf as stored (each record's CBOR, so serving them needs no decoding), a bounded page at a
//! time, for `/dfs/catchup/1`.

use super::{index, Store, StoreError};

/// One page of [`Store::leaf_heads_page`]: the heads of each key (as encoded records) and the
/// position to continue from, `None` when the leaf is done.
pub struct HeadsPage {
    pub keys: Vec<Vec<Vec<u8>>>,
    pub next: Option<Vec<u8>>,
}

impl Store {
    /// The heads (current version and conflicts) of up to `max_keys` keys of sync leaf `leaf`,
    /// in key-hash order, starting after the position `after` (a `next` of an earlier page;
    /// `None` for the start of the leaf). One read transaction per page.
    pub fn leaf_heads_page(
        &self,
        leaf: u16,
        after: Option<&[u8]>,
        max_keys: usize,
    ) -> Result<HeadsPage, StoreError> {
        use crate::protocols::sync::{leaf_of, LEAF_BITS};
        let txn = self.inner.db.begin_read()?;
        let by_hash = txn.open_table(index::BY_HASH)?;
        let records = txn.open_table(index::RECORDS)?;
        let conflicts = txn.open_table(index::CONFLICTS)?;
        let lo = ((leaf as u64) << (64 - LEAF_BITS)).to_be_bytes();
        let start: &[u8] = after.unwrap_or(&lo[..]);
        let mut keys = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        for item in by_hash.range::<&[u8]>(start..)? {
            let (k, _) = item?;
            let k = k.value();
            if k.len() < 8 || Some(k) == after {
                continue;
            }
            let h = u64::from_be_bytes(k[..8].try_into().expect("8-byte prefix"));
            if leaf_of(h) != leaf {
                break;
            }
            if keys.len() == max_keys {
                return Ok(HeadsPage { keys, next: last });
            }
            let key = std::str::from_utf8(&k[8..])
                .map_err(|e| StoreError::Index(format!("corrupt key: {e}")))?;
            let mut heads = Vec::new();
            if let Some(v) = records.get(key)? {
                heads.push(v.value().to_vec());
                let (clo, chi) = index::key_range(key);
                for c in conflicts.range(clo.as_slice()..chi.as_slice())? {
                    heads.push(c?.1.value().to_vec());
                }
            }
            last = Some(k.to_vec());
            keys.push(heads);
        }
        Ok(HeadsPage { keys, next: None })
    }
}

impl Store {
    /// Up to `max` records (with their conflicts) whose keys start with `prefix`, sorted by key,
    /// after the key `after` (`None`: from the first). One read transaction per page, so that a
    /// listing of any size streams in bounded memory ([`Store::list`] reads them all).
    pub fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<super::Stat>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let records = txn.open_table(index::RECORDS)?;
        let any_damaged = super::scrub::any_damaged(&txn)?;
        let start = after.unwrap_or(prefix);
        let mut out = Vec::new();
        for item in records.range::<&str>(start..)? {
            let (k, v) = item?;
            let key = k.value();
            if Some(key) == after {
                continue;
            }
            if !key.starts_with(prefix) || out.len() == max {
                break;
            }
            let record: crate::record::Record = index::decode(v.value())?;
            let local = match &record.cid {
                Some(cid) => super::is_complete(&txn, cid)?,
                None => false,
            };
            let damaged = match any_damaged {
                true => super::scrub::damaged_of(&txn, &record)?,
                false => 0,
            };
            let conflicts = super::read_conflicts(&txn, key)?;
            out.push(super::Stat {
                conflicts_local: super::locals(&txn, &conflicts)?,
                conflicts,
                record,
                local,
                damaged,
            });
        }
        Ok(out)
    }
}
