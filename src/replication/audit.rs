//! Proofs of possession: a node drops a copy only when the members placed to keep it prove
//! they hold the bytes, not merely say so.
//!
//! Before a copy is dropped, each placed member that answers `has` with `keeps: true` is
//! challenged (`/dfs/fetch/2` `prove`): a fresh random nonce and a few random chunk indices;
//! the member answers the BLAKE3 hash, keyed with the nonce, of those chunks' bytes, which only
//! a holder of the bytes can compute. The challenger computes the same from its own copy (it
//! drops only what it holds, so it always can).
//!
//! A member that claims to keep content has no reason to fetch it: from the moment it claims
//! to, the challenger withholds the content's chunks from it (all of them for content of up to
//! [`WITHHELD_PER_CLAIM`] chunks, a random sample of that many beyond, the challenged chunks
//! among them) for [`WITHHOLD_FOR`], so that it cannot answer by fetching the bytes from the
//! very node that asks. A failed or missing proof counts as "not held": the copy stays, the
//! file counts as under-replicated, and the member is reported (`dfs members`, the log, the
//! `dfs_failed_proofs_total` metric).
//!
//! Limit: a member that holds nothing can still pass by fetching the challenged chunks from
//! *another* holder that has not challenged it yet; the last honest holder to challenge it
//! withholds them, so it keeps its copy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use rand::seq::index::sample;
use rand::RngCore;
use serde::Serialize;

use crate::record::Hash;

/// Most chunks of one content withheld from one claimant (a sample beyond it).
pub const WITHHELD_PER_CLAIM: usize = 1024;
/// How long chunks stay withheld from a member that claimed to keep them.
pub const WITHHOLD_FOR: Duration = Duration::from_secs(600);
/// Most withheld (peer, chunk) pairs in all: about 16 MiB of map at most.
const MAX_WITHHELD: usize = 1 << 18;
/// Chunks named in one challenge.
pub const CHALLENGED_CHUNKS: usize = 2;
/// Most members whose tallies are kept.
const MAX_TALLIES: usize = 4096;
/// How long a passed proof stands for its (peer, content).
pub const PROOF_VALID_FOR: Duration = Duration::from_secs(60);
/// Most passed proofs remembered.
const MAX_PROVEN: usize = 65_536;

/// One member's proofs, as this node saw them since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Proofs that matched.
    pub passed: u64,
    /// Proofs that did not match, were not answered, or were refused while the member claimed
    /// to keep the content.
    pub failed: u64,
}

/// A challenge: what to send and what the answer must be.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub nonce: Hash,
    pub indices: Vec<u64>,
}

/// The withheld chunks and the members' tallies. Shared by repair (which challenges) and the
/// chunk server (which withholds).
#[derive(Debug, Default)]
pub struct Audit {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    withheld: HashMap<PeerId, HashMap<Hash, Instant>>,
    withheld_total: usize,
    tallies: HashMap<PeerId, Tally>,
    /// Proofs that passed lately, by (peer, content id): not asked again before
    /// [`PROOF_VALID_FOR`] (`dfs put --wait` asks every 250 ms).
    proven: HashMap<(PeerId, Hash), Instant>,
}

impl State {
    fn expire(&mut self) {
        let mut total = 0;
        self.withheld.retain(|_, chunks| {
            let now = Instant::now();
            chunks.retain(|_, until| now < *until);
            total += chunks.len();
            !chunks.is_empty()
        });
        self.withheld_total = total;
    }
}

