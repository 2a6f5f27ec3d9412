//! Time: the node's wall clock (injectable, so tests run skewed nodes in one process), the
//! hybrid logical clock of its versions, and the network's time, measured against its peers.
//!
//! Every node measures its clock's offset to each peer (`/dfs/fetch/2` `time`, an NTP-style
//! exchange, on connection and every [`MEASURE_EVERY`]) and takes the median of the offsets of
//! the network's members (peers with a grant: strangers cannot vote), its own (zero) included,
//! as the network's opinion of its clock. Two rules follow, both
//! bounded by `max_offset` (`dfs node --max-clock-offset`, default [`DEFAULT_MAX_OFFSET_MS`]):
//!
//! - A node whose median offset is larger than `max_offset` refuses local writes (its versions
//!   would claim a time its peers do not share) and says so, naming the offset.
//! - The hybrid clock moves past the records it accepts only up to the horizon, `2 × max_offset`
//!   past the network's time (this node's clock corrected by the median): an honest writer is
//!   within `max_offset` of the median and this node's estimate is too. So no writer drags the
//!   clocks of the network further than that, whatever its own clock says: the bounded drift of
//!   Kulkarni et al.'s hybrid logical clocks. A record ahead of the horizon still counts (it was
//!   acknowledged to its writer: a write is never lost to a clock); causality, not its clock,
//!   decides what replaces it (see `record.rs`).
//! - A record more than [`MAX_AHEAD_MS`] ahead of the network's time (iroh-docs' bound) is
//!   refused, counted and logged: no honest clock is that far off. It is not lost: anti-entropy
//!   offers it again, and it counts once it is no longer that far ahead.
//!
//! A slow node judges by the network's time, not by its own clock, so it is never deaf to
//! honest writers.
//!
//! The `uhlc` crate was considered: its clock is a plain `fn` pointer (no per-node skew in one
//! process) and its timestamps are NTP64 with a 128-bit id, not the records' 48+16-bit values.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;

/// Default bound on a node's clock offset from its peers' median: 500 ms, CockroachDB's
/// default `--max-offset`. NTP keeps servers within a few milliseconds of each other, so an
/// offset of half a second means a broken clock, not jitter; and a smaller bound would be
/// within the error of one exchange over a slow WAN path (half its round trip).
pub const DEFAULT_MAX_OFFSET_MS: u64 = 500;
/// Records further ahead of the network's time than this (10 minutes, as iroh-docs) are
/// refused until they are not.
pub const MAX_AHEAD_MS: u64 = 10 * 60 * 1000;
/// How often each peer's offset is measured again.
pub const MEASURE_EVERY: Duration = Duration::from_secs(60);
/// A measurement older than this no longer counts (the peer may have fixed its clock).
const STALE_AFTER: Duration = Duration::from_secs(600);
/// Most peers whose offsets are kept.
const MAX_PEERS: usize = 1024;

/// A source of wall-clock time in milliseconds since the Unix epoch. Cloning shares it.
#[derive(Clone)]
pub struct Wall(Arc<dyn Fn() -> u64 + Send + Sync>);

impl Wall {
    /// The system clock.
    pub fn system() -> Wall {
        Wall(Arc::new(system_ms))
    }

    /// The system clock moved by `skew_ms` (positive: ahead), for tests of skewed nodes.
    pub fn skewed(skew_ms: i64) -> Wall {
        Wall(Arc::new(move || system_ms().saturating_add_signed(skew_ms)))
    }

    /// Any function of time.
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Wall {
        Wall(Arc::new(f))
    }

    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

impl Default for Wall {
    fn default() -> Wall {
        Wall::system()
    }
}

impl std::fmt::Debug for Wall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wall({} ms)", self.now_ms())
    }
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The physical part (milliseconds) of a hybrid logical clock value.
pub fn physical_ms(time: u64) -> u64 {
    time >> 16
}

/// A hybrid logical clock: never goes backwards, stays close to wall time, and moves past every
/// clock value it observes.
#[derive(Debug)]
pub struct Hlc {
    wall: Wall,
    last: Mutex<u64>,
}

impl Hlc {
    /// A clock reading `wall` that continues after `last` (the largest value issued or seen
    /// before a restart).
    pub fn new(wall: Wall, last: u64) -> Hlc {
        Hlc {
            wall,
            last: Mutex::new(last),
        }
    }

