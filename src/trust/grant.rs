//! Grants: signed statements by the network's owner or an admin that give a peer a role
//! (admin, writer, reader). They spread like records (gossip topic `dfs/<network>/members/1`
//! and anti-entropy) and are kept for ever: membership is the set of them (see `trust`).

use serde::{Deserialize, Serialize};

use crate::protocols::{decode_cbor, encode_cbor, DecodeError};
use crate::record::{author_key, Hash, MAX_AUTHOR_LEN, SIGNATURE_LEN};

/// Domain prefix of what an issuer signs, so a grant signature is never valid as a record's.
pub const GRANT_SIGN_DOMAIN: &[u8] = b"dfs/grant/1\0";
/// Largest encoded grant accepted.
pub const MAX_GRANT_SIZE: usize = 1024;
/// Most ranges in a revocation's `held` (32 ranges fit the grant's size with room to spare).
pub const MAX_HELD_RANGES: usize = 32;

/// What a peer may do in a network. Ordered: each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May read (every peer may); as a grant, it revokes write access.
    Reader,
    /// May put and delete.
    Writer,
    /// May also grant and revoke write access (appointed by the owner only).
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

/// A signed grant. `cutoff` matters when the grant lowers the subject's role: the subject's
/// records and grants numbered up to `cutoff` (their `seq`) keep the authority the subject had
/// before; later ones count only as far as the new role allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub network: String,
    #[serde(with = "serde_bytes")]
    pub subject: Vec<u8>,
    pub role: Role,
    pub cutoff: u64,
    pub time: u64,
    #[serde(with = "serde_bytes")]
    pub issuer: Vec<u8>,
    pub seq: u64,
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
    /// When the grant lowers the subject's role: the subject's numbers the issuer held, as
    /// ranges `[from, to]` (inclusive, ascending, disjoint, all at most `cutoff`). Of the
    /// subject's objects up to `cutoff`, only those numbered within a range keep the role it
    /// had: a number the issuer never saw cannot be filled in later (back-dating below the
    /// cutoff after a jump). Absent: every number up to `cutoff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Vec<(u64, u64)>>,
}

/// The fields a grant's signature covers, in their canonical order.
#[derive(Serialize)]
struct Signed<'a> {
    network: &'a str,
    #[serde(with = "serde_bytes")]
    subject: &'a [u8],
    role: Role,
    cutoff: u64,
    time: u64,
    #[serde(with = "serde_bytes")]
    issuer: &'a [u8],
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    held: Option<&'a [(u64, u64)]>,
}

/// Why a grant was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidGrant {
    #[error("grant is for network {0}, not this one")]
    OtherNetwork(String),
    #[error("grant names a subject or issuer that is not an ed25519 peer id")]
    BadPeer,
    #[error("grant signature does not verify against its issuer's key")]
    BadSignature,
    #[error("grant issuer may not grant this role")]
    NotAuthorized,
    #[error("grant's held ranges are not ascending, disjoint and within its cutoff, or more than {MAX_HELD_RANGES}")]
    BadRanges,
}

/// Whether `seq` is within one of `ranges` (ascending, disjoint).
pub fn in_ranges(ranges: &[(u64, u64)], seq: u64) -> bool {
    let i = ranges.partition_point(|&(_, to)| to < seq);
    ranges.get(i).is_some_and(|&(from, _)| from <= seq)
}

/// Ranges of the ascending numbers `seqs`, at most `max` of them: beyond, the smallest gaps are
/// closed (their numbers then count as held).
pub fn ranges_of(seqs: impl IntoIterator<Item = u64>, max: usize) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for seq in seqs {
        match ranges.last_mut() {
            Some((_, to)) if seq <= to.saturating_add(1) => *to = (*to).max(seq),
            _ => ranges.push((seq, seq)),
        }
    }
    while ranges.len() > max.max(1) {
        // Close the smallest gap.
        let i = (0..ranges.len() - 1)
            .min_by_key(|&i| ranges[i + 1].0 - ranges[i].1)
            .expect("two ranges at least");
        ranges[i].1 = ranges[i + 1].1;
        ranges.remove(i + 1);
    }
    ranges
}

