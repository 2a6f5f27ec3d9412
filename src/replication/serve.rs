//! The serving side of replication: answers other peers' fetch requests (records, chunk lists)
//! from the store, and serves chunk streams (`/dfs/chunks/1`), reading chunk files ahead into
//! pooled buffers while earlier chunks are being written to the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::stream::{FuturesOrdered, StreamExt};
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::buffers::{Buf, Pool};
use crate::protocols::{chunks, fetch};
use crate::record::validate_key;
use crate::store::{Store, StoreError};
use crate::tasks::Tasks;

/// Chunk buffers that serving holds at once (read ahead or being written to streams): bounds
/// the memory a node spends serving others at about this many MiB.
const SERVE_BUFFERS: usize = 32;
/// Chunks read ahead per stream while the previous ones are written, as long as more than half
/// of the pool is free; beyond, a stream holds one buffer at a time, so that streams whose
/// readers are slow (or never read) cannot take the whole pool.
const READ_AHEAD: usize = 4;

/// Chunk buffers one peer's streams hold at once, together: a peer that opens many streams
/// and never reads them holds this many, not the pool.
const BUFFERS_PER_PEER: usize = 4;

/// Serves chunk streams, within per-peer and global limits. Peers that are not members of the
/// network (strangers, readers without a grant) share half of the stream slots and half of the
/// buffers, so that they cannot keep members from reading.
pub(crate) struct ChunkServer {
    store: Store,
    tasks: Tasks,
    buffers: Arc<Pool>,
    streams: Arc<Semaphore>,
    /// The strangers' half of `streams` and of `buffers`.
    stranger_streams: Arc<Semaphore>,
    stranger_buffers: Arc<Semaphore>,
    members: crate::trust::Members,
    /// Per peer: its open streams, and the permits of the buffers its streams hold.
    per_peer: Mutex<HashMap<PeerId, (usize, Arc<Semaphore>)>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Chunks withheld from members that claimed to keep them (see `audit.rs`).
    audit: Arc<super::audit::Audit>,
}

/// A stream slot of one peer, given back when its stream ends.
struct Slot {
    server: Arc<ChunkServer>,
    peer: PeerId,
    /// The peer's buffer permits (see [`BUFFERS_PER_PEER`]).
    buffers: Arc<Semaphore>,
    /// For a stranger: the strangers' share of the buffers.
    stranger_buffers: Option<Arc<Semaphore>>,
    _permit: OwnedSemaphorePermit,
    _stranger: Option<OwnedSemaphorePermit>,
}

/// What one chunk read ahead holds until it is written: the peer's and, for a stranger, the
/// strangers' buffer permits.
type Held = (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>);

impl Slot {
    /// A buffer permit of this stream's peer (and of the strangers' share): waited for when
    /// `wait` (the stream holds none), else only if free now.
    async fn buffer_permit(&self, wait: bool) -> Option<Held> {
        let own = if wait {
            self.buffers.clone().acquire_owned().await.ok()?
        } else {
            self.buffers.clone().try_acquire_owned().ok()?
        };
        let shared = match &self.stranger_buffers {
            None => None,
            Some(s) if wait => Some(s.clone().acquire_owned().await.ok()?),
            Some(s) => Some(s.clone().try_acquire_owned().ok()?),
        };
        Some((own, shared))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_peer = self
            .server
            .per_peer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((n, _)) = per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                per_peer.remove(&self.peer);
            }
        }
    }
}

impl ChunkServer {
    pub(crate) fn new(
        store: Store,
        tasks: Tasks,
        metrics: Arc<crate::metrics::Metrics>,
        audit: Arc<super::audit::Audit>,
        members: crate::trust::Members,
    ) -> Arc<ChunkServer> {
        Arc::new(ChunkServer {
            store,
            tasks,
            metrics,
            audit,
            members,
            buffers: Pool::new(SERVE_BUFFERS),
            streams: Arc::new(Semaphore::new(chunks::MAX_STREAMS)),
            stranger_streams: Arc::new(Semaphore::new(chunks::MAX_STREAMS / 2)),
            stranger_buffers: Arc::new(Semaphore::new(SERVE_BUFFERS / 2)),
            per_peer: Mutex::new(HashMap::new()),
        })
    }

    fn admit(self: &Arc<Self>, peer: PeerId) -> Option<Slot> {
        let member = self.members.role(&peer).is_some();
        let stranger = if member {
            None
        } else {
            Some(self.stranger_streams.clone().try_acquire_owned().ok()?)
        };
        let permit = self.streams.clone().try_acquire_owned().ok()?;
        let mut per_peer = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        let (n, buffers) = per_peer
            .entry(peer)
            .or_insert_with(|| (0, Arc::new(Semaphore::new(BUFFERS_PER_PEER))));
        if *n >= chunks::MAX_STREAMS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(Slot {
            server: self.clone(),
            peer,
            buffers: buffers.clone(),
            stranger_buffers: (!member).then(|| self.stranger_buffers.clone()),
            _permit: permit,
            _stranger: stranger,
        })
    }

