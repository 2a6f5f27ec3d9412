//! The data dir's layout, named in one place, and the one helper that writes its files atomically.
//!
//! A node keeps all its state in one directory (`--data-dir`, `DFS_DATA_DIR`, or the platform's
//! data dir):
//!
//! ```text
//! <data dir>/
//!   identity.key   the ed25519 keypair, protobuf-encoded (mode 0600): the stable peer id
//!   network        the id of the network this node belongs to, and a newline (see `trust`)
//!   settings       the network's settings signed by its owner, CBOR (see `trust::settings`)
//!   store/         the local store: chunks/ and index.redb (see `store`)
//!   api            the API URL and a newline, present while the node runs (removed on exit)
//!   api-token      the API's bearer token, hex and a newline (mode 0600)
//!   peers.json     the address book: dfs peers seen lately and their addresses (see
//!                  `net::address_book`)
//! ```

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// File name of the identity key.
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the network id.
pub const NETWORK_FILE: &str = "network";
/// File name of the network's settings.
pub const SETTINGS_FILE: &str = "settings";
/// Name of the store's directory.
pub const STORE_DIR: &str = "store";
/// File name of the API URL, present while a node runs.
pub const API_FILE: &str = "api";
/// File name of the API token.
pub const TOKEN_FILE: &str = "api-token";
/// File name of the address book.
pub const PEERS_FILE: &str = "peers.json";

/// A data dir: the paths of its layout (see the module's documentation). Creates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data dir at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `<data dir>/identity.key`: the node's keypair.
    pub fn identity_key(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    /// `<data dir>/network`: the id of the node's network.
    pub fn network_file(&self) -> PathBuf {
        self.root.join(NETWORK_FILE)
    }

    /// `<data dir>/settings`: the network's settings (its replication factor), signed by its
    /// owner.
    pub fn settings_file(&self) -> PathBuf {
        self.root.join(SETTINGS_FILE)
    }

    /// `<data dir>/store`: the local store's directory.
    pub fn store(&self) -> PathBuf {
        self.root.join(STORE_DIR)
    }

    /// `<data dir>/api`: the URL of the running node's API.
    pub fn api_file(&self) -> PathBuf {
        self.root.join(API_FILE)
    }

    /// `<data dir>/api-token`: the API's bearer token.
    pub fn token_file(&self) -> PathBuf {
        self.root.join(TOKEN_FILE)
    }

    /// `<data dir>/peers.json`: the address book.
    pub fn peers_file(&self) -> PathBuf {
        self.root.join(PEERS_FILE)
    }
}

/// Replaces `path` with `bytes` atomically: a reader sees the old file or the new one, never a
/// part, and after a crash the file is the old one or the new one. Writes a temp file in the same
/// directory, fsyncs it, renames it over `path`, then fsyncs the directory. The file gets mode
/// 0600 when `private` (readable by its owner only), else 0666 less the umask. On an error the
/// temp file is removed.
pub fn atomic_write(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if private { 0o600 } else { 0o666 };
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn layout_names_every_path() {
        let d = DataDir::new("/data");
        assert_eq!(d.path(), Path::new("/data"));
        assert_eq!(d.identity_key(), Path::new("/data/identity.key"));
        assert_eq!(d.store(), Path::new("/data/store"));
        assert_eq!(d.settings_file(), Path::new("/data/settings"));
        assert_eq!(d.api_file(), Path::new("/data/api"));
        assert_eq!(d.token_file(), Path::new("/data/api-token"));
    }

    #[test]
    fn atomic_write_writes_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        atomic_write(&path, b"first\n", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first\n");
        atomic_write(&path, b"second", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        assert_eq!(entries(dir.path()), ["secret"]);
    }

    #[cfg(unix)]
    #[test]
    fn atomic_write_private_is_0600_and_public_follows_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        let public = dir.path().join("public");
        atomic_write(&private, b"p", true).unwrap();
        atomic_write(&public, b"q", false).unwrap();
        assert_eq!(mode(&private), 0o600);
        // A public file gets the mode of any new file: 0666 less the umask.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"r").unwrap();
        assert_eq!(mode(&public), mode(&plain));
        assert_eq!(entries(dir.path()), ["plain", "private", "public"]);
    }

    #[test]
    fn atomic_write_failure_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the way: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        assert!(atomic_write(&path, b"data", false).is_err());
        assert!(path.is_dir());
        assert_eq!(entries(dir.path()), ["taken"]);
        // A missing directory: nothing is created.
        let missing = dir.path().join("missing").join("file");
        assert!(atomic_write(&missing, b"data", true).is_err());
        assert_eq!(entries(dir.path()), ["taken"]);
    }
}
