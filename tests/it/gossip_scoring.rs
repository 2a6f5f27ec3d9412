//! Gossipsub scoring punishes behaviour, not addresses that honest peers share: 20 nodes on
//! one host (all on 127.0.0.1, as behind one NAT or in containers on one server), each
//! bootstrapped only to the first, all receive a put by gossip, not just at the next
//! anti-entropy round (issue 13, item 10: gossipsub's default IP-colocation penalty cut 9 of
//! 19 off).

use crate::common;

use std::time::{Duration, Instant};

use common::{eventually, TestNode};
use libp2p::Multiaddr;

const NODES: usize = 20;
/// Far beyond the test: only gossip can bring the record in time.
const NO_SYNC: Duration = Duration::from_secs(600);

async fn node(owner: Option<&TestNode>, bootstrap: Vec<Multiaddr>) -> TestNode {
    common::init_tracing();
    common::node_with(
        |c| {
            c.sync_interval = NO_SYNC;
            c.retry_interval = Duration::from_secs(2);
        },
        owner,
        bootstrap,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_on_one_host_all_receive_gossip() {
    let first = node(None, vec![]).await;
    let mut nodes = vec![];
    for _ in 1..NODES {
        // Writers of the first node's network, each bootstrapped to it only.
        nodes.push(node(Some(&first), vec![first.addr.clone()]).await);
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            first.peer_count().await == NODES - 1
        })
        .await,
        "every node connects to the first"
    );
    // A few gossipsub heartbeats (700 ms) for the meshes and the scores to settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (round, writer) in [0, NODES / 2, NODES - 2].into_iter().enumerate() {
        let key = format!("gossip-{round}");
        let started = Instant::now();
        common::put(
            &nodes[writer].client,
            &key,
            common::data(1024, round as u64),
        )
        .await;
        let mut missing = vec![];
        for (i, n) in std::iter::once(&first).chain(&nodes).enumerate() {
            // Generous for a loaded machine, and still far below the sync interval: only
            // gossip can bring it.
            if !n
                .client
                .wait_for(&key, false, Duration::from_secs(10))
                .await
            {
                missing.push(i);
            }
        }
        assert!(
            missing.is_empty(),
            "put on node {}: nodes {missing:?} did not receive it by gossip",
            writer + 1
        );
        eprintln!(
            "put on node {}: on all {NODES} nodes in {:?}",
            writer + 1,
            started.elapsed()
        );
    }
    for n in nodes {
        n.stop().await;
    }
    first.stop().await;
}
