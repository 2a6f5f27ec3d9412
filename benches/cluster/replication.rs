//! Replication of many small files: five `dfs node` processes (data dirs under
//! `DFS_BENCH_DIR`), 4 KiB puts on the first through the API by 32 concurrent requests, timed
//! from the first put until every node lists every record, then holds every file.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::procs::NodeProc;
use crate::report::Row;
use crate::Bench;

const NODES: usize = 5;

pub async fn run(b: &mut Bench) {
    let n = b.plan.replication_puts;
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 0..NODES {
        let boot = match nodes.last() {
            Some(p) => vec![p.addr().await],
            None => vec![],
        };
        nodes.push(NodeProc::start(&b.bin, b.sub(&format!("repl-{i}")), &boot).await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in &nodes {
        while p.peer_count().await < NODES - 1 {
            assert!(
                Instant::now() < deadline,
                "the {NODES}-node cluster did not form within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let writer = &nodes[0];
    let http = reqwest::Client::new();
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let req = http
                .put(format!("{}/v1/files/small-{i}", writer.url))
                .bearer_auth(&writer.token)
                .body(vec![(i % 251) as u8; 4096]);
            async move {
                let r = req.send().await.expect("put a small file");
                assert!(r.status().is_success(), "put failed: {}", r.status());
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let put_s = t.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(n as u64 * 20);
    for p in &nodes {
        while count(p).await.is_none_or(|(records, _)| records != n) {
            assert!(
                Instant::now() < deadline,
                "replication of records did not finish"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let records_s = t.elapsed().as_secs_f64();
    for p in &nodes {
        while count(p).await.is_none_or(|(_, local)| local != n) {
            assert!(
                Instant::now() < deadline,
                "replication of contents did not finish"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let all_s = t.elapsed().as_secs_f64();
    b.report.row(Row {
        figure: format!("{n} puts of 4 KiB, replicated to {NODES} nodes"),
        measured: format!(
            "every record on all {NODES} after {records_s:.1} s, every file after {all_s:.1} s ({:.0} files/s)",
            n as f64 / all_s
        ),
        reference: format!(
            "puts on the writer at {:.0}/s, 32 concurrent requests, data dirs on {}",
            n as f64 / put_s,
            b.dir_kind
        ),
        ratio: None,
        target: "-".into(),
        met: None,
    });
    b.report.section(
        "replication",
        json!({"puts": n, "nodes": NODES, "puts_per_s": n as f64 / put_s,
               "records_replicated_s": records_s, "replicated_s": all_s,
               "files_per_s_replicated": n as f64 / all_s}),
    );
    for (i, p) in nodes.into_iter().enumerate() {
        b.rss(&format!("replication: node {i}"), p.stop().await);
    }
    for i in 0..NODES {
        let _ = std::fs::remove_dir_all(b.dir.join(format!("repl-{i}")));
    }
}

/// (records known, contents local) on a node.
async fn count(p: &NodeProc) -> Option<(usize, usize)> {
    let v = p.get_json("/v1/files").await?;
    let list = v.as_array()?;
    let local = list
        .iter()
        .filter(|e| e["local"] == Value::Bool(true))
        .count();
    Some((list.len(), local))
}
