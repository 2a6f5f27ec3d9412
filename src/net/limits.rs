//! Connection management policy: which connections to shed when the node has more peers than
//! it wants (foreign peers first, never dfs or bootstrap peers), the dial budget that bounds
//! how many attacker-chosen addresses gossip announcements can make the node dial, and
//! [`PendingPerIp`], the one limit libp2p's `connection-limits` lacks: connections being set up
//! from one IP address. The event loop applies the decisions.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

/// How long a new peer has to identify itself as a dfs peer before it may be shed.
pub const IDENTIFY_GRACE: Duration = Duration::from_secs(2);
/// Most addresses dialled for one discovered peer (an announcement may carry 16).
pub const MAX_DIAL_ADDRS: usize = 8;
/// Address dials the node may make at once for discovery, and how fast the budget refills.
pub const DIAL_BURST: f64 = 32.0;
pub const DIAL_REFILL_PER_SEC: f64 = 0.5;
/// The same, for the dials that announcements relayed by one peer may cause.
pub const FORWARDER_BURST: f64 = 24.0;
pub const FORWARDER_REFILL_PER_SEC: f64 = 0.25;

/// Connections being set up from one IP address at once: half of the pending room
/// ([`super::behaviour::MAX_PENDING_INCOMING`]), so that sockets from one address (idle or
/// trickling) cannot take it all from peers elsewhere.
pub const MAX_PENDING_PER_IP: usize = 128;

/// Counts the incoming connections being set up per remote IP address and refuses those
/// beyond [`MAX_PENDING_PER_IP`].
#[derive(Debug, Default)]
pub struct PendingPerIp {
    per_ip: HashMap<IpAddr, usize>,
    pending: HashMap<ConnectionId, IpAddr>,
}

