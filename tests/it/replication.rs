//! Replication end to end with real nodes on loopback: gossip of writes and deletes, verified
//! fetch, get with network fallback, anti-entropy after downtime and partitions, and peers that
//! serve corrupt chunks.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use dfs::record::{Record, CHUNK_SIZE};

const DEADLINE: Duration = Duration::from_secs(30);

/// The record sets of a node, without local state.
async fn records(node: &TestNode) -> BTreeMap<String, Record> {
    node.client
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.record.key.clone(), s.record))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_on_one_node_is_readable_on_all_five() {
    let nodes = chain(5).await;
    assert!(fully_connected(&nodes, DEADLINE).await);
    let small = data(1000, 1);
    let big = data(3 * CHUNK_SIZE + 17, 2);
    put(&nodes[0].client, "small", small.clone()).await;
    put(&nodes[0].client, "dir/big.bin", big.clone()).await;
    for (i, n) in nodes.iter().enumerate() {
        assert!(
            n.client.wait_for("small", false, DEADLINE).await,
            "node {i} small"
        );
        assert!(
            n.client.wait_for("dir/big.bin", false, DEADLINE).await,
            "node {i} big"
        );
        assert_eq!(get(&n.client, "small").await.unwrap(), small, "node {i}");
        assert_eq!(
            get(&n.client, "dir/big.bin").await.unwrap(),
            big,
            "node {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_on_node_three_removes_the_key_everywhere() {
    let nodes = chain(5).await;
    assert!(fully_connected(&nodes, DEADLINE).await);
    put(&nodes[0].client, "doomed", data(CHUNK_SIZE + 1, 3)).await;
    for n in &nodes {
        assert!(n.client.wait_for("doomed", false, DEADLINE).await);
    }
    nodes[2].client.delete("doomed".into()).await.unwrap();
    for (i, n) in nodes.iter().enumerate() {
        assert!(
            n.client.wait_for("doomed", true, DEADLINE).await,
            "node {i}"
        );
        assert!(
            get(&n.client, "doomed").await.is_none(),
            "node {i} still serves it"
        );
        assert!(!n.client.store().has("doomed").unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_of_a_record_whose_content_is_not_here_streams_it_from_peers() {
    let a = TestNode::start(vec![]).await;
    // b hears of nothing by itself: long timers, so only the get moves content.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path().to_path_buf(), vec![a.addr.clone()]);
    cfg.sync_interval = Duration::from_secs(3600);
    cfg.retry_interval = Duration::from_secs(3600);
    let b_node = start_node(cfg).await;
    let b = b_node.client();
    assert!(eventually(DEADLINE, || async { b.peers().await.unwrap().len() == 1 }).await);
    // b, a reader, learns its network from a (records count only once it knows who may write).
    assert!(eventually(DEADLINE, || async { b.network_id().is_some() }).await);
    // Give b the record only (as gossip would), then read through b.
    let bytes = data(5 * CHUNK_SIZE + 3, 4);
    let record = a
        .client
        .store()
        .put("movie", std::io::Cursor::new(bytes.clone()))
        .unwrap();
    b.store().apply(record).unwrap();
    assert!(!b.stat("movie".into()).await.unwrap().local);
    let download = b.get("movie".into(), None).await.unwrap();
    assert!(!download.local);
    assert_eq!(download.bytes().await.unwrap(), bytes);
    assert!(
        b.wait_for("movie", false, DEADLINE).await,
        "the transfer completes"
    );
    // A range read of content that is now local.
    let d = b
        .get(
            "movie".into(),
            Some((CHUNK_SIZE as u64 - 2, CHUNK_SIZE as u64 + 2)),
        )
        .await
        .unwrap();
    assert_eq!(
        d.bytes().await.unwrap(),
        bytes[CHUNK_SIZE - 2..CHUNK_SIZE + 2]
    );

    // A key b has never heard of (written on a without gossip): b asks its peers.
    let other = data(1234, 5);
    a.client
        .store()
        .put("unannounced", std::io::Cursor::new(other.clone()))
        .unwrap();
    assert!(b.store().record("unannounced").unwrap().is_none());
    assert_eq!(get(&b, "unannounced").await.unwrap(), other);
    // And a key nobody has: not found, within the lookup bound.
    let started = std::time::Instant::now();
    let err = b.get("nobody-has-this".into(), None).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(b);
    b_node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_that_was_offline_converges_through_sync() {
    let mut nodes = chain(3).await;
    assert!(fully_connected(&nodes, DEADLINE).await);
    put(&nodes[0].client, "before", data(100, 6)).await;
    put(&nodes[0].client, "to-delete", data(200, 7)).await;
    for n in &nodes {
        assert!(n.client.wait_for("to-delete", false, DEADLINE).await);
    }
    // Node 3 goes away; writes and deletes happen without it.
    let offline = nodes.pop().unwrap();
    let (dir, _) = offline.stop().await;
    let late = data(2 * CHUNK_SIZE + 9, 8);
    put(&nodes[1].client, "while-away", late.clone()).await;
    nodes[0].client.delete("to-delete".into()).await.unwrap();
    put(&nodes[0].client, "before", data(300, 9)).await;
    assert!(nodes[1].client.wait_for("to-delete", true, DEADLINE).await);
    // It comes back, bootstrapping to node 1 only; gossip will not replay what it missed.
    let back = TestNode::start_with(dir, vec![nodes[0].addr.clone()]).await;
    assert!(back.client.wait_for("while-away", false, DEADLINE).await);
    assert!(back.client.wait_for("to-delete", true, DEADLINE).await);
    assert_eq!(get(&back.client, "while-away").await.unwrap(), late);
    assert!(
        eventually(DEADLINE, || async {
            records(&back).await == records(&nodes[0]).await
        })
        .await
    );
    assert_eq!(get(&back.client, "before").await.unwrap(), data(300, 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_groups_converge_after_healing() {
    let nodes = chain(4).await;
    assert!(fully_connected(&nodes, DEADLINE).await);
    let (left, right) = nodes.split_at(2);
    // Cut the network in two.
    for l in left {
        for r in right {
            l.client.block(r.client.peer_id(), true).await.unwrap();
            r.client.block(l.client.peer_id(), true).await.unwrap();
        }
    }
    assert!(
        eventually(DEADLINE, || async {
            for n in &nodes {
                if n.peer_count().await != 1 {
                    return false;
                }
            }
            true
        })
        .await,
        "each node keeps only its partner"
    );
    put(&left[0].client, "left-only", data(10, 10)).await;
    put(&right[0].client, "right-only", data(CHUNK_SIZE + 10, 11)).await;
    put(&left[1].client, "contested", data(100, 12)).await;
    put(&right[1].client, "contested", data(200, 13)).await;
    assert!(left[0].client.wait_for("contested", false, DEADLINE).await);
    assert!(right[0].client.wait_for("contested", false, DEADLINE).await);
    // Heal.
    for l in left {
        for r in right {
            l.client.block(r.client.peer_id(), false).await.unwrap();
            r.client.block(l.client.peer_id(), false).await.unwrap();
        }
    }
    assert!(
        fully_connected(&nodes, DEADLINE).await,
        "the halves reconnect"
    );
    let reference = &nodes[0];
    assert!(
        eventually(DEADLINE, || async {
            let want = records(reference).await;
            if want.len() != 3 {
                return false;
            }
            for n in &nodes {
                if records(n).await != want {
                    return false;
                }
            }
            true
        })
        .await,
        "all nodes end with identical record sets"
    );
    let winner = records(reference).await["contested"].clone();
    let expected = if winner.size == 100 {
        data(100, 12)
    } else {
        data(200, 13)
    };
    for n in &nodes {
        assert!(n.client.wait_for("contested", false, DEADLINE).await);
        assert!(n.client.wait_for("right-only", false, DEADLINE).await);
        assert_eq!(get(&n.client, "contested").await.unwrap(), expected);
        assert_eq!(get(&n.client, "left-only").await.unwrap(), data(10, 10));
    }
}

/// A foreign libp2p peer that speaks only raw streams (TCP + noise + yamux), as a test's
/// hostile peer.
fn stream_swarm() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    common::peer_swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
        libp2p_stream::Behaviour::new()
    })
}

/// A libp2p peer that answers every chunk request of `/dfs/chunks/1` with wrong bytes.
async fn start_liar(
    target: libp2p::Multiaddr,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use dfs::protocols::chunks;
    use futures::StreamExt;
    use std::sync::atomic::Ordering;
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = served.clone();
    let mut swarm = stream_swarm();
    let mut incoming = swarm
        .behaviour()
        .new_control()
        .accept(chunks::PROTOCOL)
        .unwrap();
    swarm.dial(target).unwrap();
    let task = tokio::spawn(async move {
        tokio::spawn(async move {
            while let Some((_, mut stream)) = incoming.next().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    while let Ok(Some(hashes)) = chunks::read_request(&mut stream).await {
                        for _ in hashes {
                            counter.fetch_add(1, Ordering::Relaxed);
                            if chunks::write_chunk(&mut stream, &vec![0xAB; CHUNK_SIZE])
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                });
            }
        });
        loop {
            swarm.select_next_some().await;
        }
    });
    (task, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_chunks_from_a_liar_do_not_corrupt_the_receiver() {
    let honest = TestNode::start(vec![]).await;
    let victim = TestNode::start(vec![honest.addr.clone()]).await;
    assert!(eventually(DEADLINE, || async { victim.peer_count().await == 1 }).await);
    let (liar, served) = start_liar(victim.addr.clone()).await;
    assert!(eventually(DEADLINE, || async { victim.peer_count().await == 2 }).await);
    // More chunks than one peer is asked for at once (16), so that the liar gets a share.
    let bytes = data(40 * CHUNK_SIZE + 5, 14);
    put(&honest.client, "precious", bytes.clone()).await;
    assert!(victim.client.wait_for("precious", false, DEADLINE).await);
    assert_eq!(get(&victim.client, "precious").await.unwrap(), bytes);
    assert!(
        served.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the liar was asked for at least one chunk, so the test exercised it"
    );
    liar.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_of_equal_record_sets_sends_only_a_digest() {
    // Tombstones are real records and need no content; tmpfs keeps 20,000 commits quick.
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dirs = [
        tempfile::tempdir_in(base).unwrap(),
        tempfile::tempdir_in(base).unwrap(),
    ];
    // a owns the network and writes every record; b joins it by ticket (without dialling a
    // until both stores hold the records).
    let owner = identity(dirs[0].path());
    let now = dfs::record::wall_ms() << 16;
    let records: Vec<Record> = (0..10_000)
        .map(|i| signed(&owner, &format!("key-{i}"), None, 0, now + i, 1_000_000 + i))
        .collect();
    let a = start_node(config(dirs[0].path().into(), vec![])).await;
    let (ac, bc) = {
        let ac = a.client();
        let b_addr = ac.info().await.unwrap().addrs[0].clone();
        let mut ticket = ac.invite(false).await.unwrap();
        ticket.addrs.clear();
        let mut cfg = config(dirs[1].path().into(), vec![]);
        cfg.join = Some(ticket);
        let b = start_node(cfg).await;
        let bc = b.client();
        for (c, rs) in [(&ac, records.clone()), (&bc, records.clone())] {
            let store = c.store().clone();
            tokio::task::spawn_blocking(move || store.apply_batch(rs).unwrap())
                .await
                .unwrap();
        }
        assert_eq!(ac.store().sync_leaves(), bc.store().sync_leaves());
        bc.dial(b_addr).await.unwrap();
        std::mem::forget(b); // kept running until the end of the test process
        (ac, bc)
    };
    // Both sides start a session when they identify each other, then every second. Sessions
    // are counted when they end, so at rest there is exactly one request (the root) each.
    let settled = |s: [u64; 6]| s[0] >= 2 && s[1] == s[0];
    assert!(
        eventually(DEADLINE, || async {
            settled(ac.sync_stats().snapshot()) && settled(bc.sync_stats().snapshot())
        })
        .await,
        "sessions of equal sets take one request each: {:?} {:?}",
        ac.sync_stats().snapshot(),
        bc.sync_stats().snapshot()
    );
    for c in [&ac, &bc] {
        let [sessions, requests, sent, received, records_sent, records_received] =
            c.sync_stats().snapshot();
        assert!(
            requests <= sessions + 1,
            "one request (the root) per session"
        );
        assert!(
            sent <= 16 * sessions,
            "{sent} bytes sent in {sessions} sessions"
        );
        // The root answer carries the grants' digest too (about 80 bytes).
        assert!(received <= 96 * sessions, "{received} bytes received");
        assert_eq!(records_sent + records_received, 0);
    }
    // One record differs: about one record is exchanged.
    let before = ac.sync_stats().snapshot();
    let before_b = bc.sync_stats().snapshot();
    let extra = signed(&owner, "one-more", None, 0, now + 20_000, 2_000_000);
    ac.store().apply(extra).unwrap();
    assert!(
        eventually(DEADLINE, || async {
            bc.store().record("one-more").unwrap().is_some()
        })
        .await
    );
    let after = ac.sync_stats().snapshot();
    let after_b = bc.sync_stats().snapshot();
    let moved = (after[4] - before[4])
        + (after[5] - before[5])
        + (after_b[4] - before_b[4])
        + (after_b[5] - before_b[5]);
    // Each copy is counted by its sender and its receiver, and both nodes may run a session at
    // the same moment: one record crosses at most twice.
    assert!(moved <= 4, "about one record exchanged, not {moved}");
    let bytes = (after[2] - before[2])
        + (after[3] - before[3])
        + (after_b[2] - before_b[2])
        + (after_b[3] - before_b[3]);
    assert!(
        bytes < 8 * 1024,
        "{bytes} bytes to settle one record among 10,000"
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interrupted_transfer_resumes_without_fetching_verified_chunks_again() {
    let source = TestNode::start(vec![]).await;
    let chunks = 160;
    let bytes = data(chunks * CHUNK_SIZE, 15);
    let record = {
        let store = source.client.store().clone();
        let b = bytes.clone();
        tokio::task::spawn_blocking(move || store.put("large", std::io::Cursor::new(b)).unwrap())
            .await
            .unwrap()
    };
    let cid = record.cid.unwrap();
    let fetcher = TestNode::start(vec![source.addr.clone()]).await;
    // Stop the fetcher once some, but not all, chunks are on its disk.
    let present = |store: &dfs::store::Store| {
        let list = store.chunk_list(&cid).ok().flatten().unwrap_or_default();
        list.iter().filter(|h| store.has_chunk(h)).count()
    };
    assert!(eventually(DEADLINE, || async { present(fetcher.client.store()) >= 4 }).await);
    let (dir, bootstrap) = fetcher.stop().await;
    let before = {
        let author = libp2p::identity::Keypair::generate_ed25519();
        let mut tries = 0;
        let store = loop {
            match dfs::store::Store::open(&dir.path().join("store"), author.clone()) {
                Ok(s) => break s,
                Err(e) if tries < 200 => {
                    tries += 1;
                    tracing::debug!(error = %e, "store still held; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("cannot reopen the store: {e}"),
            }
        };
        present(&store)
    };
    assert!(
        before < chunks,
        "the transfer was interrupted before it finished"
    );
    let fetcher = TestNode::start_with(dir, bootstrap).await;
    assert!(fetcher.client.wait_for("large", false, DEADLINE).await);
    let again = fetcher.client.chunks_fetched();
    assert!(
        again as usize <= chunks - before,
        "{again} chunks fetched after the restart, but {before} of {chunks} were already verified"
    );
    assert_eq!(get(&fetcher.client, "large").await.unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_in_progress_survives_an_overwrite_and_a_delete() {
    use futures::StreamExt;
    let node = TestNode::start(vec![]).await;
    let old = data(6 * CHUNK_SIZE, 16);
    put(&node.client, "movie", old.clone()).await;
    let download = node.client.get("movie".into(), None).await.unwrap();
    let mut body = download.body;
    let mut got = body.next().await.unwrap().unwrap().to_vec();
    // The key changes under the reader: its chunks stay pinned until it is done.
    put(&node.client, "movie", data(CHUNK_SIZE, 17)).await;
    node.client.delete("movie".into()).await.unwrap();
    while let Some(part) = body.next().await {
        got.extend_from_slice(&part.expect("the download keeps streaming"));
    }
    assert_eq!(got, old);
    drop(body);
    // Once the reader is gone and history past retention, nothing of the old content is left
    // after a sweep.
    let store = node.client.store().clone();
    tokio::task::spawn_blocking(move || store.expire_history(0, 0).and_then(|_| store.gc()))
        .await
        .unwrap()
        .unwrap();
    let cid = dfs::record::content_id(
        old.len() as u64,
        &old.chunks(CHUNK_SIZE)
            .map(dfs::record::Hash::of)
            .collect::<Vec<_>>(),
    );
    assert!(node.client.store().chunk_list(&cid).unwrap().is_none());
}

/// A peer that opens every chunk stream it may (8), asks for 64 chunks on each and never reads
/// a reply cannot starve the node's honest peers: read-ahead stops at half the serving buffers,
/// so an honest node still replicates a file from the victim.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_never_reads_does_not_starve_honest_fetches() {
    use dfs::protocols::chunks;
    use dfs::record::Hash;
    use futures::StreamExt;
    let victim = TestNode::start(vec![]).await;
    let bytes = data(40 * CHUNK_SIZE, 31);
    put(&victim.client, "shared", bytes.clone()).await;
    let hashes: Vec<Hash> = bytes.chunks(CHUNK_SIZE).map(Hash::of).collect();

    let mut swarm = stream_swarm();
    let control = swarm.behaviour().new_control();
    swarm.dial(victim.addr.clone()).unwrap();
    // One connection, established before any stream is opened (else libp2p-stream dials a
    // second one of its own).
    tokio::time::timeout(DEADLINE, async {
        while !matches!(
            swarm.select_next_some().await,
            libp2p::swarm::SwarmEvent::ConnectionEstablished { .. }
        ) {}
    })
    .await
    .expect("the attacker connects");
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let victim_id = victim.client.peer_id();
    let mut held = Vec::new();
    for i in 0..chunks::MAX_STREAMS_PER_PEER {
        let frame: Vec<Hash> = (0..chunks::MAX_HASHES_PER_REQUEST)
            .map(|j| hashes[(i * 7 + j) % hashes.len()])
            .collect();
        // A stream opened while the victim's acceptor is busy may be dropped: open another.
        let stream = tokio::time::timeout(DEADLINE, async {
            loop {
                if let Ok(mut s) = control
                    .clone()
                    .open_stream(victim_id, chunks::PROTOCOL)
                    .await
                {
                    if chunks::write_request(&mut s, &frame).await.is_ok() {
                        break s;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the attacker opens its streams");
        held.push(stream); // never read
    }
    // Let the victim fill what it will for the stalled streams.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let honest = TestNode::start(vec![victim.addr.clone()]).await;
    let started = std::time::Instant::now();
    assert!(
        honest
            .client
            .wait_for("shared", false, Duration::from_secs(20))
            .await,
        "the honest node replicates despite the stalled streams"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "well before the stalled streams time out: {:?}",
        started.elapsed()
    );
    assert_eq!(get(&honest.client, "shared").await.unwrap(), bytes);
    drop(held);
    driver.abort();
}

/// Records whose content nobody serves do not hold up content that is served: looking for a
/// chunk list takes no transfer slot (and gives its lookup permit back between looks), and
/// content nobody could serve waits in back-off before it is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_nobody_serves_does_not_starve_replication() {
    let honest = TestNode::start(vec![]).await;
    let victim = TestNode::start(vec![honest.addr.clone()]).await;
    assert!(eventually(DEADLINE, || async { victim.peer_count().await == 1 }).await);
    // Records by a member whose content nobody has (a writer no node runs: records signed
    // with a running node's own key would be another node using its identity).
    let owner = member_key(&honest, &victim).await;
    let now = dfs::record::wall_ms() << 16;
    let ghosts: Vec<Record> = (0..200u64)
        .map(|i| {
            let cid = Some(dfs::record::Hash::of(&i.to_be_bytes()));
            let size = 5 * CHUNK_SIZE as u64;
            signed(
                &owner,
                &format!("ghost-{i}"),
                cid,
                size,
                now + i,
                1_000_000 + i,
            )
        })
        .collect();
    let store = victim.client.store().clone();
    tokio::task::spawn_blocking(move || store.apply_batch(ghosts).unwrap())
        .await
        .unwrap();
    // Let the periodic retry (1 s in tests) start looking for all of them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = std::time::Instant::now();
    put(&honest.client, "real", data(CHUNK_SIZE, 41)).await;
    assert!(
        victim
            .client
            .wait_for("real", false, Duration::from_secs(20))
            .await
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "an honest one-chunk file replicates in under 2 s behind 200 unservable records: {:?}",
        started.elapsed()
    );
}

/// The chunk list of a fake file: hash i of `seed` is BLAKE3(seed || i), made page by page so
/// the test peer never holds a whole list.
fn fake_hash(seed: u64, i: u64) -> dfs::record::Hash {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seed.to_be_bytes());
    b[8..].copy_from_slice(&i.to_be_bytes());
    dfs::record::Hash::of(&b)
}

fn fake_cid(seed: u64, size: u64) -> dfs::record::Hash {
    let n = dfs::record::chunk_count(size);
    let list: Vec<_> = (0..n).map(|i| fake_hash(seed, i)).collect();
    dfs::record::content_id(size, &list)
}

/// Records by a member that claim 1 TiB files whose chunk lists a peer serves but whose chunks
/// nobody does (issue 13, chunk-list amplification): the lists stored for content still
/// arriving stay within their budget, large lists are fetched one at a time, and an honest
/// put still reaches the victim within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_claiming_huge_files_stay_within_the_list_budget() {
    use dfs::protocols::fetch;
    use futures::StreamExt;
    let honest = TestNode::start(vec![]).await;
    let victim = TestNode::start(vec![honest.addr.clone()]).await;
    assert!(eventually(DEADLINE, || async { victim.peer_count().await == 1 }).await);
    let owner = member_key(&honest, &victim).await;
    let size = dfs::record::MAX_FILE_SIZE;
    let n = dfs::record::chunk_count(size);
    let seeds: Vec<u64> = (1..=10).collect();
    let cids: Vec<_> = seeds.iter().map(|s| (*s, fake_cid(*s, size))).collect();
    let now = dfs::record::wall_ms() << 16;
    let records: Vec<Record> = cids
        .iter()
        .map(|(s, cid)| {
            signed(
                &owner,
                &format!("huge-{s}"),
                Some(*cid),
                size,
                now + s,
                1_000_000 + s,
            )
        })
        .collect();

    // A peer that serves every page of those lists, and no chunk.
    let mut server = common::peer_swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
        fetch::behaviour()
    });
    server.dial(victim.addr.clone()).unwrap();
    let pages = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let served = pages.clone();
    let serving = tokio::spawn(async move {
        loop {
            if let libp2p::swarm::SwarmEvent::Behaviour(
                libp2p::request_response::Event::Message {
                    message:
                        libp2p::request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                },
            ) = server.select_next_some().await
            {
                let answer = match request {
                    fetch::Request::Manifest { cid, offset } => {
                        match cids.iter().find(|(_, c)| *c == cid) {
                            Some((seed, _)) if offset < n => {
                                served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let end = (offset + fetch::MANIFEST_PAGE as u64).min(n);
                                fetch::Response::Manifest {
                                    total: n,
                                    offset,
                                    chunks: (offset..end).map(|i| fake_hash(*seed, i)).collect(),
                                }
                            }
                            _ => fetch::Response::NotFound,
                        }
                    }
                    _ => fetch::Response::NotFound,
                };
                let _ = server.behaviour_mut().send_response(channel, answer);
            }
        }
    });
    assert!(eventually(DEADLINE, || async { victim.peer_count().await == 2 }).await);
    let store = victim.client.store().clone();
    tokio::task::spawn_blocking(move || store.apply_batch(records).unwrap())
        .await
        .unwrap();
    // The victim fetches the lists (the retry tick is 1 s in tests), one large list at a time.
    // Once the first is in, the honest put competes with the fetch of the next.
    let store = victim.client.store().clone();
    assert!(
        eventually(Duration::from_secs(60), || async {
            // A list of content still arriving is counted once it is stored.
            store.pending_hashes().unwrap() >= n
        })
        .await,
        "a list was fetched and stored: {} pages served",
        pages.load(std::sync::atomic::Ordering::Relaxed)
    );
    // Starved, the put would wait behind every list (tens of seconds); it has 10 s.
    put(&honest.client, "honest", data(CHUNK_SIZE, 5)).await;
    assert!(
        victim
            .client
            .wait_for("honest", false, Duration::from_secs(10))
            .await,
        "an honest put did not reach the victim within 10 s during the attack"
    );
    // Listing stays quick: it reads no chunk list (reading them would take seconds).
    let listed = tokio::time::timeout(Duration::from_secs(3), victim.client.list())
        .await
        .expect("ls answers within 3 s during the attack")
        .unwrap();
    assert!(listed.len() >= 11);
    assert!(store.pending_hashes().unwrap() <= dfs::store::MAX_PENDING_HASHES);
    serving.abort();
}

/// The key of a writer that `owner` invites and no node runs, once `other` knows its grant.
async fn member_key(owner: &TestNode, other: &TestNode) -> libp2p::identity::Keypair {
    let ticket = owner.client.invite(false).await.unwrap();
    let writer = ticket.key.public().to_peer_id();
    assert!(
        eventually(DEADLINE, || async {
            other
                .client
                .members()
                .iter()
                .any(|m| m.peer_id == writer.to_base58())
        })
        .await,
        "the grant reaches the other node"
    );
    ticket.key
}

/// A source that was unreachable when a transfer failed is used again as soon as it is back,
/// not after the failed transfer's back-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_returning_source_is_used_again_at_once() {
    let a = TestNode::start(vec![]).await;
    let b = TestNode::start(vec![a.addr.clone()]).await;
    assert!(eventually(DEADLINE, || async { b.peer_count().await == 1 }).await);
    let a_id = a.client.peer_id();
    b.client.block(a_id, true).await.unwrap();
    assert!(eventually(DEADLINE, || async { b.peer_count().await == 0 }).await);
    // B learns a record of A's whose content only A holds, and fails to fetch it.
    let record = put(&a.client, "f", data(100_000, 3)).await;
    b.client.store().apply(record).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            b.client.metrics().transfers_failed.get() > 0
        })
        .await,
        "the transfer fails while A is unreachable"
    );
    b.client.block(a_id, false).await.unwrap();
    let back = std::time::Instant::now();
    let _ = b.client.dial(a.addr.clone()).await; // unless its redial got there first
    assert!(
        b.client.wait_for("f", false, Duration::from_secs(20)).await,
        "B gets the content"
    );
    let took = back.elapsed();
    eprintln!("a returning source was used again {took:?} after it came back");
    assert!(took < Duration::from_secs(2), "{took:?}");
}
