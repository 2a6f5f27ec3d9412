//! Record gossip: topic `dfs/<network>/records/3`. Each message is one signed [`Record`]
//! (format 3) encoded as a CBOR map (`key`, `cid`, `size`, `time`, `author`, `seq`, `seen`,
//! `sig`), published by a node when a local put, delete or restore commits. Messages carry
//! metadata only, never file bytes. A receiver decodes, bounds, validates and verifies the
//! record; replication then checks that its author may write and that its clock is not too far
//! ahead, merges it by causality and fetches the content.

use crate::protocols::{decode_cbor, encode_cbor, DecodeError};
use crate::record::Record;

/// Topic name component and version.
pub const TOPIC: &str = "records";
pub const TOPIC_VERSION: u32 = 3;
/// Largest record message accepted: a key of at most 1 KiB and a causal context of at most
/// 64 entries (about 3 KiB) fit.
pub const MAX_MESSAGE_SIZE: usize = 8192;

/// The topic of a network.
pub fn topic(network: &str) -> libp2p::gossipsub::IdentTopic {
    super::topic(network, TOPIC, TOPIC_VERSION)
}

pub fn encode(record: &Record) -> Vec<u8> {
    encode_cbor(record)
}

/// Decodes, validates and verifies (signature) a record message.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let record = decode_unverified(bytes)?;
    record.verify()?;
    Ok(record)
}

/// [`decode`] without the signature check ([`Record::validate`] only): for the network task,
/// which hands records to the application, where each record's signature is checked once.
pub fn decode_unverified(bytes: &[u8]) -> Result<Record, DecodeError> {
    let record: Record = decode_cbor(bytes, MAX_MESSAGE_SIZE)?;
    record.validate()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{wall_ms, Hash};

    #[test]
    fn round_trip_and_rejections() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mut r = Record {
            key: "a/b".into(),
            cid: Some(Hash([7; 32])),
            size: 5,
            time: wall_ms() << 16,
            author: Vec::new(),
            seq: 1,
            seen: Vec::new(),
            sig: Vec::new(),
        };
        r.sign(&key);
        assert_eq!(decode(&encode(&r)).unwrap(), r);
        let unsigned = Record {
            sig: Vec::new(),
            ..r.clone()
        };
        assert!(decode(&encode(&unsigned)).is_err());
        assert!(decode(b"\xff\x00garbage").is_err());
        assert!(decode(&vec![0u8; MAX_MESSAGE_SIZE + 1]).is_err());
        let bad = Record {
            key: String::new(),
            ..r.clone()
        };
        assert!(decode(&encode(&bad)).is_err());
        let huge = Record {
            size: u64::MAX,
            ..r
        };
        assert!(decode(&encode(&huge)).is_err());
    }
}
