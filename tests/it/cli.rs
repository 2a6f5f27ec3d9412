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
        assert!(text.contains("big.bin") && text.contains("3.0 MiB") && text.contains("local"));
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
        "node",
        "put",
        "get",
        "rm",
        "ls",
        "stat",
        "peers",
        "id",
        "demo",
        "completions",
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
        [
            "api",
            "api-token",
            "identity.key",
            "network",
            "settings",
            "store"
        ]
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
        err.contains("Usage: dfs [OPTIONS] <COMMAND>") && err.contains("Commands:"),
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

/// Stores `content` under `key` on `node` through the CLI (from stdin), returning its Stat.
fn put_bytes(node: &TestNode, key: &str, content: &[u8]) -> Value {
    let mut child = dfs()
        .args(["put", "-", "--json", "--key", key, "--data-dir"])
        .arg(node.data())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(content).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "put {key}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Regression: `dfs get KEY --api HOST:PORT` alone sent no token and was told the node "refused
/// the API token". The data dir's token is used when its api file names that API; otherwise
/// the error says a token is needed and where it is.
#[test]
fn api_flag_without_a_token_uses_the_data_dirs_or_asks_for_one() {
    let node = TestNode::start("cli-api-token", None);
    let hostport = node.url().trim_start_matches("http://").to_string();
    for api in [hostport.as_str(), &node.url()] {
        let out = node.run(&["ls", "--api", api]);
        assert!(out.status.success(), "--api {api}: {}", stderr(&out));
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let out = dfs()
        .args(["get", "x", "--api", &hostport, "--data-dir"])
        .arg(elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("no API token: give --token or DFS_API_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("refused"), "{err}");
}

/// Regression: `DFS_API` meant HOST:PORT for `dfs node` and a URL for clients; both forms work
/// for both.
#[test]
fn dfs_api_may_be_a_url_for_the_node_too() {
    let node = TestNode::custom(
        tempfile::tempdir().unwrap(),
        &["--listen", "/ip4/127.0.0.1/tcp/0"],
        &[("DFS_API", "http://127.0.0.1:0/")],
    );
    assert!(
        node.url().starts_with("http://127.0.0.1:"),
        "{}",
        node.url()
    );
    let out = dfs()
        .args(["id", "--json"])
        .env("DFS_API", node.url())
        .env("DFS_DATA_DIR", node.data())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Regression: conditional requests were ignored. `If-None-Match` with the current ETag is a
/// `304`; a stale `If-Range` with a `Range` gets the whole current version (`200`), never a
/// `206` of it; `If-Match` with a stale ETag is a `412` with a JSON body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_follow_rfc_9110() {
    let node = TestNode::start("cli-conditional", None);
    let v1 = data(100_000, 1);
    let v2 = data(120_000, 2);
    let old = put_bytes(&node, "c", &v1);
    let old_tag = format!("\"{}\"", old["content_id"].as_str().unwrap());
    let http = reqwest::Client::new();
    let url = format!("{}/v1/files/c", node.url());
    let token = node.token();
    let get = |headers: &[(&'static str, &str)]| {
        let mut req = http.get(&url).bearer_auth(&token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };

    let res = get(&[("if-none-match", &old_tag)]).await.unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], old_tag.as_str());
    assert!(res.bytes().await.unwrap().is_empty());
    let res = http
        .head(&url)
        .bearer_auth(&token)
        .header("if-none-match", &old_tag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    // A matching If-Range honours the range.
    let res = get(&[("range", "bytes=10-19"), ("if-range", &old_tag)])
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert!(res.bytes().await.unwrap() == v1[10..20]);

    let new = put_bytes(&node, "c", &v2);
    let new_tag = format!("\"{}\"", new["content_id"].as_str().unwrap());
    let res = get(&[("range", "bytes=10-"), ("if-range", &old_tag)])
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a stale If-Range gets the whole file");
    assert_eq!(res.headers()["etag"], new_tag.as_str());
    assert!(res.headers().get("content-range").is_none());
    assert!(res.bytes().await.unwrap() == v2);
    let res = get(&[("if-none-match", &old_tag)]).await.unwrap();
    assert_eq!(res.status(), 200);
    let res = get(&[("if-match", &old_tag)]).await.unwrap();
    assert_eq!(res.status(), 412);
    assert!(res.json::<Value>().await.unwrap()["error"].is_string());
    let res = get(&[("if-match", &new_tag), ("range", "bytes=0-0")])
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["x-dfs-version"],
        new["version"].to_string().as_str()
    );
}

/// The content id of `bytes`, as the node computes it.
fn cid(bytes: &[u8]) -> String {
    let chunks: Vec<dfs::record::Hash> = bytes
        .chunks(dfs::record::CHUNK_SIZE)
        .map(dfs::record::Hash::of)
        .collect();
    dfs::record::content_id(bytes.len() as u64, &chunks).to_hex()
}

/// Reads one HTTP request's head from `s`.
fn read_head(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the request ended early");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

/// Regression: Ctrl-C during `dfs get -o FILE` left a hidden temp file and the rerun started
/// from zero. A server that stalls after half the file stands in for a slow network: the
/// interrupted get keeps `FILE.dfs-partial` (and its sidecar) and exits 130; the rerun asks for
/// the rest only (`Range` + `If-Range`), and the file is whole and verified.
#[test]
fn interrupted_get_keeps_its_partial_file_and_the_rerun_continues() {
    let content = data(3 * MIB + 123, 9);
    let etag = format!("\"{}\"", cid(&content));
    let half = content.len() / 2;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let server = {
        let (content, etag) = (content.clone(), etag.clone());
        std::thread::spawn(move || {
            // First request: half the file, then a stall until the client is gone.
            let (mut s, _) = listener.accept().unwrap();
            let head = read_head(&mut s);
            assert!(!head.contains("range:"), "{head}");
            write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\netag: {etag}\r\nx-dfs-version: 7\r\n\r\n",
                content.len()
            )
            .unwrap();
            s.write_all(&content[..half]).unwrap();
            s.flush().unwrap();
            let _ = stop_rx.recv_timeout(DEADLINE);
            drop(s);
            // Second request: the rest, as asked.
            let (mut s, _) = listener.accept().unwrap();
            let head = read_head(&mut s);
            assert!(head.contains(&format!("range: bytes={half}-")), "{head}");
            assert!(head.contains(&format!("if-range: {etag}")), "{head}");
            write!(
                s,
                "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {half}-{}/{}\r\netag: {etag}\r\nx-dfs-version: 7\r\n\r\n",
                content.len() - half,
                content.len() - 1,
                content.len()
            )
            .unwrap();
            s.write_all(&content[half..]).unwrap();
            (content.len() - half) as u64
        })
    };
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("out.bin");
    let partial = work.path().join("out.bin.dfs-partial");
    let get = || {
        let mut c = dfs();
        c.args(["get", "k", "--json", "--api", &url, "--token", "t", "-o"])
            .arg(&dest);
        c
    };
    let mut child = get()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("half the file in the partial file", DEADLINE, || {
        (std::fs::metadata(&partial).map_or(0, |m| m.len()) >= half as u64).then_some(())
    });
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = eventually("the get to stop", DEADLINE, || child.try_wait().unwrap());
    stop_tx.send(()).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), half as u64);
    let mut names: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["out.bin.dfs-partial", "out.bin.dfs-partial.json"],
        "no hidden file"
    );

    let out = get().output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["resumed_from"], half as u64);
    assert_eq!(summary["size"], content.len() as u64);
    assert_eq!(summary["version"], 7);
    assert_eq!(server.join().unwrap(), (content.len() - half) as u64);
    assert!(std::fs::read(&dest).unwrap() == content);
    assert!(!partial.exists());
}

