//! Content routing in the event loop: this node's provider announcements, batched, and
//! provider look-ups with a deadline, whose providers are dialled with the addresses found.

use super::*;

impl EventLoop {
    /// Starts the announcements that are due, as many as the announcer lets run at once, once
    /// Kademlia's routing table has a peer (alone, announcing would reach nobody; when peers
    /// come after a time alone, every key is announced again).
    pub(super) fn announce_provided(&mut self) {
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
    pub(super) fn known_addrs(&mut self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut addrs = self.discovery.addrs(peer);
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            addrs.extend(kad.store_mut().addresses_of(peer));
        }
        addrs
    }

    /// Answers the lookups whose deadline passed with the providers found so far.
    pub(super) fn end_late_lookups(&mut self, now: Instant) {
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

    pub(super) fn end_lookup(&mut self, id: kad::QueryId) {
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
    pub(super) fn on_providers_found(&mut self, id: kad::QueryId, providers: HashSet<PeerId>) {
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
    pub(super) fn learn_provider_addrs(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.provider_dials.remove(&peer) && self.discovery.addrs(&peer).is_empty() {
            self.discovery.learn(peer, addrs, Instant::now());
        }
    }

    pub(super) fn on_kad_event(&mut self, event: kad::Event) {
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
}
