//! Rate limits for log lines that a peer can trigger over and over: at most one line per
//! period (per limiter, or per reason with [`KeyedLogLimit`]), and the line that is let through
//! says how many similar ones were suppressed since the last one.
//!
//! ```
//! use std::time::Duration;
//! use dfs::log_limit::LogLimit;
//!
//! static REFUSED: LogLimit = LogLimit::new(Duration::from_secs(10));
//! if let Some(suppressed) = REFUSED.check() {
//!     tracing::info!(suppressed, "refused a record");
//! }
//! ```

use std::collections::HashMap;

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::subscriber::Interest;
use tracing::Metadata;

/// libp2p's own log lines below `ERROR` (a peer can trigger them at will: "Dropping inbound
/// stream because we are at capacity" once per stream of a flood): at most one per call site
/// per [`LIBP2P_PERIOD`].
static LIBP2P: KeyedLogLimit = KeyedLogLimit::new(LIBP2P_PERIOD);
/// The period of [`LIBP2P`].
pub const LIBP2P_PERIOD: Duration = Duration::from_secs(10);

fn from_libp2p(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("libp2p") && *meta.level() > tracing::Level::ERROR
}

/// A per-layer filter for the node's log: it lets through at most one line per
/// [`LIBP2P_PERIOD`] from each call site of libp2p's below `ERROR`, and everything else.
pub fn libp2p_lines<S>() -> impl tracing_subscriber::layer::Filter<S> {
    tracing_subscriber::filter::dynamic_filter_fn(|meta: &Metadata<'_>, _cx: &_| {
        !from_libp2p(meta) || LIBP2P.check(meta.name()).is_some()
    })
    .with_callsite_filter(|meta| {
        if from_libp2p(meta) {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    })
}

/// One line per period; usable in a `static`.
#[derive(Debug)]
pub struct LogLimit {
    period: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl State {
    fn check(&mut self, period: Duration, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

impl LogLimit {
    pub const fn new(period: Duration) -> LogLimit {
        LogLimit {
            period,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being the lines suppressed since the last
    /// one; `None` when this one is to be suppressed (it is counted).
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    /// [`Self::check`] at a given time (for tests).
    pub fn check_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.check(self.period, now)
    }
}

/// One line per period and per reason (a short static string such as `"dial-failed"`). The
/// number of reasons is bounded by the code that names them, so memory is too.
#[derive(Debug)]
pub struct KeyedLogLimit {
    period: Duration,
    states: Mutex<Option<HashMap<&'static str, State>>>,
}

impl KeyedLogLimit {
    pub const fn new(period: Duration) -> KeyedLogLimit {
        KeyedLogLimit {
            period,
            states: Mutex::new(None),
        }
    }

    /// As [`LogLimit::check`], counted separately for each `reason`.
    pub fn check(&self, reason: &'static str) -> Option<u64> {
        self.check_at(reason, Instant::now())
    }

    /// [`Self::check`] at a given time (for tests).
    pub fn check_at(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states
            .get_or_insert_with(HashMap::new)
            .entry(reason)
            .or_default()
            .check(self.period, now)
    }
}

/// Up to `lines` lines per period, then silence until the period ends; the first line of the
/// next period says how many were suppressed. For events that are normal one by one (a peer
/// connects) but that a peer could repeat as fast as it likes.
#[derive(Debug)]
pub struct BurstLogLimit {
    lines: u32,
    period: Duration,
    state: Mutex<Burst>,
}

#[derive(Debug, Default)]
struct Burst {
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl BurstLogLimit {
    pub const fn new(lines: u32, period: Duration) -> BurstLogLimit {
        BurstLogLimit {
            lines,
            period,
            state: Mutex::new(Burst {
                start: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// As [`LogLimit::check`].
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    /// [`Self::check`] at a given time (for tests).
    pub fn check_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.start
            .is_none_or(|t| now.saturating_duration_since(t) >= self.period)
        {
            s.start = Some(now);
            s.used = 0;
        }
        if s.used >= self.lines {
            s.suppressed += 1;
            return None;
        }
        s.used += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_of_the_rest() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.check_at(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(limit.check_at(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(limit.check_at(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(limit.check_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(limit.check_at(t0 + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn reasons_are_limited_separately() {
        let limit = KeyedLogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.check_at("a", t0), Some(0));
        assert_eq!(limit.check_at("b", t0), Some(0));
        assert_eq!(limit.check_at("a", t0), None);
        assert_eq!(limit.check_at("a", t0 + Duration::from_secs(10)), Some(1));
        assert_eq!(limit.check_at("b", t0 + Duration::from_secs(10)), Some(0));
    }

    #[test]
    fn a_burst_then_silence_until_the_next_period() {
        let limit = BurstLogLimit::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.check_at(t0), Some(0));
        }
        assert_eq!(limit.check_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.check_at(t0 + Duration::from_secs(2)), None);
        assert_eq!(limit.check_at(t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(limit.check_at(t0 + Duration::from_secs(61)), Some(0));
    }

    #[test]
    fn a_static_limit_works() {
        static LIMIT: LogLimit = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(LIMIT.check(), Some(0));
        assert_eq!(LIMIT.check(), None);
    }
}
