//! The node's history retention: at start and every [`EVERY`] (a quarter of `keep` when that is
//! shorter), versions that left their key's heads longer than `keep` ago are dropped, then the oldest while the content only history
//! holds is above `keep_bytes` (see `store/history.rs`).

use std::time::Duration;

use crate::store::Store;
use crate::tasks::Tasks;

/// How often retention runs.
pub const EVERY: Duration = Duration::from_secs(600);

pub(crate) async fn run(store: Store, tasks: Tasks, keep: Duration, keep_bytes: u64) {
    // A short retention is applied about as often as it asks (at least every second).
    let every = (keep / 4).clamp(Duration::from_secs(1), EVERY);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tasks.cancelled() => return,
        }
        let s = store.clone();
        let keep_ms = keep.as_millis() as u64;
        match tasks
            .blocking(move || s.expire_history(keep_ms, keep_bytes))
            .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(versions = n, "history: dropped versions past retention"),
            Ok(Err(e)) => tracing::warn!(error = %e, "history retention failed"),
            Err(_) => return,
        }
    }
}
