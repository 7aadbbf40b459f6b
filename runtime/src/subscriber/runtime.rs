//! The consuming machinery: one dispatcher task per subscriber and a fixed pool of
//! `concurrency` workers.
//!
//! The dispatcher pulls from the durable consumer (and the redrive consumer), routes each
//! message to its aggregate's worker queue, sends in-progress acks for every message it handed
//! out and has not seen completed, and gates delivery after a start or reconnect (see
//! [`Gate`]). An aggregate has at most one message with the workers at a time; its later ones
//! wait in its queue.
//!
//! With the completion log, a worker hands a handled message to the log's writer and moves
//! on; the writer returns each stored round to the dispatcher, which acks its messages and
//! only then releases their aggregates' next events. So no handler starts before its
//! aggregate's previous completion is durable, and no task or channel is paid per event.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer, DeliverPolicy, PriorityPolicy};
use async_nats::jetstream::{self, stream, AckKind, Message};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::config::{AckMode, DeliverFrom, Idempotency, Placement, SubscriberConfig};
use super::dead_letter::{self, DeadLetterDraft, DeadLetterReason};
use super::done_log::DoneLog;
use super::{EventContext, HandlerError, Subscriber, SubscriberError};
use crate::error::DecodeError;
use crate::event_set::EventSet;
use crate::observability::{self, SubscriberMetrics};
use crate::store::jetstream::headers;
use crate::store::StoredEvent;
use crate::JetStreamStore;

