//! How a record joins a key's heads inside the commit's transaction: a local write signed with
//! the next number, a record from elsewhere merged (what it replaces, what replaces it, an
//! equivocation kept as a version while its author may write), and the heads recomputed.

use super::index::{HeadsChange, Tables, MAX_HEADS};
use super::{Applied, StoreError};
use crate::clock::physical_ms;
use crate::record::{content_id, context_after, ContentId, Hash, Record};

/// A new record of this node's, signed with the next sequence number, replacing `heads` (its
/// causal context covers them). Ticking inside the write transaction orders it after every
/// record before.
pub(super) fn signed(
    inner: &super::Inner,
    t: &mut Tables<'_>,
    key: &str,
    cid: Option<ContentId>,
    size: u64,
    heads: &[Record],
) -> Result<Record, StoreError> {
    let mut record = Record {
        key: key.to_string(),
        cid,
        size,
        // Above every version it replaces, so that it is current: a version from a clock
        // ahead (at most `clock::MAX_AHEAD_MS`) does not stay current over a later write.
        time: inner.clock.tick().max(
            heads
                .iter()
                .map(|h| h.time.saturating_add(1))
                .max()
                .unwrap_or(0),
        ),
        author: Vec::new(),
        seq: t.next_seq(&inner.author)?,
        seen: context_after(heads, &inner.author),
        sig: Vec::new(),
    };
    record.sign(&inner.keypair);
    t.note_seq(&record.author, record.seq, record.fingerprint())?;
    Ok(record)
}

/// Where [`install`] put a record.
pub(super) enum Installed {
    /// It is one of the key's heads now; `previous` was the current version before.
    Head { previous: Option<Record> },
    /// A head had seen it: it went to history.
    History,
    /// This node had it already.
    Known,
}

/// Puts a valid, admitted record in its place among `heads` (the key's heads, as the caller
/// read them in this transaction): nowhere if known; history if a head saw it;
/// else among the heads, sending every head it saw to history. The heads, and so the current
/// version, are a function of the set of records received, whatever their order.
pub(super) fn install(
    inner: &super::Inner,
    t: &mut Tables<'_>,
    record: &Record,
    heads: Vec<Record>,
    changes: &mut Vec<HeadsChange>,
    freed: &mut Vec<Hash>,
) -> Result<Installed, StoreError> {
    let version = record.version();
    if heads.iter().any(|h| h.version() == version) || t.in_history(record, &version)? {
        return Ok(Installed::Known);
    }
    let now = inner.time.wall().now_ms();
    if heads.iter().any(|h| h.replaces(record)) {
        t.add_history(record, now)?;
        return Ok(Installed::History);
    }
    let mut new_heads = Vec::with_capacity(heads.len() + 1);
    for h in &heads {
        if record.replaces(h) {
            t.add_history(h, now)?;
        } else {
            new_heads.push(h.clone());
        }
    }
    new_heads.push(record.clone());
    if new_heads.len() > MAX_HEADS {
        new_heads.sort_by(|a, b| b.cmp_current(a));
        for h in new_heads.split_off(MAX_HEADS) {
            t.add_history(&h, now)?;
        }
    }
    let kept = new_heads.iter().any(|h| h.version() == version);
    changes.push(t.set_heads(&record.key, &heads, &new_heads, freed)?);
    if !kept {
        return Ok(Installed::History);
    }
    Ok(Installed::Head {
        previous: heads.into_iter().next(),
    })
}

