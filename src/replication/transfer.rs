//! Transfers: fetching the content of records from the peers that have it.
//!
//! A transfer gets the chunk list (from the store, or from a peer over `/dfs/fetch/2`, checked
//! against the content id), then runs one *worker* per usable peer. A worker opens one
//! `/dfs/chunks/1` stream to its peer and keeps up to `chunks_in_flight` chunks requested on it
//! (pipelined request frames; the stream's flow control does the rest), taking the next missing
//! chunks from a queue that all workers of the transfer share, so a fast peer simply takes more.
//! Every chunk is read into a pooled buffer, verified against its hash and expected length, and
//! written durably on a blocking thread while the worker reads the next. A peer that sends a bad
//! chunk is out of the transfer (caught within one chunk) and the chunk goes back to the queue.
//! Chunks already on disk are never fetched again, so an interrupted transfer resumes. Callers of
//! `get` join a running transfer and stream chunks as they are written.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use libp2p::PeerId;
use tokio::sync::{watch, Notify, Semaphore};

use super::buffers::{Buf, Pool};
use super::error::{PeerError, TransferError};
use crate::net::Network;
use crate::protocols::{chunks, fetch};
use crate::record::{
    chunk_count, chunk_len, chunk_list_matches, ContentId, Hash, Record, CHUNK_SIZE,
};
use crate::store::{Store, StoreError};
use crate::tasks::Tasks;

/// Failed attempts after which a peer is dropped from a transfer (until it reconnects).
const MAX_PEER_FAILURES: u32 = 3;
/// Times a transfer looks again for peers when none can serve what is missing.
const MAX_STALLS: u32 = 10;
/// A lying peer can be named in every transfer it joins: one warning per 10 s.
static LIAR_LOG: crate::log_limit::LogLimit =
    crate::log_limit::LogLimit::new(Duration::from_secs(10));
/// "Not found" answers in a row after which a peer is taken to lack the content (its worker
/// ends as a failure): without it, a peer that has none of a million-chunk file would be asked
/// for every chunk, 16 at a time.
const MAX_MISSES: u32 = 64;
/// Pause between two such looks.
const STALL_PAUSE: Duration = Duration::from_millis(500);
/// Chunk buffers held at once by all transfers together (received, being verified or written):
/// bounds the memory of fetching at about this many MiB.
const CHUNK_BUDGET: usize = 32;
/// How often a running transfer looks for newly connected peers and checks it is still wanted.
const PEER_REFRESH: Duration = Duration::from_millis(250);
/// Most peer hints remembered.
const MAX_HINTS: usize = 4096;
/// Chunk-list lookups running at once (each a few small requests). Lookups do not hold a
/// transfer slot, and give their permit back while they wait to look again, so content that
/// nobody serves cannot keep served content waiting.
const MAX_LOOKUPS: usize = 32;
/// Most peers a transfer dials to reach holders it is not connected to (placed members and
/// Kademlia providers).
const MAX_ROUTED_DIALS: usize = 8;
/// Chunk lists longer than this (64 GiB of content) are "large": their transfers share
/// [`LARGE_LIST_BUDGET`], so that records claiming huge files (whose lists a peer may serve
/// without ever serving a chunk) cannot grow memory; smaller ones are bounded by the lookup and
/// transfer limits alone and never wait for a large one.
const LARGE_LIST: u64 = 64 * 1024;
/// Chunk hashes of large lists held in memory at once, over all transfers (32 MiB of hashes,
/// one list of the largest file a record may describe).
const LARGE_LIST_BUDGET: u64 = 1 << 20;
/// How long one peer may take to answer a chunk-list page during a lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause before a background transfer of content that nobody could serve is tried again;
/// it doubles with each failure, up to [`MAX_BACKOFF`]. A get does not wait for it.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// Back-offs end when a member connects, at most once per this period (a peer that reconnects
/// in a loop cannot make every unserved content be tried again each time).
const BACKOFF_CLEAR_EVERY: Duration = Duration::from_secs(5);
/// Most contents remembered in back-off (beyond, the oldest half is forgotten).
const MAX_BACKOFF_ENTRIES: usize = 65_536;

