//! Group commit: the events a projection's lanes hold at once (at most one per aggregate, since
//! a subscriber hands an aggregate's next event over only after the previous one settled) are
//! applied in one transaction, with one statement moving all their checkpoints. Each event's
//! handler waits for the commit, so the subscriber acks an event only once its changes are
//! durable, as with a transaction per event.
//!
//! When an event fails, the transaction is rolled back: that event gets its own error, and the
//! other events of the batch get a retryable one and run again, each in a transaction of its
//! own, so one bad event cannot hold the others back.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::checkpoint::infra;
use super::{Inner, PgProjection, Projection};
use crate::subscriber::{EventContext, HandlerError};

/// How a [`PgProjection`] groups events into transactions.
///
/// ```
/// use std::time::Duration;
/// use jetsource::projection::Batching;
/// let batching = Batching::new(64, Duration::from_millis(2));
/// assert_eq!(batching.max_events, 64);
/// assert_eq!(Batching::default().max_events, 32);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Batching {
    /// The most events in one transaction; 1 applies every event in a transaction of its own.
    /// A batch holds at most one event per aggregate. [`PgProjection::start`] raises the
    /// subscriber's [`concurrency`](crate::subscriber::SubscriberConfig::concurrency) to at
    /// least twice this, so the next batch fills while one commits.
    pub max_events: usize,
    /// The longest the first event of a batch waits for more before the batch is applied.
    /// Events that arrive while a batch commits form the next one without waiting.
    pub max_latency: Duration,
}

impl Batching {
    /// At most `max_events` events per transaction, the first waiting at most `max_latency`.
    pub fn new(max_events: usize, max_latency: Duration) -> Self {
        Batching {
            max_events: max_events.max(1),
            max_latency,
        }
    }

    /// One event per transaction.
    pub fn off() -> Self {
        Batching::new(1, Duration::ZERO)
    }
}

impl Default for Batching {
    /// 32 events, waiting at most a millisecond.
    fn default() -> Self {
        Batching::new(32, Duration::from_millis(1))
    }
}

/// Where an event's handler waits for the outcome of its batch.
type Done = oneshot::Sender<Result<(), HandlerError>>;

/// One event waiting for its batch.
pub(super) struct Job<E> {
    event: E,
    ctx: EventContext,
    done: Done,
}

/// Another event of the batch failed, or the batch's transaction did; this one runs again in a
/// transaction of its own.
#[derive(Debug, thiserror::Error)]
enum BatchFailed {
    #[error("event {0} of the same transaction failed; this one runs again on its own")]
    Sibling(Uuid),
    #[error("the batch's transaction failed ({0}); this event runs again on its own")]
    Transaction(String),
    #[error("the projection's batcher stopped")]
    Stopped,
}

/// Hands the event to the projection's batcher and waits for the batch's outcome.
pub(super) async fn submit<P: Projection>(
    projection: &PgProjection<P>,
    event: P::Event,
    ctx: &EventContext,
) -> Result<(), HandlerError> {
    let jobs = projection.inner.jobs.get_or_init(|| {
        let (jobs, incoming) = mpsc::channel(projection.inner.batching.max_events * 4);
        let batching = projection.inner.batching;
        tokio::spawn(run(Arc::downgrade(&projection.inner), incoming, batching));
        jobs
    });
    let (done, outcome) = oneshot::channel();
    let job = Job {
        event,
        ctx: ctx.clone(),
        done,
    };
    if jobs.send(job).await.is_err() {
        return Err(HandlerError::retryable(BatchFailed::Stopped));
    }
    outcome
        .await
        .unwrap_or_else(|_| Err(HandlerError::retryable(BatchFailed::Stopped)))
}

/// Collects batches until the projection is dropped.
async fn run<P: Projection>(
    inner: Weak<Inner<P>>,
    mut incoming: mpsc::Receiver<Job<P::Event>>,
    batching: Batching,
) {
    let mut carried = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match incoming.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let (batch, next) = collect(first, &mut incoming, batching).await;
        carried = next;
        let Some(inner) = inner.upgrade() else { return };
        PgProjection { inner }.apply_batch(batch).await;
    }
}

