//! Streams a file's bytes to a caller (the one read path of the node): from the local store when the content is here, or as the
//! chunks of a running transfer are verified and written. Every chunk is verified on read, and
//! memory stays bounded at one chunk whatever the file size.
//!
//! A chunk that fails verification (bit rot), or is missing from content said to be local, is
//! healed on the way: the store quarantines it and marks the content incomplete (see
//! `store/scrub.rs`), and the download starts (or joins) a transfer, which fetches a healthy
//! copy from a peer, and serves the chunk once it is written. With no healthy copy anywhere the
//! download fails with an integrity error naming the key. For local content the first chunk
//! is read before the download is handed out, so that such a failure there is the answer
//! itself rather than a cut body.

use std::io;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::watch;

use super::transfer::{Progress, Transfers};
use super::Replication;
use super::TransferError;
use crate::record::{chunk_len, Hash, Record, CHUNK_SIZE};
use crate::store::{PinGuard, Store, StoreError};
use crate::tasks::{TaskFailed, Tasks};

/// Why a download could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("range {start}-{end} is outside the file of {size} bytes")]
    Range { start: u64, end: u64, size: u64 },
    #[error("content of {key} is not available yet: {reason}")]
    Unavailable { key: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// A file being read: its record, the byte range served, and the body.
pub struct Download {
    pub record: Record,
    /// Half-open byte range `[start, end)` of the file that `body` yields.
    pub range: (u64, u64),
    /// True when the whole content was already on this node.
    pub local: bool,
    pub body: BoxStream<'static, io::Result<Bytes>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("record", &self.record)
            .field("range", &self.range)
            .field("local", &self.local)
            .finish()
    }
}

impl Download {
    /// Reads the whole body into memory (for tests and small files).
    pub async fn bytes(self) -> io::Result<Vec<u8>> {
        use futures::TryStreamExt;
        let parts: Vec<Bytes> = self.body.try_collect().await?;
        Ok(parts.concat())
    }
}

fn task_err(e: TaskFailed) -> io::Error {
    io::Error::other(e.to_string())
}

/// Prepares the download of a live record's content, starting a transfer if needed.
pub(crate) async fn start(
    replication: &Replication,
    record: Record,
    range: Option<(u64, u64)>,
) -> Result<Download, Error> {
    let store = replication.store.clone();
    let tasks = replication.tasks.clone();
    let cid = record
        .cid
        .ok_or_else(|| Error::NotFound(record.key.clone()))?;
    let size = record.size;
    let (start, end) = range.unwrap_or((0, size));
    if start > end || end > size {
        return Err(Error::Range { start, end, size });
    }
    // A read: under partial replication, what is not placed here stays in the cache.
    replication.policy().read(cid, size);
    let s = store.clone();
    let local = tasks.blocking(move || s.content_complete(&cid)).await??;
    let mut progress = if local {
        None
    } else {
        replication.transfers().ensure(&record, true)
    };
    // Pin the chunks against garbage collection (an overwrite or delete during the download must
    // not cut it short). The chunk list is known locally, or arrives with the transfer.
    let mut last_look = false;
    let pins = loop {
        let s = store.clone();
        if let Some(pins) = tasks.blocking(move || s.pin_content(&cid)).await?? {
            break pins;
        }
        let ended = match progress.as_mut() {
            Some(rx) if !last_look => match wait(rx).await {
                Waited::Changed => continue,
                Waited::Ended(Progress::Complete) => {
                    last_look = true;
                    continue;
                }
                Waited::Ended(state) => state,
            },
            Some(_) => Progress::Complete,
            None => {
                return Err(Error::Unavailable {
                    key: record.key.clone(),
                    reason: "the file changed while it was opened; retry".into(),
                })
            }
        };
        let reason = match ended {
            Progress::Failed(error) => error.to_string(),
            _ => "the content is no longer referenced (overwritten or deleted)".into(),
        };
        return Err(Error::Unavailable {
            key: record.key.clone(),
            reason,
        });
    };

    let first = start / CHUNK_SIZE as u64;
    let last = if end == start {
        first
    } else {
        end.div_ceil(CHUNK_SIZE as u64)
    };
    let mut state = State {
        store,
        tasks,
        transfers: replication.transfers().clone(),
        record: record.clone(),
        local,
        damaged: None,
        heals: 0,
        key: record.key.clone(),
        size,
        pins,
        index: first,
        last,
        start,
        end,
        progress,
    };
    // Local content: the first chunk now, so that damage nobody can heal is the answer.
    let mut head: Option<io::Result<Bytes>> = None;
    if local && state.index < state.last {
        match state.next_chunk().await {
            Ok(bytes) => {
                state.index += 1;
                head = Some(Ok(bytes));
            }
            Err(e) => {
                return Err(match state.damaged {
                    Some(chunk) if e.kind() == io::ErrorKind::InvalidData => {
                        Error::Store(StoreError::Integrity {
                            key: record.key.clone(),
                            chunk,
                        })
                    }
                    _ => Error::Unavailable {
                        key: record.key.clone(),
                        reason: e.to_string(),
                    },
                })
            }
        }
    }
    let rest = futures::stream::unfold(state, |mut st| async move {
        if st.index >= st.last {
            return None;
        }
        let item = st.next_chunk().await;
        st.index += 1;
        if item.is_err() {
            st.last = st.index; // stop after an error
        }
        Some((item, st))
    });
    let body = futures::stream::iter(head).chain(rest);
    Ok(Download {
        record,
        range: (start, end),
        local,
        body: Box::pin(body),
    })
}

