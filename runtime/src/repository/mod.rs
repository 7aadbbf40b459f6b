//! Loading aggregates by replay and executing commands with optimistic concurrency.

#[cfg(feature = "postgres")]
mod postgres;

use std::collections::BTreeMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use std::time::SystemTime;
use tracing::Instrument;

use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::error::{DecodeError, EncodeError};
use crate::event_set::EventSet;
use crate::id::{AggregateId, InvalidId};
use crate::lanes;
use crate::observability;
use crate::quarantine::{self, Quarantine, QuarantineError, Quarantined, Retracted};
use crate::store::{
    AggregateKey, AppendOutcome, CommandMetadata, EventStore, ExpectedVersion, NewEvent, Snapshot,
    StoreError, StoredEvent,
};

/// How many times a command is re-run after a concurrency conflict before the conflict is
/// returned, unless [`Repository::with_conflict_retries`] says otherwise.
pub const DEFAULT_CONFLICT_RETRIES: u32 = 10;

/// An aggregate's state and version (its number of events; 0 when it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<A> {
    /// The replayed state.
    pub state: A,
    /// The sequence number of the last applied event.
    pub version: u64,
}

/// What a successful command did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Committed<A> {
    /// The aggregate's state after the command.
    pub state: A,
    /// The aggregate's version after the command.
    pub version: u64,
    /// The store-wide position of the last event the command appended (for a duplicate, of
    /// its first execution), to hand to a subscriber's or projection's `wait_for` so a read
    /// after the command sees it; 0 when the command appended nothing, so there is nothing
    /// to wait for.
    pub position: u64,
    /// How many events the command appended (0 for a command that decided nothing changes);
    /// for a duplicate, how many its first execution appended.
    pub appended: usize,
    /// The command id had been executed before: nothing was appended this time, the command
    /// did not run, and `state`, `version` and `appended` are those of its first execution.
    pub duplicate: bool,
    /// How many times the command ran (1 without conflicts).
    pub attempts: u32,
}

/// Why loading an aggregate or appending its events failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// The aggregate id cannot be one NATS subject token.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// A stored event of the aggregate could not be decoded; nothing was changed.
    #[error("cannot replay {aggregate} at sequence {sequence}")]
    Decode {
        /// The aggregate.
        aggregate: AggregateKey,
        /// The sequence number of the undecodable event.
        sequence: u64,
        /// Why it could not be decoded.
        #[source]
        source: DecodeError,
    },
    /// A new event could not be encoded; nothing was appended.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every attempt conflicted with another writer (another process: commands of this process
    /// on one aggregate never conflict with each other) until the retries ran out. Nothing was
    /// appended, so the command may be sent again; with a command id it will apply at most once.
    #[error(
        "gave up on {aggregate} after {attempts} attempts, each conflicting with another writer; \
         nothing was appended{}",
        match command_id {
            Some(id) => format!(", and retrying command {id:?} is safe"),
            None => String::new(),
        }
    )]
    ConflictsOutlastedRetries {
        /// The aggregate.
        aggregate: AggregateKey,
        /// How many times the command ran.
        attempts: u32,
        /// The command's id, when it had one.
        command_id: Option<String>,
        /// The last conflict.
        #[source]
        source: Box<StoreError>,
    },
}

impl RepositoryError {
    /// Whether the failure left nothing appended, so that sending the command again is safe
    /// even without a command id. (With a command id, any retry is safe.)
    pub fn appended_nothing(&self) -> bool {
        matches!(
            self,
            RepositoryError::ConflictsOutlastedRetries { .. }
                | RepositoryError::Store(StoreError::Conflict { .. })
        )
    }
}

/// Why a command failed: the domain rejected it, or loading/appending failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The command returned this domain error; nothing was appended.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// Loading or appending failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl<E> ExecuteError<E> {
    /// Whether the command failed on concurrency conflicts that outlasted the retries.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            ExecuteError::Repository(
                RepositoryError::Store(StoreError::Conflict { .. })
                    | RepositoryError::ConflictsOutlastedRetries { .. }
            )
        )
    }
}

