//! [`PgStore`]: the store contract on PostgreSQL tables.

use std::sync::Arc;

use futures::TryStreamExt;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, Row};

use super::rows::{backend, event_columns, stored_event, EventColumns};
use crate::store::{
    contract, AggregateKey, AppendOutcome, EventStore, ExpectedVersion, NewEvent, Snapshot,
    StoreError, StoredEvent,
};

/// SQLSTATE of a unique violation: a writer that bypassed `jetsource_append` took the sequence.
const UNIQUE_VIOLATION: &str = "23505";

/// An event store in PostgreSQL tables, with the same semantics as the JetStream and in-memory
/// stores: per-aggregate optimistic concurrency, all-or-nothing appends, idempotent command ids
/// (kept forever), snapshots, and a store-wide position.
///
/// Run [`PgStore::migrate`] (or the files of [`migrator`](super::migrator)) once to create the
/// tables. [`PgStore::append_in`] appends inside the caller's transaction, so a command's
/// events and the application's own rows commit together; a [`Relay`](super::Relay) publishes
/// committed events to JetStream in the JetStream store's wire format.
///
/// Positions are assigned when a transaction inserts, not when it commits: a transaction that
/// commits late makes a position below ones already readable appear. `read_all` reads what is
/// committed now; the relay publishes every committed event whatever the commit order.
///
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PgStore {
    shared: Arc<PgPool>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// A store on the tables reached through `pool` (its connections' `search_path` chooses the
    /// schema).
    pub fn new(pool: PgPool) -> Self {
        PgStore {
            shared: Arc::new(pool),
        }
    }

    /// The pool the store reads and writes through.
    pub fn pool(&self) -> &PgPool {
        &self.shared
    }

    /// Creates or updates the store's tables with [`migrator`](super::migrator).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        super::migrator().run(self.pool()).await
    }

    /// Appends `events` to `key` inside the caller's transaction (`tx` derefs to a
    /// `PgConnection`), with the rules of [`EventStore::append`]. The events become visible,
    /// and the relay publishes them, only when the caller commits; a rollback leaves no trace.
    ///
    /// Until the caller's transaction ends, other appends to the same aggregate wait for it, so
    /// a transaction that appends should be short. A conflict or a duplicate is an answer, not
    /// an error of the transaction: the caller may go on with it.
    pub async fn append_in(
        &self,
        tx: &mut PgConnection,
        key: &AggregateKey,
        expected: ExpectedVersion,
        command_id: Option<&str>,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        contract::append(key, expected, command_id, events, |events| {
            append_on(&mut *tx, key, expected, command_id, events)
        })
        .await
    }

    /// Loads the events of `key` from `from_sequence` on, inside the caller's transaction (it
    /// sees the transaction's own appends).
    pub async fn load_in(
        &self,
        tx: &mut PgConnection,
        key: &AggregateKey,
        from_sequence: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        contract::check_key(key)?;
        load_on(tx, key, from_sequence).await
    }

    /// The first outcome of `command_id` on `key`, as [`EventStore::command_outcome`], inside
    /// the caller's transaction (it sees the transaction's own appends).
    pub async fn command_outcome_in(
        &self,
        tx: &mut PgConnection,
        key: &AggregateKey,
        command_id: &str,
    ) -> Result<Option<AppendOutcome>, StoreError> {
        contract::check_key(key)?;
        command_outcome_on(tx, key, command_id).await
    }

    /// Saves `snapshot` as [`EventStore::save_snapshot`] does, inside the caller's transaction:
    /// it is kept only if the transaction commits. The save runs in a savepoint, so its failure
    /// leaves the transaction usable.
    pub(crate) async fn save_snapshot_in(
        &self,
        tx: &mut PgConnection,
        key: &AggregateKey,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        contract::check_key(key)?;
        async fn run(tx: &mut PgConnection, sql: &'static str) -> Result<(), StoreError> {
            sqlx::query(sql)
                .execute(tx)
                .await
                .map(drop)
                .map_err(backend)
        }
        run(tx, "SAVEPOINT jetsource_snapshot").await?;
        let saved = save_snapshot_on(&mut *tx, key, snapshot).await;
        if saved.is_err() {
            run(tx, "ROLLBACK TO SAVEPOINT jetsource_snapshot").await?;
        }
        run(tx, "RELEASE SAVEPOINT jetsource_snapshot").await?;
        saved
    }
}

