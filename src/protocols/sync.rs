//! Anti-entropy, `/dfs/sync/1` (request-response, CBOR): two peers compare a digest of their
//! record sets and exchange only the records that differ. This is what makes a node that was
//! offline or partitioned converge; gossip alone loses what a peer missed.
//!
//! Records are placed in a two-level tree by the top 12 bits of BLAKE3(key): 64 branches of 64
//! leaves. A leaf's hash is the XOR of the fingerprints of its records, a branch's the XOR of
//! its leaves, the root the XOR of all. The initiator walks down only where hashes differ:
//!
//! 1. `Root`: equal roots and counts end the session (one small round trip, whatever the
//!    number of keys).
//! 2. `Branches`: the 64 branch hashes.
//! 3. `Leaves`: the 64 leaf hashes under each differing branch.
//! 4. `Entries`: (key hash, fingerprint) of every record in each differing leaf.
//! 5. `Exchange`: the initiator pushes its records that the responder lacks or has otherwise,
//!    and asks for the responder's records of the key hashes it lacks or has otherwise. Both
//!    sides merge by last-writer-wins, so one exchange settles both directions.

use std::time::Duration;

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::record::{Hash, Record};
use crate::trust::Grant;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/dfs/sync/1");
/// Fan-out of each tree level.
pub const FANOUT: usize = 64;
/// Number of leaves (FANOUT × FANOUT).
pub const LEAVES: usize = FANOUT * FANOUT;
/// Most leaves named in one entries request (64 leaves of a store of 7 million records still
/// fit in one response).
pub const MAX_NODES_PER_REQUEST: usize = 64;
/// Most records pushed or asked for in one exchange.
pub const MAX_RECORDS_PER_EXCHANGE: usize = 512;
/// Largest request or response (an exchange of 512 records with 1 KiB keys).
pub const MAX_MESSAGE_SIZE: u64 = 2 * 1024 * 1024;
/// Most encoded bytes of records in one `exchange` push or `records` answer (three quarters of
/// the message limit); the rest waits for the next round.
pub const MAX_RECORDS_BYTES: usize = 1536 * 1024;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most exchange rounds in one session; what is left waits for the next session.
pub const MAX_ROUNDS: usize = 64;

/// Bits of a key hash that name its leaf (12 for 4096 leaves).
pub const LEAF_BITS: u32 = LEAVES.trailing_zeros();

/// The leaf of a key hash (its top [`LEAF_BITS`] bits). The tree's geometry is defined here
/// only: the store keeps its leaf hashes by it, and sessions walk it.
pub fn leaf_of(key_hash: u64) -> u16 {
    (key_hash >> (64 - LEAF_BITS)) as u16
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Root,
    Branches,
    Leaves {
        branches: Vec<u16>,
    },
    Entries {
        leaves: Vec<u16>,
    },
    Exchange {
        push: Vec<Record>,
        want: Vec<u64>,
    },
    /// The responder's grants, unless the digest of its set equals `digest`.
    Grants {
        digest: Hash,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Root {
        root: u64,
        count: u64,
        /// The digest of the responder's grants (membership), when it knows its network; an
        /// initiator whose digest differs asks for them (`grants`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grants: Option<Hash>,
    },
    /// FANOUT hashes.
    Branches {
        hashes: Vec<u64>,
    },
    /// FANOUT leaf hashes for each requested branch, in request order.
    Leaves {
        hashes: Vec<Vec<u64>>,
    },
    /// For each requested leaf, in request order, its (key hash, fingerprint) pairs, sorted.
    Entries {
        entries: Vec<Vec<(u64, u64)>>,
    },
    /// The responder's records for the wanted key hashes.
    Records {
        records: Vec<Record>,
    },
    /// Every grant of the responder, or none when the digests were equal.
    Grants {
        grants: Vec<Grant>,
    },
    Error {
        message: String,
    },
}

/// The digest tree of a record set, computed from the store's leaf hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub leaves: Vec<u64>,
    pub count: u64,
}

impl Tree {
    pub fn new(leaves: Vec<u64>, count: u64) -> Tree {
        debug_assert_eq!(leaves.len(), LEAVES);
        Tree { leaves, count }
    }

    pub fn branch(&self, b: usize) -> u64 {
        self.leaves[b * FANOUT..(b + 1) * FANOUT]
            .iter()
            .fold(0, |a, h| a ^ h)
    }

    pub fn branches(&self) -> Vec<u64> {
        (0..FANOUT).map(|b| self.branch(b)).collect()
    }

    pub fn leaves_of(&self, b: usize) -> Vec<u64> {
        self.leaves[b * FANOUT..(b + 1) * FANOUT].to_vec()
    }

    pub fn root(&self) -> u64 {
        self.leaves.iter().fold(0, |a, h| a ^ h)
    }
}

pub type Behaviour = libp2p::request_response::Behaviour<Codec>;
pub type Codec = super::codec::Codec<Request, Response>;

pub fn behaviour() -> Behaviour {
    let codec = Codec::new(MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE);
    Behaviour::with_codec(
        codec,
        [(PROTOCOL, libp2p::request_response::ProtocolSupport::Full)],
        libp2p::request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(8),
    )
}

/// Size in bytes of a message as CBOR, for accounting what a sync sends.
pub fn encoded_len<T: Serialize>(message: &T) -> usize {
    super::encode_cbor(message).len()
}
