//! The [`Client`]: the handle through which the API, the demo and tests use a running node
//! (writes, reads, versions, members, peers, holders, metrics).

use super::*;

/// How often [`Client::wait_holders`] asks the peers again.
pub(super) const HOLDERS_POLL: Duration = Duration::from_millis(250);

/// The nodes that hold a file's whole content, as [`Client::holders`] finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holders {
    /// The record the answer is about (its content id is what the holders hold).
    pub stat: Stat,
    /// This node first if it holds the content, then the connected peers that said so.
    pub peers: Vec<PeerId>,
    /// The members placed to hold the content, best first, when the network keeps a number of
    /// copies (`None` with `all`).
    pub placed: Option<Vec<PeerId>>,
}

/// The handle through which the API, the CLI's demo and tests use a node. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(super) peer_id: PeerId,
    pub(super) network: Network,
    pub(super) store: Store,
    pub(super) replication: Replication,
    pub(super) tasks: Tasks,
    pub(super) lookup_timeout: Duration,
    pub(super) metrics: Arc<crate::metrics::Metrics>,
}

impl Client {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The local store (read access for tests and tools; writes go through the client so
    /// that they are gossiped).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn sync_stats(&self) -> &SyncStats {
        self.replication.stats()
    }

    /// Chunks this node has fetched from peers since it started.
    pub fn chunks_fetched(&self) -> u64 {
        self.replication.chunks_fetched()
    }

    /// The transfers of content in flight (running or queued), sorted by key.
    pub fn transfers(&self) -> Vec<replication::transfer::Status> {
        self.replication.transfer_statuses()
    }

    /// The network this node belongs to, if known yet.
    pub fn network_id(&self) -> Option<String> {
        self.replication.members().network()
    }

    /// This node's role in its network (`None`: not a member, or the network is not known).
    pub fn role(&self) -> Option<Role> {
        self.replication.members().role(&self.peer_id)
    }

    /// `peer`'s role in this node's network, as its grants say (`None`: no grant).
    pub fn role_of(&self, peer: &PeerId) -> Option<Role> {
        self.replication.members().role(peer)
    }

    /// Refuses writes from a node without write access, or whose clock is too far from its
    /// peers', with what to do about it.
    /// Why this node refuses every local write whatever its role, if it does: another node
    /// signs with its identity.
    pub fn writes_refused(&self) -> Option<String> {
        self.store.identity_in_use().then(|| {
            "another node signs with this node's identity (one ticket used on two machines, or a \
             data dir restored from a backup): stop one of them, move its data dir away and join \
             it with a new ticket"
                .to_string()
        })
    }

    pub(super) fn may_write(&self) -> Result<(), Error> {
        self.store.time().check_local().map_err(StoreError::from)?;
        if self.role().is_some_and(|r| r >= Role::Writer) {
            return Ok(());
        }
        let Some(network) = self.network_id() else {
            // Not a question of rights yet: no peer has told this node its network.
            let peers = self.metrics.connected_peers.get();
            let why = if peers == 0 {
                super::alone::cause(self.network.reach())
            } else {
                format!("{peers} peer(s) connected, none has answered yet")
            };
            return Err(Error::NotAllowed(format!(
                "this node has not learnt its network yet (it learns it from its bootstrap peers); {why}"
            )));
        };
        let me = self.peer_id.to_base58();
        if let Some(cutoff) = self
            .members()
            .into_iter()
            .find(|m| m.peer_id == me)
            .and_then(|m| m.cutoff)
        {
            return Err(Error::NotAllowed(format!(
                "this node's ({me}) write access to network {network} was revoked by an admin (its records up to number {cutoff} still count): ask an admin to run `dfs allow {me}` again"
            )));
        }
        Err(Error::NotAllowed(format!(
            "this node ({}) has no write access to network {network}: ask an admin to run `dfs allow {}`, or join with a ticket from `dfs invite`",
            self.peer_id, self.peer_id
        )))
    }

    /// The members of the network: the owner and every peer with a grant.
    pub fn members(&self) -> Vec<Member> {
        let mut members = self
            .replication
            .members()
            .with(|m| m.members())
            .unwrap_or_default();
        let tallies = self.replication.audit().tallies();
        let equivocators = self.store.equivocators();
        for m in &mut members {
            let Ok(peer) = m.peer_id.parse::<PeerId>() else {
                continue;
            };
            if let Some(t) = tallies.get(&peer) {
                m.failed_proofs = t.failed;
            }
            m.equivocated = equivocators.contains(&peer.to_bytes());
        }
        members
    }