/// Loads aggregates of type `A` from store `S` and executes commands on them.
///
/// A command is a closure from the current state to the events to append, or a domain error.
/// On a concurrency conflict the state catches up on the newer events and the command runs
/// again, up to
/// [`DEFAULT_CONFLICT_RETRIES`] times.
///
/// ```
/// # use jetsource::{Aggregate, Apply, Event, EventSet, InMemoryStore, Repository, CommandMetadata};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
/// # #[event(name = "deposited", version = 1)]
/// # struct Deposited { amount: u64 }
/// # #[derive(EventSet, Debug, PartialEq)]
/// # enum AccountEvent { Deposited(Deposited) }
/// # #[derive(Aggregate, Default)]
/// # #[aggregate(name = "account", events = AccountEvent)]
/// # struct Account { balance: u64 }
/// # impl Apply<Deposited> for Account { fn apply(&mut self, e: Deposited) { self.balance += e.amount; } }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let accounts = Repository::<Account, _>::new(InMemoryStore::new()).with_conflict_retries(50);
/// let deposit = |_: &Account| Ok::<_, String>(vec![Deposited { amount: 5 }.into()]);
/// let meta = CommandMetadata::default().command_id("deposit-1");
/// let first = accounts.execute_with("acc-1", meta.clone(), deposit).await.unwrap();
/// let again = accounts.execute_with("acc-1", meta, deposit).await.unwrap();
/// assert!(!first.duplicate && again.duplicate);
/// assert_eq!(again.state.balance, 5);
/// # });
/// ```
pub struct Repository<A, S> {
    store: S,
    conflict_retries: u32,
    cache: Option<StateCache<A>>,
}

/// Recently used aggregate states, shared by clones of a repository.
struct StateCache<A> {
    states: Arc<Mutex<LruCache<AggregateKey, Loaded<A>>>>,
    /// `A::clone`, captured where `with_cache` can require `A: Clone`, so that the repository
    /// itself needs no `Clone` bound.
    clone_state: fn(&A) -> A,
}

impl<A> Clone for StateCache<A> {
    fn clone(&self) -> Self {
        StateCache {
            states: self.states.clone(),
            clone_state: self.clone_state,
        }
    }
}