    /// Accepts inbound chunk streams until shutdown, each served by its own task.
    pub(crate) async fn run(self: Arc<Self>, mut incoming: libp2p_stream::IncomingStreams) {
        while let Some((peer, mut stream)) = incoming.next().await {
            match self.admit(peer) {
                Some(slot) => {
                    let this = self.clone();
                    self.tasks.spawn(async move {
                        if let Err(error) = this.serve(&slot, &mut stream).await {
                            tracing::debug!(%peer, %error, "chunk stream ended with an error");
                        }
                        drop(slot);
                    });
                }
                None => {
                    tracing::debug!(%peer, "refusing a chunk stream: too many open");
                    self.tasks.spawn(async move {
                        let refuse = async {
                            chunks::write_error(&mut stream, "busy: too many streams").await?;
                            stream.close().await
                        };
                        let _ = tokio::time::timeout(chunks::IDLE_TIMEOUT, refuse).await;
                    });
                }
            }
        }
    }

    async fn serve(&self, slot: &Slot, stream: &mut Stream) -> Result<(), chunks::FrameError> {
        let peer = slot.peer;
        loop {
            let request = match tokio::time::timeout(
                chunks::IDLE_TIMEOUT,
                chunks::read_request(stream),
            )
            .await
            {
                Err(_) => break, // idle: close
                Ok(Ok(None)) => break,
                Ok(Ok(Some(hashes))) => hashes,
                Ok(Err(e)) => {
                    if !matches!(e, chunks::FrameError::Io(_)) {
                        let _ = chunks::write_error(stream, &e.to_string()).await;
                        let _ = stream.close().await;
                    }
                    return Err(e);
                }
            };
            let mut reads = FuturesOrdered::new();
            let mut next = 0;
            while next < request.len() || !reads.is_empty() {
                while next < request.len() && reads.len() < READ_AHEAD {
                    // Wait for a buffer only while holding none (see `Pool::get`); the peer's
                    // (and the strangers') share first, so that no peer takes the pool.
                    let Some(held) = slot.buffer_permit(reads.is_empty()).await else {
                        break;
                    };
                    let buf = if reads.is_empty() {
                        self.buffers.get().await
                    } else if self.buffers.available() > SERVE_BUFFERS / 2 {
                        match self.buffers.try_get() {
                            Some(b) => b,
                            None => break,
                        }
                    } else {
                        break;
                    };
                    let hash = request[next];
                    next += 1;
                    let store = self.store.clone();
                    let tasks = self.tasks.clone();
                    // A member that claimed to keep this chunk's content gets it from no one
                    // it claimed that to (see `audit.rs`).
                    let withheld = self.audit.withheld(&peer, &hash);
                    reads.push_back(async move {
                        if withheld {
                            return (None, held);
                        }
                        let read = tasks
                            .blocking(move || read_chunk(&store, &hash, buf))
                            .await
                            .ok()
                            .flatten();
                        (read, held)
                    });
                }
                // A reply that cannot be written within the timeout (a requester that does
                // not read) ends the stream, giving its buffers back.
                let reply = async {
                    // The permits go back once the chunk is written.
                    let (read, _held) = match reads.next().await {
                        Some((read, held)) => (read, Some(held)),
                        None => (None, None),
                    };
                    match read {
                        Some(buf) => {
                            chunks::write_chunk(stream, &buf.data).await?;
                            self.metrics.served_bytes.inc_by(buf.data.len() as u64);
                            Ok(())
                        }
                        None => chunks::write_not_found(stream).await,
                    }
                };
                within_reply_timeout(reply).await?;
            }
            within_reply_timeout(stream.flush()).await?;
        }
        stream.close().await?;
        Ok(())
    }
}

/// A write to a requester, bounded: one that does not take it within the reply timeout has
/// stopped reading.
async fn within_reply_timeout(
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::time::timeout(chunks::REPLY_TIMEOUT, write)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the requester stopped reading",
            )
        })?
}

/// Peers choose which chunks they ask for: the warnings they can trigger are rate-limited.
static SERVE_LOG: crate::log_limit::KeyedLogLimit =
    crate::log_limit::KeyedLogLimit::new(std::time::Duration::from_secs(10));