/// Counters of a running subscriber.
///
/// ```no_run
/// # fn show(handle: &jetsource::subscriber::SubscriberHandle) {
/// let stats = handle.stats();
/// println!("{} handled, {} dead-lettered", stats.handled, stats.dead_lettered);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Events the handler completed (and that were acked).
    pub handled: u64,
    /// Redeliveries skipped because the event had been completed before.
    pub duplicates_skipped: u64,
    /// Events of retired types, acked without calling the handler.
    pub retired_skipped: u64,
    /// In-place retries after retryable failures.
    pub retries: u64,
    /// Messages moved to the dead-letter stream.
    pub dead_lettered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    duplicates_skipped: AtomicU64,
    retired_skipped: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SubscriberStats {
        SubscriberStats {
            handled: self.handled.load(Ordering::Relaxed),
            duplicates_skipped: self.duplicates_skipped.load(Ordering::Relaxed),
            retired_skipped: self.retired_skipped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A running subscriber. Dropping it leaves the subscriber running; call
/// [`SubscriberHandle::shutdown`] to stop it.
///
/// ```no_run
/// # use jetsource::subscriber::{self, SubscriberConfig, Subscriber, EventContext, HandlerError};
/// # async fn run<S: Subscriber>(store: jetsource::JetStreamStore, s: S) -> Result<(), Box<dyn std::error::Error>> {
/// let handle = subscriber::start(&store, s, SubscriberConfig::new("audit")).await?;
/// let stats = handle.shutdown().await?;
/// println!("{stats:?}");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SubscriberHandle {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), SubscriberError>>,
    counters: Arc<Counters>,
}

impl SubscriberHandle {
    /// The counters so far.
    pub fn stats(&self) -> SubscriberStats {
        self.counters.snapshot()
    }

    /// Whether the subscriber stopped (after [`SubscriberHandle::shutdown`] or an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops gracefully: no more pulls; running handlers finish and are acked; messages that
    /// had not started are `nak`ed so they are redelivered at once. Returns the final counters.
    pub async fn shutdown(self) -> Result<SubscriberStats, SubscriberError> {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(Ok(())) => Ok(self.counters.snapshot()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(SubscriberError::Task(e.to_string())),
        }
    }

    /// Stops at once without acking anything, like a crash (running handlers are dropped at
    /// their next await). The server redelivers what was unacknowledged after the ack wait.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Events,
    Redrive,
}

struct Delivery {
    msg: Message,
    source: Source,
    /// Stream sequence in the stream the message was delivered from.
    seq: u64,
    /// The event's subject and position in the event stream, when the message carries them.
    origin: Option<(String, u64)>,
    /// Server deliveries of this message, from 1.
    delivered: u64,
    /// The ordering key `<type>.<id>`.
    key: String,
    /// Check the idempotency markers even on a first delivery: the message is not newer than
    /// one this process (or the consumer) saw before, so the server's consumer state may have
    /// been rolled back (a server crash loses its most recent acks and delivery counts).
    verify: bool,
}

struct Shared<S: Subscriber> {
    subscriber: Arc<S>,
    config: SubscriberConfig,
    js: jetstream::Context,
    prefix: String,
    stream: String,
    done: Option<DoneLog<Completion>>,
    counters: Arc<Counters>,
    metrics: SubscriberMetrics,
    /// Set by the dispatcher once it stopped pulling: workers `nak` what has not started.
    shutdown: watch::Receiver<bool>,
}

impl<S: Subscriber> Shared<S> {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Starts `subscriber` on `store`'s stream: creates (or updates) the durable consumer, the
/// dead-letter stream and the completion log, then consumes in the background.
///
/// ```no_run
/// # use jetsource::subscriber::{self, SubscriberConfig, Subscriber};
/// # async fn run<S: Subscriber>(store: jetsource::JetStreamStore, s: S) -> Result<(), Box<dyn std::error::Error>> {
/// let handle = subscriber::start(&store, s, SubscriberConfig::new("audit").concurrency(32)).await?;
/// # let _ = handle; Ok(()) }
/// ```
pub async fn start<S: Subscriber>(
    store: &JetStreamStore,
    subscriber: S,
    config: SubscriberConfig,
) -> Result<SubscriberHandle, SubscriberError> {
    config.validate()?;
    if <S::Event as EventSet>::NAMES.is_empty() {
        return Err(SubscriberError::InvalidConfig(
            "the subscriber's event set has no event types".into(),
        ));
    }
    let js = jetstream::new(store.client().clone());
    let stream = store.config().name.clone();
    let placement = Placement::of(store);
    let dead_letters = dead_letter::ensure_stream(&js, &stream, placement).await?;
    let counters = Arc::new(Counters::default());
    let span = tracing::info_span!("subscriber", durable = %config.durable_name);
    let base = LaneBase {
        js,
        subscriber: Arc::new(subscriber),
        prefix: store.config().prefix.clone(),
        stream,
        placement,
        dead_letters,
        counters: counters.clone(),
        config,
    };
    let (shutdown, stop) = watch::channel(false);
    let task = match base.config.partitions {
        None => {
            let lane = open_lane(&base, None, stop).await?;
            tokio::spawn(lane.run().instrument(span))
        }
        Some(count) => {
            let group = super::group::Group::join(base, count).await?;
            tokio::spawn(group.run(stop).instrument(span))
        }
    };
    Ok(SubscriberHandle {
        shutdown,
        task,
        counters,
    })
}

/// What every lane of a subscriber shares: one lane consumes the whole stream, or, scaled out,
/// one lane per partition this process owns.
pub(crate) struct LaneBase<S: Subscriber> {
    pub(crate) js: jetstream::Context,
    pub(crate) subscriber: Arc<S>,
    pub(crate) config: SubscriberConfig,
    pub(crate) prefix: String,
    /// The event stream's name.
    pub(crate) stream: String,
    /// The event stream's storage and replicas, which its subscriber state follows.
    pub(crate) placement: Placement,
    pub(crate) dead_letters: stream::Stream,
    counters: Arc<Counters>,
}

/// One partition of a scaled-out subscriber.
pub(crate) struct PartitionLane {
    /// The partition stream.
    pub(crate) stream: stream::Stream,
    pub(crate) index: u16,
    /// How long the server keeps the partition pinned to a process that stopped pulling.
    pub(crate) pin_ttl: Duration,
    /// Whether this lane also consumes redriven dead letters.
    pub(crate) redrive: bool,
}

/// The priority group of partition consumers: one pinned process per partition.
pub(crate) const PRIORITY_GROUP: &str = "jetsource";

/// Opens a lane: its completion log, consumer(s) and gate. `partition: None` consumes the whole
/// event stream; `stop` ends the lane gracefully.
pub(crate) async fn open_lane<S: Subscriber>(
    base: &LaneBase<S>,
    partition: Option<PartitionLane>,
    stop: watch::Receiver<bool>,
) -> Result<Dispatcher<S>, SubscriberError> {
    let config = &base.config;
    let (drain_tx, shutdown_rx) = watch::channel(false);
    let (done, stored) = match config.idempotency {
        Idempotency::Markers { ttl } => {
            let (stored_tx, stored_rx) = mpsc::unbounded_channel();
            // Opened per lane, so a lane taking a partition over loads the completions its
            // previous owner stored until then.
            let log = DoneLog::open(
                &base.js,
                &base.stream,
                &config.durable_name,
                ttl,
                base.placement,
                shutdown_rx.clone(),
                stored_tx,
            )
            .await?;
            (Some(log), Some(stored_rx))
        }
        Idempotency::Off => (None, None),
    };
    let (events_stream, filters, consumer_name, pin_ttl, redrive) = match partition {
        None => {
            let events_stream =
                base.js.get_stream(&base.stream).await.map_err(|e| {
                    SubscriberError::js(format!("opening stream {}", base.stream), e)
                })?;
            let filters = filter_subjects::<S::Event>(&base.prefix);
            (
                events_stream,
                filters,
                config.durable_name.clone(),
                None,
                true,
            )
        }
        Some(lane) => {
            let filters = partition_filters::<S::Event>(&base.prefix, lane.index);
            let name = format!("{}_p{}", config.durable_name, lane.index);
            (lane.stream, filters, name, Some(lane.pin_ttl), lane.redrive)
        }
    };
    let mut events = ensure_consumer(
        &events_stream,
        config,
        filters.clone(),
        &consumer_name,
        deliver_policy(config.deliver_from),
        pin_ttl,
    )
    .await?;
    let redrive = if redrive {
        let redrive_subject = dead_letter::redrive_subject(&base.stream, &config.durable_name);
        Some(
            ensure_consumer(
                &base.dead_letters,
                config,
                vec![redrive_subject],
                &format!("{}_redrive", config.durable_name),
                DeliverPolicy::All,
                None,
            )
            .await?,
        )
    } else {
        None
    };
    // Anything delivered before and still unacknowledged (a previous process died with it)
    // must be handled before newer messages, or an aggregate's later event could overtake it.
    let info = events
        .info()
        .await
        .map_err(|e| SubscriberError::js("reading the consumer state", e))?
        .clone();
    let gate = if info.num_ack_pending > 0 {
        tracing::info!(
            consumer = %consumer_name,
            pending = info.num_ack_pending,
            until = info.delivered.stream_sequence,
            "unacknowledged messages from an earlier run: newer ones wait for them"
        );
        Gate::Settling
    } else {
        Gate::Open
    };
    let shared = Arc::new(Shared {
        subscriber: base.subscriber.clone(),
        config: config.clone(),
        js: base.js.clone(),
        prefix: base.prefix.clone(),
        stream: base.stream.clone(),
        done,
        counters: base.counters.clone(),
        metrics: SubscriberMetrics::new(&config.durable_name),
        shutdown: shutdown_rx,
    });
    Ok(Dispatcher {
        settle_by: tokio::time::Instant::now() + settle_limit(&config.ack_wait),
        shared,
        events_stream,
        filters,
        consumer_name,
        pin_ttl,
        pin: None,
        events,
        redrive,
        gate,
        high_water: info.delivered.stream_sequence,
        stop,
        drain: drain_tx,
        stored,
    })
}

/// `<prefix>.*.*.<name>` for every handled name.
pub(crate) fn filter_subjects<E: EventSet>(prefix: &str) -> Vec<String> {
    E::known_names()
        .iter()
        .map(|name| format!("{prefix}.*.*.{name}"))
        .collect()
}

/// `<prefix>.<partition>.*.*.<name>` for every handled name: the partition stream's subjects.
fn partition_filters<E: EventSet>(prefix: &str, partition: u16) -> Vec<String> {
    E::known_names()
        .iter()
        .map(|name| format!("{prefix}.{partition}.*.*.{name}"))
        .collect()
}

fn deliver_policy(from: DeliverFrom) -> DeliverPolicy {
    match from {
        DeliverFrom::All => DeliverPolicy::All,
        DeliverFrom::New => DeliverPolicy::New,
        DeliverFrom::Position(seq) => DeliverPolicy::ByStartSequence {
            start_sequence: seq.max(1),
        },
        DeliverFrom::Time(at) => {
            let nanos = at
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            match async_nats::datetime::from_nanos(nanos as i128) {
                Ok(start_time) => DeliverPolicy::ByStartTime { start_time },
                Err(e) => {
                    tracing::warn!(error = %e, "start time out of range; delivering all");
                    DeliverPolicy::All
                }
            }
        }
    }
}

/// Creates the durable consumer, or updates an existing one to `config` (filter subjects, ack
/// wait and pending limit may change; the start position of an existing consumer cannot).
/// `pin_ttl` makes it a partition consumer: one pinned process at a time.
async fn ensure_consumer(
    stream: &stream::Stream,
    config: &SubscriberConfig,
    filters: Vec<String>,
    name: &str,
    deliver_policy: DeliverPolicy,
    pin_ttl: Option<Duration>,
) -> Result<Consumer<pull::Config>, SubscriberError> {
    let (priority_policy, priority_groups, priority_timeout) = match pin_ttl {
        Some(ttl) => (
            PriorityPolicy::PinnedClient,
            vec![PRIORITY_GROUP.to_owned()],
            ttl,
        ),
        None => (PriorityPolicy::None, Vec::new(), Duration::ZERO),
    };
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subjects: filters,
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            // The runtime counts attempts and dead-letters itself; the server never drops a
            // message silently.
            max_deliver: -1,
            max_ack_pending: config.max_ack_pending as i64,
            deliver_policy,
            priority_policy,
            priority_groups,
            priority_timeout,
            ..Default::default()
        })
        .await
        .map_err(|e| SubscriberError::js(format!("creating consumer {name}"), e))
}

