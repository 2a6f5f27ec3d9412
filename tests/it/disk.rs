//! When a disk goes bad: an empty, missing, truncated or corrupt index is a clear error and
//! never costs a chunk file; `repair` rebuilds it from the chunks on disk and the peers; a chunk
//! that rots is quarantined, reported and healed from a peer, on a read or by the scrub; with no
//! healthy copy anywhere a read fails with an integrity error naming the key.

use crate::common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dfs::node::Node;
use dfs::record::{Hash, CHUNK_SIZE};
use dfs::store::{self, Store, StoreError};
use redb::ReadableTable;

const DEADLINE: Duration = Duration::from_secs(30);
const MIB: usize = CHUNK_SIZE;

fn author() -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::generate_ed25519()
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(files_in(&e.path()));
            } else {
                out.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn chunk_path(store_dir: &Path, h: &Hash) -> PathBuf {
    store_dir
        .join("chunks")
        .join(format!("{:02x}", h.0[0]))
        .join(h.to_hex())
}

/// Flips one bit of a file.
fn rot(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(path, &bytes).unwrap();
}

fn healthy(path: &Path, h: &Hash) -> bool {
    std::fs::read(path).is_ok_and(|b| Hash::of(&b) == *h)
}

fn index_damaged(e: StoreError) -> String {
    assert!(matches!(e, StoreError::IndexDamaged { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("index.redb") && msg.contains("dfs repair"),
        "{msg}"
    );
    msg
}

/// A store holding a 3-chunk file and a small (inline) one; returns the file chunks.
fn filled(dir: &Path) -> Vec<Hash> {
    let s = Store::open(dir, author()).unwrap();
    let r = s.put("big", &data(3 * MIB, 1)[..]).unwrap();
    s.put("small", &data(100, 2)[..]).unwrap();
    s.chunk_list(&r.cid.unwrap()).unwrap().unwrap()
}

#[test]
fn an_empty_or_missing_index_is_a_clear_error_and_no_chunk_is_deleted() {
    let d = tempfile::tempdir().unwrap();
    let chunks = filled(d.path());
    let before = files_in(&d.path().join("chunks"));
    assert_eq!(before.len(), 3);

    let index = d.path().join("index.redb");
    std::fs::write(&index, b"").unwrap();
    let msg = index_damaged(Store::open(d.path(), author()).unwrap_err());
    assert!(msg.contains("empty"), "{msg}");
    assert_eq!(files_in(&d.path().join("chunks")), before);

    std::fs::remove_file(&index).unwrap();
    let msg = index_damaged(Store::open(d.path(), author()).unwrap_err());
    assert!(
        msg.contains("missing") && msg.contains("3 chunk files"),
        "{msg}"
    );
    assert_eq!(files_in(&d.path().join("chunks")), before);
    assert!(!index.exists(), "no new index replaces the lost one");
    assert!(chunks.iter().all(|h| healthy(&chunk_path(d.path(), h), h)));
}

#[test]
fn a_truncated_or_corrupt_index_is_a_clear_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    filled(d.path());
    let before = files_in(&d.path().join("chunks"));
    let index = d.path().join("index.redb");
    let good = std::fs::read(&index).unwrap();
    for (what, bytes) in [
        ("truncated to half", good[..good.len() / 2].to_vec()),
        ("truncated to 100 bytes", good[..100].to_vec()),
        ("a garbage header", {
            let mut b = good.clone();
            b[..64].fill(0xAB);
            b
        }),
    ] {
        std::fs::write(&index, &bytes).unwrap();
        match std::panic::catch_unwind(|| Store::open(d.path(), author())) {
            Ok(Ok(_)) => panic!("{what}: the store opened"),
            Ok(Err(e)) => {
                index_damaged(e);
            }
            Err(_) => panic!("{what}: open panicked"),
        }
        assert_eq!(files_in(&d.path().join("chunks")), before, "{what}");
    }

    // A file redb reads well, with a record that is not CBOR.
    std::fs::write(&index, &good).unwrap();
    {
        let db = redb::Database::create(&index).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("records");
            txn.open_table(table)
                .unwrap()
                .insert("big", &[0xff, 0xff, 0x00][..])
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let msg = index_damaged(Store::open(d.path(), author()).unwrap_err());
    assert!(msg.contains("corrupt"), "{msg}");
    assert_eq!(files_in(&d.path().join("chunks")), before);
}

#[test]
fn chunk_files_the_index_does_not_know_are_orphaned_at_open_and_adopted_when_needed() {
    let a = tempfile::tempdir().unwrap();
    let s = Store::open(a.path(), author()).unwrap();
    let bytes = data(2 * MIB + 10, 3);
    let r = s.put("f", &bytes[..]).unwrap();
    let list = s.chunk_list(&r.cid.unwrap()).unwrap().unwrap();
    drop(s);

    // Another store whose index does not know these chunk files (as after a lost index).
    let b = tempfile::tempdir().unwrap();
    drop(Store::open(b.path(), author()).unwrap());
    for h in &list[..2] {
        let to = chunk_path(b.path(), h);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(chunk_path(a.path(), h), &to).unwrap();
    }
    let s = Store::open(b.path(), author()).unwrap();
    assert!(files_in(&b.path().join("chunks")).is_empty());
    let orphans: BTreeSet<String> = list[..2].iter().map(|h| h.to_hex()).collect();
    assert_eq!(files_in(&b.path().join(store::ORPHANS_DIR)), orphans);
    assert_eq!(s.gc().unwrap(), 0);

    // The record arrives; its chunks are taken back from orphans/ instead of being fetched.
    s.apply(r.clone()).unwrap();
    assert!(s.set_chunk_list(&r.cid.unwrap(), r.size, &list).unwrap());
    assert!(s.has_chunk(&list[0]) && s.has_chunk(&list[1]));
    assert!(!s.has_chunk(&list[2]), "the inline tail was not in a file");
    assert!(files_in(&b.path().join(store::ORPHANS_DIR)).is_empty());
    s.write_chunk(&list[2], &bytes[2 * MIB..]).unwrap();
    assert!(s.mark_complete(&r.cid.unwrap()).unwrap());
    let mut out = Vec::new();
    s.get("f").unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out, bytes);
}

#[test]
fn repair_sets_the_index_aside_and_keeps_verified_chunks() {
    let d = tempfile::tempdir().unwrap();
    let chunks = filled(d.path());
    rot(&chunk_path(d.path(), &chunks[1]));
    let index = d.path().join("index.redb");
    let good = std::fs::read(&index).unwrap();
    std::fs::write(&index, &good[..good.len() / 3]).unwrap();
    assert!(store::diagnose(d.path()).unwrap().is_some());

    let report = store::repair(d.path()).unwrap();
    assert_eq!((report.adopted, report.damaged), (2, 1));
    assert_eq!(report.adopted_bytes, 2 * MIB as u64);
    let old = report.old_index.unwrap();
    assert_eq!(std::fs::read(&old).unwrap(), good[..good.len() / 3]);
    assert_eq!(files_in(&d.path().join(store::DAMAGED_DIR)).len(), 1);
    assert_eq!(store::diagnose(d.path()).unwrap(), None);

    let s = Store::open(d.path(), author()).unwrap();
    assert_eq!(s.record_count(), 0);
    assert!(s.has_chunk(&chunks[0]) && s.has_chunk(&chunks[2]));
    assert!(!s.has_chunk(&chunks[1]), "the damaged copy is not adopted");
}

#[test]
fn a_damaged_chunk_read_is_quarantined_reported_and_healed_by_a_good_copy() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), author()).unwrap();
    let bytes = data(3 * MIB, 4);
    let r = s.put("k", &bytes[..]).unwrap();
    let cid = r.cid.unwrap();
    let list = s.chunk_list(&cid).unwrap().unwrap();
    let path = chunk_path(d.path(), &list[1]);
    rot(&path);
    let mut out = Vec::new();
    let err = s.get("k").unwrap().read_to_end(&mut out).unwrap_err();
    assert!(err.to_string().contains("integrity") && err.to_string().contains("k"));
    let st = s.stat("k").unwrap().unwrap();
    assert!(!st.local, "damaged content is not local");
    assert_eq!(st.damaged, 1);
    assert!(matches!(s.get("k"), Err(StoreError::Incomplete(_))));
    assert!(!path.exists());
    assert_eq!(files_in(&d.path().join(store::DAMAGED_DIR)).len(), 1);
    assert_eq!(s.damaged_chunks().unwrap().len(), 1);
    assert_eq!(s.incomplete().unwrap(), vec![r.clone()]);

    // A healthy copy (what a transfer writes) heals it.
    s.write_chunk(&list[1], &bytes[MIB..2 * MIB]).unwrap();
    assert!(s.mark_complete(&cid).unwrap());
    let st = s.stat("k").unwrap().unwrap();
    assert!(st.local && st.damaged == 0);
    assert!(s.damaged_chunks().unwrap().is_empty());
    out.clear();
    s.get("k").unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out, bytes);
}

