//! One transfer: the chunk list (from the store, a peer, or the peers content routing finds),
//! the peers that may serve it, and the workers that fetch its chunks, one per usable peer.

use super::*;

#[derive(Debug, Default)]
pub(super) struct PeerState {
    pub(super) failures: u32,
    /// Out of this transfer for now (too many failures); back in if it reconnects.
    pub(super) dropped: bool,
    /// Out of this transfer for good: it sent bytes that do not match their hash, or spoke
    /// the protocol wrong.
    pub(super) bad: bool,
    /// Not connected at the last look.
    pub(super) absent: bool,
    /// Chunks it answered "not found" for since the last look.
    pub(super) lacking: HashSet<Hash>,
}

/// The expected length of each chunk of a file: every chunk is full but the last (a hash, which
/// names bytes, has one length; content whose list says otherwise fails its transfer).
#[derive(Clone, Copy)]
pub(super) struct Lengths {
    pub(super) last: Option<Hash>,
    pub(super) last_len: usize,
}

impl Lengths {
    pub(super) fn of(list: &[Hash], size: u64) -> Lengths {
        Lengths {
            last: list.last().copied(),
            last_len: chunk_len(size, list.len().saturating_sub(1) as u64),
        }
    }

    pub(super) fn expected(&self, hash: &Hash) -> usize {
        if self.last.as_ref() == Some(hash) {
            self.last_len
        } else {
            CHUNK_SIZE
        }
    }
}

/// Lines about files fetched (info): at most 30 a minute, the next saying how many were left
/// out (a writer that puts many small files must not flood the logs of every node).
pub(super) static FETCHED_LOG: crate::log_limit::BurstLogLimit =
    crate::log_limit::BurstLogLimit::new(30, Duration::from_secs(60));

/// Counts a running transfer in the metrics while it lives.
pub(super) struct InFlight(Arc<crate::metrics::Metrics>);

impl InFlight {
    pub(super) fn new(metrics: &Arc<crate::metrics::Metrics>) -> InFlight {
        metrics.transfers_in_flight.inc();
        InFlight(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.transfers_in_flight.dec();
    }
}

/// What the workers of one transfer share.
pub(super) struct Shared {
    pub(super) inner: Arc<Inner>,
    pub(super) key: String,
    pub(super) queue: Mutex<VecDeque<Hash>>,
    pub(super) lengths: Lengths,
    pub(super) written: AtomicU64,
    /// Bytes of the chunks written.
    pub(super) bytes: AtomicU64,
    /// The peers whose chunks were written.
    pub(super) sources: Mutex<HashSet<PeerId>>,
    pub(super) progress: Arc<watch::Sender<Progress>>,
}

impl Shared {
    /// Takes up to `n` queued chunks that the worker's peer is not known to lack.
    pub(super) fn take(&self, n: usize, lacking: &HashSet<Hash>) -> Vec<Hash> {
        let mut queue = self.queue.lock().expect("queue lock");
        let mut out = Vec::new();
        let mut i = 0;
        while i < queue.len() && out.len() < n {
            if lacking.contains(&queue[i]) {
                i += 1;
            } else {
                out.push(queue.remove(i).expect("index in range"));
            }
        }
        out
    }

    pub(super) fn requeue(&self, hashes: impl IntoIterator<Item = Hash>) {
        let mut queue = self.queue.lock().expect("queue lock");
        for h in hashes {
            queue.push_front(h);
        }
    }

