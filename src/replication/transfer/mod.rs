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

mod run;
mod stream;

use run::*;
use stream::*;

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
/// The retry timer scans the store at least this often, even when nothing asked for it (a
/// safety net: see [`Transfers::resume_if_due`]).
const FULL_SCAN_EVERY: Duration = Duration::from_secs(600);

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
    /// The last scan for incomplete content (see [`Transfers::resume_if_due`]), and whether a
    /// transfer failed since without a back-off (it is retried at the next tick).
    last_scan: Mutex<Option<Scan>>,
    rescan: AtomicBool,
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
                last_scan: Mutex::new(None),
                rescan: AtomicBool::new(false),
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
                    } else {
                        inner.rescan.store(true, Ordering::Release);
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

    /// The retry timer's resume: the scan of every live record runs only when it can find
    /// something to start that the events have not started already: the store's heads changed
    /// since the last scan, the last scan started transfers (more may wait behind them), a
    /// transfer failed without a back-off, a back-off ended, or [`FULL_SCAN_EVERY`] passed.
    /// Peers arriving and room freed start their work themselves ([`Transfers::resume`]). So
    /// an idle node does not decode its records every tick.
    pub(crate) fn resume_if_due(&self) {
        let last = *self.inner.last_scan.lock().expect("scan lock");
        let failed = self.inner.rescan.swap(false, Ordering::AcqRel);
        let due = failed
            || scan_due(
                last,
                self.inner.store.changes(),
                tokio::time::Instant::now(),
                || {
                    self.inner
                        .backoff
                        .lock()
                        .expect("backoff lock")
                        .values()
                        .map(|(until, _)| *until)
                        .collect()
                },
            );
        if due {
            self.resume();
        }
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
            let changes = this.inner.store.changes();
            match this.inner.tasks.blocking(wanted).await {
                Ok(Ok(records)) => {
                    for record in &records {
                        let _ = this.ensure(record, false);
                    }
                    *this.inner.last_scan.lock().expect("scan lock") = Some(Scan {
                        at: tokio::time::Instant::now(),
                        started: records.len(),
                        changes,
                    });
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

/// A scan of the store for incomplete content: when it ended, how many transfers it started,
/// and the store's [`Store::changes`] when it began.
#[derive(Debug, Clone, Copy)]
struct Scan {
    at: tokio::time::Instant,
    started: usize,
    changes: u64,
}

/// Whether the retry timer must scan the store, given the last scan, the store's changes now,
/// and the ends of the back-offs (asked only when needed).
fn scan_due(
    last: Option<Scan>,
    changes: u64,
    now: tokio::time::Instant,
    backoff_ends: impl FnOnce() -> Vec<tokio::time::Instant>,
) -> bool {
    let Some(last) = last else { return true };
    last.started > 0
        || last.changes != changes
        || now >= last.at + FULL_SCAN_EVERY
        || backoff_ends()
            .into_iter()
            .any(|until| until > last.at && until <= now)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn the_retry_timer_scans_only_when_it_can_find_something() {
        let at = Instant::now();
        let soon = at + Duration::from_secs(15);
        let none = Vec::new;
        let scan = |started| {
            Some(Scan {
                at,
                started,
                changes: 7,
            })
        };
        assert!(scan_due(None, 7, at, none), "the first tick scans");
        assert!(
            scan_due(scan(3), 7, soon, none),
            "more may wait behind what started"
        );
        assert!(!scan_due(scan(0), 7, soon, none), "idle: nothing to find");
        assert!(scan_due(scan(0), 8, soon, none), "the records changed");
        let ended = move || vec![at + Duration::from_secs(10)];
        assert!(scan_due(scan(0), 7, soon, ended), "a back-off ended since");
        let later = move || vec![at + Duration::from_secs(60)];
        assert!(
            !scan_due(scan(0), 7, soon, later),
            "a back-off still running"
        );
        let before = move || vec![at - Duration::from_secs(1)];
        assert!(
            !scan_due(scan(0), 7, soon, before),
            "one the last scan saw end"
        );
        assert!(
            scan_due(scan(0), 7, at + FULL_SCAN_EVERY, none),
            "the safety net"
        );
    }
}
