//! Repair under partial replication (a network with `R` copies): a pass over the live records
//! that fetches what is placed here and missing (a new placement after a member left for longer
//! than `--repair-after`, a copy that failed its hash), drops the copies this node holds but is
//! not placed to hold once `R` placed members say they hold and keep them (a returning node, a
//! writer's own puts handed off, reads beyond the cache), and counts the files short of copies.
//!
//! A pass runs when the members that are up change, when the settings are learnt, and every
//! `repair_interval`. With `all` it does nothing: every node wants everything.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use libp2p::PeerId;

use super::ask::ASK_TIMEOUT;
use super::Replication;
use crate::placement::Replicas;
use crate::protocols::fetch;
use crate::record::{ContentId, Record};

/// Most copies dropped in one pass (each costs a few `has` requests).
const MAX_DROPS_PER_PASS: usize = 256;
/// Files placed here and held whose other placed members one pass audits (proofs of
/// possession), picked at random; passes audit at most once per [`AUDIT_EVERY`].
const AUDITS_PER_PASS: usize = 16;
const AUDIT_EVERY: Duration = Duration::from_secs(60);
/// Most waiting transfers of content placed here that one pass checks for a holder.
const MAX_STALLED_PER_PASS: usize = 64;
/// `has` requests in flight at once during a pass.
const ASKS_IN_FLIGHT: usize = 16;
/// How long a placed peer has to answer a proof of possession (it reads a few MiB).
const PROVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed proofs are logged at most once per period (a member can fail many at once).
static PROOF_LOG: crate::log_limit::KeyedLogLimit =
    crate::log_limit::KeyedLogLimit::new(Duration::from_secs(10));
/// How often the pass checks whether the members that are up changed.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// What the scan of one pass keeps: the content placed here and missing, the content held
/// but not placed here (with its size and placement), and the count of files short of copies.
#[derive(Default)]
struct Scan {
    missing: Vec<(Record, Vec<PeerId>)>,
    unplaced_held: Vec<(ContentId, u64)>,
    placed_of: HashMap<ContentId, Vec<PeerId>>,
    under_replicated: usize,
    /// A random sample of the files placed here and held, with their placed members, whose
    /// other holders this pass audits; and how many such files there were.
    audit: Vec<(ContentId, Vec<PeerId>)>,
    placed_held: usize,
}

/// What one pass found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairReport {
    /// Transfers started for content placed here and missing.
    pub fetching: usize,
    /// Copies dropped.
    pub dropped: usize,
    /// Files short of copies (see `metrics::Metrics::under_replicated`).
    pub under_replicated: usize,
}

impl Replication {
    /// Asks for a repair pass as soon as possible.
    pub(crate) fn repair_soon(&self) {
        self.repair_wake.notify_one();
    }

    /// Runs repair passes until shutdown (see the module's documentation).
    pub(crate) async fn repair_loop(self) {
        let mut last: Option<Vec<PeerId>> = None;
        let mut next = tokio::time::Instant::now() + self.config.repair_interval;
        let mut watch = tokio::time::interval(WATCH_EVERY);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let woken = tokio::select! {
                _ = self.repair_wake.notified() => true,
                _ = watch.tick() => false,
            };
            if self.policy.replicas() == Replicas::All {
                continue;
            }
            let up: Vec<PeerId> = self.policy.candidates().iter().map(|c| c.peer).collect();
            let changed = last.as_ref() != Some(&up);
            if !(woken || changed || tokio::time::Instant::now() >= next) {
                continue;
            }
            if changed && last.is_some() {
                tracing::info!(
                    members_up = up.len(),
                    "the members that are up changed: placing files again"
                );
            }
            last = Some(up);
            next = tokio::time::Instant::now() + self.config.repair_interval;
            let audit = self.audits_due();
            match self.repair_pass(audit).await {
                Ok(report) if report.fetching + report.dropped > 0 => {
                    tracing::info!(
                        fetching = report.fetching,
                        dropped = report.dropped,
                        under_replicated = report.under_replicated,
                        "repair pass"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "repair pass failed"),
            }
        }
    }