/// Whether messages may be handled yet.
///
/// After a start with unacknowledged messages on the consumer (a previous process died, or
/// shut down while messages were on their way to it), or after a reconnect, some earlier
/// messages may come back only after the ack wait. Until every message the server counts as
/// pending is in this process's hands, nothing is handled; then the held messages are released
/// in stream order, so no aggregate's later event overtakes an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Everything flows.
    Open,
    /// Hold everything until the server's pending count is covered by what is held here.
    Settling,
}

pub(crate) struct Dispatcher<S: Subscriber> {
    shared: Arc<Shared<S>>,
    events_stream: stream::Stream,
    filters: Vec<String>,
    consumer_name: String,
    /// Set for a partition consumer: the pin's time to live.
    pin_ttl: Option<Duration>,
    /// The pin the server gave this lane's pulls last.
    pin: Option<String>,
    events: Consumer<pull::Config>,
    redrive: Option<Consumer<pull::Config>>,
    gate: Gate,
    /// When a settling gate opens anyway.
    settle_by: tokio::time::Instant,
    /// The highest stream sequence received from the events consumer.
    high_water: u64,
    /// The handle's shutdown request.
    stop: watch::Receiver<bool>,
    /// Tells the workers to drain.
    drain: watch::Sender<bool>,
    /// Rounds of completions the completion log stored, to be acked.
    stored: Option<mpsc::UnboundedReceiver<Vec<Completion>>>,
}