impl<A> StateCache<A> {
    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<AggregateKey, Loaded<A>>> {
        // A poisoned cache only holds states that were consistent when stored.
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            conflict_retries: self.conflict_retries,
            cache: self.cache.clone(),
        }
    }
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// A repository over `store`.
    pub fn new(store: S) -> Self {
        Repository {
            store,
            conflict_retries: DEFAULT_CONFLICT_RETRIES,
            cache: None,
        }
    }

    /// Keeps the state of up to `capacity` recently used aggregates in memory, so a command on a
    /// warm aggregate skips the load. A cached state is trusted only as far as optimistic
    /// concurrency allows: if another writer appended meanwhile, the append conflicts, the state
    /// catches up on the newer events and the command reruns. Clones of the repository share
    /// the cache.
    ///
    /// ```
    /// # use jetsource::{Aggregate, Apply, Event, EventSet, InMemoryStore, Repository};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
    /// # #[event(name = "deposited", version = 1)]
    /// # struct Deposited { amount: u64 }
    /// # #[derive(EventSet, Debug, PartialEq)]
    /// # enum AccountEvent { Deposited(Deposited) }
    /// # #[derive(Aggregate, Default, Clone)]
    /// # #[aggregate(name = "account", events = AccountEvent)]
    /// # struct Account { balance: u64 }
    /// # impl Apply<Deposited> for Account { fn apply(&mut self, e: Deposited) { self.balance += e.amount; } }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = InMemoryStore::new();
    /// let cached = Repository::<Account, _>::new(store.clone()).with_cache(1_000);
    /// let other_writer = Repository::<Account, _>::new(store);
    /// let deposit = |_: &Account| Ok::<_, String>(vec![Deposited { amount: 5 }.into()]);
    /// cached.execute("a", deposit).await.unwrap();
    /// other_writer.execute("a", deposit).await.unwrap();
    /// // The cached state is stale; the conflict makes the command rerun on fresh state.
    /// let third = cached.execute("a", deposit).await.unwrap();
    /// assert_eq!((third.state.balance, third.attempts), (15, 2));
    /// # });
    /// ```
    pub fn with_cache(mut self, capacity: usize) -> Self
    where
        A: Clone,
    {
        self.cache = NonZeroUsize::new(capacity).map(|capacity| StateCache {
            states: Arc::new(Mutex::new(LruCache::new(capacity))),
            clone_state: A::clone,
        });
        self
    }

    /// Removes and returns the cached state of `key`, so concurrent commands on the same
    /// aggregate never share one cached copy.
    fn take_cached(&self, key: &AggregateKey) -> Option<Loaded<A>> {
        self.cache.as_ref()?.lock().pop(key)
    }

    /// Sets how many times a command is re-run after a concurrency conflict.
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Replays the aggregate `id`. An aggregate without events loads as `A::default()` at
    /// version 0.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, RepositoryError> {
        let key = AggregateKey::new(A::TYPE, AggregateId::new(id)?);
        self.load_key(&key).await
    }

    /// Loads `key` from its snapshot on. A snapshot taken before an event it includes was
    /// quarantined is not used: the events after it hold the quarantine record, and the
    /// aggregate is replayed from the start without the event. A snapshot taken after the
    /// record is used, as its state came from a replay that left the event out.
    async fn load_key(&self, key: &AggregateKey) -> Result<Loaded<A>, RepositoryError> {
        let mut loaded = self.load_start(key).await?;
        let events = self.store.load(key, loaded.version + 1).await?;
        match replay(key, &mut loaded, &events)? {
            Replayed::Done => Ok(loaded),
            Replayed::FromStart => {
                let events = self.store.load(key, 1).await?;
                replay_all(key, &events)
            }
        }
    }

    /// Quarantines one event of aggregate `id` (see [`mod@crate::quarantine`]): from then on
    /// the aggregate loads and runs commands without it, and the record says who quarantined
    /// it and why. Also drops the aggregate's cached state.
    ///
    /// ```
    /// # use jetsource::{Aggregate, Apply, Event, EventSet, InMemoryStore, Repository};
    /// # use jetsource::quarantine::Quarantine;
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
    /// # #[event(name = "deposited", version = 1)]
    /// # struct Deposited { amount: u64 }
    /// # #[derive(EventSet, Debug, PartialEq)]
    /// # enum AccountEvent { Deposited(Deposited) }
    /// # #[derive(Aggregate, Default)]
    /// # #[aggregate(name = "account", events = AccountEvent)]
    /// # struct Account { balance: u64 }
    /// # impl Apply<Deposited> for Account { fn apply(&mut self, e: Deposited) { self.balance += e.amount; } }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let accounts = Repository::<Account, _>::new(InMemoryStore::new());
    /// let deposit = |amount| move |_: &Account| Ok::<_, String>(vec![Deposited { amount }.into()]);
    /// accounts.execute("a1", deposit(5)).await.unwrap();
    /// accounts.execute("a1", deposit(500)).await.unwrap(); // a typo, say
    /// let wrong = Quarantine::event(2, "deposited").by("alice").because("typo, see INC-7");
    /// accounts.quarantine("a1", wrong).await.unwrap();
    /// let loaded = accounts.load("a1").await.unwrap();
    /// assert_eq!((loaded.state.balance, loaded.version), (5, 3));
    /// # });
    /// ```
    pub async fn quarantine(
        &self,
        id: &str,
        quarantine: Quarantine,
    ) -> Result<Quarantined, QuarantineError> {
        let key = AggregateKey::new(A::TYPE, AggregateId::new(id)?);
        // In the aggregate's lane, so no command of this process caches a state from before
        // the record after the cache is dropped.
        let _lane = lanes::enter(self.store.lane_scope(), &key).await;
        let done = quarantine::quarantine(&self.store, &key, quarantine).await;
        // Whatever the outcome: a failed append may still have stored the record.
        self.take_cached(&key);
        done
    }

    /// Where loading `key` starts: its latest usable snapshot, or no events at all.
    async fn load_start(&self, key: &AggregateKey) -> Result<Loaded<A>, RepositoryError> {
        Ok(self.load_snapshot(key).await?.unwrap_or(Loaded {
            state: A::default(),
            version: 0,
        }))
    }

    /// The state from the latest usable snapshot. A snapshot of another schema version, or one
    /// that no longer decodes, is ignored so the aggregate is replayed in full: a snapshot is a
    /// cache, never the source of truth.
    async fn load_snapshot(
        &self,
        key: &AggregateKey,
    ) -> Result<Option<Loaded<A>>, RepositoryError> {
        let Some(policy) = A::SNAPSHOT else {
            return Ok(None);
        };
        let Some(snapshot) = self.store.load_snapshot(key).await? else {
            return Ok(None);
        };
        if snapshot.schema_version != policy.schema_version {
            tracing::debug!(aggregate = %key, stored = snapshot.schema_version, current = policy.schema_version, "snapshot schema differs, replaying in full");
            return Ok(None);
        }
        match A::decode_snapshot(&snapshot.state) {
            Some(Ok(state)) => Ok(Some(Loaded {
                state,
                version: snapshot.version,
            })),
            Some(Err(error)) => {
                let error = crate::ErrorChain(&error);
                tracing::warn!(aggregate = %key, %error, "snapshot does not decode, replaying in full");
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Executes `command` on aggregate `id` with default metadata.
    pub async fn execute<E, F>(&self, id: &str, command: F) -> Result<Committed<A>, ExecuteError<E>>
    where
        F: FnMut(&A) -> Result<Vec<A::Event>, E>,
    {
        self.execute_with(id, CommandMetadata::default(), command)
            .await
    }

    /// Executes `command` on aggregate `id`: load, decide, append with the expected version;
    /// on a conflict, reload and decide again. Every appended event carries `metadata`; inside a
    /// subscriber's handler, missing correlation and causation ids are taken from the handled
    /// event (see [`crate::observability`]).
    pub async fn execute_with<E, F>(
        &self,
        id: &str,
        metadata: CommandMetadata,
        command: F,
    ) -> Result<Committed<A>, ExecuteError<E>>
    where
        F: FnMut(&A) -> Result<Vec<A::Event>, E>,
    {
        in_execute_span::<A, E>(id, self.execute_traced(id, metadata, command)).await
    }

    async fn execute_traced<E, F>(
        &self,
        id: &str,
        metadata: CommandMetadata,
        mut command: F,
    ) -> Result<Committed<A>, ExecuteError<E>>
    where
        F: FnMut(&A) -> Result<Vec<A::Event>, E>,
    {
        let key = AggregateKey::new(
            A::TYPE,
            AggregateId::new(id).map_err(RepositoryError::from)?,
        );
        let stamp = EventStamp::new(&metadata);
        // Commands on one aggregate in this process take turns, so they never conflict with
        // each other; conflicts can only come from other processes.
        let _lane = lanes::enter(self.store.lane_scope(), &key).await;
        if let Some(command) = metadata.command_id.as_deref() {
            // A command that ran before returns its first outcome, without running again.
            let first = Box::pin(self.store.command_outcome(&key, command)).await;
            if let Some(first) = first.map_err(RepositoryError::from)? {
                return Ok(Box::pin(self.load_first_outcome(&key, first, 0)).await?);
            }
        }
        let mut loaded = match self.take_cached(&key) {
            Some(cached) => cached,
            None => Box::pin(self.load_key(&key)).await?,
        };
        let mut backoff = conflict_backoff(self.conflict_retries);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let events = match command(&loaded.state) {
                Ok(events) => events,
                Err(rejection) => {
                    // Nothing changed: the state stays cached for the aggregate's next command.
                    if let Some(cache) = &self.cache {
                        cache.lock().put(key, loaded);
                    }
                    return Err(ExecuteError::Rejected(rejection));
                }
            };
            if events.is_empty() {
                return Ok(self.cache_committed(
                    &key,
                    Committed {
                        state: loaded.state,
                        version: loaded.version,
                        position: 0,
                        appended: 0,
                        duplicate: false,
                        attempts,
                    },
                ));
            }
            let new_events = stamp.new_events(&events, attempts)?;
            let appended = new_events.len();
            let outcome = self
                .store
                .append(
                    &key,
                    ExpectedVersion::Exact(loaded.version),
                    metadata.command_id.as_deref(),
                    new_events,
                )
                .await;
            match outcome {
                // Another process ran the same command id meanwhile.
                Ok(outcome) if outcome.duplicate => {
                    return Ok(Box::pin(self.load_first_outcome(&key, outcome, attempts)).await?);
                }
                Ok(outcome) => {
                    for event in events {
                        loaded.state.apply_event(event);
                    }
                    let due = due_snapshot(&loaded.state, loaded.version, &outcome);
                    save_snapshot(&key, due, |snapshot| {
                        self.store.save_snapshot(&key, snapshot)
                    })
                    .await;
                    loaded.version = outcome.last_sequence;
                    let committed = Committed {
                        state: loaded.state,
                        version: loaded.version,
                        position: outcome.last_position,
                        appended,
                        duplicate: false,
                        attempts,
                    };
                    return Ok(self.cache_committed(&key, committed));
                }
                Err(conflict @ StoreError::Conflict { .. }) => {
                    let Some(delay) = backoff.next() else {
                        return Err(RepositoryError::ConflictsOutlastedRetries {
                            aggregate: key,
                            attempts,
                            command_id: metadata.command_id,
                            source: Box::new(conflict),
                        }
                        .into());
                    };
                    tracing::debug!(aggregate = %key, attempts, ?delay, "conflict, retrying command");
                    // Spread writers of other processes apart, so the next attempt likely wins.
                    tokio::time::sleep(delay).await;
                    // The command only read the state, so it is still the aggregate as of
                    // `loaded.version`: catching up on the newer events is enough, and keeps a
                    // contended aggregate from being replayed from the start on every retry.
                    let newer = Box::pin(self.store.load(&key, loaded.version + 1))
                        .await
                        .map_err(RepositoryError::from)?;
                    if let Replayed::FromStart = replay(&key, &mut loaded, &newer)? {
                        // The newer events quarantine one the state already includes.
                        loaded = Box::pin(self.load_key(&key)).await?;
                    }
                }
                Err(error) => return Err(RepositoryError::Store(error).into()),
            }
        }
    }

    /// [`first_outcome`] of a command whose id already appended, from the store's history.
    async fn load_first_outcome(
        &self,
        key: &AggregateKey,
        first: AppendOutcome,
        attempts: u32,
    ) -> Result<Committed<A>, RepositoryError> {
        let history = self.store.load(key, 1).await?;
        first_outcome(key, first, attempts, &history)
    }
}

/// Delays between a command's attempts after conflicts with other processes: exponential from
/// 1 ms to 100 ms with full jitter, at most `retries` of them.
fn conflict_backoff(retries: u32) -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(100))
        .with_jitter()
        .with_max_times(usize::try_from(retries).unwrap_or(usize::MAX))
        .build()
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// Returns `committed`, keeping a copy of its state in the cache when there is one.
    fn cache_committed(&self, key: &AggregateKey, committed: Committed<A>) -> Committed<A> {
        if let Some(cache) = &self.cache {
            let loaded = Loaded {
                state: (cache.clone_state)(&committed.state),
                version: committed.version,
            };
            cache.lock().put(key.clone(), loaded);
        }
        committed
    }
}

