//! The subscriber runtime against a real nats-server spawned by the test harness: server-side
//! filtering, per-aggregate order under concurrency, retries with back-off, dead letters and
//! redrive, idempotency across a crash, graceful restarts and a server restart.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jetsource::subscriber::{
    self, AckMode, DeadLetterReason, DeadLetters, EventContext, HandlerError, Subscriber,
    SubscriberConfig, SubscriberHandle,
};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, Event, EventSet, EventStore, ExpectedVersion,
    JetStreamConnectOptions, JetStreamStore, NewEvent, StreamConfig,
};
use serde::{Deserialize, Serialize};
use support::HandlingLog;
use uuid::Uuid;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

/// What the subscribers handle: only deposits.
#[derive(EventSet, Debug, Clone, PartialEq)]
enum Handled {
    Deposited(Deposited),
}

fn new_event(name: &'static str, version: u32, payload: &[u8]) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        name,
        version,
        codec: jetsource::Codec::Json,
        payload: payload.to_vec().into(),
        timestamp: SystemTime::now(),
        correlation_id: "corr".into(),
        causation_id: None,
        headers: BTreeMap::new(),
    }
}

fn deposit(amount: u64) -> NewEvent {
    let encoded = Deposited { amount }.encode().expect("encode");
    new_event(encoded.name, encoded.version, &encoded.payload)
}

fn key(id: &str) -> AggregateKey {
    AggregateKey::new("account", AggregateId::new(id).expect("valid id"))
}

async fn connect(server: &NatsServer, name: &str) -> JetStreamStore {
    JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new(name, name.to_lowercase()),
    )
    .await
    .expect("connect to the harness server")
}

/// Appends one event to `id`, returning its id.
async fn append(store: &JetStreamStore, id: &str, event: NewEvent) -> Uuid {
    let event_id = event.id;
    store
        .append(&key(id), ExpectedVersion::Any, None, vec![event])
        .await
        .expect("append");
    event_id
}

/// Appends `per_aggregate` deposits to each of `aggregates` aggregates, interleaved, in
/// parallel across aggregates. Returns every event id.
async fn seed(store: &JetStreamStore, aggregates: usize, per_aggregate: u64) -> HashSet<Uuid> {
    let mut tasks = Vec::new();
    for a in 0..aggregates {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 1..=per_aggregate {
                ids.push(append(&store, &format!("a{a}"), deposit(n)).await);
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        all.extend(task.await.expect("seed task"));
    }
    all
}

/// Polls `done` until it holds; panics naming `what` after a generous hang guard.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records every handler call: per aggregate the amounts in handling order, per event id the
/// number of completed calls, and the largest number of concurrent calls.
#[derive(Default)]
struct Recorder {
    log: HandlingLog,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: AtomicU64,
}

impl Recorder {
    fn completed(&self) -> usize {
        self.log.completed()
    }

    fn duplicates(&self) -> u32 {
        self.log.duplicates()
    }
}

#[derive(Clone)]
struct Recording {
    rec: Arc<Recorder>,
    /// Sleep this long in each call, so that calls overlap.
    work: Duration,
}

impl Subscriber for Recording {
    type Event = Handled;

    async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = event;
        self.rec.calls.fetch_add(1, Ordering::Relaxed);
        let now = self.rec.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.rec.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        self.rec.in_flight.fetch_sub(1, Ordering::SeqCst);
        assert_eq!(ctx.aggregate_type, "account");
        assert_eq!(ctx.event_name, "deposited");
        // The seeded amounts equal the aggregate sequence.
        assert_eq!(ctx.sequence, d.amount);
        self.rec.log.record(ctx);
        Ok(())
    }
}

fn assert_in_order(rec: &Recorder, aggregates: usize, per_aggregate: u64) {
    let order = rec.log.order.lock().unwrap();
    assert_eq!(order.len(), aggregates);
    let expected: Vec<u64> = (1..=per_aggregate).collect();
    for (aggregate, amounts) in order.iter() {
        assert_eq!(amounts, &expected, "aggregate {aggregate} out of order");
    }
}

