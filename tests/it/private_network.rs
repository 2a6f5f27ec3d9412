//! Private networks (`dfs node --swarm-key`, libp2p's `pnet`): nodes holding the same swarm key
//! connect and replicate; a node without the key, or with another key, cannot connect, and
//! both sides of the failed connection say why in one line, fast, in either direction.

use crate::common;

use std::time::{Duration, Instant};

use common::{eventually, log_len, logged, TestNode};
use dfs::net::transport::{new_swarm_key, parse_swarm_key, SwarmKey};
use libp2p::Multiaddr;

/// How long both sides may take to report a refused connection.
const FAST: Duration = Duration::from_secs(3);

/// The scenarios read the shared log, so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn key() -> SwarmKey {
    parse_swarm_key(&new_swarm_key()).unwrap()
}

async fn node(swarm_key: Option<SwarmKey>, bootstrap: Vec<Multiaddr>) -> TestNode {
    common::node_with(|c| c.swarm_key = swarm_key, None, bootstrap).await
}

/// The TCP address of a node, without its `/p2p/` part, as the dialer's log names it.
fn tcp_part(addr: &Multiaddr) -> String {
    dfs::net::discovery::split_peer(addr).0.to_string()
}

/// Starts `listener`'s node, then `dialer`'s node bootstrapped to it; checks that both log
/// their line within [`FAST`] and that they stay apart.
async fn refused(
    listener: Option<SwarmKey>,
    dialer: Option<SwarmKey>,
    dialer_says: &str,
    listener_says: &str,
) {
    let _serial = SERIAL.lock().await;
    let a = node(listener, vec![]).await;
    let mark = log_len();
    let started = Instant::now();
    let b = node(dialer, vec![a.addr.clone()]).await;
    let target = format!("connection to {}", tcp_part(&a.addr));
    let both = eventually(FAST, || async {
        !logged(mark, &[&target, dialer_says]).is_empty()
            && !logged(mark, &["connection from", listener_says]).is_empty()
    })
    .await;
    let took = started.elapsed();
    assert!(
        both,
        "both sides should say why within {FAST:?}; logged:\n{}",
        common::logs_since(mark)
    );
    eprintln!("both sides reported the refused connection within {took:?}");
    // And they stay apart (the bootstrap peer is dialled again, and refused again).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.peer_count().await, 0);
    assert_eq!(b.peer_count().await, 0);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_the_key_connect_and_replicate_a_put() {
    let _serial = SERIAL.lock().await;
    let k = key();
    let a = node(Some(k), vec![]).await;
    let b = node(Some(k), vec![a.addr.clone()]).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.peer_count().await == 1 && b.peer_count().await == 1
        })
        .await,
        "nodes of one private network connect"
    );
    let bytes = common::data(300_000, 7);
    common::put(&a.client, "private.bin", bytes.clone()).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.client
                .stat("private.bin".into())
                .await
                .is_ok_and(|s| s.local)
        })
        .await,
        "the put replicates"
    );
    assert_eq!(common::get(&b.client, "private.bin").await, Some(bytes));
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_key_cannot_connect_to_a_private_one() {
    refused(
        Some(key()),
        None,
        "does not speak libp2p's handshake",
        "does not hold this network's swarm key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_node_cannot_connect_to_one_without_the_key() {
    refused(
        None,
        Some(key()),
        "closed the connection during the private-network handshake",
        "does not speak libp2p's handshake",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_different_keys_cannot_connect_either_way() {
    let (k1, k2) = (key(), key());
    refused(
        Some(k1),
        Some(k2),
        "does not hold this network's swarm key",
        "does not hold this network's swarm key",
    )
    .await;
    refused(
        Some(k2),
        Some(k1),
        "does not hold this network's swarm key",
        "does not hold this network's swarm key",
    )
    .await;
}

#[test]
fn dfs_swarm_key_prints_or_writes_a_key_that_dfs_node_reads() {
    let dfs = env!("CARGO_BIN_EXE_dfs");
    let out = std::process::Command::new(dfs)
        .arg("swarm-key")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"),
        "{text}"
    );
    parse_swarm_key(&text).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("swarm.key");
    let out = std::process::Command::new(dfs)
        .args(["swarm-key", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let written = std::fs::read_to_string(&file).unwrap();
    assert_ne!(written, text, "every key is new");
    dfs::net::transport::read_swarm_key(&file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // An existing file is not overwritten.
    let again = std::process::Command::new(dfs)
        .args(["swarm-key", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);

    // A node refuses a file that is not a swarm key, saying why.
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "/key/swarm/psk/1.0.0/\n/base16/\nxyz\n").unwrap();
    let out = std::process::Command::new(dfs)
        .args(["node", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
        .arg("--swarm-key")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("64 hex digits"), "{stderr}");
}
