//! A PostgreSQL projection fed by the subscriber runtime from a real nats-server, written to the
//! PostgreSQL at 127.0.0.1:5432 (database `test`), in a schema of its own that is dropped after.
//!
//! The process-kill test runs the projection in child processes (this test binary again, running
//! the ignored `projection_worker`) and kills them with SIGKILL.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use jetsource::projection::{sqlx, PgProjection, Projection};
use jetsource::subscriber::{EventContext, HandlerError, SubscriberConfig};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, Event, EventSet, EventStore, ExpectedVersion,
    JetStreamConnectOptions, JetStreamStore, NewEvent, StreamConfig,
};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgConnection};
use support::workers::TestProcess;

const DATABASE: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: i64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum BalanceEvents {
    Deposited(Deposited),
}

/// Balances per account, plus a log of every application so double applications show.
struct Balances {
    schema: String,
}

impl Projection for Balances {
    type Event = BalanceEvents;

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: BalanceEvents,
        ctx: &EventContext,
    ) -> Result<(), HandlerError> {
        let BalanceEvents::Deposited(d) = event;
        // Safe to assert: the schema names are the tests' own literals.
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {s}.balances (account, total, events) VALUES ($1, $2, 1)
             ON CONFLICT (account) DO UPDATE
                SET total = {s}.balances.total + $2, events = {s}.balances.events + 1",
            s = self.schema
        )))
        .bind(&ctx.aggregate_id)
        .bind(d.amount)
        .execute(&mut *tx)
        .await
        .map_err(HandlerError::retryable)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {}.applied (event_id, account, sequence) VALUES ($1, $2, $3)",
            self.schema
        )))
        .bind(ctx.event_id.to_string())
        .bind(&ctx.aggregate_id)
        .bind(ctx.sequence as i64)
        .execute(&mut *tx)
        .await
        .map_err(HandlerError::retryable)?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(AssertSqlSafe(format!(
            "TRUNCATE {s}.balances, {s}.applied",
            s = self.schema
        )))
        .execute(tx)
        .await
        .map(|_| ())
    }
}

/// A schema of its own, dropped when the test ends (also on panic).
struct Schema {
    pool: sqlx::PgPool,
    name: String,
}

impl Schema {
    async fn create(pool: &sqlx::PgPool, name: &str) -> Schema {
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE"
        )))
        .execute(pool)
        .await
        .expect("drop old schema");
        for ddl in [
            format!("CREATE SCHEMA {name}"),
            format!("CREATE TABLE {name}.balances (account TEXT PRIMARY KEY, total BIGINT NOT NULL, events BIGINT NOT NULL)"),
            format!("CREATE TABLE {name}.applied (n BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL, account TEXT NOT NULL, sequence BIGINT NOT NULL)"),
        ] {
            sqlx::query(AssertSqlSafe(ddl)).execute(pool).await.expect("schema");
        }
        Schema {
            pool: pool.clone(),
            name: name.to_owned(),
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let pool = self.pool.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        // Drop runs inside the test's runtime: do the cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| {
                    rt.block_on(async move { sqlx::query(AssertSqlSafe(sql)).execute(&pool).await })
                })
        })
        .join();
    }
}

fn deposit(amount: i64) -> NewEvent {
    let encoded = Deposited { amount }.encode().expect("encode");
    NewEvent {
        id: uuid::Uuid::now_v7(),
        name: encoded.name,
        version: encoded.version,
        codec: encoded.codec,
        payload: encoded.payload.into(),
        timestamp: SystemTime::now(),
        correlation_id: "corr".into(),
        causation_id: None,
        headers: BTreeMap::new(),
    }
}

