//! Replication: the application layer above the network. It knows the store and a
//! [`Network`] handle, never the swarm. It consumes the network's [`Event`]s (gossip records,
//! inbound requests, peers), decides what this node wants ([`wants`], the one policy), merges
//! records, serves peers, runs anti-entropy, and fetches content.
//!
//! - [`admission`]: what counts (signatures, membership), refusal counts and their logs.
//! - `ask`: conversations with many peers at once (one fan-out): record look-ups, holders,
//!   and the announcements of local writes.
//! - [`transfer`]: fetching content from peers over `/dfs/chunks/1`, verified chunk by chunk.
//! - [`serve`]: answering fetch requests and serving chunk streams.
//! - [`anti_entropy`]: sync sessions (initiator and responder).
//! - [`catchup`]: bulk catch-up of records when a session finds the sets far apart.
//! - [`download`]: streaming a file's bytes to a caller, locally or as a transfer writes them.
//! - [`buffers`]: the bounded pool of chunk buffers of the bulk paths.
//! - [`error`]: typed failures.

pub mod admission;
pub mod anti_entropy;
mod ask;
pub mod audit;
mod buffers;
pub mod catchup;
pub mod download;
pub mod error;
mod merge;
pub mod policy;
pub mod repair;
mod serve;
pub mod transfer;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::{mpsc, Semaphore};

use crate::net::{self, Event, Network};
use crate::protocols::chunks;
use crate::record::Record;
use crate::store::{Applied, Store, StoreError};
use crate::tasks::{TaskFailed, Tasks};
use crate::trust::{Grant, Members};
use admission::{Refusal, Refusals};

pub use ask::LookupError;
pub use error::{PeerError, TransferError};
pub use merge::MergeError;
use merge::{Gossiped, Verdict};
pub use transfer::Progress;

/// Inbound fetch and sync requests answered at once (each reads the store on a blocking thread).
const MAX_INBOUND_WORK: usize = 16;
/// Records from gossip waiting to be merged, at most; beyond, they are dropped (anti-entropy
/// brings them later) so that a flood cannot grow memory.
const MERGE_QUEUE: usize = 4096;
/// Most records merged in one store transaction.
const MERGE_BATCH: usize = 256;
/// Misbehaviours (invalid records sent through sync) before a peer is blocked.
const MAX_STRIKES: u32 = 3;
/// Proofs of possession answered to peers without a grant, per second, over all of them.
const STRANGER_PROOFS_PER_SEC: u32 = 8;
/// A disputed clock is said at most once per period.
static CLOCK_DISPUTE_LOG: crate::log_limit::LogLimit =
    crate::log_limit::LogLimit::new(Duration::from_secs(600));
/// How long a misbehaving peer stays blocked.
const BLOCK_FOR: Duration = Duration::from_secs(600);
/// How often the store is swept for chunks nobody references (left by a transfer that was
/// abandoned when its record was overwritten or deleted).
const GC_INTERVAL: Duration = Duration::from_secs(600);

/// How replication runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often the node runs anti-entropy with each connected peer.
    pub sync_interval: Duration,
    /// How often incomplete content is looked for and fetched again.
    pub retry_interval: Duration,
    /// Chunks requested at once from one peer during a transfer.
    pub chunks_in_flight: usize,
    /// Transfers running at once.
    pub max_transfers: usize,
    /// The node's metrics (transfers, bytes in and out).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// How often a repair pass runs at least, under partial replication (see [`repair`]).
    pub repair_interval: Duration,
}

/// Counters of anti-entropy traffic, for tests and the benchmark.
#[derive(Debug, Default)]
pub struct SyncStats {
    pub sessions: AtomicU64,
    pub requests_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub records_sent: AtomicU64,
    pub records_received: AtomicU64,
}

