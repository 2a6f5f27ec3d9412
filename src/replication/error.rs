//! Typed failures of replication: what went wrong with one peer during a transfer (and whether
//! that peer is to blame), and why a transfer as a whole failed.

use std::time::Duration;

use libp2p::request_response::OutboundFailure;

use crate::net;
use crate::protocols::chunks::FrameError;
use crate::record::Hash;
use crate::store::StoreError;
use crate::tasks::TaskFailed;

/// A failure of one peer during a transfer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Network(#[from] net::Error),
    #[error("chunk stream: {0}")]
    Frame(#[from] FrameError),
    #[error("the peer refused: {0}")]
    Refused(String),
    #[error("the peer does not have it")]
    NotFound,
    #[error("the peer closed the stream before replying (busy)")]
    Closed,
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("the peer sent chunk {0} with bytes that do not match its hash")]
    BadChunk(Hash),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

impl PeerError {
    /// The peer lied or does not speak the protocol: it is out of the transfer for good. Other
    /// failures (a timeout, a reset, a refusal) count towards dropping it until it reconnects.
    /// The peer sent what an honest peer never sends (a bad chunk, a malformed answer), rather
    /// than not speaking the protocol at all (a foreign libp2p peer).
    pub fn is_lie(&self) -> bool {
        match self {
            PeerError::Protocol(_) | PeerError::BadChunk(_) => true,
            PeerError::Frame(e) => !matches!(e, FrameError::Io(_)),
            _ => false,
        }
    }

    pub fn is_misbehaviour(&self) -> bool {
        match self {
            PeerError::Protocol(_) | PeerError::BadChunk(_) => true,
            PeerError::Frame(e) => !matches!(e, FrameError::Io(_)),
            PeerError::Network(net::Error::OpenStream {
                error: libp2p_stream::OpenStreamError::UnsupportedProtocol(_),
                ..
            }) => true,
            PeerError::Network(net::Error::Outbound {
                error: OutboundFailure::UnsupportedProtocols,
                ..
            }) => true,
            _ => false,
        }
    }
}

/// Why a transfer failed. The next retry (or a new peer) may succeed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("no connected peer has the chunk list")]
    NoChunkList,
    #[error("no connected peer can serve chunk {0}")]
    NoSource(Hash),
    #[error("the record was superseded or deleted")]
    Superseded,
    #[error("content does not match its size: chunk {hash} has {len} bytes")]
    SizeMismatch { hash: Hash, len: usize },
    #[error("content incomplete after the transfer")]
    Incomplete,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Network(#[from] net::Error),
    #[error(transparent)]
    Task(#[from] TaskFailed),
    #[error("the node is shutting down")]
    Stopped,
    #[error("the transfer task panicked")]
    Panicked,
}
