//! One suite of subscriber behaviour, run on every backend: the in-memory subscriber and the
//! JetStream one against a spawned nats-server run the same test bodies.
//!
//! Per-aggregate order under concurrency, name filtering, `max_ack_pending`, in-place retries
//! with back-off, dead letters with their reasons (panics included) and their event's id, name
//! and version, redrive (attempts counted on from the letter), graceful
//! restarts, crashes, shutdown during a back-off, lost acknowledgements of completed events,
//! upcasting, retired event types, start positions, the handler's context, the correlation
//! and causation its commands inherit, and a dropped handle. What only one backend has stays
//! in `subscriber_memory.rs` and `subscriber_jetstream.rs`.

mod support;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use jetsource::subscriber::{
    self, DeadLetterReason, DeadLetters, DeliverFrom, EventContext, HandlerError, InMemoryConsumer,
    InMemoryDeadLetters, Subscriber, SubscriberConfig, SubscriberHandle, WaitError,
};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    Aggregate, AggregateId, AggregateKey, Apply, Event, EventSet, EventStore, ExpectedVersion,
    InMemoryStore, JetStreamStore, Repository,
};
use serde::{Deserialize, Serialize};
use support::subscriber::{
    account, append, deposit, encoded, new_event, note, seed, wait_for, Appended, Deposited,
    Handled, Noted, Recorder, Recording,
};
use uuid::Uuid;

/// A subscriber backend on a store of its own, empty when the test starts.
trait Backend {
    type Store: EventStore;

    fn store(&self) -> &Self::Store;

    /// `SubscriberConfig::new(durable)` with delays short enough for a test.
    fn config(&self, durable: &str) -> SubscriberConfig;

    async fn start<S: Subscriber>(
        &self,
        subscriber: S,
        config: SubscriberConfig,
    ) -> SubscriberHandle;

    /// The dead letters of `durable`, oldest first.
    async fn dead_letters(&self, durable: &str) -> Vec<Letter>;

    /// Hands every dead letter of `durable` back; returns how many.
    async fn redrive(&self, durable: &str) -> usize;

    /// Hands the dead letters of `durable` with `reason` back; returns how many.
    async fn redrive_matching(&self, durable: &str, reason: DeadLetterReason) -> usize;

    /// Loses every acknowledgement of `durable`, as a server that lost its consumer's state:
    /// everything is delivered again to the running subscriber.
    async fn lose_acknowledgements(&self, durable: &str);

    /// Asserts that `durable` acknowledged every event it was given (after a shutdown).
    async fn assert_all_acknowledged(&self, durable: &str);

    /// Asserts that exactly the events at `positions` are delivered to `durable` and not
    /// acknowledged, where the backend can tell.
    fn assert_unacknowledged(&self, durable: &str, positions: &[u64]);
}

/// A dead letter, as both backends report it.
#[derive(Debug, Clone)]
struct Letter {
    dead_letter_sequence: u64,
    subscriber: String,
    reason: DeadLetterReason,
    error: String,
    /// The event's store position.
    position: u64,
    /// The event's id, name and version; `None` where a JetStream message had no metadata.
    event_id: Option<Uuid>,
    event_name: Option<String>,
    event_version: Option<u32>,
    delivery_count: u64,
    payload: Bytes,
}

struct Memory {
    store: InMemoryStore,
}

impl Memory {
    fn new() -> Self {
        Memory {
            store: InMemoryStore::new(),
        }
    }

    fn consumer(&self, durable: &str) -> InMemoryConsumer {
        InMemoryConsumer::find(&self.store, durable).expect("the durable exists once started")
    }
}

impl Backend for Memory {
    type Store = InMemoryStore;

    fn store(&self) -> &InMemoryStore {
        &self.store
    }

    fn config(&self, durable: &str) -> SubscriberConfig {
        SubscriberConfig::new(durable)
            .backoff([Duration::from_millis(20), Duration::from_millis(40)])
    }

    async fn start<S: Subscriber>(&self, s: S, config: SubscriberConfig) -> SubscriberHandle {
        subscriber::start_in_memory(&self.store, s, config)
            .await
            .expect("start")
    }

    async fn dead_letters(&self, durable: &str) -> Vec<Letter> {
        // ANCHOR: memory_dead_letters
        let letters = InMemoryDeadLetters::new(&self.store).list(durable);
        letters
            .into_iter()
            .map(|letter| Letter {
                dead_letter_sequence: letter.dead_letter_sequence,
                subscriber: letter.subscriber,
                reason: letter.reason,
                error: letter.error,
                position: letter.event.position,
                event_id: Some(letter.event_id),
                event_name: Some(letter.event_name),
                event_version: Some(letter.event_version),
                delivery_count: letter.delivery_count,
                payload: letter.event.payload,
            })
            .collect()
        // ANCHOR_END: memory_dead_letters
    }

    async fn redrive(&self, durable: &str) -> usize {
        InMemoryDeadLetters::new(&self.store).redrive(durable)
    }

    async fn redrive_matching(&self, durable: &str, reason: DeadLetterReason) -> usize {
        // ANCHOR: memory_redrive_matching
        let dead = InMemoryDeadLetters::new(&self.store);
        dead.redrive_matching(durable, |letter| letter.reason == reason)
        // ANCHOR_END: memory_redrive_matching
    }

    async fn lose_acknowledgements(&self, durable: &str) {
        self.consumer(durable).redeliver_from(1);
    }

    async fn assert_all_acknowledged(&self, durable: &str) {
        let consumer = self.consumer(durable);
        assert_eq!(consumer.acknowledged_through(), self.store.last_position());
        assert!(consumer.unacknowledged().is_empty());
    }

    fn assert_unacknowledged(&self, durable: &str, positions: &[u64]) {
        // ANCHOR: memory_unacknowledged
        let consumer = InMemoryConsumer::find(&self.store, durable).expect("started before");
        assert_eq!(consumer.unacknowledged(), positions);
        // ANCHOR_END: memory_unacknowledged
    }
}

const STREAM: &str = "CONFORM";

struct JetStream {
    store: JetStreamStore,
    _server: NatsServer,
}

impl JetStream {
    async fn start() -> Self {
        let server = NatsServer::start();
        JetStream {
            store: support::store(&server, STREAM).await,
            _server: server,
        }
    }

