//! Files through the CLI and the API: put, get (ranges, conditional requests, resumed and
//! interrupted downloads, directories), ls, stat, rm, history and restore, `put --wait`.

use super::*;

#[test]
pub(super) fn three_nodes_put_get_ls_stat_peers_id_and_rm() {
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
        // One name a concept: `version` is the hex id, `time` its date, `clock` a string; no
        // JSON number above 2^53.
        assert_eq!(stat["version"].as_str().unwrap().len(), 64);
        assert!(stat["time"].as_u64().unwrap() < 1 << 53);
        assert!(stat["clock"].as_str().unwrap().parse::<u64>().unwrap() > 1 << 53);
        assert!(stat.get("version_id").is_none());
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
pub(super) async fn range_requests_return_the_right_bytes() {
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
pub(super) fn missing_key_exits_1_not_found() {
    let node = TestNode::start("cli-missing", None);
    for args in [&["get", "nope"][..], &["stat", "nope"], &["rm", "nope"]] {
        let out = node.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out).trim(), "error: not found: nope", "{args:?}");
    }
}

/// Keys a terminal would interpret, or that are not names (`../x`, `/abs`, `a//b`, `a/`), are
/// refused at the put with the rule they break; nothing the CLI prints holds a raw escape.
#[test]
pub(super) fn keys_outside_the_grammar_are_refused_and_never_printed_raw() {
    let node = TestNode::start("cli-bad-keys", None);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    for (key, why) in [
        ("\u{1b}[2J\u{1b}[31mEVIL\u{1b}[0m", "U+001B"),
        ("a\nb", "U+000A"),
        ("a\tb", "U+0009"),
        ("x\u{202e}gpj.exe", "U+202E"),
        ("../x", "`..`"),
        ("/abs", "starts with `/`"),
        ("a/", "ends with `/`"),
        ("a//b", "empty segment"),
        (".", "`.`"),
    ] {
        let out = node.run(&["put", file.to_str().unwrap(), "--key", key]);
        assert_eq!(out.status.code(), Some(1), "{key:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("invalid key") && err.contains(why),
            "{key:?}: {err}"
        );
        for out in [out, node.run(&["get", key]), node.run(&["stat", key])] {
            let all = [out.stdout, out.stderr].concat();
            assert!(
                !all.iter().any(|b| *b == 0x1b || *b == b'\t'),
                "{key:?}: {all:?}"
            );
        }
    }
    let listed = node.run(&["ls"]);
    assert!(listed.status.success());
    assert!(!stdout(&listed).contains("EVIL"), "{}", stdout(&listed));
}

