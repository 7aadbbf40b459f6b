//! One suite of store semantics, run against every backend: the in-memory store defines them,
//! the JetStream store must match.

mod support;

use std::time::Duration;

use jetsource::quarantine::{quarantine, record_of, Quarantine, QuarantineError, QUARANTINE_EVENT};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, EventStore, ExpectedVersion, InMemoryStore, InvalidInput, NewEvent,
    Snapshot, StoreError,
};
use support::{assert_retry_is_duplicate, event, events, key};

/// Runs every check on `store`, which must be empty.
async fn suite<S: EventStore>(store: S) {
    empty_aggregate_loads_nothing(&store).await;
    appends_number_events_and_round_trip_metadata(&store).await;
    exact_version_conflicts(&store).await;
    multi_event_append_and_load_from(&store).await;
    any_version_appends_at_the_end(&store).await;
    empty_append_is_rejected(&store).await;
    command_ids_are_idempotent_forever(&store).await;
    aggregates_do_not_mix(&store).await;
    read_all_pages_in_store_order(&store).await;
    snapshots_round_trip(&store).await;
    snapshots_keep_the_newest(&store).await;
    refusals_are_the_same_on_every_store(&store).await;
    command_outcomes_are_remembered(&store).await;
    reserved_event_names_are_refused(&store).await;
    quarantine_records_are_appended_and_read_back(&store).await;
}

async fn empty_aggregate_loads_nothing<S: EventStore>(store: &S) {
    assert!(store
        .load(&key("acct", "nobody"), 1)
        .await
        .unwrap()
        .is_empty());
}

async fn appends_number_events_and_round_trip_metadata<S: EventStore>(store: &S) {
    let k = key("acct", "meta");
    let sent = event("opened", r#"{"owner":"ada"}"#);
    let outcome = store
        .append(
            &k,
            ExpectedVersion::Exact(0),
            Some("cmd-open"),
            vec![sent.clone()],
        )
        .await
        .unwrap();
    assert_eq!((outcome.first_sequence, outcome.last_sequence), (1, 1));
    assert!(!outcome.duplicate);
    let loaded = store.load(&k, 1).await.unwrap();
    assert_eq!(loaded.len(), 1);
    let got = &loaded[0];
    assert_eq!(got.id, sent.id);
    assert_eq!(got.aggregate_type, "acct");
    assert_eq!(got.aggregate_id, "meta");
    assert_eq!(got.sequence, 1);
    assert_eq!(got.position, outcome.last_position);
    assert_eq!(got.name, "opened");
    assert_eq!(got.version, sent.version);
    assert_eq!(got.codec, sent.codec);
    assert_eq!(got.payload, sent.payload);
    assert_eq!(got.timestamp, sent.timestamp);
    assert_eq!(got.correlation_id, sent.correlation_id);
    assert_eq!(got.causation_id, sent.causation_id);
    assert_eq!(got.command_id.as_deref(), Some("cmd-open"));
    assert_eq!(got.headers, sent.headers);
}

async fn exact_version_conflicts<S: EventStore>(store: &S) {
    let k = key("acct", "occ");
    store
        .append(&k, ExpectedVersion::Exact(0), None, events("deposited", 2))
        .await
        .unwrap();
    for stale in [0, 1, 5] {
        match store
            .append(
                &k,
                ExpectedVersion::Exact(stale),
                None,
                events("deposited", 1),
            )
            .await
        {
            Err(StoreError::Conflict {
                aggregate,
                expected,
                actual,
            }) => {
                assert_eq!(aggregate, k);
                assert_eq!(expected, stale);
                assert_eq!(actual, 2);
            }
            other => panic!("expected a conflict for version {stale}, got {other:?}"),
        }
    }
    assert_eq!(store.load(&k, 1).await.unwrap().len(), 2);
}

async fn multi_event_append_and_load_from<S: EventStore>(store: &S) {
    let k = key("acct", "multi");
    store
        .append(&k, ExpectedVersion::Exact(0), None, events("deposited", 1))
        .await
        .unwrap();
    let outcome = store
        .append(&k, ExpectedVersion::Exact(1), None, events("deposited", 3))
        .await
        .unwrap();
    assert_eq!((outcome.first_sequence, outcome.last_sequence), (2, 4));
    let all = store.load(&k, 1).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(all[3].position, outcome.last_position);
    let tail = store.load(&k, 3).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.sequence).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(tail[0].payload, all[2].payload);
    assert!(store.load(&k, 5).await.unwrap().is_empty());
}