/// Per-aggregate queues in front of a fixed pool of `concurrency` workers. An aggregate with a
/// key in `queues` has one message with a worker (or on its way to one); its later messages
/// wait in the queue and go out one at a time as the previous one completes.
struct Router {
    queues: HashMap<String, VecDeque<Delivery>>,
    /// Every message handed out and not completed, for in-progress acks.
    outstanding: HashMap<(Source, u64), Subject>,
    /// Messages sent to the workers and not reported done yet.
    in_flight: usize,
    work: Option<mpsc::UnboundedSender<Delivery>>,
}

impl Router {
    fn route(&mut self, d: Delivery) {
        if let Some(reply) = &d.msg.reply {
            self.outstanding.insert((d.source, d.seq), reply.clone());
        }
        if let Some(queue) = self.queues.get_mut(&d.key) {
            queue.push_back(d);
        } else {
            self.queues.insert(d.key.clone(), VecDeque::new());
            self.send(d);
        }
    }

    fn done(&mut self, done: Done) {
        self.outstanding.remove(&(done.source, done.seq));
        self.in_flight -= 1;
        if self.work.is_none() {
            // Draining: what waits stays queued, to be nak'ed in order.
            return;
        }
        let next = match self.queues.get_mut(&done.key) {
            Some(queue) => queue.pop_front(),
            None => None,
        };
        match next {
            Some(d) => self.send(d),
            None => {
                self.queues.remove(&done.key);
            }
        }
    }

    fn send(&mut self, d: Delivery) {
        if let Some(work) = &self.work {
            // The workers live as long as the sender; a failed send means they are gone, and
            // the message comes back after the ack wait.
            if work.send(d).is_ok() {
                self.in_flight += 1;
            }
        }
    }

    /// Everything still waiting behind a busy aggregate.
    fn waiting(&mut self) -> Vec<Delivery> {
        self.queues.values_mut().flat_map(|q| q.drain(..)).collect()
    }
}

struct Done {
    key: String,
    source: Source,
    seq: u64,
}

/// A handled message waiting for its completion to be stored before its ack and report.
pub(crate) struct Completion {
    msg: Message,
    report: Done,
}