/// The refusal of [`PendingPerIp`].
#[derive(Debug, thiserror::Error)]
#[error("{count} connections from {ip} are being set up already (limit {MAX_PENDING_PER_IP})")]
pub struct TooManyPending {
    pub ip: IpAddr,
    pub count: usize,
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

impl PendingPerIp {
    fn release(&mut self, connection: ConnectionId) {
        let Some(ip) = self.pending.remove(&connection) else {
            return;
        };
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

impl NetworkBehaviour for PendingPerIp {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else {
            return Ok(());
        };
        let count = self.per_ip.get(&ip).copied().unwrap_or(0);
        if count >= MAX_PENDING_PER_IP {
            return Err(ConnectionDenied::new(TooManyPending { ip, count }));
        }
        self.per_ip.insert(ip, count + 1);
        self.pending.insert(connection, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release(connection);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ListenFailure(f) => self.release(f.connection_id),
            FromSwarm::ConnectionEstablished(e) => self.release(e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// A connected peer, as the shedding policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub peer: PeerId,
    /// When its first connection was established.
    pub since: Instant,
    /// Identify showed `/dfs/sync/1`: shed only after the foreign peers.
    pub dfs: bool,
    /// A bootstrap peer, or one of the first `max_peers` dfs peers: never shed.
    pub protected: bool,
}

/// The peers to disconnect so that at most `limit` stay: unprotected peers that have had
/// [`IDENTIFY_GRACE`] to identify, foreign ones first, oldest first. Newcomers within their
/// grace are kept, so an honest peer that has just connected is never shed before it could
/// show it speaks dfs.
pub fn victims(peers: &[Candidate], limit: usize, now: Instant) -> Vec<PeerId> {
    let over = peers.len().saturating_sub(limit);
    if over == 0 {
        return Vec::new();
    }
    let mut shed: Vec<&Candidate> = peers
        .iter()
        .filter(|c| !c.protected && now.saturating_duration_since(c.since) >= IDENTIFY_GRACE)
        .collect();
    shed.sort_by_key(|c| (c.dfs, c.since));
    shed.into_iter().take(over).map(|c| c.peer).collect()
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, burst: f64, rate: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.last = now;
    }
}

/// The budget of discovery dials, counted in addresses: one global token bucket, and one per
/// peer whose relayed announcements caused the dial. Bootstrap dials and dials asked for
/// through the API are not charged.
#[derive(Debug)]
pub struct DialBudget {
    global: Bucket,
    forwarders: HashMap<PeerId, Bucket>,
    /// Addresses charged so far (for logs and tests).
    pub spent: u64,
}

impl DialBudget {
    pub fn new(now: Instant) -> DialBudget {
        DialBudget {
            global: Bucket::new(DIAL_BURST, now),
            forwarders: HashMap::new(),
            spent: 0,
        }
    }

    /// Takes `addrs` tokens from the global bucket and from the bucket of `forwarder` (the
    /// peer that relayed the announcement), if both have them; false (nothing taken) if not.
    pub fn take(&mut self, forwarder: Option<PeerId>, addrs: usize, now: Instant) -> bool {
        let cost = addrs as f64;
        self.global.refill(DIAL_BURST, DIAL_REFILL_PER_SEC, now);
        if self.global.tokens < cost {
            return false;
        }
        if let Some(f) = forwarder {
            let b = self
                .forwarders
                .entry(f)
                .or_insert_with(|| Bucket::new(FORWARDER_BURST, now));
            b.refill(FORWARDER_BURST, FORWARDER_REFILL_PER_SEC, now);
            if b.tokens < cost {
                return false;
            }
            b.tokens -= cost;
        }
        self.global.tokens -= cost;
        self.spent += addrs as u64;
        true
    }

    /// A peer disconnected: its bucket goes (bounded by the connected peers). A peer that
    /// reconnects starts with a full bucket of its own, but the global bucket still bounds all.
    pub fn forget(&mut self, peer: &PeerId) {
        self.forwarders.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_old_unprotected_peers_first_and_spares_newcomers() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(60);
        let old_foreign = Candidate {
            peer: PeerId::random(),
            since: t0,
            dfs: false,
            protected: false,
        };
        let older_dfs = Candidate {
            peer: PeerId::random(),
            since: t0 - Duration::from_secs(1),
            dfs: true,
            protected: true,
        };
        let newer_foreign = Candidate {
            peer: PeerId::random(),
            since: t0 + Duration::from_secs(10),
            dfs: false,
            protected: false,
        };
        let newcomer = Candidate {
            peer: PeerId::random(),
            since: now,
            dfs: false,
            protected: false,
        };
        let all = [old_foreign, older_dfs, newer_foreign, newcomer];
        assert!(victims(&all, 4, now).is_empty());
        assert_eq!(victims(&all, 3, now), vec![old_foreign.peer]);
        assert_eq!(
            victims(&all, 1, now),
            vec![old_foreign.peer, newer_foreign.peer]
        );
        assert_eq!(
            victims(&all, 0, now),
            vec![old_foreign.peer, newer_foreign.peer]
        );
        // A dfs peer beyond the protected ones goes, but after the foreign ones.
        let unprotected_dfs = Candidate {
            peer: PeerId::random(),
            since: t0 - Duration::from_secs(5),
            dfs: true,
            protected: false,
        };
        let all = [old_foreign, unprotected_dfs, newer_foreign];
        assert_eq!(victims(&all, 2, now), vec![old_foreign.peer]);
        assert_eq!(
            victims(&all, 0, now),
            vec![old_foreign.peer, newer_foreign.peer, unprotected_dfs.peer]
        );
    }

    #[test]
    fn the_dial_budget_bounds_a_flood_and_refills() {
        let t0 = Instant::now();
        let mut b = DialBudget::new(t0);
        let mut dialled = 0;
        for _ in 0..300 {
            if b.take(None, MAX_DIAL_ADDRS, t0) {
                dialled += MAX_DIAL_ADDRS;
            }
        }
        assert_eq!(dialled as f64, DIAL_BURST);
        let later = t0 + Duration::from_secs(16);
        assert!(b.take(None, MAX_DIAL_ADDRS, later));
        assert!(!b.take(None, 1, later));
        assert_eq!(b.spent, DIAL_BURST as u64 + MAX_DIAL_ADDRS as u64);
    }

    #[test]
    fn one_address_cannot_take_all_the_pending_room() {
        let mut limit = PendingPerIp::default();
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let attacker: Multiaddr = "/ip4/192.0.2.1/tcp/5000".parse().unwrap();
        let honest: Multiaddr = "/ip4/198.51.100.7/tcp/6000".parse().unwrap();
        for i in 0..MAX_PENDING_PER_IP {
            let id = ConnectionId::new_unchecked(i);
            assert!(limit
                .handle_pending_inbound_connection(id, &local, &attacker)
                .is_ok());
        }
        let next = ConnectionId::new_unchecked(10_000);
        assert!(limit
            .handle_pending_inbound_connection(next, &local, &attacker)
            .is_err());
        let other = ConnectionId::new_unchecked(10_001);
        assert!(limit
            .handle_pending_inbound_connection(other, &local, &honest)
            .is_ok());
        // One of the attacker's connections ends its handshake: room for one more.
        assert!(limit
            .handle_established_inbound_connection(
                ConnectionId::new_unchecked(0),
                PeerId::random(),
                &local,
                &attacker
            )
            .is_ok());
        assert!(limit
            .handle_pending_inbound_connection(next, &local, &attacker)
            .is_ok());
    }

    #[test]
    fn one_forwarder_cannot_spend_the_whole_budget() {
        let t0 = Instant::now();
        let mut b = DialBudget::new(t0);
        let attacker = PeerId::random();
        let mut n = 0;
        while b.take(Some(attacker), 1, t0) {
            n += 1;
        }
        assert_eq!(n as f64, FORWARDER_BURST);
        assert!(b.take(Some(PeerId::random()), 1, t0), "others still dial");
    }
}
