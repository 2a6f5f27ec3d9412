//! A hostile-peer harness: attackers inside the test process (raw TCP sockets and libp2p swarms
//! written from `docs/PROTOCOL.md`) run the attacks of issue 13 against a node, and the test
//! checks that honest peers are not hurt: an honest peer connects in under 2 s during the
//! attack, an honest 1 MiB put reaches the victim in under 2 s, the node's dials stay within
//! its budget, and the nodes log less than 10 KB/s (at info). Every attack is bounded in time
//! and stops by itself.
//!
//! - idle TCP sockets that never handshake (attack 3);
//! - 150 foreign peer ids that fill the connection slots (attack 4);
//! - announcements of forged identities with 16 attacker-chosen addresses each (attack 8).

#[path = "it/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, TestNode};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, ping, Multiaddr, PeerId, Swarm};
use tokio_util::sync::CancellationToken;

/// What the table asks of honest peers during an attack.
const HONEST_CONNECT: Duration = Duration::from_secs(2);
const HONEST_PUT: Duration = Duration::from_secs(2);
/// No attack runs longer than this, whatever happens.
const ATTACK_MAX: Duration = Duration::from_secs(30);

/// The attacks share two cores with the victim: one at a time, so that timings mean something.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bytes the nodes of this test binary have logged.
static LOGGED: AtomicU64 = AtomicU64::new(0);
/// The bound on what an attack may make a node log.
const MAX_LOG_RATE: f64 = 10_000.0;
/// The bound of issue 21 for a fetch storm.
const MAX_STORM_LOG_RATE: f64 = 1_000.0;

struct CountingWriter;

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGGED.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts what the nodes log: dfs at info, as `dfs node` does, and libp2p's warnings (the
/// attackers' own swarms log their start at info). Installed before any node starts: the
/// first subscriber wins.
fn count_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // As `dfs node` logs: libp2p's warnings rate-limited per call site.
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(|| CountingWriter)
                .with_filter(tracing_subscriber::EnvFilter::new("warn,dfs=info"))
                .with_filter(dfs::log_limit::libp2p_lines()),
        )
        .try_init();
}

/// Checks that the nodes logged less than [`MAX_LOG_RATE`] since `start` (bytes, time).
fn check_log_rate(start: (u64, Instant)) {
    check_log_rate_below(start, MAX_LOG_RATE)
}

fn check_log_rate_below(start: (u64, Instant), max: f64) {
    let bytes = LOGGED.load(Ordering::Relaxed) - start.0;
    let secs = start.1.elapsed().as_secs_f64();
    let rate = bytes as f64 / secs;
    eprintln!("logged {bytes} bytes in {secs:.1} s ({rate:.0} B/s)");
    assert!(rate < max, "the attack made the nodes log {rate:.0} B/s");
}

fn log_mark() -> (u64, Instant) {
    (LOGGED.load(Ordering::Relaxed), Instant::now())
}

/// Starts an honest node bootstrapped to `victim`, checks that the victim sees it as a dfs peer
/// within [`HONEST_CONNECT`] and that a 1 MiB put on it reaches the victim within
/// [`HONEST_PUT`]. Returns both times.
async fn honest_peer_gets_in(victim: &TestNode, key: &str) -> (Duration, Duration) {
    let started = Instant::now();
    let honest = TestNode::start(vec![victim.addr.clone()]).await;
    let id = honest.client.peer_id();
    let connected = eventually(HONEST_CONNECT, || async {
        victim
            .client
            .peers()
            .await
            .is_ok_and(|peers| peers.iter().any(|p| p.peer_id == id && p.dfs))
    })
    .await;
    let connect = started.elapsed();
    assert!(
        connected,
        "an honest peer did not get in within {HONEST_CONNECT:?} (victim has {} peers)",
        victim.peer_count().await
    );
    let started = Instant::now();
    common::put(&honest.client, key, common::data(1 << 20, 42)).await;
    let arrived = victim.client.wait_for(key, false, HONEST_PUT).await;
    let put = started.elapsed();
    assert!(
        arrived,
        "an honest 1 MiB put did not reach the victim within {HONEST_PUT:?}"
    );
    honest.stop().await;
    eprintln!("honest peer connected in {connect:?}; its 1 MiB put arrived in {put:?}");
    (connect, put)
}