/// Background transfers (tasks) at once, over all authors, and of one author's records: the
/// rest stay in the store, incomplete, and are picked up as these end (a member that pushes
/// 60,000 records whose content it never serves costs their records on disk, not a task each).
const MAX_BACKGROUND: usize = 2048;
const MAX_BACKGROUND_PER_AUTHOR: usize = 256;
/// Chunk-list lookups of one author's records at once (of [`MAX_LOOKUPS`]): records whose
/// lists nobody serves cannot keep other authors' records from being looked up.
const LOOKUPS_PER_AUTHOR: usize = 4;

/// Times a worker opens a new stream when its peer closed one before replying.
const MAX_REOPENS: u32 = 5;
/// Pause before such a reopen (times the attempt number).
const REOPEN_PAUSE: Duration = Duration::from_millis(20);

/// The state of a transfer, as seen by those waiting on it.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Running; `chunks` is the number of chunks written so far (changes on each).
    Running {
        chunks: u64,
    },
    Complete,
    Failed(Arc<TransferError>),
}

/// A running or queued transfer, as callers see it: its progress, a signal that lets a
/// queued one start without a slot because somebody is waiting for it (a get), and its meter.
type Running = (watch::Receiver<Progress>, Arc<Notify>, Arc<Meter>);

/// What a transfer in flight has done so far, as `GET /v1/transfers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The key of the record that started the transfer (other keys may share its content).
    pub key: String,
    pub cid: ContentId,
    /// The content's size in bytes.
    pub size: u64,
    /// Distinct chunks of the content.
    pub chunks_total: u64,
    /// Of those, the chunks stored on this node (before the transfer, or written by it).
    pub chunks_done: u64,
    pub phase: Phase,
}

impl Status {
    /// Bytes stored so far, estimated from the chunks (exact but for the last, shorter chunk).
    pub fn bytes_done(&self) -> u64 {
        if self.chunks_total == 0 {
            return 0;
        }
        let done = self.chunks_done.min(self.chunks_total) as u128;
        (self.size as u128 * done / self.chunks_total as u128) as u64
    }
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Getting the chunk list (from the store or from a peer).
    Lookup,
    /// Waiting for a transfer slot behind other background transfers.
    Queued,
    /// Fetching chunks from peers.
    Fetching,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Lookup => "lookup",
            Phase::Queued => "queued",
            Phase::Fetching => "fetching",
        }
    }
}

/// The counters behind a [`Status`]; chunks written come from the transfer's [`Progress`].
#[derive(Debug)]
struct Meter {
    key: String,
    size: u64,
    chunks_total: AtomicU64,
    /// Chunks already stored when the fetch began.
    present: AtomicU64,
    /// A [`Phase`] as a number (0 lookup, 1 queued, 2 fetching).
    phase: std::sync::atomic::AtomicU8,
}

impl Meter {
    fn set_phase(&self, phase: Phase) {
        let n = match phase {
            Phase::Lookup => 0,
            Phase::Queued => 1,
            Phase::Fetching => 2,
        };
        self.phase.store(n, Ordering::Relaxed);
    }

    fn status(&self, cid: ContentId, progress: &Progress) -> Status {
        let written = match progress {
            Progress::Running { chunks } => *chunks,
            _ => 0,
        };
        let chunks_total = self.chunks_total.load(Ordering::Relaxed);
        Status {
            key: self.key.clone(),
            cid,
            size: self.size,
            chunks_total,
            chunks_done: (self.present.load(Ordering::Relaxed) + written).min(chunks_total),
            phase: match self.phase.load(Ordering::Relaxed) {
                0 => Phase::Lookup,
                1 => Phase::Queued,
                _ => Phase::Fetching,
            },
        }
    }
}