impl Grant {
    /// The bytes the issuer signs: [`GRANT_SIGN_DOMAIN`] and the canonical CBOR of every field
    /// but `sig`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = GRANT_SIGN_DOMAIN.to_vec();
        ciborium::into_writer(
            &Signed {
                network: &self.network,
                subject: &self.subject,
                role: self.role,
                cutoff: self.cutoff,
                time: self.time,
                issuer: &self.issuer,
                seq: self.seq,
                held: self.held.as_deref(),
            },
            &mut out,
        )
        .expect("encoding to a Vec cannot fail");
        out
    }

    /// The grant's id: BLAKE3 of its signed bytes.
    pub fn id(&self) -> Hash {
        Hash(*blake3::hash(&self.signed_bytes()).as_bytes())
    }

    /// Sets `issuer` to `key`'s peer id and signs.
    pub fn sign(&mut self, key: &libp2p::identity::Keypair) {
        self.issuer = key.public().to_peer_id().to_bytes();
        self.sig = key
            .sign(&self.signed_bytes())
            .expect("ed25519 signing cannot fail");
    }

    /// Checks the peers, the held ranges and the signature (not whether the issuer may grant:
    /// see `trust`).
    pub fn verify(&self) -> Result<(), InvalidGrant> {
        if let Some(held) = &self.held {
            let ordered = held
                .iter()
                .all(|&(from, to)| from <= to && to <= self.cutoff)
                && held.windows(2).all(|w| w[0].1 < w[1].0);
            if held.len() > MAX_HELD_RANGES || !ordered {
                return Err(InvalidGrant::BadRanges);
            }
        }
        if self.subject.len() > MAX_AUTHOR_LEN || author_key(&self.subject).is_none() {
            return Err(InvalidGrant::BadPeer);
        }
        let key = author_key(&self.issuer).ok_or(InvalidGrant::BadPeer)?;
        if self.sig.len() != SIGNATURE_LEN || !key.verify(&self.signed_bytes(), &self.sig) {
            return Err(InvalidGrant::BadSignature);
        }
        Ok(())
    }

    pub fn subject_peer(&self) -> Option<libp2p::PeerId> {
        libp2p::PeerId::from_bytes(&self.subject).ok()
    }

    pub fn issuer_peer(&self) -> Option<libp2p::PeerId> {
        libp2p::PeerId::from_bytes(&self.issuer).ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_cbor(self)
    }

    /// Decodes a grant (bounded) and verifies its signature.
    pub fn decode(bytes: &[u8]) -> Result<Grant, DecodeError> {
        let grant: Grant = decode_cbor(bytes, MAX_GRANT_SIZE)?;
        grant
            .verify()
            .map_err(|e| DecodeError::Other(grant_error(&e)))?;
        Ok(grant)
    }
}

fn grant_error(e: &InvalidGrant) -> &'static str {
    match e {
        InvalidGrant::BadPeer => "grant names an invalid peer id",
        InvalidGrant::BadSignature => "grant signature does not verify",
        InvalidGrant::OtherNetwork(_) => "grant is for another network",
        InvalidGrant::NotAuthorized => "grant issuer may not grant",
        InvalidGrant::BadRanges => "grant held ranges are malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_exactly_the_numbers_held_until_there_are_too_many() {
        let r = ranges_of([1, 2, 3, 5, 9, 10, 1_000_000], 32);
        assert_eq!(r, vec![(1, 3), (5, 5), (9, 10), (1_000_000, 1_000_000)]);
        for (seq, held) in [
            (0, false),
            (1, true),
            (3, true),
            (4, false),
            (5, true),
            (6, false),
        ] {
            assert_eq!(in_ranges(&r, seq), held, "{seq}");
        }
        assert!(in_ranges(&r, 1_000_000) && !in_ranges(&r, 999_999) && !in_ranges(&r, u64::MAX));
        // Beyond the bound, the smallest gaps close first.
        assert_eq!(
            ranges_of([1, 2, 3, 5, 9, 10, 1_000_000], 2),
            vec![(1, 10), (1_000_000, 1_000_000)]
        );
        assert!(ranges_of([], 32).is_empty());
    }
}
