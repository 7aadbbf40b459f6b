//! The built `jetsource` binary against PostgreSQL event stores: `events --database` and
//! `relay-status` on migrated schemas of the machine's PostgreSQL (127.0.0.1:5432, database
//! `test`, trust authentication; scripts/start-postgres.sh), a schema per test.

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, SystemTime};

use jetsource::projection::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use jetsource::projection::sqlx::{self, AssertSqlSafe, Executor, PgPool};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, Codec, EventStore, ExpectedVersion, JetStreamConnectOptions,
    JetStreamStore, NewEvent, PgStore, StreamConfig,
};
use support::{binary, jetsource, Run};
use uuid::Uuid;

/// The machine's PostgreSQL, as the binary is given it: with a password that trust
/// authentication never asks for, so that the tests can check it is never printed.
const DATABASE: &str = "postgres://postgres:pg-secret-4711@127.0.0.1:5432/test";
/// [`DATABASE`] as the CLI prints it.
const PRINTED: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `name` as a quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A migrated store in the schema `schema` (any name: it is quoted), created empty.
async fn fresh_store(schema: &str) -> PgStore {
    let pool = fresh_schema(schema).await;
    let store = PgStore::new(pool);
    store.migrate().await.expect("the store's migrations run");
    store
}

/// A pool whose connections work in the schema `schema`, created empty.
async fn fresh_schema(schema: &str) -> PgPool {
    let admin = PgPool::connect(DATABASE)
        .await
        .expect("PostgreSQL answers on 127.0.0.1:5432 (scripts/start-postgres.sh)");
    for ddl in [
        format!("DROP SCHEMA IF EXISTS {} CASCADE", quoted(schema)),
        format!("CREATE SCHEMA {}", quoted(schema)),
    ] {
        // Safe to assert: `quoted` escapes the schema name as a quoted identifier.
        sqlx::query(AssertSqlSafe(ddl.as_str()))
            .execute(&admin)
            .await
            .expect(&ddl);
    }
    admin.close().await;
    let set_path = format!("SET search_path TO {}", quoted(schema));
    PgPoolOptions::new()
        .max_connections(4)
        .after_connect(move |connection, _| {
            let set_path = set_path.clone();
            Box::pin(async move {
                connection
                    .execute(AssertSqlSafe(set_path))
                    .await
                    .map(|_| ())
            })
        })
        .connect_with(DATABASE.parse::<PgConnectOptions>().unwrap())
        .await
        .expect("connect to the test schema")
}

fn key(aggregate_type: &'static str, id: &str) -> AggregateKey {
    AggregateKey::new(aggregate_type, AggregateId::new(id).expect("valid id"))
}

/// An event occurring `seconds_ago` seconds before now.
fn event(name: &'static str, codec: Codec, payload: &[u8], seconds_ago: u64) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        name,
        version: 1,
        codec,
        payload: payload.to_vec().into(),
        timestamp: SystemTime::now() - Duration::from_secs(seconds_ago),
        correlation_id: "corr-1".into(),
        causation_id: None,
        headers: BTreeMap::new(),
    }
}

