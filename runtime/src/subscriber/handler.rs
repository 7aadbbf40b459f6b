//! What a subscriber is: its handler, the context each event comes with, and how a handler
//! fails. Nothing here depends on a backend.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::SystemTime;

use uuid::Uuid;

use super::config::SubscriberConfig;
use crate::event_set::EventSet;

/// Consumes the events of [`Subscriber::Event`] from a store's stream.
///
/// ```
/// use jetsource::subscriber::{EventContext, HandlerError, Subscriber};
/// # use jetsource::{Event, EventSet};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "opened", version = 1)]
/// # struct Opened { owner: String }
/// #[derive(EventSet)]
/// enum AccountEvents { Opened(Opened) }
///
/// struct Counter(std::sync::atomic::AtomicU64);
///
/// impl Subscriber for Counter {
///     type Event = AccountEvents;
///     async fn handle(&self, _: AccountEvents, _: &EventContext) -> Result<(), HandlerError> {
///         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
pub trait Subscriber: Send + Sync + 'static {
    /// The handled events. Only their names are delivered.
    type Event: EventSet;

    /// Handles one event. `Ok` acks it; see [`HandlerError`] for the failures.
    fn handle(
        &self,
        event: Self::Event,
        ctx: &EventContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A shared subscriber, so the caller can keep a handle on its state while it runs.
impl<S: Subscriber> Subscriber for std::sync::Arc<S> {
    type Event = S::Event;

    fn handle(
        &self,
        event: Self::Event,
        ctx: &EventContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle(event, ctx)
    }
}

/// A subscriber that carries its own configuration: what `#[jetsource::subscriber(...)]`
/// generates, together with the [`Subscriber`] impl. Start it with `start_defined` (or
/// [`start_defined_in_memory`](super::start_defined_in_memory)), or pass
/// [`SubscriberDefinition::subscriber_config`] (adjusted as needed) to `start`.
///
/// ```
/// use jetsource::subscriber::{EventContext, HandlerError, SubscriberDefinition};
/// # use jetsource::Event;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "deposited", version = 1)]
/// # struct Deposited { amount: u64 }
/// struct Audit;
///
/// #[jetsource::subscriber(durable = "audit", deliver_from = "new", concurrency = 4)]
/// impl Audit {
///     async fn on_deposited(&self, e: Deposited, _: &EventContext) -> Result<(), HandlerError> {
///         println!("deposited {}", e.amount);
///         Ok(())
///     }
/// }
///
/// let config = Audit::subscriber_config();
/// assert_eq!((config.durable_name.as_str(), config.concurrency), ("audit", 4));
/// ```
pub trait SubscriberDefinition: Subscriber {
    /// The durable consumer and delivery settings this subscriber runs with.
    fn subscriber_config() -> SubscriberConfig;
}

impl<S: SubscriberDefinition> SubscriberDefinition for std::sync::Arc<S> {
    fn subscriber_config() -> SubscriberConfig {
        S::subscriber_config()
    }
}

/// Where and how an event was stored and delivered.
///
/// ```
/// # use jetsource::subscriber::EventContext;
/// fn log(ctx: &EventContext) {
///     println!("{}/{} #{} at {} (delivery {})",
///         ctx.aggregate_type, ctx.aggregate_id, ctx.sequence, ctx.position, ctx.delivery_count);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventContext {
    /// The event id (UUIDv7).
    pub event_id: Uuid,
    /// The wire name the event was stored under.
    pub event_name: String,
    /// The schema version the event was stored with (the handler gets it upcasted).
    pub event_version: u32,
    /// The aggregate type.
    pub aggregate_type: String,
    /// The aggregate id.
    pub aggregate_id: String,
    /// The event's number within its aggregate.
    pub sequence: u64,
    /// The stream sequence of the event.
    pub position: u64,
    /// When the command produced the event.
    pub timestamp: SystemTime,
    /// The correlation id.
    pub correlation_id: String,
    /// The causation id.
    pub causation_id: Option<String>,
    /// The command id that appended the event, if any.
    pub command_id: Option<String>,
    /// User headers.
    pub headers: BTreeMap<String, String>,
    /// Handler attempts so far including this one: server deliveries plus in-place retries.
    /// A redriven event counts on from the attempts its dead letter recorded.
    pub delivery_count: u64,
    /// The event came back from the dead letters through a redrive (`DeadLetters::redrive` on
    /// JetStream, [`InMemoryDeadLetters::redrive`](super::InMemoryDeadLetters::redrive) in
    /// memory).
    pub redriven: bool,
}

/// Why a handler failed.
///
/// ```
/// use jetsource::subscriber::HandlerError;
/// let e = HandlerError::retryable("database is down");
/// assert!(e.is_retryable());
/// let e = HandlerError::permanent(std::io::Error::other("bad data"));
/// assert_eq!(e.to_string(), "permanent failure");
/// assert_eq!(jetsource::ErrorChain(&e).to_string(), "permanent failure: bad data");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Worth trying again later (a dependency is down, a timeout): retried after the next delay
    /// of [`SubscriberConfig::backoff`], up to [`SubscriberConfig::max_deliver`] attempts.
    #[error("retryable failure")]
    Retryable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Will never succeed (invalid data, a broken invariant): dead-lettered at once.
    #[error("permanent failure")]
    Permanent(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl HandlerError {
    /// A retryable error from anything error-like (including `&str` and `String`).
    pub fn retryable(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        HandlerError::Retryable(error.into())
    }

    /// A permanent error from anything error-like (including `&str` and `String`).
    pub fn permanent(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        HandlerError::Permanent(error.into())
    }

    /// Whether it is [`HandlerError::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, HandlerError::Retryable(_))
    }
}
