//! Connections in the event loop: swarm events (established, closed, failed dials and
//! handshakes, each failure reported in one rate-limited line), liveness (pings), and the
//! shedding of peers beyond the limit.

use super::*;

impl EventLoop {
    /// Closes the connections that have had no successful ping for `dead_after`: the link
    /// or the peer is dead, and requests on it would only time out.
    pub(super) fn close_dead(&mut self, now: Instant) {
        let dead_after = self.config.liveness.dead_after;
        let dead: Vec<ConnectionId> = self
            .last_pong
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= dead_after)
            .map(|(c, _)| *c)
            .collect();
        for connection in dead {
            self.last_pong.remove(&connection);
            if let Some(suppressed) = self.logs.check("dead-connection") {
                tracing::info!(
                    suppressed,
                    "closing a connection that has not answered a ping for {dead_after:?}"
                );
            }
            self.swarm.close_connection(connection);
        }
    }

    /// Disconnects foreign peers (not dfs, not bootstrap, past their grace to identify) while
    /// more than `max_peers` are connected, so that strangers cannot keep the peers that matter
    /// out: room is made for newcomers, and protected dfs peers and bootstrap peers are never
    /// shed (dfs peers beyond the protected ones go after the foreign ones).
    pub(super) fn shed(&mut self, now: Instant) {
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

    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
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
                self.reach.dial_failed(dial_failure(peer_id, &error));
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
}

/// True when no address of a failed dial is one the transport can dial at all: trying again
/// cannot help.
pub(super) fn is_unsupported(error: &DialError) -> bool {
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
/// A failed dial as a user reads it: `ADDRESS: REASON` (or the peer, when no address was
/// tried).
fn dial_failure(peer: Option<PeerId>, error: &DialError) -> String {
    match (error, peer) {
        (DialError::Transport(attempts), _) if attempts.len() == 1 => {
            format!("{}: {}", attempts[0].0, dial_reason(error))
        }
        (DialError::Transport(_), _) => dial_reason(error),
        (_, Some(peer)) => format!("{peer}: {}", dial_reason(error)),
        (_, None) => dial_reason(error),
    }
}

pub(super) fn dial_reason(error: &DialError) -> String {
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
pub(super) fn one_line(text: &str) -> String {
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
pub(super) fn report_dial_error(logs: &KeyedLogLimit, error: &DialError) {
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
pub(super) fn report_incoming_error(logs: &KeyedLogLimit, addr: &Multiaddr, error: &ListenError) {
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
