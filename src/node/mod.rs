//! The running peer: configuration, start-up, and the [`Client`] handle. One task (the
//! [`event_loop`]) owns the libp2p swarm; everything else talks to it through a cloneable
//! [`Client`] that sends commands with a `oneshot` reply. The store is shared, not networked.
//!
//! - [`behaviour`]: the combined libp2p behaviour (identify, ping, gossipsub, fetch, sync, limits).
//! - [`event_loop`]: the task that owns the swarm.
//! - [`discovery`]: bootstrap re-dialling with back-off and gossip peer discovery state.
//! - [`replicate`]: background transfers of content from peers, verified chunk by chunk.
//! - [`anti_entropy`]: sync sessions (initiator and responder) over [`crate::protocols::sync`].
//! - [`download`]: streams a file's bytes to a caller, locally or as chunks arrive.

pub mod anti_entropy;
pub mod behaviour;
mod chunk_channel;
pub mod discovery;
pub mod download;
pub mod event_loop;
pub mod replicate;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::protocols::{fetch, sync};
use crate::record::{Record, CHUNK_SIZE};
use crate::store::{Stat, Store, StoreError};

pub use download::Download;

/// Version string announced through identify as the agent version: `dfs/<version>`.
pub const AGENT_VERSION: &str = concat!("dfs/", env!("CARGO_PKG_VERSION"));
/// The identify protocol version of dfs nodes.
pub const PROTOCOL_VERSION: &str = "/dfs/1.0.0";
/// Bound of the command channel into the event loop.
const COMMAND_QUEUE: usize = 256;
/// Chunks of a put waiting for the store, at most (each up to 1 MiB).
const PUT_QUEUE: usize = 4;

/// How a node runs. [`Config::new`] gives the defaults of `dfs node`.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Name of the network; namespaces the gossip topics so separate clusters never mix.
    pub network: String,
    /// Most connected peers; gossip discovery stops dialling at this number.
    pub max_peers: u32,
    /// How often the node announces itself on the peers topic.
    pub announce_interval: Duration,
    /// How often the node runs anti-entropy with each connected peer.
    pub sync_interval: Duration,
    /// How often incomplete content is looked for and fetched again.
    pub retry_interval: Duration,
    /// Chunk requests in flight per peer during a transfer.
    pub chunks_in_flight: usize,
    /// Transfers running at once.
    pub max_transfers: usize,
    /// How long a get waits for a peer to answer for a key this node has never heard of.
    pub lookup_timeout: Duration,
}

impl Config {
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            listen: vec!["/ip4/0.0.0.0/tcp/4001".parse().expect("valid multiaddr")],
            bootstrap: Vec::new(),
            network: "default".into(),
            max_peers: 64,
            announce_interval: Duration::from_secs(30),
            sync_interval: Duration::from_secs(30),
            retry_interval: Duration::from_secs(15),
            chunks_in_flight: 16,
            max_transfers: 16,
            lookup_timeout: Duration::from_secs(5),
        }
    }
}

/// Errors a node operation can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the node has stopped")]
    Stopped,
    #[error("range {start}-{end} is outside the file of {size} bytes")]
    Range { start: u64, end: u64, size: u64 },
    #[error("content of {key} is not available yet: {reason}")]
    Unavailable { key: String, reason: String },
    #[error("request to {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    #[error("{0}")]
    Start(String),
    #[error("background task failed: {0}")]
    Task(String),
}

impl Error {
    /// True when the error means the key does not exist (exit code 1, HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::NotFound(_) | Error::Store(StoreError::NotFound(_))
        )
    }
}

/// This node's peer id and listen addresses (each a full multiaddr ending in `/p2p/<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub peer_id: PeerId,
    pub addrs: Vec<Multiaddr>,
}

/// A connected peer and the addresses known for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub peer_id: PeerId,
    pub addrs: Vec<Multiaddr>,
    pub agent: Option<String>,
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

/// Commands the event loop carries out for [`Client`]s.
#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        record: Record,
    },
    Fetch {
        peer: PeerId,
        request: fetch::Request,
        reply: oneshot::Sender<Result<fetch::Response, Error>>,
    },
    Sync {
        peer: PeerId,
        request: sync::Request,
        reply: oneshot::Sender<Result<sync::Response, Error>>,
    },
    Info {
        reply: oneshot::Sender<NodeInfo>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Block {
        peer: PeerId,
        blocked: bool,
    },
}

/// The network side of a client: sends commands to the event loop.
#[derive(Clone, Debug)]
pub(crate) struct Network {
    commands: mpsc::Sender<Command>,
}

