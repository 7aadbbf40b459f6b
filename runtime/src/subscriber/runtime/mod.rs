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

mod consumer;
mod dispatch;
mod process;
mod router;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, stream, Message};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::config::{Idempotency, Placement, SubscriberConfig};
use super::dead_letter;
use super::done_log::DoneLog;
use super::handle::{Counters, SubscriberHandle};
use super::{Subscriber, SubscriberError};
use crate::event_set::EventSet;
use crate::observability::SubscriberMetrics;
use crate::JetStreamStore;
#[cfg(feature = "postgres")]
pub(crate) use consumer::delete_consumers;
pub(crate) use consumer::PRIORITY_GROUP;
use consumer::{deliver_policy, ensure_consumer, filter_subjects, partition_filters};
use dispatch::{settle_limit, Dispatcher, Gate};
use router::Completion;

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
    if let Some(declared) = &config.stream {
        if *declared != store.config().name {
            return Err(SubscriberError::InvalidConfig(format!(
                "subscriber {} is written for stream {declared}, but the store's stream is {}",
                config.durable_name,
                store.config().name
            )));
        }
    }
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
    Ok(SubscriberHandle::new(shutdown, task, counters))
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
        metrics: SubscriberMetrics::new(&config.durable_name, &consumer_name),
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
        last_delivery: info.delivered.consumer_sequence,
        shared_durable: false,
        stop,
        drain: drain_tx,
        stored,
    })
}