/// The resumed get against a real node: a partial file of the current version continues
/// where it stopped; one of a version that has since changed starts over; one whose bytes do
/// not match is detected and downloaded again. Each result is byte-identical.
#[test]
fn resumed_get_continues_and_a_changed_file_starts_over() {
    let node = TestNode::start("cli-resume", None);
    let v1 = data(2 * MIB + 77, 31);
    let stat = put_bytes(&node, "r", &v1);
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("r.bin");
    let partial = work.path().join("r.bin.dfs-partial");
    let sidecar = work.path().join("r.bin.dfs-partial.json");
    let keep = |bytes: &[u8], tag: &str, size: usize| {
        std::fs::write(&partial, bytes).unwrap();
        let side = serde_json::json!({"key": "r", "etag": format!("\"{tag}\""), "size": size});
        std::fs::write(&sidecar, side.to_string()).unwrap();
    };
    let get = || {
        let out = node.run(&["get", "r", "--json", "-o", dest.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        (
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            stderr(&out),
        )
    };

    keep(
        &v1[..MIB + 5],
        stat["content_id"].as_str().unwrap(),
        v1.len(),
    );
    let (summary, err) = get();
    assert_eq!(summary["resumed_from"], (MIB + 5) as u64, "{err}");
    assert!(err.contains("resuming"), "{err}");
    assert!(std::fs::read(&dest).unwrap() == v1);
    assert!(!partial.exists() && !sidecar.exists());

    // The key changed since: the part of the old version is not joined to the new one.
    let v2 = data(2 * MIB + 99, 32);
    put_bytes(&node, "r", &v2);
    keep(&v1[..MIB], stat["content_id"].as_str().unwrap(), v1.len());
    let (summary, err) = get();
    assert_eq!(summary["resumed_from"], 0, "{err}");
    assert!(err.contains("starting over"), "{err}");
    assert!(std::fs::read(&dest).unwrap() == v2);

    // A kept part with wrong bytes (say, a crash left zeros) fails the check and is replaced.
    keep(&vec![0u8; MIB], &cid(&v2), v2.len());
    let (summary, err) = get();
    assert_eq!(summary["resumed_from"], 0, "{err}");
    assert!(err.contains("did not match"), "{err}");
    assert!(std::fs::read(&dest).unwrap() == v2);
    assert!(!partial.exists() && !sidecar.exists());
}

/// Regression: a second Ctrl-C was ignored while a node shut down. A download that does not
/// read its body holds the node's graceful stop (5 s); a second SIGINT ends it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_ctrl_c_stops_a_node_at_once() {
    let mut node = TestNode::start("cli-ctrl-c", None);
    put_bytes(&node, "big", &data(32 * MIB, 5));
    let res = reqwest::Client::new()
        .get(format!("{}/v1/files/big", node.url()))
        .bearer_auth(node.token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let pid = node.child.id().to_string();
    let int = || Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(int().success());
    eventually("the node to start stopping", DEADLINE, || {
        node.log().contains("shutting down").then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "still in its graceful stop"
    );
    let t = Instant::now();
    assert!(int().success());
    let status = eventually("the node to exit", DEADLINE, || {
        node.child.try_wait().unwrap()
    });
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(status.code(), Some(130), "{}", node.log());
    drop(res);
}

/// Regression: `dfs get` wrote binary to a terminal. It refuses with a hint; text is still
/// shown, and `-o -` writes anything. (`script` gives the command a terminal.)
#[test]
fn get_refuses_binary_to_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command to make a terminal");
        return;
    }
    let node = TestNode::start("cli-tty", None);
    put_bytes(&node, "bin", &[0u8, 1, 2, 3, 255]);
    put_bytes(&node, "text", b"hello terminal\n");
    let in_tty = |args: &str| {
        let line = format!(
            "{} {args} --data-dir '{}'",
            dfs_bin(),
            node.data().display()
        );
        let out = dfs_in(Command::new("script").args(["-qefc", &line, "/dev/null"]));
        (out.status.code(), stdout(&out))
    };
    let (code, text) = in_tty("get bin");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("-o FILE") && text.contains("| cat"), "{text}");
    let (code, text) = in_tty("get text");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("hello terminal"), "{text}");
    let (code, _) = in_tty("get bin -o -");
    assert_eq!(code, Some(0));
}

