//! Running nodes for real: the address book that brings a restarted node back to its peers,
//! `/dns4` addresses, connecting at runtime (and its failures), which nodes hold a file, and
//! the metrics. Nodes run in this process, on 127.0.0.1; every wait has a deadline.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// The TCP port of a node's address.
fn port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP address")
}

/// Regression: restarted without `--bootstrap`, a node knew nobody until others happened to
/// dial it (about 40 s); it now dials the peers of its address book at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_without_bootstrap_rejoins_its_peers_within_seconds() {
    let a = TestNode::start(vec![]).await;
    let b = TestNode::start(vec![a.addr.clone()]).await;
    let b_id = b.client.peer_id();
    let nodes = [a, b];
    assert!(fully_connected(&nodes, Duration::from_secs(10)).await);
    let [a, b] = nodes;
    // Connected is not yet identified: the address book learns b's addresses from identify.
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.client
                .peers()
                .await
                .is_ok_and(|peers| peers.iter().any(|p| p.peer_id == b_id && p.dfs))
        })
        .await,
        "a identifies b"
    );
    let (dir, _) = a.stop().await;
    let book = std::fs::read_to_string(dir.path().join("peers.json")).expect("an address book");
    assert!(book.contains(&b_id.to_base58()), "{book}");
    // Restarted on another port, with no bootstrap: b cannot find it (it knows the old port
    // only), so only the address book can bring them together.
    let started = Instant::now();
    let a = TestNode::start_with(dir, vec![]).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.peer_count().await >= 1
        })
        .await,
        "the restarted node reconnects from its address book"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(b);
}

/// `/dns4/localhost/...` works for `--bootstrap` and for a connect, offline (the hosts file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns4_addresses_work_for_bootstrap_and_connect() {
    let a = TestNode::start(vec![]).await;
    let a_id = a.client.peer_id();
    let dns: Multiaddr = format!("/dns4/localhost/tcp/{}/p2p/{a_id}", port(&a.addr))
        .parse()
        .unwrap();
    let b = TestNode::reader(vec![dns.clone()]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.peer_count().await >= 1
        })
        .await,
        "a bootstrap address in /dns4 connects"
    );
    let c = TestNode::start(vec![]).await;
    let peer = tokio::time::timeout(Duration::from_secs(15), c.client.connect(dns))
        .await
        .expect("connect answers")
        .expect("connect succeeds");
    assert_eq!(peer, a_id);
}

/// `connect` answers with the peer id once connected, and with one clear error when the
/// address is unsupported, names another peer, or nothing listens there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_answers_with_the_peer_id_or_a_clear_error() {
    let a = TestNode::start(vec![]).await;
    let b = TestNode::start(vec![]).await;
    let peer = b.client.connect(a.addr.clone()).await.expect("connects");
    assert_eq!(peer, a.client.peer_id());
    // Already connected: at once.
    assert_eq!(
        b.client.connect(a.addr.clone()).await.unwrap(),
        a.client.peer_id()
    );
    // Without /p2p/: the peer id is learnt.
    let plain: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", port(&a.addr))
        .parse()
        .unwrap();
    assert_eq!(b.client.connect(plain).await.unwrap(), a.client.peer_id());

    let started = Instant::now();
    let quic: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
    let e = b.client.connect(quic).await.unwrap_err().to_string();
    assert!(e.contains("unsupported address"), "{e}");

    let c = TestNode::start(vec![]).await;
    let wrong: Multiaddr = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/{}",
        port(&a.addr),
        PeerId::random()
    )
    .parse()
    .unwrap();
    let e = c.client.connect(wrong).await.unwrap_err().to_string();
    assert!(e.contains("answers as peer"), "{e}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let nobody: Multiaddr = format!("/ip4/127.0.0.1/tcp/{closed_port}").parse().unwrap();
    let e = c.client.connect(nobody).await.unwrap_err().to_string();
    assert!(e.contains("cannot dial"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "failures answer fast: {:?}",
        started.elapsed()
    );
}

/// The holders of a file: this node and the connected peers that hold the whole content; a
/// wait for more than there are ends at its timeout with the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_are_the_nodes_with_the_whole_content() {
    let nodes = chain(3).await;
    assert!(fully_connected(&nodes, Duration::from_secs(10)).await);
    put(&nodes[0].client, "h", data(3 << 20, 7)).await;
    let h = nodes[0]
        .client
        .wait_holders("h", 3, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(h.peers.len(), 3, "{h:?}");
    assert_eq!(h.peers[0], nodes[0].client.peer_id(), "this node first");
    let [a, b, c] = <[TestNode; 3]>::try_from(nodes).ok().unwrap();
    c.stop().await;
    put(&a.client, "h2", data(1000, 8)).await;
    let started = Instant::now();
    let h = a
        .client
        .wait_holders("h2", 3, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(h.peers.len(), 2, "{h:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(b);
}

/// The metrics after a replicated put: dfs's figures on both sides and libp2p's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_stored_files_transfers_and_bytes_both_ways() {
    let a = TestNode::start(vec![]).await;
    let b = TestNode::start(vec![a.addr.clone()]).await;
    let size = (2 << 20) + 5;
    put(&a.client, "m", data(size, 3)).await;
    assert!(b.client.wait_for("m", false, Duration::from_secs(20)).await);
    let text = b.client.metrics_text().await.unwrap();
    for line in [
        "dfs_records 1".to_string(),
        "dfs_files 1".to_string(),
        format!("dfs_stored_bytes {size}"),
        "dfs_connected_peers 1".to_string(),
        "dfs_transfers_completed_total 1".to_string(),
        "dfs_transfers_in_flight 0".to_string(),
        format!("dfs_fetched_bytes_total {size}"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert!(
        text.contains("libp2p_swarm_connections_established_total"),
        "{text}"
    );
    assert!(text.contains("libp2p_identify_"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("libp2p_bandwidth_bytes_total{")
                && l.contains("direction=\"Inbound\"")),
        "{text}"
    );
    let served = a.client.metrics_text().await.unwrap();
    assert!(
        served
            .lines()
            .any(|l| l == format!("dfs_served_bytes_total {size}")),
        "{served}"
    );
}

/// A node whose bootstrap peer cannot be reached says so at warn level once `alone_after` has
/// passed, naming the dial that failed; its `put` names that cause, not a lack of write access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alone_says_so_and_why() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{dead}/p2p/{}", PeerId::random())
        .parse()
        .unwrap();
    let mark = log_len();
    let node = node_with(
        |c| c.alone_after = Duration::from_millis(500),
        None,
        vec![addr],
    )
    .await;
    let port = format!("/tcp/{dead}/");
    assert!(
        eventually(Duration::from_secs(10), || async {
            !logged(mark, &["no peer", "the last dial failed", &port]).is_empty()
        })
        .await,
        "{}",
        logs_since(mark)
    );
    let err = node
        .client
        .put("k".into(), std::io::Cursor::new(b"x".to_vec()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("has not learnt its network"), "{err}");
    assert!(err.contains(&port) && !err.contains("dfs allow"), "{err}");
}
