//! The one task that owns the libp2p swarm. It carries out [`Command`]s, hands inbound requests,
//! validated gossip records and peer changes to the application as [`Event`]s, sends back the
//! answers it is given, and drives discovery on a timer. It also manages connections: it sheds
//! foreign peers beyond the peer limit, closes connections whose pings fail, charges discovery
//! dials to a budget, and reports failed handshakes in one rate-limited line each. It keeps
//! the address book, dials what mDNS finds (with `--mdns`), drives content routing over
//! Kademlia (the routing table fed with identified dfs peers, this node's announcements queued
//! and batched, provider lookups with a deadline), and records libp2p's metrics. It never
//! touches the store.

mod commands;
mod connections;
mod gossip;
mod providers;
mod requests;

use connections::dial_reason;
use gossip::Topics;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::metrics::Recorder;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::{ConnectionId, DialError, ListenError};
use libp2p::{gossipsub, identify, identity::Keypair, kad, mdns, ping, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::address_book::AddressBook;
use super::behaviour::{Behaviour, BehaviourEvent};
use super::discovery::{self, Discovery};
use super::limits::{self, DialBudget};
use super::routing;
use super::transport::{self, ConnectError};
use super::{Command, Config, Error, Event, Gate, GossipMessage, NodeInfo, PeerInfo, Verdict};
use crate::log_limit::{BurstLogLimit, KeyedLogLimit};
use crate::protocols::{fetch, members, peers, records, sync};
use crate::record::wall_ms;

/// How often the loop looks at its timers.
const TICK: Duration = Duration::from_millis(250);
/// Least time between two announcements triggered by newcomers.
const ANNOUNCE_MIN_GAP: Duration = Duration::from_millis(500);
/// How long start-up waits for the listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Inbound requests of one peer waiting for their answer at once; more are refused with an
/// error, so that one peer's flood cannot starve the others.
const MAX_INBOUND_PER_PEER: usize = 48;
/// The answer to a request refused because its peer has too many in progress, or because the
/// application is not keeping up.
const BUSY: &str = "busy: too many requests in progress";
/// Lines about what peers (or strangers) do to a node: at most one per reason per period.
const LOG_PERIOD: Duration = Duration::from_secs(10);
/// How often expired provider records of other peers are dropped.
const PROVIDER_SWEEP: Duration = Duration::from_secs(60);
/// Providers dialled on behalf of lookups whose dial is still under way, at most.
const MAX_PROVIDER_DIALS: usize = 256;

/// Lines about peers connecting and disconnecting (info): a peer may reconnect as fast as it
/// likes, so at most 30 a minute; the next line says how many were left out.
static CONNECTION_LOG: BurstLogLimit = BurstLogLimit::new(30, Duration::from_secs(60));

/// An inbound request's answer, once the application has given it.
enum Answer {
    Fetch(
        PeerId,
        ResponseChannel<fetch::Response>,
        Result<fetch::Response, oneshot::error::RecvError>,
    ),
    Sync(
        PeerId,
        ResponseChannel<sync::Response>,
        Result<sync::Response, oneshot::error::RecvError>,
    ),
}

#[derive(Debug)]
struct Connected {
    /// When the first connection of the peer was established.
    since: Instant,
    addrs: Vec<Multiaddr>,
    remote: Option<Multiaddr>,
    agent: Option<String>,
    /// The peer announced the dfs sync protocol through identify.
    dfs: bool,
    /// A dfs peer among the first `max_peers` ones: never shed, and past the hard connection
    /// limit. (Anyone can claim the dfs protocols, so the privilege is bounded.)
    protected: bool,
}

/// A [`Command::Providers`] lookup under way.
struct Lookup {
    found: Vec<PeerId>,
    reply: oneshot::Sender<Result<Vec<PeerId>, Error>>,
    deadline: Instant,
}

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: Config,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
    answers: FuturesUnordered<BoxFuture<'static, Answer>>,
    inbound_per_peer: HashMap<PeerId, usize>,
    pending_fetch: HashMap<OutboundRequestId, oneshot::Sender<Result<fetch::Response, Error>>>,
    pending_sync: HashMap<OutboundRequestId, oneshot::Sender<Result<sync::Response, Error>>>,
    discovery: Discovery,
    /// The network's topics, once its id is known.
    topics: Option<Topics>,
    gate: std::sync::Arc<dyn Gate>,
    connected: HashMap<PeerId, Connected>,
    listen_addrs: Vec<Multiaddr>,
    budget: DialBudget,
    /// The last successful ping of each connection that answers pings.
    last_pong: HashMap<ConnectionId, Instant>,
    /// This node's rate limit of lines that peers can trigger.
    logs: KeyedLogLimit,
    announce_due: bool,
    last_announce: Option<Instant>,
    last_redial: Instant,
    /// The dfs peers this node has seen, kept in the data dir.
    book: AddressBook,
    /// Dials of [`Command::Connect`], answered when they connect or fail.
    pending_connect: HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<PeerId, Error>>)>,
    /// Provider lookups under way, by Kademlia query.
    lookups: HashMap<kad::QueryId, Lookup>,
    /// Providers dialled for a lookup: the addresses that reach them are learnt.
    provider_dials: HashSet<PeerId>,
    /// Kademlia's routing table had a peer at the last look.
    routable: bool,
    last_provider_sweep: Instant,
    /// Shared with the [`super::Network`] handles.
    reach: std::sync::Arc<super::Reach>,
}