/// Runs `cmd` without the caller's DFS_* settings.
fn dfs_in(cmd: &mut Command) -> Output {
    for v in ["DFS_DATA_DIR", "DFS_API", "DFS_API_TOKEN", "RUST_LOG"] {
        cmd.env_remove(v);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// Regression: `put`, `rm` and `get` refused `--json`. Every command prints JSON with it.
#[test]
fn every_command_takes_json() {
    let owner = TestNode::start("cli-json", None);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("j.txt");
    std::fs::write(&file, b"json all the way").unwrap();
    let put = owner.json(&["put", file.to_str().unwrap(), "--json"]);
    assert_eq!(put["key"], "j.txt");
    assert_eq!(put["size"], 16);
    let out = work.path().join("back.txt");
    let got = owner.json(&["get", "j.txt", "--json", "-o", out.to_str().unwrap()]);
    assert_eq!(got["key"], "j.txt");
    assert_eq!(got["content_id"], put["content_id"]);
    assert_eq!(got["version"], put["version"]);
    assert_eq!(got["size"], 16);
    assert_eq!(got["resumed_from"], 0);
    assert_eq!(std::fs::read(&out).unwrap(), b"json all the way");
    for args in [
        &["ls", "--json"][..],
        &["stat", "j.txt", "--json"],
        &["peers", "--json"],
        &["id", "--json"],
        &["members", "--json"],
    ] {
        owner.json(args);
    }
    // Any valid peer id: allow and deny answer its member object.
    let id = "12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X";
    let allowed = owner.json(&["allow", id, "--json"]);
    assert_eq!(allowed["role"], "writer");
    let denied = owner.json(&["deny", id, "--json"]);
    assert_eq!(denied["role"], "reader");
    let rm = owner.json(&["rm", "j.txt", "--json"]);
    assert_eq!(rm["deleted"], true);
    // Text output reads as sizes and times.
    let text = stdout(&owner.run(&["put", file.to_str().unwrap()]));
    assert!(text.contains("16 B") && text.contains("Z"), "{text}");
    let text = stdout(&owner.run(&["stat", "j.txt"]));
    assert!(
        text.contains("16 B (16 bytes)") && text.contains("(just now)"),
        "{text}"
    );
    let text = stdout(&owner.run(&["ls"]));
    assert!(
        text.contains("MODIFIED") && text.contains("just now"),
        "{text}"
    );
}

/// `dfs completions SHELL` prints a script for bash, zsh and fish that knows the commands; bash
/// accepts its syntax.
#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = dfs().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["dfs", "node", "put", "completions"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
        if shell == "bash" {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("dfs.bash");
            std::fs::write(&path, &script).unwrap();
            let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
            assert!(check.status.success(), "{}", stderr(&check));
        }
    }
}