/// Appends `per_aggregate` deposits (amount = a * 1000 + n) to each aggregate, one event per
/// append, in parallel across aggregates. Returns the expected balances.
async fn seed(
    store: &JetStreamStore,
    aggregates: i64,
    per_aggregate: i64,
) -> BTreeMap<String, i64> {
    let mut tasks = Vec::new();
    for a in 0..aggregates {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = AggregateKey::new("account", AggregateId::new(format!("a{a}")).expect("id"));
            let mut total = 0;
            for n in 1..=per_aggregate {
                total += a * 1000 + n;
                store
                    .append(
                        &key,
                        ExpectedVersion::Any,
                        None,
                        vec![deposit(a * 1000 + n)],
                    )
                    .await
                    .expect("append");
            }
            (format!("a{a}"), total)
        }));
    }
    let mut expected = BTreeMap::new();
    for task in tasks {
        let (account, total) = task.await.expect("seed");
        expected.insert(account, total);
    }
    expected
}

async fn applied(pool: &sqlx::PgPool, schema: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.applied"
    )))
    .fetch_one(pool)
    .await
    .expect("count");
    n
}

async fn wait_applied(pool: &sqlx::PgPool, schema: &str, at_least: i64) {
    let start = Instant::now();
    while applied(pool, schema).await < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "gave up waiting for {at_least} applications"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn balances(pool: &sqlx::PgPool, schema: &str) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT account, total FROM {schema}.balances"
    )))
    .fetch_all(pool)
    .await
    .expect("balances");
    rows.into_iter().collect()
}

/// No event applied twice, and each account's events applied in sequence order 1..=n.
async fn assert_applied_once_in_order(pool: &sqlx::PgPool, schema: &str, per_aggregate: i64) {
    let (rows, distinct): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT event_id) FROM {schema}.applied"
    )))
    .fetch_one(pool)
    .await
    .expect("count");
    assert_eq!(rows, distinct, "an event was applied twice");
    let sequences: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT account, sequence FROM {schema}.applied ORDER BY n"
    )))
    .fetch_all(pool)
    .await
    .expect("applied");
    let mut per_account: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (account, sequence) in sequences {
        per_account.entry(account).or_default().push(sequence);
    }
    let expected: Vec<i64> = (1..=per_aggregate).collect();
    for (account, seqs) in per_account {
        assert_eq!(seqs, expected, "account {account} applied out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_and_restarts_leave_the_read_model_equal_to_a_full_replay() {
    const AGGREGATES: i64 = 100;
    const PER_AGGREGATE: i64 = 100;
    const TOTAL: i64 = AGGREGATES * PER_AGGREGATE;
    let server = NatsServer::start();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(DATABASE)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432, database test");
    let schema = Schema::create(&pool, "jetsource_test_projection_crash").await;
    let options = JetStreamConnectOptions::new([server.url()]);
    let config = StreamConfig::new("BANK", "bank");
    let seeding = JetStreamStore::connect(options.clone(), config.clone())
        .await
        .expect("connect");
    let expected = seed(&seeding, AGGREGATES, PER_AGGREGATE).await;

    let subscriber = SubscriberConfig::new("balances")
        .ack_wait(Duration::from_secs(1))
        .concurrency(16)
        .backoff([Duration::from_millis(50)]);
    let projection = PgProjection::new(
        pool.clone(),
        Balances {
            schema: schema.name.clone(),
        },
        subscriber,
    )
    .checkpoint_schema(schema.name.clone());
    projection.setup().await.expect("setup");

    // ANCHOR: crashes
    // Three crashes (no acks, handlers dropped mid-transaction) and one graceful stop, each
    // "process" on a connection of its own, while events are being consumed.
    for round in 1..=4 {
        let store = JetStreamStore::connect(options.clone(), config.clone())
            .await
            .expect("connect");
        let running = projection.start(&store).await.expect("start");
        wait_applied(&pool, &schema.name, TOTAL * round / 5).await;
        if round == 4 {
            running.shutdown().await.expect("shutdown");
        } else {
            running.abort().await;
        }
    }
    // ANCHOR_END: crashes
    let store = JetStreamStore::connect(options.clone(), config.clone())
        .await
        .expect("connect");
    let running = projection.start(&store).await.expect("start");
    wait_applied(&pool, &schema.name, TOTAL).await;
    running.shutdown().await.expect("shutdown");

    assert_eq!(applied(&pool, &schema.name).await, TOTAL);
    assert_applied_once_in_order(&pool, &schema.name, PER_AGGREGATE).await;
    let incremental = balances(&pool, &schema.name).await;
    assert_eq!(incremental, expected);
    assert_eq!(
        projection
            .checkpoint("account", "a7")
            .await
            .expect("checkpoint"),
        Some(PER_AGGREGATE as u64)
    );

    // One call resets everything; the next start replays the stream to the same read model.
    projection.rebuild(&store).await.expect("rebuild");
    assert_eq!(applied(&pool, &schema.name).await, 0);
    assert_eq!(
        projection
            .checkpoint("account", "a7")
            .await
            .expect("checkpoint"),
        None
    );
    let running = projection.start(&store).await.expect("start");
    wait_applied(&pool, &schema.name, TOTAL).await;
    let stats = running.shutdown().await.expect("shutdown");
    assert_eq!(stats.handled, TOTAL as u64);
    assert_eq!(balances(&pool, &schema.name).await, incremental);
    assert_applied_once_in_order(&pool, &schema.name, PER_AGGREGATE).await;
}

const WORKER_URL: &str = "JETSOURCE_PROJECTION_URL";
const WORKER_SCHEMA: &str = "JETSOURCE_PROJECTION_SCHEMA";

fn killable_projection(pool: sqlx::PgPool, schema: &str) -> PgProjection<Balances> {
    let subscriber = SubscriberConfig::new("balances")
        .ack_wait(Duration::from_secs(1))
        .concurrency(16)
        .backoff([Duration::from_millis(50)]);
    PgProjection::new(
        pool,
        Balances {
            schema: schema.to_owned(),
        },
        subscriber,
    )
    .checkpoint_schema(schema)
}

/// One projection process: consumes until it is killed. Ignored in normal runs; the test below
/// starts it in child processes.
#[test]
#[ignore = "a worker process of a_projection_process_killed_three_times_and_a_server_kill_lose_nothing"]
fn projection_worker() {
    let (Ok(url), Ok(schema)) = (std::env::var(WORKER_URL), std::env::var(WORKER_SCHEMA)) else {
        panic!("run by a_projection_process_killed_three_times_and_a_server_kill_lose_nothing");
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(20)
            .connect(DATABASE)
            .await
            .expect("PostgreSQL");
        let store = JetStreamStore::connect(
            JetStreamConnectOptions::new([url]),
            StreamConfig::new("KILLED", "killed"),
        )
        .await
        .expect("connect");
        let _running = killable_projection(pool, &schema)
            .start(&store)
            .await
            .expect("start");
        std::future::pending::<()>().await;
    });
}

