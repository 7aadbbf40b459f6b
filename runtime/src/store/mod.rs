//! The event store contract every backend implements, and the stored event's shape.

pub(crate) mod contract;
#[cfg(feature = "jetstream")]
pub(crate) mod jetstream;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

pub use contract::InvalidInput;

#[cfg(feature = "jetstream")]
pub use jetstream::{
    ConnectOptions as JetStreamConnectOptions, Credentials as JetStreamCredentials, JetStreamError,
    JetStreamStore, PublishError, PublishReceipt, Publisher, Storage as JetStreamStorage,
    StreamConfig,
};
pub use memory::InMemoryStore;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use bytes::Bytes;
use uuid::Uuid;

use crate::event::{Codec, RawEvent};
use crate::id::AggregateId;

/// Addresses one aggregate's event stream: its type name and id.
///
/// ```
/// use jetsource::{AggregateId, AggregateKey};
/// let key = AggregateKey::new("account", AggregateId::new("acc-1").unwrap());
/// assert_eq!(key.to_string(), "account/acc-1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AggregateKey {
    /// The aggregate type name (`Aggregate::TYPE`).
    pub aggregate_type: &'static str,
    /// The aggregate id.
    pub id: AggregateId,
}

impl AggregateKey {
    /// Builds a key.
    pub fn new(aggregate_type: &'static str, id: AggregateId) -> Self {
        AggregateKey { aggregate_type, id }
    }
}

impl fmt::Display for AggregateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.aggregate_type, self.id)
    }
}

/// Metadata a command carries to every event it appends.
///
/// ```
/// let meta = jetsource::CommandMetadata::default()
///     .command_id("cmd-1")
///     .correlation_id("req-9")
///     .header("tenant", "acme");
/// assert_eq!(meta.headers["tenant"], "acme");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandMetadata {
    /// Makes the append idempotent: a retried command with the same id appends nothing twice.
    pub command_id: Option<String>,
    /// Shared by everything one request caused; a new UUIDv7 when absent.
    pub correlation_id: Option<String>,
    /// The id of what caused this command (an event id, a message id); the command id when absent.
    pub causation_id: Option<String>,
    /// User headers stored with every event.
    pub headers: BTreeMap<String, String>,
}

impl CommandMetadata {
    /// Sets the command id.
    pub fn command_id(mut self, id: impl Into<String>) -> Self {
        self.command_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Adds a user header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// An event ready to append: encoded payload plus metadata, without its position yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// A unique id (UUIDv7).
    pub id: Uuid,
    /// The wire name.
    pub name: &'static str,
    /// The schema version.
    pub version: u32,
    /// The payload codec.
    pub codec: Codec,
    /// The encoded payload.
    pub payload: Bytes,
    /// When the command produced it.
    pub timestamp: SystemTime,
    /// See [`CommandMetadata::correlation_id`].
    pub correlation_id: String,
    /// See [`CommandMetadata::causation_id`].
    pub causation_id: Option<String>,
    /// User headers.
    pub headers: BTreeMap<String, String>,
}

impl NewEvent {
    /// The event as stored at aggregate `sequence` and store-wide `position`.
    pub(crate) fn into_stored(
        self,
        key: &AggregateKey,
        sequence: u64,
        position: u64,
        command_id: Option<&str>,
    ) -> StoredEvent {
        StoredEvent {
            id: self.id,
            aggregate_type: key.aggregate_type.to_owned(),
            aggregate_id: key.id.as_str().to_owned(),
            sequence,
            position,
            name: self.name.to_owned(),
            version: self.version,
            codec: self.codec,
            payload: self.payload,
            timestamp: self.timestamp,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            command_id: command_id.map(str::to_owned),
            headers: self.headers,
        }
    }
}

/// An event as stored, with its aggregate sequence number and store-wide position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event id.
    pub id: Uuid,
    /// The aggregate type name.
    pub aggregate_type: String,
    /// The aggregate id.
    pub aggregate_id: String,
    /// Number within the aggregate: 1, 2, 3, ... with no gaps.
    pub sequence: u64,
    /// Store-wide order (the stream sequence on JetStream); increasing, may have gaps.
    pub position: u64,
    /// The wire name.
    pub name: String,
    /// The schema version.
    pub version: u32,
    /// The payload codec.
    pub codec: Codec,
    /// The encoded payload.
    pub payload: Bytes,
    /// When the command produced it.
    pub timestamp: SystemTime,
    /// See [`CommandMetadata::correlation_id`].
    pub correlation_id: String,
    /// See [`CommandMetadata::causation_id`].
    pub causation_id: Option<String>,
    /// The command that appended it, when it carried an id.
    pub command_id: Option<String>,
    /// User headers.
    pub headers: BTreeMap<String, String>,
}

impl StoredEvent {
    /// The view a decoder needs.
    pub fn raw(&self) -> RawEvent<'_> {
        RawEvent {
            name: &self.name,
            version: self.version,
            codec: self.codec,
            payload: &self.payload,
        }
    }
}

