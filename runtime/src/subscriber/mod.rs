//! Subscribers: reliable consumption of stored events on a durable JetStream pull consumer.
//!
//! Implement [`Subscriber`] for a type, choose a [`SubscriberConfig`], and
#![cfg_attr(
    feature = "jetstream",
    doc = "[`start`] it on a [`JetStreamStore`](crate::JetStreamStore). The runtime:"
)]
#![cfg_attr(
    not(feature = "jetstream"),
    doc = "`start` it on a `JetStreamStore` (feature `jetstream`). The runtime:"
)]
//!
//! - filters on the server: the consumer's filter subjects are `<prefix>.*.*.<name>` for each name
//!   in the handled [`EventSet::known_names`](crate::EventSet::known_names) (the current names
//!   and those events were stored under before a rename), so nothing else is delivered;
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
#![cfg_attr(
    feature = "jetstream",
    doc = "  [`DeadLetters::redrive`] hands dead letters back to the running subscriber;"
)]
#![cfg_attr(
    not(feature = "jetstream"),
    doc = "  `DeadLetters::redrive` hands dead letters back to the running subscriber;"
)]
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
//! lists the few differences. Both backends run one per-event loop, so a handler sees the
//! same attempts, skips and dead letters on either. The in-memory backend, the types here and
//! the [`SubscriberFixture`] need no feature; the JetStream backend needs `jetstream`.
//!
//! ```no_run
//! use jetsource::subscriber::{self, EventContext, HandlerError, Subscriber, SubscriberConfig};
//! use jetsource::{Event, EventSet};
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
//! # #[cfg(feature = "jetstream")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use jetsource::{JetStreamConnectOptions, JetStreamStore, StreamConfig};
//!
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
mod error;
mod fixture;
mod handle;
mod handler;
#[cfg(feature = "jetstream")]
mod jetstream;
mod memory;
mod process;
mod progress;

pub use config::{AckMode, DeliverFrom, Idempotency, SubscriberConfig};
pub use dead_letter::{DeadLetter, DeadLetterReason, InMemoryDeadLetter};
pub use error::SubscriberError;
pub use fixture::{FixtureCall, Redelivery, SubscriberFixture};
pub use handle::{SubscriberHandle, SubscriberStats};
pub use handler::{EventContext, HandlerError, Subscriber, SubscriberDefinition};
#[cfg(feature = "postgres")]
pub(crate) use jetstream::delete_consumers;
#[cfg(feature = "postgres")]
pub(crate) use jetstream::JetStreamProgress;
#[cfg(feature = "jetstream")]
pub use jetstream::{start, start_defined, DeadLetters};
pub use memory::{start_defined_in_memory, start_in_memory, InMemoryConsumer, InMemoryDeadLetters};
pub use progress::WaitError;
#[cfg(feature = "postgres")]
pub(crate) use progress::{caught_up, wait_for};
