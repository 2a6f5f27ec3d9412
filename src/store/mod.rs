//! The local store: content-addressed chunks on disk plus a transactional index of records,
//! behind a cloneable, thread-safe handle. No networking here.
//!
//! On disk, under the store directory:
//! - `index.redb`: the index (see `store/index.rs` for its tables);
//! - `chunks/<xx>/<hash hex>`: one file per distinct chunk of [`INLINE_MAX`] bytes or more,
//!   named by its BLAKE3 hash (`xx` is its first byte), never by a key;
//! - `tmp/`: chunks being written; anything left here after a crash is removed by [`Store::gc`];
//! - `orphans/`: chunk files that no record referenced when the store opened, kept (never
//!   deleted) and taken back when a record needs them; `damaged/`: quarantined copies of chunks
//!   that failed verification (see `store/repair.rs` and `store/scrub.rs`).
//!
//! Chunks shorter than [`INLINE_MAX`] (small files, and the short tail of a large one) are
//! stored inline, in the index's `inline_chunks` table, and written in the record's own
//! transaction. Every chunk path looks in both places (inline first), so an older store whose
//! small chunks are files still reads, and a chunk's location never changes what a caller sees.
//!
//! Durability: a put reads 1 MiB chunks on the calling thread and hands them to a few writer
//! threads, which hash them and write each large chunk not already present to a temp file,
//! fsync it and rename it into place (their fsyncs overlap, so the file system commits them
//! together; see `store/put.rs`). Then the record goes to the group committer
//! (`store/commit.rs`): the directories of all the batch's chunk files are fsynced once, and
//! the records of all the puts, deletes and merges that queued meanwhile commit in one redb
//! transaction (one fsync), with their inline chunks. Only then is each put acknowledged. A
//! chunk file at its final path was always fsynced before its rename, so it is safe to dedupe
//! against; one that a crash left without a record is unreferenced garbage for the next
//! [`Store::gc`].
//!
//! Garbage collection: the index counts references (live records per content id, chunk lists
//! per chunk) in the same transaction as each record change. Chunks whose count drops to zero
//! (files and inline ones) are removed right after the commit, unless pinned by a running put,
//! fetch or reader; see `store/gc.rs` for why that is safe against a concurrent put.
//!
//! Memory: a put holds at most 10 chunk buffers, a reader one; neither depends on the file size
//! (the bench's 1 GiB put and get peak at about 16 MiB RSS).
//!
//! The handle's methods live by role: records and heads here (open, put, get, delete, merge,
//! list); `content.rs` (chunk lists, chunks, pins, the gc, the [`Reader`]); `grants.rs` (who may
//! write); `versions.rs` (log, restore, history's expiry); `sync_index.rs` (the digests
//! anti-entropy compares); the group commit in `commit.rs`, the index's tables in `index.rs`.

mod bulk;
mod chunks;
mod commit;
mod content;
mod evict;
mod gc;
mod grants;
mod heads;
mod history;
mod index;
mod put;
mod repair;
mod scrub;
mod sync_index;
mod versions;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use libp2p::identity::Keypair;
use redb::{Database, ReadTransaction, ReadableTable};

use crate::clock::{Hlc, NetworkTime};
use crate::record::{
    author_key, key_hash, validate_key, ContentId, Hash, InvalidRecord, Record, VersionId,
};
use crate::trust::Grant;
use chunks::ChunkDir;
use commit::{Committer, Done, Op};
use gc::Pins;
use index::{decode, Content, HeadsChange, Tables};

pub use bulk::HeadsPage;
pub use content::{PinGuard, Reader};
pub use history::{DEFAULT_KEEP_BYTES, DEFAULT_KEEP_DAYS};
pub use index::MAX_HEADS;

pub use repair::{diagnose, repair, RepairReport, DAMAGED_DIR, INDEX_FILE, ORPHANS_DIR};
pub use scrub::ScrubReport;

