//! Catch-up of record metadata between two `dfs node` processes: a node whose store was seeded
//! with many records (signed by its own key, written through the store in large batches before
//! it starts) is joined by a fresh node; measured: the time from starting the fresh node until
//! it holds every record, its peak RSS then, the time to list them all on it, and the time to
//! the first byte of `GET /v1/files` on the seeded node.
//! `DFS_BENCH_CATCHUP_KEYS` sets the number of records (100,000 in the full run).

use std::path::Path;
use std::time::{Duration, Instant};

use dfs::record::Record;
use serde_json::json;

use crate::procs::{NodeProc, POLL};
use crate::report::Row;
use crate::Bench;

/// Longest a catch-up may take before the run fails.
const DEADLINE: Duration = Duration::from_secs(600);

pub async fn run(bench: &mut Bench) {
    let keys = crate::env_number("DFS_BENCH_CATCHUP_KEYS")
        .map(|n| n.max(1) as usize)
        .unwrap_or(bench.plan.catchup_keys);
    let dir_a = bench.sub("cu-a");
    let t = Instant::now();
    let dir = dir_a.clone();
    tokio::task::spawn_blocking(move || seed(&dir, keys))
        .await
        .expect("seeding");
    eprintln!(
        "catch-up: seeded {keys} records in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let a = NodeProc::start_in(&bench.bin, dir_a, &[], &[]).await;
    let first_byte = first_byte_of_list(&a).await;
    let a_addr = a.addr().await;
    let t = Instant::now();
    let b = NodeProc::start(&bench.bin, bench.sub("cu-b"), &[a_addr]).await;
    let deadline = t + DEADLINE;
    loop {
        let n = b
            .get_json("/v1/id")
            .await
            .and_then(|v| v["records"].as_u64())
            .unwrap_or(0);
        if n >= keys as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fresh node holds {n} of {keys} records after {DEADLINE:?}"
        );
        tokio::time::sleep(POLL * 5).await;
    }
    let caught_up = t.elapsed();
    let rss = b.peak_rss_mib();
    let t = Instant::now();
    let mut listed = 0usize;
    dfs::api::client::ApiClient::new(b.url.clone(), Some(b.token.clone()), String::new())
        .list_each(None, |_| {
            listed += 1;
            true
        })
        .await
        .expect("list the fresh node's records");
    let list_secs = t.elapsed().as_secs_f64();
    assert_eq!(listed, keys, "the fresh node lists every record");
    let (target_s, target_rss) = if keys > 100_000 {
        (60.0, 200.0)
    } else {
        (5.0, 150.0)
    };
    bench.report.row(Row {
        figure: format!("catch-up, fresh node joins one holding {keys} records"),
        measured: format!(
            "{:.2} s to hold all ({:.0} records/s), peak RSS {rss:.0} MiB; listing them {list_secs:.2} s",
            caught_up.as_secs_f64(),
            keys as f64 / caught_up.as_secs_f64()
        ),
        reference: "before /dfs/catchup/1: 62.7 s for 100,000, 253 MiB".into(),
        ratio: None,
        target: format!("< {target_s} s, < {target_rss} MiB"),
        met: Some(caught_up.as_secs_f64() < target_s && rss < target_rss),
    });
    bench.report.row(Row {
        figure: format!("GET /v1/files on a node of {keys} records, first byte"),
        measured: format!("{:.0} ms", first_byte.as_secs_f64() * 1000.0),
        reference: String::new(),
        ratio: None,
        target: "< 100 ms".into(),
        met: Some(first_byte < Duration::from_millis(100)),
    });
    bench.report.section(
        "catchup",
        json!({"keys": keys, "catch_up_s": caught_up.as_secs_f64(), "fresh_peak_rss_mib": rss,
               "list_s": list_secs, "list_first_byte_ms": first_byte.as_secs_f64() * 1000.0}),
    );
    let rss_b = b.stop().await;
    let rss_a = a.stop().await;
    bench.rss("catch-up fresh node", rss_b);
    bench.rss("catch-up seeded node", rss_a);
}

/// Time from sending `GET /v1/files` to the first byte of its body.
async fn first_byte_of_list(node: &NodeProc) -> Duration {
    let t = Instant::now();
    let mut r = reqwest::Client::new()
        .get(format!("{}/v1/files", node.url))
        .bearer_auth(&node.token)
        .send()
        .await
        .expect("list");
    let _ = r.chunk().await;
    let first = t.elapsed();
    while let Ok(Some(_)) = r.chunk().await {}
    first
}

/// Writes `keys` tombstones signed by the data dir's own identity (the network's owner once the
/// node starts) into its store, signed on every core, in batches of 10,000.
fn seed(dir: &Path, keys: usize) {
    let owner = dfs::identity::load_or_create(dir).expect("identity");
    let store = dfs::store::Store::open(&dfs::datadir::DataDir::new(dir).store(), owner.clone())
        .expect("open the seeded store");
    let now = dfs::record::wall_ms() << 16;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for start in (0..keys).step_by(10_000) {
        let end = (start + 10_000).min(keys);
        let per = (end - start).div_ceil(threads);
        let batch: Vec<Record> = std::thread::scope(|s| {
            let parts: Vec<_> = (start..end)
                .step_by(per)
                .map(|lo| {
                    let owner = &owner;
                    s.spawn(move || {
                        (lo..(lo + per).min(end))
                            .map(|i| {
                                let mut r = Record {
                                    key: format!("key-{i}"),
                                    cid: None,
                                    size: 0,
                                    time: now + i as u64,
                                    author: Vec::new(),
                                    seq: 1_000_000 + i as u64,
                                    seen: Vec::new(),
                                    sig: Vec::new(),
                                };
                                r.sign(owner);
                                r
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().expect("signing"))
                .collect()
        });
        store.apply_batch(batch).expect("seed a batch");
    }
    assert_eq!(
        store.record_count(),
        keys as u64,
        "every seeded record counts"
    );
}
