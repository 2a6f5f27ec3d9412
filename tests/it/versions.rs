//! Nothing acknowledged is lost: concurrent writes are kept as conflicts on every node and a
//! write that saw them resolves them; deletes and overwrites stay in history (restore, get
//! --version, log) across restarts until retention; skewed clocks (injected) neither drag the
//! network's clocks nor make a node deaf, and a fast node refuses local writes.

use crate::common;

use std::time::Duration;

use common::{data, eventually, fully_connected, get, node_with, put, TestNode};
use dfs::clock::Wall;
use dfs::record::Record;

const DEADLINE: Duration = Duration::from_secs(20);

/// Cuts `a` off from every other node (both directions), or heals the cut.
async fn isolate(a: &TestNode, others: &[&TestNode], blocked: bool) {
    for o in others {
        a.client.block(o.client.peer_id(), blocked).await.unwrap();
        o.client.block(a.client.peer_id(), blocked).await.unwrap();
    }
}

/// The key's current version and conflicts on a node.
async fn heads(n: &TestNode, key: &str) -> Option<(Record, Vec<Record>)> {
    let s = n.client.stat(key.to_string()).await.ok()?;
    Some((s.record, s.conflicts))
}

/// Waits until every node holds exactly `current` as the key's current version and
/// `conflicts` (in any order) as its conflicts.
async fn converged(nodes: &[TestNode], key: &str, current: &Record, conflicts: &[Record]) -> bool {
    eventually(DEADLINE, || async {
        for n in nodes {
            match heads(n, key).await {
                Some((c, mut others)) => {
                    let mut want = conflicts.to_vec();
                    others.sort_by_key(|r| r.version());
                    want.sort_by_key(|r| r.version());
                    if &c != current || others != want {
                        return false;
                    }
                }
                None => return false,
            }
        }
        true
    })
    .await
}

