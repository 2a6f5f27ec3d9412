//! Shared test helpers: start real nodes on 127.0.0.1:0 with temporary data dirs, and wait for
//! conditions with deadlines (never fixed sleeps).
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use dfs::node::{Client, Config, Node};
use libp2p::Multiaddr;

/// A node of a test, with its data dir (kept across restarts).
pub struct TestNode {
    pub node: Option<Node>,
    pub client: Arc<Client>,
    pub dir: tempfile::TempDir,
    pub addr: Multiaddr,
    pub bootstrap: Vec<Multiaddr>,
}

/// The owner of the network each test node's address belongs to: a node started with a
/// bootstrap address joins that network as a writer, with a ticket from its owner (while the
/// owner runs: the registry does not keep a stopped node's store open).
static OWNERS: LazyLock<Mutex<HashMap<Multiaddr, Weak<Client>>>> = LazyLock::new(Default::default);

fn owner_at(addrs: &[Multiaddr]) -> Option<Arc<Client>> {
    let owners = OWNERS.lock().unwrap();
    addrs
        .iter()
        .find_map(|a| owners.get(a).and_then(Weak::upgrade))
}

/// Everything the nodes of this process log at warn and above, for the tests that check what a
/// node says (`private_network`): they look for lines naming their own nodes' addresses.
pub static LOGS: Mutex<String> = Mutex::new(String::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process's one subscriber: `RUST_LOG` (default warn) to the test's output, and warn and
/// above into [`LOGS`]. The first call installs it; later calls do nothing.
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn".into()),
                ),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(|| Capture)
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .try_init();
}

/// The length of [`LOGS`] now: a mark to read what is logged after it.
pub fn log_len() -> usize {
    LOGS.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// The lines logged since `mark` that contain every one of `parts`.
pub fn logged(mark: usize, parts: &[&str]) -> Vec<String> {
    let logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    logs[mark..]
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(String::from)
        .collect()
}

/// What was logged since `mark`.
pub fn logs_since(mark: usize) -> String {
    LOGS.lock().unwrap_or_else(|e| e.into_inner())[mark..].to_string()
}

/// The configuration of a test node: loopback, random port, fast timers. With `bootstrap` and a
/// fresh data dir, the node is a reader of the bootstrap peer's network (see [`TestNode`] for
/// writers).
pub fn config(dir: PathBuf, bootstrap: Vec<Multiaddr>) -> Config {
    let mut c = Config::new(dir);
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.bootstrap = bootstrap;
    c.announce_interval = Duration::from_millis(500);
    c.sync_interval = Duration::from_secs(1);
    c.retry_interval = Duration::from_secs(1);
    c.lookup_timeout = Duration::from_secs(3);
    c
}

impl TestNode {
    /// A node: without `bootstrap`, the owner of a new network; with it, a writer of the
    /// network of the test node at the first bootstrap address (joined by ticket), or a reader
    /// if no test node is there.
    pub async fn start(bootstrap: Vec<Multiaddr>) -> TestNode {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path().to_path_buf(), bootstrap.clone());
        let owner = owner_at(&bootstrap);
        if let Some(owner) = &owner {
            cfg.join = Some(owner.invite(false).await.expect("invite"));
        }
        Self::start_config(dir, cfg, owner, bootstrap).await
    }

    /// A reader: joins the network of its bootstrap peers without any grant.
    pub async fn reader(bootstrap: Vec<Multiaddr>) -> TestNode {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path().to_path_buf(), bootstrap.clone());
        let owner = owner_at(&bootstrap);
        Self::start_config(dir, cfg, owner, bootstrap).await
    }

    /// A node whose test configuration `tweak` changes (a fresh data dir); with `owner`, a
    /// writer of the owner's network (by ticket), else, with `bootstrap`, a reader.
    pub async fn with_config(
        tweak: impl FnOnce(&mut Config),
        owner: Option<&TestNode>,
        bootstrap: Vec<Multiaddr>,
    ) -> TestNode {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path().to_path_buf(), bootstrap.clone());
        if let Some(owner) = owner {
            cfg.join = Some(owner.client.invite(false).await.expect("invite"));
        }
        tweak(&mut cfg);
        let owner = owner.map(|o| o.client.clone());
        Self::start_config(dir, cfg, owner, bootstrap).await
    }

    /// Starts a node on an existing data dir (a restart: it remembers its network).
    pub async fn start_with(dir: tempfile::TempDir, bootstrap: Vec<Multiaddr>) -> TestNode {
        let cfg = config(dir.path().to_path_buf(), bootstrap.clone());
        let owner = owner_at(&bootstrap);
        Self::start_config(dir, cfg, owner, bootstrap).await
    }

    async fn start_config(
        dir: tempfile::TempDir,
        cfg: Config,
        owner: Option<Arc<Client>>,
        bootstrap: Vec<Multiaddr>,
    ) -> TestNode {
        let node = start_node(cfg).await;
        let client = Arc::new(node.client());
        let addr = client.info().await.unwrap().addrs[0].clone();
        let owner = if client.network_id() == Some(client.peer_id().to_string()) {
            client.clone()
        } else {
            owner.unwrap_or_else(|| client.clone())
        };
        OWNERS
            .lock()
            .unwrap()
            .insert(addr.clone(), Arc::downgrade(&owner));
        TestNode {
            node: Some(node),
            client,
            dir,
            addr,
            bootstrap,
        }
    }

    /// Stops the node and releases every handle on its store; returns the data dir.
    pub async fn stop(self) -> (tempfile::TempDir, Vec<Multiaddr>) {
        let TestNode {
            node,
            client,
            dir,
            bootstrap,
            addr,
            ..
        } = self;
        OWNERS.lock().unwrap().remove(&addr);
        drop(client);
        if let Some(node) = node {
            node.shutdown().await;
        }
        (dir, bootstrap)
    }

    /// Stops and starts the node on the same data dir (and a new port).
    pub async fn restart(self) -> TestNode {
        let (dir, bootstrap) = self.stop().await;
        TestNode::start_with(dir, bootstrap).await
    }

    pub async fn peer_count(&self) -> usize {
        self.client.peers().await.map(|p| p.len()).unwrap_or(0)
    }
}

