//! What only the in-memory subscriber backend has: a consumer whose acknowledgements a test can
//! make it forget ([`InMemoryConsumer::redeliver_from`]), also while no subscriber runs, and
//! one running subscriber per durable name and store. Everything both backends share is in
//! `subscriber_conformance.rs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use jetsource::subscriber::{
    self, Idempotency, InMemoryConsumer, SubscriberConfig, SubscriberError,
};
use jetsource::InMemoryStore;
use support::subscriber::{seed, wait_for, Recorder, Recording};

fn fast_config(durable: &str) -> SubscriberConfig {
    SubscriberConfig::new(durable).backoff([Duration::from_millis(20), Duration::from_millis(40)])
}

fn consumer(store: &InMemoryStore, durable: &str) -> InMemoryConsumer {
    InMemoryConsumer::find(store, durable).expect("the durable exists once started")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_lost_while_stopped_bring_completed_events_back_to_be_skipped() {
    let store = InMemoryStore::new();
    let ids = seed(&store, 10, 1..=10).await;
    let rec = Arc::new(Recorder::default());
    let handler = Recording::new(&rec, Duration::ZERO);
    let running = subscriber::start_in_memory(&store, handler.clone(), fast_config("dedupe"))
        .await
        .expect("start");
    wait_for("all deposits", || rec.completed() == ids.len()).await;
    running.shutdown().await.expect("shutdown");

    // ANCHOR: redeliver
    // The acknowledgements from position 50 on are lost (as on a JetStream server that lost its
    // consumer state): the next start delivers those events again, and skips them.
    consumer(&store, "dedupe").redeliver_from(50);
    let restarted = subscriber::start_in_memory(&store, handler, fast_config("dedupe"))
        .await
        .expect("restart");
    wait_for("the redeliveries after the restart", || {
        restarted.stats().duplicates_skipped == 51
    })
    .await;
    let stats = restarted.shutdown().await.expect("shutdown");
    assert_eq!(stats.handled, 0);
    // ANCHOR_END: redeliver
    assert_eq!(
        rec.calls(),
        100,
        "no completed event reached the handler twice"
    );
    rec.assert_in_order(10, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotency_lost_acknowledgements_reach_the_handler_as_second_deliveries() {
    let store = InMemoryStore::new();
    seed(&store, 10, 1..=10).await;
    // Without the completion log the redelivery does reach the handler, marked as a second
    // delivery: what keeps it away with idempotency on is the log.
    // ANCHOR: unprotected
    let unprotected = Arc::new(Recorder::default());
    let config = fast_config("unprotected").idempotency(Idempotency::Off);
    let running =
        subscriber::start_in_memory(&store, Recording::new(&unprotected, Duration::ZERO), config)
            .await
            .expect("start");
    wait_for("all deposits", || unprotected.completed() == 100).await;
    consumer(&store, "unprotected").redeliver_from(1);
    wait_for("the redeliveries", || unprotected.calls() == 200).await;
    running.shutdown().await.expect("shutdown");
    let counts = unprotected.delivery_counts.lock().unwrap().clone();
    assert_eq!(counts.iter().filter(|&&c| c == 2).count(), 100);
    // ANCHOR_END: unprotected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscriber_runs_per_durable_and_invalid_configurations_are_refused() {
    let store = InMemoryStore::new();
    let rec = Arc::new(Recorder::default());
    let handler = Recording::new(&rec, Duration::ZERO);
    let running = subscriber::start_in_memory(&store, handler.clone(), fast_config("solo"))
        .await
        .expect("start");
    let second = subscriber::start_in_memory(&store, handler.clone(), fast_config("solo")).await;
    assert!(
        matches!(&second, Err(SubscriberError::InvalidConfig(reason)) if reason.contains("already has a running subscriber")),
        "{second:?}"
    );
    let bad = subscriber::start_in_memory(&store, handler.clone(), fast_config("no spaces")).await;
    assert!(
        matches!(bad, Err(SubscriberError::InvalidConfig(_))),
        "{bad:?}"
    );
    running.shutdown().await.expect("shutdown");
    // Stopped, the durable is free again.
    let again = subscriber::start_in_memory(&store, handler, fast_config("solo"))
        .await
        .expect("restart after shutdown");
    again.shutdown().await.expect("shutdown");
    // A subscriber that never started has no consumer to find.
    assert!(InMemoryConsumer::find(&store, "no spaces").is_none());
}
