//! The node's identity: an ed25519 keypair created on first start in the data dir (mode 0600)
//! and reused afterwards, so the peer id is stable across restarts.

use std::path::Path;

use libp2p::identity::Keypair;

use crate::datadir::{self, DataDir};

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
    let path = DataDir::new(dir).identity_key();
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
            datadir::atomic_write(&path, &bytes, true).map_err(|source| IdentityError::Write {
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
            let mode = std::fs::metadata(DataDir::new(dir.path()).identity_key())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(DataDir::new(dir.path()).identity_key(), b"junk").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(IdentityError::Damaged(_))
        ));
    }
}