    /// Refusals of records and grants since start (see `replication::admission`).
    pub fn refusals(&self) -> &replication::admission::Refusals {
        self.replication.refusals()
    }

    /// Grants `role` to `peer` (admin: the owner only; writer; reader revokes write access),
    /// signs it, stores it and spreads it. A grant that lowers a peer's role keeps its records
    /// up to the highest sequence number of its that this node has seen.
    pub async fn allow(&self, peer: PeerId, role: Role) -> Result<Grant, Error> {
        let mine = self.role();
        if mine < Some(Role::Admin) {
            return Err(Error::NotAllowed(format!(
                "this node ({}) is not an admin of its network: only the owner and its admins grant access",
                self.peer_id
            )));
        }
        let network = self.network_id().ok_or(Error::Stopped)?;
        let owner = trust::owner_of(&network).ok_or(Error::Stopped)?;
        if role == Role::Admin && owner != self.peer_id {
            return Err(Error::NotAllowed(
                "only the network's owner appoints admins".into(),
            ));
        }
        if peer == owner {
            return Err(Error::NotAllowed("the owner's role cannot change".into()));
        }
        let subject = peer.to_bytes();
        let store = self.store.clone();
        let s = subject.clone();
        // A revocation names the numbers of the peer's that this node holds: the ones that
        // keep counting (see PROTOCOL.md, "Revocation and back-dating").
        let (cutoff, held) = self
            .tasks
            .blocking(move || store.held_seqs(&s, crate::trust::grant::MAX_HELD_RANGES))
            .await??;
        let unsigned = Grant {
            network,
            subject,
            role,
            cutoff,
            time: 0,
            issuer: Vec::new(),
            seq: 0,
            sig: Vec::new(),
            held: (role == Role::Reader).then_some(held),
        };
        let store = self.store.clone();
        let grant = self
            .tasks
            .blocking(move || store.sign_grant(unsigned))
            .await??;
        self.replication
            .grant_counts(grant.clone())
            .await
            .map_err(merge_error)?;
        self.network.publish_grant(grant.clone()).await?;
        Ok(grant)
    }

    /// Makes a ticket for a new machine: a fresh identity, granted `writer` (or `admin`), and
    /// this node's addresses.
    pub async fn invite(&self, admin: bool) -> Result<Ticket, Error> {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let role = if admin { Role::Admin } else { Role::Writer };
        let grant = self.allow(key.public().to_peer_id(), role).await?;
        let info = self.network.info().await?;
        Ok(Ticket {
            network: grant.network.clone(),
            addrs: info.addrs,
            key,
            grant,
            settings: self.replication.policy().settings(),
        })
    }

    /// Stores a file from a blocking reader, durably, then gossips its record. Returns when the
    /// put is durable locally.
    pub async fn put_blocking(
        &self,
        key: String,
        reader: impl std::io::Read + Send + 'static,
    ) -> Result<Record, Error> {
        self.may_write()?;
        let store = self.store.clone();
        let record = self
            .tasks
            .blocking(move || store.put(&key, reader))
            .await??;
        self.replication.written(&record).await?;
        Ok(record)
    }

    /// Stores a file of this machine that the node reads itself (no copy through a channel),
    /// durably, then gossips its record. `Source` when the path cannot be read as a regular file.
    pub async fn put_path(&self, key: String, path: PathBuf) -> Result<Record, Error> {
        let source = |reason: String| Error::Source {
            path: path.display().to_string(),
            reason,
        };
        let file = std::fs::File::open(&path).map_err(|e| source(e.to_string()))?;
        let meta = file.metadata().map_err(|e| source(e.to_string()))?;
        if !meta.is_file() {
            return Err(source("not a regular file".into()));
        }
        self.put_blocking(key, file).await
    }

