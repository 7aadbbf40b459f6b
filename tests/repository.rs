//! The repository over the in-memory store: replay, commands, conflicts, idempotency,
//! snapshots and the state cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use jetsource::testing::AggregateFixture;
use jetsource::{
    Aggregate, AggregateId, AggregateKey, Apply, Codec, CommandMetadata, DecodeError, Event,
    EventSet, EventStore, ExecuteError, ExpectedVersion, InMemoryStore, NewEvent, Repository,
    RepositoryError, Snapshot,
};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "incremented", version = 1)]
struct Incremented {
    by: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "reset", version = 1)]
struct Reset;

#[derive(EventSet, Debug, Clone, PartialEq)]
#[event_set(retired("comment_added"))]
enum CounterEvent {
    Incremented(Incremented),
    Reset(Reset),
}

#[derive(Aggregate, Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[aggregate(name = "counter", events = CounterEvent, snapshot(schema = 1, every = 10))]
struct Counter {
    total: u64,
    /// The sequence of every applied increment, to check order and gaps.
    seen: Vec<u64>,
}

impl Apply<Incremented> for Counter {
    fn apply(&mut self, event: Incremented) {
        self.total += event.by;
        self.seen.push(self.total);
    }
}

impl Apply<Reset> for Counter {
    fn apply(&mut self, _: Reset) {
        self.total = 0;
    }
}

#[derive(Debug, PartialEq)]
struct TooBig;

fn increment(counter: &Counter, by: u64) -> Result<Vec<CounterEvent>, TooBig> {
    if counter.total + by > 1_000_000 {
        return Err(TooBig);
    }
    Ok(vec![Incremented { by }.into()])
}

fn key(id: &str) -> AggregateKey {
    AggregateKey::new(Counter::TYPE, AggregateId::new(id).unwrap())
}

fn raw_event(name: &'static str, version: u32, payload: &[u8]) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        name,
        version,
        codec: Codec::Json,
        payload: payload.to_vec().into(),
        timestamp: std::time::SystemTime::now(),
        correlation_id: "test".into(),
        causation_id: None,
        headers: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_lose_no_update() {
    let store = InMemoryStore::new();
    let repo = Repository::<Counter, _>::new(store.clone()).with_conflict_retries(100_000);
    let conflicts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let repo = repo.clone();
        let conflicts = conflicts.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..500 {
                let done = repo.execute("shared", |c| increment(c, 1)).await.unwrap();
                conflicts.fetch_add(done.attempts as usize - 1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = store.load(&key("shared"), 1).await.unwrap();
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=8000).collect::<Vec<_>>());
    let loaded = repo.load("shared").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version), (8000, 8000));
    println!("conflicts retried: {}", conflicts.load(Ordering::Relaxed));
}

#[tokio::test]
async fn commands_carry_metadata_to_every_event() {
    let store = InMemoryStore::new();
    let repo = Repository::<Counter, _>::new(store.clone());
    let meta = CommandMetadata::default()
        .command_id("cmd-7")
        .correlation_id("corr-1")
        .header("tenant", "acme");
    let two = |_: &Counter| Ok::<_, TooBig>(vec![Incremented { by: 1 }.into(), Reset.into()]);
    let done = repo.execute_with("c1", meta, two).await.unwrap();
    assert_eq!((done.version, done.appended, done.state.total), (2, 2, 0));
    let events = store.load(&key("c1"), 1).await.unwrap();
    assert_eq!(events.len(), 2);
    for (event, sequence) in events.iter().zip(1..) {
        assert_eq!(event.sequence, sequence);
        assert_eq!(event.correlation_id, "corr-1");
        assert_eq!(event.causation_id.as_deref(), Some("cmd-7"));
        assert_eq!(event.command_id.as_deref(), Some("cmd-7"));
        assert_eq!(event.headers["tenant"], "acme");
        assert_eq!(
            (event.aggregate_type.as_str(), event.aggregate_id.as_str()),
            ("counter", "c1")
        );
        assert_eq!(event.id.get_version_num(), 7, "event ids are UUIDv7");
    }
    assert!(events[0].id < events[1].id);
}