/// What the appender believes the aggregate's current version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The aggregate must have exactly this many events (0: it must not exist yet).
    Exact(u64),
    /// Append whatever the current version is.
    Any,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Sequence number of the first appended event.
    pub first_sequence: u64,
    /// Sequence number of the last appended event: the aggregate's version after the append.
    pub last_sequence: u64,
    /// Store-wide position of the last appended event.
    pub last_position: u64,
    /// The command id was seen before: nothing was appended, and the sequences are the ones the
    /// first append of that command got.
    pub duplicate: bool,
}

impl AppendOutcome {
    /// The same outcome reported again for a retried command: nothing appended this time.
    pub(crate) fn as_duplicate(self) -> Self {
        AppendOutcome {
            duplicate: true,
            ..self
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another writer appended first: reload and decide again.
    #[error("concurrency conflict on {aggregate}: expected version {expected}, found {actual}")]
    Conflict {
        /// The aggregate.
        aggregate: AggregateKey,
        /// The version the appender expected.
        expected: u64,
        /// The version found (0 when the backend cannot tell).
        actual: u64,
    },
    /// An append needs at least one event.
    #[error("nothing to append to {0}")]
    EmptyAppend(AggregateKey),
    /// The key, an event or the metadata cannot be stored; nothing was sent to the backend.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// A stored event lacks metadata the store needs, or has metadata it cannot read.
    #[error("stored event at position {position} is corrupt: {reason}")]
    Corrupt {
        /// Where it is stored.
        position: u64,
        /// What is wrong (which header or field).
        reason: String,
        /// Why the value could not be read, when a parser said so.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend failed (connection, timeout, permission, ...); the backend's error is the
    /// [`source`](std::error::Error::source) (a `JetStreamError` for the JetStream store).
    #[error("event store backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An event store backend: append with optimistic concurrency, load one aggregate, read all.
///
/// Every backend has the same semantics; the conformance tests hold them to it.
///
/// ```
/// use jetsource::{AggregateId, AggregateKey, EventStore, ExpectedVersion, InMemoryStore};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = InMemoryStore::new();
/// let key = AggregateKey::new("account", AggregateId::new("a1").unwrap());
/// assert!(store.load(&key, 1).await.unwrap().is_empty());
/// # });
/// ```
pub trait EventStore: Clone + Send + Sync + 'static {
    /// Appends `events` to `key` if its version matches `expected`, all or nothing. With a
    /// `command_id` seen before on this aggregate, appends nothing and reports the first outcome.
    fn append(
        &self,
        key: &AggregateKey,
        expected: ExpectedVersion,
        command_id: Option<&str>,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send;

    /// Loads the events of `key` whose sequence is `from_sequence` or later, in order.
    fn load(
        &self,
        key: &AggregateKey,
        from_sequence: u64,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Reads up to `limit` events of all aggregates with position `from_position` or later, in
    /// store order.
    fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// The first outcome of command `command_id` on `key`, if that command appended there,
    /// however long ago: `duplicate` is true, the sequences are the ones it got.
    ///
    /// The default reads the aggregate's whole history; backends answer from what they keep.
    fn command_outcome(
        &self,
        key: &AggregateKey,
        command_id: &str,
    ) -> impl Future<Output = Result<Option<AppendOutcome>, StoreError>> + Send {
        async move {
            let history = self.load(key, 1).await?;
            Ok(outcome_of(&history, command_id).map(AppendOutcome::as_duplicate))
        }
    }

    /// Which store a repository's per-aggregate lanes belong to: commands through stores with
    /// the same scope take turns on each aggregate. Clones of a store share it; the default, 0,
    /// makes every store of the type one scope.
    #[doc(hidden)]
    fn lane_scope(&self) -> usize {
        0
    }

    /// The latest snapshot of `key`, if the backend keeps snapshots and has one.
    fn load_snapshot(
        &self,
        key: &AggregateKey,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
        let _ = key;
        async { Ok(None) }
    }

    /// Stores `snapshot` as the latest of `key`. A stored snapshot of the same schema version at
    /// the same or a later aggregate version is kept, and the call still succeeds (two writers
    /// may snapshot the same aggregate). Backends without snapshot storage ignore it.
    fn save_snapshot(
        &self,
        key: &AggregateKey,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (key, snapshot);
        async { Ok(()) }
    }
}

/// An aggregate's serialized state at one version, so loading replays only later events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The schema version of `state` (`SnapshotPolicy::schema_version`); a snapshot whose schema
    /// differs from the code's is ignored.
    pub schema_version: u32,
    /// The aggregate version (sequence of the last event) the state includes.
    pub version: u64,
    /// Store-wide position of that last event.
    pub position: u64,
    /// The serialized state.
    pub state: Bytes,
}

/// The first outcome of `command` in an aggregate's history (in order), by reading it.
pub(crate) fn outcome_of(events: &[StoredEvent], command: &str) -> Option<AppendOutcome> {
    let mut found: Option<AppendOutcome> = None;
    for event in events
        .iter()
        .filter(|e| e.command_id.as_deref() == Some(command))
    {
        match &mut found {
            Some(outcome) => {
                outcome.last_sequence = event.sequence;
                outcome.last_position = event.position;
            }
            None => {
                found = Some(AppendOutcome {
                    first_sequence: event.sequence,
                    last_sequence: event.sequence,
                    last_position: event.position,
                    duplicate: false,
                })
            }
        }
    }
    found
}
