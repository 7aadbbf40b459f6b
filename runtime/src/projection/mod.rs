//! Read models in PostgreSQL, changed exactly once per event.
//!
//! A [`Projection`] applies events to its tables inside a transaction that [`PgProjection`]
//! opens; the same transaction advances the projection's checkpoint for the event's aggregate
//! (table `jetsource_projection_checkpoints` in the chosen schema: one row per projection and
//! aggregate holding the last applied aggregate sequence). An event whose sequence is not past
//! the checkpoint is skipped, so a redelivery, a crash before the ack, or a second process
//! racing on the same event changes nothing: the read model sees each event once. The
//! subscriber's own completion log is not needed and is switched off.
//!
//! Events the subscriber's lanes hold at once (one per aggregate) share a transaction: one
//! statement moves all their checkpoints, then each is applied, then one commit makes them
//! durable together and the subscriber acks them ([`Batching`], on by default). When one event
//! fails, the batch rolls back; that event gets its own error, and the others run again at once,
//! each in a transaction of its own.
//!
//! Events published outside aggregates ([`crate::Publisher`]) have no aggregate sequence; their
//! checkpoint per topic and key is the stream position, which grows the same way.
//!
//! Caveat of the per-aggregate checkpoint: a dead-lettered event that is redriven after later
//! events of its aggregate were applied is skipped (it would apply out of order).
//!
//! [`PgProjection::rebuild`] deletes the consumer, the checkpoints and (through
//! [`Projection::reset`]) the read model in one transaction; the next start replays the stream.
//!
//! ```no_run
//! use jetsource::projection::{sqlx, PgProjection, Projection};
//! use jetsource::subscriber::{EventContext, HandlerError, SubscriberConfig};
//! use jetsource::{Event, EventSet};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize)]
//! #[event(name = "deposited", version = 1)]
//! struct Deposited { amount: i64 }
//!
//! #[derive(EventSet)]
//! enum BalanceEvents { Deposited(Deposited) }
//!
//! struct Balances;
//!
//! impl Projection for Balances {
//!     type Event = BalanceEvents;
//!
//!     async fn apply(
//!         &self,
//!         tx: &mut sqlx::PgConnection,
//!         event: BalanceEvents,
//!         ctx: &EventContext,
//!     ) -> Result<(), HandlerError> {
//!         let BalanceEvents::Deposited(d) = event;
//!         sqlx::query(
//!             "INSERT INTO balances (id, total) VALUES ($1, $2)
//!              ON CONFLICT (id) DO UPDATE SET total = balances.total + $2",
//!         )
//!         .bind(&ctx.aggregate_id)
//!         .bind(d.amount)
//!         .execute(tx)
//!         .await
//!         .map_err(HandlerError::retryable)?;
//!         Ok(())
//!     }
//!
//!     async fn reset(&self, tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
//!         sqlx::query("TRUNCATE balances").execute(tx).await.map(|_| ())
//!     }
//! }
//!
//! # async fn run(store: jetsource::JetStreamStore) -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/test").await?;
//! let balances = PgProjection::new(pool, Balances, SubscriberConfig::new("balances"));
//! balances.setup().await?;
//! let running = balances.start(&store).await?;
//! # let _ = running; Ok(()) }
//! ```

mod apply;
mod batch;
mod checkpoint;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use batch::Batching;
pub use sqlx;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::event_set::EventSet;
use crate::subscriber::{
    self, EventContext, HandlerError, Idempotency, JetStreamProgress, SubscriberConfig,
    SubscriberError, SubscriberHandle, WaitError,
};
use crate::JetStreamStore;

