//! Replication latency of small puts, with the nodes in this process (`dfs::node::Node`): a
//! 1 KiB put on one node, timed until every other node's store has it (checked every 2 ms).

use std::time::{Duration, Instant};

use dfs::node::{Client, Node};
use serde_json::{json, Value};

use crate::inproc::{addr, start};
use crate::report::Row;
use crate::util::percentile;
use crate::Bench;

pub async fn run(b: &mut Bench) {
    let mut results = Vec::new();
    for &n in &b.plan.clusters.clone() {
        let mut nodes: Vec<Node> = Vec::new();
        // Node 0 owns the network; every other node joins it as a writer, by ticket,
        // bootstrapping to the node before it.
        for i in 0..n {
            let (boot, join) = match nodes.last() {
                Some(p) => {
                    let mut ticket = nodes[0].client().invite(false).await.unwrap();
                    ticket.addrs.clear();
                    (vec![addr(p).await], Some(ticket))
                }
                None => (vec![], None),
            };
            nodes.push(start(b.sub(&format!("l{n}-{i}")), boot, join).await);
        }
        let clients: Vec<Client> = nodes.iter().map(|n| n.client()).collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut ok = true;
            for c in &clients {
                if c.peers().await.unwrap().len() < n - 1 {
                    ok = false;
                }
            }
            if ok || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut samples = Vec::new();
        for p in 0..b.plan.latency_puts {
            let key = format!("lat-{n}-{p}");
            let writer = &clients[p % n];
            let t = Instant::now();
            writer
                .put(key.clone(), std::io::Cursor::new(vec![p as u8; 1024]))
                .await
                .unwrap();
            let waits = clients
                .iter()
                .filter(|c| c.peer_id() != writer.peer_id())
                .map(|c| {
                    let c = c.clone();
                    let key = key.clone();
                    async move {
                        loop {
                            if c.store().has(&key).unwrap_or(false) {
                                return t.elapsed().as_secs_f64();
                            }
                            if t.elapsed() > Duration::from_secs(60) {
                                return f64::INFINITY;
                            }
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                });
            samples.extend(futures::future::join_all(waits).await);
        }
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p50 = percentile(&samples, 0.50) * 1000.0;
        let p99 = percentile(&samples, 0.99) * 1000.0;
        b.report.row(Row {
            figure: format!("replication latency, 1 KiB put, {n} nodes in one process"),
            measured: format!("p50 {p50:.0} ms, p99 {p99:.0} ms"),
            reference: format!("{} samples", samples.len()),
            ratio: None,
            target: "p99 < 1 s at 20 nodes".into(),
            met: Some(p99 < 1000.0),
        });
        results.push(json!({"nodes": n, "p50_ms": p50, "p99_ms": p99, "samples": samples.len()}));
        drop(clients);
        for node in nodes {
            node.shutdown().await;
        }
        for i in 0..n {
            let _ = std::fs::remove_dir_all(b.dir.join(format!("l{n}-{i}")));
        }
    }
    b.report.section("latency", Value::Array(results));
}