/// Number of leaves of the anti-entropy tree, whose geometry [`crate::protocols::sync`] defines.
pub use crate::protocols::sync::LEAVES as SYNC_LEAVES;

/// Chunks shorter than this many bytes are stored in the index (`inline_chunks`) instead of a
/// file of their own.
///
/// A chunk file costs an inode, a directory entry, at least one 4 KiB block, and two fsyncs
/// (the file, then its directory after the rename) that no other put can share. Inline, the
/// bytes ride in the record's transaction, whose single fsync a group commit shares among every
/// put of the batch. The trade turns for larger chunks: redb writes a value again into its
/// copy-on-write pages on every commit that touches its leaf, and the index (which every record
/// read and anti-entropy walk goes through) grows by the chunk; a file's two fsyncs matter less
/// next to its bytes. 16 KiB is the bound iroh-blobs' file store uses for the same choice, and
/// keeps the index at most 16 KiB per small file; it covers the 4 KiB puts that dominate small
/// workloads and the short tails of large files.
pub const INLINE_MAX: usize = 16 * 1024;

/// Most chunk hashes kept in the lists of content still arriving (8 Mi hashes: 256 MiB of
/// index, the lists of 8 TiB of content). A list that would go beyond waits
/// (`StoreError::ListBudget`) until content completes or goes: a peer cannot fill the index
/// with lists of content that never arrives.
pub const MAX_PENDING_HASHES: u64 = 8 << 20;

/// How often `get` retries when the content it found is freed before it could pin it.
const GET_ATTEMPTS: usize = 3;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Invalid(#[from] InvalidRecord),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("content of {0} is not complete on this node")]
    Incomplete(String),
    #[error("integrity error: chunk {chunk} of {key} does not match its hash")]
    Integrity { key: String, chunk: Hash },
    #[error("chunk does not match its hash {0}")]
    BadChunk(Hash),
    #[error("chunk list does not match content id {0}")]
    BadChunkList(Hash),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("index error: {0}")]
    Index(String),
    #[error("a node is already running on this data dir (its store {} is open)", .0.display())]
    Locked(PathBuf),
    #[error("no room for the chunk list of {len} chunks: {pending} chunk hashes of content still arriving are stored already")]
    ListBudget { pending: u64, len: u64 },
    #[error("{} was written by an older dfs (record format {}; this one reads format 3, with causal contexts); move the data dir away and join the network again", .0.display(), .1)]
    OldFormat(PathBuf, u64),
    #[error("version {0} is a delete: there is no content to read or restore")]
    IsDelete(String),
    #[error(transparent)]
    ClockOff(#[from] crate::clock::ClockOff),
    #[error("another node signs with this node's identity ({0}): was one ticket used on two machines? Writes are refused here; stop one of the two nodes, move its data dir away, and join it again with a new ticket (`dfs invite`)")]
    IdentityInUse(String),
    #[error("the index {} is damaged: {reason}; no chunk was deleted. With the node stopped, run `dfs repair --data-dir <its data dir>` to rebuild the index from the chunks on disk and the peers", path.display())]
    IndexDamaged { path: PathBuf, reason: String },
}

/// Decides whether a record from elsewhere counts (its author may write): the membership
/// rules of `crate::trust`, applied inside the merge's transaction so that a change of
/// membership and a merge never interleave.
pub type Admission = Arc<dyn Fn(&Record) -> bool + Send + Sync>;

/// A record with its local state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The key's current version.
    pub record: Record,
    /// Versions concurrent with the current one (neither saw the other), kept until a write
    /// that saw them replaces them. Best first by [`Record::cmp_current`].
    pub conflicts: Vec<Record>,
    /// For each conflict, in order: its content is complete here.
    pub conflicts_local: Vec<bool>,
    /// The whole content is verified and durable here (false for tombstones).
    pub local: bool,
    /// Chunks of the content found damaged here (not matching their hash) and not yet
    /// replaced by a healthy copy from a peer.
    pub damaged: u64,
}