fn deposit(amount: u64, seconds_ago: u64) -> NewEvent {
    event(
        "deposited",
        Codec::Json,
        format!(r#"{{"amount":{amount}}}"#).as_bytes(),
        seconds_ago,
    )
}

async fn append(store: &impl EventStore, key: &AggregateKey, events: Vec<NewEvent>) {
    store
        .append(key, ExpectedVersion::Any, None, events)
        .await
        .expect("append");
}

/// The binary with `--database` (and `--schema`) in front of `args`.
async fn jetsource_on(schema: &str, args: &[&str]) -> Run {
    let mut all = vec!["--database", DATABASE, "--schema", schema];
    all.extend_from_slice(args);
    jetsource(&all).await
}

/// A port no server listens on.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_postgres_print_as_the_same_events_from_a_stream() {
    const SCHEMA: &str = "jetsource_cli_events";
    let pg = fresh_store(SCHEMA).await;
    let server = NatsServer::start();
    let stream = JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new("BANK", "bank"),
    )
    .await
    .expect("connect to the harness server");

    // The same events, in the same order, to both stores: positions agree too.
    let acc1 = key("account", "acc-1");
    let mut opened = event("opened", Codec::Json, br#"{"owner":"ada"}"#, 60);
    opened.causation_id = Some("cause-7".into());
    opened.headers.insert("tenant".into(), "acme".into());
    let appends = [
        (acc1.clone(), Some("cmd-1"), vec![opened]),
        (key("account", "acc-2"), None, vec![deposit(999, 50)]),
        (
            acc1.clone(),
            None,
            vec![
                deposit(5, 40),
                event("audited", Codec::Protobuf, &[0x08, 0x96, 0x01], 30),
            ],
        ),
    ];
    for (key, command_id, events) in appends {
        pg.append(&key, ExpectedVersion::Any, command_id, events.clone())
            .await
            .expect("append to PostgreSQL");
        stream
            .append(&key, ExpectedVersion::Any, command_id, events)
            .await
            .expect("append to the stream");
    }

    let url = server.url();
    let pg_place = format!("PostgreSQL schema {SCHEMA}");
    for version in ["1", "3"] {
        let from_pg = jetsource_on(
            SCHEMA,
            &["events", "--from-version", version, "account", "acc-1"],
        )
        .await
        .success();
        let expected = jetsource(&[
            "--server",
            &url,
            "events",
            "--stream",
            "BANK",
            "--from-version",
            version,
            "account",
            "acc-1",
        ])
        .await
        .success();
        assert!(from_pg.starts_with(&format!("account/acc-1 in {pg_place}: ")));
        assert_eq!(
            from_pg.replace(&pg_place, "stream BANK"),
            expected,
            "PostgreSQL printed:\n{from_pg}"
        );
    }
    let all = jetsource_on(SCHEMA, &["events", "account", "acc-1"])
        .await
        .success();
    assert!(
        all.contains("\nversion 1: opened v1\n  event id:     ")
            && all.contains("  causation:    cause-7\n  command id:   cmd-1\n")
            && all.contains("\nversion 3: audited v1\n")
            && all.contains("  payload (protobuf, 3 bytes):\n    08 96 01\n"),
        "{all}"
    );

    // A typo'd aggregate: what the stream path says, with the place.
    assert_eq!(
        jetsource_on(SCHEMA, &["events", "account", "acc-l"])
            .await
            .success(),
        format!("no events for account/acc-l in {pg_place}\n")
    );
    assert_eq!(
        jetsource_on(SCHEMA, &["events", "account", "a.b"])
            .await
            .failure(),
        "error: invalid aggregate id \"a.b\": it contains '.', which cannot appear in one NATS \
         subject token"
    );

    // From the environment; and there --stream still chooses the stream.
    let env_run = |args: &'static [&'static str], server_url: String| {
        tokio::task::spawn_blocking(move || {
            Run::from_output(
                binary()
                    .args(["--server", &server_url])
                    .args(args)
                    .env("JETSOURCE_DATABASE_URL", DATABASE)
                    .env("JETSOURCE_DATABASE_SCHEMA", SCHEMA)
                    .output()
                    .expect("run"),
            )
        })
    };
    let from_env = env_run(&["events", "account", "acc-2"], server.url())
        .await
        .unwrap()
        .success();
    assert!(
        from_env.starts_with(&format!("account/acc-2 in {pg_place}: 1 event\n")),
        "{from_env}"
    );
    let stream_over_env = env_run(
        &["events", "--stream", "BANK", "account", "acc-2"],
        server.url(),
    )
    .await
    .unwrap()
    .success();
    assert!(
        stream_over_env.starts_with("account/acc-2 in stream BANK: 1 event\n"),
        "{stream_over_env}"
    );

    // Both given on the command line, --prefix without --stream, neither: each named.
    for (args, expected) in [
        (
            &[
                "--database",
                DATABASE,
                "events",
                "--stream",
                "BANK",
                "account",
                "acc-1",
            ][..],
            "error: events reads one store: give --stream (a JetStream stream) or --database (a \
             PostgreSQL event store), not both",
        ),
        (
            &[
                "--database",
                DATABASE,
                "events",
                "--prefix",
                "bank",
                "account",
                "acc-1",
            ],
            "error: --prefix is the subject prefix of --stream: give --stream too",
        ),
        (
            &["events", "account", "acc-1"],
            "error: events needs --stream <STREAM> to read a JetStream stream, or --database \
             <URL> (or JETSOURCE_DATABASE_URL) to read a PostgreSQL event store",
        ),
    ] {
        assert_eq!(jetsource(args).await.failure(), expected);
    }
}

