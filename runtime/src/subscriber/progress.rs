//! Read-your-writes: whether a subscriber has settled everything up to a stream position.
//!
//! The answer comes from where each backend keeps a durable consumer's progress (the JetStream
//! server's consumer state, the in-memory store's durable), not from the running process, so
//! it also holds for events another process of the same durable handled, and a
//! [`PgProjection`](crate::projection::PgProjection) can be asked without running it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::error::SubscriberError;
use crate::error::HumanDuration;

/// A boxed future, so backends can be kept behind `dyn Progress`.
pub(crate) type ProgressFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, SubscriberError>> + Send + 'a>>;

/// How far a durable consumer got, as its backend keeps it.
pub(crate) trait Progress: Send + Sync + std::fmt::Debug {
    /// The durable name, for errors.
    fn durable(&self) -> &str;

    /// Whether every event at or before `position` that the consumer receives has been settled
    /// (handled, skipped, or dead-lettered); false while the stream has not reached `position`.
    fn settled_through(&self, position: u64) -> ProgressFuture<'_, bool>;

    /// The position of the newest event stored now.
    fn newest(&self) -> ProgressFuture<'_, u64>;
}

/// Why [`wait_for`](super::SubscriberHandle::wait_for) returned without the position settled.
///
/// ```
/// use std::time::Duration;
/// use jetsource::subscriber::WaitError;
/// let e = WaitError::TimedOut { durable: "balances".into(), position: 42, timeout: Duration::from_secs(1) };
/// assert_eq!(e.to_string(), "subscriber balances had not settled position 42 after 1s");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The timeout passed first.
    #[error("subscriber {durable} had not settled position {position} after {}", HumanDuration(*timeout))]
    TimedOut {
        /// The subscriber's durable name.
        durable: String,
        /// The position waited for.
        position: u64,
        /// How long it waited.
        timeout: Duration,
    },
    /// Its progress could not be read (the server is unreachable, the consumer was deleted).
    #[error("cannot read how far subscriber {durable} got")]
    Progress {
        /// The subscriber's durable name.
        durable: String,
        /// Why.
        #[source]
        source: SubscriberError,
    },
}

/// The pauses between two looks at the progress: from 1 ms, doubling up to 25 ms (with jitter,
/// so many waiters do not ask together), so a quick handler is seen within a few milliseconds
/// and a long wait costs at most a few dozen requests a second.
fn pauses() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(25))
        .with_jitter()
        .without_max_times()
        .build()
}

pub(crate) async fn wait_for(
    progress: &dyn Progress,
    position: u64,
    timeout: Duration,
) -> Result<(), WaitError> {
    if position == 0 {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pauses = pauses();
    loop {
        let settled =
            progress
                .settled_through(position)
                .await
                .map_err(|source| WaitError::Progress {
                    durable: progress.durable().to_owned(),
                    source,
                })?;
        if settled {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(WaitError::TimedOut {
                durable: progress.durable().to_owned(),
                position,
                timeout,
            });
        }
        let pause = pauses.next().unwrap_or(Duration::from_millis(25));
        tokio::time::sleep_until((now + pause).min(deadline)).await;
    }
}

pub(crate) async fn caught_up(progress: &dyn Progress) -> Result<bool, SubscriberError> {
    match progress.newest().await? {
        0 => Ok(true),
        newest => progress.settled_through(newest).await,
    }
}
