//! The dfs benchmark (`cargo bench --bench cluster`): every figure measured in one run next to
//! its reference, printed as a table (measured, reference, ratio, target, met) and written as
//! JSON. Full run: 1 GiB transfers, clusters of 5/10/20, 10,000 puts, 100,000 keys; `-- --quick`
//! runs everything at small sizes (CI's smoke run). Targets are reported, never asserted; a node
//! that does not start or a transfer that never completes fails the run.
//!
//! Environment:
//! - `DFS_BENCH_DIR`: where data dirs of the fetch, put and replication figures go (default
//!   `/dev/shm` when present, so that the disk does not hide the network path);
//! - `DFS_BENCH_DISK_DIR`: a dir on a real disk for the durable small puts (default
//!   `target/bench-disk`);
//! - `DFS_BENCH_CATCHUP_KEYS`: records of the catch-up figure (100,000 in the full run);
//! - `DFS_BENCH_JSON`: output file (default `target/bench/results.json`);
//! - `DFS_BENCH_FILE_MIB`: size of the large file; `DFS_BENCH_ROUNDS`: rounds of the fetch and
//!   put figures (median reported; 5 in the full run, 3 in the quick one);
//! - `DFS_BENCH_UNSERVABLE`: records of the unservable-records figure (60,000 in the full run);
//! - `DFS_BENCH_ONLY`: comma-separated subset of
//!   `fetch,put,small,replication,latency,mesh,sync,catchup,unservable`
//!   (`api` stands for `put,small,replication`).
//!
//! Hidden arguments `--bare-recv` and `--bare-send ADDR BYTES` make this binary one end of the
//! bare libp2p stream (see `bare.rs`).

mod bare;
mod catchup;
mod fetch;
mod hostile;
mod inproc;
mod latency;
mod mesh;
mod procs;
mod put;
mod replication;
mod report;
mod small_puts;
mod sync;
mod util;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use report::{Report, Row};
use util::mem_total_mib;

/// Sizes and counts of one run.
pub struct Plan {
    pub quick: bool,
    pub file_mib: u64,
    pub rounds: usize,
    pub clusters: Vec<usize>,
    pub latency_puts: usize,
    /// Separate node processes of the mesh figure, and puts timed on them.
    pub mesh_nodes: usize,
    pub mesh_puts: usize,
    pub small_puts: usize,
    pub clients: usize,
    pub replication_puts: usize,
    pub sync_keys: usize,
    /// Records of the catch-up figure (`DFS_BENCH_CATCHUP_KEYS` overrides).
    pub catchup_keys: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        let mut plan = if quick {
            Plan {
                quick,
                file_mib: 32,
                rounds: 3,
                clusters: vec![3, 5],
                latency_puts: 5,
                mesh_nodes: 5,
                mesh_puts: 5,
                small_puts: 1_000,
                clients: 32,
                replication_puts: 300,
                sync_keys: 5_000,
                catchup_keys: 5_000,
            }
        } else {
            Plan {
                quick,
                file_mib: 1024,
                // Five: the median then ignores the odd slow round (the first three-source
                // round, right after the sources replicated, often is one).
                rounds: 5,
                clusters: vec![5, 10, 20],
                latency_puts: 20,
                mesh_nodes: 20,
                mesh_puts: 40,
                small_puts: 10_000,
                clients: 32,
                replication_puts: 10_000,
                sync_keys: 100_000,
                catchup_keys: 100_000,
            }
        };
        if let Some(mib) = env_number("DFS_BENCH_FILE_MIB") {
            plan.file_mib = mib.max(1);
        }
        if let Some(rounds) = env_number("DFS_BENCH_ROUNDS") {
            plan.rounds = rounds.max(1) as usize;
        }
        plan
    }
}

/// The run's state: plan, where data goes, the `dfs` binary, and what was measured.
pub struct Bench {
    pub plan: Plan,
    /// Data dirs of the fetch, put and replication figures (`DFS_BENCH_DIR`).
    pub dir: PathBuf,
    /// `dir` with its filesystem type, for the table.
    pub dir_kind: String,
    /// Data dir parent of the durable small puts (`DFS_BENCH_DISK_DIR`).
    pub disk_dir: PathBuf,
    /// `disk_dir`'s parent with its filesystem type, for the table.
    pub disk_kind: String,
    /// The release `dfs` binary that cargo built for this bench.
    pub bin: PathBuf,
    pub report: Report,
    /// Peak RSS (MiB) of every `dfs` process, by role.
    pub rss: Vec<(String, f64)>,
}

impl Bench {
    /// An empty dir `name` under [`Bench::dir`].
    pub fn sub(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a bench dir");
        p
    }

    /// Records the peak RSS of one process.
    pub fn rss(&mut self, role: &str, mib: f64) {
        self.rss.push((role.to_string(), mib));
    }