/// A projection process, killed with SIGKILL when dropped: no shutdown code runs in the
/// child, nothing is acked on the way out.
fn spawn_worker(url: &str, schema: &str) -> TestProcess {
    TestProcess::spawn(
        "projection_worker",
        [(WORKER_URL, url), (WORKER_SCHEMA, schema)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_process_killed_three_times_and_a_server_kill_lose_nothing() {
    const AGGREGATES: i64 = 100;
    const PER_AGGREGATE: i64 = 100;
    const TOTAL: i64 = AGGREGATES * PER_AGGREGATE;
    let mut server = NatsServer::start();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect(DATABASE)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432, database test");
    let schema = Schema::create(&pool, "jetsource_test_projection_kill").await;
    let seeding = JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new("KILLED", "killed"),
    )
    .await
    .expect("connect");
    let expected = seed(&seeding, AGGREGATES, PER_AGGREGATE).await;
    let projection = killable_projection(pool.clone(), &schema.name);
    projection.setup().await.expect("setup");

    let mut kills = Vec::new();
    for round in 1..=3 {
        let worker = spawn_worker(&server.url(), &schema.name);
        wait_applied(&pool, &schema.name, TOTAL * round / 5).await;
        drop(worker);
        kills.push(applied(&pool, &schema.name).await);
    }
    // The server dies too (SIGKILL, restarted on the same store) while a fourth process
    // consumes; the process reconnects and goes on.
    let worker = spawn_worker(&server.url(), &schema.name);
    wait_applied(&pool, &schema.name, TOTAL * 4 / 5).await;
    server.restart();
    kills.push(applied(&pool, &schema.name).await);
    wait_applied(&pool, &schema.name, TOTAL).await;
    // Anything applied twice would still be on its way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(worker);

    eprintln!("applied at each kill (3 processes, then the server): {kills:?}");
    assert_eq!(applied(&pool, &schema.name).await, TOTAL);
    assert_applied_once_in_order(&pool, &schema.name, PER_AGGREGATE).await;
    assert_eq!(balances(&pool, &schema.name).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaled_out_projection_rebuilds_every_partition() {
    const AGGREGATES: i64 = 12;
    const PER_AGGREGATE: i64 = 10;
    const TOTAL: i64 = AGGREGATES * PER_AGGREGATE;
    let server = NatsServer::start();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect(DATABASE)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432, database test");
    let schema = Schema::create(&pool, "jetsource_test_projection_partitions").await;
    let store = JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new("PARTED", "parted"),
    )
    .await
    .expect("connect");
    let expected = seed(&store, AGGREGATES, PER_AGGREGATE).await;
    let config = SubscriberConfig::new("parted_balances")
        .partitions(3)
        .member_ttl(Duration::from_secs(1))
        .ack_wait(Duration::from_secs(1));
    let projection = PgProjection::new(
        pool.clone(),
        Balances {
            schema: schema.name.clone(),
        },
        config,
    )
    .checkpoint_schema(schema.name.clone());
    projection.setup().await.expect("setup");

    let running = projection.start(&store).await.expect("start");
    wait_applied(&pool, &schema.name, TOTAL).await;
    running.shutdown().await.expect("shutdown");
    assert_eq!(balances(&pool, &schema.name).await, expected);

    // Every partition's consumer is forgotten: the next start replays all of them.
    projection.rebuild(&store).await.expect("rebuild");
    assert_eq!(applied(&pool, &schema.name).await, 0);
    let running = projection.start(&store).await.expect("start again");
    wait_applied(&pool, &schema.name, TOTAL).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.shutdown().await.expect("shutdown");
    assert_eq!(applied(&pool, &schema.name).await, TOTAL);
    assert_applied_once_in_order(&pool, &schema.name, PER_AGGREGATE).await;
    assert_eq!(balances(&pool, &schema.name).await, expected);
}

async fn pool() -> sqlx::PgPool {
    sqlx::PgPool::connect(DATABASE)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432, database test")
}

/// The `BANK` stream on `server`.
async fn bank(server: &NatsServer) -> JetStreamStore {
    JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new("BANK", "bank"),
    )
    .await
    .expect("connect")
}

/// An account for commands: the projection's read model follows it.
#[derive(Default, Debug)]
struct Account;

impl jetsource::Aggregate for Account {
    const TYPE: &'static str = "account";
    type Event = BalanceEvents;

    fn apply_event(&mut self, _: BalanceEvents) {}
}

/// Read-your-writes: after a command, `wait_for` its position and the read model has the
/// command's event, on a projection scaled out over partitions. A second `PgProjection` value
/// (as another process would build) waits on the durable consumer without running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_after_wait_for_sees_the_command_on_a_scaled_out_projection() {
    let server = NatsServer::start();
    let pool = pool().await;
    let schema = Schema::create(&pool, "jetsource_test_projection_read_your_writes").await;
    let store = bank(&server).await;
    let projection = |pool: &sqlx::PgPool| {
        let config = SubscriberConfig::new("balances").partitions(4);
        let balances = Balances {
            schema: schema.name.clone(),
        };
        PgProjection::new(pool.clone(), balances, config).checkpoint_schema(schema.name.clone())
    };
    let running_one = projection(&pool);
    running_one.setup().await.expect("setup");
    let running = running_one.start(&store).await.expect("start");
    let elsewhere = projection(&pool);
    let accounts = jetsource::Repository::<Account, _>::new(store.clone());

    for (n, account) in ["a1", "a2", "a3", "a1", "a4", "a2"].into_iter().enumerate() {
        let amount = n as i64 + 1;
        let committed = accounts
            .execute(account, |_| {
                Ok::<_, std::convert::Infallible>(vec![BalanceEvents::Deposited(Deposited {
                    amount,
                })])
            })
            .await
            .expect("command");
        assert_eq!(committed.position, n as u64 + 1, "one event per command");
        let waiter = if n % 2 == 0 { &elsewhere } else { &running_one };
        waiter
            .wait_for(&store, committed.position, Duration::from_secs(30))
            .await
            .expect("applied");
        assert_eq!(applied(&pool, &schema.name).await, n as i64 + 1);
    }
    running
        .wait_for(6, Duration::from_secs(30))
        .await
        .expect("the handle answers too");
    assert!(elsewhere.caught_up(&store).await.expect("progress"));
    assert_eq!(
        balances(&pool, &schema.name).await,
        BTreeMap::from([
            ("a1".to_owned(), 1 + 4),
            ("a2".to_owned(), 2 + 6),
            ("a3".to_owned(), 3),
            ("a4".to_owned(), 5),
        ])
    );
    running.shutdown().await.expect("shutdown");
}

/// Fails permanently on one amount; applies the rest as [`Balances`] does.
struct FailsOn {
    balances: Balances,
    poison: i64,
}

impl Projection for FailsOn {
    type Event = BalanceEvents;

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: BalanceEvents,
        ctx: &EventContext,
    ) -> Result<(), HandlerError> {
        let BalanceEvents::Deposited(d) = &event;
        if d.amount == self.poison {
            return Err(HandlerError::permanent(std::io::Error::other("poison")));
        }
        self.balances.apply(tx, event, ctx).await
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        self.balances.reset(tx).await
    }
}