/// What waiting on a transfer gave.
enum Waited {
    /// It made progress (or changed state): look again.
    Changed,
    /// It is over; this was its last state.
    Ended(Progress),
}

/// Waits for a transfer to move.
async fn wait(rx: &mut watch::Receiver<Progress>) -> Waited {
    let state = rx.borrow().clone();
    if matches!(state, Progress::Failed(_) | Progress::Complete) {
        return Waited::Ended(state);
    }
    match rx.changed().await {
        Ok(()) => Waited::Changed,
        // The sender is gone: the last value is final.
        Err(_) => Waited::Ended(rx.borrow().clone()),
    }
}

/// Transfers a download starts to heal one damaged chunk, at most: the first may be one that
/// was already running and had counted the chunk as present.
const MAX_HEALS: u32 = 2;

struct State {
    store: Store,
    tasks: Tasks,
    transfers: Transfers,
    record: Record,
    /// The content was complete here when the download began.
    local: bool,
    /// A chunk found damaged (or missing from local content) during this download.
    damaged: Option<Hash>,
    /// Transfers started (or joined) to heal it (the chunk in `damaged`).
    heals: u32,
    key: String,
    size: u64,
    /// The chunk list, pinned against garbage collection until the download is dropped.
    pins: PinGuard,
    index: u64,
    last: u64,
    start: u64,
    end: u64,
    progress: Option<watch::Receiver<Progress>>,
}

