//! Anti-entropy sessions over [`crate::protocols::sync`]: the initiator walks the digest tree
//! of both record sets down to the differing leaves and exchanges just those records; the
//! responder answers from its store. Both sides merge by last-writer-wins.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use libp2p::PeerId;

use super::{MergeError, Replication};
use crate::net;
use crate::protocols::sync::{self, Request, Response, Tree};
use crate::record::{key_hash, Record};
use crate::store::StoreError;
use crate::tasks::TaskFailed;

/// Why a sync session or a sync request failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Network(#[from] net::Error),
    #[error("sync protocol violation by {peer}: {reason}")]
    Protocol { peer: PeerId, reason: String },
    #[error("{peer} refused a sync request: {message}")]
    Refused { peer: PeerId, message: String },
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// Keeps the records that fit in [`sync::MAX_RECORDS_BYTES`] of one message (records with long
/// keys and causal contexts, several heads per key); what is left goes in the next round.
fn truncate_to_fit(records: &mut Vec<Record>) {
    let mut size = 0;
    let fits = records
        .iter()
        .take_while(|r| {
            size += sync::encoded_len(r);
            size <= sync::MAX_RECORDS_BYTES
        })
        .count();
    records.truncate(fits);
}

fn protocol_error(peer: PeerId, reason: &str) -> SyncError {
    SyncError::Protocol {
        peer,
        reason: reason.to_string(),
    }
}

async fn tree(replication: &Replication) -> Result<Tree, SyncError> {
    Ok(replication
        .blocking(|store| Tree::new(store.sync_leaves(), store.record_count()))
        .await?)
}

/// One sync session that this node starts with `peer`.
pub(crate) struct Session {
    pub(crate) replication: Replication,
    pub(crate) peer: PeerId,
}

impl Session {
    async fn request(&self, request: Request) -> Result<Response, SyncError> {
        self.replication
            .stats
            .requests_sent
            .fetch_add(1, Ordering::Relaxed);
        self.replication
            .stats
            .bytes_sent
            .fetch_add(sync::encoded_len(&request) as u64, Ordering::Relaxed);
        let response = self.replication.network.sync(self.peer, request).await?;
        self.replication
            .stats
            .bytes_received
            .fetch_add(sync::encoded_len(&response) as u64, Ordering::Relaxed);
        if let Response::Error { message } = response {
            // The peer answered, saying what it did not accept in our request (or that it is
            // busy): a refusal, not a violation on its part.
            return Err(SyncError::Refused {
                peer: self.peer,
                message,
            });
        }
        Ok(response)
    }

    /// Runs rounds until both record sets have the same digest, nothing more can be settled,
    /// or the round limit is reached (the next session continues).
    pub(crate) async fn run(self) -> Result<(), SyncError> {
        if !self.replication.same_network(self.peer).await {
            return Ok(());
        }
        let result = self.rounds().await;
        // Counted when it ends, so that at rest `requests_sent` per session is exact.
        self.replication
            .stats
            .sessions
            .fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Brings this node's grants up to the peer's: sends the digest of its set and adds what
    /// the peer answers (all its grants, unless the digests were equal). The peer does the
    /// same in its own sessions, so both converge on membership before records are compared.
    async fn grants(&self) -> Result<(), SyncError> {
        let Some(digest) = self.replication.members.with(|m| m.digest()) else {
            return Ok(());
        };
        let Response::Grants { grants } = self.request(Request::Grants { digest }).await? else {
            return Err(protocol_error(self.peer, "expected grants"));
        };
        if grants.len() > crate::trust::MAX_GRANTS {
            return Err(protocol_error(self.peer, "too many grants"));
        }
        let added = self.replication.add_grants(grants).await?;
        if !added.is_empty() {
            tracing::debug!(peer = %self.peer, added = added.len(), "grants from sync");
        }
        Ok(())
    }

    /// Pulls the heads of `leaves` over `/dfs/catchup/1`. False when the peer does not speak
    /// it or failed without fault (the session goes on with exchanges); a peer that sent what
    /// no honest peer sends counts a strike and ends the session.
    async fn catch_up(&self, leaves: &[u16], announced: u64) -> Result<bool, SyncError> {
        let peer = self.peer;
        let started = std::time::Instant::now();
        let set = crate::protocols::catchup::Leaves::new(leaves.iter().copied());
        match super::catchup::pull(&self.replication, peer, set, announced).await {
            Ok(pulled) => {
                tracing::debug!(%peer, leaves = leaves.len(), received = pulled.received,
                    changed = pulled.changed, complete = pulled.complete,
                    ms = started.elapsed().as_millis() as u64, "catch-up done");
                Ok(true)
            }
            Err(super::catchup::CatchupError::Merge(e)) => Err(e.into()),
            Err(e) if e.peer_misbehaved() => {
                self.replication
                    .misbehaved(peer, "a catch-up stream that breaks the protocol");
                Err(protocol_error(peer, &e.to_string()))
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "catch-up failed; syncing by exchanges");
                Ok(false)
            }
        }
    }

