//! Commands inside the caller's PostgreSQL transaction (`Repository::execute_in`): the events
//! and the application's rows commit together or not at all, a second transaction on the same
//! aggregate waits for the first and decides on its state, a command id keeps its first outcome
//! through transactions, and no cache or snapshot keeps what a rollback undid.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jetsource::postgres::{Relay, RelayConfig};
use jetsource::projection::sqlx::{self, PgConnection, PgPool};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    Aggregate, Apply, CommandMetadata, Event, EventSet, EventStore, ExecuteError, PgStore,
    Repository, RepositoryError,
};
use serde::{Deserialize, Serialize};
use support::key;
use support::postgres::pg_store;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "placed", version = 1)]
struct Placed {
    total: i64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "paid", version = 1)]
struct Paid {
    amount: i64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum OrderEvent {
    Placed(Placed),
    Paid(Paid),
}

/// An order, snapshotted every two events so a transaction can make a snapshot due.
#[derive(Aggregate, Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[aggregate(name = "pgtx_order", events = OrderEvent, snapshot(schema = 1, every = 2))]
struct Order {
    total: Option<i64>,
    paid: i64,
}

impl Apply<Placed> for Order {
    fn apply(&mut self, event: Placed) {
        self.total = Some(event.total);
    }
}

impl Apply<Paid> for Order {
    fn apply(&mut self, event: Paid) {
        self.paid += event.amount;
    }
}

#[derive(Debug, PartialEq)]
enum Refused {
    AlreadyPlaced,
    NotPlaced,
    NothingDue,
}

/// Places the order for `total`.
fn place(total: i64) -> impl FnMut(&Order) -> Result<Vec<OrderEvent>, Refused> {
    move |order: &Order| match order.total {
        Some(_) => Err(Refused::AlreadyPlaced),
        None => Ok(vec![Placed { total }.into()]),
    }
}

/// Pays what is still due: what it appends depends on the state it decides on.
fn pay_due(order: &Order) -> Result<Vec<OrderEvent>, Refused> {
    let total = order.total.ok_or(Refused::NotPlaced)?;
    match total - order.paid {
        0 => Err(Refused::NothingDue),
        due => Ok(vec![Paid { amount: due }.into()]),
    }
}

/// Pays `amount`, counting how often the command body runs.
fn pay<'a>(
    runs: &'a AtomicUsize,
    amount: i64,
) -> impl FnMut(&Order) -> Result<Vec<OrderEvent>, Refused> + 'a {
    move |order: &Order| {
        runs.fetch_add(1, Ordering::SeqCst);
        order.total.ok_or(Refused::NotPlaced)?;
        Ok(vec![Paid { amount }.into()])
    }
}

fn no_metadata() -> CommandMetadata {
    CommandMetadata::default()
}

fn with_id(id: &str) -> CommandMetadata {
    CommandMetadata::default().command_id(id)
}

