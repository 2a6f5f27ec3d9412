//! Conversations with peers that ask many at once: one fan-out ([`ask_all`]) that the record
//! look-up, the holders of a content id and the placed holder of a repair share, and the
//! announcements of local writes (gossip and content routing).

use std::time::Duration;

use futures::{Stream, StreamExt};
use libp2p::PeerId;

use super::{MergeError, Replication, Verdict};
use crate::net::{self, Network};
use crate::placement::Replicas;
use crate::protocols::fetch;
use crate::record::{ContentId, Record};
use crate::store::StoreError;

/// How long a placed peer has to answer `has` during a repair pass.
pub(crate) const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks every one of `peers` the same request at once and yields the answers as they arrive,
/// each awaited at most `timeout`; a peer that fails or does not answer in time yields nothing.
pub(crate) fn ask_all(
    network: &Network,
    peers: impl IntoIterator<Item = PeerId>,
    request: fetch::Request,
    timeout: Duration,
) -> impl Stream<Item = (PeerId, fetch::Response)> + Send + 'static {
    let asks: futures::stream::FuturesUnordered<_> = peers
        .into_iter()
        .map(|peer| {
            let network = network.clone();
            let request = request.clone();
            async move {
                match tokio::time::timeout(timeout, network.fetch(peer, request)).await {
                    Ok(Ok(response)) => Some((peer, response)),
                    _ => None,
                }
            }
        })
        .collect();
    asks.filter_map(futures::future::ready)
}

/// Whether an answer to `has` says the whole content is there.
fn complete(response: &fetch::Response) -> bool {
    matches!(response, fetch::Response::Has { complete: true, .. })
}

/// Why a look-up failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Network(#[from] net::Error),
    #[error(transparent)]
    Merge(#[from] MergeError),
}

impl Replication {
    /// Asks the connected peers for a key's record (each within `timeout`) and merges their
    /// answers, which verify there, into the store; returns the record the store then holds. A
    /// reader still learning its network waits for it first (within `timeout`): records count
    /// only once it knows who may write. A peer that answers with another key's record or one
    /// that does not verify earns a strike.
    pub(crate) async fn lookup(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<Record>, LookupError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.members.network().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let peers = self.network.peers().await?.into_iter().map(|p| p.peer_id);
        let request = fetch::Request::Record {
            key: key.to_string(),
        };
        let answers: Vec<(PeerId, fetch::Response)> =
            ask_all(&self.network, peers, request, timeout)
                .collect()
                .await;
        let mut found: Vec<Record> = Vec::new();
        let mut sources: Vec<PeerId> = Vec::new();
        for (peer, answer) in answers {
            let fetch::Response::Record { record: r } = answer else {
                continue;
            };
            if r.key != key {
                self.misbehaved(peer, "another key's record in a lookup answer");
                continue;
            }
            sources.push(peer);
            found.push(r);
        }
        if found.is_empty() {
            return Ok(None);
        }
        // The merge checks each record once and decides what saw what, and which is current.
        let merged = self.merge(found, &sources).await?;
        for (peer, verdict) in sources.iter().zip(&merged.verdicts) {
            match verdict {
                Verdict::Invalid => self.misbehaved(*peer, "an invalid record in a lookup answer"),
                Verdict::Stranger => tracing::debug!(
                    %peer,
                    "ignoring a record by a peer without write access in a lookup answer"
                ),
                Verdict::Known | Verdict::Valid | Verdict::BadKey => {}
            }
        }
        let key = key.to_string();
        Ok(self
            .blocking(move |store| store.record(&key))
            .await
            .map_err(MergeError::from)?
            .map_err(MergeError::from)?)
    }

    /// The connected peers, and the members placed to hold `cid`, that say they hold its whole
    /// content (asked at once, each answer awaited at most `timeout`; a peer that does not
    /// answer is not counted) and, when this node holds it too, prove it (`prove`).
    pub(crate) async fn holders(
        &self,
        cid: ContentId,
        timeout: Duration,
    ) -> Result<Vec<PeerId>, net::Error> {
        let mut peers: Vec<PeerId> = self
            .network
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.dfs)
            .map(|p| p.peer_id)
            .collect();
        let me = self.policy.me();
        for p in self.policy.placed(&cid) {
            if p != me && !peers.contains(&p) {
                peers.push(p);
            }
        }
        let mut holders: Vec<PeerId> =
            ask_all(&self.network, peers, fetch::Request::Has { cid }, timeout)
                .filter_map(|(peer, answer)| async move { complete(&answer).then_some(peer) })
                .collect()
                .await;
        // Where this node holds the content too, a claim counts only with a proof.
        let list = self
            .blocking(
                move |s| -> Result<Option<Vec<crate::record::Hash>>, StoreError> {
                    Ok(match s.content_complete(&cid)? {
                        true => s.chunk_list(&cid)?,
                        false => None,
                    })
                },
            )
            .await;
        if let Ok(Ok(Some(list))) = list {
            let list = &list;
            let proven: Vec<PeerId> = futures::stream::iter(holders)
                .map(|peer| async move {
                    self.challenge(peer, cid, list, timeout, true)
                        .await
                        .then_some(peer)
                })
                .buffer_unordered(16)
                .filter_map(|p| async move { p })
                .collect()
                .await;
            holders = proven;
        }
        holders.sort_by_key(|p| p.to_base58());
        Ok(holders)
    }

    /// One of `placed` (other than this node) that says it holds the whole content of `cid`:
    /// the first to answer so.
    pub(crate) async fn holder_among(&self, cid: ContentId, placed: &[PeerId]) -> Option<PeerId> {
        let me = self.policy.me();
        let others = placed.iter().copied().filter(|p| *p != me);
        let answers = ask_all(
            &self.network,
            others,
            fetch::Request::Has { cid },
            ASK_TIMEOUT,
        );
        let mut answers = std::pin::pin!(answers);
        while let Some((peer, answer)) = answers.next().await {
            if complete(&answer) {
                return Some(peer);
            }
        }
        None
    }

    /// Spreads a local write: gossips its record and, under partial replication, announces this
    /// node as a provider of its content (Kademlia), so readers elsewhere find it.
    pub(crate) async fn written(&self, record: &Record) -> Result<(), net::Error> {
        self.network.publish(record.clone()).await?;
        if let Some(cid) = record.cid {
            self.provide(vec![cid]).await;
        }
        Ok(())
    }

    /// Announces content held here as provided (under partial replication only: with `all`,
    /// every node holds everything). Failures are logged, not returned: routing is a help.
    pub(crate) async fn provide(&self, cids: Vec<ContentId>) {
        if cids.is_empty() || self.policy.replicas() == Replicas::All {
            return;
        }
        match self.network.provide(cids).await {
            Ok(()) => {}
            Err(net::Error::NoContentRouting) => {}
            Err(e) => tracing::debug!(error = %e, "cannot announce content as provided"),
        }
    }

    /// Announces everything held here (at start, and when the settings are learnt).
    pub(crate) async fn provide_held(&self) {
        if self.policy.replicas() == Replicas::All {
            return;
        }
        if let Ok(Ok(held)) = self.blocking(|s| s.held()).await {
            let cids: Vec<ContentId> = held.into_iter().map(|(c, _)| c).collect();
            for batch in cids.chunks(4096) {
                self.provide(batch.to_vec()).await;
            }
        }
    }
}