fn fast_config(durable: &str) -> SubscriberConfig {
    SubscriberConfig::new(durable)
        .ack_wait(Duration::from_secs(1))
        .backoff([Duration::from_millis(50), Duration::from_millis(100)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_run_in_parallel_but_each_in_order_and_only_handled_names_arrive() {
    let server = NatsServer::start();
    let store = connect(&server, "ORDER").await;
    let ids = seed(&store, 40, 25).await;
    // Events of another name on the same aggregates: the consumer's filter keeps them away.
    for a in 0..40 {
        append(
            &store,
            &format!("a{a}"),
            new_event("noted", 1, br#"{"text":"x"}"#),
        )
        .await;
    }
    let rec = Arc::new(Recorder::default());
    let handler = Recording {
        rec: rec.clone(),
        work: Duration::from_millis(2),
    };
    let running = subscriber::start(&store, handler, fast_config("order").concurrency(16))
        .await
        .expect("start");
    wait_for("all deposits", || rec.completed() == ids.len()).await;
    let stats = running.shutdown().await.expect("shutdown");

    assert_in_order(&rec, 40, 25);
    assert_eq!(rec.duplicates(), 0);
    assert_eq!(stats.handled, ids.len() as u64);
    assert_eq!(
        stats.dead_lettered, 0,
        "noted events must never be delivered"
    );
    let max = rec.max_in_flight.load(Ordering::SeqCst);
    assert!(
        max > 1,
        "aggregates should overlap, max in flight was {max}"
    );
    assert!(max <= 16, "concurrency 16 exceeded: {max}");
}

/// Fails the first `failures` calls for the event with amount `flaky`, then succeeds.
struct Flaky {
    flaky: u64,
    failures: u32,
    attempts: Mutex<Vec<u64>>,
    seen: Mutex<Vec<u64>>,
}

impl Subscriber for Flaky {
    type Event = Handled;

    async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = event;
        if d.amount == self.flaky {
            self.attempts.lock().unwrap().push(ctx.delivery_count);
            if self.attempts.lock().unwrap().len() <= self.failures as usize {
                return Err(HandlerError::retryable("database unavailable"));
            }
        }
        self.seen.lock().unwrap().push(d.amount);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_error_is_retried_with_backoff_and_blocks_only_its_aggregate() {
    let server = NatsServer::start();
    let store = connect(&server, "RETRY").await;
    for n in 1..=3 {
        append(&store, "a1", deposit(n)).await;
    }
    let flaky = Arc::new(Flaky {
        flaky: 2,
        failures: 2,
        attempts: Mutex::new(Vec::new()),
        seen: Mutex::new(Vec::new()),
    });
    let backoff = [Duration::from_millis(300), Duration::from_millis(600)];
    let config = fast_config("retry").backoff(backoff).max_deliver(5);
    let started = Instant::now();
    let running = subscriber::start(&store, flaky.clone(), config)
        .await
        .expect("start");
    wait_for("three deposits", || flaky.seen.lock().unwrap().len() == 3).await;
    let elapsed = started.elapsed();
    let stats = running.shutdown().await.expect("shutdown");

    assert_eq!(*flaky.attempts.lock().unwrap(), vec![1, 2, 3]);
    assert_eq!(*flaky.seen.lock().unwrap(), vec![1, 2, 3], "3 waited for 2");
    assert_eq!(stats.retries, 2);
    assert_eq!(stats.handled, 3);
    assert_eq!(stats.dead_lettered, 0);
    // Not a timing assertion on speed: the back-off delays must at least have been waited.
    assert!(
        elapsed >= backoff[0] + backoff[1],
        "back-off skipped: {elapsed:?}"
    );
}

// ANCHOR: picky
/// Rejects amount 13 permanently until `accept` is set, fails amount 7 forever and panics on 99.
#[derive(Default)]
struct Picky {
    accept: AtomicBool,
    seen: Mutex<Vec<(u64, bool)>>,
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
        self.seen.lock().unwrap().push((d.amount, ctx.redriven));
        Ok(())
    }
}
// ANCHOR_END: picky

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_with_reasons_and_can_be_redriven() {
    let server = NatsServer::start();
    let store = connect(&server, "POISON").await;
    append(&store, "a1", deposit(1)).await;
    let bad_payload = append(
        &store,
        "a1",
        new_event("deposited", 1, b"{\"amount\":\"x\"}"),
    )
    .await;
    let future = append(&store, "a1", new_event("deposited", 9, b"{\"amount\":3}")).await;
    let permanent = append(&store, "a1", deposit(13)).await;
    let exhausted = append(&store, "a1", deposit(7)).await;
    append(&store, "a1", deposit(2)).await;
    append(&store, "a2", deposit(5)).await;
    let panicking = append(&store, "a2", deposit(99)).await;

    let picky = Arc::new(Picky::default());
    let config = fast_config("poison")
        .max_deliver(3)
        .backoff([Duration::from_millis(20)]);
    let running = subscriber::start(&store, picky.clone(), config)
        .await
        .expect("start");
    wait_for("events after the poison", || {
        picky.seen.lock().unwrap().len() == 3
    })
    .await;
    wait_for("five dead letters", || running.stats().dead_lettered == 5).await;

    // Later events flowed, in order, past the poison of their own aggregate.
    assert_eq!(
        picky
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.0 != 5)
            .copied()
            .collect::<Vec<_>>(),
        vec![(1, false), (2, false)]
    );
    // ANCHOR: dead_letters
    let dead = DeadLetters::open(&store).await.expect("dead letters");
    let letters = dead.list("poison").await.expect("list");
    // ANCHOR_END: dead_letters
    let by_id: HashMap<String, _> = letters
        .iter()
        .map(|l| (l.headers["Jetsource-Event-Id"].clone(), l))
        .collect();
    assert_eq!(letters.len(), 5);
    let reason = |id: Uuid| by_id[&id.to_string()].reason;
    assert_eq!(reason(bad_payload), DeadLetterReason::Undecodable);
    assert_eq!(reason(future), DeadLetterReason::FutureVersion);
    assert_eq!(reason(permanent), DeadLetterReason::Permanent);
    assert_eq!(reason(exhausted), DeadLetterReason::MaxDeliver);
    assert_eq!(reason(panicking), DeadLetterReason::Permanent);
    assert!(by_id[&panicking.to_string()].error.contains("bug on 99"));
    let exhausted_letter = by_id[&exhausted.to_string()];
    assert_eq!(exhausted_letter.delivery_count, 3);
    assert!(exhausted_letter.error.contains("never works"));
    let permanent_letter = by_id[&permanent.to_string()];
    assert_eq!(permanent_letter.subject, "poison.account.a1.deposited");
    assert_eq!(permanent_letter.error, "unlucky amount");
    assert!(permanent_letter.position > 0);
    assert_eq!(
        permanent_letter.payload.as_ref(),
        br#"{"amount":13}"#.as_slice()
    );

    // ANCHOR: redrive
    // Fixed code: the redriven dead letters reach the running subscriber again.
    picky.accept.store(true, Ordering::SeqCst);
    assert_eq!(dead.redrive("poison").await.expect("redrive"), 5);
    // ANCHOR_END: redrive
    wait_for("the redriven permanent failure", || {
        picky.seen.lock().unwrap().contains(&(13, true))
    })
    .await;
    // The four that still cannot work are dead-lettered again, nothing else remains.
    wait_for("re-dead-lettering", || running.stats().dead_lettered == 9).await;
    let left: HashSet<String> = dead
        .list("poison")
        .await
        .expect("list")
        .iter()
        .map(|l| l.headers["Jetsource-Event-Id"].clone())
        .collect();
    let expected_left: HashSet<String> = [bad_payload, future, exhausted, panicking]
        .iter()
        .map(Uuid::to_string)
        .collect();
    assert_eq!(left, expected_left);
    running.shutdown().await.expect("shutdown");
}

/// Blocks forever on amount 2 of aggregate a1 while `block` is set; records everything else.
struct Blocking {
    block: AtomicBool,
    entered: AtomicBool,
    rec: Arc<Recorder>,
}

impl Subscriber for Blocking {
    type Event = Handled;

    async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = &event;
        if ctx.aggregate_id == "a1" && d.amount == 2 && self.block.load(Ordering::SeqCst) {
            self.entered.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Recording {
            rec: self.rec.clone(),
            work: Duration::ZERO,
        }
        .handle(event, ctx)
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_completed_events_are_skipped_and_order_holds() {
    let server = NatsServer::start();
    let store = connect(&server, "CRASH").await;
    let mut a1 = Vec::new();
    for n in 1..=5 {
        a1.push(append(&store, "a1", deposit(n)).await);
    }
    let a2_first = append(&store, "a2", deposit(1)).await;
    append(&store, "a2", deposit(2)).await;

    // First run: a1 #2 hangs in its handler, so a1 #3..#5 wait behind it; a2 is done.
    let rec = Arc::new(Recorder::default());
    let blocking = Arc::new(Blocking {
        block: AtomicBool::new(true),
        entered: AtomicBool::new(false),
        rec: rec.clone(),
    });
    let config = fast_config("crash").concurrency(4);
    let first = subscriber::start(&store, blocking.clone(), config.clone())
        .await
        .expect("start");
    wait_for("the hang and a2", || {
        blocking.entered.load(Ordering::SeqCst) && rec.completed() == 3
    })
    .await;
    first.abort().await;

    // As if a1 #3 had completed and stored its marker right before the crash, unacked.
    // (The completion log's documented layout: concatenated 16-byte event ids.)
    let js = async_nats::jetstream::new(store.client().clone());
    js.publish(
        "jetsource_done.CRASH.crash",
        a1[2].as_bytes().to_vec().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");

    // Second run: more events arrive meanwhile; all flow in order, #3 is not handled again.
    append(&store, "a1", deposit(6)).await;
    blocking.block.store(false, Ordering::SeqCst);
    let second = subscriber::start(&store, blocking.clone(), config)
        .await
        .expect("restart");
    wait_for("the rest", || rec.completed() == 7).await;
    let stats = second.shutdown().await.expect("shutdown");

    let order = rec.log.order.lock().unwrap();
    assert_eq!(
        order["a1"],
        vec![1, 2, 4, 5, 6],
        "#3 skipped, the rest in order"
    );
    assert_eq!(order["a2"], vec![1, 2]);
    assert_eq!(stats.duplicates_skipped, 1);
    assert!(!rec.log.completions.lock().unwrap().contains_key(&a1[2]));
    assert_eq!(rec.log.completions.lock().unwrap()[&a2_first], 1);
    assert_eq!(rec.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restarts_handle_every_event_exactly_once_in_order() {
    let server = NatsServer::start();
    let store = connect(&server, "RESTART").await;
    let ids = seed(&store, 30, 40).await;
    let rec = Arc::new(Recorder::default());
    let config = fast_config("restart").concurrency(8);
    let mut handled = 0;
    for round in 0..4 {
        let handler = Recording {
            rec: rec.clone(),
            work: Duration::from_millis(1),
        };
        let running: SubscriberHandle = subscriber::start(&store, handler, config.clone())
            .await
            .expect("start");
        let target = (round + 1) * ids.len() / 4;
        wait_for("progress", || rec.completed() >= target.min(ids.len())).await;
        handled += running.shutdown().await.expect("shutdown").handled;
    }
    let running = subscriber::start(
        &store,
        Recording {
            rec: rec.clone(),
            work: Duration::ZERO,
        },
        config,
    )
    .await
    .expect("start");
    wait_for("everything", || rec.completed() == ids.len()).await;
    handled += running.shutdown().await.expect("shutdown").handled;

    assert_eq!(rec.duplicates(), 0);
    assert_eq!(handled, ids.len() as u64);
    assert_in_order(&rec, 30, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_consumption_loses_nothing() {
    let mut server = NatsServer::start();
    let store = connect(&server, "SRVRESTART").await;
    let ids = seed(&store, 20, 100).await;
    let rec = Arc::new(Recorder::default());
    let handler = Recording {
        rec: rec.clone(),
        work: Duration::from_millis(1),
    };
    let running = subscriber::start(&store, handler, fast_config("srv").concurrency(8))
        .await
        .expect("start");
    wait_for("some progress", || rec.completed() >= ids.len() / 4).await;
    server.restart();
    wait_for("everything after the restart", || {
        rec.completed() == ids.len()
    })
    .await;
    running.shutdown().await.expect("shutdown");

    let completed: HashSet<Uuid> = rec
        .log
        .completions
        .lock()
        .unwrap()
        .keys()
        .copied()
        .collect();
    assert_eq!(completed, ids);
    assert_eq!(rec.duplicates(), 0);
    assert_in_order(&rec, 20, 100);
}

/// Confirmed acks take another path through the completion log (acked off the dispatcher,
/// concurrently per stored round): every event still once, in order, across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_acks_with_the_completion_log_handle_every_event_once_in_order() {
    let server = NatsServer::start();
    let store = connect(&server, "CONFIRMED").await;
    let ids = seed(&store, 10, 30).await;
    let rec = Arc::new(Recorder::default());
    let config = fast_config("confirmed")
        .concurrency(4)
        .ack_mode(AckMode::Confirmed);
    let mut handled = 0;
    for target in [ids.len() / 2, ids.len()] {
        let handler = Recording {
            rec: rec.clone(),
            work: Duration::ZERO,
        };
        let running = subscriber::start(&store, handler, config.clone())
            .await
            .expect("start");
        wait_for("progress", || rec.completed() >= target).await;
        handled += running.shutdown().await.expect("shutdown").handled;
    }
    // Everything was acked before shutdown returned: a third run gets nothing.
    let running = subscriber::start(
        &store,
        Recording {
            rec: rec.clone(),
            work: Duration::ZERO,
        },
        config,
    )
    .await
    .expect("start");
    let stats = running.shutdown().await.expect("shutdown");

    assert_eq!(stats.handled + stats.duplicates_skipped, 0);
    assert_eq!(handled, ids.len() as u64);
    assert_eq!(rec.duplicates(), 0);
    assert_in_order(&rec, 10, 30);
}

/// One handled notification: topic, key, sequence, amount.
type Seen = (String, String, u64, u64);

/// What the notification subscriber saw, in handling order.
#[derive(Clone, Default)]
struct Notifications {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Subscriber for Notifications {
    type Event = Handled;

    async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = event;
        self.seen.lock().unwrap().push((
            ctx.aggregate_type.clone(),
            ctx.aggregate_id.clone(),
            ctx.sequence,
            d.amount,
        ));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_outside_aggregates_reach_subscribers_once_in_order_per_key() {
    let server = NatsServer::start();
    let store = connect(&server, "NOTIFY").await;
    let publisher = store.publisher("payments").expect("valid topic");
    let keys = ["c1", "c2", "c3"].map(|k| AggregateId::new(k).unwrap());
    for amount in 1..=20 {
        for key in &keys {
            let meta = jetsource::CommandMetadata::default()
                .command_id(format!("pay-{key}-{amount}"))
                .correlation_id("batch-7");
            let receipt = publisher
                .publish(key, &Deposited { amount }, &meta)
                .await
                .expect("publish");
            assert!(!receipt.duplicate && receipt.position > 0);
            // A retry of the same command (a lost ack) stores nothing.
            let retry = publisher
                .publish(key, &Deposited { amount }, &meta)
                .await
                .expect("publish again");
            assert!(retry.duplicate, "retry of {key}/{amount} was stored twice");
        }
    }
    assert!(store.publisher("not.a.token").is_err());
    assert!(store.publisher("*").is_err());
    // Over the server's max payload (1 MB by default): refused before anything is sent.
    let oversized = publisher
        .publish(
            &keys[0],
            &Deposited { amount: u64::MAX },
            &jetsource::CommandMetadata::default().header("blob", "x".repeat(2 << 20)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&oversized, jetsource::PublishError::Store(jetsource::StoreError::Backend(e))
            if matches!(e.downcast_ref::<jetsource::JetStreamError>(),
                Some(jetsource::JetStreamError::EventTooLarge { .. }))),
        "{oversized:?}"
    );

    let seen = Notifications::default();
    let running = subscriber::start(&store, seen.clone(), fast_config("notified").concurrency(4))
        .await
        .expect("start");
    wait_for("every notification", || {
        seen.seen.lock().unwrap().len() >= 60
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.shutdown().await.expect("shutdown");
    let seen = seen.seen.lock().unwrap();
    assert_eq!(seen.len(), 60, "every publish handled once");
    for key in &keys {
        let amounts: Vec<u64> = seen
            .iter()
            .filter(|(topic, id, sequence, _)| {
                topic == "payments" && id == key.as_str() && *sequence == 0
            })
            .map(|(_, _, _, amount)| *amount)
            .collect();
        assert_eq!(amounts, (1..=20).collect::<Vec<_>>(), "order of {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_handle_leaves_the_subscriber_running() {
    let server = NatsServer::start();
    let store = connect(&server, "DROPPED").await;
    let rec = Arc::new(Recorder::default());
    let handle = subscriber::start(
        &store,
        Recording {
            rec: rec.clone(),
            work: Duration::ZERO,
        },
        fast_config("detached"),
    )
    .await
    .expect("start");
    drop(handle);
    // Appended after the drop: only a subscriber still running can handle them.
    seed(&store, 3, 5).await;
    wait_for("events appended after the drop", || rec.completed() == 15).await;
    assert_in_order(&rec, 3, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_written_for_another_stream_is_refused() {
    let server = NatsServer::start();
    let store = connect(&server, "ACTUAL").await;
    let rec = Arc::new(Recorder::default());
    let recording = Recording {
        rec,
        work: Duration::ZERO,
    };
    let error = subscriber::start(
        &store,
        recording,
        fast_config("misplaced").stream("EXPECTED"),
    )
    .await
    .expect_err("the store's stream is not the one the subscriber names");
    assert!(
        matches!(&error, subscriber::SubscriberError::InvalidConfig(reason)
            if reason.contains("EXPECTED") && reason.contains("ACTUAL")),
        "{error}"
    );
}
