//! Trust: who may change a network. A network is named by its owner's peer id (so nobody else
//! can claim it); the owner appoints admins, admins and the owner grant and revoke write
//! access with signed [`Grant`]s, and a record counts only if its author may write. This module
//! holds the rules; replication applies them on every path (gossip, sync, lookups) and the
//! store applies them inside the merge's transaction ([`Members::admission`]).
//!
//! The rules (also in `docs/PROTOCOL.md`, "Trust"):
//! - The owner is an admin for ever; grants about the owner are void.
//! - A grant with role `admin`, or about a subject who is an admin now, counts only if the owner
//!   issued it. Whether a peer is an admin now is the role in the owner's latest grant for it
//!   (the owner's grants are ordered by its sequence numbers).
//! - Any other grant counts if its issuer is the owner, an admin now, or a former admin and the
//!   grant's `seq` is at most the `cutoff` of the owner's grant that demoted it.
//! - A subject's role is that of its winning grant: the largest `(time, issuer, seq)` among the
//!   grants that count. No grant: a stranger, who may read only.
//! - A record counts if its author is a writer or admin, or if its author was lowered to
//!   reader by a grant whose `cutoff` is at least the record's `seq` and had held write access
//!   before. So a revoked writer's earlier records stay, and anything it signs afterwards is
//!   refused, whatever `time` it claims: acceptance goes by the author's gap-free sequence
//!   numbers, not by clocks, and reusing a number already seen is refused as a second record
//!   under one number (see `store/index.rs`, `author_seqs`).

pub mod grant;
pub mod settings;
pub mod ticket;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::record::{Hash, Record};
pub use grant::{Grant, InvalidGrant, Role};
pub use ticket::Ticket;

/// Most grants a network keeps (each about 250 bytes): membership stays small enough to send
/// whole in one sync answer.
pub const MAX_GRANTS: usize = 4096;

/// One peer's standing, derived from the grants.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Standing {
    role: Role,
    /// The highest role the subject ever held by a grant that counts.
    best: Role,
    cutoff: u64,
    /// The winning grant's held ranges: of the numbers up to `cutoff`, the ones that count.
    held: Option<Vec<(u64, u64)>>,
}

/// A member as `dfs members` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub peer_id: String,
    pub role: Role,
    /// The sequence number up to which a revoked member's records still count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<u64>,
    pub owner: bool,
    /// Proofs of possession this member failed, as this node saw them since it started (a
    /// member that says it keeps files it does not hold; see `replication::audit`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_proofs: u64,
    /// This node saw the member sign two records under one number (see PROTOCOL.md, "Trust").
    #[serde(default, skip_serializing_if = "is_false")]
    pub equivocated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The membership of one network: its grants and what they decide.
#[derive(Debug, Clone)]
pub struct Membership {
    owner: PeerId,
    owner_bytes: Vec<u8>,
    network: String,
    grants: BTreeMap<Hash, Grant>,
    standing: HashMap<Vec<u8>, Standing>,
    /// The owner's word on each peer it granted something: its latest grant, and whether any
    /// of its grants made the peer an admin. Rebuilt with `standing`.
    owner_view: HashMap<Vec<u8>, OwnerView>,
}

/// What the owner's grants say about one peer.
#[derive(Clone, Copy, Debug)]
struct OwnerView {
    seq: u64,
    role: Role,
    cutoff: u64,
    was_admin: bool,
}

impl Membership {
    pub fn new(owner: PeerId) -> Membership {
        Membership {
            owner,
            owner_bytes: owner.to_bytes(),
            network: network_id(&owner),
            grants: BTreeMap::new(),
            standing: HashMap::new(),
            owner_view: HashMap::new(),
        }
    }

    pub fn owner(&self) -> PeerId {
        self.owner
    }

    /// The network id: the owner's peer id in base58.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Checks a grant without adding it: its network, its signature, and that its issuer may
    /// grant it now. `Ok(false)` if it is known already.
    pub fn check(&self, grant: &Grant) -> Result<bool, InvalidGrant> {
        if grant.network != self.network {
            return Err(InvalidGrant::OtherNetwork(grant.network.clone()));
        }
        grant.verify()?;
        if self.grants.contains_key(&grant.id()) {
            return Ok(false);
        }
        if !self.counts(grant) || self.grants.len() >= MAX_GRANTS {
            return Err(InvalidGrant::NotAuthorized);
        }
        Ok(true)
    }

    /// Adds a verified grant if it counts now. `Ok(true)` if it was new; `Ok(false)` if known.
    pub fn insert(&mut self, grant: Grant) -> Result<bool, InvalidGrant> {
        if !self.check(&grant)? {
            return Ok(false);
        }
        self.grants.insert(grant.id(), grant);
        self.recompute();
        Ok(true)
    }

