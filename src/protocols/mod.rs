//! The network protocols dfs speaks, one module each, holding its wire types, limits and the
//! documentation of its messages. `docs/PROTOCOL.md` is the specification for other
//! implementations; these modules are the reference.
//!
//! - [`records`]: gossipsub topic `dfs/<network>/records/2`, signed record updates (metadata).
//! - [`members`]: gossipsub topic `dfs/<network>/members/1`, signed grants (membership).
//! - [`peers`]: gossipsub topic `dfs/<network>/peers/1`, peer announcements (discovery).
//! - [`fetch`]: request-response `/dfs/fetch/2`, records, chunk lists and the network id.
//! - [`chunks`]: raw stream `/dfs/chunks/1`, bulk chunk bytes.
//! - [`sync`]: request-response `/dfs/sync/1`, anti-entropy over a tree of record digests.

pub mod catchup;
pub mod chunks;
pub mod codec;
pub mod fetch;
pub mod members;
pub mod peers;
pub mod records;
pub mod sync;

use libp2p::gossipsub;

/// Why a message from the network was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes exceeds the limit of {1}")]
    TooLarge(usize, usize),
    #[error("message does not decode: {0}")]
    Cbor(String),
    #[error(transparent)]
    Invalid(#[from] crate::record::InvalidRecord),
    #[error("invalid message: {0}")]
    Other(&'static str),
}

/// Decodes one CBOR value from a bounded buffer: exactly one complete item, nothing after it.
pub fn decode_cbor<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge(bytes.len(), limit));
    }
    codec::decode_exact(bytes).map_err(|e| DecodeError::Cbor(e.to_string()))
}

/// Encodes one value as CBOR.
pub fn encode_cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("CBOR encoding into a Vec cannot fail");
    out
}

/// The gossipsub message id: the BLAKE3 hash of the message data, so that every implementation
/// computes the same id and identical payloads are deduplicated wherever they come from.
pub fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    gossipsub::MessageId::new(blake3::hash(&message.data).as_bytes())
}

/// A gossipsub topic name in the namespace of a network: `dfs/<network>/<name>/<version>`.
pub fn topic(network: &str, name: &str, version: u32) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("dfs/{network}/{name}/{version}"))
}

/// Longest network name accepted (it becomes part of topic names).
pub const MAX_NETWORK_NAME: usize = 64;

/// Checks a network name: 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn validate_network(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NETWORK_NAME {
        return Err(format!(
            "network name must be 1 to {MAX_NETWORK_NAME} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "network name {name:?} may only contain letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}
