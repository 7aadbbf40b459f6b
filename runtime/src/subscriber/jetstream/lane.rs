//! A lane: one durable consumer (the whole event stream, or one partition) with its redrive
//! consumer, completion log and gate, ready for a dispatcher to run.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, stream};
use tokio::sync::{mpsc, watch};

use super::consumer::{deliver_policy, ensure_consumer, filter_subjects, partition_filters};
use super::dead_letters;
use super::delivery::Shared;
use super::dispatch::{settle_limit, Dispatcher, Gate};
use super::done_log::DoneLog;
use super::placement::Placement;
use super::recovery::{hand_back, subscribe_lane};
use crate::observability::SubscriberMetrics;
use crate::subscriber::config::{Idempotency, SubscriberConfig};
use crate::subscriber::error::SubscriberError;
use crate::subscriber::handle::Counters;
use crate::subscriber::handler::Subscriber;

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
    pub(crate) counters: Arc<Counters>,
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
        let redrive_subject = dead_letters::redrive_subject(&base.stream, &config.durable_name);
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
    let client = base.js.client();
    let stream_name = events_stream.cached_info().config.name.clone();
    // A partition lane hands back only once it holds the pin (the dispatcher does): before
    // that, another process may own the partition.
    let (handed_back, liveness) = if pin_ttl.is_none() {
        let handed_back = gate == Gate::Settling
            && hand_back(&client, &stream_name, &consumer_name, &info)
                .await?
                .is_some();
        (
            handed_back,
            Some(subscribe_lane(&client, &stream_name, &consumer_name).await?),
        )
    } else {
        (false, None)
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
        quick_settle: handed_back,
        liveness,
        handback_due: false,
        high_water: info.delivered.stream_sequence,
        last_delivery: info.delivered.consumer_sequence,
        shared_durable: false,
        stop,
        drain: drain_tx,
        stored,
    })
}
