//! Peer discovery state: the bootstrap peers (re-dialled with exponential back-off when lost),
//! and the peers learned from gossip announcements and identify, dialled up to the limit and
//! within the dial budget ([`super::limits::DialBudget`]), at most
//! [`super::limits::MAX_DIAL_ADDRS`] addresses each.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use super::limits::{DialBudget, MAX_DIAL_ADDRS};

/// First delay before re-dialling a lost or unreachable bootstrap peer.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest delay between attempts: short, so that a bootstrap peer that comes back (a node
/// plugged back, a partition healed) is found again within seconds. A dial of one address
/// every 5 s costs nothing.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most peers remembered from announcements (the oldest is forgotten first).
pub const MAX_KNOWN: usize = 1024;
/// Least time between two dials of the same discovered peer.
pub const REDIAL_DISCOVERED: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Bootstrap {
    addr: Multiaddr,
    peer: Option<PeerId>,
    connected: bool,
    pending: Option<ConnectionId>,
    next_attempt: Instant,
    backoff: Duration,
    warned: bool,
    /// Its address answers as another peer than its `/p2p/` part names: dialling it again
    /// cannot help, so it is not dialled any more.
    abandoned: bool,
}

#[derive(Debug)]
struct Known {
    addrs: Vec<Multiaddr>,
    last_dial: Option<Instant>,
    learned: Instant,
    /// Once identified as a dfs peer: re-dialled before the others.
    dfs: bool,
}

/// What the event loop keeps about other peers for discovery.
#[derive(Debug)]
pub struct Discovery {
    local: PeerId,
    bootstrap: Vec<Bootstrap>,
    known: HashMap<PeerId, Known>,
}

/// Splits `/ip4/../tcp/../p2p/<id>` into the address and the peer id.
pub fn split_peer(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(peer)) => (a, Some(peer)),
        _ => (addr.clone(), None),
    }
}

/// True for addresses worth giving to others: not `0.0.0.0`/`::` and with a port.
pub fn is_dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        Protocol::Tcp(port) => port == 0,
        _ => false,
    })
}

impl Discovery {
    pub fn new(local: PeerId, bootstrap: &[Multiaddr]) -> Discovery {
        let now = Instant::now();
        let bootstrap = bootstrap
            .iter()
            .map(split_peer)
            .filter(|(_, peer)| *peer != Some(local))
            .map(|(addr, peer)| Bootstrap {
                addr,
                peer,
                connected: false,
                pending: None,
                next_attempt: now,
                backoff: BACKOFF_MIN,
                warned: false,
                abandoned: false,
            })
            .collect();
        Discovery {
            local,
            bootstrap,
            known: HashMap::new(),
        }
    }