impl Network {
    async fn send(&self, command: Command) -> Result<(), Error> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::Stopped)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    pub(crate) async fn fetch(
        &self,
        peer: PeerId,
        request: fetch::Request,
    ) -> Result<fetch::Response, Error> {
        self.ask(|reply| Command::Fetch {
            peer,
            request,
            reply,
        })
        .await?
    }

    pub(crate) async fn sync(
        &self,
        peer: PeerId,
        request: sync::Request,
    ) -> Result<sync::Response, Error> {
        self.ask(|reply| Command::Sync {
            peer,
            request,
            reply,
        })
        .await?
    }

    pub(crate) async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    pub(crate) async fn publish(&self, record: Record) -> Result<(), Error> {
        self.send(Command::Publish { record }).await
    }
}

/// The handle through which the API, the CLI's demo and tests use a node. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    peer_id: PeerId,
    network: Network,
    store: Store,
    replicator: replicate::Replicator,
    stats: Arc<SyncStats>,
    lookup_timeout: Duration,
}

impl Client {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The local store (read access for tests and tools; writes go through the client so
    /// that they are gossiped).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn sync_stats(&self) -> &SyncStats {
        &self.stats
    }

    /// Chunks this node has fetched from peers since it started.
    pub fn chunks_fetched(&self) -> u64 {
        self.replicator.chunks_fetched()
    }

    /// Stores a file from a blocking reader, durably, then gossips its record. Returns when the
    /// put is durable locally.
    pub async fn put_blocking(
        &self,
        key: String,
        reader: impl std::io::Read + Send + 'static,
    ) -> Result<Record, Error> {
        let store = self.store.clone();
        let record = blocking(move || store.put(&key, reader)).await??;
        self.network.publish(record.clone()).await?;
        Ok(record)
    }

