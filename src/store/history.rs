//! History: versions that a later write replaced, and deletes, kept for a retention period
//! within a space budget, so that `dfs log` shows who wrote what and `dfs restore` brings an
//! old version back.
//!
//! A version enters history when it leaves a key's heads (a write that saw it arrived), or
//! when it arrives already replaced. Each entry holds a reference to its content, so its
//! chunks stay while it does. [`expire`] drops entries that left the heads more than the
//! retention period ago, then, while the content that only history holds is larger than the
//! byte budget, the oldest entries. Heads (current versions and conflicts) are never expired.

use std::collections::HashMap;

use super::index::{HistoryEntry, Tables};
use super::StoreError;
use crate::record::{ContentId, Hash};

/// Default retention: 30 days, the version history of Dropbox's basic plan and a month in
/// which to notice a mistake.
pub const DEFAULT_KEEP_DAYS: u64 = 30;
/// Default budget of content held only by history: 10 GiB.
pub const DEFAULT_KEEP_BYTES: u64 = 10 << 30;

/// Drops history entries past retention, then the oldest while the content held only by
/// history is above `keep_bytes`. Returns how many entries went.
pub(crate) fn expire(
    t: &mut Tables<'_>,
    now: u64,
    keep_ms: u64,
    keep_bytes: u64,
    freed: &mut Vec<Hash>,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    let mut kept: Vec<HistoryEntry> = Vec::new();
    for entry in t.all_history()? {
        if now.saturating_sub(entry.left) >= keep_ms {
            t.remove_history(&entry.record, freed)?;
            removed += 1;
        } else {
            kept.push(entry);
        }
    }
    // Content held only by history: each content id counted once, and only if no head
    // references it too.
    let mut holders: HashMap<ContentId, (u64, u64)> = HashMap::new();
    for e in kept.iter().filter(|e| e.holds) {
        if let Some(cid) = e.record.cid {
            holders.entry(cid).or_insert((e.record.size, 0)).1 += 1;
        }
    }
    let mut only_history: HashMap<ContentId, u64> = HashMap::new();
    let mut bytes = 0u64;
    for (cid, (size, n)) in &holders {
        if t.content_refs(cid)? == *n {
            only_history.insert(*cid, *n);
            bytes += size;
        }
    }
    if bytes <= keep_bytes {
        return Ok(removed);
    }
    kept.sort_by_key(|e| e.left);
    for entry in kept {
        if bytes <= keep_bytes {
            break;
        }
        t.remove_history(&entry.record, freed)?;
        removed += 1;
        if let (true, Some(cid)) = (entry.holds, entry.record.cid) {
            if let Some(n) = only_history.get_mut(&cid) {
                *n -= 1;
                if *n == 0 {
                    bytes -= entry.record.size;
                }
            }
        }
    }
    Ok(removed)
}
