//! Bulk catch-up over [`crate::protocols::catchup`]: when a sync session finds the record sets
//! far apart (more differing leaves than one `entries` request names), the initiator pulls the
//! heads of every differing leaf on one stream and merges them in large batches (signatures
//! checked in parallel, one store transaction per batch) while the next frames arrive; the
//! responder pages them out of its index. Memory stays bounded on both sides: a page of keys,
//! a frame, and two batches in flight.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use super::{MergeError, Replication};
use crate::net;
use crate::protocols::catchup::{self, FrameError, Leaves};
use crate::protocols::sync::leaf_of;
use crate::record::{key_hash, Record};
use crate::store::{Store, StoreError};
use crate::tasks::{TaskFailed, Tasks};

/// Keys read from the index per page while serving.
const PAGE_KEYS: usize = 1024;
/// Records merged per store transaction while catching up.
const MERGE_BATCH: usize = 4096;
/// Batches decoded and waiting for the merge, at most.
const BATCHES_QUEUED: usize = 2;
/// Records a requester takes from one answer beyond the count the responder announced (it may
/// have grown meanwhile): this many, plus [`COUNT_SLACK_SHARE`]ths of the count.
const COUNT_SLACK: u64 = 1024;
const COUNT_SLACK_SHARE: u64 = 32;
/// Most heads of one key (as a node keeps them: see `store`).
const MAX_HEADS_PER_KEY: usize = 64;

/// Why a catch-up failed.
#[derive(Debug, thiserror::Error)]
pub enum CatchupError {
    #[error(transparent)]
    Open(net::Error),
    #[error("catch-up stream from {peer}: {error}")]
    Frame { peer: PeerId, error: FrameError },
    #[error("catch-up protocol violation by {peer}: {reason}")]
    Protocol { peer: PeerId, reason: &'static str },
    #[error("catch-up from {peer} timed out")]
    Timeout { peer: PeerId },
    #[error(transparent)]
    Merge(#[from] MergeError),
}

impl CatchupError {
    /// Whether the peer sent what no honest peer sends (rather than failing or being slow).
    pub(crate) fn peer_misbehaved(&self) -> bool {
        match self {
            CatchupError::Protocol { .. } => true,
            CatchupError::Frame { error, .. } => !matches!(error, FrameError::Io(_)),
            _ => false,
        }
    }
}

/// What a catch-up brought.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pulled {
    /// Records received.
    pub received: u64,
    /// Records that changed the store.
    pub changed: u64,
    /// Whether the responder sent every requested head (its end frame arrived).
    pub complete: bool,
}

/// Pulls the heads of `leaves` from `peer` and merges them. `announced` is the peer's head
/// count (from its root answer): an answer may not carry many more records than that.
pub(crate) async fn pull(
    replication: &Replication,
    peer: PeerId,
    leaves: Leaves,
    announced: u64,
) -> Result<Pulled, CatchupError> {
    let open = replication.network.open_stream(peer, catchup::PROTOCOL);
    let mut stream = tokio::time::timeout(catchup::FRAME_TIMEOUT, open)
        .await
        .map_err(|_| CatchupError::Timeout { peer })?
        .map_err(CatchupError::Open)?;
    let frame_error = |error| CatchupError::Frame { peer, error };
    tokio::time::timeout(
        catchup::FRAME_TIMEOUT,
        catchup::write_request(&mut stream, &leaves),
    )
    .await
    .map_err(|_| CatchupError::Timeout { peer })?
    .map_err(|e| frame_error(FrameError::Io(e)))?;

    let limit = announced
        .saturating_add(COUNT_SLACK)
        .saturating_add(announced / COUNT_SLACK_SHARE);
    let (tx, mut rx) = mpsc::channel::<Vec<Record>>(BATCHES_QUEUED);
    let read = async move {
        let deadline = Instant::now() + catchup::MAX_ANSWER_TIME;
        let mut batch = Vec::with_capacity(MERGE_BATCH);
        let mut received = 0u64;
        // The answer's order (key hash, then key) is checked as it arrives: every key once,
        // its heads together, so that a liar cannot repeat records to stretch it.
        let mut last: Option<(u64, String)> = None;
        let mut run = 0usize;
        loop {
            let by = deadline.min(Instant::now() + catchup::FRAME_TIMEOUT);
            let frame = tokio::time::timeout_at(by, catchup::read_frame(&mut stream))
                .await
                .map_err(|_| CatchupError::Timeout { peer })?
                .map_err(frame_error)?;
            let Some(records) = frame else {
                break;
            };
            if records
                .iter()
                .any(|r| !leaves.contains(leaf_of(key_hash(&r.key))))
            {
                return Err(CatchupError::Protocol {
                    peer,
                    reason: "a record outside the requested leaves",
                });
            }
            for r in &records {
                let here = (key_hash(&r.key), r.key.as_str());
                match &last {
                    Some((h, k)) if (*h, k.as_str()) == here => run += 1,
                    Some((h, k)) if (*h, k.as_str()) > here => {
                        return Err(CatchupError::Protocol {
                            peer,
                            reason: "records out of order (or a key repeated)",
                        });
                    }
                    _ => {
                        last = Some((here.0, r.key.clone()));
                        run = 1;
                    }
                }
                if run > MAX_HEADS_PER_KEY {
                    return Err(CatchupError::Protocol {
                        peer,
                        reason: "more heads of one key than a node keeps",
                    });
                }
            }
            received += records.len() as u64;
            if received > limit {
                // More than it said it holds: its set may have grown meanwhile (honest writes
                // during a long answer), so no strike; what arrived counts, in order, and the
                // next session goes on.
                batch.extend(records);
                let _ = tx.send(batch).await;
                return Ok((received, false));
            }
            batch.extend(records);
            if batch.len() >= MERGE_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(MERGE_BATCH));
                if tx.send(full).await.is_err() {
                    // The merge stopped (and says why).
                    return Ok((received, false));
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch).await;
        }
        let _ = stream.close().await;
        Ok((received, true))
    };
    let merge = async {
        let mut changed = 0u64;
        while let Some(batch) = rx.recv().await {
            let n = batch.len() as u64;
            let merged = replication.merge(batch, &[peer]).await?;
            replication
                .stats
                .records_received
                .fetch_add(n, Ordering::Relaxed);
            if merged.invalid > 0 {
                return Err(CatchupError::Protocol {
                    peer,
                    reason: "records that do not verify",
                });
            }
            changed += merged.changed as u64;
        }
        Ok(changed)
    };
    let (read, merge) = tokio::join!(read, merge);
    let changed = merge?;
    let (received, complete) = read?;
    Ok(Pulled {
        received,
        changed,
        complete,
    })
}