    /// Stores a file from an async reader (an HTTP body, a file), streaming with bounded memory:
    /// the reader is gathered into whole chunks on the async side and handed, through a
    /// bounded channel, to the store's put on a blocking thread.
    pub async fn put(
        &self,
        key: String,
        mut reader: impl tokio::io::AsyncRead + Send + Unpin + 'static,
    ) -> Result<Record, Error> {
        use tokio::io::AsyncReadExt;
        let (tx, rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(PUT_QUEUE);
        let store = self.store.clone();
        let writer =
            tokio::task::spawn_blocking(move || store.put(&key, chunk_channel::Reader::new(rx)));
        loop {
            let mut buf = bytes::BytesMut::with_capacity(CHUNK_SIZE);
            let mut failed = None;
            while buf.len() < CHUNK_SIZE {
                match reader.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let done = buf.len() < CHUNK_SIZE || failed.is_some();
            if !buf.is_empty() && tx.send(Ok(buf.freeze())).await.is_err() {
                break; // the store stopped reading: its error is the answer
            }
            if let Some(e) = failed {
                let _ = tx.send(Err(e)).await;
                break;
            }
            if done {
                break;
            }
        }
        drop(tx);
        let record = writer.await.map_err(|e| Error::Task(e.to_string()))??;
        self.network.publish(record.clone()).await?;
        Ok(record)
    }

    /// Deletes a key everywhere: writes a tombstone and gossips it.
    pub async fn delete(&self, key: String) -> Result<Record, Error> {
        let store = self.store.clone();
        let record = blocking(move || store.delete(&key)).await??;
        self.network.publish(record.clone()).await?;
        Ok(record)
    }

    /// One key's record and local state (tombstones included).
    pub async fn stat(&self, key: String) -> Result<Stat, Error> {
        let store = self.store.clone();
        let k = key.clone();
        blocking(move || store.stat(&k))
            .await??
            .ok_or(Error::NotFound(key))
    }

    /// Every record this node knows, tombstones included, sorted by key.
    pub async fn list(&self) -> Result<Vec<Stat>, Error> {
        let store = self.store.clone();
        Ok(blocking(move || store.list()).await??)
    }

    /// Reads a file: locally if its content is here, else fetched from peers and streamed as
    /// chunks verify. For a key this node has never heard of, the peers are asked for its record
    /// first. `range` is a half-open byte range within the file.
    pub async fn get(&self, key: String, range: Option<(u64, u64)>) -> Result<Download, Error> {
        let store = self.store.clone();
        let k = key.clone();
        let mut record = blocking(move || store.record(&k)).await??;
        if record.is_none() {
            record = self.lookup(&key).await?;
        }
        let record = match record {
            Some(r) if !r.is_tombstone() => r,
            _ => return Err(Error::NotFound(key)),
        };
        download::start(self.store.clone(), self.replicator.clone(), record, range).await
    }

    /// Asks the connected peers for a key's record, merges the winner into the store.
    async fn lookup(&self, key: &str) -> Result<Option<Record>, Error> {
        let peers = self.network.peers().await?;
        let mut asks: futures::stream::FuturesUnordered<_> = peers
            .into_iter()
            .map(|p| {
                let network = self.network.clone();
                let request = fetch::Request::Record {
                    key: key.to_string(),
                };
                async move {
                    match network.fetch(p.peer_id, request).await {
                        Ok(fetch::Response::Record { record }) => Some((p.peer_id, record)),
                        _ => None,
                    }
                }
            })
            .collect();
        // Keep every answer that arrives in time; a slow peer does not void the others.
        let mut answers = Vec::new();
        let deadline = tokio::time::Instant::now() + self.lookup_timeout;
        while let Ok(Some(answer)) = tokio::time::timeout_at(deadline, asks.next()).await {
            answers.push(answer);
        }
        let mut best: Option<(PeerId, Record)> = None;
        for (peer, r) in answers.into_iter().flatten() {
            if r.key != key || r.validate().is_err() {
                tracing::debug!(%peer, "ignoring invalid record in lookup answer");
                continue;
            }
            if best.as_ref().is_none_or(|(_, b)| r.supersedes(b)) {
                best = Some((peer, r));
            }
        }
        let Some((peer, record)) = best else {
            return Ok(None);
        };
        let store = self.store.clone();
        let r = record.clone();
        blocking(move || store.apply(r)).await??;
        self.replicator.hint(record.cid, peer);
        let store = self.store.clone();
        let key = key.to_string();
        Ok(blocking(move || store.record(&key)).await??)
    }

    /// This node's peer id and listen addresses.
    pub async fn info(&self) -> Result<NodeInfo, Error> {
        self.network.ask(|reply| Command::Info { reply }).await
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.network.peers().await
    }

    /// Dials an address (with or without `/p2p/<id>`).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        self.network
            .ask(|reply| Command::Dial { addr, reply })
            .await?
    }

    /// Blocks (or unblocks) a peer: its connections are closed and refused. Used to cut a
    /// network in two in tests, and by operators to shut out a misbehaving peer.
    pub async fn block(&self, peer: PeerId, blocked: bool) -> Result<(), Error> {
        self.network.send(Command::Block { peer, blocked }).await
    }

    /// Waits until this node holds the complete content of `key` (or its tombstone if
    /// `deleted`), polling the store; for tests and the demo.
    pub async fn wait_for(&self, key: &str, deleted: bool, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let store = self.store.clone();
            let k = key.to_string();
            let state = blocking(move || store.stat(&k))
                .await
                .ok()
                .and_then(|r| r.ok());
            let done = match state.flatten() {
                Some(s) if deleted => s.record.is_tombstone(),
                Some(s) => s.local,
                None => false,
            };
            if done {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))
}

/// A started node: its client, and the task that owns the swarm.
pub struct Node {
    client: Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Opens the identity and store in the data dir, starts listening, dials the bootstrap
    /// peers and spawns the event loop. Returns once the listeners are bound.
    pub async fn start(config: Config) -> Result<Node, Error> {
        crate::protocols::validate_network(&config.network).map_err(Error::Start)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            Error::Start(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let keypair = crate::identity::load_or_create(&config.data_dir)
            .map_err(|e| Error::Start(e.to_string()))?;
        let peer_id = keypair.public().to_peer_id();
        let store_dir = config.data_dir.join("store");
        let store = blocking(move || Store::open(&store_dir, peer_id.to_bytes())).await??;
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let network = Network {
            commands: commands_tx,
        };
        let stats = Arc::new(SyncStats::default());
        let replicator = replicate::Replicator::new(
            store.clone(),
            network.clone(),
            config.chunks_in_flight,
            config.max_transfers,
        );
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let event_loop = event_loop::EventLoop::new(
            keypair,
            config.clone(),
            store.clone(),
            network.clone(),
            replicator.clone(),
            stats.clone(),
            commands_rx,
            shutdown_rx,
        )
        .await?;
        let task = tokio::spawn(event_loop.run());
        replicator.resume();
        Ok(Node {
            client: Client {
                peer_id,
                network,
                store,
                replicator,
                stats,
                lookup_timeout: config.lookup_timeout,
            },
            shutdown: Some(shutdown_tx),
            task,
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn peer_id(&self) -> PeerId {
        self.client.peer_id
    }

    /// Stops the event loop, closing every connection, and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.client.replicator.stop();
        let _ = (&mut self.task).await;
    }

    /// Waits for the event loop to end (it ends on shutdown or a fatal error).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}
