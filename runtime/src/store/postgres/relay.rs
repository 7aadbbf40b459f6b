//! [`Relay`]: publishes the events committed to a [`PgStore`] into a JetStream stream, once in
//! effect, in per-aggregate order, with none skipped whatever order transactions commit in.
//!
//! A relay reads the next events through the window protocol of `checkpoint.rs`, publishes them
//! with the JetStream store's subjects and wire format (`Nats-Msg-Id` set, so the server drops a
//! repeat inside its duplicate window), and then records its checkpoint. Several relays with one
//! name may run for availability: the one holding a PostgreSQL advisory lock publishes, the
//! others wait; the lock goes with its holder's session, so a killed relay's standby takes over
//! within its `standby_poll`.
//!
//! A relay killed (or failing) between publishing and recording leaves at most one batch
//! published beyond its checkpoint, and leaves its checkpoint marked unclean. Its successor
//! then starts by reconciling: for the first [`MAX_BATCH`] events, it skips any an aggregate
//! already has in the stream (read through the stream leader), which holds beyond the duplicate
//! window too. After a clean stop nothing needs checking. Events of one aggregate are
//! published one at a time (many aggregates at once), so a failed publish can never store an
//! aggregate's later event without its earlier one.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::watch;

use super::checkpoint::{self, Checkpoint};
use super::PgStore;
use crate::store::{JetStreamStore, StoreError, StoredEvent};

/// The most events one read of a window returns, and so the most a relay can have published
/// beyond its checkpoint: a new term reconciles that many.
pub const MAX_BATCH: usize = 4096;

/// Publishes in flight at once (async-nats stalls with much larger windows of requests).
const MAX_IN_FLIGHT: usize = 256;

/// How a relay works. `RelayConfig::default()` is relay `"default"`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// The relay's name: relays with one name share a checkpoint and take turns; relays with
    /// different names each publish every event (to different streams).
    pub name: String,
    /// Events read and published per step (at most [`MAX_BATCH`]).
    pub batch_size: usize,
    /// How long an active relay that found nothing waits before it looks again.
    pub idle_poll: Duration,
    /// How long a standby relay waits before it tries to become the active one again.
    pub standby_poll: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            name: "default".to_owned(),
            batch_size: 2048,
            idle_poll: Duration::from_millis(20),
            standby_poll: Duration::from_millis(500),
        }
    }
}

impl RelayConfig {
    /// A relay named `name` with the default settings.
    pub fn new(name: impl Into<String>) -> Self {
        RelayConfig {
            name: name.into(),
            ..RelayConfig::default()
        }
    }

    /// Sets [`RelayConfig::batch_size`] (clamped to 1..=[`MAX_BATCH`]).
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.clamp(1, MAX_BATCH);
        self
    }

    /// Sets [`RelayConfig::idle_poll`].
    pub fn idle_poll(mut self, every: Duration) -> Self {
        self.idle_poll = every;
        self
    }

    /// Sets [`RelayConfig::standby_poll`].
    pub fn standby_poll(mut self, every: Duration) -> Self {
        self.standby_poll = every;
        self
    }
}

/// Why a relay step failed. A running relay ([`Relay::spawn`]) logs it, backs off and goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Reading events or the checkpoint, or taking the relay's lock, failed.
    #[error("relay database work failed")]
    Database(#[source] sqlx::Error),
    /// Reading a stored event or publishing it failed.
    #[error("relay publish failed")]
    Publish(#[source] StoreError),
    /// Another relay with this name is the active one.
    #[error("relay {0:?} is active in another session")]
    Standby(String),
}

impl From<sqlx::Error> for RelayError {
    fn from(error: sqlx::Error) -> Self {
        RelayError::Database(error)
    }
}

impl From<StoreError> for RelayError {
    fn from(error: StoreError) -> Self {
        RelayError::Publish(error)
    }
}

/// Publishes the events committed to a [`PgStore`] into the stream of a [`JetStreamStore`],
/// with that store's subjects and wire format: every subscriber and projection works on them
/// unchanged. See the module documentation for the guarantees.
///
/// ```no_run
/// use jetsource::postgres::{Relay, RelayConfig};
/// # async fn run(store: jetsource::PgStore, stream: jetsource::JetStreamStore) {
/// let relay = Relay::new(store, stream, RelayConfig::default()).spawn();
/// // ... until shutdown:
/// relay.stop().await;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Relay {
    store: PgStore,
    target: JetStreamStore,
    config: RelayConfig,
}

