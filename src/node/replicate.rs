//! Background replication: fetching the content of records from the peers that have it.
//!
//! A transfer gets the chunk list (checked against the content id), then keeps several chunk
//! requests in flight per peer and across peers. Every chunk is verified against its hash before
//! it is written; a peer that sends a bad chunk is dropped from the transfer and the chunk is
//! fetched elsewhere. Chunks already on disk are never fetched again, so an interrupted transfer
//! resumes where it stopped. Callers of `get` join a running transfer and stream chunks as they
//! are verified.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use libp2p::PeerId;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use super::{blocking, Error, Network};
use crate::protocols::fetch;
use crate::record::{chunk_count, chunk_len, chunk_list_matches, ContentId, Hash, Record};
use crate::store::{Store, StoreError};

/// Failed requests after which a peer is dropped from a transfer.
const MAX_PEER_FAILURES: u32 = 3;
/// Verified chunks waiting to be written, at most, per transfer (each holds 1 MiB).
const MAX_PENDING_WRITES: usize = 16;
/// Times a transfer looks again for peers when none can serve what is missing.
const MAX_STALLS: u32 = 10;
/// Pause between two such looks.
const STALL_PAUSE: Duration = Duration::from_millis(500);
/// Chunks held in memory at once by all transfers together (requested, received or waiting
/// to be written): bounds the memory of replication at about this many MiB.
const CHUNK_BUDGET: usize = 32;
/// What a peer without the content answers.
const NOT_THERE: &str = "peer does not have it";
/// How often a running transfer looks for newly connected peers to fetch from.
const PEER_REFRESH: Duration = Duration::from_secs(1);
/// Most peer hints remembered.
const MAX_HINTS: usize = 4096;

/// The state of a transfer, as seen by those waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Running; `chunks` is the number of chunks written so far (changes on each).
    Running {
        chunks: u64,
    },
    Complete,
    Failed(String),
}

/// A running or queued transfer, as callers see it.
type Running = (watch::Receiver<Progress>, Arc<Notify>);

#[derive(Clone)]
pub(crate) struct Replicator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    network: Network,
    per_peer: usize,
    slots: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    /// Running or queued transfers: their progress, and a signal that lets a queued one start
    /// without a slot because somebody is waiting for it (a get).
    transfers: Mutex<HashMap<ContentId, Running>>,
    hints: Mutex<HashMap<ContentId, Vec<PeerId>>>,
    resuming: AtomicBool,
    stopped: AtomicBool,
    /// Chunks received from peers and written, over the node's life.
    chunks_fetched: AtomicU64,
}

impl Replicator {
    pub(crate) fn new(
        store: Store,
        network: Network,
        per_peer: usize,
        max_transfers: usize,
    ) -> Replicator {
        Replicator {
            inner: Arc::new(Inner {
                store,
                network,
                per_peer: per_peer.max(1),
                slots: Arc::new(Semaphore::new(max_transfers.max(1))),
                budget: Arc::new(Semaphore::new(CHUNK_BUDGET)),
                transfers: Mutex::new(HashMap::new()),
                hints: Mutex::new(HashMap::new()),
                resuming: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                chunks_fetched: AtomicU64::new(0),
            }),
        }
    }

    /// Remembers that `peer` probably has the content `cid`.
    pub(crate) fn hint(&self, cid: Option<ContentId>, peer: PeerId) {
        let Some(cid) = cid else { return };
        let mut hints = self.inner.hints.lock().expect("hints lock");
        if hints.len() >= MAX_HINTS && !hints.contains_key(&cid) {
            hints.clear();
        }
        let list = hints.entry(cid).or_default();
        if !list.contains(&peer) {
            list.insert(0, peer);
            list.truncate(8);
        }
    }

    /// Fetches the content of `record` in the background (no-op if already running).
    pub(crate) fn enqueue(&self, record: Record, hint: Vec<PeerId>) {
        for peer in hint.into_iter().rev() {
            self.hint(record.cid, peer);
        }
        let _ = self.ensure(&record, false);
    }

