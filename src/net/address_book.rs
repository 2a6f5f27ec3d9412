//! The address book: the dfs peers this node has been connected to, with the addresses they
//! listen on, kept in the data dir (`peers.json`) so that a restarted node dials them at once,
//! without `--bootstrap`. Bounded ([`MAX_PEERS`], most recently seen first), written atomically
//! on a blocking thread at most every [`SAVE_EVERY`], and when the node stops.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Most peers remembered; the least recently seen is forgotten first.
pub const MAX_PEERS: usize = 256;
/// Least time between two writes of the file.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);
/// A file larger than this is not read (it was not written by dfs).
const MAX_FILE_LEN: u64 = 1 << 20;
/// The version of the file's format.
const VERSION: u32 = 1;

/// One remembered peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
    /// When it was last seen (identified), in milliseconds since the Unix epoch.
    pub last_seen: u64,
}

/// The file's JSON: `{"version": 1, "peers": [{"peer_id", "addrs", "last_seen"}]}`.
#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    peers: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    peer_id: String,
    addrs: Vec<String>,
    last_seen: u64,
}

/// The peers remembered, most recently seen first.
#[derive(Debug)]
pub struct AddressBook {
    path: Option<PathBuf>,
    entries: Vec<Entry>,
    dirty: bool,
    last_save: Option<Instant>,
    /// The file's latest contents, not written yet, and the lock its writers hold: writes run
    /// on blocking threads (never on the swarm's task), in order, the latest contents winning.
    unwritten: Arc<Mutex<Option<Vec<u8>>>>,
    writing: Arc<Mutex<()>>,
}

impl AddressBook {
    /// The book kept at `path` (`None`: kept in memory only). A missing file is an empty book;
    /// an unreadable or malformed one is logged and replaced.
    pub fn load(path: Option<PathBuf>) -> AddressBook {
        let entries = match &path {
            Some(p) => read(p).unwrap_or_else(|e| {
                tracing::warn!(file = %p.display(), error = %e, "ignoring the address book");
                Vec::new()
            }),
            None => Vec::new(),
        };
        AddressBook {
            path,
            entries,
            dirty: false,
            last_save: None,
            unwritten: Arc::default(),
            writing: Arc::default(),
        }
    }

    /// The remembered peers, most recently seen first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// `peer` was seen now, listening on `addrs` (at most `max_addrs` are kept).
    pub fn saw(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, max_addrs: usize) {
        if addrs.is_empty() {
            return;
        }
        self.entries.retain(|e| e.peer != peer);
        self.entries.insert(
            0,
            Entry {
                peer,
                addrs: addrs.into_iter().take(max_addrs).collect(),
                last_seen: crate::record::wall_ms(),
            },
        );
        self.entries.truncate(MAX_PEERS);
        self.dirty = true;
    }

    /// Writes the file, on a blocking thread, if it changed and the last write is older than
    /// [`SAVE_EVERY`].
    pub fn save_if_due(&mut self, now: Instant) {
        if self.dirty
            && self
                .last_save
                .is_none_or(|t| now.saturating_duration_since(t) >= SAVE_EVERY)
            && self.encode(now)
        {
            let write = self.writer();
            tokio::task::spawn_blocking(write);
        }
    }

    /// Writes the file if it changed, and returns once it is written (when the node stops).
    pub fn save(&mut self, now: Instant) {
        self.encode(now);
        self.writer()();
    }

    /// Encodes the book as the file's next contents if it changed; false if it did not.
    fn encode(&mut self, now: Instant) -> bool {
        if self.path.is_none() || !self.dirty {
            return false;
        }
        self.dirty = false;
        self.last_save = Some(now);
        let file = File {
            version: VERSION,
            peers: self
                .entries
                .iter()
                .map(|e| FileEntry {
                    peer_id: e.peer.to_base58(),
                    addrs: e.addrs.iter().map(|a| a.to_string()).collect(),
                    last_seen: e.last_seen,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("an address book encodes");
        *self.unwritten.lock().expect("address book") = Some(bytes);
        true
    }

    /// What writes the latest contents not written yet (nothing if another writer took them).
    fn writer(&self) -> impl FnOnce() + Send + 'static {
        let path = self.path.clone();
        let unwritten = self.unwritten.clone();
        let writing = self.writing.clone();
        move || {
            let Some(path) = path else { return };
            let _writing = writing.lock().expect("address book writer");
            let Some(bytes) = unwritten.lock().expect("address book").take() else {
                return;
            };
            if let Err(e) = crate::datadir::atomic_write(&path, &bytes, false) {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the address book");
            }
        }
    }
}

/// Reads a book; peers or addresses that do not parse are skipped.
fn read(path: &Path) -> Result<Vec<Entry>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    if meta.len() > MAX_FILE_LEN {
        return Err(format!("larger than {MAX_FILE_LEN} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let file: File = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if file.version != VERSION {
        return Err(format!("unknown version {}", file.version));
    }
    let mut entries: Vec<Entry> = file
        .peers
        .into_iter()
        .filter_map(|e| {
            let peer = e.peer_id.parse().ok()?;
            let addrs: Vec<Multiaddr> = e.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            (!addrs.is_empty()).then_some(Entry {
                peer,
                addrs,
                last_seen: e.last_seen,
            })
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
    entries.truncate(MAX_PEERS);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_is_bounded_most_recent_first_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let mut book = AddressBook::load(Some(path.clone()));
        assert!(book.entries().is_empty());
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let peers: Vec<PeerId> = (0..MAX_PEERS + 10).map(|_| PeerId::random()).collect();
        for p in &peers {
            book.saw(*p, vec![addr.clone(); 20], 4);
        }
        // Seen again: first.
        book.saw(peers[MAX_PEERS + 5], vec![addr.clone()], 4);
        assert_eq!(book.entries().len(), MAX_PEERS);
        assert_eq!(book.entries()[0].peer, peers[MAX_PEERS + 5]);
        assert_eq!(book.entries()[1].peer, peers[MAX_PEERS + 9]);
        assert!(book.entries().iter().all(|e| e.addrs.len() <= 4));
        book.save(Instant::now());
        let again = AddressBook::load(Some(path.clone()));
        assert_eq!(again.entries().len(), MAX_PEERS);
        assert!(again
            .entries()
            .iter()
            .any(|e| e.peer == peers[MAX_PEERS + 5]));
        assert!(!again.entries().iter().any(|e| e.peer == peers[0]));
        // A damaged file is an empty book, not a failure.
        std::fs::write(&path, b"{not json").unwrap();
        assert!(AddressBook::load(Some(path)).entries().is_empty());
    }

    /// The periodic write happens on a blocking thread; the latest contents win.
    #[tokio::test]
    async fn a_due_save_writes_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let mut book = AddressBook::load(Some(path.clone()));
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let peer = PeerId::random();
        book.saw(peer, vec![addr], 4);
        book.save_if_due(Instant::now());
        let deadline = Instant::now() + Duration::from_secs(10);
        while AddressBook::load(Some(path.clone())).entries().is_empty() {
            assert!(Instant::now() < deadline, "the book was not written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(AddressBook::load(Some(path)).entries()[0].peer, peer);
    }
}