#[tokio::test]
async fn retried_command_id_appends_nothing_twice() {
    let store = InMemoryStore::new();
    let repo = Repository::<Counter, _>::new(store.clone());
    let meta = CommandMetadata::default().command_id("once");
    let first = repo
        .execute_with("c", meta.clone(), |c| increment(c, 5))
        .await
        .unwrap();
    repo.execute("c", |c| increment(c, 1)).await.unwrap();
    let again = repo
        .execute_with("c", meta, |c| increment(c, 5))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    // The first execution's outcome: what it appended, the version it produced, and the state
    // as of that version.
    assert_eq!(
        (again.appended, again.state.total, again.version),
        (1, 5, 1)
    );
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn domain_errors_append_nothing() {
    let store = InMemoryStore::new();
    let repo = Repository::<Counter, _>::new(store.clone());
    let err = repo
        .execute("c", |c| increment(c, 2_000_000))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecuteError::Rejected(TooBig)));
    assert!(store.is_empty());
}

#[tokio::test]
async fn unsafe_ids_are_rejected_before_the_store() {
    let store = InMemoryStore::new();
    let repo = Repository::<Counter, _>::new(store.clone());
    for id in ["", "a.b", "*", ">", "a b", "a\nb", &"x".repeat(256)] {
        let err = repo.execute(id, |c| increment(c, 1)).await.unwrap_err();
        assert!(
            matches!(err, ExecuteError::Repository(RepositoryError::InvalidId(_))),
            "{id:?}: {err:?}"
        );
    }
    assert!(store.is_empty());
}

#[tokio::test]
async fn undecodable_events_are_a_typed_error_and_stay_stored() {
    let store = InMemoryStore::new();
    store
        .append(
            &key("bad"),
            ExpectedVersion::Exact(0),
            None,
            vec![
                raw_event("incremented", 1, b"{\"by\":1}"),
                raw_event("incremented", 1, b"not json"),
            ],
        )
        .await
        .unwrap();
    let repo = Repository::<Counter, _>::new(store.clone());
    let err = repo.load("bad").await.unwrap_err();
    match err {
        RepositoryError::Decode {
            sequence,
            source: DecodeError::Malformed { .. },
            ..
        } => {
            assert_eq!(sequence, 2)
        }
        other => panic!("expected a malformed payload at sequence 2, got {other}"),
    }
    let err = repo.execute("bad", |c| increment(c, 1)).await.unwrap_err();
    assert!(matches!(
        err,
        ExecuteError::Repository(RepositoryError::Decode { .. })
    ));
    assert_eq!(store.len(), 2, "nothing appended, nothing lost");

    store
        .append(
            &key("future"),
            ExpectedVersion::Exact(0),
            None,
            vec![raw_event("incremented", 9, b"{}")],
        )
        .await
        .unwrap();
    let err = repo.load("future").await.unwrap_err();
    assert!(matches!(
        err,
        RepositoryError::Decode {
            source: DecodeError::FutureVersion {
                version: 9,
                latest: 1,
                ..
            },
            ..
        }
    ));
}

#[tokio::test]
async fn retired_events_are_skipped_on_replay() {
    let store = InMemoryStore::new();
    store
        .append(
            &key("r"),
            ExpectedVersion::Exact(0),
            None,
            vec![
                raw_event("incremented", 1, b"{\"by\":2}"),
                raw_event("comment_added", 3, b"whatever"),
                raw_event("incremented", 1, b"{\"by\":3}"),
            ],
        )
        .await
        .unwrap();
    let loaded = Repository::<Counter, _>::new(store)
        .load("r")
        .await
        .unwrap();
    assert_eq!((loaded.state.total, loaded.version), (5, 3));
}

