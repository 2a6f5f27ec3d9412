//! Content routing over libp2p's Kademlia (`/dfs/kad/<network>/1.0.0`): which peers hold a file's
//! content, found without being connected to them. Provider keys are content ids (the raw 32
//! bytes of the BLAKE3 hash); dfs stores no Kademlia value records. This module holds the
//! behaviour's configuration, the bounded provider store ([`ProviderStore`]) and the queue that
//! batches this node's announcements ([`Announcer`]: at most [`MAX_PROVIDE_QUERIES`] provide
//! queries at once, every key re-announced every [`REPROVIDE_INTERVAL`], as Kubo's sweep
//! reprovider spreads its work); the event loop drives them.

use std::borrow::Cow;
use std::collections::{hash_map, HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use libp2p::kad::{self, store, ProviderRecord, Record, RecordKey};
use libp2p::{Multiaddr, PeerId, StreamProtocol};

use crate::record::Hash;

/// The Kademlia protocol of the dfs network `network` (its owner's peer id):
/// `/dfs/kad/<network>/1.0.0`. Not `/ipfs/kad/1.0.0`: dfs nodes must not join (or be joined by)
/// the IPFS DHT. One per network, because Kademlia dials whatever peers its queries return: with
/// one name for all, a node connected to two networks (a dial) would bridge their DHTs and the
/// nodes of one would connect to those of the other, which dfs never lets discovery do (pnet
/// separates private networks, not public ones). A peer of another network cannot even open
/// this protocol, so routing tables and queries stay within the network.
pub fn protocol(network: &str) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/dfs/kad/{network}/1.0.0"))
        .expect("a protocol name starts with /")
}
/// Largest Kademlia message read or written (libp2p's default): a GET_PROVIDERS answer of 20
/// providers and 20 closer peers with a few addresses each fits.
pub const MAX_PACKET: usize = 16 * 1024;
/// How long a Kademlia query may run (a provide, a bootstrap).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`super::Network::providers`] waits for its query.
pub const PROVIDERS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long other nodes keep this node's provider records (libp2p's and Kubo's 48 h).
pub const PROVIDER_TTL: Duration = Duration::from_secs(48 * 3600);
/// How often each provided key is announced again: well within [`PROVIDER_TTL`] (Kubo: 22 h).
pub const REPROVIDE_INTERVAL: Duration = Duration::from_secs(22 * 3600);
/// How long a key whose announcement failed waits before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// Provide queries running at once; the other keys wait in the queue.
pub const MAX_PROVIDE_QUERIES: usize = 8;
/// Keys this node provides, at most (about 100 bytes each: about 100 MiB at the bound).
pub const MAX_PROVIDED_KEYS: usize = 1 << 20;
/// Provider records of other peers kept (for the keys this node is among the closest to), at
/// most: each costs at most about 400 bytes (addresses included), so about 100 MiB at the
/// bound; past it, new records are refused until old ones expire.
pub const MAX_REMOTE_RECORDS: usize = 1 << 18;
/// Providers kept per key (Kademlia's k); more are ignored, as libp2p's store does.
pub const MAX_PROVIDERS_PER_KEY: usize = 20;
/// Addresses kept per remote provider record, and the longest one kept (bytes).
pub const MAX_RECORD_ADDRS: usize = 2;
pub const MAX_ADDR_BYTES: usize = 64;

/// The Kademlia behaviour of a dfs node of `network`: [`protocol`], server mode (the node answers queries
/// whether or not it knows an external address), a routing table filled by the event loop
/// with identified dfs peers only (`BucketInserts::Manual`), no value records, provider
/// records kept [`PROVIDER_TTL`], re-announced by the [`Announcer`] (libp2p's own republishing,
/// which would start a query for every key at once, is off).
pub fn behaviour(local: PeerId, network: &str) -> kad::Behaviour<ProviderStore> {
    let mut config = kad::Config::new(protocol(network));
    config
        .set_max_packet_size(MAX_PACKET)
        .set_query_timeout(QUERY_TIMEOUT)
        .set_replication_factor(NonZeroUsize::new(MAX_PROVIDERS_PER_KEY).expect("nonzero"))
        .set_kbucket_inserts(kad::BucketInserts::Manual)
        .set_record_ttl(None)
        .set_replication_interval(None)
        .set_publication_interval(None)
        .set_provider_record_ttl(Some(PROVIDER_TTL))
        .set_provider_publication_interval(None);
    let mut kad = kad::Behaviour::with_config(local, ProviderStore::new(local), config);
    kad.set_mode(Some(kad::Mode::Server));
    kad
}