async fn any_version_appends_at_the_end<S: EventStore>(store: &S) {
    let k = key("acct", "any");
    for expected_last in 1..=3u64 {
        let outcome = store
            .append(&k, ExpectedVersion::Any, None, events("deposited", 1))
            .await
            .unwrap();
        assert_eq!(outcome.last_sequence, expected_last);
    }
}

async fn empty_append_is_rejected<S: EventStore>(store: &S) {
    let k = key("acct", "empty");
    let err = store
        .append(&k, ExpectedVersion::Exact(0), None, vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::EmptyAppend(ref a) if *a == k),
        "{err:?}"
    );
}

async fn command_ids_are_idempotent_forever<S: EventStore>(store: &S) {
    let k = key("acct", "idem");
    let first = store
        .append(
            &k,
            ExpectedVersion::Exact(0),
            Some("c1"),
            events("deposited", 2),
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    // Same expected version, the new current version, and Any: all duplicates.
    for expected in [
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(2),
        ExpectedVersion::Any,
    ] {
        assert_retry_is_duplicate(store, &k, expected, "c1", events("deposited", 2), first).await;
    }
    // Another command id on the same aggregate appends.
    let other = store
        .append(
            &k,
            ExpectedVersion::Exact(2),
            Some("c2"),
            events("deposited", 1),
        )
        .await
        .unwrap();
    assert_eq!((other.last_sequence, other.duplicate), (3, false));
    // The same command id on another aggregate is another command.
    let elsewhere = store
        .append(
            &key("acct", "idem-2"),
            ExpectedVersion::Exact(0),
            Some("c1"),
            events("deposited", 1),
        )
        .await
        .unwrap();
    assert!(!elsewhere.duplicate);
    assert_eq!(store.load(&k, 1).await.unwrap().len(), 3);
}

async fn aggregates_do_not_mix<S: EventStore>(store: &S) {
    store
        .append(
            &key("acct", "a"),
            ExpectedVersion::Exact(0),
            None,
            events("deposited", 1),
        )
        .await
        .unwrap();
    store
        .append(
            &key("acct", "ab"),
            ExpectedVersion::Exact(0),
            None,
            events("deposited", 2),
        )
        .await
        .unwrap();
    store
        .append(
            &key("card", "a"),
            ExpectedVersion::Exact(0),
            None,
            events("issued", 3),
        )
        .await
        .unwrap();
    assert_eq!(store.load(&key("acct", "a"), 1).await.unwrap().len(), 1);
    assert_eq!(store.load(&key("acct", "ab"), 1).await.unwrap().len(), 2);
    let cards = store.load(&key("card", "a"), 1).await.unwrap();
    assert_eq!(cards.len(), 3);
    assert!(cards
        .iter()
        .all(|e| e.aggregate_type == "card" && e.name == "issued"));
}

async fn read_all_pages_in_store_order<S: EventStore>(store: &S) {
    let all = store.read_all(1, usize::MAX).await.unwrap();
    assert!(all.len() >= 20, "the suite appended {} events", all.len());
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    // Paging by position returns the same events.
    let mut paged = Vec::new();
    let mut from = 1;
    loop {
        let page = store.read_all(from, 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    let middle = &all[all.len() / 2];
    let from_middle = store.read_all(middle.position, 3).await.unwrap();
    assert_eq!(from_middle[0], *middle);
    assert_eq!(from_middle.len(), 3);
}

async fn snapshots_round_trip<S: EventStore>(store: &S) {
    let k = key("acct", "snap");
    assert_eq!(store.load_snapshot(&k).await.unwrap(), None);
    let snapshot = Snapshot {
        schema_version: 2,
        version: 10,
        position: 42,
        state: br#"{"balance":5}"#.to_vec().into(),
    };
    store.save_snapshot(&k, snapshot.clone()).await.unwrap();
    assert_eq!(
        store.load_snapshot(&k).await.unwrap(),
        Some(snapshot.clone())
    );
    let newer = Snapshot {
        version: 20,
        position: 84,
        ..snapshot
    };
    store.save_snapshot(&k, newer.clone()).await.unwrap();
    assert_eq!(store.load_snapshot(&k).await.unwrap(), Some(newer));
    assert_eq!(
        store
            .load_snapshot(&key("acct", "snap-other"))
            .await
            .unwrap(),
        None
    );
}

async fn snapshots_keep_the_newest<S: EventStore>(store: &S) {
    let k = key("acct", "snap-newest");
    let at = |schema_version, version, state: &'static str| Snapshot {
        schema_version,
        version,
        position: version * 2,
        state: state.as_bytes().to_vec().into(),
    };
    store.save_snapshot(&k, at(1, 20, "twenty")).await.unwrap();
    // An older or equal version of the same schema is kept out (a slower writer's), and the
    // call still succeeds.
    store.save_snapshot(&k, at(1, 15, "fifteen")).await.unwrap();
    store.save_snapshot(&k, at(1, 20, "other")).await.unwrap();
    assert_eq!(
        store.load_snapshot(&k).await.unwrap(),
        Some(at(1, 20, "twenty"))
    );
    // Another schema replaces it whatever its version: the old one no longer decodes.
    store.save_snapshot(&k, at(2, 5, "five")).await.unwrap();
    assert_eq!(
        store.load_snapshot(&k).await.unwrap(),
        Some(at(2, 5, "five"))
    );
}

async fn refusals_are_the_same_on_every_store<S: EventStore>(store: &S) {
    let stored_before = store.read_all(1, usize::MAX).await.unwrap().len();
    // `AggregateKey`'s fields are public, so a key can skip `AggregateId::new`'s checks.
    let wildcard_type = AggregateKey {
        aggregate_type: "book.>",
        id: AggregateId::new("b1").unwrap(),
    };
    let good = key("acct", "refused");
    let with = |change: fn(&mut NewEvent)| {
        let mut event = event("deposited", "{}");
        change(&mut event);
        vec![event]
    };
    type Check = fn(&InvalidInput) -> bool;
    let cases: Vec<(AggregateKey, Vec<NewEvent>, Option<&str>, Check)> = vec![
        (
            wildcard_type.clone(),
            events("deposited", 1),
            None,
            |e| matches!(e, InvalidInput::AggregateType { name, .. } if name == "book.>"),
        ),
        (
            good.clone(),
            events("deposited.all", 1),
            None,
            |e| matches!(e, InvalidInput::EventName { name, .. } if name == "deposited.all"),
        ),
        (good.clone(), events("*", 1), None, |e| {
            matches!(e, InvalidInput::EventName { .. })
        }),
        (
            good.clone(),
            events("deposited", 1),
            Some("cmd\r\n"),
            |e| matches!(e, InvalidInput::ControlCharacter { what, .. } if what == "command id"),
        ),
        (
            good.clone(),
            with(|e| e.correlation_id = "c\n".into()),
            None,
            |e| matches!(e, InvalidInput::ControlCharacter { what, .. } if what == "correlation id"),
        ),
        (
            good.clone(),
            with(|e| e.causation_id = Some("c\0".into())),
            None,
            |e| matches!(e, InvalidInput::ControlCharacter { what, .. } if what == "causation id"),
        ),
        (
            good.clone(),
            with(|e| {
                e.headers.insert("bad name".into(), "v".into());
            }),
            None,
            |e| matches!(e, InvalidInput::HeaderName(name) if name == "bad name"),
        ),
        (
            good.clone(),
            with(|e| {
                e.headers
                    .insert("note".into(), "a\r\nNats-Msg-Id: x".into());
            }),
            None,
            |e| matches!(e, InvalidInput::ControlCharacter { what, .. } if what.contains("note")),
        ),
    ];
    for (k, events, command, check) in cases {
        let err = store
            .append(&k, ExpectedVersion::Exact(0), command, events)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidInput(invalid) if check(invalid)),
            "{err:?}"
        );
    }
    let err = store.load(&wildcard_type, 1).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::InvalidInput(InvalidInput::AggregateType { .. })
    ));
    let err = store.load_snapshot(&wildcard_type).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
    assert_eq!(
        store.read_all(1, usize::MAX).await.unwrap().len(),
        stored_before,
        "a refused append stored something"
    );
}

