//! A node's Prometheus metrics (`GET /metrics`): libp2p's own (swarm, gossipsub, identify, ping,
//! recorded by the network task through [`libp2p::metrics::Recorder`]) and dfs's (store,
//! transfers, bytes in and out, refusals, peers), in one [`prometheus_client`] registry.
//!
//! Other layers register into it: a metric is a field here (created and registered in
//! [`Metrics::new`]) that the layer updates, or, for one that only a module knows, a call to
//! [`Metrics::register`]. Gauges computed when scraped (what the store holds) are set by
//! [`Metrics::encode`]'s caller just before encoding.
//!
//! # Adding a metric
//!
//! [`Metrics::clock_offset_seconds`] is the pattern: a labelled gauge family registered in
//! [`Metrics::new`], which the code that measures it sets
//! (`metrics.clock_offset_seconds.get_or_create(&PeerLabel::new(peer)).set(offset)`) and removes
//! when the peer goes (`metrics.clock_offset_seconds.remove(&PeerLabel::new(peer))`).

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use libp2p::PeerId;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry, Unit};

/// The prefix of dfs's own metrics (`dfs_...`); libp2p's are `libp2p_...`.
pub const PREFIX: &str = "dfs";

/// The label of a per-peer metric: `peer="12D3KooW..."`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

impl PeerLabel {
    pub fn new(peer: PeerId) -> PeerLabel {
        PeerLabel {
            peer: peer.to_base58(),
        }
    }
}

/// Why a record or grant was refused (see `replication::admission::Refusal`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reason {
    invalid,
    not_a_writer,
    seq_reused,
    grant,
    ahead,
}

/// The label of the refusal counter: `reason="not_a_writer"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: Reason,
}