fn socket_addr(addr: &Multiaddr) -> SocketAddr {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    SocketAddr::new(ip.unwrap(), port.unwrap())
}

// ---- attack 3: idle sockets ----

/// Holds `n` TCP sockets to `target` that never send a byte, reopening each one as soon as
/// the victim closes it, until `stop`. Counts sockets opened and sockets closed by the victim.
fn idle_sockets(
    target: SocketAddr,
    n: usize,
    stop: CancellationToken,
) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
    let opened = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    for _ in 0..n {
        let (opened, closed, stop) = (opened.clone(), closed.clone(), stop.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + ATTACK_MAX;
            while !stop.is_cancelled() && tokio::time::Instant::now() < deadline {
                let Ok(mut socket) = tokio::net::TcpStream::connect(target).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 1024];
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep_until(deadline) => return,
                        read = tokio::io::AsyncReadExt::read(&mut socket, &mut buf) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        },
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    (opened, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_do_not_keep_honest_peers_out() {
    let _serial = SERIAL.lock().await;
    count_logs();
    let victim = TestNode::start(vec![]).await;
    let logs = log_mark();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let (opened, closed) = idle_sockets(socket_addr(&victim.addr), 64, stop.clone());
    assert!(
        eventually(Duration::from_secs(5), || async {
            opened.load(Ordering::Relaxed) >= 64
        })
        .await
    );
    // Let the victim accept them all before the honest peer comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    honest_peer_gets_in(&victim, "during-idle-sockets").await;
    // The idle sockets are closed by the handshake timeout, not held for ever.
    let limit = dfs::net::transport::HANDSHAKE_TIMEOUT + Duration::from_secs(2);
    assert!(
        eventually(limit.saturating_sub(started.elapsed()), || async {
            closed.load(Ordering::Relaxed) >= 64
        })
        .await,
        "idle sockets should be closed within {limit:?}; {} were",
        closed.load(Ordering::Relaxed)
    );
    check_log_rate(logs);
    stop.cancel();
    victim.stop().await;
}

// ---- attack 4: foreign peer ids ----

/// A foreign libp2p peer that speaks only ping: it holds a connection slot and nothing else.
fn foreign_swarm() -> Swarm<ping::Behaviour> {
    common::peer_swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
        ping::Behaviour::new(ping::Config::new())
    })
}

