//! Content: chunk lists, chunks (files and inline), pins that keep them from the gc, the
//! budget of lists still arriving, completion, the gc itself, and the verifying [`Reader`].

use super::*;

impl Store {
    /// Whether every chunk of this content id is verified and stored here.
    pub fn content_complete(&self, cid: &ContentId) -> Result<bool, StoreError> {
        is_complete(&self.inner.db.begin_read()?, cid)
    }

    /// The chunk list known for this content id (complete or not), if any.
    pub fn chunk_list(&self, cid: &ContentId) -> Result<Option<Vec<Hash>>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        Ok(read_content(&txn, cid)?.map(|c| c.chunks))
    }

    /// Pins the chunks of `cid` (complete or not) so that garbage collection keeps them while
    /// a download streams them, as [`Store::get`]'s reader does. `None` when no live record
    /// references the content (or its chunk list is not known yet).
    pub fn pin_content(&self, cid: &ContentId) -> Result<Option<PinGuard>, StoreError> {
        let Some(content) = read_content(&self.inner.db.begin_read()?, cid)? else {
            return Ok(None);
        };
        let guard = self.pin(content.chunks);
        // Pinned first, then checked: from here on gc keeps the chunks.
        if read_content(&self.inner.db.begin_read()?, cid)?.is_none() {
            return Ok(None);
        }
        Ok(Some(guard))
    }

    /// Stores a chunk list received from a peer, after checking it against the content id.
    /// Kept only while some live record references `cid`: `Ok(false)` if none does.
    /// `ListBudget` when the lists of content still arriving would exceed their budget.
    pub fn set_chunk_list(
        &self,
        cid: &ContentId,
        size: u64,
        chunks: &[Hash],
    ) -> Result<bool, StoreError> {
        if !crate::record::chunk_list_matches(cid, size, chunks) {
            return Err(StoreError::BadChunkList(*cid));
        }
        match self.submit(Op::ChunkList {
            cid: *cid,
            size,
            chunks: chunks.to_vec(),
        })? {
            Done::Yes(kept) => Ok(kept),
            _ => unreachable!("a chunk list is kept or not"),
        }
    }

    /// Sets the most chunk hashes kept in the lists of content still arriving (default
    /// [`MAX_PENDING_HASHES`]).
    pub fn set_list_budget(&self, hashes: u64) {
        self.inner.list_budget.store(hashes, Ordering::Relaxed);
    }

    /// True while some live record references the content id (cheap: no list is read).
    pub fn is_referenced(&self, cid: &ContentId) -> Result<bool, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let t = txn.open_table(index::CONTENT_REFS)?;
        let refs = t.get(&cid.0)?;
        Ok(refs.is_some_and(|v| v.value() > 0))
    }

    /// Chunk hashes in the stored lists of content still arriving (bounded by
    /// [`MAX_PENDING_HASHES`]).
    pub fn pending_hashes(&self) -> Result<u64, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let meta = txn.open_table(index::META)?;
        Ok(meta.get(index::PENDING)?.map_or(0, |v| v.value()))
    }

    /// Pins `chunks` against garbage collection until the guard drops.
    pub(super) fn pin(&self, chunks: Vec<Hash>) -> PinGuard {
        self.inner.pins.pin_all(&chunks);
        PinGuard {
            store: self.clone(),
            chunks,
        }
    }

    /// True when the chunk is stored here, inline or as a file (reads verify it), taking it
    /// back from `orphans/` if it is there (verified).
    pub fn has_chunk(&self, hash: &Hash) -> bool {
        // An index that cannot be read has nothing to offer: look for the file.
        self.has_inline(hash).unwrap_or(false)
            || self.inner.chunks.exists(hash)
            || self.adopt_orphan(hash)
    }

    pub(super) fn has_inline(&self, hash: &Hash) -> Result<bool, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let t = txn.open_table(index::INLINE)?;
        Ok(t.get(&hash.0)?.is_some())
    }

    /// Verifies a chunk against its hash, then writes it atomically and durably (idempotent).
    /// A chunk shorter than [`INLINE_MAX`] goes to the index, in a group commit.
    pub fn write_chunk(&self, hash: &Hash, bytes: &[u8]) -> Result<(), StoreError> {
        if Hash::of(bytes) != *hash {
            return Err(StoreError::BadChunk(*hash));
        }
        let pins = &self.inner.pins;
        pins.pin(*hash);
        let written = if self.has_chunk(hash) {
            Ok(())
        } else if bytes.len() < INLINE_MAX {
            self.submit(Op::Chunk {
                hash: *hash,
                bytes: bytes.to_vec(),
            })
            .map(|_| ())
        } else {
            self.inner
                .chunks
                .write_durable(hash, bytes)
                .map_err(StoreError::from)
        };
        pins.unpin_all([hash]);
        written
    }

    /// Reads and verifies a chunk: `BadChunk` if it is damaged, `Ok(None)` if absent.
    pub fn read_chunk(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        let mut buf = Vec::new();
        Ok(self.read_chunk_into(hash, &mut buf)?.then_some(buf))
    }

    /// Reads a chunk into `buf` (cleared first, its capacity reused) without verifying it, for
    /// serving to a peer, which verifies what it receives. `Ok(false)` if it is absent.
    pub fn read_chunk_unverified(
        &self,
        hash: &Hash,
        buf: &mut Vec<u8>,
    ) -> Result<bool, StoreError> {
        buf.clear();
        let inline = {
            let txn = self.inner.db.begin_read()?;
            let t = txn.open_table(index::INLINE)?;
            let v = t.get(&hash.0)?;
            v.map(|v| buf.extend_from_slice(v.value())).is_some()
        };
        Ok(inline || self.inner.chunks.read_into(hash, buf)?)
    }

    /// The one chunk read: into `buf` (cleared first) from the index or the chunk's file, then
    /// verified. `Ok(false)` if absent; `BadChunk` (and `buf` empty) if damaged.
    pub(super) fn read_chunk_into(
        &self,
        hash: &Hash,
        buf: &mut Vec<u8>,
    ) -> Result<bool, StoreError> {
        if !self.read_chunk_unverified(hash, buf)? {
            return Ok(false);
        }
        if Hash::of(buf) != *hash {
            buf.clear();
            self.quarantine(hash); // see store/scrub.rs
            return Err(StoreError::BadChunk(*hash));
        }
        Ok(true)
    }

    /// Marks content complete when every chunk is present (making the directories of its
    /// chunk files durable first); returns whether it is complete now.
    pub fn mark_complete(&self, cid: &ContentId) -> Result<bool, StoreError> {
        let inner = &*self.inner;
        let content = match read_content(&inner.db.begin_read()?, cid)? {
            None => return Ok(false),
            Some(c) if c.complete => return Ok(true),
            Some(c) => c,
        };
        let mut files = Vec::new();
        {
            let txn = inner.db.begin_read()?;
            let stored = txn.open_table(index::INLINE)?;
            for h in &content.chunks {
                if stored.get(&h.0)?.is_some() {
                    continue;
                }
                if !inner.chunks.exists(h) {
                    return Ok(false);
                }
                files.push(*h);
            }
        }
        // The batch syncs the directories of the files before it commits.
        match self.submit(Op::Complete { cid: *cid, files })? {
            Done::Yes(complete) => {
                if complete {
                    self.healed(&content.chunks);
                }
                Ok(complete)
            }
            _ => unreachable!("content is complete or not"),
        }
    }

    /// Live records whose content is not complete here (to resume fetching after a restart).
    pub fn incomplete(&self) -> Result<Vec<Record>, StoreError> {
        self.incomplete_where(|_| true)
    }

    /// Live records whose content is not complete here and that `wanted` picks, read one at a
    /// time (a store of a million records whose content lives elsewhere is not listed whole).
    pub fn incomplete_where(
        &self,
        mut wanted: impl FnMut(&Record) -> bool,
    ) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        self.each_live(|r, complete| {
            if !complete && wanted(&r) {
                out.push(r);
            }
        })?;
        Ok(out)
    }

    /// Full mark-and-sweep of chunks (files and inline) not referenced by any content and not
    /// pinned by a running put, fetch or reader, and of stale temp files. Returns the number of
    /// chunks and files removed.
    pub fn gc(&self) -> Result<usize, StoreError> {
        gc::sweep(&self.inner.db, &self.inner.chunks, &self.inner.pins, None)
    }

    /// Removes the chunks that a commit left without references (best effort: a failure only
    /// leaves garbage for the next sweep).
    pub(super) fn free(&self, hashes: &[Hash]) {
        let inner = &*self.inner;
        if let Err(e) = gc::free(&inner.db, &inner.chunks, &inner.pins, hashes) {
            tracing::warn!(cause = %e, "failed to free chunks");
        }
    }
}

