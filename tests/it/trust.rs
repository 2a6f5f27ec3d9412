//! Trust end to end: only authorized writers change a network. A stranger (a libp2p peer in
//! the test, speaking gossipsub and `/dfs/sync/1` from docs/PROTOCOL.md) cannot write, delete,
//! impersonate or grant, through gossip or sync; an invited writer writes at once; a reader
//! reads but cannot write; a revoked writer's later records, back-dated or not, are refused
//! everywhere while its earlier ones stay; grants made while a node was offline reach it.

use crate::common;

use std::time::Duration;

use common::*;
use dfs::node::Error;
use dfs::protocols::{members, records, sync};
use dfs::record::Record;
use dfs::replication::admission::Refusal;
use dfs::trust::{Grant, Role};
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{gossipsub, identity::Keypair, request_response, Multiaddr, PeerId, Swarm};

const DEADLINE: Duration = Duration::from_secs(20);

#[derive(NetworkBehaviour)]
struct StrangerBehaviour {
    gossipsub: gossipsub::Behaviour,
    sync: sync::Behaviour,
}

/// A libp2p peer with its own key, no grant, connected to one node, subscribed to the
/// network's topics.
struct Stranger {
    key: Keypair,
    swarm: Swarm<StrangerBehaviour>,
    network: String,
}

impl Stranger {
    async fn connect(target: &Multiaddr, network: &str) -> Stranger {
        let key = Keypair::generate_ed25519();
        let mut swarm = common::peer_swarm(key.clone(), |key| {
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .message_id_fn(dfs::protocols::message_id)
                .heartbeat_interval(Duration::from_millis(200))
                .build()
                .unwrap();
            StrangerBehaviour {
                gossipsub: gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    config,
                )
                .unwrap(),
                sync: sync::behaviour(),
            }
        });
        for topic in [records::topic(network), members::topic(network)] {
            swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        }
        swarm.dial(target.clone()).unwrap();
        let mut s = Stranger {
            key,
            swarm,
            network: network.to_string(),
        };
        s.drive_until(DEADLINE, |swarm| {
            swarm
                .behaviour()
                .gossipsub
                .all_peers()
                .any(|(_, topics)| !topics.is_empty())
        })
        .await;
        s
    }

    fn peer_id(&self) -> PeerId {
        self.key.public().to_peer_id()
    }

    /// Polls the swarm until `done` holds (panics after `within`).
    async fn drive_until(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&Swarm<StrangerBehaviour>) -> bool,
    ) {
        let until = tokio::time::Instant::now() + within;
        while !done(&self.swarm) {
            match tokio::time::timeout_at(until, self.swarm.select_next_some()).await {
                Ok(_) => {}
                Err(_) => panic!("the stranger's condition was not reached in time"),
            }
        }
    }

    /// Keeps the connection serviced for a while.
    async fn idle(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, async {
            loop {
                self.swarm.select_next_some().await;
            }
        })
        .await;
    }

    fn publish(&mut self, topic: gossipsub::IdentTopic, data: Vec<u8>) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, data)
            .expect("publish");
    }

    fn publish_record(&mut self, record: &Record) {
        let topic = records::topic(&self.network);
        self.publish(topic, records::encode(record));
    }

    fn publish_grant(&mut self, grant: &Grant) {
        let topic = members::topic(&self.network);
        self.publish(topic, members::encode(grant));
    }

    /// Pushes records to `peer` with a sync `exchange`; returns the answer (`None` if the
    /// request failed: the peer closed the connection).
    async fn push(&mut self, peer: PeerId, push: Vec<Record>) -> Option<sync::Response> {
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, sync::Request::Exchange { push, want: vec![] });
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let event = tokio::time::timeout_at(until, self.swarm.select_next_some())
                .await
                .expect("a sync answer in time");
            match event {
                SwarmEvent::Behaviour(StrangerBehaviourEvent::Sync(
                    request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    },
                )) if request_id == id => return Some(response),
                SwarmEvent::Behaviour(StrangerBehaviourEvent::Sync(
                    request_response::Event::OutboundFailure { request_id, .. },
                )) if request_id == id => return None,
                _ => {}
            }
        }
    }
}

