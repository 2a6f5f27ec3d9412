//! Which network a node belongs to, decided at start from its data dir and flags: the network
//! the data dir remembers; else the one of a `--join` ticket (whose identity the node takes);
//! else, with `--bootstrap` alone, the one its bootstrap peers belong to, learnt once connected
//! (the node is a reader until an admin allows it); else a new network that this node owns.

use std::path::Path;
use std::time::Duration;

use libp2p::identity::Keypair;

use super::Error;
use crate::datadir::{self, DataDir};
use crate::net::Network;
use crate::protocols::fetch;
use crate::replication::Replication;
use crate::trust::settings::Settings;
use crate::trust::{self, Members, Membership, Ticket};

/// How often a node that does not know its network yet asks its peers: quickly at first (a
/// reader that just started waits for this before it can judge any record), then less often.
const LEARN_FIRST: Duration = Duration::from_millis(10);
const LEARN_AT_MOST: Duration = Duration::from_secs(1);

/// What start-up decided.
pub(crate) struct Decided {
    pub keypair: Keypair,
    pub members: Members,
    /// The network id, if known now.
    pub network: Option<String>,
    /// This start creates the network (the node owns it): [`remember`] it once the node runs.
    pub created: bool,
}

fn start_error(what: impl std::fmt::Display) -> Error {
    Error::Start(what.to_string())
}

