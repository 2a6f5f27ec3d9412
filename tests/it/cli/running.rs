//! Running `dfs node` and the CLI as a user meets them: start-up refusals and their messages,
//! the data dir, flags, config and environment, help and completions, JSON output, signals,
//! bootstrap and connect, the API's token, metrics and mDNS, and who may write.

use super::*;

#[test]
pub(super) fn no_node_running_exits_2_fast_with_a_hint() {
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
pub(super) fn stale_api_file_exits_2_within_a_second() {
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

#[tokio::test(flavor = "multi_thread")]
pub(super) async fn wrong_token_is_refused() {
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
pub(super) fn node_refuses(args: &[&str], data_dir: Option<&Path>) -> String {
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
pub(super) fn node_refuses_a_bad_multiaddr() {
    let err = node_refuses(&["--listen", "not-a-multiaddr"], None);
    assert!(err.contains("not-a-multiaddr"), "{err}");
    assert!(err.contains("see dfs node --help"), "{err}");
    node_refuses(&["--bootstrap", "/ip4/1.2.3"], None);
    // A HOST:PORT gets the multiaddr to write instead.
    let err = node_refuses(&["--listen", "127.0.0.1:4001"], None);
    assert!(err.contains("write /ip4/127.0.0.1/tcp/4001"), "{err}");
    // An address this machine does not have: the reason, never an empty one.
    let err = node_refuses(&["--listen", "/ip4/192.0.2.1/tcp/4041"], None);
    assert!(err.contains("no network interface"), "{err}");
}

/// A usage error points to the help of the command that was mistyped.
#[test]
pub(super) fn usage_errors_point_to_the_commands_own_help() {
    for (args, help) in [
        (&["get"][..], "see dfs get --help"),
        (&["put", "a", "b", "c"], "see dfs put --help"),
        (&["ls", "--bogus"], "see dfs ls --help"),
        (&["gte"], "see dfs --help"),
    ] {
        let out = dfs().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(help), "{args:?}: {}", stderr(&out));
    }
}

#[test]
pub(super) fn node_refuses_an_unknown_flag() {
    let err = node_refuses(&["--bogus-flag"], None);
    assert!(err.contains("--bogus-flag"), "{err}");
}

#[test]
pub(super) fn node_refuses_an_unusable_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a dir").unwrap();
    let err = node_refuses(&[], Some(&file.join("data")));
    assert!(err.contains("data dir"), "{err}");
}

#[test]
pub(super) fn node_refuses_a_remote_api_without_the_flag() {
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
pub(super) fn demo_runs_three_nodes() {
    let t = Instant::now();
    let out = dfs().args(["demo", "--nodes", "3"]).output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("matches the original"), "{text}");
    assert!(text.contains("delete reached node  3"), "{text}");
    // The demo's story is not interleaved with the nodes' info lines.
    assert!(!stderr(&out).contains("INFO"), "{}", stderr(&out));
    assert!(t.elapsed() < Duration::from_secs(60));
}

#[test]
pub(super) fn help_has_examples() {
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
pub(super) fn data_dir_has_the_documented_layout() {
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
            "addresses.toml",
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

/// Regression: libp2p listens with SO_REUSEPORT, so a second node on the same TCP port used to
/// start and take the first one's incoming connections. It must refuse: "address in use".
#[test]
pub(super) fn two_nodes_cannot_listen_on_the_same_port() {
    let port = free_port();
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

/// A first start without `--join` does not claim the data dir for good: a start that fails (a
/// busy port) creates no network, and a data dir whose network never held a record or a member
/// may still `--join` another (its old identity kept aside); one that holds a file may not.
#[test]
pub(super) fn a_mistaken_first_start_does_not_claim_the_data_dir() {
    let admin = TestNode::start("cli-claim-admin", None);
    let network = admin.json(&["id", "--json"])["network"]
        .as_str()
        .unwrap()
        .to_string();
    let ticket = || {
        admin.json(&["invite", "--json"])["ticket"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = format!("/ip4/127.0.0.1/tcp/{}", busy.local_addr().unwrap().port());
    // A start that dies on a busy port...
    let failed = tempfile::tempdir().unwrap();
    let _ = node_refuses(&["--listen", &busy], Some(&failed.path().join("data")));
    assert!(!failed.path().join("data/network").exists());
    // ... and one that ran, alone, then stopped.
    let ran = TestNode::start("cli-claim-ran", None);
    let old_id = ran.peer_id();
    let ran = ran.kill();
    for (dir, old) in [(failed, None), (ran, Some(old_id))] {
        let ticket = ticket();
        let node = TestNode::custom(
            dir,
            &[
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--api",
                "127.0.0.1:0",
                "--join",
                &ticket,
            ],
            &[],
        );
        let id = node.json(&["id", "--json"]);
        assert_eq!(id["network"], network.as_str(), "{}", node.log());
        assert_eq!(id["role"], "writer");
        let out = node.run(&["put", "-", "--key", "joined"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let dir = node.kill();
        if let Some(old) = old {
            assert_ne!(id["peer_id"], old.as_str());
            let kept = dir.path().join(format!("data/identity.key.{old}"));
            assert!(kept.exists(), "the old identity is kept aside");
            let aside = dir.path().join(format!("data/store.{old}"));
            assert!(aside.is_dir(), "the old store is kept aside, not deleted");
        }
    }
    // A data dir whose own network holds a file keeps it.
    let used = TestNode::start("cli-claim-used", None);
    let out = used.run(&["put", "-", "--key", "mine"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = used.kill();
    let err = node_refuses(&["--join", &ticket()], Some(&dir.path().join("data")));
    assert!(err.contains("belongs to network"), "{err}");
}

/// Regression: a second node on one data dir said "Database already open. Cannot acquire lock"
/// (or that the API port was taken); it must say a node is already running there.
#[test]
pub(super) fn second_node_on_one_data_dir_says_a_node_is_running() {
    let first = TestNode::start("cli-twice", None);
    let err = node_refuses(&["--listen", "/ip4/127.0.0.1/tcp/0"], Some(&first.data()));
    assert!(err.contains("already running on this data dir"), "{err}");
}

/// Regression: an address the transport cannot dial (QUIC; `/dns4/...` before DNS support)
/// was retried for ever; the node now refuses it at start with one clear line.
#[test]
pub(super) fn node_refuses_an_unsupported_bootstrap_address() {
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
pub(super) fn bare_dfs_prints_help() {
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
pub(super) fn a_mistyped_command_gets_a_suggestion() {
    let out = dfs().args(["gett", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("similar subcommand exists: 'get'"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Regression: a `405` had an empty body; every error answer is JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn method_not_allowed_has_a_json_body() {
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
pub(super) fn reader_writes_only_after_allow_and_stops_after_deny() {
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
    // The text calls the owner what `dfs members` calls it.
    let text = stdout(&owner.run(&["id"]));
    assert!(text.contains("role:    owner"), "{text}");
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

    let invite = owner.json(&["invite", "--json"]);
    let ticket = invite["ticket"].as_str().unwrap().to_string();
    assert!(ticket.starts_with("dfs1"), "{ticket}");
    // The invitation names the member it adds, so it can be revoked before it is used.
    let invited = invite["peer_id"].as_str().unwrap().to_string();
    assert_eq!(invite["role"], "writer");
    let members = owner.json(&["members", "--json"]);
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["peer_id"] == invited.as_str()),
        "{members}"
    );
    let out = owner.run(&["deny", &invited]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = owner.run(&["invite"]);
    let text = stdout(&out);
    assert!(text.trim().starts_with("dfs1") && text.trim().lines().count() == 1);
    assert!(
        stderr(&out).contains("dfs deny 12D3KooW"),
        "{}",
        stderr(&out)
    );
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

/// Regression: `dfs get KEY --api HOST:PORT` alone sent no token and was told the node "refused
/// the API token". The data dir's token is used when its api file names that API; otherwise
/// the error says a token is needed and where it is.
#[test]
pub(super) fn api_flag_without_a_token_uses_the_data_dirs_or_asks_for_one() {
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
pub(super) fn dfs_api_may_be_a_url_for_the_node_too() {
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

/// Regression: a second Ctrl-C was ignored while a node shut down. A download that does not
/// read its body holds the node's graceful stop (5 s); a second SIGINT ends it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn second_ctrl_c_stops_a_node_at_once() {
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

/// Runs `cmd` without the caller's DFS_* settings.
pub(super) fn dfs_in(cmd: &mut Command) -> Output {
    for v in ["DFS_DATA_DIR", "DFS_API", "DFS_API_TOKEN", "RUST_LOG"] {
        cmd.env_remove(v);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// Regression: `put`, `rm` and `get` refused `--json`. Every command prints JSON with it.
#[test]
pub(super) fn every_command_takes_json() {
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
pub(super) fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = dfs().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["dfs", "node", "put", "completions", "replicas", "verbose"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
        // The test hooks of `dfs node` are hidden, from completions too.
        for hidden in [
            "announce-interval-ms",
            "sync-interval-ms",
            "repair-interval-ms",
        ] {
            assert!(!script.contains(hidden), "{shell} script offers {hidden}");
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
pub(super) fn config_toml_is_overridden_by_env_and_flags() {
    let started = |env: &[(&str, &str)], args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let port = free_port();
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
    let env_port = free_port();
    let env_api = format!("127.0.0.1:{env_port}");
    let (node, _) = started(&[("DFS_API", &env_api)], &[]);
    assert_eq!(
        node.url(),
        format!("http://{env_api}"),
        "DFS_API wins over the file"
    );
    drop(node);
    let flag_port = free_port();
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

/// A restart with only `--data-dir` comes back on the listen and API addresses of the last run
/// (kept in `<data dir>/addresses.toml`), instead of failing on the defaults; a flag still wins.
#[test]
pub(super) fn a_restart_with_only_the_data_dir_listens_where_the_last_run_did() {
    let (p2p, api) = (free_port(), free_port());
    let listen = format!("/ip4/127.0.0.1/tcp/{p2p}");
    let api_addr = format!("127.0.0.1:{api}");
    let node = TestNode::custom(
        tempfile::tempdir().unwrap(),
        &["--listen", &listen, "--api", &api_addr],
        &[],
    );
    let id = node.peer_id();
    let dir = node.kill();
    let remembered = std::fs::read_to_string(dir.path().join("data/addresses.toml")).unwrap();
    assert!(
        remembered.contains(&listen) && remembered.contains(&api_addr),
        "{remembered}"
    );

    let node = TestNode::custom(dir, &[], &[]);
    assert_eq!(node.url(), format!("http://{api_addr}"));
    assert_eq!(node.addr(), format!("{listen}/p2p/{id}"));
    let dir = node.kill();

    let other = free_port();
    let node = TestNode::custom(dir, &["--api", &format!("127.0.0.1:{other}")], &[]);
    assert_eq!(
        node.url(),
        format!("http://127.0.0.1:{other}"),
        "the flag wins"
    );
    assert_eq!(node.addr(), format!("{listen}/p2p/{id}"));
}

/// `-q` keeps a node's log to warnings, `-v` adds dfs's debug lines; RUST_LOG wins over both.
#[test]
pub(super) fn verbose_and_quiet_flags_set_the_log_level() {
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

    // A client command says with -v which node it uses and what it asks.
    let node = TestNode::start("cli-verbose-client", None);
    let plain = node.run(&["ls"]);
    assert!(stderr(&plain).is_empty(), "{}", stderr(&plain));
    let verbose = node.run(&["-v", "ls"]);
    assert!(verbose.status.success());
    let err = stderr(&verbose);
    assert!(
        err.contains("using a node") && err.contains(&node.url()),
        "{err}"
    );
    assert!(err.contains("GET") && err.contains("/v1/files"), "{err}");
}

/// The TCP port of a node's first address.
pub(super) fn tcp_port(addr: &str) -> u16 {
    let parts: Vec<&str> = addr.split('/').collect();
    let i = parts
        .iter()
        .position(|p| *p == "tcp")
        .expect("a TCP address");
    parts[i + 1].parse().unwrap()
}

/// Lines of a node's log that contain every one of `parts`.
pub(super) fn log_lines(node: &TestNode, parts: &[&str]) -> usize {
    node.log()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// Regression: a bootstrap address whose `/p2p/` part names another peer than the one that
/// answers was re-dialled for ever; it is now said once, as a warning, and not dialled again.
#[test]
pub(super) fn a_bootstrap_address_with_a_wrong_peer_id_is_warned_once_and_not_redialled() {
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
pub(super) fn dfs_connect_connects_at_runtime_and_prints_the_peer_id() {
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

/// `GET /metrics` needs the token and shows dfs's figures after a put, and libp2p's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn metrics_need_the_token_and_count_a_put() {
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
pub(super) fn mdns_is_off_by_default_and_on_with_the_flag() {
    let plain = TestNode::start("cli-mdns", None);
    let with = TestNode::spawn_args(&["--mdns"]);
    assert!(log_lines(&with, &["INFO", "mDNS"]) > 0, "{}", with.log());
    assert_eq!(log_lines(&plain, &["mDNS"]), 0, "{}", plain.log());
}