    pub(super) fn has_work_for(&self, lacking: &HashSet<Hash>) -> bool {
        let queue = self.queue.lock().expect("queue lock");
        queue.iter().any(|h| !lacking.contains(h))
    }
}

/// How a worker ended.
pub(super) struct WorkerEnd {
    pub(super) peer: PeerId,
    /// Chunks it wrote.
    pub(super) wrote: u64,
    pub(super) lacking: HashSet<Hash>,
    pub(super) result: Result<(), WorkerError>,
}

pub(super) enum WorkerError {
    /// The peer failed; the transfer goes on with the others.
    Peer(PeerError),
    /// The transfer cannot go on (the content is unusable, the disk fails).
    Fatal(TransferError),
}

impl From<PeerError> for WorkerError {
    fn from(e: PeerError) -> Self {
        WorkerError::Peer(e)
    }
}

/// What writing one received chunk gave.
pub(super) enum Written {
    Ok,
    BadChunk(Hash),
    Fatal(TransferError),
}

pub(super) struct Transfer {
    pub(super) inner: Arc<Inner>,
    pub(super) record: Record,
    pub(super) cid: ContentId,
    pub(super) progress: Arc<watch::Sender<Progress>>,
    /// Signalled when a get waits for this transfer: it then needs no slot.
    pub(super) skip_queue: Arc<Notify>,
    pub(super) meter: Arc<Meter>,
    pub(super) peers: HashMap<PeerId, PeerState>,
    pub(super) order: Vec<PeerId>,
    /// Started for a get that waits: its lookups take no author's share.
    pub(super) urgent: bool,
}

impl Transfer {
    pub(super) fn new(
        inner: Arc<Inner>,
        record: Record,
        progress: Arc<watch::Sender<Progress>>,
        skip_queue: Arc<Notify>,
        meter: Arc<Meter>,
        urgent: bool,
    ) -> Self {
        let cid = record.cid.expect("transfers are for live records");
        Transfer {
            inner,
            record,
            cid,
            progress,
            skip_queue,
            meter,
            peers: HashMap::new(),
            order: Vec::new(),
            urgent,
        }
    }

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, TransferError> {
        let store = self.inner.store.clone();
        Ok(self.inner.tasks.blocking(move || f(&store)).await?)
    }

    /// Adds the connected dfs peers (hinted ones first) to the transfer.
    pub(super) async fn refresh_peers(&mut self) -> Result<(), TransferError> {
        let hints = self
            .inner
            .hints
            .lock()
            .expect("hints lock")
            .get(&self.cid)
            .cloned()
            .unwrap_or_default();
        let connected: HashSet<PeerId> = self
            .inner
            .network
            .peers()
            .await?
            .into_iter()
            .map(|p| p.peer_id)
            .collect();
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
        let mut seen = HashSet::new();
        order.retain(|p| seen.insert(*p));
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

    pub(super) fn usable(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|s| !s.dropped && !s.bad && !s.absent)
    }

    /// Counts a failure; a peer that lied or does not speak the protocol is out for good, one
    /// that fails repeatedly is out until it reconnects.
    pub(super) fn fail(&mut self, peer: PeerId, error: &PeerError) {
        let s = self.peers.entry(peer).or_default();
        s.failures += 1;
        if error.is_misbehaviour() {
            if !s.bad {
                if error.is_lie() {
                    if let Some(suppressed) = LIAR_LOG.check() {
                        tracing::warn!(%peer, key = %self.record.key, %error, suppressed, "peer out of this transfer");
                    }
                } else {
                    tracing::debug!(%peer, key = %self.record.key, %error, "peer out of this transfer");
                }
            }
            s.bad = true;
        } else if s.failures >= MAX_PEER_FAILURES {
            if !s.dropped {
                tracing::debug!(%peer, %error, "peer out of this transfer until it reconnects");
            }
            s.dropped = true;
        }
    }

    /// Gets the chunk list from the store, or else from a peer, checked against the content id.
    pub(super) async fn chunk_list(&mut self) -> Result<Vec<Hash>, TransferError> {
        let cid = self.cid;
        if let Some(list) = self.blocking(move |s| s.chunk_list(&cid)).await?? {
            return Ok(list);
        }
        let size = self.record.size;
        let list = if chunk_list_matches(&cid, size, &[]) {
            Vec::new()
        } else {
            // The peers that told us about the record may still be fetching it themselves:
            // look again a few times. Each look holds a lookup permit, not the wait between.
            let mut found = None;
            'look: for attempt in 0..=MAX_STALLS {
                if attempt == 1 {
                    // No connected peer has it: connect to those that should.
                    self.route().await;
                }
                if attempt > 0 {
                    tokio::time::sleep(STALL_PAUSE).await;
                    self.refresh_peers().await?;
                }
                let _author = match self.urgent {
                    true => None,
                    false => Some(
                        self.inner
                            .lookups_of(&self.record.author)
                            .acquire_owned()
                            .await,
                    ),
                };
                let _permit = self.inner.lookups.clone().acquire_owned().await;
                for peer in self.order.clone() {
                    if !self.usable(&peer) {
                        continue;
                    }
                    let page = tokio::time::timeout(LOOKUP_TIMEOUT, self.manifest_from(peer));
                    match page
                        .await
                        .unwrap_or(Err(PeerError::Timeout(LOOKUP_TIMEOUT)))
                    {
                        Ok(list) => {
                            found = Some(list);
                            break 'look;
                        }
                        // Not having it (yet) is no fault.
                        Err(PeerError::NotFound) => {}
                        Err(e) => self.fail(peer, &e),
                    }
                }
            }
            found.ok_or(TransferError::NoChunkList)?
        };
        let l = list.clone();
        if !self
            .blocking(move |s| s.set_chunk_list(&cid, size, &l))
            .await??
        {
            return Err(TransferError::Superseded);
        }
        Ok(list)
    }

