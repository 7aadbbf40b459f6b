//! The consuming machinery of an in-memory subscriber: one dispatcher task that reads the
//! store's log and the redrive queue, keeps one queue per aggregate, and runs at most
//! `concurrency` events at once, one task each, never two of one aggregate.
//!
//! A task takes its event to the end (acknowledged with its completion, skipped, or
//! dead-lettered) before its aggregate's next event starts, so per-aggregate order holds and a
//! handler never starts before its predecessor's completion is recorded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::durable::{Delivery, Durable, Lease, Source};
use crate::event_set::EventSet;
use crate::observability::{self, SubscriberMetrics};
use crate::store::InMemoryStore;
use crate::subscriber::config::{Idempotency, SubscriberConfig};
use crate::subscriber::decide::{self, AfterFailure};
use crate::subscriber::handle::{bump, Counters};
use crate::subscriber::{DeadLetterReason, Subscriber, SubscriberError};

/// What the dispatcher and its tasks share.
pub(crate) struct Shared<S: Subscriber> {
    pub(crate) subscriber: S,
    pub(crate) config: SubscriberConfig,
    pub(crate) store: InMemoryStore,
    pub(crate) durable: Arc<Durable>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) metrics: SubscriberMetrics,
    /// Set by the handle's shutdown: the dispatcher stops reading, retry pauses end.
    pub(crate) stop: watch::Receiver<bool>,
}

/// `(aggregate type, aggregate id)`: what per-aggregate order is kept by.
type OrderKey = (String, String);

pub(crate) struct Dispatcher<S: Subscriber> {
    shared: Arc<Shared<S>>,
    wanted: HashSet<&'static str>,
    /// Aggregates with an event running or ready, and their later events in order.
    waiting: HashMap<OrderKey, VecDeque<Delivery>>,
    /// The next event of aggregates that have none running, in arrival order.
    ready: VecDeque<Delivery>,
    running: JoinSet<OrderKey>,
    /// Deliveries routed and not finished, bounded by `max_ack_pending`.
    held: usize,
    /// The highest redrive number routed in this run.
    redrive_seen: u64,
    /// Released when the dispatcher ends, also when it is aborted.
    _lease: Lease,
}

impl<S: Subscriber> Dispatcher<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>, lease: Lease) -> Self {
        Dispatcher {
            wanted: <S::Event as EventSet>::known_names().into_iter().collect(),
            shared,
            waiting: HashMap::new(),
            ready: VecDeque::new(),
            running: JoinSet::new(),
            held: 0,
            redrive_seen: 0,
            _lease: lease,
        }
    }

    pub(crate) async fn run(mut self) -> Result<(), SubscriberError> {
        let shared = self.shared.clone();
        let mut stop = shared.stop.clone();
        let mut changes = shared.durable.subscribe_changes();
        // What an earlier run left unacknowledged is older than anything unread, so it goes
        // first and no aggregate's later event overtakes it.
        for delivery in shared.durable.unacknowledged_deliveries(&shared.store) {
            self.route(delivery);
        }
        tracing::info!(names = ?self.wanted, "in-memory subscriber started");
        loop {
            // Checked here as well as in the select: a handler interrupted by the shutdown can
            // end and be joined before the shutdown's notification reaches this task, and its
            // aggregate's next event must not start then.
            if *stop.borrow() {
                break;
            }
            self.pull();
            self.start_ready();
            let cursor = shared.durable.cursor();
            let room = self.held < shared.config.max_ack_pending;
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                Some(joined) = self.running.join_next() => self.finished(joined)?,
                _ = changes.changed() => {}
                _ = shared.store.wait_for_events_after(cursor), if room => {}
            }
        }
        tracing::info!(
            running = self.running.len(),
            waiting = self.held - self.running.len(),
            "shutting down: finishing running handlers; waiting events stay unacknowledged"
        );
        while let Some(joined) = self.running.join_next().await {
            self.finished(joined)?;
        }
        tracing::info!("in-memory subscriber stopped");
        Ok(())
    }

    /// Routes what was redriven and as much of the log as `max_ack_pending` leaves room for.
    fn pull(&mut self) {
        let durable = self.shared.durable.clone();
        for delivery in durable.redriven_after(self.redrive_seen) {
            if let Source::Redrive(number) = delivery.source {
                self.redrive_seen = self.redrive_seen.max(number);
            }
            self.route(delivery);
        }
        let room = self.shared.config.max_ack_pending.saturating_sub(self.held);
        for delivery in durable.read(&self.shared.store, &self.wanted, room) {
            self.route(delivery);
        }
        // Events not read yet, of any name: the store does not count per name, so this is an
        // upper bound of what JetStream's pending count would say.
        let unread = self.shared.store.last_position() - durable.cursor();
        self.shared.metrics.lag.set(unread as f64);
    }

    fn route(&mut self, delivery: Delivery) {
        self.held += 1;
        let key = (
            delivery.event.aggregate_type.clone(),
            delivery.event.aggregate_id.clone(),
        );
        match self.waiting.get_mut(&key) {
            Some(later) => later.push_back(delivery),
            None => {
                self.waiting.insert(key, VecDeque::new());
                self.ready.push_back(delivery);
            }
        }
    }

    fn start_ready(&mut self) {
        while self.running.len() < self.shared.config.concurrency {
            let Some(delivery) = self.ready.pop_front() else {
                break;
            };
            let shared = self.shared.clone();
            self.running.spawn(async move {
                let key = (
                    delivery.event.aggregate_type.clone(),
                    delivery.event.aggregate_id.clone(),
                );
                process(&shared, delivery).await;
                key
            });
        }
    }

    /// An event's task ended: its aggregate's next event becomes ready.
    fn finished(
        &mut self,
        joined: Result<OrderKey, tokio::task::JoinError>,
    ) -> Result<(), SubscriberError> {
        // Handler panics are caught inside the task; one that ends otherwise is a bug here, and
        // going on would leave its aggregate blocked for good.
        let key = joined.map_err(|e| SubscriberError::Task(e.to_string()))?;
        self.held -= 1;
        let next = self.waiting.get_mut(&key).and_then(VecDeque::pop_front);
        match next {
            Some(next) => self.ready.push_back(next),
            None => {
                self.waiting.remove(&key);
            }
        }
        Ok(())
    }
}

