//! The one task that owns the libp2p swarm. It carries out [`Command`]s, hands inbound requests,
//! validated gossip records and peer changes to the application as [`Event`]s, sends back the
//! answers it is given, and drives discovery on a timer. It also manages connections: it sheds
//! foreign peers beyond the peer limit, closes connections whose pings fail, charges discovery
//! dials to a budget, and reports failed handshakes in one rate-limited line each. It keeps
//! the address book, dials what mDNS finds (with `--mdns`), drives content routing over
//! Kademlia (the routing table fed with identified dfs peers, this node's announcements queued
//! and batched, provider lookups with a deadline), and records libp2p's metrics. It never
//! touches the store.

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
use super::behaviour::{Behaviour, BehaviourEvent, DEAD_AFTER};
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

/// The gossip topics of one network.
struct Topics {
    network: String,
    records: gossipsub::IdentTopic,
    peers: gossipsub::IdentTopic,
    members: gossipsub::IdentTopic,
}

impl Topics {
    fn of(network: &str) -> Topics {
        Topics {
            network: network.to_string(),
            records: records::topic(network),
            peers: peers::topic(network),
            members: members::topic(network),
        }
    }

    /// Subscribes to every topic, with its scoring.
    fn subscribe(&self, gossipsub: &mut gossipsub::Behaviour) -> Result<(), Error> {
        for topic in [&self.records, &self.peers, &self.members] {
            gossipsub
                .set_topic_params(topic.clone(), super::behaviour::topic_score())
                .map_err(|e| Error::Start(format!("topic scoring: {e}")))?;
            gossipsub
                .subscribe(topic)
                .map_err(|e| Error::Start(format!("subscribe: {e}")))?;
        }
        Ok(())
    }
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
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Start(format!("cannot listen on {addr}: {e}")))?;
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

    /// Starts the announcements that are due, as many as the announcer lets run at once, once
    /// Kademlia's routing table has a peer (alone, announcing would reach nobody; when peers
    /// come after a time alone, every key is announced again).
    fn announce_provided(&mut self) {
        let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        let routable = kad.kbuckets().any(|b| b.num_entries() > 0);
        if routable && !self.routable {
            kad.store_mut().announcer.announce_all_again();
        }
        self.routable = routable;
        if !routable {
            return;
        }
        let now = std::time::Instant::now();
        while let Some(due) = kad.store_mut().announcer.next_due(now) {
            match kad.start_providing(routing::key(&due.0)) {
                Ok(query) => kad.store_mut().announcer.started(query, due),
                Err(e) => {
                    tracing::debug!(key = %due.0, error = ?e, "announcement not started");
                    kad.store_mut().announcer.not_started(due, now);
                }
            }
        }
    }

    /// The addresses known for a peer: identify's or an announcement's, else those of the
    /// provider records this node keeps.
    fn known_addrs(&mut self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut addrs = self.discovery.addrs(peer);
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            addrs.extend(kad.store_mut().addresses_of(peer));
        }
        addrs
    }

    /// Answers the lookups whose deadline passed with the providers found so far.
    fn end_late_lookups(&mut self, now: Instant) {
        let late: Vec<kad::QueryId> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.end_lookup(id);
        }
    }

    fn end_lookup(&mut self, id: kad::QueryId) {
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            if let Some(mut q) = kad.query_mut(&id) {
                q.finish();
            }
        }
        if let Some(lookup) = self.lookups.remove(&id) {
            let _ = lookup.reply.send(Ok(lookup.found));
        }
    }

    /// Providers found by a lookup: kept, and dialled if not connected (with the addresses the
    /// query learnt, which Kademlia gives the dial while the query runs, and those of the
    /// provider records this node holds).
    fn on_providers_found(&mut self, id: kad::QueryId, providers: HashSet<PeerId>) {
        let local = self.local();
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        let mut dial = Vec::new();
        for p in providers {
            if p == local || lookup.found.contains(&p) {
                continue;
            }
            lookup.found.push(p);
            dial.push(p);
        }
        let enough = lookup.found.len() >= routing::MAX_PROVIDERS_PER_KEY;
        for peer in dial {
            if self.swarm.is_connected(&peer) || self.provider_dials.len() >= MAX_PROVIDER_DIALS {
                continue;
            }
            let mut addrs = self.known_addrs(&peer);
            addrs.truncate(limits::MAX_DIAL_ADDRS);
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if self.swarm.dial(opts).is_ok() {
                self.provider_dials.insert(peer);
            }
        }
        if enough {
            self.end_lookup(id);
        }
    }

    /// An address that reached (or was tried for) a provider dialled for a lookup: learnt,
    /// unless the peer's addresses are known already (identify's list is better).
    fn learn_provider_addrs(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.provider_dials.remove(&peer) && self.discovery.addrs(&peer).is_empty() {
            self.discovery.learn(peer, addrs, Instant::now());
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        match result {
            kad::QueryResult::StartProviding(result) => {
                let now = std::time::Instant::now();
                if let Err(e) = &result {
                    tracing::debug!(error = ?e, "announcement failed; tried again later");
                }
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    kad.store_mut().announcer.finished(&id, result.is_ok(), now);
                }
                self.announce_provided();
            }
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => self.on_providers_found(id, providers),
            kad::QueryResult::GetProviders(_) => {}
            kad::QueryResult::Bootstrap(Err(e)) => {
                tracing::debug!(error = ?e, "Kademlia bootstrap failed")
            }
            _ => {}
        }
        if step.last {
            self.end_lookup(id);
        }
    }

    /// Closes the connections that have had no successful ping for [`DEAD_AFTER`]: the link
    /// or the peer is dead, and requests on it would only time out.
    fn close_dead(&mut self, now: Instant) {
        let dead: Vec<ConnectionId> = self
            .last_pong
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= DEAD_AFTER)
            .map(|(c, _)| *c)
            .collect();
        for connection in dead {
            self.last_pong.remove(&connection);
            if let Some(suppressed) = self.logs.check("dead-connection") {
                tracing::info!(
                    suppressed,
                    "closing a connection that has not answered a ping for {DEAD_AFTER:?}"
                );
            }
            self.swarm.close_connection(connection);
        }
    }

    /// Disconnects foreign peers (not dfs, not bootstrap, past their grace to identify) while
    /// more than `max_peers` are connected, so that strangers cannot keep the peers that matter
    /// out: room is made for newcomers, and protected dfs peers and bootstrap peers are never
    /// shed (dfs peers beyond the protected ones go after the foreign ones).
    fn shed(&mut self, now: Instant) {
        let limit = self.config.max_peers as usize;
        if self.connected.len() <= limit {
            return;
        }
        let candidates: Vec<limits::Candidate> = self
            .connected
            .iter()
            .map(|(peer, c)| limits::Candidate {
                peer: *peer,
                since: c.since,
                dfs: c.dfs,
                protected: c.protected || self.discovery.is_bootstrap(peer),
            })
            .collect();
        let victims = limits::victims(&candidates, limit, now);
        if victims.is_empty() {
            return;
        }
        if let Some(suppressed) = self.logs.check("shed") {
            tracing::info!(
                shed = victims.len(),
                connected = self.connected.len(),
                limit,
                suppressed,
                "too many peers: disconnecting peers that do not speak dfs"
            );
        }
        for peer in victims {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn announce(&mut self) {
        let now = Instant::now();
        self.announce_due = false;
        self.last_announce = Some(now);
        let addrs: Vec<Multiaddr> = self
            .listen_addrs
            .iter()
            .filter(|a| discovery::is_dialable(a))
            .cloned()
            .collect();
        let message = peers::encode(&peers::Announcement {
            peer_id: self.local(),
            addrs,
            time: wall_ms(),
            capacity: self.config.capacity,
        });
        let Some(topics) = &self.topics else {
            return;
        };
        let topic = topics.peers.clone();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, message) {
            Ok(_) => tracing::trace!("announced ourselves"),
            Err(e) => tracing::trace!(error = %e, "announcement not sent"),
        }
    }

    // ---- commands ----

    fn on_command(&mut self, command: Command) {
        match command {
            Command::PublishGrant { grant } => {
                let Some(topics) = &self.topics else {
                    return;
                };
                let topic = topics.members.clone();
                match self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic, members::encode(&grant))
                {
                    Ok(_) => tracing::debug!("grant published"),
                    Err(e) => {
                        tracing::debug!(error = %e, "grant not published; sync will carry it")
                    }
                }
            }
            Command::Join { network } => {
                if self.topics.as_ref().is_some_and(|t| t.network == network) {
                    return;
                }
                if let Some(old) = self.topics.take() {
                    for topic in [&old.records, &old.peers, &old.members] {
                        self.swarm.behaviour_mut().gossipsub.unsubscribe(topic);
                    }
                }
                let topics = Topics::of(&network);
                match topics.subscribe(&mut self.swarm.behaviour_mut().gossipsub) {
                    Ok(()) if self.swarm.behaviour().kad.is_enabled() => {
                        tracing::info!(%network, "joined the network")
                    }
                    // Kademlia's protocol names the network and is fixed with the swarm.
                    Ok(()) => tracing::info!(
                        %network,
                        "joined the network; content routing (Kademlia) starts at the next start"
                    ),
                    Err(e) => tracing::warn!(%network, error = %e, "cannot join the network"),
                }
                self.topics = Some(topics);
                self.announce_due = true;
            }
            Command::Publish { record } => {
                let Some(topics) = &self.topics else {
                    return;
                };
                let topic = topics.records.clone();
                let data = records::encode(&record);
                match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
                    Ok(_) => tracing::debug!(key = %record.key, "record published"),
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                        tracing::debug!(key = %record.key, "no peers to publish to; sync will carry it")
                    }
                    Err(e) => {
                        if let Some(suppressed) = self.logs.check("not-published") {
                            tracing::warn!(key = %record.key, error = %e, suppressed, "record not published; sync will carry it")
                        }
                    }
                }
            }
            Command::Fetch {
                peer,
                request,
                reply,
            } => {
                if let Some(reply) = self.connected_or_refuse(peer, reply) {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .fetch
                        .send_request(&peer, request);
                    self.pending_fetch.insert(id, reply);
                }
            }
            Command::Sync {
                peer,
                request,
                reply,
            } => {
                if let Some(reply) = self.connected_or_refuse(peer, reply) {
                    let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                    self.pending_sync.insert(id, reply);
                }
            }
            Command::Info { reply } => {
                let local = self.local();
                let addrs = self
                    .listen_addrs
                    .iter()
                    .filter(|a| discovery::is_dialable(a))
                    .map(|a| a.clone().with(libp2p::multiaddr::Protocol::P2p(local)))
                    .collect();
                let _ = reply.send(NodeInfo {
                    peer_id: local,
                    addrs,
                });
            }
            Command::Peers { reply } => {
                let mut peers: Vec<PeerInfo> = self
                    .connected
                    .iter()
                    .map(|(peer, c)| PeerInfo {
                        peer_id: *peer,
                        addrs: if c.addrs.is_empty() {
                            c.remote.iter().cloned().collect()
                        } else {
                            c.addrs.clone()
                        },
                        agent: c.agent.clone(),
                        dfs: c.dfs,
                    })
                    .collect();
                peers.sort_by_key(|p| p.peer_id.to_base58());
                let _ = reply.send(peers);
            }
            Command::Dial { addr, reply } => {
                let (plain, peer) = discovery::split_peer(&addr);
                if peer == Some(self.local()) {
                    let _ = reply.send(Err(Error::Dial {
                        addr,
                        reason: "refusing to dial ourselves".into(),
                    }));
                    return;
                }
                let opts = match peer {
                    Some(p) => libp2p::swarm::dial_opts::DialOpts::peer_id(p)
                        .addresses(vec![plain])
                        .build(),
                    None => libp2p::swarm::dial_opts::DialOpts::unknown_peer_id()
                        .address(plain)
                        .build(),
                };
                let result = self.swarm.dial(opts).map_err(|e| Error::Dial {
                    addr: addr.clone(),
                    reason: e.to_string(),
                });
                let _ = reply.send(result);
            }
            Command::Connect { addr, reply } => {
                let (plain, peer) = discovery::split_peer(&addr);
                if peer == Some(self.local()) {
                    let _ = reply.send(Err(Error::Dial {
                        addr,
                        reason: "that is this node's own peer id".into(),
                    }));
                    return;
                }
                if let Some(p) = peer.filter(|p| self.swarm.is_connected(p)) {
                    let _ = reply.send(Ok(p));
                    return;
                }
                let opts = match peer {
                    Some(p) => DialOpts::peer_id(p)
                        .addresses(vec![plain])
                        .condition(PeerCondition::Always)
                        .build(),
                    None => DialOpts::unknown_peer_id().address(plain).build(),
                };
                let connection = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_connect.insert(connection, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dial {
                            addr,
                            reason: dial_reason(&e),
                        }));
                    }
                }
            }
            Command::Provide { keys, reply } => {
                let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
                    let _ = reply.send(Err(Error::NoContentRouting));
                    return;
                };
                let store = kad.store_mut();
                let refused = keys
                    .into_iter()
                    .filter(|k| !store.announcer.provide(*k))
                    .count();
                let _ = reply.send(if refused == 0 {
                    Ok(())
                } else {
                    Err(Error::TooManyProvided {
                        refused,
                        max: routing::MAX_PROVIDED_KEYS,
                    })
                });
                self.announce_provided();
            }
            Command::Unprovide { key } => {
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    kad.stop_providing(&routing::key(&key));
                }
            }
            Command::Providers { key, reply } => {
                let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
                    let _ = reply.send(Err(Error::NoContentRouting));
                    return;
                };
                let id = kad.get_providers(routing::key(&key));
                self.lookups.insert(
                    id,
                    Lookup {
                        found: Vec::new(),
                        reply,
                        deadline: Instant::now() + routing::PROVIDERS_TIMEOUT,
                    },
                );
            }
            Command::ConnectPeer { peer, reply } => {
                let addr = Multiaddr::empty().with(libp2p::multiaddr::Protocol::P2p(peer));
                if peer == self.local() {
                    let _ = reply.send(Err(Error::Dial {
                        addr,
                        reason: "that is this node's own peer id".into(),
                    }));
                    return;
                }
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                let addrs = self.known_addrs(&peer);
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .extend_addresses_through_behaviour()
                    .condition(PeerCondition::Always)
                    .build();
                let connection = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_connect.insert(connection, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dial {
                            addr,
                            reason: dial_reason(&e),
                        }));
                    }
                }
            }
            Command::Judge { message, verdict } => self.judge(message, verdict),
            Command::Block { peer, blocked } => {
                let list = &mut self.swarm.behaviour_mut().blocked;
                if blocked {
                    list.block_peer(peer);
                } else {
                    list.unblock_peer(peer);
                    let now = Instant::now();
                    self.discovery.unblocked(peer, now);
                    if let Some(opts) =
                        self.discovery
                            .dial_discovered(peer, now, &mut self.budget, None)
                    {
                        self.dial(opts);
                    }
                }
            }
        }
    }

    /// Counts an inbound request of `peer`; false when the peer has too many in progress.
    fn admit(&mut self, peer: PeerId) -> bool {
        let n = self.inbound_per_peer.entry(peer).or_default();
        if *n >= MAX_INBOUND_PER_PEER {
            tracing::debug!(%peer, "refusing a request: too many in progress from this peer");
            return false;
        }
        *n += 1;
        true
    }

    fn release(&mut self, peer: PeerId) {
        if let Some(n) = self.inbound_per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound_per_peer.remove(&peer);
            }
        }
    }

    /// Gives `reply` back if `peer` is connected; else answers it with an error. Requests go
    /// only to connected peers: dialling on demand would hide a slow peer behind a dial.
    fn connected_or_refuse<T>(
        &self,
        peer: PeerId,
        reply: oneshot::Sender<Result<T, Error>>,
    ) -> Option<oneshot::Sender<Result<T, Error>>> {
        if self.swarm.is_connected(&peer) {
            return Some(reply);
        }
        let _ = reply.send(Err(Error::NotConnected(peer)));
        None
    }

    fn on_answer(&mut self, answer: Answer) {
        let (peer, sent) = match answer {
            Answer::Fetch(peer, channel, Ok(response)) => (
                peer,
                self.swarm
                    .behaviour_mut()
                    .fetch
                    .send_response(channel, response)
                    .is_ok(),
            ),
            Answer::Sync(peer, channel, Ok(response)) => (
                peer,
                self.swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response)
                    .is_ok(),
            ),
            // The application dropped the request (shutting down): the stream is dropped.
            Answer::Fetch(peer, _, Err(_)) | Answer::Sync(peer, _, Err(_)) => (peer, true),
        };
        self.release(peer);
        if !sent {
            tracing::debug!(%peer, "response not sent: the peer went away or the request timed out");
        }
    }

    // ---- swarm events ----

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.config.metrics.libp2p.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!("listening on {address}/p2p/{}", self.local());
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address.clone());
                }
                // Kademlia puts a node's external addresses in its provider records.
                if discovery::is_dialable(&address) {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
                self.swarm.remove_external_address(&address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.discovery.on_connected(peer_id, connection_id);
                let now = Instant::now();
                self.last_pong.insert(connection_id, now);
                let entry = self.connected.entry(peer_id).or_insert_with(|| Connected {
                    since: now,
                    addrs: Vec::new(),
                    remote: None,
                    agent: None,
                    dfs: false,
                    protected: false,
                });
                if entry.remote.is_none() {
                    entry.remote = Some(endpoint.get_remote_address().clone());
                }
                if let Some((_, reply)) = self.pending_connect.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address().clone();
                    self.learn_provider_addrs(peer_id, vec![addr]);
                }
                if num_established.get() == 1 {
                    let peers = self.connected.len();
                    self.config.metrics.connected_peers.set(peers as i64);
                    if let Some(suppressed) = CONNECTION_LOG.check() {
                        tracing::info!(
                            peer = %peer_id,
                            addr = %endpoint.get_remote_address(),
                            inbound = endpoint.is_listener(),
                            peers,
                            suppressed,
                            "peer connected"
                        );
                    }
                    if self.discovery.is_bootstrap(&peer_id) {
                        self.swarm.behaviour_mut().limits.bypass_peer_id(&peer_id);
                    }
                    self.shed(now);
                }
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                num_established,
                ..
            } if num_established > 0 => {
                self.last_pong.remove(&connection_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                self.last_pong.remove(&connection_id);
                self.connected.remove(&peer_id);
                let peers = self.connected.len();
                self.config.metrics.connected_peers.set(peers as i64);
                if let Some(suppressed) = CONNECTION_LOG.check() {
                    let cause = cause.map_or_else(|| "closed".to_string(), |c| c.to_string());
                    tracing::info!(peer = %peer_id, %cause, peers, suppressed, "peer disconnected");
                }
                self.budget.forget(&peer_id);
                if !self.discovery.is_bootstrap(&peer_id) {
                    self.swarm.behaviour_mut().limits.remove_peer_id(&peer_id);
                }
                let _ = self.events.try_send(Event::PeerGone(peer_id));
                self.discovery.on_disconnected(peer_id, Instant::now());
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(peer = ?peer_id, error = %error, "dial failed");
                report_dial_error(&self.logs, &error);
                if let (Some(peer), DialError::Transport(attempts)) = (peer_id, &error) {
                    let addrs = attempts.iter().map(|(a, _)| a.clone()).collect();
                    self.learn_provider_addrs(peer, addrs);
                } else if let Some(peer) = peer_id {
                    self.provider_dials.remove(&peer);
                }
                if let Some((addr, reply)) = self.pending_connect.remove(&connection_id) {
                    let _ = reply.send(Err(Error::Dial {
                        addr,
                        reason: dial_reason(&error),
                    }));
                }
                match error {
                    libp2p::swarm::DialError::WrongPeerId { obtained, .. } => {
                        self.discovery.on_wrong_peer(connection_id, obtained)
                    }
                    error if is_unsupported(&error) => self
                        .discovery
                        .on_unsupported(connection_id, &dial_reason(&error)),
                    error => self.discovery.on_dial_failure(
                        connection_id,
                        Instant::now(),
                        &dial_reason(&error),
                    ),
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(error = %error, "incoming connection failed");
                report_incoming_error(&self.logs, &send_back_addr, &error);
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        let metrics = &self.config.metrics.libp2p;
        match &event {
            BehaviourEvent::Identify(e) => metrics.record(e),
            BehaviourEvent::Ping(e) => metrics.record(e),
            BehaviourEvent::Gossipsub(e) => metrics.record(e),
            BehaviourEvent::Kad(e) => metrics.record(e),
            _ => {}
        }
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identified(peer_id, info)
            }
            BehaviourEvent::Ping(ping::Event {
                connection,
                result: Ok(_),
                ..
            }) => {
                if let Some(t) = self.last_pong.get_mut(&connection) {
                    *t = Instant::now();
                }
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(failure),
            }) => {
                if matches!(failure, ping::Failure::Unsupported) {
                    // A peer that does not speak ping is not dead: it is not watched.
                    self.last_pong.remove(&connection);
                } else {
                    // libp2p reports a second failure in a row: the connection is dead.
                    tracing::debug!(%peer, %failure, "ping failed; closing the connection");
                    self.last_pong.remove(&connection);
                    self.swarm.close_connection(connection);
                }
            }
            BehaviourEvent::Identify(_) | BehaviourEvent::Streams(()) => {}
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic }) => {
                if self
                    .topics
                    .as_ref()
                    .is_some_and(|t| topic == t.peers.hash())
                {
                    tracing::trace!(peer = %peer_id, "peer joined the peers topic");
                    self.announce_due = true;
                }
            }
            BehaviourEvent::Gossipsub(_) => {}
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => self.on_mdns(found),
            BehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            BehaviourEvent::Kad(event) => self.on_kad_event(event),
            BehaviourEvent::Fetch(event) => self.on_fetch_event(event),
            BehaviourEvent::Sync(event) => self.on_sync_event(event),
            BehaviourEvent::Blocked(never) => match never {},
            BehaviourEvent::Limits(never) => match never {},
            BehaviourEvent::Memory(never) => match never {},
            BehaviourEvent::PendingPerIp(never) => match never {},
        }
    }

    fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        let addrs: Vec<Multiaddr> = info
            .listen_addrs
            .iter()
            .filter(|a| discovery::is_dialable(a))
            .take(peers::MAX_ADDRS)
            .cloned()
            .collect();
        self.discovery.learn(peer, addrs.clone(), Instant::now());
        let speaks_dfs = info.protocols.contains(&sync::PROTOCOL);
        if speaks_dfs {
            self.book.saw(peer, addrs.clone(), peers::MAX_ADDRS);
            // Kademlia's routing table holds identified dfs peers only (in server mode).
            let kad_protocol = self.config.network.as_deref().map(routing::protocol);
            if let (Some(protocol), Some(kad)) =
                (kad_protocol, self.swarm.behaviour_mut().kad.as_mut())
            {
                if info.protocols.contains(&protocol) {
                    for addr in &addrs {
                        kad.add_address(&peer, addr.clone());
                    }
                    self.announce_provided();
                }
            }
        }
        let Some(c) = self.connected.get_mut(&peer) else {
            return;
        };
        c.addrs = addrs;
        c.agent = Some(info.agent_version.chars().take(128).collect());
        if speaks_dfs && !c.dfs {
            c.dfs = true;
            self.discovery.mark_dfs(peer);
            let protected = self.connected.values().filter(|c| c.protected).count();
            if protected < self.config.max_peers as usize {
                if let Some(c) = self.connected.get_mut(&peer) {
                    c.protected = true;
                }
                self.swarm.behaviour_mut().limits.bypass_peer_id(&peer);
            }
            tracing::debug!(%peer, agent = %info.agent_version, "dfs peer identified");
            if self.events.try_send(Event::PeerReady(peer)).is_err() {
                tracing::debug!(%peer, "event queue full; the next sync round finds the peer");
            }
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let Some(topics) = &self.topics else {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id, &source, Ignore);
            return;
        };
        let acceptance = if message.topic == topics.records.hash() {
            // Decoded and checked by its own rules here; its signature is checked once, by
            // the application, which then judges the message (`Command::Judge`).
            match records::decode_unverified(&message.data) {
                Ok(record) if self.gate.admits_record(&record) => {
                    let hint = message.source.into_iter().chain([source]).collect();
                    let message = GossipMessage { id, source };
                    if let Err(e) = self.events.try_send(Event::Record {
                        record,
                        sources: hint,
                        message,
                    }) {
                        tracing::debug!("event queue full; anti-entropy will bring the record");
                        if let Event::Record { message, .. } = e.into_inner() {
                            self.judge(message, Verdict::Ignore);
                        }
                    }
                    return;
                }
                Ok(_) => Ignore,
                Err(e) => {
                    tracing::debug!(peer = %source, error = %e, "rejecting record message");
                    self.gate.invalid_record(&source, &e.to_string());
                    Reject
                }
            }
        } else if message.topic == topics.members.hash() {
            match members::decode(&message.data) {
                Ok(grant) if self.gate.admits_grant(&grant) => {
                    if self
                        .events
                        .try_send(Event::Grant { grant, source })
                        .is_err()
                    {
                        tracing::debug!("event queue full; anti-entropy will bring the grant");
                    }
                    Accept
                }
                Ok(_) => Ignore,
                Err(e) => {
                    tracing::debug!(peer = %source, error = %e, "rejecting grant message");
                    Reject
                }
            }
        } else if message.topic == topics.peers.hash() {
            match peers::decode(&message.data, message.source.as_ref()) {
                Ok(a) => {
                    self.on_announcement(a, source);
                    Accept
                }
                Err(e) => {
                    tracing::debug!(peer = %source, error = %e, "rejecting peer announcement");
                    Reject
                }
            }
        } else {
            Ignore
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
    }

    fn on_announcement(&mut self, a: peers::Announcement, forwarder: PeerId) {
        let now = Instant::now();
        if a.peer_id == self.local() {
            return;
        }
        // Dropped when the application is busy: the next announcement will do.
        let _ = self.events.try_send(Event::Announced {
            peer: a.peer_id,
            capacity: a.capacity,
        });
        let new = self.discovery.learn(a.peer_id, a.addrs, now);
        if new {
            // Let the newcomer learn about us without waiting for the next period.
            self.announce_due = true;
        }
        if !self.connected.contains_key(&a.peer_id)
            && self.connected.len() < self.config.max_peers as usize
        {
            if let Some(opts) =
                self.discovery
                    .dial_discovered(a.peer_id, now, &mut self.budget, Some(forwarder))
            {
                tracing::debug!(peer = %a.peer_id, "dialling discovered peer");
                self.dial(opts);
            }
        }
    }

    /// Peers found on the local networks by mDNS: learned, and dialled like announced ones.
    fn on_mdns(&mut self, found: Vec<(PeerId, Multiaddr)>) {
        let now = Instant::now();
        let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for (peer, addr) in found {
            let addrs = by_peer.entry(peer).or_default();
            if addrs.len() < peers::MAX_ADDRS {
                addrs.push(addr);
            }
        }
        for (peer, addrs) in by_peer {
            if peer == self.local() {
                continue;
            }
            self.discovery.learn(peer, addrs, now);
            if self.connected.contains_key(&peer)
                || self.connected.len() >= self.config.max_peers as usize
            {
                continue;
            }
            if let Some(opts) = self
                .discovery
                .dial_discovered(peer, now, &mut self.budget, None)
            {
                tracing::debug!(%peer, "dialling a peer found by mDNS");
                self.dial(opts);
            }
        }
    }

    /// Passes the application's verdict on a gossiped record to gossipsub.
    fn judge(&mut self, message: GossipMessage, verdict: Verdict) {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let acceptance = match verdict {
            Verdict::Accept => Accept,
            Verdict::Ignore => Ignore,
            Verdict::Reject => Reject,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message.id, &message.source, acceptance);
    }

    fn on_fetch_event(&mut self, event: request_response::Event<fetch::Request, fetch::Response>) {
        let Some((peer, request, channel)) = settle(event, &mut self.pending_fetch, "fetch") else {
            return;
        };
        let busy = fetch::Response::Error {
            message: BUSY.into(),
        };
        self.hand_over(
            peer,
            channel,
            |reply| Event::Fetch {
                peer,
                request,
                reply,
            },
            busy,
            |b, channel, response| b.fetch.send_response(channel, response).is_ok(),
            Answer::Fetch,
        );
    }

    fn on_sync_event(&mut self, event: request_response::Event<sync::Request, sync::Response>) {
        let Some((peer, request, channel)) = settle(event, &mut self.pending_sync, "sync") else {
            return;
        };
        let busy = sync::Response::Error {
            message: BUSY.into(),
        };
        self.hand_over(
            peer,
            channel,
            |reply| Event::Sync {
                peer,
                request,
                reply,
            },
            busy,
            |b, channel, response| b.sync.send_response(channel, response).is_ok(),
            Answer::Sync,
        );
    }

    /// Hands an inbound request to the application with a `oneshot` for its answer, which
    /// [`Self::on_answer`] sends back; answers `busy` at once when the peer has too many
    /// requests in progress or the application is not keeping up.
    fn hand_over<Resp: Send + 'static>(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<Resp>,
        event: impl FnOnce(oneshot::Sender<Resp>) -> Event,
        busy: Resp,
        respond: fn(&mut Behaviour, ResponseChannel<Resp>, Resp) -> bool,
        answer: fn(
            PeerId,
            ResponseChannel<Resp>,
            Result<Resp, oneshot::error::RecvError>,
        ) -> Answer,
    ) {
        let (reply, answered) = oneshot::channel();
        let admitted = self.admit(peer);
        if admitted && self.events.try_send(event(reply)).is_ok() {
            self.answers
                .push(answered.map(move |a| answer(peer, channel, a)).boxed());
            return;
        }
        if admitted {
            self.release(peer);
        }
        respond(self.swarm.behaviour_mut(), channel, busy);
    }
}