/// A repository over a migrated store in a fresh `schema`, with the application's own
/// `invoices` table next to the store's.
async fn orders(schema: &str) -> Repository<Order, PgStore> {
    let store = pg_store(schema).await;
    sqlx::query("CREATE TABLE invoices (order_id TEXT PRIMARY KEY, amount BIGINT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    Repository::new(store)
}

/// The application's row, written in `tx`.
async fn invoice(tx: &mut PgConnection, order: &str, amount: i64) {
    sqlx::query("INSERT INTO invoices (order_id, amount) VALUES ($1, $2)")
        .bind(order)
        .bind(amount)
        .execute(tx)
        .await
        .unwrap();
}

/// The invoiced amount of `order`, as committed.
async fn invoiced(pool: &PgPool, order: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT amount FROM invoices WHERE order_id = $1")
        .bind(order)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// The committed events of order `id`: (sequence, name, command id).
async fn history(orders: &Repository<Order, PgStore>, id: &str) -> Vec<(u64, String, String)> {
    let events = orders.store().load(&key(Order::TYPE, id), 1).await.unwrap();
    let row = |e: &jetsource::StoredEvent| {
        let command = e.command_id.clone().unwrap_or_default();
        (e.sequence, e.name.clone(), command)
    };
    events.iter().map(row).collect()
}

/// Waits until a transaction waits for the turn of order `id` to append (its advisory lock,
/// seen in `pg_locks`), one minute at most.
async fn wait_for_a_waiter(pool: &PgPool, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
               AND objsubid = 1 AND database = (SELECT oid FROM pg_database \
                                                 WHERE datname = current_database()) \
               AND ((classid::BIGINT << 32) | objid::BIGINT) \
                   = jetsource_aggregate_lock($1, $2))",
        )
        .bind(Order::TYPE)
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting {
            return;
        }
        assert!(Instant::now() < deadline, "nobody waited for {id}'s turn");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn the_events_and_the_application_row_commit_together() {
    let orders = orders("jetsource_pgtx_commit").await;
    let pool = orders.store().pool().clone();
    let mut tx = pool.begin().await.unwrap();
    let placed = orders
        .execute_in(&mut tx, "o-1", with_id("place-o-1"), place(120))
        .await
        .unwrap();
    assert_eq!(
        (placed.version, placed.appended, placed.duplicate),
        (1, 1, false)
    );
    assert_eq!(placed.state.total, Some(120));
    invoice(&mut tx, "o-1", 120).await;
    // The transaction sees its own event; nobody else sees anything yet.
    let k = key(Order::TYPE, "o-1");
    assert_eq!(
        orders.store().load_in(&mut tx, &k, 1).await.unwrap().len(),
        1
    );
    assert!(history(&orders, "o-1").await.is_empty());
    assert_eq!(invoiced(&pool, "o-1").await, None);

    tx.commit().await.unwrap();
    assert_eq!(
        history(&orders, "o-1").await,
        [(1, "placed".to_owned(), "place-o-1".to_owned())]
    );
    assert_eq!(invoiced(&pool, "o-1").await, Some(120));
    let loaded = orders.load("o-1").await.unwrap();
    assert_eq!((loaded.version, loaded.state.total), (1, Some(120)));
}

#[tokio::test]
async fn a_rollback_leaves_neither_the_events_nor_the_row_nor_the_command_id() {
    let orders = orders("jetsource_pgtx_rollback").await;
    let pool = orders.store().pool().clone();
    let mut tx = pool.begin().await.unwrap();
    let placed = orders
        .execute_in(&mut tx, "o-2", with_id("place-o-2"), place(80))
        .await
        .unwrap();
    assert_eq!(placed.version, 1);
    invoice(&mut tx, "o-2", 80).await;
    tx.rollback().await.unwrap();

    assert!(history(&orders, "o-2").await.is_empty());
    assert_eq!(invoiced(&pool, "o-2").await, None);
    // The command id is unused: the command runs again, at sequence 1 (no gap).
    let mut tx = pool.begin().await.unwrap();
    let again = orders
        .execute_in(&mut tx, "o-2", with_id("place-o-2"), place(90))
        .await
        .unwrap();
    assert_eq!((again.version, again.duplicate), (1, false));
    tx.commit().await.unwrap();
    assert_eq!(orders.load("o-2").await.unwrap().state.total, Some(90));
}

#[tokio::test]
async fn a_rejected_command_appends_nothing_and_the_transaction_goes_on() {
    let orders = orders("jetsource_pgtx_rejected").await;
    let pool = orders.store().pool().clone();
    let mut tx = pool.begin().await.unwrap();
    let err = orders
        .execute_in(&mut tx, "o-3", no_metadata(), pay_due)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecuteError::Rejected(Refused::NotPlaced)),
        "{err:?}"
    );
    // An id that cannot be a subject token is refused before the database is asked.
    let err = orders
        .execute_in(&mut tx, "o.3", no_metadata(), place(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecuteError::Repository(RepositoryError::InvalidId(_))),
        "{err:?}"
    );
    // A command that decides nothing changes appends nothing either.
    let nothing = orders
        .execute_in(&mut tx, "o-3", no_metadata(), |_: &Order| {
            Ok::<_, Refused>(vec![])
        })
        .await
        .unwrap();
    assert_eq!((nothing.version, nothing.appended), (0, 0));
    invoice(&mut tx, "o-3", 5).await;
    tx.commit().await.unwrap();
    assert!(history(&orders, "o-3").await.is_empty());
    assert_eq!(invoiced(&pool, "o-3").await, Some(5));
}

