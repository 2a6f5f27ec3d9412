//! Admission: what this node lets into its store and forwards. Records must verify (signed by
//! their author) and count under the network's membership (`crate::trust`); grants must verify
//! and come from an issuer who may grant. Every refusal is counted by reason and logged at info,
//! at most once per [`LOG_EVERY`] per reason, with the number of refusals in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::net::Gate;
use crate::record::Record;
use crate::trust::{Grant, Members};

/// Least time between two log lines about refusals of one reason.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a record or grant was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The signature does not verify, or the record is malformed.
    Invalid,
    /// The author may not write (a stranger, a reader, or a revoked writer's later record).
    NotAWriter,
    /// The author signed another record under the same sequence number.
    SeqReused,
    /// The grant's issuer may not grant it, or it does not verify.
    Grant,
    /// The record's clock is too far ahead of the network's time (it counts once it is not).
    Ahead,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::Invalid,
        Refusal::NotAWriter,
        Refusal::SeqReused,
        Refusal::Grant,
        Refusal::Ahead,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn describe(self) -> &'static str {
        match self {
            Refusal::Invalid => "a record that is invalid or does not verify",
            Refusal::NotAWriter => "a record by a peer without write access",
            Refusal::SeqReused => "a record reusing its author's sequence number",
            Refusal::Grant => "a grant its issuer may not make",
            Refusal::Ahead => {
                "a record whose clock is more than 10 minutes ahead of the network's time (it counts once it is not)"
            }
        }
    }
}

/// Counters of refusals, and the rate limit of their log lines.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; 5],
    /// Per reason: when the last line was logged and the count it showed.
    logged: Mutex<[(Option<Instant>, u64); 5]>,
}

impl Refusals {
    /// Counts one refusal and logs it unless a line about the same reason was logged less than
    /// [`LOG_EVERY`] ago.
    pub fn refuse(&self, why: Refusal, author: &[u8], key: Option<&str>) {
        let Some((since, total)) = self.tally(why) else {
            return;
        };
        let author = libp2p::PeerId::from_bytes(author)
            .map(|p| p.to_string())
            .unwrap_or_else(|_| "(not a peer id)".into());
        tracing::info!(
            %author,
            key = %key.map_or("-".into(), crate::record::printable),
            suppressed = since,
            total,
            "refused: {}",
            why.describe()
        );
    }

    /// Counts a record message from `peer` (the forwarder) that does not decode, validate or
    /// verify, and logs it like [`Refusals::refuse`].
    pub fn refuse_message(&self, peer: &libp2p::PeerId, detail: &str) {
        if let Some((since, total)) = self.tally(Refusal::Invalid) {
            tracing::info!(
                %peer,
                detail,
                suppressed = since,
                total,
                "refused: {} (from gossip)",
                Refusal::Invalid.describe()
            );
        }
    }

    /// Counts one refusal; `Some((suppressed since the last line, total))` when a line is due.
    fn tally(&self, why: Refusal) -> Option<(u64, u64)> {
        let i = why.index();
        let total = self.counts[i].fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = self.logged.lock().expect("refusal log");
        let (last, shown) = &mut logged[i];
        if last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return None;
        }
        let since = total - *shown - 1;
        *last = Some(Instant::now());
        *shown = total;
        Some((since, total))
    }

    /// How many of each reason were refused since start.
    pub fn count(&self, why: Refusal) -> u64 {
        self.counts[why.index()].load(Ordering::Relaxed)
    }

    /// Every refusal since start.
    pub fn total(&self) -> u64 {
        Refusal::ALL.iter().map(|r| self.count(*r)).sum()
    }
}

/// The gate the network task asks before it forwards gossip.
pub(crate) struct TrustGate {
    pub members: Members,
    pub refusals: std::sync::Arc<Refusals>,
}

impl Gate for TrustGate {
    fn admits_record(&self, record: &Record) -> bool {
        let ok = self.members.admits(record);
        if !ok {
            self.refusals
                .refuse(Refusal::NotAWriter, &record.author, Some(&record.key));
        }
        ok
    }

    fn invalid_record(&self, source: &libp2p::PeerId, why: &str) {
        self.refusals.refuse_message(source, why);
    }

    fn admits_grant(&self, grant: &Grant) -> bool {
        match self.members.check(grant) {
            Ok(_) => true,
            Err(_) => {
                self.refusals.refuse(Refusal::Grant, &grant.issuer, None);
                false
            }
        }
    }
}

/// Records below this many are checked on the calling thread; larger batches are split over
/// the machine's cores (signature checks dominate the cost of merging records in bulk).
const PARALLEL_CHECK_MIN: usize = 256;

/// Checks every record by itself ([`Record::check`]: rules and signature), spreading large
/// batches over scoped threads. Returns each record with whether it passed, in order.
pub(crate) fn check_all(records: Vec<Record>) -> Vec<(Record, bool)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if records.len() < PARALLEL_CHECK_MIN || threads < 2 {
        let oks = check_part(&records);
        return records.into_iter().zip(oks).collect();
    }
    let per_thread = records.len().div_ceil(threads);
    let oks: Vec<bool> = std::thread::scope(|s| {
        let parts: Vec<_> = records
            .chunks(per_thread)
            .map(|part| s.spawn(move || check_part(part)))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("a signature check does not panic"))
            .collect()
    });
    records.into_iter().zip(oks).collect()
}

/// Checks records one after the other, decoding each author's key once (decoding it, a point
/// decompression, costs a fifth of a signature check).
fn check_part(records: &[Record]) -> Vec<bool> {
    let mut keys: std::collections::HashMap<&[u8], Option<libp2p::identity::PublicKey>> =
        std::collections::HashMap::new();
    records
        .iter()
        .map(|r| {
            match keys
                .entry(&r.author)
                .or_insert_with(|| crate::record::author_key(&r.author))
            {
                Some(key) => r.check_with(key).is_ok(),
                None => r.check().is_ok(),
            }
        })
        .collect()
}
