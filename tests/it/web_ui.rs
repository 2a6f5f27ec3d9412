//! The node's web page: served without a token under a strict CSP, refused to other origins,
//! `GET /v1/transfers`, and the page itself driven in headless Chromium through chromedriver's
//! WebDriver API (it lists a file put through the CLI, uploads one that another node serves).
//!
//! The browser test skips, saying so, when chromedriver or Chromium is missing; with
//! `DFS_REQUIRE_BROWSER=1` (CI) it fails instead. `DFS_CHROMEDRIVER` and `DFS_CHROMIUM` name
//! other binaries.

use crate::common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{eventually, fully_connected, TestNode};
use dfs::datadir::DataDir;
use serde_json::{json, Value};

/// How long the page, the browser or a cluster may take for anything.
const DEADLINE: Duration = Duration::from_secs(30);
/// The W3C WebDriver name of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The binary under test (`DFS_TEST_BIN` overrides it, as in `tests/cli.rs`).
fn dfs_bin() -> String {
    std::env::var("DFS_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dfs").to_string())
}

/// A node's API served by this test process, on 127.0.0.1:0, with the data dir's `api` and
/// `api-token` files written so that the CLI finds it.
struct Api {
    url: String,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Api {
    async fn serve(node: &TestNode) -> Api {
        let dir = DataDir::new(node.dir.path());
        let token = dfs::api::load_or_create_token(&dir).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(dfs::api::serve(
            listener,
            (*node.client).clone(),
            token.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        dfs::api::write_api_file(&dir, &url).unwrap();
        Api {
            url,
            token,
            stop: Some(stop),
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .no_proxy()
        .build()
        .unwrap()
}

/// The page and its files need no token, carry the CSP, and hold no data; the API still needs
/// the token; a request from another origin is refused even with the token, and no answer
/// carries CORS headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_no_token_and_the_api_refuses_other_origins() {
    let node = TestNode::start(vec![]).await;
    let api = Api::serve(&node).await;
    let http = http();
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let res = http.get(format!("{}{path}", api.url)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = res.text().await.unwrap();
        assert!(!body.contains(&api.token), "{path} holds no token");
        assert!(
            !body.contains(&node.client.peer_id().to_base58()),
            "{path} holds no data"
        );
    }
    let page = http.get(format!("{}/ui", api.url)).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(!page.contains("<script>"), "no inline script");
    assert!(!page.contains("style="), "no inline style");

    for path in ["/v1/files", "/v1/transfers", "/v1/id"] {
        let res = http.get(format!("{}{path}", api.url)).send().await.unwrap();
        assert_eq!(res.status(), 401, "{path} without the token");
        let res = http
            .get(format!("{}{path}", api.url))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path} with the token");
        let res = http
            .get(format!("{}{path}", api.url))
            .bearer_auth(&api.token)
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path} from another origin");
        assert!(res.headers().get("access-control-allow-origin").is_none());
    }
    // The page's own origin is accepted (browsers send Origin with PUT and DELETE).
    let res = http
        .put(format!("{}/v1/files/same-origin", api.url))
        .bearer_auth(&api.token)
        .header("origin", &api.url)
        .body("bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // A preflight gets no CORS permission, so a browser never sends the token cross-origin.
    let res = http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/files", api.url))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(!res.status().is_success());
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert!(res.headers().get("access-control-allow-headers").is_none());
}

/// `GET /v1/transfers` shows a fetch in flight (key, size, bytes and chunks done) and is empty
/// again once the content is here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_show_a_fetch_in_flight_then_nothing() {
    const SIZE: usize = 24 << 20;
    let a = TestNode::start(vec![]).await;
    let bytes = common::data(SIZE, 7);
    common::put(&a.client, "big", bytes).await;
    let b = TestNode::start(vec![a.addr.clone()]).await;
    let api = Api::serve(&b).await;
    let http = http();
    // Polled every millisecond (not through `eventually`'s 25 ms): the fetch is short.
    let mut seen: Vec<dfs::api::json::Transfer> = Vec::new();
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let list: Vec<dfs::api::json::Transfer> = http
            .get(format!("{}/v1/transfers", api.url))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let empty = list.is_empty();
        seen.extend(list);
        if empty
            && b.client
                .stat("big".into())
                .await
                .is_ok_and(|s| s.local && s.damaged == 0)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the content arrives and the list empties"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!("{} snapshots of the transfer", seen.len());
    let t = seen
        .iter()
        .find(|t| t.key == "big")
        .expect("the transfer was listed while in flight");
    assert_eq!(t.size, SIZE as u64);
    assert_eq!(t.chunks_total, SIZE as u64 / dfs::record::CHUNK_SIZE as u64);
    assert_eq!(t.content_id.len(), 64);
    assert!(["lookup", "queued", "fetching"].contains(&t.phase.as_str()));
    for t in &seen {
        assert!(t.bytes_done <= t.size && t.chunks_done <= t.chunks_total);
    }
    let last = seen.iter().map(|t| t.chunks_done).max().unwrap();
    assert!(last > 0 || seen.len() < 3, "progress shows: {seen:?}");
}

// ---- the browser test ---------------------------------------------------------------------

/// chromedriver and the browser binary, if this machine has them.
struct Tools {
    chromedriver: PathBuf,
    chromium: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Finds the tools; `None` (after saying why) when they are missing and the browser is not
/// required; panics when it is (`DFS_REQUIRE_BROWSER=1`).
fn tools() -> Option<Tools> {
    let from_env = |var: &str| std::env::var_os(var).map(PathBuf::from);
    let chromedriver = from_env("DFS_CHROMEDRIVER").or_else(|| on_path("chromedriver"));
    let chromium = from_env("DFS_CHROMIUM").or_else(|| {
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|n| on_path(n))
    });
    match (chromedriver, chromium) {
        (Some(chromedriver), Some(chromium)) => Some(Tools {
            chromedriver,
            chromium,
        }),
        (driver, browser) => {
            let missing = [
                driver.is_none().then_some("chromedriver"),
                browser.is_none().then_some("chromium"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ");
            let required = std::env::var("DFS_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "DFS_REQUIRE_BROWSER=1 but {missing} not found (apt-get install chromium chromium-driver)"
            );
            eprintln!(
                "SKIPPED: the web page's browser test needs {missing} (apt-get install chromium chromium-driver); set DFS_REQUIRE_BROWSER=1 to make this a failure"
            );
            None
        }
    }
}

/// A chromedriver process (in its own process group, with the browser it starts) and one
/// WebDriver session. Dropping it kills the whole group, on every path, panics included.
struct Browser {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(tools: &Tools) -> Browser {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            http: http(),
            session: String::new(),
            _profile: profile,
        };
        let base = format!("http://127.0.0.1:{port}");
        let ready = eventually(DEADLINE, || {
            let http = browser.http.clone();
            let url = format!("{base}/status");
            async move {
                match http.get(url).send().await {
                    Ok(res) => res
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(ready, "chromedriver answers on port {port}");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1280,1000",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        )])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": tools.chromium, "args": args},
        }}});
        let res: Value = browser
            .http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let id = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a browser session: {res}"));
        browser.session = format!("{base}/session/{id}");
        browser
    }

    /// A WebDriver command; panics with the driver's error.
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let req = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        let req = if method == reqwest::Method::GET {
            req
        } else {
            req.json(&body)
        };
        let res: Value = req.send().await.unwrap().json().await.unwrap();
        if res["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {}", res["value"]);
        }
        res["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Polls `script` until it returns `true`; panics naming `what` after the deadline.
    async fn wait_for(&self, what: &str, script: &str) {
        let ok = eventually(DEADLINE, || async { self.script(script).await == true }).await;
        if !ok {
            let status = self
                .script("return document.getElementById('status').textContent")
                .await;
            panic!("timed out waiting for {what} (page status: {status})");
        }
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT].as_str().expect("an element reference").into()
    }

    async fn send_keys(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    /// Ends the session politely (the browser quits), before the drop kills what is left.
    async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browser and its helpers are in chromedriver's process group (the shell's `kill`:
        // there on every machine, unlike procps' `kill`).
        let _ = std::process::Command::new("sh")
            .args(["-c", &format!("kill -9 -{}", self.driver.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Runs the `dfs` binary; panics with its stderr when it fails.
async fn dfs(args: &[&str]) -> String {
    let out = tokio::process::Command::new(dfs_bin())
        .args(args)
        .env_remove("DFS_API")
        .env_remove("DFS_API_TOKEN")
        .env_remove("DFS_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "dfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A script expression: whether the files table has a row for `key` in `state` (any state for
/// `None`).
fn has_row(key: &str, state: Option<&str>) -> String {
    let state = state.map_or(String::new(), |s| format!(" && r.dataset.state === '{s}'"));
    format!(
        "Array.from(document.querySelectorAll('#files tbody tr'))\
         .some(r => r.dataset.key === {key:?}{state})"
    )
}

/// The page in headless Chromium: opened from `dfs ui`'s address, it shows the node and its
/// peer, lists a file put through the CLI, uploads a file through its file input that the other
/// node then serves, deletes a file, and without the token shows only the way to get one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_uploads_and_deletes_in_headless_chromium() {
    let Some(tools) = tools() else { return };
    let a = TestNode::start(vec![]).await;
    let b = TestNode::start(vec![a.addr.clone()]).await;
    let nodes = [a, b];
    assert!(fully_connected(&nodes, DEADLINE).await, "the nodes connect");
    let [a, b] = nodes;
    let api = Api::serve(&a).await;
    let dir = a.dir.path().to_str().unwrap().to_string();
    let files = tempfile::tempdir().unwrap();

    // A file put through the CLI.
    let cli_file = files.path().join("from-cli.txt");
    std::fs::write(&cli_file, b"put through the command line\n").unwrap();
    dfs(&["put", "--data-dir", &dir, cli_file.to_str().unwrap()]).await;

    // The page's address from `dfs ui`.
    let out = dfs(&["ui", "--data-dir", &dir, "--json"]).await;
    let url = serde_json::from_str::<Value>(&out).unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(url, format!("{}/ui#token={}", api.url, api.token));

    let browser = Browser::start(&tools).await;
    browser.goto(&url).await;
    browser
        .wait_for(
            "the file put through the CLI",
            &format!("return {}", has_row("from-cli.txt", Some("local"))),
        )
        .await;
    // The token left the address bar for the tab's session storage.
    assert_eq!(browser.script("return location.hash").await, "");
    assert_eq!(
        browser
            .script("return sessionStorage.getItem('dfs-api-token')")
            .await,
        api.token.as_str()
    );
    let shown = browser
        .script("return document.getElementById('node-peer-id').textContent")
        .await;
    assert_eq!(shown, a.client.peer_id().to_base58().as_str());
    let peer_b = b.client.peer_id().to_base58();
    browser
        .wait_for(
            "node B in the peers",
            &format!("return !!document.querySelector('#peers tr[data-peer-id=\"{peer_b}\"]')"),
        )
        .await;

    // Keys are text, never markup.
    let hostile = "<img src=x onerror=\"window.pwned = 1\">.txt";
    common::put(&a.client, hostile, b"markup in a key".to_vec()).await;
    browser
        .wait_for(
            "the file with markup in its key",
            &format!("return {}", has_row(hostile, Some("local"))),
        )
        .await;
    let safe = browser
        .script("return window.pwned === undefined && !document.querySelector('#files img')")
        .await;
    assert_eq!(safe, true, "a key is shown as text");
    // The replication column counts each file's holders (this node at least), as
    // `stat ?holders=1` reports them.
    browser
        .wait_for(
            "the replication column of from-cli.txt",
            "const c = document.querySelector('#files tr[data-key=\"from-cli.txt\"] td.holders'); \
             return !!c && Number(c.dataset.holders) >= 1",
        )
        .await;
    // A failed action stays on the page until dismissed, whatever the polls say meanwhile.
    browser
        .script("download('no/such/file', document.createElement('button')); return true")
        .await;
    browser
        .wait_for(
            "the failed download's notice",
            "return !document.getElementById('notice').hidden",
        )
        .await;
    let polls = browser.script("return state.polls").await;
    browser
        .wait_for(
            "two more polls",
            &format!("return state.polls >= {} + 2", polls),
        )
        .await;
    let notice = browser
        .script(
            "return [document.getElementById('notice').hidden, \
               document.getElementById('notice-text').textContent.includes('no/such/file'), \
               document.getElementById('status').textContent]",
        )
        .await;
    assert_eq!(notice, json!([false, true, "connected"]));
    browser.click("#notice-dismiss").await;
    let hidden = browser
        .script("return document.getElementById('notice').hidden")
        .await;
    assert_eq!(hidden, true);
    // A reader's page offers no Delete (rendered as for a reader, by hand).
    let reader = browser
        .script(
            "const id = state.id; state.id = Object.assign({}, id, {role: 'reader'}); \
             renderFiles(); \
             const buttons = [...document.querySelectorAll('#files button.delete')]; \
             const all = buttons.length > 0 && buttons.every(b => b.disabled); \
             state.id = id; renderFiles(); \
             return [all, [...document.querySelectorAll('#files button.delete')].every(b => !b.disabled)]",
        )
        .await;
    assert_eq!(reader, json!([true, true]));
    // A transfer and a file with holders render (the renderers, fed by hand).
    let rendered = browser
        .script(
            "state.transfers = [{key: 'big', content_id: 'ab', size: 4194304, bytes_done: 1048576, \
               chunks_done: 1, chunks_total: 4, phase: 'fetching'}]; \
             renderTransfers(); \
             const row = document.querySelector('#transfers tbody tr[data-key=\"big\"]'); \
             const f = {key: 'held', size: 1, local: true, deleted: false, damaged: 0, \
               holders: ['12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', '12D3KooWBBBB']}; \
             const cell = holdersCell(f); \
             return [row.querySelector('progress').value, row.textContent.includes('1/4 chunks'), \
               cell.dataset.holders, cell.textContent.startsWith('2 peers')]",
        )
        .await;
    assert_eq!(rendered, json!([1048576, true, "2", true]));

    // Upload through the file input.
    let upload = files.path().join("from-page.bin");
    let bytes = common::data(2 * dfs::record::CHUNK_SIZE + 12_345, 11);
    std::fs::write(&upload, &bytes).unwrap();
    browser
        .send_keys("#upload-file", upload.to_str().unwrap())
        .await;
    browser.click("#upload-button").await;
    browser
        .wait_for(
            "the upload's answer",
            "return document.getElementById('upload-status').textContent.startsWith('stored from-page.bin')",
        )
        .await;
    browser
        .wait_for(
            "the uploaded file",
            &format!("return {}", has_row("from-page.bin", Some("local"))),
        )
        .await;
    let stat = a.client.stat("from-page.bin".into()).await.unwrap();
    assert!(stat.local);
    assert_eq!(stat.record.size, bytes.len() as u64);
    // Node B serves it.
    let served = eventually(DEADLINE, || async {
        common::get(&b.client, "from-page.bin").await.as_deref() == Some(&bytes[..])
    })
    .await;
    assert!(served, "node B serves the file uploaded through the page");

    // A download through the page's own API call carries the token.
    let len = browser
        .call(
            reqwest::Method::POST,
            "/execute/async",
            json!({"script": "const done = arguments[0]; api('/v1/files/' + encodeKey('from-page.bin'))\
                .then(r => r.arrayBuffer()).then(b => done(b.byteLength), e => done(String(e)))",
                "args": []}),
        )
        .await;
    assert_eq!(len, bytes.len());

    // History and restore: a second version, then the first made current again from the page.
    common::put(&a.client, "versions.txt", b"first".to_vec()).await;
    common::put(&a.client, "versions.txt", b"second".to_vec()).await;
    browser
        .wait_for(
            "versions.txt listed",
            &format!("return {}", has_row("versions.txt", Some("local"))),
        )
        .await;
    browser
        .click("#files tr[data-key=\"versions.txt\"] button.history")
        .await;
    browser
        .wait_for(
            "its history",
            "return document.querySelectorAll('#history tbody tr').length === 2",
        )
        .await;
    browser
        .click("#history tbody tr[data-state=\"replaced\"] button.restore")
        .await;
    let restored = eventually(DEADLINE, || async {
        common::get(&a.client, "versions.txt").await.as_deref() == Some(&b"first"[..])
    })
    .await;
    assert!(restored, "the first version restored from the page");
    browser
        .wait_for(
            "the restore in the history",
            "return document.querySelectorAll('#history tbody tr').length === 3",
        )
        .await;
    // Peers with their clock offsets; the members; an admin invites from the page.
    browser
        .wait_for(
            "b's clock offset",
            &format!(
                "const c = document.querySelector('#peers tr[data-peer-id=\"{peer_b}\"] td.clock'); \
                 return !!c && c.textContent.length > 0"
            ),
        )
        .await;
    browser
        .wait_for(
            "the owner among the members",
            &format!(
                "return !!document.querySelector('#members tr[data-peer-id=\"{}\"]')",
                a.client.peer_id()
            ),
        )
        .await;
    browser.click("#invite-button").await;
    browser
        .wait_for(
            "a ticket",
            "return document.getElementById('invite-ticket').value.startsWith('dfs1')",
        )
        .await;
    let invited = browser
        .script("return document.getElementById('invite-peer').textContent")
        .await;
    let invited = invited.as_str().unwrap().to_string();
    assert!(invited.starts_with("12D3KooW"), "{invited}");
    browser
        .wait_for(
            "the invited member listed",
            &format!("return !!document.querySelector('#members tr[data-peer-id=\"{invited}\"]')"),
        )
        .await;
    // A transfer's rate and time left (fed by hand, as above).
    let rate = browser
        .script(
            "state.transfers = [{key: 'big', content_id: 'ab', size: 4194304, bytes_done: 1048576, \
               chunks_done: 1, chunks_total: 4, phase: 'fetching'}]; \
             state.rates = new Map([['ab', {bytes: 1048576, at: 0, rate: 1048576}]]); \
             renderTransfers(); \
             return document.querySelector('#transfers tr[data-key=\"big\"] td.rate').textContent",
        )
        .await;
    assert_eq!(rate, "1.0 MiB/s, 3 s left");

    // Delete: one click arms the button, the second deletes everywhere.
    let row = "#files tr[data-key=\"from-cli.txt\"] button.delete";
    browser.click(row).await;
    browser.click(row).await;
    let deleted = eventually(DEADLINE, || async {
        b.client
            .stat("from-cli.txt".into())
            .await
            .is_ok_and(|s| s.record.is_tombstone())
    })
    .await;
    assert!(deleted, "the delete spreads to node B");
    browser
        .wait_for(
            "the deleted file to leave the list",
            &format!("return !{}", has_row("from-cli.txt", None)),
        )
        .await;

    // Without the token the page shows only how to get one.
    browser.script("sessionStorage.clear(); return true").await;
    browser.goto(&format!("{}/ui", api.url)).await;
    browser
        .wait_for(
            "the token form",
            "return !document.getElementById('login').hidden && document.getElementById('app').hidden",
        )
        .await;
    let rows = browser
        .script("return document.querySelectorAll('#files tbody tr').length")
        .await;
    assert_eq!(rows, 0, "no data without the token");
    browser.quit().await;
}