    /// Starts (or joins) the transfer of the content of `record`; the receiver follows it.
    /// `urgent` (a get is waiting) lets it start at once instead of queueing for a slot behind
    /// background replication.
    pub(crate) fn ensure(
        &self,
        record: &Record,
        urgent: bool,
    ) -> Option<watch::Receiver<Progress>> {
        let cid = record.cid?;
        if self.inner.stopped.load(Ordering::Relaxed) {
            return None;
        }
        let mut transfers = self.inner.transfers.lock().expect("transfers lock");
        if let Some((rx, skip_queue)) = transfers.get(&cid) {
            if urgent {
                skip_queue.notify_one();
            }
            return Some(rx.clone());
        }
        let (tx, rx) = watch::channel(Progress::Running { chunks: 0 });
        let skip_queue = Arc::new(Notify::new());
        if urgent {
            skip_queue.notify_one();
        }
        transfers.insert(cid, (rx.clone(), skip_queue.clone()));
        drop(transfers);
        let inner = self.inner.clone();
        let record = record.clone();
        tokio::spawn(async move {
            // A slot, or no slot at all when a get is waiting: gets are few and bounded by the
            // API's own limit, background transfers are many.
            let slot = tokio::select! {
                slot = inner.slots.clone().acquire_owned() => slot.map(Some),
                _ = skip_queue.notified() => Ok(None),
            };
            let outcome = match slot {
                Ok(_permit) => {
                    let run = Transfer::new(inner.clone(), record.clone(), &tx).run();
                    std::panic::AssertUnwindSafe(run)
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| Err("the transfer task panicked".to_string()))
                }
                Err(_) => Err("replicator stopped".to_string()),
            };
            let state = match outcome {
                Ok(()) => {
                    tracing::debug!(key = %record.key, cid = %cid, "content replicated");
                    Progress::Complete
                }
                Err(reason) => {
                    tracing::debug!(key = %record.key, cid = %cid, %reason, "transfer failed; will retry later");
                    Progress::Failed(reason)
                }
            };
            inner.transfers.lock().expect("transfers lock").remove(&cid);
            let _ = tx.send(state);
        });
        Some(rx)
    }

    /// Looks for records whose content is incomplete and fetches it (after a restart, a failed
    /// transfer, or when a new peer arrives).
    pub(crate) fn resume(&self) {
        if self.inner.stopped.load(Ordering::Relaxed)
            || self.inner.resuming.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let store = this.inner.store.clone();
            match blocking(move || store.incomplete()).await {
                Ok(Ok(records)) => {
                    for record in records {
                        let _ = this.ensure(&record, false);
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot list incomplete content"),
                Err(e) => tracing::warn!(error = %e, "resume task failed"),
            }
            this.inner.resuming.store(false, Ordering::Release);
        });
    }

    /// A new peer that speaks dfs is connected: content missing so far may be there.
    pub(crate) fn peer_available(&self) {
        self.resume();
    }

    /// Chunks fetched from peers and written since the node started.
    pub(crate) fn chunks_fetched(&self) -> u64 {
        self.inner.chunks_fetched.load(Ordering::Relaxed)
    }

    pub(crate) fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        self.inner.slots.close();
    }
}

#[derive(Debug, Default)]
struct PeerState {
    in_flight: usize,
    failures: u32,
    /// Out of this transfer for now (too many failures); back in if it reconnects.
    dropped: bool,
    /// Out of this transfer for good: it sent bytes that do not match their hash, or spoke
    /// the protocol wrong.
    bad: bool,
    /// Not connected at the last look.
    absent: bool,
    lacking: HashSet<Hash>,
}

enum Step {
    Fetched {
        peer: PeerId,
        hash: Hash,
        result: Result<fetch::Response, Error>,
        permit: OwnedSemaphorePermit,
    },
    Written {
        peer: PeerId,
        hash: Hash,
        result: Result<(), StoreError>,
    },
}

struct Transfer<'a> {
    inner: Arc<Inner>,
    record: Record,
    cid: ContentId,
    progress: &'a watch::Sender<Progress>,
    peers: HashMap<PeerId, PeerState>,
    order: Vec<PeerId>,
}

