//! What only the JetStream subscriber backend has, against a real nats-server spawned by the
//! test harness: the completion log's markers surviving a crash, a server restart mid-stream,
//! confirmed acks, events published outside aggregates, the stream a subscriber is written
//! for, and messages without jetsource metadata dead-lettered as corrupt. Everything both
//! backends share is in `subscriber_conformance.rs`; scale-out is in `subscriber_scale_out.rs`.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jetsource::subscriber::{
    self, AckMode, DeadLetterReason, DeadLetters, EventContext, HandlerError, Subscriber,
    SubscriberConfig,
};
use jetsource::testing::nats_server::NatsServer;
use jetsource::AggregateId;
use support::subscriber::{
    append, deposit, seed, wait_for, Deposited, Handled, Recorder, Recording,
};
use uuid::Uuid;

fn fast_config(durable: &str) -> SubscriberConfig {
    SubscriberConfig::new(durable)
        .ack_wait(Duration::from_secs(1))
        .backoff([Duration::from_millis(50), Duration::from_millis(100)])
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
        Recording::new(&self.rec, Duration::ZERO)
            .handle(event, ctx)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_completed_events_are_skipped_and_order_holds() {
    let server = NatsServer::start();
    let store = support::store(&server, "CRASH").await;
    let mut a1 = Vec::new();
    for n in 1..=5 {
        a1.push(append(&store, "a1", deposit(n)).await.id);
    }
    let a2_first = append(&store, "a2", deposit(1)).await.id;
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
    // Acks leave without waiting for the server: before the crash, wait until the server has
    // the three completed events' acks (4 left: a1 #2..#5, delivered or not), so that only the
    // marker below makes the restarted subscriber skip an event.
    let stream = async_nats::jetstream::new(store.client().clone())
        .get_stream("CRASH")
        .await
        .expect("the event stream");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let info = stream.consumer_info("crash").await.expect("consumer info");
        if info.num_ack_pending as u64 + info.num_pending == 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acks never reached the server: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

    assert_eq!(
        rec.amounts_of("a1").expect("a1 handled"),
        vec![1, 2, 4, 5, 6],
        "#3 skipped, the rest in order"
    );
    assert_eq!(rec.amounts_of("a2"), Some(vec![1, 2]));
    assert_eq!(stats.duplicates_skipped, 1);
    assert!(!rec.log.completions.lock().unwrap().contains_key(&a1[2]));
    assert_eq!(rec.log.completions.lock().unwrap()[&a2_first], 1);
    assert_eq!(rec.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_consumption_loses_nothing() {
    let mut server = NatsServer::start();
    let store = support::store(&server, "SRVRESTART").await;
    let ids = seed(&store, 20, 1..=100).await;
    let rec = Arc::new(Recorder::default());
    let handler = Recording::new(&rec, Duration::from_millis(1));
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
    rec.assert_in_order(20, 100);
}

/// Confirmed acks take another path through the completion log (acked off the dispatcher,
/// concurrently per stored round): every event still once, in order, across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_acks_with_the_completion_log_handle_every_event_once_in_order() {
    let server = NatsServer::start();
    let store = support::store(&server, "CONFIRMED").await;
    let ids = seed(&store, 10, 1..=30).await;
    let rec = Arc::new(Recorder::default());
    let config = fast_config("confirmed")
        .concurrency(4)
        .ack_mode(AckMode::Confirmed);
    let mut handled = 0;
    for target in [ids.len() / 2, ids.len()] {
        let handler = Recording::new(&rec, Duration::ZERO);
        let running = subscriber::start(&store, handler, config.clone())
            .await
            .expect("start");
        wait_for("progress", || rec.completed() >= target).await;
        handled += running.shutdown().await.expect("shutdown").handled;
    }
    // Everything was acked before shutdown returned: a third run gets nothing.
    let running = subscriber::start(&store, Recording::new(&rec, Duration::ZERO), config)
        .await
        .expect("start");
    let stats = running.shutdown().await.expect("shutdown");

    assert_eq!(stats.handled + stats.duplicates_skipped, 0);
    assert_eq!(handled, ids.len() as u64);
    assert_eq!(rec.duplicates(), 0);
    rec.assert_in_order(10, 30);
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
    let store = support::store(&server, "NOTIFY").await;
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
            assert_eq!(
                retry.position, receipt.position,
                "the first publish's position"
            );
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
async fn a_subscriber_written_for_another_stream_is_refused() {
    let server = NatsServer::start();
    let store = support::store(&server, "ACTUAL").await;
    let rec = Arc::new(Recorder::default());
    let recording = Recording::new(&rec, Duration::ZERO);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_metadata_is_dead_lettered_as_corrupt_without_event_fields() {
    let server = NatsServer::start();
    let store = support::store(&server, "RAW").await;
    let js = async_nats::jetstream::new(store.client().clone());
    // On a subject the subscriber consumes, but with none of the headers of a jetsource event.
    js.publish("raw.account.a1.deposited", r#"{"amount":1}"#.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let rec = Arc::new(Recorder::default());
    let running = subscriber::start(
        &store,
        Recording::new(&rec, Duration::ZERO),
        fast_config("raw"),
    )
    .await
    .expect("start");
    wait_for("the corrupt message's dead letter", || {
        running.stats().dead_lettered == 1
    })
    .await;
    let dead = DeadLetters::open(&store).await.expect("dead letters");
    let letters = dead.list("raw").await.expect("list");
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.reason, DeadLetterReason::Corrupt);
    assert_eq!(letter.subject, "raw.account.a1.deposited");
    assert_eq!(letter.position, 1);
    assert_eq!(letter.delivery_count, 1);
    assert_eq!(
        (
            letter.event_id,
            letter.event_name.as_deref(),
            letter.event_version
        ),
        (None, None, None)
    );
    assert_eq!(letter.payload.as_ref(), br#"{"amount":1}"#.as_slice());

    // Redriven, it is still no event: dead-lettered again, its attempts counted on.
    assert_eq!(dead.redrive("raw").await.expect("redrive"), 1);
    wait_for("the corrupt message's second dead letter", || {
        running.stats().dead_lettered == 2
    })
    .await;
    let letters = dead.list("raw").await.expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, DeadLetterReason::Corrupt);
    assert_eq!(letters[0].delivery_count, 2);
    assert_eq!(letters[0].event_id, None);
    assert_eq!(rec.calls(), 0, "the handler never saw it");
    running.shutdown().await.expect("shutdown");
}
