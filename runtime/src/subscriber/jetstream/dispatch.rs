//! The dispatcher: pulls, routes to the workers, acks stored completions, keeps handed-out
//! messages in progress and holds delivery back while its [`Gate`] settles.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull, Consumer};
use async_nats::jetstream::{stream, Message};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::acks::{acked, nak};
use super::consumer::{deliver_policy, ensure_consumer, PRIORITY_GROUP};
use super::dead_letters;
use super::delivery::{Completion, Delivery, Done, Shared, Source};
use super::recovery::{nak_span, predecessor_gone, subscribe_lane};
use super::router::Router;
use super::worker::worker;
use crate::error::ErrorChain;
use crate::subscriber::error::SubscriberError;
use crate::subscriber::handler::Subscriber;

/// Whether messages may be handled yet.
///
/// After a start with unacknowledged messages on the consumer (a previous process died, or
/// shut down while messages were on their way to it), or after a reconnect, some earlier
/// messages may come back only after the ack wait. Until every message the server counts as
/// pending is in this process's hands, nothing is handled; then the held messages are released
/// in stream order, so no aggregate's later event overtakes an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// Everything flows.
    Open,
    /// Hold everything until the server's pending count is covered by what is held here.
    Settling,
}

pub(crate) struct Dispatcher<S: Subscriber> {
    pub(super) shared: Arc<Shared<S>>,
    pub(super) events_stream: stream::Stream,
    pub(super) filters: Vec<String>,
    pub(super) consumer_name: String,
    /// Set for a partition consumer: the pin's time to live.
    pub(super) pin_ttl: Option<Duration>,
    /// The pin the server gave this lane's pulls last.
    pub(super) pin: Option<String>,
    pub(super) events: Consumer<pull::Config>,
    pub(super) redrive: Option<Consumer<pull::Config>>,
    pub(super) gate: Gate,
    /// A dead lane's deliveries were handed back: they return within moments, so the gate is
    /// checked often until it opens.
    pub(super) quick_settle: bool,
    /// This lane's answer to probes for a running lane (see `recovery`); a partition lane
    /// subscribes once it first holds the pin.
    pub(super) liveness: Option<async_nats::Subscriber>,
    /// A probe found the partition's previous lane gone: its deliveries are handed back at this
    /// lane's first fresh delivery.
    pub(super) handback_due: bool,
    /// When a settling gate opens anyway.
    pub(super) settle_by: tokio::time::Instant,
    /// The highest stream sequence received from the events consumer.
    pub(super) high_water: u64,
    /// The highest consumer sequence (one per delivery) received from the events consumer.
    pub(super) last_delivery: u64,
    /// Another process consumes the same durable (a settle timed out with deliveries still
    /// elsewhere): gaps in the delivery sequence are its share, not lost messages.
    pub(super) shared_durable: bool,
    /// The handle's shutdown request.
    pub(super) stop: watch::Receiver<bool>,
    /// Tells the workers to drain.
    pub(super) drain: watch::Sender<bool>,
    /// Rounds of completions the completion log stored, to be acked.
    pub(super) stored: Option<mpsc::UnboundedReceiver<Vec<Completion>>>,
}