/// Every metric of a node. Shared as an `Arc<Metrics>`; updating a metric takes no lock.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// libp2p's metrics of swarm, gossipsub, identify and ping events (the network task
    /// records every event it sees).
    pub libp2p: libp2p::metrics::Metrics,
    /// Peers with at least one connection.
    pub connected_peers: Gauge,
    /// Records in the store, tombstones included (set when scraped).
    pub records: Gauge,
    /// Live records whose whole content is stored here (set when scraped).
    pub files: Gauge,
    /// Bytes of the files stored here (set when scraped).
    pub stored_bytes: Gauge,
    /// Transfers (content being fetched from peers) running now.
    pub transfers_in_flight: Gauge,
    /// Transfers that ended with the whole content stored.
    pub transfers_completed: Counter,
    /// Transfers that ended without it (they are tried again later).
    pub transfers_failed: Counter,
    /// Chunk bytes fetched from peers, verified and stored (bytes in).
    pub fetched_bytes: Counter,
    /// Chunk bytes served to peers (bytes out).
    pub served_bytes: Counter,
    /// Records and grants refused, by reason (set from the admission counters when scraped).
    pub refused: Family<ReasonLabel, Counter>,
    /// The hook for clock offsets: each peer's clock minus this node's, in seconds. Registered
    /// (empty) so that the code measuring offsets only sets values.
    pub clock_offset_seconds: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    /// Under partial replication (set by each repair pass): live files placed on fewer than
    /// the network's `R` members that are up, plus those placed here whose copy is missing
    /// here. Summed over the nodes, it counts the copies the network lacks.
    pub under_replicated: Gauge,
    /// Copies dropped here because enough placed members hold them (extra, or beyond the
    /// cache).
    pub dropped_copies: Counter,
    /// Proofs of possession that placed members failed (wrong, missing or refused answers
    /// while they claimed to keep the content; see `replication::audit`).
    pub failed_proofs: Counter,
    /// Records whose signatures were checked (by the merge, once per record received, whatever
    /// the path: gossip, sync, catch-up, look-up).
    pub signatures_checked: Counter,
    /// Bytes of files read here that are not placed here (the cache, `--cache-size`).
    pub cached_bytes: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric of this module registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let libp2p = libp2p::metrics::Metrics::new(&mut registry);
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            libp2p,
            connected_peers: Gauge::default(),
            records: Gauge::default(),
            files: Gauge::default(),
            stored_bytes: Gauge::default(),
            transfers_in_flight: Gauge::default(),
            transfers_completed: Counter::default(),
            transfers_failed: Counter::default(),
            fetched_bytes: Counter::default(),
            served_bytes: Counter::default(),
            refused: Family::default(),
            clock_offset_seconds: Family::default(),
            under_replicated: Gauge::default(),
            dropped_copies: Counter::default(),
            failed_proofs: Counter::default(),
            signatures_checked: Counter::default(),
            cached_bytes: Gauge::default(),
        };
        {
            let dfs = registry.sub_registry_with_prefix(PREFIX);
            dfs.register(
                "connected_peers",
                "Peers with at least one connection",
                metrics.connected_peers.clone(),
            );
            dfs.register(
                "records",
                "Records in the store, tombstones included",
                metrics.records.clone(),
            );
            dfs.register(
                "files",
                "Live records whose whole content is stored on this node",
                metrics.files.clone(),
            );
            dfs.register_with_unit(
                "stored",
                "Bytes of the files whose content is stored on this node",
                Unit::Bytes,
                metrics.stored_bytes.clone(),
            );
            dfs.register(
                "transfers_in_flight",
                "Transfers of content from peers running now",
                metrics.transfers_in_flight.clone(),
            );
            dfs.register(
                "transfers_completed",
                "Transfers that stored the whole content",
                metrics.transfers_completed.clone(),
            );
            dfs.register(
                "transfers_failed",
                "Transfers that ended without the whole content (tried again later)",
                metrics.transfers_failed.clone(),
            );
            dfs.register_with_unit(
                "fetched",
                "Chunk bytes fetched from peers, verified and stored",
                Unit::Bytes,
                metrics.fetched_bytes.clone(),
            );
            dfs.register_with_unit(
                "served",
                "Chunk bytes served to peers",
                Unit::Bytes,
                metrics.served_bytes.clone(),
            );
            dfs.register(
                "refused",
                "Records and grants refused, by reason",
                metrics.refused.clone(),
            );
            dfs.register_with_unit(
                "clock_offset",
                "Each peer's clock minus this node's",
                Unit::Seconds,
                metrics.clock_offset_seconds.clone(),
            );
            dfs.register(
                "under_replicated_files",
                "Live files placed on fewer members than the replication factor, plus files placed here whose copy is missing here",
                metrics.under_replicated.clone(),
            );
            dfs.register(
                "dropped_copies",
                "Copies of files dropped because enough placed members hold them",
                metrics.dropped_copies.clone(),
            );
            dfs.register(
                "failed_proofs",
                "Proofs of possession failed by members that claimed to keep a file's content",
                metrics.failed_proofs.clone(),
            );
            dfs.register(
                "signatures_checked",
                "Records whose ed25519 signatures were checked (once per record received)",
                metrics.signatures_checked.clone(),
            );
            dfs.register_with_unit(
                "cached",
                "Bytes of files read here that are not placed here",
                Unit::Bytes,
                metrics.cached_bytes.clone(),
            );
        }
        *metrics.registry.lock().expect("metrics registry") = registry;
        metrics
    }

    /// Registers a metric of another module under `dfs_<name>`.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.with_registry(|r| {
            r.sub_registry_with_prefix(PREFIX)
                .register(name, help, metric)
        });
    }

    /// Runs `f` with the registry (to register metrics a library creates, such as
    /// gossipsub's own).
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sets a counter that mirrors a count kept elsewhere (it only ever grows).
    pub fn mirror(counter: &Counter, value: u64) {
        let now = counter.get();
        if value > now {
            counter.inc_by(value - now);
        }
    }

    /// Every metric in the Prometheus text format (OpenMetrics, ending in `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dfs_and_libp2p_metrics_are_encoded() {
        let m = Metrics::new();
        m.connected_peers.set(3);
        m.fetched_bytes.inc_by(42);
        Metrics::mirror(
            &m.refused.get_or_create(&ReasonLabel {
                reason: Reason::not_a_writer,
            }),
            5,
        );
        m.clock_offset_seconds
            .get_or_create(&PeerLabel::new(PeerId::random()))
            .set(-0.25);
        let text = m.encode();
        assert!(text.contains("dfs_connected_peers 3"), "{text}");
        assert!(text.contains("dfs_fetched_bytes_total 42"), "{text}");
        assert!(
            text.contains("dfs_refused_total{reason=\"not_a_writer\"} 5"),
            "{text}"
        );
        assert!(text.contains("dfs_clock_offset_seconds{peer=\""), "{text}");
        assert!(text.contains("libp2p_swarm"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
