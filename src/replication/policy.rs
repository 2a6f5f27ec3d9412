//! The replication policy: what this node wants to hold. With the network's replication factor
//! `all` (or not known yet), the content of every live record; with `R`, the content placed
//! on this node (`crate::placement`, over the members that are up) and what its reads cached.
//!
//! A member is up while connected, and for `repair_after` after it was last connected or
//! announced itself: a node that goes away keeps its place for that grace period (a restart or
//! a short partition moves nothing); past it, its files are placed elsewhere and repaired. A
//! member this node has never seen, in this run or an earlier one (its address book), is not
//! up: an invitation never used places nothing on a machine that never came online.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::placement::{self, Candidate, Replicas};
use crate::record::{ContentId, Record};
use crate::trust::settings::Settings;
use crate::trust::Members;

/// What this node knows of one peer.
#[derive(Debug, Clone, Copy)]
struct Seen {
    connected: bool,
    /// When it was last connected or announced itself.
    last: Instant,
    /// Its announced capacity in bytes, if it announced one.
    capacity: Option<u64>,
}

/// One cached file's size and last read.
#[derive(Debug, Clone, Copy)]
struct Cached {
    size: u64,
    used: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// `None` until the network's settings are known: full replication meanwhile (nothing is
    /// dropped on a guess).
    replicas: Option<Replicas>,
    /// The settings the replication factor comes from, to hand on to peers.
    settings: Option<Settings>,
    seen: HashMap<PeerId, Seen>,
    cache: HashMap<ContentId, Cached>,
    /// The candidates last computed, with the instant after which they must be recomputed.
    candidates: Option<(Arc<Vec<Candidate>>, Instant)>,
}

/// The policy of one node. Cheap to clone.
#[derive(Clone)]
pub struct Policy {
    me: PeerId,
    capacity: u64,
    repair_after: Duration,
    cache_size: u64,
    settings_file: Option<std::path::PathBuf>,
    members: Members,
    state: Arc<Mutex<State>>,
    /// When the policy was made (the node started): every member seen in an earlier run
    /// counts as seen then, so a restart, before its connections are back, places nothing
    /// differently.
    started: Instant,
    known: Arc<std::collections::HashSet<PeerId>>,
}

/// How a policy is set up (from the node's configuration).
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// This node's capacity (`--capacity`), announced to its peers: its weight in placement.
    pub capacity: u64,
    /// How long a member that went away keeps its place (`--repair-after`).
    pub repair_after: Duration,
    /// Most bytes of files read here that are not placed here (`--cache-size`).
    pub cache_size: u64,
    /// Where the network's settings are kept once learnt (`<data dir>/settings`).
    pub settings_file: Option<std::path::PathBuf>,
    /// The peers this node saw in earlier runs (its address book): they count as seen at
    /// start, so a restart places nothing differently before its connections are back.
    pub known: Vec<PeerId>,
}

impl Policy {
    pub fn new(me: PeerId, members: Members, config: &PolicyConfig) -> Policy {
        Policy {
            me,
            capacity: config.capacity,
            repair_after: config.repair_after,
            cache_size: config.cache_size,
            settings_file: config.settings_file.clone(),
            members,
            state: Arc::default(),
            started: Instant::now(),
            known: Arc::new(config.known.iter().copied().collect()),
        }
    }

    pub fn me(&self) -> PeerId {
        self.me
    }