    /// The bootstrap dials due now.
    pub fn due_bootstrap_dials(&mut self, now: Instant) -> Vec<DialOpts> {
        let mut dials = Vec::new();
        for b in &mut self.bootstrap {
            if b.abandoned || b.connected || b.pending.is_some() || b.next_attempt > now {
                continue;
            }
            let opts = match b.peer {
                Some(peer) => DialOpts::peer_id(peer)
                    .addresses(vec![b.addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id().address(b.addr.clone()).build(),
            };
            b.pending = Some(opts.connection_id());
            dials.push(opts);
        }
        dials
    }

    /// A dial could not even start (the connection id will see no further event).
    pub fn dial_not_started(&mut self, connection: ConnectionId, now: Instant) {
        self.on_dial_failure(connection, now, "dial refused");
    }

    pub fn on_connected(&mut self, peer: PeerId, connection: ConnectionId) {
        for b in &mut self.bootstrap {
            if b.pending == Some(connection) || b.peer == Some(peer) {
                if b.pending == Some(connection) {
                    b.pending = None;
                }
                if b.peer.is_none() || b.peer == Some(peer) {
                    b.peer = Some(peer);
                    b.connected = true;
                    b.backoff = BACKOFF_MIN;
                    if b.warned {
                        tracing::info!(addr = %b.addr, %peer, "bootstrap peer reachable again");
                        b.warned = false;
                    }
                }
            }
        }
    }

    /// The last connection to `peer` closed.
    pub fn on_disconnected(&mut self, peer: PeerId, now: Instant) {
        for b in &mut self.bootstrap {
            if b.peer == Some(peer) && b.connected {
                b.connected = false;
                b.next_attempt = now + b.backoff;
                tracing::debug!(addr = %b.addr, %peer, "bootstrap peer lost; will re-dial");
            }
        }
    }

    /// An outgoing connection failed.
    pub fn on_dial_failure(&mut self, connection: ConnectionId, now: Instant, error: &str) {
        for b in &mut self.bootstrap {
            // Only the bootstrap's own dial counts: a dial of the same peer made by discovery
            // must not move its back-off.
            if b.pending != Some(connection) {
                continue;
            }
            b.pending = None;
            b.next_attempt = now + b.backoff;
            if !b.warned {
                tracing::warn!(addr = %b.addr, %error, "bootstrap peer unreachable; will keep retrying");
                b.warned = true;
            } else {
                tracing::debug!(addr = %b.addr, %error, retry_in = ?b.backoff, "bootstrap dial failed");
            }
            b.backoff = (b.backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// A bootstrap dial reached a peer other than the one its address names: the address is
    /// wrong, and retrying it for ever would only hide that. Said once, loudly.
    pub fn on_wrong_peer(&mut self, connection: ConnectionId, obtained: PeerId) {
        for b in &mut self.bootstrap {
            if b.pending != Some(connection) {
                continue;
            }
            b.pending = None;
            b.abandoned = true;
            tracing::warn!(
                addr = %b.addr,
                %obtained,
                "bootstrap address answers as another peer; not dialling it again (fix its /p2p/ part)"
            );
        }
    }

    /// A bootstrap dial failed because the transport cannot dial its address at all: retrying
    /// cannot help. Said once.
    pub fn on_unsupported(&mut self, connection: ConnectionId, reason: &str) {
        for b in &mut self.bootstrap {
            if b.pending != Some(connection) {
                continue;
            }
            b.pending = None;
            b.abandoned = true;
            tracing::warn!(
                addr = %b.addr,
                %reason,
                "bootstrap address cannot be dialled by this node; not dialling it again"
            );
        }
    }

    /// Records addresses learned for a peer (from an announcement or identify). Returns true
    /// if the peer was not known before.
    pub fn learn(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) -> bool {
        if peer == self.local {
            return false;
        }
        let addrs: Vec<Multiaddr> = addrs
            .into_iter()
            .map(|a| split_peer(&a).0)
            .filter(|a| is_dialable(a) && super::is_supported(a))
            .take(crate::protocols::peers::MAX_ADDRS)
            .collect();
        if addrs.is_empty() {
            return false;
        }
        if let Some(k) = self.known.get_mut(&peer) {
            k.addrs = addrs;
            return false;
        }
        if self.known.len() >= MAX_KNOWN {
            if let Some(oldest) = self
                .known
                .iter()
                .min_by_key(|(_, k)| k.learned)
                .map(|(p, _)| *p)
            {
                self.known.remove(&oldest);
            }
        }
        self.known.insert(
            peer,
            Known {
                addrs,
                last_dial: None,
                learned: now,
                dfs: false,
            },
        );
        true
    }

    /// Addresses known for a peer.
    pub fn addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.known
            .get(peer)
            .map(|k| k.addrs.clone())
            .unwrap_or_default()
    }

    /// A dial to a discovered peer, if it is not dialled too recently and the budget has room
    /// for its addresses (at most [`MAX_DIAL_ADDRS`]); `forwarder` is the peer that relayed
    /// the announcement that asks for it, if any.
    pub fn dial_discovered(
        &mut self,
        peer: PeerId,
        now: Instant,
        budget: &mut DialBudget,
        forwarder: Option<PeerId>,
    ) -> Option<DialOpts> {
        let k = self.known.get_mut(&peer)?;
        if k.last_dial
            .is_some_and(|t| now.duration_since(t) < REDIAL_DISCOVERED)
        {
            return None;
        }
        let addrs: Vec<Multiaddr> = k.addrs.iter().take(MAX_DIAL_ADDRS).cloned().collect();
        if !budget.take(forwarder, addrs.len(), now) {
            tracing::trace!(%peer, "dial budget spent; the peer waits for a later round");
            return None;
        }
        k.last_dial = Some(now);
        Some(
            DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
        )
    }

    /// True if `peer` is one of the bootstrap peers (by its `/p2p/` part or by the peer that
    /// answered on its address).
    pub fn is_bootstrap(&self, peer: &PeerId) -> bool {
        self.bootstrap.iter().any(|b| b.peer.as_ref() == Some(peer))
    }

    /// `peer` identified itself as a dfs peer.
    pub fn mark_dfs(&mut self, peer: PeerId) {
        if let Some(k) = self.known.get_mut(&peer) {
            k.dfs = true;
        }
    }

    /// A peer was unblocked: forget back-offs so that it is dialled again at once.
    pub fn unblocked(&mut self, peer: PeerId, now: Instant) {
        for b in &mut self.bootstrap {
            if b.peer == Some(peer) {
                b.backoff = BACKOFF_MIN;
                b.next_attempt = now;
            }
        }
        if let Some(k) = self.known.get_mut(&peer) {
            k.last_dial = None;
        }
    }

    /// Discovered peers, for periodic re-dialling of those not connected: dfs peers first.
    pub fn known_peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<(bool, PeerId)> = self.known.iter().map(|(p, k)| (!k.dfs, *p)).collect();
        peers.sort_by_key(|(not_dfs, _)| *not_dfs);
        peers.into_iter().map(|(_, p)| p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_backs_off_and_resets() {
        let local = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let mut d = Discovery::new(local, std::slice::from_ref(&addr));
        let t0 = Instant::now();
        let dials = d.due_bootstrap_dials(t0);
        assert_eq!(dials.len(), 1);
        assert!(d.due_bootstrap_dials(t0).is_empty(), "one dial at a time");
        d.on_dial_failure(dials[0].connection_id(), t0, "refused");
        assert!(d.due_bootstrap_dials(t0).is_empty());
        let dials = d.due_bootstrap_dials(t0 + BACKOFF_MIN);
        assert_eq!(dials.len(), 1);
        d.on_dial_failure(dials[0].connection_id(), t0, "refused");
        assert!(
            d.due_bootstrap_dials(t0 + BACKOFF_MIN).is_empty(),
            "back-off doubled"
        );
        let dials = d.due_bootstrap_dials(t0 + BACKOFF_MIN * 2);
        assert_eq!(dials.len(), 1);
        let peer = PeerId::random();
        d.on_connected(peer, dials[0].connection_id());
        d.on_disconnected(peer, t0);
        assert_eq!(d.due_bootstrap_dials(t0 + BACKOFF_MIN).len(), 1);
    }

    #[test]
    fn never_learns_itself_or_unspecified_addresses() {
        let local = PeerId::random();
        let mut d = Discovery::new(local, &[]);
        let now = Instant::now();
        assert!(!d.learn(local, vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()], now));
        let other = PeerId::random();
        assert!(!d.learn(other, vec!["/ip4/0.0.0.0/tcp/1".parse().unwrap()], now));
        assert!(d.learn(other, vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()], now));
        let mut budget = DialBudget::new(now);
        assert!(d.dial_discovered(other, now, &mut budget, None).is_some());
        assert!(d.dial_discovered(other, now, &mut budget, None).is_none());
    }

    /// Regression: addresses the transport cannot dial (QUIC, WebSockets, ... announced by
    /// peers of other implementations) were kept and re-dialled for ever.
    #[test]
    fn unsupported_addresses_are_not_learned() {
        let mut d = Discovery::new(PeerId::random(), &[]);
        let now = Instant::now();
        let peer = PeerId::random();
        let quic: Multiaddr = "/ip4/127.0.0.1/udp/1/quic-v1".parse().unwrap();
        assert!(!d.learn(peer, vec![quic.clone()], now));
        assert!(d.addrs(&peer).is_empty());
        let dns: Multiaddr = "/dns4/localhost/tcp/1".parse().unwrap();
        assert!(d.learn(peer, vec![quic, dns.clone()], now));
        assert_eq!(d.addrs(&peer), vec![dns]);
    }

    #[test]
    fn a_bootstrap_address_the_transport_cannot_dial_is_given_up() {
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let mut d = Discovery::new(PeerId::random(), std::slice::from_ref(&addr));
        let t0 = Instant::now();
        let dials = d.due_bootstrap_dials(t0);
        d.on_unsupported(dials[0].connection_id(), "unsupported");
        assert!(d.due_bootstrap_dials(t0 + BACKOFF_MAX * 2).is_empty());
    }

    #[test]
    fn a_bootstrap_address_of_another_peer_is_given_up() {
        let named = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{named}").parse().unwrap();
        let mut d = Discovery::new(PeerId::random(), std::slice::from_ref(&addr));
        let t0 = Instant::now();
        let dials = d.due_bootstrap_dials(t0);
        assert_eq!(dials.len(), 1);
        d.on_wrong_peer(dials[0].connection_id(), PeerId::random());
        assert!(d.due_bootstrap_dials(t0 + BACKOFF_MAX * 2).is_empty());
    }
}
