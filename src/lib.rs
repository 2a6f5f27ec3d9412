//! dfs: a decentralized file store on rust-libp2p.
//!
//! # Layout
//! - [`record`]: the replicated metadata of a key, content ids, hybrid logical clocks and the
//!   last-writer-wins order.
pub mod record;
