//! The sync index the store keeps for anti-entropy: a digest per leaf of key hashes, the record
//! count, and the records of a leaf or of given key hashes.

use super::*;

impl Store {
    /// Calls `f` with every live head (current versions, then concurrent ones) and whether its
    /// content is complete here, decoding one record at a time in one read transaction.
    pub fn each_live(&self, mut f: impl FnMut(Record, bool)) -> Result<(), StoreError> {
        let txn = self.inner.db.begin_read()?;
        let state = txn.open_table(index::CONTENT_STATE)?;
        let mut visit = |bytes: &[u8]| -> Result<(), StoreError> {
            let record: Record = decode(bytes)?;
            if let Some(cid) = record.cid {
                let complete = state.get(&cid.0)?.is_some_and(|v| v.value() == 1);
                f(record, complete);
            }
            Ok(())
        };
        for item in txn.open_table(index::RECORDS)?.iter()? {
            visit(item?.1.value())?;
        }
        for item in txn.open_table(index::CONFLICTS)?.iter()? {
            visit(item?.1.value())?;
        }
        Ok(())
    }

    /// The [`SYNC_LEAVES`] leaf hashes of the anti-entropy tree: a key's leaf is the top 12 bits
    /// of its key hash, a leaf's hash the XOR of the fingerprints of its records.
    pub fn sync_leaves(&self) -> Vec<u64> {
        self.inner
            .leaves
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect()
    }

    /// Number of heads (current versions and conflicts), tombstones included.
    pub fn record_count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// `(key_hash, fingerprint)` of every record in a leaf, sorted.
    pub fn sync_entries(&self, leaf: u16) -> Result<Vec<(u64, u64)>, StoreError> {
        if leaf as usize >= SYNC_LEAVES {
            return Ok(Vec::new());
        }
        let lo = ((leaf as u64) << (64 - crate::protocols::sync::LEAF_BITS)).to_be_bytes();
        let txn = self.inner.db.begin_read()?;
        let t = txn.open_table(index::BY_HASH)?;
        let mut out = Vec::new();
        for item in t.range::<&[u8]>(&lo[..]..)? {
            let (k, v) = item?;
            let h = u64::from_be_bytes(k.value()[..8].try_into().expect("8-byte prefix"));
            if crate::protocols::sync::leaf_of(h) != leaf {
                break;
            }
            out.push((h, v.value()));
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The records whose key hash is one of `hashes`.
    pub fn records_by_key_hash(&self, hashes: &[u64]) -> Result<Vec<Record>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let by_hash = txn.open_table(index::BY_HASH)?;
        let records = txn.open_table(index::RECORDS)?;
        let wanted: std::collections::BTreeSet<u64> = hashes.iter().copied().collect();
        let mut out = Vec::new();
        for h in wanted {
            let lo = h.to_be_bytes();
            for item in by_hash.range::<&[u8]>(&lo[..]..)? {
                let (k, _) = item?;
                let k = k.value();
                if k[..8] != lo {
                    break;
                }
                let key = std::str::from_utf8(&k[8..])
                    .map_err(|e| StoreError::Index(format!("corrupt key: {e}")))?;
                if let Some(v) = records.get(key)? {
                    out.push(decode(v.value())?);
                    out.extend(read_conflicts(&txn, key)?);
                }
            }
        }
        Ok(out)
    }

    /// Updates the sync tree for one committed change of a key's heads.
    pub(super) fn sync_update(&self, change: &HeadsChange) {
        let inner = &*self.inner;
        let (before, after) = (change.before, change.after);
        inner.count.fetch_add(after.1, Ordering::Relaxed);
        inner.count.fetch_sub(before.1, Ordering::Relaxed);
        inner.leaves[leaf_of(&change.key)].fetch_xor(before.0 ^ after.0, Ordering::Relaxed);
        inner.changes.fetch_add(1, Ordering::Release);
    }

    /// A number that grows whenever a key's heads change (a write, a merge, a delete, a
    /// revocation's removal): a watcher that remembers it rescans the records only after a
    /// change, never on a timer alone.
    pub fn changes(&self) -> u64 {
        self.inner.changes.load(Ordering::Acquire)
    }
}
