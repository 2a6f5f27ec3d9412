//! Content routing over Kademlia: a node finds the providers of a content id among peers it is
//! not connected to, through the peers it is connected to.

use crate::common;

use std::time::Duration;

use common::*;
use dfs::record::Hash;

/// Three nodes of one network in a line, A – B – C: C refuses A's connections (blocked before A
/// even starts),
/// so whatever A learns of C comes through B. C provides many content ids (queued, announced a
/// few at a time); A's lookup finds C as the provider of the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_finds_a_provider_it_is_not_connected_to() {
    let b = TestNode::start(vec![]).await;
    let c = TestNode::start(vec![b.addr.clone()]).await;
    let c_id = c.client.peer_id();
    let b_id = b.client.peer_id();

    // A joins by ticket (the ticket holds its identity, so C can refuse it beforehand).
    let ticket = b.client.invite(false).await.unwrap();
    let a_id = ticket.key.public().to_peer_id();
    c.client.block(a_id, true).await.unwrap();

    let keys: Vec<Hash> = (0..64u32).map(|n| Hash::of(&n.to_le_bytes())).collect();
    let wanted = *keys.last().unwrap();
    c.client.network().provide(keys.clone()).await.unwrap();
    // Providing again is a no-op, not a second round of announcements.
    c.client.network().provide(vec![wanted]).await.unwrap();

    let a_dir = tempfile::tempdir().unwrap();
    let mut cfg = config(a_dir.path().to_path_buf(), vec![b.addr.clone()]);
    cfg.join = Some(ticket);
    let a_node = start_node(cfg).await;
    let a_client = a_node.client();
    assert_eq!(a_client.peer_id(), a_id);
    let a = TestNode {
        addr: a_client.info().await.unwrap().addrs[0].clone(),
        client: std::sync::Arc::new(a_client),
        node: Some(a_node),
        dir: a_dir,
        bootstrap: vec![b.addr.clone()],
    };

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
    // Kademlia's events are in the node's metrics.
    let metrics = a.client.metrics_text().await.unwrap();
    assert!(
        metrics.contains("libp2p_kad_query_result_get_providers_ok"),
        "{metrics}"
    );

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

/// Nodes of another network are not in a node's DHT: a node connected to two networks (by a
/// dial) does not bridge them, and a provider of one is not found from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_of_another_network_are_not_found() {
    let alpha = TestNode::start(vec![]).await;
    let beta = TestNode::start(vec![]).await;
    let beta2 = TestNode::start(vec![beta.addr.clone()]).await;
    beta.client.dial(alpha.addr.clone()).await.unwrap();
    let key = Hash::of(b"beta content");
    beta2.client.network().provide(vec![key]).await.unwrap();
    let in_beta = eventually(Duration::from_secs(20), || async {
        let p = beta.client.network().providers(key).await.unwrap();
        p.contains(&beta2.client.peer_id())
    })
    .await;
    assert!(in_beta, "beta finds its own provider");
    assert!(
        eventually(Duration::from_secs(10), || async {
            alpha
                .client
                .peers()
                .await
                .unwrap()
                .iter()
                .any(|p| p.peer_id == beta.client.peer_id())
        })
        .await
    );
    let from_alpha = alpha.client.network().providers(key).await.unwrap();
    assert!(
        from_alpha.is_empty(),
        "alpha's DHT is its own: {from_alpha:?}"
    );
}

/// A node that learns its network from its bootstrap peers after start has no Kademlia (its
/// protocol names the network) and says so, until its next start, when it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_routes_content_from_its_next_start() {
    let b = TestNode::start(vec![]).await;
    let reader = TestNode::reader(vec![b.addr.clone()]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            reader.client.network_id() == b.client.network_id()
        })
        .await
    );
    let key = Hash::of(b"anything");
    assert!(matches!(
        reader.client.network().providers(key).await,
        Err(dfs::net::Error::NoContentRouting)
    ));
    let reader = reader.restart().await;
    b.client.network().provide(vec![key]).await.unwrap();
    let found = eventually(Duration::from_secs(20), || async {
        let p = reader.client.network().providers(key).await.unwrap();
        p.contains(&b.client.peer_id())
    })
    .await;
    assert!(found, "after a restart the reader finds providers");
}