/// Returns once shutdown is requested. A dropped handle requests nothing: the subscriber
/// keeps running, as its handle's documentation says.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits `delay`; false when shutdown began meanwhile.
async fn pause(stop: &watch::Receiver<bool>, delay: Duration) -> bool {
    let mut stop = stop.clone();
    tokio::select! {
        () = tokio::time::sleep(delay) => !*stop.borrow(),
        () = stopped(&mut stop) => false,
    }
}

/// Takes one event to the end: acknowledged, skipped or dead-lettered; or, when shutdown
/// interrupts a retry pause, left unacknowledged for the next run.
async fn process<S: Subscriber>(shared: &Shared<S>, delivery: Delivery) {
    if *shared.stop.borrow() {
        // Started as the shutdown began: not handled now, delivered first by the next run.
        return;
    }
    let durable = &shared.durable;
    let counters = &shared.counters;
    let source = delivery.source;
    let stored = &delivery.event;
    let redriven = matches!(source, Source::Redrive(_));
    let mut decoded = match S::Event::decode(stored.raw()) {
        Ok(Some(event)) => Some(event),
        Ok(None) => {
            bump(&counters.retired_skipped);
            durable.acknowledge(source, None);
            return;
        }
        Err(e) => {
            let reason = decide::decode_failure_reason(&e);
            let attempts = delivery.attempts_before + 1;
            dead_letter(shared, &delivery, reason, e.to_string(), attempts);
            return;
        }
    };
    let completion_ttl = match shared.config.idempotency {
        Idempotency::Markers { ttl } => Some(ttl),
        Idempotency::Off => None,
    };
    if completion_ttl.is_some() && durable.is_completed(stored.id) {
        tracing::debug!(event_id = %stored.id, "skipping an event completed before");
        bump(&counters.duplicates_skipped);
        durable.acknowledge(source, None);
        return;
    }
    let mut attempt = delivery.attempts_before + 1;
    let mut retries = 0;
    loop {
        let event = match decoded.take() {
            Some(event) => event,
            // Decoded once already, so decoding again for a retry gives the same result.
            None => match S::Event::decode(stored.raw()) {
                Ok(Some(event)) => event,
                _ => {
                    let error = "the event no longer decodes".to_owned();
                    let reason = DeadLetterReason::Undecodable;
                    dead_letter(shared, &delivery, reason, error, attempt);
                    return;
                }
            },
        };
        durable.attempt_started(source);
        let ctx = decide::event_context(stored, attempt, redriven);
        let span = decide::handler_span(&shared.config.durable_name, stored, attempt);
        let started = Instant::now();
        // Commands the handler runs inherit the event's correlation id, and the event as cause.
        let call = shared.subscriber.handle(event, &ctx).instrument(span);
        let call = observability::with_cause(&stored.correlation_id, stored.id, call);
        let handled = decide::catch_panic(call).await;
        let metrics = &shared.metrics;
        metrics
            .handler_seconds
            .record(started.elapsed().as_secs_f64());
        let error = match handled {
            Ok(()) => {
                bump(&counters.handled);
                metrics.handled.increment(1);
                durable.acknowledge(source, completion_ttl.map(|ttl| (stored.id, ttl)));
                return;
            }
            Err(error) => error,
        };
        match decide::after_failure(&shared.config, &error, attempt, retries) {
            AfterFailure::DeadLetter { reason, error } => {
                dead_letter(shared, &delivery, reason, error, attempt);
                return;
            }
            AfterFailure::RetryAfter(delay) => {
                tracing::warn!(event_id = %stored.id, attempt, ?delay, %error, "handler failed; retrying");
                bump(&counters.retries);
                metrics.retried.increment(1);
                retries += 1;
                attempt += 1;
                if !pause(&shared.stop, delay).await {
                    return;
                }
            }
        }
    }
}

fn dead_letter<S: Subscriber>(
    shared: &Shared<S>,
    delivery: &Delivery,
    reason: DeadLetterReason,
    error: String,
    attempts: u64,
) {
    let stored = &delivery.event;
    tracing::warn!(
        event_id = %stored.id,
        event = %stored.name,
        position = stored.position,
        %reason,
        error,
        "event dead-lettered"
    );
    shared
        .durable
        .dead_letter(delivery.source, stored.clone(), reason, error, attempts);
    bump(&shared.counters.dead_lettered);
    shared.metrics.dead_lettered(reason.as_str());
}
