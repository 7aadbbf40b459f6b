//! How the per-event loop settles an in-memory delivery: every ending is one step on the
//! durable consumer, so no crash can fall between a completion and its acknowledgement.

use std::sync::Arc;

use tokio::sync::watch;
use uuid::Uuid;

use super::durable::{Delivery, Durable};
use crate::observability::SubscriberMetrics;
use crate::store::{InMemoryStore, StoredEvent};
use crate::subscriber::config::{Idempotency, SubscriberConfig};
use crate::subscriber::handle::Counters;
use crate::subscriber::handler::Subscriber;
use crate::subscriber::process::{Backend, Letter, Settled};

/// What the dispatcher and its tasks share.
pub(crate) struct Shared<S: Subscriber> {
    pub(crate) subscriber: S,
    pub(crate) config: SubscriberConfig,
    pub(crate) store: InMemoryStore,
    pub(crate) durable: Arc<Durable>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) metrics: SubscriberMetrics,
    /// Set by the handle's shutdown: the dispatcher stops reading, retry pauses end.
    pub(crate) stop: watch::Receiver<bool>,
}

impl<S: Subscriber> Backend for Shared<S> {
    type Subscriber = S;
    type Delivery = Delivery;

    fn subscriber(&self) -> &S {
        &self.subscriber
    }

    fn config(&self) -> &SubscriberConfig {
        &self.config
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn metrics(&self) -> &SubscriberMetrics {
        &self.metrics
    }

    fn stop(&self) -> &watch::Receiver<bool> {
        &self.stop
    }

    fn event(&self, delivery: &Delivery) -> Result<Arc<StoredEvent>, String> {
        Ok(delivery.event.clone())
    }

    fn first_attempt(&self, delivery: &Delivery) -> u64 {
        delivery.attempts_before + 1
    }

    fn redriven(&self, delivery: &Delivery) -> Option<u64> {
        delivery.redriven_after
    }

    fn completed_before(&self, _: &Delivery, id: Uuid) -> bool {
        // Every delivery is checked: a lookup in memory costs less than telling a first
        // delivery from a repeated one.
        self.completion_ttl().is_some() && self.durable.is_completed(id)
    }

    fn attempt_started(&self, delivery: &Delivery) {
        // Counted on the durable, so a run that ends mid-attempt leaves the count to the next.
        self.durable.attempt_started(delivery.source);
    }

    async fn skip(&self, delivery: Delivery) {
        self.durable.acknowledge(delivery.source, None);
    }

    async fn complete(&self, delivery: Delivery, id: Uuid) -> Settled {
        let completed = self.completion_ttl().map(|ttl| (id, ttl));
        self.durable.acknowledge(delivery.source, completed);
        Settled::Done
    }

    async fn dead_letter(&self, delivery: Delivery, letter: Letter) -> bool {
        let stored = &delivery.event;
        tracing::warn!(
            event_id = %stored.id,
            event = %stored.name,
            position = stored.position,
            reason = %letter.reason,
            error = letter.error,
            "event dead-lettered"
        );
        let event = Arc::unwrap_or_clone(delivery.event);
        self.durable.dead_letter(
            delivery.source,
            event,
            letter.reason,
            letter.error,
            letter.attempts,
        );
        true
    }

    async fn release(&self, _delivery: Delivery) {
        // Unacknowledged on the durable already: the next run delivers it first.
    }
}

impl<S: Subscriber> Shared<S> {
    fn completion_ttl(&self) -> Option<std::time::Duration> {
        match self.config.idempotency {
            Idempotency::Markers { ttl } => Some(ttl),
            Idempotency::Off => None,
        }
    }
}
