//! Connection management policy: which connections to shed when the node has more peers than
//! it wants (foreign peers first, never dfs or bootstrap peers), and the dial budget that
//! bounds how many attacker-chosen addresses gossip announcements can make the node dial.
//! Pure bookkeeping: the event loop applies the decisions.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::PeerId;
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

/// A connected peer, as the shedding policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub peer: PeerId,
    /// When its first connection was established.
    pub since: Instant,
    /// A dfs peer (identify showed `/dfs/sync/1`) or a bootstrap peer: never shed.
    pub protected: bool,
}

/// The peers to disconnect so that at most `limit` stay: unprotected peers that have had
/// [`IDENTIFY_GRACE`] to identify, oldest first. Newcomers within their grace are kept, so an
/// honest peer that has just connected is never shed before it could show it speaks dfs.
pub fn victims(peers: &[Candidate], limit: usize, now: Instant) -> Vec<PeerId> {
    let over = peers.len().saturating_sub(limit);
    if over == 0 {
        return Vec::new();
    }
    let mut shed: Vec<&Candidate> = peers
        .iter()
        .filter(|c| !c.protected && now.saturating_duration_since(c.since) >= IDENTIFY_GRACE)
        .collect();
    shed.sort_by_key(|c| c.since);
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
            protected: false,
        };
        let older_dfs = Candidate {
            peer: PeerId::random(),
            since: t0 - Duration::from_secs(1),
            protected: true,
        };
        let newer_foreign = Candidate {
            peer: PeerId::random(),
            since: t0 + Duration::from_secs(10),
            protected: false,
        };
        let newcomer = Candidate {
            peer: PeerId::random(),
            since: now,
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
