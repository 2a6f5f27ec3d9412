//! Streams a file's bytes to a caller (the one read path of the node): from the local store when the content is here, or as the
//! chunks of a running transfer are verified and written. Every chunk is verified on read, and
//! memory stays bounded at one chunk whatever the file size.

use std::io;

use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::watch;

use super::transfer::Progress;
use super::Replication;
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
    let s = store.clone();
    let key = record.key.clone();
    let local = tasks
        .blocking(move || s.stat(&key))
        .await??
        .is_some_and(|st| st.local && st.record.cid == Some(cid));
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
    let state = State {
        store,
        tasks,
        key: record.key.clone(),
        size,
        pins,
        index: first,
        last,
        start,
        end,
        progress,
    };
    let body = futures::stream::unfold(state, |mut st| async move {
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

struct State {
    store: Store,
    tasks: Tasks,
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
                Ok(None) if !ended => match self.progress.as_mut() {
                    Some(rx) => {
                        if let Waited::Ended(_) = wait(rx).await {
                            // One more look: the last chunk may have landed with the end.
                            ended = true;
                        }
                    }
                    None => ended = true,
                },
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
                Err(StoreError::BadChunk(chunk)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        StoreError::Integrity {
                            key: self.key.clone(),
                            chunk,
                        }
                        .to_string(),
                    ))
                }
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
    }

    /// Cuts a chunk to the requested range.
    fn slice(&self, data: Vec<u8>) -> Bytes {
        let chunk_start = self.index * CHUNK_SIZE as u64;
        let from = self.start.saturating_sub(chunk_start) as usize;
        let to = ((self.end - chunk_start) as usize).min(data.len());
        Bytes::from(data).slice(from.min(to)..to)
    }
}