impl SyncStats {
    pub fn snapshot(&self) -> [u64; 6] {
        [
            &self.sessions,
            &self.requests_sent,
            &self.bytes_sent,
            &self.bytes_received,
            &self.records_sent,
            &self.records_received,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

/// The replication layer of a node. Cheap to clone.
#[derive(Clone)]
pub struct Replication {
    store: Store,
    network: Network,
    tasks: Tasks,
    transfers: transfer::Transfers,
    stats: Arc<SyncStats>,
    syncing: Arc<Mutex<HashSet<PeerId>>>,
    work: Arc<Semaphore>,
    config: Config,
    members: Members,
    refusals: Arc<Refusals>,
    /// Grants are added one at a time, so a revocation's drop follows its grant in order.
    granting: Arc<tokio::sync::Mutex<()>>,
    /// What this node holds: the replication factor, placement, the cache.
    policy: policy::Policy,
    /// Wakes the repair loop for a pass now.
    repair_wake: Arc<tokio::sync::Notify>,
    /// Repair passes run since start.
    repairs: Arc<AtomicU64>,
    /// Misbehaviours per peer, towards [`MAX_STRIKES`].
    strikes: Arc<Mutex<std::collections::HashMap<PeerId, u32>>>,
    /// The network each connected peer said it belongs to (asked once per connection).
    peer_networks: Arc<Mutex<std::collections::HashMap<PeerId, Option<String>>>>,
    /// Proofs of possession: chunks withheld from claimants, members' tallies.
    audit: Arc<audit::Audit>,
    /// When a repair pass last audited placed holders.
    audited: Arc<Mutex<Option<std::time::Instant>>>,
    /// Proofs answered to peers without a grant in the current second.
    stranger_proofs: Arc<Mutex<(std::time::Instant, u32)>>,
}

impl Replication {
    pub fn new(
        store: Store,
        network: Network,
        tasks: Tasks,
        config: Config,
        members: Members,
        refusals: Arc<Refusals>,
        policy: policy::Policy,
    ) -> Replication {
        let transfers = transfer::Transfers::new(
            store.clone(),
            network.clone(),
            tasks.clone(),
            config.chunks_in_flight,
            config.max_transfers,
            config.metrics.clone(),
            policy.clone(),
        );
        Replication {
            store,
            network,
            tasks,
            transfers,
            stats: Arc::new(SyncStats::default()),
            syncing: Arc::new(Mutex::new(HashSet::new())),
            work: Arc::new(Semaphore::new(MAX_INBOUND_WORK)),
            config,
            members,
            refusals,
            granting: Arc::new(tokio::sync::Mutex::new(())),
            policy,
            repair_wake: Arc::default(),
            repairs: Arc::default(),
            peer_networks: Arc::default(),
            strikes: Arc::default(),
            audit: Arc::default(),
            audited: Arc::default(),
            stranger_proofs: Arc::new(Mutex::new((std::time::Instant::now(), 0))),
        }
    }

    /// Whether `peer` belongs to this node's network, so that anti-entropy with it makes
    /// sense. Asked once per connection (`fetch` `network`); a peer that does not answer it (an
    /// implementation without the request) is given the benefit of the doubt: what it sends is
    /// checked record by record anyway. False while this node does not know its network.
    pub(crate) async fn same_network(&self, peer: PeerId) -> bool {
        let Some(mine) = self.members.network() else {
            return false;
        };
        let known = self
            .peer_networks
            .lock()
            .expect("peer networks")
            .get(&peer)
            .cloned();
        let theirs = match known {
            Some(theirs) => theirs,
            None => {
                let theirs = match self
                    .network
                    .fetch(peer, crate::protocols::fetch::Request::Network)
                    .await
                {
                    Ok(crate::protocols::fetch::Response::Network { id, settings }) => {
                        if let (Some(bytes), true) = (settings, id == mine) {
                            self.adopt_settings(&bytes).await;
                        }
                        Some(id)
                    }
                    _ => None,
                };
                self.peer_networks
                    .lock()
                    .expect("peer networks")
                    .insert(peer, theirs.clone());
                theirs
            }
        };
        theirs.is_none_or(|t| t == mine)
    }

    /// The gate the network task asks before forwarding gossip (same membership, same
    /// counters).
    pub fn gate(members: &Members, refusals: &Arc<Refusals>) -> Arc<dyn net::Gate> {
        Arc::new(admission::TrustGate {
            members: members.clone(),
            refusals: refusals.clone(),
        })
    }

    /// Whether a peer without a grant may have a proof of possession answered now: at most
    /// [`STRANGER_PROOFS_PER_SEC`] a second over all of them.
    fn stranger_proof_allowed(&self) -> bool {
        let mut window = self
            .stranger_proofs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if now.saturating_duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        window.1 <= STRANGER_PROOFS_PER_SEC
    }

    /// Proofs of possession: the members' tallies (see `audit.rs`).
    pub fn audit(&self) -> &audit::Audit {
        &self.audit
    }

    pub fn members(&self) -> &Members {
        &self.members
    }

    pub fn policy(&self) -> &policy::Policy {
        &self.policy
    }

    /// Adopts the network's settings from a peer's answer, if this node does not know them yet
    /// and they are the owner's: the replication factor applies from now on, and the settings
    /// are kept in the data dir.
    pub(crate) async fn adopt_settings(&self, bytes: &[u8]) {
        if self.policy.settled() {
            return;
        }
        let Some(network) = self.members.network() else {
            return;
        };
        let settings = match crate::trust::settings::Settings::decode(bytes, &network) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "a peer sent settings that do not verify");
                return;
            }
        };
        if !self.policy.set_settings(settings.clone()) {
            return;
        }
        tracing::info!(replicas = %settings.replicas(), "learnt the network's replication factor");
        if let Some(path) = self.policy.settings_file() {
            let bytes = settings.encode();
            let written = self
                .tasks
                .blocking(move || crate::datadir::atomic_write(&path, &bytes, false))
                .await;
            if let Ok(Err(e)) = written {
                tracing::warn!(error = %e, "cannot keep the network's settings in the data dir");
            }
        }
        self.repair_soon();
        self.provide_held().await;
    }

    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// Chunks fetched from peers and written since the node started.
    pub fn chunks_fetched(&self) -> u64 {
        self.transfers.chunks_fetched()
    }