    async fn rounds(&self) -> Result<(), SyncError> {
        let peer = self.peer;
        let mut grants_checked = false;
        let mut bulk_tried = false;
        let mut far_apart = false;
        let mut seen_states = HashSet::new();
        for _ in 0..sync::MAX_ROUNDS {
            let mine = tree(&self.replication).await?;
            let Response::Root {
                root,
                count,
                grants,
            } = self.request(Request::Root).await?
            else {
                return Err(protocol_error(peer, "expected root"));
            };
            // Membership first: records count only once their authors' grants are known.
            let mine_grants = self.replication.members.with(|m| m.digest());
            if !grants_checked && grants.is_some() && grants != mine_grants {
                grants_checked = true;
                self.grants().await?;
                continue;
            }
            if root == mine.root() && count == mine.count {
                return Ok(());
            }
            if !seen_states.insert((mine.root(), root)) {
                tracing::debug!(%peer, "sync made no progress; leaving the rest for later");
                return Ok(());
            }
            let Response::Branches { hashes } = self.request(Request::Branches).await? else {
                return Err(protocol_error(peer, "expected branches"));
            };
            if hashes.len() != sync::FANOUT {
                return Err(protocol_error(peer, "wrong number of branches"));
            }
            let branches: Vec<u16> = (0..sync::FANOUT)
                .filter(|&b| hashes[b] != mine.branch(b))
                .map(|b| b as u16)
                .collect();
            if branches.is_empty() {
                return Ok(());
            }
            let Response::Leaves { hashes } = self
                .request(Request::Leaves {
                    branches: branches.clone(),
                })
                .await?
            else {
                return Err(protocol_error(peer, "expected leaves"));
            };
            if hashes.len() != branches.len() || hashes.iter().any(|h| h.len() != sync::FANOUT) {
                return Err(protocol_error(peer, "wrong number of leaves"));
            }
            let mut leaves = Vec::new();
            for (b, theirs) in branches.iter().zip(&hashes) {
                let base = *b as usize * sync::FANOUT;
                for (j, h) in theirs.iter().enumerate() {
                    if *h != mine.leaves[base + j] {
                        leaves.push((base + j) as u16);
                    }
                }
            }
            // Far apart (a fresh, restored or long-offline node): pull the heads of every
            // differing leaf in bulk, once per session, then compare again.
            // Only from a peer that holds more heads than this node: one that holds fewer
            // mostly lacks what this node has, and pulls it in its own session. Either way,
            // what this node holds that the peer lacks is not pushed in this session: the peer
            // pulls it in bulk, faster than exchanges would carry it.
            if leaves.len() > sync::MAX_NODES_PER_REQUEST {
                far_apart = true;
                if !bulk_tried && count > mine.count {
                    bulk_tried = true;
                    if self.catch_up(&leaves, count).await? {
                        continue;
                    }
                }
            }
            leaves.truncate(sync::MAX_NODES_PER_REQUEST);
            let Response::Entries { entries } = self
                .request(Request::Entries {
                    leaves: leaves.clone(),
                })
                .await?
            else {
                return Err(protocol_error(peer, "expected entries"));
            };
            if entries.len() != leaves.len() {
                return Err(protocol_error(peer, "wrong number of entry lists"));
            }
            let (push, want) = self
                .replication
                .blocking(move |store| -> Result<_, StoreError> {
                    let mut push_hashes = Vec::new();
                    let mut want = Vec::new();
                    for (leaf, theirs) in leaves.iter().zip(entries) {
                        let mine: HashMap<u64, u64> =
                            store.sync_entries(*leaf)?.into_iter().collect();
                        let theirs: HashMap<u64, u64> = theirs.into_iter().collect();
                        for (k, fp) in &theirs {
                            if mine.get(k) != Some(fp) && sync::leaf_of(*k) == *leaf {
                                want.push(*k);
                            }
                        }
                        for (k, fp) in &mine {
                            if theirs.get(k) != Some(fp) {
                                push_hashes.push(*k);
                            }
                        }
                    }
                    if far_apart {
                        push_hashes.clear();
                    }
                    push_hashes.truncate(sync::MAX_RECORDS_PER_EXCHANGE);
                    want.truncate(sync::MAX_RECORDS_PER_EXCHANGE);
                    let mut push = store.records_by_key_hash(&push_hashes)?;
                    truncate_to_fit(&mut push);
                    Ok((push, want))
                })
                .await??;
            if push.is_empty() && want.is_empty() {
                return Ok(());
            }
            let wanted: HashSet<u64> = want.iter().copied().collect();
            self.replication
                .stats
                .records_sent
                .fetch_add(push.len() as u64, Ordering::Relaxed);
            let Response::Records { records } =
                self.request(Request::Exchange { push, want }).await?
            else {
                return Err(protocol_error(peer, "expected records"));
            };
            // Each wanted key answers with all its heads (its current version and conflicts).
            if records.len() > wanted.len() * crate::store::MAX_HEADS {
                return Err(protocol_error(peer, "more records than asked for"));
            }
            let records: Vec<Record> = records
                .into_iter()
                .filter(|r| wanted.contains(&key_hash(&r.key)))
                .collect();
            self.replication
                .stats
                .records_received
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            let merged = self.replication.merge(records, &[peer]).await?;
            if merged.invalid > 0 {
                self.replication
                    .misbehaved(peer, "records that do not verify in a sync answer");
            }
            tracing::debug!(%peer, changed = merged.changed, "sync round done");
        }
        Ok(())
    }
}

