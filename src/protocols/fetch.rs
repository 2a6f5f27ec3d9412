//! The fetch protocol, `/dfs/fetch/2` (request-response, CBOR): ask a peer for a key's record,
//! a page of a file's chunk list, which network it belongs to, whether it holds a file's whole
//! content (`dfs stat`'s holders, `dfs put --wait`), or the time by its clock (to measure clock
//! offsets, see `crate::clock`). One request and one response per stream. Chunk bytes travel on
//! [`super::chunks`] instead (`/dfs/fetch/1` carried them here and is gone).
//!
//! A receiver trusts nothing it gets: a chunk list is checked against the content id
//! ([`crate::record::chunk_list_matches`]) before any chunk is fetched.

use std::time::Duration;

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::record::{Hash, Record};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/dfs/fetch/2");
/// Largest request accepted (a record lookup carries a key of at most 1 KiB).
pub const MAX_REQUEST_SIZE: u64 = 4 * 1024;
/// Largest response accepted: a full chunk-list page (16,384 hashes of 35 bytes) plus framing.
pub const MAX_RESPONSE_SIZE: u64 = 640 * 1024;
/// Most chunk hashes in one chunk-list page (about 560 KiB of response).
pub const MANIFEST_PAGE: usize = 16 * 1024;
/// How long a request may take before it fails with a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most concurrent streams per connection (inbound and outbound).
pub const MAX_CONCURRENT_STREAMS: usize = 32;

/// A fetch request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// The peer's current record for a key (live or tombstone).
    Record { key: String },
    /// A page of the chunk list of a content id, starting at chunk `offset`.
    Manifest { cid: Hash, offset: u64 },
    /// The id of the network the peer belongs to (how a reader that bootstraps learns it).
    Network,
    /// Whether the peer holds the whole content of `cid`, verified.
    Has { cid: Hash },
    /// The peer's wall clock, answered at once (the asker measures its clock offset).
    Time,
    /// A proof that the peer holds the content of `cid`: the BLAKE3 hash, keyed with `nonce`,
    /// of the peer's own id bytes followed by the bytes of the chunks at the indices `chunks`
    /// (1 to [`MAX_PROOF_CHUNKS`] of them, each below the number of chunks), in the order given
    /// ([`proof_of`]). Peers without a grant share a small rate of them. A node
    /// asks it before it drops a copy on the word of the peers placed to keep it.
    Prove {
        cid: Hash,
        nonce: Hash,
        chunks: Vec<u64>,
    },
}

/// Most chunks one proof of possession covers (each costs the prover a 1 MiB read).
pub const MAX_PROOF_CHUNKS: usize = 4;

/// The answer to [`Request::Prove`] by `prover` (its peer id bytes) over `chunks` (the bytes
/// of the named chunks, in order). The prover's id is hashed first, so that a proof cannot be
/// passed on: a peer asked to prove cannot answer with another holder's proof (nor with the
/// asker's own).
pub fn proof_of<'a>(
    nonce: &Hash,
    prover: &[u8],
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Hash {
    let mut hasher = blake3::Hasher::new_keyed(&nonce.0);
    hasher.update(prover);
    for chunk in chunks {
        hasher.update(chunk);
    }
    Hash(*hasher.finalize().as_bytes())
}

/// A fetch response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Record {
        record: Record,
    },
    /// `chunks` holds at most [`MANIFEST_PAGE`] hashes from `offset`; `total` is the number of
    /// chunks of the whole list. The receiver checks the assembled list against the content id
    /// and the size from the record it holds.
    Manifest {
        total: u64,
        offset: u64,
        chunks: Vec<Hash>,
    },
    /// The network id of the peer (its owner's peer id), and the network's settings signed by
    /// the owner (`crate::trust::settings`) when the peer knows them.
    Network {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settings: Option<serde_bytes::ByteBuf>,
    },
    /// The answer to [`Request::Has`]: `complete` when every chunk of the content is stored
    /// and verified on the peer (none of them found damaged).
    Has {
        complete: bool,
        /// The peer is placed to hold this content (`crate::placement`) and keeps its copy: a
        /// node that is not placed drops its own copy only when enough placed peers say so.
        /// Absent from peers that do not place content (read as `false`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keeps: Option<bool>,
    },
    /// The peer's wall clock when it answered, in milliseconds since the Unix epoch.
    Time {
        ms: u64,
    },
    /// The answer to [`Request::Prove`]: the keyed hash of the chunks asked for.
    Proof {
        hash: Hash,
    },
    /// The peer does not have what was asked for (or not all of it, for a chunk list).
    NotFound,
    /// The request was malformed or refused; the text says why.
    Error {
        message: String,
    },
}

/// The request-response behaviour of this protocol with its limits.
pub type Behaviour = libp2p::request_response::Behaviour<Codec>;
pub type Codec = super::codec::Codec<Request, Response>;

pub fn behaviour() -> Behaviour {
    let codec = Codec::new(MAX_REQUEST_SIZE, MAX_RESPONSE_SIZE);
    Behaviour::with_codec(
        codec,
        [(PROTOCOL, libp2p::request_response::ProtocolSupport::Full)],
        libp2p::request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
    )
}
