//! Group commit: the index changes of concurrent puts, deletes, merges, small chunk writes,
//! chunk lists and completions share one redb write transaction, and so one fsync.
//!
//! Leader/follower, with no thread of its own: a caller queues its change and, if no commit is
//! running, becomes the leader: it takes the whole queue, syncs the directories of the batch's
//! chunk files once, applies every change in one transaction (each record's clock tick happens
//! inside it, in queue order, so versions stay ordered), commits, frees what the batch left
//! unreferenced, and hands each caller its own result. Callers that queued meanwhile wait on a
//! condition variable; when the leader is done, one of them leads the next batch (everything
//! that queued during the previous commit). So a change is acknowledged only after the commit
//! that covers it.
//!
//! Gathering: left at that, batches split into two cohorts that alternate (while one commits,
//! the callers of the previous one come back and queue for the next), so each fsync covers
//! about half the callers. So a new leader first waits for the callers of the previous batch
//! to come back, for at most half the previous batch's duration (and [`MAX_GATHER`]), and only
//! while some of them have not: a lone caller never waits, and a wait costs at most half a
//! commit of latency. With 32 clients on a disk this doubled the batch size (from about 16 puts
//! to 32) and the puts per second.
//!
//! A change that fails (the delete of a missing key, a corrupt entry) fails alone: if it may
//! have written, the transaction is aborted and the batch runs again without it. A failed
//! commit fails the whole batch. Nothing outlives the store: there is no thread to stop.

use std::collections::HashMap;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::heads::{install, merge_one, recompute_heads, signed};
use super::index::{HeadsChange, Tables};
use super::{Applied, Store, StoreError};
use crate::record::{content_id, ContentId, Hash, Record, VersionId};

/// One change waiting for a commit.
pub(crate) enum Op {
    /// A put whose chunks are written (files fsynced and renamed, `inline` in memory).
    Put {
        key: String,
        size: u64,
        hashes: Vec<Hash>,
        /// Chunks stored as files: their directories are synced before the commit.
        files: Vec<Hash>,
        inline: Vec<(Hash, Vec<u8>)>,
    },
    Delete {
        key: String,
    },
    /// A new write of an earlier version's content (`dfs restore`).
    Restore {
        key: String,
        version: VersionId,
    },
    /// Makes a version kept in history hold its content, so that it can be fetched
    /// (`get --version`, `restore` of a version replaced before its content arrived here).
    Hold {
        record: Record,
    },
    /// Drops history older than `keep_ms` (by when it left the heads), then the oldest until
    /// the content only history holds fits in `keep_bytes`.
    Expire {
        now: u64,
        keep_ms: u64,
        keep_bytes: u64,
    },
    /// Records from elsewhere, merged by causality (already validated or to be skipped).
    Merge {
        records: Vec<Record>,
    },
    /// Removes every record the admission policy refuses now (after a revocation).
    DropRefused,
    /// A verified grant (membership), stored by id; refused if its issuer already signed
    /// another object under its sequence number.
    Grant {
        id: Hash,
        issuer: Vec<u8>,
        seq: u64,
        bytes: Vec<u8>,
    },
    /// A grant of this node's to sign and store.
    SignGrant {
        grant: crate::trust::Grant,
    },
    /// A verified small chunk from a peer, stored inline.
    Chunk {
        hash: Hash,
        bytes: Vec<u8>,
    },
    /// A verified chunk list from a peer, kept only while some live record references `cid`.
    ChunkList {
        cid: ContentId,
        size: u64,
        chunks: Vec<Hash>,
    },
    /// Content whose chunks are all present: `files` are those stored as files.
    Complete {
        cid: ContentId,
        files: Vec<Hash>,
    },
}

/// What a change did once committed.
pub(crate) enum Done {
    Record(Record),
    Applied(Vec<Applied>),
    Dropped(Vec<Record>),
    /// History entries removed.
    Expired(usize),
    Grant(crate::trust::Grant),
    Chunk,
    /// Whether a chunk list was kept, or content is complete.
    Yes(bool),
}

/// Why one change failed: `Clean` before it wrote anything (the rest of the batch goes on),
/// `Dirty` after it may have (the batch runs again without it).
enum Failed {
    Clean(StoreError),
    Dirty(StoreError),
}