impl EventLoop {
    pub(crate) async fn new(
        keypair: Keypair,
        config: Config,
        gate: std::sync::Arc<dyn Gate>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        shutdown: CancellationToken,
    ) -> Result<EventLoop, Error> {
        let local = keypair.public().to_peer_id();
        let topics = config.network.as_deref().map(Topics::of);
        let max_peers = config.max_peers;
        let transport = transport::build(&keypair, config.swarm_key)
            .map_err(|e| Error::Start(format!("transport: {e}")))?;
        // Bytes of every substream, by direction (`libp2p_bandwidth_bytes_total`).
        let transport = {
            use libp2p::core::{muxing::StreamMuxerBox, Transport as _};
            config
                .metrics
                .with_registry(|r| libp2p::metrics::BandwidthTransport::new(transport, r))
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                .boxed()
        };
        let behaviour = Behaviour::new(
            &keypair,
            max_peers,
            config.mdns,
            config.network.as_deref(),
            config.liveness,
            &config.metrics,
        )
        .map_err(|e| Error::Start(format!("behaviour: {e}")))?;
        // Built by hand rather than with `SwarmBuilder`, whose transport combinators would
        // wrap handshake errors in types that hide their cause from the logs.
        let mut swarm = Swarm::new(
            transport,
            behaviour,
            local,
            libp2p::swarm::Config::with_tokio_executor()
                .with_idle_connection_timeout(Duration::from_secs(3600)),
        );
        if let Some(topics) = &topics {
            topics.subscribe(&mut swarm.behaviour_mut().gossipsub)?;
        }
        let mut listeners = HashSet::new();
        for addr in &config.listen {
            let id = swarm.listen_on(addr.clone()).map_err(|e| {
                Error::Start(format!(
                    "cannot listen on {addr}: {}",
                    crate::error_chain(&e)
                ))
            })?;
            listeners.insert(id);
        }
        // Wait until every listener is bound, so callers (and tests) see the real addresses.
        let mut listen_addrs = Vec::new();
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while !listeners.is_empty() {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .map_err(|_| Error::Start("listeners did not start in time".into()))?;
            match event {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    tracing::info!("listening on {address}/p2p/{local}");
                    listen_addrs.push(address);
                    listeners.remove(&listener_id);
                }
                SwarmEvent::ListenerClosed {
                    addresses, reason, ..
                } => {
                    return Err(Error::Start(format!(
                        "listener {addresses:?} closed: {reason:?}"
                    )))
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(Error::Start(format!("listener failed: {error}")))
                }
                other => tracing::trace!(?other, "event during start-up"),
            }
        }
        // Bootstrap peers always get in, whatever the connection limits.
        for addr in &config.bootstrap {
            if let (_, Some(peer)) = discovery::split_peer(addr) {
                swarm.behaviour_mut().limits.bypass_peer_id(&peer);
            }
        }
        if let Some(key) = &config.swarm_key {
            tracing::info!(
                swarm_key_fingerprint = %key.fingerprint(),
                "in a private network: only peers holding its swarm key can connect"
            );
        }
        match &config.network {
            Some(network) => tracing::info!(peer_id = %local, %network, "dfs node started"),
            None => tracing::info!(
                peer_id = %local,
                "dfs node started; learning the network from the bootstrap peers"
            ),
        }
        if config.mdns {
            tracing::info!("looking for peers on the local networks (mDNS)");
        }
        let book = AddressBook::load(config.address_book.clone());
        let mut this = EventLoop {
            book,
            pending_connect: HashMap::new(),
            discovery: Discovery::new(local, &config.bootstrap),
            swarm,
            config,
            commands,
            events,
            shutdown,
            answers: FuturesUnordered::new(),
            inbound_per_peer: HashMap::new(),
            pending_fetch: HashMap::new(),
            pending_sync: HashMap::new(),
            topics,
            gate,
            connected: HashMap::new(),
            listen_addrs,
            budget: DialBudget::new(Instant::now()),
            last_pong: HashMap::new(),
            logs: KeyedLogLimit::new(LOG_PERIOD),
            announce_due: true,
            last_announce: None,
            last_redial: Instant::now(),
            lookups: HashMap::new(),
            provider_dials: HashSet::new(),
            routable: false,
            last_provider_sweep: Instant::now(),
            reach: Default::default(),
        };
        this.dial_remembered();
        Ok(this)
    }

    /// Dials the peers of the address book (the most recently seen first, up to the peer
    /// limit) at once, and keeps them for the periodic re-dials.
    fn dial_remembered(&mut self) {
        let now = Instant::now();
        let local = self.local();
        let entries: Vec<_> = self
            .book
            .entries()
            .iter()
            .filter(|e| e.peer != local)
            .take(self.config.max_peers as usize)
            .cloned()
            .collect();
        if entries.is_empty() {
            return;
        }
        tracing::info!(
            peers = entries.len(),
            "dialling the peers remembered in the address book"
        );
        for e in entries {
            self.discovery.learn(e.peer, e.addrs, now);
            self.discovery.mark_dfs(e.peer);
            let addrs = self.discovery.addrs(&e.peer);
            if addrs.is_empty() {
                continue;
            }
            self.dial(
                DialOpts::peer_id(e.peer)
                    .addresses(addrs.into_iter().take(limits::MAX_DIAL_ADDRS).collect())
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            );
        }
    }

    /// The control of raw streams, for the [`super::Network`] handle.
    pub(crate) fn stream_control(&self) -> libp2p_stream::Control {
        self.swarm.behaviour().streams.new_control()
    }

    pub(crate) fn reach(&self) -> std::sync::Arc<super::Reach> {
        self.reach.clone()
    }

    /// Runs until shutdown is requested; the swarm (and every connection) is dropped at the end.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                Some(answer) = self.answers.next(), if !self.answers.is_empty() => self.on_answer(answer),
                _ = tick.tick() => self.on_tick(),
                _ = self.shutdown.cancelled() => break,
            }
        }
        tracing::info!("dfs node stopping");
        self.book.save(Instant::now());
        for (_, reply) in self.pending_fetch.drain() {
            let _ = reply.send(Err(Error::Stopped));
        }
        for (_, reply) in self.pending_sync.drain() {
            let _ = reply.send(Err(Error::Stopped));
        }
    }

    fn local(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    fn dial(&mut self, opts: libp2p::swarm::dial_opts::DialOpts) {
        let connection = opts.connection_id();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(error = %e, "dial not started");
            self.discovery.dial_not_started(connection, Instant::now());
        }
    }

    // ---- timers ----

    fn on_tick(&mut self) {
        let now = Instant::now();
        for opts in self.discovery.due_bootstrap_dials(now) {
            self.dial(opts);
        }
        let announce_every = self.config.announce_interval;
        let announce = match self.last_announce {
            None => true,
            Some(t) => {
                now.duration_since(t) >= announce_every
                    || (self.announce_due && now.duration_since(t) >= ANNOUNCE_MIN_GAP)
            }
        };
        if announce {
            self.announce();
        }
        if now.duration_since(self.last_redial) >= self.config.redial_interval {
            self.last_redial = now;
            // dfs peers first: forged announcements must not crowd them out of the budget.
            for peer in self.discovery.known_peers() {
                if self.connected.len() >= self.config.max_peers as usize {
                    break;
                }
                if !self.connected.contains_key(&peer) {
                    if let Some(opts) =
                        self.discovery
                            .dial_discovered(peer, now, &mut self.budget, None)
                    {
                        self.dial(opts);
                    }
                }
            }
        }
        self.shed(now);
        self.close_dead(now);
        self.book.save_if_due(now);
        self.end_late_lookups(now);
        if now.duration_since(self.last_provider_sweep) >= PROVIDER_SWEEP {
            self.last_provider_sweep = now;
            if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                kad.store_mut().sweep(std::time::Instant::now());
            }
        }
        self.announce_provided();
    }

    // ---- content routing ----

    // ---- commands ----

    // ---- swarm events ----
}
