//! The network layer: the one task that owns the libp2p swarm ([`event_loop`]), the cloneable
//! [`Network`] handle that sends it [`Command`]s, and the [`Event`]s it emits (validated gossip,
//! inbound requests, peers that come and go). It knows no store: what to do with an event is
//! the replication layer's business.
//!
//! - [`address_book`]: the peers remembered in the data dir, dialled at start.
//! - [`behaviour`]: the combined libp2p behaviour (limits, identify, ping, gossipsub, fetch,
//!   sync, raw streams, Kademlia, mDNS).
//! - [`discovery`]: bootstrap re-dialling with back-off and gossip peer discovery state.
//! - [`event_loop`]: the task that owns the swarm (one file per kind of work: commands,
//!   connections, gossip, inbound requests, content routing).
//! - [`limits`]: connection management policy (which peers to shed) and the dial budget.
//! - [`routing`]: content routing over Kademlia (provider records of content ids, batched
//!   announcements, a bounded provider store).
//! - [`transport`]: TCP (behind a DNS resolver), the optional private-network layer (`pnet`),
//!   noise and yamux, with a handshake timeout and failures classified for the logs.

pub mod address_book;
pub mod behaviour;
pub mod discovery;
pub mod event_loop;
pub mod limits;
pub mod routing;
pub mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::request_response::OutboundFailure;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::protocols::{fetch, sync};
use crate::record::{Hash, Record};
use crate::trust::Grant;

/// Version string announced through identify as the agent version: `dfs/<version>`.
pub const AGENT_VERSION: &str = concat!("dfs/", env!("CARGO_PKG_VERSION"));
/// The identify protocol version of dfs nodes.
pub const PROTOCOL_VERSION: &str = "/dfs/1.0.0";
/// Bound of the command channel into the event loop.
const COMMAND_QUEUE: usize = 256;
/// Bound of the event channel out of the event loop. When it is full, gossip records are
/// dropped (anti-entropy brings them later) and inbound requests are answered "busy".
const EVENT_QUEUE: usize = 1024;

/// How the network layer runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// The network id (its owner's peer id); namespaces the gossip topics so separate networks
    /// never mix. `None` until learnt from a peer ([`Network::join`]).
    pub network: Option<String>,
    /// Most connected peers; gossip discovery stops dialling at this number.
    pub max_peers: u32,
    /// How often the node announces itself on the peers topic.
    pub announce_interval: Duration,
    /// This node's capacity in bytes, announced with its addresses (`None`: not announced).
    pub capacity: Option<u64>,
    /// How often known but unconnected peers are dialled again.
    pub redial_interval: Duration,
    /// The pre-shared key of a private network (`pnet`): only peers holding it can connect.
    pub swarm_key: Option<transport::SwarmKey>,
    /// Where the address book is kept (`None`: not kept).
    pub address_book: Option<PathBuf>,
    /// Discover peers on the local networks by mDNS.
    pub mdns: bool,
    /// How connections are watched (pings, and when a silent one is closed).
    pub liveness: behaviour::Liveness,
    /// The node's metrics, which the network task records into.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// How long [`Network::connect`] waits for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a network operation failed. Failures of libp2p are kept as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("peer {0} is not connected")]
    NotConnected(PeerId),
    #[error("request to {peer} failed: {error}")]
    Outbound {
        peer: PeerId,
        error: OutboundFailure,
    },
    #[error("cannot open a stream to {peer}: {error}")]
    OpenStream {
        peer: PeerId,
        error: libp2p_stream::OpenStreamError,
    },
    #[error("cannot dial {addr}: {reason}")]
    Dial { addr: Multiaddr, reason: String },
    #[error(
        "cannot provide {refused} content ids: this node already provides {max}, the most it may"
    )]
    TooManyProvided { refused: usize, max: usize },
    #[error(
        "content routing is off until the next start: this node learnt its network after start \
         (its Kademlia protocol names the network)"
    )]
    NoContentRouting,
    #[error("the network task has stopped")]
    Stopped,
    #[error("{0}")]
    Start(String),
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
    /// Identify showed that the peer speaks the dfs protocols.
    pub dfs: bool,
}

