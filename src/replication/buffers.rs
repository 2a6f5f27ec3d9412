//! A bounded pool of chunk buffers. Bulk transfers reuse them instead of allocating (and having
//! the kernel zero) fresh pages for every chunk, and the pool's size bounds the memory that
//! serving or fetching can hold, whatever the number of peers, streams or transfers.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Buffers of at most `count` chunks, handed out one at a time.
pub(crate) struct Pool {
    permits: Arc<Semaphore>,
    free: Mutex<Vec<Vec<u8>>>,
}

/// A buffer of the pool; it goes back to the pool when dropped. `data` holds the valid bytes.
pub(crate) struct Buf {
    pub(crate) data: Vec<u8>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub(crate) fn new(count: usize) -> Arc<Pool> {
        Arc::new(Pool {
            permits: Arc::new(Semaphore::new(count.max(1))),
            free: Mutex::new(Vec::new()),
        })
    }

    fn wrap(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Buf {
        let data = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        Buf {
            data,
            pool: self.clone(),
            _permit: permit,
        }
    }

    /// Waits for a buffer. Only a caller that holds no other buffer of this pool may wait
    /// (otherwise holders could wait on each other); others use [`Pool::try_get`].
    pub(crate) async fn get(self: &Arc<Self>) -> Buf {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        self.wrap(permit)
    }

    /// Buffers free now.
    pub(crate) fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// A buffer if one is free now.
    pub(crate) fn try_get(self: &Arc<Self>) -> Option<Buf> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.wrap(permit))
    }
}

impl Buf {
    /// The first `len` bytes of the buffer, to be filled by the caller (grown, and zeroed, only
    /// the first time the buffer reaches that size).
    pub(crate) fn fill(&mut self, len: usize) -> &mut [u8] {
        if self.data.len() < len {
            self.data.resize(len, 0);
        } else {
            self.data.truncate(len);
        }
        &mut self.data[..len]
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        self.pool
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_are_bounded_and_reused() {
        let pool = Pool::new(2);
        let mut a = pool.get().await;
        a.fill(10)[0] = 7;
        let _b = pool.try_get().unwrap();
        assert!(pool.try_get().is_none());
        let ptr = a.data.as_ptr();
        drop(a);
        let c = pool.try_get().unwrap();
        assert_eq!(c.data.as_ptr(), ptr, "the freed buffer is handed out again");
    }
}
