//! The combined libp2p behaviour of a dfs node: connection limits and a block list, identify
//! (`/ipfs/id/1.0.0`), ping, gossipsub (records and peer announcements), fetch and sync
//! (request-response), and raw streams (`libp2p-stream`) for bulk chunk transfers.

use std::time::Duration;

use libp2p::{
    allow_block_list, connection_limits, gossipsub, identify, identity::Keypair, ping,
    swarm::NetworkBehaviour,
};

use crate::protocols::{self, fetch, sync};

/// Largest gossipsub RPC accepted (several messages may share one RPC).
pub const MAX_GOSSIP_TRANSMIT: usize = 64 * 1024;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub limits: connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub fetch: fetch::Behaviour,
    pub sync: sync::Behaviour,
    pub streams: libp2p_stream::Behaviour,
}

impl Behaviour {
    /// The behaviour of a node with identity `key`. Topics get their scoring when the node
    /// subscribes to them ([`topic_score`]).
    pub fn new(key: &Keypair, max_peers: u32) -> Result<Behaviour, String> {
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
        gossipsub
            .with_peer_score(
                gossipsub::PeerScoreParams::default(),
                gossipsub::PeerScoreThresholds::default(),
            )
            .map_err(|e| format!("gossipsub scoring: {e}"))?;
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(max_peers.saturating_mul(2).max(8)))
            .with_max_established_per_peer(Some(2))
            .with_max_pending_incoming(Some(64))
            .with_max_pending_outgoing(Some(64));
        Ok(Behaviour {
            blocked: Default::default(),
            limits: connection_limits::Behaviour::new(limits),
            identify: identify::Behaviour::new(
                identify::Config::new(super::PROTOCOL_VERSION.into(), key.public())
                    .with_agent_version(super::AGENT_VERSION.into())
                    .with_push_listen_addr_updates(true),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            gossipsub,
            fetch: fetch::behaviour(),
            sync: sync::behaviour(),
            streams: libp2p_stream::Behaviour::new(),
        })
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
