//! A PostgreSQL projection beside raw sqlx writing the same rows, in one process, rounds
//! interleaved: what exactly-once consumption from JetStream costs over a hand-written bulk load.
//!
//! ```text
//! cargo bench -p jetsource-tests --bench projection                        # release figures
//! PROJECTION_BENCH=short cargo test -p jetsource-tests --bench projection  # CI's short run
//! ```
//!
//! The stream holds deposits spread over 100 accounts (a nats-server of its own, R1 file
//! storage). Each workload writes one row per deposit (`event_id`, `account`, `amount`) into a
//! table of its own schema, with the same `INSERT`:
//! - `jetsource, batched`: a `PgProjection` with `Batching::new(batch, 1 ms)` and the subscriber's
//!   `concurrency` equal to the batch size, timed from `start` until `wait_for` the last position
//!   returns (every event applied, its checkpoint stored and acknowledged);
//! - `jetsource, one transaction per event`: the same with `Batching::off()`;
//! - `raw sqlx`: the same rows, already in memory, inserted on one connection in transactions of
//!   `batch` rows, one after the other: what a hand-written loader does, without reading NATS,
//!   without checkpoints and without acks.
//!
//! Each prints events/s (median of the rounds) and the ratio to raw sqlx. Between rounds the
//! projection is rebuilt (consumer, checkpoints and rows deleted). Every run checks that each
//! event's row is there exactly once.
//!
//! Sizes (environment): `PROJECTION_BENCH=short|full` (default: full under `cargo bench`, short
//! otherwise), `PROJECTION_BENCH_ROUNDS`, `PROJECTION_BENCH_EVENTS`, `PROJECTION_BENCH_BATCH`.

use std::time::{Duration, Instant};

use jetsource::projection::sqlx::{self, PgConnection, PgPool};
use jetsource::projection::{Batching, PgProjection, Projection};
use jetsource::subscriber::{EventContext, HandlerError, SubscriberConfig};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, Event, EventSet, EventStore, ExpectedVersion,
    JetStreamConnectOptions, JetStreamStore, NewEvent, StreamConfig,
};
use serde::{Deserialize, Serialize};

const DATABASE: &str = "postgres://postgres@127.0.0.1:5432/test";
const SCHEMA: &str = "jetsource_bench_projection";
const ACCOUNTS: usize = 100;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: i64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum Deposits {
    Deposited(Deposited),
}

const INSERT: &str = "INSERT INTO jetsource_bench_projection.deposits (event_id, account, amount) \
                      VALUES ($1, $2, $3)";

/// One row per deposit.
struct Rows;

impl Projection for Rows {
    type Event = Deposits;

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: Deposits,
        ctx: &EventContext,
    ) -> Result<(), HandlerError> {
        let Deposits::Deposited(d) = event;
        sqlx::query(INSERT)
            .bind(ctx.event_id)
            .bind(&ctx.aggregate_id)
            .bind(d.amount)
            .execute(tx)
            .await
            .map_err(HandlerError::retryable)?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("TRUNCATE jetsource_bench_projection.deposits")
            .execute(tx)
            .await
            .map(|_| ())
    }
}

struct Sizes {
    rounds: usize,
    events: usize,
    batch: usize,
    concurrency: usize,
}

fn number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Sizes {
    fn from_env() -> Sizes {
        let full = match std::env::var("PROJECTION_BENCH").as_deref() {
            Ok("full") => true,
            Ok("short") => false,
            _ => !cfg!(debug_assertions),
        };
        Sizes {
            rounds: number("PROJECTION_BENCH_ROUNDS", if full { 3 } else { 1 }),
            events: number("PROJECTION_BENCH_EVENTS", if full { 20_000 } else { 400 }),
            batch: number("PROJECTION_BENCH_BATCH", 32).max(1),
            concurrency: number("PROJECTION_BENCH_CONCURRENCY", 0),
        }
    }
}

/// Appends `events` deposits over [`ACCOUNTS`] accounts, in parallel across accounts; returns
/// the rows they stand for, in stream order, and the last position.
async fn seed(store: &JetStreamStore, events: usize) -> (Vec<(uuid::Uuid, String, i64)>, u64) {
    let per_account = events.div_ceil(ACCOUNTS);
    let mut tasks = Vec::new();
    for a in 0..ACCOUNTS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = AggregateKey::new("account", AggregateId::new(format!("a{a}")).unwrap());
            for n in 0..per_account {
                let encoded = Deposited { amount: n as i64 }.encode().expect("encode");
                let event = NewEvent {
                    id: uuid::Uuid::now_v7(),
                    name: encoded.name,
                    version: encoded.version,
                    codec: encoded.codec,
                    payload: encoded.payload.into(),
                    timestamp: std::time::SystemTime::now(),
                    correlation_id: "bench".into(),
                    causation_id: None,
                    headers: Default::default(),
                };
                store
                    .append(&key, ExpectedVersion::Any, None, vec![event])
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("seed");
    }
    let mut rows = Vec::new();
    let mut from = 1;
    let mut last = 0;
    loop {
        let page = store.read_all(from, 1_000).await.expect("read");
        let Some(newest) = page.last() else { break };
        from = newest.position + 1;
        last = newest.position;
        for stored in &page {
            let Some(Deposits::Deposited(d)) = Deposits::decode(stored.raw()).expect("decode")
            else {
                continue;
            };
            rows.push((stored.id, stored.aggregate_id.clone(), d.amount));
        }
    }
    (rows, last)
}