/// What the network tells the application.
#[derive(Debug)]
pub enum Event {
    /// A record from gossip that decodes and follows the rules by itself, by an author the
    /// gate admits; its signature is not checked yet. Gossipsub forwards it once the
    /// application passes its [`Verdict`] on it with [`Network::judge`]. `sources` are the
    /// peers likely to hold its content: the publisher, then the forwarder.
    Record {
        record: Record,
        sources: Vec<PeerId>,
        message: GossipMessage,
    },
    /// A fetch request; the answer goes back through `reply` (dropping it resets the stream).
    Fetch {
        peer: PeerId,
        request: fetch::Request,
        reply: oneshot::Sender<fetch::Response>,
    },
    /// A sync request, answered the same way.
    Sync {
        peer: PeerId,
        request: sync::Request,
        reply: oneshot::Sender<sync::Response>,
    },
    /// A verified grant from gossip whose issuer may grant (already accepted for forwarding).
    Grant { grant: Grant, source: PeerId },
    /// A peer that speaks dfs is connected and identified.
    PeerReady(PeerId),
    /// The last connection to a peer closed.
    PeerGone(PeerId),
    /// A peer announced itself on the peers topic (signed by it), with its capacity in bytes
    /// if it gave one.
    Announced { peer: PeerId, capacity: Option<u64> },
}

/// Commands the event loop carries out.
#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        record: Record,
    },
    PublishGrant {
        grant: Grant,
    },
    Join {
        network: String,
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
    Connect {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, Error>>,
    },
    Block {
        peer: PeerId,
        blocked: bool,
    },
    Judge {
        message: GossipMessage,
        verdict: Verdict,
    },
    Provide {
        keys: Vec<Hash>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Unprovide {
        key: Hash,
    },
    Providers {
        key: Hash,
        reply: oneshot::Sender<Result<Vec<PeerId>, Error>>,
    },
    ConnectPeer {
        peer: PeerId,
        reply: oneshot::Sender<Result<PeerId, Error>>,
    },
}

/// The handle of the network task. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    local: PeerId,
    commands: mpsc::Sender<Command>,
    streams: libp2p_stream::Control,
    reach: std::sync::Arc<Reach>,
}

/// What the network task knows of its reach, readable without asking it (so a node that cannot
/// reach anyone can say why at once).
#[derive(Debug, Default)]
pub struct Reach {
    last_dial_error: std::sync::Mutex<Option<String>>,
}