    /// Whether a pass now also audits (at most once per [`AUDIT_EVERY`], however often passes
    /// run).
    fn audits_due(&self) -> bool {
        let mut last = self.audited.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < AUDIT_EVERY) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }

    /// One pass: fetch what is placed here and missing, drop the extra copies that enough
    /// placed members hold, count the files short of copies; with `audit`, also audit the
    /// other placed holders of a sample of what is held here.
    pub async fn repair_pass(&self, audit: bool) -> Result<RepairReport, super::MergeError> {
        let mut report = RepairReport::default();
        let Replicas::Count(r) = self.policy.replicas() else {
            return Ok(report);
        };
        // One pass over the heads, decoded one at a time on a blocking thread: only what needs
        // acting on is kept (a million records placed elsewhere are not listed).
        let policy = self.policy.clone();
        let me = self.policy.me();
        let scan = self
            .blocking(move |s| -> Result<Scan, crate::store::StoreError> {
                let mut scan = Scan::default();
                let mut done = std::collections::HashSet::new();
                s.each_live(|record, complete| {
                    let Some(cid) = record.cid else { return };
                    if !done.insert(cid) {
                        return;
                    }
                    let placed = policy.placed(&cid);
                    if placed.len() < r as usize {
                        scan.under_replicated += 1;
                    }
                    match (placed.contains(&me), complete) {
                        (true, false) => {
                            scan.under_replicated += 1;
                            scan.missing.push((record, placed));
                        }
                        (true, true) if placed.len() > 1 => {
                            // Reservoir sampling: each such file as likely as any other.
                            scan.placed_held += 1;
                            if scan.audit.len() < AUDITS_PER_PASS {
                                scan.audit.push((cid, placed));
                            } else {
                                let j = rand::Rng::gen_range(
                                    &mut rand::thread_rng(),
                                    0..scan.placed_held,
                                );
                                if j < AUDITS_PER_PASS {
                                    scan.audit[j] = (cid, placed);
                                }
                            }
                        }
                        (false, true) => {
                            scan.unplaced_held.push((cid, record.size));
                            scan.placed_of.insert(cid, placed);
                        }
                        _ => {}
                    }
                })?;
                Ok(scan)
            })
            .await??;
        report.under_replicated = scan.under_replicated;
        let mut placed_live = scan.placed_of;
        // Placed here, missing, and waiting for a back-off after failed attempts.
        let mut stalled: Vec<(Record, Vec<PeerId>)> = Vec::new();
        for (record, placed) in scan.missing {
            let Some(cid) = record.cid else { continue };
            if self.transfers.waiting(&cid) {
                stalled.push((record, placed));
            } else {
                self.fetch_placed(record, &placed);
                report.fetching += 1;
            }
        }
        // A placed member that holds what waits here ends the wait: the earlier attempts failed
        // for want of a holder (or of a connection), and there is one now.
        let retries =
            stalled
                .into_iter()
                .take(MAX_STALLED_PER_PASS)
                .map(|(record, placed)| async move {
                    let cid = record.cid?;
                    let holder = self.holder_among(cid, &placed).await?;
                    self.transfers.retry_now(cid, holder);
                    self.fetch_placed(record, &placed);
                    Some(())
                });
        report.fetching += futures::stream::iter(retries)
            .buffer_unordered(ASKS_IN_FLIGHT / 4)
            .filter(|r| futures::future::ready(r.is_some()))
            .count()
            .await;
        let extra = self.policy.extra(scan.unplaced_held);
        let asks = extra
            .into_iter()
            .take(MAX_DROPS_PER_PASS)
            .filter_map(|cid| {
                let placed = placed_live.remove(&cid)?;
                Some(async move {
                    let needed = (r as usize).min(placed.len());
                    if needed == 0 {
                        return None;
                    }
                    let proven = self.proven_keepers(cid, &placed).await;
                    Some((cid, proven >= needed))
                })
            });
        let answers: Vec<(ContentId, bool)> = futures::stream::iter(asks)
            .buffer_unordered(ASKS_IN_FLIGHT / 4)
            .filter_map(|c| async move { c })
            .collect()
            .await;
        // A file whose placed members do not prove enough copies is short of them, whatever
        // they say: this node keeps its copy.
        report.under_replicated += answers.iter().filter(|(_, enough)| !enough).count();
        let droppable = answers
            .into_iter()
            .filter_map(|(cid, enough)| enough.then_some(cid));
        for cid in droppable {
            // Checked again: a read may have cached it, or the placement changed meanwhile.
            if self.policy.placed_here(&cid) {
                continue;
            }
            match self.blocking(move |s| s.evict(&cid)).await? {
                Ok(true) => {
                    self.policy.uncache(&cid);
                    if let Err(e) = self.network.unprovide(cid).await {
                        tracing::debug!(%cid, error = %e, "cannot withdraw a provider record");
                    }
                    report.dropped += 1;
                    self.config.metrics.dropped_copies.inc();
                    tracing::debug!(%cid, "dropped a copy that enough placed members hold");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(%cid, error = %e, "cannot drop a copy"),
            }
        }
        // Audits: the other members placed to hold a sample of what this node holds prove they
        // do; a file short of proven copies counts as under-replicated.
        let sample = if audit { scan.audit } else { Vec::new() };
        let audits = sample.into_iter().map(|(cid, placed)| async move {
            let needed = (r as usize).min(placed.len()).saturating_sub(1);
            (self.proven_keepers(cid, &placed).await < needed) as usize
        });
        report.under_replicated += futures::stream::iter(audits)
            .buffer_unordered(ASKS_IN_FLIGHT / 4)
            .fold(0, |n, short| futures::future::ready(n + short))
            .await;
        self.config
            .metrics
            .under_replicated
            .set(report.under_replicated as i64);
        self.config
            .metrics
            .cached_bytes
            .set(self.policy.cached_bytes() as i64);
        self.repairs.fetch_add(1, Ordering::Relaxed);
        Ok(report)
    }

    /// Fetches `record`'s content, placed here, from the other placed members first.
    fn fetch_placed(&self, record: Record, placed: &[PeerId]) {
        let me = self.policy.me();
        let sources: Vec<PeerId> = placed.iter().copied().filter(|p| *p != me).collect();
        self.transfers.enqueue(record, sources);
    }

    /// How many of `placed` (other than this node) hold the whole content of `cid` and keep
    /// it, proven: each that says so (`has`) is challenged to prove it holds the bytes
    /// (`prove`, see `audit.rs`); no answer, or a wrong one, counts as no. This node holds the
    /// content (it computes the expected answers from its own copy).
    async fn proven_keepers(&self, cid: ContentId, placed: &[PeerId]) -> usize {
        let me = self.policy.me();
        let list = match self.blocking(move |s| s.chunk_list(&cid)).await {
            Ok(Ok(Some(list))) => std::sync::Arc::new(list),
            _ => return 0,
        };
        futures::stream::iter(placed.iter().copied().filter(|p| *p != me))
            .map(|peer| {
                let list = list.clone();
                async move { self.prove(peer, cid, &list).await }
            })
            .buffer_unordered(ASKS_IN_FLIGHT)
            .filter(|kept| futures::future::ready(*kept))
            .count()
            .await
    }

    /// Whether `peer` says it keeps `cid` (whose chunk list is `list`) and proves it holds it.
    async fn prove(&self, peer: PeerId, cid: ContentId, list: &[crate::record::Hash]) -> bool {
        let ask = self.network.fetch(peer, fetch::Request::Has { cid });
        let claims = matches!(
            tokio::time::timeout(ASK_TIMEOUT, ask).await,
            Ok(Ok(fetch::Response::Has {
                complete: true,
                keeps: Some(true),
            }))
        );
        claims && self.challenge(peer, cid, list, PROVE_TIMEOUT, false).await
    }

    /// Challenges `peer`, which claims to hold the whole content of `cid` (whose chunk list,
    /// held here, is `list`), to prove it: true if its proof matches this node's copy. A wrong,
    /// refused or missing proof is tallied, counted and logged (see `audit.rs`). With `cached`,
    /// a proof that passed less than a minute ago stands (for `dfs stat` and `put --wait`,
    /// which ask again and again; never for a decision to drop a copy, or for an audit).
    pub(crate) async fn challenge(
        &self,
        peer: PeerId,
        cid: ContentId,
        list: &[crate::record::Hash],
        timeout: Duration,
        cached: bool,
    ) -> bool {
        if list.is_empty() {
            return true; // empty content: there are no bytes to hold
        }
        if cached && self.audit.recently_proven(&peer, &cid) {
            return true;
        }
        // From now on this node does not serve these chunks to the claimant.
        let challenge = self.audit.claimed(peer, list);
        let hashes: Vec<crate::record::Hash> = challenge
            .indices
            .iter()
            .map(|&i| list[i as usize])
            .collect();
        let nonce = challenge.nonce;
        let expected = self
            .blocking(
                move |s| -> Result<crate::record::Hash, crate::store::StoreError> {
                    let mut chunks = Vec::with_capacity(hashes.len());
                    for h in &hashes {
                        chunks.push(
                            s.read_chunk(h)?
                                .ok_or(crate::store::StoreError::BadChunk(*h))?,
                        );
                    }
                    Ok(fetch::proof_of(
                        &nonce,
                        &peer.to_bytes(),
                        chunks.iter().map(Vec::as_slice),
                    ))
                },
            )
            .await;
        let Ok(Ok(expected)) = expected else {
            // This node cannot read its own copy: it proves nothing and drops nothing.
            return false;
        };
        let ask = self.network.fetch(
            peer,
            fetch::Request::Prove {
                cid,
                nonce,
                chunks: challenge.indices,
            },
        );
        let passed = matches!(
            tokio::time::timeout(timeout, ask).await,
            Ok(Ok(fetch::Response::Proof { hash })) if hash == expected
        );
        let tally = self.audit.proved(peer, cid, passed);
        if !passed {
            self.config.metrics.failed_proofs.inc();
            if let Some(suppressed) = PROOF_LOG.check("failed") {
                tracing::warn!(
                    %peer, %cid, failed = tally.failed, passed = tally.passed, suppressed,
                    "a member says it keeps a file but failed to prove it holds the bytes: not counted as a copy (this node keeps its own)"
                );
            }
        }
        passed
    }

    /// Repair passes run since start (for tests).
    pub fn repairs(&self) -> u64 {
        self.repairs.load(Ordering::Relaxed)
    }
}
