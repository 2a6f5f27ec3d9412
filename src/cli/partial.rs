//! The resumable state of `dfs get KEY -o FILE`: the bytes so far in `FILE.dfs-partial`, and in
//! the sidecar `FILE.dfs-partial.json` the key and the version (ETag, the content id) they are
//! a prefix of. A rerun continues with `Range` and `If-Range`; the finished file is checked
//! against its content id before it is renamed into place.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::datadir::atomic_write;
use crate::record::{content_id, Hash, CHUNK_SIZE};

/// Suffix of the partial file next to the destination.
pub const PARTIAL_SUFFIX: &str = ".dfs-partial";
/// Suffix of its sidecar (the partial file's name plus `.json`).
pub const SIDECAR_SUFFIX: &str = ".dfs-partial.json";

/// What the sidecar records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    pub key: String,
    /// The ETag of the version being downloaded, quoted as the API sends it.
    pub etag: String,
    /// That version's size.
    pub size: u64,
}

/// The partial file and sidecar of one destination.
#[derive(Debug, Clone)]
pub struct Partial {
    pub dest: PathBuf,
    pub data: PathBuf,
    pub sidecar: PathBuf,
}

impl Partial {
    pub fn of(dest: &Path) -> Partial {
        let with = |suffix: &str| {
            let mut name = dest.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        Partial {
            dest: dest.to_path_buf(),
            data: with(PARTIAL_SUFFIX),
            sidecar: with(SIDECAR_SUFFIX),
        }
    }

    /// Where a download of `key` can continue: the recorded version and the bytes already
    /// there, when both files exist, the sidecar is for `key`, and the part is not longer than
    /// the version.
    pub fn resume_point(&self, key: &str) -> Option<(Sidecar, u64)> {
        let text = std::fs::read(&self.sidecar).ok()?;
        let sidecar: Sidecar = serde_json::from_slice(&text).ok()?;
        let have = std::fs::metadata(&self.data).ok()?.len();
        (sidecar.key == key && have <= sidecar.size && have > 0).then_some((sidecar, have))
    }

    /// Records the version that the partial file's bytes belong to (before any is written).
    pub fn record(&self, sidecar: &Sidecar) -> std::io::Result<()> {
        let json = serde_json::to_vec(sidecar).expect("a sidecar serialises");
        atomic_write(&self.sidecar, &json, false)
    }

    /// Removes both files (missing ones are fine).
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.data);
        let _ = std::fs::remove_file(&self.sidecar);
    }

    /// Renames the complete partial file onto the destination (atomic within one filesystem),
    /// removes the sidecar and makes both durable.
    pub fn finish(&self) -> std::io::Result<()> {
        std::fs::rename(&self.data, &self.dest)?;
        let _ = std::fs::remove_file(&self.sidecar);
        #[cfg(unix)]
        {
            let dir = match self.dest.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The content id of a file as it is being written: chunk hashes over the bytes in order, so
/// a download is verified without reading it again (the bytes of a resumed part are read once).
#[derive(Default)]
pub struct Verifier {
    chunks: Vec<Hash>,
    current: blake3::Hasher,
    in_chunk: usize,
    size: u64,
}

impl Verifier {
    pub fn update(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        while !data.is_empty() {
            let take = (CHUNK_SIZE - self.in_chunk).min(data.len());
            self.current.update(&data[..take]);
            self.in_chunk += take;
            data = &data[take..];
            if self.in_chunk == CHUNK_SIZE {
                self.chunks
                    .push(Hash::from_slice(self.current.finalize().as_bytes()).unwrap());
                self.current.reset();
                self.in_chunk = 0;
            }
        }
    }

    /// Feeds the first `len` bytes of `file` (the part kept from an earlier run).
    pub fn read_prefix(&mut self, file: &mut std::fs::File, len: u64) -> std::io::Result<()> {
        file.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = len;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(())
    }

    /// The content id of everything fed so far, as hex.
    pub fn finish(mut self) -> String {
        if self.in_chunk > 0 {
            self.chunks
                .push(Hash::from_slice(self.current.finalize().as_bytes()).unwrap());
        }
        content_id(self.size, &self.chunks).to_hex()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_agrees_with_the_content_id_whatever_the_pieces() {
        let data: Vec<u8> = (0..(2 * CHUNK_SIZE + 17)).map(|i| (i * 7) as u8).collect();
        let chunks: Vec<Hash> = data.chunks(CHUNK_SIZE).map(Hash::of).collect();
        let expected = content_id(data.len() as u64, &chunks).to_hex();
        for piece in [1000, CHUNK_SIZE, CHUNK_SIZE + 1, data.len()] {
            let mut v = Verifier::default();
            for p in data.chunks(piece) {
                v.update(p);
            }
            assert_eq!(v.finish(), expected, "pieces of {piece}");
        }
        let empty = content_id(0, &[]).to_hex();
        assert_eq!(Verifier::default().finish(), empty);
    }

    #[test]
    fn partial_names_sit_next_to_the_destination() {
        let p = Partial::of(Path::new("dir/file.bin"));
        assert_eq!(p.data, Path::new("dir/file.bin.dfs-partial"));
        assert_eq!(p.sidecar, Path::new("dir/file.bin.dfs-partial.json"));
    }
}