impl Reach {
    /// The last dial that failed, as `ADDRESS: REASON`, if any failed since start.
    pub fn last_dial_error(&self) -> Option<String> {
        self.last_dial_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn dial_failed(&self, what: String) {
        *self
            .last_dial_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(what);
    }
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Network {
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// What the network task knows of its reach.
    pub fn reach(&self) -> &Reach {
        &self.reach
    }

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

    /// Sends a fetch request to a connected peer.
    pub async fn fetch(
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

    /// Sends a sync request to a connected peer.
    pub async fn sync(
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

    /// Publishes a record on the records topic.
    pub async fn publish(&self, record: Record) -> Result<(), Error> {
        self.send(Command::Publish { record }).await
    }

    /// Publishes a grant on the members topic.
    pub async fn publish_grant(&self, grant: Grant) -> Result<(), Error> {
        self.send(Command::PublishGrant { grant }).await
    }

    /// Subscribes to the topics of a network learnt after start (a no-op if it is the one the
    /// node already has).
    pub async fn join(&self, network: String) -> Result<(), Error> {
        self.send(Command::Join { network }).await
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// This node's peer id and listen addresses.
    pub async fn info(&self) -> Result<NodeInfo, Error> {
        self.ask(|reply| Command::Info { reply }).await
    }

    /// Dials an address (with or without `/p2p/<id>`).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        self.ask(|reply| Command::Dial { addr, reply }).await?
    }

    /// Dials an address and answers once connected, with the peer's id; fails with the dial's
    /// error, or after [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, Error> {
        if !is_supported(&addr) {
            return Err(Error::Dial {
                reason: unsupported(&addr),
                addr,
            });
        }
        let wait = self.ask(|reply| Command::Connect {
            addr: addr.clone(),
            reply,
        });
        match tokio::time::timeout(CONNECT_TIMEOUT, wait).await {
            Ok(result) => result?,
            Err(_) => Err(Error::Dial {
                addr,
                reason: format!("no connection within {CONNECT_TIMEOUT:?}"),
            }),
        }
    }

    /// Dials a peer by its id alone, with the addresses this node knows for it (identify,
    /// announcements, the address book, Kademlia's routing table and the providers found by
    /// [`Self::providers`]), and answers once connected; fails with the dial's error (no
    /// known address, unreachable), or after [`CONNECT_TIMEOUT`].
    pub async fn connect_peer(&self, peer: PeerId) -> Result<(), Error> {
        let wait = self.ask(|reply| Command::ConnectPeer { peer, reply });
        match tokio::time::timeout(CONNECT_TIMEOUT, wait).await {
            Ok(result) => result?.map(|_| ()),
            Err(_) => Err(Error::Dial {
                addr: Multiaddr::empty().with(libp2p::multiaddr::Protocol::P2p(peer)),
                reason: format!("no connection within {CONNECT_TIMEOUT:?}"),
            }),
        }
    }

    /// Announces on Kademlia that this node provides these content ids, and keeps announcing
    /// them (every [`routing::REPROVIDE_INTERVAL`]) until [`Self::unprovide`]. The
    /// announcements are queued: at most [`routing::MAX_PROVIDE_QUERIES`] run at once, and
    /// none while the node knows no peer. Ids already provided keep their schedule. Fails
    /// (for the ids beyond it) when the node would provide more than
    /// [`routing::MAX_PROVIDED_KEYS`], and with [`Error::NoContentRouting`] on a node that
    /// learnt its network after start.
    pub async fn provide(&self, keys: Vec<Hash>) -> Result<(), Error> {
        self.ask(|reply| Command::Provide { keys, reply }).await?
    }

    /// Stops announcing a content id (the records other nodes hold expire within
    /// [`routing::PROVIDER_TTL`]).
    pub async fn unprovide(&self, key: Hash) -> Result<(), Error> {
        self.send(Command::Unprovide { key }).await
    }

    /// The peers that provide a content id, connected or not, found by a Kademlia query that
    /// ends when it has asked the closest peers, has found [`routing::MAX_PROVIDERS_PER_KEY`]
    /// providers, or after [`routing::PROVIDERS_TIMEOUT`] (then with those found so far). This
    /// node is not among them. The providers' addresses are kept, so [`Self::connect_peer`]
    /// reaches them; providers that are not connected are dialled at once. Fails with
    /// [`Error::NoContentRouting`] on a node that learnt its network after start.
    pub async fn providers(&self, key: Hash) -> Result<Vec<PeerId>, Error> {
        self.ask(|reply| Command::Providers { key, reply }).await?
    }

    /// Blocks (or unblocks) a peer: its connections are closed and refused.
    pub async fn block(&self, peer: PeerId, blocked: bool) -> Result<(), Error> {
        self.send(Command::Block { peer, blocked }).await
    }

    /// Passes the application's verdict on a gossiped record to gossipsub: an accepted one is
    /// forwarded, an ignored one dropped, a rejected one dropped and counted against the peer
    /// that forwarded it (gossipsub's score).
    pub async fn judge(&self, message: GossipMessage, verdict: Verdict) -> Result<(), Error> {
        self.send(Command::Judge { message, verdict }).await
    }

    /// Opens a raw stream to a connected peer: bulk bytes bypass the event loop.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<Stream, Error> {
        self.streams
            .clone()
            .open_stream(peer, protocol)
            .await
            .map_err(|error| Error::OpenStream { peer, error })
    }

    /// Accepts inbound raw streams of a protocol (once per protocol).
    pub fn accept(&self, protocol: StreamProtocol) -> Option<libp2p_stream::IncomingStreams> {
        self.streams.clone().accept(protocol).ok()
    }
}

/// True for `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>[/p2p/<id>]`, the addresses this node's
/// transport dials.
pub fn is_supported(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    let parts: Vec<Protocol> = addr.iter().collect();
    let host = |p: &Protocol| {
        matches!(
            p,
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
        )
    };
    match parts.as_slice() {
        [h, Protocol::Tcp(_)] | [h, Protocol::Tcp(_), Protocol::P2p(_)] => host(h),
        _ => false,
    }
}

/// Why `addr` cannot be dialled, in one line.
fn unsupported(addr: &Multiaddr) -> String {
    format!(
        "unsupported address {addr}: dfs dials /ip4/…/tcp/…, /ip6/…/tcp/…, /dns4/…/tcp/…, \
         /dns6/…/tcp/… and /dns/…/tcp/… addresses (optionally ending in /p2p/<peer id>)"
    )
}

/// Refuses a TCP listen address whose port another socket holds. libp2p binds its listeners
/// with `SO_REUSEPORT` (so that dials can reuse the port), which would let a second node bind
/// the same port and take the first one's connections; a plain bind first says "in use".
fn probe_listen(addr: &Multiaddr) -> Result<(), Error> {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let port = match parts.next() {
        Some(Protocol::Tcp(port)) => port,
        _ => return Ok(()),
    };
    let why = |e: &std::io::Error| match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "address in use (is another node running on this port?)".to_string()
        }
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{e} (no network interface of this machine has that address; \
             /ip4/0.0.0.0/tcp/PORT listens on all)"
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("{e} (ports below 1024 need privileges)")
        }
        _ => crate::error_chain(e),
    };
    match std::net::TcpListener::bind((ip, port)) {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Start(format!(
            "cannot listen on {addr}: {}",
            why(&e)
        ))),
    }
}

