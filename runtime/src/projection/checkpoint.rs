//! The checkpoint table's statements: one aggregate's checkpoint moved to an event, or many
//! at once for a batch. A checkpoint only moves forward, so an event not past it was applied
//! before.

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, PgConnection};

use super::{PgProjection, Projection};
use crate::subscriber::{EventContext, HandlerError};

/// What the checkpoint orders by: the aggregate sequence, or the stream position for events
/// published outside aggregates (sequence 0), which also grows per key.
fn checkpoint_order(ctx: &EventContext) -> u64 {
    if ctx.sequence == 0 {
        ctx.position
    } else {
        ctx.sequence
    }
}

pub(super) fn infra(e: sqlx::Error) -> HandlerError {
    HandlerError::Retryable(Box::new(e))
}

impl<P: Projection> PgProjection<P> {
    /// The checkpoint table, its schema checked, with a refused schema as sqlx's configuration
    /// error (the statements below answer in sqlx's errors).
    fn checked_table(&self) -> Result<String, sqlx::Error> {
        self.table()
            .map_err(|e| sqlx::Error::Configuration(Box::new(e)))
    }

    /// Moves the checkpoint of the event's aggregate to the event; false when it was there or
    /// beyond already.
    pub(super) async fn advance_checkpoint(
        &self,
        tx: &mut PgConnection,
        ctx: &EventContext,
    ) -> Result<bool, sqlx::Error> {
        let table = self.checked_table()?;
        // Safe to assert: `checked_table` refuses a schema that is not a plain identifier.
        let advanced = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} AS c (projection, aggregate_type, aggregate_id, sequence, position)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE
                SET sequence = EXCLUDED.sequence, position = EXCLUDED.position, updated_at = now()
                WHERE c.sequence < EXCLUDED.sequence"
        )))
        .bind(self.name())
        .bind(&ctx.aggregate_type)
        .bind(&ctx.aggregate_id)
        .bind(checkpoint_order(ctx) as i64)
        .bind(ctx.position as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Ok(advanced > 0)
    }
    /// Moves the checkpoints of every event's aggregate in one statement; returns the
    /// aggregates whose checkpoint moved (the others had their event applied before).
    pub(super) async fn advance_checkpoints(
        &self,
        tx: &mut PgConnection,
        contexts: &[&EventContext],
    ) -> Result<HashSet<(String, String)>, sqlx::Error> {
        // In key order, so concurrent batches lock checkpoint rows in the same order.
        let mut rows = contexts.to_vec();
        rows.sort_by(|a, b| {
            (&a.aggregate_type, &a.aggregate_id).cmp(&(&b.aggregate_type, &b.aggregate_id))
        });
        let types: Vec<&str> = rows.iter().map(|c| c.aggregate_type.as_str()).collect();
        let ids: Vec<&str> = rows.iter().map(|c| c.aggregate_id.as_str()).collect();
        let orders: Vec<i64> = rows.iter().map(|c| checkpoint_order(c) as i64).collect();
        let positions: Vec<i64> = rows.iter().map(|c| c.position as i64).collect();
        let table = self.checked_table()?;
        let moved: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO {table} AS c (projection, aggregate_type, aggregate_id, sequence, position)
             SELECT $1, t.aggregate_type, t.aggregate_id, t.sequence, t.position
             FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::bigint[])
                AS t(aggregate_type, aggregate_id, sequence, position)
             ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE
                SET sequence = EXCLUDED.sequence, position = EXCLUDED.position, updated_at = now()
                WHERE c.sequence < EXCLUDED.sequence
             RETURNING c.aggregate_type, c.aggregate_id"
        )))
        .bind(self.name())
        .bind(&types)
        .bind(&ids)
        .bind(&orders)
        .bind(&positions)
        .fetch_all(&mut *tx)
        .await?;
        Ok(moved.into_iter().collect())
    }
}
