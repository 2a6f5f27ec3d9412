//! The node's identity: an ed25519 keypair created on first start in the data dir (mode 0600)
//! and reused afterwards, so the peer id is stable across restarts.

use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;

/// File name of the identity key inside the data dir.
pub const FILE: &str = "identity.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read identity key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write identity key {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("identity key {0} is damaged; move it away to create a new identity")]
    Damaged(String),
}

/// Loads the keypair from `<dir>/identity.key`, creating it (atomically, mode 0600) if absent.
pub fn load_or_create(dir: &Path) -> Result<Keypair, IdentityError> {
    let path = dir.join(FILE);
    let shown = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => {
            Keypair::from_protobuf_encoding(&bytes).map_err(|_| IdentityError::Damaged(shown))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .expect("ed25519 keys always encode");
            write_private(dir, &path, &bytes).map_err(|source| IdentityError::Write {
                path: shown,
                source,
            })?;
            Ok(key)
        }
        Err(source) => Err(IdentityError::Read {
            path: shown,
            source,
        }),
    }
}

/// Writes a file readable only by its owner: temp file, fsync, rename, fsync of the directory.
pub fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(FILE), b"junk").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(IdentityError::Damaged(_))
        ));
    }
}
