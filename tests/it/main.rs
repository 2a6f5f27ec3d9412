//! The integration tests, one module per subject, linked into one test binary (`cargo test
//! --test it`; one link instead of twenty). Nodes run in this process on 127.0.0.1 unless the
//! test is about the `dfs` binary (`cli`, `disk`'s crash test, `private_network`'s CLI checks).
//! `tests/hostile.rs` is its own binary: it measures how much the whole process logs.
//!
//! Every wait is on a condition with a deadline (`common::eventually`), never a fixed sleep
//! followed by an assert.

mod common;

mod catchup;
mod cli;
mod content_routing;
mod decoders;
mod disk;
mod gossip_scoring;
mod liveness;
mod members;
mod node;
mod operations;
mod packaging;
mod placement;
mod private_network;
mod replication;
mod store;
mod trust;
mod versions;
mod web_ui;
mod wire_vectors;
