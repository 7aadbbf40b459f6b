//! `PgStore` beside raw sqlx on the same rows, in one process, rounds interleaved: what the
//! PostgreSQL store costs over the statements a user would write by hand.
//!
//! ```text
//! cargo bench -p jetsource-tests --bench postgres                        # release figures
//! POSTGRES_BENCH=short cargo test -p jetsource-tests --bench postgres    # CI's short run
//! ```
//!
//! Workloads (each prints jetsource's median, raw sqlx's median and their ratio):
//! - `append 1 event`: 100 aggregates in parallel tasks, each appending single events one at a
//!   time with `ExpectedVersion::Exact` and no command id, through `PgStore::append` and through
//!   a cached `Repository::execute`, beside one autocommit `INSERT` per event with the sequence
//!   known by the writer (optimistic concurrency through the unique constraint);
//! - `append 10 events`: the same with 10 events per append (one command), beside one
//!   multi-row `INSERT`;
//! - `load 1000 events` and `load 50 events`: an aggregate whose events are spread through a
//!   table of 100k events, through `PgStore::load` beside a `SELECT` of the same columns ordered
//!   by sequence and decoded into a `Vec` of tuples.
//!
//! The raw table has the columns, the unique (type, id, sequence) constraint, the command-id
//! partial index and the `transaction_id` column of `jetsource_events`, but not the relay's
//! index on `transaction_id` (a hand-written store has no relay; add it with
//! `POSTGRES_BENCH_SETUP_SQL` to compare the statements alone). It lives in the same schema and
//! both sides use the same pool. Every append workload starts on empty tables. Each run works in
//! its own schema, dropped when it ends. Append lines also give the CPU time per event of this
//! process and of the pool's PostgreSQL backends (from /proc), which says on which side a
//! difference lies.
//!
//! Sizes (environment): `POSTGRES_BENCH=short|full` (default: full under `cargo bench`, short
//! otherwise), `POSTGRES_BENCH_ROUNDS`, `POSTGRES_BENCH_APPENDS` (single-event appends per
//! aggregate), `POSTGRES_BENCH_BATCH_APPENDS` (10-event appends per aggregate),
//! `POSTGRES_BENCH_EVENTS` (events in the load table), `POSTGRES_BENCH_LOADS` (loads per side
//! and round), `POSTGRES_BENCH_POOL` (connections). Every run checks what it measured: every
//! append stored at its sequence, every load complete and in order.
//!
//! For profiling: `POSTGRES_BENCH_ONLY=append|append_single|append_batch|load` runs those
//! workloads only; `POSTGRES_BENCH_WRITERS=store,repository,raw` runs the appends of those
//! writers once each, without rounds or ratios (a steady load to attach `perf` to);
//! `POSTGRES_BENCH_SETUP_SQL=file` runs the file's SQL in the schema after the migrations (a
//! variant of `jetsource_append` or of the tables, without rebuilding).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use jetsource::projection::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use jetsource::projection::sqlx::{self, AssertSqlSafe, PgPool, QueryBuilder};
use jetsource::{
    Aggregate, AggregateId, AggregateKey, Apply, Codec, Event, EventSet, EventStore,
    ExpectedVersion, NewEvent, PgStore, Repository,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const DATABASE: &str = "postgres://postgres@127.0.0.1:5432/test";
const AGGREGATES: usize = 100;
const BATCH: usize = 10;
const LOAD_SIZES: [usize; 2] = [1000, 50];

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
    currency: String,
    note: String,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(name = "account", events = AccountEvent)]
struct Account {
    deposits: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, _: Deposited) {
        self.deposits += 1;
    }
}

/// A deposit whose JSON payload is 140 bytes, as in the peers bench.
fn deposit() -> Deposited {
    let envelope = r#"{"amount":1234,"currency":"EUR","note":""}"#;
    let mut note = String::from("salary for november, thanks");
    while envelope.len() + note.len() < 140 {
        note.push('.');
    }
    Deposited {
        amount: 1234,
        currency: "EUR".into(),
        note,
    }
}

fn payload() -> Vec<u8> {
    serde_json::to_vec(&deposit()).expect("json")
}

