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

    /// Checks the peers and the signature (not whether the issuer may grant: see `trust`).
    pub fn verify(&self) -> Result<(), InvalidGrant> {
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
    }
}
