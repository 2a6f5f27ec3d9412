//! Invitation tickets: one line that lets a fresh machine join a network as a writer. It holds
//! the network id, addresses of the admin that made it, a new identity (secret key) for the
//! joining machine and the admin's signed grant for that identity, so the new node can write
//! at once. A ticket is a secret, for one machine: whoever holds it can act as that member.
//! Text form: `dfs1` followed by the base58 of the CBOR map below.

use libp2p::identity::Keypair;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use super::Grant;
use crate::protocols::{decode_cbor, encode_cbor};

/// Prefix of the text form (and its version).
pub const PREFIX: &str = "dfs1";
/// Largest ticket accepted, in characters.
pub const MAX_TICKET_LEN: usize = 4096;
/// Most addresses a ticket carries.
pub const MAX_ADDRS: usize = 8;

/// A decoded ticket.
#[derive(Clone)]
pub struct Ticket {
    pub network: String,
    pub addrs: Vec<Multiaddr>,
    /// The joining machine's identity.
    pub key: Keypair,
    pub grant: Grant,
    /// The network's settings, signed by its owner, when the admin that made the ticket knew
    /// them.
    pub settings: Option<super::settings::Settings>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("network", &self.network)
            .field("addrs", &self.addrs)
            .field("peer_id", &self.key.public().to_peer_id())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    network: String,
    addrs: Vec<serde_bytes::ByteBuf>,
    key: serde_bytes::ByteBuf,
    grant: serde_bytes::ByteBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settings: Option<serde_bytes::ByteBuf>,
}

/// Why a ticket was refused.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error("not a dfs ticket (it should start with {PREFIX})")]
    Prefix,
    #[error("the ticket is damaged: {0}")]
    Damaged(String),
}

impl Ticket {
    pub fn peer_id(&self) -> libp2p::PeerId {
        self.key.public().to_peer_id()
    }

    pub fn encode(&self) -> String {
        let wire = Wire {
            network: self.network.clone(),
            addrs: self
                .addrs
                .iter()
                .take(MAX_ADDRS)
                .map(|a| serde_bytes::ByteBuf::from(a.to_vec()))
                .collect(),
            key: serde_bytes::ByteBuf::from(
                self.key
                    .to_protobuf_encoding()
                    .expect("ed25519 keys always encode"),
            ),
            grant: serde_bytes::ByteBuf::from(self.grant.encode()),
            settings: self
                .settings
                .as_ref()
                .map(|s| serde_bytes::ByteBuf::from(s.encode())),
        };
        format!("{PREFIX}{}", bs58::encode(encode_cbor(&wire)).into_string())
    }

    /// Parses and checks a ticket: its grant must be signed, name the ticket's identity and
    /// network.
    pub fn decode(text: &str) -> Result<Ticket, TicketError> {
        let text = text.trim();
        let body = text.strip_prefix(PREFIX).ok_or(TicketError::Prefix)?;
        if text.len() > MAX_TICKET_LEN {
            return Err(TicketError::Damaged("too long".into()));
        }
        let bytes = bs58::decode(body)
            .into_vec()
            .map_err(|e| TicketError::Damaged(e.to_string()))?;
        // The decoder's own words (`Semantic(None, …)`) mean nothing to a user.
        let wire: Wire = decode_cbor(&bytes, MAX_TICKET_LEN).map_err(|_| {
            TicketError::Damaged(
                "its content is not a ticket's (was it cut short or changed while copied?)".into(),
            )
        })?;
        let damaged = |what: &str| TicketError::Damaged(what.into());
        let key = Keypair::from_protobuf_encoding(&wire.key).map_err(|_| damaged("bad key"))?;
        key.clone()
            .try_into_ed25519()
            .map_err(|_| damaged("the key is not ed25519"))?;
        let grant = Grant::decode(&wire.grant).map_err(|e| damaged(&e.to_string()))?;
        if grant.subject != key.public().to_peer_id().to_bytes() || grant.network != wire.network {
            return Err(damaged("its grant is for another peer or network"));
        }
        super::owner_of(&wire.network).ok_or_else(|| damaged("bad network id"))?;
        let settings = wire
            .settings
            .map(|s| super::settings::Settings::decode(&s, &wire.network))
            .transpose()
            .map_err(|e| damaged(&e.to_string()))?;
        let addrs = wire
            .addrs
            .iter()
            .take(MAX_ADDRS)
            .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
            .collect();
        Ok(Ticket {
            network: wire.network,
            addrs,
            key,
            grant,
            settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Role;

    #[test]
    fn tickets_round_trip_and_refuse_damage() {
        let owner = Keypair::generate_ed25519();
        let joiner = Keypair::generate_ed25519();
        let network = crate::trust::network_id(&owner.public().to_peer_id());
        let mut grant = Grant {
            network: network.clone(),
            subject: joiner.public().to_peer_id().to_bytes(),
            role: Role::Writer,
            cutoff: 0,
            time: 1,
            issuer: Vec::new(),
            seq: 1,
            sig: Vec::new(),
            held: None,
        };
        grant.sign(&owner);
        let t = Ticket {
            network,
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            key: joiner,
            grant,
            settings: Some(crate::trust::settings::Settings::new(
                &owner,
                crate::placement::Replicas::Count(3),
                1,
            )),
        };
        let text = t.encode();
        assert!(text.starts_with("dfs1"));
        let back = Ticket::decode(&format!(" {text}\n")).unwrap();
        assert_eq!(back.peer_id(), t.peer_id());
        assert_eq!(back.addrs, t.addrs);
        assert_eq!(back.settings, t.settings);
        assert!(matches!(Ticket::decode("xyz"), Err(TicketError::Prefix)));
        let mut damaged = text.clone();
        damaged.replace_range(40..41, if &text[40..41] == "a" { "b" } else { "a" });
        assert!(Ticket::decode(&damaged).is_err());
        // Not a ticket's CBOR: said in words, not in the decoder's debug text.
        let not_a_map = format!("{PREFIX}{}", bs58::encode([0x01u8]).into_string());
        let e = Ticket::decode(&not_a_map).unwrap_err().to_string();
        assert!(e.contains("cut short or changed"), "{e}");
        assert!(
            !e.contains("Semantic") && !e.contains("invalid type"),
            "{e}"
        );
    }
}