/// Whether [`replay`] could continue from the state it was given.
#[must_use]
enum Replayed {
    /// The events were applied.
    Done,
    /// Nothing was applied: the events hold a quarantine record of an event the state already
    /// includes, so the aggregate must be replayed from the start ([`replay_all`]).
    FromStart,
}

/// Applies the stored `events` that follow `loaded` to it, skipping retired event types,
/// quarantined events and quarantine records.
fn replay<A: Aggregate>(
    key: &AggregateKey,
    loaded: &mut Loaded<A>,
    events: &[StoredEvent],
) -> Result<Replayed, RepositoryError> {
    // A record always follows the event it names, so records before `events` name nothing
    // in them.
    let retracted = left_out(key, events)?;
    if retracted
        .earliest()
        .is_some_and(|sequence| sequence <= loaded.version)
    {
        return Ok(Replayed::FromStart);
    }
    apply(key, loaded, events, &retracted)?;
    Ok(Replayed::Done)
}

/// The aggregate replayed from its whole history `events`.
fn replay_all<A: Aggregate>(
    key: &AggregateKey,
    events: &[StoredEvent],
) -> Result<Loaded<A>, RepositoryError> {
    let mut loaded = Loaded {
        state: A::default(),
        version: 0,
    };
    apply(key, &mut loaded, events, &left_out(key, events)?)?;
    Ok(loaded)
}