/// Answers the sync requests of one peer.
pub(crate) struct Responder {
    pub(crate) replication: Replication,
    pub(crate) peer: PeerId,
}

impl Responder {
    pub(crate) async fn serve(self, request: Request) -> Response {
        match self.answer(request).await {
            Ok(r) => r,
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        }
    }

    async fn answer(&self, request: Request) -> Result<Response, SyncError> {
        let invalid = SyncError::Invalid;
        Ok(match request {
            Request::Root => {
                let t = tree(&self.replication).await?;
                Response::Root {
                    root: t.root(),
                    count: t.count,
                    grants: self.replication.members.with(|m| m.digest()),
                }
            }
            Request::Branches => Response::Branches {
                hashes: tree(&self.replication).await?.branches(),
            },
            Request::Leaves { branches } => {
                if branches.len() > sync::FANOUT
                    || branches.iter().any(|b| *b as usize >= sync::FANOUT)
                {
                    return Err(invalid("bad branch list"));
                }
                let t = tree(&self.replication).await?;
                Response::Leaves {
                    hashes: branches.iter().map(|b| t.leaves_of(*b as usize)).collect(),
                }
            }
            Request::Entries { leaves } => {
                if leaves.len() > sync::MAX_NODES_PER_REQUEST
                    || leaves.iter().any(|l| *l as usize >= sync::LEAVES)
                {
                    return Err(invalid("bad leaf list"));
                }
                let entries = self
                    .replication
                    .blocking(move |store| -> Result<_, StoreError> {
                        leaves.iter().map(|l| store.sync_entries(*l)).collect()
                    })
                    .await??;
                Response::Entries { entries }
            }
            Request::Grants { digest } => {
                let grants = self
                    .replication
                    .members
                    .with(|m| {
                        if m.digest() == digest {
                            Vec::new()
                        } else {
                            m.grants().cloned().collect()
                        }
                    })
                    .unwrap_or_default();
                Response::Grants { grants }
            }
            Request::Exchange { push, want } => {
                if push.len() > sync::MAX_RECORDS_PER_EXCHANGE
                    || want.len() > sync::MAX_RECORDS_PER_EXCHANGE
                {
                    return Err(invalid("too many records in one exchange"));
                }
                self.replication
                    .stats
                    .records_received
                    .fetch_add(push.len() as u64, Ordering::Relaxed);
                let merged = self.replication.merge(push, &[self.peer]).await?;
                if merged.invalid > 0 {
                    self.replication
                        .misbehaved(self.peer, "records that do not verify in a sync push");
                }
                // Records of non-members cost no signature check (refused at once), and are no
                // strike: an honest pusher may know a grant this node has not received yet.
                let _ = merged.not_members;
                let mut records = self
                    .replication
                    .blocking(move |store| store.records_by_key_hash(&want))
                    .await??;
                truncate_to_fit(&mut records);
                self.replication
                    .stats
                    .records_sent
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                Response::Records { records }
            }
        })
    }
}