/// Runs `n` foreign peers that connect to `target` and reconnect as soon as they are
/// disconnected, until `stop`. Returns the number of connections they established.
fn foreign_peers(target: Multiaddr, n: usize, stop: CancellationToken) -> Arc<AtomicU64> {
    let established = Arc::new(AtomicU64::new(0));
    for _ in 0..n {
        let (target, stop, established) = (target.clone(), stop.clone(), established.clone());
        tokio::spawn(async move {
            let mut swarm = foreign_swarm();
            let deadline = tokio::time::Instant::now() + ATTACK_MAX;
            let _ = swarm.dial(target.clone());
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => return,
                    e = swarm.select_next_some() => e,
                };
                match event {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        established.fetch_add(1, Ordering::Relaxed);
                    }
                    SwarmEvent::ConnectionClosed {
                        num_established: 0, ..
                    }
                    | SwarmEvent::OutgoingConnectionError { .. } => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = swarm.dial(target.clone());
                    }
                    _ => {}
                }
            }
        });
    }
    established
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_peer_ids_do_not_keep_honest_or_bootstrap_peers_out() {
    let _serial = SERIAL.lock().await;
    count_logs();
    let bootstrap = TestNode::start(vec![]).await;
    let bootstrap_id = bootstrap.client.peer_id();
    let victim = TestNode::start(vec![bootstrap.addr.clone()]).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            victim.peer_count().await == 1
        })
        .await
    );

    let stop = CancellationToken::new();
    let logs = log_mark();
    let established = foreign_peers(victim.addr.clone(), 150, stop.clone());
    // Until the foreign peers hold more slots than the node wants (64).
    assert!(
        eventually(Duration::from_secs(10), || async {
            victim.peer_count().await > 100
        })
        .await,
        "the attack should fill the slots ({} connections made)",
        established.load(Ordering::Relaxed)
    );
    honest_peer_gets_in(&victim, "during-foreign-peers").await;
    // Beyond the limit, foreign peers are shed once they had time to identify (they
    // reconnect at once: the count of connections they made grows).
    assert!(
        eventually(Duration::from_secs(6), || async {
            established.load(Ordering::Relaxed) > 150 + 40
        })
        .await,
        "foreign peers beyond the limit should be shed"
    );

    // The bootstrap peer, cut off and let back in, gets in again at once.
    victim.client.block(bootstrap_id, true).await.unwrap();
    let connected = |id: PeerId| {
        let victim = &victim;
        async move {
            victim
                .client
                .peers()
                .await
                .is_ok_and(|peers| peers.iter().any(|p| p.peer_id == id))
        }
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            !connected(bootstrap_id).await
        })
        .await
    );
    let started = Instant::now();
    victim.client.block(bootstrap_id, false).await.unwrap();
    assert!(
        eventually(HONEST_CONNECT, || connected(bootstrap_id)).await,
        "the bootstrap peer did not get back in within {HONEST_CONNECT:?}"
    );
    eprintln!(
        "bootstrap peer back in {:?}; foreign connections made: {}; victim peers: {}",
        started.elapsed(),
        established.load(Ordering::Relaxed),
        victim.peer_count().await
    );
    // Foreign peers are shed beyond the limit, so the count stays bounded.
    assert!(victim.peer_count().await <= 4 * 64);
    check_log_rate(logs);
    stop.cancel();
    victim.stop().await;
    bootstrap.stop().await;
}

// ---- attack 8: forged announcements ----

/// A gossipsub-only libp2p peer (signed messages) subscribed to the victim's peers topic.
fn gossip_swarm(topic: &gossipsub::IdentTopic) -> Swarm<gossipsub::Behaviour> {
    let mut swarm = common::peer_swarm(libp2p::identity::Keypair::generate_ed25519(), |key| {
        gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(300))
                .build()
                .unwrap(),
        )
        .unwrap()
    });
    swarm.behaviour_mut().subscribe(topic).unwrap();
    swarm
}

/// An announcement as `docs/PROTOCOL.md` ("Peers topic") specifies it: a CBOR map of
/// `peer_id` (bytes), `addrs` (array of binary multiaddrs) and `time` (ms since the epoch).
fn announcement(peer: PeerId, addrs: &[Multiaddr]) -> Vec<u8> {
    use ciborium::Value;
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let value = Value::Map(vec![
        (Value::Text("peer_id".into()), Value::Bytes(peer.to_bytes())),
        (
            Value::Text("addrs".into()),
            Value::Array(addrs.iter().map(|a| Value::Bytes(a.to_vec())).collect()),
        ),
        (Value::Text("time".into()), Value::Integer(time.into())),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&value, &mut out).unwrap();
    out
}

/// 16 listeners of the attacker: the addresses the forged identities announce. Counts the
/// connections the victim opens to them.
async fn sinks(stop: CancellationToken) -> (Vec<Multiaddr>, Arc<AtomicU64>) {
    let dialled = Arc::new(AtomicU64::new(0));
    let mut addrs = Vec::new();
    for _ in 0..16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        addrs.push(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap());
        let (dialled, stop) = (dialled.clone(), stop.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + ATTACK_MAX;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => return,
                    accepted = listener.accept() => if accepted.is_ok() {
                        // Dropped at once: the victim's dial fails fast, as a refused one.
                        dialled.fetch_add(1, Ordering::Relaxed);
                    },
                }
            }
        });
    }
    (addrs, dialled)
}