    async fn event_stream(&self) -> async_nats::jetstream::stream::Stream {
        let js = async_nats::jetstream::new(self.store.client().clone());
        js.get_stream(STREAM).await.expect("the event stream")
    }
}

impl Backend for JetStream {
    type Store = JetStreamStore;

    fn store(&self) -> &JetStreamStore {
        &self.store
    }

    fn config(&self, durable: &str) -> SubscriberConfig {
        // An ack wait of a second: what a crashed run left comes back within the test.
        SubscriberConfig::new(durable)
            .ack_wait(Duration::from_secs(1))
            .backoff([Duration::from_millis(20), Duration::from_millis(40)])
    }

    async fn start<S: Subscriber>(&self, s: S, config: SubscriberConfig) -> SubscriberHandle {
        subscriber::start(&self.store, s, config)
            .await
            .expect("start")
    }

    async fn dead_letters(&self, durable: &str) -> Vec<Letter> {
        // ANCHOR: jetstream_dead_letters
        let dead = DeadLetters::open(&self.store).await.expect("dead letters");
        let letters = dead.list(durable).await.expect("list");
        letters
            .into_iter()
            .map(|letter| Letter {
                dead_letter_sequence: letter.dead_letter_sequence,
                subscriber: letter.subscriber,
                reason: letter.reason,
                error: letter.error,
                position: letter.position,
                event_id: letter.event_id,
                event_name: letter.event_name,
                event_version: letter.event_version,
                delivery_count: letter.delivery_count,
                payload: letter.payload,
            })
            .collect()
        // ANCHOR_END: jetstream_dead_letters
    }

    async fn redrive(&self, durable: &str) -> usize {
        // ANCHOR: jetstream_redrive
        let dead = DeadLetters::open(&self.store).await.expect("dead letters");
        dead.redrive(durable).await.expect("redrive")
        // ANCHOR_END: jetstream_redrive
    }

    async fn redrive_matching(&self, durable: &str, reason: DeadLetterReason) -> usize {
        let dead = DeadLetters::open(&self.store).await.expect("dead letters");
        dead.redrive_matching(durable, |letter| letter.reason == reason)
            .await
            .expect("redrive")
    }

    async fn lose_acknowledgements(&self, durable: &str) {
        // The subscriber recreates its consumer, which starts over from the first event.
        let stream = self.event_stream().await;
        stream
            .delete_consumer(durable)
            .await
            .expect("delete the consumer");
    }

    async fn assert_all_acknowledged(&self, durable: &str) {
        // The server applies acks after it received them, so its count may trail a moment.
        let stream = self.event_stream().await;
        let mut consumer: PullConsumer = stream.get_consumer(durable).await.expect("consumer");
        let started = Instant::now();
        loop {
            let info = consumer.info().await.expect("consumer info");
            let left = (info.num_ack_pending, info.num_pending);
            if left == (0, 0) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "unacknowledged and undelivered messages left on {durable}: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn assert_unacknowledged(&self, _: &str, _: &[u64]) {
        // The server counts pending messages but does not list them, and the acks a stopped
        // process sent last may still be on their way: nothing to compare exactly.
    }
}

async fn each_aggregate_is_handled_in_order_while_others_run_in_parallel<B: Backend>(b: B) {
    let store = b.store();
    let mut ids = seed(store, 100, 1..=25).await;
    // Another name on the same aggregates: the subscriber's filter keeps it away (delivered, it
    // would not decode and would be dead-lettered).
    for a in 0..100 {
        append(store, &format!("a{a}"), note("x")).await;
    }
    let rec = Arc::new(Recorder::default());
    let handler = Recording::new(&rec, Duration::from_millis(1));
    let running = b.start(handler, b.config("order").concurrency(16)).await;
    // The second half arrives while the subscriber runs.
    ids.extend(seed(store, 100, 26..=50).await);
    wait_for("all deposits", || rec.completed() == ids.len()).await;
    let stats = running.shutdown().await.expect("shutdown");

    assert_eq!(ids.len(), 5_000);
    rec.assert_in_order(100, 50);
    assert_eq!(rec.duplicates(), 0);
    assert_eq!(stats.handled, 5_000);
    assert_eq!(
        stats.dead_lettered, 0,
        "noted events must never be delivered"
    );
    let max = rec.max_in_flight();
    assert!(
        max > 1,
        "aggregates should overlap, max in flight was {max}"
    );
    assert!(max <= 16, "concurrency 16 exceeded: {max}");
    b.assert_all_acknowledged("order").await;
}

async fn max_ack_pending_bounds_the_events_held_at_once<B: Backend>(b: B) {
    let ids = seed(b.store(), 5, 1..=6).await;
    let rec = Arc::new(Recorder::default());
    let config = b.config("pending").concurrency(16).max_ack_pending(1);
    let running = b
        .start(Recording::new(&rec, Duration::from_millis(1)), config)
        .await;
    wait_for("all deposits", || rec.completed() == ids.len()).await;
    running.shutdown().await.expect("shutdown");

    assert_eq!(rec.max_in_flight(), 1);
    rec.assert_in_order(5, 6);
}

/// Fails the first `failures` calls for the event with amount `flaky` of aggregate `a1`, then
/// succeeds; records when each of its attempts ran and when every event completed.
struct Flaky {
    flaky: u64,
    failures: u32,
    attempts: Mutex<Vec<(u64, Instant)>>,
    completed: Mutex<Vec<(String, u64, Instant)>>,
}

impl Flaky {
    fn new(flaky: u64, failures: u32) -> Self {
        Flaky {
            flaky,
            failures,
            attempts: Mutex::new(Vec::new()),
            completed: Mutex::new(Vec::new()),
        }
    }

    fn attempt_counts(&self) -> Vec<u64> {
        self.attempts.lock().unwrap().iter().map(|a| a.0).collect()
    }
}

impl Subscriber for Flaky {
    type Event = Handled;

    async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = event;
        if ctx.aggregate_id == "a1" && d.amount == self.flaky {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push((ctx.delivery_count, Instant::now()));
            if attempts.len() <= self.failures as usize {
                return Err(HandlerError::retryable("database unavailable"));
            }
        }
        let done = (ctx.aggregate_id.clone(), d.amount, Instant::now());
        self.completed.lock().unwrap().push(done);
        Ok(())
    }
}

