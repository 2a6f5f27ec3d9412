//! Merging records from elsewhere: strangers refused before any signature check, replays
//! settled without one, each remaining signature checked once (in parallel for large batches),
//! then one store transaction; a verdict per record for gossip and look-ups; grants added one at
//! a time; strikes against peers that send what no honest peer sends.

use super::*;

impl Replication {
    /// Merges records from elsewhere in one transaction and fetches the content of those this
    /// node now wants. `sources` are peers likely to hold that content. Returns how many records
    /// changed the store.
    pub(crate) async fn merge(
        &self,
        records: Vec<Record>,
        sources: &[PeerId],
    ) -> Result<Merged, MergeError> {
        let refusals = self.refusals.clone();
        let members = self.members.clone();
        let checked = self.config.metrics.signatures_checked.clone();
        let (applied, verdicts) = self
            .blocking(move |store| -> Result<MergeOutcome, StoreError> {
                let mut verdicts = vec![Verdict::Valid; records.len()];
                // Records of authors that may not write are refused before their
                // signatures are checked (a membership look-up costs far less than an
                // ed25519 check): a replay of strangers' records costs no signature.
                let mut candidates = Vec::with_capacity(records.len());
                for (i, r) in records.into_iter().enumerate() {
                    if crate::record::validate_key(&r.key).is_err() {
                        refusals.refuse(Refusal::Invalid, &r.author, None);
                        verdicts[i] = Verdict::BadKey;
                        continue;
                    }
                    if members.with(|m| m.admits(&r)).unwrap_or(true) {
                        candidates.push((i, r));
                    } else {
                        refusals.refuse(Refusal::NotAWriter, &r.author, Some(&r.key));
                        verdicts[i] = Verdict::Stranger;
                    }
                }
                let (at, records): (Vec<usize>, Vec<Record>) = candidates.into_iter().unzip();
                // Versions held already change nothing: no signature check for a replay.
                let known = store.known(&records)?;
                let mut unknown = Vec::with_capacity(records.len());
                let mut unknown_at = Vec::with_capacity(records.len());
                for ((i, r), known) in at.into_iter().zip(records).zip(known) {
                    if known {
                        verdicts[i] = Verdict::Known;
                    } else {
                        unknown.push(r);
                        unknown_at.push(i);
                    }
                }
                // Signatures are checked here, off the async threads, whatever the path, and
                // only here: gossip hands records over unverified.
                checked.inc_by(unknown.len() as u64);
                let mut valid = Vec::with_capacity(unknown.len());
                for ((r, ok), i) in admission::check_all(unknown).into_iter().zip(unknown_at) {
                    if !ok {
                        refusals.refuse(Refusal::Invalid, &r.author, Some(&r.key));
                        verdicts[i] = Verdict::Invalid;
                    } else {
                        valid.push(r);
                    }
                }
                let outcomes = store.apply_batch(valid.clone())?;
                let applied = valid
                    .into_iter()
                    .zip(outcomes)
                    .filter_map(|(r, o)| match o {
                        Applied::Updated { fetch, .. } => Some((r, fetch)),
                        Applied::Unchanged | Applied::Kept => None,
                        Applied::Ahead => {
                            refusals.refuse(Refusal::Ahead, &r.author, Some(&r.key));
                            None
                        }
                        // Not judged yet: a node still learning its network cannot tell who
                        // may write (the record comes again once it can), so it is no refusal
                        // to count or log.
                        Applied::Refused if members.with(|_| ()).is_none() => None,
                        Applied::Refused => {
                            let why = if members.admits(&r) {
                                Refusal::SeqReused
                            } else {
                                Refusal::NotAWriter
                            };
                            refusals.refuse(why, &r.author, Some(&r.key));
                            None
                        }
                    })
                    .collect();
                Ok((applied, verdicts))
            })
            .await??;
        let changed = applied.len();
        let invalid = verdicts.iter().filter(|v| **v == Verdict::Invalid).count();
        let not_members = verdicts.iter().filter(|v| **v == Verdict::Stranger).count();
        for (record, incomplete) in applied {
            if incomplete && self.policy.wants(&record) {
                self.transfers.enqueue(record, sources.to_vec());
            }
        }
        Ok(Merged {
            changed,
            invalid,
            not_members,
            verdicts,
        })
    }

