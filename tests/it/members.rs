//! Members' words, checked (nodes in one process on 127.0.0.1): a member is one laptop, stolen,
//! buggy or restored from a backup, so what it says is acted on only as far as it can be
//! checked.
//!
//! - Placement: members that claim (`has`: complete, keeps) to keep files they no longer hold
//!   cannot make the others drop their copies: before a copy is dropped the placed members
//!   prove possession, and the ones that cannot are reported.
//! - Causal contexts: a record whose context claims versions not yet written cannot make
//!   later honest writes invisible.

use crate::common;

use std::time::Duration;

use common::{data, eventually, node_with, TestNode};
use dfs::placement::Replicas;
use dfs::record::{ContentId, Hash};

fn tweak(replicas: Option<Replicas>, capacity: u64) -> impl FnOnce(&mut dfs::node::Config) {
    move |c| {
        c.replicas = replicas;
        c.capacity = capacity;
        // Repair passes run when this test asks for them (and when members come and go).
        c.repair_interval = Duration::from_secs(3600);
        c.repair_after = Duration::from_secs(3600);
        c.cache_size = 0;
        c.scrub_interval = Duration::ZERO;
    }
}

/// Whether `node` holds the whole content of `cid`.
fn holds(node: &TestNode, cid: &ContentId) -> bool {
    node.client
        .store()
        .held()
        .unwrap()
        .iter()
        .any(|(c, _)| c == cid)
}