/// Drives a swarm until `stop` (or [`ATTACK_MAX`]).
fn drive<B: libp2p::swarm::NetworkBehaviour + Send>(mut swarm: Swarm<B>, stop: CancellationToken)
where
    B::ToSwarm: Send,
{
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + ATTACK_MAX;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = swarm.select_next_some() => {}
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_announcements_do_not_make_the_node_dial_hundreds_of_addresses() {
    use dfs::net::limits::{DIAL_BURST, DIAL_REFILL_PER_SEC};
    let _serial = SERIAL.lock().await;
    count_logs();
    let victim = TestNode::start(vec![]).await;
    let logs = log_mark();
    // The peers topic of the victim's network, `dfs/<network id>/peers/1` (PROTOCOL.md).
    let network = victim
        .client
        .network_id()
        .expect("the victim owns a network");
    let topic = gossipsub::IdentTopic::new(format!("dfs/{network}/peers/1"));
    let stop = CancellationToken::new();
    let (sink_addrs, dialled) = sinks(stop.clone()).await;

    // The relay: one peer connected to the victim, forwarding what the identities publish.
    let mut relay = gossip_swarm(&topic);
    relay
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let relay_addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = relay.select_next_some().await {
            break address;
        }
    };
    relay.dial(victim.addr.clone()).unwrap();
    drive(relay, stop.clone());

    // 20 forged identities x 16 addresses: 320 addresses, the figure.
    let started = Instant::now();
    for _ in 0..20 {
        let mut identity = gossip_swarm(&topic);
        identity.dial(relay_addr.clone()).unwrap();
        let (topic, sink_addrs, stop) = (topic.clone(), sink_addrs.clone(), stop.clone());
        tokio::spawn(async move {
            let me = *identity.local_peer_id();
            let deadline = tokio::time::Instant::now() + ATTACK_MAX;
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = identity.select_next_some() => {}
                    _ = every.tick() => {
                        let _ = identity
                            .behaviour_mut()
                            .publish(topic.clone(), announcement(me, &sink_addrs));
                    }
                }
            }
        });
    }
    // Let the announcements flow for a while, then an honest peer comes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    honest_peer_gets_in(&victim, "during-forged-announcements").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let made = dialled.load(Ordering::Relaxed);
    let budget = (DIAL_BURST + DIAL_REFILL_PER_SEC * elapsed).ceil() as u64;
    eprintln!("the victim dialled {made} attacker addresses in {elapsed:.1} s (budget {budget})");
    assert!(made > 0, "the announcements should reach the victim");
    assert!(
        made <= budget,
        "{made} dials of attacker addresses in {elapsed:.1} s exceed the budget of {budget}"
    );
    check_log_rate(logs);
    stop.cancel();
    victim.stop().await;
}

