//! Who may write, as the store keeps it: the admission policy, writers' numbers, grants and
//! their signing, the authors seen to equivocate.

use super::*;

impl Store {
    /// Sets the policy that decides which records from elsewhere count (see [`Admission`]).
    /// Without one, every valid record counts.
    pub fn set_admission(&self, admission: Admission) {
        *self.inner.admission.write().expect("admission lock") = Some(admission);
    }

    /// The highest sequence number of `author` among the records this node has accepted (0 if
    /// none): what a revocation of `author` keeps.
    pub fn max_seq(&self, author: &[u8]) -> Result<u64, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let t = txn.open_table(index::AUTHOR_SEQS)?;
        let from = index::seq_key(author, 0);
        let to = index::seq_key(author, u64::MAX);
        let last = t.range(from.as_slice()..=to.as_slice())?.next_back();
        match last {
            Some(item) => {
                let (k, _) = item?;
                let k = k.value();
                Ok(u64::from_be_bytes(
                    k[k.len() - 8..].try_into().expect("8 bytes"),
                ))
            }
            None => Ok(0),
        }
    }

    /// The highest sequence number of `author` among the objects this node has accepted (0 if
    /// none), and the numbers it holds as at most `max_ranges` ranges (the smallest gaps closed
    /// beyond): what a revocation of `author` keeps.
    pub fn held_seqs(
        &self,
        author: &[u8],
        max_ranges: usize,
    ) -> Result<(u64, Vec<(u64, u64)>), StoreError> {
        let txn = self.inner.db.begin_read()?;
        let t = txn.open_table(index::AUTHOR_SEQS)?;
        let from = index::seq_key(author, 0);
        let to = index::seq_key(author, u64::MAX);
        let mut seqs = Vec::new();
        for item in t.range(from.as_slice()..=to.as_slice())? {
            let (k, _) = item?;
            let k = k.value();
            seqs.push(u64::from_be_bytes(
                k[k.len() - 8..].try_into().expect("8 bytes"),
            ));
        }
        let cutoff = seqs.last().copied().unwrap_or(0);
        Ok((cutoff, crate::trust::grant::ranges_of(seqs, max_ranges)))
    }

    /// Removes every record the admission policy refuses now: after a revocation, the records
    /// a revoked writer signed after its cutoff. Their keys go back to whatever peers hold
    /// (anti-entropy). Returns them.
    pub fn drop_refused(&self) -> Result<Vec<Record>, StoreError> {
        match self.submit(Op::DropRefused)? {
            Done::Dropped(records) => Ok(records),
            _ => unreachable!("a drop gives the dropped records"),
        }
    }

    /// Stores a verified grant; false if it was known, or if its issuer signed another object
    /// under the grant's sequence number (then the grant does not count).
    pub fn add_grant(&self, grant: &Grant) -> Result<bool, StoreError> {
        match self.submit(Op::Grant {
            id: grant.id(),
            issuer: grant.issuer.clone(),
            seq: grant.seq,
            bytes: grant.encode(),
        })? {
            Done::Yes(added) => Ok(added),
            _ => unreachable!("a grant gives a yes or no"),
        }
    }

    /// Signs a grant with this node's key under its next sequence number and clock value, and
    /// stores it.
    pub fn sign_grant(&self, grant: Grant) -> Result<Grant, StoreError> {
        match self.submit(Op::SignGrant { grant })? {
            Done::Grant(grant) => Ok(grant),
            _ => unreachable!("signing gives a grant"),
        }
    }

    /// Every stored grant (those that no longer decode are skipped with a warning).
    pub fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let t = txn.open_table(index::GRANTS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            match Grant::decode(v.value()) {
                Ok(g) => out.push(g),
                Err(e) => tracing::warn!(error = %e, "skipping a stored grant"),
            }
        }
        Ok(out)
    }

    /// The authors this node saw sign two records under one number, as peer id bytes.
    pub fn equivocators(&self) -> Vec<Vec<u8>> {
        let flagged = self
            .inner
            .equivocators
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        flagged.iter().cloned().collect()
    }

    /// True once another node was seen signing with this node's key (a ticket used on two
    /// machines, a data dir restored from a backup): local writes are refused from then on.
    pub fn identity_in_use(&self) -> bool {
        self.inner.twin.load(Ordering::Relaxed)
    }

    /// Refuses local writes once another node was seen signing with this node's key.
    pub(super) fn no_twin(&self) -> Result<(), StoreError> {
        if self.inner.twin.load(Ordering::Relaxed) {
            let peer = libp2p::PeerId::from_bytes(&self.inner.author)
                .map(|p| p.to_base58())
                .unwrap_or_default();
            return Err(StoreError::IdentityInUse(peer));
        }
        Ok(())
    }
}