/// `config.toml` in the data dir sets the node's flags; `DFS_*` variables win over it, and the
/// command line over both. An unknown key is refused, naming the key and the file.
#[test]
fn config_toml_is_overridden_by_env_and_flags() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let started = |env: &[(&str, &str)], args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let port = free();
        std::fs::write(
            data.join("config.toml"),
            format!(
                "# the node's flags\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\napi = \"127.0.0.1:{port}\"\nscrub-interval = \"0\"\n"
            ),
        )
        .unwrap();
        (TestNode::custom(dir, args, env), port)
    };
    let (node, port) = started(&[], &[]);
    assert_eq!(
        node.url(),
        format!("http://127.0.0.1:{port}"),
        "from the file"
    );
    drop(node);
    let env_port = free();
    let env_api = format!("127.0.0.1:{env_port}");
    let (node, _) = started(&[("DFS_API", &env_api)], &[]);
    assert_eq!(
        node.url(),
        format!("http://{env_api}"),
        "DFS_API wins over the file"
    );
    drop(node);
    let flag_port = free();
    let flag_api = format!("127.0.0.1:{flag_port}");
    let (node, _) = started(&[("DFS_API", &env_api)], &["--api", &flag_api]);
    assert_eq!(
        node.url(),
        format!("http://{flag_api}"),
        "the flag wins over both"
    );
    drop(node);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "listen = []\nlisen = 1\n").unwrap();
    let err = node_refuses(&[], Some(dir.path()));
    assert!(
        err.contains("\"lisen\"") && err.contains("config.toml"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("config.toml"),
        "scrub-interval = \"soon\"\n",
    )
    .unwrap();
    let err = node_refuses(&[], Some(dir.path()));
    assert!(err.contains("config.toml") && err.contains("soon"), "{err}");
}