async fn a_retryable_error_is_retried_with_backoff_then_succeeds_blocking_only_its_aggregate<
    B: Backend,
>(
    b: B,
) {
    for n in 1..=3 {
        append(b.store(), "a1", deposit(n)).await;
    }
    for n in 1..=2 {
        append(b.store(), "a2", deposit(n)).await;
    }
    let flaky = Arc::new(Flaky::new(2, 2));
    let backoff = [Duration::from_millis(150), Duration::from_millis(300)];
    let config = b.config("retry").backoff(backoff).max_deliver(5);
    let running = b.start(flaky.clone(), config).await;
    wait_for("five deposits", || {
        flaky.completed.lock().unwrap().len() == 5
    })
    .await;
    let stats = running.shutdown().await.expect("shutdown");

    let attempts = flaky.attempts.lock().unwrap().clone();
    assert_eq!(flaky.attempt_counts(), vec![1, 2, 3]);
    // Not a speed assertion: each back-off delay must at least have been waited.
    assert!(attempts[1].1 - attempts[0].1 >= backoff[0]);
    assert!(attempts[2].1 - attempts[1].1 >= backoff[1]);
    let completed = flaky.completed.lock().unwrap().clone();
    let a1: Vec<u64> = completed
        .iter()
        .filter(|c| c.0 == "a1")
        .map(|c| c.1)
        .collect();
    assert_eq!(a1, vec![1, 2, 3], "3 waited for 2");
    let a2_done = completed.iter().filter(|c| c.0 == "a2").map(|c| c.2).max();
    assert!(
        a2_done.expect("a2 handled") < attempts[2].1,
        "a2 must not wait for a1's retries"
    );
    assert_eq!(stats.retries, 2);
    assert_eq!(stats.handled, 5);
    assert_eq!(stats.dead_lettered, 0);
}

// ANCHOR: picky
/// Rejects amount 13 permanently until `accept` is set, fails amount 7 forever and panics on
/// 99; records the rest with whether it was redriven and its delivery count.
#[derive(Default)]
struct Picky {
    accept: AtomicBool,
    seen: Mutex<Vec<(String, u64, bool, u64)>>,
}

impl Subscriber for Picky {
    type Event = Handled;

    async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = event;
        if d.amount == 13 && !self.accept.load(Ordering::SeqCst) {
            return Err(HandlerError::permanent("unlucky amount"));
        }
        if d.amount == 7 {
            return Err(HandlerError::retryable("never works"));
        }
        if d.amount == 99 {
            panic!("bug on 99");
        }
        let seen = (
            ctx.aggregate_id.clone(),
            d.amount,
            ctx.redriven,
            ctx.delivery_count,
        );
        self.seen.lock().unwrap().push(seen);
        Ok(())
    }
}
// ANCHOR_END: picky

impl Picky {
    fn amounts_of(&self, aggregate: &str) -> Vec<u64> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.0 == aggregate)
            .map(|s| s.1)
            .collect()
    }
}

// ANCHOR: poison_config
fn poison_config<B: Backend>(backend: &B, durable: &str) -> SubscriberConfig {
    backend
        .config(durable)
        .max_deliver(3)
        .backoff([Duration::from_millis(10)])
}
// ANCHOR_END: poison_config

fn by_position(letters: &[Letter]) -> HashMap<u64, Letter> {
    letters.iter().map(|l| (l.position, l.clone())).collect()
}

