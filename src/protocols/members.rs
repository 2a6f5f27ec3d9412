//! Membership gossip: topic `dfs/<network>/members/1`. Each message is one signed
//! [`Grant`](crate::trust::Grant) encoded as a CBOR map, published by the admin that made it.
//! A receiver decodes, bounds and verifies it; replication adds it to the membership if its
//! issuer may grant (see `crate::trust`). Anti-entropy (`/dfs/sync/1`, `grants`) carries the
//! same grants to nodes that were away.

use crate::protocols::DecodeError;
use crate::trust::Grant;

pub const TOPIC: &str = "members";
pub const TOPIC_VERSION: u32 = 1;
/// Largest grant message accepted.
pub const MAX_MESSAGE_SIZE: usize = crate::trust::grant::MAX_GRANT_SIZE;

/// The topic of a network.
pub fn topic(network: &str) -> libp2p::gossipsub::IdentTopic {
    super::topic(network, TOPIC, TOPIC_VERSION)
}

pub fn encode(grant: &Grant) -> Vec<u8> {
    grant.encode()
}

/// Decodes and verifies a grant message.
pub fn decode(bytes: &[u8]) -> Result<Grant, DecodeError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(DecodeError::TooLarge(bytes.len(), MAX_MESSAGE_SIZE));
    }
    Grant::decode(bytes)
}
