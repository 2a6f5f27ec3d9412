//! Record gossip: topic `dfs/<network>/records/1`. Each message is one [`Record`] encoded as a
//! CBOR map (`key`, `cid`, `size`, `time`, `author`), published by a node when a local put or
//! delete commits. Messages carry metadata only, never file bytes. A receiver decodes, bounds
//! and validates the record, then merges it by last-writer-wins and fetches the content.

use crate::protocols::{decode_cbor, encode_cbor, DecodeError};
use crate::record::Record;

/// Topic name component and version.
pub const TOPIC: &str = "records";
pub const TOPIC_VERSION: u32 = 1;
/// Largest record message accepted (a key is at most 1 KiB).
pub const MAX_MESSAGE_SIZE: usize = 2048;

/// The topic of a network.
pub fn topic(network: &str) -> libp2p::gossipsub::IdentTopic {
    super::topic(network, TOPIC, TOPIC_VERSION)
}

pub fn encode(record: &Record) -> Vec<u8> {
    encode_cbor(record)
}

/// Decodes and validates a record message.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
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
        let author = libp2p::PeerId::random().to_bytes();
        let r = Record {
            key: "a/b".into(),
            cid: Some(Hash([7; 32])),
            size: 5,
            time: wall_ms() << 16,
            author: author.clone(),
        };
        assert_eq!(decode(&encode(&r)).unwrap(), r);
        assert!(decode(b"\xff\x00garbage").is_err());
        assert!(decode(&vec![0u8; MAX_MESSAGE_SIZE + 1]).is_err());
        let bad = Record {
            key: String::new(),
            ..r.clone()
        };
        assert!(decode(&encode(&bad)).is_err());
        let future = Record {
            time: (wall_ms() + 3_600_000) << 16,
            ..r.clone()
        };
        assert!(decode(&encode(&future)).is_err());
        let huge = Record {
            size: u64::MAX,
            ..r
        };
        assert!(decode(&encode(&huge)).is_err());
    }
}
