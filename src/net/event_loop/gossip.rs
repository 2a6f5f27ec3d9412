//! Gossip in the event loop: the network's topics, records and grants handed to the
//! application (judged by it before gossipsub forwards them), peer announcements (sent and
//! learned), and peers found by mDNS.

use super::*;

/// The gossip topics of one network.
pub(super) struct Topics {
    pub(super) network: String,
    pub(super) records: gossipsub::IdentTopic,
    pub(super) peers: gossipsub::IdentTopic,
    pub(super) members: gossipsub::IdentTopic,
}

impl Topics {
    pub(super) fn of(network: &str) -> Topics {
        Topics {
            network: network.to_string(),
            records: records::topic(network),
            peers: peers::topic(network),
            members: members::topic(network),
        }
    }

    /// Subscribes to every topic, with its scoring.
    pub(super) fn subscribe(&self, gossipsub: &mut gossipsub::Behaviour) -> Result<(), Error> {
        for topic in [&self.records, &self.peers, &self.members] {
            gossipsub
                .set_topic_params(topic.clone(), crate::net::behaviour::topic_score())
                .map_err(|e| Error::Start(format!("topic scoring: {e}")))?;
            gossipsub
                .subscribe(topic)
                .map_err(|e| Error::Start(format!("subscribe: {e}")))?;
        }
        Ok(())
    }
}

impl EventLoop {
    pub(super) fn announce(&mut self) {
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

    pub(super) fn on_gossip(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
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

    pub(super) fn on_announcement(&mut self, a: peers::Announcement, forwarder: PeerId) {
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
    pub(super) fn on_mdns(&mut self, found: Vec<(PeerId, Multiaddr)>) {
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
    pub(super) fn judge(&mut self, message: GossipMessage, verdict: Verdict) {
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
}
