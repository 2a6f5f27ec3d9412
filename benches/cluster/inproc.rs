//! Nodes inside this process (`dfs::node::Node`) for the latency and anti-entropy figures:
//! start one with the bench's intervals, its first address, a bounded wait.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dfs::node::{Config, Node};
use dfs::trust::Ticket;
use libp2p::Multiaddr;

/// Starts a node on loopback with 1 s announce, sync and retry intervals: the owner of a new
/// network without `join`, else a writer of the ticket's network.
pub async fn start(dir: PathBuf, bootstrap: Vec<Multiaddr>, join: Option<Ticket>) -> Node {
    let mut c = Config::new(dir);
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.bootstrap = bootstrap;
    c.join = join;
    c.announce_interval = Duration::from_secs(1);
    c.sync_interval = Duration::from_secs(1);
    c.retry_interval = Duration::from_secs(1);
    Node::start(c).await.expect("node starts")
}

/// The node's first listen address.
pub async fn addr(node: &Node) -> Multiaddr {
    node.client().info().await.unwrap().addrs[0].clone()
}

/// Polls `f` every 5 ms; panics if it is still false after 120 s.
pub async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "benchmark condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