async fn poison_events_are_dead_lettered_with_their_reasons_while_later_events_flow<B: Backend>(
    b: B,
) {
    let store = b.store();
    append(store, "a1", deposit(1)).await;
    let bad_payload = append(store, "a1", new_event("deposited", 1, br#"{"amount":"x"}"#)).await;
    let future = append(store, "a1", new_event("deposited", 9, br#"{"amount":3}"#)).await;
    let permanent = append(store, "a1", deposit(13)).await;
    let exhausted = append(store, "a1", deposit(7)).await;
    append(store, "a1", deposit(2)).await;
    append(store, "a2", deposit(5)).await;
    let panicking = append(store, "a2", deposit(99)).await;
    append(store, "a2", deposit(6)).await;

    let picky = Arc::new(Picky::default());
    let running = b.start(picky.clone(), poison_config(&b, "poison")).await;
    wait_for("the events after the poison", || {
        picky.seen.lock().unwrap().len() == 4
    })
    .await;
    wait_for("five dead letters", || running.stats().dead_lettered == 5).await;

    // Later events flowed, in order, past the poison of their own aggregate.
    assert_eq!(picky.amounts_of("a1"), vec![1, 2]);
    assert_eq!(picky.amounts_of("a2"), vec![5, 6]);
    let stats = running.stats();
    assert_eq!(stats.handled, 4);
    assert_eq!(
        stats.retries, 2,
        "amount 7: attempts 1 and 2 retried, 3 gave up"
    );
    // ANCHOR: dead_letters
    let letters = b.dead_letters("poison").await;
    let sequences: Vec<u64> = letters.iter().map(|l| l.dead_letter_sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3, 4, 5]);
    assert!(letters.iter().all(|l| l.subscriber == "poison"));
    let by_position = by_position(&letters);
    let letter = |appended: Appended| &by_position[&appended.position];
    assert_eq!(letter(bad_payload).reason, DeadLetterReason::Undecodable);
    assert_eq!(letter(bad_payload).delivery_count, 1);
    assert_eq!(letter(future).reason, DeadLetterReason::FutureVersion);
    assert_eq!(letter(permanent).reason, DeadLetterReason::Permanent);
    assert_eq!(letter(permanent).error, "unlucky amount");
    assert_eq!(letter(permanent).delivery_count, 1);
    assert_eq!(letter(exhausted).reason, DeadLetterReason::MaxDeliver);
    assert_eq!(letter(exhausted).delivery_count, 3);
    assert_eq!(letter(exhausted).error, "never works (after 3 attempts)");
    assert_eq!(letter(panicking).reason, DeadLetterReason::Permanent);
    assert!(letter(panicking).error.contains("bug on 99"));
    // ANCHOR_END: dead_letters
    // The original payload travels with its letter.
    assert_eq!(
        letter(permanent).payload.as_ref(),
        br#"{"amount":13}"#.as_slice()
    );

    // Fixed code: every dead letter reaches the running subscriber again; the four that still
    // cannot work are dead-lettered again.
    picky.accept.store(true, Ordering::SeqCst);
    assert_eq!(b.redrive("poison").await, 5);
    wait_for("the redriven permanent failure", || {
        picky.seen.lock().unwrap().iter().any(|s| s.1 == 13 && s.2)
    })
    .await;
    wait_for("re-dead-lettering", || running.stats().dead_lettered == 9).await;
    let stats = running.shutdown().await.expect("shutdown");

    assert_eq!(stats.handled, 5);
    let left: HashSet<u64> = b
        .dead_letters("poison")
        .await
        .iter()
        .map(|l| l.position)
        .collect();
    let expected_left: HashSet<u64> = [bad_payload, future, exhausted, panicking]
        .iter()
        .map(|a| a.position)
        .collect();
    assert_eq!(left, expected_left);
    // Dead-lettered events are acknowledged: nothing is pending.
    b.assert_all_acknowledged("poison").await;
}

async fn redriven_dead_letters_reach_the_subscriber_again_running_or_restarted<B: Backend>(b: B) {
    let store = b.store();
    let permanent = append(store, "a1", deposit(13)).await;
    let exhausted = append(store, "a2", deposit(7)).await;
    let bad_payload = append(store, "a3", new_event("deposited", 1, b"not json")).await;
    // ANCHOR: redrive
    let picky = Arc::new(Picky::default());
    let running = b.start(picky.clone(), poison_config(&b, "redrive")).await;
    wait_for("three dead letters", || running.stats().dead_lettered == 3).await;

    // The bug behind the permanent failure is fixed: only that letter goes back, to the
    // running subscriber.
    picky.accept.store(true, Ordering::SeqCst);
    let moved = b
        .redrive_matching("redrive", DeadLetterReason::Permanent)
        .await;
    assert_eq!(moved, 1);
    wait_for("the redriven letter", || running.stats().handled == 1).await;
    // Its letter recorded one attempt: the redriven one is the second.
    assert_eq!(
        *picky.seen.lock().unwrap(),
        vec![("a1".to_owned(), 13, true, 2)]
    );
    let left: HashSet<u64> = b
        .dead_letters("redrive")
        .await
        .iter()
        .map(|l| l.position)
        .collect();
    assert_eq!(
        left,
        HashSet::from([exhausted.position, bad_payload.position])
    );
    // ANCHOR_END: redrive
    running.shutdown().await.expect("shutdown");

    // Redriven while no subscriber runs: the next start handles them; both still fail and are
    // dead-lettered again, the exhausted one after a new round of attempts, with the total.
    assert_eq!(b.redrive("redrive").await, 2);
    assert!(b.dead_letters("redrive").await.is_empty());
    let restarted = b.start(picky.clone(), poison_config(&b, "redrive")).await;
    wait_for("re-dead-lettering", || restarted.stats().dead_lettered == 2).await;
    let stats = restarted.shutdown().await.expect("shutdown");

    assert_eq!(stats.handled, 0);
    let again = by_position(&b.dead_letters("redrive").await);
    assert_eq!(again.len(), 2);
    let exhausted_again = &again[&exhausted.position];
    assert_eq!(exhausted_again.reason, DeadLetterReason::MaxDeliver);
    assert_eq!(exhausted_again.delivery_count, 6);
    assert_eq!(again[&bad_payload.position].delivery_count, 2);
    assert_eq!(
        again[&bad_payload.position].reason,
        DeadLetterReason::Undecodable
    );
    assert!(again.values().all(|l| l.dead_letter_sequence > 3));
    assert!(!again.contains_key(&permanent.position));
}

/// Fails amount 7 retryably and amount 13 permanently until `accept` is set; records every
/// attempt's amount, delivery count and whether it was redriven.
#[derive(Default)]
struct AttemptCounter {
    accept: AtomicBool,
    attempts: Mutex<Vec<(u64, u64, bool)>>,
}

impl AttemptCounter {
    /// The `(delivery count, redriven)` of each attempt on `amount`, in order.
    fn attempts_on(&self, amount: u64) -> Vec<(u64, bool)> {
        let attempts = self.attempts.lock().unwrap();
        attempts
            .iter()
            .filter(|a| a.0 == amount)
            .map(|a| (a.1, a.2))
            .collect()
    }
}

impl Subscriber for AttemptCounter {
    type Event = Handled;

    async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = event;
        let attempt = (d.amount, ctx.delivery_count, ctx.redriven);
        self.attempts.lock().unwrap().push(attempt);
        match d.amount {
            7 => Err(HandlerError::retryable("never works")),
            13 if !self.accept.load(Ordering::SeqCst) => {
                Err(HandlerError::permanent("unlucky amount"))
            }
            _ => Ok(()),
        }
    }
}

async fn dead_letters_name_their_event_and_redriven_ones_count_attempts_on<B: Backend>(b: B) {
    let store = b.store();
    let exhausted = append(store, "a1", deposit(7)).await;
    let permanent = append(store, "a2", deposit(13)).await;
    let counter = Arc::new(AttemptCounter::default());
    let running = b.start(counter.clone(), poison_config(&b, "counted")).await;
    wait_for("two dead letters", || running.stats().dead_lettered == 2).await;

    let letters = by_position(&b.dead_letters("counted").await);
    for appended in [exhausted, permanent] {
        let letter = &letters[&appended.position];
        assert_eq!(letter.event_id, Some(appended.id));
        assert_eq!(letter.event_name.as_deref(), Some("deposited"));
        assert_eq!(letter.event_version, Some(1));
    }
    assert_eq!(letters[&exhausted.position].delivery_count, 3);
    assert_eq!(letters[&permanent.position].delivery_count, 1);

    // Both fail again after a redrive: the attempts go on from the letters' counts, the one
    // that used up max_deliver gets a new round of three, and the new letters hold the totals.
    assert_eq!(b.redrive("counted").await, 2);
    wait_for("re-dead-lettering", || running.stats().dead_lettered == 4).await;
    let first_round = [(1, false), (2, false), (3, false)];
    let second_round = [(4, true), (5, true), (6, true)];
    assert_eq!(counter.attempts_on(7), [first_round, second_round].concat());
    assert_eq!(counter.attempts_on(13), [(1, false), (2, true)]);
    let letters = by_position(&b.dead_letters("counted").await);
    let exhausted_again = &letters[&exhausted.position];
    assert_eq!(exhausted_again.reason, DeadLetterReason::MaxDeliver);
    assert_eq!(exhausted_again.delivery_count, 6);
    assert_eq!(exhausted_again.error, "never works (after 6 attempts)");
    assert_eq!(exhausted_again.event_id, Some(exhausted.id));
    assert_eq!(letters[&permanent.position].delivery_count, 2);
    assert_eq!(letters[&permanent.position].event_id, Some(permanent.id));

    // Fixed: the permanent failure's third attempt succeeds.
    counter.accept.store(true, Ordering::SeqCst);
    let moved = b
        .redrive_matching("counted", DeadLetterReason::Permanent)
        .await;
    assert_eq!(moved, 1);
    wait_for("the redriven letter", || running.stats().handled == 1).await;
    assert_eq!(counter.attempts_on(13), [(1, false), (2, true), (3, true)]);
    let left: Vec<u64> = b
        .dead_letters("counted")
        .await
        .iter()
        .map(|l| l.position)
        .collect();
    assert_eq!(left, [exhausted.position]);
    running.shutdown().await.expect("shutdown");
    b.assert_all_acknowledged("counted").await;
}

async fn a_redriven_letter_interrupted_by_a_shutdown_goes_on_counting_in_the_next_run<
    B: Backend,
>(
    b: B,
) {
    let exhausted = append(b.store(), "a1", deposit(7)).await;
    let counter = Arc::new(AttemptCounter::default());
    let quick = b
        .config("interrupted")
        .max_deliver(2)
        .backoff([Duration::from_millis(10)]);
    let running = b.start(counter.clone(), quick.clone()).await;
    wait_for("the dead letter", || running.stats().dead_lettered == 1).await;
    running.shutdown().await.expect("shutdown");

    // Redriven, then stopped during the back-off after its first attempt since the redrive.
    assert_eq!(b.redrive("interrupted").await, 1);
    let slow = quick.clone().backoff([Duration::from_secs(30)]);
    let running = b.start(counter.clone(), slow).await;
    wait_for("the redriven attempt", || counter.attempts_on(7).len() == 3).await;
    running.shutdown().await.expect("shutdown");

    // The next run makes the round's second and last attempt, number 4.
    let running = b.start(counter.clone(), quick).await;
    wait_for("the dead letter again", || {
        running.stats().dead_lettered == 1
    })
    .await;
    running.shutdown().await.expect("shutdown");
    assert_eq!(
        counter.attempts_on(7),
        [(1, false), (2, false), (3, true), (4, true)]
    );
    let letters = b.dead_letters("interrupted").await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].position, exhausted.position);
    assert_eq!(letters[0].delivery_count, 4);
    assert_eq!(letters[0].error, "never works (after 4 attempts)");
}