impl<E: Into<StoreError>> From<E> for Failed {
    fn from(e: E) -> Failed {
        Failed::Dirty(e.into())
    }
}

type Outcome = Result<Done, StoreError>;

/// The longest a new leader waits for the callers of the last batch: about one fsync of a slow
/// disk, so that a long batch (a large merge) does not make the next one wait as long.
const MAX_GATHER: Duration = Duration::from_millis(5);

/// The queue of changes and who is committing.
#[derive(Default)]
pub(crate) struct Committer {
    state: Mutex<State>,
    /// Signalled when a batch's outcomes are ready (and the leader stepped down).
    turn: Condvar,
    /// Signalled to a gathering leader when the callers it waits for are back.
    back: Condvar,
}

#[derive(Default)]
struct State {
    queue: Vec<(u64, Op)>,
    /// A leader is committing a batch.
    busy: bool,
    /// Outcomes not yet collected by their callers, by ticket.
    done: HashMap<u64, Outcome>,
    next: u64,
    /// Callers of the last batch that have not queued again (approximately: any new caller
    /// counts as one of them).
    returning: usize,
    /// How long the last batch took.
    last_batch: Duration,
    /// A new leader is waiting for `returning` to drop to zero.
    gathering: bool,
}

impl Committer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new leader's wait for the callers of the last batch (see the module's doc).
    fn gather<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let deadline = Instant::now() + (state.last_batch / 2).min(MAX_GATHER);
        state.gathering = true;
        while state.returning > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .back
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.gathering = false;
        // Those not back by now are not coming soon: do not wait for them again.
        state.returning = 0;
        state
    }
}

/// The leader's duty to hand out outcomes and step down, even if the batch panicked.
struct Leader<'a> {
    committer: &'a Committer,
    tickets: Vec<u64>,
    outcomes: Vec<Outcome>,
    started: Instant,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut outcomes = std::mem::take(&mut self.outcomes).into_iter();
        let mut state = self.committer.lock();
        for &ticket in &self.tickets {
            let outcome = outcomes
                .next()
                .unwrap_or_else(|| Err(StoreError::Index("the commit panicked".into())));
            state.done.insert(ticket, outcome);
        }
        state.busy = false;
        state.returning = self.tickets.len();
        state.last_batch = self.started.elapsed();
        drop(state);
        self.committer.turn.notify_all();
    }
}

/// One try at committing the live part of a batch.
enum Attempt {
    /// Committed (or nothing to write); outcomes of the live changes, in order.
    Committed(Vec<Outcome>),
    /// Change `at` failed after it may have written: the transaction was aborted.
    Failed { at: usize, error: StoreError },
}

/// The same failure for every change of a batch (errors are not `Clone`).
fn for_each(n: usize, e: &StoreError) -> Vec<Outcome> {
    (0..n)
        .map(|_| {
            Err(match e {
                StoreError::Io(io) => StoreError::Io(io::Error::new(io.kind(), io.to_string())),
                e => StoreError::Index(e.to_string()),
            })
        })
        .collect()
}

