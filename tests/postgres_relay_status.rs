//! `jetsource::postgres::relay_status`: what a relay has published and what waits, counted on
//! real tables whose relay rows hold snapshots taken between appends (one in-flight
//! transaction among them), each test in a schema of its own.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jetsource::postgres::{backlog, relay_status, relay_statuses, RelayStatus};
use jetsource::projection::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use jetsource::projection::sqlx::{self, PgPool};
use jetsource::{AggregateId, AggregateKey, EventStore, ExpectedVersion, NewEvent, PgStore};
use support::postgres::{pg_store, DATABASE};

/// A moment an hour ago: event times are this plus a few seconds, so each relay's oldest
/// unpublished event is known exactly and its lag is about an hour.
fn base() -> SystemTime {
    SystemTime::now() - Duration::from_secs(3_600)
}

fn key(aggregate_type: &'static str, id: &str) -> AggregateKey {
    AggregateKey::new(aggregate_type, AggregateId::new(id).unwrap())
}

/// Events occurring at `base` plus each of `seconds`.
fn events_at(base: SystemTime, seconds: &[u64]) -> Vec<NewEvent> {
    seconds
        .iter()
        .map(|&s| {
            let mut event = support::event("deposited", r#"{"amount":1}"#);
            event.timestamp = base + Duration::from_secs(s);
            event
        })
        .collect()
}

async fn append(store: &PgStore, key: &AggregateKey, events: Vec<NewEvent>) {
    store
        .append(key, ExpectedVersion::Any, None, events)
        .await
        .expect("append");
}

/// `pg_current_snapshot()` as text, to store in a relay row.
async fn snapshot(pool: &PgPool) -> String {
    let (snapshot,): (String,) = sqlx::query_as("SELECT pg_current_snapshot()::TEXT")
        .fetch_one(pool)
        .await
        .unwrap();
    snapshot
}

/// A relay row, as the relay writes it, with `updated_at` at `updated_at_s` seconds after 1970.
async fn set_relay(
    pool: &PgPool,
    name: &str,
    published_through: &str,
    window: Option<(&str, i64)>,
    published: i64,
    updated_at_s: f64,
) {
    sqlx::query(
        "INSERT INTO jetsource_relays \
             (name, published_through, window_to, window_position, published, updated_at) \
         VALUES ($1, $2::pg_snapshot, $3::pg_snapshot, $4, $5, to_timestamp($6))",
    )
    .bind(name)
    .bind(published_through)
    .bind(window.map(|(to, _)| to))
    .bind(window.map_or(0, |(_, position)| position))
    .bind(published)
    .bind(updated_at_s)
    .execute(pool)
    .await
    .unwrap();
}

/// The checks of a status that do not depend on the clock, and its lag within the bounds the
/// read's start and end give.
#[track_caller]
fn check(
    status: &RelayStatus,
    read_between: (SystemTime, SystemTime),
    unpublished: u64,
    oldest: Option<SystemTime>,
) {
    assert_eq!(
        (status.unpublished, status.oldest_unpublished),
        (unpublished, oldest),
        "relay {}",
        status.name
    );
    match oldest {
        None => assert_eq!(status.lag, None),
        Some(oldest) => {
            let lag = status.lag.expect("a lag when events wait");
            let (start, end) = read_between;
            assert!(
                start.duration_since(oldest).unwrap() <= lag
                    && lag <= end.duration_since(oldest).unwrap(),
                "relay {}: lag {lag:?}",
                status.name
            );
        }
    }
}

#[tokio::test]
async fn unpublished_events_are_counted_from_each_relays_snapshots() {
    let store = pg_store("jetsource_test_relay_status").await;
    let pool = store.pool().clone();
    let base = base();
    let at = |s: u64| Some(base + Duration::from_secs(s));

    // Nothing appended, no relay: nothing waits.
    assert_eq!(relay_statuses(&pool).await.unwrap(), vec![]);
    let empty = backlog(&pool).await.unwrap();
    assert_eq!((empty.events, empty.oldest, empty.lag), (0, None, None));

    // A: three events, then snapshot S1.
    append(&store, &key("account", "a"), events_at(base, &[1, 2, 3])).await;
    let s1 = snapshot(&pool).await;
    // T: two events in a transaction still open when S2 is taken, committed after it.
    let mut t = pool.begin().await.unwrap();
    store
        .append_in(
            &mut t,
            &key("account", "t"),
            ExpectedVersion::Any,
            None,
            events_at(base, &[40, 41]),
        )
        .await
        .unwrap();
    // C: two events, committed before S2.
    append(&store, &key("account", "c"), events_at(base, &[20, 21])).await;
    let (c_first,): (i64,) =
        sqlx::query_as("SELECT min(position) FROM jetsource_events WHERE aggregate_id = 'c'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let s2 = snapshot(&pool).await;
    t.commit().await.unwrap();
    // D: one event after S2.
    append(&store, &key("account", "d"), events_at(base, &[30])).await;

    // No relay row yet: every event waits.
    let start = SystemTime::now();
    let all = backlog(&pool).await.unwrap();
    let end = SystemTime::now();
    assert_eq!((all.events, all.oldest), (8, at(1)));
    let (lag, oldest) = (all.lag.unwrap(), at(1).unwrap());
    assert!(start.duration_since(oldest).unwrap() <= lag);
    assert!(lag <= end.duration_since(oldest).unwrap());

    // A relay that published nothing yet, one through S1, one through S2 (T was in flight,
    // so its events wait although C's, written after them, are published), and one through
    // S1 with a window up to S2 published up to C's first event.
    set_relay(&pool, "fresh", "1:1:", None, 0, 1_700_000_000.25).await;
    set_relay(&pool, "through-s1", &s1, None, 3, 1_700_000_001.0).await;
    set_relay(&pool, "through-s2", &s2, None, 5, 1_700_000_002.0).await;
    set_relay(
        &pool,
        "window",
        &s1,
        Some((&s2, c_first)),
        4,
        1_700_000_003.0,
    )
    .await;

    let start = SystemTime::now();
    let statuses = relay_statuses(&pool).await.unwrap();
    let end = SystemTime::now();
    let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["fresh", "through-s1", "through-s2", "window"]);
    let read = (start, end);
    check(&statuses[0], read, 8, at(1));
    check(&statuses[1], read, 5, at(20));
    check(&statuses[2], read, 3, at(30));
    check(&statuses[3], read, 4, at(21));
    let published: Vec<u64> = statuses.iter().map(|s| s.published).collect();
    assert_eq!(published, [0, 3, 5, 4]);
    assert_eq!(
        statuses[0].last_progress,
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)
    );
    assert_eq!(
        statuses[3].last_progress,
        UNIX_EPOCH + Duration::from_secs(1_700_000_003)
    );

    // One relay by name is the same status; an unknown name has none.
    let start = SystemTime::now();
    let one = relay_status(&pool, "through-s2").await.unwrap().unwrap();
    let end = SystemTime::now();
    check(&one, (start, end), 3, at(30));
    assert_eq!(
        (one.published, one.last_progress),
        (5, statuses[2].last_progress)
    );
    assert_eq!(relay_status(&pool, "thru-s2").await.unwrap(), None);

    // A relay that caught up: nothing waits, no lag.
    let now = snapshot(&pool).await;
    set_relay(&pool, "caught-up", &now, None, 8, 1_700_000_004.0).await;
    let caught_up = relay_status(&pool, "caught-up").await.unwrap().unwrap();
    check(&caught_up, (start, end), 0, None);
}