/// The batch that starts with `first`: what arrives until it is full or `max_latency` passed.
/// A second event of an aggregate already in it (a redelivery racing its first delivery) is
/// returned apart, to start the next batch.
async fn collect<E>(
    first: Job<E>,
    incoming: &mut mpsc::Receiver<Job<E>>,
    batching: Batching,
) -> (Vec<Job<E>>, Option<Job<E>>) {
    let deadline = tokio::time::Instant::now() + batching.max_latency;
    let mut keys = HashSet::from([aggregate(&first.ctx)]);
    let mut batch = vec![first];
    while batch.len() < batching.max_events {
        let job = match incoming.try_recv() {
            Ok(job) => job,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(deadline, incoming.recv()).await {
                    Ok(Some(job)) => job,
                    _ => break,
                }
            }
        };
        if !keys.insert(aggregate(&job.ctx)) {
            return (batch, Some(job));
        }
        batch.push(job);
    }
    (batch, None)
}

fn aggregate(ctx: &EventContext) -> (String, String) {
    (ctx.aggregate_type.clone(), ctx.aggregate_id.clone())
}

impl<P: Projection> PgProjection<P> {
    async fn apply_batch(&self, batch: Vec<Job<P::Event>>) {
        let mut tx = match self.inner.pool.begin().await {
            Ok(tx) => tx,
            Err(e) => return self.run_alone_after(members(batch), e),
        };
        let contexts: Vec<&EventContext> = batch.iter().map(|job| &job.ctx).collect();
        let advanced = match self.advance_checkpoints(&mut tx, &contexts).await {
            Ok(advanced) => advanced,
            Err(e) => return self.run_alone_after(members(batch), e),
        };
        let mut applied = Vec::with_capacity(batch.len());
        let mut jobs = batch.into_iter();
        while let Some(job) = jobs.next() {
            if !advanced.contains(&aggregate(&job.ctx)) {
                tracing::debug!(
                    projection = self.name(),
                    event_id = %job.ctx.event_id,
                    "already applied; skipping"
                );
                let _ = job.done.send(Ok(()));
                continue;
            }
            let Job { event, ctx, done } = job;
            match self.inner.projection.apply(&mut tx, event, &ctx).await {
                Ok(()) => applied.push((ctx, done)),
                Err(error) => {
                    // Dropping `tx` rolls it back.
                    drop(tx);
                    self.inner.run_alone(&ctx);
                    let _ = done.send(Err(error));
                    let siblings = applied
                        .into_iter()
                        .chain(jobs.map(|job| (job.ctx, job.done)));
                    for (sibling, done) in siblings {
                        self.inner.run_alone(&sibling);
                        let failed = BatchFailed::Sibling(ctx.event_id);
                        let _ = done.send(Err(HandlerError::retryable(failed)));
                    }
                    return;
                }
            }
        }
        match tx.commit().await {
            Ok(()) => {
                for (_, done) in applied {
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => self.run_alone_after(applied, e),
        }
    }

    /// The batch's transaction failed: every member runs again alone, the first with the
    /// database's error, the others with its message.
    fn run_alone_after(&self, members: Vec<(EventContext, Done)>, error: sqlx::Error) {
        let cause = error.to_string();
        let mut first = Some(error);
        for (ctx, done) in members {
            self.inner.run_alone(&ctx);
            let error = match first.take() {
                Some(e) => infra(e),
                None => HandlerError::retryable(BatchFailed::Transaction(cause.clone())),
            };
            let _ = done.send(Err(error));
        }
    }
}

fn members<E>(batch: Vec<Job<E>>) -> Vec<(EventContext, Done)> {
    batch.into_iter().map(|job| (job.ctx, job.done)).collect()
}
