//! The one task that owns the libp2p swarm. It carries out [`Command`]s, hands inbound requests,
//! validated gossip records and peer changes to the application as [`Event`]s, sends back the
//! answers it is given, and drives discovery on a timer. It never touches the store.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, identity::Keypair, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent};
use super::discovery::{self, Discovery};
use super::{Command, Config, Error, Event, Gate, NodeInfo, PeerInfo};
use crate::protocols::{fetch, members, peers, records, sync};
use crate::record::{wall_ms, Record};

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

#[derive(Debug, Default)]
struct Connected {
    addrs: Vec<Multiaddr>,
    remote: Option<Multiaddr>,
    agent: Option<String>,
    /// The peer announced the dfs sync protocol through identify.
    dfs: bool,
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
    announce_due: bool,
    last_announce: Option<Instant>,
    last_redial: Instant,
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
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| Error::Start(format!("transport: {e}")))?
            .with_behaviour(|key| {
                Behaviour::new(key, max_peers)
                    .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
            })
            .map_err(|e| Error::Start(format!("behaviour: {e}")))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
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
        match &config.network {
            Some(network) => tracing::info!(peer_id = %local, %network, "dfs node started"),
            None => tracing::info!(
                peer_id = %local,
                "dfs node started; learning the network from the bootstrap peers"
            ),
        }
        Ok(EventLoop {
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
            announce_due: true,
            last_announce: None,
            last_redial: Instant::now(),
        })
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
            for peer in self.discovery.known_peers() {
                if self.connected.len() >= self.config.max_peers as usize {
                    break;
                }
                if !self.connected.contains_key(&peer) {
                    if let Some(opts) = self.discovery.dial_discovered(peer, now) {
                        self.dial(opts);
                    }
                }
            }
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
                    Ok(()) => tracing::info!(%network, "joined the network"),
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
                        tracing::warn!(key = %record.key, error = %e, "record not published; sync will carry it")
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
            Command::Block { peer, blocked } => {
                let list = &mut self.swarm.behaviour_mut().blocked;
                if blocked {
                    list.block_peer(peer);
                } else {
                    list.unblock_peer(peer);
                    let now = Instant::now();
                    self.discovery.unblocked(peer, now);
                    if let Some(opts) = self.discovery.dial_discovered(peer, now) {
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
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!("listening on {address}/p2p/{}", self.local());
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.discovery.on_connected(peer_id, connection_id);
                let entry = self.connected.entry(peer_id).or_default();
                if entry.remote.is_none() {
                    entry.remote = Some(endpoint.get_remote_address().clone());
                }
                if num_established.get() == 1 {
                    tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?cause, "disconnected");
                self.connected.remove(&peer_id);
                let _ = self.events.try_send(Event::PeerGone(peer_id));
                self.discovery.on_disconnected(peer_id, Instant::now());
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(peer = ?peer_id, error = %error, "dial failed");
                match error {
                    libp2p::swarm::DialError::WrongPeerId { obtained, .. } => {
                        self.discovery.on_wrong_peer(connection_id, obtained)
                    }
                    error => self.discovery.on_dial_failure(
                        connection_id,
                        Instant::now(),
                        &error.to_string(),
                    ),
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(error = %error, "incoming connection failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identified(peer_id, info)
            }
            BehaviourEvent::Identify(_) | BehaviourEvent::Ping(_) | BehaviourEvent::Streams(()) => {
            }
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
            BehaviourEvent::Fetch(event) => self.on_fetch_event(event),
            BehaviourEvent::Sync(event) => self.on_sync_event(event),
            BehaviourEvent::Blocked(never) => match never {},
            BehaviourEvent::Limits(never) => match never {},
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
        let Some(c) = self.connected.get_mut(&peer) else {
            return;
        };
        c.addrs = addrs;
        c.agent = Some(info.agent_version.chars().take(128).collect());
        if speaks_dfs && !c.dfs {
            c.dfs = true;
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
            match records::decode(&message.data) {
                Ok(record) if self.gate.admits_record(&record) => {
                    let hint = message.source.into_iter().chain([source]).collect();
                    self.apply_remote(record, hint);
                    Accept
                }
                Ok(_) => Ignore,
                Err(e) => {
                    tracing::debug!(peer = %source, error = %e, "rejecting record message");
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
                    self.on_announcement(a);
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

    fn on_announcement(&mut self, a: peers::Announcement) {
        let now = Instant::now();
        if a.peer_id == self.local() {
            return;
        }
        let new = self.discovery.learn(a.peer_id, a.addrs, now);
        if new {
            // Let the newcomer learn about us without waiting for the next period.
            self.announce_due = true;
        }
        if !self.connected.contains_key(&a.peer_id)
            && self.connected.len() < self.config.max_peers as usize
        {
            if let Some(opts) = self.discovery.dial_discovered(a.peer_id, now) {
                tracing::debug!(peer = %a.peer_id, "dialling discovered peer");
                self.dial(opts);
            }
        }
    }

    /// Hands a record from gossip to the application.
    fn apply_remote(&self, record: Record, sources: Vec<PeerId>) {
        if self
            .events
            .try_send(Event::Record { record, sources })
            .is_err()
        {
            tracing::debug!("event queue full; anti-entropy will bring the record");
        }
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