async fn next_round(
    stored: &mut Option<mpsc::UnboundedReceiver<Vec<Completion>>>,
) -> Option<Vec<Completion>> {
    match stored {
        Some(stored) => stored.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_message(
    stream: &mut Option<pull::Stream>,
) -> Option<Result<Message, pull::MessagesError>> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// How often, at most, the consumer lag gauge is refreshed (one consumer-info request); as
/// often as the ack wait when that is shorter.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// How long a gate may settle: anything lost in transit is redelivered after one ack wait, so
/// pending messages still missing after two are held by another process of the same durable.
fn settle_limit(ack_wait: &Duration) -> Duration {
    *ack_wait * 2 + Duration::from_secs(1)
}

impl<S: Subscriber> Dispatcher<S> {
    fn settle(&mut self) {
        if self.gate == Gate::Open {
            self.gate = Gate::Settling;
            self.settle_by =
                tokio::time::Instant::now() + settle_limit(&self.shared.config.ack_wait);
        }
    }

    async fn open(&self, consumer: &Consumer<pull::Config>) -> Option<pull::Stream> {
        let batch = self.shared.config.max_ack_pending.clamp(1, 500);
        let pulls = consumer.stream().max_messages_per_batch(batch);
        let pulls = match self.pin_ttl {
            // A pull outliving the pin's time to live would lose the pin between pulls.
            Some(ttl) => {
                let expires = (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
                pulls
                    .group(PRIORITY_GROUP)
                    .expires(expires)
                    .heartbeat(expires / 4)
            }
            None => pulls
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30)),
        };
        match pulls.messages().await {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull; retrying");
                None
            }
        }
    }

    pub(crate) async fn run(mut self) -> Result<(), SubscriberError> {
        let shared = self.shared.clone();
        let config = &shared.config;
        let mut shutdown = self.stop.clone();
        let mut detached = false;
        let mut held: Vec<Delivery> = Vec::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut stored = self.stored.take();
        let (work_tx, work_rx) = mpsc::unbounded_channel::<Delivery>();
        let work_rx = Arc::new(tokio::sync::Mutex::new(work_rx));
        let mut workers = JoinSet::new();
        for _ in 0..config.concurrency {
            workers.spawn(worker(shared.clone(), work_rx.clone(), done_tx.clone()));
        }
        let mut router = Router {
            queues: HashMap::new(),
            outstanding: HashMap::new(),
            in_flight: 0,
            work: Some(work_tx),
        };
        let mut events_msgs = self.open(&self.events).await;
        let mut redrive_msgs = match &self.redrive {
            Some(redrive) => self.open(redrive).await,
            None => None,
        };
        let tick_every =
            (config.ack_wait / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let progress_every = config.ack_wait / 2;
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_progress = tokio::time::Instant::now();
        let mut last_lag = tokio::time::Instant::now();
        let client = shared.js.client();
        tracing::info!(filters = ?self.filters, "subscriber started");

        loop {
            tokio::select! {
                changed = shutdown.changed(), if !detached => match changed {
                    // The handle was dropped: the subscriber runs on, as documented.
                    Err(_) => detached = true,
                    Ok(()) if *shutdown.borrow() => break,
                    Ok(()) => {}
                },
                msg = next_message(&mut events_msgs) => match msg {
                    Some(Ok(msg)) => {
                        self.note_pin(&msg);
                        if let Some(d) = self.delivery(msg, Source::Events) {
                            if self.gate == Gate::Open {
                                router.route(d);
                            } else {
                                held.push(d);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "pulling events failed; re-reading consumer state");
                        if matches!(e.kind(), pull::MessagesErrorKind::ConsumerDeleted) {
                            events_msgs = None;
                        }
                        self.settle();
                    }
                    None => events_msgs = None,
                },
                msg = next_message(&mut redrive_msgs) => match msg {
                    Some(Ok(msg)) => {
                        if let Some(d) = self.delivery(msg, Source::Redrive) {
                            router.route(d);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "pulling redriven dead letters failed");
                        if matches!(e.kind(), pull::MessagesErrorKind::ConsumerDeleted) {
                            redrive_msgs = None;
                        }
                    }
                    None => redrive_msgs = None,
                },
                Some(done) = done_rx.recv() => router.done(done),
                Some(round) = next_round(&mut stored) => {
                    acked(&shared, round, &mut router, &done_tx).await;
                }
                _ = tick.tick() => {
                    if events_msgs.is_none() {
                        let deliver = deliver_policy(config.deliver_from);
                        let recreated = ensure_consumer(
                            &self.events_stream,
                            config,
                            self.filters.clone(),
                            &self.consumer_name,
                            deliver,
                            self.pin_ttl,
                        );
                        match recreated.await {
                            Ok(consumer) => {
                                self.events = consumer;
                                events_msgs = self.open(&self.events).await;
                                self.settle();
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot recreate the consumer"),
                        }
                    }
                    if let (None, Some(redrive)) = (&redrive_msgs, &self.redrive) {
                        redrive_msgs = self.open(redrive).await;
                    }
                    if self.gate != Gate::Open {
                        self.check_gate(&mut held, &mut router).await;
                    }
                    if last_lag.elapsed() >= LAG_EVERY.min(config.ack_wait) {
                        last_lag = tokio::time::Instant::now();
                        if let Ok(info) = self.events.info().await {
                            shared.metrics.lag.set(info.num_pending as f64);
                        }
                    }
                    if last_progress.elapsed() >= progress_every {
                        last_progress = tokio::time::Instant::now();
                        let replies = router
                            .outstanding
                            .values()
                            .chain(held.iter().filter_map(|d| d.msg.reply.as_ref()));
                        for reply in replies {
                            if let Err(e) = client.publish(reply.clone(), Bytes::from_static(b"+WPI")).await {
                                tracing::debug!(error = %e, "in-progress ack failed");
                            }
                        }
                    }
                }
            }
        }

        tracing::info!(
            in_flight = router.outstanding.len(),
            held = held.len(),
            "shutting down: finishing handlers in flight"
        );
        drop(events_msgs);
        drop(redrive_msgs);
        // The unsubscribes must reach the server before any nak, or a nak'ed message could be
        // redelivered into the closed pull request and come back only after the ack wait,
        // behind later events of its aggregate.
        if let Err(e) = client.flush().await {
            tracing::warn!(error = %e, "flushing before the naks failed");
        }
        let _ = self.drain.send(true);
        // Closing the work channel ends the workers once they finished what they run and
        // nak'ed what they had not started: the first waiting message of every busy aggregate.
        // Only then are the later ones nak'ed, so they are redelivered behind it.
        router.work = None;
        while let Some(joined) = workers.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "a worker ended abnormally");
            }
        }
        // Completions waiting for their group commit report once they are acked.
        while router.in_flight > 0 {
            tokio::select! {
                Some(done) = done_rx.recv() => router.done(done),
                round = next_round(&mut stored) => match round {
                    Some(round) => acked(&shared, round, &mut router, &done_tx).await,
                    None => {
                        // Their messages come back after the ack wait.
                        tracing::error!("the completion log writer is gone");
                        break;
                    }
                },
            }
        }
        let mut rest: Vec<Delivery> = held.drain(..).chain(router.waiting()).collect();
        rest.sort_by_key(|d| (d.source == Source::Redrive, d.seq));
        for d in rest {
            nak(&d.msg).await;
        }
        // Make sure the acks leave the client before the task reports completion.
        if let Err(e) = client.flush().await {
            tracing::warn!(error = %e, "flushing acks failed");
        }
        tracing::info!("subscriber stopped");
        Ok(())
    }

    async fn check_gate(&mut self, held: &mut Vec<Delivery>, router: &mut Router) {
        // Counted before the request: whatever arrives later is not in this count, which only
        // makes the check more careful.
        let in_hand = held.len()
            + router
                .outstanding
                .keys()
                .filter(|(source, _)| *source == Source::Events)
                .count();
        let info = match self.events.info().await {
            Ok(info) => info.clone(),
            Err(e) => {
                tracing::debug!(error = %e, "reading the consumer state failed");
                return;
            }
        };
        if info.num_ack_pending > in_hand && tokio::time::Instant::now() < self.settle_by {
            tracing::debug!(
                pending = info.num_ack_pending,
                in_hand,
                "waiting for earlier deliveries to come back"
            );
            return;
        }
        self.gate = Gate::Open;
        tracing::info!(
            released = held.len(),
            "earlier deliveries settled; events flow"
        );
        held.sort_by_key(|d| d.seq);
        for d in held.drain(..) {
            router.route(d);
        }
    }

    /// A partition that just came to this lane (a new pin) may still have messages pending with
    /// its previous owner: settle, so none of its aggregates' later events overtakes them.
    fn note_pin(&mut self, msg: &Message) {
        if self.pin_ttl.is_none() {
            return;
        }
        let pin = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Pin-Id"))
            .map(|v| v.as_str().to_owned());
        if pin.is_some() && pin != self.pin {
            tracing::debug!(consumer = %self.consumer_name, "pinned to this process");
            self.pin = pin;
            self.settle();
        }
    }

    fn delivery(&mut self, msg: Message, source: Source) -> Option<Delivery> {
        let (seq, delivered) = match msg.info() {
            Ok(info) => (info.stream_sequence, info.delivered.max(1) as u64),
            Err(e) => {
                tracing::warn!(error = %e, subject = %msg.subject, "ignoring a message without JetStream metadata");
                return None;
            }
        };
        let origin = match source {
            Source::Events if self.pin_ttl.is_some() => sourced_origin(msg.headers.as_ref()),
            Source::Events => Some((msg.subject.as_str().to_owned(), seq)),
            Source::Redrive => dead_letter_origin(msg.headers.as_ref()),
        };
        let key = match &origin {
            Some((subject, _)) => aggregate_key(&self.shared.prefix, subject),
            None => msg.subject.as_str().to_owned(),
        };
        let verify = match source {
            Source::Events => {
                let verify = delivered > 1 || seq <= self.high_water;
                self.high_water = self.high_water.max(seq);
                verify
            }
            Source::Redrive => true,
        };
        Some(Delivery {
            msg,
            source,
            seq,
            origin,
            delivered,
            key,
            verify,
        })
    }
}

