//! The running peer: gossip discovery over a bootstrap chain, stable identity, network
//! namespaces.

use crate::common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_in_a_chain_all_find_each_other() {
    let nodes = chain(5).await;
    assert!(
        fully_connected(&nodes, Duration::from_secs(20)).await,
        "every node should be connected to the four others"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_keeps_its_peer_id() {
    let node = TestNode::start(vec![]).await;
    let before = node.client.peer_id();
    let node = node.restart().await;
    assert_eq!(node.client.peer_id(), before);
    let info = node.client.info().await.unwrap();
    assert!(info
        .addrs
        .iter()
        .all(|a| a.to_string().ends_with(&format!("/p2p/{before}"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_do_not_mix() {
    // a and b each own a network; c joins b's. a and b are connected only by a dial.
    let a = TestNode::start(vec![]).await;
    let b = TestNode::start(vec![]).await;
    b.client.dial(a.addr.clone()).await.unwrap();
    let c = TestNode::start(vec![b.addr.clone()]).await;
    assert_ne!(a.client.network_id(), b.client.network_id());
    assert_eq!(b.client.network_id(), c.client.network_id());
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.peer_count().await >= 1
        })
        .await
    );
    // Give gossip a few announcement periods: a must never learn of c.
    let never = eventually(Duration::from_secs(3), || async {
        a.client
            .peers()
            .await
            .unwrap()
            .iter()
            .any(|p| p.peer_id == c.client.peer_id())
    })
    .await;
    assert!(
        !never,
        "a node of network alpha learned of a beta node by gossip"
    );
    // And a record written in beta does not reach alpha.
    put(&c.client, "beta-only", b"x".to_vec()).await;
    assert!(
        b.client
            .wait_for("beta-only", false, Duration::from_secs(10))
            .await
    );
    assert!(a.client.stat("beta-only".into()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_bootstrap_does_not_stop_the_node() {
    // A port nobody listens on.
    let dead: libp2p::Multiaddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    };
    // a owns its network (a fresh node with only a dead bootstrap address would wait to learn
    // one), then restarts with the dead address as its bootstrap peer.
    let a = TestNode::start(vec![]).await;
    let (dir, _) = a.stop().await;
    let a = TestNode::start_with(dir, vec![dead]).await;
    let b = TestNode::start(vec![a.addr.clone()]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.peer_count().await == 1
        })
        .await
    );
    put(&b.client, "k", b"v".to_vec()).await;
    assert!(a.client.wait_for("k", false, Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_bootstrap_peer_is_redialled() {
    let a = TestNode::start(vec![]).await;
    let a_dir_addr = a.addr.clone();
    let b = TestNode::start(vec![a_dir_addr]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.peer_count().await == 1
        })
        .await
    );
    // a restarts on a new port: b only knows its old address, so use a fixed port instead.
    let port = match a.addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Tcp(p) => Some(p),
        _ => None,
    }) {
        Some(p) => p,
        None => panic!("tcp address"),
    };
    let (dir, _) = a.stop().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.peer_count().await == 0
        })
        .await
    );
    let mut cfg = config(dir.path().to_path_buf(), vec![]);
    cfg.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
    let a2 = start_node(cfg).await;
    let c = a2.client();
    assert!(
        eventually(Duration::from_secs(15), || async {
            c.peers().await.map(|p| p.len()).unwrap_or(0) == 1
        })
        .await,
        "b should re-dial its bootstrap peer"
    );
    a2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_does_not_hurt_the_node() {
    use std::io::Write;
    let a = TestNode::start(vec![]).await;
    let b = TestNode::start(vec![a.addr.clone()]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.peer_count().await == 1
        })
        .await
    );
    let port = a
        .addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(p) => Some(p),
            _ => None,
        })
        .unwrap();
    // Not libp2p at all, a half-open handshake, and random bytes after a valid-looking start.
    let payloads: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x13/multistream/1.0.0\n",
        &[0xff; 4096],
    ];
    for payload in payloads {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(payload);
    }
    // The node still serves its peers.
    put(&b.client, "after-garbage", b"still fine".to_vec()).await;
    assert!(
        a.client
            .wait_for("after-garbage", false, Duration::from_secs(10))
            .await
    );
    assert_eq!(a.peer_count().await, 1);
}

/// Shutdown joins every task the node spawned (the network task, replication, transfers,
/// blocking store work), so the data dir opens again at once, with no retry, even when the
/// node was busy replicating at the moment it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_reopens_immediately_after_shutdown() {
    const DEADLINE: Duration = Duration::from_secs(30);
    let source = TestNode::start(vec![]).await;
    let mut sink = TestNode::start(vec![source.addr.clone()]).await;
    assert!(eventually(DEADLINE, || async { sink.peer_count().await == 1 }).await);
    put(&source.client, "small", data(1000, 1)).await;
    assert!(sink.client.wait_for("small", false, DEADLINE).await);
    let big = data(40 * dfs::record::CHUNK_SIZE, 2);
    put(&source.client, "big", big.clone()).await;
    for _ in 0..3 {
        // Stop while the transfer of "big" is probably running; restart() opens the data
        // dir again straight away and panics if it is still held.
        let _ = eventually(DEADLINE, || async { sink.client.chunks_fetched() > 0 }).await;
        sink = sink.restart().await;
    }
    assert!(sink.client.wait_for("big", false, DEADLINE).await);
    assert_eq!(get(&sink.client, "big").await.unwrap(), big);
    assert_eq!(get(&sink.client, "small").await.unwrap(), data(1000, 1));
}
