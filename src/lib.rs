//! dfs: a decentralized file store on rust-libp2p.
//!
//! # Layout
//! - [`record`]: the replicated metadata of a key, content ids, hybrid logical clocks and the
//!   last-writer-wins order.
//! - [`store`]: the local store: content-addressed chunks on disk and a transactional index of
//!   records, with garbage collection and anti-entropy digests.
pub mod record;
pub mod store;