/// The original subject and position of a message the partition stream sourced, from the
/// server's `Nats-Stream-Source` header: `<stream> <sequence> <filter> <transform> <subject>`.
fn sourced_origin(headers: Option<&HeaderMap>) -> Option<(String, u64)> {
    let source = headers?.get("Nats-Stream-Source")?.as_str();
    let mut fields = source.split(' ');
    let position = fields.nth(1)?.parse().ok()?;
    let subject = fields.nth(2)?;
    Some((subject.to_owned(), position))
}

/// The original subject and position a dead letter records.
fn dead_letter_origin(headers: Option<&HeaderMap>) -> Option<(String, u64)> {
    let headers = headers?;
    let subject = headers.get(dead_letter::SUBJECT)?.as_str().to_owned();
    let position = headers
        .get(dead_letter::STREAM_SEQ)?
        .as_str()
        .parse()
        .ok()?;
    Some((subject, position))
}

/// `<type>.<id>` of an event subject, or the whole subject when it has another shape.
fn aggregate_key(prefix: &str, subject: &str) -> String {
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .unwrap_or(subject);
    let mut tokens = rest.splitn(3, '.');
    match (tokens.next(), tokens.next()) {
        (Some(t), Some(id)) => format!("{t}.{id}"),
        _ => subject.to_owned(),
    }
}

async fn worker<S: Subscriber>(
    shared: Arc<Shared<S>>,
    work: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>>,
    done: mpsc::UnboundedSender<Done>,
) {
    loop {
        let next = work.lock().await.recv().await;
        let Some(d) = next else { break };
        let report = Done {
            key: d.key.clone(),
            source: d.source,
            seq: d.seq,
        };
        if shared.stopping() {
            nak(&d.msg).await;
        } else if let Some((id, msg)) = process(&shared, d).await {
            // The ack waits for the group commit of the completion: the completion log hands
            // it back to the dispatcher with its round. The worker moves on; the aggregate
            // stays busy until then.
            let completion = Completion { msg, report };
            let Some(log) = &shared.done else {
                unreachable!("only the completion log defers acks")
            };
            if let Err(completion) = log.complete(id, completion) {
                tracing::error!("the completion log writer is gone; acking anyway");
                ack(&shared, &completion.msg).await;
                let _ = done.send(completion.report);
            }
            continue;
        }
        let _ = done.send(report);
    }
}