/// [`TestNode::with_config`].
pub async fn node_with(
    tweak: impl FnOnce(&mut Config),
    owner: Option<&TestNode>,
    bootstrap: Vec<Multiaddr>,
) -> TestNode {
    TestNode::with_config(tweak, owner, bootstrap).await
}

/// Starts a node. No retry: a node that was shut down has released its data dir.
pub async fn start_node(config: Config) -> Node {
    match Node::start(config).await {
        Ok(node) => node,
        Err(e) => panic!("node does not start: {e}"),
    }
}

/// Starts `n` nodes, node k bootstrapping only to node k-1.
pub async fn chain(n: usize) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for _ in 0..n {
        let bootstrap = nodes
            .last()
            .map(|p| vec![p.addr.clone()])
            .unwrap_or_default();
        nodes.push(TestNode::start(bootstrap).await);
    }
    nodes
}

/// Polls `check` every 25 ms until it is true or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until every node is connected to all the others.
pub async fn fully_connected(nodes: &[TestNode], deadline: Duration) -> bool {
    let want = nodes.len() - 1;
    eventually(deadline, || async {
        for n in nodes {
            if n.peer_count().await < want {
                return false;
            }
        }
        true
    })
    .await
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Puts bytes under a key through a client.
pub async fn put(client: &Client, key: &str, bytes: Vec<u8>) -> dfs::record::Record {
    client
        .put(key.to_string(), std::io::Cursor::new(bytes))
        .await
        .expect("put succeeds")
}

/// Reads a key through a client.
pub async fn get(client: &Client, key: &str) -> Option<Vec<u8>> {
    client
        .get(key.to_string(), None)
        .await
        .ok()?
        .bytes()
        .await
        .ok()
}

/// The keypair of the node whose data dir is `dir` (created if the node has not started yet).
pub fn identity(dir: &std::path::Path) -> libp2p::identity::Keypair {
    dfs::identity::load_or_create(dir).expect("identity")
}

/// A record signed by `key` under sequence number `seq` (tests use numbers far above the
/// node's own, so the two never collide).
pub fn signed(
    key: &libp2p::identity::Keypair,
    name: &str,
    cid: Option<dfs::record::Hash>,
    size: u64,
    time: u64,
    seq: u64,
) -> dfs::record::Record {
    let mut r = dfs::record::Record {
        key: name.into(),
        cid,
        size,
        time,
        author: Vec::new(),
        seq,
        seen: Vec::new(),
        sig: Vec::new(),
    };
    r.sign(key);
    r
}

/// A libp2p peer for tests (TCP + noise + yamux, as the node speaks), with identity `key`,
/// the behaviour `behaviour` makes, and connections kept while idle.
pub fn peer_swarm<B: libp2p::swarm::NetworkBehaviour>(
    key: libp2p::identity::Keypair,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("a TCP transport")
        .with_behaviour(behaviour)
        .expect("a behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build()
}