impl State {
    async fn next_chunk(&mut self) -> io::Result<Bytes> {
        let hash: Hash = *self
            .pins
            .chunks()
            .get(self.index as usize)
            .ok_or_else(|| io::Error::other("chunk index beyond the chunk list"))?;
        let mut ended = false;
        loop {
            if self.tasks.is_cancelled() {
                return Err(io::Error::other("the node is stopping"));
            }
            let store = self.store.clone();
            let read = self
                .tasks
                .blocking(move || store.read_chunk(&hash))
                .await
                .map_err(task_err)?;
            match read {
                Ok(Some(data)) => {
                    if data.len() != chunk_len(self.size, self.index) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "content of {} does not match its size: chunk {} has {} bytes",
                                self.key,
                                self.index,
                                data.len()
                            ),
                        ));
                    }
                    return Ok(self.slice(data));
                }
                // Content said to be local lacks a chunk: handled as damage.
                Ok(None) if self.local && self.progress.is_none() && self.damaged.is_none() => {
                    let store = self.store.clone();
                    let _ = self
                        .tasks
                        .blocking(move || store.chunk_damaged(&hash))
                        .await;
                    self.damaged = Some(hash);
                    if self.heal() {
                        ended = false;
                        continue;
                    }
                    return Err(self.integrity(hash, "the node is stopping"));
                }
                Ok(None) if !ended => match self.progress.as_mut() {
                    Some(rx) => {
                        if let Waited::Ended(_) = wait(rx).await {
                            // One more look: the last chunk may have landed with the end.
                            ended = true;
                        }
                    }
                    None => ended = true,
                },
                // The transfer joined had counted the chunk as present: one more.
                Ok(None)
                    if self.damaged.is_some()
                        && self.heals < MAX_HEALS
                        && self.joined_too_early()
                        && self.heal() =>
                {
                    ended = false;
                }
                Ok(None) if self.damaged.is_some() => {
                    let reason = match self.progress.as_ref().map(|rx| rx.borrow().clone()) {
                        Some(Progress::Failed(error)) => error.to_string(),
                        _ => format!("chunk {hash} is missing"),
                    };
                    return Err(self.integrity(hash, &reason));
                }
                Ok(None) => {
                    let reason = match self.progress.as_ref().map(|rx| rx.borrow().clone()) {
                        Some(Progress::Failed(error)) => error.to_string(),
                        _ => format!("chunk {hash} is missing"),
                    };
                    return Err(io::Error::other(format!(
                        "content of {} is not available: {reason}",
                        self.key
                    )));
                }
                // The store quarantined the bad copy and marked the content incomplete: fetch a
                // healthy one.
                Err(StoreError::BadChunk(chunk)) => {
                    if self.damaged != Some(chunk) {
                        self.heals = 0; // the count is per damaged chunk
                    }
                    self.damaged = Some(chunk);
                    if self.heals < MAX_HEALS && self.heal() {
                        ended = false;
                        continue;
                    }
                    return Err(self.integrity(chunk, "no healthy copy arrived"));
                }
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
    }

    /// Starts (or joins) a transfer of this content to replace a damaged chunk; false if none
    /// can start (the node is stopping).
    fn heal(&mut self) -> bool {
        self.heals += 1;
        tracing::debug!(key = %self.key, chunk = ?self.damaged, "fetching a healthy copy of a damaged chunk");
        match self.transfers.ensure(&self.record, true) {
            Some(rx) => {
                self.progress = Some(rx);
                true
            }
            None => false,
        }
    }

    /// True when the healing transfer ended without fetching the chunk because it counted it
    /// as present (it was running before the damage was found: it then completes, or finds the
    /// content incomplete at its end), not because no peer had it.
    fn joined_too_early(&self) -> bool {
        self.progress
            .as_ref()
            .is_some_and(|rx| match &*rx.borrow() {
                Progress::Complete => true,
                Progress::Failed(e) => matches!(**e, TransferError::Incomplete),
                Progress::Running { .. } => false,
            })
    }

    /// The error of a damaged chunk that could not be replaced.
    fn integrity(&self, chunk: Hash, reason: &str) -> io::Error {
        let e = StoreError::Integrity {
            key: self.key.clone(),
            chunk,
        };
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{e}, and no peer supplied a healthy copy ({reason})"),
        )
    }

    /// Cuts a chunk to the requested range.
    fn slice(&self, data: Vec<u8>) -> Bytes {
        let chunk_start = self.index * CHUNK_SIZE as u64;
        let from = self.start.saturating_sub(chunk_start) as usize;
        let to = ((self.end - chunk_start) as usize).min(data.len());
        Bytes::from(data).slice(from.min(to)..to)
    }
}
