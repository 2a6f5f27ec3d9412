//! Liveness: a connection whose pings fail is closed quickly (not at the next request's
//! timeout), and a peer that connects again is brought up to date by anti-entropy at once, not
//! at the next periodic round (issue 13, item 11).

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, TestNode};
use dfs::net::behaviour::Liveness;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Far beyond the tests: only the session started on (re)connection can sync.
const NO_SYNC: Duration = Duration::from_secs(600);

async fn node(owner: Option<&TestNode>, bootstrap: Vec<Multiaddr>) -> TestNode {
    common::init_tracing();
    common::node_with(|c| c.sync_interval = NO_SYNC, owner, bootstrap).await
}

/// A TCP proxy to `target` on 127.0.0.1 that forwards bytes both ways until `frozen` is set,
/// then swallows them: the sockets stay open, nothing gets through (a stalled link). Returns
/// its address. Its tasks end with their sockets, or after 60 s.
async fn stalling_proxy(target: SocketAddr, frozen: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok(Ok((inbound, _))) =
            tokio::time::timeout(Duration::from_secs(60), listener.accept()).await
        else {
            return;
        };
        let outbound = tokio::net::TcpStream::connect(target).await.unwrap();
        let (ri, wi) = inbound.into_split();
        let (ro, wo) = outbound.into_split();
        for (mut from, mut to) in [(ri, wo), (ro, wi)] {
            let frozen = frozen.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match tokio::time::timeout_at(deadline, from.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => n,
                        _ => return,
                    };
                    if !frozen.load(Ordering::Relaxed) && to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The liveness of the first test: the defaults scaled down four times (a ping every 0.5 s,
/// closed after 2 s of silence), so that it waits seconds, not tens of seconds.
const FAST_LIVENESS: Liveness = Liveness {
    ping_interval: Duration::from_millis(500),
    ping_timeout: Duration::from_secs(1),
    dead_after: Duration::from_secs(2),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_pings_fail_is_closed_quickly() {
    let victim = common::node_with(|c| c.liveness = FAST_LIVENESS, None, vec![]).await;
    let frozen = Arc::new(AtomicBool::new(false));
    let target = dfs::net::discovery::split_peer(&victim.addr).0;
    let target: SocketAddr = {
        let mut parts = target.iter();
        match (parts.next(), parts.next()) {
            (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) => (ip, port).into(),
            _ => panic!("unexpected address {target}"),
        }
    };
    let proxy = stalling_proxy(target, frozen.clone()).await;
    // A foreign peer that answers pings, reached through the proxy.
    let mut peer = common::peer_swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
        libp2p::ping::Behaviour::new(libp2p::ping::Config::new())
    });
    peer.dial(
        Multiaddr::empty()
            .with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
            .with(Protocol::Tcp(proxy.port())),
    )
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let driver = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = peer.select_next_some() => {}
                }
            }
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            victim.peer_count().await == 1
        })
        .await
    );
    // Healthy for longer than a silent connection may last: pings keep it.
    tokio::time::sleep(FAST_LIVENESS.dead_after * 2).await;
    assert_eq!(victim.peer_count().await, 1, "a live connection stays");
    frozen.store(true, Ordering::Relaxed);
    let started = Instant::now();
    // Without the watch, a stalled link goes at the next request's timeout, or never.
    let limit = FAST_LIVENESS.dead_after + Duration::from_secs(4);
    let closed = eventually(limit, || async { victim.peer_count().await == 0 }).await;
    assert!(
        closed,
        "the dead connection should be closed within {limit:?}"
    );
    eprintln!(
        "dead connection closed {:?} after the link stalled",
        started.elapsed()
    );
    stop.cancel();
    let _ = driver.await;
    victim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_peer_is_synced_at_once() {
    let a = node(None, vec![]).await;
    let b = node(None, vec![a.addr.clone()]).await;
    let a_id = a.client.peer_id();
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.peer_count().await == 1
        })
        .await
    );
    // Cut off: b misses the gossip of a put.
    b.client.block(a_id, true).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.peer_count().await == 0
        })
        .await
    );
    common::put(&a.client, "missed.bin", common::data(200_000, 3)).await;
    assert!(
        !b.client
            .wait_for("missed.bin", false, Duration::from_millis(500))
            .await
    );
    // Back: the reconnection alone must bring it (the periodic round is 10 minutes away).
    let started = Instant::now();
    b.client.block(a_id, false).await.unwrap();
    assert!(
        b.client
            .wait_for("missed.bin", false, Duration::from_secs(5))
            .await,
        "the reconnected peer should be synced at once"
    );
    eprintln!("synced {:?} after the reconnection", started.elapsed());
    b.stop().await;
    a.stop().await;
}

/// A TCP proxy to `target` that accepts any number of connections (so a peer can dial again
/// through it) and, while `cut` is set, drops every byte in both directions: a partition, or
/// an unplugged cable. Its tasks end after 60 s.
async fn partition_proxy(target: SocketAddr, cut: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Ok(Ok((inbound, _))) = tokio::time::timeout_at(deadline, listener.accept()).await
        {
            if cut.load(Ordering::Relaxed) {
                continue; // a dial during the partition gets nowhere
            }
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            for (mut from, mut to) in [(ri, wo), (ro, wi)] {
                let cut = cut.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match tokio::time::timeout_at(deadline, from.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => n,
                            _ => return,
                        };
                        if !cut.load(Ordering::Relaxed) && to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    addr
}

/// Issue 13, "partition healed, or a node plugged back: converged within 5 s of the heal".
/// Two nodes whose only link is a proxy; the link is cut for 3 s (shorter than the dead-link
/// detection, so neither side has noticed) while a write happens on one side, then restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_partition_converges_within_five_seconds() {
    let a = node(None, vec![]).await;
    let target = dfs::net::discovery::split_peer(&a.addr).0;
    let target: SocketAddr = {
        let mut parts = target.iter();
        match (parts.next(), parts.next()) {
            (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) => (ip, port).into(),
            _ => panic!("unexpected address {target}"),
        }
    };
    let cut = Arc::new(AtomicBool::new(false));
    let proxy = partition_proxy(target, cut.clone()).await;
    let via_proxy = Multiaddr::empty()
        .with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
        .with(Protocol::Tcp(proxy.port()))
        .with(Protocol::P2p(a.client.peer_id()));
    let b = node(Some(&a), vec![via_proxy]).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.peer_count().await == 1
        })
        .await
    );
    common::put(&a.client, "before.bin", common::data(10_000, 1)).await;
    assert!(
        b.client
            .wait_for("before.bin", false, Duration::from_secs(5))
            .await
    );
    cut.store(true, Ordering::Relaxed);
    common::put(&a.client, "during.bin", common::data(300_000, 2)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !b.client
            .wait_for("during.bin", false, Duration::from_millis(10))
            .await,
        "the partition held"
    );
    cut.store(false, Ordering::Relaxed);
    let healed = Instant::now();
    assert!(
        b.client
            .wait_for("during.bin", false, Duration::from_secs(5))
            .await,
        "not converged within 5 s of the heal"
    );
    eprintln!("converged {:?} after the heal", healed.elapsed());
    b.stop().await;
    a.stop().await;
}
