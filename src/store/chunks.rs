//! Content-addressed chunk files on disk: `chunks/<first byte in hex>/<hash in hex>`, written
//! through temp files that are fsynced before they are renamed into place.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use crate::record::Hash;

/// Suffix of the temp files of chunks being written.
const TMP_SUFFIX: &str = ".tmp";

/// The chunk directory of a store. A file at a chunk's final path is always complete: it was
/// fsynced before the rename that made it visible.
#[derive(Debug)]
pub(crate) struct ChunkDir {
    root: PathBuf,
    tmp: PathBuf,
}

/// A chunk written to a temp file, waiting for its fsync and rename.
pub(crate) struct Pending {
    pub hash: Hash,
    file: File,
    tmp: PathBuf,
}

/// What the background syncer of a put did.
pub(crate) struct Synced {
    /// Chunks renamed into place (durable once their directories are synced).
    pub renamed: Vec<Hash>,
    pub result: io::Result<()>,
}

impl ChunkDir {
    /// Opens the chunk directory under `dir`, creating `chunks/00..ff` and `tmp/` if needed.
    pub fn open(dir: &Path) -> io::Result<ChunkDir> {
        let root = dir.join("chunks");
        let tmp = dir.join("tmp");
        let mut created = false;
        for d in [&root, &tmp] {
            if !d.is_dir() {
                fs::create_dir_all(d)?;
                created = true;
            }
        }
        for b in 0..=255u8 {
            let d = root.join(format!("{b:02x}"));
            if !d.is_dir() {
                fs::create_dir(&d)?;
                created = true;
            }
        }
        if created {
            sync_dir(&root)?;
            sync_dir(dir)?;
        }
        Ok(ChunkDir { root, tmp })
    }

    fn subdir(&self, hash: &Hash) -> PathBuf {
        self.root.join(format!("{:02x}", hash.0[0]))
    }

    /// The final path of a chunk.
    pub fn path(&self, hash: &Hash) -> PathBuf {
        self.subdir(hash).join(hash.to_hex())
    }

    /// True when the chunk file is in place (it may still be damaged; reads verify).
    pub fn exists(&self, hash: &Hash) -> bool {
        self.path(hash).is_file()
    }

    /// Writes `bytes` to a fresh temp file (no fsync yet); the temp file is removed on failure.
    pub fn write_tmp(&self, hash: &Hash, bytes: &[u8]) -> io::Result<Pending> {
        let tmp = self.tmp.join(format!(
            "{}.{:016x}{TMP_SUFFIX}",
            hash.to_hex(),
            rand::random::<u64>()
        ));
        let mut file = File::create_new(&tmp)?;
        if let Err(e) = file.write_all(bytes) {
            drop(file);
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Pending {
            hash: *hash,
            file,
            tmp,
        })
    }

    /// Fsyncs a pending chunk and renames it into place; the temp file is removed on failure.
    pub fn commit(&self, pending: Pending) -> io::Result<()> {
        let Pending { hash, file, tmp } = pending;
        let done = file
            .sync_data()
            .and_then(|()| fs::rename(&tmp, self.path(&hash)));
        if done.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        done
    }

    /// Fsyncs the directories holding `hashes`, so that their renames survive a crash.
    pub fn sync_dirs<'a>(&self, hashes: impl IntoIterator<Item = &'a Hash>) -> io::Result<()> {
        let prefixes: BTreeSet<u8> = hashes.into_iter().map(|h| h.0[0]).collect();
        for p in prefixes {
            sync_dir(&self.root.join(format!("{p:02x}")))?;
        }
        Ok(())
    }

    /// Writes one chunk atomically and durably (temp file, fsync, rename, fsync of the directory).
    pub fn write_durable(&self, hash: &Hash, bytes: &[u8]) -> io::Result<()> {
        let pending = self.write_tmp(hash, bytes)?;
        self.commit(pending)?;
        sync_dir(&self.subdir(hash))
    }

    /// Reads a chunk file into `buf` (cleared first). `Ok(false)` if it is absent.
    pub fn read_into(&self, hash: &Hash, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        match File::open(self.path(hash)) {
            Ok(mut f) => {
                f.read_to_end(buf)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a chunk file; true if it was there.
    pub fn remove(&self, hash: &Hash) -> io::Result<bool> {
        remove_if_present(&self.path(hash))
    }

    /// Every chunk file in place, and every file in the chunk directories that is not one.
    pub fn scan(&self) -> io::Result<(Vec<Hash>, Vec<PathBuf>)> {
        let mut chunks = Vec::new();
        let mut strays = Vec::new();
        for sub in fs::read_dir(&self.root)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(sub.path())? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    continue;
                }
                let name = entry.file_name();
                match name.to_str().and_then(Hash::from_hex) {
                    Some(h) if h.0[0] == prefix_of(&sub.file_name()) => chunks.push(h),
                    _ => strays.push(entry.path()),
                }
            }
        }
        Ok((chunks, strays))
    }

    /// Every temp file, with the chunk hash it was being written for (if its name parses).
    pub fn scan_tmp(&self) -> io::Result<Vec<(Option<Hash>, PathBuf)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let hash = name
                .to_str()
                .and_then(|n| n.split('.').next())
                .and_then(Hash::from_hex);
            out.push((hash, entry.path()));
        }
        Ok(out)
    }
}

fn prefix_of(name: &std::ffi::OsStr) -> u8 {
    name.to_str()
        .and_then(|n| u8::from_str_radix(n, 16).ok())
        .unwrap_or(0)
}

/// Removes a file; true if it was there.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Fsyncs a directory, making the creations, renames and removals in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The background half of a put: fsyncs and renames chunks as the put writes them, so the
/// fsyncs overlap with reading and hashing the next chunks. After a failure it removes the temp
/// files still queued and stops (the put sees its channel closed).
pub(crate) fn sync_pending(chunks: &ChunkDir, queue: Receiver<Pending>) -> Synced {
    let mut renamed = Vec::new();
    for pending in queue.iter() {
        let hash = pending.hash;
        if let Err(e) = chunks.commit(pending) {
            for rest in queue.try_iter() {
                let _ = fs::remove_file(&rest.tmp);
            }
            return Synced {
                renamed,
                result: Err(e),
            };
        }
        renamed.push(hash);
    }
    Synced {
        renamed,
        result: Ok(()),
    }
}

impl Pending {
    /// Drops a chunk that will not be committed, removing its temp file.
    pub fn discard(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_visible_only_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = ChunkDir::open(dir.path()).unwrap();
        let hash = Hash::of(b"hello");
        let pending = chunks.write_tmp(&hash, b"hello").unwrap();
        assert!(!chunks.exists(&hash));
        assert_eq!(chunks.scan_tmp().unwrap()[0].0, Some(hash));
        chunks.commit(pending).unwrap();
        assert!(chunks.exists(&hash));
        assert!(chunks.scan_tmp().unwrap().is_empty());
        let mut buf = Vec::new();
        assert!(chunks.read_into(&hash, &mut buf).unwrap());
        assert_eq!(buf, b"hello");
        assert_eq!(chunks.scan().unwrap().0, vec![hash]);
        assert!(chunks.remove(&hash).unwrap());
        assert!(!chunks.read_into(&hash, &mut buf).unwrap());
    }
}