    /// Stores a file from an async reader (an HTTP body, a file), streaming with bounded memory:
    /// the reader is gathered into whole chunks on the async side and handed, through a
    /// bounded channel, to the store's put on a blocking thread.
    pub async fn put(
        &self,
        key: String,
        mut reader: impl tokio::io::AsyncRead + Send + Unpin + 'static,
    ) -> Result<Record, Error> {
        use tokio::io::AsyncReadExt;
        self.may_write()?;
        let (tx, rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(PUT_QUEUE);
        let store = self.store.clone();
        let writer = self
            .tasks
            .spawn_blocking(move || store.put(&key, chunk_channel::Reader::new(rx)));
        loop {
            let mut buf = bytes::BytesMut::with_capacity(CHUNK_SIZE);
            let mut failed = None;
            while buf.len() < CHUNK_SIZE {
                // Shutdown does not wait for a client that stalls: the put is abandoned (the
                // channel closes without its end mark, so nothing is stored).
                let read = tokio::select! {
                    read = reader.read_buf(&mut buf) => read,
                    _ = self.tasks.cancelled() => Err(std::io::Error::other("the node is stopping")),
                };
                match read {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let done = buf.len() < CHUNK_SIZE || failed.is_some();
            if !buf.is_empty() && tx.send(Ok(buf.freeze())).await.is_err() {
                break; // the store stopped reading: its error is the answer
            }
            if let Some(e) = failed {
                let _ = tx.send(Err(e)).await;
                drop(tx);
                return Err(writer
                    .await
                    .map_err(|e| Error::Task(TaskFailed::from(e)))?
                    .err()
                    .map(Error::Store)
                    .unwrap_or(Error::Stopped));
            }
            if done {
                break;
            }
        }
        // The end of the data: without it, the reader takes the channel's end for a failure.
        let _ = tx.send(Ok(bytes::Bytes::new())).await;
        drop(tx);
        let record = writer
            .await
            .map_err(|e| Error::Task(TaskFailed::from(e)))??;
        self.replication.written(&record).await?;
        Ok(record)
    }

    /// Deletes a key everywhere: writes a tombstone and gossips it.
    pub async fn delete(&self, key: String) -> Result<Record, Error> {
        self.may_write()?;
        let store = self.store.clone();
        let record = self.tasks.blocking(move || store.delete(&key)).await??;
        self.replication.written(&record).await?;
        Ok(record)
    }

    /// Every version of a key this node knows (history, conflicts, current), oldest first.
    pub async fn log(&self, key: String) -> Result<Vec<crate::store::LogEntry>, Error> {
        let store = self.store.clone();
        let k = key.clone();
        let log = self.tasks.blocking(move || store.log(&k)).await??;
        if log.is_empty() {
            return Err(Error::NotFound(key));
        }
        Ok(log)
    }

    /// The version of `key` whose id is `version` or starts with it (at least 8 hex digits).
    pub async fn find_version(&self, key: String, version: String) -> Result<Record, Error> {
        let prefix = version.to_ascii_lowercase();
        if prefix.len() < 8 || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::BadVersion(version));
        }
        let log = self.log(key.clone()).await?;
        let mut found = log
            .into_iter()
            .map(|e| e.record)
            .filter(|r| r.version().to_hex().starts_with(&prefix));
        match (found.next(), found.next()) {
            (Some(r), None) => Ok(r),
            (Some(_), Some(_)) => Err(Error::BadVersion(format!(
                "{version} names more than one version of {key}: give more digits"
            ))),
            (None, _) => Err(Error::NotFound(format!("{key} version {version}"))),
        }
    }

    /// Reads one version of a key (current, conflict or in history): locally if its content is
    /// here, else fetched from peers.
    pub async fn get_version(
        &self,
        key: String,
        version: String,
        range: Option<(u64, u64)>,
    ) -> Result<Download, Error> {
        let record = self.find_version(key, version).await?;
        if record.is_tombstone() {
            return Err(StoreError::IsDelete(record.version().to_hex()).into());
        }
        self.hold(&record).await?;
        Ok(download::start(&self.replication, record, range).await?)
    }

    /// Lets a version kept in history hold its content, so that a fetch of it is kept.
    pub(super) async fn hold(&self, record: &Record) -> Result<(), Error> {
        let store = self.store.clone();
        let r = record.clone();
        self.tasks.blocking(move || store.hold(&r)).await??;
        Ok(())
    }

    /// Makes an earlier version current again: a new write of its content (which spreads like
    /// any write).
    pub async fn restore(&self, key: String, version: String) -> Result<Record, Error> {
        self.may_write()?;
        let old = self.find_version(key.clone(), version).await?;
        if old.is_tombstone() {
            return Err(StoreError::IsDelete(old.version().to_hex()).into());
        }
        // Its content must be here first (it may be a version that arrived already replaced).
        self.hold(&old).await?;
        let cid = old.cid.expect("live version");
        let deadline = tokio::time::Instant::now() + self.lookup_timeout * 6;
        loop {
            let store = self.store.clone();
            if self
                .tasks
                .blocking(move || store.content_complete(&cid))
                .await??
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Unavailable {
                    key,
                    reason: "the content of that version is on no reachable peer".into(),
                });
            }
            self.replication.transfers().ensure(&old, true);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let store = self.store.clone();
        let version = old.version();
        let record = self
            .tasks
            .blocking(move || store.restore(&key, version))
            .await??;
        self.replication.written(&record).await?;
        Ok(record)
    }