impl<'a> Transfer<'a> {
    fn new(inner: Arc<Inner>, record: Record, progress: &'a watch::Sender<Progress>) -> Self {
        let cid = record.cid.expect("transfers are for live records");
        Transfer {
            inner,
            record,
            cid,
            progress,
            peers: HashMap::new(),
            order: Vec::new(),
        }
    }

    /// Adds the connected peers (hinted ones first) to the transfer.
    async fn refresh_peers(&mut self) -> Result<(), String> {
        let hints = self
            .inner
            .hints
            .lock()
            .expect("hints lock")
            .get(&self.cid)
            .cloned()
            .unwrap_or_default();
        let connected = self
            .inner
            .network
            .peers()
            .await
            .map_err(|e| e.to_string())?;
        let connected: HashSet<PeerId> = connected.into_iter().map(|p| p.peer_id).collect();
        let author = self.record.author_peer();
        let mut order: Vec<PeerId> = hints
            .into_iter()
            .chain(author)
            .filter(|p| connected.contains(p))
            .collect();
        let mut rest: Vec<PeerId> = connected
            .into_iter()
            .filter(|p| !order.contains(p))
            .collect();
        rest.sort();
        order.append(&mut rest);
        order.dedup();
        for (p, state) in self.peers.iter_mut() {
            if !order.contains(p) {
                state.absent = true;
            }
        }
        for p in &order {
            let state = self.peers.entry(*p).or_default();
            // What a peer lacked a while ago it may have fetched since.
            state.lacking.clear();
            if state.absent {
                // It went away and came back: its old failures were the disconnection's.
                state.absent = false;
                state.failures = 0;
                state.dropped = false;
            }
        }
        self.order = order;
        Ok(())
    }

