//! The public view of in-memory subscribers' durable state: their dead letters and redrive
//! (what `DeadLetters` is on JetStream), and their consumer position, including the lost
//! acknowledgements a JetStream server can produce.

use std::sync::Arc;

use super::durable::{Durable, Durables};
use crate::store::InMemoryStore;
use crate::subscriber::dead_letter::InMemoryDeadLetter;

/// Reads and redrives the dead letters of the in-memory subscribers on a store.
///
/// ```
/// use jetsource::InMemoryStore;
/// use jetsource::subscriber::InMemoryDeadLetters;
/// let store = InMemoryStore::new();
/// let dead = InMemoryDeadLetters::new(&store);
/// assert!(dead.list("billing").is_empty());
/// assert_eq!(dead.redrive("billing"), 0);
/// ```
#[derive(Clone)]
pub struct InMemoryDeadLetters {
    store: InMemoryStore,
}

impl std::fmt::Debug for InMemoryDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryDeadLetters")
            .finish_non_exhaustive()
    }
}

impl InMemoryDeadLetters {
    /// The dead letters of `store`'s in-memory subscribers.
    pub fn new(store: &InMemoryStore) -> Self {
        InMemoryDeadLetters {
            store: store.clone(),
        }
    }

    /// The dead letters of subscriber `durable`, oldest first.
    pub fn list(&self, durable: &str) -> Vec<InMemoryDeadLetter> {
        Durables::of(&self.store)
            .get(durable)
            .map(|d| d.dead_letters())
            .unwrap_or_default()
    }

    /// Hands every dead letter of subscriber `durable` back to it: the running subscriber (or
    /// the next one started with that durable name) handles each again, with
    /// [`EventContext::redriven`](crate::subscriber::EventContext::redriven) set; a failure
    /// dead-letters it again. Returns how many were handed back.
    ///
    /// As with JetStream's `DeadLetters::redrive`, a redriven letter gets a new round of up to
    /// [`max_deliver`](crate::subscriber::SubscriberConfig::max_deliver) attempts, even if its
    /// attempts so far already reached it; they are numbered on from the ones the letter
    /// records ([`EventContext::delivery_count`](crate::subscriber::EventContext::delivery_count)
    /// of a letter dead-lettered after 3 attempts starts at 4), and a letter that fails again
    /// records the total.
    pub fn redrive(&self, durable: &str) -> usize {
        self.redrive_matching(durable, |_| true)
    }

    /// Like [`InMemoryDeadLetters::redrive`], but hands back only the dead letters of
    /// subscriber `durable` that `select` picks; the others stay. Returns how many were handed
    /// back.
    ///
    /// ```
    /// use jetsource::InMemoryStore;
    /// use jetsource::subscriber::{DeadLetterReason, InMemoryDeadLetters};
    /// let dead = InMemoryDeadLetters::new(&InMemoryStore::new());
    /// // The handler bug is fixed; payloads that cannot be decoded stay dead-lettered.
    /// let moved = dead.redrive_matching("billing", |l| l.reason == DeadLetterReason::Permanent);
    /// assert_eq!(moved, 0);
    /// ```
    pub fn redrive_matching(
        &self,
        durable: &str,
        select: impl Fn(&InMemoryDeadLetter) -> bool,
    ) -> usize {
        let moved = Durables::of(&self.store)
            .get(durable)
            .map_or(0, |d| d.redrive(select));
        tracing::info!(durable, moved, "redrove in-memory dead letters");
        moved
    }
}

/// The durable consumer of an in-memory subscriber, as the store keeps it between runs.
///
/// ```
/// use jetsource::InMemoryStore;
/// use jetsource::subscriber::InMemoryConsumer;
/// let store = InMemoryStore::new();
/// assert!(InMemoryConsumer::find(&store, "billing").is_none(), "never started");
/// ```
#[derive(Clone)]
pub struct InMemoryConsumer {
    durable: Arc<Durable>,
}

impl std::fmt::Debug for InMemoryConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryConsumer")
            .field("acknowledged_through", &self.acknowledged_through())
            .field("unacknowledged", &self.unacknowledged())
            .finish()
    }
}

impl InMemoryConsumer {
    /// The consumer of durable name `durable` on `store`, once a subscriber started with it.
    pub fn find(store: &InMemoryStore, durable: &str) -> Option<Self> {
        Durables::of(store)
            .get(durable)
            .map(|durable| InMemoryConsumer { durable })
    }

    /// Every event up to this store position is acknowledged (handled, skipped or
    /// dead-lettered) or was not for this subscriber.
    pub fn acknowledged_through(&self) -> u64 {
        self.durable.acknowledged_through()
    }

    /// The positions of events delivered and not acknowledged yet (running, waiting behind
    /// their aggregate, or left by a subscriber that stopped): a restart delivers them first.
    pub fn unacknowledged(&self) -> Vec<u64> {
        self.durable.unacknowledged()
    }

    /// Forgets the acknowledgements of the events at `position` and later, as a JetStream
    /// server that lost its latest consumer state does (or a crash between a handler and its
    /// ack): they are delivered again, with a delivery count of at least 2. With
    /// [`Idempotency::Markers`](crate::subscriber::Idempotency::Markers) the handler does not
    /// see again the ones it completed. Lets tests prove a subscriber safe under redelivery.
    pub fn redeliver_from(&self, position: u64) {
        self.durable.redeliver_from(position);
    }
}
