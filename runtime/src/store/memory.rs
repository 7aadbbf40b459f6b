//! The embedded in-memory backend: the quickstart's default and the fast path for unit tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::{
    contract, AggregateKey, AppendOutcome, EventStore, ExpectedVersion, NewEvent, Snapshot,
    StoreError, StoredEvent,
};
use crate::attachments::Attachments;

/// An event store held in process memory, with the same semantics as the JetStream store:
/// per-aggregate optimistic concurrency, all-or-nothing appends, idempotent command ids (kept
/// forever, as the JetStream store does beyond the server's dedupe window), and a store-wide order.
///
/// Every event gets the next store-wide position (1, 2, 3, ... without gaps, like a stream
/// sequence); [`InMemoryStore::last_position`] and [`InMemoryStore::wait_for_events_after`] let a
/// reader follow the log as it grows. The store also keeps the durable state of the in-memory
/// subscribers started on it (see `subscriber::start_in_memory`), the way the JetStream server
/// keeps its consumers'.
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
    inner: Arc<Shared>,
}

struct Shared {
    log: Mutex<Log>,
    /// The newest position, replaced after every append so readers can wait for more.
    last_position: watch::Sender<u64>,
    /// What other parts of the crate keep per store (the in-memory subscribers' durable
    /// consumers), so it lives as long as the store.
    attachments: Attachments,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            log: Mutex::default(),
            last_position: watch::channel(0).0,
            attachments: Attachments::default(),
        }
    }
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

    /// The position of the newest event; 0 while the store is empty.
    ///
    /// ```
    /// use jetsource::InMemoryStore;
    /// assert_eq!(InMemoryStore::new().last_position(), 0);
    /// ```
    pub fn last_position(&self) -> u64 {
        *self.inner.last_position.borrow()
    }

    /// Waits until an event with a position after `position` is stored, and returns the newest
    /// position then. Returns at once when there already is one. Dropping the future stops
    /// waiting, and nothing is lost by that.
    ///
    /// ```
    /// use jetsource::{InMemoryStore, Repository};
    /// # use jetsource::{Aggregate, Apply, Event, EventSet};
    /// # #[derive(Event, serde::Serialize, serde::Deserialize)]
    /// # #[event(name = "opened", version = 1)]
    /// # struct Opened {}
    /// # #[derive(EventSet)]
    /// # enum AccountEvent { Opened(Opened) }
    /// # #[derive(Aggregate, Default)]
    /// # #[aggregate(name = "account", events = AccountEvent)]
    /// # struct Account {}
    /// # impl Apply<Opened> for Account { fn apply(&mut self, _: Opened) {} }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = InMemoryStore::new();
    /// let waiting = tokio::spawn({
    ///     let store = store.clone();
    ///     async move { store.wait_for_events_after(0).await }
    /// });
    /// let accounts = Repository::<Account, _>::new(store.clone());
    /// accounts
    ///     .execute("a1", |_: &Account| Ok::<_, std::convert::Infallible>(vec![Opened {}.into()]))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(waiting.await.unwrap(), 1);
    /// # });
    /// ```
    pub async fn wait_for_events_after(&self, position: u64) -> u64 {
        let mut positions = self.inner.last_position.subscribe();
        let newest = match positions.wait_for(|&last| last > position).await {
            Ok(last) => *last,
            // The sender lives in the store this borrows, so it cannot be gone.
            Err(_) => unreachable!("the store outlives its readers"),
        };
        newest
    }

    /// Reads the events after `after`, in position order, keeping those `wanted` accepts, until
    /// `max_kept` are kept or the log ends. Returns them and the position the read got to, so
    /// the next read starts after the events it skipped too.
    pub(crate) fn read_wanted(
        &self,
        after: u64,
        max_kept: usize,
        mut wanted: impl FnMut(&StoredEvent) -> bool,
    ) -> (Vec<StoredEvent>, u64) {
        let log = self.lock();
        let mut kept = Vec::new();
        let mut reached = after;
        for event in log.events.iter().skip(after as usize) {
            if kept.len() >= max_kept {
                break;
            }
            reached = event.position;
            if wanted(event) {
                kept.push(event.clone());
            }
        }
        (kept, reached)
    }

    /// The event at `position`, if there is one.
    pub(crate) fn event_at(&self, position: u64) -> Option<StoredEvent> {
        let index = usize::try_from(position.checked_sub(1)?).ok()?;
        self.lock().events.get(index).cloned()
    }

    /// The position of the first event produced at or after `time`, or the next position to
    /// be stored when there is none.
    pub(crate) fn first_position_since(&self, time: std::time::SystemTime) -> u64 {
        let log = self.lock();
        log.events
            .iter()
            .find(|event| event.timestamp >= time)
            .map_or(log.events.len() as u64 + 1, |event| event.position)
    }

    /// What other parts of the crate keep per store; the store does not know what it holds.
    pub(crate) fn attachments(&self) -> &Attachments {
        &self.inner.attachments
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave a half-written append (appends validate
        // before they mutate), so a poisoned lock still guards consistent data.
        self.inner
            .log
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
                return Ok(first.as_duplicate());
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
            let (sequence, position) = (current + 1 + offset as u64, self.events.len() as u64 + 1);
            self.events
                .push(event.into_stored(key, sequence, position, command_id));
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
        contract::append(key, expected, command_id, events, |events| async move {
            let mut log = self.lock();
            let outcome = log.append(key, expected, command_id, events)?;
            // Published under the log's lock, so concurrent appends announce positions in order.
            self.inner
                .last_position
                .send_replace(log.events.len() as u64);
            Ok(outcome)
        })
        .await
    }

    fn lane_scope(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    async fn command_outcome(
        &self,
        key: &AggregateKey,
        command_id: &str,
    ) -> Result<Option<AppendOutcome>, StoreError> {
        contract::check_key(key)?;
        let log = self.lock();
        let first = log.commands.get(&(key.clone(), command_id.to_owned()));
        Ok(first.map(|first| first.as_duplicate()))
    }

    async fn load(
        &self,
        key: &AggregateKey,
        from_sequence: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        contract::check_key(key)?;
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
        contract::check_key(key)?;
        Ok(self.lock().snapshots.get(key).cloned())
    }

    async fn save_snapshot(
        &self,
        key: &AggregateKey,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        contract::check_key(key)?;
        let mut log = self.lock();
        match log.snapshots.get(key) {
            Some(existing) if !contract::snapshot_replaces(existing, &snapshot) => {}
            _ => {
                log.snapshots.insert(key.clone(), snapshot);
            }
        }
        Ok(())
    }
}