/// Serves catch-up streams within per-peer and global limits.
pub(crate) struct CatchupServer {
    store: Store,
    tasks: Tasks,
    streams: Arc<Semaphore>,
    serving: Mutex<HashSet<PeerId>>,
    stats: Arc<super::SyncStats>,
}

/// A peer's serving slot, given back when its stream ends.
struct Slot {
    server: Arc<CatchupServer>,
    peer: PeerId,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.server
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.peer);
    }
}

impl CatchupServer {
    pub(crate) fn new(
        store: Store,
        tasks: Tasks,
        stats: Arc<super::SyncStats>,
    ) -> Arc<CatchupServer> {
        Arc::new(CatchupServer {
            store,
            tasks,
            streams: Arc::new(Semaphore::new(catchup::MAX_STREAMS)),
            serving: Mutex::new(HashSet::new()),
            stats,
        })
    }

    fn admit(self: &Arc<Self>, peer: PeerId) -> Option<Slot> {
        let permit = self.streams.clone().try_acquire_owned().ok()?;
        if !self
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer)
        {
            return None;
        }
        Some(Slot {
            server: self.clone(),
            peer,
            _permit: permit,
        })
    }

    /// Accepts inbound catch-up streams until shutdown, each served by its own task; a stream
    /// beyond the limits is closed at once (the requester falls back to sync exchanges).
    pub(crate) async fn run(self: Arc<Self>, mut incoming: libp2p_stream::IncomingStreams) {
        use futures::StreamExt;
        while let Some((peer, mut stream)) = incoming.next().await {
            let Some(slot) = self.admit(peer) else {
                tracing::debug!(%peer, "refusing a catch-up stream: too many open");
                self.tasks.spawn(async move {
                    let _ = tokio::time::timeout(catchup::FRAME_TIMEOUT, stream.close()).await;
                });
                continue;
            };
            let this = self.clone();
            self.tasks.spawn(async move {
                match this.serve(&mut stream).await {
                    Ok(sent) => tracing::debug!(%peer, sent, "catch-up served"),
                    Err(error) => tracing::debug!(%peer, %error, "catch-up stream ended early"),
                }
                drop(slot);
            });
        }
    }

    async fn serve(&self, stream: &mut Stream) -> Result<u64, ServeError> {
        let leaves = tokio::time::timeout(catchup::FRAME_TIMEOUT, catchup::read_request(stream))
            .await
            .map_err(|_| ServeError::Timeout)??;
        let mut frame: Vec<Vec<u8>> = Vec::new();
        let mut frame_bytes = 0;
        let mut sent = 0u64;
        for leaf in leaves.iter() {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let store = self.store.clone();
                let from = after.take();
                let page = self
                    .tasks
                    .blocking(move || store.leaf_heads_page(leaf, from.as_deref(), PAGE_KEYS))
                    .await??;
                for heads in page.keys {
                    let size: usize = heads.iter().map(Vec::len).sum();
                    if frame_bytes + size > catchup::FRAME_TARGET && !frame.is_empty() {
                        sent += frame.len() as u64;
                        write(stream, Some(&catchup::encode_frame(&frame))).await?;
                        frame.clear();
                        frame_bytes = 0;
                    }
                    frame_bytes += size;
                    frame.extend(heads);
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        if !frame.is_empty() {
            sent += frame.len() as u64;
            write(stream, Some(&catchup::encode_frame(&frame))).await?;
        }
        write(stream, None).await?;
        self.stats.records_sent.fetch_add(sent, Ordering::Relaxed);
        tokio::time::timeout(catchup::FRAME_TIMEOUT, stream.close())
            .await
            .map_err(|_| ServeError::Timeout)??;
        Ok(sent)
    }
}

/// Writes one frame, bounded: a requester that does not take it within the frame timeout has
/// stopped reading.
async fn write(stream: &mut Stream, cbor: Option<&[u8]>) -> Result<(), ServeError> {
    tokio::time::timeout(catchup::FRAME_TIMEOUT, catchup::write_frame(stream, cbor))
        .await
        .map_err(|_| ServeError::Timeout)??;
    Ok(())
}

/// Why serving a catch-up stream ended early.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the requester stopped reading or asking")]
    Timeout,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
}