/// One call of `jetsource_append` (see the migration): the aggregate's appends take turns on an
/// advisory lock, the command id and the version are checked, and the rows inserted.
async fn append_on<'c>(
    executor: impl PgExecutor<'c>,
    key: &AggregateKey,
    expected: ExpectedVersion,
    command_id: Option<&str>,
    events: Vec<NewEvent>,
) -> Result<AppendOutcome, StoreError> {
    let columns = EventColumns::of(events);
    let expected_version = match expected {
        ExpectedVersion::Exact(version) => Some(version as i64),
        ExpectedVersion::Any => None,
    };
    let row = sqlx::query(
        "SELECT outcome, first_sequence, last_sequence, last_position \
         FROM jetsource_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(key.aggregate_type)
    .bind(key.id.as_str())
    .bind(expected_version)
    .bind(command_id)
    .bind(&columns.ids)
    .bind(&columns.names)
    .bind(&columns.versions)
    .bind(&columns.codecs)
    .bind(&columns.payloads)
    .bind(&columns.occurred_at_ns)
    .bind(&columns.correlation_ids)
    .bind(&columns.causation_ids)
    .bind(&columns.headers)
    .fetch_one(executor)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            StoreError::Conflict {
                aggregate: key.clone(),
                expected: expected_version.unwrap_or(0) as u64,
                actual: 0,
            }
        }
        _ => backend(error),
    })?;
    let number = |column: &str| -> Result<u64, StoreError> {
        row.try_get::<i64, _>(column)
            .map(|n| n as u64)
            .map_err(backend)
    };
    let outcome = AppendOutcome {
        first_sequence: number("first_sequence")?,
        last_sequence: number("last_sequence")?,
        last_position: number("last_position")?,
        duplicate: false,
    };
    match row.try_get::<&str, _>("outcome").map_err(backend)? {
        "appended" => Ok(outcome),
        "duplicate" => Ok(outcome.as_duplicate()),
        "conflict" => Err(StoreError::Conflict {
            aggregate: key.clone(),
            expected: expected_version.unwrap_or(0) as u64,
            actual: outcome.last_sequence,
        }),
        "empty" => Err(StoreError::EmptyAppend(key.clone())),
        other => Err(StoreError::Corrupt {
            position: 0,
            reason: format!("jetsource_append answered {other:?}"),
            source: None,
        }),
    }
}

async fn load_on<'c>(
    executor: impl PgExecutor<'c>,
    key: &AggregateKey,
    from_sequence: u64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let query = sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        " FROM jetsource_events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence >= $3 ORDER BY sequence"
    ))
    .bind(key.aggregate_type)
    .bind(key.id.as_str())
    .bind(from_sequence.min(i64::MAX as u64) as i64);
    stored_events(query, executor).await
}

/// The events a query of `event_columns!` reads, each decoded as its row arrives, while the
/// server sends the next ones (decoding them all after the last one arrived added the whole
/// decoding time to a load: 5 to 10% of a 1,000-event load).
async fn stored_events<'q, 'c>(
    query: Query<'q, Postgres, PgArguments>,
    executor: impl PgExecutor<'c> + 'q,
) -> Result<Vec<StoredEvent>, StoreError>
where
    'c: 'q,
{
    let mut rows = query.fetch(executor);
    let mut events = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(backend)? {
        events.push(stored_event(&row)?);
    }
    Ok(events)
}

