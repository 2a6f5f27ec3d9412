//! The JSON shapes of the local API, shared by the server, the CLI's `--json` output and the
//! API client. They are a stable interface, documented in `docs/API.md`.

use serde::{Deserialize, Serialize};

use crate::node::{NodeInfo, PeerInfo};
use crate::store::Stat;

/// One key's metadata: `GET /v1/stat/{key}`, an element of `GET /v1/files`, and the answer of
/// `PUT` and `DELETE` on `/v1/files/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub key: String,
    /// Size in bytes (0 for a tombstone).
    pub size: u64,
    /// Hex BLAKE3 content id; `null` for a tombstone.
    pub content_id: Option<String>,
    /// The record's version (a hybrid logical clock value).
    pub version: u64,
    /// Peer id (base58) of the node that wrote this version.
    pub author: String,
    /// True when the whole content is verified and stored on this node.
    pub local: bool,
    /// True when the record is a tombstone (the key was deleted).
    pub deleted: bool,
    /// Chunks of the content found damaged on this node (bit rot) and not yet replaced by a
    /// healthy copy from a peer; `local` is false meanwhile. Absent from older nodes' answers.
    #[serde(default)]
    pub damaged: u64,
    /// The nodes known to hold the whole content (this one first if it does, then connected
    /// peers that say so): present when asked for (`GET /v1/stat/{key}?holders=1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<String>>,
}

impl From<&Stat> for FileStat {
    fn from(s: &Stat) -> FileStat {
        let r = &s.record;
        FileStat {
            key: r.key.clone(),
            size: r.size,
            content_id: r.cid.map(|c| c.to_hex()),
            version: r.time,
            author: r
                .author_peer()
                .map(|p| p.to_base58())
                .unwrap_or_else(|| hex::encode(&r.author)),
            local: s.local,
            deleted: r.is_tombstone(),
            damaged: s.damaged,
            holders: None,
        }
    }
}

impl FileStat {
    /// The state column of `dfs ls`: `local`, `remote`, `damaged` or `deleted`.
    pub fn state(&self) -> &'static str {
        if self.deleted {
            "deleted"
        } else if self.damaged > 0 {
            "damaged"
        } else if self.local {
            "local"
        } else {
            "remote"
        }
    }
}

/// `GET /v1/id` and `dfs id --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Id {
    pub peer_id: String,
    /// Listen addresses, each a full multiaddr ending in `/p2p/<peer id>`.
    pub addrs: Vec<String>,
    /// The network id (its owner's peer id); `null` while a reader is still learning it.
    #[serde(default)]
    pub network: Option<String>,
    /// This node's role: `admin`, `writer` or `reader`; `null` while the network is not known.
    #[serde(default)]
    pub role: Option<Role>,
}

impl Id {
    pub fn new(i: &NodeInfo, network: Option<String>, role: Option<Role>) -> Id {
        Id {
            peer_id: i.peer_id.to_base58(),
            addrs: i.addrs.iter().map(|a| a.to_string()).collect(),
            network,
            role,
        }
    }
}

/// `POST /v1/invite` and `dfs invite --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub ticket: String,
}

/// The body of `POST /v1/invite` (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRequest {
    #[serde(default)]
    pub admin: bool,
}

/// The body of `PUT /v1/members/{peer_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRequest {
    pub role: Role,
}

pub use crate::trust::{Member, Role};

/// An element of `GET /v1/peers` and `dfs peers --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// The peer's identify agent version (`dfs/<version>`), if known yet.
    pub agent: Option<String>,
}

impl From<&PeerInfo> for Peer {
    fn from(p: &PeerInfo) -> Peer {
        Peer {
            peer_id: p.peer_id.to_base58(),
            addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
            agent: p.agent.clone(),
        }
    }
}

/// `GET /v1/holders/{key}`: the nodes that hold a file's whole content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holders {
    pub key: String,
    /// The content id of the record the answer is about (hex; `null` for a tombstone).
    pub content_id: Option<String>,
    /// Peer ids: this node first if it holds the content, then the connected peers that said so.
    pub holders: Vec<String>,
    /// `min` of the request (0 when not given).
    pub min: usize,
    /// True when at least `min` nodes hold it.
    pub reached: bool,
}

impl Holders {
    pub fn new(h: &crate::node::Holders, min: usize) -> Holders {
        Holders {
            key: h.stat.record.key.clone(),
            content_id: h.stat.record.cid.map(|c| c.to_hex()),
            holders: h.peers.iter().map(|p| p.to_base58()).collect(),
            min,
            reached: h.peers.len() >= min,
        }
    }
}

/// The body of `POST /v1/connect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// A multiaddr, e.g. `/ip4/192.0.2.1/tcp/4001/p2p/12D3KooW...` or `/dns4/host/tcp/4001`.
    pub addr: String,
}

/// The answer of `POST /v1/connect` and `dfs connect --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connected {
    pub peer_id: String,
    pub addr: String,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
