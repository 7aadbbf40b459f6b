//! The PostgreSQL relay against a real nats-server and PostgreSQL: every committed event
//! published once, in each aggregate's order, in the JetStream store's wire format; none skipped
//! when transactions commit out of the order of their positions; none of a rolled-back one.

mod support;

use std::time::Duration;

use jetsource::postgres::{Relay, RelayConfig, RelayError};
use jetsource::projection::sqlx;
use jetsource::testing::nats_server::NatsServer;
use jetsource::{EventStore, ExpectedVersion, JetStreamStore, PgStore};
use support::postgres::{assert_stream_mirrors, pg_store, stream_events};
use support::{event, events, key};

/// Waits until the stream holds `count` events (two minutes at most).
async fn wait_for_stream_len(stream: &JetStreamStore, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while stream_events(stream).await.len() != count {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {count} events in the stream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn setup(schema: &str, stream: &str) -> (NatsServer, PgStore, JetStreamStore) {
    let server = NatsServer::start();
    let target = support::store(&server, stream).await;
    (server, pg_store(schema).await, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_every_committed_event_once_in_the_wire_format() {
    let (_server, store, stream) = setup("relay_once", "RELAY_ONCE").await;
    for id in ["a", "b", "c"] {
        let k = key("acct", id);
        (store.append(
            &k,
            ExpectedVersion::Exact(0),
            Some("open"),
            events("opened", 1),
        ))
        .await
        .unwrap();
        let mut two = events("deposited", 2);
        two[1].causation_id = None;
        (store.append(&k, ExpectedVersion::Exact(1), Some("pay"), two))
            .await
            .unwrap();
        (store.append(&k, ExpectedVersion::Any, None, vec![event("noted", "{}")]))
            .await
            .unwrap();
    }
    // Batches of two: windows span several reads, each read while the previous batch publishes.
    let config = RelayConfig::new("once").batch_size(2);
    let relay = Relay::new(store.clone(), stream.clone(), config);
    assert_eq!(relay.publish_committed().await.unwrap(), 12);
    assert_stream_mirrors(&store, &stream).await;
    // Nothing new: nothing read, nothing stored twice.
    assert_eq!(relay.publish_committed().await.unwrap(), 0);
    assert_eq!(stream_events(&stream).await.len(), 12);
    // The JetStream store reads the relayed events as its own, command ids included.
    let loaded = stream.load(&key("acct", "b"), 1).await.unwrap();
    let commands: Vec<_> = loaded.iter().map(|e| e.command_id.as_deref()).collect();
    assert_eq!(commands, [Some("open"), Some("pay"), Some("pay"), None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_commits_late_is_published_and_a_rolled_back_one_never() {
    let (_server, store, stream) = setup("relay_gap", "RELAY_GAP").await;
    let relay = Relay::new(
        store.clone(),
        stream.clone(),
        RelayConfig::new("gap").batch_size(1),
    );

    // `late` inserts first (the lower position) and commits last.
    let mut late = store.pool().begin().await.unwrap();
    let late_key = key("acct", "late");
    let late_events = events("opened", 2);
    (store.append_in(
        &mut late,
        &late_key,
        ExpectedVersion::Exact(0),
        None,
        late_events,
    ))
    .await
    .unwrap();
    let mut rolled_back = store.pool().begin().await.unwrap();
    (store.append_in(
        &mut rolled_back,
        &key("acct", "never"),
        ExpectedVersion::Exact(0),
        None,
        events("opened", 1),
    ))
    .await
    .unwrap();
    for id in ["early-1", "early-2"] {
        (store.append(
            &key("acct", id),
            ExpectedVersion::Exact(0),
            None,
            events("opened", 1),
        ))
        .await
        .unwrap();
    }
    assert_eq!(relay.publish_committed().await.unwrap(), 2);
    let ids: Vec<_> = (stream_events(&stream).await.into_iter())
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(ids, ["early-1", "early-2"]);

    late.commit().await.unwrap();
    rolled_back.rollback().await.unwrap();
    assert_eq!(relay.publish_committed().await.unwrap(), 2);
    let ids: Vec<_> = (stream_events(&stream).await.into_iter())
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(ids, ["early-1", "early-2", "late", "late"]);
    assert_stream_mirrors(&store, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_keeps_its_order_when_its_later_event_has_the_older_transaction() {
    let (_server, store, stream) = setup("relay_order", "RELAY_ORDER").await;
    let relay = Relay::new(store.clone(), stream.clone(), RelayConfig::new("order"));
    let k = key("acct", "x");
    sqlx::query("CREATE TABLE side (n INT)")
        .execute(store.pool())
        .await
        .unwrap();
    // `older` gets its transaction id first, by writing a row of its own.
    let mut older = store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO side VALUES (1)")
        .execute(&mut *older)
        .await
        .unwrap();
    // A transaction between them stays open throughout, holding the oldest-running horizon.
    let mut between = store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO side VALUES (2)")
        .execute(&mut *between)
        .await
        .unwrap();
    // The younger transaction appends the aggregate's first event and commits...
    (store.append(&k, ExpectedVersion::Exact(0), None, events("opened", 1)))
        .await
        .unwrap();
    // ... then the older one appends its second.
    (store.append_in(
        &mut older,
        &k,
        ExpectedVersion::Exact(1),
        None,
        events("deposited", 1),
    ))
    .await
    .unwrap();
    older.commit().await.unwrap();
    assert_eq!(relay.publish_committed().await.unwrap(), 2);
    let sequences: Vec<_> = (stream_events(&stream).await.into_iter())
        .map(|e| e.sequence)
        .collect();
    assert_eq!(sequences, [1, 2]);
    between.rollback().await.unwrap();
    assert_stream_mirrors(&store, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_relay_takes_over_when_the_active_one_stops() {
    let (_server, store, stream) = setup("relay_standby", "RELAY_STANDBY").await;
    let config = RelayConfig::new("ha")
        .standby_poll(Duration::from_millis(20))
        .idle_poll(Duration::from_millis(5));
    let first = Relay::new(store.clone(), stream.clone(), config.clone()).spawn();
    first.wait_active().await;
    let second = Relay::new(store.clone(), stream.clone(), config.clone());
    assert!(matches!(
        second.publish_committed().await,
        Err(RelayError::Standby(name)) if name == "ha"
    ));
    let second = second.spawn();
    (store.append(
        &key("acct", "a"),
        ExpectedVersion::Exact(0),
        None,
        events("opened", 3),
    ))
    .await
    .unwrap();
    wait_for_stream_len(&stream, 3).await;
    assert!(!second.is_active());
    first.stop().await;
    second.wait_active().await;
    (store.append(
        &key("acct", "a"),
        ExpectedVersion::Exact(3),
        None,
        events("deposited", 2),
    ))
    .await
    .unwrap();
    wait_for_stream_len(&stream, 5).await;
    second.stop().await;
    assert_stream_mirrors(&store, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_lost_its_checkpoint_publishes_nothing_twice_beyond_the_dedupe_window() {
    let server = NatsServer::start();
    let window = Duration::from_millis(200);
    let config = support::config("RELAY_RECONCILE").duplicate_window(window);
    let stream = support::store_with(&server, config).await;
    let store = pg_store("relay_reconcile").await;
    for id in ["a", "b"] {
        (store.append(
            &key("acct", id),
            ExpectedVersion::Exact(0),
            Some("c1"),
            events("opened", 3),
        ))
        .await
        .unwrap();
    }
    let relay = Relay::new(store.clone(), stream.clone(), RelayConfig::new("lost"));
    assert_eq!(relay.publish_committed().await.unwrap(), 6);
    // As if the relay died after publishing and before recording: the checkpoint is back at
    // the start, and the server no longer remembers the message ids.
    sqlx::query(
        "UPDATE jetsource_relays SET published_through = '1:1:', window_to = NULL, clean = false",
    )
    .execute(store.pool())
    .await
    .unwrap();
    // Nothing to await: the server forgets message ids when the window has passed.
    tokio::time::sleep(window * 3).await;
    (store.append(
        &key("acct", "a"),
        ExpectedVersion::Exact(3),
        None,
        events("deposited", 1),
    ))
    .await
    .unwrap();
    assert_eq!(relay.publish_committed().await.unwrap(), 7);
    assert_eq!(stream_events(&stream).await.len(), 7);
    assert_stream_mirrors(&store, &stream).await;
}

/// Whether relay `name`'s checkpoint says that everything it published is recorded.
async fn clean(store: &PgStore, name: &str) -> bool {
    sqlx::query_scalar("SELECT clean FROM jetsource_relays WHERE name = $1")
        .bind(name)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_relay_that_stopped_well_leaves_its_checkpoint_clean() {
    let (_server, store, stream) = setup("relay_clean", "RELAY_CLEAN").await;
    (store.append(
        &key("acct", "a"),
        ExpectedVersion::Exact(0),
        None,
        events("opened", 2),
    ))
    .await
    .unwrap();
    let relay = Relay::new(store.clone(), stream.clone(), RelayConfig::new("clean"));
    assert_eq!(relay.publish_committed().await.unwrap(), 2);
    assert!(clean(&store, "clean").await);
    // While a relay is active, a crash would leave its successor unsure: not clean.
    let running = relay.clone().spawn();
    running.wait_active().await;
    assert!(!clean(&store, "clean").await);
    running.stop().await;
    assert!(clean(&store, "clean").await);
    // A relay whose publish fails (the stream's server is gone) stops unclean.
    drop(_server);
    (store.append(
        &key("acct", "a"),
        ExpectedVersion::Exact(2),
        None,
        events("deposited", 1),
    ))
    .await
    .unwrap();
    assert!(matches!(
        relay.publish_committed().await,
        Err(RelayError::Publish(_))
    ));
    assert!(!clean(&store, "clean").await);
}