/// One term as the active relay: the session holding the lock, and where it is.
struct Term {
    conn: PgConnection,
    checkpoint: Checkpoint,
    /// Events left to check against the stream before publishing (see the module docs).
    reconcile_left: usize,
    /// Per aggregate seen while reconciling: its version in the stream.
    stream_versions: HashMap<(String, String), u64>,
    /// The window's next events, read while the previous ones were published.
    prefetched: Option<Vec<StoredEvent>>,
}

/// What one step did.
struct Step {
    read: usize,
    /// The window it read from is closed: everything committed when it opened is published.
    window_closed: bool,
}

impl Relay {
    /// A relay from `store` to the stream of `target`.
    pub fn new(store: PgStore, target: JetStreamStore, config: RelayConfig) -> Self {
        Relay {
            store,
            target,
            config,
        }
    }

    /// Publishes every event committed before the call, as the active relay, then gives the
    /// turn back; returns how many events it read (published now or found already in the
    /// stream). Fails with [`RelayError::Standby`] while another relay with this name is active.
    pub async fn publish_committed(&self) -> Result<u64, RelayError> {
        let Some(mut term) = self.begin_term().await? else {
            return Err(RelayError::Standby(self.config.name.clone()));
        };
        let result = async {
            let mut read = 0;
            loop {
                let opened_now = term.checkpoint.window.is_none();
                let step = self.step(&mut term).await?;
                read += step.read as u64;
                if step.window_closed && opened_now {
                    return Ok(read);
                }
            }
        }
        .await;
        self.end_term(term, result.is_ok()).await;
        result
    }

    /// Runs the relay in a task until [`RelayHandle::stop`]: active while it holds the turn,
    /// standby otherwise; failures (the database or NATS going away) are logged and retried
    /// with backoff, starting a new term.
    pub fn spawn(self) -> RelayHandle {
        let (stop, stopped) = watch::channel(false);
        let (active_tx, active) = watch::channel(false);
        let task = tokio::spawn(async move { self.run(stopped, active_tx).await });
        RelayHandle { stop, active, task }
    }

