//! The consuming machinery of an in-memory subscriber: one dispatcher task that reads the
//! store's log and the redrive queue, keeps one queue per aggregate, and runs at most
//! `concurrency` events at once, one task each, never two of one aggregate.
//!
//! A task takes its event to the end (acknowledged with its completion, skipped, or
//! dead-lettered) before its aggregate's next event starts, so per-aggregate order holds and a
//! handler never starts before its predecessor's completion is recorded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::task::JoinSet;

use super::backend::Shared;
use super::durable::{Delivery, Lease, Source};
use crate::event_set::EventSet;
use crate::subscriber::error::SubscriberError;
use crate::subscriber::handler::Subscriber;
use crate::subscriber::process::{process, stopped};

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
                process(&*shared, delivery).await;
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
        let key = joined.map_err(SubscriberError::task)?;
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