    /// Each connected peer's measured clock offset (its clock minus this node's).
    pub fn clock_offsets(&self) -> std::collections::HashMap<PeerId, crate::clock::Offset> {
        self.store.time().offsets()
    }

    /// One key's record and local state (tombstones included).
    pub async fn stat(&self, key: String) -> Result<Stat, Error> {
        let store = self.store.clone();
        let k = key.clone();
        self.tasks
            .blocking(move || store.stat(&k))
            .await??
            .ok_or(Error::NotFound(key))
    }

    /// Every record this node knows, tombstones included, sorted by key.
    pub async fn list(&self) -> Result<Vec<Stat>, Error> {
        let store = self.store.clone();
        Ok(self.tasks.blocking(move || store.list()).await??)
    }

    /// One page of the listing: up to `max` keys starting with `prefix` after `after`, sorted
    /// (see [`Store::list_page`]).
    pub async fn list_page(
        &self,
        prefix: String,
        after: Option<String>,
        max: usize,
    ) -> Result<Vec<Stat>, Error> {
        let store = self.store.clone();
        Ok(self
            .tasks
            .blocking(move || store.list_page(&prefix, after.as_deref(), max))
            .await??)
    }

    /// Reads a file: locally if its content is here, else fetched from peers and streamed as
    /// chunks verify. For a key this node has never heard of, the peers are asked for its record
    /// first. `range` is a half-open byte range within the file.
    pub async fn get(&self, key: String, range: Option<(u64, u64)>) -> Result<Download, Error> {
        let store = self.store.clone();
        let k = key.clone();
        let mut record = self.tasks.blocking(move || store.record(&k)).await??;
        if record.is_none() {
            record = self.lookup(&key).await?;
        }
        let record = match record {
            Some(r) if !r.is_tombstone() => r,
            _ => return Err(Error::NotFound(key)),
        };
        Ok(download::start(&self.replication, record, range).await?)
    }

    /// Asks the connected peers for a key's record (see [`Replication::lookup`]).
    pub(super) async fn lookup(&self, key: &str) -> Result<Option<Record>, Error> {
        match self.replication.lookup(key, self.lookup_timeout).await {
            Ok(record) => Ok(record),
            Err(replication::LookupError::Network(e)) => Err(e.into()),
            Err(replication::LookupError::Merge(e)) => Err(merge_error(e)),
        }
    }

    /// This node's peer id and listen addresses.
    pub async fn info(&self) -> Result<NodeInfo, Error> {
        Ok(self.network.info().await?)
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        Ok(self.network.peers().await?)
    }

