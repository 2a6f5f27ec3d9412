//! Streams a file's bytes to a caller: from the local store when the content is here, or as the
//! chunks of a running transfer are verified and written. Every chunk is verified on read, and
//! memory stays bounded at one chunk whatever the file size.

use std::io;

use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::watch;

use super::replicate::{Progress, Replicator};
use super::{blocking, Error};
use crate::record::{Hash, Record, CHUNK_SIZE};
use crate::store::{Store, StoreError};

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

fn store_err(e: Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Prepares the download of a live record's content, starting a transfer if needed.
pub(crate) async fn start(
    store: Store,
    replicator: Replicator,
    record: Record,
    range: Option<(u64, u64)>,
) -> Result<Download, Error> {
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
    let local = blocking(move || s.stat(&key))
        .await??
        .is_some_and(|st| st.local && st.record.cid == Some(cid));
    let mut progress = if local {
        None
    } else {
        replicator.ensure(&record)
    };
    // The chunk list is known locally, or arrives with the transfer's first progress.
    let chunks = loop {
        let s = store.clone();
        if let Some(list) = blocking(move || s.chunk_list(&cid)).await?? {
            break list;
        }
        match progress.as_mut() {
            Some(rx) => wait(rx, &record.key).await?,
            None => return Err(Error::Store(StoreError::Incomplete(record.key.clone()))),
        }
    };
    let first = start / CHUNK_SIZE as u64;
    let last = if end == start {
        first
    } else {
        end.div_ceil(CHUNK_SIZE as u64)
    };
    let state = State {
        store,
        key: record.key.clone(),
        chunks,
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

/// Waits for a transfer to move; an error if it failed.
async fn wait(rx: &mut watch::Receiver<Progress>, key: &str) -> Result<(), Error> {
    if let Progress::Failed(reason) = &*rx.borrow() {
        return Err(Error::NotFound(format!(
            "{key} (content unavailable: {reason})"
        )));
    }
    if rx.changed().await.is_err() {
        // The transfer ended; its last state is final.
        if let Progress::Failed(reason) = &*rx.borrow() {
            return Err(Error::NotFound(format!(
                "{key} (content unavailable: {reason})"
            )));
        }
    }
    Ok(())
}

struct State {
    store: Store,
    key: String,
    chunks: Vec<Hash>,
    index: u64,
    last: u64,
    start: u64,
    end: u64,
    progress: Option<watch::Receiver<Progress>>,
}

impl State {
    async fn next_chunk(&mut self) -> io::Result<Bytes> {
        let hash = *self
            .chunks
            .get(self.index as usize)
            .ok_or_else(|| io::Error::other("chunk index beyond the chunk list"))?;
        loop {
            let store = self.store.clone();
            let read = blocking(move || store.read_chunk(&hash))
                .await
                .map_err(store_err)?;
            match read {
                Ok(Some(data)) => return Ok(self.slice(data)),
                Ok(None) => {
                    let ended = match self.progress.as_mut() {
                        Some(rx) => {
                            wait(rx, &self.key).await.map_err(store_err)?;
                            matches!(*rx.borrow(), Progress::Complete) && rx.has_changed().is_err()
                        }
                        None => true,
                    };
                    if ended {
                        let store = self.store.clone();
                        if let Ok(Some(data)) = blocking(move || store.read_chunk(&hash))
                            .await
                            .map_err(store_err)?
                        {
                            return Ok(self.slice(data));
                        }
                        return Err(io::Error::other(
                            StoreError::Incomplete(self.key.clone()).to_string(),
                        ));
                    }
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