/// The record key of a content id: its raw bytes.
pub fn key(hash: &Hash) -> RecordKey {
    RecordKey::new(&hash.0)
}

/// The content id of a record key, if it is one (32 bytes).
pub fn hash_of(key: &RecordKey) -> Option<Hash> {
    <[u8; 32]>::try_from(key.as_ref()).ok().map(Hash)
}

/// The keys this node provides and when each is announced next. Each provided key has exactly
/// one live entry: in the fresh queue (never announced), the retry queue, the reprovide queue
/// or in flight. Entries of keys no longer provided (or provided again since) are dropped when
/// reached: a key's ticket changes each time it is provided anew. Each queue is in time order
/// because everything pushed on one waits the same delay.
pub struct Announcer<Q> {
    keys: HashMap<Hash, u32>,
    next_ticket: u32,
    fresh: VecDeque<(Hash, u32)>,
    retry: VecDeque<(Instant, Hash, u32)>,
    reprovide: VecDeque<(Instant, Hash, u32)>,
    in_flight: HashMap<Q, (Hash, u32)>,
    max_keys: usize,
    concurrency: usize,
    reprovide_every: Duration,
    retry_after: Duration,
}

impl<Q: std::hash::Hash + Eq> Announcer<Q> {
    pub fn new(
        max_keys: usize,
        concurrency: usize,
        reprovide_every: Duration,
        retry_after: Duration,
    ) -> Announcer<Q> {
        Announcer {
            keys: HashMap::new(),
            next_ticket: 0,
            fresh: VecDeque::new(),
            retry: VecDeque::new(),
            reprovide: VecDeque::new(),
            in_flight: HashMap::new(),
            max_keys,
            concurrency,
            reprovide_every,
            retry_after,
        }
    }

    /// Provides `hash`: a new key is queued for announcement; a key already provided keeps its
    /// schedule. False when the node already provides [`MAX_PROVIDED_KEYS`] keys.
    pub fn provide(&mut self, hash: Hash) -> bool {
        if self.keys.contains_key(&hash) {
            return true;
        }
        if self.keys.len() >= self.max_keys {
            return false;
        }
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        self.keys.insert(hash, ticket);
        self.fresh.push_back((hash, ticket));
        true
    }