/// The events one append carries, as the repository would build them.
fn new_events(count: usize) -> Vec<NewEvent> {
    let correlation = Uuid::now_v7();
    (0..count)
        .map(|i| NewEvent {
            id: if i == 0 { correlation } else { Uuid::now_v7() },
            name: "deposited",
            version: 1,
            codec: Codec::Json,
            payload: payload().into(),
            timestamp: SystemTime::now(),
            correlation_id: correlation.to_string(),
            causation_id: None,
            headers: BTreeMap::new(),
        })
        .collect()
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
}

/// The table a user writing the store by hand would make: `jetsource_events`' columns,
/// unique constraint and command-id index.
const RAW_TABLE: &str = "
CREATE TABLE raw_events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    aggregate_type  TEXT   NOT NULL,
    aggregate_id    TEXT   NOT NULL,
    sequence        BIGINT NOT NULL CHECK (sequence > 0),
    event_id        UUID   NOT NULL,
    name            TEXT   NOT NULL,
    version         INTEGER NOT NULL,
    codec           TEXT   NOT NULL,
    payload         BYTEA  NOT NULL,
    occurred_at_ns  BIGINT NOT NULL,
    correlation_id  TEXT   NOT NULL,
    causation_id    TEXT,
    command_id      TEXT,
    headers         JSONB  NOT NULL DEFAULT '{}',
    transaction_id  XID8   NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (aggregate_type, aggregate_id, sequence)
);
CREATE INDEX raw_events_command ON raw_events (aggregate_type, aggregate_id, command_id)
    WHERE command_id IS NOT NULL;
";

const RAW_INSERT: &str = "INSERT INTO raw_events (aggregate_type, aggregate_id, sequence, \
     event_id, name, version, codec, payload, occurred_at_ns, correlation_id, causation_id, \
     command_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const RAW_SELECT: &str = "SELECT position, aggregate_type, aggregate_id, sequence, event_id, \
     name, version, codec, payload, occurred_at_ns, correlation_id, causation_id, command_id, \
     headers::TEXT FROM raw_events WHERE aggregate_type = $1 AND aggregate_id = $2 \
     AND sequence >= $3 ORDER BY sequence";

/// A row as the raw user decodes it.
type RawRow = (
    i64,
    String,
    String,
    i64,
    Uuid,
    String,
    i32,
    String,
    Vec<u8>,
    i64,
    String,
    Option<String>,
    Option<String>,
    String,
);

struct Sizes {
    short: bool,
    rounds: usize,
    appends: usize,
    batch_appends: usize,
    events: usize,
    loads: usize,
    pool: u32,
    only: Option<String>,
}

impl Sizes {
    fn from_env() -> Self {
        let short = match std::env::var("POSTGRES_BENCH").as_deref() {
            Ok("short") => true,
            Ok("full") => false,
            Ok(other) => panic!("POSTGRES_BENCH: short or full, not {other:?}"),
            // `cargo bench` passes `--bench`; `cargo test --bench postgres` does not.
            Err(_) => !std::env::args().any(|a| a == "--bench"),
        };
        let number = |name: &str, full: usize, short_value: usize| -> usize {
            std::env::var(name)
                .ok()
                .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: a number")))
                .unwrap_or(if short { short_value } else { full })
        };
        let sizes = Sizes {
            short,
            rounds: number("POSTGRES_BENCH_ROUNDS", 5, 1),
            appends: number("POSTGRES_BENCH_APPENDS", 50, 3),
            batch_appends: number("POSTGRES_BENCH_BATCH_APPENDS", 10, 2),
            events: number("POSTGRES_BENCH_EVENTS", 100_000, 10_000),
            loads: number("POSTGRES_BENCH_LOADS", 21, 2),
            pool: number("POSTGRES_BENCH_POOL", 16, 16) as u32,
            only: std::env::var("POSTGRES_BENCH_ONLY").ok(),
        };
        assert!(
            sizes.rounds > 0 && sizes.loads > 0,
            "at least one round and load"
        );
        assert!(
            sizes.events >= 10_000 && sizes.events.is_multiple_of(1000),
            "POSTGRES_BENCH_EVENTS: a multiple of 1,000, at least 10,000"
        );
        sizes
    }

    fn runs(&self, part: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| part.starts_with(only) || only.starts_with(part))
    }
}