    /// Content routing, for content no connected peer has: connects to the members placed to
    /// hold it (under partial replication) and to the providers Kademlia knows for it, and hints
    /// them first. Bounded by the network's connect and lookup deadlines.
    pub(super) async fn route(&self) {
        use futures::StreamExt;
        let network = &self.inner.network;
        let connected: HashSet<PeerId> = match network.peers().await {
            Ok(peers) => peers.into_iter().map(|p| p.peer_id).collect(),
            Err(_) => return,
        };
        let me = self.inner.policy.me();
        let mut targets: Vec<PeerId> = Vec::new();
        if self.inner.policy.replicas() != crate::placement::Replicas::All {
            targets.extend(self.inner.policy.placed(&self.cid));
        }
        match network.providers(self.cid).await {
            Ok(found) => targets.extend(found),
            Err(e) => tracing::debug!(cid = %self.cid, error = %e, "no providers from Kademlia"),
        }
        let mut seen = HashSet::new();
        targets.retain(|p| *p != me && seen.insert(*p));
        {
            let mut hints = self.inner.hints.lock().expect("hints lock");
            if hints.len() >= MAX_HINTS && !hints.contains_key(&self.cid) {
                hints.clear();
            }
            let list = hints.entry(self.cid).or_default();
            for p in targets.iter().rev() {
                list.retain(|q| q != p);
                list.insert(0, *p);
            }
            list.truncate(8);
        }
        let dials = targets
            .into_iter()
            .filter(|p| !connected.contains(p))
            .take(MAX_ROUTED_DIALS)
            .map(|p| async move {
                if let Err(e) = network.connect_peer(p).await {
                    tracing::debug!(peer = %p, error = %e, "cannot reach a holder");
                }
            });
        futures::stream::iter(dials)
            .buffer_unordered(MAX_ROUTED_DIALS)
            .collect::<Vec<()>>()
            .await;
    }

    pub(super) async fn manifest_from(&self, peer: PeerId) -> Result<Vec<Hash>, PeerError> {
        let total = chunk_count(self.record.size);
        let mut list = Vec::new();
        while (list.len() as u64) < total {
            let offset = list.len() as u64;
            let request = fetch::Request::Manifest {
                cid: self.cid,
                offset,
            };
            match self.inner.network.fetch(peer, request).await? {
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
                fetch::Response::NotFound => return Err(PeerError::NotFound),
                fetch::Response::Error { message } => return Err(PeerError::Refused(message)),
                _ => return Err(PeerError::Protocol("bad chunk list page")),
            }
        }
        if !chunk_list_matches(&self.cid, self.record.size, &list) {
            return Err(PeerError::Protocol(
                "chunk list does not match the content id",
            ));
        }
        Ok(list)
    }