    /// This node's announced capacity.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn repair_after(&self) -> Duration {
        self.repair_after
    }

    pub fn cache_size(&self) -> u64 {
        self.cache_size
    }

    pub fn settings_file(&self) -> Option<std::path::PathBuf> {
        self.settings_file.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("policy state")
    }

    /// The network's replication factor (`all` until its settings are known).
    pub fn replicas(&self) -> Replicas {
        self.state().replicas.unwrap_or(Replicas::All)
    }

    /// Whether the network's settings are known.
    pub fn settled(&self) -> bool {
        self.state().replicas.is_some()
    }

    /// Adopts the network's settings (checked by the caller); false if settings were known
    /// already (they are set once, when the network is created).
    pub fn set_settings(&self, settings: Settings) -> bool {
        let mut s = self.state();
        if s.settings.is_some() {
            return false;
        }
        s.replicas = Some(settings.replicas());
        s.settings = Some(settings);
        s.candidates = None;
        true
    }

    /// The network's settings, if known.
    pub fn settings(&self) -> Option<Settings> {
        self.state().settings.clone()
    }

    #[cfg(test)]
    fn set_replicas(&self, replicas: Replicas) {
        let mut s = self.state();
        s.replicas = Some(replicas);
        s.candidates = None;
    }

    /// Notes a peer's connection (`Some(true)`), disconnection (`Some(false)`) or announcement
    /// (`None`, with its capacity if it gave one).
    pub fn seen(&self, peer: PeerId, connected: Option<bool>, capacity: Option<u64>) {
        if peer == self.me {
            return;
        }
        let now = Instant::now();
        let mut s = self.state();
        let entry = s.seen.entry(peer).or_insert(Seen {
            connected: false,
            last: now,
            capacity: None,
        });
        let changed = match connected {
            Some(c) => std::mem::replace(&mut entry.connected, c) != c,
            None => false,
        } || (capacity.is_some() && entry.capacity != capacity);
        entry.last = now;
        if capacity.is_some() {
            entry.capacity = capacity;
        }
        if changed {
            s.candidates = None;
        }
    }

    /// The nodes that may hold content now: this node if it is a member, and every member that
    /// is connected or was seen within `repair_after` (counting the node's start as a sighting
    /// of every member seen in an earlier run), with their capacities. A member never seen is
    /// not a candidate.
    pub fn candidates(&self) -> Arc<Vec<Candidate>> {
        let now = Instant::now();
        let mut s = self.state();
        if let Some((c, until)) = &s.candidates {
            if now < *until {
                return c.clone();
            }
        }
        let writers: Vec<PeerId> = self.members.with(|m| m.writers()).unwrap_or_default();
        let mut out = Vec::new();
        // The earliest moment a member seen but not connected stops counting.
        let mut until = now + Duration::from_secs(1);
        for peer in writers {
            if out.iter().any(|c: &Candidate| c.peer == peer) {
                continue;
            }
            if peer == self.me {
                out.push(Candidate::new(peer, self.capacity));
                continue;
            }
            let (connected, last, capacity) = match s.seen.get(&peer) {
                Some(seen) => (seen.connected, seen.last, seen.capacity),
                None if self.known.contains(&peer) => (false, self.started, None),
                None => continue,
            };
            let expires = last + self.repair_after;
            if connected || now < expires {
                if !connected {
                    until = until.min(expires);
                }
                out.push(Candidate::new(
                    peer,
                    capacity.unwrap_or(placement::DEFAULT_CAPACITY),
                ));
            }
        }
        out.sort_by_key(|c| c.peer);
        let out = Arc::new(out);
        s.candidates = Some((out.clone(), until));
        out
    }

    /// The nodes placed to hold `cid`, best first: every candidate with `all`.
    pub fn placed(&self, cid: &ContentId) -> Vec<PeerId> {
        let candidates = self.candidates();
        match self.replicas() {
            Replicas::All => candidates.iter().map(|c| c.peer).collect(),
            Replicas::Count(n) => placement::place(cid, &candidates, n as usize),
        }
    }

    /// Whether this node is placed to hold `cid` (always, with `all`).
    pub fn placed_here(&self, cid: &ContentId) -> bool {
        match self.replicas() {
            Replicas::All => true,
            Replicas::Count(_) => self.placed(cid).contains(&self.me),
        }
    }

    /// Whether this node wants to hold the content of `record`: live, and placed here or in
    /// the cache.
    pub fn wants(&self, record: &Record) -> bool {
        let Some(cid) = &record.cid else {
            return false;
        };
        self.placed_here(cid) || self.state().cache.contains_key(cid)
    }

    /// Notes a read of `cid` (a file of `size` bytes): it enters or refreshes the cache.
    pub fn read(&self, cid: ContentId, size: u64) {
        if self.replicas() == Replicas::All {
            return;
        }
        self.state().cache.insert(
            cid,
            Cached {
                size,
                used: Instant::now(),
            },
        );
    }

    /// Splits content held here but not placed here into what the cache keeps (the most
    /// recently read, up to `cache_size` bytes) and what is extra (returned, least recently
    /// read first). Content never read here is extra; cache entries for content no longer held
    /// are forgotten.
    pub fn extra(&self, held_unplaced: Vec<(ContentId, u64)>) -> Vec<ContentId> {
        let mut s = self.state();
        let held: std::collections::HashSet<ContentId> =
            held_unplaced.iter().map(|(c, _)| *c).collect();
        s.cache.retain(|cid, _| held.contains(cid));
        let mut by_use: Vec<(Option<Instant>, ContentId, u64)> = held_unplaced
            .into_iter()
            .map(|(cid, size)| (s.cache.get(&cid).map(|c| c.used), cid, size))
            .collect();
        // Most recent first; never read last.
        by_use.sort_by_key(|b| std::cmp::Reverse(b.0));
        let mut kept = 0u64;
        let mut extra = Vec::new();
        for (used, cid, size) in by_use {
            if used.is_some() && kept.saturating_add(size) <= self.cache_size {
                kept += size;
            } else {
                extra.push(cid);
            }
        }
        extra.reverse();
        extra
    }

    /// Forgets a cached file (its copy was dropped).
    pub fn uncache(&self, cid: &ContentId) {
        self.state().cache.remove(cid);
    }

    /// Bytes of the files in the cache.
    pub fn cached_bytes(&self) -> u64 {
        self.state().cache.values().map(|c| c.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Membership;

    fn policy(cache: u64) -> Policy {
        let me = PeerId::random();
        let members = Members::known(Membership::new(me));
        Policy::new(
            me,
            members,
            &PolicyConfig {
                capacity: placement::DEFAULT_CAPACITY,
                repair_after: Duration::from_millis(50),
                cache_size: cache,
                settings_file: None,
                known: Vec::new(),
            },
        )
    }

    #[test]
    fn unknown_settings_mean_full_replication() {
        let p = policy(0);
        let cid = crate::record::Hash::of(b"x");
        assert_eq!(p.replicas(), Replicas::All);
        assert!(p.placed_here(&cid));
        p.set_replicas(Replicas::Count(1));
        // Alone, the owner is the only candidate: placed everywhere it matters.
        assert_eq!(p.placed(&cid), vec![p.me()]);
    }

    #[test]
    fn members_count_as_up_from_the_start_until_the_grace_ends() {
        let owner = libp2p::identity::Keypair::generate_ed25519();
        let owner_id = owner.public().to_peer_id();
        let me = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let other = libp2p::identity::Keypair::generate_ed25519();
        let mut membership = Membership::new(owner_id);
        let ghost = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        for subject in [me, other.public().to_peer_id(), ghost] {
            let mut g = crate::trust::Grant {
                network: membership.network().to_string(),
                subject: subject.to_bytes(),
                role: crate::trust::Role::Writer,
                cutoff: 0,
                time: 1,
                issuer: Vec::new(),
                seq: 1,
                sig: Vec::new(),
                held: None,
            };
            g.sign(&owner);
            assert!(membership.insert(g).unwrap());
        }
        let p = Policy::new(
            me,
            Members::known(membership),
            &PolicyConfig {
                capacity: placement::DEFAULT_CAPACITY,
                repair_after: Duration::from_millis(200),
                cache_size: 0,
                settings_file: None,
                known: vec![owner_id, other.public().to_peer_id()],
            },
        );
        // Not seen yet, but the node just started: the owner and the other writer, seen in an
        // earlier run, count; a member never seen (an invitation never used) does not.
        let up: Vec<PeerId> = p.candidates().iter().map(|c| c.peer).collect();
        assert_eq!(up.len(), 3);
        assert!(!up.contains(&ghost));
        // The other writer connects and stays; the owner is never seen again.
        p.seen(other.public().to_peer_id(), Some(true), None);
        std::thread::sleep(Duration::from_millis(1300));
        let up: Vec<PeerId> = p.candidates().iter().map(|c| c.peer).collect();
        assert_eq!(up.len(), 2, "{up:?}");
        assert!(!up.contains(&owner_id));
        // It goes away: it still counts for the grace period, then no more.
        p.seen(other.public().to_peer_id(), Some(false), None);
        assert_eq!(p.candidates().len(), 2);
        std::thread::sleep(Duration::from_millis(1300));
        assert_eq!(p.candidates().len(), 1);
        // The ghost counts once it announces itself.
        p.seen(ghost, None, Some(1 << 30));
        assert!(p.candidates().iter().any(|c| c.peer == ghost));
    }

    #[test]
    fn the_cache_keeps_the_most_recent_reads_within_its_size() {
        let p = policy(10);
        p.set_replicas(Replicas::Count(1));
        let a = crate::record::Hash::of(b"a");
        let b = crate::record::Hash::of(b"b");
        let c = crate::record::Hash::of(b"c");
        p.read(a, 6);
        std::thread::sleep(Duration::from_millis(2));
        p.read(b, 6);
        // b is the latest read and fits; a does not fit beside it; c was never read.
        let extra = p.extra(vec![(a, 6), (b, 6), (c, 1)]);
        assert_eq!(extra.len(), 2);
        assert!(extra.contains(&a) && extra.contains(&c) && !extra.contains(&b));
    }
}
