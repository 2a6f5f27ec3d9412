//! Dropping a copy of content this node is not placed to hold (partial replication, see
//! `replication/policy.rs`): the records stay, the content's chunk list and chunks go, as if
//! the content had never been fetched. Replication decides when (only once enough placed
//! nodes say they hold it); the store only does it.

use redb::ReadableTable;

use super::index::{self, decode, Content};
use super::{Store, StoreError};
use crate::record::{ContentId, Hash};

impl Store {
    /// The content complete here, with its size: what this node holds.
    pub fn held(&self) -> Result<Vec<(ContentId, u64)>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let state = txn.open_table(index::CONTENT_STATE)?;
        let contents = txn.open_table(index::CONTENTS)?;
        let mut out = Vec::new();
        for item in state.iter()? {
            let (cid, complete) = item?;
            if complete.value() != 1 {
                continue;
            }
            let cid = Hash(*cid.value());
            let size = match contents.get(&cid.0)? {
                Some(v) => decode::<Content>(v.value())?.size,
                None => 0,
            };
            out.push((cid, size));
        }
        Ok(out)
    }

    /// Drops this node's copy of `cid`: its chunk list and the chunks no other list uses. Records
    /// referencing it stay (their content is then "not here", and is fetched again if this node
    /// is placed to hold it later). Returns whether there was a copy to drop.
    pub fn evict(&self, cid: &ContentId) -> Result<bool, StoreError> {
        let inner = &*self.inner;
        let txn = inner.db.begin_write()?;
        let mut freed = Vec::new();
        {
            let mut contents = txn.open_table(index::CONTENTS)?;
            let content: Content = match contents.get(&cid.0)? {
                Some(v) => decode(v.value())?,
                None => return Ok(false),
            };
            contents.remove(&cid.0)?;
            let mut state = txn.open_table(index::CONTENT_STATE)?;
            state.remove(&cid.0)?;
            if !content.complete {
                let mut meta = txn.open_table(index::META)?;
                let pending = meta.get(index::PENDING)?.map_or(0, |v| v.value());
                meta.insert(
                    index::PENDING,
                    pending.saturating_sub(content.chunks.len() as u64),
                )?;
            }
            let mut refs = txn.open_table(index::CHUNK_REFS)?;
            for h in &content.chunks {
                let n = refs.get(&h.0)?.map_or(0, |v| v.value());
                if n > 1 {
                    refs.insert(&h.0, n - 1)?;
                } else {
                    refs.remove(&h.0)?;
                    freed.push(*h);
                }
            }
        }
        txn.commit()?;
        self.free(&freed);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let key = libp2p::identity::Keypair::generate_ed25519();
        let store = Store::open(dir.path(), key).unwrap();
        (dir, store)
    }

    #[test]
    fn a_dropped_copy_leaves_the_record_and_frees_the_chunks() {
        let (_dir, store) = store();
        let big = vec![7u8; 3 << 20];
        let small = b"small and inline".to_vec();
        let a = store.put("big", &big[..]).unwrap();
        let b = store.put("small", &small[..]).unwrap();
        let shared = store.put("copy", &big[..]).unwrap();
        assert_eq!(a.cid, shared.cid);
        let held: Vec<ContentId> = store.held().unwrap().into_iter().map(|(c, _)| c).collect();
        assert!(held.contains(&a.cid.unwrap()) && held.contains(&b.cid.unwrap()));
        assert!(store.evict(&a.cid.unwrap()).unwrap());
        assert!(
            !store.evict(&a.cid.unwrap()).unwrap(),
            "nothing left to drop"
        );
        assert!(store.evict(&b.cid.unwrap()).unwrap());
        // The records stay; the content is no longer here.
        assert!(store.record("big").unwrap().is_some());
        assert!(store.record("copy").unwrap().is_some());
        assert!(!store.content_complete(&a.cid.unwrap()).unwrap());
        assert!(store.get("big").is_err() && store.get("small").is_err());
        assert!(store.held().unwrap().is_empty());
        assert_eq!(store.gc().unwrap(), 0, "the chunks went with the copy");
        let files = walk(&store.dir().join("chunks"));
        assert_eq!(files, 0, "no chunk file is left");
        // Storing the content again brings it back.
        store.put("big", &big[..]).unwrap();
        assert!(store.content_complete(&a.cid.unwrap()).unwrap());
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut store.get("big").unwrap(), &mut back).unwrap();
        assert_eq!(back, big);
    }

    fn walk(dir: &std::path::Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
    }
}