/// Events share transactions; one that fails is dead-lettered alone while the others of its
/// batch are applied, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_leaves_the_rest_of_its_batch_applied_once() {
    const AGGREGATES: i64 = 40;
    const PER_AGGREGATE: i64 = 5;
    let server = NatsServer::start();
    let pool = pool().await;
    let schema = Schema::create(&pool, "jetsource_test_projection_batches").await;
    // Rows inserted by one transaction share its id.
    sqlx::query(AssertSqlSafe(format!(
        "ALTER TABLE {}.applied ADD COLUMN tx BIGINT NOT NULL DEFAULT txid_current()",
        schema.name
    )))
    .execute(&pool)
    .await
    .expect("tx column");
    let store = bank(&server).await;
    let mut expected = seed(&store, AGGREGATES, PER_AGGREGATE).await;
    let poison = 7 * 1000 + 3;
    *expected.get_mut("a7").unwrap() -= poison;

    let config = SubscriberConfig::new("balances")
        .concurrency(32)
        .backoff([Duration::from_millis(20)]);
    let fails_on = FailsOn {
        balances: Balances {
            schema: schema.name.clone(),
        },
        poison,
    };
    let projection = PgProjection::new(pool.clone(), fails_on, config)
        .checkpoint_schema(schema.name.clone())
        .batching(jetsource::projection::Batching::new(
            32,
            Duration::from_millis(20),
        ));
    projection.setup().await.expect("setup");
    let running = projection.start(&store).await.expect("start");
    running
        .wait_for((AGGREGATES * PER_AGGREGATE) as u64, Duration::from_secs(60))
        .await
        .expect("everything settled");
    let stats = running.shutdown().await.expect("shutdown");
    assert_eq!(stats.dead_lettered, 1);

    let total = AGGREGATES * PER_AGGREGATE - 1;
    assert_eq!(applied(&pool, &schema.name).await, total);
    let (rows, distinct, transactions): (i64, i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT event_id), count(DISTINCT tx) FROM {}.applied",
        schema.name
    )))
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(rows, distinct, "an event was applied twice");
    assert!(
        transactions < rows,
        "{rows} events in {transactions} transactions: nothing was batched"
    );
    assert_eq!(balances(&pool, &schema.name).await, expected);
}
