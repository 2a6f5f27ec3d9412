//! The application's commands to the event loop, carried out on the swarm.

use super::*;

impl EventLoop {
    pub(super) fn on_command(&mut self, command: Command) {
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
                    // Published already (an identical re-put hands back the current record).
                    Err(gossipsub::PublishError::Duplicate) => {
                        tracing::debug!(key = %record.key, "record published already")
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
}
