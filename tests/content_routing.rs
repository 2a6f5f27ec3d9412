//! Content routing over Kademlia: a node finds the providers of a content id among peers it is
//! not connected to, through the peers it is connected to.

mod common;

use std::time::Duration;

use common::*;
use dfs::record::Hash;

/// Three nodes in a line, A – B – C: C refuses A's connections (blocked before A even starts),
/// so whatever A learns of C comes through B. C provides many content ids (queued, announced a
/// few at a time); A's lookup finds C as the provider of the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_finds_a_provider_it_is_not_connected_to() {
    let b = TestNode::start(vec![]).await;
    let c = TestNode::start(vec![b.addr.clone()]).await;
    let c_id = c.client.peer_id();
    let b_id = b.client.peer_id();

    let a_dir = tempfile::tempdir().unwrap();
    let a_id = identity(a_dir.path()).public().to_peer_id();
    c.client.block(a_id, true).await.unwrap();

    let keys: Vec<Hash> = (0..64u32).map(|n| Hash::of(&n.to_le_bytes())).collect();
    let wanted = *keys.last().unwrap();
    c.client.network().provide(keys.clone()).await.unwrap();
    // Providing again is a no-op, not a second round of announcements.
    c.client.network().provide(vec![wanted]).await.unwrap();

    let a = TestNode::start_with(a_dir, vec![b.addr.clone()]).await;
    assert_eq!(a.client.peer_id(), a_id);

    let found = eventually(Duration::from_secs(30), || async {
        let providers = a.client.network().providers(wanted).await.unwrap();
        providers.contains(&c_id)
    })
    .await;
    assert!(found, "A should find C as the provider through B");

    let peers: Vec<_> = a
        .client
        .peers()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.peer_id)
        .collect();
    assert!(peers.contains(&b_id), "A is connected to B");
    assert!(!peers.contains(&c_id), "A was never connected to C");

    // Nobody provides an unknown id; the lookup ends (no wait for its deadline).
    let started = tokio::time::Instant::now();
    let none = a
        .client
        .network()
        .providers(Hash::of(b"nobody has this"))
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(started.elapsed() < dfs::net::routing::PROVIDERS_TIMEOUT);

    // Once C lets A in, A reaches C by its peer id alone.
    c.client.block(a_id, false).await.unwrap();
    a.client.network().connect_peer(c_id).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.client
                .peers()
                .await
                .unwrap()
                .iter()
                .any(|p| p.peer_id == c_id)
        })
        .await
    );
}
