//! Fetch throughput with every node a separate `dfs node` process, next to the bare libp2p
//! stream between two processes measured in the same run, round by round.
//!
//! One round: a bare transfer of the same size (its receiver's seconds), then a fresh receiving
//! node started with `--bootstrap` to the sources, timed from spawning it to its
//! `GET /v1/stat/KEY` (polled every 10 ms) showing the content local. The receiver's start-up
//! (process start, API up, connecting, learning the record) is inside the time; two of its
//! steps are also reported: spawn to API up, and spawn to the first stat that knows the record
//! (local to the node's store, no network lookup), after which only the content moves.

use std::time::Instant;

use serde_json::json;

use crate::procs::{NodeProc, POLL};
use crate::report::Row;
use crate::util::{median, mib_s, size_text, write_payload, MIB};
use crate::{bare, Bench};

const KEY: &str = "big";

/// What one fetch round measured.
struct Fetched {
    secs: f64,
    startup_secs: f64,
    /// From spawning the receiver to its first stat that knows the record (still not local).
    known_secs: f64,
    rss_mib: f64,
}

pub async fn run(b: &mut Bench) {
    let size = b.plan.file_mib * MIB;
    let timeout = b.transfer_timeout();
    let payload = b.dir.join("fetch-payload");
    write_payload(&payload, size);
    let a = NodeProc::start(&b.bin, b.sub("fetch-a"), &[]).await;
    let payload_s = payload.display().to_string();
    let put = a.cli(&["put", &payload_s, "--key", KEY], timeout).await;
    b.rss("fetch: CLI put on A", put.peak_rss_mib);
    let _ = std::fs::remove_file(&payload);
    let a_addr = a.addr().await;

    // One source.
    let (bare1, one) = rounds(b, std::slice::from_ref(&a_addr), "fetch-r1").await;
    figure(b, "1 source", size, &bare1, &one, 0.8);

    // Three sources: two more nodes replicate the file first.
    let s2 = NodeProc::start(&b.bin, b.sub("fetch-b"), std::slice::from_ref(&a_addr)).await;
    let s3 = NodeProc::start(&b.bin, b.sub("fetch-c"), std::slice::from_ref(&a_addr)).await;
    s2.wait_local(KEY, timeout).await;
    s3.wait_local(KEY, timeout).await;
    let boot = vec![a_addr.clone(), s2.addr().await, s3.addr().await];
    let (bare3, three) = rounds(b, &boot, "fetch-r3").await;
    figure(b, "3 sources", size, &bare3, &three, 0.8);

    let secs = |v: &[Fetched]| v.iter().map(|f| f.secs).collect::<Vec<_>>();
    let startup = |v: &[Fetched]| v.iter().map(|f| f.startup_secs).collect::<Vec<_>>();
    let known = |v: &[Fetched]| v.iter().map(|f| f.known_secs).collect::<Vec<_>>();
    b.report.section(
        "fetch",
        json!({
            "bytes": size,
            "one_source": {"bare_secs": bare1, "fetch_secs": secs(&one),
                           "receiver_startup_secs": startup(&one),
                           "record_known_secs": known(&one),
                           "bare_mib_s": mib_s(size, median(&bare1)),
                           "fetch_mib_s": mib_s(size, median(&secs(&one)))},
            "three_sources": {"bare_secs": bare3, "fetch_secs": secs(&three),
                              "receiver_startup_secs": startup(&three),
                              "record_known_secs": known(&three),
                              "bare_mib_s": mib_s(size, median(&bare3)),
                              "fetch_mib_s": mib_s(size, median(&secs(&three)))},
        }),
    );
    let recv1 = one.iter().map(|f| f.rss_mib).fold(0.0, f64::max);
    let recv3 = three.iter().map(|f| f.rss_mib).fold(0.0, f64::max);
    b.rss("fetch: receiver, 1 source", recv1);
    b.rss("fetch: receiver, 3 sources", recv3);
    b.rss("fetch: source B (replicated, then served)", s2.stop().await);
    b.rss("fetch: source C (replicated, then served)", s3.stop().await);
    b.rss("fetch: source A (CLI put, then served)", a.stop().await);
    for d in ["fetch-a", "fetch-b", "fetch-c"] {
        let _ = std::fs::remove_dir_all(b.dir.join(d));
    }
}

/// `plan.rounds` rounds of (bare transfer, fetch by a fresh node bootstrapped to `sources`);
/// returns the bare seconds and the fetches.
async fn rounds(b: &mut Bench, sources: &[String], name: &str) -> (Vec<f64>, Vec<Fetched>) {
    let size = b.plan.file_mib * MIB;
    let timeout = b.transfer_timeout();
    let mut bare_secs = Vec::new();
    let mut fetched = Vec::new();
    for r in 0..b.plan.rounds {
        bare_secs.push(bare::round(size, timeout).await);
        let dir = b.sub(&format!("{name}-{r}"));
        let t = Instant::now();
        let node = NodeProc::start(&b.bin, dir.clone(), sources).await;
        let startup_secs = t.elapsed().as_secs_f64();
        let deadline = t + timeout;
        let mut known_secs = None;
        loop {
            let stat = node.get_json(&format!("/v1/stat/{KEY}")).await;
            if let Some(stat) = &stat {
                known_secs.get_or_insert(t.elapsed().as_secs_f64());
                if stat["local"] == serde_json::Value::Bool(true) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the fetch by {} did not complete within {timeout:?}",
                dir.display()
            );
            tokio::time::sleep(POLL).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let known_secs = known_secs.unwrap_or(secs);
        let rss_mib = node.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "    round {r}: bare {:.0} MiB/s, fetch {:.0} MiB/s (receiver's API up after {:.0} ms, record known after {:.0} ms)",
            mib_s(size, bare_secs[r]),
            mib_s(size, secs),
            startup_secs * 1000.0,
            known_secs * 1000.0
        );
        fetched.push(Fetched {
            secs,
            startup_secs,
            known_secs,
            rss_mib,
        });
    }
    (bare_secs, fetched)
}

fn figure(b: &mut Bench, sources: &str, size: u64, bare: &[f64], fetched: &[Fetched], target: f64) {
    let bare_mibs = mib_s(size, median(bare));
    let secs: Vec<f64> = fetched.iter().map(|f| f.secs).collect();
    let mibs = mib_s(size, median(&secs));
    let startup_ms = median(&fetched.iter().map(|f| f.startup_secs).collect::<Vec<_>>()) * 1000.0;
    let known_ms = median(&fetched.iter().map(|f| f.known_secs).collect::<Vec<_>>()) * 1000.0;
    let ratio = mibs / bare_mibs;
    b.report.row(Row {
        figure: format!(
            "fetch {}, {sources}, nodes as separate processes",
            size_text(size / MIB)
        ),
        measured: format!("{mibs:.0} MiB/s"),
        reference: format!(
            "bare libp2p stream between two processes {bare_mibs:.0} MiB/s; median of {} rounds each; \
             fetch timed from spawning the receiver (API up after {startup_ms:.0} ms, record known after {known_ms:.0} ms) to its stat showing the content local",
            b.plan.rounds
        ),
        ratio: Some(ratio),
        target: format!(">= {target} of bare"),
        met: Some(ratio >= target),
    });
}