/// The network id the data dir remembers, if any.
pub(crate) fn remembered(dir: &Path) -> Result<Option<String>, Error> {
    let path = DataDir::new(dir).network_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_string();
            trust::owner_of(&id)
                .ok_or_else(|| start_error(format!("{} is damaged", path.display())))?;
            Ok(Some(id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(start_error(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Remembers the network id in the data dir.
pub(crate) fn remember(dir: &Path, network: &str) -> Result<(), Error> {
    let path = DataDir::new(dir).network_file();
    datadir::atomic_write(&path, format!("{network}\n").as_bytes(), false)
        .map_err(|e| start_error(format!("cannot write {}: {e}", path.display())))
}

/// True when the data dir's identity owns the network it remembers (or it remembers none) and
/// nothing was ever written or granted in it: no record, no grant. Such a data dir is the trace
/// of a first start without `--join` (a forgotten flag, a start that then failed), and may still
/// join another network: its network has no file and no member but its owner.
fn owns_an_empty_network(
    dir: &Path,
    identity: &Keypair,
    network: Option<&str>,
) -> Result<bool, Error> {
    let own = trust::network_id(&identity.public().to_peer_id());
    if network.is_some_and(|n| n != own) {
        return Ok(false);
    }
    let store = crate::store::Store::open(&DataDir::new(dir).store(), identity.clone())?;
    Ok(store.record_count() == 0 && store.grants()?.is_empty())
}

/// Leaves the empty network of [`owns_an_empty_network`]: its network and settings files are
/// removed (first: a failure later leaves no network without its owner's identity), its store
/// (no record, but maybe chunks of an interrupted put) and identity kept aside as
/// `store.<peer id>` and `identity.key.<peer id>`; nothing is deleted that held data.
fn abandon(dir: &Path, identity: &Keypair) -> Result<(), Error> {
    let layout = DataDir::new(dir);
    let peer = identity.public().to_peer_id();
    let cannot = |what: &Path, e: std::io::Error| {
        start_error(format!(
            "cannot leave the empty network of this data dir: {}: {e}",
            what.display()
        ))
    };
    for file in [layout.network_file(), layout.settings_file()] {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(cannot(&file, e)),
        }
    }
    let store = layout.store();
    if store.exists() {
        let aside = dir.join(format!("store.{peer}"));
        std::fs::rename(&store, &aside).map_err(|e| cannot(&aside, e))?;
    }
    let kept = dir.join(format!("identity.key.{peer}"));
    std::fs::rename(layout.identity_key(), &kept).map_err(|e| cannot(&kept, e))?;
    tracing::info!(
        old_identity = %peer,
        kept = %kept.display(),
        "this data dir owned an empty network (no records, no members): leaving it to join the ticket's network"
    );
    Ok(())
}

/// Decides the identity and network of a node (see the module's documentation).
pub(crate) fn decide(
    dir: &Path,
    join: Option<&Ticket>,
    bootstrapping: bool,
) -> Result<Decided, Error> {
    let layout = DataDir::new(dir);
    let mut network = remembered(dir)?;
    if let Some(ticket) = join {
        if layout.identity_key().exists() {
            let existing = crate::identity::load_or_create(dir).map_err(start_error)?;
            if existing.public() != ticket.key.public()
                && owns_an_empty_network(dir, &existing, network.as_deref())?
            {
                abandon(dir, &existing)?;
                network = None;
            }
        }
        if let Some(known) = &network {
            if *known != ticket.network {
                return Err(start_error(format!(
                    "this data dir belongs to network {known}; the ticket is for {}: use a fresh \
                     data dir to join another network",
                    ticket.network
                )));
            }
        }
        if layout.identity_key().exists() {
            let existing = crate::identity::load_or_create(dir).map_err(start_error)?;
            if existing.public() != ticket.key.public() {
                return Err(start_error(format!(
                    "this data dir already has its own identity ({}): --join needs a fresh data \
                     dir (an admin can instead run `dfs allow {}`)",
                    existing.public().to_peer_id(),
                    existing.public().to_peer_id()
                )));
            }
        } else {
            let bytes = ticket
                .key
                .to_protobuf_encoding()
                .expect("ed25519 keys always encode");
            datadir::atomic_write(&layout.identity_key(), &bytes, true)
                .map_err(|e| start_error(format!("cannot write the identity: {e}")))?;
        }
        if network.is_none() {
            remember(dir, &ticket.network)?;
            network = Some(ticket.network.clone());
        }
    }
    let keypair = crate::identity::load_or_create(dir).map_err(start_error)?;
    let created = network.is_none() && !bootstrapping;
    if created {
        // Remembered by the caller once the node runs: a start that fails creates nothing.
        network = Some(trust::network_id(&keypair.public().to_peer_id()));
    }
    let members = match &network {
        Some(id) => Members::known(Membership::new(
            trust::owner_of(id).expect("checked network id"),
        )),
        None => Members::unknown(),
    };
    Ok(Decided {
        keypair,
        members,
        network,
        created,
    })
}

/// The network's settings at start: those the data dir keeps; else a ticket's; else, for the
/// network's owner, new ones with `requested` (default `all`), kept in the data dir (by the
/// caller with [`keep_settings`] when this start creates the network: once the node runs). A node
/// that knows none learns them from its peers (`Replication::adopt_settings`). `requested`
/// different from the network's is refused: the factor is set when the network is created.
pub(crate) fn settings(
    dir: &Path,
    network: Option<&str>,
    keypair: &Keypair,
    join: Option<&Ticket>,
    requested: Option<crate::placement::Replicas>,
    now_ms: u64,
    creating: bool,
) -> Result<Option<Settings>, Error> {
    let Some(network) = network else {
        return Ok(None);
    };
    let path = DataDir::new(dir).settings_file();
    let kept = match std::fs::read(&path) {
        Ok(bytes) => Some(Settings::decode(&bytes, network).map_err(|e| {
            start_error(format!(
                "{} is damaged ({e}): remove it, the node learns the settings from its peers",
                path.display()
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(start_error(format!("cannot read {}: {e}", path.display()))),
    };
    let owner = trust::network_id(&keypair.public().to_peer_id()) == network;
    let settings = match kept {
        Some(s) => Some(s),
        None => {
            let made = match join.and_then(|t| t.settings.clone()) {
                Some(s) => Some(s),
                None if owner => Some(Settings::new(
                    keypair,
                    requested.unwrap_or(crate::placement::Replicas::All),
                    now_ms,
                )),
                None => None,
            };
            if let Some(s) = made.as_ref().filter(|_| !creating) {
                keep_settings(dir, s)?;
            }
            made
        }
    };
    if let (Some(s), Some(r)) = (&settings, requested) {
        if s.replicas() != r {
            return Err(start_error(format!(
                "this network keeps {} copies of each file (set when it was created): --replicas {r} cannot change it",
                s.replicas()
            )));
        }
    }
    Ok(settings)
}

/// Keeps the network's settings in the data dir.
pub(crate) fn keep_settings(dir: &Path, settings: &Settings) -> Result<(), Error> {
    let path = DataDir::new(dir).settings_file();
    datadir::atomic_write(&path, &settings.encode(), false)
        .map_err(|e| start_error(format!("cannot write {}: {e}", path.display())))
}

/// Loads the stored grants into the membership. Grants may be stored in any order (an
/// appointment after the grants of the admin it appointed), so passes repeat while they add.
pub(crate) fn load_grants(members: &Members, grants: Vec<trust::Grant>) {
    let mut pending = grants;
    loop {
        let before = pending.len();
        pending.retain(|g| members.insert(g.clone()).is_err());
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
}

/// For a node that does not know its network yet: asks connected peers until one answers, then
/// remembers the network, joins its topics and starts anti-entropy.
pub(crate) async fn learn(dir: std::path::PathBuf, network: Network, replication: Replication) {
    let mut pause = LEARN_FIRST;
    loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(LEARN_AT_MOST);
        let Ok(peers) = network.peers().await else {
            return;
        };
        for peer in peers.into_iter().filter(|p| p.dfs) {
            let Ok(fetch::Response::Network { id, settings }) =
                network.fetch(peer.peer_id, fetch::Request::Network).await
            else {
                continue;
            };
            let Some(owner) = trust::owner_of(&id) else {
                tracing::debug!(peer = %peer.peer_id, "peer named an invalid network id");
                continue;
            };
            if let Err(e) = remember(&dir, &id) {
                tracing::warn!(error = %e, "cannot remember the network");
                continue;
            }
            replication.members().learn(Membership::new(owner));
            if let Some(bytes) = settings {
                replication.adopt_settings(&bytes).await;
            }
            tracing::info!(
                network = %id,
                from = %peer.peer_id,
                "joined the network as a reader; an admin can grant write access with `dfs allow`"
            );
            let _ = network.join(id).await;
            replication.sync_now().await;
            return;
        }
    }
}