    /// The next clock value, larger than every value issued or observed so far.
    pub fn tick(&self) -> u64 {
        let mut last = self.last.lock().expect("clock lock");
        *last = (self.wall.now_ms() << 16).max(*last + 1);
        *last
    }

    /// Moves the clock past a value seen in a record (which was checked not to be far ahead).
    pub fn observe(&self, time: u64) {
        let mut last = self.last.lock().expect("clock lock");
        *last = (*last).max(time);
    }

    /// The largest value issued or observed.
    pub fn last(&self) -> u64 {
        *self.last.lock().expect("clock lock")
    }
}

/// One peer's measured offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offset {
    /// The peer's clock minus this node's, in milliseconds.
    pub ms: i64,
    /// The round trip of the exchange that measured it (the offset's error is at most half).
    pub rtt_ms: u64,
}

/// Why a local write is refused: this node's clock is too far from its peers'.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this node's clock is {} its peers' (the median of {peers} peers' clocks); writes are refused while it is off by more than {max_ms} ms (--max-clock-offset): fix the system clock (NTP)", describe(*offset_ms))]
pub struct ClockOff {
    /// The network's opinion of this node's clock: peers' median minus this node's, negated
    /// (positive: this node is ahead).
    pub offset_ms: i64,
    pub max_ms: u64,
    pub peers: usize,
}

/// "4 min 0 s ahead of" / "2.5 s behind".
fn describe(ahead_ms: i64) -> String {
    let abs = ahead_ms.unsigned_abs();
    let amount = if abs >= 60_000 {
        let secs = (abs + 500) / 1000;
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{:.1} s", abs as f64 / 1000.0)
    };
    let dir = if ahead_ms >= 0 { "ahead of" } else { "behind" };
    format!("{amount} {dir}")
}

/// The network's time as this node sees it: its wall clock, the offsets it measured to its
/// peers and their median. Shared by the store (which judges records and refuses local
/// writes) and replication (which measures).
#[derive(Debug)]
pub struct NetworkTime {
    wall: Wall,
    max_offset_ms: u64,
    /// Per peer: its offset, when it was measured, and whether it counts for the median.
    peers: Mutex<HashMap<PeerId, (Offset, Instant, bool)>>,
    /// The network's opinion of this clock, in milliseconds to add to the wall clock to get
    /// the network's time: the median of the offsets (own zero included) when a majority of
    /// the members agree with it (see [`NetworkTime::recompute`]), else zero.
    median: AtomicI64,
    /// How many members the network has (this node included), as membership last said: the
    /// majority that must agree before this node takes the peers' word over its own clock.
    members: AtomicUsize,
    /// The peers' median when it was not adopted (no majority agrees with it) and is more
    /// than `max_offset` from this clock; 0 otherwise.
    disputed: AtomicI64,
}

impl NetworkTime {
    pub fn new(wall: Wall, max_offset_ms: u64) -> NetworkTime {
        NetworkTime {
            wall,
            max_offset_ms,
            peers: Mutex::new(HashMap::new()),
            median: AtomicI64::new(0),
            members: AtomicUsize::new(0),
            disputed: AtomicI64::new(0),
        }
    }