    pub(super) async fn run(mut self) -> Result<(), TransferError> {
        let started = tokio::time::Instant::now();
        self.refresh_peers().await?;
        // A large list waits for room in the large-list budget, held while the list is in use.
        let count = chunk_count(self.record.size);
        let _large = if count > LARGE_LIST {
            let permits = count.min(LARGE_LIST_BUDGET) as u32;
            let budget = self.inner.large_lists.clone();
            Some(
                budget
                    .acquire_many_owned(permits)
                    .await
                    .map_err(|_| TransferError::Stopped)?,
            )
        } else {
            None
        };
        let list = self.chunk_list().await?;
        // Moving chunks takes a slot (bandwidth, buffers); finding the chunk list did not. A
        // get that waits needs no slot: gets are few and bounded by the API's own limit.
        let skip_queue = self.skip_queue.clone();
        self.meter.set_phase(Phase::Queued);
        let _slot = tokio::select! {
            slot = self.inner.slots.clone().acquire_owned() => slot.ok(),
            _ = skip_queue.notified() => None,
        };
        let lengths = Lengths::of(&list, self.record.size);
        let (distinct, missing) = self
            .blocking(move |store| {
                let mut seen = HashSet::new();
                let missing = list
                    .into_iter()
                    .filter(|h| seen.insert(*h) && !store.has_chunk(h))
                    .collect::<VecDeque<Hash>>();
                (seen.len() as u64, missing)
            })
            .await?;
        self.meter.chunks_total.store(distinct, Ordering::Relaxed);
        self.meter
            .present
            .store(distinct - missing.len() as u64, Ordering::Relaxed);
        self.meter.set_phase(Phase::Fetching);
        let (bytes, sources) = self.fetch_chunks(missing, lengths).await?;
        let cid = self.cid;
        if self.blocking(move |s| s.mark_complete(&cid)).await?? {
            if self.inner.policy.replicas() != crate::placement::Replicas::All {
                // Readers elsewhere find this copy through Kademlia.
                let _ = self.inner.network.provide(vec![cid]).await;
            }
            if sources > 0 {
                if let Some(suppressed) = FETCHED_LOG.check() {
                    let elapsed = started.elapsed();
                    tracing::info!(
                        key = %self.record.key,
                        bytes,
                        peers = sources,
                        ms = elapsed.as_millis() as u64,
                        suppressed,
                        "fetched a file from {sources} peer(s): {bytes} bytes in {elapsed:.2?}"
                    );
                }
            }
            Ok(())
        } else {
            Err(TransferError::Incomplete)
        }
    }

    /// True while some live record still references this content.
    pub(super) async fn still_wanted(&self) -> Result<bool, TransferError> {
        let cid = self.cid;
        Ok(self.blocking(move |s| s.is_referenced(&cid)).await??)
    }

    /// Fetches the chunks of `queue`; returns the bytes written and the number of peers that
    /// sent them.
    pub(super) async fn fetch_chunks(
        &mut self,
        queue: VecDeque<Hash>,
        lengths: Lengths,
    ) -> Result<(u64, usize), TransferError> {
        let shared = Arc::new(Shared {
            inner: self.inner.clone(),
            key: self.record.key.clone(),
            queue: Mutex::new(queue),
            lengths,
            written: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            sources: Mutex::new(HashSet::new()),
            progress: self.progress.clone(),
        });
        let done = |shared: &Shared| {
            (
                shared.bytes.load(Ordering::Relaxed),
                shared.sources.lock().expect("sources lock").len(),
            )
        };
        let mut workers: FuturesUnordered<BoxFuture<'static, WorkerEnd>> = FuturesUnordered::new();
        let mut running: HashSet<PeerId> = HashSet::new();
        let mut stalls = 0u32;
        let mut refresh = tokio::time::interval(PEER_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            for peer in self.order.clone() {
                if running.contains(&peer) || !self.usable(&peer) {
                    continue;
                }
                // No more workers than the queue can feed (a one-chunk file needs one).
                let queued = shared.queue.lock().expect("queue lock").len();
                if queued <= running.len() * self.inner.per_peer / 2 {
                    break;
                }
                let lacking = self.peers[&peer].lacking.clone();
                if shared.has_work_for(&lacking) {
                    running.insert(peer);
                    workers.push(worker(shared.clone(), peer, lacking).boxed());
                }
            }
            if workers.is_empty() {
                if shared.queue.lock().expect("queue lock").is_empty() {
                    return Ok(done(&shared));
                }
                stalls += 1;
                if stalls > MAX_STALLS {
                    let first = shared.queue.lock().expect("queue lock")[0];
                    return Err(TransferError::NoSource(first));
                }
                tokio::time::sleep(STALL_PAUSE).await;
                self.refresh_peers().await?;
                continue;
            }
            tokio::select! {
                Some(end) = workers.next() => {
                    running.remove(&end.peer);
                    if let Some(s) = self.peers.get_mut(&end.peer) {
                        s.lacking.extend(end.lacking);
                    }
                    // Only progress resets the stall count: peers that answer "not found" to
                    // everything must not keep a transfer alive forever.
                    if end.wrote > 0 {
                        stalls = 0;
                    }
                    match end.result {
                        Ok(()) => {}
                        Err(WorkerError::Peer(e)) => self.fail(end.peer, &e),
                        Err(WorkerError::Fatal(e)) => return Err(e),
                    }
                }
                _ = refresh.tick() => {
                    if !self.still_wanted().await? {
                        return Err(TransferError::Superseded);
                    }
                    self.refresh_peers().await?;
                }
            }
        }
    }
}
