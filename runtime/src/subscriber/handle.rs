//! What a started subscriber gives back, on either backend: its handle and its counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::error::SubscriberError;
use super::progress::{self, Progress, WaitError};

/// Counters of a running subscriber.
///
/// ```no_run
/// # fn show(handle: &jetsource::subscriber::SubscriberHandle) {
/// let stats = handle.stats();
/// println!("{} handled, {} dead-lettered", stats.handled, stats.dead_lettered);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Events the handler completed (and that were acked).
    pub handled: u64,
    /// Redeliveries skipped because the event had been completed before.
    pub duplicates_skipped: u64,
    /// Events of retired types, acked without calling the handler.
    pub retired_skipped: u64,
    /// In-place retries after retryable failures.
    pub retries: u64,
    /// Messages moved to the dead-letter stream (or list, in memory).
    pub dead_lettered: u64,
}

/// The counters behind [`SubscriberStats`], shared by a subscriber's tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) handled: AtomicU64,
    pub(crate) duplicates_skipped: AtomicU64,
    pub(crate) retired_skipped: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> SubscriberStats {
        SubscriberStats {
            handled: self.handled.load(Ordering::Relaxed),
            duplicates_skipped: self.duplicates_skipped.load(Ordering::Relaxed),
            retired_skipped: self.retired_skipped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A running subscriber, on JetStream (`start`) or in memory
/// ([`start_in_memory`](super::start_in_memory)). Dropping it leaves the subscriber running;
/// call [`SubscriberHandle::shutdown`] to stop it.
///
/// ```
/// # use jetsource::subscriber::{self, SubscriberConfig, Subscriber};
/// # async fn run<S: Subscriber>(store: jetsource::InMemoryStore, s: S) -> Result<(), Box<dyn std::error::Error>> {
/// let handle = subscriber::start_in_memory(&store, s, SubscriberConfig::new("audit")).await?;
/// let stats = handle.shutdown().await?;
/// println!("{stats:?}");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SubscriberHandle {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), SubscriberError>>,
    counters: Arc<Counters>,
    progress: Arc<dyn Progress>,
}

impl SubscriberHandle {
    pub(crate) fn new(
        shutdown: watch::Sender<bool>,
        task: tokio::task::JoinHandle<Result<(), SubscriberError>>,
        counters: Arc<Counters>,
        progress: Arc<dyn Progress>,
    ) -> Self {
        SubscriberHandle {
            shutdown,
            task,
            counters,
            progress,
        }
    }

    /// Waits until the subscriber has settled (handled, skipped or dead-lettered) every event
    /// it receives at or before stream `position`: read-your-writes after a command, with the
    /// position from [`Committed::position`](crate::Committed::position) or a
    /// `PublishReceipt` (JetStream). Position 0 returns at once. Events another
    /// process of the same durable (or partition group) handled count too: the answer comes
    /// from the durable consumer's state, not from this process.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # async fn run(handle: &jetsource::subscriber::SubscriberHandle, committed: &jetsource::Committed<()>)
    /// #     -> Result<(), jetsource::subscriber::WaitError> {
    /// handle.wait_for(committed.position, Duration::from_secs(2)).await?;
    /// // The read model has seen the command's events.
    /// # Ok(()) }
    /// ```
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<(), WaitError> {
        progress::wait_for(self.progress.as_ref(), position, timeout).await
    }

    /// Whether the subscriber has settled every event it receives up to the newest one stored
    /// now.
    pub async fn caught_up(&self) -> Result<bool, SubscriberError> {
        progress::caught_up(self.progress.as_ref()).await
    }

    /// The counters so far.
    pub fn stats(&self) -> SubscriberStats {
        self.counters.snapshot()
    }

    /// Whether the subscriber stopped (after [`SubscriberHandle::shutdown`] or an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops gracefully: nothing more is pulled or read; running handlers finish and are
    /// acknowledged; what had not started (and a retry waiting for its back-off) stays
    /// unacknowledged and comes first when a subscriber with the same durable name runs again
    /// (on JetStream it is `nak`ed, so the server redelivers it at once). Returns the final
    /// counters.
    pub async fn shutdown(self) -> Result<SubscriberStats, SubscriberError> {
        self.shutdown.send_replace(true);
        match self.task.await {
            Ok(Ok(())) => Ok(self.counters.snapshot()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(SubscriberError::task(e)),
        }
    }

    /// Stops at once without acknowledging anything more, like a crash: running handlers are
    /// dropped at their next await. What was unacknowledged is delivered again (on JetStream
    /// after the ack wait; in memory by the next start).
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