async fn graceful_restarts_resume_after_the_last_acknowledged_event_without_rehandling<
    B: Backend,
>(
    b: B,
) {
    let store = b.store();
    let mut ids = seed(store, 30, 1..=40).await;
    let rec = Arc::new(Recorder::default());
    let config = b.config("restart").concurrency(8);
    let mut handled = 0;
    for round in 1..=4 {
        let handler = Recording::new(&rec, Duration::from_millis(1));
        let running = b.start(handler, config.clone()).await;
        let target = round * ids.len() / 5;
        wait_for("progress", || rec.completed() >= target).await;
        handled += running.shutdown().await.expect("shutdown").handled;
        assert!(
            rec.completed() < ids.len(),
            "round {round} should stop midway"
        );
    }
    // Events appended while nobody runs are picked up too.
    ids.extend(seed(store, 30, 41..=45).await);
    let running = b.start(Recording::new(&rec, Duration::ZERO), config).await;
    wait_for("everything", || rec.completed() == ids.len()).await;
    handled += running.shutdown().await.expect("shutdown").handled;

    assert_eq!(rec.duplicates(), 0, "nothing handled twice across restarts");
    assert_eq!(handled, ids.len() as u64);
    rec.assert_in_order(30, 45);
    b.assert_all_acknowledged("restart").await;
}

/// Hangs on amount 2 of aggregate a1 while `block` is set; records everything else, and the
/// delivery counts a1's amount 2 arrived with.
struct Blocking {
    block: AtomicBool,
    entered: AtomicBool,
    blocked_deliveries: Mutex<Vec<u64>>,
    rec: Arc<Recorder>,
}

impl Subscriber for Blocking {
    type Event = Handled;

    async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = &event;
        if ctx.aggregate_id == "a1" && d.amount == 2 {
            self.blocked_deliveries
                .lock()
                .unwrap()
                .push(ctx.delivery_count);
            if self.block.load(Ordering::SeqCst) {
                self.entered.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
        }
        Recording::new(&self.rec, Duration::ZERO)
            .handle(event, ctx)
            .await
    }
}

async fn after_a_crash_unacknowledged_events_come_first_and_in_order<B: Backend>(b: B) {
    let store = b.store();
    let mut a1 = Vec::new();
    for n in 1..=5 {
        a1.push(append(store, "a1", deposit(n)).await);
    }
    append(store, "a2", deposit(1)).await;
    append(store, "a2", deposit(2)).await;

    // First run: a1 #2 hangs in its handler, so a1 #3..#5 wait behind it; a2 is done.
    let rec = Arc::new(Recorder::default());
    let blocking = Arc::new(Blocking {
        block: AtomicBool::new(true),
        entered: AtomicBool::new(false),
        blocked_deliveries: Mutex::new(Vec::new()),
        rec: rec.clone(),
    });
    let config = b.config("crash").concurrency(4);
    let first = b.start(blocking.clone(), config.clone()).await;
    wait_for("the hang and a2", || {
        blocking.entered.load(Ordering::SeqCst) && rec.completed() == 3
    })
    .await;
    // ANCHOR: crash
    first.abort().await;
    let pending: Vec<u64> = a1[1..].iter().map(|a| a.position).collect();
    b.assert_unacknowledged("crash", &pending);
    // ANCHOR_END: crash

    // Second run: a new event arrived meanwhile; everything flows in order, once.
    append(store, "a1", deposit(6)).await;
    blocking.block.store(false, Ordering::SeqCst);
    let second = b.start(blocking.clone(), config).await;
    wait_for("the rest", || rec.completed() == 8).await;
    let stats = second.shutdown().await.expect("shutdown");

    assert_eq!(rec.amounts_of("a1"), Some(vec![1, 2, 3, 4, 5, 6]));
    assert_eq!(rec.amounts_of("a2"), Some(vec![1, 2]));
    assert_eq!(rec.duplicates(), 0);
    assert_eq!(stats.handled, 5, "a1 #2..#6 only");
    assert_eq!(
        *blocking.blocked_deliveries.lock().unwrap(),
        vec![1, 2],
        "the interrupted attempt counts"
    );
}