/// The lines of the block `relay <name>` prints, without their indentation: `label: value`.
fn relay_block<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let headline = format!("relay {name}");
    let mut lines = out.lines().skip_while(|line| *line != headline);
    assert!(lines.next().is_some(), "no {headline:?} in:\n{out}");
    lines
        .take_while(|line| line.starts_with("  "))
        .map(str::trim)
        .collect()
}

/// The value of `label` in `block`, whitespace after the label collapsed.
#[track_caller]
fn value<'a>(block: &[&'a str], label: &str) -> &'a str {
    block
        .iter()
        .find_map(|line| line.strip_prefix(label))
        .map(str::trim_start)
        .unwrap_or_else(|| panic!("no {label} in {block:?}"))
}

/// Checks a `lag:` value: the duration the clock allows and the oldest event's time.
#[track_caller]
fn check_lag(lag: &str, oldest: SystemTime, read_between: (SystemTime, SystemTime)) {
    let (duration, from) = lag
        .split_once(" (oldest unpublished event from ")
        .unwrap_or_else(|| panic!("lag {lag:?}"));
    assert_eq!(
        from,
        format!("{})", humantime::format_rfc3339_nanos(oldest)),
        "{lag}"
    );
    let duration = humantime::parse_duration(duration).expect("a duration");
    let (start, end) = read_between;
    let least = start.duration_since(oldest).unwrap();
    assert!(
        least.saturating_sub(Duration::from_millis(1)) <= duration
            && duration <= end.duration_since(oldest).unwrap(),
        "{lag}"
    );
}

