//! [`JetStreamStore`]: connection, stream setup, and the [`EventStore`] operations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use tracing::Instrument;

use super::append::{self, Published};
use super::cache::{self, AggregateState, Cache, Head};
use super::config::StreamConfig;
use super::connect::ConnectOptions;
use super::error::JetStreamError;
use super::refusals::Refusals;
use super::{headers, load, snapshot};
use crate::store::{
    AggregateKey, AppendOutcome, EventStore, ExpectedVersion, NewEvent, Snapshot, StoreError,
    StoredEvent,
};

/// Aggregates whose (version, last sequence) the store remembers, unless configured otherwise.
pub(crate) const DEFAULT_CACHE_CAPACITY: usize = 100_000;

/// Atomic batches one store keeps open at once (the server allows 50 per stream).
const MAX_OPEN_BATCHES: usize = 32;

/// How often an [`ExpectedVersion::Any`] append is retried after losing a race.
const ANY_RETRIES: u32 = 100;

/// The production event store: events in a NATS JetStream stream, snapshots in a KV bucket.
///
/// Cloning is cheap and shares the connection and the cache.
///
/// ```no_run
/// use jetsource::{JetStreamConnectOptions, JetStreamStore, Repository, StreamConfig};
/// # async fn run() -> Result<(), jetsource::JetStreamError> {
/// let store = JetStreamStore::connect(
///     JetStreamConnectOptions::new(["nats://127.0.0.1:4222"]).name("orders"),
///     StreamConfig::new("ORDERS", "orders"),
/// )
/// .await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JetStreamStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    stream: jetstream::stream::Stream,
    kv: kv::Store,
    config: StreamConfig,
    timeout: Duration,
    cache: Cache,
    /// (version, position) pairs learned from snapshots, so a load from `version + 1` starts
    /// at `position + 1` instead of the stream's start.
    anchors: Mutex<HashMap<AggregateKey, (u64, u64)>>,
    /// The server keeps at most 50 open atomic batches per stream (error 10210 past it).
    batches: tokio::sync::Semaphore,
    /// The server's max payload when the store was opened (reading it per append would copy
    /// the whole server info); 0 when unknown.
    max_payload: usize,
    /// Publishes the server refused (recorded only on connections the store opened itself).
    refusals: Refusals,
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore")
            .field("stream", &self.inner.config.name)
            .field("prefix", &self.inner.config.prefix)
            .finish()
    }
}

impl JetStreamStore {
    /// Connects, then creates the stream and snapshot bucket, or checks that existing ones
    /// match `config` ([`JetStreamError::ConfigConflict`] otherwise, unless
    /// [`StreamConfig::update_existing`] is set).
    pub async fn connect(
        options: ConnectOptions,
        config: StreamConfig,
    ) -> Result<Self, JetStreamError> {
        config.validate()?;
        let refusals = Refusals::default();
        let client = options.connect_recording(refusals.clone()).await?;
        let mut store = Self::with_client(client, config, options.request_timeout).await?;
        if let Some(inner) = Arc::get_mut(&mut store.inner) {
            inner.refusals = refusals;
        }
        Ok(store)
    }