/// The first outcome of `command_id` on `key`: the sequences and position of the events it
/// appended.
async fn command_outcome_on<'c>(
    executor: impl PgExecutor<'c>,
    key: &AggregateKey,
    command_id: &str,
) -> Result<Option<AppendOutcome>, StoreError> {
    let row = sqlx::query(
        "SELECT min(sequence) AS first, max(sequence) AS last, max(position) AS position \
         FROM jetsource_events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND command_id = $3 \
         HAVING count(*) > 0",
    )
    .bind(key.aggregate_type)
    .bind(key.id.as_str())
    .bind(command_id)
    .fetch_optional(executor)
    .await
    .map_err(backend)?;
    let Some(row) = row else { return Ok(None) };
    let number = |column: &str| -> Result<u64, StoreError> {
        row.try_get::<i64, _>(column)
            .map(|n| n as u64)
            .map_err(backend)
    };
    Ok(Some(AppendOutcome {
        first_sequence: number("first")?,
        last_sequence: number("last")?,
        last_position: number("position")?,
        duplicate: true,
    }))
}

async fn save_snapshot_on<'c>(
    executor: impl PgExecutor<'c>,
    key: &AggregateKey,
    snapshot: Snapshot,
) -> Result<(), StoreError> {
    // The contract's replacement rule (`contract::snapshot_replaces`), as one statement.
    sqlx::query(
        "INSERT INTO jetsource_snapshots AS kept \
             (aggregate_type, aggregate_id, schema_version, version, position, state) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
             schema_version = EXCLUDED.schema_version, version = EXCLUDED.version, \
             position = EXCLUDED.position, state = EXCLUDED.state \
         WHERE kept.schema_version <> EXCLUDED.schema_version \
            OR kept.version < EXCLUDED.version",
    )
    .bind(key.aggregate_type)
    .bind(key.id.as_str())
    .bind(snapshot.schema_version as i32)
    .bind(snapshot.version as i64)
    .bind(snapshot.position as i64)
    .bind(snapshot.state.as_ref())
    .execute(executor)
    .await
    .map_err(backend)?;
    Ok(())
}

impl EventStore for PgStore {
    async fn append(
        &self,
        key: &AggregateKey,
        expected: ExpectedVersion,
        command_id: Option<&str>,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        contract::append(key, expected, command_id, events, |events| {
            append_on(self.pool(), key, expected, command_id, events)
        })
        .await
    }

    async fn load(
        &self,
        key: &AggregateKey,
        from_sequence: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        contract::check_key(key)?;
        load_on(self.pool(), key, from_sequence).await
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM jetsource_events WHERE position >= $1 ORDER BY position LIMIT $2"
        ))
        .bind(from_position.min(i64::MAX as u64) as i64)
        .bind(limit.min(i64::MAX as usize) as i64);
        stored_events(query, self.pool()).await
    }

    async fn command_outcome(
        &self,
        key: &AggregateKey,
        command_id: &str,
    ) -> Result<Option<AppendOutcome>, StoreError> {
        contract::check_key(key)?;
        command_outcome_on(self.pool(), key, command_id).await
    }

    fn lane_scope(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    async fn load_snapshot(&self, key: &AggregateKey) -> Result<Option<Snapshot>, StoreError> {
        contract::check_key(key)?;
        let row = sqlx::query(
            "SELECT schema_version, version, position, state FROM jetsource_snapshots \
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(key.aggregate_type)
        .bind(key.id.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let schema_version: i32 = row.try_get("schema_version").map_err(backend)?;
        let version: i64 = row.try_get("version").map_err(backend)?;
        let position: i64 = row.try_get("position").map_err(backend)?;
        let state: Vec<u8> = row.try_get("state").map_err(backend)?;
        Ok(Some(Snapshot {
            schema_version: schema_version as u32,
            version: version as u64,
            position: position as u64,
            state: state.into(),
        }))
    }

    async fn save_snapshot(
        &self,
        key: &AggregateKey,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        contract::check_key(key)?;
        save_snapshot_on(self.pool(), key, snapshot).await
    }
}
