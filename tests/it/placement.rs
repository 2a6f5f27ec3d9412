//! Partial replication end to end (nodes in one process on 127.0.0.1): a network created with
//! `--replicas 3` keeps each file's content on exactly the 3 members placed for it, moves little
//! when a member joins, serves every file to a reader, and repairs copies lost with their
//! holders once `--repair-after` has passed.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{data, eventually, node_with, TestNode};
use dfs::placement::{self, Candidate, Replicas};
use dfs::record::ContentId;
use libp2p::PeerId;

const R: usize = 3;

fn tweak(
    replicas: Option<Replicas>,
    repair_after: Duration,
) -> impl FnOnce(&mut dfs::node::Config) {
    move |c| {
        c.replicas = replicas;
        c.repair_after = repair_after;
        c.repair_interval = Duration::from_secs(1);
        c.cache_size = 0;
        // Twenty nodes in one process: calmer timers than the other tests'.
        c.announce_interval = Duration::from_secs(2);
        c.sync_interval = Duration::from_secs(3);
    }
}

/// Which nodes hold each content id (complete, verified), by peer id.
fn holders(nodes: &[&TestNode]) -> HashMap<ContentId, HashSet<PeerId>> {
    let mut out: HashMap<ContentId, HashSet<PeerId>> = HashMap::new();
    for n in nodes {
        for (cid, _) in n.client.store().held().unwrap() {
            out.entry(cid).or_default().insert(n.client.peer_id());
        }
    }
    out
}

/// The placement of `cid` over `nodes`, all up, equal capacities.
fn expected(cid: &ContentId, nodes: &[&TestNode]) -> HashSet<PeerId> {
    let candidates: Vec<Candidate> = nodes
        .iter()
        .map(|n| Candidate::new(n.client.peer_id(), placement::DEFAULT_CAPACITY))
        .collect();
    placement::place(cid, &candidates, R).into_iter().collect()
}

/// True when every file is held by exactly its placed nodes.
fn at_rest(nodes: &[&TestNode], cids: &[ContentId]) -> bool {
    let held = holders(nodes);
    cids.iter()
        .all(|cid| held.get(cid).is_some_and(|h| *h == expected(cid, nodes)))
}

