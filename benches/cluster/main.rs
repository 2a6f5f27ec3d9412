//! The dfs benchmark: every figure measured in one run next to its reference, printed as a table
//! and written as JSON. `cargo bench --bench cluster` runs the full version (1 GiB transfers,
//! clusters of 5/10/20, 10,000 puts, 100,000 keys); `-- --quick` runs a small smoke version.
//!
//! Environment: `DFS_BENCH_DIR` (where data dirs go; default `/dev/shm` when present, so the
//! disk does not hide the network path), `DFS_BENCH_JSON` (output file; default
//! `target/bench/results.json`), `DFS_BENCH_FILE_MIB` (size of the large file),
//! `DFS_BENCH_ONLY` (comma-separated subset of `fetch,latency,sync,api`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs::node::{Client, Config, Node};
use dfs::record::{Record, CHUNK_SIZE};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

struct Plan {
    quick: bool,
    file_mib: u64,
    clusters: Vec<usize>,
    latency_puts: usize,
    many_puts: usize,
    sync_keys: usize,
}

struct Bench {
    plan: Plan,
    dir: PathBuf,
    rows: Vec<(String, String, String, String)>,
    json: serde_json::Map<String, Value>,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            quick,
            file_mib: 32,
            clusters: vec![3, 5],
            latency_puts: 5,
            many_puts: 300,
            sync_keys: 5_000,
        }
    } else {
        Plan {
            quick,
            file_mib: 1024,
            clusters: vec![5, 10, 20],
            latency_puts: 20,
            many_puts: 10_000,
            sync_keys: 100_000,
        }
    };
    let mut plan = plan;
    if let Some(mib) = std::env::var("DFS_BENCH_FILE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        plan.file_mib = mib;
    }
    let only = std::env::var("DFS_BENCH_ONLY").unwrap_or_default();
    let base = std::env::var_os("DFS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            }
        });
    let dir = tempfile::Builder::new()
        .prefix("dfs-bench-")
        .tempdir_in(&base)
        .expect("bench dir");
    let mut bench = Bench {
        plan,
        dir: dir.path().to_path_buf(),
        rows: Vec::new(),
        json: serde_json::Map::new(),
    };
    bench.json.insert(
        "machine".into(),
        json!({"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
               "memory_mib": mem_total_mib(), "data_dir": base.display().to_string(),
               "quick": quick}),
    );
    println!(
        "dfs benchmark ({}), data dirs under {} , {} cores, {} MiB memory",
        if quick { "quick" } else { "full" },
        base.display(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        mem_total_mib()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if only.is_empty() || only.contains("fetch") {
            bench.fetch().await;
        }
        if only.is_empty() || only.contains("latency") {
            bench.latency().await;
        }
        if only.is_empty() || only.contains("sync") {
            bench.anti_entropy().await;
        }
    });
    drop(rt);
    if only.is_empty() || only.contains("api") {
        bench.processes();
    }
    bench.print();
}

impl Bench {
    fn row(&mut self, figure: &str, value: String, reference: String, target: &str) {
        println!("  {figure}: {value} (reference: {reference}; target {target})");
        self.rows
            .push((figure.into(), value, reference, target.into()));
    }

    fn print(&self) {
        println!();
        println!("| figure | measured | reference in the same run | target |");
        println!("|---|---|---|---|");
        for (f, v, r, t) in &self.rows {
            println!("| {f} | {v} | {r} | {t} |");
        }
        let path = std::env::var_os("DFS_BENCH_JSON")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/bench/results.json"));
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let text = serde_json::to_string_pretty(&Value::Object(self.json.clone())).unwrap();
        std::fs::write(&path, text).expect("write results");
        println!("\nJSON written to {}", path.display());
    }

