//! Index damage and the way back: a damaged index is a clear error, never a panic, an empty
//! store or a deleted chunk; chunk files the index does not know at open are kept in
//! `orphans/` (and reused when a record needs them); `dfs repair` moves a damaged index aside
//! so that the node can rebuild its records from its peers and reuse the chunks on disk.
//!
//! - **Opening** ([`open_index`]): a missing `index.redb` is created only when the store holds
//!   no chunk file (a new store); an empty, truncated or corrupt one, or one whose records do not
//!   decode, fails with [`StoreError::IndexDamaged`] naming the file and `dfs repair`. redb
//!   panics on some truncated files: its open and the check run under `catch_unwind`, with the
//!   panic's message kept out of the log.
//! - **Orphans**: the sweep at open moves chunk files no chunk list references to
//!   `orphans/<hash hex>` instead of deleting them, whatever the state of the index. A later
//!   look for a missing chunk ([`Store::has_chunk`]) takes it back from there after verifying
//!   it, so a transfer does not fetch what an orphan holds. Nothing in dfs deletes `orphans/`:
//!   it holds what a crash left between a chunk's write and its record's commit (small), or the
//!   chunks of a lost index; an operator may delete it.
//! - **Repair** ([`repair`], `dfs repair` on a stopped node): the index is renamed to
//!   `index.redb.damaged-<unix time>`, every chunk file is verified (good ones to `orphans/`,
//!   bad ones to `damaged/`) and a fresh index is created. At its next start the node gets the
//!   records back from its peers by anti-entropy, and its transfers adopt the orphans instead
//!   of downloading them. Records and small (inline) chunks that were only in the lost index
//!   and on no peer are lost with it.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use redb::{Database, ReadableTable, TableError};

use super::index::{self, decode, Content, Tables};
use super::{Store, StoreError};
use crate::record::Hash;

/// File name of the index in the store directory.
pub const INDEX_FILE: &str = "index.redb";
/// Directory (in the store directory) of chunk files that no record referenced at open.
pub const ORPHANS_DIR: &str = "orphans";
/// Directory (in the store directory) of chunk copies that failed verification.
pub const DAMAGED_DIR: &str = "damaged";

/// Opens the index of the store in `dir` (see the module's documentation): creates it for a new
/// store, refuses a missing one when chunk files exist, and turns every failure to open or read
/// it, panics included, into [`StoreError::IndexDamaged`].
pub(crate) fn open_index(dir: &Path) -> Result<Database, StoreError> {
    let path = dir.join(INDEX_FILE);
    let damaged = |reason: String| StoreError::IndexDamaged {
        path: path.clone(),
        reason,
    };
    match fs::metadata(&path) {
        Ok(m) if m.len() == 0 => return Err(damaged("the file is empty".into())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let chunks = count_chunk_files(dir)?;
            if chunks > 0 {
                return Err(damaged(format!(
                    "the file is missing, but the store holds {chunks} chunk files"
                )));
            }
            return index_builder()
                .create(&path)
                .map_err(|e| locked_or(dir, e, damaged));
        }
        Err(e) => return Err(e.into()),
    }
    let db = match quietly(|| index_builder().open(&path)) {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => return Err(locked_or(dir, e, damaged)),
        Err(panicked) => return Err(damaged(format!("redb cannot read it ({panicked})"))),
    };
    match quietly(|| check(&db)) {
        Ok(Ok(())) => Ok(db),
        Ok(Err(e)) => Err(damaged(e.to_string())),
        Err(panicked) => Err(damaged(format!("redb cannot read it ({panicked})"))),
    }
}

/// Memory redb may keep for the index's pages. Its default, 1 GiB, let a node that merges a
/// million records grow towards that much (every transaction writes new pages); 32 MiB made
/// the index's largest chunk lists (content of up to 8 Mi chunks still arriving) slow to update,
/// and so did 64 MiB (`tests/it/replication.rs`, `records_claiming_huge_files_stay_within_the_list_budget`).
const INDEX_CACHE: usize = 128 << 20;

/// How the index is opened.
fn index_builder() -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(INDEX_CACHE);
    builder
}

fn locked_or(
    dir: &Path,
    e: redb::DatabaseError,
    damaged: impl Fn(String) -> StoreError,
) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(dir.to_path_buf()),
        // Not the file's fault: say what the system said.
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() == io::ErrorKind::PermissionDenied =>
        {
            StoreError::Io(e)
        }
        e => damaged(e.to_string()),
    }
}