impl Store {
    /// Queues a change and returns its outcome once the commit covering it is done (leading
    /// that commit if no other caller is).
    pub(crate) fn submit(&self, op: Op) -> Outcome {
        let committer = &self.inner.committer;
        let mut state = committer.lock();
        let ticket = state.next;
        state.next += 1;
        state.queue.push((ticket, op));
        state.returning = state.returning.saturating_sub(1);
        if state.gathering && state.returning == 0 {
            committer.back.notify_one();
        }
        loop {
            if let Some(outcome) = state.done.remove(&ticket) {
                return outcome;
            }
            if !state.busy {
                state.busy = true;
                state = committer.gather(state);
                let batch = std::mem::take(&mut state.queue);
                drop(state);
                let mut leader = Leader {
                    committer,
                    tickets: batch.iter().map(|(t, _)| *t).collect(),
                    outcomes: Vec::new(),
                    started: Instant::now(),
                };
                let ops: Vec<Op> = batch.into_iter().map(|(_, op)| op).collect();
                leader.outcomes = self.commit_batch(&ops);
                drop(leader);
                state = committer.lock();
                continue;
            }
            state = committer
                .turn
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Commits a batch; returns the outcome of each change, in order.
    fn commit_batch(&self, ops: &[Op]) -> Vec<Outcome> {
        // The renames of every chunk file of the batch become durable before any record.
        let files = ops.iter().flat_map(|op| match op {
            Op::Put { files, .. } | Op::Complete { files, .. } => &files[..],
            _ => &[],
        });
        if let Err(e) = self.inner.chunks.sync_dirs(files) {
            return for_each(ops.len(), &e.into());
        }
        let mut outcomes: Vec<Option<Outcome>> = ops.iter().map(|_| None).collect();
        let mut live: Vec<usize> = (0..ops.len()).collect();
        while !live.is_empty() {
            match self.try_batch(ops, &live) {
                Ok(Attempt::Committed(done)) => {
                    for (&i, outcome) in live.iter().zip(done) {
                        outcomes[i] = Some(outcome);
                    }
                    break;
                }
                Ok(Attempt::Failed { at, error }) => {
                    outcomes[at] = Some(Err(error));
                    live.retain(|&i| i != at);
                }
                Err(e) => {
                    for (&i, outcome) in live.iter().zip(for_each(live.len(), &e)) {
                        outcomes[i] = Some(outcome);
                    }
                    break;
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every change has an outcome"))
            .collect()
    }

    fn try_batch(&self, ops: &[Op], live: &[usize]) -> Result<Attempt, StoreError> {
        let inner = &*self.inner;
        let txn = inner.db.begin_write()?;
        let mut outcomes = Vec::with_capacity(live.len());
        let mut changes = Vec::new();
        let mut freed = Vec::new();
        let mut wrote = false;
        {
            let mut t = Tables::open(&txn)?;
            for &i in live {
                match self.apply_op(&mut t, &ops[i], &mut changes, &mut freed) {
                    Ok((done, w)) => {
                        wrote |= w;
                        outcomes.push(Ok(done));
                    }
                    Err(Failed::Clean(e)) => outcomes.push(Err(e)),
                    // Dropping the transaction aborts it.
                    Err(Failed::Dirty(error)) => return Ok(Attempt::Failed { at: i, error }),
                }
            }
            t.set_clock(inner.clock.last())?;
        }
        if !wrote {
            // Nothing to write: dropping the transaction aborts it.
            return Ok(Attempt::Committed(outcomes));
        }
        txn.commit()?;
        for change in &changes {
            self.sync_update(change);
        }
        self.free(&freed);
        Ok(Attempt::Committed(outcomes))
    }

    /// Applies one change in the batch's transaction; returns its outcome and whether it wrote.
    fn apply_op(
        &self,
        t: &mut Tables<'_>,
        op: &Op,
        changes: &mut Vec<HeadsChange>,
        freed: &mut Vec<Hash>,
    ) -> Result<(Done, bool), Failed> {
        let inner = &*self.inner;
        match op {
            Op::Put {
                key,
                size,
                hashes,
                inline,
                ..
            } => {
                let cid = content_id(*size, hashes);
                let heads = t.heads(key)?;
                // The same bytes again: the current version already is this content (held
                // whole, no conflict to resolve), so nothing is written and history stays.
                if let [current] = &heads[..] {
                    if current.cid == Some(cid) && t.content(&cid)?.is_some_and(|c| c.complete) {
                        return Ok((Done::Record(current.clone()), false));
                    }
                }
                for (hash, bytes) in inline {
                    t.put_inline(hash, bytes)?;
                }
                let record = signed(inner, t, key, Some(cid), *size, &heads)?;
                t.add_content(&cid, *size, hashes, true)?;
                install(inner, t, &record, heads, changes, freed)?;
                Ok((Done::Record(record), true))
            }
            Op::Delete { key } => {
                let heads = t.heads(key)?;
                if heads.iter().all(Record::is_tombstone) {
                    return Err(Failed::Clean(StoreError::NotFound(key.clone())));
                }
                let record = signed(inner, t, key, None, 0, &heads)?;
                install(inner, t, &record, heads, changes, freed)?;
                Ok((Done::Record(record), true))
            }
            Op::Restore { key, version } => {
                let heads = t.heads(key)?;
                let old = match heads.iter().find(|h| h.version() == *version) {
                    Some(h) => h.clone(),
                    None => match t
                        .history_of(key)?
                        .into_iter()
                        .find(|e| e.record.version() == *version)
                    {
                        Some(e) => e.record,
                        None => {
                            return Err(Failed::Clean(StoreError::NotFound(format!(
                                "{key} version {}",
                                version.to_hex()
                            ))))
                        }
                    },
                };
                let Some(cid) = old.cid else {
                    return Err(Failed::Clean(StoreError::IsDelete(version.to_hex())));
                };
                if !t.content(&cid)?.is_some_and(|c| c.complete) {
                    return Err(Failed::Clean(StoreError::Incomplete(format!(
                        "{key} version {}",
                        version.to_hex()
                    ))));
                }
                let record = signed(inner, t, key, Some(cid), old.size, &heads)?;
                install(inner, t, &record, heads, changes, freed)?;
                Ok((Done::Record(record), true))
            }
            Op::Hold { record } => {
                let held = t.hold_history(record)?;
                Ok((Done::Yes(held), held))
            }
            Op::Expire {
                now,
                keep_ms,
                keep_bytes,
            } => {
                let removed = super::history::expire(t, *now, *keep_ms, *keep_bytes, freed)?;
                Ok((Done::Expired(removed), removed > 0))
            }
            Op::Merge { records } => {
                let mut outcomes = Vec::with_capacity(records.len());
                let mut wrote = false;
                for record in records {
                    outcomes.push(merge_one(inner, t, record, changes, freed)?);
                    wrote |= matches!(
                        outcomes.last(),
                        Some(Applied::Updated { .. } | Applied::Kept)
                    );
                }
                Ok((Done::Applied(outcomes), wrote))
            }
            Op::DropRefused => {
                let dropped = t.heads_where(|r| !inner.admits(r))?;
                let mut keys: Vec<&str> = dropped.iter().map(|r| r.key.as_str()).collect();
                keys.sort_unstable();
                keys.dedup();
                for key in keys {
                    recompute_heads(inner, t, key, changes, freed)?;
                }
                let wrote = !dropped.is_empty();
                Ok((Done::Dropped(dropped), wrote))
            }
            Op::Grant {
                id,
                issuer,
                seq,
                bytes,
            } => {
                let fingerprint = u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
                if !t.note_seq(issuer, *seq, fingerprint)? {
                    return Ok((Done::Yes(false), true));
                }
                let added = t.add_grant(id, bytes)?;
                Ok((Done::Yes(added), true))
            }
            Op::SignGrant { grant } => {
                let mut grant = grant.clone();
                grant.time = inner.clock.tick();
                grant.seq = t.next_seq(&inner.author)?;
                grant.sign(&inner.keypair);
                let id = grant.id();
                let fingerprint = u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
                t.note_seq(&grant.issuer, grant.seq, fingerprint)?;
                t.add_grant(&id, &grant.encode())?;
                Ok((Done::Grant(grant), true))
            }
            Op::Chunk { hash, bytes } => {
                t.put_inline(hash, bytes)?;
                Ok((Done::Chunk, true))
            }
            Op::ChunkList { cid, size, chunks } => {
                if t.content_refs(cid)? == 0 {
                    return Ok((Done::Yes(false), false));
                }
                if t.content(cid)?.is_none() {
                    let pending = t.pending_hashes()?;
                    let budget = inner.list_budget.load(std::sync::atomic::Ordering::Relaxed);
                    if pending + chunks.len() as u64 > budget {
                        return Err(Failed::Clean(StoreError::ListBudget {
                            pending,
                            len: chunks.len() as u64,
                        }));
                    }
                }
                t.add_content(cid, *size, chunks, false)?;
                Ok((Done::Yes(true), true))
            }
            Op::Complete { cid, .. } => {
                let complete = t.set_complete(cid)?;
                Ok((Done::Yes(complete), complete))
            }
        }
    }
}