    fn sub(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    // ---- in-process: fetch throughput against a bare libp2p stream ----

    async fn fetch(&mut self) {
        let size = self.plan.file_mib * MIB;
        let bare = bare_stream(size).await;
        let bare_mibs = size as f64 / MIB as f64 / bare;
        // One source.
        let src = start(self.sub("f-src"), vec![]).await;
        let bytes_path = self.dir.join("payload");
        write_payload(&bytes_path, size);
        let record = {
            let store = src.client().store().clone();
            let p = bytes_path.clone();
            tokio::task::spawn_blocking(move || {
                store.put("big", std::fs::File::open(p).unwrap()).unwrap()
            })
            .await
            .unwrap()
        };
        let addr = addr(&src).await;
        let t = Instant::now();
        let dst = start(self.sub("f-dst"), vec![addr.clone()]).await;
        assert!(
            dst.client()
                .wait_for("big", false, Duration::from_secs(600))
                .await
        );
        let one = t.elapsed().as_secs_f64();
        let one_mibs = size as f64 / MIB as f64 / one;
        self.row(
            &format!("fetch {} MiB, 1 source", self.plan.file_mib),
            format!(
                "{one_mibs:.0} MiB/s ({:.0}% of bare)",
                100.0 * one_mibs / bare_mibs
            ),
            format!("bare libp2p stream {bare_mibs:.0} MiB/s"),
            ">= 80%",
        );
        // Three sources: two more nodes replicate it first.
        let s2 = start(self.sub("f-s2"), vec![addr.clone()]).await;
        let s3 = start(self.sub("f-s3"), vec![addr.clone()]).await;
        for s in [&s2, &s3] {
            assert!(
                s.client()
                    .wait_for("big", false, Duration::from_secs(600))
                    .await
            );
        }
        let boot = vec![addr.clone(), self::addr(&s2).await, self::addr(&s3).await];
        let t = Instant::now();
        let dst3 = start(self.sub("f-dst3"), boot).await;
        assert!(
            dst3.client()
                .wait_for("big", false, Duration::from_secs(600))
                .await
        );
        let three = t.elapsed().as_secs_f64();
        let three_mibs = size as f64 / MIB as f64 / three;
        self.row(
            &format!("fetch {} MiB, 3 sources", self.plan.file_mib),
            format!(
                "{three_mibs:.0} MiB/s ({:.0}% of bare)",
                100.0 * three_mibs / bare_mibs
            ),
            format!("bare libp2p stream {bare_mibs:.0} MiB/s"),
            ">= 90%",
        );
        self.json.insert(
            "fetch".into(),
            json!({"bytes": size, "bare_mib_s": bare_mibs, "one_source_mib_s": one_mibs,
                   "one_source_ratio": one_mibs / bare_mibs, "three_sources_mib_s": three_mibs,
                   "three_sources_ratio": three_mibs / bare_mibs, "cid": record.cid.map(|c| c.to_hex())}),
        );
        for n in [src, dst, s2, s3, dst3] {
            n.shutdown().await;
        }
        let _ = std::fs::remove_file(&bytes_path);
        for d in ["f-src", "f-dst", "f-s2", "f-s3", "f-dst3"] {
            let _ = std::fs::remove_dir_all(self.dir.join(d));
        }
    }

    // ---- in-process: replication latency of small puts ----

    async fn latency(&mut self) {
        let mut results = Vec::new();
        for &n in &self.plan.clusters.clone() {
            let mut nodes: Vec<Node> = Vec::new();
            for i in 0..n {
                let boot = match nodes.last() {
                    Some(p) => vec![addr(p).await],
                    None => vec![],
                };
                nodes.push(start(self.sub(&format!("l{n}-{i}")), boot).await);
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
            for p in 0..self.plan.latency_puts {
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
            self.row(
                &format!("replication latency, 1 KiB put, {n} nodes"),
                format!("p50 {p50:.0} ms, p99 {p99:.0} ms"),
                format!("{} samples", samples.len()),
                "p99 < 1 s at 20 nodes",
            );
            results
                .push(json!({"nodes": n, "p50_ms": p50, "p99_ms": p99, "samples": samples.len()}));
            drop(clients);
            for node in nodes {
                node.shutdown().await;
            }
            for i in 0..n {
                let _ = std::fs::remove_dir_all(self.dir.join(format!("l{n}-{i}")));
            }
        }
        self.json.insert("latency".into(), Value::Array(results));
    }

    // ---- in-process: anti-entropy cost ----

    async fn anti_entropy(&mut self) {
        let keys = self.plan.sync_keys;
        let author = PeerId::random().to_bytes();
        let now = dfs::record::wall_ms() << 16;
        let a = start(self.sub("ae-a"), vec![]).await;
        let b = start(self.sub("ae-b"), vec![]).await;
        for node in [&a, &b] {
            let store = node.client().store().clone();
            let author = author.clone();
            tokio::task::spawn_blocking(move || {
                for start in (0..keys).step_by(10_000) {
                    let batch: Vec<Record> = (start..(start + 10_000).min(keys))
                        .map(|i| Record {
                            key: format!("key-{i}"),
                            cid: None,
                            size: 0,
                            time: now + i as u64,
                            author: author.clone(),
                        })
                        .collect();
                    store.apply_batch(batch).unwrap();
                }
            })
            .await
            .unwrap();
        }
        let (ac, bc) = (a.client(), b.client());
        bc.dial(addr(&a).await).await.unwrap();
        wait_until(|| ac.sync_stats().snapshot()[0] >= 1 && bc.sync_stats().snapshot()[0] >= 1)
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let total = |c: &Client| {
            let s = c.sync_stats().snapshot();
            (s[0], s[2] + s[3], s[4] + s[5])
        };
        let (sa, ba, ra) = total(&ac);
        let equal_bytes = ba as f64 / sa.max(1) as f64;
        self.row(
            &format!("anti-entropy, {keys} keys, nothing differing"),
            format!("{equal_bytes:.0} bytes per session, {ra} records"),
            format!("{keys} records of ~60 bytes = {} KiB", keys * 60 / 1024),
            "a small constant",
        );
        let before = (total(&ac), total(&bc));
        let extra = Record {
            key: "one-more".into(),
            cid: None,
            size: 0,
            time: now + keys as u64 + 1,
            author: author.clone(),
        };
        ac.store().apply(extra).unwrap();
        let t = Instant::now();
        wait_until(|| bc.store().record("one-more").unwrap().is_some()).await;
        let settle = t.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = (total(&ac), total(&bc));
        let bytes = (after.0 .1 - before.0 .1) + (after.1 .1 - before.1 .1);
        // Each record is counted once by its sender and once by its receiver.
        let records = ((after.0 .2 - before.0 .2) + (after.1 .2 - before.1 .2)) / 2;
        self.row(
            &format!("anti-entropy, {keys} keys, one differing"),
            format!(
                "{bytes} bytes, {records} records, settled in {} ms",
                settle.as_millis()
            ),
            "one record ~60 bytes".into(),
            "about one record",
        );
        self.json.insert(
            "anti_entropy".into(),
            json!({"keys": keys, "equal_bytes_per_session": equal_bytes, "one_diff_bytes": bytes,
                   "one_diff_records": records, "one_diff_settle_ms": settle.as_millis() as u64}),
        );
        drop((ac, bc));
        a.shutdown().await;
        b.shutdown().await;
    }
}

// ---- helpers ----

async fn start(dir: PathBuf, bootstrap: Vec<Multiaddr>) -> Node {
    let mut c = Config::new(dir);
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.bootstrap = bootstrap;
    c.network = "bench".into();
    c.announce_interval = Duration::from_secs(1);
    c.sync_interval = Duration::from_secs(1);
    c.retry_interval = Duration::from_secs(1);
    if let Some(n) = std::env::var("DFS_BENCH_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.chunks_in_flight = n;
    }
    Node::start(c).await.expect("node starts")
}

async fn addr(node: &Node) -> Multiaddr {
    node.client().info().await.unwrap().addrs[0].clone()
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "benchmark condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn mem_total_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

/// Writes `size` pseudo-random bytes to `path`.
fn write_payload(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// Moves `size` bytes over one bare libp2p stream (TCP + noise + yamux, as dfs uses) between two
/// swarms in this process; returns the seconds it took.
async fn bare_stream(size: u64) -> f64 {
    const PROTO: StreamProtocol = StreamProtocol::new("/dfs-bench/bare/1");
    let swarm = || {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    };
    let mut receiver = swarm();
    let mut sender = swarm();
    receiver
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let listen = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
            receiver.select_next_some().await
        {
            break address;
        }
    };
    let receiver_id = *receiver.local_peer_id();
    let mut incoming = receiver.behaviour().new_control().accept(PROTO).unwrap();
    let mut control = sender.behaviour().new_control();
    tokio::spawn(async move {
        loop {
            receiver.select_next_some().await;
        }
    });
    sender
        .dial(listen.with(libp2p::multiaddr::Protocol::P2p(receiver_id)))
        .unwrap();
    tokio::spawn(async move {
        loop {
            sender.select_next_some().await;
        }
    });
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let reader = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            r.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let t = Instant::now();
    let mut stream = loop {
        match control.open_stream(receiver_id, PROTO).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let t0 = Instant::now();
    let chunk = vec![0x5Au8; CHUNK_SIZE];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).await.unwrap();
        left -= n as u64;
    }
    stream.close().await.unwrap();
    reader.await.unwrap();
    assert_eq!(received.load(Ordering::Relaxed), size);
    let _ = t;
    t0.elapsed().as_secs_f64()
}

// ---- process-based figures (the real binary and its API) ----

/// A `dfs node` process with its data dir, API URL and token.
struct Proc {
    child: Child,
    dir: PathBuf,
    url: String,
    token: String,
}

impl Proc {
    fn start(bin: &Path, dir: PathBuf, bootstrap: Option<&str>) -> Proc {
        let mut args = vec![
            "node".to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            "/ip4/127.0.0.1/tcp/0".into(),
            "--api".into(),
            "127.0.0.1:0".into(),
            "--network".into(),
            "bench".into(),
            "--sync-interval-ms".into(),
            "1000".into(),
            "--announce-interval-ms".into(),
            "1000".into(),
        ];
        if let Some(b) = bootstrap {
            args.push("--bootstrap".into());
            args.push(b.into());
        }
        let child = Command::new(bin)
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dfs node");
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            if let Ok(u) = std::fs::read_to_string(dir.join("api")) {
                if !u.trim().is_empty() {
                    break u.trim().to_string();
                }
            }
            assert!(Instant::now() < deadline, "node did not write its api file");
            std::thread::sleep(Duration::from_millis(20));
        };
        let token = std::fs::read_to_string(dir.join("api-token"))
            .unwrap()
            .trim()
            .to_string();
        Proc {
            child,
            dir,
            url,
            token,
        }
    }

    fn peak_rss_mib(&self) -> f64 {
        peak_rss_kib(self.child.id()) as f64 / 1024.0
    }

    /// Runs a CLI command against this node; returns (seconds, peak RSS MiB of the CLI, stdout).
    fn cli(&self, bin: &Path, args: &[&str]) -> (f64, f64, String) {
        let t = Instant::now();
        let mut child = Command::new(bin)
            .args(args)
            .args(["--data-dir", &self.dir.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut peak = 0;
        let mut out = String::new();
        let mut stdout = child.stdout.take().unwrap();
        let pid = child.id();
        let watcher = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
            s
        });
        loop {
            peak = peak.max(peak_rss_kib(pid));
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "dfs {args:?} failed");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        out.push_str(&watcher.join().unwrap());
        (t.elapsed().as_secs_f64(), peak as f64 / 1024.0, out)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn first_addr(bin: &Path, p: &Proc) -> String {
    let (_, _, out) = p.cli(bin, &["id", "--json"]);
    let v: Value = serde_json::from_str(&out).expect("id --json");
    v["addrs"][0].as_str().unwrap().to_string()
}

impl Bench {
    fn processes(&mut self) {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_dfs"));
        self.api_put_get(&bin);
        self.many_puts(&bin);
    }

    /// Put and get of the large file through the CLI and API, against a plain copy; memory of
    /// the node processes and of the CLI.
    fn api_put_get(&mut self, bin: &Path) {
        let size = self.plan.file_mib * MIB;
        let payload = self.dir.join("payload");
        write_payload(&payload, size);
        // Reference: a plain copy of the same bytes on the same filesystem, made durable.
        let copy = self.dir.join("copy");
        let t = Instant::now();
        std::fs::copy(&payload, &copy).unwrap();
        std::fs::File::open(&copy).unwrap().sync_all().unwrap();
        let copy_s = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&copy);
        let copy_mibs = size as f64 / MIB as f64 / copy_s;

        let src = Proc::start(bin, self.sub("p-src"), None);
        let idle_rss = src.peak_rss_mib();
        let payload_s = payload.display().to_string();
        let (put_s, put_cli_rss, _) = src.cli(bin, &["put", &payload_s, "--key", "big"]);
        let put_mibs = size as f64 / MIB as f64 / put_s;
        let put_node_rss = src.peak_rss_mib();
        self.row(
            &format!("put {} MiB through the CLI and API", self.plan.file_mib),
            format!(
                "{put_mibs:.0} MiB/s ({:.0}% of copy)",
                100.0 * put_mibs / copy_mibs
            ),
            format!("plain copy + fsync {copy_mibs:.0} MiB/s"),
            ">= 70%",
        );
        let out = self.dir.join("out");
        let out_s = out.display().to_string();
        let (get_s, get_cli_rss, _) = src.cli(bin, &["get", "big", "-o", &out_s]);
        let get_mibs = size as f64 / MIB as f64 / get_s;
        assert_eq!(std::fs::metadata(&out).unwrap().len(), size);
        let _ = std::fs::remove_file(&out);
        self.row(
            &format!(
                "get {} MiB through the CLI and API (local)",
                self.plan.file_mib
            ),
            format!("{get_mibs:.0} MiB/s"),
            format!("plain copy + fsync {copy_mibs:.0} MiB/s"),
            "-",
        );
        // A second node process fetches it.
        let addr = first_addr(bin, &src);
        let dst = Proc::start(bin, self.sub("p-dst"), Some(&addr));
        let t = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let (_, _, out) = dst.cli(bin, &["stat", "big", "--json"]);
            let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            if v["local"] == Value::Bool(true) {
                break;
            }
            assert!(Instant::now() < deadline, "process fetch did not finish");
            std::thread::sleep(Duration::from_millis(100));
        }
        let fetch_s = t.elapsed().as_secs_f64();
        let src_rss = src.peak_rss_mib();
        let dst_rss = dst.peak_rss_mib();
        self.row(
            &format!("peak memory, {} MiB put and fetch", self.plan.file_mib),
            format!(
                "node {put_node_rss:.0} MiB after put, source {src_rss:.0} MiB, receiver {dst_rss:.0} MiB; CLI put {put_cli_rss:.0} MiB, get {get_cli_rss:.0} MiB"
            ),
            format!("file {} MiB; idle node {idle_rss:.0} MiB", self.plan.file_mib),
            "< 100 MiB",
        );
        self.json.insert(
            "api".into(),
            json!({"bytes": size, "copy_mib_s": copy_mibs, "put_mib_s": put_mibs,
                   "put_ratio": put_mibs / copy_mibs, "get_mib_s": get_mibs,
                   "process_fetch_mib_s": size as f64 / MIB as f64 / fetch_s,
                   "rss_mib": {"idle_node": idle_rss, "node_after_put": put_node_rss,
                               "source_node": src_rss, "receiving_node": dst_rss,
                               "cli_put": put_cli_rss, "cli_get": get_cli_rss}}),
        );
        drop(dst);
        drop(src);
        let _ = std::fs::remove_file(&payload);
        let _ = std::fs::remove_dir_all(self.dir.join("p-src"));
        let _ = std::fs::remove_dir_all(self.dir.join("p-dst"));
    }

    /// Many small durable puts through the API, then full replication on five nodes.
    fn many_puts(&mut self, bin: &Path) {
        let n = self.plan.many_puts;
        let mut nodes: Vec<Proc> = Vec::new();
        for i in 0..5 {
            let boot = nodes.last().map(|p| first_addr(bin, p));
            nodes.push(Proc::start(
                bin,
                self.sub(&format!("m{i}")),
                boot.as_deref(),
            ));
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let http = reqwest::Client::new();
        // (records known, contents complete locally) on a node.
        let count = |p: &Proc| {
            let http = http.clone();
            let url = format!("{}/v1/files", p.url);
            let token = p.token.clone();
            async move {
                let r = http.get(url).bearer_auth(token).send().await.ok()?;
                let v: Value = r.json().await.ok()?;
                let list = v.as_array()?;
                let local = list
                    .iter()
                    .filter(|e| e["local"] == Value::Bool(true))
                    .count();
                Some((list.len(), local))
            }
        };
        // Wait for the cluster to form.
        rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let mut ok = true;
                for p in &nodes {
                    let r = http
                        .get(format!("{}/v1/peers", p.url))
                        .bearer_auth(&p.token)
                        .send()
                        .await
                        .unwrap();
                    let v: Value = r.json().await.unwrap();
                    if v.as_array().map(|a| a.len()).unwrap_or(0) < 4 {
                        ok = false;
                    }
                }
                if ok || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let writer = &nodes[0];
        let t = Instant::now();
        rt.block_on(async {
            futures::stream::iter(0..n)
                .map(|i| {
                    let http = http.clone();
                    let url = format!("{}/v1/files/small-{i}", writer.url);
                    let token = writer.token.clone();
                    async move {
                        let body = vec![(i % 251) as u8; 4096];
                        let r = http
                            .put(url)
                            .bearer_auth(token)
                            .body(body)
                            .send()
                            .await
                            .unwrap();
                        assert!(r.status().is_success(), "put failed: {}", r.status());
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<()>>()
                .await;
        });
        let put_s = t.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut records_s = 0.0;
        rt.block_on(async {
            for p in &nodes {
                loop {
                    if count(p).await.is_some_and(|(records, _)| records == n) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "replication of records did not finish"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            records_s = t.elapsed().as_secs_f64();
            for p in &nodes {
                loop {
                    if count(p).await.is_some_and(|(_, local)| local == n) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "replication of contents did not finish"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        let all_s = t.elapsed().as_secs_f64();
        self.row(
            &format!("{n} puts of 4 KiB through the API, 5 nodes"),
            format!(
                "{:.0} puts/s durable; every record on all 5 nodes after {records_s:.1} s, every file after {all_s:.1} s ({:.0} files/s)",
                n as f64 / put_s,
                n as f64 / all_s
            ),
            "32 concurrent clients".into(),
            ">= 1,000 puts/s",
        );
        self.json.insert(
            "small_puts".into(),
            json!({"puts": n, "puts_per_s": n as f64 / put_s, "records_replicated_s": records_s, "replicated_s": all_s,
                   "files_per_s_replicated": n as f64 / all_s, "quick": self.plan.quick}),
        );
        drop(nodes);
        for i in 0..5 {
            let _ = std::fs::remove_dir_all(self.dir.join(format!("m{i}")));
        }
    }
}