    pub fn wall(&self) -> &Wall {
        &self.wall
    }

    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// Records a measurement: at local `sent` and `received` (ms), the peer said its clock read
    /// `theirs`. The offset assumes the answer was made halfway through the round trip. Only
    /// peers that `count` (members of the network) enter the median.
    pub fn measured(
        &self,
        peer: PeerId,
        sent: u64,
        theirs: u64,
        received: u64,
        count: bool,
    ) -> Offset {
        let rtt_ms = received.saturating_sub(sent);
        let midpoint = sent as i128 + (rtt_ms / 2) as i128;
        let ms = (theirs as i128 - midpoint).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        let offset = Offset { ms, rtt_ms };
        let mut peers = self.peers.lock().expect("offsets lock");
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            return offset;
        }
        peers.insert(peer, (offset, Instant::now(), count));
        self.recompute(&mut peers);
        offset
    }

    /// Forgets a peer (disconnected).
    pub fn forget(&self, peer: &PeerId) {
        let mut peers = self.peers.lock().expect("offsets lock");
        if peers.remove(peer).is_some() {
            self.recompute(&mut peers);
        }
    }

    /// Sets the number of the network's members (this node included): the peers' median
    /// moves this node's idea of time only when more than half of them agree with it.
    pub fn set_members(&self, members: usize) {
        if self.members.swap(members, Ordering::Relaxed) != members {
            let mut peers = self.peers.lock().expect("offsets lock");
            self.recompute(&mut peers);
        }
    }

    /// The median of the members' offsets (own zero included) counts only when a majority of
    /// the network's members (of those known, or of those measured if more) are within
    /// `max_offset` of it: a minority of members, whatever their clocks say, can neither make
    /// this node refuse its writes nor move its idea of the network's time.
    fn recompute(&self, peers: &mut HashMap<PeerId, (Offset, Instant, bool)>) {
        peers.retain(|_, (_, at, _)| at.elapsed() < STALE_AFTER);
        let mut all: Vec<i64> = peers
            .values()
            .filter(|(_, _, count)| *count)
            .map(|(o, _, _)| o.ms)
            .collect();
        all.push(0);
        let m = median(&mut all);
        let agree = all
            .iter()
            .filter(|o| o.abs_diff(m) <= self.max_offset_ms)
            .count();
        let members = self.members.load(Ordering::Relaxed).max(all.len());
        let adopted = if agree > members / 2 { m } else { 0 };
        self.median.store(adopted, Ordering::Relaxed);
        let disputed = if adopted == 0 && m.unsigned_abs() > self.max_offset_ms {
            m
        } else {
            0
        };
        self.disputed.store(disputed, Ordering::Relaxed);
    }

    /// Each peer's last measured offset.
    pub fn offsets(&self) -> HashMap<PeerId, Offset> {
        let peers = self.peers.lock().expect("offsets lock");
        peers.iter().map(|(p, (o, _, _))| (*p, *o)).collect()
    }

    pub fn offset_of(&self, peer: &PeerId) -> Option<Offset> {
        let peers = self.peers.lock().expect("offsets lock");
        peers.get(peer).map(|(o, _, _)| *o)
    }

    /// When the members measured disagree with this clock by more than `max_offset` but are
    /// not a majority of the network's members: their median (this node keeps its own clock).
    pub fn disputed_ms(&self) -> Option<i64> {
        match self.disputed.load(Ordering::Relaxed) {
            0 => None,
            d => Some(d),
        }
    }

    /// The median of the measured offsets, own zero included (ms to add to this clock).
    pub fn median_offset_ms(&self) -> i64 {
        self.median.load(Ordering::Relaxed)
    }

    /// The network's time: this node's clock corrected by the median offset.
    pub fn now_ms(&self) -> u64 {
        self.wall
            .now_ms()
            .saturating_add_signed(self.median_offset_ms())
    }

    /// The furthest (physical ms) the hybrid clock follows a record from elsewhere:
    /// `2 × max_offset` past the network's time, and never further past this node's own
    /// clock, whatever its peers say.
    pub fn horizon_ms(&self) -> u64 {
        self.now_ms()
            .min(self.wall.now_ms())
            .saturating_add(self.max_offset_ms.saturating_mul(2))
    }

    /// The latest physical time (ms) a record from elsewhere may carry to count now.
    pub fn accept_limit_ms(&self) -> u64 {
        self.now_ms().saturating_add(MAX_AHEAD_MS)
    }

    /// Whether this node may write: its clock is within `max_offset` of the peers' median.
    pub fn check_local(&self) -> Result<(), ClockOff> {
        // Measurements that went stale (peers that stopped answering) no longer count.
        {
            let mut peers = self.peers.lock().expect("offsets lock");
            if peers.values().any(|(_, at, _)| at.elapsed() >= STALE_AFTER) {
                self.recompute(&mut peers);
            }
        }
        let median = self.median_offset_ms();
        if median.unsigned_abs() <= self.max_offset_ms {
            return Ok(());
        }
        Err(ClockOff {
            offset_ms: -median,
            max_ms: self.max_offset_ms,
            peers: self
                .peers
                .lock()
                .expect("offsets lock")
                .values()
                .filter(|(_, _, count)| *count)
                .count(),
        })
    }
}