async fn command_outcomes_are_remembered<S: EventStore>(store: &S) {
    let k = key("acct", "outcomes");
    assert_eq!(store.command_outcome(&k, "first").await.unwrap(), None);
    let first = store
        .append(
            &k,
            ExpectedVersion::Exact(0),
            Some("first"),
            events("deposited", 3),
        )
        .await
        .unwrap();
    store
        .append(&k, ExpectedVersion::Exact(3), None, events("deposited", 1))
        .await
        .unwrap();
    let remembered = store.command_outcome(&k, "first").await.unwrap().unwrap();
    assert!(remembered.duplicate);
    assert_eq!(
        (
            remembered.first_sequence,
            remembered.last_sequence,
            remembered.last_position
        ),
        (
            first.first_sequence,
            first.last_sequence,
            first.last_position
        )
    );
    assert_eq!(store.command_outcome(&k, "second").await.unwrap(), None);
}

async fn reserved_event_names_are_refused<S: EventStore>(store: &S) {
    let k = key("acct", "reserved");
    for name in [QUARANTINE_EVENT, "$anything"] {
        let err = store
            .append(&k, ExpectedVersion::Exact(0), None, events(name, 1))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidInput(InvalidInput::ReservedEventName(n)) if n == name),
            "{err:?}"
        );
    }
    assert!(store.load(&k, 1).await.unwrap().is_empty());
}

