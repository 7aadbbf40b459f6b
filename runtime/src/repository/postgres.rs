//! Commands inside the caller's PostgreSQL transaction.

use sqlx::PgConnection;

use super::{
    due_snapshot, first_outcome, in_execute_span, replay, replay_all, save_snapshot, Committed,
    EventStamp, ExecuteError, Replayed, Repository, RepositoryError,
};
use crate::aggregate::Aggregate;
use crate::id::AggregateId;
use crate::store::postgres::PgStore;
use crate::store::StoreError;
use crate::store::{AggregateKey, AppendOutcome, CommandMetadata, ExpectedVersion};

impl<A: Aggregate> Repository<A, PgStore> {
    /// Executes `command` on aggregate `id` inside the caller's transaction `tx` (a
    /// `&mut sqlx::Transaction<'_, Postgres>` derefs to it), so the command's events and the
    /// application's own writes in `tx` commit together, or not at all.
    ///
    /// First the aggregate's turn is taken in `tx` (the transaction-scoped advisory lock that
    /// every append to the aggregate takes): from then until `tx` ends, no other writer can
    /// append to the aggregate, so the command decides on the latest state and its append
    /// cannot conflict. A `metadata.command_id` that the aggregate has seen (committed, or
    /// earlier in `tx`) returns its first outcome without running `command`, as in
    /// [`execute_with`](Repository::execute_with). Otherwise the state is loaded through `tx`
    /// (from the repository's cached state or the latest snapshot, plus the newer events, the
    /// uncommitted ones of `tx` included), `command` runs once, and its events are appended
    /// expecting that version. A snapshot that falls due is saved in `tx` too.
    ///
    /// - **Rollback leaves no trace**: neither the events nor a snapshot, and the command id
    ///   stays unused. Until `tx` commits, nobody else sees the events, and a relay publishes
    ///   only committed events.
    /// - **Keep the transaction short**: every other append to the aggregate, from this
    ///   process or another, waits until `tx` commits or rolls back, and then decides again on
    ///   the new state (an `execute` elsewhere counts a conflict and reruns). Set PostgreSQL's
    ///   `lock_timeout` in `tx` to bound the wait for the turn. Never execute on the same
    ///   aggregate outside `tx` (with [`execute`](Repository::execute)) while `tx` is open in
    ///   the same task: that append would wait for `tx`, which waits for it. A transaction that
    ///   executes on several aggregates should take them in a consistent order; otherwise
    ///   PostgreSQL may break a deadlock by failing one of the transactions.
    /// - The state is not put in the repository's cache (`tx` may still roll back), and the
    ///   aggregate's cached state is dropped, so the next command reloads it.
    /// - Run `tx` at PostgreSQL's default isolation, read committed. Under repeatable read or
    ///   serializable the transaction's snapshot may predate the turn, and the command may
    ///   then fail with a conflict that, as any serialization failure, calls for retrying the
    ///   whole transaction.
    ///
    /// A rejection returns [`ExecuteError::Rejected`] and appends nothing; `tx` stays usable,
    /// as it does after a conflict or a duplicate. A database error leaves `tx` aborted, as
    /// any failed statement does: roll it back.
    ///
    /// ```no_run
    /// # use jetsource::{Aggregate, Apply, CommandMetadata, Event, EventSet, PgStore, Repository};
    /// # use jetsource::projection::sqlx;
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Event, Serialize, Deserialize, Debug)]
    /// # #[event(name = "placed", version = 1)]
    /// # struct Placed { total: i64 }
    /// # #[derive(EventSet, Debug)]
    /// # enum OrderEvent { Placed(Placed) }
    /// # #[derive(Aggregate, Default)]
    /// # #[aggregate(name = "order", events = OrderEvent)]
    /// # struct Order { placed: bool }
    /// # impl Apply<Placed> for Order { fn apply(&mut self, _: Placed) { self.placed = true; } }
    /// # async fn demo(orders: Repository<Order, PgStore>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = orders.store().pool().begin().await?;
    /// let place = |order: &Order| match order.placed {
    ///     true => Err("already placed"),
    ///     false => Ok(vec![Placed { total: 42 }.into()]),
    /// };
    /// let meta = CommandMetadata::default().command_id("place-o-1");
    /// orders.execute_in(&mut tx, "o-1", meta, place).await?;
    /// sqlx::query("INSERT INTO invoices (order_id, total) VALUES ('o-1', 42)")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// tx.commit().await?; // the order's event and the invoice, or neither
    /// # Ok(()) }
    /// ```
    pub async fn execute_in<E, F>(
        &self,
        tx: &mut PgConnection,
        id: &str,
        metadata: CommandMetadata,
        command: F,
    ) -> Result<Committed<A>, ExecuteError<E>>
    where
        F: FnOnce(&A) -> Result<Vec<A::Event>, E>,
    {
        let execute = Box::pin(self.execute_in_traced(tx, id, metadata, command));
        in_execute_span::<A, E>(id, execute).await
    }

    async fn execute_in_traced<E, F>(
        &self,
        tx: &mut PgConnection,
        id: &str,
        metadata: CommandMetadata,
        command: F,
    ) -> Result<Committed<A>, ExecuteError<E>>
    where
        F: FnOnce(&A) -> Result<Vec<A::Event>, E>,
    {
        let key = AggregateKey::new(
            A::TYPE,
            AggregateId::new(id).map_err(RepositoryError::from)?,
        );
        let stamp = EventStamp::new(&metadata);
        let store = self.store();
        // No lane: the turn lasts as long as `tx`, longer than this call, and a lane held by a
        // command waiting for `tx` would make `tx`'s next command wait for that command.
        take_turn(tx, &key).await?;
        if let Some(command_id) = metadata.command_id.as_deref() {
            let first = store.command_outcome_in(tx, &key, command_id).await;
            if let Some(first) = first.map_err(RepositoryError::from)? {
                return Ok(first_outcome_in(store, tx, &key, first, 0).await?);
            }
        }
        // A cached state is a committed one, a true start; the rest comes through `tx`.
        let mut loaded = match self.take_cached(&key) {
            Some(cached) => cached,
            None => self.load_start(&key).await?,
        };
        let newer = store.load_in(tx, &key, loaded.version + 1).await;
        if let Replayed::FromStart =
            replay(&key, &mut loaded, &newer.map_err(RepositoryError::from)?)?
        {
            // A quarantine record names an event the start includes.
            let all = store.load_in(tx, &key, 1).await;
            loaded = replay_all(&key, &all.map_err(RepositoryError::from)?)?;
        }
        let events = command(&loaded.state).map_err(ExecuteError::Rejected)?;
        if events.is_empty() {
            return Ok(Committed {
                state: loaded.state,
                version: loaded.version,
                position: 0,
                appended: 0,
                duplicate: false,
                attempts: 1,
            });
        }
        let new_events = stamp.new_events(&events, 1)?;
        let appended = new_events.len();
        let command_id = metadata.command_id.as_deref();
        let expected = ExpectedVersion::Exact(loaded.version);
        let outcome = store
            .append_in(tx, &key, expected, command_id, new_events)
            .await
            .map_err(RepositoryError::from)?;
        if outcome.duplicate {
            // Only a writer that bypasses the turn can get here: the id was checked in it.
            return Ok(first_outcome_in(store, tx, &key, outcome, 1).await?);
        }
        for event in events {
            loaded.state.apply_event(event);
        }
        let due = due_snapshot(&loaded.state, loaded.version, &outcome);
        save_snapshot(&key, due, |snapshot| {
            store.save_snapshot_in(tx, &key, snapshot)
        })
        .await;
        // Dropped again: another command of this process may have cached the aggregate since.
        self.take_cached(&key);
        Ok(Committed {
            state: loaded.state,
            version: outcome.last_sequence,
            position: outcome.last_position,
            appended,
            duplicate: false,
            attempts: 1,
        })
    }
}

/// Takes the aggregate's turn to append (the advisory lock `jetsource_append` takes) until the
/// end of `tx`.
async fn take_turn(tx: &mut PgConnection, key: &AggregateKey) -> Result<(), RepositoryError> {
    sqlx::query("SELECT pg_advisory_xact_lock(jetsource_aggregate_lock($1, $2))")
        .bind(key.aggregate_type)
        .bind(key.id.as_str())
        .execute(tx)
        .await
        .map_err(|error| RepositoryError::Store(StoreError::Backend(Box::new(error))))?;
    Ok(())
}

/// The first outcome of a command id, replayed from the history as `tx` sees it.
async fn first_outcome_in<A: Aggregate>(
    store: &PgStore,
    tx: &mut PgConnection,
    key: &AggregateKey,
    first: AppendOutcome,
    attempts: u32,
) -> Result<Committed<A>, RepositoryError> {
    let history = store.load_in(tx, key, 1).await?;
    first_outcome(key, first, attempts, &history)
}
