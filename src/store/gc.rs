//! Garbage collection of chunk files, safe against concurrent puts, fetches and reads.
//!
//! A chunk file may be removed only when no chunk list in the index references it and nobody
//! holds a pin on it. Puts, chunk writes and readers pin a hash *before* they look at its file;
//! removal happens under the pin lock after a fresh read transaction has re-checked the chunk's
//! reference count. So a put that found a chunk file present keeps it until its record commits
//! (and the reference count protects it from then on), and a reader's chunks stay until it is
//! dropped.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use redb::Database;

use super::chunks::{remove_if_present, ChunkDir};
use super::index::CHUNK_REFS;
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

/// Removes those of `hashes` that are unreferenced and unpinned; returns how many files went.
pub(crate) fn free(
    db: &Database,
    chunks: &ChunkDir,
    pins: &Pins,
    hashes: &[Hash],
) -> Result<usize, StoreError> {
    if hashes.is_empty() {
        return Ok(0);
    }
    let pins = pins.lock();
    let txn = db.begin_read()?;
    let refs = txn.open_table(CHUNK_REFS)?;
    let mut removed = 0;
    for h in hashes {
        if pins.contains_key(h) || refs.get(&h.0)?.is_some() {
            continue;
        }
        if chunks.remove(h)? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The full sweep: every chunk file without a reference or pin, every stale temp file, and
/// every stray file in the chunk directories. Returns the number of files removed.
pub(crate) fn sweep(db: &Database, chunks: &ChunkDir, pins: &Pins) -> Result<usize, StoreError> {
    let pins = pins.lock();
    let txn = db.begin_read()?;
    let refs = txn.open_table(CHUNK_REFS)?;
    let mut removed = 0;
    let (present, strays) = chunks.scan()?;
    for h in present {
        if pins.contains_key(&h) || refs.get(&h.0)?.is_some() {
            continue;
        }
        if chunks.remove(&h)? {
            removed += 1;
        }
    }
    for path in strays {
        if remove_if_present(&path)? {
            removed += 1;
        }
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
    if removed > 0 {
        tracing::debug!(removed, "garbage collected");
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
