//! Peer announcements: topic `dfs/<network>/peers/1`. A node publishes its peer id and listen
//! addresses when it joins, when it sees a newcomer, and periodically; a node that learns of a
//! peer it is not connected to dials it (up to its connection limit). The message must be
//! signed by the peer it announces (gossipsub `source`), so nobody can announce for another.
//! It also carries the node's capacity (its weight in placement, `crate::placement`), and
//! counts as a sign of life for the placement's `--repair-after` grace period.

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::protocols::{decode_cbor, encode_cbor, DecodeError};

pub const TOPIC: &str = "peers";
pub const TOPIC_VERSION: u32 = 1;
/// Largest announcement accepted.
pub const MAX_MESSAGE_SIZE: usize = 4096;
/// Most addresses one announcement may carry.
pub const MAX_ADDRS: usize = 16;
/// Longest address accepted, in bytes.
pub const MAX_ADDR_LEN: usize = 256;

pub fn topic(network: &str) -> libp2p::gossipsub::IdentTopic {
    super::topic(network, TOPIC, TOPIC_VERSION)
}

/// Wire form: a CBOR map. `time` (milliseconds since the epoch) makes every announcement
/// distinct, so the content-hash message id does not drop periodic repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Wire {
    #[serde(with = "serde_bytes")]
    peer_id: Vec<u8>,
    addrs: Vec<serde_bytes::ByteBuf>,
    time: u64,
    /// The node's capacity in bytes (its weight in placement); absent: not announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capacity: Option<u64>,
}

/// A decoded announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub peer_id: PeerId,
    pub addrs: Vec<Multiaddr>,
    pub time: u64,
    /// The node's capacity in bytes (`dfs node --capacity`), its weight in placement.
    pub capacity: Option<u64>,
}

pub fn encode(a: &Announcement) -> Vec<u8> {
    encode_cbor(&Wire {
        peer_id: a.peer_id.to_bytes(),
        addrs: a
            .addrs
            .iter()
            .take(MAX_ADDRS)
            .map(|m| serde_bytes::ByteBuf::from(m.to_vec()))
            .collect(),
        time: a.time,
        capacity: a.capacity,
    })
}

/// Decodes an announcement and checks that `source` (the signer) is the peer it announces.
pub fn decode(bytes: &[u8], source: Option<&PeerId>) -> Result<Announcement, DecodeError> {
    let w: Wire = decode_cbor(bytes, MAX_MESSAGE_SIZE)?;
    let peer_id = PeerId::from_bytes(&w.peer_id)
        .map_err(|_| DecodeError::Other("peer_id is not a peer id"))?;
    if source != Some(&peer_id) {
        return Err(DecodeError::Other(
            "announcement not signed by the peer it announces",
        ));
    }
    if w.addrs.len() > MAX_ADDRS {
        return Err(DecodeError::Other("too many addresses"));
    }
    let mut addrs = Vec::with_capacity(w.addrs.len());
    for a in w.addrs {
        if a.len() > MAX_ADDR_LEN {
            return Err(DecodeError::Other("address too long"));
        }
        addrs.push(
            Multiaddr::try_from(a.into_vec()).map_err(|_| DecodeError::Other("bad multiaddr"))?,
        );
    }
    Ok(Announcement {
        peer_id,
        addrs,
        time: w.time,
        capacity: w.capacity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forgery() {
        let me = PeerId::random();
        let a = Announcement {
            peer_id: me,
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            time: 1,
            capacity: Some(1 << 40),
        };
        let bytes = encode(&a);
        assert_eq!(decode(&bytes, Some(&me)).unwrap(), a);
        assert!(decode(&bytes, Some(&PeerId::random())).is_err());
        assert!(decode(&bytes, None).is_err());
        assert!(decode(b"nonsense", Some(&me)).is_err());
    }
}