/// `-q` keeps a node's log to warnings, `-v` adds dfs's debug lines; RUST_LOG wins over both.
#[test]
fn verbose_and_quiet_flags_set_the_log_level() {
    let run = |flag: &str, rust_log: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = dfs();
        cmd.arg(flag)
            .args([
                "node",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--api",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(l) = rust_log {
            cmd.env("RUST_LOG", l);
        }
        let child = cmd.spawn().unwrap();
        eventually("the api file", DEADLINE, || {
            dir.path().join("api").exists().then_some(())
        });
        let pid = child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        let out = child.wait_with_output().unwrap();
        stderr(&out)
    };
    let quiet = run("-q", None);
    assert!(
        !quiet.contains("INFO") && !quiet.contains("API ready"),
        "{quiet}"
    );
    let verbose = run("-v", None);
    assert!(
        verbose.contains("DEBUG") && verbose.contains("configuration"),
        "{verbose}"
    );
    assert!(!verbose.contains("TRACE"), "{verbose}");
    let overridden = run("-q", Some("info"));
    assert!(overridden.contains("API ready"), "{overridden}");
}

/// `put -r DIR` stores every file under DIR's name, `ls PREFIX` lists them, `get -r PREFIX -o
/// OUT` writes them back identical (directories created); a key that would escape OUT (`..`)
/// is refused with a message, and the rest is still written.
#[test]
fn put_r_and_get_r_round_trip_a_directory_and_refuse_escapes() {
    let node = TestNode::start("cli-tree", None);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("photos");
    std::fs::create_dir_all(src.join("2024/summer")).unwrap();
    let files = [
        ("a.txt", data(10, 1)),
        ("2024/b.bin", data(MIB + 3, 2)),
        ("2024/summer/c d.jpg", data(5000, 3)),
        ("empty", Vec::new()),
    ];
    for (name, content) in &files {
        std::fs::write(src.join(name), content).unwrap();
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();

    let out = node.run(&["put", "-r", src.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("skipping symbolic link"),
        "{}",
        stderr(&out)
    );
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stored.as_array().unwrap().len(), files.len());
    let listed = node.json(&["ls", "photos/", "--json"]);
    let mut keys: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "photos/2024/b.bin",
            "photos/2024/summer/c d.jpg",
            "photos/a.txt",
            "photos/empty"
        ]
    );
    put_bytes(&node, "elsewhere", b"not listed");
    assert_eq!(
        node.json(&["ls", "photos", "--json"])
            .as_array()
            .unwrap()
            .len(),
        4
    );

    let out_dir = work.path().join("restored");
    let out = node.run(&["get", "-r", "photos", "-o", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (name, content) in &files {
        assert!(
            std::fs::read(out_dir.join(name)).unwrap() == *content,
            "{name}"
        );
    }
    assert!(!out_dir.join("link").exists());

    // With --prefix, and a key that tries to climb out of the target directory.
    let out = node.run(&["put", "-r", src.to_str().unwrap(), "--prefix", "p2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    put_bytes(&node, "p2/../../escaped", b"evil");
    let out_dir = work.path().join("inner").join("restored2");
    let out = node.run(&["get", "-r", "p2", "-o", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("refusing key \"p2/../../escaped\""), "{err}");
    assert!(err.contains("outside"), "{err}");
    assert!(!work.path().join("escaped").exists());
    assert!(!work.path().join("inner").join("escaped").exists());
    for (name, content) in &files {
        assert!(
            std::fs::read(out_dir.join(name)).unwrap() == *content,
            "{name}"
        );
    }
}

/// The version commands as a user runs them: `log`, `get --version`, `rm`, `restore`, and the
/// clock offsets in `peers --json`.
#[test]
fn log_get_version_and_restore_undo_an_overwrite_and_an_rm() {
    let a = TestNode::start("a", None);
    let b = TestNode::join(&a);
    let first = put_bytes(&a, "notes.txt", b"first draft\n");
    put_bytes(&a, "notes.txt", b"second draft\n");
    let rm = a.run(&["rm", "notes.txt"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    // A get of the deleted key says so, and how to get it back.
    let gone = a.run(&["get", "notes.txt", "-o", "-"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).contains("was deleted") && stderr(&gone).contains("dfs restore"),
        "{}",
        stderr(&gone)
    );
    // A directory given to put points to -r.
    let dir = tempfile::tempdir().unwrap();
    let put_dir = a.run(&["put", dir.path().to_str().unwrap()]);
    assert_eq!(put_dir.status.code(), Some(2));
    assert!(stderr(&put_dir).contains("put -r"), "{}", stderr(&put_dir));
    let log = a.json(&["log", "notes.txt", "--json"]);
    let states: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["replaced", "replaced", "current"]);
    assert!(log[2]["deleted"].as_bool().unwrap());
    let text = stdout(&a.run(&["log", "notes.txt"]));
    assert!(text.contains("delete") && text.contains("write"), "{text}");
    // The first draft reads by a prefix of its version id.
    let id = first["version_id"].as_str().unwrap();
    let old = a.run(&["get", "notes.txt", "--version", &id[..12], "-o", "-"]);
    assert!(old.status.success(), "{}", stderr(&old));
    assert_eq!(old.stdout, b"first draft\n");
    let bad = a.run(&["get", "notes.txt", "--version", "zz"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    // Restored on a, it is current on b too.
    let restored = a.json(&["restore", "notes.txt", &id[..12], "--json"]);
    assert_eq!(restored["content_id"], first["content_id"]);
    eventually("the restore on b", DEADLINE, || {
        let out = b.run(&["get", "notes.txt", "-o", "-"]);
        (out.status.success() && out.stdout == b"first draft\n").then_some(())
    });
    let peers = a.json(&["peers", "--json"]);
    eventually("b's clock offset measured", DEADLINE, || {
        let peers = a.json(&["peers", "--json"]);
        peers[0]["clock_offset_ms"]
            .as_i64()
            .map(|ms| assert!(ms.abs() < 1000))
    });
    assert_eq!(peers.as_array().unwrap().len(), 1);
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

/// `--keep-days` is retention: a replaced version stays in `dfs log` (and reads) until it is
/// older than that, then it goes, and `--keep-days` takes fractions of a day.
#[test]
fn history_goes_only_past_keep_days() {
    // 0.00005 days = 4.3 s.
    let node = TestNode::spawn_args(&["--keep-days", "0.00005"]);
    put_bytes(&node, "k", b"one");
    put_bytes(&node, "k", b"two");
    let versions = |node: &TestNode| node.json(&["log", "k", "--json"]).as_array().unwrap().len();
    assert_eq!(versions(&node), 2, "the replaced version is kept at first");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(versions(&node), 2, "and still within retention");
    eventually("retention to drop it", DEADLINE, || {
        (versions(&node) == 1).then_some(())
    });
    let err = node_refuses(&["--keep-days=-1"], None);
    assert!(err.contains("number of days"), "{err}");
}