/// An empty `ls` says so (and how to fill it, or that deleted files are hidden) instead of
/// printing a lone header; `--json` stays an empty list.
#[test]
pub(super) fn an_empty_listing_says_so() {
    let node = TestNode::start("cli-empty-ls", None);
    let out = node.run(&["ls"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        "no files yet: `dfs put FILE` stores one"
    );
    assert_eq!(node.json(&["ls", "--json"]), serde_json::json!([]));
    put_bytes(&node, "gone", b"x");
    assert!(node.run(&["rm", "gone"]).status.success());
    let text = stdout(&node.run(&["ls"]));
    assert!(
        text.contains("1 deleted") && text.contains("--all"),
        "{text}"
    );
    let text = stdout(&node.run(&["ls", "photos/"]));
    assert_eq!(text.trim(), "no files under photos/");
}

#[test]
pub(super) fn client_disconnecting_mid_put_leaves_no_record() {
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
pub(super) fn put_from_stdin_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dfs()
        .args(["put", "-", "--api", "127.0.0.1:1", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--key"));
}

/// Regression: `get -o -` created a file named `-`; it means standard output.
#[test]
pub(super) fn get_dash_o_dash_writes_to_stdout() {
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

/// `dfs put FILE` against a node on this machine hands the node the file's path
/// (`POST /v1/import/{key}`) instead of streaming it through HTTP; the API refuses what it cannot
/// read (422) and relative paths (400), and the CLI's put stores the same bytes either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn local_put_is_read_by_the_node_itself() {
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
    // Into a directory: the key's last segment is the file's name, as with `cp`.
    put_bytes(&node, "docs/notes.txt", b"in a dir");
    let dir = work.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let out = node.run(&["get", "docs/notes.txt", "-o", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"in a dir");
}

/// Stores `content` under `key` on `node` through the CLI (from stdin), returning its Stat.
pub(super) fn put_bytes(node: &TestNode, key: &str, content: &[u8]) -> Value {
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

/// Regression: conditional requests were ignored. `If-None-Match` with the current ETag is a
/// `304`; a stale `If-Range` with a `Range` gets the whole current version (`200`), never a
/// `206` of it; `If-Match` with a stale ETag is a `412` with a JSON body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn conditional_requests_follow_rfc_9110() {
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
        new["version"].as_str().unwrap()
    );
    assert_eq!(
        res.headers()["x-dfs-time"],
        new["time"].to_string().as_str()
    );
}

/// The content id of `bytes`, as the node computes it.
pub(super) fn cid(bytes: &[u8]) -> String {
    let chunks: Vec<dfs::record::Hash> = bytes
        .chunks(dfs::record::CHUNK_SIZE)
        .map(dfs::record::Hash::of)
        .collect();
    dfs::record::content_id(bytes.len() as u64, &chunks).to_hex()
}

/// Reads one HTTP request's head from `s`.
pub(super) fn read_head(s: &mut std::net::TcpStream) -> String {
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
pub(super) fn interrupted_get_keeps_its_partial_file_and_the_rerun_continues() {
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
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\netag: {etag}\r\nx-dfs-version: 7a7a7a7a\r\nx-dfs-time: 7\r\n\r\n",
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
                "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {half}-{}/{}\r\netag: {etag}\r\nx-dfs-version: 7a7a7a7a\r\nx-dfs-time: 7\r\n\r\n",
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
    assert_eq!(summary["version"], "7a7a7a7a");
    assert_eq!(summary["time"], 7);
    assert_eq!(server.join().unwrap(), (content.len() - half) as u64);
    assert!(std::fs::read(&dest).unwrap() == content);
    assert!(!partial.exists());
}

/// The resumed get against a real node: a partial file of the current version continues
/// where it stopped; one of a version that has since changed starts over; one whose bytes do
/// not match is detected and downloaded again. Each result is byte-identical.
#[test]
pub(super) fn resumed_get_continues_and_a_changed_file_starts_over() {
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

/// Regression: `dfs get` wrote binary to a terminal. It refuses with a hint; text is still
/// shown, and `-o -` writes anything. (`script` gives the command a terminal.)
#[test]
pub(super) fn get_refuses_binary_to_a_terminal() {
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

/// `put -r DIR` stores every file under DIR's name, `ls PREFIX` lists them, `get -r PREFIX -o
/// OUT` writes them back identical (directories created); a key that would escape OUT (`..`)
/// is refused at the put with a message.
#[test]
pub(super) fn put_r_and_get_r_round_trip_a_directory_and_refuse_escapes() {
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
    // The node refuses such a key at the put (and from peers); `get -r` would refuse it too.
    let evil = work.path().join("evil");
    std::fs::write(&evil, b"evil").unwrap();
    let out = node.run(&["put", evil.to_str().unwrap(), "--key", "p2/../../escaped"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid key"), "{}", stderr(&out));
    let out_dir = work.path().join("inner").join("restored2");
    let out = node.run(&["get", "-r", "p2", "-o", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
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
pub(super) fn log_get_version_and_restore_undo_an_overwrite_and_an_rm() {
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
    let id = first["version"].as_str().unwrap();
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
    // What `put` prints as the version is what `--version` and `restore` take back, and
    // `restore` answers in `put`'s words.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("third");
    std::fs::write(&file, b"third\n").unwrap();
    let out = a.run(&["put", file.to_str().unwrap(), "--key", "notes.txt"]);
    let text = stdout(&out);
    let printed = text
        .split("version ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no version in {text:?}"));
    let old = a.run(&["get", "notes.txt", "--version", printed, "-o", "-"]);
    assert_eq!(old.stdout, b"third\n", "{}", stderr(&old));
    let out = a.run(&["restore", "notes.txt", &id[..12]]);
    let text = stdout(&out);
    assert!(
        text.starts_with("restored notes.txt (12 B, content id ") && text.contains(" at "),
        "{text}"
    );
    // The same bytes again: no new version.
    let again = a.run(&["put", file.to_str().unwrap(), "--key", "notes.txt"]);
    assert!(again.status.success());
    let before = a
        .json(&["log", "notes.txt", "--json"])
        .as_array()
        .unwrap()
        .len();
    let same = a.run(&["put", file.to_str().unwrap(), "--key", "notes.txt"]);
    assert!(same.status.success());
    let after = a
        .json(&["log", "notes.txt", "--json"])
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "an identical re-put writes no version");
    let peers = a.json(&["peers", "--json"]);
    eventually("b's clock offset measured", DEADLINE, || {
        let peers = a.json(&["peers", "--json"]);
        peers[0]["clock_offset_ms"]
            .as_i64()
            .map(|ms| assert!(ms.abs() < 1000))
    });
    assert_eq!(peers.as_array().unwrap().len(), 1);
}

/// `dfs put --wait 3` returns once three nodes hold the file, and `dfs stat` names them; with
/// one node down, `--wait 3 --timeout 2s` exits 1 saying "2 of 3".
#[test]
pub(super) fn put_wait_counts_the_nodes_that_hold_the_file() {
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

/// `--keep-days` is retention: a replaced version stays in `dfs log` (and reads) until it is
/// older than that, then it goes, and `--keep-days` takes fractions of a day.
#[test]
pub(super) fn history_goes_only_past_keep_days() {
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