#[test]
fn the_scrub_finds_damaged_file_and_inline_chunks_without_a_read() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), author()).unwrap();
    let r = s.put("big", &data(2 * MIB, 5)[..]).unwrap();
    let small = data(3000, 6);
    let rs = s.put("small", &small[..]).unwrap();
    let list = s.chunk_list(&r.cid.unwrap()).unwrap().unwrap();
    let report = s.scrub(|_| true).unwrap();
    assert!(report.finished && report.damaged.is_empty());
    assert_eq!((report.chunks, report.bytes), (3, 2 * MIB as u64 + 3000));

    rot(&chunk_path(d.path(), &list[0]));
    drop(s);
    // Rot inside the index: the inline chunk's bytes.
    let h = Hash::of(&small);
    {
        let db = redb::Database::create(d.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&[u8; 32], &[u8]> =
                redb::TableDefinition::new("inline_chunks");
            let mut t = txn.open_table(table).unwrap();
            let mut v = t.get(&h.0).unwrap().unwrap().value().to_vec();
            v[7] ^= 1;
            t.insert(&h.0, v.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let s = Store::open(d.path(), author()).unwrap();
    assert!(s.stat("big").unwrap().unwrap().local, "nothing read yet");
    let report = s.scrub(|_| true).unwrap();
    let found: BTreeSet<Hash> = report.damaged.iter().copied().collect();
    assert_eq!(found, BTreeSet::from([list[0], h]));
    for (key, record) in [("big", &r), ("small", &rs)] {
        let st = s.stat(key).unwrap().unwrap();
        assert!(!st.local && st.damaged == 1, "{key}: {st:?}");
        assert!(s.incomplete().unwrap().contains(record));
    }
    assert_eq!(files_in(&d.path().join(store::DAMAGED_DIR)).len(), 2);
    // The pacing function can stop a pass.
    let mut calls = 0;
    let report = s
        .scrub(|_| {
            calls += 1;
            false
        })
        .unwrap();
    assert!(!report.finished && calls == 1);
    // Where it stopped is kept: the next pass resumes there (the prefix directory of the one
    // chunk file left), and the end of the last whole pass is kept for the schedule.
    let (last_end, next) = s.scrub_state().unwrap();
    assert!(last_end.is_some());
    assert_eq!(next, list[1].0[0] as u64);
    // Deleting a damaged key drops its damage note at the next pass.
    s.delete("small").unwrap();
    assert_eq!(s.damaged_chunks().unwrap().len(), 2);
    s.scrub(|_| true).unwrap();
    assert_eq!(
        s.damaged_chunks().unwrap(),
        vec![(list[0], s.damaged_chunks().unwrap()[0].1)]
    );
}

/// Two connected nodes; `b` puts a file that `a` replicates. Returns the chunk list.
async fn replicated(a: &TestNode, b: &TestNode, key: &str, bytes: &[u8]) -> Vec<Hash> {
    let r = put(&b.client, key, bytes.to_vec()).await;
    assert!(a.client.wait_for(key, false, DEADLINE).await);
    a.client
        .store()
        .chunk_list(&r.cid.unwrap())
        .unwrap()
        .unwrap()
}

async fn pair(scrub: Option<Duration>) -> (TestNode, TestNode) {
    init_tracing();
    let b = TestNode::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path().to_path_buf(), vec![b.addr.clone()]);
    cfg.join = Some(b.client.invite(false).await.unwrap());
    if let Some(every) = scrub {
        cfg.scrub_interval = every;
        cfg.scrub_rate = 0;
    }
    let node = start_node(cfg).await;
    let client = std::sync::Arc::new(node.client());
    let addr = client.info().await.unwrap().addrs[0].clone();
    let a = TestNode {
        node: Some(node),
        client,
        dir,
        addr,
        bootstrap: vec![b.addr.clone()],
    };
    let nodes = vec![a, b];
    assert!(fully_connected(&nodes, DEADLINE).await);
    let mut nodes = nodes.into_iter();
    (nodes.next().unwrap(), nodes.next().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bit_rot_found_by_a_get_is_healed_from_a_peer() {
    let (a, b) = pair(None).await;
    let bytes = data(4 * MIB, 7);
    let list = replicated(&a, &b, "movie", &bytes).await;
    let store_dir = a.dir.path().join("store");
    // Three damaged chunks: each is found, and healed, when the read reaches it.
    for h in &list[1..] {
        rot(&chunk_path(&store_dir, h));
    }
    let fetched = a.client.chunks_fetched();

    let got = tokio::time::timeout(DEADLINE, get(&a.client, "movie"))
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(&bytes[..]), "the get succeeds");
    for h in &list[1..] {
        let path = chunk_path(&store_dir, h);
        assert!(healthy(&path, h), "the file on disk is healthy again");
    }
    assert_eq!(a.client.chunks_fetched() - fetched, 3, "only those chunks");
    assert_eq!(files_in(&store_dir.join(store::DAMAGED_DIR)).len(), 3);
    assert!(a.client.wait_for("movie", false, DEADLINE).await);
    let st = a.client.stat("movie".into()).await.unwrap();
    assert!(st.local && st.damaged == 0, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scrub_heals_bit_rot_without_any_get() {
    let (a, b) = pair(Some(Duration::from_millis(200))).await;
    let bytes = data(2 * MIB + 5, 8);
    let list = replicated(&a, &b, "archive", &bytes).await;
    let store_dir = a.dir.path().join("store");
    let path = chunk_path(&store_dir, &list[0]);
    rot(&path);
    let damaged = store_dir.join(store::DAMAGED_DIR);
    assert!(
        eventually(DEADLINE, || async {
            healthy(&path, &list[0]) && !files_in(&damaged).is_empty()
        })
        .await,
        "the scrub found the damage and a healthy copy replaced it"
    );
    assert!(a.client.wait_for("archive", false, DEADLINE).await);
    let st = a.client.stat("archive".into()).await.unwrap();
    assert!(st.local && st.damaged == 0, "{st:?}");
    // The note itself goes right after the commit that completed the content.
    assert!(
        eventually(DEADLINE, || async {
            a.client.store().damaged_chunks().unwrap().is_empty()
        })
        .await
    );
    assert_eq!(get(&a.client, "archive").await.unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damage_with_no_healthy_copy_fails_with_an_integrity_error_naming_the_key() {
    let a = TestNode::start(vec![]).await;
    let key = "lonely/file";
    let r = put(&a.client, key, data(2 * MIB, 9)).await;
    let list = a
        .client
        .store()
        .chunk_list(&r.cid.unwrap())
        .unwrap()
        .unwrap();
    let store_dir = a.dir.path().join("store");
    for h in &list {
        rot(&chunk_path(&store_dir, h));
    }
    let started = Instant::now();
    let err = tokio::time::timeout(DEADLINE, a.client.get(key.into(), None))
        .await
        .unwrap()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("integrity") && msg.contains(key), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "one transfer's give-up, not two"
    );
    let st = a.client.stat(key.into()).await.unwrap();
    assert!(!st.local && st.damaged == 1, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_then_start_rebuilds_records_from_a_peer_and_reuses_local_chunks() {
    let (a, b) = pair(None).await;
    let big = data(4 * MIB, 10);
    let small = data(1000, 11);
    replicated(&a, &b, "big", &big).await;
    replicated(&a, &b, "small", &small).await;
    let (dir, bootstrap) = a.stop().await;
    let store_dir = dir.path().join("store");
    let index = store_dir.join("index.redb");
    let good = std::fs::read(&index).unwrap();
    std::fs::write(&index, &good[..good.len() / 2]).unwrap();

    let cfg = config(dir.path().to_path_buf(), bootstrap.clone());
    let err = match Node::start(cfg).await {
        Ok(_) => panic!("a node starts on a truncated index"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("index.redb") && err.contains("dfs repair"),
        "{err}"
    );
    assert_eq!(files_in(&store_dir.join("chunks")).len(), 4);

    let report = store::repair(&store_dir).unwrap();
    assert_eq!((report.adopted, report.damaged), (4, 0));
    let a = TestNode::start_with(dir, bootstrap).await;
    for (key, bytes) in [("big", &big), ("small", &small)] {
        assert!(a.client.wait_for(key, false, DEADLINE).await, "{key}");
        assert_eq!(get(&a.client, key).await.as_ref(), Some(bytes), "{key}");
    }
    assert_eq!(
        a.client.chunks_fetched(),
        1,
        "only the small file's inline chunk came from the peer"
    );
    drop(b);
}

/// The CLI: `dfs node` refuses a truncated index with one clear line (no panic), `dfs repair`
/// rebuilds it, and `dfs get` of damaged content that no peer holds exits 1 naming the key.
#[test]
fn cli_refuses_a_damaged_index_repairs_it_and_reports_integrity_errors() {
    let bin = env!("CARGO_BIN_EXE_dfs");
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let start = || {
        Command::new(bin)
            .args([
                "node",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--api",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let cli = |args: &[&str]| {
        Command::new(bin)
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("DFS_API")
            .output()
            .unwrap()
    };
    let wait_api = |child: &mut std::process::Child| {
        let until = Instant::now() + DEADLINE;
        while !data_dir.join("api").exists() {
            assert!(child.try_wait().unwrap().is_none(), "the node exited");
            assert!(Instant::now() < until, "no api file");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let stop = |mut child: std::process::Child| {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let until = Instant::now() + DEADLINE;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < until, "the node does not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let mut node = start();
    wait_api(&mut node);
    let file = tmp.path().join("report.bin");
    std::fs::write(&file, data(MIB + 100, 12)).unwrap();
    let out = cli(&["put", file.to_str().unwrap(), "--key", "report"]);
    assert!(out.status.success(), "{out:?}");
    let store_dir = data_dir.join("store");
    let first = files_in(&store_dir.join("chunks"));
    assert_eq!(first.len(), 1);
    let h = Hash::from_hex(first.iter().next().unwrap()).unwrap();
    rot(&chunk_path(&store_dir, &h));
    let out = cli(&[
        "get",
        "report",
        "-o",
        tmp.path().join("out").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("integrity") && stderr.contains("report"),
        "{stderr}"
    );
    let out = cli(&["stat", "report", "--json"]);
    let stat: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stat["local"], false);
    assert_eq!(stat["damaged"], 1);
    stop(node);

    let index = store_dir.join("index.redb");
    let good = std::fs::read(&index).unwrap();
    std::fs::write(&index, &good[..good.len() / 2]).unwrap();
    let refused = start().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("index.redb") && stderr.contains("dfs repair"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = cli(&["repair"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("damaged") && said.contains("kept"), "{said}");
    let out = cli(&["repair"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("healthy"));
    let mut node = start();
    wait_api(&mut node);
    stop(node);
}

/// A repaired node's index has lost its signing counter (`meta.seq`); once its own records come
/// back from its peers, its numbering goes on after them, so its next record is not refused as
/// a second record under a number its peers hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_after_repair_reaches_the_peers() {
    let (a, b) = pair(None).await;
    put(&a.client, "before", data(100, 13)).await;
    assert!(b.client.wait_for("before", false, DEADLINE).await);
    let (dir, bootstrap) = a.stop().await;
    let store_dir = dir.path().join("store");
    std::fs::write(store_dir.join("index.redb"), b"").unwrap();
    store::repair(&store_dir).unwrap();
    let a = TestNode::start_with(dir, bootstrap).await;
    assert!(a.client.wait_for("before", false, DEADLINE).await);
    put(&a.client, "after", data(100, 14)).await;
    assert!(
        b.client.wait_for("after", false, DEADLINE).await,
        "the repaired node's new record is refused by its peer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_inline_chunk_is_healed_from_a_peer_on_get() {
    let (a, b) = pair(None).await;
    let small = data(5000, 15);
    replicated(&a, &b, "note", &small).await;
    let (dir, bootstrap) = a.stop().await;
    // Rot inside the index (a stopped node's): the small file's inline bytes.
    let h = Hash::of(&small);
    {
        let db = redb::Database::open(dir.path().join("store").join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&[u8; 32], &[u8]> =
                redb::TableDefinition::new("inline_chunks");
            let mut t = txn.open_table(table).unwrap();
            let mut v = t.get(&h.0).unwrap().unwrap().value().to_vec();
            v[100] ^= 4;
            t.insert(&h.0, v.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let a = TestNode::start_with(dir, bootstrap).await;
    let fetched = a.client.chunks_fetched();
    let got = tokio::time::timeout(DEADLINE, get(&a.client, "note"))
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(&small[..]));
    assert_eq!(a.client.chunks_fetched() - fetched, 1);
    assert!(a.client.wait_for("note", false, DEADLINE).await);
    assert_eq!(a.client.store().read_chunk(&h).unwrap(), Some(small));
}
