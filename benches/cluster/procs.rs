//! `dfs node` processes and CLI calls of the release binary: start a node with its data dir,
//! API and bootstrap peers, talk to its HTTP API, read peak RSS (VmHWM) from /proc, kill it on
//! drop. Every wait has a deadline and panics when it passes, so that the run fails loudly.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

/// How often a waiting loop looks again.
pub const POLL: Duration = Duration::from_millis(10);

/// How long a node may take to write its `api` file.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `dfs node` process.
pub struct NodeProc {
    child: Child,
    pid: u32,
    bin: PathBuf,
    pub dir: PathBuf,
    pub url: String,
    pub token: String,
    http: reqwest::Client,
}

impl NodeProc {
    /// Starts `dfs node` on a fresh data dir `dir` (emptied first), listening on loopback with
    /// an ephemeral API port, and waits until its API is up (its `api` file is written). Without
    /// `bootstrap` it creates and owns a network; with it, it joins theirs as a reader (the
    /// benchmark writes on owners only).
    pub async fn start(bin: &Path, dir: PathBuf, bootstrap: &[String]) -> NodeProc {
        NodeProc::start_with(bin, dir, bootstrap, &[]).await
    }

    /// [`NodeProc::start`] with more `dfs node` arguments (such as `--join TICKET`).
    pub async fn start_with(
        bin: &Path,
        dir: PathBuf,
        bootstrap: &[String],
        extra: &[String],
    ) -> NodeProc {
        let _ = std::fs::remove_dir_all(&dir);
        NodeProc::start_in(bin, dir, bootstrap, extra).await
    }

    /// [`NodeProc::start_with`] on a data dir as it is (not emptied: seeded beforehand).
    pub async fn start_in(
        bin: &Path,
        dir: PathBuf,
        bootstrap: &[String],
        extra: &[String],
    ) -> NodeProc {
        std::fs::create_dir_all(&dir).expect("create a node's data dir");
        let mut cmd = Command::new(bin);
        cmd.arg("node")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
            .args([
                "--sync-interval-ms",
                "1000",
                "--announce-interval-ms",
                "1000",
            ]);
        for b in bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        cmd.args(extra);
        let mut child = spawn_quiet(cmd.env("RUST_LOG", "warn"), bin);
        let pid = child.id().expect("a running node has a pid");
        let deadline = Instant::now() + START_TIMEOUT;
        let url = loop {
            if let Ok(u) = std::fs::read_to_string(dir.join("api")) {
                if !u.trim().is_empty() {
                    break u.trim().to_string();
                }
            }
            if let Some(status) = child.try_wait().expect("wait for a node") {
                panic!("dfs node in {} exited at start: {status}", dir.display());
            }
            assert!(
                Instant::now() < deadline,
                "dfs node in {} did not write its api file within {START_TIMEOUT:?}",
                dir.display()
            );
            tokio::time::sleep(POLL).await;
        };
        let token = std::fs::read_to_string(dir.join("api-token"))
            .expect("a started node has an api-token file")
            .trim()
            .to_string();
        NodeProc {
            child,
            pid,
            bin: bin.to_path_buf(),
            dir,
            url,
            token,
            http: reqwest::Client::new(),
        }
    }

    /// GET `path` of the API as JSON; `None` on any error or non-success status.
    pub async fn get_json(&self, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// The node's first listen multiaddr (ending in `/p2p/<peer id>`), for `--bootstrap`.
    pub async fn addr(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(a) = self.get_json("/v1/id").await.and_then(|v| {
                v["addrs"]
                    .get(0)
                    .and_then(|a| a.as_str())
                    .map(str::to_string)
            }) {
                return a;
            }
            assert!(Instant::now() < deadline, "no address from /v1/id");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the whole content of `key` is stored on this node (`local` of its Stat).
    pub async fn is_local(&self, key: &str) -> bool {
        self.get_json(&format!("/v1/stat/{key}"))
            .await
            .is_some_and(|v| v["local"] == Value::Bool(true))
    }

    /// Polls every [`POLL`] until `key` is local here; panics after `timeout`.
    pub async fn wait_local(&self, key: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.is_local(key).await {
            assert!(
                Instant::now() < deadline,
                "{key} did not become local on the node in {} within {timeout:?}",
                self.dir.display()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Number of connected peers.
    pub async fn peer_count(&self) -> usize {
        self.get_json("/v1/peers")
            .await
            .and_then(|v| v.as_array().map(|a| a.len()))
            .unwrap_or(0)
    }

    /// Peak resident memory of the node so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        peak_rss_kib(self.pid) as f64 / 1024.0
    }

    /// Resident memory of the node now (VmRSS), in MiB.
    pub fn rss_mib(&self) -> f64 {
        status_kib(self.pid, "VmRSS:") as f64 / 1024.0
    }

    /// Runs `dfs ARGS --data-dir DIR` against this node.
    pub async fn cli(&self, args: &[&str], timeout: Duration) -> CliRun {
        let dir = self.dir.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", &dir]);
        cli(&self.bin, &all, timeout).await
    }

    /// Kills the node (SIGKILL), waits for it, and returns its peak RSS in MiB.
    pub async fn stop(mut self) -> f64 {
        let rss = self.peak_rss_mib();
        let _ = self.child.kill().await;
        rss
    }
}

/// One finished CLI call.
pub struct CliRun {
    /// From spawning the process to its exit.
    pub secs: f64,
    /// Peak RSS of the CLI process (VmHWM, sampled every 5 ms), in MiB.
    pub peak_rss_mib: f64,
}

/// Starts a process with no stdin or stdout (stderr shown), killed when dropped.
fn spawn_quiet(cmd: &mut Command, bin: &Path) -> tokio::process::Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

/// Runs `bin ARGS`, sampling its peak RSS while it runs; panics if it fails or outlives
/// `timeout`.
pub async fn cli(bin: &Path, args: &[&str], timeout: Duration) -> CliRun {
    let t = Instant::now();
    let child = spawn_quiet(Command::new(bin).args(args), bin);
    let pid = child.id().expect("a running CLI has a pid");
    let out = child.wait_with_output();
    tokio::pin!(out);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut peak = peak_rss_kib(pid);
    let output = loop {
        tokio::select! {
            r = &mut out => break r.expect("wait for the CLI"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => peak = peak.max(peak_rss_kib(pid)),
            _ = &mut deadline => panic!("dfs {args:?} did not finish within {timeout:?}"),
        }
    };
    let secs = t.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "dfs {args:?} failed: {}",
        output.status
    );
    CliRun {
        secs,
        peak_rss_mib: peak as f64 / 1024.0,
    }
}

/// VmHWM of a process in KiB (0 once it is gone).
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A field of `/proc/PID/status` in KiB (0 once the process is gone).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