/// With sequential scans off, the counting query still runs, through the transaction index:
/// its `transaction_id >= pg_snapshot_xmin(published_through)` bound is one an index scan can
/// use (without it the planner could only scan the whole table). Read from the index's scan
/// counter in `pg_stat_user_indexes`.
#[tokio::test]
async fn the_count_reads_the_transaction_index() {
    let store = pg_store("jetsource_test_relay_status_index").await;
    append(
        &store,
        &key("account", "a"),
        events_at(SystemTime::now(), &[0, 1, 2]),
    )
    .await;
    let through = snapshot(store.pool()).await;
    append(
        &store,
        &key("account", "b"),
        events_at(SystemTime::now(), &[0]),
    )
    .await;
    set_relay(store.pool(), "relay", &through, None, 3, 1_700_000_000.0).await;

    // One connection, so the statistics read are those its own statements flushed.
    let options: PgConnectOptions = DATABASE.parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.options([
            ("search_path", "jetsource_test_relay_status_index"),
            ("enable_seqscan", "off"),
        ]))
        .await
        .unwrap();
    let scans = || async {
        // Flushes this backend's pending counters at the end of this statement, so the next
        // statement (a new transaction, a fresh statistics snapshot) reads them.
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&pool)
            .await
            .unwrap();
        let (scans,): (i64,) = sqlx::query_as(
            "SELECT idx_scan FROM pg_stat_user_indexes \
             WHERE schemaname = current_schema() AND indexrelname = 'jetsource_events_transaction'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        scans
    };
    let before = scans().await;
    let status = relay_status(&pool, "relay").await.unwrap().unwrap();
    assert_eq!(status.unpublished, 1);
    let after = scans().await;
    assert!(
        after > before,
        "index scans: {before} before, {after} after"
    );
}
