//! Ownership of every task a node spawns: a tracker that shutdown waits on, and a cancellation
//! token that tells long-running tasks to stop (as mini-redis waits for its connections).

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A spawned blocking closure panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("background task failed: {0}")]
pub struct TaskFailed(String);

impl From<tokio::task::JoinError> for TaskFailed {
    fn from(e: tokio::task::JoinError) -> TaskFailed {
        TaskFailed(e.to_string())
    }
}

/// The tasks of one node. Clones share them.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Spawns a task that ends early (its future dropped) when the node shuts down.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let token = self.token.clone();
        self.tracker
            .spawn(async move { token.run_until_cancelled(future).await })
    }

    /// Runs blocking work (store calls) on the blocking pool; shutdown waits for it to finish.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, TaskFailed> {
        self.tracker
            .spawn_blocking(f)
            .await
            .map_err(TaskFailed::from)
    }

    /// Starts blocking work at once (unlike [`Tasks::blocking`], which starts when awaited).
    pub fn spawn_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        self.tracker.spawn_blocking(f)
    }

    /// Completes when shutdown has begun.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The token that tells tasks to stop.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Cancels every task and waits until all of them (blocking ones included) have ended.
    pub async fn shutdown(&self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