    /// The transfers in flight (running or queued), sorted by key.
    pub fn transfer_statuses(&self) -> Vec<transfer::Status> {
        self.transfers.statuses()
    }

    pub(crate) fn transfers(&self) -> &transfer::Transfers {
        &self.transfers
    }

    /// Runs store work on a blocking thread that shutdown waits for.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, TaskFailed> {
        let store = self.store.clone();
        self.tasks.blocking(move || f(&store)).await
    }

    /// Registers the protocols served on raw streams. Called before the network task runs, so
    /// that no stream arrives before its protocol is known.
    pub fn serve_streams(&self) -> Result<(), net::Error> {
        let incoming = self.network.accept(chunks::PROTOCOL).ok_or_else(|| {
            net::Error::Start(format!("{} is already registered", chunks::PROTOCOL))
        })?;
        let server = serve::ChunkServer::new(
            self.store.clone(),
            self.tasks.clone(),
            self.config.metrics.clone(),
            self.audit.clone(),
            self.members.clone(),
        );
        self.tasks.spawn(server.run(incoming));
        self.serve_catchup()
    }

    /// Registers the bulk catch-up protocol (`/dfs/catchup/1`).
    fn serve_catchup(&self) -> Result<(), net::Error> {
        use crate::protocols::catchup as protocol;
        let incoming = self.network.accept(protocol::PROTOCOL).ok_or_else(|| {
            net::Error::Start(format!("{} is already registered", protocol::PROTOCOL))
        })?;
        let server =
            catchup::CatchupServer::new(self.store.clone(), self.tasks.clone(), self.stats.clone());
        self.tasks.spawn(server.run(incoming));
        Ok(())
    }

    /// Consumes the network's events until shutdown: the application's main loop.
    pub async fn run(self, mut events: mpsc::Receiver<Event>) {
        let (merge_tx, merge_rx) = mpsc::channel(MERGE_QUEUE);
        self.tasks.spawn(self.clone().merge_gossip(merge_rx));
        self.tasks.spawn(self.clone().repair_loop());
        let this = self.clone();
        self.tasks.spawn(async move { this.provide_held().await });
        self.transfers.resume();
        let mut sync_round = tokio::time::interval(self.config.sync_interval);
        let mut retry = tokio::time::interval(self.config.retry_interval);
        let mut gc = tokio::time::interval(GC_INTERVAL);
        let mut clocks = tokio::time::interval(crate::clock::MEASURE_EVERY);
        for t in [&mut sync_round, &mut retry, &mut gc, &mut clocks] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t.reset();
        }
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(event, &merge_tx),
                    None => break,
                },
                _ = sync_round.tick() => self.sync_round().await,
                _ = retry.tick() => self.transfers.resume_if_due(),
                _ = gc.tick() => self.sweep(),
                _ = clocks.tick() => {
                    let this = self.clone();
                    self.tasks.spawn(async move { this.measure_clocks().await });
                }
            }
        }
    }

    fn on_event(&self, event: Event, merge: &mpsc::Sender<Gossiped>) {
        match event {
            Event::Record {
                record,
                sources,
                message,
            } => {
                if let Err(e) = merge.try_send((record, sources, message)) {
                    tracing::debug!("merge queue full; anti-entropy will bring the record");
                    let (_, _, message) = e.into_inner();
                    let network = self.network.clone();
                    self.tasks.spawn(async move {
                        let _ = network.judge(message, net::Verdict::Ignore).await;
                    });
                }
            }
            Event::Fetch {
                peer: _,
                request: crate::protocols::fetch::Request::Time,
                reply,
            } => {
                // At once, off the work queue: the asker times the round trip.
                let ms = self.store.time().wall().now_ms();
                let _ = reply.send(crate::protocols::fetch::Response::Time { ms });
            }
            Event::Fetch {
                peer,
                request: crate::protocols::fetch::Request::Prove { .. },
                reply,
            } if self.members.role(&peer).is_none() && !self.stranger_proof_allowed() => {
                // Each proof costs a few MiB of reads: peers without a grant (readers dropping
                // what they cached) share a small rate.
                let _ = reply.send(crate::protocols::fetch::Response::Error {
                    message:
                        "busy: proofs of possession for peers without a grant are rate-limited"
                            .into(),
                });
            }
            Event::Fetch {
                peer: _,
                request,
                reply,
            } => {
                let this = self.clone();
                let me = self.policy.me();
                let network = self.members.network();
                // `all` is what a node without settings does: it needs no statement on the wire.
                let settings = self
                    .policy
                    .settings()
                    .filter(|s| s.replicas != 0)
                    .map(|s| s.encode());
                let keeps = match &request {
                    crate::protocols::fetch::Request::Has { cid } => self.policy.placed_here(cid),
                    _ => false,
                };
                self.answer(reply, async move {
                    this.blocking(move |store| {
                        serve::fetch(store, network, settings, keeps, me, request)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        crate::protocols::fetch::Response::Error {
                            message: e.to_string(),
                        }
                    })
                });
            }
            Event::Sync {
                peer,
                request,
                reply,
            } => {
                let responder = anti_entropy::Responder {
                    replication: self.clone(),
                    peer,
                };
                self.answer(reply, responder.serve(request));
            }
            Event::Grant { grant, source } => {
                let this = self.clone();
                self.tasks.spawn(async move {
                    if let Err(e) = this.add_grants(vec![grant]).await {
                        tracing::warn!(%source, error = %e, "cannot add a grant from gossip");
                    }
                });
            }
            Event::PeerReady(peer) => {
                self.policy.seen(peer, Some(true), None);
                self.start_sync(peer);
                // A member (a source, or a holder placed for content) ends the back-offs; any
                // other peer only wakes the waiting transfers.
                if self.members.role(&peer).is_some() {
                    self.transfers.peer_arrived();
                } else {
                    self.transfers.resume();
                }
                let this = self.clone();
                self.tasks
                    .spawn(async move { this.measure_clock(peer).await });
            }
            Event::Announced { peer, capacity } => {
                self.policy.seen(peer, None, capacity);
            }
            Event::PeerGone(peer) => {
                self.policy.seen(peer, Some(false), None);
                self.store.time().forget(&peer);
                self.peer_networks
                    .lock()
                    .expect("peer networks")
                    .remove(&peer);
            }
        }
    }

    /// Measures a peer's clock offset (an NTP-style exchange: the midpoint of the round trip
    /// against the time it answered). It counts for the network's time only if the peer is a
    /// member: strangers do not vote. A peer off by more than the bound is logged.
    pub(crate) async fn measure_clock(&self, peer: PeerId) {
        let time = self.store.time().clone();
        let sent = time.wall().now_ms();
        let theirs = match self
            .network
            .fetch(peer, crate::protocols::fetch::Request::Time)
            .await
        {
            Ok(crate::protocols::fetch::Response::Time { ms }) => ms,
            _ => return,
        };
        let received = time.wall().now_ms();
        // Members with write access vote (readers and revoked writers do not), and their
        // number is the electorate of the majority rule (see `clock.rs`).
        let counts = self
            .members
            .role(&peer)
            .is_some_and(|r| r >= crate::trust::Role::Writer);
        if let Some(n) = self.members.with(|m| {
            m.members()
                .iter()
                .filter(|m| m.role >= crate::trust::Role::Writer)
                .count()
        }) {
            time.set_members(n);
        }
        let was_ok = time.check_local().is_ok();
        let offset = time.measured(peer, sent, theirs, received, counts);
        if offset.ms.unsigned_abs() > time.max_offset_ms() {
            tracing::info!(%peer, offset_ms = offset.ms, rtt_ms = offset.rtt_ms, counts, "a peer's clock is off from this node's by more than --max-clock-offset");
        }
        if let Some(disputed) = time.disputed_ms() {
            if let Some(suppressed) = CLOCK_DISPUTE_LOG.check() {
                tracing::warn!(
                    median_offset_ms = disputed,
                    suppressed,
                    "members measured disagree with this node's clock by more than --max-clock-offset, but they are fewer than half of the network's members: this node keeps its own clock (and refuses records more than 10 minutes ahead of it); check it (NTP)"
                );
            }
        }
        match time.check_local() {
            Err(e) if was_ok => tracing::warn!("{e}"),
            Ok(()) if !was_ok => tracing::info!(
                median_offset_ms = time.median_offset_ms(),
                "this node's clock agrees with its peers again: writes are accepted"
            ),
            _ => {}
        }
    }

    /// Measures every connected peer's clock again.
    async fn measure_clocks(&self) {
        let Ok(peers) = self.network.peers().await else {
            return;
        };
        for p in peers {
            self.measure_clock(p.peer_id).await;
        }
        if let Err(e) = self.store.time().check_local() {
            tracing::warn!("{e}");
        }
    }

    /// Computes the answer to an inbound request on its own task, at most
    /// `MAX_INBOUND_WORK` at once, and hands it back to the network.
    fn answer<T: Send + 'static>(
        &self,
        reply: tokio::sync::oneshot::Sender<T>,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) {
        let permits = self.work.clone();
        self.tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let _ = reply.send(work.await);
        });
    }

    /// Starts anti-entropy with every connected dfs peer now.
    pub(crate) async fn sync_now(&self) {
        self.sync_round().await
    }

    /// Starts anti-entropy with every connected dfs peer.
    async fn sync_round(&self) {
        let Ok(peers) = self.network.peers().await else {
            return;
        };
        for p in peers.into_iter().filter(|p| p.dfs) {
            self.start_sync(p.peer_id);
        }
    }

    fn start_sync(&self, peer: PeerId) {
        if !self.syncing.lock().expect("sync set").insert(peer) {
            return;
        }
        let session = anti_entropy::Session {
            replication: self.clone(),
            peer,
        };
        let syncing = self.syncing.clone();
        self.tasks.spawn(async move {
            if let Err(e) = session.run().await {
                tracing::debug!(%peer, error = %e, "sync session ended early");
            }
            syncing.lock().expect("sync set").remove(&peer);
        });
    }

    fn sweep(&self) {
        let this = self.clone();
        self.tasks.spawn(async move {
            match this.blocking(|store| store.gc()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::debug!(removed = n, "store swept"),
                Ok(Err(e)) => tracing::warn!(error = %e, "store sweep failed"),
                Err(e) => tracing::warn!(error = %e, "store sweep task failed"),
            }
        });
    }
}
