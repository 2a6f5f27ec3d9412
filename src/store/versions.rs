//! The versions of a key: its log, an old version read or restored, which versions are known
//! or held already, and the expiry of history.

use super::*;

impl Store {
    /// Every version of a key this node knows, oldest first: history, then the conflicts and
    /// the current version.
    pub fn log(&self, key: &str) -> Result<Vec<LogEntry>, StoreError> {
        validate_key(key)?;
        let txn = self.inner.db.begin_read()?;
        let history = txn.open_table(index::HISTORY)?;
        let (lo, hi) = index::key_range(key);
        let mut out = Vec::new();
        for item in history.range(lo.as_slice()..hi.as_slice())? {
            let (_, v) = item?;
            let entry: index::HistoryEntry = decode(v.value())?;
            out.push((entry.record, VersionState::Replaced));
        }
        if let Some(current) = read_record(&txn, key)? {
            for c in read_conflicts(&txn, key)? {
                out.push((c, VersionState::Conflict));
            }
            out.push((current, VersionState::Current));
        }
        out.sort_by(|a, b| (a.0.time, &a.0.author).cmp(&(b.0.time, &b.0.author)));
        out.into_iter()
            .map(|(record, state)| {
                let local = match &record.cid {
                    Some(cid) => is_complete(&txn, cid)?,
                    None => false,
                };
                Ok(LogEntry {
                    record,
                    state,
                    local,
                })
            })
            .collect()
    }

    /// One version of a key, by version id (a head or in history).
    pub fn version(&self, key: &str, version: &VersionId) -> Result<Option<Record>, StoreError> {
        Ok(self
            .log(key)?
            .into_iter()
            .map(|e| e.record)
            .find(|r| r.version() == *version))
    }

    /// Makes an earlier version (or a conflict) current again: a new write of its content that
    /// replaces every head. Its content must be complete here.
    pub fn restore(&self, key: &str, version: VersionId) -> Result<Record, StoreError> {
        validate_key(key)?;
        self.inner.time.check_local()?;
        self.no_twin()?;
        match self.submit(Op::Restore {
            key: key.to_string(),
            version,
        })? {
            Done::Record(record) => Ok(record),
            _ => unreachable!("a restore commits a record"),
        }
    }

    /// For each record, whether this store holds that very version (a head or in history): a
    /// record received again needs no signature check (it changes nothing). One read
    /// transaction for all.
    pub fn known(&self, records: &[Record]) -> Result<Vec<bool>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let current = txn.open_table(index::RECORDS)?;
        let conflicts = txn.open_table(index::CONFLICTS)?;
        let history = txn.open_table(index::HISTORY)?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let version = r.version();
            let known = match current.get(r.key.as_str())? {
                None => false,
                Some(v) => {
                    let head: Record = index::decode(v.value())?;
                    head.version() == version
                        || conflicts
                            .get(index::conflict_key(&r.key, &version).as_slice())?
                            .is_some()
                        || history
                            .get(index::history_key(r, &version).as_slice())?
                            .is_some()
                }
            };
            out.push(known);
        }
        Ok(out)
    }

    /// Makes a version kept in history hold its content (a reference), so that its content can
    /// be fetched from peers and kept until the version leaves history. False if it is not in
    /// history or holds its content already.
    pub fn hold(&self, record: &Record) -> Result<bool, StoreError> {
        match self.submit(Op::Hold {
            record: record.clone(),
        })? {
            Done::Yes(held) => Ok(held),
            _ => unreachable!("a hold says whether it held"),
        }
    }

    /// Applies retention to history (see `store/history.rs`): returns the entries dropped.
    pub fn expire_history(&self, keep_ms: u64, keep_bytes: u64) -> Result<usize, StoreError> {
        match self.submit(Op::Expire {
            now: self.inner.time.wall().now_ms(),
            keep_ms,
            keep_bytes,
        })? {
            Done::Expired(n) => Ok(n),
            _ => unreachable!("an expiry counts entries"),
        }
    }
}
