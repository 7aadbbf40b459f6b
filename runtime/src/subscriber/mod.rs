//! Subscribers: reliable consumption of stored events on a durable JetStream pull consumer.
//!
//! Implement [`Subscriber`] for a type, choose a [`SubscriberConfig`], and [`start`] it on a
//! [`JetStreamStore`](crate::JetStreamStore). The runtime:
//!
//! - filters on the server: the consumer's filter subjects are `<prefix>.*.*.<name>` for each name
//!   in the handled [`EventSet::known_names`] (the current names and those events were stored
//!   under before a rename), so nothing else is delivered;
//! - handles events of one aggregate in stream order and different aggregates in parallel, up to
//!   [`SubscriberConfig::concurrency`]; a failing event blocks only its own aggregate;
//! - acks after the handler succeeds (plain fire-and-forget `ack()` by default, see [`AckMode`]),
//!   and sends in-progress acks while a handler (or a retry back-off) runs, so long work is not
//!   redelivered;
//! - retries a [`HandlerError::Retryable`] in place after a delay from
//!   [`SubscriberConfig::backoff`], holding the aggregate's later events back (a `nak` would let
//!   them overtake the failed one); after [`SubscriberConfig::max_deliver`] attempts, or at once on
//!   a [`HandlerError::Permanent`], an undecodable payload, an unknown event name or a future
//!   version, it publishes the message to the dead-letter stream with the reason and `term`s it.
//!   [`DeadLetters::redrive`] hands dead letters back to the running subscriber;
//! - remembers completed event ids in a completion log with a TTL ([`Idempotency`]) before it
//!   acks, and checks it for every redelivered message, so a handler never sees an event it
//!   completed, also after a crash between the handler and the ack;
//! - after a start or a reconnect, holds back messages newer than anything delivered before until
//!   the older, unacknowledged ones came back and were handled, so a crash cannot let an
//!   aggregate's later event overtake an earlier one;
//! - shuts down gracefully ([`SubscriberHandle::shutdown`]): stops pulling, finishes what is
//!   running, acks it, `nak`s what had not started, and exits.
//!
//! [`start_in_memory`] runs the same subscriber on an [`InMemoryStore`](crate::InMemoryStore)
//! with the same configuration and semantics: durable positions, name filtering, upcasting,
//! per-aggregate order, in-place retries, dead letters ([`InMemoryDeadLetters`], with redrive),
//! idempotency and graceful shutdown. The store keeps each durable name's state, and
//! [`InMemoryConsumer::redeliver_from`] simulates lost acknowledgements; [`start_in_memory`]
//! lists the few differences.
//!
//! ```no_run
//! use jetsource::subscriber::{self, EventContext, HandlerError, Subscriber, SubscriberConfig};
//! use jetsource::{Event, EventSet, JetStreamStore, StreamConfig, JetStreamConnectOptions};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize, Debug)]
//! #[event(name = "deposited", version = 1)]
//! struct Deposited { amount: u64 }
//!
//! #[derive(EventSet, Debug)]
//! enum Handled { Deposited(Deposited) }
//!
//! struct Mailer;
//!
//! impl Subscriber for Mailer {
//!     type Event = Handled;
//!     async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
//!         let Handled::Deposited(d) = event;
//!         println!("{} got {} (event {})", ctx.aggregate_id, d.amount, ctx.event_id);
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = JetStreamStore::connect(
//!     JetStreamConnectOptions::new(["nats://127.0.0.1:4222"]),
//!     StreamConfig::new("BANK", "bank"),
//! ).await?;
//! let running = subscriber::start(&store, Mailer, SubscriberConfig::new("mailer")).await?;
//! // ... later:
//! let stats = running.shutdown().await?;
//! println!("handled {}", stats.handled);
//! # Ok(()) }
//! ```

mod config;
mod dead_letter;
mod decide;
mod done_log;
mod fixture;
mod group;
mod handle;
pub(crate) mod memory;
mod runtime;

pub use config::{AckMode, DeliverFrom, Idempotency, SubscriberConfig};
pub use dead_letter::{DeadLetter, DeadLetterReason, DeadLetters};
pub use fixture::{FixtureCall, Redelivery, SubscriberFixture};
pub use handle::{SubscriberHandle, SubscriberStats};
pub use memory::{
    start_defined_in_memory, start_in_memory, InMemoryConsumer, InMemoryDeadLetter,
    InMemoryDeadLetters,
};
#[cfg(feature = "postgres")]
pub(crate) use runtime::delete_consumers;
pub use runtime::start;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::SystemTime;

use uuid::Uuid;

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
/// generates, together with the [`Subscriber`] impl. Start it with [`start_defined`], or pass
/// [`SubscriberDefinition::subscriber_config`] (adjusted as needed) to [`start`].
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

/// [`start`]s `subscriber` with its own [`SubscriberDefinition::subscriber_config`].
///
/// ```no_run
/// # use jetsource::subscriber::{self, SubscriberDefinition};
/// # async fn run<S: SubscriberDefinition>(store: jetsource::JetStreamStore, s: S) -> Result<(), Box<dyn std::error::Error>> {
/// let handle = subscriber::start_defined(&store, s).await?;
/// # let _ = handle; Ok(()) }
/// ```
pub async fn start_defined<S: SubscriberDefinition>(
    store: &crate::JetStreamStore,
    subscriber: S,
) -> Result<SubscriberHandle, SubscriberError> {
    start(store, subscriber, S::subscriber_config()).await
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
    pub delivery_count: u64,
    /// The event came back from the dead-letter stream through [`DeadLetters::redrive`].
    pub redriven: bool,
}

/// Why a handler failed.
///
/// ```
/// use jetsource::subscriber::HandlerError;
/// let e = HandlerError::retryable("database is down");
/// assert!(e.is_retryable());
/// let e = HandlerError::permanent(std::io::Error::other("bad data"));
/// assert_eq!(e.to_string(), "permanent failure: bad data");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth trying again later (a dependency is down, a timeout): retried after the next delay
    /// of [`SubscriberConfig::backoff`], up to [`SubscriberConfig::max_deliver`] attempts.
    #[error("retryable failure: {0}")]
    Retryable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Will never succeed (invalid data, a broken invariant): dead-lettered at once.
    #[error("permanent failure: {0}")]
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

/// Why a subscriber could not start or stopped with an error.
///
/// ```
/// use jetsource::subscriber::{SubscriberConfig, SubscriberError};
/// let err = SubscriberConfig::new("bad name").validate().unwrap_err();
/// assert!(matches!(err, SubscriberError::InvalidConfig(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriberError {
    /// The configuration is invalid (caught before anything is sent).
    #[error("invalid subscriber configuration: {0}")]
    InvalidConfig(String),
    /// Creating or reading the consumer, the dead-letter stream or the completion log failed.
    #[error("JetStream {what} failed: {reason}")]
    JetStream {
        /// What was being done.
        what: String,
        /// What the client or server said.
        reason: String,
    },
    /// The subscriber's task panicked or was aborted.
    #[error("subscriber task ended abnormally: {0}")]
    Task(String),
}

impl SubscriberError {
    pub(crate) fn js(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        SubscriberError::JetStream {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
