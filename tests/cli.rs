//! Tests that run the real `dfs` binary: `dfs node` processes on loopback with temporary data
//! dirs, the CLI commands against them, and the local API over HTTP. They wait for conditions
//! with deadlines, never for fixed sleeps.

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
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let mut cmd = dfs();
        cmd.arg("node")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
            .args([
                "--announce-interval-ms",
                "500",
                "--sync-interval-ms",
                "1000",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        cmd.args(extra);
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

#[test]
fn three_nodes_put_get_ls_stat_peers_id_and_rm() {
    let a = TestNode::start("cli-three", None);
    let b = TestNode::join(&a);
    let c = TestNode::join(&a);
    let nodes = [&a, &b, &c];
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id()).collect();

    // Every node learns of the two others (c only knows a at first: gossip does the rest).
    for (i, n) in nodes.iter().enumerate() {
        let peers = eventually("the mesh", DEADLINE, || {
            let peers = n.json(&["peers", "--json"]);
            (peers.as_array().unwrap().len() == 2).then_some(peers)
        });
        let mut seen: Vec<&str> = peers
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["peer_id"].as_str().unwrap())
            .collect();
        seen.sort();
        let mut want: Vec<&str> = ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.as_str())
            .collect();
        want.sort();
        assert_eq!(seen, want);
        assert!(peers[0]["addrs"].is_array());
    }
    let text = stdout(&a.run(&["peers"]));
    assert!(text.contains(&ids[1]) && text.contains(&ids[2]), "{text}");

    // id, text and JSON.
    let id = a.json(&["id", "--json"]);
    assert_eq!(id["peer_id"], ids[0]);
    let addr = id["addrs"][0].as_str().unwrap();
    assert!(addr.starts_with("/ip4/127.0.0.1/tcp/") && addr.ends_with(&format!("/p2p/{}", ids[0])));
    let text = stdout(&a.run(&["id"]));
    assert!(text.contains(&ids[0]) && text.contains(addr), "{text}");

    // put on a, get on c: identical bytes.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("big.bin");
    let content = data(3 * MIB + 5, 7);
    std::fs::write(&file, &content).unwrap();
    let out = a.run(&["put", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("big.bin"));
    let copy = work.path().join("copy.bin");
    let out = c.run(&["get", "big.bin", "-o", copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read(&copy).unwrap() == content,
        "get -o gave other bytes"
    );
    let out = c.run(&["get", "big.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == content, "get to stdout gave other bytes");

    // stat and ls, text and JSON, on every node once replicated.
    for n in nodes {
        let stat = eventually("replication", DEADLINE, || {
            let s = n.json(&["stat", "big.bin", "--json"]);
            (s["local"] == true).then_some(s)
        });
        assert_eq!(stat["key"], "big.bin");
        assert_eq!(stat["size"], content.len() as u64);
        assert_eq!(stat["content_id"].as_str().unwrap().len(), 64);
        assert!(stat["version"].as_u64().unwrap() > 0);
        assert_eq!(stat["author"], ids[0]);
        assert_eq!(stat["deleted"], false);
        // `stat` also names the holders (this node at least), `ls` does not.
        let mut stat = stat;
        let holders = stat.as_object_mut().unwrap().remove("holders").unwrap();
        assert!(!holders.as_array().unwrap().is_empty(), "{holders}");
        let ls = n.json(&["ls", "--json"]);
        assert_eq!(ls.as_array().unwrap().len(), 1);
        assert_eq!(ls[0], stat);
        let text = stdout(&n.run(&["ls"]));
        assert!(text.contains("big.bin") && text.contains("3145733") && text.contains("local"));
        let text = stdout(&n.run(&["stat", "big.bin"]));
        assert!(text.contains("3145733") && text.contains(&ids[0]), "{text}");
    }

    // rm on b removes it everywhere.
    let out = b.run(&["rm", "big.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for n in nodes {
        eventually("the delete to spread", DEADLINE, || {
            let s = n.json(&["stat", "big.bin", "--json"]);
            (s["deleted"] == true).then_some(())
        });
        let stat = n.json(&["stat", "big.bin", "--json"]);
        assert_eq!(stat["content_id"], Value::Null);
        assert_eq!(stat["author"], ids[1]);
        assert_eq!(n.json(&["ls", "--json"]), serde_json::json!([]));
        assert_eq!(
            n.json(&["ls", "--json", "--all"]).as_array().unwrap().len(),
            1
        );
        assert!(stdout(&n.run(&["ls", "--all"])).contains("deleted"));
        let out = n.run(&["get", "big.bin"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn range_requests_return_the_right_bytes() {
    let node = TestNode::start("cli-range", None);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("f");
    let content = data(3 * MIB + 5, 11);
    std::fs::write(&file, &content).unwrap();
    let out = node.run(&["put", file.to_str().unwrap(), "--key", "dir/with space"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let http = reqwest::Client::new();
    let url = format!("{}/v1/files/dir%2Fwith%20space", node.url());
    let token = node.token();
    let len = content.len() as u64;
    let get = |range: Option<&str>| {
        let mut req = http.get(&url).bearer_auth(&token);
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        req.send()
    };

    let res = get(None).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    assert_eq!(res.content_length(), Some(len));
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag.trim_matches('"').len(), 64);
    assert!(res.bytes().await.unwrap() == content);

    let m = MIB as u64;
    let cases: [(&str, u64, u64); 7] = [
        ("bytes=0-0", 0, 1),
        ("bytes=10-99", 10, 100),
        ("bytes=1048570-1048580", m - 6, m + 5), // across the first chunk boundary
        ("bytes=1048576-2097152", m, 2 * m + 1),
        ("bytes=3145000-", 3145000, len),
        ("bytes=-7", len - 7, len),
        ("bytes=5-99999999", 5, len),
    ];
    for (range, start, end) in cases {
        let res = get(Some(range)).await.unwrap();
        assert_eq!(res.status(), 206, "{range}");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes {start}-{}/{len}", end - 1).as_str(),
            "{range}"
        );
        assert_eq!(res.content_length(), Some(end - start), "{range}");
        let body = res.bytes().await.unwrap();
        assert!(
            body == content[start as usize..end as usize],
            "{range}: wrong bytes"
        );
    }

    let res = get(Some(&format!("bytes={len}-"))).await.unwrap();
    assert_eq!(res.status(), 416);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].is_string());
    let res = get(Some("bytes=9-3")).await.unwrap();
    assert_eq!(res.status(), 400);

    // HEAD: the headers of a GET, no body.
    let res = http.head(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], len.to_string().as_str());
    assert_eq!(res.headers()["etag"], etag.as_str());
    assert!(res.bytes().await.unwrap().is_empty());

    // The other JSON endpoints, and JSON errors.
    let stat: Value = http
        .get(format!("{}/v1/stat/dir%2Fwith%20space", node.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stat["key"], "dir/with space");
    assert_eq!(
        format!("\"{}\"", stat["content_id"].as_str().unwrap()),
        etag
    );
    let res = http
        .get(format!("{}/v1/files/missing", node.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "not found: missing"
    );
    let res = http
        .get(format!("{}/v1/files/%FF", node.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = http
        .put(format!("{}/v1/files/", node.url()))
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "invalid key: the key is empty"
    );
    let res = http
        .get(format!("{}/v1/health", node.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[test]
fn no_node_running_exits_2_fast_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = dfs()
        .args(["ls", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(t.elapsed() < Duration::from_secs(2));
    let err = stderr(&out);
    assert!(err.contains("dfs node --data-dir"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn stale_api_file_exits_2_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(dir.path().join("api"), format!("http://127.0.0.1:{port}\n")).unwrap();
    std::fs::write(dir.path().join("api-token"), "00\n").unwrap();
    for args in [&["ls"][..], &["get", "x"], &["id", "--json"]] {
        let t = Instant::now();
        let out = dfs()
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("cannot reach") && err.contains("dfs node"),
            "{err}"
        );
    }
}

#[test]
fn missing_key_exits_1_not_found() {
    let node = TestNode::start("cli-missing", None);
    for args in [&["get", "nope"][..], &["stat", "nope"], &["rm", "nope"]] {
        let out = node.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out).trim(), "error: not found: nope", "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_token_is_refused() {
    let node = TestNode::start("cli-token", None);
    let http = reqwest::Client::new();
    for token in [None, Some("wrong")] {
        let mut req = http.get(format!("{}/v1/files", node.url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert!(res.json::<Value>().await.unwrap()["error"].is_string());
    }
    let out = node.run(&["ls", "--token", "wrong"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("token") && err.contains("api-token"), "{err}");
    let out = dfs()
        .args(["ls", "--api", &node.url()])
        .env("DFS_API_TOKEN", "wrong")
        .arg("--data-dir")
        .arg(node.data())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // The right token through DFS_API and DFS_API_TOKEN works.
    let out = dfs()
        .args(["ls", "--json"])
        .env("DFS_API", node.url())
        .env("DFS_API_TOKEN", node.token())
        .env("DFS_DATA_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Runs `dfs node` with `args` (and a temp data dir unless given), expecting exit 2 and one
/// line on stderr.
fn node_refuses(args: &[&str], data_dir: Option<&Path>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir.map_or(dir.path().join("data"), Path::to_path_buf);
    let mut cmd = dfs();
    cmd.arg("node")
        .args(args)
        .arg("--data-dir")
        .arg(&data)
        .args(["--api", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // Bounded: a node that starts instead of refusing is killed and the test fails.
    let until = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dfs node {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn node_refuses_a_bad_multiaddr() {
    let err = node_refuses(&["--listen", "not-a-multiaddr"], None);
    assert!(err.contains("not-a-multiaddr"), "{err}");
    node_refuses(&["--bootstrap", "/ip4/1.2.3"], None);
}

#[test]
fn node_refuses_an_unknown_flag() {
    let err = node_refuses(&["--bogus-flag"], None);
    assert!(err.contains("--bogus-flag"), "{err}");
}

#[test]
fn node_refuses_an_unusable_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a dir").unwrap();
    let err = node_refuses(&[], Some(&file.join("data")));
    assert!(err.contains("data dir"), "{err}");
}

#[test]
fn node_refuses_a_remote_api_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dfs()
        .arg("node")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--api", "0.0.0.0:0", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--api-allow-remote"));
}

#[test]
fn client_disconnecting_mid_put_leaves_no_record() {
    let node = TestNode::start("cli-disconnect", None);
    let addr = node.url().trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "PUT /v1/files/partial HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 1000000\r\n\r\n",
        node.token()
    )
    .unwrap();
    s.write_all(&data(1000, 3)).unwrap();
    s.flush().unwrap();
    drop(s);

    // The node keeps working: a put and get after the broken one succeed.
    let out = dfs()
        .args(["put", "-", "--key", "whole", "--data-dir"])
        .arg(node.data())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(b"all of it")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.run(&["get", "whole"]).stdout, b"all of it");

    // The broken put left nothing, now or a moment later.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let ls = node.json(&["ls", "--json", "--all"]);
        let keys: Vec<&str> = ls
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["whole"]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = node.run(&["stat", "partial"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn put_from_stdin_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dfs()
        .args(["put", "-", "--api", "127.0.0.1:1", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--key"));
}

#[test]
fn demo_runs_three_nodes() {
    let t = Instant::now();
    let out = dfs().args(["demo", "--nodes", "3"]).output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("matches the original"), "{text}");
    assert!(text.contains("delete reached node  3"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(60));
}

#[test]
fn help_has_examples() {
    for sub in [
        "node", "put", "get", "rm", "ls", "stat", "peers", "id", "demo",
    ] {
        let out = dfs().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success());
        assert!(stdout(&out).contains("Example"), "dfs {sub} --help");
    }
    let out = dfs().arg("--help").output().unwrap();
    assert!(stdout(&out).contains("Examples"));
}

/// The data dir holds exactly the documented layout, with the secrets private, no temp file
/// left behind, and the api file removed when the node stops on SIGTERM.
#[cfg(unix)]
#[test]
fn data_dir_has_the_documented_layout() {
    use std::os::unix::fs::PermissionsExt;
    let mut node = TestNode::start("cli-layout", None);
    let data = node.data();
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["api", "api-token", "identity.key", "network", "store"]
    );
    assert!(data.join("store").is_dir());
    for secret in ["api-token", "identity.key"] {
        let mode = std::fs::metadata(data.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    assert!(
        node.url().starts_with("http://127.0.0.1:"),
        "{}",
        node.url()
    );
    assert_eq!(node.token().len(), 64);

    let pid = node.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = eventually("the node to stop", DEADLINE, || {
        node.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status}: {}", node.log());
    assert!(!data.join("api").exists());
    assert!(data.join("api-token").exists() && data.join("identity.key").exists());
}

/// `dfs put FILE` against a node on this machine hands the node the file's path
/// (`POST /v1/import/{key}`) instead of streaming it through HTTP; the API refuses what it cannot
/// read (422) and relative paths (400), and the CLI's put stores the same bytes either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_put_is_read_by_the_node_itself() {
    let node = TestNode::start("cli-import", None);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("big file");
    let content = data(2 * MIB + 7, 21);
    std::fs::write(&file, &content).unwrap();
    let http = reqwest::Client::new();
    let import = |key: &str, path: &str| {
        http.post(format!("{}/v1/import/{key}", node.url()))
            .bearer_auth(node.token())
            .json(&serde_json::json!({ "path": path }))
            .send()
    };
    let res = import("imported", file.to_str().unwrap()).await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.json::<Value>().await.unwrap()["size"],
        content.len() as u64
    );
    let got = http
        .get(format!("{}/v1/files/imported", node.url()))
        .bearer_auth(node.token())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got[..] == content[..], "the imported bytes come back");
    for (path, status) in [
        ("relative/path", 400),
        (work.path().to_str().unwrap(), 422),
        ("/nonexistent/dfs-test-file", 422),
    ] {
        let res = import("bad", path).await.unwrap();
        assert_eq!(res.status(), status, "{path}");
        assert!(res.json::<Value>().await.unwrap()["error"].is_string());
    }
    // The CLI's put of a local file, read back through the CLI.
    let out = node.run(&["put", file.to_str().unwrap(), "--key", "via-cli"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back = work.path().join("back");
    let out = node.run(&["get", "via-cli", "-o", back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&back).unwrap() == content);
}

/// Regression: libp2p listens with SO_REUSEPORT, so a second node on the same TCP port used to
/// start and take the first one's incoming connections. It must refuse: "address in use".
#[test]
fn two_nodes_cannot_listen_on_the_same_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let first_dir = tempfile::tempdir().unwrap();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut first = dfs()
        .arg("node")
        .arg("--data-dir")
        .arg(first_dir.path())
        .args(["--listen", &listen, "--api", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the first node's api file", DEADLINE, || {
        first_dir.path().join("api").exists().then_some(())
    });
    let err = node_refuses(&["--listen", &listen], None);
    assert!(err.contains("address in use"), "{err}");
    let _ = first.kill();
    let _ = first.wait();
}

/// Regression: a second node on one data dir said "Database already open. Cannot acquire lock"
/// (or that the API port was taken); it must say a node is already running there.
#[test]
fn second_node_on_one_data_dir_says_a_node_is_running() {
    let first = TestNode::start("cli-twice", None);
    let err = node_refuses(&["--listen", "/ip4/127.0.0.1/tcp/0"], Some(&first.data()));
    assert!(err.contains("already running on this data dir"), "{err}");
}

/// Regression: an address the transport cannot dial (QUIC; `/dns4/...` before DNS support)
/// was retried for ever; the node now refuses it at start with one clear line.
#[test]
fn node_refuses_an_unsupported_bootstrap_address() {
    let err = node_refuses(
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            "/ip4/127.0.0.1/udp/4001/quic-v1",
        ],
        None,
    );
    assert!(err.contains("--bootstrap: unsupported address"), "{err}");
}

/// Regression: a bare `dfs` printed an error line instead of the help.
#[test]
fn bare_dfs_prints_help() {
    let out = dfs().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("Usage: dfs <COMMAND>") && err.contains("Commands:"),
        "{err}"
    );
}

/// Regression: clap's "did you mean" tip was cut from the one-line error.
#[test]
fn a_mistyped_command_gets_a_suggestion() {
    let out = dfs().args(["gett", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("similar subcommand exists: 'get'"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Regression: `get -o -` created a file named `-`; it means standard output.
#[test]
fn get_dash_o_dash_writes_to_stdout() {
    let node = TestNode::start("cli-dash", None);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("f");
    std::fs::write(&file, b"dash dash").unwrap();
    let out = node.run(&["put", file.to_str().unwrap(), "--key", "d"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = dfs()
        .current_dir(work.path())
        .args(["get", "d", "-o", "-", "--data-dir"])
        .arg(node.data())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"dash dash");
    assert!(!work.path().join("-").exists(), "no file named -");
}

/// Regression: a `405` had an empty body; every error answer is JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_not_allowed_has_a_json_body() {
    let node = TestNode::start("cli-405", None);
    let res = reqwest::Client::new()
        .post(format!("{}/v1/files/x", node.url()))
        .bearer_auth(node.token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert!(res.json::<Value>().await.unwrap()["error"].is_string());
}

/// The trust commands end to end: a node that joins with --bootstrap alone is a reader whose
/// put exits 1 with one line on how to get write access; `dfs allow` lets it write, `dfs
/// members` shows it, `dfs deny` takes write access back; `dfs id` names network and role.
#[test]
fn reader_writes_only_after_allow_and_stops_after_deny() {
    let owner = TestNode::start("cli-trust", None);
    let reader = TestNode::start("cli-trust", Some(&owner.addr()));
    let id = owner.json(&["id", "--json"]);
    assert_eq!(id["role"], "admin");
    let network = id["network"].as_str().unwrap().to_string();
    assert_eq!(
        network,
        owner.peer_id(),
        "the network id is the owner's peer id"
    );
    let rid = reader.peer_id();
    eventually("the reader learns the network", DEADLINE, || {
        (reader.json(&["id", "--json"])["network"] == network.as_str()).then_some(())
    });
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("note.txt");
    std::fs::write(&file, b"hello").unwrap();
    let out = reader.run(&["put", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&format!("dfs allow {rid}")), "{err}");
    // A reader may not grant either.
    let out = reader.run(&["allow", &owner.peer_id()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let out = owner.run(&["allow", &rid]);
    assert!(out.status.success(), "{}", stderr(&out));
    let members = owner.json(&["members", "--json"]);
    let roles: Vec<(&str, &str)> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["peer_id"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert!(roles.contains(&(network.as_str(), "admin")), "{members}");
    assert!(roles.contains(&(rid.as_str(), "writer")), "{members}");
    eventually("the grant reaches the reader", DEADLINE, || {
        (reader.json(&["id", "--json"])["role"] == "writer").then_some(())
    });
    let out = reader.run(&["put", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("the reader's write reaches the owner", DEADLINE, || {
        // Not found until the record arrives.
        let out = owner.run(&["stat", "note.txt", "--json"]);
        let stat: Value = serde_json::from_slice(&out.stdout).ok()?;
        (stat["author"] == rid.as_str()).then_some(())
    });

    let out = owner.run(&["deny", &rid]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("can no longer write"),
        "{}",
        stdout(&out)
    );
    eventually("the revocation reaches the reader", DEADLINE, || {
        (reader.json(&["id", "--json"])["role"] == "reader").then_some(())
    });
    let out = reader.run(&["rm", "note.txt"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Its write from before the revocation stays.
    assert_eq!(
        owner.json(&["stat", "note.txt", "--json"])["deleted"],
        false
    );

    let ticket = owner.json(&["invite", "--json"])["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ticket.starts_with("dfs1"), "{ticket}");
    let text = stdout(&owner.run(&["invite"]));
    assert!(text.trim().starts_with("dfs1") && text.trim().lines().count() == 1);
    // A bad ticket is refused at start with one line.
    let out = dfs()
        .args(["node", "--join", "dfs1notaticket", "--data-dir"])
        .arg(work.path().join("fresh"))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("ticket"), "{}", stderr(&out));
}

/// The TCP port of a node's first address.
fn tcp_port(addr: &str) -> u16 {
    let parts: Vec<&str> = addr.split('/').collect();
    let i = parts
        .iter()
        .position(|p| *p == "tcp")
        .expect("a TCP address");
    parts[i + 1].parse().unwrap()
}

/// Lines of a node's log that contain every one of `parts`.
fn log_lines(node: &TestNode, parts: &[&str]) -> usize {
    node.log()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// Regression: a bootstrap address whose `/p2p/` part names another peer than the one that
/// answers was re-dialled for ever; it is now said once, as a warning, and not dialled again.
#[test]
fn a_bootstrap_address_with_a_wrong_peer_id_is_warned_once_and_not_redialled() {
    let a = TestNode::start("cli-wrong-id", None);
    let wrong = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/{}",
        tcp_port(&a.addr()),
        libp2p::PeerId::random()
    );
    let b = TestNode::start("cli-wrong-id", Some(&wrong));
    let b_id = b.peer_id();
    eventually("the warning", DEADLINE, || {
        (log_lines(&b, &["WARN", "answers as another peer"]) > 0).then_some(())
    });
    // With retries (back-off 1, 2, 4 s) a would see b three times or more in 5 s.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        log_lines(&b, &["answers as another peer"]),
        1,
        "{}",
        b.log()
    );
    let seen = log_lines(&a, &["peer connected", &b_id]);
    assert!(seen <= 1, "dialled {seen} times: {}", a.log());
}

/// `dfs connect` dials at runtime and prints the peer id once connected (`--json` too);
/// connections and disconnections are logged at info.
#[test]
fn dfs_connect_connects_at_runtime_and_prints_the_peer_id() {
    let a = TestNode::start("cli-connect", None);
    let b = TestNode::start("cli-connect", None);
    let a_id = a.peer_id();
    let out = b.run(&["connect", &a.addr()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("connected to {a_id}")),
        "{}",
        stdout(&out)
    );
    let peers = b.json(&["peers", "--json"]);
    assert!(peers.to_string().contains(&a_id), "{peers}");
    // A DNS name, without /p2p/: the peer id is learnt.
    let dns = format!("/dns4/localhost/tcp/{}", tcp_port(&a.addr()));
    let json = b.json(&["connect", &dns, "--json"]);
    assert_eq!(json["peer_id"], a_id.as_str(), "{json}");
    assert_eq!(json["addr"], dns.as_str(), "{json}");
    eventually("the connection logged at info", DEADLINE, || {
        (log_lines(&b, &["INFO", "peer connected", &a_id]) > 0).then_some(())
    });
    // Nothing listens there: exit 1, one line.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = b.run(&["connect", &format!("/ip4/127.0.0.1/tcp/{port}")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot dial"), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    let out = b.run(&["connect", "not-a-multiaddr"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad multiaddr"), "{}", stderr(&out));
}

/// `dfs put --wait 3` returns once three nodes hold the file, and `dfs stat` names them; with
/// one node down, `--wait 3 --timeout 2s` exits 1 saying "2 of 3".
#[test]
fn put_wait_counts_the_nodes_that_hold_the_file() {
    let a = TestNode::start("cli-wait", None);
    let b = TestNode::join(&a);
    let c = TestNode::join(&a);
    eventually("three connected nodes", DEADLINE, || {
        (a.json(&["peers", "--json"]).as_array().unwrap().len() == 2).then_some(())
    });
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("f");
    std::fs::write(&file, data(3 * MIB, 11)).unwrap();
    let out = a.run(&[
        "put",
        file.to_str().unwrap(),
        "--key",
        "w",
        "--wait",
        "3",
        "--timeout",
        "30s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("held by 3 node(s)"),
        "{}",
        stdout(&out)
    );
    let stat = a.json(&["stat", "w", "--json"]);
    let holders: Vec<&str> = stat["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(holders.len(), 3, "{stat}");
    for n in [&a, &b, &c] {
        assert!(holders.contains(&n.peer_id().as_str()), "{stat}");
    }
    let text = stdout(&a.run(&["stat", "w"]));
    assert!(text.contains("holders:    3 ("), "{text}");
    // Replication is logged at info on the nodes that fetched the file.
    eventually("the fetch logged at info", DEADLINE, || {
        (log_lines(&b, &["INFO", "fetched a file from", "key=w"]) > 0).then_some(())
    });

    drop(c);
    std::fs::write(&file, b"second").unwrap();
    let started = Instant::now();
    let out = a.run(&[
        "put",
        file.to_str().unwrap(),
        "--key",
        "w2",
        "--wait",
        "3",
        "--timeout",
        "2s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("2 of 3"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// `GET /metrics` needs the token and shows dfs's figures after a put, and libp2p's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_and_count_a_put() {
    let node = TestNode::start("cli-metrics", None);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("f");
    std::fs::write(&file, data(1000, 5)).unwrap();
    let out = node.run(&["put", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", node.url());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let res = http
        .get(&url)
        .bearer_auth(node.token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = res.text().await.unwrap();
    for line in [
        "dfs_records 1",
        "dfs_files 1",
        "dfs_stored_bytes 1000",
        "dfs_connected_peers 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert!(
        text.contains("dfs_refused_total{reason=\"not_a_writer\"} 0"),
        "{text}"
    );
    assert!(text.contains("libp2p_swarm_"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

/// `--mdns` turns LAN discovery on (off by default). Discovery itself cannot be tested end to
/// end here: mDNS announces only the addresses of the interface it runs on, never loopback,
/// and these tests listen on 127.0.0.1 alone.
#[test]
fn mdns_is_off_by_default_and_on_with_the_flag() {
    let plain = TestNode::start("cli-mdns", None);
    let with = TestNode::spawn_args(&["--mdns"]);
    assert!(log_lines(&with, &["INFO", "mDNS"]) > 0, "{}", with.log());
    assert_eq!(log_lines(&plain, &["mDNS"]), 0, "{}", plain.log());
}