    /// How long one transfer of the large file may take before the run fails (10 MiB/s + 60 s).
    pub fn transfer_timeout(&self) -> Duration {
        Duration::from_secs(60) + Duration::from_millis(self.plan.file_mib * 100)
    }

    /// The peak memory row: the largest peak RSS of every `dfs` process of the figures above.
    fn memory_row(&mut self) {
        if self.rss.is_empty() {
            return;
        }
        let (role, max) = self
            .rss
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .cloned()
            .expect("non-empty");
        let all: Vec<String> = self
            .rss
            .iter()
            .map(|(r, m)| format!("{r} {m:.0}"))
            .collect();
        self.report.row(Row {
            figure: format!(
                "peak RSS (VmHWM) of every node and CLI process, file of {}",
                util::size_text(self.plan.file_mib)
            ),
            measured: format!("{max:.0} MiB ({role})"),
            reference: format!("MiB by process: {}", all.join(", ")),
            ratio: None,
            target: "< 100 MiB".into(),
            met: Some(max < 100.0),
        });
        let by_role: serde_json::Map<String, serde_json::Value> = self
            .rss
            .iter()
            .map(|(r, m)| (r.clone(), json!(m)))
            .collect();
        self.report
            .section("peak_rss_mib", json!({"max": max, "by_process": by_role}));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == bare::RECV_ARG) {
        bare::recv_main();
        return;
    }
    if let Some(i) = args.iter().position(|a| a == bare::SEND_ARG) {
        let addr = args.get(i + 1).expect("--bare-send ADDR BYTES");
        let bytes = args
            .get(i + 2)
            .and_then(|b| b.parse().ok())
            .expect("--bare-send ADDR BYTES");
        bare::send_main(addr, bytes);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let plan = Plan::new(quick);
    let only = std::env::var("DFS_BENCH_ONLY")
        .unwrap_or_default()
        .replace("api", "put,small,replication");
    let wanted = |s: &str| only.is_empty() || only.split(',').any(|o| o.trim() == s);

    let base = std::env::var_os("DFS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            }
        });
    let disk_base = std::env::var_os("DFS_BENCH_DISK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-disk"));
    std::fs::create_dir_all(&disk_base).expect("create DFS_BENCH_DISK_DIR");
    let dir = tempfile::Builder::new()
        .prefix("dfs-bench-")
        .tempdir_in(&base)
        .expect("bench dir");
    let disk_dir = tempfile::Builder::new()
        .prefix("dfs-bench-")
        .tempdir_in(&disk_base)
        .expect("bench disk dir");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut bench = Bench {
        plan,
        dir: dir.path().to_path_buf(),
        dir_kind: fs_kind(&base),
        disk_dir: disk_dir.path().to_path_buf(),
        disk_kind: fs_kind(&disk_base),
        bin: PathBuf::from(env!("CARGO_BIN_EXE_dfs")),
        report: Report::default(),
        rss: Vec::new(),
    };
    bench.report.section(
        "machine",
        json!({"cores": cores, "memory_mib": mem_total_mib(), "data_dir": bench.dir_kind,
               "disk_dir": bench.disk_kind, "quick": quick,
               "file_mib": bench.plan.file_mib, "rounds": bench.plan.rounds}),
    );
    println!(
        "dfs benchmark ({}), data dirs under {}, small puts under {}, {cores} cores, {} MiB memory",
        if quick { "quick" } else { "full" },
        bench.dir_kind,
        bench.disk_kind,
        mem_total_mib()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if wanted("fetch") {
            fetch::run(&mut bench).await;
        }
        if wanted("put") {
            put::run(&mut bench).await;
        }
        if wanted("small") {
            small_puts::run(&mut bench).await;
        }
        if wanted("replication") {
            replication::run(&mut bench).await;
        }
        if wanted("mesh") {
            mesh::run(&mut bench).await;
        }
        bench.memory_row();
        if wanted("latency") {
            latency::run(&mut bench).await;
        }
        if wanted("sync") {
            sync::run(&mut bench).await;
        }
        if wanted("catchup") {
            catchup::run(&mut bench).await;
        }
        if wanted("unservable") {
            hostile::run(&mut bench).await;
        }
    });
    drop(rt);
    let path = std::env::var_os("DFS_BENCH_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench/results.json"));
    bench.report.finish(&path);
}

/// `PATH (fstype)`, the type from the longest matching mount point in /proc/mounts.
fn fs_kind(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let kind = std::fs::read_to_string("/proc/mounts")
        .ok()
        .and_then(|mounts| {
            mounts
                .lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
                    path.starts_with(point)
                        .then(|| (point.len(), kind.to_string()))
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, kind)| kind)
        })
        .unwrap_or_else(|| "?".into());
    format!("{} ({kind})", path.display())
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}
