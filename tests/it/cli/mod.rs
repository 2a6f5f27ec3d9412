//! Tests that run the real `dfs` binary: `dfs node` processes on loopback with temporary data
//! dirs, the CLI commands against them, and the local API over HTTP. They wait for conditions
//! with deadlines, never for fixed sleeps.

mod files;
mod running;

use files::*;
use running::*;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test; `DFS_TEST_BIN` overrides it (useful when several checkouts share one
/// target dir and another build may replace `target/debug/dfs` while the tests run).
fn dfs_bin() -> String {
    std::env::var("DFS_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dfs").to_string())
}
/// How long a node may take to start, and a cluster to converge.
const DEADLINE: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;

/// A `dfs` command with none of the caller's DFS_* settings.
fn dfs() -> Command {
    let mut c = Command::new(dfs_bin());
    for v in [
        "DFS_DATA_DIR",
        "DFS_API",
        "DFS_API_TOKEN",
        "DFS_LISTEN",
        "DFS_BOOTSTRAP",
        "DFS_NETWORK",
        "RUST_LOG",
    ] {
        c.env_remove(v);
    }
    c.stdin(Stdio::null());
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `deadline`.
fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Pseudo-random bytes (xorshift), so tests need no RNG.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A `dfs node` process with its own temp data dir, API on a free port; killed on drop.
struct TestNode {
    child: Child,
    dir: tempfile::TempDir,
}

impl TestNode {
    /// A node in a network of its own (`_label` names it in the test only), or, with
    /// `bootstrap`, a reader of the bootstrap peer's network.
    fn start(_label: &str, bootstrap: Option<&str>) -> TestNode {
        Self::spawn(bootstrap.map(|b| ["--bootstrap", b]))
    }

    /// A node that joins `admin`'s network as a writer, with a ticket from `dfs invite`.
    fn join(admin: &TestNode) -> TestNode {
        let ticket = admin.json(&["invite", "--json"])["ticket"]
            .as_str()
            .unwrap()
            .to_string();
        Self::spawn(Some(["--join", &ticket]))
    }

    fn spawn(extra: Option<[&str; 2]>) -> TestNode {
        Self::spawn_args(extra.as_ref().map_or(&[][..], |e| &e[..]))
    }

    /// A node with more flags (`extra`), on a fresh data dir.
    fn spawn_args(extra: &[&str]) -> TestNode {
        let mut args = vec!["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"];
        args.extend(extra.iter().copied());
        Self::custom(tempfile::tempdir().unwrap(), &args, &[])
    }

    /// A node on `dir` (data dir `dir/data`, log `dir/node.log`) with exactly these flags
    /// (beyond the test intervals) and environment variables.
    fn custom(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> TestNode {
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let mut cmd = dfs();
        cmd.arg("node")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .args([
                "--announce-interval-ms",
                "500",
                "--sync-interval-ms",
                "1000",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("spawn dfs node");
        let mut node = TestNode { child, dir };
        let api = node.data().join("api");
        eventually("the node's api file", DEADLINE, || {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("dfs node exited with {status}: {}", node.log());
            }
            api.exists().then_some(())
        });
        node
    }

    /// Kills the node (as a crash or `kill -9` would) and hands back its directory, without
    /// the stale `api` file (so that a restart is waited for, not taken for running).
    fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.data().join("api"));
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        std::fs::read_to_string(self.data().join("api"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.data().join("api-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs `dfs <args> --data-dir <this node's data dir>`.
    fn run(&self, args: &[&str]) -> Output {
        dfs()
            .args(args)
            .arg("--data-dir")
            .arg(self.data())
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed and print JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "dfs {args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("dfs {args:?} printed no JSON ({e}): {}", stdout(&out)))
    }

    /// This node's first listen address (ends in /p2p/<id>).
    fn addr(&self) -> String {
        self.json(&["id", "--json"])["addrs"][0]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn peer_id(&self) -> String {
        self.json(&["id", "--json"])["peer_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