async fn next_round(
    stored: &mut Option<mpsc::UnboundedReceiver<Vec<Completion>>>,
) -> Option<Vec<Completion>> {
    match stored {
        Some(stored) => stored.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_probe(liveness: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match liveness {
        Some(liveness) => liveness.next().await,
        None => std::future::pending().await,
    }
}

/// How often a gate is checked while handed-back deliveries return.
const QUICK_SETTLE: Duration = Duration::from_millis(100);

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
pub(super) fn settle_limit(ack_wait: &Duration) -> Duration {
    *ack_wait * 2 + Duration::from_secs(1)
}

impl<S: Subscriber> Dispatcher<S> {
    /// Holds new messages back until the pending ones are in hand. Every call (another pull
    /// error, another unreadable consumer state) restarts the deadline: messages delivered
    /// into a connection that broke come back one ack wait after the server can reach this
    /// process again, so the time the server was out of reach must not count (a failover
    /// outlasting the deadline let later events of an aggregate overtake earlier ones).
    fn settle(&mut self) {
        self.gate = Gate::Settling;
        let deadline = tokio::time::Instant::now() + settle_limit(&self.shared.config.ack_wait);
        self.settle_by = self.settle_by.max(deadline);
    }

    async fn open(&self, consumer: &Consumer<pull::Config>) -> Option<pull::Stream> {
        let batch = self.shared.config.max_ack_pending.clamp(1, 500);
        let pulls = consumer.stream().max_messages_per_batch(batch);
        let pulls = match self.pin_ttl {
            // A pull outliving the pin's time to live would lose the pin between pulls.
            Some(ttl) => {
                let expires = (ttl / 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
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
        let mut quick = tokio::time::interval(QUICK_SETTLE);
        quick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut liveness = self.liveness.take();
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
                        let pinned = self.note_pin(&msg);
                        let fresh = fresh_sequence(&msg);
                        if let Some(d) = self.delivery(msg, Source::Events) {
                            if self.gate == Gate::Open {
                                router.route(d);
                            } else {
                                held.push(d);
                            }
                        }
                        if pinned && liveness.is_none() {
                            let info = self.consumer_state().await;
                            liveness = self.announce(info.as_ref(), &held, &router).await;
                        }
                        if let (true, Some(seq)) = (self.handback_due, fresh) {
                            if let Some(info) = self.consumer_state().await {
                                self.hand_back_below(seq, &info, &held, &router).await;
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
                Some(probe) = next_probe(&mut liveness) => {
                    if let Some(reply) = probe.reply {
                        if let Err(e) = client.publish(reply, Bytes::new()).await {
                            tracing::debug!(error = %e, "answering a lane probe failed");
                        }
                    }
                }
                _ = quick.tick(), if self.gate != Gate::Open
                    && (self.quick_settle || (self.pin_ttl.is_some() && liveness.is_none())) =>
                {
                    if liveness.is_none() && self.pin_ttl.is_some() {
                        if let Some(info) = self.pin_free().await {
                            liveness = self.announce(Some(&info), &held, &router).await;
                            if self.handback_due {
                                self.hand_back_below(u64::MAX, &info, &held, &router).await;
                            }
                        }
                    } else {
                        self.check_gate(&mut held, &mut router).await;
                    }
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
                            Err(e) => {
                                tracing::warn!(error = %ErrorChain(&e), "cannot recreate the consumer")
                            }
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
                self.settle();
                return;
            }
        };
        if info.num_ack_pending > in_hand {
            if tokio::time::Instant::now() < self.settle_by {
                tracing::debug!(
                    pending = info.num_ack_pending,
                    in_hand,
                    "waiting for earlier deliveries to come back"
                );
                return;
            }
            if !self.shared_durable {
                self.shared_durable = true;
                tracing::warn!(
                    consumer = %self.consumer_name,
                    pending = info.num_ack_pending,
                    in_hand,
                    "deliveries stay with another process of this durable; per-aggregate order \
                     across processes needs partitions (SubscriberConfig::partitions)"
                );
            }
        }
        self.gate = Gate::Open;
        self.quick_settle = false;
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
    /// Whether the pin is new.
    fn note_pin(&mut self, msg: &Message) -> bool {
        if self.pin_ttl.is_none() {
            return false;
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
            return true;
        }
        false
    }

    /// The consumer's state on the server; `None` (and a debug line) when it cannot be read.
    async fn consumer_state(&mut self) -> Option<consumer::Info> {
        match self.events.info().await {
            Ok(info) => Some(info.clone()),
            Err(e) => {
                tracing::debug!(error = %e, "reading the consumer state failed");
                None
            }
        }
    }

    /// The consumer's state when no process holds the partition's pin and this lane never did:
    /// a dead owner's lapsed. The server pins a process only when it delivers a message, so a
    /// lane whose partition has nothing new, only a dead owner's deliveries, would otherwise
    /// wait for the ack wait.
    async fn pin_free(&mut self) -> Option<consumer::Info> {
        if self.pin.is_some() {
            return None;
        }
        let info = self.consumer_state().await?;
        let free = info.priority_groups.iter().all(|group| {
            group
                .pinned_client_id
                .as_deref()
                .unwrap_or_default()
                .is_empty()
        });
        free.then_some(info)
    }

    /// The partition came to this lane (its pin, or a lapsed one): if deliveries are pending
    /// beyond what this lane holds, probes whether the lane that held them is gone (before this
    /// lane answers probes itself), then announces this lane, so that a later owner waits for
    /// what it holds.
    async fn announce(
        &mut self,
        info: Option<&consumer::Info>,
        held: &[Delivery],
        router: &Router,
    ) -> Option<async_nats::Subscriber> {
        let client = self.shared.js.client();
        let stream = self.events_stream.cached_info().config.name.clone();
        if let Some(info) = info {
            let pending = info.num_ack_pending;
            if pending > in_hand(held, router).len() {
                self.handback_due =
                    predecessor_gone(&client, &stream, &self.consumer_name, pending).await;
            }
        }
        match subscribe_lane(&client, &stream, &self.consumer_name).await {
            Ok(liveness) => Some(liveness),
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "announcing the lane failed");
                None
            }
        }
    }

    /// Hands the gone lane's deliveries back: every pending stream sequence below `below` (this
    /// lane's first fresh delivery, which the server made after all of them) but those this
    /// lane holds.
    async fn hand_back_below(
        &mut self,
        below: u64,
        info: &consumer::Info,
        held: &[Delivery],
        router: &Router,
    ) {
        self.handback_due = false;
        let client = self.shared.js.client();
        let stream = self.events_stream.cached_info().config.name.clone();
        let in_hand = in_hand(held, router);
        let upto = below.saturating_sub(1);
        match nak_span(&client, &stream, &self.consumer_name, info, upto, &in_hand).await {
            Ok(Some(_)) => self.quick_settle = true,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %ErrorChain(&e), "handing back failed"),
        }
    }

    fn delivery(&mut self, msg: Message, source: Source) -> Option<Delivery> {
        let (seq, delivered, delivery) = match msg.info() {
            Ok(info) => (
                info.stream_sequence,
                info.delivered.max(1) as u64,
                info.consumer_sequence,
            ),
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
                // A gap in the delivery sequence is a delivery that never arrived (lost with a
                // broken connection, without any error from the pull): it comes back after the
                // ack wait, so nothing newer may overtake it meanwhile.
                if delivery > self.last_delivery + 1 && !self.shared_durable {
                    tracing::debug!(
                        expected = self.last_delivery + 1,
                        received = delivery,
                        "deliveries missing; holding newer ones until they are back"
                    );
                    self.settle();
                }
                self.last_delivery = self.last_delivery.max(delivery);
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

/// The stream sequences of events this lane received and has not settled.
fn in_hand(held: &[Delivery], router: &Router) -> HashSet<u64> {
    held.iter()
        .map(|d| d.seq)
        .chain(
            router
                .outstanding
                .keys()
                .filter(|(source, _)| *source == Source::Events)
                .map(|(_, seq)| *seq),
        )
        .collect()
}

/// The stream sequence of a message delivered for the first time.
fn fresh_sequence(msg: &Message) -> Option<u64> {
    let info = msg.info().ok()?;
    (info.delivered <= 1).then_some(info.stream_sequence)
}

/// The original subject and position of a message the partition stream sourced, from the
/// server's `Nats-Stream-Source` header: `<stream> <sequence> <filter> <transform> <subject>`.
pub(super) fn sourced_origin(headers: Option<&HeaderMap>) -> Option<(String, u64)> {
    let source = headers?.get("Nats-Stream-Source")?.as_str();
    let mut fields = source.split(' ');
    let position = fields.nth(1)?.parse().ok()?;
    let subject = fields.nth(2)?;
    Some((subject.to_owned(), position))
}

/// The original subject and position a dead letter records.
fn dead_letter_origin(headers: Option<&HeaderMap>) -> Option<(String, u64)> {
    let headers = headers?;
    let subject = headers.get(dead_letters::SUBJECT)?.as_str().to_owned();
    let position = headers
        .get(dead_letters::STREAM_SEQ)?
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
}
