//! # jetsource
//!
//! Event sourcing on NATS JetStream. Annotate your domain types and the derives generate the
//! rest: versioned events with upcasters ([`Event`]), event sets ([`EventSet`]) and aggregates
//! ([`Aggregate`]). A [`Repository`] loads an aggregate by replaying its events, runs a
//! command, and appends the new events with optimistic concurrency.
//!
//! ```
//! use jetsource::{Aggregate, Apply, Event, EventSet, InMemoryStore, Repository};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
//! #[event(name = "deposited", version = 1)]
//! struct Deposited { amount: u64 }
//!
//! #[derive(EventSet, Debug, PartialEq)]
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
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let accounts = Repository::<Account, _>::new(InMemoryStore::new());
//! accounts
//!     .execute("acc-1", |_: &Account| Ok::<_, std::convert::Infallible>(vec![Deposited { amount: 5 }.into()]))
//!     .await
//!     .unwrap();
//! assert_eq!(accounts.load("acc-1").await.unwrap().state.balance, 5);
//! # });
//! ```
#![deny(missing_docs)]
// docs.rs (`--cfg docsrs`, nightly) labels each feature-gated item with the features it needs;
// recent nightlies took `doc_auto_cfg` into `doc_cfg` and refuse the old name.
#![cfg_attr(docsrs, feature(doc_cfg))]

// The derives' generated code names `::jetsource`; the runtime derives a few of its own types.
extern crate self as jetsource;

mod aggregate;
mod attachments;
mod codec;
mod error;
mod event;
mod event_set;
mod id;
mod lanes;
pub mod observability;
pub mod process_manager;
pub mod quarantine;
mod repository;
mod store;
pub mod testing;
pub mod wire;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use aggregate::{Aggregate, Apply, SnapshotPolicy};
pub use error::{DecodeError, EncodeError, ErrorChain, HumanDuration};
pub use event::{Codec, EncodedEvent, Event, RawEvent};
pub use event_set::EventSet;
pub use id::{AggregateId, InvalidId, InvalidToken, MAX_ID_BYTES};
pub use repository::{
    Committed, ExecuteError, Loaded, Repository, RepositoryError, DEFAULT_CONFLICT_RETRIES,
};
#[cfg(feature = "postgres")]
pub use store::postgres::{self, PgStore};
pub use store::{
    AggregateKey, AppendOutcome, CommandMetadata, EventStore, ExpectedVersion, InMemoryStore,
    InvalidInput, NewEvent, Snapshot, StoreError, StoredEvent,
};
#[cfg(feature = "jetstream")]
pub use store::{
    JetStreamConnectOptions, JetStreamCredentials, JetStreamError, JetStreamStorage,
    JetStreamStore, PublishError, PublishReceipt, Publisher, StreamConfig,
};

/// Derives [`Event`] for a struct: `#[event(name = "...", version = N, previous = OldType,
/// upcast = path::to::fn, renamed_from = "old_name", codec = "json" | "protobuf",
/// first_stored_version = N)]`. A version above 1 needs `previous` (or `first_stored_version`
/// saying no older version was stored); an `upcast` function returns `Self` or
/// `Result<Self, E>`, and a failure is [`DecodeError::Upcast`].
pub use jetsource_macros::Event;

/// Derives [`EventSet`] for an enum whose variants each wrap one event type:
/// `#[event_set(retired("old_name", ...))]` drops retired event types on read.
pub use jetsource_macros::EventSet;

/// Derives [`Aggregate`] for a state struct: `#[aggregate(name = "...", events = EventSet,
/// snapshot(schema = N, every = M))]`.
pub use jetsource_macros::Aggregate;

/// Turns an inherent `impl` block of `async fn on_x(&self, event: X, ctx: &EventContext) ->
/// Result<(), HandlerError>` handlers into a [`subscriber::Subscriber`] and
/// [`subscriber::SubscriberDefinition`]: `#[subscriber(durable = "...", deliver_from = "all" |
/// "new" | N, ack_wait_ms = N, max_deliver = N, backoff_ms = [N, ...], max_ack_pending = N,
/// concurrency = N)]`.
pub use jetsource_macros::subscriber;

/// Turns an inherent `impl` block of handlers into a [`process_manager::ProcessManager`]:
/// `#[process_manager(name = "...", correlate = field)]` on the block; `#[start]`,
/// `#[correlate(field)]`, `#[deadline("name")]` and `#[rejected]` on handlers. See
/// [`process_manager`](mod@process_manager).
pub use jetsource_macros::process_manager;

#[cfg(feature = "postgres")]
pub mod projection;
pub mod subscriber;
