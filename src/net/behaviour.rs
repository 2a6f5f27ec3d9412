//! The combined libp2p behaviour of a dfs node: a block list, connection limits (counts and
//! process memory), identify (`/ipfs/id/1.0.0`), ping (liveness), gossipsub (records and peer
//! announcements, with peer scoring tuned for how dfs is deployed), fetch and sync
//! (request-response), raw streams (`libp2p-stream`) for bulk chunk transfers, Kademlia for
//! content routing (`/dfs/kad/<network>/1.0.0`, provider records only, see [`super::routing`]), and LAN
//! discovery by mDNS when the node is started with `--mdns`.

use std::time::Duration;

use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    allow_block_list, connection_limits, gossipsub, identify, identity::Keypair, mdns,
    memory_connection_limits, ping, swarm::NetworkBehaviour,
};

use crate::protocols::{self, fetch, sync};

/// Largest gossipsub RPC accepted (several messages may share one RPC).
pub const MAX_GOSSIP_TRANSMIT: usize = 64 * 1024;
/// Connections being set up (before the handshake ends) accepted at once. Each costs a socket
/// and a few KiB; the handshake timeout frees a slot within 5 s, so 64 idle sockets (or any
/// number below this) cannot keep honest peers out; one IP address may hold at most half
/// ([`super::limits::MAX_PENDING_PER_IP`]).
pub const MAX_PENDING_INCOMING: u32 = 256;
/// Dials in progress at once.
pub const MAX_PENDING_OUTGOING: u32 = 64;
/// Established connections of one peer.
pub const MAX_PER_PEER: u32 = 2;
/// New connections are refused while the process uses more memory than this.
pub const MAX_MEMORY: usize = 1 << 30;
/// How often a connection is pinged, and how long an answer may take. The event loop closes a
/// connection that has had no successful ping for [`DEAD_AFTER`] (libp2p's ping keeps quiet
/// about a first failure), so a dead link is noticed within seconds, not at the next
/// request's timeout. These are the defaults of [`Liveness`].
pub const PING_INTERVAL: Duration = Duration::from_secs(2);
pub const PING_TIMEOUT: Duration = Duration::from_secs(4);
pub const DEAD_AFTER: Duration = Duration::from_secs(8);

/// How the node watches its connections: pinged every `ping_interval` (an answer within
/// `ping_timeout`), closed after `dead_after` without a successful ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub dead_after: Duration,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            ping_interval: PING_INTERVAL,
            ping_timeout: PING_TIMEOUT,
            dead_after: DEAD_AFTER,
        }
    }
}

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub limits: connection_limits::Behaviour,
    pub pending_per_ip: super::limits::PendingPerIp,
    pub memory: memory_connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub fetch: fetch::Behaviour,
    pub sync: sync::Behaviour,
    pub streams: libp2p_stream::Behaviour,
    /// Content routing: who provides a content id. On when the node knows its network at start
    /// (the protocol name carries it), else from its next start.
    pub kad: Toggle<libp2p::kad::Behaviour<super::routing::ProviderStore>>,
    /// LAN discovery (`--mdns`); off by default.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

impl Behaviour {
    /// The behaviour of a node with identity `key`. Topics get their scoring when the node
    /// subscribes to them ([`topic_score`]). Beyond `max_peers`, the event loop sheds foreign
    /// peers; the hard limit of established connections (four times as many) is only a
    /// backstop, which protected dfs peers and bootstrap peers bypass. With `mdns`, the node
    /// announces itself on, and listens for peers of, the local networks. Gossipsub registers
    /// its own metrics in `metrics`.
    pub fn new(
        key: &Keypair,
        max_peers: u32,
        mdns: bool,
        network: Option<&str>,
        liveness: Liveness,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Behaviour, String> {
        let gossip_config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .message_id_fn(protocols::message_id)
            .validate_messages()
            .max_transmit_size(MAX_GOSSIP_TRANSMIT)
            .heartbeat_interval(Duration::from_millis(700))
            .build()
            .map_err(|e| format!("gossipsub config: {e}"))?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )?;
        gossipsub = metrics.with_registry(|registry| {
            gossipsub.with_metrics(
                registry.sub_registry_with_prefix("gossipsub"),
                Default::default(),
            )
        });
        gossipsub
            .with_peer_score(score_params(), gossipsub::PeerScoreThresholds::default())
            .map_err(|e| format!("gossipsub scoring: {e}"))?;
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(max_peers.saturating_mul(4).max(16)))
            .with_max_established_per_peer(Some(MAX_PER_PEER))
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
            .with_max_pending_outgoing(Some(MAX_PENDING_OUTGOING));
        Ok(Behaviour {
            blocked: Default::default(),
            limits: connection_limits::Behaviour::new(limits),
            pending_per_ip: Default::default(),
            memory: memory_connection_limits::Behaviour::with_max_bytes(MAX_MEMORY),
            identify: identify::Behaviour::new(
                identify::Config::new(super::PROTOCOL_VERSION.into(), key.public())
                    .with_agent_version(super::AGENT_VERSION.into())
                    .with_push_listen_addr_updates(true),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(liveness.ping_interval)
                    .with_timeout(liveness.ping_timeout),
            ),
            gossipsub,
            fetch: fetch::behaviour(),
            sync: sync::behaviour(),
            streams: libp2p_stream::Behaviour::new(),
            kad: Toggle::from(
                network.map(|n| super::routing::behaviour(key.public().to_peer_id(), n)),
            ),
            mdns: Toggle::from(if mdns {
                Some(
                    mdns::tokio::Behaviour::new(mdns::Config::default(), key.public().to_peer_id())
                        .map_err(|e| format!("mdns: {e}"))?,
                )
            } else {
                None
            }),
        })
    }
}

/// Peer scoring for the whole node: gossipsub's defaults but for the IP-colocation penalty
/// (P6), which is off, because dfs nodes share addresses in normal use (several nodes on one
/// host, containers on one server, machines behind one NAT), and gossipsub's default (more than
/// 10 peers on one IP graylists them all) cut 9 of 20 such nodes off gossip. Sybils on one
/// address are bounded by the connection limits instead, and still lose their score for what
/// they send ([`topic_score`]).
fn score_params() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    }
}

/// Peer scoring of one topic: invalid messages (P4) cost a peer dearly; the mesh-delivery
/// penalties (P3, P3b) are off, because a quiet store legitimately sends few messages.
pub fn topic_score() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        ..Default::default()
    }
}