/// What is wrong, for a failure's message: each misplaced file's holders and placed nodes (by
/// index), and whether the placed nodes that lack it have its record and a transfer.
fn describe(nodes: &[&TestNode], cids: &[ContentId]) -> String {
    let held = holders(nodes);
    let index = |p: &PeerId| nodes.iter().position(|n| n.client.peer_id() == *p).unwrap();
    let wrong: Vec<&ContentId> = cids
        .iter()
        .filter(|cid| held.get(*cid).is_none_or(|h| *h != expected(cid, nodes)))
        .collect();
    let detail: Vec<String> = wrong
        .iter()
        .take(5)
        .map(|cid| {
            let mut h: Vec<usize> = held.get(*cid).into_iter().flatten().map(index).collect();
            h.sort();
            let mut p: Vec<usize> = expected(cid, nodes).iter().map(index).collect();
            p.sort();
            let lacking: Vec<String> = p
                .iter()
                .filter(|i| !h.contains(i))
                .map(|i| {
                    let n = nodes[*i];
                    let records = n.client.store().list().unwrap();
                    let has_record = records.iter().any(|s| s.record.cid == Some(**cid));
                    let transfer = n
                        .client
                        .transfers()
                        .iter()
                        .find(|t| t.cid == **cid)
                        .map(|t| t.phase);
                    format!("node {i}: record {has_record}, transfer {transfer:?}")
                })
                .collect();
            format!("{cid}: held by {h:?}, placed on {p:?}; {lacking:?}")
        })
        .collect();
    format!("{} files off, e.g. {detail:#?}", wrong.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_members_keep_three_copies_a_join_moves_little_and_a_reader_gets_every_file() {
    let far = Duration::from_secs(600);
    let owner = node_with(tweak(Some(Replicas::Count(3)), far), None, vec![]).await;
    let mut members = vec![owner];
    for _ in 1..20 {
        let boot = vec![members[0].addr.clone()];
        let n = node_with(tweak(None, far), Some(&members[0]), boot).await;
        members.push(n);
    }
    assert!(
        common::fully_connected(&members, Duration::from_secs(60)).await,
        "20 members connect"
    );
    // 200 files of 20 KiB (one chunk file each), written by ten different members.
    let size = 20 * 1024;
    let mut cids = Vec::new();
    for i in 0..200u64 {
        let writer = &members[(i % 10) as usize];
        let r = common::put(&writer.client, &format!("f/{i}"), data(size, i)).await;
        cids.push(r.cid.unwrap());
    }
    let all: Vec<&TestNode> = members.iter().collect();
    let rested = eventually(Duration::from_secs(120), || async { at_rest(&all, &cids) }).await;
    assert!(
        rested,
        "each file on exactly its 3 placed members: {}",
        describe(&all, &cids)
    );
    let stored: u64 = all
        .iter()
        .map(|n| {
            n.client
                .store()
                .held()
                .unwrap()
                .iter()
                .map(|(_, s)| s)
                .sum::<u64>()
        })
        .sum();
    assert_eq!(stored, 3 * 200 * size as u64, "3 × the data, no more");
    let before = holders(&all);

    // A 21st member joins: only the copies it takes move.
    let boot = vec![members[0].addr.clone()];
    let newcomer = node_with(tweak(None, far), Some(&members[0]), boot).await;
    members.push(newcomer);
    let all: Vec<&TestNode> = members.iter().collect();
    let rested = eventually(Duration::from_secs(120), || async { at_rest(&all, &cids) }).await;
    assert!(
        rested,
        "at rest again with 21 members: {}",
        describe(&all, &cids)
    );
    let after = holders(&all);
    let moved: usize = cids
        .iter()
        .map(|cid| after[cid].difference(&before[cid]).count())
        .sum();
    let share = moved as f64 / (cids.len() * R) as f64;
    eprintln!(
        "placement: a 21st member took {moved} of {} copies ({share:.3})",
        cids.len() * R
    );
    assert!(
        share <= 1.5 / 20.0,
        "a join moved {moved} copies ({share:.3} of the data)"
    );
    let newcomer = members.last().unwrap().client.peer_id();
    assert!(
        cids.iter()
            .all(|cid| after[cid].difference(&before[cid]).all(|p| *p == newcomer)),
        "copies move only to the newcomer"
    );

    // A reader (no grant, not placed) gets files held elsewhere; they are checked by hash.
    let reader = TestNode::reader(vec![members[7].addr.clone()]).await;
    for i in (0..200u64).step_by(20) {
        let got = eventually(Duration::from_secs(20), || async {
            common::get(&reader.client, &format!("f/{i}")).await == Some(data(size, i))
        })
        .await;
        assert!(got, "the reader gets f/{i}");
    }
    let stat = members[3].client.holders("f/0").await.unwrap();
    assert_eq!(
        stat.placed.as_ref().map(Vec::len),
        Some(3),
        "stat names the placed members"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_of_three_holders_gone_are_replaced_after_repair_after() {
    let grace = Duration::from_secs(2);
    let owner = node_with(tweak(Some(Replicas::Count(3)), grace), None, vec![]).await;
    let mut nodes = vec![Some(owner)];
    for _ in 1..6 {
        let boot = vec![nodes[0].as_ref().unwrap().addr.clone()];
        let n = node_with(tweak(None, grace), nodes[0].as_ref(), boot).await;
        nodes.push(Some(n));
    }
    let live: Vec<&TestNode> = nodes.iter().flatten().collect();
    let size = 100 * 1024;
    // A file the owner is not placed for, so the owner (who invites) stays up.
    let owner_id = live[0].client.peer_id();
    let mut picked = None;
    for i in 0..50u64 {
        let bytes = data(size, 1000 + i);
        // One chunk (under 1 MiB): the content id commits to its one hash.
        let cid = dfs::record::content_id(size as u64, &[dfs::record::Hash::of(&bytes)]);
        if !expected(&cid, &live).contains(&owner_id) {
            picked = Some((i, bytes, cid));
            break;
        }
    }
    let (i, bytes, cid) = picked.expect("some file is not placed on the owner");
    common::put(&live[0].client, &format!("r/{i}"), bytes.clone()).await;
    let rested = eventually(Duration::from_secs(60), || async { at_rest(&live, &[cid]) }).await;
    assert!(rested, "3 copies at first: {}", describe(&live, &[cid]));
    // Two of its three holders stop.
    let victims: Vec<PeerId> = expected(&cid, &live).into_iter().take(2).collect();
    let mut stopped = Vec::new();
    for slot in nodes.iter_mut() {
        if slot
            .as_ref()
            .is_some_and(|n| victims.contains(&n.client.peer_id()))
        {
            stopped.push(slot.take().unwrap().stop().await);
        }
    }
    let gone = Instant::now();
    let live: Vec<&TestNode> = nodes.iter().flatten().collect();
    assert_eq!(live.len(), 4);
    let repaired = eventually(grace + Duration::from_secs(30), || async {
        holders(&live).get(&cid).map_or(0, |h| h.len()) == R
    })
    .await;
    assert!(
        repaired,
        "back to 3 copies within 30 s of --repair-after: {}",
        describe(&live, &[cid])
    );
    let took = gone.elapsed();
    eprintln!("placement: back to 3 copies {took:?} after 2 of 3 holders stopped (--repair-after {grace:?})");
    assert!(
        took >= grace,
        "nothing moves within the grace period ({took:?})"
    );
    for n in &live {
        if holders(&[n]).contains_key(&cid) {
            let got = common::get(&n.client, &format!("r/{i}")).await;
            assert_eq!(got.as_deref(), Some(&bytes[..]));
        }
    }
    drop(stopped);
}

#[tokio::test]
async fn the_replication_factor_is_set_once() {
    let owner = node_with(
        tweak(Some(Replicas::Count(2)), Duration::from_secs(60)),
        None,
        vec![],
    )
    .await;
    let (dir, _) = owner.stop().await;
    let mut cfg = common::config(dir.path().to_path_buf(), vec![]);
    cfg.replicas = Some(Replicas::Count(3));
    let err = dfs::node::Node::start(cfg).await.err().expect("refused");
    assert!(err.to_string().contains("keeps 2 copies"), "{err}");
    let mut cfg = common::config(dir.path().to_path_buf(), vec![]);
    cfg.replicas = Some(Replicas::Count(2));
    let node = dfs::node::Node::start(cfg)
        .await
        .expect("same factor starts");
    node.shutdown().await;
}

/// An invitation never used places nothing on the machine that never came online: with
/// `--replicas 1`, every file of a network whose other member was invited but never started is
/// placed on the owner (which holds it), not on the invitee.
#[tokio::test]
async fn an_invitation_never_used_places_nothing_on_its_machine() {
    let owner = node_with(
        tweak(Some(Replicas::Count(1)), Duration::from_secs(600)),
        None,
        vec![],
    )
    .await;
    let ticket = owner.client.invite(false).await.unwrap();
    let ghost = ticket.peer_id();
    assert!(owner
        .client
        .members()
        .iter()
        .any(|m| m.peer_id == ghost.to_string()));
    for i in 0..16u64 {
        let key = format!("g/{i}");
        common::put(&owner.client, &key, data(1000, i)).await;
        let placed = owner.client.holders(&key).await.unwrap().placed;
        assert_eq!(placed, Some(vec![owner.client.peer_id()]), "{key}");
    }
}