async fn shutdown_during_a_backoff_leaves_the_event_for_the_next_run_with_its_attempts<
    B: Backend,
>(
    b: B,
) {
    let flaky_event = append(b.store(), "a1", deposit(2)).await;
    append(b.store(), "a1", deposit(3)).await;
    let flaky = Arc::new(Flaky::new(2, 1));
    let config = b.config("paused").backoff([Duration::from_secs(30)]);
    let running = b.start(flaky.clone(), config.clone()).await;
    wait_for("the first attempt", || {
        flaky.attempts.lock().unwrap().len() == 1
    })
    .await;
    let asked = Instant::now();
    running.shutdown().await.expect("shutdown");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "shutdown must cut the back-off short"
    );
    let pending = [flaky_event.position, flaky_event.position + 1];
    b.assert_unacknowledged("paused", &pending);

    let restarted = b.start(flaky.clone(), config).await;
    wait_for("both events", || flaky.completed.lock().unwrap().len() == 2).await;
    restarted.shutdown().await.expect("shutdown");

    assert_eq!(
        flaky.attempt_counts(),
        vec![1, 2],
        "the second run continues the attempt count"
    );
    let amounts: Vec<u64> = flaky
        .completed
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(amounts, vec![2, 3]);
}

async fn completed_events_delivered_again_never_reach_the_handler_again<B: Backend>(b: B) {
    let ids = seed(b.store(), 10, 1..=10).await;
    let rec = Arc::new(Recorder::default());
    let running = b
        .start(Recording::new(&rec, Duration::ZERO), b.config("dedupe"))
        .await;
    wait_for("all deposits", || rec.completed() == ids.len()).await;

    // The acknowledgements are lost: every event comes back to the running subscriber.
    b.lose_acknowledgements("dedupe").await;
    wait_for("the redeliveries", || {
        running.stats().duplicates_skipped == 100
    })
    .await;
    let stats = running.shutdown().await.expect("shutdown");

    assert_eq!(stats.handled, 100);
    assert_eq!(
        rec.calls(),
        100,
        "no completed event reached the handler twice"
    );
    rec.assert_in_order(10, 10);
}

/// The first version of `Opened`, stored under its old name.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "account_created", version = 1)]
struct Created {
    owner: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "account_opened", version = 2, previous = Created, renamed_from = "account_created")]
struct Opened {
    owner: String,
    currency: String,
}

impl From<Created> for Opened {
    fn from(old: Created) -> Self {
        Opened {
            owner: old.owner,
            currency: "EUR".into(),
        }
    }
}

/// Both generations of `Opened` and deposits.
#[derive(EventSet, Debug, Clone, PartialEq)]
enum Ledger {
    Opened(Opened),
    Deposited(Deposited),
}

/// Records what it got: the event with the stored name and version.
#[derive(Default)]
struct LedgerRecorder {
    seen: Mutex<Vec<(Ledger, String, u32)>>,
}

impl Subscriber for LedgerRecorder {
    type Event = Ledger;

    async fn handle(&self, event: Ledger, ctx: &EventContext) -> Result<(), HandlerError> {
        let seen = (event, ctx.event_name.clone(), ctx.event_version);
        self.seen.lock().unwrap().push(seen);
        Ok(())
    }
}

async fn old_names_are_upcast_and_future_versions_are_dead_lettered<B: Backend>(b: B) {
    let old = Created {
        owner: "ada".into(),
    };
    append(b.store(), "a1", encoded(old)).await;
    let future = append(
        b.store(),
        "a1",
        new_event("deposited", 2, br#"{"amount":1}"#),
    )
    .await;
    append(b.store(), "a1", deposit(4)).await;
    let ledger = Arc::new(LedgerRecorder::default());
    let running = b.start(ledger.clone(), b.config("ledger")).await;
    wait_for("two events", || ledger.seen.lock().unwrap().len() == 2).await;
    wait_for("the dead letter", || running.stats().dead_lettered == 1).await;
    running.shutdown().await.expect("shutdown");

    let opened = Opened {
        owner: "ada".into(),
        currency: "EUR".into(),
    };
    assert_eq!(
        *ledger.seen.lock().unwrap(),
        vec![
            (Ledger::Opened(opened), "account_created".to_owned(), 1),
            (
                Ledger::Deposited(Deposited { amount: 4 }),
                "deposited".to_owned(),
                1
            ),
        ]
    );
    let letters = b.dead_letters("ledger").await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].position, future.position);
    assert_eq!(letters[0].reason, DeadLetterReason::FutureVersion);
    assert!(letters[0].error.contains("newer"), "{}", letters[0].error);
}

/// The first generation of a subscriber: handles notes, hanging on `hang` and rejecting
/// `reject` permanently.
#[derive(EventSet, Debug, Clone, PartialEq)]
enum WithNotes {
    Deposited(Deposited),
    Noted(Noted),
}

#[derive(Default)]
struct NoteTaker {
    entered: AtomicBool,
}

impl Subscriber for NoteTaker {
    type Event = WithNotes;

    async fn handle(&self, event: WithNotes, _: &EventContext) -> Result<(), HandlerError> {
        match event {
            WithNotes::Noted(n) if n.text == "hang" => {
                self.entered.store(true, Ordering::SeqCst);
                std::future::pending().await
            }
            WithNotes::Noted(n) if n.text == "reject" => Err(HandlerError::permanent("no")),
            _ => Ok(()),
        }
    }
}