/// A reader over one record's content, verifying every chunk against its hash before serving
/// any of its bytes. Keeps its chunks pinned (safe from gc) until dropped.
pub struct Reader {
    /// The store and the content's chunks, pinned.
    pub(super) guard: PinGuard,
    pub(super) record: Record,
    pub(super) next: usize,
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
}

impl Reader {
    /// The record whose content this is.
    pub fn record(&self) -> &Record {
        &self.record
    }

    pub(super) fn integrity(&self, chunk: Hash) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            StoreError::Integrity {
                key: self.record.key.clone(),
                chunk,
            },
        )
    }

    pub(super) fn load_next(&mut self) -> io::Result<()> {
        let hash = self.guard.chunks[self.next];
        match self.guard.store.read_chunk_into(&hash, &mut self.buf) {
            Ok(true) => {}
            Ok(false) | Err(StoreError::BadChunk(_)) => {
                self.buf.clear();
                return Err(self.integrity(hash));
            }
            Err(StoreError::Io(e)) => return Err(e),
            Err(e) => return Err(io::Error::other(e)),
        }
        self.next += 1;
        self.pos = 0;
        Ok(())
    }
}

impl Read for Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.buf.len() {
            if self.next == self.guard.chunks.len() {
                return Ok(0);
            }
            self.load_next()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Chunks of one content pinned against garbage collection while a download streams them.
pub struct PinGuard {
    pub(super) store: Store,
    pub(super) chunks: Vec<Hash>,
}

impl PinGuard {
    /// The content's chunk list.
    pub fn chunks(&self) -> &[Hash] {
        &self.chunks
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        self.store.inner.pins.unpin_all(&self.chunks);
    }
}

impl std::fmt::Debug for PinGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinGuard")
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("key", &self.record.key)
            .field("next_chunk", &self.next)
            .finish_non_exhaustive()
    }
}