    /// Whether some peer's records count less than they did in `before` (a revocation or a
    /// demotion took effect): then records this node holds may have to go.
    pub fn lowered_since(&self, before: &Membership) -> bool {
        let limit = |s: Option<&Standing>| match s {
            Some(s) if s.role >= Role::Writer => u64::MAX,
            Some(s) if s.best >= Role::Writer => s.cutoff,
            _ => 0,
        };
        before
            .standing
            .iter()
            .any(|(peer, old)| limit(self.standing.get(peer)) < limit(Some(old)))
    }

    /// The role of `peer`; `None` for a stranger.
    pub fn role(&self, peer: &PeerId) -> Option<Role> {
        self.role_of(&peer.to_bytes())
    }

    fn role_of(&self, peer: &[u8]) -> Option<Role> {
        if peer == self.owner_bytes {
            return Some(Role::Admin);
        }
        self.standing.get(peer).map(|s| s.role)
    }

    pub fn can_write(&self, peer: &PeerId) -> bool {
        self.role(peer).is_some_and(|r| r >= Role::Writer)
    }

    /// Whether a record counts: its author may write, or wrote it before being revoked.
    pub fn admits(&self, record: &Record) -> bool {
        if record.author == self.owner_bytes {
            return true;
        }
        match self.standing.get(&record.author) {
            Some(s) if s.role >= Role::Writer => true,
            Some(s) => {
                s.best >= Role::Writer
                    && record.seq <= s.cutoff
                    && s.held
                        .as_ref()
                        .is_none_or(|h| grant::in_ranges(h, record.seq))
            }
            None => false,
        }
    }

    /// Every grant that was accepted.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.values()
    }

    /// A digest of the set of grants (BLAKE3 of their ids in order): equal digests, equal sets.
    pub fn digest(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        for id in self.grants.keys() {
            h.update(&id.0);
        }
        Hash(*h.finalize().as_bytes())
    }

    /// The owner and every peer with a grant, by role then peer id.
    pub fn members(&self) -> Vec<Member> {
        let mut out = vec![Member {
            peer_id: self.owner.to_string(),
            role: Role::Admin,
            cutoff: None,
            owner: true,
            failed_proofs: 0,
            equivocated: false,
        }];
        let mut rest: Vec<Member> = self
            .standing
            .iter()
            .filter_map(|(peer, s)| {
                Some(Member {
                    peer_id: PeerId::from_bytes(peer).ok()?.to_string(),
                    role: s.role,
                    cutoff: (s.role < s.best).then_some(s.cutoff),
                    owner: false,
                    failed_proofs: 0,
                    equivocated: false,
                })
            })
            .collect();
        rest.sort_by(|a, b| b.role.cmp(&a.role).then(a.peer_id.cmp(&b.peer_id)));
        out.extend(rest);
        out
    }

    /// The peers that may write now: the owner, admins and writers (placement's members).
    pub fn writers(&self) -> Vec<PeerId> {
        let mut out = vec![self.owner];
        out.extend(
            self.standing
                .iter()
                .filter(|(_, s)| s.role >= Role::Writer)
                .filter_map(|(peer, _)| PeerId::from_bytes(peer).ok())
                .filter(|p| *p != self.owner),
        );
        out
    }

    fn admin_now(&self, peer: &[u8]) -> bool {
        peer == self.owner_bytes
            || self
                .owner_view
                .get(peer)
                .is_some_and(|v| v.role == Role::Admin)
    }

    /// Whether a grant counts (see the module's rules).
    fn counts(&self, g: &Grant) -> bool {
        if g.subject == self.owner_bytes {
            return false;
        }
        if g.issuer == self.owner_bytes {
            return true;
        }
        if g.role == Role::Admin || self.admin_now(&g.subject) {
            return false;
        }
        // An admin now; or a former admin, whose grants up to the cutoff of its demotion still
        // count.
        match self.owner_view.get(&g.issuer) {
            Some(v) if v.role == Role::Admin => true,
            Some(v) => v.was_admin && g.seq <= v.cutoff,
            None => false,
        }
    }

    fn recompute(&mut self) {
        let mut view: HashMap<Vec<u8>, OwnerView> = HashMap::new();
        for g in self
            .grants
            .values()
            .filter(|g| g.issuer == self.owner_bytes)
        {
            let v = view.entry(g.subject.clone()).or_insert(OwnerView {
                seq: 0,
                role: g.role,
                cutoff: g.cutoff,
                was_admin: false,
            });
            v.was_admin |= g.role == Role::Admin;
            if g.seq >= v.seq {
                v.seq = g.seq;
                v.role = g.role;
                v.cutoff = g.cutoff;
            }
        }
        self.owner_view = view;
        let mut winners: HashMap<Vec<u8>, (&Grant, Role)> = HashMap::new();
        for g in self.grants.values().filter(|g| self.counts(g)) {
            let entry = winners.entry(g.subject.clone()).or_insert((g, g.role));
            entry.1 = entry.1.max(g.role);
            let key = |g: &Grant| (g.time, g.issuer.clone(), g.seq);
            if key(g) > key(entry.0) {
                entry.0 = g;
            }
        }
        let mut standing = HashMap::new();
        for (subject, (winner, best)) in winners {
            // An admin's role is the owner's word alone.
            let role = if self.admin_now(&subject) {
                Role::Admin
            } else {
                winner.role
            };
            standing.insert(
                subject,
                Standing {
                    role,
                    best,
                    cutoff: winner.cutoff,
                    held: winner.held.clone(),
                },
            );
        }
        self.standing = standing;
    }
}