/// Two transactions execute on one aggregate: the second waits for the first's turn and, once
/// the first commits, decides on its state, without a conflict; after a rollback it decides on
/// the state without the rolled-back events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_transaction_waits_for_the_first_and_decides_on_its_state() {
    let orders = orders("jetsource_pgtx_concurrent").await;
    let pool = orders.store().pool().clone();
    for (id, commit_first) in [("o-4", true), ("o-4r", false)] {
        orders.execute(id, place(100)).await.unwrap();
        let mut first = pool.begin().await.unwrap();
        let paid = orders
            .execute_in(&mut first, id, no_metadata(), pay_due)
            .await
            .unwrap();
        assert_eq!((paid.version, paid.state.paid), (2, 100));
        let second = tokio::spawn({
            let orders = orders.clone();
            let mut tx = pool.begin().await.unwrap();
            async move {
                let result = orders.execute_in(&mut tx, id, no_metadata(), pay_due).await;
                (result, tx)
            }
        });
        wait_for_a_waiter(&pool, id).await;
        assert!(!second.is_finished());
        if commit_first {
            invoice(&mut first, id, 100).await;
            first.commit().await.unwrap();
            // Paid in full: the second decides on that, and pays nothing twice.
            let (result, second) = second.await.unwrap();
            assert!(
                matches!(result, Err(ExecuteError::Rejected(Refused::NothingDue))),
                "{result:?}"
            );
            second.commit().await.unwrap();
        } else {
            first.rollback().await.unwrap();
            // Nothing of the first is left: the second pays in its place, at its version.
            let (result, second) = second.await.unwrap();
            let paid = result.unwrap();
            assert_eq!((paid.version, paid.attempts, paid.state.paid), (2, 1, 100));
            second.commit().await.unwrap();
        }
        let names: Vec<_> = (history(&orders, id).await.into_iter())
            .map(|(sequence, name, _)| (sequence, name))
            .collect();
        assert_eq!(names, [(1, "placed".to_owned()), (2, "paid".to_owned())]);
    }
}

/// An `execute` outside the transaction waits for it too, then finds its version stale, catches
/// up and runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_execute_outside_waits_for_the_transaction_then_reruns_on_its_state() {
    let orders = orders("jetsource_pgtx_outside").await;
    let pool = orders.store().pool().clone();
    orders.execute("o-5", place(50)).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let runs = AtomicUsize::new(0);
    orders
        .execute_in(&mut tx, "o-5", no_metadata(), pay(&runs, 20))
        .await
        .unwrap();
    let outside = tokio::spawn({
        let orders = orders.clone();
        async move { orders.execute("o-5", pay_due).await }
    });
    wait_for_a_waiter(&pool, "o-5").await;
    tx.commit().await.unwrap();
    let done = outside.await.unwrap().unwrap();
    // Its first attempt decided on the state before the transaction (50 due) and conflicted.
    assert_eq!(done.attempts, 2);
    assert_eq!((done.version, done.state.paid), (3, 50));
}

#[tokio::test]
async fn a_command_id_returns_its_first_outcome_inside_a_transaction() {
    let orders = orders("jetsource_pgtx_command_id").await;
    let pool = orders.store().pool().clone();
    orders
        .execute_with("o-6", with_id("place-o-6"), place(30))
        .await
        .unwrap();
    let runs = AtomicUsize::new(0);

    let mut tx = pool.begin().await.unwrap();
    // A command id committed earlier, outside any transaction: its first outcome, no run.
    let placed_again = orders
        .execute_in(&mut tx, "o-6", with_id("place-o-6"), place(999))
        .await
        .unwrap();
    assert_eq!(
        (
            placed_again.version,
            placed_again.appended,
            placed_again.duplicate,
            placed_again.attempts
        ),
        (1, 1, true, 0)
    );
    assert_eq!(placed_again.state.total, Some(30));
    // A command id applied earlier in the same transaction, not committed yet.
    let first = orders
        .execute_in(&mut tx, "o-6", with_id("pay-o-6"), pay(&runs, 10))
        .await
        .unwrap();
    let again = orders
        .execute_in(&mut tx, "o-6", with_id("pay-o-6"), pay(&runs, 10))
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the command body ran again");
    assert_eq!((first.version, first.duplicate), (2, false));
    assert_eq!(
        (again.version, again.appended, again.duplicate),
        (2, 1, true)
    );
    assert_eq!(again.state, first.state);
    // More history after it: the duplicate's state stays the one its version had.
    orders
        .execute_in(&mut tx, "o-6", no_metadata(), pay(&runs, 5))
        .await
        .unwrap();
    let later = orders
        .execute_in(&mut tx, "o-6", with_id("pay-o-6"), pay(&runs, 10))
        .await
        .unwrap();
    assert_eq!((later.version, later.state.paid), (2, 10));
    tx.commit().await.unwrap();

    // Outside the transaction, once committed, the id keeps that outcome too.
    let outside = orders
        .execute_with("o-6", with_id("pay-o-6"), pay(&runs, 10))
        .await
        .unwrap();
    assert_eq!((outside.version, outside.duplicate), (2, true));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(history(&orders, "o-6").await.len(), 3);
}

