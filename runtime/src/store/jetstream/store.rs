//! [`JetStreamStore`]: connection, stream setup, and the [`EventStore`] operations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use super::cache::Cache;
use super::config::StreamConfig;
use super::connect::ConnectOptions;
use super::error::JetStreamError;
use super::history::{Histories, DEFAULT_HISTORY_BYTES};
use super::refusals::Refusals;
use super::shared::Shared;
use super::{commit, load, read, snapshot};
use crate::store::contract;
use crate::store::{
    AggregateKey, AppendOutcome, EventStore, ExpectedVersion, NewEvent, Snapshot, StoreError,
    StoredEvent,
};

/// Aggregates whose (version, last sequence) the store remembers, unless configured otherwise.
pub(crate) const DEFAULT_CACHE_CAPACITY: usize = 100_000;

/// Atomic batches one store keeps open at once (the server allows 50 per stream).
const MAX_OPEN_BATCHES: usize = 32;

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
    pub(super) inner: Arc<Shared>,
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
            inner: Arc::new(Shared {
                max_payload: client.server_info().max_payload,
                client,
                stream,
                kv,
                config,
                timeout: request_timeout,
                cache: Cache::new(DEFAULT_CACHE_CAPACITY),
                histories: Histories::new(DEFAULT_HISTORY_BYTES),
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

    /// The server's max payload (0 when unknown).
    pub(crate) fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }

    /// Runs `publish` (messages under `stem`) until its ack or a refusal of its subject.
    pub(crate) async fn unless_refused<T>(
        &self,
        stem: &str,
        publish: impl std::future::Future<Output = Result<T, JetStreamError>>,
    ) -> Result<T, JetStreamError> {
        self.inner.unless_refused(stem, publish).await
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
        contract::append(key, expected, command_id, events, |events| {
            commit::append(&self.inner, key, expected, command_id, events)
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
        let head = commit::head(&self.inner, key, Some(command_id)).await?;
        Ok(head.prior.map(AppendOutcome::as_duplicate))
    }

    async fn load(
        &self,
        key: &AggregateKey,
        from_sequence: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        contract::check_key(key)?;
        load::traced(&self.inner, key, from_sequence).await
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let filter = self.inner.config.subject_filter();
        read::read(&self.inner.reader(), &filter, from_position, limit, |_| {
            true
        })
        .await
    }

    async fn load_snapshot(&self, key: &AggregateKey) -> Result<Option<Snapshot>, StoreError> {
        contract::check_key(key)?;
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
        contract::check_key(key)?;
        snapshot::save(&self.inner.kv, self.max_payload(), key, &snapshot).await
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
                .map_err(|e| {
                    JetStreamError::request(format!("read the info of stream {}", config.name), e)
                })?
                .config
                .clone();
            if let Some(conflict) = config.conflict_with(&existing) {
                if !config.update_existing {
                    return Err(conflict);
                }
                js.create_or_update_stream(config.to_nats())
                    .await
                    .map_err(|e| {
                        JetStreamError::request(format!("update stream {}", config.name), e)
                    })?;
            }
            Ok(stream)
        }
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => {
            // Not found (or another API error, which creating reports precisely).
            js.create_or_update_stream(config.to_nats())
                .await
                .map_err(|e| {
                    JetStreamError::request(format!("create stream {}", config.name), e)
                })?;
            js.get_stream(&config.name).await.map_err(|e| {
                JetStreamError::request(format!("read the info of stream {}", config.name), e)
            })
        }
        Err(e) => Err(JetStreamError::request(
            format!("look up stream {}", config.name),
            e,
        )),
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
    .map_err(|e| {
        JetStreamError::request(
            format!("create snapshot bucket {}", config.snapshot_bucket),
            e,
        )
    })
}
