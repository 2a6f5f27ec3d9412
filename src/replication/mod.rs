//! Replication: the application layer above the network. It knows the store and a
//! [`Network`] handle, never the swarm. It consumes the network's [`Event`]s (gossip records,
//! inbound requests, peers), decides what this node wants ([`wants`], the one policy), merges
//! records, serves peers, runs anti-entropy, and fetches content.
//!
//! - [`transfer`]: fetching content from peers over `/dfs/chunks/1`, verified chunk by chunk.
//! - [`serve`]: answering fetch requests and serving chunk streams.
//! - [`anti_entropy`]: sync sessions (initiator and responder).
//! - [`download`]: streaming a file's bytes to a caller, locally or as a transfer writes them.
//! - [`buffers`]: the bounded pool of chunk buffers of the bulk paths.
//! - [`error`]: typed failures.

pub mod anti_entropy;
mod buffers;
pub mod download;
pub mod error;
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

pub use error::{PeerError, TransferError};
pub use transfer::Progress;

/// Inbound fetch and sync requests answered at once (each reads the store on a blocking thread).
const MAX_INBOUND_WORK: usize = 16;
/// Records from gossip waiting to be merged, at most; beyond, they are dropped (anti-entropy
/// brings them later) so that a flood cannot grow memory.
const MERGE_QUEUE: usize = 4096;
/// Most records merged in one store transaction.
const MERGE_BATCH: usize = 256;
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
}

/// The replication policy: whether this node wants to hold the content of a record. Full
/// replication: every live record. (Partial replication changes only this function.)
pub(crate) fn wants(record: &Record) -> bool {
    !record.is_tombstone()
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
}

impl Replication {
    pub fn new(store: Store, network: Network, tasks: Tasks, config: Config) -> Replication {
        let transfers = transfer::Transfers::new(
            store.clone(),
            network.clone(),
            tasks.clone(),
            config.chunks_in_flight,
            config.max_transfers,
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
        }
    }

    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// Chunks fetched from peers and written since the node started.
    pub fn chunks_fetched(&self) -> u64 {
        self.transfers.chunks_fetched()
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

    /// Merges records from elsewhere in one transaction and fetches the content of those this
    /// node now wants. `sources` are peers likely to hold that content. Returns how many records
    /// changed the store.
    pub(crate) async fn merge(
        &self,
        records: Vec<Record>,
        sources: &[PeerId],
    ) -> Result<usize, MergeError> {
        let applied = self
            .blocking(move |store| -> Result<Vec<(Record, bool)>, StoreError> {
                let outcomes = store.apply_batch(records.clone())?;
                Ok(records
                    .into_iter()
                    .zip(outcomes)
                    .filter_map(|(r, o)| match o {
                        Applied::Updated { fetch, .. } => Some((r, fetch)),
                        Applied::Unchanged => None,
                    })
                    .collect())
            })
            .await??;
        let changed = applied.len();
        for (record, incomplete) in applied {
            if incomplete && wants(&record) {
                self.transfers.enqueue(record, sources.to_vec());
            }
        }
        Ok(changed)
    }

    /// Registers the protocols served on raw streams. Called before the network task runs, so
    /// that no stream arrives before its protocol is known.
    pub fn serve_streams(&self) -> Result<(), net::Error> {
        let incoming = self.network.accept(chunks::PROTOCOL).ok_or_else(|| {
            net::Error::Start(format!("{} is already registered", chunks::PROTOCOL))
        })?;
        let server = serve::ChunkServer::new(self.store.clone(), self.tasks.clone());
        self.tasks.spawn(server.run(incoming));
        Ok(())
    }

    /// Consumes the network's events until shutdown: the application's main loop.
    pub async fn run(self, mut events: mpsc::Receiver<Event>) {
        let (merge_tx, merge_rx) = mpsc::channel(MERGE_QUEUE);
        self.tasks.spawn(self.clone().merge_gossip(merge_rx));
        self.transfers.resume();
        let mut sync_round = tokio::time::interval(self.config.sync_interval);
        let mut retry = tokio::time::interval(self.config.retry_interval);
        let mut gc = tokio::time::interval(GC_INTERVAL);
        for t in [&mut sync_round, &mut retry, &mut gc] {
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
                _ = retry.tick() => self.transfers.resume(),
                _ = gc.tick() => self.sweep(),
            }
        }
    }

    fn on_event(&self, event: Event, merge: &mpsc::Sender<(Record, Vec<PeerId>)>) {
        match event {
            Event::Record { record, sources } => {
                if merge.try_send((record, sources)).is_err() {
                    tracing::debug!("merge queue full; anti-entropy will bring the record");
                }
            }
            Event::Fetch {
                peer: _,
                request,
                reply,
            } => {
                let this = self.clone();
                self.answer(reply, async move {
                    this.blocking(move |store| serve::fetch(store, request))
                        .await
                        .unwrap_or_else(|e| crate::protocols::fetch::Response::Error {
                            message: e.to_string(),
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
            Event::PeerReady(peer) => {
                self.start_sync(peer);
                self.transfers.resume();
            }
            Event::PeerGone(_) => {}
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

    /// Merges records from gossip in batches (one transaction each).
    async fn merge_gossip(self, mut queue: mpsc::Receiver<(Record, Vec<PeerId>)>) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < MERGE_BATCH {
                match queue.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            // Records of one batch may name different sources: remember each as a hint.
            for (record, sources) in &batch {
                for peer in sources.iter().rev() {
                    self.transfers.hint(record.cid, *peer);
                }
            }
            let records = batch.into_iter().map(|(r, _)| r).collect();
            if let Err(e) = self.merge(records, &[]).await {
                tracing::warn!(error = %e, "cannot merge records from gossip");
            }
        }
    }
}

/// Why merging records failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
}
