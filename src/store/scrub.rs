//! Bit rot: what the store does with a chunk that no longer matches its hash, and the scrub
//! that looks for such chunks before a read does.
//!
//! Every verified read ([`Store::read_chunk`], the readers of [`Store::get`]) and every scrub
//! that finds a chunk whose bytes do not match its hash calls [`Store::chunk_damaged`]: the bad
//! copy is moved to `damaged/<hash>.<time>.<random>` (a file; an inline chunk's bytes are
//! written there and its entry removed), every content that lists the chunk is marked
//! incomplete, and the chunk is noted in the `damaged_chunks` table (hash -> unix time of
//! detection). So `stat` says `local: false` and counts the damaged chunks, the node's
//! transfers fetch a healthy copy from a peer as they fetch any missing chunk, and once the
//! content is complete again ([`Store::mark_complete`]) the note goes. Nothing is deleted: the
//! quarantined copy stays for the operator to look at.
//!
//! The scrub ([`Store::scrub`]) re-hashes every stored chunk, files then inline ones, one
//! prefix directory (or 256 inline chunks) at a time so that memory stays small, and calls a
//! pacing function after each chunk: the node's scrub task sleeps there to hold a rate in
//! bytes per second, and stops there on shutdown. Its progress (the next prefix directory) and
//! the end of the last whole pass are kept in the `scrub_state` table, so that a pass resumes
//! after a restart and the schedule survives restarts (a node restarted daily still scrubs).
//! A file in `chunks/` larger than a chunk can be is damaged without being read.

use std::fs;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redb::{Durability, ReadTransaction, ReadableTable, TableDefinition, TableError};

use super::index::{self, decode, encode, Content};
use super::repair::{move_into, quarantine_name, DAMAGED_DIR};
use super::{Store, StoreError};
use crate::record::{ContentId, Hash, Record, CHUNK_SIZE};

/// Chunks found damaged and not yet replaced by a healthy copy: hash -> unix time (seconds) of
/// detection.
pub(crate) const DAMAGED: TableDefinition<&[u8; 32], u64> = TableDefinition::new("damaged_chunks");

/// The scrub's state: [`NEXT`] and [`LAST_END`].
const SCRUB_STATE: TableDefinition<&str, u64> = TableDefinition::new("scrub_state");
/// Where the running pass resumes: a prefix directory (0 to 255), or 256 for the inline chunks.
const NEXT: &str = "next";
/// Unix time (seconds) at which the last whole pass ended.
const LAST_END: &str = "last_end";
/// The position of the inline chunks in a pass.
const INLINE_PART: u64 = 256;

/// Inline chunks verified per read transaction by the scrub.
const INLINE_BATCH: usize = 256;

/// What one scrub pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Chunks re-hashed.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Chunks that did not match their hash (quarantined, their content marked incomplete).
    pub damaged: Vec<Hash>,
    /// False when the pacing function stopped the pass early.
    pub finished: bool,
}

/// Keys and chunks of one damage event, for the log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Damage {
    /// Keys of the live records whose content lists the chunk.
    pub keys: Vec<String>,
    /// Where the bad copy went (none when it had gone already).
    pub moved_to: Option<std::path::PathBuf>,
}