#[tokio::test]
async fn a_cached_repository_sees_what_a_transaction_committed_and_not_what_it_rolled_back() {
    let store = orders("jetsource_pgtx_cache").await.store().clone();
    let cached = Repository::<Order, _>::new(store).with_cache(100);
    let pool = cached.store().pool().clone();
    cached.execute("o-7", place(40)).await.unwrap();
    let runs = AtomicUsize::new(0);

    // Committed: the next command decides on it at its first attempt (the cached state was
    // dropped, so it is not stale).
    let mut tx = pool.begin().await.unwrap();
    cached
        .execute_in(&mut tx, "o-7", no_metadata(), pay(&runs, 15))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let next = cached.execute("o-7", pay_due).await.unwrap();
    assert_eq!((next.version, next.attempts), (3, 1));
    assert_eq!(next.state.paid, 40);

    // Rolled back: never cached, so the next command decides on the committed state (which
    // is paid in full), not on the rolled-back one (which would be overpaid).
    let mut tx = pool.begin().await.unwrap();
    let gone = cached
        .execute_in(&mut tx, "o-7", no_metadata(), pay(&runs, 7))
        .await
        .unwrap();
    assert_eq!((gone.version, gone.state.paid), (4, 47));
    tx.rollback().await.unwrap();
    let err = cached.execute("o-7", pay_due).await.unwrap_err();
    assert!(
        matches!(err, ExecuteError::Rejected(Refused::NothingDue)),
        "{err:?}"
    );
    let after = cached.execute("o-7", pay(&runs, 1)).await.unwrap();
    assert_eq!(
        (after.version, after.attempts, after.state.paid),
        (4, 1, 41)
    );
}

#[tokio::test]
async fn a_snapshot_due_in_a_transaction_is_kept_only_if_it_commits() {
    let orders = orders("jetsource_pgtx_snapshot").await;
    let pool = orders.store().pool().clone();
    let k = key(Order::TYPE, "o-8");
    let runs = AtomicUsize::new(0);

    // Events 1 and 2 make a snapshot due (every 2 events).
    let mut tx = pool.begin().await.unwrap();
    orders
        .execute_in(&mut tx, "o-8", no_metadata(), place(60))
        .await
        .unwrap();
    orders
        .execute_in(&mut tx, "o-8", no_metadata(), pay(&runs, 25))
        .await
        .unwrap();
    assert!(orders.store().load_snapshot(&k).await.unwrap().is_none());
    tx.rollback().await.unwrap();
    assert!(orders.store().load_snapshot(&k).await.unwrap().is_none());

    let mut tx = pool.begin().await.unwrap();
    orders
        .execute_in(&mut tx, "o-8", no_metadata(), place(70))
        .await
        .unwrap();
    orders
        .execute_in(&mut tx, "o-8", no_metadata(), pay(&runs, 30))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let snapshot = orders.store().load_snapshot(&k).await.unwrap().unwrap();
    assert_eq!(snapshot.version, 2);
    let state: Order = serde_json::from_slice(&snapshot.state).unwrap();
    assert_eq!(
        state,
        Order {
            total: Some(70),
            paid: 30
        }
    );
    // A transaction starts from the snapshot and loads the rest through itself.
    let mut tx = pool.begin().await.unwrap();
    let paid = orders
        .execute_in(&mut tx, "o-8", no_metadata(), pay_due)
        .await
        .unwrap();
    assert_eq!((paid.version, paid.state.paid), (3, 70));
    tx.commit().await.unwrap();
}

/// The relay publishes what a transaction committed, with its command id, and nothing of one
/// that rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_only_committed_commands() {
    let server = NatsServer::start();
    let stream = support::store(&server, "PGTX_RELAY").await;
    let orders = orders("jetsource_pgtx_relay").await;
    let pool = orders.store().pool().clone();
    let mut tx = pool.begin().await.unwrap();
    orders
        .execute_in(&mut tx, "o-9", with_id("place-o-9"), place(10))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    orders
        .execute_in(&mut tx, "o-9", with_id("pay-o-9"), pay_due)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let relay = Relay::new(
        orders.store().clone(),
        stream.clone(),
        RelayConfig::new("pgtx"),
    );
    assert_eq!(relay.publish_committed().await.unwrap(), 1);
    let published = stream.load(&key(Order::TYPE, "o-9"), 1).await.unwrap();
    let published: Vec<_> = (published.iter())
        .map(|e| (e.sequence, e.name.clone(), e.command_id.clone()))
        .collect();
    assert_eq!(
        published,
        [(1, "placed".to_owned(), Some("place-o-9".to_owned()))]
    );
    // Unused by the rollback, the id pays now, and the relay publishes that.
    let paid = orders.execute_with("o-9", with_id("pay-o-9"), pay_due);
    assert!(!paid.await.unwrap().duplicate);
    assert_eq!(relay.publish_committed().await.unwrap(), 1);
}