/// A pool on a fresh schema holding jetsource's tables and the raw table.
async fn setup(schema: &str, pool_size: u32) -> PgPool {
    let admin = PgPool::connect(DATABASE)
        .await
        .expect("PostgreSQL answers on 127.0.0.1:5432 (scripts/start-postgres.sh)");
    // Safe to assert: schema and table names are the benchmark's own literals.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&admin)
    .await
    .expect("fresh schema");
    admin.close().await;
    let options: PgConnectOptions = DATABASE.parse().expect("database url");
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .min_connections(pool_size)
        // The same backends all run long (their CPU time is measured).
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options.options([("search_path", schema)]))
        .await
        .expect("connect to the bench schema");
    let mut connections = Vec::new();
    let mut backends = Vec::new();
    for _ in 0..pool_size {
        let mut connection = pool.acquire().await.expect("connection");
        let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
            .fetch_one(&mut *connection)
            .await
            .expect("backend pid");
        backends.push(pid as u32);
        connections.push(connection);
    }
    drop(connections);
    let _ = BACKENDS.set(backends);
    PgStore::new(pool.clone())
        .migrate()
        .await
        .expect("migrations run");
    sqlx::raw_sql(RAW_TABLE)
        .execute(&pool)
        .await
        .expect("raw table");
    if let Ok(file) = std::env::var("POSTGRES_BENCH_SETUP_SQL") {
        let sql = std::fs::read_to_string(&file).expect("POSTGRES_BENCH_SETUP_SQL: a file");
        // The operator's own file, run as given.
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .expect("POSTGRES_BENCH_SETUP_SQL runs");
    }
    pool
}

async fn drop_schema(schema: &str) {
    let admin = PgPool::connect(DATABASE).await.expect("connect");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&admin)
    .await
    .expect("drop schema");
    admin.close().await;
}

async fn truncate(pool: &PgPool) {
    sqlx::raw_sql("TRUNCATE jetsource_events, raw_events")
        .execute(pool)
        .await
        .expect("truncate");
}

