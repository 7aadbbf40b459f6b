//! Subscribers on the [`InMemoryStore`], with the semantics of the JetStream runtime: for unit
//! tests, the quickstart and single-process applications.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use jetsource::subscriber::{self, EventContext, HandlerError, Subscriber, SubscriberConfig};
//! use jetsource::{Aggregate, Apply, Event, EventSet, InMemoryStore, Repository};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize, Debug)]
//! #[event(name = "deposited", version = 1)]
//! struct Deposited { amount: u64 }
//!
//! #[derive(EventSet, Debug)]
//! enum AccountEvent { Deposited(Deposited) }
//!
//! #[derive(Aggregate, Default)]
//! #[aggregate(name = "account", events = AccountEvent)]
//! struct Account { balance: u64 }
//!
//! impl Apply<Deposited> for Account {
//!     fn apply(&mut self, e: Deposited) { self.balance += e.amount; }
//! }
//!
//! #[derive(Default)]
//! struct Total(AtomicU64);
//!
//! impl Subscriber for Total {
//!     type Event = AccountEvent;
//!     async fn handle(&self, event: AccountEvent, _: &EventContext) -> Result<(), HandlerError> {
//!         let AccountEvent::Deposited(d) = event;
//!         self.0.fetch_add(d.amount, Ordering::SeqCst);
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = InMemoryStore::new();
//! let total = Arc::new(Total::default());
//! let running =
//!     subscriber::start_in_memory(&store, total.clone(), SubscriberConfig::new("total"))
//!         .await
//!         .unwrap();
//! let accounts = Repository::<Account, _>::new(store.clone());
//! accounts
//!     .execute("a1", |_: &Account| Ok::<_, std::convert::Infallible>(vec![Deposited { amount: 5 }.into()]))
//!     .await
//!     .unwrap();
//! while running.stats().handled < 1 {
//!     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! }
//! assert_eq!(total.0.load(Ordering::SeqCst), 5);
//! assert_eq!(running.shutdown().await.unwrap().handled, 1);
//! # });
//! ```

mod backend;
mod dead_letters;
mod dispatch;
mod durable;
mod progress;

pub use dead_letters::{InMemoryConsumer, InMemoryDeadLetters};

use std::sync::Arc;

use tokio::sync::watch;
use tracing::Instrument;

use super::config::{DeliverFrom, SubscriberConfig};
use super::error::SubscriberError;
use super::handle::{Counters, SubscriberHandle};
use super::handler::{Subscriber, SubscriberDefinition};
use crate::event_set::EventSet;
use crate::observability::SubscriberMetrics;
use crate::store::InMemoryStore;
use backend::Shared;
use dispatch::Dispatcher;
use durable::Durables;
use progress::MemoryProgress;

/// Starts `subscriber` on `store`: creates the durable consumer `config.durable_name` (starting
/// where [`SubscriberConfig::deliver_from`] says) or resumes an existing one, then consumes in
/// the background on the current Tokio runtime.
///
/// The store keeps each durable name's consumer (the last position read, the events delivered
/// and not acknowledged with their handler attempts), its dead letters and its completion log,
/// so a subscriber started again with the same durable name resumes after the last
/// acknowledged event. What differs from JetStream, and why:
///
/// - [`SubscriberConfig::ack_wait`] has no effect: nothing is redelivered while the process
///   holding it runs, as with JetStream's in-progress acks. Events delivered to a subscriber
///   that stopped (gracefully or by [`SubscriberHandle::abort`]) without acknowledging
///   them are delivered again, first, by the next start;
/// - an acknowledgement is recorded together with its completion in one step, so
///   [`SubscriberConfig::ack_mode`] makes no difference and no crash falls between the two;
///   [`InMemoryConsumer::redeliver_from`] simulates the lost acknowledgements a JetStream
///   server can produce;
/// - [`SubscriberConfig::max_deliver`] counts handler attempts across runs (JetStream counts
///   in-place retries within one delivery, then server deliveries);
/// - one subscriber runs per durable name and store at a time, so
///   [`SubscriberConfig::partitions`] has no effect: it consumes every partition;
/// - [`DeliverFrom::Time`] starts at the first event whose
///   [`timestamp`](crate::StoredEvent::timestamp) (when its command produced it) is at or after
///   the time.
///
///
/// Fails with [`SubscriberError::InvalidConfig`] for an invalid configuration, an event set
/// without event types, or a durable name another subscriber is running on in this store.
///
/// ```
/// # use jetsource::subscriber::{self, SubscriberConfig, Subscriber, SubscriberError};
/// # async fn run<S: Subscriber>(store: jetsource::InMemoryStore, s: S) -> Result<(), SubscriberError> {
/// let config = SubscriberConfig::new("audit").concurrency(32);
/// let handle = subscriber::start_in_memory(&store, s, config).await?;
/// # let _ = handle; Ok(()) }
/// ```
pub async fn start_in_memory<S: Subscriber>(
    store: &InMemoryStore,
    subscriber: S,
    config: SubscriberConfig,
) -> Result<SubscriberHandle, SubscriberError> {
    config.validate()?;
    if <S::Event as EventSet>::NAMES.is_empty() {
        return Err(SubscriberError::InvalidConfig(
            "the subscriber's event set has no event types".into(),
        ));
    }
    let durable = Durables::of(store).get_or_create(&config.durable_name, || {
        start_after(store, config.deliver_from)
    });
    let lease = durable.lease().ok_or_else(|| {
        SubscriberError::InvalidConfig(format!(
            "durable name {:?} already has a running subscriber on this store",
            config.durable_name
        ))
    })?;
    let (shutdown, stop) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    let span =
        tracing::info_span!("subscriber", durable = %config.durable_name, backend = "memory");
    let metrics = SubscriberMetrics::new(&config.durable_name, &config.durable_name);
    let progress = Arc::new(MemoryProgress {
        store: store.clone(),
        durable: durable.clone(),
        name: config.durable_name.clone(),
    });
    let shared = Arc::new(Shared {
        subscriber,
        config,
        store: store.clone(),
        durable,
        counters: counters.clone(),
        metrics,
        stop,
    });
    let task = tokio::spawn(Dispatcher::new(shared, lease).run().instrument(span));
    Ok(SubscriberHandle::new(shutdown, task, counters, progress))
}

/// [`start_in_memory`]s `subscriber` with its own
/// [`SubscriberDefinition::subscriber_config`].
///
/// ```
/// # use jetsource::subscriber::{self, SubscriberDefinition, SubscriberError};
/// # async fn run<S: SubscriberDefinition>(store: jetsource::InMemoryStore, s: S) -> Result<(), SubscriberError> {
/// let handle = subscriber::start_defined_in_memory(&store, s).await?;
/// # let _ = handle; Ok(()) }
/// ```
pub async fn start_defined_in_memory<S: SubscriberDefinition>(
    store: &InMemoryStore,
    subscriber: S,
) -> Result<SubscriberHandle, SubscriberError> {
    start_in_memory(store, subscriber, S::subscriber_config()).await
}

/// The position a new durable consumer reads after.
fn start_after(store: &InMemoryStore, from: DeliverFrom) -> u64 {
    match from {
        DeliverFrom::All => 0,
        DeliverFrom::New => store.last_position(),
        DeliverFrom::Position(position) => position.max(1) - 1,
        DeliverFrom::Time(time) => store.first_position_since(time) - 1,
    }
}
