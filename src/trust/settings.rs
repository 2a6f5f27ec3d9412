//! The network's settings: statements signed by the owner when the network is created, so every
//! node agrees on them and nobody else can change them. Today one setting: the replication
//! factor (`dfs node --replicas`). Nodes learn them from a ticket, or from a peer's answer to
//! the fetch `network` request, and keep them in `<data dir>/settings`.

use serde::{Deserialize, Serialize};

use crate::placement::Replicas;
use crate::protocols::{decode_cbor, encode_cbor, DecodeError};
use crate::record::{author_key, MAX_AUTHOR_LEN, SIGNATURE_LEN};

/// Domain prefix of what the owner signs, so a settings signature is never valid as anything
/// else's.
pub const SETTINGS_SIGN_DOMAIN: &[u8] = b"dfs/settings/1\0";
/// Largest encoded settings accepted.
pub const MAX_SETTINGS_SIZE: usize = 512;

/// A network's settings, signed by its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub network: String,
    /// Copies of each file's content: 0 for every node (full replication).
    pub replicas: u32,
    /// When the owner made them, in milliseconds since the Unix epoch.
    pub time: u64,
    #[serde(with = "serde_bytes")]
    pub issuer: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

#[derive(Serialize)]
struct Signed<'a> {
    network: &'a str,
    replicas: u32,
    time: u64,
    #[serde(with = "serde_bytes")]
    issuer: &'a [u8],
}

impl Settings {
    /// New settings for the network `key` owns, signed.
    pub fn new(key: &libp2p::identity::Keypair, replicas: Replicas, time: u64) -> Settings {
        let owner = key.public().to_peer_id();
        let mut s = Settings {
            network: super::network_id(&owner),
            replicas: replicas.to_wire(),
            time,
            issuer: owner.to_bytes(),
            sig: Vec::new(),
        };
        s.sig = key
            .sign(&s.signed_bytes())
            .expect("ed25519 signing cannot fail");
        s
    }

    pub fn replicas(&self) -> Replicas {
        Replicas::from_wire(self.replicas)
    }

    /// The bytes the owner signs: [`SETTINGS_SIGN_DOMAIN`] and the canonical CBOR of every field
    /// but `sig`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = SETTINGS_SIGN_DOMAIN.to_vec();
        ciborium::into_writer(
            &Signed {
                network: &self.network,
                replicas: self.replicas,
                time: self.time,
                issuer: &self.issuer,
            },
            &mut out,
        )
        .expect("encoding to a Vec cannot fail");
        out
    }

    /// Checks that the settings are for `network`, that its owner issued them and that the
    /// signature verifies.
    pub fn verify(&self, network: &str) -> Result<(), &'static str> {
        if self.network != network {
            return Err("settings are for another network");
        }
        let owner = super::owner_of(network).ok_or("invalid network id")?;
        if self.issuer.len() > MAX_AUTHOR_LEN || self.issuer != owner.to_bytes() {
            return Err("settings not issued by the network's owner");
        }
        if self.replicas > crate::placement::MAX_REPLICAS {
            return Err("replication factor out of range");
        }
        let key = author_key(&self.issuer).ok_or("settings issuer is not an ed25519 peer id")?;
        if self.sig.len() != SIGNATURE_LEN || !key.verify(&self.signed_bytes(), &self.sig) {
            return Err("settings signature does not verify");
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_cbor(self)
    }

    /// Decodes settings (bounded) and verifies them against `network`.
    pub fn decode(bytes: &[u8], network: &str) -> Result<Settings, DecodeError> {
        let s: Settings = decode_cbor(bytes, MAX_SETTINGS_SIZE)?;
        s.verify(network).map_err(DecodeError::Other)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_by_the_owner_only() {
        let owner = libp2p::identity::Keypair::generate_ed25519();
        let s = Settings::new(&owner, Replicas::Count(3), 1);
        let net = s.network.clone();
        let back = Settings::decode(&s.encode(), &net).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.replicas(), Replicas::Count(3));
        let other = libp2p::identity::Keypair::generate_ed25519();
        let forged = Settings::new(&other, Replicas::Count(1), 1);
        assert!(Settings::decode(&forged.encode(), &net).is_err());
        let mut changed = s.clone();
        changed.replicas = 1;
        assert!(changed.verify(&net).is_err());
        assert!(Settings::decode(b"nonsense", &net).is_err());
    }
}
