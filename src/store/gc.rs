//! Garbage collection of chunk files and inline chunks, safe against concurrent puts, fetches
//! and reads.
//!
//! A chunk may be removed only when no chunk list in the index references it and nobody holds
//! a pin on it. Puts, chunk writes and readers pin a hash *before* they look at its file;
//! removal happens under the pin lock after a fresh transaction (begun after the commit that
//! dropped the last reference) has re-checked the chunk's reference count. So a put that found
//! a chunk file present keeps it until its record commits (and the reference count protects it
//! from then on), and a reader's chunks stay until it is dropped.
//!
//! Inline chunks follow the same rule, in a write transaction of their own right after the
//! commit, not in the commit itself: a reader that pinned a chunk just before that commit, and
//! checked its content in a snapshot taken just before it, must still find the bytes. That
//! transaction is not fsynced (`Durability::None`): if a crash loses it, the entries are
//! unreferenced garbage that the sweep at the next open removes. A put never dedupes against an
//! inline chunk: it carries the bytes to its own commit, which stores them again if they went.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use redb::{Database, Durability, ReadableTable};

use super::chunks::{remove_if_present, ChunkDir};
use super::index::{CHUNK_REFS, INLINE};
use super::repair::{move_into, ORPHANS_DIR};
use super::StoreError;
use crate::record::Hash;

/// Chunks in use by running puts, fetches and readers (with a count per hash).
#[derive(Debug, Default)]
pub(crate) struct Pins {
    pins: Mutex<HashMap<Hash, usize>>,
}

impl Pins {
    fn lock(&self) -> MutexGuard<'_, HashMap<Hash, usize>> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pin(&self, hash: Hash) {
        *self.lock().entry(hash).or_default() += 1;
    }

    pub fn pin_all<'a>(&self, hashes: impl IntoIterator<Item = &'a Hash>) {
        let mut pins = self.lock();
        for h in hashes {
            *pins.entry(*h).or_default() += 1;
        }
    }

    pub fn unpin_all<'a>(&self, hashes: impl IntoIterator<Item = &'a Hash>) {
        let mut pins = self.lock();
        for h in hashes {
            if let Some(n) = pins.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(h);
                }
            }
        }
    }
}

/// Removes those of `hashes` that are unreferenced and unpinned, files and inline chunks;
/// returns how many went. Call it after the commit that dropped their references.
pub(crate) fn free(
    db: &Database,
    chunks: &ChunkDir,
    pins: &Pins,
    hashes: &[Hash],
) -> Result<usize, StoreError> {
    if hashes.is_empty() {
        return Ok(0);
    }
    let mut removed = 0;
    let mut inline = Vec::new();
    {
        let pins = pins.lock();
        let txn = db.begin_read()?;
        let refs = txn.open_table(CHUNK_REFS)?;
        let stored = txn.open_table(INLINE)?;
        for h in hashes {
            if pins.contains_key(h) || refs.get(&h.0)?.is_some() {
                continue;
            }
            if chunks.remove(h)? {
                removed += 1;
            }
            if stored.get(&h.0)?.is_some() {
                inline.push(*h);
            }
        }
    }
    if !inline.is_empty() {
        removed += remove_inline(db, pins, inline)?;
    }
    Ok(removed)
}

/// Removes the inline chunks among `candidates` that are unreferenced and unpinned, in one
/// transaction that is not fsynced. Begins the write transaction before
/// taking the pin lock, as every writer does, so that nobody pins while waiting for a commit.
fn remove_inline(db: &Database, pins: &Pins, candidates: Vec<Hash>) -> Result<usize, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::None);
    let mut removed = 0;
    {
        let refs = txn.open_table(CHUNK_REFS)?;
        let mut stored = txn.open_table(INLINE)?;
        let pins = pins.lock();
        for h in candidates {
            if pins.contains_key(&h) || refs.get(&h.0)?.is_some() {
                continue;
            }
            if stored.remove(&h.0)?.is_some() {
                removed += 1;
            }
        }
    }
    if removed > 0 {
        txn.commit()?;
    }
    Ok(removed)
}

/// The full sweep: every chunk file and inline chunk without a reference or pin, every stale
/// temp file, and every stray file in the chunk directories. Returns the number removed.
///
/// With `orphans` (the store directory, at open), chunk files and strays without a reference
/// are moved to its `orphans/` instead of being deleted: at open, the index has not yet shown
/// that it knows every chunk (a lost or damaged index knows none), so it is not trusted to
/// condemn any (see `store/repair.rs`). During a run, every file found unreferenced was
/// written during the run, and is removed.
pub(crate) fn sweep(
    db: &Database,
    chunks: &ChunkDir,
    pins: &Pins,
    orphans: Option<&Path>,
) -> Result<usize, StoreError> {
    let mut removed = sweep_files(db, chunks, pins, orphans)?;
    let unreferenced = {
        let txn = db.begin_read()?;
        let refs = txn.open_table(CHUNK_REFS)?;
        let mut out = Vec::new();
        for item in txn.open_table(INLINE)?.iter()? {
            let (h, _) = item?;
            let h = *h.value();
            if refs.get(&h)?.is_none() {
                out.push(Hash(h));
            }
        }
        out
    };
    if !unreferenced.is_empty() {
        // Re-checked in the write transaction: the read above was only a shortlist.
        removed += remove_inline(db, pins, unreferenced)?;
    }
    if removed > 0 {
        tracing::debug!(removed, "garbage collected");
    }
    Ok(removed)
}

fn sweep_files(
    db: &Database,
    chunks: &ChunkDir,
    pins: &Pins,
    orphans: Option<&Path>,
) -> Result<usize, StoreError> {
    let pins = pins.lock();
    let txn = db.begin_read()?;
    let refs = txn.open_table(CHUNK_REFS)?;
    let mut removed = 0;
    let mut orphaned = 0;
    let (present, strays) = chunks.scan()?;
    for h in present {
        if pins.contains_key(&h) || refs.get(&h.0)?.is_some() {
            continue;
        }
        match orphans {
            Some(dir) => {
                move_into(&chunks.path(&h), &dir.join(ORPHANS_DIR), &h.to_hex())?;
                orphaned += 1;
            }
            None => {
                if chunks.remove(&h)? {
                    removed += 1;
                }
            }
        }
    }
    for path in strays {
        match (orphans, path.file_name()) {
            (Some(dir), Some(name)) => {
                let name = format!(
                    "{}.stray.{:08x}",
                    name.to_string_lossy(),
                    rand::random::<u32>()
                );
                move_into(&path, &dir.join(ORPHANS_DIR), &name)?;
                orphaned += 1;
            }
            _ => {
                if remove_if_present(&path)? {
                    removed += 1;
                }
            }
        }
    }
    if orphaned > 0 {
        tracing::warn!(
            files = orphaned,
            "chunk files that no record references were moved to orphans/ (kept: a record that \
             needs one takes it back; delete the directory to reclaim the space)"
        );
    }
    for (hash, path) in chunks.scan_tmp()? {
        // A pinned hash may belong to a put writing this very temp file.
        if hash.is_some_and(|h| pins.contains_key(&h)) {
            continue;
        }
        if remove_if_present(&path)? {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_counted() {
        let pins = Pins::default();
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        pins.pin(a);
        pins.pin_all([&a, &b]);
        pins.unpin_all([&a, &b]);
        assert!(pins.lock().contains_key(&a));
        assert!(!pins.lock().contains_key(&b));
        pins.unpin_all([&a]);
        assert!(pins.lock().is_empty());
    }
}