/// The next generation: notes are retired.
#[derive(EventSet, Debug, Clone, PartialEq)]
#[event_set(retired("noted"))]
enum NotesRetired {
    Deposited(Deposited),
}

#[derive(Default)]
struct DepositsOnly {
    amounts: Mutex<Vec<u64>>,
}

impl Subscriber for DepositsOnly {
    type Event = NotesRetired;

    async fn handle(&self, event: NotesRetired, _: &EventContext) -> Result<(), HandlerError> {
        let NotesRetired::Deposited(d) = event;
        self.amounts.lock().unwrap().push(d.amount);
        Ok(())
    }
}

async fn retired_event_types_are_acknowledged_without_calling_the_handler<B: Backend>(b: B) {
    append(b.store(), "a1", note("hang")).await;
    append(b.store(), "a1", deposit(1)).await;
    append(b.store(), "a2", note("reject")).await;
    let first = Arc::new(NoteTaker::default());
    let running = b.start(first.clone(), b.config("notes")).await;
    wait_for("the hang and the rejection", || {
        first.entered.load(Ordering::SeqCst) && running.stats().dead_lettered == 1
    })
    .await;
    running.abort().await;

    // The new code retired notes: the hanging one, still unacknowledged, and the redriven
    // rejected one are acknowledged without reaching it.
    assert_eq!(b.redrive("notes").await, 1);
    let second = Arc::new(DepositsOnly::default());
    let running = b.start(second.clone(), b.config("notes")).await;
    wait_for("two retired notes", || running.stats().retired_skipped == 2).await;
    wait_for("the deposit", || second.amounts.lock().unwrap().len() == 1).await;
    let stats = running.shutdown().await.expect("shutdown");

    assert_eq!(*second.amounts.lock().unwrap(), vec![1]);
    assert_eq!(stats.dead_lettered, 0);
    assert!(b.dead_letters("notes").await.is_empty());
    b.assert_all_acknowledged("notes").await;
}

async fn a_new_durable_starts_where_deliver_from_says_and_an_existing_one_keeps_its_position<
    B: Backend,
>(
    b: B,
) {
    seed(b.store(), 1, 1..=3).await;
    let before_4 = SystemTime::now();
    seed(b.store(), 1, 4..=5).await;
    let start = |durable: &str, from: DeliverFrom, rec: &Arc<Recorder>| {
        let config = b.config(durable).deliver_from(from);
        b.start(Recording::new(rec, Duration::ZERO), config)
    };

    let from_3 = Arc::new(Recorder::default());
    let running = start("from3", DeliverFrom::Position(3), &from_3).await;
    wait_for("positions 3 to 5", || from_3.completed() == 3).await;
    running.shutdown().await.expect("shutdown");
    assert_eq!(from_3.amounts_of("a0"), Some(vec![3, 4, 5]));

    let by_time = Arc::new(Recorder::default());
    let running = start("since", DeliverFrom::Time(before_4), &by_time).await;
    wait_for("events since the time", || by_time.completed() == 2).await;
    running.shutdown().await.expect("shutdown");
    assert_eq!(by_time.amounts_of("a0"), Some(vec![4, 5]));

    let only_new = Arc::new(Recorder::default());
    let running = start("new", DeliverFrom::New, &only_new).await;
    seed(b.store(), 1, 6..=6).await;
    wait_for("the new event", || only_new.completed() == 1).await;
    running.shutdown().await.expect("shutdown");
    assert_eq!(only_new.amounts_of("a0"), Some(vec![6]));

    // Restarted with another start position: the durable keeps its own.
    let running = start("from3", DeliverFrom::All, &from_3).await;
    wait_for("the event after the restart", || from_3.completed() == 4).await;
    running.shutdown().await.expect("shutdown");
    assert_eq!(from_3.amounts_of("a0"), Some(vec![3, 4, 5, 6]));
}

/// Keeps the context of every call.
#[derive(Default)]
struct ContextKeeper {
    contexts: Mutex<Vec<EventContext>>,
}

impl Subscriber for ContextKeeper {
    type Event = Handled;

    async fn handle(&self, _: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        self.contexts.lock().unwrap().push(ctx.clone());
        Ok(())
    }
}

async fn the_handler_context_carries_the_stored_metadata<B: Backend>(b: B) {
    append(b.store(), "a1", deposit(1)).await;
    let mut event = deposit(2);
    event.correlation_id = "request-7".into();
    event.causation_id = Some("cause-3".into());
    event.headers.insert("tenant".into(), "acme".into());
    let sent = event.clone();
    let outcome = b
        .store()
        .append(
            &account("a1"),
            ExpectedVersion::Exact(1),
            Some("cmd-9"),
            vec![event],
        )
        .await
        .expect("append");
    let keeper = Arc::new(ContextKeeper::default());
    let running = b.start(keeper.clone(), b.config("ctx")).await;
    wait_for("two events", || keeper.contexts.lock().unwrap().len() == 2).await;
    running.shutdown().await.expect("shutdown");

    let ctx = keeper.contexts.lock().unwrap()[1].clone();
    let expected = EventContext {
        event_id: sent.id,
        event_name: "deposited".into(),
        event_version: 1,
        aggregate_type: "account".into(),
        aggregate_id: "a1".into(),
        sequence: 2,
        position: outcome.last_position,
        timestamp: sent.timestamp,
        correlation_id: "request-7".into(),
        causation_id: Some("cause-3".into()),
        command_id: Some("cmd-9".into()),
        headers: sent.headers,
        delivery_count: 1,
        redriven: false,
    };
    assert_eq!(ctx, expected);
}

/// A journal the handler below writes to through a repository.
#[derive(EventSet, Debug, Clone, PartialEq)]
enum JournalEvent {
    Noted(Noted),
}

#[derive(Aggregate, Default)]
#[aggregate(name = "journal", events = JournalEvent)]
struct Journal {}

impl Apply<Noted> for Journal {
    fn apply(&mut self, _: Noted) {}
}

// ANCHOR: journaling
/// Notes every deposit in the journal: a command run by a handler.
struct Journaling<St: EventStore> {
    journal: Repository<Journal, St>,
}