    /// Like [`JetStreamStore::connect`], over an existing async-nats client.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let store = jetsource::JetStreamStore::with_client(
    ///     client,
    ///     jetsource::StreamConfig::new("ORDERS", "orders"),
    ///     std::time::Duration::from_secs(10),
    /// )
    /// .await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub async fn with_client(
        client: async_nats::Client,
        config: StreamConfig,
        request_timeout: Duration,
    ) -> Result<Self, JetStreamError> {
        config.validate()?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(request_timeout);
        let stream = ensure_stream(&js, &config).await?;
        let kv = ensure_bucket(&js, &config).await?;
        Ok(JetStreamStore {
            inner: Arc::new(Inner {
                max_payload: client.server_info().max_payload,
                client,
                stream,
                kv,
                config,
                timeout: request_timeout,
                cache: Cache::new(DEFAULT_CACHE_CAPACITY),
                anchors: Mutex::new(HashMap::new()),
                batches: tokio::sync::Semaphore::new(MAX_OPEN_BATCHES),
                refusals: Refusals::default(),
            }),
        })
    }

    /// The stream configuration.
    ///
    /// ```no_run
    /// # async fn run(store: jetsource::JetStreamStore) {
    /// assert_eq!(store.config().prefix, "orders");
    /// # }
    /// ```
    pub fn config(&self) -> &StreamConfig {
        &self.inner.config
    }

    /// The underlying async-nats client (for subscriptions, monitoring ...).
    ///
    /// ```no_run
    /// # async fn run(store: jetsource::JetStreamStore) {
    /// let state = store.client().connection_state();
    /// # let _ = state; }
    /// ```
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// `<prefix>.<type>.<id>`.
    fn stem(&self, key: &AggregateKey) -> String {
        let prefix = &self.inner.config.prefix;
        let (ty, id) = (key.aggregate_type, key.id.as_str());
        let mut stem = String::with_capacity(prefix.len() + ty.len() + id.len() + 4);
        stem.push_str(prefix);
        stem.push('.');
        stem.push_str(ty);
        stem.push('.');
        stem.push_str(id);
        stem
    }

    /// `<prefix>.<type>.<id>.*`: all events of the aggregate.
    fn wildcard(&self, key: &AggregateKey) -> String {
        let mut wildcard = self.stem(key);
        wildcard.push_str(".*");
        wildcard
    }

    fn check_key(key: &AggregateKey) -> Result<(), JetStreamError> {
        crate::id::validate_token(key.aggregate_type).map_err(|e| JetStreamError::InvalidInput {
            what: format!("aggregate type {:?}", key.aggregate_type),
            reason: e.to_string(),
        })
    }

    async fn read(
        &self,
        filter: &str,
        start_seq: u64,
        limit: usize,
        keep: impl Fn(&StoredEvent) -> bool,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        load::read(&self.reader(), filter, start_seq, limit, keep).await
    }

    fn reader(&self) -> load::Reader<'_> {
        load::Reader {
            client: &self.inner.client,
            handle: &self.inner.stream,
            stream: &self.inner.config.name,
            prefix_len: self.inner.config.prefix.len(),
            timeout: self.inner.timeout,
        }
    }

    /// The aggregate's whole history: caches the state it implies, and returns what an append
    /// with `command_id` needs (the command's first outcome is found even when the aggregate has
    /// too many command ids to cache).
    async fn scan(&self, key: &AggregateKey, command_id: Option<&str>) -> Result<Head, StoreError> {
        let events = self
            .read(&self.wildcard(key), 1, usize::MAX, |_| true)
            .await?;
        let state = AggregateState::from_history(&events);
        let head = state.head(command_id).unwrap_or(Head {
            version: state.version,
            last_seq: state.last_seq,
            prior: command_id.and_then(|command| cache::outcome_of(&events, command)),
        });
        self.inner.cache.put(key, state);
        Ok(head)
    }

    /// After a conflict: extends the cached state with the events appended since (one read of
    /// the aggregate's tail) instead of reading its whole history again, which on a contended
    /// aggregate with a long history would make every conflict cost the whole history.
    async fn catch_up(
        &self,
        key: &AggregateKey,
        command_id: Option<&str>,
    ) -> Result<Head, StoreError> {
        if let Some(known) = self.inner.cache.head(key, command_id) {
            let newer = self
                .read(&self.wildcard(key), known.last_seq + 1, usize::MAX, |_| {
                    true
                })
                .await?;
            if newer.is_empty()
                || self
                    .inner
                    .cache
                    .extend_known(key, known.version + 1, &newer)
            {
                if let Some(head) = self.inner.cache.head(key, command_id) {
                    return Ok(head);
                }
            }
        }
        self.inner.cache.remove(key);
        self.fresh(key, command_id).await
    }

    /// The aggregate's version and last sequence, read through the stream leader.
    async fn last(&self, key: &AggregateKey) -> Result<AggregateState, StoreError> {
        use jetstream::stream::LastRawMessageErrorKind;
        let wildcard = self.wildcard(key);
        match self
            .inner
            .stream
            .get_last_raw_message_by_subject(&wildcard)
            .await
        {
            Ok(message) => {
                let position = message.sequence;
                let version = message
                    .headers
                    .get(headers::SEQUENCE)
                    .and_then(|v| v.as_str().parse::<u64>().ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        position,
                        reason: format!("header {} is missing or invalid", headers::SEQUENCE),
                    })?;
                let mut state = AggregateState::default();
                state.remember(version, position);
                Ok(state)
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(AggregateState {
                commands: Some(HashMap::new()),
                ..AggregateState::default()
            }),
            Err(e) => Err(JetStreamError::Client(format!("last event lookup: {e}")).into()),
        }
    }

    /// Current state from the server, with the command's first outcome when `command_id` is
    /// given.
    async fn fresh(
        &self,
        key: &AggregateKey,
        command_id: Option<&str>,
    ) -> Result<Head, StoreError> {
        if command_id.is_some() {
            return self.scan(key, command_id).await;
        }
        let state = self.last(key).await?;
        let head = Head {
            version: state.version,
            last_seq: state.last_seq,
            prior: None,
        };
        self.inner.cache.put(key, state);
        Ok(head)
    }

    /// Publishes an atomic batch, waiting for a free batch slot, and retrying while the
    /// server has too many batches open (other processes share its limit). A refused batch
    /// stored nothing, so retrying it is safe.
    async fn publish_batch(
        &self,
        messages: Vec<append::Outgoing>,
    ) -> Result<Published, StoreError> {
        let _permit = self
            .inner
            .batches
            .acquire()
            .await
            .map_err(|e| JetStreamError::Client(e.to_string()))?;
        let mut delay = Duration::from_millis(1);
        for _ in 0..30 {
            match append::batch(&self.inner.client, append::clone_all(&messages)).await {
                Err(error) if append::is_too_many_batches(&error) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                other => return other,
            }
        }
        append::batch(&self.inner.client, messages).await
    }

    async fn append_inner(
        &self,
        key: &AggregateKey,
        expected: ExpectedVersion,
        command_id: Option<&str>,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        Self::check_key(key)?;
        if let Some(command) = command_id {
            headers::check_value("command id", command)?;
        }
        let max_payload = self.max_payload();
        for event in &events {
            headers::validate(event)?;
            let bytes = headers::message_size(event, command_id);
            if max_payload > 0 && bytes > max_payload {
                return Err(JetStreamError::EventTooLarge {
                    event: event.name.to_owned(),
                    bytes,
                    max: max_payload,
                }
                .into());
            }
        }
        let stem = self.stem(key);
        let wildcard = format!("{stem}.*");
        // Only what the append needs is copied out of the cache, never the whole state.
        let (mut head, mut is_fresh) = match self.inner.cache.head(key, command_id) {
            Some(head) => (head, false),
            None => (self.fresh(key, command_id).await?, true),
        };
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if let Some(first) = head.prior {
                return Ok(AppendOutcome {
                    duplicate: true,
                    ..first
                });
            }
            if events.is_empty() {
                return Err(StoreError::EmptyAppend(key.clone()));
            }
            if let ExpectedVersion::Exact(v) = expected {
                // The cache is never ahead of the stream (versions only grow), so a cached
                // version above `v` is a certain conflict; one below may be stale.
                if v != head.version {
                    if !is_fresh && head.version < v {
                        head = self.fresh(key, command_id).await?;
                        is_fresh = true;
                        continue;
                    }
                    return Err(StoreError::Conflict {
                        aggregate: key.clone(),
                        expected: v,
                        actual: head.version,
                    });
                }
            }
            let first_sequence = head.version + 1;
            let guard = append::Guard {
                subject_stem: &stem,
                wildcard: &wildcard,
                expected_last_seq: head.last_seq,
                command_id,
                key,
            };
            let publish = async {
                if events.len() == 1 {
                    append::single(
                        &self.inner.client,
                        append::message(&guard, &events[0], 0, first_sequence),
                    )
                    .await
                } else {
                    self.publish_batch(append::messages(&guard, &events, first_sequence))
                        .await
                }
            };
            let published = self.unless_refused(&stem, publish).await;
            let published = match published {
                Ok(published) => published,
                Err(error) => {
                    // Refused: certainly not stored, so the cache still holds.
                    if is_permission_denied(&error) {
                        return Err(error);
                    }
                    // The outcome is unknown (timeout, lost connection, rejected batch): forget
                    // what we knew, and for an idempotent command look whether it landed.
                    self.inner.cache.remove(key);
                    if command_id.is_some() {
                        if let Ok(Head {
                            prior: Some(first), ..
                        }) = self.scan(key, command_id).await
                        {
                            return Ok(AppendOutcome {
                                duplicate: true,
                                ..first
                            });
                        }
                    }
                    return Err(error);
                }
            };
            match published {
                Published::Stored(last_position) => {
                    let outcome = AppendOutcome {
                        first_sequence,
                        last_sequence: head.version + events.len() as u64,
                        last_position,
                        duplicate: false,
                    };
                    self.inner
                        .cache
                        .appended(key, head.version, outcome, command_id);
                    return Ok(outcome);
                }
                Published::Duplicate | Published::Conflict => {
                    let was_fresh = is_fresh;
                    head = match published {
                        // Another writer appended: an idempotent append reads only what it
                        // added (a plain one looks its last event up through the leader).
                        Published::Conflict if command_id.is_some() => {
                            self.catch_up(key, command_id).await?
                        }
                        _ => {
                            self.inner.cache.remove(key);
                            self.fresh(key, command_id).await?
                        }
                    };
                    is_fresh = true;
                    let retry = match expected {
                        ExpectedVersion::Any => attempts < ANY_RETRIES,
                        // A stale cache can make an exact append fail once; the fresh state
                        // decides (conflict or duplicate) on the next turn.
                        ExpectedVersion::Exact(_) => !was_fresh || attempts < 3,
                    };
                    if !retry {
                        if let ExpectedVersion::Exact(v) = expected {
                            // The leader refused although the version it shows is the expected
                            // one: on a clustered stream (error 10164) another write to the
                            // aggregate is in flight. That is a conflict like any other.
                            return Err(StoreError::Conflict {
                                aggregate: key.clone(),
                                expected: v,
                                actual: head.version,
                            });
                        }
                        return Err(JetStreamError::Contention {
                            aggregate: key.to_string(),
                            attempts,
                        }
                        .into());
                    }
                }
            }
        }
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: &StreamConfig,
) -> Result<jetstream::stream::Stream, JetStreamError> {
    use jetstream::context::GetStreamErrorKind;
    match js.get_stream(&config.name).await {
        Ok(mut stream) => {
            let existing = stream
                .info()
                .await
                .map_err(|e| JetStreamError::Client(format!("stream info: {e}")))?
                .config
                .clone();
            if let Some(conflict) = config.conflict_with(&existing) {
                if !config.update_existing {
                    return Err(conflict);
                }
                js.create_or_update_stream(config.to_nats())
                    .await
                    .map_err(|e| JetStreamError::Client(format!("stream update: {e}")))?;
            }
            Ok(stream)
        }
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => {
            // Not found (or another API error, which creating reports precisely).
            js.create_or_update_stream(config.to_nats())
                .await
                .map_err(|e| JetStreamError::Client(format!("stream create: {e}")))?;
            js.get_stream(&config.name)
                .await
                .map_err(|e| JetStreamError::Client(format!("stream info: {e}")))
        }
        Err(e) => Err(JetStreamError::Client(format!("stream lookup: {e}"))),
    }
}