/// The quarantined events and records of `events`.
fn left_out(key: &AggregateKey, events: &[StoredEvent]) -> Result<Retracted, RepositoryError> {
    quarantine::left_out(events).map_err(|(sequence, source)| RepositoryError::Decode {
        aggregate: key.clone(),
        sequence,
        source,
    })
}

/// Applies `events` to `loaded` but those `retracted` takes out, which never reach `apply`
/// (nor the decoder: a quarantined event may not decode).
fn apply<A: Aggregate>(
    key: &AggregateKey,
    loaded: &mut Loaded<A>,
    events: &[StoredEvent],
    retracted: &Retracted,
) -> Result<(), RepositoryError> {
    for stored in events {
        if !retracted.skips(stored.sequence) {
            let decoded =
                A::Event::decode(stored.raw()).map_err(|source| RepositoryError::Decode {
                    aggregate: key.clone(),
                    sequence: stored.sequence,
                    source,
                })?;
            if let Some(event) = decoded {
                loaded.state.apply_event(event);
            }
        }
        loaded.version = stored.sequence;
    }
    Ok(())
}

/// Runs `execute`, a command on aggregate `id`, in a `jetsource.execute` span that records what
/// it committed.
async fn in_execute_span<A: Aggregate, E>(
    id: &str,
    execute: impl Future<Output = Result<Committed<A>, ExecuteError<E>>>,
) -> Result<Committed<A>, ExecuteError<E>> {
    let span = tracing::info_span!(
        "jetsource.execute",
        aggregate_type = A::TYPE,
        aggregate_id = id,
        attempts = tracing::field::Empty,
        version = tracing::field::Empty,
        appended = tracing::field::Empty,
    );
    let result = execute.instrument(span.clone()).await;
    if let Ok(committed) = &result {
        span.record("attempts", committed.attempts);
        span.record("version", committed.version);
        span.record("appended", committed.appended);
    }
    result
}

