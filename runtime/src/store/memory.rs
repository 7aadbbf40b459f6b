//! The embedded in-memory backend: the quickstart's default and the fast path for unit tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    AggregateKey, AppendOutcome, EventStore, ExpectedVersion, NewEvent, Snapshot, StoreError,
    StoredEvent,
};

/// An event store held in process memory, with the same semantics as the JetStream store:
/// per-aggregate optimistic concurrency, all-or-nothing appends, idempotent command ids (kept
/// forever, as the JetStream store does beyond the server's dedupe window), and a store-wide order.
///
/// Cloning is cheap and shares the events.
///
/// ```
/// use jetsource::{AggregateId, AggregateKey, EventStore, ExpectedVersion, InMemoryStore, StoreError};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = InMemoryStore::new();
/// let key = AggregateKey::new("account", AggregateId::new("a1").unwrap());
/// let err = store.append(&key, ExpectedVersion::Exact(3), None, vec![]).await.unwrap_err();
/// assert!(matches!(err, StoreError::EmptyAppend(_)));
/// # });
/// ```
#[derive(Clone, Default)]
pub struct InMemoryStore {
    inner: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    /// Every event in store order; `position` is index + 1.
    events: Vec<StoredEvent>,
    /// Indexes into `events`, per aggregate, in sequence order.
    by_aggregate: HashMap<AggregateKey, Vec<usize>>,
    /// First outcome of each command id, per aggregate.
    commands: HashMap<(AggregateKey, String), AppendOutcome>,
    /// Latest snapshot per aggregate.
    snapshots: HashMap<AggregateKey, Snapshot>,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many events the store holds, across all aggregates.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Whether the store holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave a half-written append (appends validate
        // before they mutate), so a poisoned lock still guards consistent data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Log {
    fn append(
        &mut self,
        key: &AggregateKey,
        expected: ExpectedVersion,
        command_id: Option<&str>,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        if let Some(command_id) = command_id {
            if let Some(first) = self.commands.get(&(key.clone(), command_id.to_owned())) {
                return Ok(AppendOutcome {
                    duplicate: true,
                    ..*first
                });
            }
        }
        if events.is_empty() {
            return Err(StoreError::EmptyAppend(key.clone()));
        }
        let indexes = self.by_aggregate.entry(key.clone()).or_default();
        let current = indexes.len() as u64;
        if let ExpectedVersion::Exact(expected) = expected {
            if expected != current {
                return Err(StoreError::Conflict {
                    aggregate: key.clone(),
                    expected,
                    actual: current,
                });
            }
        }
        for (offset, event) in events.into_iter().enumerate() {
            indexes.push(self.events.len());
            self.events.push(StoredEvent {
                id: event.id,
                aggregate_type: key.aggregate_type.to_owned(),
                aggregate_id: key.id.as_str().to_owned(),
                sequence: current + 1 + offset as u64,
                position: self.events.len() as u64 + 1,
                name: event.name.to_owned(),
                version: event.version,
                codec: event.codec,
                payload: event.payload,
                timestamp: event.timestamp,
                correlation_id: event.correlation_id,
                causation_id: event.causation_id,
                command_id: command_id.map(str::to_owned),
                headers: event.headers,
            });
        }
        let outcome = AppendOutcome {
            first_sequence: current + 1,
            last_sequence: indexes.len() as u64,
            last_position: self.events.len() as u64,
            duplicate: false,
        };
        if let Some(command_id) = command_id {
            self.commands
                .insert((key.clone(), command_id.to_owned()), outcome);
        }
        Ok(outcome)
    }
}

impl EventStore for InMemoryStore {
    async fn append(
        &self,
        key: &AggregateKey,
        expected: ExpectedVersion,
        command_id: Option<&str>,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        self.lock().append(key, expected, command_id, events)
    }

    async fn load(
        &self,
        key: &AggregateKey,
        from_sequence: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let log = self.lock();
        let Some(indexes) = log.by_aggregate.get(key) else {
            return Ok(Vec::new());
        };
        let skip = from_sequence.saturating_sub(1) as usize;
        Ok(indexes
            .iter()
            .skip(skip)
            .map(|&i| log.events[i].clone())
            .collect())
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let log = self.lock();
        let skip = from_position.saturating_sub(1) as usize;
        Ok(log.events.iter().skip(skip).take(limit).cloned().collect())
    }

    async fn load_snapshot(&self, key: &AggregateKey) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.lock().snapshots.get(key).cloned())
    }

    async fn save_snapshot(
        &self,
        key: &AggregateKey,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        self.lock().snapshots.insert(key.clone(), snapshot);
        Ok(())
    }
}