/// Reads every record and chunk list (the tables a node needs to start), so that a corrupt
/// entry is found at open rather than by a request. Records are checked as CBOR only, not as
/// the current [`Record`](crate::record::Record): an index of an older record format is for
/// `Store::open` to recognise, not damage. Tables that do not exist yet are fine.
fn check(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_read()?;
    match txn.open_table(index::RECORDS) {
        Ok(t) => {
            for item in t.iter()? {
                let (_, v) = item?;
                let _: ciborium::Value = decode(v.value())?;
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match txn.open_table(index::CONTENTS) {
        Ok(t) => {
            for item in t.iter()? {
                let (_, v) = item?;
                let _: Content = decode(v.value())?;
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

thread_local! {
    /// Set while [`quietly`] runs on this thread: its panics are caught and reported as errors.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err` with its message. The panic hook stays silent for
/// panics of this thread while `f` runs (a hook that delegates to the previous one is installed
/// once), so that a damaged index gives one clear error rather than a backtrace.
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}

/// Number of chunk files under `chunks/` (files named by a hash, in their prefix directory).
fn count_chunk_files(dir: &Path) -> io::Result<usize> {
    let root = dir.join("chunks");
    let mut n = 0;
    let subdirs = match fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for sub in subdirs {
        let sub = sub?;
        if !sub.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(sub.path())? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && entry
                    .file_name()
                    .to_str()
                    .and_then(Hash::from_hex)
                    .is_some()
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Moves a file into `dir` (created if needed) under `name`, and syncs `dir`.
pub(crate) fn move_into(from: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let to = dir.join(name);
    fs::rename(from, &to)?;
    super::chunks::sync_dir(dir)?;
    Ok(to)
}

/// A name for a quarantined copy of `hash` that no other copy has: the hash, the time and a
/// random number.
pub(crate) fn quarantine_name(hash: &Hash) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}.{nanos}.{:08x}", hash.to_hex(), rand::random::<u32>())
}

impl Store {
    /// Takes a chunk back from `orphans/` if it is there and matches its hash (a damaged one
    /// goes to `damaged/`). True when the chunk file is now in place.
    pub(crate) fn adopt_orphan(&self, hash: &Hash) -> bool {
        let dir = &self.inner.dir;
        let orphan = dir.join(ORPHANS_DIR).join(hash.to_hex());
        let Ok(bytes) = fs::read(&orphan) else {
            return false;
        };
        if Hash::of(&bytes) != *hash {
            let moved = move_into(&orphan, &dir.join(DAMAGED_DIR), &quarantine_name(hash));
            tracing::warn!(chunk = %hash, moved = ?moved.ok(), "an orphaned chunk is damaged; quarantined");
            return false;
        }
        match self.inner.chunks.rename_into_place(&orphan, hash) {
            Ok(()) => {
                tracing::debug!(chunk = %hash, "chunk adopted from orphans/");
                true
            }
            Err(e) => {
                tracing::warn!(chunk = %hash, error = %e, "cannot adopt an orphaned chunk");
                false
            }
        }
    }
}

/// What [`repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// Where the old index went (`None` if there was none).
    pub old_index: Option<PathBuf>,
    /// Chunk files verified and kept in `orphans/` for the node to adopt.
    pub adopted: u64,
    /// Their bytes.
    pub adopted_bytes: u64,
    /// Chunk files that did not match their hash, moved to `damaged/`.
    pub damaged: u64,
}

/// Whether the index of the store in `dir` opens and reads ([`open_index`]'s verdict), without
/// creating anything. `Ok(None)` when it is healthy.
pub fn diagnose(dir: &Path) -> Result<Option<String>, StoreError> {
    if !dir.join(INDEX_FILE).exists() && count_chunk_files(dir)? == 0 {
        return Ok(None);
    }
    match open_index(dir) {
        Ok(_) => Ok(None),
        Err(StoreError::IndexDamaged { reason, .. }) => Ok(Some(reason)),
        Err(e) => Err(e),
    }
}

/// `dfs repair`: on a stopped node's store directory, moves the index aside (renamed, never
/// deleted), verifies every chunk file (good ones to `orphans/`, damaged ones to `damaged/`)
/// and creates a fresh, empty index. `Locked` if a node has the store open.
pub fn repair(dir: &Path) -> Result<RepairReport, StoreError> {
    let index = dir.join(INDEX_FILE);
    // Hold redb's lock on the old index while it moves, so that a node that starts meanwhile
    // is refused (or finds no index and chunk files, and refuses too).
    let lock = match fs::OpenOptions::new().read(true).write(true).open(&index) {
        Ok(file) => match redb::backends::FileBackend::new(file) {
            Ok(lock) => Some(lock),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked(dir.to_path_buf()))
            }
            Err(e) => return Err(StoreError::Index(e.to_string())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let old_index = match lock {
        Some(_) => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut aside = dir.join(format!("{INDEX_FILE}.damaged-{secs}"));
            let mut n = 1;
            while aside.exists() {
                aside = dir.join(format!("{INDEX_FILE}.damaged-{secs}-{n}"));
                n += 1;
            }
            fs::rename(&index, &aside)?;
            super::chunks::sync_dir(dir)?;
            Some(aside)
        }
        None => None,
    };
    drop(lock);

    let mut report = RepairReport {
        old_index,
        adopted: 0,
        adopted_bytes: 0,
        damaged: 0,
    };
    let orphans = dir.join(ORPHANS_DIR);
    let damaged = dir.join(DAMAGED_DIR);
    let mut moved = HashSet::new();
    let root = dir.join("chunks");
    if root.is_dir() {
        for sub in fs::read_dir(&root)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(sub.path())? {
                let entry = entry?;
                let hash = entry.file_name().to_str().and_then(Hash::from_hex);
                // Anything that is not a chunk is left where it is.
                if let (Some(hash), true) = (hash, entry.file_type()?.is_file()) {
                    if !moved.contains(&hash) {
                        keep(&entry.path(), hash, dir, &mut moved, &mut report)?;
                    }
                }
            }
        }
    }
    // Orphans from before are verified the same way.
    if orphans.is_dir() {
        for entry in fs::read_dir(&orphans)? {
            let entry = entry?;
            let hash = entry.file_name().to_str().and_then(Hash::from_hex);
            if let Some(hash) = hash.filter(|h| !moved.contains(h)) {
                keep(&entry.path(), hash, dir, &mut moved, &mut report)?;
            }
        }
    }
    for d in [&orphans, &damaged] {
        if d.is_dir() {
            super::chunks::sync_dir(d)?;
        }
    }
    // The fresh index, with its tables: the node starts on it as on a new store, except that
    // its numbering continues above any number it can have used before (its records come back
    // from its peers later: a new write must not look older than them, see `Record::saw`).
    let db = Database::create(&index).map_err(|e| StoreError::Index(e.to_string()))?;
    let txn = db.begin_write()?;
    drop(Tables::open(&txn)?);
    {
        let mut meta = txn.open_table(super::index::META)?;
        meta.insert(super::index::FORMAT, super::index::RECORD_FORMAT)?;
        meta.insert(super::index::SEQ, seq_floor_after_repair())?;
    }
    txn.commit()?;
    Ok(report)
}

/// The sequence number a rebuilt index continues from: the microseconds since the Unix epoch.
/// A node would have to have signed more than a million objects a second, every second since
/// 1970, to have used a higher one; and a later repair starts higher still.
pub(crate) fn seq_floor_after_repair() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Verifies one chunk file for [`repair`]: a good one goes to (or stays in) `orphans/`, a bad
/// one to `damaged/`.
fn keep(
    path: &Path,
    hash: Hash,
    dir: &Path,
    moved: &mut HashSet<Hash>,
    report: &mut RepairReport,
) -> io::Result<()> {
    let bytes = fs::read(path)?;
    if Hash::of(&bytes) == hash {
        let orphans = dir.join(ORPHANS_DIR);
        fs::create_dir_all(&orphans)?;
        let to = orphans.join(hash.to_hex());
        if path != to {
            fs::rename(path, to)?;
        }
        report.adopted += 1;
        report.adopted_bytes += bytes.len() as u64;
        moved.insert(hash);
    } else {
        let damaged = dir.join(DAMAGED_DIR);
        fs::create_dir_all(&damaged)?;
        fs::rename(path, damaged.join(quarantine_name(&hash)))?;
        report.damaged += 1;
    }
    Ok(())
}