fn key(id: &str) -> AggregateKey {
    AggregateKey::new("account", AggregateId::new(id).expect("id"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Writer {
    Store,
    Repository,
    Raw,
}

/// `AGGREGATES` tasks each make `appends` appends of `batch` events to their own new aggregate;
/// returns events/s.
async fn append_workload(
    pool: &PgPool,
    writer: Writer,
    batch: usize,
    appends: usize,
    prefix: &str,
) -> Measured {
    let store = PgStore::new(pool.clone());
    let cpu = Cpu::now();
    let repository = Repository::<Account, _>::new(store.clone()).with_cache(10_000);
    let started = Instant::now();
    let tasks: Vec<_> = (0..AGGREGATES)
        .map(|a| {
            let id = format!("{prefix}-{a}");
            let (pool, store, repository) = (pool.clone(), store.clone(), repository.clone());
            tokio::spawn(async move {
                match writer {
                    Writer::Store => {
                        let key = key(&id);
                        for version in 0..appends as u64 {
                            let outcome = store
                                .append(
                                    &key,
                                    ExpectedVersion::Exact(version * batch as u64),
                                    None,
                                    new_events(batch),
                                )
                                .await
                                .expect("append");
                            assert_eq!(outcome.last_sequence, (version + 1) * batch as u64);
                        }
                    }
                    Writer::Repository => {
                        for n in 1..=appends as u64 {
                            let committed = repository
                                .execute(&id, |_| {
                                    Ok::<_, std::convert::Infallible>(
                                        (0..batch).map(|_| deposit().into()).collect(),
                                    )
                                })
                                .await
                                .expect("command");
                            assert_eq!(committed.version, n * batch as u64);
                        }
                    }
                    Writer::Raw if batch == 1 => {
                        for sequence in 1..=appends as i64 {
                            raw_insert_one(&pool, &id, sequence).await;
                        }
                    }
                    Writer::Raw => {
                        for append in 0..appends as i64 {
                            raw_insert_many(&pool, &id, append * batch as i64 + 1, batch).await;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let events = AGGREGATES * appends * batch;
    let measured = Measured {
        rate: events as f64 / started.elapsed().as_secs_f64(),
        cpu: cpu.per_event_since(events),
    };
    let table = match writer {
        Writer::Raw => "raw_events",
        _ => "jetsource_events",
    };
    check_appended(pool, table, prefix, appends * batch).await;
    measured
}

struct Measured {
    /// Events/s.
    rate: f64,
    /// CPU microseconds per event of this process and of the pool's PostgreSQL backends.
    cpu: (f64, f64),
}

/// The process ids of the pool's PostgreSQL backends (on this machine).
static BACKENDS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();

/// CPU time used so far by this process and by the pool's PostgreSQL backends (Linux's /proc;
/// zero elsewhere), in clock ticks of 10 ms. The machine's other PostgreSQL clients, and the
/// server's own processes (WAL writer...), are not counted.
struct Cpu {
    client: u64,
    server: u64,
}

impl Cpu {
    fn now() -> Self {
        // Fields 14 and 15 of /proc/<pid>/stat, after the command name in parentheses.
        fn ticks(stat: &str) -> Option<(&str, u64)> {
            let (head, tail) = stat.rsplit_once(") ")?;
            let name = head.split_once(" (")?.1;
            let fields: Vec<&str> = tail.split(' ').collect();
            let used =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some((name, used))
        }
        let read = |path: &std::path::Path| std::fs::read_to_string(path).ok();
        let client = read("/proc/self/stat".as_ref())
            .and_then(|s| ticks(&s).map(|t| t.1))
            .unwrap_or(0);
        let server = BACKENDS
            .get()
            .into_iter()
            .flatten()
            .filter_map(|pid| read(format!("/proc/{pid}/stat").as_ref()))
            .filter_map(|stat| ticks(&stat).filter(|t| t.0 == "postgres").map(|t| t.1))
            .sum();
        Cpu { client, server }
    }

    fn per_event_since(&self, events: usize) -> (f64, f64) {
        let now = Cpu::now();
        let us = |ticks: u64| ticks as f64 * 1e4 / events as f64;
        (
            us(now.client.saturating_sub(self.client)),
            us(now.server.saturating_sub(self.server)),
        )
    }
}

/// One autocommit INSERT of one event at a sequence the writer knows.
async fn raw_insert_one(pool: &PgPool, id: &str, sequence: i64) {
    let event_id = Uuid::now_v7();
    let result = sqlx::query(RAW_INSERT)
        .bind("account")
        .bind(id)
        .bind(sequence)
        .bind(event_id)
        .bind("deposited")
        .bind(1i32)
        .bind("json")
        .bind(payload())
        .bind(unix_nanos())
        .bind(event_id.to_string())
        .bind(None::<String>)
        .bind(None::<String>)
        .execute(pool)
        .await
        .expect("insert");
    assert_eq!(result.rows_affected(), 1);
}

/// One multi-row INSERT of `count` events from sequence `first` on.
async fn raw_insert_many(pool: &PgPool, id: &str, first: i64, count: usize) {
    let correlation = Uuid::now_v7().to_string();
    let mut insert = QueryBuilder::new(
        "INSERT INTO raw_events (aggregate_type, aggregate_id, sequence, event_id, name, \
         version, codec, payload, occurred_at_ns, correlation_id, causation_id, command_id) ",
    );
    insert.push_values(0..count as i64, |mut row, i| {
        row.push_bind("account")
            .push_bind(id)
            .push_bind(first + i)
            .push_bind(Uuid::now_v7())
            .push_bind("deposited")
            .push_bind(1i32)
            .push_bind("json")
            .push_bind(payload())
            .push_bind(unix_nanos())
            .push_bind(correlation.clone())
            .push_bind(None::<String>)
            .push_bind(None::<String>);
    });
    let result = insert.build().execute(pool).await.expect("insert");
    assert_eq!(result.rows_affected(), count as u64);
}

/// Every aggregate of the workload holds `events` events numbered 1..=events.
async fn check_appended(pool: &PgPool, table: &str, prefix: &str, events: usize) {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT aggregate_id, count(*), min(sequence), max(sequence) FROM {table} \
         WHERE aggregate_type = 'account' AND aggregate_id LIKE $1 || '-%' GROUP BY aggregate_id"
    )))
    .bind(prefix)
    .fetch_all(pool)
    .await
    .expect("count");
    assert_eq!(rows.len(), AGGREGATES, "{table} {prefix}: aggregates");
    for (id, count, min, max) in rows {
        assert_eq!(
            (count, min, max),
            (events as i64, 1, events as i64),
            "{table} {id}"
        );
    }
}

async fn appends(pool: &PgPool, sizes: &Sizes) {
    let workloads = [(1, sizes.appends), (BATCH, sizes.batch_appends)]
        .into_iter()
        .filter(|&(batch, _)| {
            sizes.runs(if batch == 1 {
                "append_single"
            } else {
                "append_batch"
            })
        })
        .collect::<Vec<_>>();
    let mut writers = vec![Writer::Store, Writer::Repository, Writer::Raw];
    // Profiling: only these writers (`store`, `repository`, `raw`; the figures need all three).
    if let Ok(only) = std::env::var("POSTGRES_BENCH_WRITERS") {
        writers.retain(|w| {
            only.split(',')
                .any(|o| writer_name(*w).to_lowercase().contains(o))
        });
        for &(batch, appends) in &workloads {
            for writer in &writers {
                truncate(pool).await;
                let measured = append_workload(pool, *writer, batch, appends, "profile").await;
                println!(
                    "postgres {batch}-event appends: {} {:.0} events/s (CPU per event: client \
                     {:.0} us, PostgreSQL {:.0} us)",
                    writer_name(*writer),
                    measured.rate,
                    measured.cpu.0,
                    measured.cpu.1
                );
            }
        }
        return;
    }
    // Warm-up: every connection prepares every statement.
    for &(batch, _) in &workloads {
        for &writer in &writers {
            truncate(pool).await;
            append_workload(pool, writer, batch, 2, "warm").await;
        }
    }
    for (batch, appends) in workloads {
        let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut cpu: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for round in 0..sizes.rounds {
            // Each round starts with another writer, so none always runs first.
            for i in 0..writers.len() {
                let writer = writers[(round + i) % writers.len()];
                truncate(pool).await;
                let prefix = format!("r{round}");
                let measured = append_workload(pool, writer, batch, appends, &prefix).await;
                rates
                    .entry(writer_name(writer))
                    .or_default()
                    .push(measured.rate);
                let used = cpu.entry(writer_name(writer)).or_default();
                used.0.push(measured.cpu.0);
                used.1.push(measured.cpu.1);
            }
        }
        let raw = rates["raw"].clone();
        let raw_median = median(raw.clone());
        let what = match batch {
            1 => "append 1 event".to_owned(),
            n => format!("append {n} events"),
        };
        let (raw_client, raw_server) = cpu["raw"].clone();
        println!(
            "postgres {what} ({AGGREGATES} aggregates x {appends} appends, pool {}): \
             raw sqlx {raw_median:.0} events/s {} (CPU per event: client {:.0} us, \
             PostgreSQL {:.0} us)",
            sizes.pool,
            rounds_list(&raw, 0),
            median(raw_client),
            median(raw_server),
        );
        for writer in [Writer::Store, Writer::Repository] {
            let name = writer_name(writer);
            let (client, server) = cpu[name].clone();
            let values = rates[name].clone();
            let ratios: Vec<f64> = values.iter().zip(&raw).map(|(j, r)| j / r).collect();
            println!(
                "postgres {what}: {name} {:.0} events/s {} = {:.2}x raw (per round {}) \
                 (CPU per event: client {:.0} us, PostgreSQL {:.0} us)",
                median(values.clone()),
                rounds_list(&values, 0),
                median(values) / raw_median,
                rounds_list(&ratios, 2),
                median(client),
                median(server),
            );
        }
    }
}

fn writer_name(writer: Writer) -> &'static str {
    match writer {
        Writer::Store => "PgStore::append",
        Writer::Repository => "Repository::execute (cached)",
        Writer::Raw => "raw",
    }
}

fn rounds_list(values: &[f64], decimals: usize) -> String {
    let list: Vec<String> = values.iter().map(|v| format!("{v:.decimals$}")).collect();
    format!("[{}]", list.join(" "))
}

/// Fills `jetsource_events` with `total` events: aggregates `big-1000` and `big-50` spread
/// evenly through it, the rest round-robin over 10,000 others; then copies them to `raw_events`.
async fn fill(pool: &PgPool, total: usize) {
    truncate(pool).await;
    sqlx::query(
        "INSERT INTO jetsource_events (aggregate_type, aggregate_id, sequence, event_id, name, \
             version, codec, payload, occurred_at_ns, correlation_id, causation_id, command_id, \
             headers) \
         SELECT 'account', aggregate_id, \
             row_number() OVER (PARTITION BY aggregate_id ORDER BY n), gen_random_uuid(), \
             'deposited', 1, 'json', $1, $2 + n, gen_random_uuid()::TEXT, NULL, NULL, '{}' \
         FROM (SELECT n, CASE \
                 WHEN n % ($3 / 1000) = 0 AND n / ($3 / 1000) <= 1000 THEN 'big-1000' \
                 WHEN n % ($3 / 50) = 1 AND n / ($3 / 50) < 50 THEN 'big-50' \
                 ELSE 'other-' || (n % 10000) END AS aggregate_id \
               FROM generate_series(1, $3) AS n) AS events \
         ORDER BY n",
    )
    .bind(payload())
    .bind(unix_nanos())
    .bind(total as i64)
    .execute(pool)
    .await
    .expect("fill");
    sqlx::query(
        "INSERT INTO raw_events (aggregate_type, aggregate_id, sequence, event_id, name, \
             version, codec, payload, occurred_at_ns, correlation_id, causation_id, command_id, \
             headers) \
         SELECT aggregate_type, aggregate_id, sequence, event_id, name, version, codec, \
             payload, occurred_at_ns, correlation_id, causation_id, command_id, headers \
         FROM jetsource_events ORDER BY position",
    )
    .execute(pool)
    .await
    .expect("copy");
    // One statement each: a multi-statement string runs as one transaction, VACUUM outside any.
    for sql in [
        "VACUUM ANALYZE jetsource_events",
        "VACUUM ANALYZE raw_events",
    ] {
        sqlx::raw_sql(sql).execute(pool).await.expect("vacuum");
    }
}

async fn store_load(store: &PgStore, key: &AggregateKey, events: usize) -> f64 {
    let started = Instant::now();
    let loaded = store.load(key, 1).await.expect("load");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(loaded.len(), events, "{}", key.id);
    assert!(loaded
        .iter()
        .enumerate()
        .all(|(i, e)| e.sequence == i as u64 + 1 && e.payload.len() == 140));
    ms
}

async fn raw_load(pool: &PgPool, id: &str, events: usize) -> f64 {
    let started = Instant::now();
    let loaded: Vec<RawRow> = sqlx::query_as(RAW_SELECT)
        .bind("account")
        .bind(id)
        .bind(1i64)
        .fetch_all(pool)
        .await
        .expect("select");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(loaded.len(), events, "{id}");
    assert!(loaded
        .iter()
        .enumerate()
        .all(|(i, row)| row.3 == i as i64 + 1 && row.8.len() == 140));
    ms
}

async fn loads(pool: &PgPool, sizes: &Sizes) {
    let filled = Instant::now();
    fill(pool, sizes.events).await;
    println!(
        "postgres load table of {} events filled in {:.1?}",
        sizes.events,
        filled.elapsed()
    );
    let store = PgStore::new(pool.clone());
    for events in LOAD_SIZES {
        let id = format!("big-{events}");
        let key = key(&id);
        // Warm-up: the pages in shared buffers, the statements prepared.
        for _ in 0..3 {
            store_load(&store, &key, events).await;
            raw_load(pool, &id, events).await;
        }
        let (mut jetsource, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..sizes.rounds {
            let (mut j, mut r) = (Vec::new(), Vec::new());
            for i in 0..sizes.loads {
                // Alternate which side loads first.
                if i % 2 == 0 {
                    j.push(store_load(&store, &key, events).await);
                    r.push(raw_load(pool, &id, events).await);
                } else {
                    r.push(raw_load(pool, &id, events).await);
                    j.push(store_load(&store, &key, events).await);
                }
            }
            jetsource.push(median(j));
            raw.push(median(r));
        }
        let (j, r) = (median(jetsource.clone()), median(raw.clone()));
        println!(
            "postgres load {events} events (table of {}): PgStore::load {j:.3} ms {}, \
             raw sqlx {r:.3} ms {}: jetsource/raw {:.2}x ({:.0} vs {:.0} events/s)",
            sizes.events,
            rounds_list(&jetsource, 3),
            rounds_list(&raw, 3),
            r / j,
            events as f64 / j * 1e3,
            events as f64 / r * 1e3,
        );
    }
}

#[tokio::main]
async fn main() {
    let sizes = Sizes::from_env();
    let schema = format!("bench_postgres_{}", std::process::id());
    let pool = setup(&schema, sizes.pool).await;
    println!(
        "postgres bench ({} mode, {} rounds, medians; ratios are jetsource throughput / raw)",
        if sizes.short { "short" } else { "full" },
        sizes.rounds
    );
    if sizes.runs("append") {
        appends(&pool, &sizes).await;
    }
    if sizes.runs("load") {
        loads(&pool, &sizes).await;
    }
    pool.close().await;
    drop_schema(&schema).await;
}