async fn reset_schema(pool: &PgPool) {
    for ddl in [
        format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"),
        format!("CREATE SCHEMA {SCHEMA}"),
        format!(
            "CREATE TABLE {SCHEMA}.deposits (event_id UUID PRIMARY KEY, account TEXT NOT NULL, \
             amount BIGINT NOT NULL)"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(ddl))
            .execute(pool)
            .await
            .expect("schema");
    }
}

/// Every row exactly once (the primary key refuses a second one).
async fn assert_rows(pool: &PgPool, expected: usize, what: &str) {
    let (rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM jetsource_bench_projection.deposits")
            .fetch_one(pool)
            .await
            .expect("count");
    assert_eq!(rows as usize, expected, "{what}: rows written");
}

async fn truncate(pool: &PgPool) {
    sqlx::query("TRUNCATE jetsource_bench_projection.deposits")
        .execute(pool)
        .await
        .expect("truncate");
}

/// The projection from the first event to caught up; events per second.
async fn projection_round(
    store: &JetStreamStore,
    pool: &PgPool,
    batching: Batching,
    concurrency: usize,
    last: u64,
    events: usize,
) -> f64 {
    let mut config = SubscriberConfig::new("bench_rows");
    if concurrency > 0 {
        config = config.concurrency(concurrency);
    }
    let projection = PgProjection::new(pool.clone(), Rows, config)
        .checkpoint_schema(SCHEMA)
        .batching(batching);
    projection.setup().await.expect("setup");
    projection.rebuild(store).await.expect("rebuild");
    let started = Instant::now();
    let running = projection.start(store).await.expect("start");
    running
        .wait_for(last, Duration::from_secs(600))
        .await
        .expect("caught up");
    let elapsed = started.elapsed();
    running.shutdown().await.expect("shutdown");
    assert_rows(pool, events, "jetsource").await;
    events as f64 / elapsed.as_secs_f64()
}

/// The same rows inserted by hand in transactions of `batch`; events per second.
async fn raw_round(pool: &PgPool, rows: &[(uuid::Uuid, String, i64)], batch: usize) -> f64 {
    truncate(pool).await;
    let mut connection = pool.acquire().await.expect("connection");
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        let mut tx = sqlx::Connection::begin(&mut *connection)
            .await
            .expect("begin");
        for (id, account, amount) in chunk {
            sqlx::query(INSERT)
                .bind(id)
                .bind(account)
                .bind(amount)
                .execute(&mut *tx)
                .await
                .expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    let elapsed = started.elapsed();
    drop(connection);
    assert_rows(pool, rows.len(), "raw sqlx").await;
    rows.len() as f64 / elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let sizes = Sizes::from_env();
    let server = NatsServer::start();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(DATABASE)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432, database test");
    reset_schema(&pool).await;
    let store = JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new("BENCH", "bench"),
    )
    .await
    .expect("connect");
    let (rows, last) = seed(&store, sizes.events).await;
    let events = rows.len();
    println!(
        "projection: {events} events over {ACCOUNTS} accounts, batches of {}, {} rounds",
        sizes.batch, sizes.rounds
    );

    let (mut batched, mut alone, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        let batching = Batching::new(sizes.batch, Duration::from_millis(1));
        let concurrency = sizes.concurrency;
        batched.push(projection_round(&store, &pool, batching, concurrency, last, events).await);
        raw.push(raw_round(&pool, &rows, sizes.batch).await);
        let off = Batching::off();
        alone.push(projection_round(&store, &pool, off, concurrency, last, events).await);
    }
    let raw = median(raw);
    for (what, per_second) in [
        ("jetsource, batched", median(batched)),
        ("jetsource, one transaction per event", median(alone)),
    ] {
        println!(
            "  {what:<38} {per_second:>9.0} events/s  {:.2}x raw sqlx",
            per_second / raw
        );
    }
    println!(
        "  {:<38} {raw:>9.0} events/s",
        "raw sqlx, same rows and batches"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"
    )))
    .execute(&pool)
    .await
    .expect("drop schema");
}