/// The network id of an owner: its peer id in base58.
pub fn network_id(owner: &PeerId) -> String {
    owner.to_string()
}

/// The owner named by a network id.
pub fn owner_of(network: &str) -> Option<PeerId> {
    network.parse().ok()
}

/// The shared, live membership of a node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Members {
    inner: Arc<RwLock<Option<Membership>>>,
}

impl Members {
    /// Membership of a known network.
    pub fn known(membership: Membership) -> Members {
        Members {
            inner: Arc::new(RwLock::new(Some(membership))),
        }
    }

    /// Membership of a network not known yet (a reader that bootstraps from a peer).
    pub fn unknown() -> Members {
        Members {
            inner: Arc::new(RwLock::new(None)),
        }
    }

    /// Sets the network once it is learnt; false if another one was set already.
    pub fn learn(&self, membership: Membership) -> bool {
        let mut inner = self.inner.write().expect("members lock");
        match &*inner {
            Some(m) => m.network() == membership.network(),
            None => {
                *inner = Some(membership);
                true
            }
        }
    }

    /// Runs `f` on the membership, if the network is known.
    pub fn with<T>(&self, f: impl FnOnce(&Membership) -> T) -> Option<T> {
        self.inner.read().expect("members lock").as_ref().map(f)
    }

    pub fn network(&self) -> Option<String> {
        self.with(|m| m.network().to_string())
    }

    /// Checks a grant (see [`Membership::check`]).
    pub fn check(&self, grant: &Grant) -> Result<bool, InvalidGrant> {
        self.with(|m| m.check(grant))
            .unwrap_or_else(|| Err(InvalidGrant::OtherNetwork(grant.network.clone())))
    }

    /// Adds a grant (see [`Membership::insert`]). Returns whether it was new and whether it
    /// lowered some peer's standing (see [`Membership::lowered_since`]).
    pub fn insert(&self, grant: Grant) -> Result<(bool, bool), InvalidGrant> {
        let mut inner = self.inner.write().expect("members lock");
        match &mut *inner {
            Some(m) => {
                let before = m.clone();
                let new = m.insert(grant)?;
                Ok((new, new && m.lowered_since(&before)))
            }
            None => Err(InvalidGrant::OtherNetwork(grant.network)),
        }
    }

    pub fn admits(&self, record: &Record) -> bool {
        self.with(|m| m.admits(record)).unwrap_or(false)
    }

    pub fn role(&self, peer: &PeerId) -> Option<Role> {
        self.with(|m| m.role(peer)).flatten()
    }