/// The chunks of `chunks` noted as damaged, in a read transaction.
pub(crate) fn damaged_in(txn: &ReadTransaction, chunks: &[Hash]) -> Result<u64, StoreError> {
    let t = match txn.open_table(DAMAGED) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    if t.first()?.is_none() {
        return Ok(0);
    }
    let mut n = 0;
    for h in chunks {
        if t.get(&h.0)?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// True when some chunk is noted as damaged (cheap: one lookup).
pub(crate) fn any_damaged(txn: &ReadTransaction) -> Result<bool, StoreError> {
    match txn.open_table(DAMAGED) {
        Ok(t) => Ok(t.first()?.is_some()),
        Err(TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// How many chunks of a record's content are noted as damaged (0 for a tombstone, and for
/// complete content: its notes go right after the commit that completed it).
pub(crate) fn damaged_of(txn: &ReadTransaction, record: &Record) -> Result<u64, StoreError> {
    let Some(cid) = &record.cid else {
        return Ok(0);
    };
    if !any_damaged(txn)? {
        return Ok(0);
    }
    match super::read_content(txn, cid)? {
        Some(c) if !c.complete => damaged_in(txn, &c.chunks),
        _ => Ok(0),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// A chunk failed verification, or is missing from content said to be complete: quarantines
    /// the bad copy (if it is still bad), marks every content listing the chunk incomplete and
    /// notes the chunk as damaged, in one transaction. Logs it (rate-limited). Returns the keys
    /// whose content lists it, or `None` when the chunk turns out healthy (a good copy replaced
    /// the one the caller read).
    pub(crate) fn chunk_damaged(&self, hash: &Hash) -> Result<Option<Vec<String>>, StoreError> {
        let inner = &*self.inner;
        let mut damage = Damage::default();
        let quarantine = inner.dir.join(DAMAGED_DIR);
        // The file: verified again right before it moves, as a healthy copy may have replaced
        // it since the caller read it.
        let path = inner.chunks.path(hash);
        let oversized = fs::metadata(&path).is_ok_and(|m| m.len() > CHUNK_SIZE as u64);
        match if oversized {
            Ok(Vec::new())
        } else {
            fs::read(&path)
        } {
            Ok(bytes) if Hash::of(&bytes) == *hash => return Ok(None),
            Ok(_) => damage.moved_to = Some(move_into(&path, &quarantine, &quarantine_name(hash))?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let txn = inner.db.begin_write()?;
        let mut incomplete: Vec<ContentId> = Vec::new();
        {
            let mut inline = txn.open_table(index::INLINE)?;
            let bad = match inline.get(&hash.0)? {
                Some(v) if Hash::of(v.value()) != *hash => Some(v.value().to_vec()),
                Some(_) => {
                    // A healthy inline copy: the chunk is not damaged after all.
                    return Ok(None);
                }
                None => None,
            };
            if let Some(bytes) = bad {
                fs::create_dir_all(&quarantine)?;
                let to = quarantine.join(quarantine_name(hash) + ".inline");
                fs::write(&to, &bytes)?;
                super::chunks::sync_dir(&quarantine)?;
                inline.remove(&hash.0)?;
                damage.moved_to = Some(to);
            }
            let mut contents = txn.open_table(index::CONTENTS)?;
            let mut changed = Vec::new();
            for item in contents.iter()? {
                let (cid, v) = item?;
                let mut c: Content = decode(v.value())?;
                if c.chunks.contains(hash) {
                    incomplete.push(Hash(*cid.value()));
                    if c.complete {
                        c.complete = false;
                        changed.push((*cid.value(), encode(&c), c.chunks.len() as u64));
                    }
                }
            }
            // The complete flag lives twice (with the list, and alone for cheap reads), and the
            // lists of incomplete content count against their budget.
            let mut state = txn.open_table(index::CONTENT_STATE)?;
            let mut meta = txn.open_table(index::META)?;
            let mut pending = meta.get(index::PENDING)?.map_or(0, |v| v.value());
            for (cid, bytes, len) in changed {
                contents.insert(&cid, bytes.as_slice())?;
                state.insert(&cid, 0)?;
                pending += len;
            }
            meta.insert(index::PENDING, pending)?;
            // Noted only while some content needs it: the note goes when that content is
            // complete again.
            if !incomplete.is_empty() {
                txn.open_table(DAMAGED)?.insert(&hash.0, now_secs())?;
            }
        }
        txn.commit()?;
        let txn = inner.db.begin_read()?;
        for item in txn.open_table(index::RECORDS)?.iter()? {
            let (_, v) = item?;
            let r: Record = decode(v.value())?;
            if r.cid.is_some_and(|c| incomplete.contains(&c)) {
                damage.keys.push(r.key);
            }
        }
        log_damage(hash, &damage);
        Ok(Some(damage.keys))
    }

    /// Best-effort [`chunk_damaged`](Store::chunk_damaged) for the read paths: a failure is
    /// logged, and the read reports the damage either way.
    pub(crate) fn quarantine(&self, hash: &Hash) {
        if let Err(e) = self.chunk_damaged(hash) {
            tracing::warn!(chunk = %hash, error = %e, "cannot quarantine a damaged chunk");
        }
    }

    /// Forgets the damage notes of `chunks` (their content is complete again: every chunk was
    /// verified when it was written).
    pub(crate) fn healed(&self, chunks: &[Hash]) {
        let heal = || -> Result<u64, StoreError> {
            let inner = &*self.inner;
            if damaged_in(&inner.db.begin_read()?, chunks)? == 0 {
                return Ok(0);
            }
            let txn = inner.db.begin_write()?;
            let mut n = 0;
            {
                let mut t = txn.open_table(DAMAGED)?;
                for h in chunks {
                    if t.remove(&h.0)?.is_some() {
                        n += 1;
                    }
                }
            }
            txn.commit()?;
            Ok(n)
        };
        match heal() {
            Ok(0) => {}
            Ok(n) => tracing::info!(chunks = n, "damaged chunks repaired with healthy copies"),
            Err(e) => tracing::warn!(error = %e, "cannot clear the damage notes of healed chunks"),
        }
    }

    /// Drops the damage notes of chunks that no content lists any more (their keys were
    /// deleted or overwritten while no healthy copy came).
    fn forget_unreferenced_damage(&self) -> Result<(), StoreError> {
        let inner = &*self.inner;
        if !any_damaged(&inner.db.begin_read()?)? {
            return Ok(());
        }
        let txn = inner.db.begin_write()?;
        {
            let refs = txn.open_table(index::CHUNK_REFS)?;
            let mut t = txn.open_table(DAMAGED)?;
            let mut stale = Vec::new();
            for item in t.iter()? {
                let (h, _) = item?;
                if refs.get(h.value())?.is_none() {
                    stale.push(*h.value());
                }
            }
            for h in stale {
                t.remove(&h)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Chunks noted as damaged and not yet replaced, with the unix time of their detection.
    pub fn damaged_chunks(&self) -> Result<Vec<(Hash, u64)>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let t = match txn.open_table(DAMAGED) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for item in t.iter()? {
            let (h, v) = item?;
            out.push((Hash(*h.value()), v.value()));
        }
        Ok(out)
    }

    /// One scrub pass: re-hashes every stored chunk (files, then inline chunks) and handles the
    /// damaged ones as a read would ([`chunk_damaged`](Store::chunk_damaged)). `pace` is called
    /// with the size of each chunk read; when it returns false the pass stops.
    pub fn scrub(&self, mut pace: impl FnMut(u64) -> bool) -> Result<ScrubReport, StoreError> {
        let inner = &*self.inner;
        self.forget_unreferenced_damage()?;
        let mut report = ScrubReport::default();
        let mut buf = Vec::new();
        let root = inner.dir.join("chunks");
        let start = self.scrub_state()?.1;
        for prefix in (start.min(INLINE_PART) as usize..256).map(|p| p as u8) {
            if prefix as u64 > start {
                self.save_scrub_state(NEXT, prefix as u64)?;
            }
            let sub = root.join(format!("{prefix:02x}"));
            let entries = match fs::read_dir(&sub) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let mut hashes = Vec::new();
            for entry in entries {
                let name = entry?.file_name();
                if let Some(h) = name.to_str().and_then(Hash::from_hex) {
                    hashes.push(h);
                }
            }
            for h in hashes {
                if fs::metadata(inner.chunks.path(&h)).is_ok_and(|m| m.len() > CHUNK_SIZE as u64) {
                    if self.chunk_damaged(&h)?.is_some() {
                        report.damaged.push(h);
                    }
                    continue;
                }
                // Gone since the listing (freed, or quarantined by a read): nothing to check.
                if !inner.chunks.read_into(&h, &mut buf)? {
                    continue;
                }
                report.chunks += 1;
                report.bytes += buf.len() as u64;
                if Hash::of(&buf) != h && self.chunk_damaged(&h)?.is_some() {
                    report.damaged.push(h);
                }
                if !pace(buf.len() as u64) {
                    return Ok(report);
                }
            }
        }
        self.save_scrub_state(NEXT, INLINE_PART)?;
        let mut from: Option<[u8; 32]> = None;
        loop {
            let mut bad = Vec::new();
            let mut sizes = Vec::new();
            {
                let txn = inner.db.begin_read()?;
                let t = txn.open_table(index::INLINE)?;
                let range = match &from {
                    Some(k) => t.range::<&[u8; 32]>(k..)?,
                    None => t.range::<&[u8; 32]>(..)?,
                };
                for item in range {
                    let (h, v) = item?;
                    let h = *h.value();
                    if from == Some(h) {
                        continue;
                    }
                    if sizes.len() == INLINE_BATCH {
                        break;
                    }
                    let bytes = v.value();
                    sizes.push(bytes.len() as u64);
                    if Hash::of(bytes) != Hash(h) {
                        bad.push(Hash(h));
                    }
                    from = Some(h);
                }
            }
            if sizes.is_empty() {
                break;
            }
            for h in bad {
                if self.chunk_damaged(&h)?.is_some() {
                    report.damaged.push(h);
                }
            }
            for n in sizes {
                report.chunks += 1;
                report.bytes += n;
                if !pace(n) {
                    return Ok(report);
                }
            }
        }
        self.save_scrub_state(NEXT, 0)?;
        self.save_scrub_state(LAST_END, now_secs())?;
        report.finished = true;
        Ok(report)
    }

    /// When the last whole scrub pass ended (unix seconds; `None` if none ever did), and where
    /// the next one starts (0 unless a pass was interrupted).
    pub fn scrub_state(&self) -> Result<(Option<u64>, u64), StoreError> {
        let txn = self.inner.db.begin_read()?;
        let t = match txn.open_table(SCRUB_STATE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok((None, 0)),
            Err(e) => return Err(e.into()),
        };
        let last = t.get(LAST_END)?.map(|v| v.value());
        let next = t.get(NEXT)?.map_or(0, |v| v.value());
        Ok((last, next))
    }

    /// Saves one value of the scrub's state. The position is not fsynced (it rides on the next
    /// durable commit: a crash only makes a pass redo a little).
    fn save_scrub_state(&self, what: &str, value: u64) -> Result<(), StoreError> {
        let mut txn = self.inner.db.begin_write()?;
        if what == NEXT {
            txn.set_durability(Durability::None);
        }
        txn.open_table(SCRUB_STATE)?.insert(what, value)?;
        txn.commit()?;
        Ok(())
    }
}

/// Logs a damage event: at most [`LOG_BURST`] warnings per [`LOG_WINDOW`], then one line that
/// says how many were left out (a disk that rots fast must not flood the log).
fn log_damage(hash: &Hash, damage: &Damage) {
    let Some(dropped) = LIMIT.admit() else {
        return;
    };
    tracing::warn!(
        chunk = %hash,
        keys = %damage.keys.iter().map(|k| crate::record::printable(k)).collect::<Vec<_>>().join(", "),
        quarantined = %damage.moved_to.as_deref().map_or("-".into(), |p| p.display().to_string()),
        unlogged_before = dropped,
        "damaged chunk: it does not match its hash; its content is marked incomplete and a healthy copy will be fetched from peers"
    );
}

const LOG_BURST: u32 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// A fixed-window log limiter, private to this module (the network layer has its own).
struct Limit {
    state: Mutex<Option<(Instant, u32, u64)>>,
}

static LIMIT: Limit = Limit {
    state: Mutex::new(None),
};

impl Limit {
    /// `Some(n)` when a line may be written, `n` being how many were left out since the last
    /// one written; `None` when this one is left out.
    fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (start, written, dropped) = state.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= LOG_WINDOW {
            *start = now;
            *written = 0;
        }
        if *written < LOG_BURST {
            *written += 1;
            Some(std::mem::take(dropped))
        } else {
            *dropped += 1;
            None
        }
    }
}