/// Acks a round of completions the completion log stored and reports them done. Fast acks
/// only queue a publish, so the dispatcher sends them itself; confirmed acks wait for the
/// server, so a task sends those and reports through `done_tx`.
async fn acked<S: Subscriber>(
    shared: &Arc<Shared<S>>,
    round: Vec<Completion>,
    router: &mut Router,
    done_tx: &mpsc::UnboundedSender<Done>,
) {
    match shared.config.ack_mode {
        AckMode::Fast => {
            for Completion { msg, report } in round {
                ack(shared, &msg).await;
                router.done(report);
            }
        }
        AckMode::Confirmed => {
            let shared = shared.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let acks = round.into_iter().map(|Completion { msg, report }| {
                    let (shared, done_tx) = (&shared, &done_tx);
                    async move {
                        ack(shared, &msg).await;
                        let _ = done_tx.send(report);
                    }
                });
                futures::future::join_all(acks).await;
            });
        }
    }
}

async fn nak(msg: &Message) {
    if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
        tracing::debug!(error = %e, "nak failed; the message comes back after the ack wait");
    }
}

async fn ack<S: Subscriber>(shared: &Shared<S>, msg: &Message) {
    let result = match shared.config.ack_mode {
        AckMode::Fast => msg.ack().await,
        AckMode::Confirmed => {
            let mut result = msg.double_ack().await;
            for _ in 0..3 {
                if result.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                result = msg.double_ack().await;
            }
            result
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "ack failed; a redelivery will be skipped as a duplicate");
    }
}

/// Rebuilds the stored event from the message's original subject and position (recorded by the
/// server for sourced partition messages, by the dead-letter headers for redriven ones).
fn decode_stored<S: Subscriber>(shared: &Shared<S>, d: &Delivery) -> Result<StoredEvent, String> {
    let empty = HeaderMap::new();
    let msg_headers = d.msg.headers.as_ref().unwrap_or(&empty);
    let missing = match d.source {
        Source::Events => "a partition message lacks its original subject and position",
        Source::Redrive => "a redriven dead letter lacks its original subject or position",
    };
    let (subject, position) = d.origin.as_ref().ok_or(missing)?;
    let rest = subject
        .strip_prefix(shared.prefix.as_str())
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(|| format!("subject {subject:?} is outside prefix {:?}", shared.prefix))?;
    headers::decode(rest, *position, msg_headers, d.msg.payload.clone()).map_err(|e| e.to_string())
}

fn context(stored: &StoredEvent, attempt: u64, redriven: bool) -> EventContext {
    EventContext {
        event_id: stored.id,
        event_name: stored.name.clone(),
        event_version: stored.version,
        aggregate_type: stored.aggregate_type.clone(),
        aggregate_id: stored.aggregate_id.clone(),
        sequence: stored.sequence,
        position: stored.position,
        timestamp: stored.timestamp,
        correlation_id: stored.correlation_id.clone(),
        causation_id: stored.causation_id.clone(),
        command_id: stored.command_id.clone(),
        headers: stored.headers.clone(),
        delivery_count: attempt,
        redriven,
    }
}