    /// Stops providing `hash` (its queue entry is dropped when reached). False if it was not.
    pub fn unprovide(&mut self, hash: &Hash) -> bool {
        self.keys.remove(hash).is_some()
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.keys.contains_key(hash)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &Hash> {
        self.keys.keys()
    }

    /// Announcements in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Keys waiting for their first announcement.
    pub fn queued(&self) -> usize {
        self.fresh.len()
    }

    fn live(&self, hash: &Hash, ticket: u32) -> bool {
        self.keys.get(hash) == Some(&ticket)
    }

    /// The next key to announce, if one is due and fewer than `concurrency` announcements are
    /// in flight: never-announced keys first, then failed ones, then re-announcements. The
    /// caller starts its query and reports it with [`Self::started`] (or
    /// [`Self::not_started`]).
    pub fn next_due(&mut self, now: Instant) -> Option<(Hash, u32)> {
        if self.in_flight.len() >= self.concurrency {
            return None;
        }
        while let Some((hash, ticket)) = self.fresh.pop_front() {
            if self.live(&hash, ticket) {
                return Some((hash, ticket));
            }
        }
        for queue in [&mut self.retry, &mut self.reprovide] {
            while let Some(&(due, hash, ticket)) = queue.front() {
                if self.keys.get(&hash) != Some(&ticket) {
                    queue.pop_front();
                    continue;
                }
                if due > now {
                    break;
                }
                queue.pop_front();
                return Some((hash, ticket));
            }
        }
        None
    }

    /// The announcement of `hash` runs as query `query`.
    pub fn started(&mut self, query: Q, (hash, ticket): (Hash, u32)) {
        self.in_flight.insert(query, (hash, ticket));
    }

    /// The announcement of `hash` could not start: tried again after the retry delay.
    pub fn not_started(&mut self, (hash, ticket): (Hash, u32), now: Instant) {
        if self.live(&hash, ticket) {
            self.retry.push_back((now + self.retry_after, hash, ticket));
        }
    }

    /// Query `query` ended; its key is announced again after the reprovide interval if it
    /// succeeded, after the retry delay if not. Returns the key, if the query was one of ours.
    pub fn finished(&mut self, query: &Q, ok: bool, now: Instant) -> Option<Hash> {
        let (hash, ticket) = self.in_flight.remove(query)?;
        if self.live(&hash, ticket) {
            if ok {
                self.reprovide
                    .push_back((now + self.reprovide_every, hash, ticket));
            } else {
                self.retry.push_back((now + self.retry_after, hash, ticket));
            }
        }
        Some(hash)
    }

    /// Every key announced again as soon as possible (the node was alone, and now has peers).
    pub fn announce_all_again(&mut self) {
        let entries = self
            .retry
            .drain(..)
            .chain(self.reprovide.drain(..))
            .map(|(_, h, t)| (h, t))
            .collect::<Vec<_>>();
        self.fresh.extend(entries);
    }
}

/// The provider store given to Kademlia: this node's own keys (the [`Announcer`], one map, no
/// per-key record) and bounded records of other peers. Value records are refused.
pub struct ProviderStore {
    local: PeerId,
    pub announcer: Announcer<kad::QueryId>,
    remote: HashMap<RecordKey, Vec<ProviderRecord>>,
    remote_records: usize,
}

impl ProviderStore {
    pub fn new(local: PeerId) -> ProviderStore {
        ProviderStore {
            local,
            announcer: Announcer::new(
                MAX_PROVIDED_KEYS,
                MAX_PROVIDE_QUERIES,
                REPROVIDE_INTERVAL,
                RETRY_AFTER,
            ),
            remote: HashMap::new(),
            remote_records: 0,
        }
    }

    /// Provider records of other peers currently kept.
    pub fn remote_records(&self) -> usize {
        self.remote_records
    }

    /// The addresses remote records give for `peer` (the first found).
    pub fn addresses_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.remote
            .values()
            .flatten()
            .find(|r| &r.provider == peer && !r.addresses.is_empty())
            .map(|r| r.addresses.clone())
            .unwrap_or_default()
    }

    /// Drops the expired records of other peers.
    pub fn sweep(&mut self, now: Instant) {
        let mut dropped = 0;
        self.remote.retain(|_, records| {
            let before = records.len();
            records.retain(|r| !r.is_expired(now));
            dropped += before - records.len();
            !records.is_empty()
        });
        self.remote_records -= dropped;
    }

    fn local_record(&self, key: &RecordKey) -> ProviderRecord {
        ProviderRecord::new(key.clone(), self.local, Vec::new())
    }
}

/// The addresses of a remote record worth keeping: those dfs dials, short, few.
fn bounded_addrs(addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    addrs
        .into_iter()
        .filter(|a| a.len() <= MAX_ADDR_BYTES && super::is_supported(a))
        .take(MAX_RECORD_ADDRS)
        .collect()
}

impl store::RecordStore for ProviderStore {
    type RecordsIter<'a> = std::iter::Empty<Cow<'a, Record>>;
    type ProvidedIter<'a> = std::vec::IntoIter<Cow<'a, ProviderRecord>>;