/// Three connected nodes of one network.
async fn three() -> Vec<TestNode> {
    let a = TestNode::start(vec![]).await;
    let b = TestNode::start(vec![a.addr.clone()]).await;
    let c = TestNode::start(vec![a.addr.clone()]).await;
    let nodes = vec![a, b, c];
    assert!(fully_connected(&nodes, DEADLINE).await);
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_puts_leave_one_current_and_one_conflict_on_every_node() {
    let nodes = three().await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // Cut a off: its write and b's cannot see each other.
    isolate(a, &[b, c], true).await;
    let ra = put(&a.client, "k", data(3000, 1)).await;
    let rb = put(&b.client, "k", data(4000, 2)).await;
    assert!(!ra.saw(&rb) && !rb.saw(&ra));
    isolate(a, &[b, c], false).await;
    let (current, conflict) = match ra.cmp_current(&rb) {
        std::cmp::Ordering::Greater => (ra.clone(), rb.clone()),
        _ => (rb.clone(), ra.clone()),
    };
    assert!(
        converged(&nodes, "k", &current, std::slice::from_ref(&conflict)).await,
        "every node keeps both acknowledged writes"
    );
    // Both versions' content is replicated to every node in the background.
    assert!(
        eventually(DEADLINE, || async {
            nodes.iter().all(|n| {
                [&ra, &rb]
                    .iter()
                    .all(|r| n.client.store().content_complete(&r.cid.unwrap()).unwrap())
            })
        })
        .await,
        "both versions' content reaches every node"
    );
    // Both versions are readable everywhere, the conflict by its version id.
    for n in &nodes {
        let version = conflict.version().to_hex();
        let bytes = n
            .client
            .get_version("k".into(), version[..12].to_string(), None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len(), conflict.size as usize);
    }
    // A write that saw both resolves the conflict on every node.
    let rc = put(&c.client, "k", data(5000, 3)).await;
    assert!(rc.saw(&ra) && rc.saw(&rb));
    assert!(
        converged(&nodes, "k", &rc, &[]).await,
        "resolved everywhere"
    );
    let log = c.client.log("k".into()).await.unwrap();
    let states: Vec<&str> = log.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(states, ["replaced", "replaced", "current"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rm_then_restore_brings_the_bytes_back_on_every_node() {
    let nodes = three().await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let bytes = data(2 * 1024 * 1024 + 17, 9);
    let first = put(&a.client, "doc", bytes.clone()).await;
    assert!(
        eventually(DEADLINE, || async {
            for n in &nodes {
                if get(&n.client, "doc").await.as_deref() != Some(&bytes[..]) {
                    return false;
                }
            }
            true
        })
        .await
    );
    let tomb = b.client.delete("doc".into()).await.unwrap();
    assert!(
        converged(&nodes, "doc", &tomb, &[]).await,
        "deleted everywhere"
    );
    // The log shows who deleted what; the old version still reads.
    let log = a.client.log("doc".into()).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].record, tomb);
    let old = a
        .client
        .get_version("doc".into(), first.version().to_hex(), None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(old, bytes);
    // Restoring on another node than the writer's: a new write, everywhere.
    let restored = nodes[2]
        .client
        .restore("doc".into(), first.version().to_hex()[..10].to_string())
        .await
        .unwrap();
    assert_eq!(restored.cid, first.cid);
    assert!(restored.saw(&tomb));
    assert!(converged(&nodes, "doc", &restored, &[]).await);
    for n in &nodes {
        assert_eq!(get(&n.client, "doc").await.as_deref(), Some(&bytes[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_survives_a_restart_and_gc_removes_versions_only_past_retention() {
    let a = TestNode::start(vec![]).await;
    let v1 = put(&a.client, "h", data(300_000, 1)).await;
    let v2 = put(&a.client, "h", data(300_000, 2)).await;
    let gone = a.client.delete("h".into()).await.unwrap();
    let a = a.restart().await;
    let log = a.client.log("h".into()).await.unwrap();
    let versions: Vec<Record> = log.iter().map(|e| e.record.clone()).collect();
    assert_eq!(versions, vec![v1.clone(), v2.clone(), gone.clone()]);
    // Within retention nothing goes, and old versions read.
    let store = a.client.store().clone();
    assert_eq!(store.expire_history(3_600_000, u64::MAX).unwrap(), 0);
    let got = a
        .client
        .get_version("h".into(), v1.version().to_hex(), None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, data(300_000, 1));
    // Past retention the replaced versions and their content go; the delete, current, stays.
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(store.expire_history(1, u64::MAX).unwrap(), 2);
    let log = a.client.log("h".into()).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].record, gone);
    assert!(!store.content_complete(&v1.cid.unwrap()).unwrap());
    // Over the byte budget, the oldest go first.
    let w1 = put(&a.client, "b", data(100_000, 5)).await;
    let w2 = put(&a.client, "b", data(100_000, 6)).await;
    let _w3 = put(&a.client, "b", data(100_000, 7)).await;
    assert_eq!(store.expire_history(3_600_000, 150_000).unwrap(), 1);
    let left: Vec<Record> = a
        .client
        .log("b".into())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.record)
        .collect();
    assert!(!left.contains(&w1) && left.contains(&w2));
}

/// Four nodes of one network; the last one's clock is `skew_ms` off.
async fn with_skewed(skew_ms: i64) -> Vec<TestNode> {
    let a = TestNode::start(vec![]).await;
    let b = TestNode::start(vec![a.addr.clone()]).await;
    let c = TestNode::start(vec![a.addr.clone()]).await;
    let d = node_with(
        |c| c.wall = Wall::skewed(skew_ms),
        Some(&a),
        vec![a.addr.clone()],
    )
    .await;
    let nodes = vec![a, b, c, d];
    assert!(fully_connected(&nodes, DEADLINE).await);
    // Every node has measured the skewed one.
    assert!(
        eventually(DEADLINE, || async {
            nodes.iter().all(|n| n.client.clock_offsets().len() == 3)
        })
        .await
    );
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fast_node_refuses_writes_and_does_not_drag_the_others_clocks() {
    let nodes = with_skewed(4 * 60 * 1000).await;
    let (a, d) = (&nodes[0], &nodes[3]);
    let err = d
        .client
        .put(
            "k".into(),
            std::io::Cursor::new(b"from the future".to_vec()),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("4 min") && msg.contains("ahead of"), "{msg}");
    let offset = a.client.clock_offsets()[&d.client.peer_id()].ms;
    assert!(
        (offset - 240_000).abs() < 2_000,
        "a measures d at +4 min: {offset}"
    );
    let metrics = a.client.metrics_text().await.unwrap();
    let line = format!(
        "dfs_clock_offset_seconds{{peer=\"{}\"}} 2",
        d.client.peer_id()
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    // Honest writes spread, their clocks near real time, and reach the fast node too.
    let r = put(&a.client, "k", data(1000, 1)).await;
    assert!(converged(&nodes, "k", &r, &[]).await);
    let r2 = put(&nodes[1].client, "k2", data(1000, 2)).await;
    let ahead = dfs::clock::physical_ms(r2.time) as i64 - dfs::clock::system_ms() as i64;
    assert!(
        ahead < 2_000,
        "honest clocks stay near real time: {ahead} ms ahead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_node_accepts_honest_records_and_refuses_its_own_writes() {
    let nodes = with_skewed(-2 * 60 * 1000).await;
    let d = &nodes[3];
    assert!(d
        .client
        .put("k".into(), std::io::Cursor::new(vec![1]))
        .await
        .is_err());
    let r = put(&nodes[0].client, "k", data(1000, 1)).await;
    assert!(
        converged(&nodes, "k", &r, &[]).await,
        "the slow node is not deaf"
    );
    assert_eq!(get(&d.client, "k").await, Some(data(1000, 1)));
    assert_eq!(d.client.refusals().total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_acknowledged_by_a_fast_node_before_it_knew_is_kept_beside_an_honest_one() {
    let nodes = with_skewed(5 * 60 * 1000 + 30_000).await;
    let (a, d) = (&nodes[0], &nodes[3]);
    let others: Vec<&TestNode> = nodes[..3].iter().collect();
    // Cut off, the fast node measures nobody: it writes, and is acknowledged.
    isolate(d, &others, true).await;
    assert!(
        eventually(DEADLINE, || async { d.client.clock_offsets().is_empty() }).await,
        "offsets of gone peers are forgotten"
    );
    let skewed = put(&d.client, "k", data(1000, 7)).await;
    // Meanwhile an honest write of the same key.
    let honest = put(&a.client, "k", data(1000, 8)).await;
    isolate(d, &others, false).await;
    // Neither saw the other: both are kept everywhere; the later clock is current.
    assert!(converged(&nodes, "k", &skewed, std::slice::from_ref(&honest)).await);
    // The honest nodes' clocks were not dragged 5 minutes ahead.
    let next = put(&nodes[1].client, "other", data(10, 1)).await;
    let ahead = dfs::clock::physical_ms(next.time) as i64 - dfs::clock::system_ms() as i64;
    assert!(ahead < 2_000, "{ahead} ms ahead");
    // A write that saw both resolves it.
    let resolved = put(&nodes[2].client, "k", data(1000, 9)).await;
    assert!(converged(&nodes, "k", &resolved, &[]).await);
}
