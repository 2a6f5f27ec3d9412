//! Content-addressed chunk files on disk: `chunks/<first byte in hex>/<hash in hex>`, written
//! through temp files that are fsynced before they are renamed into place.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

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
    hash: Hash,
    file: File,
    tmp: PathBuf,
}

impl ChunkDir {
    /// Opens the chunk directory under `dir`, creating `chunks/` and `tmp/` if needed. The
    /// subdirectories `chunks/00`..`chunks/ff` are created when first needed.
    pub fn open(dir: &Path) -> io::Result<ChunkDir> {
        let root = dir.join("chunks");
        let tmp = dir.join("tmp");
        if !root.is_dir() || !tmp.is_dir() {
            fs::create_dir_all(&root)?;
            fs::create_dir_all(&tmp)?;
            sync_dir(dir)?;
        }
        Ok(ChunkDir { root, tmp })
    }

    /// Creates (durably) the subdirectory of a chunk.
    fn make_subdir(&self, hash: &Hash) -> io::Result<()> {
        match fs::create_dir(self.subdir(hash)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        // Also when another thread created it: it may not have synced it yet.
        sync_dir(&self.root)
    }

    /// Renames a fsynced temp file into place, creating the chunk's subdirectory if needed.
    pub(crate) fn rename_into_place(&self, tmp: &Path, hash: &Hash) -> io::Result<()> {
        let dest = self.path(hash);
        match fs::rename(tmp, &dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && tmp.exists() => {
                self.make_subdir(hash)?;
                fs::rename(tmp, &dest)
            }
            r => r,
        }
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

    /// Writes `bytes` to a fresh temp file, without fsync; the temp file is removed on failure.
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
            .and_then(|()| self.rename_into_place(&tmp, &hash));
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
