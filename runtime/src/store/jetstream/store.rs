//! [`JetStreamStore`]: connection, stream setup, and the [`EventStore`] operations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use super::append::{self, Published};
use super::cache::{AggregateState, Cache};
use super::config::StreamConfig;
use super::connect::ConnectOptions;
use super::error::JetStreamError;
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
        let client = options.connect().await?;
        Self::with_client(client, config, options.request_timeout).await
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
                client,
                stream,
                kv,
                config,
                timeout: request_timeout,
                cache: Cache::new(DEFAULT_CACHE_CAPACITY),
                anchors: Mutex::new(HashMap::new()),
                batches: tokio::sync::Semaphore::new(MAX_OPEN_BATCHES),
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

    fn stem(&self, key: &AggregateKey) -> String {
        format!(
            "{}.{}.{}",
            self.inner.config.prefix, key.aggregate_type, key.id
        )
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
        let reader = load::Reader {
            client: &self.inner.client,
            stream: &self.inner.config.name,
            prefix_len: self.inner.config.prefix.len(),
            timeout: self.inner.timeout,
        };
        load::read(&reader, filter, start_seq, limit, keep).await
    }

    /// The aggregate's whole history, and the state it implies (cached).
    async fn scan(&self, key: &AggregateKey) -> Result<AggregateState, StoreError> {
        let events = self
            .read(&format!("{}.*", self.stem(key)), 1, usize::MAX, |_| true)
            .await?;
        let state = AggregateState::from_history(&events);
        self.inner.cache.put(key, state.clone());
        Ok(state)
    }

    /// The aggregate's version and last sequence, read through the stream leader.
    async fn last(&self, key: &AggregateKey) -> Result<AggregateState, StoreError> {
        use jetstream::stream::LastRawMessageErrorKind;
        let wildcard = format!("{}.*", self.stem(key));
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

    /// Current state from the server, with command ids when `need_commands`.
    async fn fresh(
        &self,
        key: &AggregateKey,
        need_commands: bool,
    ) -> Result<AggregateState, StoreError> {
        if need_commands {
            self.scan(key).await
        } else {
            let state = self.last(key).await?;
            self.inner.cache.put(key, state.clone());
            Ok(state)
        }
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
        for event in &events {
            headers::validate(event, command_id)?;
        }
        let need_commands = command_id.is_some();
        let stem = self.stem(key);
        let wildcard = format!("{stem}.*");
        let msg_id_stem = format!("{}.{}", key.aggregate_type, key.id);
        let cached = self.inner.cache.get(key);
        let (mut state, mut is_fresh) = match cached {
            Some(state) if !need_commands || state.commands.is_some() => (state, false),
            _ => (self.fresh(key, need_commands).await?, true),
        };
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if let (Some(command), Some(commands)) = (command_id, &state.commands) {
                if let Some(first) = commands.get(command) {
                    return Ok(AppendOutcome {
                        duplicate: true,
                        ..*first
                    });
                }
            }
            if events.is_empty() {
                return Err(StoreError::EmptyAppend(key.clone()));
            }
            if let ExpectedVersion::Exact(v) = expected {
                // The cache is never ahead of the stream (versions only grow), so a cached
                // version above `v` is a certain conflict; one below may be stale.
                if v != state.version {
                    if !is_fresh && state.version < v {
                        state = self.fresh(key, need_commands).await?;
                        is_fresh = true;
                        continue;
                    }
                    return Err(StoreError::Conflict {
                        aggregate: key.clone(),
                        expected: v,
                        actual: state.version,
                    });
                }
            }
            let first_sequence = state.version + 1;
            let messages = append::messages(
                &stem,
                &wildcard,
                &events,
                first_sequence,
                state.last_seq,
                command_id,
                &msg_id_stem,
            );
            let published = if messages.len() == 1 {
                let mut messages = messages;
                match messages.pop() {
                    Some(message) => append::single(&self.inner.client, message).await,
                    None => return Err(StoreError::EmptyAppend(key.clone())),
                }
            } else {
                self.publish_batch(messages).await
            };
            let published = match published {
                Ok(published) => published,
                Err(error) => {
                    // The outcome is unknown (timeout, lost connection, rejected batch): forget
                    // what we knew, and for an idempotent command look whether it landed.
                    self.inner.cache.remove(key);
                    if let Some(command) = command_id {
                        if let Ok(scanned) = self.scan(key).await {
                            if let Some(first) =
                                scanned.commands.as_ref().and_then(|c| c.get(command))
                            {
                                return Ok(AppendOutcome {
                                    duplicate: true,
                                    ..*first
                                });
                            }
                        }
                    }
                    return Err(error);
                }
            };
            match published {
                Published::Stored(last_position) => {
                    let outcome = AppendOutcome {
                        first_sequence,
                        last_sequence: state.version + events.len() as u64,
                        last_position,
                        duplicate: false,
                    };
                    state.appended(outcome, command_id);
                    self.inner.cache.put(key, state);
                    return Ok(outcome);
                }
                Published::Duplicate | Published::Conflict => {
                    self.inner.cache.remove(key);
                    let was_fresh = is_fresh;
                    state = self.fresh(key, need_commands).await?;
                    is_fresh = true;
                    let retry = match expected {
                        ExpectedVersion::Any => attempts < ANY_RETRIES,
                        // A stale cache can make an exact append fail once; the fresh state
                        // decides (conflict or duplicate) on the next turn.
                        ExpectedVersion::Exact(_) => !was_fresh || attempts < 3,
                    };
                    if !retry {
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

impl EventStore for JetStreamStore {
    async fn append(
        &self,
        key: &AggregateKey,
        expected: ExpectedVersion,
        command_id: Option<&str>,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        self.append_inner(key, expected, command_id, events).await
    }

    async fn load(
        &self,
        key: &AggregateKey,
        from_sequence: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Self::check_key(key)?;
        let from_sequence = from_sequence.max(1);
        let cached = self.inner.cache.get(key);
        // Reading on from a version whose position the cache knows: start right after it.
        let known = cached
            .as_ref()
            .and_then(|state| state.position_of(from_sequence - 1));
        let start = match known {
            _ if from_sequence == 1 => 1,
            Some(position) => position + 1,
            None => {
                let anchor = self
                    .inner
                    .anchors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(key)
                    .copied();
                match anchor {
                    Some((version, position)) if version < from_sequence => position + 1,
                    _ => 1,
                }
            }
        };
        let events = self
            .read(&format!("{}.*", self.stem(key)), start, usize::MAX, |e| {
                e.sequence >= from_sequence
            })
            .await?;
        // Remember what the load showed, so the append that usually follows needs no lookup.
        if from_sequence == 1 {
            self.inner
                .cache
                .put(key, AggregateState::from_history(&events));
        } else if !events.is_empty() {
            let mut state = match cached {
                Some(state) if state.version + 1 == from_sequence => state,
                _ => AggregateState::default(),
            };
            state.extend(&events);
            self.inner.cache.put(key, state);
        }
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