async fn quarantine_records_are_appended_and_read_back<S: EventStore>(store: &S) {
    let k = key("acct", "quarantined");
    let mut poisoned = event("deposited", "not json");
    poisoned.version = 7;
    let poisoned_id = poisoned.id;
    store
        .append(
            &k,
            ExpectedVersion::Exact(0),
            None,
            vec![event("opened", "{}"), poisoned],
        )
        .await
        .unwrap();
    let refused = [
        (Quarantine::event(2, "opened"), "name"),
        (Quarantine::event(3, "deposited"), "sequence"),
        (
            Quarantine::event(2, "deposited").with_id(uuid::Uuid::now_v7()),
            "id",
        ),
    ];
    for (wrong, what) in refused {
        let err = quarantine(store, &k, wrong.by("ops").because("test"))
            .await
            .unwrap_err();
        let expected = match what {
            "name" => matches!(&err, QuarantineError::NameMismatch { expected, found, .. }
                if expected == "opened" && found == "deposited"),
            "sequence" => matches!(
                err,
                QuarantineError::NoSuchEvent {
                    sequence: 3,
                    version: 2,
                    ..
                }
            ),
            _ => matches!(err, QuarantineError::IdMismatch { found, .. } if found == poisoned_id),
        };
        assert!(expected, "wrong {what}: {err:?}");
    }
    let err = quarantine(store, &k, Quarantine::event(2, "deposited").by("ops"))
        .await
        .unwrap_err();
    assert!(matches!(err, QuarantineError::Incomplete(_)), "{err:?}");
    assert_eq!(
        store.load(&k, 1).await.unwrap().len(),
        2,
        "a refusal appended"
    );

    let asked = Quarantine::event(2, "deposited")
        .with_id(poisoned_id)
        .by("ada")
        .because("written by a bad release");
    let done = quarantine(store, &k, asked.clone()).await.unwrap();
    assert!(done.appended);
    let history = store.load(&k, 1).await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(
        history[1].payload.as_ref(),
        b"not json",
        "the original is kept"
    );
    let stored = &history[2];
    assert_eq!(stored.name, QUARANTINE_EVENT);
    assert_eq!(
        stored.causation_id.as_deref(),
        Some(&*poisoned_id.to_string())
    );
    let record = record_of(stored).unwrap().unwrap();
    assert_eq!(record, done.record);
    assert_eq!(
        (record.sequence, record.event_id, record.name.as_str()),
        (2, poisoned_id, "deposited")
    );
    assert_eq!((record.version, record.record_sequence), (7, 3));
    assert_eq!(
        (record.by.as_str(), record.reason.as_str()),
        ("ada", "written by a bad release")
    );
    let payload: serde_json::Value = serde_json::from_slice(&stored.payload).unwrap();
    assert_eq!(payload["by"], "ada");
    assert_eq!(payload["sequence"], 2);

    // Again: nothing appended, the first record returned, whoever asks.
    let again = quarantine(store, &k, asked.by("bob").because("twice"))
        .await
        .unwrap();
    assert!(!again.appended);
    assert_eq!(again.record, done.record);
    let err = quarantine(
        store,
        &k,
        Quarantine::event(3, QUARANTINE_EVENT).by("a").because("b"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, QuarantineError::IsRecord { sequence: 3, .. }),
        "{err:?}"
    );
    assert_eq!(store.load(&k, 1).await.unwrap().len(), 3);
}

#[tokio::test]
async fn in_memory_store_conforms() {
    suite(InMemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_file_store_conforms() {
    let server = NatsServer::start();
    suite(support::store(&server, "CONFORM").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_memory_store_conforms() {
    let server = NatsServer::start();
    let config = support::config("CONFORM_MEM")
        .storage(jetsource::JetStreamStorage::Memory)
        .duplicate_window(Duration::from_secs(5));
    suite(support::store_with(&server, config).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    suite(support::postgres::pg_store("conformance_pg").await).await;
}