/// Reads a chunk into `buf` (not verified again: it was verified when stored, and the requester
/// verifies it). `None` when absent or unreadable.
fn read_chunk(store: &Store, hash: &crate::record::Hash, mut buf: Buf) -> Option<Buf> {
    match store.read_chunk_unverified(hash, &mut buf.data) {
        Ok(true) if !buf.data.is_empty() && buf.data.len() <= chunks::MAX_CHUNK_LEN => Some(buf),
        Ok(true) => {
            if let Some(suppressed) = SERVE_LOG.check("impossible-size") {
                tracing::warn!(chunk = %hash, len = buf.data.len(), suppressed, "not serving a chunk file of an impossible size");
            }
            None
        }
        Ok(false) => None,
        Err(error) => {
            if let Some(suppressed) = SERVE_LOG.check("unreadable") {
                tracing::warn!(chunk = %hash, %error, suppressed, "cannot read a chunk to serve it");
            }
            None
        }
    }
}

/// Answers a proof of possession (`fetch::Request::Prove`) from the chunks stored here, each
/// read and verified: `not_found` unless the whole content is here and every chunk named reads
/// back intact.
fn prove(
    store: &Store,
    cid: &crate::record::ContentId,
    nonce: &crate::record::Hash,
    indices: &[u64],
    me: &[u8],
) -> Result<fetch::Response, StoreError> {
    if indices.is_empty() || indices.len() > fetch::MAX_PROOF_CHUNKS {
        return Ok(fetch::Response::Error {
            message: format!("a proof covers 1 to {} chunks", fetch::MAX_PROOF_CHUNKS),
        });
    }
    if !store.content_complete(cid)? {
        return Ok(fetch::Response::NotFound);
    }
    let Some(list) = store.chunk_list(cid)? else {
        return Ok(fetch::Response::NotFound);
    };
    let mut chunks = Vec::with_capacity(indices.len());
    for &i in indices {
        let Some(hash) = usize::try_from(i).ok().and_then(|i| list.get(i)) else {
            return Ok(fetch::Response::Error {
                message: format!(
                    "chunk {i} is beyond the {} chunks of the content",
                    list.len()
                ),
            });
        };
        match store.read_chunk(hash)? {
            Some(bytes) => chunks.push(bytes),
            None => return Ok(fetch::Response::NotFound),
        }
    }
    Ok(fetch::Response::Proof {
        hash: fetch::proof_of(nonce, me, chunks.iter().map(Vec::as_slice)),
    })
}

/// Answers a fetch request from the store; `network` is this node's network id, if known,
/// `settings` the network's settings (encoded, signed by the owner), if known, and `me` this
/// node's peer id (a proof of possession is bound to it).
pub(crate) fn fetch(
    store: &Store,
    network: Option<String>,
    settings: Option<Vec<u8>>,
    keeps: bool,
    me: PeerId,
    request: fetch::Request,
) -> fetch::Response {
    let result: Result<fetch::Response, StoreError> = (|| match request {
        fetch::Request::Network => Ok(match network {
            Some(id) => fetch::Response::Network {
                id,
                settings: settings.map(serde_bytes::ByteBuf::from),
            },
            None => fetch::Response::NotFound,
        }),
        fetch::Request::Has { cid } => {
            let complete = store.content_complete(&cid)?;
            Ok(fetch::Response::Has {
                complete,
                // Keeping is said of a copy held: never without one.
                keeps: Some(keeps && complete),
            })
        }
        fetch::Request::Time => Ok(fetch::Response::Time {
            ms: store.time().wall().now_ms(),
        }),
        fetch::Request::Prove { cid, nonce, chunks } => {
            prove(store, &cid, &nonce, &chunks, &me.to_bytes())
        }
        fetch::Request::Record { key } => {
            validate_key(&key)?;
            Ok(match store.record(&key)? {
                Some(record) => fetch::Response::Record { record },
                None => fetch::Response::NotFound,
            })
        }
        fetch::Request::Manifest { cid, offset } => Ok(match store.chunk_list(&cid)? {
            // A page is never empty, except the one page of an empty file.
            Some(chunks) if offset < chunks.len() as u64 || (offset == 0 && chunks.is_empty()) => {
                let start = offset as usize;
                let end = (start + fetch::MANIFEST_PAGE).min(chunks.len());
                fetch::Response::Manifest {
                    total: chunks.len() as u64,
                    offset,
                    chunks: chunks[start..end].to_vec(),
                }
            }
            Some(_) => fetch::Response::Error {
                message: "offset beyond the end of the chunk list".into(),
            },
            None => fetch::Response::NotFound,
        }),
    })();
    result.unwrap_or_else(|e| fetch::Response::Error {
        message: e.to_string(),
    })
}
