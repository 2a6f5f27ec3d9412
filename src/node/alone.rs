//! Says so when a node that expects peers has none some time after start, and why where the
//! network task knows (the last dial that failed): a node alone neither receives nor spreads a
//! write, and nothing else would tell its user.

use std::time::Duration;

use crate::net::{Network, Reach};
use crate::replication::Replication;

/// Why a node that has no peer has none, in words for its user: the last failed dial, else
/// that it knows no address at all.
pub(crate) fn cause(reach: &Reach) -> String {
    match reach.last_dial_error() {
        Some(error) => format!("the last dial failed: {error}"),
        None => {
            "it knows no peer address: give --bootstrap MULTIADDR, or run `dfs connect MULTIADDR`"
                .into()
        }
    }
}

/// Waits `after`, then warns if the node has no peer although it expects some: it was given
/// bootstrap addresses or a ticket (`dialled`), its network has other members, or it has not
/// learnt its network yet. An owner alone in a network of its own is not warned.
pub(crate) async fn watch(
    network: Network,
    replication: Replication,
    dialled: bool,
    after: Duration,
) {
    tokio::time::sleep(after).await;
    let Ok(peers) = network.peers().await else {
        return;
    };
    if !peers.is_empty() {
        return;
    }
    let members = replication
        .members()
        .with(|m| m.members().len())
        .unwrap_or(0);
    let learning = replication.members().with(|_| ()).is_none();
    if !(dialled || learning || members > 1) {
        return;
    }
    let what = if learning {
        "it does not know its network yet, and cannot write or judge records until a peer tells it"
    } else {
        "writes neither arrive nor leave until a peer connects"
    };
    tracing::warn!(
        "no peer {} s after start: {what}; {}",
        after.as_secs(),
        cause(network.reach())
    );
}