fn now() -> u64 {
    dfs::record::wall_ms() << 16
}

fn network(node: &TestNode) -> String {
    node.client
        .network_id()
        .expect("the node knows its network")
}

/// True when `node` holds a record of `key` (live or not).
fn holds(node: &TestNode, key: &str) -> bool {
    node.client.store().record(key).unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stranger_cannot_write_delete_impersonate_or_grant() {
    let owner = TestNode::start(vec![]).await;
    let writer = TestNode::start(vec![owner.addr.clone()]).await;
    put(&owner.client, "victim", b"precious".to_vec()).await;
    assert!(writer.client.wait_for("victim", false, DEADLINE).await);
    let victim = owner.client.store().record("victim").unwrap().unwrap();

    let mut s = Stranger::connect(&owner.addr, &network(&owner)).await;
    let sk = s.key.clone();
    // Its own record, correctly signed: it may not write.
    let own = signed(&sk, "stranger-gossip", None, 0, now(), 1);
    s.publish_record(&own);
    // A tombstone of the victim in the owner's name, signed by the stranger: a forgery.
    let mut forged = signed(&sk, "victim", None, 0, victim.time + 1, 2);
    forged.author = owner.client.peer_id().to_bytes();
    s.publish_record(&forged);
    // A grant it signs itself.
    let mut grant = Grant {
        network: network(&owner),
        subject: s.peer_id().to_bytes(),
        role: Role::Writer,
        cutoff: 0,
        time: now(),
        issuer: Vec::new(),
        seq: 3,
        sig: Vec::new(),
        held: None,
    };
    grant.sign(&sk);
    s.publish_grant(&grant);
    // And the same through anti-entropy: its own tombstone of the victim, and the forgery.
    let tomb = signed(&sk, "victim", None, 0, victim.time + 2, 4);
    let pushed = signed(&sk, "stranger-sync", None, 0, now(), 5);
    let answer = s
        .push(owner.client.peer_id(), vec![tomb, forged, pushed])
        .await;
    assert!(
        matches!(answer, Some(sync::Response::Records { .. })),
        "{answer:?}"
    );
    s.idle(Duration::from_millis(1500)).await;

    let refusals = owner.client.refusals();
    assert!(
        refusals.count(Refusal::NotAWriter) >= 2,
        "own records refused"
    );
    assert!(refusals.count(Refusal::Invalid) >= 1, "the forgery refused");
    assert!(refusals.count(Refusal::Grant) >= 1, "the grant refused");
    // An honest write still spreads, and nothing of the stranger's is anywhere.
    put(&writer.client, "honest", b"after".to_vec()).await;
    assert!(owner.client.wait_for("honest", false, DEADLINE).await);
    for node in [&owner, &writer] {
        for key in ["stranger-gossip", "stranger-sync"] {
            assert!(!holds(node, key), "{key} was stored");
        }
        assert_eq!(get(&node.client, "victim").await.unwrap(), b"precious");
        assert!(node
            .client
            .members()
            .iter()
            .all(|m| m.peer_id != s.peer_id().to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_writer_is_refused_everywhere_even_back_dated() {
    let owner = TestNode::start(vec![]).await;
    let other = TestNode::start(vec![owner.addr.clone()]).await;
    let revoked = TestNode::start(vec![owner.addr.clone()]).await;
    let before = put(&revoked.client, "before", b"stays".to_vec()).await;
    for n in [&owner, &other] {
        assert!(n.client.wait_for("before", false, DEADLINE).await);
    }
    let rid = revoked.client.peer_id();
    let grant = owner.client.allow(rid, Role::Reader).await.unwrap();
    assert_eq!(
        grant.cutoff, before.seq,
        "the revocation keeps what the owner saw"
    );
    for n in [&other, &revoked] {
        assert!(
            eventually(DEADLINE, || async {
                n.client
                    .members()
                    .iter()
                    .any(|m| m.peer_id == rid.to_string() && m.role == Role::Reader)
            })
            .await,
            "the revocation reaches every node"
        );
    }
    // The revoked node itself refuses local writes, saying how to get access back.
    match revoked.client.delete("before".into()).await {
        Err(Error::NotAllowed(msg)) => {
            assert!(
                msg.contains("revoked") && msg.contains("dfs allow"),
                "{msg}"
            )
        }
        other => panic!("a revoked writer deleted: {other:?}"),
    }
    // Its key still signs. Later records, back-dated to before the revocation, numbered after
    // the cutoff or reusing a number already seen, reach the others by gossip and by sync. (The
    // revoked node is stopped meanwhile: records signed with its key that it did not sign would
    // tell it that another node uses its identity, and it would stop writing.)
    let (revoked_dir, revoked_bootstrap) = revoked.stop().await;
    let key = identity(revoked_dir.path());
    let old = before.time - (10 << 16);
    let after_cutoff = signed(&key, "late", None, 0, old, before.seq + 1);
    let reused = signed(&key, "reused", None, 0, old, before.seq);
    let tomb = signed(&key, "before", None, 0, before.time + 1, before.seq + 2);
    let mut s = Stranger::connect(&other.addr, &network(&other)).await;
    for r in [&after_cutoff, &reused, &tomb] {
        s.publish_record(r);
    }
    s.push(other.client.peer_id(), vec![after_cutoff, reused, tomb])
        .await;
    s.idle(Duration::from_millis(1500)).await;
    assert!(other.client.refusals().count(Refusal::NotAWriter) >= 2);
    assert!(other.client.refusals().count(Refusal::SeqReused) >= 1);
    let revoked = TestNode::start_with(revoked_dir, revoked_bootstrap).await;
    // Let anti-entropy run a couple of rounds (1 s in tests) on every node.
    put(&owner.client, "marker", b"m".to_vec()).await;
    for n in [&owner, &other, &revoked] {
        assert!(n.client.wait_for("marker", false, DEADLINE).await);
    }
    let sessions = |n: &TestNode| n.client.sync_stats().snapshot()[0];
    let marks: Vec<u64> = [&owner, &other, &revoked].map(sessions).to_vec();
    assert!(
        eventually(DEADLINE, || async {
            [&owner, &other, &revoked]
                .iter()
                .zip(&marks)
                .all(|(n, mark)| sessions(n) >= mark + 2)
        })
        .await,
        "anti-entropy rounds ran"
    );
    for n in [&owner, &other, &revoked] {
        assert!(!holds(n, "late") && !holds(n, "reused"));
        assert_eq!(get(&n.client, "before").await.unwrap(), b"stays");
    }
    // Allowed again, it writes again.
    owner.client.allow(rid, Role::Writer).await.unwrap();
    assert!(
        eventually(DEADLINE, || async {
            revoked.client.role() == Some(Role::Writer)
        })
        .await
    );
    put(&revoked.client, "again", b"back".to_vec()).await;
    assert!(owner.client.wait_for("again", false, DEADLINE).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_stored_before_its_revocation_arrived_is_removed() {
    // The owner revokes a writer whose latest record it has not seen (it was cut off): that
    // record is numbered after the cutoff, so the node that stored it removes it, and the key
    // returns to what the others hold.
    let owner = TestNode::start(vec![]).await;
    let holder = TestNode::start(vec![owner.addr.clone()]).await;
    let writer = TestNode::start(vec![owner.addr.clone()]).await;
    put(&owner.client, "doc", b"v1 by the owner".to_vec()).await;
    for n in [&holder, &writer] {
        assert!(n.client.wait_for("doc", false, DEADLINE).await);
    }
    // The writer and the holder know each other; then the owner is cut off from both (it sees
    // nothing of what follows).
    writer.client.dial(holder.addr.clone()).await.unwrap();
    assert!(eventually(DEADLINE, || async { holder.peer_count().await == 2 }).await);
    for n in [&writer, &holder] {
        owner.client.block(n.client.peer_id(), true).await.unwrap();
    }
    let late = put(&writer.client, "doc", b"v2 by the writer".to_vec()).await;
    assert!(
        eventually(DEADLINE, || async {
            holder.client.store().record("doc").unwrap().as_ref() == Some(&late)
        })
        .await
    );
    let revocation = owner
        .client
        .allow(writer.client.peer_id(), Role::Reader)
        .await
        .unwrap();
    assert_eq!(
        revocation.cutoff, 0,
        "the owner never saw the writer's record"
    );
    owner
        .client
        .block(holder.client.peer_id(), false)
        .await
        .unwrap();
    // The holder may be redialling already ("already connected or dial in progress").
    let _ = holder.client.dial(owner.addr.clone()).await;
    assert!(
        eventually(DEADLINE, || async {
            holder
                .client
                .store()
                .record("doc")
                .unwrap()
                .is_some_and(|r| r.author == owner.client.peer_id().to_bytes())
        })
        .await,
        "the holder drops the record and takes the owner's version back"
    );
    assert_eq!(
        get(&holder.client, "doc").await.unwrap(),
        b"v1 by the owner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grants_made_while_a_node_was_offline_reach_it() {
    let owner = TestNode::start(vec![]).await;
    let away = TestNode::start(vec![owner.addr.clone()]).await;
    let (dir, _) = away.stop().await;
    // Meanwhile a reader joins and is allowed; it writes.
    let newcomer = TestNode::reader(vec![owner.addr.clone()]).await;
    assert!(
        eventually(DEADLINE, || async {
            newcomer.client.network_id().is_some()
        })
        .await
    );
    owner
        .client
        .allow(newcomer.client.peer_id(), Role::Writer)
        .await
        .unwrap();
    assert!(
        eventually(DEADLINE, || async {
            newcomer.client.role() == Some(Role::Writer)
        })
        .await
    );
    put(&newcomer.client, "from-newcomer", b"hi".to_vec()).await;
    // The node comes back, knowing only the owner: it learns the grant and accepts the write.
    let back = TestNode::start_with(dir, vec![owner.addr.clone()]).await;
    assert!(back.client.wait_for("from-newcomer", false, DEADLINE).await);
    let id = newcomer.client.peer_id().to_string();
    assert!(back
        .client
        .members()
        .iter()
        .any(|m| m.peer_id == id && m.role == Role::Writer));
    // And after a restart, membership is read back from the data dir.
    let back = back.restart().await;
    assert!(back
        .client
        .members()
        .iter()
        .any(|m| m.peer_id == id && m.role == Role::Writer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_reads_but_cannot_write_and_writers_cannot_grant() {
    let owner = TestNode::start(vec![]).await;
    put(&owner.client, "shared", b"for everyone".to_vec()).await;
    let reader = TestNode::reader(vec![owner.addr.clone()]).await;
    assert_eq!(
        get(&reader.client, "shared").await.unwrap(),
        b"for everyone"
    );
    let refused = reader
        .client
        .put("mine".into(), std::io::Cursor::new(b"x".to_vec()))
        .await;
    assert!(matches!(refused, Err(Error::NotAllowed(_))), "{refused:?}");
    assert!(matches!(
        reader.client.delete("shared".into()).await,
        Err(Error::NotAllowed(_))
    ));
    // A writer (joined by ticket, writing at once) may not grant or invite.
    let writer = TestNode::start(vec![owner.addr.clone()]).await;
    put(&writer.client, "at-once", b"ok".to_vec()).await;
    assert!(matches!(
        writer.client.invite(false).await,
        Err(Error::NotAllowed(_))
    ));
    assert!(matches!(
        writer
            .client
            .allow(reader.client.peer_id(), Role::Writer)
            .await,
        Err(Error::NotAllowed(_))
    ));
    // An admin the owner appointed grants writers, but not admins.
    owner
        .client
        .allow(writer.client.peer_id(), Role::Admin)
        .await
        .unwrap();
    assert!(
        eventually(DEADLINE, || async {
            writer.client.role() == Some(Role::Admin)
        })
        .await
    );
    assert!(matches!(
        writer.client.invite(true).await,
        Err(Error::NotAllowed(_))
    ));
    writer
        .client
        .allow(reader.client.peer_id(), Role::Writer)
        .await
        .unwrap();
    assert!(
        eventually(DEADLINE, || async {
            reader.client.role() == Some(Role::Writer)
        })
        .await
    );
    put(&reader.client, "mine", b"now allowed".to_vec()).await;
    assert!(owner.client.wait_for("mine", false, DEADLINE).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_keeps_pushing_forged_records_is_blocked() {
    let owner = TestNode::start(vec![]).await;
    let mut s = Stranger::connect(&owner.addr, &network(&owner)).await;
    let peer = owner.client.peer_id();
    for i in 0..3u64 {
        let mut forged = signed(
            &s.key.clone(),
            &format!("forged-{i}"),
            None,
            0,
            now(),
            i + 1,
        );
        forged.author = peer.to_bytes();
        s.push(peer, vec![forged]).await;
    }
    // The third strike closes the connection and refuses the peer.
    let stranger = s.peer_id();
    assert!(
        eventually(DEADLINE, || async {
            owner
                .client
                .peers()
                .await
                .unwrap()
                .iter()
                .all(|p| p.peer_id != stranger)
        })
        .await,
        "the misbehaving peer is disconnected"
    );
    assert_eq!(owner.client.refusals().count(Refusal::Invalid), 3);
}

/// One ticket used on two machines gives both the same identity: their numbers collide and one
/// node's writes would be refused everywhere without a word. The first of the two to see a
/// record signed with its key that it did not sign says so, and refuses writes from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_used_twice_is_detected_and_the_twins_stop_writing() {
    let owner = TestNode::start(vec![]).await;
    let ticket = owner.client.invite(false).await.unwrap();
    let first = common::node_with(|c| c.join = Some(ticket.clone()), None, vec![]).await;
    let second = common::node_with(|c| c.join = Some(ticket), None, vec![]).await;
    assert_eq!(first.client.peer_id(), second.client.peer_id());
    put(&first.client, "from-first", b"one".to_vec()).await;
    put(&second.client, "from-second", b"two".to_vec()).await;
    let refused = |n: &TestNode| {
        let client = n.client.clone();
        async move {
            match client
                .put("again".into(), std::io::Cursor::new(b"x".to_vec()))
                .await
            {
                Err(e) => e
                    .to_string()
                    .contains("another node signs with this node's identity"),
                Ok(_) => false,
            }
        }
    };
    assert!(
        eventually(DEADLINE, || async {
            refused(&first).await || refused(&second).await
        })
        .await,
        "one of the twins notices and refuses writes"
    );
    // And says so when asked who it is (`dfs id`), not just when it writes.
    let told = [&first, &second]
        .iter()
        .filter_map(|n| n.client.writes_refused())
        .collect::<Vec<_>>();
    assert!(
        told.iter().any(|why| why.contains("two machines")),
        "{told:?}"
    );
}

/// Each record that arrives by gossip has its signature checked once, by the merge (the
/// network task only decodes it): `dfs_signatures_checked_total` counts one check per record,
/// and a forgery in a member's name reaches the merge, is checked there and refused (gossipsub
/// then drops it and counts it against its forwarder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gossiped_record_is_verified_once_by_the_merge() {
    // No periodic anti-entropy: every record below arrives by gossip alone.
    let quiet = |c: &mut dfs::node::Config| c.sync_interval = Duration::from_secs(3600);
    let owner = node_with(quiet, None, vec![]).await;
    let writer = node_with(quiet, Some(&owner), vec![owner.addr.clone()]).await;
    put(&writer.client, "warm-up", b"first".to_vec()).await;
    assert!(owner.client.wait_for("warm-up", false, DEADLINE).await);
    let checked = || owner.client.metrics().signatures_checked.get();
    let before = checked();

    const N: u64 = 5;
    for n in 0..N {
        put(&writer.client, &format!("gossiped-{n}"), vec![n as u8; 100]).await;
    }
    for n in 0..N {
        let key = format!("gossiped-{n}");
        assert!(owner.client.wait_for(&key, false, DEADLINE).await, "{key}");
    }
    // A tombstone of a member's file in that member's name, signed by someone else.
    let mut s = Stranger::connect(&owner.addr, &network(&owner)).await;
    let victim = owner.client.store().record("warm-up").unwrap().unwrap();
    let mut forged = signed(&s.key.clone(), "warm-up", None, 0, victim.time + 1, 7);
    forged.author = writer.client.peer_id().to_bytes();
    let invalid = owner.client.refusals().count(Refusal::Invalid);
    s.publish_record(&forged);
    let until = tokio::time::Instant::now() + DEADLINE;
    while owner.client.refusals().count(Refusal::Invalid) == invalid {
        assert!(
            tokio::time::Instant::now() < until,
            "the forgery was not checked by the merge"
        );
        s.idle(Duration::from_millis(50)).await;
    }
    assert_eq!(
        checked() - before,
        N + 1,
        "one signature check per record received"
    );
    assert_eq!(get(&owner.client, "warm-up").await.unwrap(), b"first");
}

/// A key outside the grammar (docs/PROTOCOL.md, "Keys") is refused even from a writer, by
/// gossip and by sync, as a bad signature is: no key that would take over a terminal or climb
/// out of a directory reaches a store, while the same writer's ordinary keys do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writers_record_with_a_key_outside_the_grammar_is_refused() {
    let owner = TestNode::start(vec![]).await;
    let mut s = Stranger::connect(&owner.addr, &network(&owner)).await;
    owner.client.allow(s.peer_id(), Role::Writer).await.unwrap();
    let key = s.key.clone();
    let t = now();
    let escape = "\u{1b}[2J\u{1b}[31mEVIL\u{1b}[0m";
    s.publish_record(&signed(&key, escape, None, 0, t, 1));
    s.publish_record(&signed(&key, "gossiped", None, 0, t, 2));
    let until = tokio::time::Instant::now() + DEADLINE;
    while !holds(&owner, "gossiped") {
        assert!(tokio::time::Instant::now() < until, "the writer's record");
        s.idle(Duration::from_millis(50)).await;
    }

    let answer = s
        .push(
            owner.client.peer_id(),
            vec![signed(&key, "pushed", None, 0, t, 3)],
        )
        .await;
    assert!(answer.is_some());
    assert!(holds(&owner, "pushed"));
    for (seq, bad) in ["../x", "/abs", "a//b", "dir/", "a\nb"]
        .into_iter()
        .enumerate()
    {
        let _ = s
            .push(
                owner.client.peer_id(),
                vec![signed(&key, bad, None, 0, t, 10 + seq as u64)],
            )
            .await;
    }
    // Every key the node holds, read without the checks of a lookup by key.
    let mut keys: Vec<String> = owner
        .client
        .store()
        .list()
        .unwrap()
        .into_iter()
        .map(|s| s.record.key)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["gossiped", "pushed"],
        "{escape:?} and the others refused"
    );
}