/// A read model fed by events. Everything `apply` does through `tx` commits together with the
/// checkpoint, or not at all.
///
/// ```
/// use jetsource::projection::{sqlx, Projection};
/// use jetsource::subscriber::{EventContext, HandlerError};
/// # use jetsource::{Event, EventSet};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "opened", version = 1)]
/// # struct Opened { owner: String }
/// # #[derive(EventSet)]
/// # enum Events { Opened(Opened) }
/// struct Owners;
///
/// impl Projection for Owners {
///     type Event = Events;
///     async fn apply(&self, tx: &mut sqlx::PgConnection, event: Events, ctx: &EventContext)
///         -> Result<(), HandlerError>
///     {
///         let Events::Opened(o) = event;
///         sqlx::query("INSERT INTO owners (account, owner) VALUES ($1, $2)")
///             .bind(&ctx.aggregate_id).bind(&o.owner)
///             .execute(tx).await.map_err(HandlerError::retryable)?;
///         Ok(())
///     }
///     async fn reset(&self, tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
///         sqlx::query("DELETE FROM owners").execute(tx).await.map(|_| ())
///     }
/// }
/// ```
pub trait Projection: Send + Sync + 'static {
    /// The events that change the read model.
    type Event: EventSet;

    /// Applies one event through `tx`, the transaction that also stores the checkpoint.
    fn apply(
        &self,
        tx: &mut PgConnection,
        event: Self::Event,
        ctx: &EventContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Empties the read model before a rebuild, in the transaction that clears the checkpoints.
    fn reset(&self, tx: &mut PgConnection) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// Why a projection operation failed.
///
/// ```
/// use jetsource::projection::ProjectionError;
/// let e = ProjectionError::InvalidConfig("schema".into());
/// assert!(e.to_string().contains("schema"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// A name is not a plain SQL identifier.
    #[error("invalid projection configuration: {0}")]
    InvalidConfig(String),
    /// PostgreSQL failed; sqlx's error is the [`source`](std::error::Error::source).
    #[error("PostgreSQL failed")]
    Database(#[from] sqlx::Error),
    /// The subscriber could not start, or the consumer could not be removed.
    #[error(transparent)]
    Subscriber(#[from] SubscriberError),
}

/// Runs a [`Projection`] as a subscriber with its checkpoint in PostgreSQL.
///
/// ```no_run
/// # use jetsource::projection::{PgProjection, Projection};
/// # async fn run<P: Projection>(store: jetsource::JetStreamStore, pool: jetsource::projection::sqlx::PgPool, p: P)
/// #     -> Result<(), Box<dyn std::error::Error>> {
/// let projection = PgProjection::new(pool, p, jetsource::subscriber::SubscriberConfig::new("balances"))
///     .checkpoint_schema("read_models");
/// projection.setup().await?;
/// projection.rebuild(&store).await?; // from the start of the stream
/// let running = projection.start(&store).await?;
/// # let _ = running; Ok(()) }
/// ```
pub struct PgProjection<P: Projection> {
    inner: Arc<Inner<P>>,
}

impl<P: Projection> Clone for PgProjection<P> {
    fn clone(&self) -> Self {
        PgProjection {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<P: Projection> {
    projection: P,
    pool: PgPool,
    config: SubscriberConfig,
    schema: String,
    batching: Batching,
    /// The batcher's inbox, started by the first event.
    jobs: OnceLock<mpsc::Sender<batch::Job<P::Event>>>,
    /// Events whose batch failed: their next attempts run in transactions of their own.
    alone: Mutex<HashSet<Uuid>>,
}

impl<P: Projection> Inner<P> {
    fn runs_alone(&self, ctx: &EventContext) -> bool {
        self.alone_events().contains(&ctx.event_id)
    }

    fn run_alone(&self, ctx: &EventContext) {
        self.alone_events().insert(ctx.event_id);
    }

    fn ran_alone(&self, ctx: &EventContext) {
        self.alone_events().remove(&ctx.event_id);
    }

    fn alone_events(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.alone.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn check_identifier(what: &str, name: &str) -> Result<(), ProjectionError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ProjectionError::InvalidConfig(format!(
            "{what} {name:?} must be a plain SQL identifier (letters, digits, _)"
        )))
    }
}

impl<P: Projection> PgProjection<P> {
    /// A projection named after `config`'s durable name, with its checkpoints in schema
    /// `public`. Its idempotency is the checkpoint, so [`Idempotency::Off`] is used.
    pub fn new(pool: PgPool, projection: P, config: SubscriberConfig) -> Self {
        PgProjection {
            inner: Arc::new(Inner {
                projection,
                pool,
                config: config.idempotency(Idempotency::Off),
                schema: "public".into(),
                batching: Batching::default(),
                jobs: OnceLock::new(),
                alone: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Keeps the checkpoint table in `schema` (which must exist).
    ///
    /// # Panics
    /// When called after the projection was cloned or started.
    pub fn checkpoint_schema(mut self, schema: impl Into<String>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("checkpoint_schema is set before the projection is shared")
            .schema = schema.into();
        self
    }

    /// Groups events into transactions as `batching` says ([`Batching::default`]: up to 32
    /// events, the first waiting at most a millisecond; [`Batching::off`]: one transaction per
    /// event).
    ///
    /// # Panics
    /// When called after the projection was cloned or started.
    pub fn batching(mut self, batching: Batching) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("batching is set before the projection is shared")
            .batching = batching;
        self
    }

    /// The projection's name: its durable consumer name.
    pub fn name(&self) -> &str {
        &self.inner.config.durable_name
    }

    /// The wrapped projection.
    pub fn projection(&self) -> &P {
        &self.inner.projection
    }

    /// The checkpoint table's qualified name. The schema is checked on every use (a
    /// `PgProjection` can run under `subscriber::start` without [`PgProjection::start`]'s
    /// check): that check is what lets the statements built from the name be [`AssertSqlSafe`].
    fn table(&self) -> Result<String, ProjectionError> {
        check_identifier("schema", &self.inner.schema)?;
        Ok(format!(
            "{}.jetsource_projection_checkpoints",
            self.inner.schema
        ))
    }

    /// Creates the checkpoint table if it is missing.
    pub async fn setup(&self) -> Result<(), ProjectionError> {
        let table = self.table()?;
        self.inner.config.validate()?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                projection TEXT NOT NULL,
                aggregate_type TEXT NOT NULL,
                aggregate_id TEXT NOT NULL,
                sequence BIGINT NOT NULL,
                position BIGINT NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                PRIMARY KEY (projection, aggregate_type, aggregate_id)
            )"
        )))
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    /// Starts consuming (call [`PgProjection::setup`] once first). With batching on, the
    /// subscriber's [`concurrency`](SubscriberConfig::concurrency) is raised to at least twice
    /// the batch size, so the next batch fills while one commits.
    pub async fn start(&self, store: &JetStreamStore) -> Result<SubscriberHandle, ProjectionError> {
        check_identifier("schema", &self.inner.schema)?;
        let mut config = self.inner.config.clone();
        let batch = self.inner.batching.max_events;
        if batch > 1 {
            // Two batches' worth in flight: the next one fills while one commits.
            config.concurrency = config.concurrency.max(2 * batch);
        }
        Ok(subscriber::start(store, self.clone(), config).await?)
    }

    /// The last applied sequence of one aggregate, if any event of it was applied.
    pub async fn checkpoint(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<u64>, ProjectionError> {
        let table = self.table()?;
        let row: Option<(i64,)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT sequence FROM {table} WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3"
        )))
        .bind(self.name())
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&self.inner.pool)
        .await?;
        Ok(row.map(|(s,)| s as u64))
    }

    /// Waits until the projection has applied every event it handles at or before stream
    /// `position` (from [`Committed::position`](crate::Committed::position)), so a query of
    /// the read model after a command sees it. It asks the server how far the projection's
    /// durable consumer got, so any process can wait, whether it runs the projection or not;
    /// the handle [`PgProjection::start`] returns has the same
    /// [`wait_for`](SubscriberHandle::wait_for).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use jetsource::projection::{PgProjection, Projection};
    /// # async fn run<P: Projection>(store: jetsource::JetStreamStore, projection: PgProjection<P>, committed: jetsource::Committed<()>)
    /// #     -> Result<(), Box<dyn std::error::Error>> {
    /// projection.wait_for(&store, committed.position, Duration::from_secs(2)).await?;
    /// // A query of the read model now sees the command's events.
    /// # Ok(()) }
    /// ```
    pub async fn wait_for(
        &self,
        store: &JetStreamStore,
        position: u64,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let progress = self
            .progress(store)
            .await
            .map_err(|source| WaitError::Progress {
                durable: self.name().to_owned(),
                source,
            })?;
        subscriber::wait_for(&progress, position, timeout).await
    }

    /// Whether the projection has applied every event it handles up to the newest one in the
    /// stream now; like [`PgProjection::wait_for`], from any process.
    pub async fn caught_up(&self, store: &JetStreamStore) -> Result<bool, ProjectionError> {
        let progress = self.progress(store).await?;
        Ok(subscriber::caught_up(&progress).await?)
    }

    async fn progress(&self, store: &JetStreamStore) -> Result<JetStreamProgress, SubscriberError> {
        let js = async_nats::jetstream::new(store.client().clone());
        JetStreamProgress::open(&js, &store.config().name, &self.inner.config).await
    }

    /// Forgets everything: deletes the durable consumer (every partition's, when scaled out),
    /// then in one transaction the
    /// checkpoints and (through [`Projection::reset`]) the read model. The next
    /// [`PgProjection::start`] replays the stream from the configured start. Stop the running
    /// projection first.
    pub async fn rebuild(&self, store: &JetStreamStore) -> Result<(), ProjectionError> {
        let table = self.table()?;
        let js = async_nats::jetstream::new(store.client().clone());
        crate::subscriber::delete_consumers(&js, &store.config().name, &self.inner.config).await?;
        let mut tx = self.inner.pool.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE projection = $1"
        )))
        .bind(self.name())
        .execute(&mut *tx)
        .await?;
        self.inner.projection.reset(&mut tx).await?;
        tx.commit().await?;
        tracing::info!(projection = self.name(), "projection reset for a rebuild");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_identifier;

    #[test]
    fn identifiers_are_plain() {
        assert!(check_identifier("schema", "read_models").is_ok());
        assert!(check_identifier("schema", "x; DROP TABLE y").is_err());
        assert!(check_identifier("schema", "1abc").is_err());
        assert!(check_identifier("schema", "").is_err());
    }
}
