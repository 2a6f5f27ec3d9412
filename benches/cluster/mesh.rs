//! Replication latency across separate `dfs node` processes on one host, each bootstrapped only
//! to the first (issue 13: 20 processes, every node in the gossip mesh, p99 of a 1 KiB put
//! < 100 ms). Node 0 owns the network; the others join it as writers with tickets from
//! `POST /v1/invite`, and every node takes its turn as the writer. A put is timed from its
//! request until every other node reports the file `local` (each polled every 5 ms).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::procs::NodeProc;
use crate::report::Row;
use crate::util::percentile;
use crate::Bench;

pub async fn run(b: &mut Bench) {
    let n = b.plan.mesh_nodes;
    let http = reqwest::Client::new();
    let first = NodeProc::start(&b.bin, b.sub("mesh-0"), &[]).await;
    let first_addr = first.addr().await;
    let mut nodes = vec![first];
    for i in 1..n {
        let ticket: serde_json::Value = http
            .post(format!("{}/v1/invite", nodes[0].url))
            .bearer_auth(&nodes[0].token)
            .send()
            .await
            .expect("invite")
            .json()
            .await
            .expect("a ticket");
        let ticket = ticket["ticket"].as_str().expect("ticket").to_string();
        let node = NodeProc::start_with(
            &b.bin,
            b.sub(&format!("mesh-{i}")),
            std::slice::from_ref(&first_addr),
            &["--join".to_string(), ticket],
        )
        .await;
        nodes.push(node);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in &nodes {
        while p.peer_count().await < n - 1 {
            assert!(
                Instant::now() < deadline,
                "the {n}-process cluster did not form within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let gossipsub build its mesh (a few heartbeats) before timing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut samples = Vec::new();
    for p in 0..b.plan.mesh_puts {
        let writer = &nodes[p % n];
        let key = format!("mesh-{p}");
        let t = Instant::now();
        let r = http
            .put(format!("{}/v1/files/{key}", writer.url))
            .bearer_auth(&writer.token)
            .body(vec![p as u8; 1024])
            .send()
            .await
            .expect("put");
        assert!(r.status().is_success(), "put failed: {}", r.status());
        let waits = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != p % n)
            .map(|(_, node)| {
                let key = key.clone();
                async move {
                    loop {
                        if node.is_local(&key).await {
                            return t.elapsed().as_secs_f64();
                        }
                        if t.elapsed() > Duration::from_secs(60) {
                            return f64::INFINITY;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            });
        samples.extend(futures::future::join_all(waits).await);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p50 = percentile(&samples, 0.50) * 1000.0;
    let p99 = percentile(&samples, 0.99) * 1000.0;
    let missed = samples.iter().filter(|s| s.is_infinite()).count();
    b.report.row(Row {
        figure: format!(
            "replication latency, 1 KiB put, {n} separate processes bootstrapped to the first"
        ),
        measured: format!("p50 {p50:.0} ms, p99 {p99:.0} ms, {missed} missed"),
        reference: format!("{} samples (each node polled every 5 ms)", samples.len()),
        ratio: None,
        target: "p99 < 100 ms, no node left out".into(),
        met: Some(p99 < 100.0 && missed == 0),
    });
    for (i, node) in nodes.into_iter().enumerate() {
        let rss = node.stop().await;
        b.rss(&format!("mesh: node {i}"), rss);
    }
    b.report.section(
        "mesh",
        json!({"nodes": n, "p50_ms": p50, "p99_ms": p99, "samples": samples.len(), "missed": missed}),
    );
}
