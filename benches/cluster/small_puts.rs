//! Durable small puts: one `dfs node` process with its data dir on a real disk
//! (`DFS_BENCH_DISK_DIR`), 32 concurrent HTTP clients in this process, each with its own
//! keep-alive connection, doing `PUT /v1/files/small-N` of 4 KiB until N puts are acknowledged
//! (each acknowledged once durable on the node). Timed from the first request to the last answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::procs::NodeProc;
use crate::report::Row;
use crate::Bench;

pub async fn run(b: &mut Bench) {
    let n = b.plan.small_puts;
    let clients = b.plan.clients;
    let dir = b.disk_dir.join("small-node");
    let node = NodeProc::start(&b.bin, dir.clone(), &[]).await;
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let next = next.clone();
            let url = node.url.clone();
            let token = node.token.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("http client");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let body = vec![(i % 251) as u8; 4096];
                    let r = http
                        .put(format!("{url}/v1/files/small-{i}"))
                        .bearer_auth(&token)
                        .body(body)
                        .send()
                        .await
                        .expect("put a small file");
                    assert!(r.status().is_success(), "put failed: {}", r.status());
                }
            })
        })
        .collect();
    let timeout = Duration::from_secs(60) + Duration::from_millis(n as u64 * 5);
    tokio::time::timeout(timeout, futures::future::try_join_all(tasks))
        .await
        .unwrap_or_else(|_| panic!("{n} small puts did not finish within {timeout:?}"))
        .expect("a put client failed");
    let secs = t.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    let listed = node
        .get_json("/v1/files")
        .await
        .and_then(|v| v.as_array().map(|a| a.len()))
        .unwrap_or(0);
    assert_eq!(listed, n, "the node lists {listed} of {n} small files");
    b.report.row(Row {
        figure: format!("{n} durable puts of 4 KiB, one node, {clients} clients"),
        measured: format!("{rate:.0} puts/s"),
        reference: format!(
            "data dir on {}; {clients} keep-alive HTTP clients",
            b.disk_kind
        ),
        ratio: None,
        target: ">= 5,000 puts/s".into(),
        met: Some(rate >= 5000.0),
    });
    b.report.section(
        "small_puts",
        json!({"puts": n, "clients": clients, "secs": secs, "puts_per_s": rate,
               "data_dir": b.disk_kind}),
    );
    b.rss("small puts: node", node.stop().await);
    let _ = std::fs::remove_dir_all(&dir);
}
