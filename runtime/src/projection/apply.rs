//! Where a [`PgProjection`] applies events: the subscriber's handler hands each event to the
//! batcher, which applies the events the subscriber's lanes hold at once in one transaction
//! ([`super::batch`]); an event whose batch failed runs alone in a transaction of its own, so
//! one bad event cannot hold the others back. Either way the checkpoint of the event's
//! aggregate moves in the same transaction as its changes.

use super::checkpoint::infra;
use super::{batch, PgProjection, Projection};
use crate::subscriber::{EventContext, HandlerError, Subscriber};

impl<P: Projection> Subscriber for PgProjection<P> {
    type Event = P::Event;

    async fn handle(&self, event: P::Event, ctx: &EventContext) -> Result<(), HandlerError> {
        let inner = &self.inner;
        if inner.batching.max_events <= 1 || inner.runs_alone(ctx) {
            let result = self.apply_alone(event, ctx).await;
            if !matches!(result, Err(HandlerError::Retryable(_))) {
                inner.ran_alone(ctx);
            }
            return result;
        }
        batch::submit(self, event, ctx).await
    }
}

impl<P: Projection> PgProjection<P> {
    /// One event in a transaction of its own.
    async fn apply_alone(&self, event: P::Event, ctx: &EventContext) -> Result<(), HandlerError> {
        let mut tx = self.inner.pool.begin().await.map_err(infra)?;
        // Taking the checkpoint row first serializes concurrent attempts on one aggregate; an
        // event not past the checkpoint was applied before.
        if !self.advance_checkpoint(&mut tx, ctx).await.map_err(infra)? {
            tracing::debug!(
                projection = self.name(),
                event_id = %ctx.event_id,
                "already applied; skipping"
            );
            tx.rollback().await.map_err(infra)?;
            return Ok(());
        }
        self.inner.projection.apply(&mut tx, event, ctx).await?;
        tx.commit().await.map_err(infra)
    }
}