/// What every event of one command carries besides its own data: the correlation and causation
/// ids and the headers, fixed once per command whatever the number of attempts.
struct EventStamp {
    /// The id of the first event of the first attempt.
    first_event_id: Uuid,
    correlation_id: String,
    causation_id: Option<String>,
    headers: BTreeMap<String, String>,
}

impl EventStamp {
    /// The stamp of a command with `metadata`: missing correlation and causation ids are taken
    /// from the handled event inside a subscriber's handler (see [`crate::observability`]), and
    /// the current trace goes into the headers.
    fn new(metadata: &CommandMetadata) -> Self {
        // A command that starts a correlation names it after its first event, which the wire
        // format then need not repeat.
        let first_event_id = Uuid::now_v7();
        let correlation_id = metadata
            .correlation_id
            .clone()
            .or_else(observability::inherited_correlation)
            .unwrap_or_else(|| first_event_id.to_string());
        let causation_id = metadata
            .causation_id
            .clone()
            .or_else(observability::inherited_causation)
            .or_else(|| metadata.command_id.clone());
        let mut headers = metadata.headers.clone();
        observability::inject_trace(&mut headers);
        EventStamp {
            first_event_id,
            correlation_id,
            causation_id,
            headers,
        }
    }

    /// The domain events of attempt `attempt` (1 for the first), encoded and stamped for the
    /// store.
    fn new_events<E: EventSet>(
        &self,
        events: &[E],
        attempt: u32,
    ) -> Result<Vec<NewEvent>, RepositoryError> {
        let new_event = |(index, event): (usize, &E)| {
            let encoded = event.encode()?;
            let id = match (attempt, index) {
                (1, 0) => self.first_event_id,
                _ => Uuid::now_v7(),
            };
            Ok(NewEvent {
                id,
                name: encoded.name,
                version: encoded.version,
                codec: encoded.codec,
                payload: encoded.payload.into(),
                timestamp: SystemTime::now(),
                correlation_id: self.correlation_id.clone(),
                causation_id: self.causation_id.clone(),
                headers: self.headers.clone(),
            })
        };
        let events = events.iter().enumerate().map(new_event);
        Ok(events.collect::<Result<Vec<_>, EncodeError>>()?)
    }
}