async fn ensure_bucket(
    js: &jetstream::Context,
    config: &StreamConfig,
) -> Result<kv::Store, JetStreamError> {
    if let Ok(store) = js.get_key_value(&config.snapshot_bucket).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: config.snapshot_bucket.clone(),
        history: 1,
        storage: match config.storage {
            super::Storage::File => jetstream::stream::StorageType::File,
            super::Storage::Memory => jetstream::stream::StorageType::Memory,
        },
        num_replicas: config.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| JetStreamError::Client(format!("snapshot bucket: {e}")))
}

impl JetStreamStore {
    /// The server's max payload (0 when unknown).
    pub(crate) fn max_payload(&self) -> usize {
        match self.inner.max_payload {
            0 => self.inner.client.server_info().max_payload,
            known => known,
        }
    }
}

/// Whether `error` is [`JetStreamError::PermissionDenied`].
fn is_permission_denied(error: &StoreError) -> bool {
    matches!(error, StoreError::Backend(inner)
        if matches!(inner.downcast_ref::<JetStreamError>(), Some(JetStreamError::PermissionDenied { .. })))
}

impl JetStreamStore {
    /// Turns a timed-out append whose subject under `stem` the server refused into
    /// [`JetStreamError::PermissionDenied`].
    /// Runs `publish` (messages under `stem`) until its ack, or until the server refuses one of
    /// its subjects: it answers a refused publish only with an asynchronous `-ERR`, never with
    /// a reply, and nothing is stored.
    pub(crate) async fn unless_refused<T>(
        &self,
        stem: &str,
        publish: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        // Watching starts before the first message leaves, so no refusal can slip past.
        let refusal = self.inner.refusals.watch();
        tokio::select! {
            biased;
            result = publish => result.map_err(|error| self.refusal_behind(error, stem)),
            subject = refusal.refused_under(stem) => {
                Err(JetStreamError::PermissionDenied { subject }.into())
            }
        }
    }