/// The transfers of a node. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Transfers {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    network: Network,
    tasks: Tasks,
    per_peer: usize,
    slots: Arc<Semaphore>,
    lookups: Arc<Semaphore>,
    /// Contents that no peer could serve lately: when each may be tried again in the
    /// background, and the pause after which it was set.
    backoff: Mutex<HashMap<ContentId, (tokio::time::Instant, Duration)>>,
    buffers: Arc<Pool>,
    transfers: Mutex<HashMap<ContentId, Running>>,
    hints: Mutex<HashMap<ContentId, Vec<PeerId>>>,
    resuming: AtomicBool,
    /// Chunks received from peers and written, over the node's life.
    chunks_fetched: AtomicU64,
    metrics: Arc<crate::metrics::Metrics>,
    /// Permits (one per chunk hash) for the lists of large transfers.
    large_lists: Arc<Semaphore>,
    /// What this node wants to hold (resumed transfers ask it).
    policy: super::policy::Policy,
    /// Background transfers running or waiting, per author of their record, and in all; and
    /// whether one was left for later because of them (see [`MAX_BACKGROUND`]).
    background: Mutex<(HashMap<Vec<u8>, usize>, usize)>,
    deferred: AtomicBool,
    /// Per author: the permits of its chunk-list lookups (see [`LOOKUPS_PER_AUTHOR`]).
    author_lookups: Mutex<HashMap<Vec<u8>, Arc<Semaphore>>>,
    /// When a connecting member last ended the back-offs.
    backoff_cleared: Mutex<Option<std::time::Instant>>,
}