/// What a command whose id already appended returns: its `first` outcome, with the state as of
/// the version it produced, replayed from `history` (the aggregate's events from sequence 1).
fn first_outcome<A: Aggregate>(
    key: &AggregateKey,
    first: AppendOutcome,
    attempts: u32,
    history: &[StoredEvent],
) -> Result<Committed<A>, RepositoryError> {
    let mut loaded = Loaded {
        state: A::default(),
        version: 0,
    };
    let upto = history.partition_point(|e| e.sequence <= first.last_sequence);
    // Quarantined later or not, a quarantined event is left out of every state.
    let retracted = left_out(key, history)?;
    apply(key, &mut loaded, &history[..upto], &retracted)?;
    Ok(Committed {
        state: loaded.state,
        version: first.last_sequence,
        position: first.last_position,
        appended: usize::try_from(first.last_sequence + 1 - first.first_sequence)
            .unwrap_or(usize::MAX),
        duplicate: true,
        attempts,
    })
}

/// The snapshot due after `appended` took the aggregate from version `before` to `state`: one
/// when the append crossed a multiple of the policy's interval, `None` otherwise.
fn due_snapshot<A: Aggregate>(
    state: &A,
    before: u64,
    appended: &AppendOutcome,
) -> Option<Result<Snapshot, EncodeError>> {
    let policy = A::SNAPSHOT?;
    let after = appended.last_sequence;
    if policy.every == 0 || before / policy.every == after / policy.every {
        return None;
    }
    let encoded = state.encode_snapshot()?;
    Some(encoded.map(|bytes| Snapshot {
        schema_version: policy.schema_version,
        version: after,
        position: appended.last_position,
        state: bytes.into(),
    }))
}

/// Saves the `due` snapshot of `key` with `save`. A failure is logged, not returned: the events
/// are appended, and the next load replays them.
async fn save_snapshot<F, Saved>(
    key: &AggregateKey,
    due: Option<Result<Snapshot, EncodeError>>,
    save: F,
) where
    F: FnOnce(Snapshot) -> Saved,
    Saved: Future<Output = Result<(), StoreError>>,
{
    let result = match due {
        None => return,
        Some(Ok(snapshot)) => save(snapshot)
            .await
            .map_err(|e| crate::ErrorChain(&e).to_string()),
        Some(Err(error)) => Err(crate::ErrorChain(&error).to_string()),
    };
    if let Err(error) = result {
        tracing::warn!(aggregate = %key, %error, "snapshot not saved");
    }
}