/// A gossip message that gossipsub holds until the application judges it.
#[derive(Debug, Clone)]
pub struct GossipMessage {
    pub(crate) id: libp2p::gossipsub::MessageId,
    pub(crate) source: PeerId,
}

/// The application's verdict on a gossiped record ([`Network::judge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it.
    Accept,
    /// Not for this network now (an author that may not write, a full queue): drop it, with no
    /// cost to the forwarder, which may know less.
    Ignore,
    /// Invalid (its signature fails): drop it and count it against the forwarder.
    Reject,
}

/// What the application decides about gossip before it is forwarded: a record or grant that
/// verifies but whose author or issuer may not write is ignored (neither forwarded nor
/// delivered), without counting against the peer that forwarded it, which may know less.
pub trait Gate: Send + Sync + 'static {
    fn admits_record(&self, record: &Record) -> bool;
    fn admits_grant(&self, grant: &Grant) -> bool;
    /// A record message that does not decode or break the rules by itself arrived from
    /// `source` (signatures are checked by the application: [`Event::Record`]).
    fn invalid_record(&self, source: &libp2p::PeerId, why: &str);
}

/// Builds the swarm, binds the listeners and returns the handle, the event receiver and the
/// event loop, which the caller spawns. Returns once the listeners are bound.
pub async fn start(
    keypair: libp2p::identity::Keypair,
    config: Config,
    gate: std::sync::Arc<dyn Gate>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(Network, mpsc::Receiver<Event>, event_loop::EventLoop), Error> {
    if let Some(network) = &config.network {
        crate::protocols::validate_network(network).map_err(Error::Start)?;
    }
    for addr in &config.listen {
        probe_listen(addr)?;
    }
    for addr in &config.bootstrap {
        if !is_supported(addr) {
            return Err(Error::Start(format!("--bootstrap: {}", unsupported(addr))));
        }
    }
    let local = keypair.public().to_peer_id();
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let event_loop =
        event_loop::EventLoop::new(keypair, config, gate, commands_rx, events_tx, shutdown).await?;
    let network = Network {
        local,
        commands: commands_tx,
        streams: event_loop.stream_control(),
        reach: event_loop.reach(),
    };
    Ok((network, events_rx, event_loop))
}