    async fn run(&self, mut stopped: watch::Receiver<bool>, active: watch::Sender<bool>) {
        let mut backoff = retry_backoff();
        while !*stopped.borrow() {
            let wait = match self.begin_term().await {
                Ok(Some(mut term)) => {
                    tracing::info!(relay = %self.config.name, "relay active");
                    backoff = retry_backoff();
                    active.send_replace(true);
                    let ended = self.serve(&mut term, &mut stopped).await;
                    active.send_replace(false);
                    self.end_term(term, ended.is_ok()).await;
                    match ended {
                        Err(error) => {
                            let error = crate::ErrorChain(&error);
                            tracing::warn!(relay = %self.config.name, %error, "relay step failed");
                            backoff.next().unwrap_or(Duration::from_secs(2))
                        }
                        _ => break,
                    }
                }
                Ok(None) => {
                    backoff = retry_backoff();
                    self.config.standby_poll
                }
                Err(error) => {
                    let error = crate::ErrorChain(&error);
                    tracing::warn!(relay = %self.config.name, %error, "relay cannot start a term");
                    backoff.next().unwrap_or(Duration::from_secs(2))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped.wait_for(|stop| *stop) => break,
            }
        }
    }

    /// Steps until one fails or the relay is stopped; a step runs to its end (stopping in the
    /// middle would leave published events unrecorded).
    async fn serve(
        &self,
        term: &mut Term,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<(), RelayError> {
        while !*stopped.borrow() {
            let step = self.step(term).await?;
            if step.window_closed && step.read == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.idle_poll) => {}
                    _ = stopped.wait_for(|stop| *stop) => {}
                }
            }
        }
        Ok(())
    }

    /// Takes the turn on a connection of its own (the lock lives as long as that session), or
    /// `None` when another relay has it.
    async fn begin_term(&self) -> Result<Option<Term>, RelayError> {
        let mut conn = self.store.pool().connect_options().connect().await?;
        let took: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(jetsource_relay_lock($1))")
                .bind(&self.config.name)
                .fetch_one(&mut conn)
                .await?;
        if !took {
            let _ = conn.close().await;
            return Ok(None);
        }
        let checkpoint = checkpoint::load(&mut conn, &self.config.name).await?;
        // Only a predecessor that stopped without recording what it published can have left
        // events in the stream beyond the checkpoint.
        let reconcile_left = if checkpoint.clean { 0 } else { MAX_BATCH };
        checkpoint::mark_clean(&mut conn, &self.config.name, false).await?;
        Ok(Some(Term {
            conn,
            checkpoint,
            reconcile_left,
            stream_versions: HashMap::new(),
            prefetched: None,
        }))
    }

    /// Gives the turn back: records whether the term ended `clean` (everything it published
    /// recorded), unlocks (closing alone releases the lock only when the server has ended the
    /// session, after the call returned), and closes the session.
    async fn end_term(&self, mut term: Term, clean: bool) {
        if clean {
            let _ = checkpoint::mark_clean(&mut term.conn, &self.config.name, true).await;
        }
        let _ = sqlx::query("SELECT pg_advisory_unlock(jetsource_relay_lock($1))")
            .bind(&self.config.name)
            .execute(&mut term.conn)
            .await;
        let _ = term.conn.close().await;
    }

    /// Reads the next events of the window (opening one when none is open), publishes them,
    /// and records the checkpoint.
    async fn step(&self, term: &mut Term) -> Result<Step, RelayError> {
        let limit = self.config.batch_size.clamp(1, MAX_BATCH);
        checkpoint::open_window(&mut term.conn, &mut term.checkpoint).await?;
        let events = match term.prefetched.take() {
            Some(events) => events,
            None => checkpoint::next_events(&mut term.conn, &term.checkpoint, limit).await?,
        };
        let to_publish = self.not_yet_in_stream(term, &events).await?;
        checkpoint::advance(&mut term.checkpoint, &events, limit);
        let publish = publish_in_order(&self.target, &to_publish);
        // A full read leaves the window open: its next events are read while these publish.
        let stored = match &term.checkpoint.window {
            Some(_) => {
                let next = checkpoint::next_events(&mut term.conn, &term.checkpoint, limit);
                let (stored, next) = futures::join!(publish, next);
                term.prefetched = Some(next?);
                stored?
            }
            None => publish.await?,
        };
        let window_closed = term.checkpoint.window.is_none();
        // An empty window changes nothing worth a write: a relay resuming from the older
        // checkpoint reads the same nothing.
        if !events.is_empty() {
            checkpoint::save(&mut term.conn, &self.config.name, &term.checkpoint, stored).await?;
        }
        Ok(Step {
            read: events.len(),
            window_closed,
        })
    }

    /// The events of `events` to publish: early in a term, those the stream does not have yet.
    async fn not_yet_in_stream<'e>(
        &self,
        term: &mut Term,
        events: &'e [StoredEvent],
    ) -> Result<Vec<&'e StoredEvent>, RelayError> {
        let checked = events.len().min(term.reconcile_left);
        term.reconcile_left -= checked;
        let unknown: std::collections::HashSet<(String, String)> = events[..checked]
            .iter()
            .map(|e| (e.aggregate_type.clone(), e.aggregate_id.clone()))
            .filter(|aggregate| !term.stream_versions.contains_key(aggregate))
            .collect();
        let lookups = unknown.into_iter().map(|aggregate| {
            let target = self.target.clone();
            async move {
                let version = target.relayed_version(&aggregate.0, &aggregate.1).await?;
                Ok::<_, StoreError>((aggregate, version))
            }
        });
        let found: Vec<_> = futures::stream::iter(lookups)
            .buffer_unordered(MAX_IN_FLIGHT)
            .collect()
            .await;
        for lookup in found {
            let (aggregate, version) = lookup?;
            term.stream_versions.insert(aggregate, version);
        }
        let mut publish = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let in_stream = match index < checked {
                true => {
                    let aggregate = (event.aggregate_type.clone(), event.aggregate_id.clone());
                    term.stream_versions.get(&aggregate).copied().unwrap_or(0)
                }
                false => 0,
            };
            if event.sequence > in_stream {
                publish.push(event);
            }
        }
        if term.reconcile_left == 0 {
            term.stream_versions = HashMap::new();
        }
        Ok(publish)
    }
}

