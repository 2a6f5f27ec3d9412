//! Placement: which nodes hold a file's content when the network keeps `R` copies. A pure
//! function of the content id and the candidates (members that are up, with their capacities):
//! weighted rendezvous hashing (highest random weight), as Ceph's straw2 draws.
//!
//! Each candidate draws a score for each content id, `capacity / -ln(u)` with `u` a uniform
//! number in (0, 1) hashed from the pair; the `R` highest scores hold the file. Why rendezvous
//! rather than Kademlia's XOR distance (which libp2p-kad uses for closeness): with XOR, a node's
//! share is the gap in the key space in front of its id, so shares of random ids differ several
//! times over (an exponential spread) and cannot be weighted; rendezvous gives every node its
//! capacity's share of the files, moves only the files whose top `R` the joining or leaving node
//! enters or leaves (about `R/N` of the copies, the minimum), and needs no ring or virtual nodes.
//! The exact rule is in `docs/PROTOCOL.md` ("Placement") so other implementations place alike.

use libp2p::PeerId;

use crate::record::ContentId;

/// Capacity counted for a node that announces none: 1 TiB.
pub const DEFAULT_CAPACITY: u64 = 1 << 40;

/// How many copies of each file's content a network keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Replicas {
    /// Every member and reader holds every file (full replication; the default).
    All,
    /// The content of each file lives on this many members (readers cache what they read).
    Count(u32),
}

impl Replicas {
    /// The wire form: 0 for all.
    pub fn to_wire(self) -> u32 {
        match self {
            Replicas::All => 0,
            Replicas::Count(n) => n,
        }
    }

    pub fn from_wire(n: u32) -> Replicas {
        if n == 0 {
            Replicas::All
        } else {
            Replicas::Count(n)
        }
    }
}

impl std::fmt::Display for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replicas::All => f.write_str("all"),
            Replicas::Count(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Replicas {
    type Err = String;
    fn from_str(s: &str) -> Result<Replicas, String> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Replicas::All);
        }
        match s.parse::<u32>() {
            Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(Replicas::Count(n)),
            _ => Err(format!(
                "expected `all` or a number of copies from 1 to {MAX_REPLICAS}, not {s:?}"
            )),
        }
    }
}

/// Most copies a network may ask for (beyond, `all` is the sensible choice).
pub const MAX_REPLICAS: u32 = 64;

/// A node that may hold content: a member that is up, with its announced capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub peer: PeerId,
    /// The first 8 bytes (little-endian) of BLAKE3 of the peer id's bytes.
    seed: u64,
    /// Capacity in GiB (at least 1/1024: a node never weighs nothing).
    weight: f64,
}

impl Candidate {
    pub fn new(peer: PeerId, capacity: u64) -> Candidate {
        let hash = blake3::hash(&peer.to_bytes());
        let seed = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
        let weight = (capacity as f64 / (1u64 << 30) as f64).max(1.0 / 1024.0);
        Candidate { peer, seed, weight }
    }

    /// The candidate's draw for a content id (see [`place`]): larger wins.
    pub fn draw(&self, cid: &ContentId) -> (f64, u64) {
        self.score(cid_seed(cid))
    }

    /// The candidate's draw for a content id: `weight / -ln(u)`, `u` in (0, 1) from the mixed
    /// seeds. Equal weights order by the hash alone (the score grows with `u`).
    fn score(&self, cid_seed: u64) -> (f64, u64) {
        let h = mix(cid_seed ^ self.seed);
        // 53 bits, centred in its interval: never 0 or 1.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        (self.weight / -u.ln(), h)
    }
}

/// MurmurHash3's 64-bit finaliser: a bijection that spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// The content id's seed: its first 8 bytes, little-endian (it is already a BLAKE3 hash).
fn cid_seed(cid: &ContentId) -> u64 {
    u64::from_le_bytes(cid.0[..8].try_into().expect("8 bytes"))
}