    pub(crate) fn refusal_behind(&self, error: StoreError, stem: &str) -> StoreError {
        let timed_out = matches!(&error, StoreError::Backend(inner)
            if matches!(inner.downcast_ref::<JetStreamError>(), Some(JetStreamError::Timeout)));
        if !timed_out {
            return error;
        }
        match (self.inner.refusals).refused_under(stem, self.inner.timeout * 2) {
            Some(subject) => JetStreamError::PermissionDenied { subject }.into(),
            None => error,
        }
    }

    async fn load_traced(
        &self,
        key: &AggregateKey,
        from_sequence: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Self::check_key(key)?;
        let from_sequence = from_sequence.max(1);
        let cache = &self.inner.cache;
        // Reading on from a version whose position the cache knows: start right after it.
        let known = match from_sequence {
            1 => Some(0),
            _ => cache.position_of(key, from_sequence - 1),
        };
        // Where to start reading, and the aggregate version just before that point.
        let (start, before) = match known {
            Some(position) => (position + 1, from_sequence - 1),
            None => {
                let anchor = self
                    .inner
                    .anchors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(key)
                    .copied();
                match anchor {
                    Some((version, position)) if version < from_sequence => (position + 1, version),
                    _ => (1, 0),
                }
            }
        };
        // The aggregate's version: from the cache (which may be behind), or else from its last
        // event (one lookup through the leader, much cheaper than a wrongly chosen read path).
        let version = match cache.head(key, None) {
            Some(head) => head.version,
            None => {
                let state = self.last(key).await?;
                let version = state.version;
                if version < from_sequence {
                    // Nothing to read; what the lookup showed serves the append that usually
                    // follows.
                    cache.put(key, state);
                    return Ok(Vec::new());
                }
                version
            }
        };
        // How many events the read will go through (the path depends on it).
        let hint = version.saturating_sub(before);
        let events = load::load(&self.reader(), &self.wildcard(key), start, hint, |e| {
            e.sequence >= from_sequence
        })
        .await?;
        // Remember what the load showed, so the append that usually follows needs no lookup.
        if from_sequence == 1 {
            cache.put(key, AggregateState::from_history(&events));
        } else if !events.is_empty() {
            cache.extend(key, from_sequence, &events);
        }
        Ok(events)
    }
}

