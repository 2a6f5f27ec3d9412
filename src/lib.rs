//! dfs: a decentralized file store on rust-libp2p.
//!
//! # Layout
//! - [`record`]: the replicated metadata of a key, content ids, signatures, causality (which
//!   write saw which) and the order that picks the current version among concurrent ones.
//! - [`clock`]: the wall clock (injectable), the hybrid logical clock, and the network's time
//!   measured against peers (the bound on clock offsets).
//! - [`store`]: the local store: content-addressed chunks and a transactional index. No
//!   networking.
//! - [`protocols`]: one module per network protocol (record gossip, peer announcements, fetch,
//!   sync) with its wire types and limits.
//! - [`net`]: the network layer: one task owns the libp2p swarm; a cloneable
//!   [`net::Network`] sends it commands and it emits events. It knows no store.
//! - [`replication`]: the application above the network: the replication policy, merges,
//!   serving, anti-entropy, transfers and downloads. Knows the store and a network handle.
//! - [`node`]: wiring: configuration, start-up, shutdown that joins every task, and the
//!   [`node::Client`] handle the API uses.
//! - [`tasks`]: ownership of every spawned task (a tracker and a cancellation token).
//! - [`datadir`]: the data dir's layout (identity key, store, API URL and token files) and the
//!   one helper that writes its files atomically.
//! - [`identity`]: the persisted ed25519 keypair.
//! - [`log_limit`]: rate limits for log lines a peer can trigger over and over.
//! - [`metrics`]: the node's Prometheus metrics (libp2p's and dfs's), served at `/metrics`.
//! - [`api`]: the local HTTP API (axum, loopback, bearer token), a thin layer over
//!   [`node::Client`], the HTTP client the CLI uses, and the web page the node serves.
//! - [`cli`]: the command line (clap) and its commands, a thin layer over the API.
//! - [`demo`]: `dfs demo`, a local cluster in one process.
pub mod api;
pub mod cli;
pub mod clock;
pub mod datadir;
pub mod demo;
pub mod identity;
pub mod log_limit;
pub mod metrics;
pub mod net;
pub mod node;
pub mod placement;
pub mod protocols;
pub mod record;
pub mod replication;
pub mod store;
pub mod tasks;
pub mod trust;

/// An error with its causes, on one line (`outer: cause: cause`), each cause left out when the
/// text before already says it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}