/// What [`Store::apply`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The record was newer than what this node had and is now stored. `fetch` is true when it
    /// is a live record whose content is not complete locally (the caller fetches it).
    Updated {
        previous: Option<Record>,
        fetch: bool,
    },
    /// This node already had this record: nothing changed.
    Unchanged,
    /// A version this node has replaces the record: it went to history only.
    Kept,
    /// The record's clock is more than `crate::clock::MAX_AHEAD_MS` ahead of the network's
    /// time. Nothing changed; it counts once it is no longer that far ahead.
    Ahead,
    /// The record does not count: invalid, its author may not write, or its author signed
    /// another record under the same sequence number. Nothing changed.
    Refused,
}

/// The handle of a local store; clones share it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Most equivocating authors remembered.
const MAX_EQUIVOCATORS: usize = 1024;
impl Inner {
    /// Flags `record`'s author: it signed two records under one number. Logged once per author.
    fn equivocated(&self, record: &Record) {
        let mut flagged = self.equivocators.lock().unwrap_or_else(|e| e.into_inner());
        if flagged.len() < MAX_EQUIVOCATORS && flagged.insert(record.author.clone()) {
            let author = libp2p::PeerId::from_bytes(&record.author)
                .map(|p| p.to_base58())
                .unwrap_or_default();
            tracing::error!(
                %author,
                seq = record.seq,
                key = %record.key,
                "a member signed two records under one number (a stolen key, or a data dir restored from a backup): both count as versions while it may write; an admin should revoke it (`dfs deny`)"
            );
        }
    }

    /// Whether `record` counts: valid by itself (a record stored by an earlier version under a
    /// key the grammar now refuses does not, and is dropped at start), and admitted by the
    /// membership.
    fn admits(&self, record: &Record) -> bool {
        if record.validate().is_err() {
            return false;
        }
        match &*self.admission.read().expect("admission lock") {
            Some(admit) => admit(record),
            None => true,
        }
    }
}

struct Inner {
    dir: PathBuf,
    db: Database,
    chunks: ChunkDir,
    pins: Pins,
    clock: Hlc,
    /// The network's time: the wall clock, peers' offsets, the bound on records ahead.
    time: Arc<NetworkTime>,
    /// The most chunk hashes kept in lists of content still arriving.
    list_budget: AtomicU64,
    /// This node's key: it signs the records of local puts and deletes.
    keypair: Keypair,
    /// This node's peer id bytes (the author of its records).
    author: Vec<u8>,
    admission: RwLock<Option<Admission>>,
    /// Another node signs with this node's key (see `commit.rs`, `merge_one`): local writes
    /// are refused.
    twin: std::sync::atomic::AtomicBool,
    /// Authors seen signing two records under one number (see `commit.rs`, `equivocation`).
    equivocators: Mutex<std::collections::BTreeSet<Vec<u8>>>,
    /// XOR of the fingerprints of the records in each leaf. Updated by XOR after each commit,
    /// so concurrent updates commute.
    leaves: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Grows with every change of a key's heads (see [`Store::changes`]).
    changes: AtomicU64,
    committer: Committer,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn leaf_of(key: &str) -> usize {
    crate::protocols::sync::leaf_of(key_hash(key)) as usize
}

fn read_record(txn: &ReadTransaction, key: &str) -> Result<Option<Record>, StoreError> {
    let t = txn.open_table(index::RECORDS)?;
    let r = t.get(key)?;
    r.map(|v| decode(v.value())).transpose()
}

/// Whether each record's content is complete here (false for tombstones).
fn locals(txn: &ReadTransaction, records: &[Record]) -> Result<Vec<bool>, StoreError> {
    records
        .iter()
        .map(|r| match &r.cid {
            Some(cid) => is_complete(txn, cid),
            None => Ok(false),
        })
        .collect()
}

/// A key's conflicts (heads other than the current version), best first.
fn read_conflicts(txn: &ReadTransaction, key: &str) -> Result<Vec<Record>, StoreError> {
    let t = txn.open_table(index::CONFLICTS)?;
    let (lo, hi) = index::key_range(key);
    let mut out = Vec::new();
    for item in t.range(lo.as_slice()..hi.as_slice())? {
        let (_, v) = item?;
        out.push(decode::<Record>(v.value())?);
    }
    out.sort_by(|a, b| b.cmp_current(a));
    Ok(out)
}

/// One version of a key in `dfs log`: where it stands here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub record: Record,
    pub state: VersionState,
    /// Whether its content is complete on this node.
    pub local: bool,
}