/// Publishes `events` (in position order) with up to [`MAX_IN_FLIGHT`] acks outstanding but
/// at most one per aggregate: an aggregate's next event goes out when the previous one's ack is
/// in. Returns how many the stream stored.
async fn publish_in_order(
    target: &JetStreamStore,
    events: &[&StoredEvent],
) -> Result<u64, StoreError> {
    type Aggregate<'e> = (&'e str, &'e str);
    fn aggregate(e: &StoredEvent) -> Aggregate<'_> {
        (e.aggregate_type.as_str(), e.aggregate_id.as_str())
    }
    let mut in_flight = FuturesUnordered::new();
    // Aggregates with an event in flight, and their events waiting behind it.
    let mut waiting: HashMap<Aggregate<'_>, VecDeque<&StoredEvent>> = HashMap::new();
    // Events whose aggregate's previous event was acknowledged: sent before any new one.
    let mut unblocked: VecDeque<&StoredEvent> = VecDeque::new();
    let mut fresh = events.iter().copied();
    let mut stored = 0;
    loop {
        while in_flight.len() < MAX_IN_FLIGHT {
            let event = match unblocked.pop_front() {
                Some(event) => event,
                None => match fresh.next() {
                    Some(event) => match waiting.get_mut(&aggregate(event)) {
                        Some(queue) => {
                            queue.push_back(event);
                            continue;
                        }
                        None => {
                            waiting.insert(aggregate(event), VecDeque::new());
                            event
                        }
                    },
                    None => break,
                },
            };
            in_flight.push(async move { (event, target.publish_relayed(event).await) });
        }
        let Some((event, result)) = in_flight.next().await else {
            return Ok(stored);
        };
        stored += u64::from(result?);
        let key = aggregate(event);
        match waiting.get_mut(&key).and_then(VecDeque::pop_front) {
            Some(next) => unblocked.push_back(next),
            None => {
                waiting.remove(&key);
            }
        }
    }
}

/// Delays between a failed term and the next attempt: 50 ms to 2 s with jitter.
fn retry_backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build()
}

/// A running relay ([`Relay::spawn`]).
#[derive(Debug)]
pub struct RelayHandle {
    stop: watch::Sender<bool>,
    active: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Whether this relay holds the turn and publishes.
    pub fn is_active(&self) -> bool {
        *self.active.borrow()
    }

    /// Waits until this relay holds the turn.
    pub async fn wait_active(&self) {
        let mut active = self.active.clone();
        // The sender lives in the relay's task, which only ends through `stop`.
        let _ = active.wait_for(|active| *active).await;
    }

    /// Stops the relay after its current step and waits for it; its checkpoint stays.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}
