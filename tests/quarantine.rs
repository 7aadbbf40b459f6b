//! Quarantine through the repository, on every store: a poisoned aggregate loads and takes
//! commands again; snapshots and cached states that include a quarantined event are not
//! trusted; the original event stays readable.

mod support;

use jetsource::quarantine::{record_of, Quarantine, QUARANTINE_EVENT};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    Aggregate, Apply, DecodeError, EventStore, ExecuteError, ExpectedVersion, InMemoryStore,
    Repository, RepositoryError,
};
use serde::{Deserialize, Serialize};
use support::key;
use support::subscriber::{new_event, Deposited, Handled as AccountEvent};

#[derive(Aggregate, Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[aggregate(name = "account", events = AccountEvent, snapshot(schema = 1, every = 2))]
struct Account {
    balance: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, event: Deposited) {
        self.balance += event.amount;
    }
}

fn deposit(amount: u64) -> impl FnMut(&Account) -> Result<Vec<AccountEvent>, String> {
    move |_| Ok(vec![Deposited { amount }.into()])
}

fn poison(sequence: u64) -> Quarantine {
    Quarantine::event(sequence, "deposited")
        .by("ada@ops")
        .because("written by release 2.3, which nobody runs")
}

async fn every_case<S: EventStore>(store: S) {
    a_poisoned_aggregate_loads_and_takes_commands_after_quarantine(&store).await;
    a_snapshot_that_includes_a_quarantined_event_is_not_used(&store).await;
    cached_states_that_include_a_quarantined_event_are_not_used(&store).await;
}

async fn a_poisoned_aggregate_loads_and_takes_commands_after_quarantine<S: EventStore>(store: &S) {
    let accounts = Repository::<Account, _>::new(store.clone());
    accounts.execute("poisoned", deposit(5)).await.unwrap();
    // A version this code does not know yet, as a newer release would have written it.
    let future = new_event("deposited", 2, br#"{"amount":1,"currency":"EUR"}"#);
    let k = key("account", "poisoned");
    store
        .append(&k, ExpectedVersion::Exact(1), None, vec![future])
        .await
        .unwrap();
    let err = accounts.load("poisoned").await.unwrap_err();
    assert!(
        matches!(
            &err,
            RepositoryError::Decode {
                sequence: 2,
                source: DecodeError::FutureVersion { version: 2, .. },
                ..
            }
        ),
        "{err:?}"
    );
    let err = accounts.execute("poisoned", deposit(1)).await.unwrap_err();
    assert!(matches!(
        err,
        ExecuteError::Repository(RepositoryError::Decode { sequence: 2, .. })
    ));

    let done = accounts.quarantine("poisoned", poison(2)).await.unwrap();
    assert!(done.appended);
    assert_eq!(done.record.record_sequence, 3);
    let loaded = accounts.load("poisoned").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (5, 3));
    let committed = accounts.execute("poisoned", deposit(7)).await.unwrap();
    assert_eq!((committed.state.balance, committed.version), (12, 4));
    // Version 4 crossed the snapshot interval; the snapshot left the event out too.
    let snapshot = store.load_snapshot(&k).await.unwrap();
    assert_eq!(snapshot.map(|s| s.version), Some(4));
    let loaded = accounts.load("poisoned").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (12, 4));

    let history = store.load(&k, 1).await.unwrap();
    let names: Vec<&str> = history.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["deposited", "deposited", QUARANTINE_EVENT, "deposited"]
    );
    assert_eq!(history[1].version, 2, "the original is kept as stored");
    assert_eq!(
        history[1].payload.as_ref(),
        br#"{"amount":1,"currency":"EUR"}"#
    );
    let record = record_of(&history[2]).unwrap().unwrap();
    assert_eq!((record.by.as_str(), record.sequence), ("ada@ops", 2));
    assert_eq!(record.reason, "written by release 2.3, which nobody runs");
    assert_eq!((record.event_id, record.version), (history[1].id, 2));

    let again = accounts.quarantine("poisoned", poison(2)).await.unwrap();
    assert!(!again.appended);
    assert_eq!(again.record, record);
    assert_eq!(store.load(&k, 1).await.unwrap().len(), 4);
}

async fn a_snapshot_that_includes_a_quarantined_event_is_not_used<S: EventStore>(store: &S) {
    let accounts = Repository::<Account, _>::new(store.clone());
    for amount in [1, 2, 4] {
        accounts
            .execute("snapshotted", deposit(amount))
            .await
            .unwrap();
    }
    let k = key("account", "snapshotted");
    let snapshot = store.load_snapshot(&k).await.unwrap().unwrap();
    assert_eq!(snapshot.version, 2, "the snapshot includes event 2");
    // Event 2 decodes: quarantining it is the operator's decision.
    accounts.quarantine("snapshotted", poison(2)).await.unwrap();
    let loaded = accounts.load("snapshotted").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (1 + 4, 4));
    let committed = accounts.execute("snapshotted", deposit(8)).await.unwrap();
    assert_eq!((committed.state.balance, committed.version), (13, 5));
}

async fn cached_states_that_include_a_quarantined_event_are_not_used<S: EventStore>(store: &S) {
    let cached = Repository::<Account, _>::new(store.clone()).with_cache(10);
    let other = Repository::<Account, _>::new(store.clone());
    cached.execute("cached", deposit(1)).await.unwrap();
    cached.execute("cached", deposit(2)).await.unwrap();
    // Through another repository, as another process would: the cached state includes event
    // 2, and the record makes its next append conflict.
    other.quarantine("cached", poison(2)).await.unwrap();
    let committed = cached.execute("cached", deposit(4)).await.unwrap();
    assert_eq!((committed.state.balance, committed.version), (5, 4));
    assert_eq!(committed.attempts, 2);
    // Through the cached repository itself: its cache is dropped, nothing conflicts.
    cached.quarantine("cached", poison(4)).await.unwrap();
    let committed = cached.execute("cached", deposit(8)).await.unwrap();
    assert_eq!((committed.state.balance, committed.version), (9, 6));
    assert_eq!(committed.attempts, 1);
}

#[tokio::test]
async fn in_memory() {
    every_case(InMemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream() {
    let server = NatsServer::start();
    every_case(support::store(&server, "QUARANTINE").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    every_case(support::postgres::pg_store("quarantine_pg").await).await;
}

/// Commands inside a transaction (`execute_in`) start from a cached state or a snapshot too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commands_in_a_transaction_leave_the_quarantined_event_out() {
    let store = support::postgres::pg_store("quarantine_pg_tx").await;
    let cached = Repository::<Account, _>::new(store.clone()).with_cache(10);
    cached.execute("tx", deposit(1)).await.unwrap();
    cached.execute("tx", deposit(2)).await.unwrap();
    Repository::<Account, _>::new(store.clone())
        .quarantine("tx", poison(2))
        .await
        .unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    let meta = jetsource::CommandMetadata::default();
    let committed = cached
        .execute_in(&mut tx, "tx", meta, deposit(4))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((committed.state.balance, committed.version), (5, 4));
    let loaded = cached.load("tx").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (5, 4));
}