    /// Dials an address (with or without `/p2p/<id>`).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        Ok(self.network.dial(addr).await?)
    }

    /// Dials an address and returns once connected, with the peer's id (`dfs connect`); fails
    /// with the reason, or after [`net::CONNECT_TIMEOUT`].
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, Error> {
        Ok(self.network.connect(addr).await?)
    }

    /// The node's network handle (content routing, raw peers), for the replication layer's
    /// callers and tests.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Every metric in the Prometheus text format, with the store's figures and the refusal
    /// counts read now.
    pub async fn metrics_text(&self) -> Result<String, Error> {
        let store = self.store.clone();
        let stats = self.tasks.blocking(move || store.list()).await??;
        let m = &self.metrics;
        m.records.set(stats.len() as i64);
        let files = stats.iter().filter(|s| s.local);
        m.files.set(files.clone().count() as i64);
        m.stored_bytes.set(
            files
                .map(|s| s.record.size)
                .sum::<u64>()
                .min(i64::MAX as u64) as i64,
        );
        // Peers gone since the last scrape leave the family.
        m.clock_offset_seconds.clear();
        for (peer, offset) in self.store.time().offsets() {
            m.clock_offset_seconds
                .get_or_create(&crate::metrics::PeerLabel::new(peer))
                .set(offset.ms as f64 / 1000.0);
        }
        use crate::metrics::{Metrics, Reason, ReasonLabel};
        use replication::admission::Refusal;
        for (refusal, reason) in [
            (Refusal::Invalid, Reason::invalid),
            (Refusal::NotAWriter, Reason::not_a_writer),
            (Refusal::SeqReused, Reason::seq_reused),
            (Refusal::Grant, Reason::grant),
            (Refusal::Ahead, Reason::ahead),
        ] {
            Metrics::mirror(
                &m.refused.get_or_create(&ReasonLabel { reason }),
                self.replication.refusals().count(refusal),
            );
        }
        Ok(m.encode())
    }

    /// The nodes known to hold the whole content of `key`'s current record: this one, and the
    /// connected peers that answer so (asked now, each within the lookup timeout).
    pub async fn holders(&self, key: &str) -> Result<Holders, Error> {
        let stat = self.stat(key.to_string()).await?;
        let mut peers = Vec::new();
        if stat.local {
            peers.push(self.peer_id);
        }
        let mut placed = None;
        if let Some(cid) = stat.record.cid {
            peers.extend(self.replication.holders(cid, self.lookup_timeout).await?);
            let policy = self.replication.policy();
            if policy.replicas() != crate::placement::Replicas::All {
                placed = Some(policy.placed(&cid));
            }
        }
        Ok(Holders {
            stat,
            peers,
            placed,
        })
    }

    /// The members placed to hold `cid`'s content, as this node sees them (empty when every
    /// node holds everything).
    pub fn placed(&self, cid: &crate::record::ContentId) -> Vec<PeerId> {
        let policy = self.replication.policy();
        if policy.replicas() == crate::placement::Replicas::All {
            return Vec::new();
        }
        policy.placed(cid)
    }

    /// Runs a repair pass now (under partial replication: fetch what is placed here and
    /// missing, drop the extra copies that placed members prove they keep, audit the other
    /// placed holders of a sample of what is held here).
    pub async fn repair_now(&self) -> Result<replication::repair::RepairReport, Error> {
        self.replication
            .repair_pass(true)
            .await
            .map_err(|e| match e {
                replication::MergeError::Store(e) => Error::Store(e),
                replication::MergeError::Task(e) => Error::Task(e),
            })
    }

    /// Waits until at least `min` nodes (this one included) hold the whole content of `key`,
    /// asking again every 250 ms, or until `timeout`; returns the last answer either way.
    pub async fn wait_holders(
        &self,
        key: &str,
        min: usize,
        timeout: Duration,
    ) -> Result<Holders, Error> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let holders = match tokio::time::timeout(left, self.holders(key)).await {
                Ok(h) => h?,
                Err(_) => return self.holders(key).await,
            };
            if holders.peers.len() >= min || tokio::time::Instant::now() >= until {
                return Ok(holders);
            }
            tokio::time::sleep(HOLDERS_POLL.min(left)).await;
        }
    }

    /// Blocks (or unblocks) a peer: its connections are closed and refused. Used to cut a
    /// network in two in tests, and by operators to shut out a misbehaving peer.
    pub async fn block(&self, peer: PeerId, blocked: bool) -> Result<(), Error> {
        Ok(self.network.block(peer, blocked).await?)
    }

    /// Waits until this node holds the complete content of `key` (or its tombstone if
    /// `deleted`), polling the store; for tests and the demo.
    pub async fn wait_for(&self, key: &str, deleted: bool, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let store = self.store.clone();
            let k = key.to_string();
            let state = self
                .tasks
                .blocking(move || store.stat(&k))
                .await
                .ok()
                .and_then(|r| r.ok());
            let done = match state.flatten() {
                Some(s) if deleted => s.record.is_tombstone(),
                Some(s) => s.local,
                None => false,
            };
            if done {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub(super) fn merge_error(e: replication::MergeError) -> Error {
    match e {
        replication::MergeError::Store(e) => Error::Store(e),
        replication::MergeError::Task(e) => Error::Task(e),
    }
}
