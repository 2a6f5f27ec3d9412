//! Inbound requests in the event loop: behaviour events (identify, fetch, sync, Kademlia,
//! mDNS), each request handed to the application with a per-peer bound, and its answer sent
//! back.

use super::*;

impl EventLoop {
    /// Counts an inbound request of `peer`; false when the peer has too many in progress.
    pub(super) fn admit(&mut self, peer: PeerId) -> bool {
        let n = self.inbound_per_peer.entry(peer).or_default();
        if *n >= MAX_INBOUND_PER_PEER {
            tracing::debug!(%peer, "refusing a request: too many in progress from this peer");
            return false;
        }
        *n += 1;
        true
    }

    pub(super) fn release(&mut self, peer: PeerId) {
        if let Some(n) = self.inbound_per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound_per_peer.remove(&peer);
            }
        }
    }

    /// Gives `reply` back if `peer` is connected; else answers it with an error. Requests go
    /// only to connected peers: dialling on demand would hide a slow peer behind a dial.
    pub(super) fn connected_or_refuse<T>(
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

    pub(super) fn on_answer(&mut self, answer: Answer) {
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

    pub(super) fn on_behaviour_event(&mut self, event: BehaviourEvent) {
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

    pub(super) fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
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

    pub(super) fn on_fetch_event(
        &mut self,
        event: request_response::Event<fetch::Request, fetch::Response>,
    ) {
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

    pub(super) fn on_sync_event(
        &mut self,
        event: request_response::Event<sync::Request, sync::Response>,
    ) {
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
    pub(super) fn hand_over<Resp: Send + 'static>(
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
pub(super) fn settle<Req, Resp>(
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
