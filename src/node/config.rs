//! How a node runs: [`Config`] with the defaults of `dfs node`, and the configurations of the
//! network and replication layers derived from it.

use super::*;

/// How a node runs. [`Config::new`] gives the defaults of `dfs node`.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// A ticket from `dfs invite`: join its network as a writer, with the identity it holds
    /// (a fresh data dir only). Without it, a node joins the network its data dir remembers,
    /// else its bootstrap peers' (as a reader), else creates a network it owns.
    pub join: Option<Ticket>,
    /// Most connected peers; gossip discovery stops dialling at this number.
    pub max_peers: u32,
    /// How often the node announces itself on the peers topic.
    pub announce_interval: Duration,
    /// How often the node runs anti-entropy with each connected peer.
    pub sync_interval: Duration,
    /// How often incomplete content is looked for and fetched again (and known peers that are
    /// not connected are dialled again).
    pub retry_interval: Duration,
    /// Chunks requested at once from one peer during a transfer.
    pub chunks_in_flight: usize,
    /// Transfers running at once.
    pub max_transfers: usize,
    /// How long a get waits for a peer to answer for a key this node has never heard of.
    pub lookup_timeout: Duration,
    /// The pre-shared key of a private network (`dfs node --swarm-key`): only peers holding
    /// it can connect. `None`: a public network.
    pub swarm_key: Option<net::transport::SwarmKey>,
    /// Pause between two background scrub passes (each re-hashes every stored chunk and heals
    /// the damaged ones from peers); zero disables the scrub.
    pub scrub_interval: Duration,
    /// Most bytes per second a scrub pass reads (0: no limit).
    pub scrub_rate: u64,
    /// The wall clock (the system's; a skewed one in tests).
    pub wall: crate::clock::Wall,
    /// The bound on this node's clock offset from its peers' median (see `crate::clock`).
    pub max_clock_offset: Duration,
    /// How long replaced versions and deletes stay in history.
    pub keep: Duration,
    /// Most bytes of content that only history holds.
    pub keep_bytes: u64,
    /// Discover peers on the local networks by mDNS (`dfs node --mdns`). Off by default: it
    /// announces the node on every network it joins.
    pub mdns: bool,
    /// How connections are watched: pings, and when a silent connection is closed (the
    /// defaults of [`net::behaviour::Liveness`]; tests shorten them).
    pub liveness: net::behaviour::Liveness,
    /// How long after start a node with no peer says so at warn level (when it has peers to
    /// expect: bootstrap addresses, a ticket, other members, or a network still to learn).
    pub alone_after: Duration,
    /// The replication factor of a network this node creates (`dfs node --replicas`); `None`:
    /// `all` for a new network, and whatever the network has for an existing one.
    pub replicas: Option<crate::placement::Replicas>,
    /// This node's capacity in bytes (`--capacity`): its weight in placement.
    pub capacity: u64,
    /// How long a member that went away keeps its place before its files are placed elsewhere
    /// (`--repair-after`).
    pub repair_after: Duration,
    /// Most bytes of files read here but not placed here that the node keeps (`--cache-size`).
    pub cache_size: u64,
    /// How often a repair pass runs at least (it also runs when the members that are up change).
    pub repair_interval: Duration,
}

/// Default of `--repair-after`: 10 minutes, as Ceph marks a down OSD out
/// (`mon_osd_down_out_interval`): a restart or a short partition moves nothing.
pub const REPAIR_AFTER: Duration = Duration::from_secs(600);
/// Default of `--cache-size`: 1 GiB.
pub const CACHE_SIZE: u64 = 1 << 30;

/// Default pause between two scrub passes.
pub const SCRUB_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Default scrub rate: 16 MiB/s, a few percent of a disk and of one core (BLAKE3).
pub const SCRUB_RATE: u64 = 16 << 20;

impl Config {
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            listen: vec!["/ip4/0.0.0.0/tcp/4001".parse().expect("valid multiaddr")],
            bootstrap: Vec::new(),
            join: None,
            max_peers: 64,
            announce_interval: Duration::from_secs(30),
            sync_interval: Duration::from_secs(30),
            retry_interval: Duration::from_secs(15),
            chunks_in_flight: 16,
            max_transfers: 16,
            lookup_timeout: Duration::from_secs(5),
            swarm_key: None,
            scrub_interval: SCRUB_INTERVAL,
            scrub_rate: SCRUB_RATE,
            wall: crate::clock::Wall::system(),
            max_clock_offset: Duration::from_millis(crate::clock::DEFAULT_MAX_OFFSET_MS),
            keep: Duration::from_secs(crate::store::DEFAULT_KEEP_DAYS * 24 * 3600),
            keep_bytes: crate::store::DEFAULT_KEEP_BYTES,
            mdns: false,
            liveness: Default::default(),
            alone_after: Duration::from_secs(30),
            replicas: None,
            capacity: crate::placement::DEFAULT_CAPACITY,
            repair_after: REPAIR_AFTER,
            cache_size: CACHE_SIZE,
            repair_interval: Duration::from_secs(60),
        }
    }

    pub(super) fn net(
        &self,
        network: Option<String>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> net::Config {
        let mut bootstrap = self.bootstrap.clone();
        if let Some(ticket) = &self.join {
            for addr in &ticket.addrs {
                if !bootstrap.contains(addr) {
                    bootstrap.push(addr.clone());
                }
            }
        }
        net::Config {
            listen: self.listen.clone(),
            bootstrap,
            network,
            max_peers: self.max_peers,
            announce_interval: self.announce_interval,
            capacity: Some(self.capacity),
            redial_interval: self.retry_interval,
            swarm_key: self.swarm_key,
            address_book: Some(crate::datadir::DataDir::new(&self.data_dir).peers_file()),
            mdns: self.mdns,
            liveness: self.liveness,
            metrics,
        }
    }

    pub(super) fn replication(&self, metrics: Arc<crate::metrics::Metrics>) -> replication::Config {
        replication::Config {
            sync_interval: self.sync_interval,
            retry_interval: self.retry_interval,
            chunks_in_flight: self.chunks_in_flight,
            max_transfers: self.max_transfers,
            metrics,
            repair_interval: self.repair_interval,
        }
    }
}
