//! The JSON shapes of the local API, shared by the server, the CLI's `--json` output and the
//! API client. They are a stable interface, documented in `docs/API.md`.

use serde::{Deserialize, Serialize};

use crate::node::{NodeInfo, PeerInfo};
use crate::record::Record;
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
    /// The version: its id, hex BLAKE3 of what its author signed (what `dfs get --version`,
    /// `dfs restore` and `dfs log` take, whole or as a unique prefix of 8+ hex digits).
    pub version: String,
    /// When it was written, by its writer's clock: milliseconds since the Unix epoch.
    pub time: u64,
    /// The record's clock as a decimal string (a hybrid logical clock value: milliseconds
    /// since the epoch times 65,536, plus a counter; above 2^53, so not a JSON number).
    pub clock: String,
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
    /// Versions concurrent with this one (written without seeing each other), kept until a
    /// write that saw them replaces them; best first. Each has no `conflicts` of its own.
    #[serde(default)]
    pub conflicts: Vec<FileStat>,
    /// The nodes known to hold the whole content (this one first if it does, then connected
    /// peers that say so): present when asked for (`GET /v1/stat/{key}?holders=1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<String>>,
    /// The members placed to hold the content, best first, when the network keeps a number of
    /// copies (`dfs node --replicas N`): present with `holders`, absent with `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed: Option<Vec<String>>,
}

impl From<&Stat> for FileStat {
    fn from(s: &Stat) -> FileStat {
        let mut stat = FileStat::of(&s.record, s.local);
        stat.damaged = s.damaged;
        stat.conflicts = s
            .conflicts
            .iter()
            .enumerate()
            .map(|(i, c)| FileStat::of(c, s.conflicts_local.get(i).copied().unwrap_or(false)))
            .collect();
        stat
    }
}

impl FileStat {
    /// One version's metadata (no conflicts, nothing damaged).
    pub fn of(r: &Record, local: bool) -> FileStat {
        FileStat {
            key: r.key.clone(),
            size: r.size,
            content_id: r.cid.map(|c| c.to_hex()),
            version: r.version().to_hex(),
            time: crate::clock::physical_ms(r.time),
            clock: r.time.to_string(),
            author: author_of(r),
            local,
            deleted: r.is_tombstone(),
            damaged: 0,
            conflicts: Vec::new(),
            holders: None,
            placed: None,
        }
    }
}

fn author_of(r: &Record) -> String {
    r.author_peer()
        .map(|p| p.to_base58())
        .unwrap_or_else(|| hex::encode(&r.author))
}

/// An element of `GET /v1/log/{key}` and `dfs log --json`: one version of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The version's id (see [`FileStat::version`]).
    pub version: String,
    /// When it was written, by its writer's clock: milliseconds since the Unix epoch.
    pub time: u64,
    /// The version's clock (see [`FileStat::clock`]).
    pub clock: String,
    pub author: String,
    pub size: u64,
    pub content_id: Option<String>,
    /// A delete.
    pub deleted: bool,
    /// `current`, `conflict` or `replaced` (kept in history).
    pub state: String,
    /// Its content is complete on this node.
    pub local: bool,
}

impl From<&crate::store::LogEntry> for LogEntry {
    fn from(e: &crate::store::LogEntry) -> LogEntry {
        let r = &e.record;
        LogEntry {
            version: r.version().to_hex(),
            time: crate::clock::physical_ms(r.time),
            clock: r.time.to_string(),
            author: author_of(r),
            size: r.size,
            content_id: r.cid.map(|c| c.to_hex()),
            deleted: r.is_tombstone(),
            state: e.state.as_str().to_string(),
            local: e.local,
        }
    }
}

/// The body of `POST /v1/restore/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// The version id (hex), or a unique prefix of at least 8 hex digits.
    pub version: String,
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
    /// Heads this node holds (current versions and conflicts, tombstones included): what
    /// `GET /v1/files` lists, counted without reading them.
    #[serde(default)]
    pub records: u64,
    /// Why this node refuses its own writes whatever its role (its identity runs on another
    /// machine too); absent when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_refused: Option<String>,
}

impl Id {
    pub fn new(i: &NodeInfo, network: Option<String>, role: Option<Role>) -> Id {
        Id {
            peer_id: i.peer_id.to_base58(),
            addrs: i.addrs.iter().map(|a| a.to_string()).collect(),
            network,
            role,
            records: 0,
            writes_refused: None,
        }
    }
}

/// `POST /v1/invite` and `dfs invite --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub ticket: String,
    /// The identity the ticket carries: the member it added, by which it can be revoked
    /// (`dfs deny PEER_ID`) before or after it is used.
    #[serde(default)]
    pub peer_id: String,
    /// The role it grants: `writer` or `admin`.
    #[serde(default)]
    pub role: Option<Role>,
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
    /// The peer's clock minus this node's, in milliseconds, as last measured; `null` until
    /// measured (see `docs/PROTOCOL.md`, "Clocks").
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
}

impl From<&PeerInfo> for Peer {
    fn from(p: &PeerInfo) -> Peer {
        Peer {
            peer_id: p.peer_id.to_base58(),
            addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
            agent: p.agent.clone(),
            clock_offset_ms: None,
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

/// An element of `GET /v1/transfers`: content this node is fetching from its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The key of the record that started the transfer (other keys may share the content).
    pub key: String,
    /// Hex BLAKE3 content id.
    pub content_id: String,
    /// The content's size in bytes.
    pub size: u64,
    /// Bytes stored on this node so far (estimated from the chunks stored).
    pub bytes_done: u64,
    pub chunks_done: u64,
    pub chunks_total: u64,
    /// `lookup` (getting the chunk list), `queued` (waiting for a transfer slot) or `fetching`.
    pub phase: String,
}

impl From<&crate::replication::transfer::Status> for Transfer {
    fn from(s: &crate::replication::transfer::Status) -> Transfer {
        Transfer {
            key: s.key.clone(),
            content_id: s.cid.to_hex(),
            size: s.size,
            bytes_done: s.bytes_done(),
            chunks_done: s.chunks_done,
            chunks_total: s.chunks_total,
            phase: s.phase.as_str().to_string(),
        }
    }
}
