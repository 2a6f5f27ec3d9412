//! The running peer: configuration, start-up and shutdown, and the [`Client`] handle. It wires
//! the layers together: the network task ([`crate::net`]), which owns the swarm, and replication
//! ([`crate::replication`]), which owns what the node does with the network, both over the
//! store. Every task a node spawns is owned by its [`Tasks`]: [`Node::shutdown`] returns once
//! all of them have ended, so the data dir can be reopened at once.

mod client;
mod config;

pub use client::*;
pub use config::*;

mod alone;
mod chunk_channel;
mod history;
mod membership;
mod scrub;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use crate::net::{self, Network};
use crate::record::{Record, CHUNK_SIZE};
use crate::replication::{self, download, Replication};
use crate::store::{Stat, Store, StoreError};
use crate::tasks::{TaskFailed, Tasks};
use crate::trust::{self, Grant, Member, Role, Ticket};

pub use crate::net::{NodeInfo, PeerInfo, AGENT_VERSION, PROTOCOL_VERSION};
pub use crate::replication::SyncStats;
pub use download::Download;

/// Chunks of a put waiting for the store, at most (each up to 1 MiB).
const PUT_QUEUE: usize = 4;

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
    #[error(transparent)]
    Network(net::Error),
    #[error("cannot read {path}: {reason}")]
    Source { path: String, reason: String },
    #[error("{0}")]
    Start(String),
    #[error(transparent)]
    Task(#[from] TaskFailed),
    #[error("{0}")]
    NotAllowed(String),
    #[error(
        "bad version {0}: give a version id as `dfs log KEY` prints it (at least 8 hex digits)"
    )]
    BadVersion(String),
}

impl From<net::Error> for Error {
    fn from(e: net::Error) -> Error {
        match e {
            net::Error::Stopped => Error::Stopped,
            e => Error::Network(e),
        }
    }
}

impl From<download::Error> for Error {
    fn from(e: download::Error) -> Error {
        match e {
            download::Error::NotFound(key) => Error::NotFound(key),
            download::Error::Range { start, end, size } => Error::Range { start, end, size },
            download::Error::Unavailable { key, reason } => Error::Unavailable { key, reason },
            download::Error::Store(e) => Error::Store(e),
            download::Error::Task(e) => Error::Task(e),
        }
    }
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

/// A started node: its client, the tasks it owns, and the network task's handle.
pub struct Node {
    client: Client,
    tasks: Tasks,
    network_task: tokio::task::JoinHandle<Option<()>>,
}

impl Node {
    /// Opens the identity and store in the data dir, starts listening, dials the bootstrap
    /// peers and spawns the network task and replication. Returns once the listeners are bound.
    pub async fn start(config: Config) -> Result<Node, Error> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            Error::Start(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let decided = membership::decide(
            &config.data_dir,
            config.join.as_ref(),
            !config.bootstrap.is_empty(),
        )?;
        let keypair = decided.keypair;
        let members = decided.members;
        let settings = membership::settings(
            &config.data_dir,
            decided.network.as_deref(),
            &keypair,
            config.join.as_ref(),
            config.replicas,
            config.wall.now_ms(),
            decided.created,
        )?;
        let peer_id = keypair.public().to_peer_id();
        let tasks = Tasks::new();
        let store_dir = crate::datadir::DataDir::new(&config.data_dir).store();
        let signer = keypair.clone();
        let time = std::sync::Arc::new(crate::clock::NetworkTime::new(
            config.wall.clone(),
            config.max_clock_offset.as_millis() as u64,
        ));
        let store = tasks
            .blocking(move || Store::open_with(&store_dir, signer, time))
            .await??;
        store.set_admission(members.admission());
        let stored = store.clone();
        let grants = tasks.blocking(move || stored.grants()).await??;
        membership::load_grants(&members, grants);
        let refusals = std::sync::Arc::new(replication::admission::Refusals::default());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let gate = Replication::gate(&members, &refusals);
        let (network, events, event_loop) = match net::start(
            keypair,
            config.net(decided.network.clone(), metrics.clone()),
            gate,
            tasks.token().clone(),
        )
        .await
        {
            Ok(started) => started,
            Err(e) => {
                tasks.shutdown().await;
                return Err(e.into());
            }
        };
        let policy = replication::policy::Policy::new(
            peer_id,
            members.clone(),
            &replication::policy::PolicyConfig {
                capacity: config.capacity,
                repair_after: config.repair_after,
                cache_size: config.cache_size,
                settings_file: Some(crate::datadir::DataDir::new(&config.data_dir).settings_file()),
                known: net::address_book::AddressBook::load(Some(
                    crate::datadir::DataDir::new(&config.data_dir).peers_file(),
                ))
                .entries()
                .iter()
                .map(|e| e.peer)
                .collect(),
            },
        );
        if let Some(settings) = settings {
            policy.set_settings(settings);
        }
        let replication = Replication::new(
            store.clone(),
            network.clone(),
            tasks.clone(),
            config.replication(metrics.clone()),
            members,
            refusals,
            policy,
        );
        if let Err(e) = replication.serve_streams() {
            tasks.shutdown().await;
            return Err(e.into());
        }
        if decided.created {
            let id = decided
                .network
                .as_deref()
                .expect("a created network has an id");
            // The network exists from here on: its settings, then its id, in the data dir.
            let kept = match replication.policy().settings() {
                Some(s) => membership::keep_settings(&config.data_dir, &s),
                None => Ok(()),
            };
            if let Err(e) = kept.and_then(|()| membership::remember(&config.data_dir, id)) {
                tasks.shutdown().await;
                return Err(e);
            }
            tracing::info!(
                network = %id,
                "created a new network, owned by this node; `dfs invite` lets other machines in"
            );
        }
        // A grant held since start: a ticket's (stored now), or a revocation a crash cut short.
        if let Some(ticket) = &config.join {
            replication
                .add_grants(vec![ticket.grant.clone()])
                .await
                .map_err(merge_error)?;
        }
        let stored = store.clone();
        tasks.blocking(move || stored.drop_refused()).await??;
        if decided.network.is_none() {
            tasks.spawn(membership::learn(
                config.data_dir.clone(),
                network.clone(),
                replication.clone(),
            ));
        }
        tasks.spawn(alone::watch(
            network.clone(),
            replication.clone(),
            !config.bootstrap.is_empty() || config.join.is_some(),
            config.alone_after,
        ));
        let network_task = tasks.spawn(event_loop.run());
        tasks.spawn(replication.clone().run(events));
        tasks.spawn(scrub::run(
            store.clone(),
            replication.clone(),
            tasks.clone(),
            config.scrub_interval,
            config.scrub_rate,
        ));
        tasks.spawn(history::run(
            store.clone(),
            tasks.clone(),
            config.keep,
            config.keep_bytes,
        ));
        Ok(Node {
            client: Client {
                peer_id,
                network,
                store,
                replication,
                tasks: tasks.clone(),
                lookup_timeout: config.lookup_timeout,
                metrics,
            },
            tasks,
            network_task,
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn peer_id(&self) -> PeerId {
        self.client.peer_id
    }

    /// Stops every task of the node (closing every connection) and waits until all of them,
    /// blocking store work included, have ended. Once it returns and the node's clients are
    /// dropped, the data dir can be opened again at once.
    pub async fn shutdown(self) {
        tracing::info!("dfs node stopping");
        self.tasks.shutdown().await;
    }

    /// Waits for the network task to end (it ends on shutdown or a fatal error).
    pub async fn wait(&mut self) {
        let _ = (&mut self.network_task).await;
    }
}