    fn get(&self, _: &RecordKey) -> Option<Cow<'_, Record>> {
        None
    }

    fn put(&mut self, _: Record) -> store::Result<()> {
        Err(store::Error::MaxRecords)
    }

    fn remove(&mut self, _: &RecordKey) {}

    fn records(&self) -> Self::RecordsIter<'_> {
        std::iter::empty()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> store::Result<()> {
        if record.provider == self.local {
            // From `start_providing`: the key is in the announcer already (or put there now).
            let hash = hash_of(&record.key).ok_or(store::Error::ValueTooLarge)?;
            return if self.announcer.provide(hash) {
                Ok(())
            } else {
                Err(store::Error::MaxProvidedKeys)
            };
        }
        let record = ProviderRecord {
            addresses: bounded_addrs(record.addresses),
            ..record
        };
        let full = self.remote_records >= MAX_REMOTE_RECORDS;
        let records = match self.remote.entry(record.key.clone()) {
            hash_map::Entry::Occupied(e) => e.into_mut(),
            hash_map::Entry::Vacant(_) if full => return Err(store::Error::MaxRecords),
            hash_map::Entry::Vacant(e) => e.insert(Vec::new()),
        };
        if let Some(r) = records.iter_mut().find(|r| r.provider == record.provider) {
            *r = record;
            return Ok(());
        }
        if full {
            return Err(store::Error::MaxRecords);
        }
        // A full key ignores newcomers (as libp2p's store does): flooding a key with fake
        // providers cannot push the first ones out.
        if records.len() < MAX_PROVIDERS_PER_KEY {
            records.push(record);
            self.remote_records += 1;
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut out = self.remote.get(key).cloned().unwrap_or_default();
        if hash_of(key).is_some_and(|h| self.announcer.contains(&h)) {
            out.insert(0, self.local_record(key));
        }
        out
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        // Only libp2p's republishing job asks, and it is off; kept correct nonetheless.
        self.announcer
            .keys()
            .map(|h| Cow::Owned(self.local_record(&key(h))))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if provider == &self.local {
            if let Some(h) = hash_of(key) {
                self.announcer.unprovide(&h);
            }
            return;
        }
        if let hash_map::Entry::Occupied(mut e) = self.remote.entry(key.clone()) {
            let before = e.get().len();
            e.get_mut().retain(|r| &r.provider != provider);
            self.remote_records -= before - e.get().len();
            if e.get().is_empty() {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::kad::store::RecordStore;

    fn h(n: u8) -> Hash {
        Hash([n; 32])
    }

    fn announcer() -> Announcer<u32> {
        Announcer::new(100, 2, Duration::from_secs(100), Duration::from_secs(10))
    }

    #[test]
    fn announcements_run_at_most_concurrency_at_once() {
        let mut a = announcer();
        let now = Instant::now();
        for n in 0..5 {
            assert!(a.provide(h(n)));
        }
        let first = a.next_due(now).unwrap();
        a.started(1, first);
        let second = a.next_due(now).unwrap();
        a.started(2, second);
        assert_eq!((first.0, second.0), (h(0), h(1)), "in the order provided");
        assert!(a.next_due(now).is_none(), "two in flight: the third waits");
        assert_eq!(a.finished(&1, true, now), Some(h(0)));
        let third = a.next_due(now).unwrap();
        assert_eq!(third.0, h(2));
        a.started(3, third);
        assert!(a.next_due(now).is_none());
        assert_eq!(a.in_flight(), 2);
        assert_eq!(a.queued(), 2);
    }

    #[test]
    fn keys_are_announced_again_after_the_interval_and_retried_after_failure() {
        let mut a = announcer();
        let now = Instant::now();
        a.provide(h(1));
        a.provide(h(2));
        let k1 = a.next_due(now).unwrap();
        a.started(1, k1);
        let k2 = a.next_due(now).unwrap();
        a.started(2, k2);
        a.finished(&1, true, now);
        a.finished(&2, false, now);
        assert!(a.next_due(now).is_none(), "nothing due yet");
        let later = now + Duration::from_secs(10);
        assert_eq!(
            a.next_due(later).map(|k| k.0),
            Some(h(2)),
            "the failed key is retried"
        );
        assert!(
            a.next_due(later).is_none(),
            "the announced one waits its interval"
        );
        let much_later = now + Duration::from_secs(100);
        assert_eq!(a.next_due(much_later).map(|k| k.0), Some(h(1)));
    }

    #[test]
    fn providing_twice_keeps_one_schedule_and_unprovided_keys_are_dropped() {
        let mut a = announcer();
        let now = Instant::now();
        a.provide(h(1));
        a.provide(h(1));
        a.provide(h(2));
        assert_eq!(a.len(), 2);
        assert!(a.unprovide(&h(2)));
        let k = a.next_due(now).unwrap();
        assert_eq!(k.0, h(1));
        a.started(1, k);
        assert!(a.next_due(now).is_none(), "h(1) once, h(2) dropped");
        // Unprovided while in flight, provided again: one entry only, the new one.
        a.unprovide(&h(1));
        a.provide(h(1));
        a.finished(&1, true, now);
        assert_eq!(a.next_due(now).map(|k| k.0), Some(h(1)));
        assert!(a.next_due(now + Duration::from_secs(1000)).is_none());
    }

    #[test]
    fn the_number_of_provided_keys_is_bounded() {
        let mut a: Announcer<u32> =
            Announcer::new(3, 2, Duration::from_secs(100), Duration::from_secs(10));
        for n in 0..3 {
            assert!(a.provide(h(n)));
        }
        assert!(!a.provide(h(9)));
        assert!(a.provide(h(0)), "an already provided key is fine");
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn a_lone_node_announces_everything_again_when_peers_come() {
        let mut a = announcer();
        let now = Instant::now();
        a.provide(h(1));
        let k = a.next_due(now).unwrap();
        a.started(1, k);
        a.finished(&1, true, now);
        assert!(a.next_due(now).is_none());
        a.announce_all_again();
        assert_eq!(a.next_due(now).map(|k| k.0), Some(h(1)));
    }

    fn remote(key: &RecordKey, provider: PeerId, addrs: Vec<Multiaddr>) -> ProviderRecord {
        ProviderRecord {
            key: key.clone(),
            provider,
            expires: Some(Instant::now() + Duration::from_secs(60)),
            addresses: addrs,
        }
    }

    #[test]
    fn remote_records_are_bounded_per_key_and_their_addresses_trimmed() {
        let local = PeerId::random();
        let mut s = ProviderStore::new(local);
        let k = key(&h(1));
        let addrs: Vec<Multiaddr> = vec![
            "/ip4/10.0.0.1/tcp/1".parse().unwrap(),
            "/ip4/10.0.0.2/udp/1/quic-v1".parse().unwrap(),
            "/ip4/10.0.0.3/tcp/3".parse().unwrap(),
            "/ip4/10.0.0.4/tcp/4".parse().unwrap(),
        ];
        for _ in 0..(MAX_PROVIDERS_PER_KEY + 5) {
            s.add_provider(remote(&k, PeerId::random(), addrs.clone()))
                .unwrap();
        }
        let got = s.providers(&k);
        assert_eq!(got.len(), MAX_PROVIDERS_PER_KEY);
        assert_eq!(s.remote_records(), MAX_PROVIDERS_PER_KEY);
        assert_eq!(
            got[0].addresses,
            vec![addrs[0].clone(), addrs[2].clone()],
            "dialable addresses only, at most {MAX_RECORD_ADDRS}"
        );
        let first = got[0].provider;
        s.remove_provider(&k, &first);
        assert_eq!(s.remote_records(), MAX_PROVIDERS_PER_KEY - 1);
        assert!(
            s.put(Record::new(k.clone(), vec![1])).is_err(),
            "no value records"
        );
    }

    #[test]
    fn local_keys_live_in_the_announcer_and_expired_remote_records_are_swept() {
        let local = PeerId::random();
        let mut s = ProviderStore::new(local);
        let k = key(&h(7));
        s.add_provider(ProviderRecord::new(k.clone(), local, Vec::new()))
            .unwrap();
        assert!(s.announcer.contains(&h(7)));
        let mut r = remote(&k, PeerId::random(), Vec::new());
        r.expires = Some(Instant::now());
        s.add_provider(r).unwrap();
        let got = s.providers(&k);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].provider, local, "this node first");
        s.sweep(Instant::now() + Duration::from_secs(1));
        assert_eq!(s.remote_records(), 0);
        s.remove_provider(&k, &local);
        assert!(s.providers(&k).is_empty());
    }
}