/// `pg_current_snapshot()` as text, to store in a relay row.
async fn snapshot(pool: &PgPool) -> String {
    let (snapshot,): (String,) = sqlx::query_as("SELECT pg_current_snapshot()::TEXT")
        .fetch_one(pool)
        .await
        .unwrap();
    snapshot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_status_prints_each_relays_published_unpublished_lag_and_progress() {
    // A schema name that must be quoted, and escaped in the connection's startup options.
    const SCHEMA: &str = "jetsource cli \"Relays\"";
    let store = fresh_store(SCHEMA).await;
    let pool = store.pool().clone();
    let place = format!("PostgreSQL schema {SCHEMA}");

    // Nothing yet.
    assert_eq!(
        jetsource_on(SCHEMA, &["relay-status"]).await.success(),
        format!(
            "no relay has a checkpoint in {place} yet: every event is unpublished\n  \
             unpublished:   0\n  lag:           none (nothing waits)\n"
        )
    );

    let first = vec![deposit(1, 600), deposit(2, 590)];
    let oldest = first[0].timestamp;
    append(&store, &key("account", "a"), first).await;
    let through_first = snapshot(&pool).await;
    let later = vec![deposit(3, 300)];
    let oldest_later = later[0].timestamp;
    append(&store, &key("account", "b"), later).await;

    // Events, no relay: all of them wait.
    let start = SystemTime::now();
    let out = jetsource_on(SCHEMA, &["relay-status"]).await.success();
    let end = SystemTime::now();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..2],
        [
            format!("no relay has a checkpoint in {place} yet: every event is unpublished"),
            "  unpublished:   3".to_owned()
        ],
        "{out}"
    );
    check_lag(
        lines[2].strip_prefix("  lag:           ").expect("lag"),
        oldest,
        (start, end),
    );

    // Two relays: one through the first append, one caught up.
    let now = snapshot(&pool).await;
    for (name, through, published, updated_at) in [
        ("orders", &through_first, 2, 1_700_000_000.25),
        ("audit", &now, 3, 1_700_000_100.0),
    ] {
        sqlx::query(
            "INSERT INTO jetsource_relays (name, published_through, published, updated_at) \
             VALUES ($1, $2::pg_snapshot, $3, to_timestamp($4))",
        )
        .bind(name)
        .bind(through)
        .bind(published as i64)
        .bind(updated_at)
        .execute(&pool)
        .await
        .unwrap();
    }
    let start = SystemTime::now();
    let out = jetsource_on(SCHEMA, &["relay-status"]).await.success();
    let end = SystemTime::now();
    assert!(
        out.starts_with(&format!("2 relays in {place}\n\nrelay audit\n")),
        "{out}"
    );
    let audit = relay_block(&out, "audit");
    let orders = relay_block(&out, "orders");
    assert!(
        out.find("relay audit").unwrap() < out.find("relay orders").unwrap(),
        "by name:\n{out}"
    );
    assert_eq!(
        (value(&audit, "published:"), value(&audit, "unpublished:")),
        ("3", "0")
    );
    assert_eq!(value(&audit, "lag:"), "none (nothing waits)");
    assert_eq!(
        (value(&orders, "published:"), value(&orders, "unpublished:")),
        ("2", "1")
    );
    check_lag(value(&orders, "lag:"), oldest_later, (start, end));
    let progress = value(&orders, "last progress:");
    assert!(
        progress.starts_with("2023-11-14T22:13:20.250000000Z (") && progress.ends_with(" ago)"),
        "{progress}"
    );

    // One relay by name; a typo'd name is an error that lists the relays there are.
    let out = jetsource_on(SCHEMA, &["relay-status", "orders"])
        .await
        .success();
    assert!(
        out.starts_with(&format!("1 relay in {place}\n\nrelay orders\n")),
        "{out}"
    );
    assert!(!out.contains("relay audit"), "{out}");
    assert_eq!(
        jetsource_on(SCHEMA, &["relay-status", "ordres"])
            .await
            .failure(),
        format!(
            "error: no relay named \"ordres\" has a checkpoint in {place} (relays: audit, orders)"
        )
    );

    // For monitoring: `orders` waits on an event from 5 minutes ago, `audit` on none.
    jetsource_on(SCHEMA, &["relay-status", "--max-lag", "10m"])
        .await
        .success();
    let error = jetsource_on(SCHEMA, &["relay-status", "--max-lag", "1m"])
        .await
        .failure();
    assert!(
        error.starts_with("error: relay orders lags 5m")
            && error.ends_with(&format!("behind in {place}, more than --max-lag 1m")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_databases_give_one_line_naming_the_url_without_its_password() {
    const EMPTY: &str = "jetsource_cli_not_migrated";
    fresh_schema(EMPTY).await.close().await;

    let port = free_port();
    let unreachable = format!("postgres://postgres:pg-secret-4711@127.0.0.1:{port}/test");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--database".into(), unreachable, "relay-status".into()],
            format!("error: cannot connect to PostgreSQL at postgres://postgres@127.0.0.1:{port}/test: "),
        ),
        (
            vec![
                "--database".into(),
                "postgres://postgres:pg-secret-4711@127.0.0.1:port/test".into(),
                "events".into(),
                "account".into(),
                "a-1".into(),
            ],
            "error: invalid database URL postgres://postgres@127.0.0.1:port/test: ".into(),
        ),
        (
            vec![
                "--database".into(),
                DATABASE.into(),
                "--schema".into(),
                "jetsource_cli_no_such_schema".into(),
                "relay-status".into(),
            ],
            format!(
                "error: no jetsource event store at {PRINTED}: it has no schema \
                 \"jetsource_cli_no_such_schema\" (check --schema)"
            ),
        ),
        (
            vec![
                "--database".into(),
                DATABASE.into(),
                "--schema".into(),
                EMPTY.into(),
                "events".into(),
                "account".into(),
                "a-1".into(),
            ],
            format!(
                "error: no jetsource event store at {PRINTED}: schema {EMPTY} has no table \
                 jetsource_events (check --schema, or run the store's migrations)"
            ),
        ),
        (
            vec!["relay-status".into()],
            "error: relay-status reads a PostgreSQL event store: give --database <URL> (or set \
             JETSOURCE_DATABASE_URL)"
                .into(),
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = jetsource(&args).await;
        assert!(
            !run.stderr.contains("pg-secret-4711") && !run.stdout.contains("pg-secret-4711"),
            "{}",
            run.stderr
        );
        let err = run.failure();
        assert!(err.starts_with(&expected), "{err}\nexpected: {expected}");
    }
}