impl Audit {
    /// Withholds chunks of `list` (a content's chunk list) from `peer`, which claims to keep
    /// that content, and picks a challenge among them.
    pub fn claimed(&self, peer: PeerId, list: &[Hash]) -> Challenge {
        let mut rng = rand::thread_rng();
        let picked: Vec<usize> = if list.len() <= WITHHELD_PER_CLAIM {
            (0..list.len()).collect()
        } else {
            sample(&mut rng, list.len(), WITHHELD_PER_CLAIM).into_vec()
        };
        let until = Instant::now() + WITHHOLD_FOR;
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let n = CHALLENGED_CHUNKS.min(picked.len());
        let indices: Vec<u64> = sample(&mut rng, picked.len(), n)
            .into_iter()
            .map(|j| picked[j] as u64)
            .collect();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.withheld_total + picked.len() > MAX_WITHHELD {
                state.expire();
            }
            // The sample when there is room; the challenged chunks always (a few more than
            // the bound at worst), or the claimant could fetch them from this node.
            let room = state.withheld_total + picked.len() <= MAX_WITHHELD;
            let chunks = state.withheld.entry(peer).or_default();
            let before = chunks.len();
            if room {
                for &i in &picked {
                    chunks.insert(list[i], until);
                }
            }
            for &i in &indices {
                chunks.insert(list[i as usize], until);
            }
            let added = chunks.len() - before;
            state.withheld_total += added;
        }
        Challenge {
            nonce: Hash(nonce),
            indices,
        }
    }

    /// Whether `chunk` is withheld from `peer` now.
    pub fn withheld(&self, peer: &PeerId, chunk: &Hash) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .withheld
            .get(peer)
            .and_then(|chunks| chunks.get(chunk))
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Whether `peer` proved it holds `cid` less than [`PROOF_VALID_FOR`] ago.
    pub fn recently_proven(&self, peer: &PeerId, cid: &Hash) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .proven
            .get(&(*peer, *cid))
            .is_some_and(|at| at.elapsed() < PROOF_VALID_FOR)
    }

    /// Notes a proof's outcome for `peer` and `cid`; returns the peer's tally.
    pub fn proved(&self, peer: PeerId, cid: Hash, passed: bool) -> Tally {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if passed {
            if state.proven.len() >= MAX_PROVEN {
                state.proven.retain(|_, at| at.elapsed() < PROOF_VALID_FOR);
                if state.proven.len() >= MAX_PROVEN {
                    state.proven.clear();
                }
            }
            state.proven.insert((peer, cid), Instant::now());
        } else {
            state.proven.remove(&(peer, cid));
        }
        if state.tallies.len() >= MAX_TALLIES && !state.tallies.contains_key(&peer) {
            // Forget the member with the fewest failures: the ones that failed stay reported.
            if let Some(gone) = state
                .tallies
                .iter()
                .min_by_key(|(_, t)| (t.failed, t.passed))
                .map(|(p, _)| *p)
            {
                state.tallies.remove(&gone);
            }
        }
        let tally = state.tallies.entry(peer).or_default();
        if passed {
            tally.passed += 1;
        } else {
            tally.failed += 1;
        }
        *tally
    }

    /// Each member's tally.
    pub fn tallies(&self) -> HashMap<PeerId, Tally> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tallies
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize) -> Vec<Hash> {
        (0..n as u32).map(|i| Hash::of(&i.to_be_bytes())).collect()
    }

    #[test]
    fn a_claimant_is_refused_the_chunks_it_claims_and_challenged_among_them() {
        let audit = Audit::default();
        let peer = PeerId::random();
        let other = PeerId::random();
        let chunks = list(10);
        let c = audit.claimed(peer, &chunks);
        assert_eq!(c.indices.len(), CHALLENGED_CHUNKS);
        assert_ne!(c.indices[0], c.indices[1]);
        assert!(chunks.iter().all(|h| audit.withheld(&peer, h)));
        assert!(!audit.withheld(&other, &chunks[0]));
        // One chunk: one index.
        let one = list(1);
        assert_eq!(audit.claimed(other, &one).indices, vec![0]);
    }

    #[test]
    fn large_contents_withhold_a_sample_that_holds_the_challenge() {
        let audit = Audit::default();
        let peer = PeerId::random();
        let chunks = list(5000);
        let c = audit.claimed(peer, &chunks);
        let withheld = chunks.iter().filter(|h| audit.withheld(&peer, h)).count();
        assert_eq!(withheld, WITHHELD_PER_CLAIM);
        for i in c.indices {
            assert!(audit.withheld(&peer, &chunks[i as usize]));
        }
    }

    #[test]
    fn tallies_count_passes_and_failures() {
        let audit = Audit::default();
        let peer = PeerId::random();
        let cid = Hash::of(b"content");
        audit.proved(peer, cid, true);
        assert!(audit.recently_proven(&peer, &cid));
        let t = audit.proved(peer, cid, false);
        assert!(!audit.recently_proven(&peer, &cid));
        assert_eq!(
            t,
            Tally {
                passed: 1,
                failed: 1
            }
        );
        assert_eq!(audit.tallies()[&peer], t);
    }
}