#[tokio::test]
async fn snapshot_plus_tail_equals_full_replay() {
    let store = InMemoryStore::new();
    let repo = Repository::<Counter, _>::new(store.clone());
    for by in 1..=25 {
        repo.execute("s", |c| increment(c, by)).await.unwrap();
    }
    let snapshot = store
        .load_snapshot(&key("s"))
        .await
        .unwrap()
        .expect("a snapshot at 20");
    assert_eq!((snapshot.version, snapshot.schema_version), (20, 1));

    let with_snapshot = repo.load("s").await.unwrap();
    let mut full = Counter::default();
    for event in store.load(&key("s"), 1).await.unwrap() {
        full.apply_event(CounterEvent::decode(event.raw()).unwrap().unwrap());
    }
    assert_eq!(with_snapshot.state, full);
    assert_eq!(with_snapshot.version, 25);

    // Prove the snapshot is what was read: a doctored snapshot shows through. (It is one
    // version newer, since the store keeps the snapshot it has at an equal version.)
    let mut doctored: Counter = serde_json::from_slice(&snapshot.state).unwrap();
    doctored.total += 21 + 1_000;
    let event_21 = store.load(&key("s"), 21).await.unwrap().remove(0);
    let doctored = Snapshot {
        version: 21,
        position: event_21.position,
        state: serde_json::to_vec(&doctored).unwrap().into(),
        ..snapshot.clone()
    };
    store.save_snapshot(&key("s"), doctored).await.unwrap();
    assert_eq!(
        repo.load("s").await.unwrap().state.total,
        full.total + 1_000
    );

    // A snapshot of another schema version is ignored: full replay.
    let other_schema = Snapshot {
        schema_version: 2,
        ..snapshot
    };
    store.save_snapshot(&key("s"), other_schema).await.unwrap();
    assert_eq!(repo.load("s").await.unwrap().state, full);
}

#[tokio::test]
async fn cached_state_is_revalidated_by_optimistic_concurrency() {
    let store = InMemoryStore::new();
    let cached = Repository::<Counter, _>::new(store.clone()).with_cache(16);
    let other = Repository::<Counter, _>::new(store.clone());
    assert_eq!(
        cached
            .execute("k", |c| increment(c, 1))
            .await
            .unwrap()
            .attempts,
        1
    );
    // Warm: the cached state is current, so one attempt.
    assert_eq!(
        cached
            .execute("k", |c| increment(c, 1))
            .await
            .unwrap()
            .attempts,
        1
    );
    other.execute("k", |c| increment(c, 10)).await.unwrap();
    let stale = cached.execute("k", |c| increment(c, 1)).await.unwrap();
    assert_eq!(
        (stale.attempts, stale.state.total, stale.version),
        (2, 13, 4)
    );
    assert_eq!(other.load("k").await.unwrap().state.total, 13);
}

#[tokio::test]
async fn a_rejected_command_keeps_the_cached_state() {
    let store = InMemoryStore::new();
    let cached = Repository::<Counter, _>::new(store.clone()).with_cache(16);
    let other = Repository::<Counter, _>::new(store.clone());
    cached.execute("r", |c| increment(c, 1)).await.unwrap();
    other.execute("r", |c| increment(c, 10)).await.unwrap();
    let rejected = cached.execute("r", |c| increment(c, 2_000_000)).await;
    assert!(matches!(rejected, Err(ExecuteError::Rejected(TooBig))));
    // The state the rejection saw is still cached (stale, as the other writer moved on): the
    // next command runs on it first, conflicts, and catches up. A dropped state would have
    // been loaded fresh, in one attempt.
    let next = cached.execute("r", |c| increment(c, 1)).await.unwrap();
    assert_eq!((next.attempts, next.state.total), (2, 12));
}

#[test]
fn fixture_given_when_then() {
    let state = AggregateFixture::<Counter>::given([Incremented { by: 4 }.into()])
        .when(|c| increment(c, 3))
        .then_expect_events([Incremented { by: 3 }.into()]);
    assert_eq!(state.total, 7);
    AggregateFixture::<Counter>::given([Incremented { by: 999_999 }.into()])
        .when(|c| increment(c, 2))
        .then_expect_error(TooBig);
}

#[test]
#[should_panic(expected = "the command produced other events than expected")]
fn fixture_reports_unexpected_events() {
    AggregateFixture::<Counter>::new()
        .when(|c| increment(c, 1))
        .then_expect_events([Incremented { by: 2 }.into()]);
}
