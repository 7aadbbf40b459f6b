//! The JetStream store against a real nats-server spawned by the test harness: concurrency,
//! atomicity, idempotency beyond the dedupe window, validation, auth, config and restarts.

mod support;

use std::time::Duration;

use jetsource::testing::nats_server::{Auth, NatsServer};
use jetsource::wire::{self, EventHeader};
use jetsource::{
    Aggregate, Apply, Codec, CommandMetadata, Event, EventSet, EventStore, ExpectedVersion,
    JetStreamConnectOptions, JetStreamError, JetStreamStore, Repository, RepositoryError,
    StoreError,
};
use serde::{Deserialize, Serialize};
use support::{assert_retry_is_duplicate, event, events, key};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "incremented", version = 1)]
struct Incremented {
    by: u64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum CounterEvent {
    Incremented(Incremented),
}

#[derive(Aggregate, Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[aggregate(name = "counter", events = CounterEvent, snapshot(schema = 1, every = 50))]
struct Counter {
    total: u64,
}

impl Apply<Incremented> for Counter {
    fn apply(&mut self, event: Incremented) {
        self.total += event.by;
    }
}

fn jetstream_error(error: &StoreError) -> Option<&JetStreamError> {
    match error {
        StoreError::Backend(inner) => inner.downcast_ref::<JetStreamError>(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_writers_on_one_aggregate_never_lose_or_duplicate_a_version() {
    let server = NatsServer::start();
    let store = support::store(&server, "OCC").await;
    let repo = Repository::<Counter, _>::new(store.clone()).with_conflict_retries(100_000);
    // Four connections, as four processes: writers of one store take turns on the aggregate,
    // writers of different stores race through optimistic concurrency.
    let mut repos = vec![repo.clone()];
    for _ in 1..4 {
        let other = support::store(&server, "OCC").await;
        repos.push(Repository::<Counter, _>::new(other).with_conflict_retries(100_000));
    }
    let writers = (0..16)
        .map(|w| {
            let repo = repos[w % repos.len()].clone();
            tokio::spawn(async move {
                for _ in 0..500 {
                    repo.execute("c1", |_: &Counter| {
                        Ok::<_, std::convert::Infallible>(vec![Incremented { by: 1 }.into()])
                    })
                    .await
                    .expect("command succeeds within the retries");
                }
            })
        })
        .collect::<Vec<_>>();
    for writer in writers {
        writer.await.unwrap();
    }
    let stored = store.load(&key("counter", "c1"), 1).await.unwrap();
    assert_eq!(stored.len(), 8000);
    assert!(stored.iter().map(|e| e.sequence).eq(1..=8000));
    assert!(stored.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(repo.load("c1").await.unwrap().state.total, 8000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_aggregates_append_in_parallel_over_one_connection() {
    let server = NatsServer::start();
    let store = support::store(&server, "PIPE").await;
    let tasks = (0..100)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let k = key("acct", &format!("a{i}"));
                for v in 0..20u64 {
                    let outcome = store
                        .append(&k, ExpectedVersion::Exact(v), None, events("deposited", 1))
                        .await
                        .unwrap();
                    assert_eq!(outcome.last_sequence, v + 1);
                }
            })
        })
        .collect::<Vec<_>>();
    for task in tasks {
        task.await.unwrap();
    }
    for i in 0..100 {
        let loaded = store.load(&key("acct", &format!("a{i}")), 1).await.unwrap();
        assert!(loaded.iter().map(|e| e.sequence).eq(1..=20));
    }
    assert_eq!(store.read_all(1, usize::MAX).await.unwrap().len(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_event_commit_is_all_or_nothing() {
    let server = NatsServer::start();
    // Messages over 1 KiB are refused: the second event of the commit fails on the server.
    let store =
        support::store_with(&server, support::config("ATOMIC").max_message_size(1024)).await;
    let k = key("acct", "atomic");
    let big = "x".repeat(4096);
    let commit = vec![
        event("deposited", "{}"),
        event("deposited", &format!("\"{big}\"")),
        event("deposited", "{}"),
    ];
    let err = store
        .append(&k, ExpectedVersion::Exact(0), None, commit)
        .await
        .expect_err("the oversized event fails the commit");
    assert!(jetstream_error(&err).is_some(), "typed error: {err:?}");
    assert!(
        store.load(&k, 1).await.unwrap().is_empty(),
        "nothing of the commit is stored"
    );
    assert!(store.read_all(1, 100).await.unwrap().is_empty());
    // The aggregate is still at version 0 and accepts the next commit.
    let outcome = store
        .append(&k, ExpectedVersion::Exact(0), None, events("deposited", 3))
        .await
        .unwrap();
    assert_eq!(outcome.last_sequence, 3);
    assert_eq!(store.load(&k, 1).await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_multi_event_commit_stores_nothing() {
    let server = NatsServer::start();
    let store = support::store(&server, "ATOMIC_OCC").await;
    let k = key("acct", "a");
    store
        .append(&k, ExpectedVersion::Exact(0), None, events("deposited", 2))
        .await
        .unwrap();
    // A second store has a cold cache; make it stale by appending through the first.
    let other = support::store(&server, "ATOMIC_OCC").await;
    other.load(&k, 1).await.unwrap();
    store
        .append(&k, ExpectedVersion::Exact(2), None, events("deposited", 1))
        .await
        .unwrap();
    let err = other
        .append(&k, ExpectedVersion::Exact(2), None, events("deposited", 5))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 2,
                actual: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.load(&k, 1).await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_idempotent_inside_and_after_the_dedupe_window() {
    let server = NatsServer::start();
    let config = support::config("IDEM").duplicate_window(Duration::from_secs(1));
    let store = support::store_with(&server, config.clone()).await;
    let k = key("acct", "idem");
    let first = store
        .append(
            &k,
            ExpectedVersion::Exact(0),
            Some("cmd-1"),
            events("deposited", 2),
        )
        .await
        .unwrap();
    let single = store
        .append(
            &k,
            ExpectedVersion::Exact(2),
            Some("cmd-2"),
            events("deposited", 1),
        )
        .await
        .unwrap();
    // Inside the window, from this store and from a fresh one (cold cache).
    let fresh = support::store_with(&server, config.clone()).await;
    for s in [&store, &fresh] {
        let again = s
            .append(
                &k,
                ExpectedVersion::Exact(0),
                Some("cmd-1"),
                events("deposited", 2),
            )
            .await
            .unwrap();
        assert!(again.duplicate);
        assert_eq!(again.last_position, first.last_position);
    }
    // Past the window the server has forgotten the message ids; the store has not.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = support::store_with(&server, config).await;
    for (s, expected) in [
        (&late, ExpectedVersion::Exact(0)),
        (&late, ExpectedVersion::Exact(3)),
        (&store, ExpectedVersion::Any),
    ] {
        assert_retry_is_duplicate(s, &k, expected, "cmd-2", events("deposited", 1), single).await;
    }
    let stored = store.load(&k, 1).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(
        stored
            .iter()
            .map(|e| e.command_id.as_deref())
            .collect::<Vec<_>>(),
        [Some("cmd-1"), Some("cmd-1"), Some("cmd-2")]
    );
    // Through the repository as well: a retried command appends nothing.
    let repo = Repository::<Counter, _>::new(store.clone());
    let meta = CommandMetadata::default().command_id("inc-1");
    let inc = |_: &Counter| Ok::<_, String>(vec![Incremented { by: 7 }.into()]);
    assert!(
        !repo
            .execute_with("r", meta.clone(), inc)
            .await
            .unwrap()
            .duplicate
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = repo.execute_with("r", meta, inc).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.state.total, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_the_documented_headers() {
    let server = NatsServer::start();
    let store = support::store(&server, "HDRS").await;
    let k = key("acct", "h1");
    let mut e = event("deposited", "{}");
    e.headers.insert(
        "traceparent".into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    store
        .append(
            &k,
            ExpectedVersion::Exact(0),
            Some("cmd-h"),
            vec![e.clone()],
        )
        .await
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("HDRS").await.unwrap();
    let raw = stream
        .get_last_raw_message_by_subject("hdrs.acct.h1.deposited")
        .await
        .unwrap();
    let get = |name: &str| raw.headers.get(name).map(|v| v.as_str().to_owned());
    let header = EventHeader::parse(&get(wire::EVENT_HEADER).unwrap()).unwrap();
    assert_eq!((header.sequence, header.id, header.version), (1, e.id, 1));
    assert_eq!((header.codec, header.timestamp), (Codec::Json, e.timestamp));
    assert_eq!(
        get(wire::CORRELATION_HEADER),
        Some(e.correlation_id.clone())
    );
    assert_eq!(get(wire::CAUSATION_HEADER), e.causation_id.clone());
    assert_eq!(get("Jetsource-H-tenant").as_deref(), Some("acme"));
    assert_eq!(get("traceparent"), e.headers.get("traceparent").cloned());
    assert_eq!(
        get(wire::MSG_ID_HEADER),
        Some(wire::message_id("acct", "h1", "cmd-h", 0))
    );
    // Exactly the documented headers, and the two OCC headers the server keeps.
    let mut names: Vec<String> = raw.headers.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Jetsource",
            "Jetsource-Causation-Id",
            "Jetsource-Correlation-Id",
            "Jetsource-H-tenant",
            "Jetsource-H-traceparent",
            "Nats-Expected-Last-Subject-Sequence",
            "Nats-Expected-Last-Subject-Sequence-Subject",
            "Nats-Msg-Id",
            "traceparent",
        ]
    );
    // Loads leave no consumer behind.
    store.load(&k, 1).await.unwrap();
    store.read_all(1, 10).await.unwrap();
    let mut stream = js.get_stream("HDRS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.consumer_count, 0);
}

/// A program that knows only the documented wire format (here raw async-nats) writes events
/// the store reads; so are events of the format jetsource wrote before (format 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_by_other_programs_in_either_format_are_read() {
    let server = NatsServer::start();
    let store = support::store(&server, "FOREIGN").await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let id = uuid::Uuid::now_v7();
    let timestamp = std::time::UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789);
    let header = EventHeader {
        sequence: 1,
        id,
        version: 2,
        codec: Codec::Json,
        timestamp,
    };
    let mut first = async_nats::HeaderMap::new();
    first.insert(wire::EVENT_HEADER, header.to_string().as_str());
    first.insert(wire::EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER, "0");
    first.insert(
        wire::EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT_HEADER,
        wire::aggregate_filter("foreign", "acct", "x1").as_str(),
    );
    let subject = wire::subject("foreign", "acct", "x1", "opened");
    let ack = js
        .publish_with_headers(subject, first, r#"{"by":"go"}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut legacy = async_nats::HeaderMap::new();
    let legacy_id = uuid::Uuid::now_v7();
    legacy.insert(wire::legacy::EVENT_ID, legacy_id.to_string().as_str());
    legacy.insert(wire::legacy::EVENT_NAME, "deposited");
    legacy.insert(wire::legacy::EVENT_VERSION, "1");
    legacy.insert(wire::legacy::CODEC, "json");
    legacy.insert(wire::legacy::SEQUENCE, "2");
    legacy.insert(wire::legacy::CORRELATION, "req-7");
    legacy.insert(wire::legacy::COMMAND, "old-cmd");
    legacy.insert(wire::legacy::TIMESTAMP, "1764000000000000000");
    js.publish_with_headers(
        wire::subject("foreign", "acct", "x1", "deposited"),
        legacy,
        "{}".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let loaded = store.load(&key("acct", "x1"), 1).await.unwrap();
    assert_eq!(loaded.len(), 2);
    let (new, old) = (&loaded[0], &loaded[1]);
    assert_eq!((new.id, new.sequence, new.position), (id, 1, ack.sequence));
    assert_eq!((new.name.as_str(), new.version), ("opened", 2));
    assert_eq!(new.timestamp, timestamp);
    assert_eq!(new.correlation_id, id.to_string(), "absent: the event id");
    assert_eq!(
        (new.causation_id.as_ref(), new.command_id.as_ref()),
        (None, None)
    );
    assert_eq!((old.id, old.sequence), (legacy_id, 2));
    assert_eq!(old.correlation_id, "req-7");
    assert_eq!(old.command_id.as_deref(), Some("old-cmd"));
    // The store appends on top of both, and an old command id is still known.
    let outcome = store
        .command_outcome(&key("acct", "x1"), "old-cmd")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((outcome.first_sequence, outcome.last_sequence), (2, 2));
    store
        .append(
            &key("acct", "x1"),
            ExpectedVersion::Exact(2),
            None,
            events("deposited", 1),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_names_and_values_are_rejected_before_sending() {
    let server = NatsServer::start();
    let store = support::store(&server, "UNSAFE").await;
    let k = key("acct", "u1");
    let mut bad_header = event("deposited", "{}");
    bad_header
        .headers
        .insert("x".into(), "a\r\nNats-Msg-Id: forged".into());
    let mut bad_header_name = event("deposited", "{}");
    bad_header_name.headers.insert("a b".into(), "v".into());
    let mut bad_correlation = event("deposited", "{}");
    bad_correlation.correlation_id = "c\n1".into();
    let cases = vec![
        (key("acct", "u1"), vec![event("deposited.all", "{}")], None),
        (key("acct", "u1"), vec![event("*", "{}")], None),
        (key("acct.x", "u1"), vec![event("deposited", "{}")], None),
        (key("acct", "u1"), vec![bad_header], None),
        (key("acct", "u1"), vec![bad_header_name], None),
        (key("acct", "u1"), vec![bad_correlation], None),
        (
            key("acct", "u1"),
            vec![event("deposited", "{}")],
            Some("cmd\r\n"),
        ),
    ];
    for (k, events, command) in cases {
        let err = store
            .append(&k, ExpectedVersion::Exact(0), command, events)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
    }
    assert!(store.read_all(1, 10).await.unwrap().is_empty());
    let repo = Repository::<Counter, _>::new(store.clone());
    assert!(matches!(
        repo.load("a.>").await,
        Err(RepositoryError::InvalidId(_))
    ));
    store
        .append(&k, ExpectedVersion::Exact(0), None, events("deposited", 1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_typed_error() {
    let server = NatsServer::with_auth(Auth::UserPassword {
        user: "app".into(),
        password: "right".into(),
    });
    let connect = |password: &str| {
        JetStreamStore::connect(
            JetStreamConnectOptions::new([server.url()]).user_password("app", password),
            support::config("AUTH"),
        )
    };
    let err = connect("wrong").await.unwrap_err();
    assert!(matches!(err, JetStreamError::Auth(_)), "{err:?}");
    let store = connect("right").await.unwrap();
    store
        .append(
            &key("acct", "a"),
            ExpectedVersion::Exact(0),
            None,
            events("deposited", 1),
        )
        .await
        .unwrap();

    let token_server = NatsServer::with_auth(Auth::Token("t0ken".into()));
    let with_token = |token: &str| {
        JetStreamStore::connect(
            JetStreamConnectOptions::new([token_server.url()]).token(token),
            support::config("AUTH"),
        )
    };
    assert!(matches!(
        with_token("nope").await,
        Err(JetStreamError::Auth(_))
    ));
    assert!(with_token("t0ken").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_config_is_validated_and_conflicts_are_typed() {
    let server = NatsServer::start();
    for bad in [
        jetsource::StreamConfig::new("CFG", "a.*"),
        jetsource::StreamConfig::new("CFG", "$JS"),
        jetsource::StreamConfig::new("CFG", ""),
        jetsource::StreamConfig::new("C.FG", "cfg"),
        jetsource::StreamConfig::new("CFG", "cfg").replicas(0),
    ] {
        let err = JetStreamStore::connect(JetStreamConnectOptions::new([server.url()]), bad)
            .await
            .unwrap_err();
        assert!(matches!(err, JetStreamError::InvalidConfig(_)), "{err:?}");
    }
    let config = support::config("CFG");
    support::store_with(&server, config.clone()).await;
    // Same config: idempotent.
    support::store_with(&server, config.clone()).await;
    let changed = config.clone().max_age(Duration::from_secs(3600));
    let err = JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        changed.clone(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            JetStreamError::ConfigConflict {
                field: "max_age",
                ..
            }
        ),
        "{err:?}"
    );
    // Durations as people write them, and a zero age as what it means.
    assert!(
        err.to_string()
            .contains("max_age = 0s (no limit), but the configuration asks for 1h"),
        "{err}"
    );
    // Allowed explicitly, the update goes through and the new config then matches.
    support::store_with(&server, changed.clone().update_existing(true)).await;
    support::store_with(&server, changed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_survives_a_server_restart() {
    let mut server = NatsServer::start();
    let store = JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]).request_timeout(Duration::from_secs(2)),
        support::config("RESTART"),
    )
    .await
    .unwrap();
    let k = key("acct", "r1");
    store
        .append(
            &k,
            ExpectedVersion::Exact(0),
            Some("before"),
            events("deposited", 2),
        )
        .await
        .unwrap();
    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        match store
            .append(
                &k,
                ExpectedVersion::Exact(2),
                Some("after"),
                events("deposited", 1),
            )
            .await
        {
            Ok(outcome) => break outcome,
            Err(err) => {
                assert!(jetstream_error(&err).is_some(), "untyped error: {err:?}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "still failing: {err:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(outcome.last_sequence, 3);
    let stored = store.load(&k, 1).await.unwrap();
    assert!(stored.iter().map(|e| e.sequence).eq(1..=3));
}