impl EventStore for JetStreamStore {
    async fn append(
        &self,
        key: &AggregateKey,
        expected: ExpectedVersion,
        command_id: Option<&str>,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let span = tracing::debug_span!(
            "jetsource.append",
            aggregate_type = key.aggregate_type,
            aggregate_id = %key.id,
            events = events.len(),
            first_event = events.first().map(|e| e.name),
            expected = ?expected,
            version = tracing::field::Empty,
            position = tracing::field::Empty,
        );
        let count = events.len() as u64;
        let outcome = self
            .append_inner(key, expected, command_id, events)
            .instrument(span.clone())
            .await?;
        span.record("version", outcome.last_sequence);
        span.record("position", outcome.last_position);
        if !outcome.duplicate {
            metrics::counter!(
                crate::observability::EVENTS_APPENDED,
                "aggregate_type" => key.aggregate_type
            )
            .increment(count);
        }
        Ok(outcome)
    }

    async fn load(
        &self,
        key: &AggregateKey,
        from_sequence: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let span = tracing::debug_span!(
            "jetsource.load",
            aggregate_type = key.aggregate_type,
            aggregate_id = %key.id,
            from = from_sequence,
            events = tracing::field::Empty,
        );
        let events = self
            .load_traced(key, from_sequence)
            .instrument(span.clone())
            .await?;
        span.record("events", events.len());
        Ok(events)
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(
            &self.inner.config.subject_filter(),
            from_position,
            limit,
            |_| true,
        )
        .await
    }

    async fn load_snapshot(&self, key: &AggregateKey) -> Result<Option<Snapshot>, StoreError> {
        let snapshot = snapshot::load(&self.inner.kv, key).await?;
        if let Some(s) = &snapshot {
            let mut anchors = self.inner.anchors.lock().unwrap_or_else(|p| p.into_inner());
            if anchors.len() >= DEFAULT_CACHE_CAPACITY {
                anchors.clear();
            }
            anchors.insert(key.clone(), (s.version, s.position));
        }
        Ok(snapshot)
    }

    async fn save_snapshot(
        &self,
        key: &AggregateKey,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        snapshot::save(
            &self.inner.kv,
            self.inner.client.server_info().max_payload,
            key,
            &snapshot,
        )
        .await
    }
}