/// Deletes the chunk files of `cid` on `node`, whose index still says it holds them: a member
/// that lost its data (a disk restored from an old backup) or lies about it.
fn lose(node: &TestNode, cid: &ContentId) {
    let store = node.client.store();
    let list: Vec<Hash> = store.chunk_list(cid).unwrap().expect("a chunk list");
    for h in list {
        let path = store
            .dir()
            .join("chunks")
            .join(format!("{:02x}", h.0[0]))
            .join(h.to_hex());
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_that_keep_nothing_cannot_make_the_others_drop_their_copies() {
    let tib = dfs::placement::DEFAULT_CAPACITY;
    let owner = node_with(tweak(Some(Replicas::Count(2)), tib), None, vec![]).await;
    let boot = vec![owner.addr.clone()];
    let writer = node_with(tweak(None, tib), Some(&owner), boot.clone()).await;
    // Two members that claim a thousand times the others' room: placed for every file.
    let liar1 = node_with(tweak(None, 1024 * tib), Some(&owner), boot.clone()).await;
    let liar2 = node_with(tweak(None, 1024 * tib), Some(&owner), boot).await;
    let all = [owner, writer, liar1, liar2];
    assert!(
        common::fully_connected(&all, Duration::from_secs(30)).await,
        "4 members connect"
    );
    let [owner, writer, liar1, liar2] = &all;
    // Each knows the others' capacities (peers topic) before the files are placed.
    let placed_on_liars = |cid: &ContentId| {
        [owner, writer].iter().all(|n| {
            let placed = n.client.placed(cid);
            placed.contains(&liar1.client.peer_id()) && placed.contains(&liar2.client.peer_id())
        })
    };
    let size = 300 * 1024;
    let put = |i: u64| async move {
        common::put(&writer.client, &format!("f/{i}"), data(size, i))
            .await
            .cid
            .unwrap()
    };

    // While they hold the files, their proofs pass and the writer hands its copies off.
    let honest: Vec<ContentId> = vec![put(1).await, put(2).await];
    let settled = eventually(Duration::from_secs(30), || async {
        honest
            .iter()
            .all(|c| placed_on_liars(c) && holds(liar1, c) && holds(liar2, c))
    })
    .await;
    assert!(settled, "the two big members hold the first files");
    let report = writer.client.repair_now().await.unwrap();
    assert_eq!(report.dropped, 2, "{report:?}");
    assert!(honest.iter().all(|c| !holds(writer, c)));

    // Then they lose what they hold, and still say they keep it.
    let files: Vec<ContentId> = vec![put(3).await, put(4).await, put(5).await];
    let fetched = eventually(Duration::from_secs(30), || async {
        files
            .iter()
            .all(|c| placed_on_liars(c) && holds(liar1, c) && holds(liar2, c))
    })
    .await;
    assert!(fetched, "the two big members fetch the new files");
    for c in &files {
        lose(liar1, c);
        lose(liar2, c);
    }
    let report = writer.client.repair_now().await.unwrap();
    assert_eq!(
        report.dropped, 0,
        "no copy dropped on unproven words: {report:?}"
    );
    assert!(
        report.under_replicated >= files.len(),
        "the files count as under-replicated: {report:?}"
    );
    for (i, c) in files.iter().enumerate() {
        assert!(holds(writer, c), "the writer keeps f/{}", i + 3);
        let got = common::get(&owner.client, &format!("f/{}", i + 3)).await;
        assert_eq!(
            got,
            Some(data(size, i as u64 + 3)),
            "a reader still gets it"
        );
    }
    // The members that failed are reported.
    let members = writer.client.members();
    for liar in [liar1, liar2] {
        let id = liar.client.peer_id().to_string();
        let m = members.iter().find(|m| m.peer_id == id).expect("listed");
        assert!(m.failed_proofs >= 1, "{m:?}");
    }
    // Nor does `dfs stat` count them as holders.
    let h = writer.client.holders("f/3").await.unwrap();
    for liar in [liar1, liar2] {
        assert!(
            !h.peers.contains(&liar.client.peer_id()),
            "only proven holders: {:?}",
            h.peers
        );
    }
    assert!(h.peers.contains(&writer.client.peer_id()));
    let text = writer.client.metrics_text().await.unwrap();
    let failed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("dfs_failed_proofs_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        failed >= 2 * files.len() as u64,
        "{failed} failed proofs counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_context_that_claims_versions_not_yet_written_does_not_hide_later_writes() {
    let owner = TestNode::start(vec![]).await;
    let boot = vec![owner.addr.clone()];
    let writer = node_with(|_| {}, Some(&owner), boot.clone()).await;
    let liar = node_with(|_| {}, Some(&owner), boot).await;
    let all = [owner, writer, liar];
    assert!(
        common::fully_connected(&all, Duration::from_secs(30)).await,
        "3 members connect"
    );
    let [owner, writer, liar] = &all;
    // The liar's record of "k" (content it holds), stamped 5 minutes ahead, claims to have
    // seen every version of the owner and of the writer there will ever be.
    let bait = common::put(&liar.client, "bait", data(1000, 7)).await;
    let mut seen = vec![
        (owner.client.peer_id().to_bytes(), u64::MAX),
        (writer.client.peer_id().to_bytes(), u64::MAX),
    ];
    seen.sort();
    let ahead = dfs::clock::system_ms() + 5 * 60 * 1000;
    let mut forged = common::signed(
        &common::identity(liar.dir.path()),
        "k",
        bait.cid,
        bait.size,
        ahead << 16,
        1_000_000,
    );
    forged.seen = seen
        .into_iter()
        .map(|(a, s)| dfs::record::Dot(a, s))
        .collect();
    forged.sign(&common::identity(liar.dir.path()));
    for n in [owner, writer] {
        let applied = n.client.store().apply(forged.clone()).unwrap();
        assert!(
            matches!(applied, dfs::store::Applied::Updated { .. }),
            "{applied:?}"
        );
    }
    // An honest overwrite after it is current on every node; the lie stays a conflict.
    let honest = common::put(&writer.client, "k", data(2000, 8)).await;
    for n in [owner, writer] {
        let current = eventually(Duration::from_secs(20), || async {
            n.client
                .store()
                .stat("k")
                .unwrap()
                .is_some_and(|s| s.record.version() == honest.version())
        })
        .await;
        assert!(
            current,
            "the honest write is current on {}",
            n.client.peer_id()
        );
        assert_eq!(
            common::get(&n.client, "k").await,
            Some(data(2000, 8)),
            "and it is what get returns"
        );
    }
    // And so are the writes after it, by anyone.
    let again = common::put(&owner.client, "k", data(3000, 9)).await;
    let current = eventually(Duration::from_secs(20), || async {
        writer
            .client
            .store()
            .stat("k")
            .unwrap()
            .is_some_and(|s| s.record.version() == again.version())
    })
    .await;
    assert!(current, "the owner's later write is current on the writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_members_an_hour_ahead_move_neither_an_honest_clock_nor_its_writes() {
    let hour = 3_600_000;
    let owner = TestNode::start(vec![]).await;
    let boot = vec![owner.addr.clone()];
    let x = node_with(|_| {}, Some(&owner), boot.clone()).await;
    let y = node_with(|_| {}, Some(&owner), boot.clone()).await;
    let fast = |c: &mut dfs::node::Config| c.wall = dfs::clock::Wall::skewed(hour);
    let l1 = node_with(fast, Some(&owner), boot.clone()).await;
    let l2 = node_with(fast, Some(&owner), boot.clone()).await;
    let mut nodes = vec![owner, l1, l2, x, y];
    assert!(
        common::fully_connected(&nodes, Duration::from_secs(30)).await,
        "5 members connect"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            nodes[0].client.clock_offsets().len() == 4
        })
        .await,
        "the owner measures every member"
    );
    // The honest members leave: the owner is alone with the two fast ones.
    let y = nodes.pop().unwrap().stop().await;
    let x = nodes.pop().unwrap().stop().await;
    let owner = &nodes[0];
    assert!(
        eventually(Duration::from_secs(30), || async {
            owner.client.clock_offsets().len() == 2
        })
        .await,
        "the owner forgets the members that left"
    );
    // Its writes are accepted and carry the real time.
    let r = common::put(&owner.client, "k", data(1000, 1)).await;
    let off = dfs::clock::physical_ms(r.time) as i64 - dfs::clock::system_ms() as i64;
    assert!(
        off.abs() < 1000,
        "an honest version {off} ms from real time"
    );
    // A record stamped by the fast members' clocks is refused for now, so the owner's clock
    // does not follow it.
    let from_l1 = common::signed(
        &common::identity(nodes[1].dir.path()),
        "fast",
        None,
        0,
        (dfs::clock::system_ms() + hour as u64) << 16,
        1_000_000,
    );
    assert!(
        matches!(
            owner.client.store().apply(from_l1).unwrap(),
            dfs::store::Applied::Ahead
        ),
        "a record an hour ahead does not count"
    );
    let r = common::put(&owner.client, "k2", data(1000, 3)).await;
    let off = dfs::clock::physical_ms(r.time) as i64 - dfs::clock::system_ms() as i64;
    assert!(off.abs() < 1000, "still {off} ms from real time");
    // A writer that joins later accepts the owner's writes.
    let later = node_with(|_| {}, Some(owner), vec![owner.addr.clone()]).await;
    assert!(
        later
            .client
            .wait_for("k2", false, Duration::from_secs(30))
            .await,
        "the newcomer takes the owner's writes"
    );
    assert_eq!(common::get(&later.client, "k2").await, Some(data(1000, 3)));
    drop((x, y));
}

/// Waits until every node's heads of `key` are exactly `versions` (empty: no such key).
async fn heads_are(nodes: &[&TestNode], key: &str, versions: &[dfs::record::VersionId]) -> bool {
    eventually(Duration::from_secs(30), || async {
        nodes.iter().all(|n| {
            let heads: Vec<_> = match n.client.store().stat(key).unwrap() {
                Some(s) => std::iter::once(s.record.version())
                    .chain(s.conflicts.iter().map(|c| c.version()))
                    .collect(),
                None => Vec::new(),
            };
            heads.len() == versions.len() && versions.iter().all(|v| heads.contains(v))
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_records_under_one_number_resolve_the_same_way_on_every_node() {
    // (For a revoked author the second is refused instead: `tests/trust.rs`.)
    let sync_fast = |c: &mut dfs::node::Config| c.sync_interval = Duration::from_secs(1);
    let a = node_with(sync_fast, None, vec![]).await;
    let boot = vec![a.addr.clone()];
    let b = node_with(sync_fast, Some(&a), boot.clone()).await;
    let liar = node_with(sync_fast, Some(&a), boot).await;
    // The liar's node stops: its key goes on signing elsewhere.
    let key = common::identity(liar.dir.path());
    let liar_id = liar.client.peer_id().to_string();
    let gone = liar.stop().await;
    let all = [a, b];
    assert!(
        common::fully_connected(&all, Duration::from_secs(30)).await,
        "2 members connect"
    );
    let [a, b] = &all;
    let time = dfs::clock::system_ms() << 16;
    let one = |name: &str, seq: u64, n: u8| {
        let cid = dfs::record::content_id(1, &[Hash::of(&[n])]);
        common::signed(&key, name, Some(cid), 1, time, seq)
    };
    // One key: two versions under number 1,000,000, one pushed to each node.
    let (v1, v2) = (one("k", 1_000_000, 1), one("k", 1_000_000, 2));
    // And two keys under number 1,000,001.
    let (w1, w2) = (one("x", 1_000_001, 3), one("y", 1_000_001, 4));
    // Apart while each takes its records, as two nodes a liar pushes to at once.
    let b_id = b.client.peer_id();
    a.client.block(b_id, true).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.peer_count().await == 0
        })
        .await
    );
    for (n, records) in [(a, [&v1, &w1]), (b, [&v2, &w2])] {
        for r in records {
            let applied = n.client.store().apply(r.clone()).unwrap();
            assert!(
                matches!(applied, dfs::store::Applied::Updated { .. }),
                "{applied:?}"
            );
        }
    }
    a.client.block(b_id, false).await.unwrap();
    let _ = a.client.dial(b.addr.clone()).await;
    // Both count as versions on every node (the author may write), whatever the order.
    assert!(
        heads_are(&[a, b], "k", &[v1.version(), v2.version()]).await,
        "both nodes hold both versions of k (a conflict)"
    );
    assert!(heads_are(&[a, b], "x", &[w1.version()]).await);
    assert!(heads_are(&[a, b], "y", &[w2.version()]).await);
    // The author is flagged for the admins.
    for n in [a, b] {
        let m = n.client.members();
        let m = m.iter().find(|m| m.peer_id == liar_id).expect("listed");
        assert!(m.equivocated, "{m:?}");
    }
    drop(gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_after_a_jump_in_numbers_lets_no_back_dated_record_in() {
    let owner = TestNode::start(vec![]).await;
    let boot = vec![owner.addr.clone()];
    let writer = node_with(|_| {}, Some(&owner), boot.clone()).await;
    let liar = node_with(|_| {}, Some(&owner), boot).await;
    let key = common::identity(liar.dir.path());
    let liar_id = liar.client.peer_id();
    let _gone = liar.stop().await;
    let all = [owner, writer];
    assert!(common::fully_connected(&all, Duration::from_secs(30)).await);
    let [owner, writer] = &all;
    let honest = common::put(&writer.client, "b-file", data(1000, 1)).await;
    assert!(
        owner
            .client
            .wait_for("b-file", false, Duration::from_secs(20))
            .await
    );
    // Before it is revoked, the liar jumps to number 1,000,000.
    let time = dfs::clock::system_ms() << 16;
    let jump = common::signed(&key, "jump", None, 0, time, 1_000_000);
    for n in [owner, writer] {
        let applied = n.client.store().apply(jump.clone()).unwrap();
        assert!(
            matches!(applied, dfs::store::Applied::Updated { .. }),
            "{applied:?}"
        );
    }
    let grant = owner
        .client
        .allow(liar_id, dfs::trust::Role::Reader)
        .await
        .unwrap();
    assert_eq!(grant.cutoff, 1_000_000);
    assert!(
        eventually(Duration::from_secs(20), || async {
            writer.client.role_of(&liar_id) == Some(dfs::trust::Role::Reader)
        })
        .await,
        "the revocation spreads"
    );
    // Then it signs records numbered below the cutoff, dated before the revocation: a
    // tombstone of the writer's file and a write.
    let mut tomb = common::signed(&key, "b-file", None, 0, time, 3);
    tomb.seen = vec![dfs::record::Dot(
        writer.client.peer_id().to_bytes(),
        honest.seq,
    )];
    tomb.sign(&key);
    let back = common::signed(&key, "new", None, 0, time, 4);
    let later = node_with(|_| {}, Some(owner), vec![owner.addr.clone()]).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            later.client.role_of(&liar_id) == Some(dfs::trust::Role::Reader)
        })
        .await,
        "a node that joins later learns the revocation"
    );
    for n in [owner, writer, &later] {
        for r in [&tomb, &back] {
            let applied = n.client.store().apply(r.clone()).unwrap();
            assert_eq!(
                applied,
                dfs::store::Applied::Refused,
                "{} on {}",
                r.key,
                n.client.peer_id()
            );
        }
        assert!(
            n.client
                .wait_for("b-file", false, Duration::from_secs(20))
                .await
        );
    }
    // The record it held before the revocation still counts.
    assert!(owner.client.store().stat("jump").unwrap().is_some());
}

/// A member's 10,000 records whose chunk lists nobody serves (the one peer asked holds the
/// requests unanswered) take no more than their share of the victim's transfers and lookups:
/// an honest 1 MiB put still reaches the victim at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_whose_content_nobody_serves_do_not_hold_up_honest_files() {
    use dfs::protocols::fetch;
    use futures::StreamExt;
    let victim = TestNode::start(vec![]).await;
    let honest = node_with(|_| {}, Some(&victim), vec![victim.addr.clone()]).await;
    let ticket = victim.client.invite(false).await.unwrap();
    let key = ticket.key;
    let nodes = [victim, honest];
    assert!(common::fully_connected(&nodes, Duration::from_secs(30)).await);
    let [victim, honest] = &nodes;
    // A peer that takes every request and answers none.
    let mut server = common::peer_swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
        fetch::behaviour()
    });
    server.dial(victim.addr.clone()).unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = asked.clone();
    let serving = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let libp2p::swarm::SwarmEvent::Behaviour(
                libp2p::request_response::Event::Message {
                    message: libp2p::request_response::Message::Request { channel, .. },
                    ..
                },
            ) = server.select_next_some().await
            {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                held.push(channel);
            }
        }
    });
    let time = dfs::clock::system_ms() << 16;
    let records: Vec<dfs::record::Record> = (0..10_000u64)
        .map(|i| {
            let cid = dfs::record::content_id(1 << 20, &[Hash::of(&i.to_be_bytes())]);
            common::signed(
                &key,
                &format!("junk/{i}"),
                Some(cid),
                1 << 20,
                time + i,
                1_000_000 + i,
            )
        })
        .collect();
    let store = victim.client.store().clone();
    tokio::task::spawn_blocking(move || store.apply_batch(records).unwrap())
        .await
        .unwrap();
    // The victim takes them up (the retry tick is 1 s in tests) and asks the silent peer.
    assert!(
        eventually(Duration::from_secs(20), || async {
            asked.load(std::sync::atomic::Ordering::Relaxed) > 0
        })
        .await,
        "the silent peer is asked"
    );
    let running = victim.client.transfers().len();
    assert!(running <= 300, "{running} transfers at once");
    let started = std::time::Instant::now();
    common::put(&honest.client, "honest", data(1 << 20, 5)).await;
    assert!(
        victim
            .client
            .wait_for("honest", false, Duration::from_secs(20))
            .await
    );
    let took = started.elapsed();
    eprintln!("an honest 1 MiB put reached the victim in {took:?} beside 10,000 unservable records ({running} transfers)");
    assert!(took < Duration::from_secs(2), "an honest put took {took:?}");
    serving.abort();
}