    /// The store's admission policy: this membership, read at each merge.
    pub fn admission(&self) -> crate::store::Admission {
        let this = self.clone();
        Arc::new(move |record: &Record| this.admits(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    struct Net {
        owner: Keypair,
        m: Membership,
        seq: HashMap<PeerId, u64>,
        time: u64,
    }

    impl Net {
        fn new() -> Net {
            let owner = Keypair::generate_ed25519();
            let m = Membership::new(owner.public().to_peer_id());
            Net {
                owner,
                m,
                seq: HashMap::new(),
                time: 100,
            }
        }

        fn grant(&mut self, issuer: &Keypair, subject: &Keypair, role: Role, cutoff: u64) -> Grant {
            let seq = self.seq.entry(issuer.public().to_peer_id()).or_default();
            *seq += 1;
            self.time += 1;
            let mut g = Grant {
                network: self.m.network().to_string(),
                subject: subject.public().to_peer_id().to_bytes(),
                role,
                cutoff,
                time: self.time,
                issuer: Vec::new(),
                seq: *seq,
                sig: Vec::new(),
                held: None,
            };
            g.sign(issuer);
            g
        }
    }

    fn record(author: &Keypair, seq: u64) -> Record {
        let mut r = Record {
            key: "k".into(),
            cid: None,
            size: 0,
            time: 1,
            author: Vec::new(),
            seq,
            seen: Vec::new(),
            sig: Vec::new(),
        };
        r.sign(author);
        r
    }

    #[test]
    fn strangers_cannot_write_and_grants_need_an_admin() {
        let mut n = Net::new();
        let (w, stranger) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        assert!(n.m.admits(&record(&n.owner.clone(), 1)));
        assert!(!n.m.admits(&record(&w, 1)));
        // A stranger cannot grant itself or anyone.
        let g = n.grant(&stranger, &w, Role::Writer, 0);
        assert_eq!(n.m.insert(g), Err(InvalidGrant::NotAuthorized));
        let g = n.grant(&stranger, &stranger, Role::Admin, 0);
        assert_eq!(n.m.insert(g), Err(InvalidGrant::NotAuthorized));
        let owner = n.owner.clone();
        let g = n.grant(&owner, &w, Role::Writer, 0);
        assert_eq!(n.m.insert(g.clone()), Ok(true));
        assert_eq!(n.m.insert(g.clone()), Ok(false));
        assert!(n.m.admits(&record(&w, 1)));
        // A tampered grant does not verify.
        let mut bad = g;
        bad.role = Role::Admin;
        assert_eq!(n.m.insert(bad), Err(InvalidGrant::BadSignature));
    }

    #[test]
    fn a_revoked_writer_keeps_its_earlier_records_only() {
        let mut n = Net::new();
        let (owner, w) = (n.owner.clone(), Keypair::generate_ed25519());
        let g = n.grant(&owner, &w, Role::Writer, 0);
        n.m.insert(g).unwrap();
        let g = n.grant(&owner, &w, Role::Reader, 3);
        n.m.insert(g).unwrap();
        assert!(n.m.admits(&record(&w, 3)));
        assert!(!n.m.admits(&record(&w, 4)));
        assert_eq!(n.m.role(&w.public().to_peer_id()), Some(Role::Reader));
        // Allowed again: everything counts.
        let g = n.grant(&owner, &w, Role::Writer, 0);
        n.m.insert(g).unwrap();
        assert!(n.m.admits(&record(&w, 9)));
    }

    #[test]
    fn admins_grant_writers_but_not_admins_and_lose_power_when_demoted() {
        let mut n = Net::new();
        let owner = n.owner.clone();
        let (a, b, w) = (
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
        );
        let g = n.grant(&owner, &a, Role::Admin, 0);
        n.m.insert(g).unwrap();
        let g = n.grant(&a, &w, Role::Writer, 0);
        n.m.insert(g).unwrap();
        assert!(n.m.admits(&record(&w, 1)));
        let g = n.grant(&a, &b, Role::Admin, 0);
        assert_eq!(n.m.insert(g), Err(InvalidGrant::NotAuthorized));
        let g = n.grant(&owner, &b, Role::Admin, 0);
        n.m.insert(g).unwrap();
        // An admin cannot demote another admin.
        let g = n.grant(&a, &b, Role::Reader, 0);
        assert_eq!(n.m.insert(g), Err(InvalidGrant::NotAuthorized));
        // The owner demotes a with cutoff 1 (its first grant): w keeps write access, and a's
        // later grants do not count.
        let g = n.grant(&owner, &a, Role::Writer, 1);
        n.m.insert(g).unwrap();
        assert!(n.m.admits(&record(&w, 2)));
        let late = n.grant(&a, &Keypair::generate_ed25519(), Role::Writer, 0);
        assert_eq!(n.m.insert(late), Err(InvalidGrant::NotAuthorized));
        assert_eq!(n.m.role(&a.public().to_peer_id()), Some(Role::Writer));
        assert_eq!(n.m.members()[0].role, Role::Admin);
    }

    #[test]
    fn grant_order_does_not_matter() {
        let mut n = Net::new();
        let owner = n.owner.clone();
        let (a, w) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let gs = vec![
            n.grant(&owner, &a, Role::Admin, 0),
            n.grant(&a, &w, Role::Writer, 0),
            n.grant(&a, &w, Role::Reader, 2),
        ];
        let mut forward = Membership::new(owner.public().to_peer_id());
        for g in gs.clone() {
            forward.insert(g).unwrap();
        }
        // Out of order, a grant whose issuer is not an admin yet is refused, then counts once
        // sent again after the appointment (anti-entropy sends every grant again).
        let mut backward = Membership::new(owner.public().to_peer_id());
        for g in gs.iter().rev() {
            let _ = backward.insert(g.clone());
        }
        for g in gs.iter().rev() {
            let _ = backward.insert(g.clone());
        }
        assert_eq!(forward.digest(), backward.digest());
        assert_eq!(forward.members(), backward.members());
    }
}
