//! The node's background scrub (as ZFS scrubs a pool): `scrub_interval` after the last pass
//! ended (a time the store keeps across restarts; a pass cut short by a restart resumes
//! [`RESUME_AFTER`] after the start), one pass of [`Store::scrub`] re-hashes every stored chunk at no more than
//! `scrub_rate` bytes per second, on one blocking thread, so that foreground reads, puts and
//! transfers keep the disk and the cores. A damaged chunk is quarantined and its content marked
//! incomplete by the store; the pass then asks the transfers to fetch what is incomplete, which
//! brings healthy copies from the peers. Shutdown stops a pass within [`NAP`].

use std::time::{Duration, Instant};

use crate::replication::Replication;
use crate::store::Store;
use crate::tasks::Tasks;

/// Longest sleep of the pacing (shutdown is noticed between naps).
const NAP: Duration = Duration::from_millis(100);
/// Pause after a start before a pass that a restart cut short goes on.
const RESUME_AFTER: Duration = Duration::from_secs(60);

/// Runs scrub passes until shutdown; `interval` zero disables them.
pub(super) async fn run(
    store: Store,
    replication: Replication,
    tasks: Tasks,
    interval: Duration,
    rate: u64,
) {
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::time::sleep(next_pass(&store, &tasks, interval).await).await;
        let (s, t) = (store.clone(), tasks.clone());
        let started = Instant::now();
        let pass = tasks
            .blocking(move || s.scrub(pacer(rate, move || t.is_cancelled())))
            .await;
        let report = match pass {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "scrub pass failed");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "scrub task failed");
                continue;
            }
        };
        let secs = started.elapsed().as_secs_f64();
        if report.damaged.is_empty() {
            tracing::info!(
                chunks = report.chunks,
                bytes = report.bytes,
                secs,
                finished = report.finished,
                "scrub pass done: every chunk matches its hash"
            );
        } else {
            tracing::warn!(
                chunks = report.chunks,
                bytes = report.bytes,
                secs,
                damaged = report.damaged.len(),
                "scrub pass done: damaged chunks quarantined; fetching healthy copies from peers"
            );
            replication.transfers().resume();
        }
    }
}

/// How long to wait before the next pass: `interval` after the end of the last whole pass,
/// sooner for a pass that was cut short.
async fn next_pass(store: &Store, tasks: &Tasks, interval: Duration) -> Duration {
    let s = store.clone();
    let state = tasks.blocking(move || s.scrub_state()).await;
    let (last, next) = match state {
        Ok(Ok(state)) => state,
        _ => return interval,
    };
    if next > 0 {
        return interval.min(RESUME_AFTER);
    }
    let Some(last) = last else {
        return interval;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    interval.saturating_sub(Duration::from_secs(now.saturating_sub(last)))
}

/// The pacing of a pass: after each chunk, sleeps until the bytes so far fit `rate` bytes per
/// second since the pass began (in naps, checking `stop`); false (stop the pass) once `stop`.
pub(crate) fn pacer(rate: u64, stop: impl Fn() -> bool) -> impl FnMut(u64) -> bool {
    let start = Instant::now();
    let mut total = 0u64;
    move |bytes| {
        total += bytes;
        if rate > 0 {
            let due = start + Duration::from_secs_f64(total as f64 / rate as f64);
            loop {
                if stop() {
                    return false;
                }
                let now = Instant::now();
                if now >= due {
                    break;
                }
                std::thread::sleep((due - now).min(NAP));
            }
        }
        !stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_holds_the_rate_and_stops() {
        let started = Instant::now();
        let mut pace = pacer(10 << 20, || false);
        for _ in 0..4 {
            assert!(pace(1 << 20)); // 4 MiB at 10 MiB/s: 0.4 s
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(390), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        let mut stopped = pacer(1, || true);
        assert!(!stopped(1 << 20), "a stop request ends the pass at once");
        let mut unlimited = pacer(0, || false);
        assert!(unlimited(u64::MAX / 2));
    }
}