/// An owner of a network that keeps 2 copies and two writers, equal capacities, connected.
async fn three_members_keeping_two_copies() -> [TestNode; 3] {
    let tib = dfs::placement::DEFAULT_CAPACITY;
    let owner = node_with(tweak(Some(Replicas::Count(2)), tib), None, vec![]).await;
    let boot = vec![owner.addr.clone()];
    let a = node_with(tweak(None, tib), Some(&owner), boot.clone()).await;
    let b = node_with(tweak(None, tib), Some(&owner), boot).await;
    let all = [owner, a, b];
    assert!(common::fully_connected(&all, Duration::from_secs(30)).await);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placed_holders_audit_each_other_and_report_a_lost_copy() {
    let all = three_members_keeping_two_copies().await;
    let [owner, a, b] = &all;
    let (a_id, b_id) = (a.client.peer_id(), b.client.peer_id());
    // A file the owner writes and that is placed on a and b.
    let size = 200 * 1024;
    let mut picked = None;
    for i in 0..64u64 {
        let bytes = data(size, 100 + i);
        let cid = dfs::record::content_id(size as u64, &[Hash::of(&bytes)]);
        let placed = owner.client.placed(&cid);
        if placed.contains(&a_id) && placed.contains(&b_id) {
            picked = Some((i, bytes, cid));
            break;
        }
    }
    let (i, bytes, cid) = picked.expect("some file is placed on a and b");
    common::put(&owner.client, &format!("p/{i}"), bytes).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            holds(a, &cid) && holds(b, &cid)
        })
        .await,
        "a and b fetch it"
    );
    let report = a.client.repair_now().await.unwrap();
    assert_eq!(report.under_replicated, 0, "{report:?}");
    // b loses its copy; a's next pass audits it.
    lose(b, &cid);
    let report = a.client.repair_now().await.unwrap();
    assert_eq!(report.under_replicated, 1, "{report:?}");
    let members = a.client.members();
    let m = members
        .iter()
        .find(|m| m.peer_id == b_id.to_string())
        .expect("listed");
    assert!(m.failed_proofs >= 1, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_drops_what_it_read_once_the_placed_members_prove_they_keep_it() {
    let tib = dfs::placement::DEFAULT_CAPACITY;
    let all = three_members_keeping_two_copies().await;
    let [owner, a, b] = &all;
    let r = common::put(&owner.client, "read-me", data(300 * 1024, 77)).await;
    let cid = r.cid.unwrap();
    let placed = owner.client.placed(&cid);
    let holders: Vec<&TestNode> = [owner, a, b]
        .into_iter()
        .filter(|n| placed.contains(&n.client.peer_id()))
        .collect();
    assert!(
        eventually(Duration::from_secs(30), || async {
            holders.iter().all(|n| holds(n, &cid))
        })
        .await,
        "the placed members hold it"
    );
    // A reader (no grant) with no room for a cache reads it, then drops it on proofs.
    let reader = node_with(tweak(None, tib), None, vec![owner.addr.clone()]).await;
    assert_eq!(reader.client.role(), None, "a reader");
    assert_eq!(
        common::get(&reader.client, "read-me").await,
        Some(data(300 * 1024, 77))
    );
    // It held the copy it read (or holds it still) and drops it: a dropped copy is counted.
    let dropped = eventually(Duration::from_secs(30), || async {
        let _ = reader.client.repair_now().await;
        !holds(&reader, &cid) && reader.client.metrics().dropped_copies.get() >= 1
    })
    .await;
    assert!(
        dropped,
        "the reader drops its copy once placed members prove theirs"
    );
}