impl Default for NetworkTime {
    fn default() -> NetworkTime {
        NetworkTime::new(Wall::system(), DEFAULT_MAX_OFFSET_MS)
    }
}

/// The median of `values` (not empty). Of an even count's two middle values, the one nearer
/// zero: with two nodes that disagree, neither is judged wrong by the other alone.
fn median(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    let n = values.len();
    if n % 2 == 1 {
        return values[n / 2];
    }
    let (a, b) = (values[n / 2 - 1], values[n / 2]);
    if a.unsigned_abs() <= b.unsigned_abs() {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_moves_past_observed_values() {
        let c = Hlc::new(Wall::system(), 0);
        let a = c.tick();
        let b = c.tick();
        assert!(b > a);
        c.observe(b + 1000);
        assert!(c.tick() > b + 1000);
    }

    #[test]
    fn the_median_includes_this_node_and_prefers_zero_on_ties() {
        assert_eq!(median(&mut [0, 240_000]), 0);
        assert_eq!(median(&mut [0, -240_000, -240_000, -240_000]), -240_000);
        assert_eq!(median(&mut [0, 5, 9]), 5);
        assert_eq!(median(&mut [0]), 0);
    }

    #[test]
    fn a_fast_node_refuses_writes_and_a_slow_one_judges_by_the_network() {
        // This node is 4 minutes fast: its three peers read 4 minutes less.
        let fast = NetworkTime::new(Wall::skewed(240_000), 500);
        for _ in 0..3 {
            let now = fast.wall.now_ms();
            fast.measured(PeerId::random(), now, now - 240_000, now + 2, true);
        }
        let err = fast.check_local().unwrap_err();
        assert!((err.offset_ms - 240_000).abs() < 10, "{err:?}");
        assert!(err.to_string().contains("4 min 0 s ahead of"), "{err}");

        // This node is 2 minutes slow: it accepts what is 1 s ahead of the real time.
        let slow = NetworkTime::new(Wall::skewed(-120_000), 500);
        for _ in 0..3 {
            let now = slow.wall.now_ms();
            slow.measured(PeerId::random(), now, now + 120_000, now, true);
        }
        assert!(slow.check_local().is_err());
        let real = system_ms();
        assert!(slow.accept_limit_ms() >= real + MAX_AHEAD_MS - 100);
        assert!(slow.accept_limit_ms() <= real + MAX_AHEAD_MS + 100);
        // Its hybrid clock follows records only up to its own clock's horizon.
        let own = slow.wall.now_ms();
        assert!(slow.horizon_ms() >= own + 900 && slow.horizon_ms() <= own + 1100);

        // Strangers do not vote.
        let fine = NetworkTime::new(Wall::system(), 500);
        for _ in 0..5 {
            let now = fine.wall.now_ms();
            fine.measured(PeerId::random(), now, now + 3_600_000, now, false);
        }
        assert!(fine.check_local().is_ok());
        assert_eq!(fine.offsets().len(), 5);

        // Two members of five whose clocks are an hour ahead: this node's clock stands.
        let honest = NetworkTime::new(Wall::system(), 500);
        honest.set_members(5);
        for _ in 0..2 {
            let now = honest.wall.now_ms();
            honest.measured(PeerId::random(), now, now + 3_600_000, now, true);
        }
        assert!(honest.check_local().is_ok());
        assert_eq!(honest.median_offset_ms(), 0);
        assert!(honest.disputed_ms().is_some_and(|d| d > 3_500_000));
        let real = system_ms();
        assert!(honest.accept_limit_ms() <= real + MAX_AHEAD_MS + 100);
        assert!(honest.horizon_ms() <= real + 1100);
        // A third one makes a majority: then this node's clock is the one that is off.
        let now = honest.wall.now_ms();
        honest.measured(PeerId::random(), now, now + 3_600_000, now, true);
        assert!(honest.check_local().is_err());
        // Of two members, neither judges the other alone.
        let pair = NetworkTime::new(Wall::system(), 500);
        pair.set_members(2);
        let now = pair.wall.now_ms();
        pair.measured(PeerId::random(), now, now + 3_600_000, now, true);
        assert!(pair.check_local().is_ok());

        // Alone, a node always writes.
        assert!(NetworkTime::new(Wall::skewed(999_999), 500)
            .check_local()
            .is_ok());
    }
}