/// A stranger opens the most chunk streams it may (and more), asks each for 64 chunks of a
/// large file and never reads: a reader's get of that file is not slowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_streams_that_are_never_read_do_not_slow_a_reader() {
    use dfs::protocols::chunks;
    count_logs();
    let _serial = SERIAL.lock().await;
    let victim = TestNode::start(vec![]).await;
    let size = 32 << 20;
    let bytes = common::data(size, 9);
    let record = common::put(&victim.client, "big", bytes.clone()).await;
    let hashes = victim
        .client
        .store()
        .chunk_list(&record.cid.unwrap())
        .unwrap()
        .unwrap();
    // The attacker: a foreign peer speaking raw streams only.
    let mut swarm = common::peer_swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
        libp2p_stream::Behaviour::new()
    });
    let mut control = swarm.behaviour().new_control();
    swarm.dial(victim.addr.clone()).unwrap();
    let stop = CancellationToken::new();
    let driving = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::sleep(ATTACK_MAX);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = &mut deadline => break,
                    _ = swarm.select_next_some() => {}
                }
            }
        })
    };
    let victim_id = victim.client.peer_id();
    let mut unread = Vec::new();
    let mut request: Vec<dfs::record::Hash> = Vec::new();
    while request.len() < chunks::MAX_HASHES_PER_REQUEST {
        request.extend_from_slice(&hashes);
    }
    request.truncate(chunks::MAX_HASHES_PER_REQUEST);
    let opening = Instant::now();
    while unread.len() < 64 && opening.elapsed() < Duration::from_secs(10) {
        let open = control.open_stream(victim_id, chunks::PROTOCOL);
        match tokio::time::timeout(Duration::from_secs(2), open).await {
            Ok(Ok(mut s)) => {
                if chunks::write_request(&mut s, &request).await.is_ok() {
                    unread.push(s);
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(
        unread.len() >= 8,
        "the attacker opened {} streams",
        unread.len()
    );
    // Let the node fill what it lets the attacker fill.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reader = TestNode::reader(vec![victim.addr.clone()]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            victim.client.peers().await.is_ok_and(|peers| {
                peers
                    .iter()
                    .any(|p| p.peer_id == reader.client.peer_id() && p.dfs)
            })
        })
        .await
    );
    let started = Instant::now();
    let got = common::get(&reader.client, "big").await;
    let took = started.elapsed();
    eprintln!(
        "a reader got 32 MiB in {took:?} beside {} unread chunk streams",
        unread.len()
    );
    assert_eq!(got.as_deref(), Some(&bytes[..]));
    assert!(
        took < Duration::from_secs(4),
        "the reader's 32 MiB get took {took:?}"
    );
    stop.cancel();
    driving.await.unwrap();
    drop(unread);
}

/// A stranger opens `/dfs/fetch/2` streams as fast as it can for 10 s and never finishes its
/// requests: the node logs less than 1 KB/s, and answers an honest peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_storm_is_not_written_to_the_log() {
    use dfs::protocols::fetch;
    use futures::AsyncWriteExt;
    count_logs();
    let _serial = SERIAL.lock().await;
    let victim = TestNode::start(vec![]).await;
    let mut swarm = common::peer_swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
        libp2p_stream::Behaviour::new()
    });
    let control = swarm.behaviour().new_control();
    swarm.dial(victim.addr.clone()).unwrap();
    let stop = CancellationToken::new();
    let driving = {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = swarm.select_next_some() => {}
                }
            }
        })
    };
    let victim_id = victim.client.peer_id();
    let mark = log_mark();
    let storm = Duration::from_secs(10);
    let started = Instant::now();
    let mut opened = 0u64;
    let mut held = Vec::new();
    while started.elapsed() < storm {
        let mut control = control.clone();
        let open = control.open_stream(victim_id, fetch::PROTOCOL);
        match tokio::time::timeout(Duration::from_secs(1), open).await {
            Ok(Ok(mut s)) => {
                // Half a request ("time" is 6474696d65), never finished.
                let _ = s.write_all(&[0x64, 0x74, 0x69]).await;
                opened += 1;
                held.push(s);
                if held.len() > 64 {
                    held.remove(0);
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    eprintln!("the stranger opened {opened} fetch streams in {storm:?}");
    assert!(opened > 100, "a storm: {opened} streams");
    check_log_rate_below(mark, MAX_STORM_LOG_RATE);
    let (connect, put) = honest_peer_gets_in(&victim, "after-the-storm").await;
    assert!(connect < HONEST_CONNECT && put < HONEST_PUT);
    stop.cancel();
    driving.await.unwrap();
}