/// Where a version stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionState {
    Current,
    Conflict,
    /// Replaced by a later write (or a delete), kept in history.
    Replaced,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Current => "current",
            VersionState::Conflict => "conflict",
            VersionState::Replaced => "replaced",
        }
    }
}

fn read_content(txn: &ReadTransaction, cid: &ContentId) -> Result<Option<Content>, StoreError> {
    let t = txn.open_table(index::CONTENTS)?;
    let r = t.get(&cid.0)?;
    r.map(|v| decode(v.value())).transpose()
}

fn is_complete(txn: &ReadTransaction, cid: &ContentId) -> Result<bool, StoreError> {
    let t = txn.open_table(index::CONTENT_STATE)?;
    let state = t.get(&cid.0)?;
    Ok(state.is_some_and(|v| v.value() == 1))
}

impl Store {
    /// Opens (creating if needed) the store under `dir`. `keypair` (ed25519, else
    /// `Invalid(BadAuthor)`) signs the records of local puts and deletes. Runs a full
    /// [`gc`](Store::gc).
    pub fn open(dir: &Path, keypair: Keypair) -> Result<Store, StoreError> {
        Store::open_with(dir, keypair, Arc::new(NetworkTime::default()))
    }

    /// [`Store::open`] with the node's clock and view of the network's time (an injected,
    /// skewed clock in tests).
    pub fn open_with(
        dir: &Path,
        keypair: Keypair,
        time: Arc<NetworkTime>,
    ) -> Result<Store, StoreError> {
        if author_key(&keypair.public().to_peer_id().to_bytes()).is_none() {
            return Err(InvalidRecord::BadAuthor.into());
        }
        std::fs::create_dir_all(dir)?;
        let chunks = ChunkDir::open(dir)?;
        // A damaged index is an error naming the file, never a panic or an empty store.
        let db = repair::open_index(dir)?;
        let txn = db.begin_write()?;
        drop(Tables::open(&txn)?);
        {
            let mut meta = txn.open_table(index::META)?;
            let format = meta.get(index::FORMAT)?.map(|v| v.value());
            match format {
                Some(index::RECORD_FORMAT) => {}
                Some(old) => return Err(StoreError::OldFormat(dir.to_path_buf(), old)),
                None => {
                    let records = txn.open_table(index::RECORDS)?;
                    if records.first()?.is_some() {
                        return Err(StoreError::OldFormat(dir.to_path_buf(), 1));
                    }
                    meta.insert(index::FORMAT, index::RECORD_FORMAT)?;
                }
            }
        }
        txn.commit()?;

        let leaves: Box<[AtomicU64]> = (0..SYNC_LEAVES).map(|_| AtomicU64::new(0)).collect();
        let txn = db.begin_read()?;
        let records = txn.open_table(index::RECORDS)?;
        let mut count = 0;
        let last = txn
            .open_table(index::META)?
            .get(index::CLOCK)?
            .map_or(0, |v| v.value());
        let conflicts = txn.open_table(index::CONFLICTS)?;
        let values = records
            .iter()?
            .map(|item| item.map(|(_, v)| v))
            .chain(conflicts.iter()?.map(|item| item.map(|(_, v)| v)));
        for v in values {
            let r: Record = decode(v?.value())?;
            leaves[leaf_of(&r.key)].fetch_xor(r.fingerprint(), Ordering::Relaxed);
            count += 1;
        }
        drop(records);
        drop(conflicts);
        drop(txn);

        let store = Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db,
                chunks,
                pins: Pins::default(),
                clock: Hlc::new(time.wall().clone(), last),
                time,
                list_budget: AtomicU64::new(MAX_PENDING_HASHES),
                author: keypair.public().to_peer_id().to_bytes(),
                keypair,
                admission: RwLock::new(None),
                twin: std::sync::atomic::AtomicBool::new(false),
                equivocators: Mutex::default(),
                leaves,
                count: AtomicU64::new(count),
                changes: AtomicU64::new(0),
                committer: Committer::default(),
            }),
        };
        // Chunk files the index does not know go to orphans/, never away (see store/repair.rs).
        gc::sweep(
            &store.inner.db,
            &store.inner.chunks,
            &store.inner.pins,
            Some(dir),
        )?;
        Ok(store)
    }

    /// The directory of this store.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// True when the key has a live record whose content is complete here.
    pub fn has(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.stat(key)?.is_some_and(|s| s.local))
    }

    /// The key's record (tombstones included) and whether its content is complete here.
    pub fn stat(&self, key: &str) -> Result<Option<Stat>, StoreError> {
        validate_key(key)?;
        let txn = self.inner.db.begin_read()?;
        let Some(record) = read_record(&txn, key)? else {
            return Ok(None);
        };
        let local = match &record.cid {
            Some(cid) => is_complete(&txn, cid)?,
            None => false,
        };
        let damaged = scrub::damaged_of(&txn, &record)?;
        let conflicts = read_conflicts(&txn, key)?;
        let conflicts_local = locals(&txn, &conflicts)?;
        Ok(Some(Stat {
            record,
            conflicts,
            conflicts_local,
            local,
            damaged,
        }))
    }

    /// The network's time as this node sees it (shared with replication, which measures it).
    pub fn time(&self) -> &Arc<NetworkTime> {
        &self.inner.time
    }

    /// The key's record (tombstones included).
    pub fn record(&self, key: &str) -> Result<Option<Record>, StoreError> {
        validate_key(key)?;
        let txn = self.inner.db.begin_read()?;
        read_record(&txn, key)
    }

    /// Every record, tombstones included, sorted by key.
    pub fn list(&self) -> Result<Vec<Stat>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let records = txn.open_table(index::RECORDS)?;
        let any_damaged = scrub::any_damaged(&txn)?;
        // Conflicts are rare: read them all once.
        let mut conflicts: std::collections::HashMap<String, Vec<Record>> = Default::default();
        for item in txn.open_table(index::CONFLICTS)?.iter()? {
            let (_, v) = item?;
            let r: Record = decode(v.value())?;
            conflicts.entry(r.key.clone()).or_default().push(r);
        }
        for list in conflicts.values_mut() {
            list.sort_by(|a, b| b.cmp_current(a));
        }
        let mut out = Vec::new();
        for item in records.iter()? {
            let (_, v) = item?;
            let record: Record = decode(v.value())?;
            // The complete flag alone: a chunk list may hold a million hashes.
            let local = match &record.cid {
                Some(cid) => is_complete(&txn, cid)?,
                None => false,
            };
            let damaged = match any_damaged {
                true => scrub::damaged_of(&txn, &record)?,
                false => 0,
            };
            out.push(Stat {
                conflicts_local: match conflicts.get(&record.key) {
                    Some(list) => locals(&txn, list)?,
                    None => Vec::new(),
                },
                conflicts: conflicts.remove(&record.key).unwrap_or_default(),
                record,
                local,
                damaged,
            });
        }
        Ok(out)
    }

    /// Streams `reader` into chunks, writes them durably and commits the record with a new
    /// version. Returns only once the put is durable. If the reader fails (or yields more than
    /// [`MAX_FILE_SIZE`](crate::record::MAX_FILE_SIZE) bytes), nothing of this put stays and the
    /// key's previous record is untouched.
    pub fn put(&self, key: &str, reader: impl Read) -> Result<Record, StoreError> {
        validate_key(key)?;
        self.inner.time.check_local()?;
        self.no_twin()?;
        let inner = &*self.inner;
        let put::Streamed {
            hashes,
            size,
            renamed,
            files,
            inline,
            result,
        } = put::write_content(&inner.chunks, &inner.pins, reader);
        let committed = result.and_then(|()| {
            self.submit(Op::Put {
                key: key.to_string(),
                size,
                hashes: hashes.clone(),
                files,
                inline,
            })
        });
        inner.pins.unpin_all(&hashes);
        match committed {
            Ok(Done::Record(record)) => Ok(record),
            Ok(_) => unreachable!("a put commits a record"),
            Err(e) => {
                self.free(&renamed);
                Err(e)
            }
        }
    }

    /// A reader over the key's content that verifies every chunk as it reads it.
    pub fn get(&self, key: &str) -> Result<Reader, StoreError> {
        self.read(key, None)
    }

    /// A reader over one version's content (current, conflict or in history).
    pub fn get_version(&self, key: &str, version: &VersionId) -> Result<Reader, StoreError> {
        self.read(key, Some(version))
    }

    fn read(&self, key: &str, version: Option<&VersionId>) -> Result<Reader, StoreError> {
        validate_key(key)?;
        for _ in 0..GET_ATTEMPTS {
            let record = match version {
                None => read_record(&self.inner.db.begin_read()?, key)?,
                Some(v) => self.version(key, v)?,
            };
            let txn = self.inner.db.begin_read()?;
            let record = match record {
                Some(r) if !r.is_tombstone() => r,
                Some(r) if version.is_some() => {
                    return Err(StoreError::IsDelete(r.version().to_hex()))
                }
                _ => return Err(StoreError::NotFound(key.to_string())),
            };
            let cid = record.cid.expect("live record");
            let content = match read_content(&txn, &cid)? {
                Some(c) if c.complete => c,
                _ => return Err(StoreError::Incomplete(key.to_string())),
            };
            drop(txn);
            // Pin, then check the content is still referenced: from then on gc keeps it.
            let guard = self.pin(content.chunks);
            if is_complete(&self.inner.db.begin_read()?, &cid)? {
                return Ok(Reader {
                    guard,
                    record,
                    next: 0,
                    buf: Vec::new(),
                    pos: 0,
                });
            }
        }
        Err(StoreError::Incomplete(key.to_string()))
    }

    /// Writes a tombstone with a new version, freeing the content. NotFound if the key has no
    /// live record.
    pub fn delete(&self, key: &str) -> Result<Record, StoreError> {
        validate_key(key)?;
        self.inner.time.check_local()?;
        self.no_twin()?;
        match self.submit(Op::Delete {
            key: key.to_string(),
        })? {
            Done::Record(record) => Ok(record),
            _ => unreachable!("a delete commits a record"),
        }
    }

    /// Merges a record from elsewhere by last-writer-wins (after validating it and moving the
    /// clock past it), freeing content no longer referenced.
    pub fn apply(&self, record: Record) -> Result<Applied, StoreError> {
        record.validate()?;
        let mut outcomes = self.merge(vec![record])?;
        Ok(outcomes.pop().expect("one outcome per record"))
    }

    /// Merges many records in one transaction (one fsync), as anti-entropy receives them.
    /// Invalid records are skipped (`Unchanged`). Returns what happened to each, in order.
    pub fn apply_batch(&self, records: Vec<Record>) -> Result<Vec<Applied>, StoreError> {
        self.merge(records)
    }

    fn merge(&self, records: Vec<Record>) -> Result<Vec<Applied>, StoreError> {
        match self.submit(Op::Merge { records })? {
            Done::Applied(outcomes) => Ok(outcomes),
            _ => unreachable!("a merge gives outcomes"),
        }
    }
}