/// The `n` candidates that hold `cid`, best first (all of them if there are no more than `n`).
/// Ties (equal scores) go to the larger hash, then the smaller peer id bytes.
pub fn place(cid: &ContentId, candidates: &[Candidate], n: usize) -> Vec<PeerId> {
    let seed = cid_seed(cid);
    let mut scored: Vec<((f64, u64), &Candidate)> =
        candidates.iter().map(|c| (c.score(seed), c)).collect();
    let by_score = |a: &((f64, u64), &Candidate), b: &((f64, u64), &Candidate)| {
        b.0 .0
            .total_cmp(&a.0 .0)
            .then(b.0 .1.cmp(&a.0 .1))
            .then_with(|| a.1.peer.to_bytes().cmp(&b.1.peer.to_bytes()))
    };
    if scored.len() > n {
        scored.select_nth_unstable_by(n, by_score);
        scored.truncate(n);
    }
    scored.sort_by(by_score);
    scored.into_iter().map(|(_, c)| c.peer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cid(i: u64) -> ContentId {
        crate::record::Hash::of(&i.to_le_bytes())
    }

    fn members(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|_| Candidate::new(PeerId::random(), DEFAULT_CAPACITY))
            .collect()
    }

    /// Copies per node over `files` files of equal size.
    fn load(candidates: &[Candidate], files: u64, r: usize) -> HashMap<PeerId, u64> {
        let mut load: HashMap<PeerId, u64> = candidates.iter().map(|c| (c.peer, 0)).collect();
        for i in 0..files {
            for p in place(&cid(i), candidates, r) {
                *load.get_mut(&p).unwrap() += 1;
            }
        }
        load
    }

    #[test]
    fn deterministic_distinct_and_bounded() {
        let m = members(20);
        let a = place(&cid(7), &m, 3);
        let mut shuffled = m.clone();
        shuffled.reverse();
        assert_eq!(
            a,
            place(&cid(7), &shuffled, 3),
            "order of candidates matters not"
        );
        assert_eq!(a.len(), 3);
        assert!(a[0] != a[1] && a[1] != a[2] && a[0] != a[2]);
        assert_eq!(place(&cid(7), &m[..2], 3).len(), 2);
        assert!(place(&cid(7), &[], 3).is_empty());
        // The top 3 of the full list are the first 3 of a longer draw.
        assert_eq!(&place(&cid(7), &m, 5)[..3], &a[..]);
    }

    #[test]
    fn balanced_over_100_members() {
        let m = members(100);
        let files = 100_000;
        let load = load(&m, files, 3);
        let mean = (files * 3) as f64 / 100.0;
        for (peer, n) in &load {
            let off = (*n as f64 - mean).abs() / mean;
            assert!(off < 0.10, "{peer} holds {n} copies, mean {mean}");
        }
    }

    #[test]
    fn a_join_moves_about_r_over_n() {
        let mut m = members(20);
        let files = 20_000u64;
        let before: Vec<Vec<PeerId>> = (0..files).map(|i| place(&cid(i), &m, 3)).collect();
        m.push(Candidate::new(PeerId::random(), DEFAULT_CAPACITY));
        let newcomer = m[20].peer;
        let mut moved = 0;
        for (i, old) in before.iter().enumerate() {
            let new = place(&cid(i as u64), &m, 3);
            let gone = old.iter().filter(|p| !new.contains(p)).count();
            // Only the newcomer enters a file's holders, and each copy it takes moves once.
            assert!(new.iter().all(|p| old.contains(p) || *p == newcomer));
            moved += gone;
        }
        let share = moved as f64 / (files * 3) as f64;
        // Ideal: 1/21 of the copies move to the newcomer; the target is at most 1.5/20.
        assert!(share < 1.5 / 20.0, "moved {share}");
        assert!(share > 0.5 / 21.0, "moved {share}");
    }

    #[test]
    fn a_leave_moves_only_the_leavers_copies() {
        let m = members(20);
        let files = 10_000u64;
        let gone = m[3].peer;
        let rest: Vec<Candidate> = m.iter().copied().filter(|c| c.peer != gone).collect();
        for i in 0..files {
            let old = place(&cid(i), &m, 3);
            let new = place(&cid(i), &rest, 3);
            let kept = old.iter().filter(|p| new.contains(p)).count();
            let expect = if old.contains(&gone) { 2 } else { 3 };
            assert_eq!(kept, expect, "file {i}: {old:?} then {new:?}");
        }
    }

    #[test]
    fn capacity_weighs() {
        let mut m = members(10);
        m[0] = Candidate::new(m[0].peer, 3 * DEFAULT_CAPACITY);
        let load = load(&m, 30_000, 1);
        let big = load[&m[0].peer] as f64;
        let others: f64 = m[1..].iter().map(|c| load[&c.peer] as f64).sum::<f64>() / 9.0;
        let ratio = big / others;
        assert!((2.7..3.3).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn replicas_parse() {
        assert_eq!("all".parse::<Replicas>().unwrap(), Replicas::All);
        assert_eq!("3".parse::<Replicas>().unwrap(), Replicas::Count(3));
        assert!("0".parse::<Replicas>().is_err());
        assert!("65".parse::<Replicas>().is_err());
        assert_eq!(Replicas::from_wire(0), Replicas::All);
        assert_eq!(Replicas::Count(3).to_wire(), 3);
    }
}