/// Waits `delay`; false when shutdown began meanwhile.
async fn pause<S: Subscriber>(shared: &Shared<S>, delay: Duration) -> bool {
    let mut stop = shared.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(delay) => !shared.stopping(),
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// A completed event whose ack waits for the completion log.
type Deferred = (uuid::Uuid, Message);

/// Handles one message to the end (acked, nak'ed or dead-lettered), or returns the ack still
/// to send once its completion is stored.
async fn process<S: Subscriber>(shared: &Shared<S>, d: Delivery) -> Option<Deferred> {
    let stored = match decode_stored(shared, &d) {
        Ok(stored) => stored,
        Err(reason) => {
            dead_letter(shared, &d, DeadLetterReason::Corrupt, &reason, d.delivered).await;
            return None;
        }
    };
    let redriven = d.source == Source::Redrive;
    let mut event = match S::Event::decode(stored.raw()) {
        Ok(Some(event)) => Some(event),
        Ok(None) => {
            bump(&shared.counters.retired_skipped);
            ack(shared, &d.msg).await;
            return None;
        }
        Err(e) => {
            let reason = match e {
                DecodeError::UnknownEvent { .. } => DeadLetterReason::UnknownEvent,
                DecodeError::FutureVersion { .. } => DeadLetterReason::FutureVersion,
                _ => DeadLetterReason::Undecodable,
            };
            {
                dead_letter(shared, &d, reason, &e.to_string(), d.delivered).await;
                return None;
            }
        }
    };
    let id = stored.id.to_string();
    if let Some(done) = &shared.done {
        if d.verify && done.contains(&stored.id) {
            tracing::debug!(event_id = %id, "skipping an event completed before");
            bump(&shared.counters.duplicates_skipped);
            {
                ack(shared, &d.msg).await;
                return None;
            }
        }
    }
    let mut attempt = d.delivered;
    let mut retry = 0;
    loop {
        let current = match event.take() {
            Some(event) => event,
            // Decoded once already, so decoding again gives the same result.
            None => match S::Event::decode(stored.raw()) {
                Ok(Some(event)) => event,
                _ => {
                    let reason = "the event no longer decodes";
                    {
                        dead_letter(shared, &d, DeadLetterReason::Undecodable, reason, attempt)
                            .await;
                        return None;
                    }
                }
            },
        };
        let ctx = context(&stored, attempt, redriven);
        let span = tracing::info_span!(
            "jetsource.handle",
            subscriber = %shared.config.durable_name,
            event_id = %id,
            event = %stored.name,
            aggregate_type = %stored.aggregate_type,
            aggregate_id = %stored.aggregate_id,
            version = stored.sequence,
            position = stored.position,
            attempt
        );
        observability::continue_trace(&span, &stored.headers);
        let started = std::time::Instant::now();
        let call = shared.subscriber.handle(current, &ctx).instrument(span);
        let call = observability::with_cause(&stored.correlation_id, stored.id, call);
        let handled = AssertUnwindSafe(call)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(HandlerError::permanent(format!("handler panicked: {what}")))
            });
        shared
            .metrics
            .handler_seconds
            .record(started.elapsed().as_secs_f64());
        match handled {
            Ok(()) => {
                bump(&shared.counters.handled);
                shared.metrics.handled.increment(1);
                if shared.done.is_some() {
                    return Some((stored.id, d.msg));
                }
                ack(shared, &d.msg).await;
                return None;
            }
            Err(HandlerError::Permanent(e)) => {
                dead_letter(
                    shared,
                    &d,
                    DeadLetterReason::Permanent,
                    &e.to_string(),
                    attempt,
                )
                .await;
                return None;
            }
            Err(HandlerError::Retryable(e)) => {
                if attempt >= u64::from(shared.config.max_deliver) {
                    let error = format!("{e} (after {attempt} attempts)");
                    {
                        dead_letter(shared, &d, DeadLetterReason::MaxDeliver, &error, attempt)
                            .await;
                        return None;
                    }
                }
                let delay = shared.config.delay(retry);
                tracing::warn!(event_id = %id, attempt, ?delay, error = %e, "handler failed; retrying");
                bump(&shared.counters.retries);
                shared.metrics.retried.increment(1);
                retry += 1;
                attempt += 1;
                if !pause(shared, delay).await {
                    {
                        nak(&d.msg).await;
                        return None;
                    }
                }
            }
        }
    }
}

async fn dead_letter<S: Subscriber>(
    shared: &Shared<S>,
    d: &Delivery,
    reason: DeadLetterReason,
    error: &str,
    deliveries: u64,
) {
    let (original_subject, position) = d
        .origin
        .clone()
        .unwrap_or_else(|| (d.msg.subject.as_str().to_owned(), 0));
    let draft = DeadLetterDraft {
        event_stream: &shared.stream,
        durable: &shared.config.durable_name,
        reason,
        error,
        original_subject: &original_subject,
        position,
        deliveries,
        dedupe: match d.source {
            Source::Events => format!("m:{position}:{}", d.delivered),
            Source::Redrive => format!("r:{}:{}", d.seq, d.delivered),
        },
    };
    let headers = dead_letter::dead_letter_headers(d.msg.headers.as_ref(), &draft);
    loop {
        match dead_letter::publish(&shared.js, headers.clone(), d.msg.payload.clone(), &draft).await
        {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(error = %e, "cannot store a dead letter; retrying");
                if !pause(shared, Duration::from_secs(1)).await {
                    return nak(&d.msg).await;
                }
            }
        }
    }
    tracing::warn!(
        subject = %original_subject,
        position,
        %reason,
        error,
        "event dead-lettered"
    );
    bump(&shared.counters.dead_lettered);
    shared.metrics.dead_lettered(reason.as_str());
    if let Err(e) = d.msg.ack_with(AckKind::Term).await {
        tracing::warn!(error = %e, "term failed; the redelivery will be dead-lettered again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_key_takes_type_and_id() {
        assert_eq!(
            aggregate_key("bank", "bank.account.a1.deposited"),
            "account.a1"
        );
        assert_eq!(
            aggregate_key("a.b", "a.b.account.a1.deposited"),
            "account.a1"
        );
        assert_eq!(aggregate_key("bank", "odd"), "odd");
    }

    #[test]
    fn backoff_repeats_the_last_delay() {
        let config = SubscriberConfig::new("x")
            .backoff([Duration::from_millis(10), Duration::from_millis(20)]);
        assert_eq!(config.delay(0), Duration::from_millis(10));
        assert_eq!(config.delay(1), Duration::from_millis(20));
        assert_eq!(config.delay(7), Duration::from_millis(20));
    }
}
