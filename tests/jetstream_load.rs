//! Loads against a real nats-server: large loads drain a short-lived consumer and delete it,
//! small ones use direct get, and both return exactly the aggregate's events in order.

mod support;

use jetsource::testing::nats_server::NatsServer;
use jetsource::{EventStore, ExpectedVersion, JetStreamStore, StoredEvent};
use support::{events, key};

/// Consumers on stream `name`, by name.
async fn consumers(client: &async_nats::Client, name: &str) -> Vec<String> {
    use futures::StreamExt;
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream_no_info(name).await.unwrap();
    let mut names = stream.consumer_names();
    let mut out = Vec::new();
    while let Some(name) = names.next().await {
        out.push(name.unwrap());
    }
    out
}

fn assert_history(loaded: &[StoredEvent], from: u64, to: u64) {
    assert!(
        loaded.iter().map(|e| e.sequence).eq(from..=to),
        "versions {from}..={to}, got {} events from {:?}",
        loaded.len(),
        loaded.first().map(|e| e.sequence)
    );
    assert!(loaded.windows(2).all(|w| w[0].position < w[1].position));
    assert!(loaded
        .iter()
        .all(|e| e.aggregate_id == "big" && e.aggregate_type == "acct"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_small_loads_return_the_history_and_leave_no_consumer() {
    let server = NatsServer::start();
    let store = support::store(&server, "LOADS").await;
    let big = key("acct", "big");
    let other = key("acct", "other");
    // 600 events of two names, interleaved with another aggregate's events.
    let mut version = 0;
    for round in 0..6 {
        let name = if round % 2 == 0 {
            "deposited"
        } else {
            "withdrawn"
        };
        store
            .append(
                &big,
                ExpectedVersion::Exact(version),
                None,
                events(name, 100),
            )
            .await
            .unwrap();
        version += 100;
        store
            .append(&other, ExpectedVersion::Any, None, events("deposited", 3))
            .await
            .unwrap();
    }

    // The writing store knows the version: the load goes straight to a consumer.
    let warm = store.load(&big, 1).await.unwrap();
    assert_history(&warm, 1, 600);
    assert_eq!(warm[0].name, "deposited");
    assert_eq!(warm[100].name, "withdrawn");
    assert_eq!(
        warm[0].headers.get("tenant").map(String::as_str),
        Some("acme")
    );
    // From a later version, and a small tail (direct get).
    assert_history(&store.load(&big, 201).await.unwrap(), 201, 600);
    assert_history(&store.load(&big, 590).await.unwrap(), 590, 600);
    assert!(store.load(&big, 601).await.unwrap().is_empty());

    // A store that never saw the aggregate: a consumer, whose creation tells how many remain.
    let cold = support::store(&server, "LOADS").await;
    let cold_events = cold.load(&big, 1).await.unwrap();
    assert_eq!(
        cold_events.iter().map(|e| e.id).collect::<Vec<_>>(),
        warm.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let cold = support::store(&server, "LOADS").await;
    assert_history(&cold.load(&big, 300).await.unwrap(), 300, 600);
    assert_eq!(cold.load(&other, 1).await.unwrap().len(), 18);

    // The loads' state is what the next append builds on.
    cold.append(
        &big,
        ExpectedVersion::Exact(600),
        None,
        events("deposited", 1),
    )
    .await
    .unwrap();
    assert_history(&store.load(&big, 1).await.unwrap(), 1, 601);

    // Load consumers are deleted off the load's path: wait for the deletions to land.
    let client = async_nats::connect(server.url()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut left = consumers(&client, "LOADS").await;
    while !left.is_empty() && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        left = consumers(&client, "LOADS").await;
    }
    assert_eq!(left, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_falls_back_to_direct_get_when_no_consumer_can_be_created() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    // The same stream jetsource would create, but allowing a single consumer, which a
    // durable takes: every load consumer is refused (error 10026).
    let config = support::config("FULL");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: config.name.clone(),
        subjects: vec![config.subject_filter()],
        max_consumers: 1,
        duplicate_window: config.duplicate_window,
        allow_direct: true,
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let stream = js.get_stream("FULL").await.unwrap();
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("taken".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let store: JetStreamStore = support::store_with(&server, config).await;
    let big = key("acct", "big");
    for c in 0..4 {
        store
            .append(
                &big,
                ExpectedVersion::Exact(c * 100),
                None,
                events("deposited", 100),
            )
            .await
            .unwrap();
    }
    assert_history(&store.load(&big, 1).await.unwrap(), 1, 400);
    let cold = support::store(&server, "FULL").await;
    assert_history(&cold.load(&big, 1).await.unwrap(), 1, 400);
    assert_eq!(consumers(&client, "FULL").await, vec!["taken".to_owned()]);
}