impl<St: EventStore> Subscriber for Journaling<St> {
    type Event = Handled;

    async fn handle(&self, event: Handled, _: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = event;
        let text = format!("deposited {}", d.amount);
        self.journal
            .execute("j1", |_: &Journal| {
                Ok::<_, Infallible>(vec![Noted { text: text.clone() }.into()])
            })
            .await
            .map_err(|e| HandlerError::retryable(e.to_string()))?;
        Ok(())
    }
}
// ANCHOR_END: journaling

async fn commands_run_by_a_handler_inherit_the_events_correlation_and_cause<B: Backend>(b: B) {
    let store = b.store();
    // ANCHOR: inherited
    let mut first = deposit(1);
    first.correlation_id = "request-1".into();
    let mut second = deposit(2);
    second.correlation_id = "request-2".into();
    let first = append(store, "a1", first).await;
    let second = append(store, "a2", second).await;
    let handler = Journaling {
        journal: Repository::new(store.clone()),
    };
    let running = b.start(handler, b.config("journal")).await;
    wait_for("both deposits", || running.stats().handled == 2).await;
    running.shutdown().await.expect("shutdown");

    let journal = AggregateKey::new("journal", AggregateId::new("j1").expect("valid id"));
    let notes = store.load(&journal, 1).await.expect("load");
    let mut causes: Vec<(String, Option<String>)> = notes
        .iter()
        .map(|n| (n.correlation_id.clone(), n.causation_id.clone()))
        .collect();
    causes.sort();
    assert_eq!(
        causes,
        vec![
            ("request-1".to_owned(), Some(first.id.to_string())),
            ("request-2".to_owned(), Some(second.id.to_string())),
        ]
    );
    // ANCHOR_END: inherited
}

async fn a_dropped_handle_leaves_the_subscriber_running<B: Backend>(b: B) {
    let rec = Arc::new(Recorder::default());
    let handle = b
        .start(Recording::new(&rec, Duration::ZERO), b.config("detached"))
        .await;
    drop(handle);
    // Appended after the drop: only a subscriber still running can handle them.
    seed(b.store(), 3, 1..=5).await;
    wait_for("events appended after the drop", || rec.completed() == 15).await;
    rec.assert_in_order(3, 5);
}

/// A handler held until the test lets it go, recording the amounts it completed.
#[derive(Clone)]
struct Held {
    permits: Arc<tokio::sync::Semaphore>,
    done: Arc<Mutex<Vec<u64>>>,
}

impl Subscriber for Held {
    type Event = Handled;

    async fn handle(&self, event: Handled, _: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = event;
        self.permits.acquire().await.expect("open").forget();
        self.done.lock().unwrap().push(d.amount);
        Ok(())
    }
}

/// Read-your-writes: `wait_for` returns once every event up to the position is settled (the
/// handler's effect is visible then), also past events the subscriber does not handle, and
/// times out while a handler holds an earlier event.
async fn wait_for_returns_once_everything_up_to_the_position_is_settled<B: Backend>(b: B) {
    let store = b.store();
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    let done = Arc::new(Mutex::new(Vec::new()));
    let held = Held {
        permits: permits.clone(),
        done: done.clone(),
    };
    let running = b.start(held, b.config("read_your_writes")).await;
    assert!(
        running.caught_up().await.expect("progress"),
        "nothing stored yet"
    );
    running
        .wait_for(0, Duration::ZERO)
        .await
        .expect("position 0 waits for nothing");

    let first = append(store, "a1", deposit(1)).await;
    let unhandled = append(store, "a2", note("not handled here")).await;
    let err = running
        .wait_for(unhandled.position, Duration::from_millis(200))
        .await
        .expect_err("the deposit before it is held");
    assert!(
        matches!(err, WaitError::TimedOut { position, .. } if position == unhandled.position),
        "{err}"
    );
    assert!(!running.caught_up().await.expect("progress"));

    permits.add_permits(1);
    running
        .wait_for(first.position, Duration::from_secs(30))
        .await
        .expect("settled");
    assert_eq!(
        *done.lock().unwrap(),
        [1],
        "the effect is visible when wait_for returns"
    );
    running
        .wait_for(unhandled.position, Duration::from_secs(30))
        .await
        .expect("nothing the subscriber handles is pending before it");
    assert!(running.caught_up().await.expect("progress"));
    permits.add_permits(1);
    running.shutdown().await.expect("shutdown");
}

/// Runs each behaviour once per backend: `in_memory::<behaviour>` and
/// `jetstream::<behaviour>`, the latter on a nats-server of its own.
macro_rules! on_every_backend {
    ($($behaviour:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    super::$behaviour(super::Memory::new()).await;
                }
            )*
        }

        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    super::$behaviour(super::JetStream::start().await).await;
                }
            )*
        }
    };
}

on_every_backend!(
    each_aggregate_is_handled_in_order_while_others_run_in_parallel,
    max_ack_pending_bounds_the_events_held_at_once,
    a_retryable_error_is_retried_with_backoff_then_succeeds_blocking_only_its_aggregate,
    poison_events_are_dead_lettered_with_their_reasons_while_later_events_flow,
    redriven_dead_letters_reach_the_subscriber_again_running_or_restarted,
    dead_letters_name_their_event_and_redriven_ones_count_attempts_on,
    a_redriven_letter_interrupted_by_a_shutdown_goes_on_counting_in_the_next_run,
    graceful_restarts_resume_after_the_last_acknowledged_event_without_rehandling,
    after_a_crash_unacknowledged_events_come_first_and_in_order,
    shutdown_during_a_backoff_leaves_the_event_for_the_next_run_with_its_attempts,
    completed_events_delivered_again_never_reach_the_handler_again,
    old_names_are_upcast_and_future_versions_are_dead_lettered,
    retired_event_types_are_acknowledged_without_calling_the_handler,
    a_new_durable_starts_where_deliver_from_says_and_an_existing_one_keeps_its_position,
    the_handler_context_carries_the_stored_metadata,
    commands_run_by_a_handler_inherit_the_events_correlation_and_cause,
    a_dropped_handle_leaves_the_subscriber_running,
    wait_for_returns_once_everything_up_to_the_position_is_settled,
);