    /// Merges records from gossip in batches (one transaction each), then passes the verdict
    /// on each message to gossipsub: forwarded once its signature is checked, here.
    pub(super) async fn merge_gossip(self, mut queue: mpsc::Receiver<Gossiped>) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < MERGE_BATCH {
                match queue.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            // Records of one batch may name different sources: remember each as a hint.
            for (record, sources, _) in &batch {
                for peer in sources.iter().rev() {
                    self.transfers.hint(record.cid, *peer);
                }
            }
            let (records, messages): (Vec<Record>, Vec<net::GossipMessage>) =
                batch.into_iter().map(|(r, _, m)| (r, m)).unzip();
            let verdicts = match self.merge(records, &[]).await {
                Ok(merged) => merged.verdicts,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot merge records from gossip");
                    vec![Verdict::Stranger; messages.len()]
                }
            };
            for (message, verdict) in messages.into_iter().zip(verdicts) {
                let verdict = match verdict {
                    Verdict::Valid | Verdict::Known => net::Verdict::Accept,
                    Verdict::Stranger => net::Verdict::Ignore,
                    Verdict::Invalid | Verdict::BadKey => net::Verdict::Reject,
                };
                if self.network.judge(message, verdict).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Notes that `peer` sent what no honest peer sends (records that do not verify); at
    /// [`MAX_STRIKES`] it is blocked (disconnected and refused) for [`BLOCK_FOR`].
    pub(crate) fn misbehaved(&self, peer: PeerId, what: &'static str) {
        let strikes = {
            let mut strikes = self.strikes.lock().expect("strikes");
            let n = strikes.entry(peer).or_insert(0);
            *n += 1;
            *n
        };
        if strikes < MAX_STRIKES {
            tracing::debug!(%peer, what, strikes, "peer misbehaved");
            return;
        }
        self.strikes.lock().expect("strikes").remove(&peer);
        tracing::info!(%peer, what, "blocking a misbehaving peer for {BLOCK_FOR:?}");
        let network = self.network.clone();
        self.tasks.spawn(async move {
            let _ = network.block(peer, true).await;
            tokio::time::sleep(BLOCK_FOR).await;
            let _ = network.block(peer, false).await;
        });
    }

    /// Adds grants from elsewhere (gossip, sync, a ticket) or made here, one at a time: each is
    /// checked against the membership, stored, then counted; a grant that lowers a peer's
    /// standing removes the records that no longer count. Returns the grants that were new.
    pub(crate) async fn add_grants(&self, grants: Vec<Grant>) -> Result<Vec<Grant>, MergeError> {
        let _one_at_a_time = self.granting.lock().await;
        let mut added = Vec::new();
        for grant in grants {
            match self.members.check(&grant) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => {
                    self.refusals.refuse(Refusal::Grant, &grant.issuer, None);
                    continue;
                }
            }
            let stored = grant.clone();
            if !self.blocking(move |s| s.add_grant(&stored)).await?? {
                self.refusals.refuse(Refusal::Grant, &grant.issuer, None);
                continue;
            }
            self.grant_counts(grant.clone()).await?;
            added.push(grant);
        }
        Ok(added)
    }

    /// Counts a stored grant in the membership; if it lowers a peer's standing, removes the
    /// records that no longer count.
    pub(crate) async fn grant_counts(&self, grant: Grant) -> Result<(), MergeError> {
        let subject = grant.subject_peer();
        match self.members.insert(grant) {
            Ok((true, lowered)) => {
                if let Some(peer) = subject {
                    let role = self.members.role(&peer).map_or("none", |r| r.as_str());
                    tracing::info!(%peer, role, "membership changed");
                }
                if lowered {
                    let dropped = self.blocking(|s| s.drop_refused()).await??;
                    if !dropped.is_empty() {
                        tracing::info!(
                            records = dropped.len(),
                            "removed records that no longer count after a revocation"
                        );
                    }
                }
            }
            Ok((false, _)) => {}
            Err(e) => tracing::debug!(error = %e, "grant does not count"),
        }
        Ok(())
    }
}
/// A record from gossip waiting for its merge: the record, the peers likely to hold its
/// content, the message to judge.
pub(super) type Gossiped = (Record, Vec<PeerId>, net::GossipMessage);

/// What a merge's blocking part gives back: the records that changed the store (each with
/// whether its content is to fetch), and the verdict on each record given.
pub(super) type MergeOutcome = (Vec<(Record, bool)>, Vec<Verdict>);

/// What a merge found of one record, before the store judged it by its causality and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its author may not write (not checked further).
    Stranger,
    /// This very version is held already (no signature check for a replay).
    Known,
    /// It does not verify, which an honest peer never sends.
    Invalid,
    /// Its key breaks the grammar: refused as invalid, but not held against the peer (an
    /// honest node of an earlier version may still hold and send such a record).
    BadKey,
    /// It verifies and went to the store.
    Valid,
}

/// What a merge did: records that changed the store, and records refused because they do not
/// verify (which an honest peer never sends).
#[derive(Debug, Clone, Default)]
pub(crate) struct Merged {
    pub changed: usize,
    pub invalid: usize,
    /// Records refused because their authors may not write (not checked further).
    pub not_members: usize,
    /// What the merge found of each record, in the order given.
    pub verdicts: Vec<Verdict>,
}

/// Why merging records failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
}
