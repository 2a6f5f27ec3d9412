//! Bulk catch-up (`/dfs/catchup/1`): a fresh node joining a node of several thousand records
//! takes them in one bulk stream, within a deadline and a handful of sync requests; a peer that
//! answers the catch-up with an oversized frame or garbage is cut off and the node keeps
//! working.

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, identity, put, signed, TestNode};
use dfs::protocols::{catchup, sync};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, request_response};

const RECORDS: u64 = 6_000;
/// The fresh node must hold every record within this (the issue asks 5 s for 100,000 in a
/// release build; this is a debug build on a shared machine).
const CATCH_UP: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_node_catches_up_in_bulk() {
    let a = TestNode::start(vec![]).await;
    let owner = identity(a.dir.path());
    let now = dfs::record::wall_ms() << 16;
    let records: Vec<_> = (0..RECORDS)
        .map(|i| signed(&owner, &format!("key-{i}"), None, 0, now + i, 1_000_000 + i))
        .collect();
    let store = a.client.store().clone();
    tokio::task::spawn_blocking(move || store.apply_batch(records).unwrap())
        .await
        .unwrap();
    assert_eq!(a.client.store().record_count(), RECORDS);

    let started = tokio::time::Instant::now();
    let b = TestNode::reader(vec![a.addr.clone()]).await;
    assert!(
        eventually(CATCH_UP, || async {
            b.client.store().record_count() == RECORDS
        })
        .await,
        "the fresh node holds {} of {RECORDS} records after {CATCH_UP:?}",
        b.client.store().record_count()
    );
    let took = started.elapsed();
    assert_eq!(
        b.client.store().sync_leaves(),
        a.client.store().sync_leaves(),
        "both hold the same heads"
    );
    // Exchanges of 512 records would take at least 12 exchanges of 5 requests each; the bulk
    // path takes root, branches, leaves, the stream, and a root that agrees (per session).
    let requests = b.client.sync_stats().snapshot()[1];
    assert!(
        requests < 30,
        "catching up took {requests} sync requests (exchanges instead of the bulk stream?)"
    );
    eprintln!("caught up {RECORDS} records in {took:?} with {requests} sync requests");
}

#[derive(NetworkBehaviour)]
struct Liar {
    identify: identify::Behaviour,
    sync: sync::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// What a lying peer writes on the catch-up stream after reading the request.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// A frame header of 4 GiB.
    Oversized,
    /// A frame of the allowed length whose bytes are not CBOR records.
    Garbage,
    /// Valid records, the same one over and over (to stretch the answer).
    Repeat,
}

/// A peer that claims a huge record set in every sync answer (so that the node finds every
/// leaf differing and asks for a catch-up), then lies on the catch-up stream. Counts the
/// catch-up streams it answered.
async fn run_liar(victim: libp2p::Multiaddr, lie: Lie, streams: Arc<AtomicU64>) {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut swarm = common::peer_swarm(key, |k| Liar {
        identify: identify::Behaviour::new(identify::Config::new("/dfs/1.0.0".into(), k.public())),
        sync: sync::behaviour(),
        stream: libp2p_stream::Behaviour::new(),
    });
    let mut incoming = swarm
        .behaviour()
        .stream
        .new_control()
        .accept(catchup::PROTOCOL)
        .unwrap();
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            streams.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut bitmap = [0u8; catchup::BITMAP_LEN];
                let _ = stream.read_exact(&mut bitmap).await;
                let bytes: Vec<u8> = match lie {
                    Lie::Oversized => u32::MAX.to_be_bytes().to_vec(),
                    Lie::Garbage => {
                        let mut b = 4096u32.to_be_bytes().to_vec();
                        b.extend(std::iter::repeat_n(0xff, 4096));
                        b
                    }
                    Lie::Repeat => {
                        let key = libp2p::identity::Keypair::generate_ed25519();
                        let r = signed(&key, "again", None, 0, 1 << 16, 1);
                        let one = dfs::protocols::encode_cbor(&r);
                        let frame = catchup::encode_frame(&vec![one; 1000]);
                        let mut b = (frame.len() as u32).to_be_bytes().to_vec();
                        b.extend(frame);
                        b
                    }
                };
                let _ = stream.write_all(&bytes).await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    swarm.dial(victim).unwrap();
    loop {
        if let SwarmEvent::Behaviour(LiarEvent::Sync(request_response::Event::Message {
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        })) = swarm.select_next_some().await
        {
            let response = match request {
                sync::Request::Root => sync::Response::Root {
                    root: 1,
                    count: 1_000_000,
                    grants: None,
                },
                sync::Request::Branches => sync::Response::Branches {
                    hashes: vec![1; sync::FANOUT],
                },
                sync::Request::Leaves { branches } => sync::Response::Leaves {
                    hashes: vec![vec![1; sync::FANOUT]; branches.len()],
                },
                _ => sync::Response::Error {
                    message: "no".into(),
                },
            };
            let _ = swarm.behaviour_mut().sync.send_response(channel, response);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lying_catch_up_stream_is_cut_off() {
    for lie in [Lie::Oversized, Lie::Garbage, Lie::Repeat] {
        let victim = TestNode::start(vec![]).await;
        let streams = Arc::new(AtomicU64::new(0));
        let liar = tokio::spawn(run_liar(victim.addr.clone(), lie, streams.clone()));
        assert!(
            eventually(Duration::from_secs(10), || async {
                streams.load(Ordering::Relaxed) >= 1
            })
            .await,
            "{lie:?}: the node never asked the liar for a catch-up"
        );
        // Cut off: the node holds nothing from the liar and still writes and serves.
        let t = tokio::time::Instant::now();
        put(&victim.client, "still-here", b"alive".to_vec()).await;
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{lie:?}: a put took {:?}",
            t.elapsed()
        );
        assert_eq!(victim.client.store().record_count(), 1, "{lie:?}");
        // Three such sessions (one a second) and the liar is blocked: disconnected.
        assert!(
            eventually(Duration::from_secs(15), || async {
                victim.peer_count().await == 0
            })
            .await,
            "{lie:?}: the liar is still connected after its strikes"
        );
        liar.abort();
        victim.stop().await;
    }
}