impl Transfers {
    pub(crate) fn new(
        store: Store,
        network: Network,
        tasks: Tasks,
        per_peer: usize,
        max_transfers: usize,
        metrics: Arc<crate::metrics::Metrics>,
        policy: super::policy::Policy,
    ) -> Transfers {
        Transfers {
            inner: Arc::new(Inner {
                store,
                network,
                tasks,
                per_peer: per_peer.max(1),
                slots: Arc::new(Semaphore::new(max_transfers.max(1))),
                lookups: Arc::new(Semaphore::new(MAX_LOOKUPS)),
                backoff: Mutex::new(HashMap::new()),
                buffers: Pool::new(CHUNK_BUDGET),
                transfers: Mutex::new(HashMap::new()),
                hints: Mutex::new(HashMap::new()),
                resuming: AtomicBool::new(false),
                chunks_fetched: AtomicU64::new(0),
                metrics,
                large_lists: Arc::new(Semaphore::new(LARGE_LIST_BUDGET as usize)),
                policy,
                background: Mutex::new((HashMap::new(), 0)),
                deferred: AtomicBool::new(false),
                author_lookups: Mutex::new(HashMap::new()),
                backoff_cleared: Mutex::new(None),
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
    pub(crate) fn enqueue(&self, record: Record, sources: Vec<PeerId>) {
        for peer in sources.into_iter().rev() {
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
        if self.inner.tasks.is_cancelled() {
            return None;
        }
        if !urgent && self.inner.backing_off(&cid) {
            return None;
        }
        let mut transfers = self.inner.transfers.lock().expect("transfers lock");
        if let Some((rx, skip_queue, _)) = transfers.get(&cid) {
            if urgent {
                skip_queue.notify_one();
            }
            return Some(rx.clone());
        }
        // A background transfer takes room in its author's share, or waits in the store.
        let counted = if urgent {
            None
        } else if self.inner.count_background(&record.author) {
            Some(record.author.clone())
        } else {
            self.inner.deferred.store(true, Ordering::Relaxed);
            return None;
        };
        let (tx, rx) = watch::channel(Progress::Running { chunks: 0 });
        let skip_queue = Arc::new(Notify::new());
        if urgent {
            skip_queue.notify_one();
        }
        let meter = Arc::new(Meter {
            key: record.key.clone(),
            size: record.size,
            chunks_total: AtomicU64::new(chunk_count(record.size)),
            present: AtomicU64::new(0),
            phase: std::sync::atomic::AtomicU8::new(0),
        });
        transfers.insert(cid, (rx.clone(), skip_queue.clone(), meter.clone()));
        drop(transfers);
        let inner = self.inner.clone();
        let record = record.clone();
        let tx = Arc::new(tx);
        let finish = FinishGuard {
            inner: inner.clone(),
            cid,
            rx: rx.clone(),
            counted,
            transfers: self.clone(),
        };
        self.inner.tasks.spawn(async move {
            let _finish = finish;
            let _in_flight = InFlight::new(&inner.metrics);
            let run = Transfer::new(
                inner.clone(),
                record.clone(),
                tx.clone(),
                skip_queue,
                meter,
                urgent,
            )
            .run();
            let outcome = std::panic::AssertUnwindSafe(run)
                .catch_unwind()
                .await
                .unwrap_or(Err(TransferError::Panicked));
            let state = match outcome {
                Ok(()) => {
                    inner.metrics.transfers_completed.inc();
                    tracing::debug!(key = %record.key, cid = %cid, "content replicated");
                    inner.backoff.lock().expect("backoff lock").remove(&cid);
                    Progress::Complete
                }
                Err(error) => {
                    inner.metrics.transfers_failed.inc();
                    if matches!(
                        error,
                        TransferError::NoChunkList
                            | TransferError::NoSource(_)
                            | TransferError::Store(StoreError::ListBudget { .. })
                    ) {
                        inner.back_off(cid);
                    }
                    tracing::debug!(key = %record.key, cid = %cid, %error, "transfer failed; will retry later");
                    Progress::Failed(Arc::new(error))
                }
            };
            drop(_finish);
            let _ = tx.send(state);
        });
        Some(rx)
    }

    /// A dfs peer connected (a new one, or a source that came back): content that nobody could
    /// serve lately may be served now, so its back-off ends, and what is incomplete is tried
    /// again at once.
    pub(crate) fn peer_arrived(&self) {
        {
            let mut last = self.inner.backoff_cleared.lock().expect("backoff lock");
            if last.is_some_and(|at| at.elapsed() < BACKOFF_CLEAR_EVERY) {
                drop(last);
                self.resume();
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        self.inner.backoff.lock().expect("backoff lock").clear();
        self.resume();
    }

    /// Looks for records whose content is wanted but incomplete and fetches it (after a
    /// restart, a failed transfer, or when a new peer arrives).
    pub(crate) fn resume(&self) {
        if self.inner.tasks.is_cancelled() || self.inner.resuming.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let store = this.inner.store.clone();
            let policy = this.inner.policy.clone();
            let inner = this.inner.clone();
            // Only what can start now is listed: not what waits for a back-off or is running,
            // and no more of an author's records than its share has room for (a million
            // records nobody serves are passed over, not copied, on every tick).
            let wanted = move || {
                let (mut room, mut total_room) = {
                    let bg = inner.background.lock().expect("background lock");
                    (bg.0.clone(), MAX_BACKGROUND.saturating_sub(bg.1))
                };
                let running: HashSet<ContentId> = inner
                    .transfers
                    .lock()
                    .expect("transfers lock")
                    .keys()
                    .copied()
                    .collect();
                store.incomplete_where(|r| {
                    let Some(cid) = r.cid else { return false };
                    if total_room == 0 || running.contains(&cid) || inner.backing_off(&cid) {
                        return false;
                    }
                    if !room.contains_key(&r.author) {
                        room.insert(r.author.clone(), 0);
                    }
                    let n = room.get_mut(&r.author).expect("just inserted");
                    if *n >= MAX_BACKGROUND_PER_AUTHOR || !policy.wants(r) {
                        return false;
                    }
                    *n += 1;
                    total_room -= 1;
                    true
                })
            };
            match this.inner.tasks.blocking(wanted).await {
                Ok(Ok(records)) => {
                    for record in &records {
                        let _ = this.ensure(record, false);
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot list incomplete content"),
                Err(e) => tracing::warn!(error = %e, "resume task failed"),
            }
            this.inner.resuming.store(false, Ordering::Release);
        });
    }

    /// Whether background attempts at `cid` wait for a back-off (no peer could serve it lately).
    pub(crate) fn waiting(&self, cid: &ContentId) -> bool {
        self.inner.backing_off(cid)
    }

    /// Ends the back-off of `cid` (a peer said it holds the content now) and names `holder` as
    /// the first peer to ask.
    pub(crate) fn retry_now(&self, cid: ContentId, holder: PeerId) {
        self.inner
            .backoff
            .lock()
            .expect("backoff lock")
            .remove(&cid);
        self.hint(Some(cid), holder);
    }

    /// Chunks fetched from peers and written since the node started.
    pub(crate) fn chunks_fetched(&self) -> u64 {
        self.inner.chunks_fetched.load(Ordering::Relaxed)
    }

    /// The transfers in flight (running or queued), sorted by key.
    pub(crate) fn statuses(&self) -> Vec<Status> {
        let transfers = self.inner.transfers.lock().expect("transfers lock");
        let mut all: Vec<Status> = transfers
            .iter()
            .map(|(cid, (rx, _, meter))| meter.status(*cid, &rx.borrow()))
            .collect();
        drop(transfers);
        all.sort_by(|a, b| a.key.cmp(&b.key).then(a.cid.cmp(&b.cid)));
        all
    }
}

impl Inner {
    /// Takes room for a background transfer of `author`'s record; false when there is none.
    fn count_background(&self, author: &[u8]) -> bool {
        let mut bg = self.background.lock().expect("background lock");
        let (per_author, total) = &mut *bg;
        let n = per_author.get(author).copied().unwrap_or(0);
        if *total >= MAX_BACKGROUND || n >= MAX_BACKGROUND_PER_AUTHOR {
            return false;
        }
        per_author.insert(author.to_vec(), n + 1);
        *total += 1;
        true
    }

    fn uncount_background(&self, author: &[u8]) {
        let mut bg = self.background.lock().expect("background lock");
        let (per_author, total) = &mut *bg;
        *total = total.saturating_sub(1);
        if let Some(n) = per_author.get_mut(author) {
            *n -= 1;
            if *n == 0 {
                per_author.remove(author);
            }
        }
    }

    /// The lookup permits of `author`'s records.
    fn lookups_of(&self, author: &[u8]) -> Arc<Semaphore> {
        let mut all = self.author_lookups.lock().expect("lookups lock");
        if let Some(s) = all.get(author) {
            return s.clone();
        }
        // Authors with no lookup under way are forgotten.
        all.retain(|_, s| Arc::strong_count(s) > 1);
        let s = Arc::new(Semaphore::new(LOOKUPS_PER_AUTHOR));
        all.insert(author.to_vec(), s.clone());
        s
    }

    /// True while content that nobody could serve waits for its next background attempt.
    fn backing_off(&self, cid: &ContentId) -> bool {
        self.backoff
            .lock()
            .expect("backoff lock")
            .get(cid)
            .is_some_and(|(until, _)| tokio::time::Instant::now() < *until)
    }

    /// Doubles the pause before the next background attempt at `cid` (from [`FIRST_BACKOFF`]
    /// up to [`MAX_BACKOFF`]).
    fn back_off(&self, cid: ContentId) {
        let mut backoff = self.backoff.lock().expect("backoff lock");
        if backoff.len() >= MAX_BACKOFF_ENTRIES && !backoff.contains_key(&cid) {
            let mut entries: Vec<_> = backoff.iter().map(|(c, (until, _))| (*until, *c)).collect();
            entries.sort();
            for (_, c) in entries.into_iter().take(MAX_BACKOFF_ENTRIES / 2) {
                backoff.remove(&c);
            }
        }
        let pause = backoff
            .get(&cid)
            .map_or(FIRST_BACKOFF, |(_, p)| (*p * 2).min(MAX_BACKOFF));
        backoff.insert(cid, (tokio::time::Instant::now() + pause, pause));
    }
}

/// Forgets a transfer when its task ends, also when shutdown cancels it (and not a newer
/// transfer of the same content started after this one was forgotten).
struct FinishGuard {
    inner: Arc<Inner>,
    cid: ContentId,
    rx: watch::Receiver<Progress>,
    /// The author whose share of background transfers this one took.
    counted: Option<Vec<u8>>,
    transfers: Transfers,
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if let Some(author) = self.counted.take() {
            self.inner.uncount_background(&author);
            // Room again: what waited in the store for it goes on.
            if self.inner.deferred.swap(false, Ordering::Relaxed) {
                self.transfers.resume();
            }
        }
        if let Ok(mut t) = self.inner.transfers.lock() {
            if t.get(&self.cid)
                .is_some_and(|(rx, ..)| rx.same_channel(&self.rx))
            {
                t.remove(&self.cid);
            }
        }
    }
}

#[derive(Debug, Default)]
struct PeerState {
    failures: u32,
    /// Out of this transfer for now (too many failures); back in if it reconnects.
    dropped: bool,
    /// Out of this transfer for good: it sent bytes that do not match their hash, or spoke
    /// the protocol wrong.
    bad: bool,
    /// Not connected at the last look.
    absent: bool,
    /// Chunks it answered "not found" for since the last look.
    lacking: HashSet<Hash>,
}

/// The expected length of each chunk of a file: every chunk is full but the last (a hash, which
/// names bytes, has one length; content whose list says otherwise fails its transfer).
#[derive(Clone, Copy)]
struct Lengths {
    last: Option<Hash>,
    last_len: usize,
}

impl Lengths {
    fn of(list: &[Hash], size: u64) -> Lengths {
        Lengths {
            last: list.last().copied(),
            last_len: chunk_len(size, list.len().saturating_sub(1) as u64),
        }
    }

    fn expected(&self, hash: &Hash) -> usize {
        if self.last.as_ref() == Some(hash) {
            self.last_len
        } else {
            CHUNK_SIZE
        }
    }
}

/// Lines about files fetched (info): at most 30 a minute, the next saying how many were left
/// out (a writer that puts many small files must not flood the logs of every node).
static FETCHED_LOG: crate::log_limit::BurstLogLimit =
    crate::log_limit::BurstLogLimit::new(30, Duration::from_secs(60));

/// Counts a running transfer in the metrics while it lives.
struct InFlight(Arc<crate::metrics::Metrics>);

impl InFlight {
    fn new(metrics: &Arc<crate::metrics::Metrics>) -> InFlight {
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
struct Shared {
    inner: Arc<Inner>,
    key: String,
    queue: Mutex<VecDeque<Hash>>,
    lengths: Lengths,
    written: AtomicU64,
    /// Bytes of the chunks written.
    bytes: AtomicU64,
    /// The peers whose chunks were written.
    sources: Mutex<HashSet<PeerId>>,
    progress: Arc<watch::Sender<Progress>>,
}

impl Shared {
    /// Takes up to `n` queued chunks that the worker's peer is not known to lack.
    fn take(&self, n: usize, lacking: &HashSet<Hash>) -> Vec<Hash> {
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

    fn requeue(&self, hashes: impl IntoIterator<Item = Hash>) {
        let mut queue = self.queue.lock().expect("queue lock");
        for h in hashes {
            queue.push_front(h);
        }
    }

    fn has_work_for(&self, lacking: &HashSet<Hash>) -> bool {
        let queue = self.queue.lock().expect("queue lock");
        queue.iter().any(|h| !lacking.contains(h))
    }
}

/// How a worker ended.
struct WorkerEnd {
    peer: PeerId,
    /// Chunks it wrote.
    wrote: u64,
    lacking: HashSet<Hash>,
    result: Result<(), WorkerError>,
}

enum WorkerError {
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
enum Written {
    Ok,
    BadChunk(Hash),
    Fatal(TransferError),
}

struct Transfer {
    inner: Arc<Inner>,
    record: Record,
    cid: ContentId,
    progress: Arc<watch::Sender<Progress>>,
    /// Signalled when a get waits for this transfer: it then needs no slot.
    skip_queue: Arc<Notify>,
    meter: Arc<Meter>,
    peers: HashMap<PeerId, PeerState>,
    order: Vec<PeerId>,
    /// Started for a get that waits: its lookups take no author's share.
    urgent: bool,
}

impl Transfer {
    fn new(
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

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, TransferError> {
        let store = self.inner.store.clone();
        Ok(self.inner.tasks.blocking(move || f(&store)).await?)
    }

    /// Adds the connected dfs peers (hinted ones first) to the transfer.
    async fn refresh_peers(&mut self) -> Result<(), TransferError> {
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

    fn usable(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|s| !s.dropped && !s.bad && !s.absent)
    }

    /// Counts a failure; a peer that lied or does not speak the protocol is out for good, one
    /// that fails repeatedly is out until it reconnects.
    fn fail(&mut self, peer: PeerId, error: &PeerError) {
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
    async fn chunk_list(&mut self) -> Result<Vec<Hash>, TransferError> {
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
    async fn route(&self) {
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

    async fn manifest_from(&self, peer: PeerId) -> Result<Vec<Hash>, PeerError> {
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

    async fn run(mut self) -> Result<(), TransferError> {
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
    async fn still_wanted(&self) -> Result<bool, TransferError> {
        let cid = self.cid;
        Ok(self.blocking(move |s| s.is_referenced(&cid)).await??)
    }

    /// Fetches the chunks of `queue`; returns the bytes written and the number of peers that
    /// sent them.
    async fn fetch_chunks(
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

/// One peer's share of a transfer: a stream with up to `per_peer` chunks requested at once.
async fn worker(shared: Arc<Shared>, peer: PeerId, mut lacking: HashSet<Hash>) -> WorkerEnd {
    let before = shared.written.load(Ordering::Relaxed);
    let mut writes = FuturesUnordered::new();
    let mut attempt = 0;
    let mut result = loop {
        let mut outstanding = VecDeque::new();
        let result =
            stream_chunks(&shared, peer, &mut lacking, &mut outstanding, &mut writes).await;
        // What was asked for but not received goes back to the queue for the other workers.
        shared.requeue(outstanding.into_iter().rev());
        // A stream closed before its first reply is what a busy responder does (or a
        // libp2p-stream acceptor that had no room for it): try again after a short pause.
        match result {
            Err(WorkerError::Peer(PeerError::Closed)) if attempt < MAX_REOPENS => {
                attempt += 1;
                tokio::time::sleep(REOPEN_PAUSE * attempt).await;
            }
            other => break other,
        }
    };
    while let Some(written) = writes.next().await {
        let failed = settle(&shared, peer, written);
        if result.is_ok() {
            if let Err(e) = failed {
                result = Err(e);
            }
        }
    }
    WorkerEnd {
        peer,
        // Other workers write at the same time: this counts theirs too, which only matters
        // for "did anything move", the one use of it.
        wrote: shared.written.load(Ordering::Relaxed) - before,
        lacking,
        result,
    }
}

/// Counts a written chunk, or turns a failed write into the worker's error.
fn settle(shared: &Shared, peer: PeerId, written: (Hash, Written)) -> Result<(), WorkerError> {
    match written.1 {
        Written::Ok => {
            let n = shared.written.fetch_add(1, Ordering::Relaxed) + 1;
            shared.inner.chunks_fetched.fetch_add(1, Ordering::Relaxed);
            let len = shared.lengths.expected(&written.0) as u64;
            shared.bytes.fetch_add(len, Ordering::Relaxed);
            shared.inner.metrics.fetched_bytes.inc_by(len);
            shared.sources.lock().expect("sources lock").insert(peer);
            let _ = shared.progress.send(Progress::Running { chunks: n });
            Ok(())
        }
        Written::BadChunk(hash) => {
            shared.requeue([hash]);
            Err(WorkerError::Peer(PeerError::BadChunk(hash)))
        }
        Written::Fatal(e) => {
            shared.requeue([written.0]);
            Err(WorkerError::Fatal(e))
        }
    }
}

type PendingWrites = FuturesUnordered<BoxFuture<'static, (Hash, Written)>>;

async fn stream_chunks(
    shared: &Arc<Shared>,
    peer: PeerId,
    lacking: &mut HashSet<Hash>,
    outstanding: &mut VecDeque<Hash>,
    writes: &mut PendingWrites,
) -> Result<(), WorkerError> {
    let per_peer = shared.inner.per_peer;
    let first = shared.take(per_peer.min(chunks::MAX_HASHES_PER_REQUEST), lacking);
    if first.is_empty() {
        return Ok(());
    }
    // Taken first, so that workers started together do not all open streams for one chunk;
    // if the stream does not open, they go back to the queue (see `worker`). Opening is
    // bounded: a peer that left (libp2p-stream would dial it) must not hold the transfer.
    outstanding.extend(first.iter().copied());
    let open = shared.inner.network.open_stream(peer, chunks::PROTOCOL);
    let mut stream = tokio::time::timeout(chunks::REPLY_TIMEOUT, open)
        .await
        .map_err(|_| PeerError::Timeout(chunks::REPLY_TIMEOUT))?
        .map_err(PeerError::from)?;
    let mut replied = false;
    let mut misses = 0u32;
    chunks::write_request(&mut stream, &first)
        .await
        .map_err(|e| {
            if is_closed(&e) {
                PeerError::Closed
            } else {
                PeerError::Frame(e.into())
            }
        })?;
    loop {
        // Keep the pipeline full: ask for more while fewer than `per_peer` are outstanding.
        let room = per_peer.saturating_sub(outstanding.len());
        if room >= per_peer / 2 || outstanding.is_empty() {
            let more = shared.take(room.min(chunks::MAX_HASHES_PER_REQUEST), lacking);
            if !more.is_empty() {
                outstanding.extend(more.iter().copied());
                chunks::write_request(&mut stream, &more)
                    .await
                    .map_err(|e| PeerError::Frame(e.into()))?;
            }
        }
        // Reap the writes that are done, without waiting.
        while let Some(Some(written)) = writes.next().now_or_never() {
            settle(shared, peer, written)?;
        }
        let Some(&hash) = outstanding.front() else {
            break;
        };
        let reply = tokio::time::timeout(chunks::REPLY_TIMEOUT, chunks::read_reply(&mut stream))
            .await
            .map_err(|_| PeerError::Timeout(chunks::REPLY_TIMEOUT))?
            .map_err(|e| match e {
                chunks::FrameError::Io(ref io) if !replied && is_closed(io) => PeerError::Closed,
                e => PeerError::Frame(e),
            })?;
        replied = true;
        match reply {
            chunks::Reply::Chunk { len } => {
                // A free buffer, else the one of this worker's next finished write; waiting in
                // the pool's queue is only safe while this worker holds none.
                let mut buf = loop {
                    if let Some(b) = shared.inner.buffers.try_get() {
                        break b;
                    }
                    match writes.next().await {
                        Some(written) => settle(shared, peer, written)?,
                        None => break shared.inner.buffers.get().await,
                    }
                };
                tokio::time::timeout(chunks::REPLY_TIMEOUT, stream.read_exact(buf.fill(len)))
                    .await
                    .map_err(|_| PeerError::Timeout(chunks::REPLY_TIMEOUT))?
                    .map_err(|e| PeerError::Frame(e.into()))?;
                outstanding.pop_front();
                misses = 0;
                let expected = shared.lengths.expected(&hash);
                let store = shared.inner.store.clone();
                let tasks = shared.inner.tasks.clone();
                writes.push(
                    async move {
                        let done = tasks
                            .blocking(move || write_chunk(&store, hash, buf, expected))
                            .await
                            .unwrap_or_else(|e| Written::Fatal(e.into()));
                        (hash, done)
                    }
                    .boxed(),
                );
            }
            chunks::Reply::NotFound => {
                outstanding.pop_front();
                lacking.insert(hash);
                shared.requeue([hash]);
                misses += 1;
                if misses >= MAX_MISSES {
                    return Err(PeerError::NotFound.into());
                }
            }
            chunks::Reply::Error { message } => return Err(PeerError::Refused(message).into()),
        }
    }
    let _ = stream.close().await;
    tracing::trace!(%peer, key = %shared.key, "chunk stream done");
    Ok(())
}

/// True for the ways a stream ends when its other side dropped or reset it.
fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Verifies a received chunk (hash, then expected length) and writes it durably.
fn write_chunk(store: &Store, hash: Hash, buf: Buf, expected: usize) -> Written {
    let data = &buf.data;
    if data.len() != expected {
        // Honest bytes of the wrong length mean the content's author described them wrong:
        // every peer would send the same, so the content is unusable.
        return if Hash::of(data) == hash {
            Written::Fatal(TransferError::SizeMismatch {
                hash,
                len: data.len(),
            })
        } else {
            Written::BadChunk(hash)
        };
    }
    match store.write_chunk(&hash, data) {
        Ok(()) => Written::Ok,
        Err(StoreError::BadChunk(_)) => Written::BadChunk(hash),
        Err(e) => Written::Fatal(e.into()),
    }
}
