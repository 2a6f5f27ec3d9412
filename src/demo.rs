//! `dfs demo`: a local cluster in one process. Starts nodes on loopback with temporary data
//! dirs, puts a multi-chunk file on the first, shows it replicate to every other node, reads it
//! back from the last one, deletes it and shows the delete spread, then cleans up.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use rand::RngCore;

use crate::node::{Client, Config, Node};
use crate::record::CHUNK_SIZE;

/// How long each phase (mesh forming, replication, delete) may take: a base plus a share per
/// node, as every node fetches the whole file.
fn phase_deadline(nodes: usize) -> Duration {
    Duration::from_secs(10 + 2 * nodes as u64)
}
/// Size of the demo file: several chunks and a partial one.
const FILE_SIZE: usize = 8 * CHUNK_SIZE + 123;
/// Gossip and anti-entropy intervals of the demo nodes.
const INTERVAL: Duration = Duration::from_secs(1);

/// Runs the demo with `n` nodes; an error names the step that failed.
pub async fn run(n: usize) -> anyhow::Result<()> {
    ensure!(
        (2..=20).contains(&n),
        "the demo runs 2 to 20 nodes, not {n}"
    );
    let started = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    let mut dirs = Vec::with_capacity(n);
    let result = async {
        println!("starting {n} nodes on 127.0.0.1 with temporary data dirs");
        for k in 0..n {
            let dir = tempfile::Builder::new()
                .prefix("dfs-demo-")
                .tempdir()
                .context("creating a temporary data dir")?;
            let mut config = Config::new(dir.path().to_path_buf());
            config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
            config.announce_interval = INTERVAL;
            config.sync_interval = INTERVAL;
            config.retry_interval = INTERVAL;
            if let Some(prev) = nodes.last() {
                let prev: &Node = prev;
                let info = prev.client().info().await?;
                let addr = info
                    .addrs
                    .first()
                    .context("the previous node has no address")?;
                config.bootstrap = vec![addr.clone()];
                // Node 1 created the network; the others join it as writers, by ticket.
                let first: &Node = &nodes[0];
                config.join = Some(first.client().invite(false).await?);
            }
            let node = Node::start(config)
                .await
                .with_context(|| format!("starting node {}", k + 1))?;
            println!("  node {:>2}: {}", k + 1, node.peer_id());
            nodes.push(node);
            dirs.push(dir);
        }
        let clients: Vec<Client> = nodes.iter().map(Node::client).collect();
        steps(&clients).await
    }
    .await;
    let t = Instant::now();
    futures::future::join_all(nodes.into_iter().map(Node::shutdown)).await;
    let removals = dirs
        .into_iter()
        .map(|d| tokio::task::spawn_blocking(move || d.close()));
    for removed in futures::future::join_all(removals).await {
        if let Ok(Err(e)) = removed {
            eprintln!("warning: cannot remove a temporary data dir: {e}");
        }
    }
    result?;
    println!("nodes stopped, temporary data removed ({})", ms(t));
    println!("done in {:.1?}", started.elapsed());
    Ok(())
}

async fn steps(clients: &[Client]) -> anyhow::Result<()> {
    let n = clients.len();
    let deadline = phase_deadline(n);
    let t = Instant::now();
    for (i, c) in clients.iter().enumerate() {
        loop {
            let peers = c.peers().await?.len();
            if peers >= n - 1 {
                break;
            }
            if t.elapsed() > deadline {
                bail!(
                    "node {} sees {peers} of {} peers after {deadline:?}",
                    i + 1,
                    n - 1
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "every node is connected to the {} others ({})",
        n - 1,
        ms(t)
    );

    let mut data = vec![0u8; FILE_SIZE];
    rand::thread_rng().fill_bytes(&mut data);
    let hash = blake3::hash(&data);
    let key = "demo/random.bin".to_string();
    let t = Instant::now();
    let record = clients[0]
        .put(key.clone(), std::io::Cursor::new(data))
        .await
        .context("put on node 1")?;
    let cid = record.cid.map(|c| c.to_hex()).unwrap_or_default();
    println!(
        "put {key} on node 1: {} bytes in {} chunks, content id {}… ({})",
        record.size,
        record.size.div_ceil(CHUNK_SIZE as u64),
        &cid[..16.min(cid.len())],
        ms(t)
    );

    let t = Instant::now();
    wait_all(clients, &key, false, t, "replicated to").await?;

    let t = Instant::now();
    let download = clients[n - 1]
        .get(key.clone(), None)
        .await
        .with_context(|| format!("get on node {n}"))?;
    let bytes = download
        .bytes()
        .await
        .with_context(|| format!("reading on node {n}"))?;
    ensure!(
        bytes.len() == FILE_SIZE && blake3::hash(&bytes) == hash,
        "node {n} returned different bytes ({} bytes)",
        bytes.len()
    );
    println!(
        "get on node {n}: {} bytes, BLAKE3 {}… matches the original ({})",
        bytes.len(),
        &hash.to_hex()[..16],
        ms(t)
    );

    let t = Instant::now();
    clients[0]
        .delete(key.clone())
        .await
        .context("delete on node 1")?;
    println!("rm {key} on node 1");
    wait_all(clients, &key, true, t, "delete reached").await?;
    Ok(())
}

/// Waits concurrently for every node but the first to hold `key` (or its tombstone).
async fn wait_all(
    clients: &[Client],
    key: &str,
    deleted: bool,
    since: Instant,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = phase_deadline(clients.len());
    let waits = clients.iter().enumerate().skip(1).map(|(i, c)| async move {
        let ok = c.wait_for(key, deleted, deadline).await;
        (i + 1, ok, since.elapsed())
    });
    let mut failed = Vec::new();
    for (node, ok, took) in futures::future::join_all(waits).await {
        if ok {
            println!("  {what} node {node:>2} after {} ms", took.as_millis());
        } else {
            failed.push(node);
        }
    }
    if !failed.is_empty() {
        bail!("{what} nodes {failed:?}: not within {deadline:?}");
    }
    Ok(())
}

fn ms(since: Instant) -> String {
    format!("{} ms", since.elapsed().as_millis())
}