/// True when no address of a failed dial is one the transport can dial at all: trying again
/// cannot help.
fn is_unsupported(error: &DialError) -> bool {
    match error {
        DialError::Transport(attempts) => {
            !attempts.is_empty()
                && attempts
                    .iter()
                    .all(|(_, e)| matches!(e, libp2p::TransportError::MultiaddrNotSupported(_)))
        }
        _ => false,
    }
}

/// Why a dial failed, in one line with the causes.
fn dial_reason(error: &DialError) -> String {
    match error {
        DialError::WrongPeerId { obtained, .. } => {
            format!("the address answers as peer {obtained}, not the peer its /p2p/ part names")
        }
        DialError::Transport(attempts) => {
            let one = attempts.len() == 1;
            attempts
                .iter()
                .map(|(addr, e)| {
                    let why = match e {
                        libp2p::TransportError::MultiaddrNotSupported(_) => {
                            "unsupported address".to_string()
                        }
                        libp2p::TransportError::Other(e) => one_line(&crate::error_chain(e)),
                    };
                    // A single address is the one the caller named already.
                    if one {
                        why
                    } else {
                        format!("{addr}: {why}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        }
        e => one_line(&crate::error_chain(e)),
    }
}

/// An error text on one line: the DNS layer lists the failures of each resolved address on
/// lines of their own ("Multiple dial errors occurred:\n - ...").
fn one_line(text: &str) -> String {
    let text = text.replace("Multiple dial errors occurred:", "");
    text.lines()
        .map(|l| l.trim().trim_start_matches("- ").trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .trim_start_matches(": ")
        .to_string()
}

/// Says in one line (rate-limited) why a dial failed in its handshake: above all a swarm key
/// the peer does not share. Other dial failures (refused, unreachable) stay at debug: bootstrap
/// peers have their own warning, and discovered peers come and go.
fn report_dial_error(logs: &KeyedLogLimit, error: &DialError) {
    let DialError::Transport(attempts) = error else {
        return;
    };
    for (addr, e) in attempts {
        let libp2p::TransportError::Other(e) = e else {
            continue;
        };
        let Some(reason) = transport::connect_error(e) else {
            continue;
        };
        let key = match reason {
            ConnectError::SwarmKey => "dial-swarm-key",
            ConnectError::NotLibp2p => "dial-not-libp2p",
            ConnectError::PrivateTimeout(_) => "dial-private-timeout",
            ConnectError::PrivateClosed => "dial-private-closed",
            ConnectError::Timeout(_) | ConnectError::Other(_) => continue,
        };
        if let Some(suppressed) = logs.check(key) {
            tracing::warn!(suppressed, "connection to {addr} failed: {reason}");
        }
    }
}

/// The same for connections that peers (or strangers) open to this node.
fn report_incoming_error(logs: &KeyedLogLimit, addr: &Multiaddr, error: &ListenError) {
    match error {
        ListenError::Transport(libp2p::TransportError::Other(e)) => {
            let Some(reason) = transport::connect_error(e) else {
                return;
            };
            let key = match reason {
                ConnectError::SwarmKey => "incoming-swarm-key",
                ConnectError::NotLibp2p => "incoming-not-libp2p",
                ConnectError::PrivateTimeout(_) => "incoming-private-timeout",
                ConnectError::PrivateClosed => "incoming-private-closed",
                ConnectError::Timeout(_) => "incoming-timeout",
                ConnectError::Other(_) => return,
            };
            if let Some(suppressed) = logs.check(key) {
                if matches!(reason, ConnectError::Timeout(_)) {
                    tracing::info!(suppressed, "connection from {addr} failed: {reason}");
                } else {
                    tracing::warn!(suppressed, "connection from {addr} failed: {reason}");
                }
            }
        }
        ListenError::Denied { cause } => {
            if let Some(suppressed) = logs.check("incoming-denied") {
                tracing::info!(suppressed, "refusing a connection from {addr}: {cause}");
            }
        }
        _ => {}
    }
}

/// Delivers the outcome of one of our requests to its waiter, logs inbound failures, and
/// returns an inbound request, which the caller answers.
fn settle<Req, Resp>(
    event: request_response::Event<Req, Resp>,
    pending: &mut HashMap<OutboundRequestId, oneshot::Sender<Result<Resp, Error>>>,
    protocol: &str,
) -> Option<(PeerId, Req, ResponseChannel<Resp>)> {
    match event {
        request_response::Event::Message { peer, message, .. } => match message {
            request_response::Message::Request {
                request, channel, ..
            } => Some((peer, request, channel)),
            request_response::Message::Response {
                request_id,
                response,
            } => {
                if let Some(reply) = pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
                None
            }
        },
        request_response::Event::OutboundFailure {
            peer,
            request_id,
            error,
            ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Err(Error::Outbound { peer, error }));
            }
            None
        }
        request_response::Event::InboundFailure { peer, error, .. } => {
            tracing::debug!(%peer, %error, protocol, "inbound request failed");
            None
        }
        request_response::Event::ResponseSent { .. } => None,
    }
}