/// Sets a key's heads anew from its heads and history, without those the admission policy
/// refuses: what they had replaced counts again, the versions, heads and history, that no other
/// counting version replaces.
pub(super) fn recompute_heads(
    inner: &super::Inner,
    t: &mut Tables<'_>,
    key: &str,
    changes: &mut Vec<HeadsChange>,
    freed: &mut Vec<Hash>,
) -> Result<(), StoreError> {
    let heads = t.heads(key)?;
    let history: Vec<Record> = t
        .history_of(key)?
        .into_iter()
        .map(|e| e.record)
        .filter(|r| inner.admits(r))
        .collect();
    let mut candidates: Vec<Record> = heads.iter().filter(|r| inner.admits(r)).cloned().collect();
    candidates.extend(history.iter().cloned());
    let mut kept: Vec<Record> = candidates
        .iter()
        .filter(|r| !candidates.iter().any(|o| o.replaces(r)))
        .cloned()
        .collect();
    // At most MAX_HEADS, the rest kept in history, as `install` does.
    kept.sort_by(|a, b| b.cmp_current(a));
    let now = inner.time.wall().now_ms();
    for h in kept.split_off(kept.len().min(MAX_HEADS)) {
        t.add_history(&h, now)?;
    }
    changes.push(t.set_heads(key, &heads, &kept, freed)?);
    for r in kept.iter().filter(|r| history.contains(r)) {
        t.remove_history(r, freed)?;
    }
    Ok(())
}

/// Two records under one (author, number): the author equivocated (a stolen key, a data dir
/// restored from a backup). It is flagged. An author that may write now has both count, as two
/// versions (every node ends with the same set, whatever the order of arrival, and nothing is
/// removed); for a revoked author, whose records count only up to its cutoff, the second is
/// refused (no record signed after the revocation enters below the cutoff). Returns whether
/// `record` counts.
pub(super) fn equivocation(inner: &super::Inner, record: &Record) -> bool {
    inner.equivocated(record);
    // Rule 5 of PROTOCOL.md's "Trust": only an author that may write now has a record under
    // every number count.
    let mut probe = record.clone();
    probe.seq = u64::MAX;
    inner.admits(&probe)
}

/// Notes that another node signs with this node's key: local writes are refused from now on,
/// said once in the log.
pub(super) fn twin_seen(inner: &super::Inner, record: &Record) {
    if !inner.twin.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(
            key = %record.key,
            seq = record.seq,
            "another node signs with this node's identity (one ticket used on two machines?): local writes are refused from now on; stop one of them, move its data dir away and join it with a new ticket"
        );
    }
}

/// Merges one record, moving the clock past it. Skipped if it is invalid, too far ahead of the
/// network's time (`Ahead`), if the admission policy (membership) refuses its author, or if its
/// author already signed another record under its sequence number (`Refused`). The caller has
/// verified its signature.
pub(super) fn merge_one(
    inner: &super::Inner,
    t: &mut Tables<'_>,
    record: &Record,
    changes: &mut Vec<HeadsChange>,
    freed: &mut Vec<Hash>,
) -> Result<Applied, StoreError> {
    // (Admission includes the record's own validity.)
    if !inner.admits(record) {
        return Ok(Applied::Refused);
    }
    if physical_ms(record.time) > inner.time.accept_limit_ms() {
        return Ok(Applied::Ahead);
    }
    // This node's own key on a record it did not sign: a number above any it signed, or a
    // second record under one of its numbers, means another node has its identity.
    let own = record.author == inner.author;
    if own && record.seq > t.signed_seq()? {
        twin_seen(inner, record);
    }
    if t.note_seq_or_known(&record.author, record.seq, record.fingerprint())?
        .is_some()
    {
        if own {
            twin_seen(inner, record);
        }
        if !equivocation(inner, record) {
            return Ok(Applied::Refused);
        }
    }
    // The clock follows it up to the horizon only: no writer drags it further ahead.
    inner.clock.observe(
        record
            .time
            .min(inner.time.horizon_ms().min((1 << 48) - 1) << 16 | 0xffff),
    );
    let heads = t.heads(&record.key)?;
    let previous = match install(inner, t, record, heads, changes, freed)? {
        Installed::Known => return Ok(Applied::Unchanged),
        Installed::History => return Ok(Applied::Kept),
        Installed::Head { previous } => previous,
    };
    let fetch = match &record.cid {
        None => false,
        // Empty content has nothing to fetch.
        Some(cid) if record.size == 0 && *cid == content_id(0, &[]) => {
            t.add_content(cid, 0, &[], true)?;
            false
        }
        Some(cid) => !t.content(cid)?.is_some_and(|c| c.complete),
    };
    Ok(Applied::Updated { previous, fetch })
}