    fn usable(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|s| !s.dropped && !s.bad)
    }

    /// Counts a failed request; a peer that does not speak the protocol (or speaks it wrong)
    /// is out for good, one that fails repeatedly is out until it reconnects.
    fn fail(&mut self, peer: PeerId, reason: &str) {
        let s = self.peers.entry(peer).or_default();
        s.failures += 1;
        if reason.contains("protocol") {
            if !s.bad {
                tracing::debug!(%peer, %reason, "peer out of this transfer");
            }
            s.bad = true;
        } else if s.failures >= MAX_PEER_FAILURES {
            if !s.dropped {
                tracing::debug!(%peer, %reason, "peer out of this transfer until it reconnects");
            }
            s.dropped = true;
        }
    }

    /// Gets the chunk list from the store, or else from a peer, checked against the content id.
    async fn chunk_list(&mut self) -> Result<Vec<Hash>, String> {
        let store = self.inner.store.clone();
        let cid = self.cid;
        if let Some(list) = blocking(move || store.chunk_list(&cid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
        {
            return Ok(list);
        }
        let size = self.record.size;
        let list = if chunk_list_matches(&cid, size, &[]) {
            Vec::new()
        } else {
            // The peers that told us about the record may still be fetching it themselves:
            // look again a few times before giving the slot back.
            let mut found = None;
            for attempt in 0..=MAX_STALLS {
                if attempt > 0 {
                    tokio::time::sleep(STALL_PAUSE).await;
                    self.refresh_peers().await?;
                }
                for peer in self.order.clone() {
                    if !self.usable(&peer) {
                        continue;
                    }
                    match self.manifest_from(peer).await {
                        Ok(list) => {
                            found = Some(list);
                            break;
                        }
                        // Not having it (yet) is no fault.
                        Err(reason) if reason == NOT_THERE => {}
                        Err(reason) => self.fail(peer, &reason),
                    }
                }
                if found.is_some() {
                    break;
                }
            }
            found.ok_or_else(|| "no peer has the chunk list".to_string())?
        };
        let store = self.inner.store.clone();
        let l = list.clone();
        let kept = blocking(move || store.set_chunk_list(&cid, size, &l))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if !kept {
            return Err("the record was superseded".into());
        }
        Ok(list)
    }

    async fn manifest_from(&self, peer: PeerId) -> Result<Vec<Hash>, String> {
        let total = chunk_count(self.record.size);
        let mut list = Vec::new();
        while (list.len() as u64) < total {
            let offset = list.len() as u64;
            let response = self
                .inner
                .network
                .fetch(
                    peer,
                    fetch::Request::Manifest {
                        cid: self.cid,
                        offset,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            match response {
                fetch::Response::Manifest {
                    total: t,
                    offset: o,
                    chunks,
                } if t == total
                    && o == offset
                    && !chunks.is_empty()
                    && chunks.len() <= fetch::MANIFEST_PAGE
                    && offset + chunks.len() as u64 <= total =>
                {
                    list.extend(chunks)
                }
                fetch::Response::NotFound => return Err(NOT_THERE.into()),
                _ => return Err("protocol: bad chunk list page".into()),
            }
        }
        if !chunk_list_matches(&self.cid, self.record.size, &list) {
            tracing::warn!(%peer, cid = %self.cid, "peer sent a chunk list that does not match the content id");
            return Err("protocol: chunk list does not match the content id".into());
        }
        Ok(list)
    }

    async fn run(mut self) -> Result<(), String> {
        self.refresh_peers().await?;
        let list = self.chunk_list().await?;
        let store = self.inner.store.clone();
        let size = self.record.size;
        let (missing, lengths) = blocking(move || {
            let mut lengths = HashMap::new();
            for (i, h) in list.iter().enumerate() {
                lengths.entry(*h).or_insert(chunk_len(size, i as u64));
            }
            let mut seen = HashSet::new();
            let missing: VecDeque<Hash> = list
                .into_iter()
                .filter(|h| seen.insert(*h) && !store.has_chunk(h))
                .collect();
            (missing, lengths)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.fetch_chunks(missing, lengths).await?;
        let store = self.inner.store.clone();
        let cid = self.cid;
        let complete = blocking(move || store.mark_complete(&cid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if complete {
            Ok(())
        } else {
            Err("content incomplete after transfer".into())
        }
    }

    /// Chooses the peer for a chunk: usable, not known to lack it, least loaded.
    fn pick(&self, hash: &Hash) -> Pick {
        let mut eligible = false;
        let mut best: Option<(usize, PeerId)> = None;
        for p in &self.order {
            let Some(s) = self.peers.get(p) else { continue };
            if s.dropped || s.bad || s.lacking.contains(hash) {
                continue;
            }
            eligible = true;
            if s.in_flight < self.inner.per_peer && best.is_none_or(|(n, _)| s.in_flight < n) {
                best = Some((s.in_flight, *p));
            }
        }
        match (best, eligible) {
            (Some((_, p)), _) => Pick::Peer(p),
            (None, true) => Pick::Busy,
            (None, false) => Pick::Nobody,
        }
    }

    /// True while some live record still references this content.
    async fn still_wanted(&self) -> Result<bool, String> {
        let store = self.inner.store.clone();
        let cid = self.cid;
        Ok(blocking(move || store.chunk_list(&cid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .is_some())
    }

    async fn fetch_chunks(
        &mut self,
        mut queue: VecDeque<Hash>,
        lengths: HashMap<Hash, usize>,
    ) -> Result<(), String> {
        let mut steps: FuturesUnordered<BoxFuture<'static, Step>> = FuturesUnordered::new();
        let mut pending_writes = 0usize;
        let mut written = 0u64;
        let mut stalls = 0u32;
        let mut refreshed = tokio::time::Instant::now();
        let mut spare: Option<OwnedSemaphorePermit> = None;
        loop {
            if refreshed.elapsed() >= PEER_REFRESH {
                refreshed = tokio::time::Instant::now();
                if !self.still_wanted().await? {
                    return Err("the record was superseded or deleted".into());
                }
                self.refresh_peers().await?;
            }
            // Fill the pipeline, within the memory budget shared by all transfers.
            let mut out_of_budget = false;
            let mut i = 0;
            while i < queue.len() && pending_writes < MAX_PENDING_WRITES {
                let hash = queue[i];
                match self.pick(&hash) {
                    Pick::Peer(peer) => {
                        let permit = match spare.take() {
                            Some(p) => p,
                            None => match self.inner.budget.clone().try_acquire_owned() {
                                Ok(p) => p,
                                Err(_) => {
                                    out_of_budget = true;
                                    break;
                                }
                            },
                        };
                        queue.remove(i);
                        self.peers.entry(peer).or_default().in_flight += 1;
                        let network = self.inner.network.clone();
                        steps.push(
                            async move {
                                let result =
                                    network.fetch(peer, fetch::Request::Chunk { hash }).await;
                                Step::Fetched {
                                    peer,
                                    hash,
                                    result,
                                    permit,
                                }
                            }
                            .boxed(),
                        );
                    }
                    Pick::Busy => break,
                    Pick::Nobody => i += 1,
                }
            }
            if steps.is_empty() {
                if queue.is_empty() {
                    return Ok(());
                }
                if out_of_budget {
                    // Other transfers hold the budget: wait for a chunk of theirs to be written.
                    spare = self.inner.budget.clone().acquire_owned().await.ok();
                    continue;
                }
                stalls += 1;
                if stalls > MAX_STALLS {
                    return Err(format!("no peer can serve chunk {}", queue[0]));
                }
                tokio::time::sleep(STALL_PAUSE).await;
                self.refresh_peers().await?;
                continue;
            }
            let Some(step) = steps.next().await else {
                continue;
            };
            match step {
                Step::Fetched {
                    peer,
                    hash,
                    result,
                    permit,
                } => {
                    let s = self.peers.entry(peer).or_default();
                    s.in_flight = s.in_flight.saturating_sub(1);
                    match result {
                        Ok(fetch::Response::Chunk { data })
                            if lengths.get(&hash).is_some_and(|n| *n != data.len())
                                && Hash::of(&data) == hash =>
                        {
                            // Honest bytes, but the content's author described them wrong:
                            // every peer would send the same, so the content is unusable.
                            return Err(format!(
                                "content does not match its size: chunk {hash} has {} bytes",
                                data.len()
                            ));
                        }
                        Ok(fetch::Response::Chunk { data }) => {
                            pending_writes += 1;
                            let store = self.inner.store.clone();
                            steps.push(
                                async move {
                                    let result = blocking(move || store.write_chunk(&hash, &data))
                                        .await
                                        .unwrap_or_else(|e| {
                                            Err(StoreError::Io(std::io::Error::other(
                                                e.to_string(),
                                            )))
                                        });
                                    drop(permit);
                                    Step::Written { peer, hash, result }
                                }
                                .boxed(),
                            );
                        }
                        Ok(fetch::Response::NotFound) => {
                            s.lacking.insert(hash);
                            queue.push_front(hash);
                        }
                        Ok(fetch::Response::Error { message }) => {
                            self.fail(peer, &format!("error answer: {message}"));
                            queue.push_front(hash);
                        }
                        Ok(_) => {
                            self.fail(peer, "protocol: unexpected answer to a chunk request");
                            queue.push_front(hash);
                        }
                        Err(e) => {
                            self.fail(peer, &e.to_string());
                            queue.push_front(hash);
                        }
                    }
                }
                Step::Written { peer, hash, result } => {
                    pending_writes -= 1;
                    match result {
                        Ok(()) => {
                            written += 1;
                            self.inner.chunks_fetched.fetch_add(1, Ordering::Relaxed);
                            stalls = 0;
                            let _ = self.progress.send(Progress::Running { chunks: written });
                        }
                        Err(StoreError::BadChunk(_)) => {
                            tracing::warn!(%peer, chunk = %hash, key = %self.record.key,
                                "peer sent a chunk that does not match its hash; dropping it from this transfer");
                            self.peers.entry(peer).or_default().bad = true;
                            queue.push_front(hash);
                        }
                        Err(e) => return Err(format!("cannot write chunk {hash}: {e}")),
                    }
                }
            }
        }
    }
}

enum Pick {
    Peer(PeerId),
    Busy,
    Nobody,
}
