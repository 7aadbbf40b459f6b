//! How far each relay is: what it published, what waits, and for how long, read from
//! `jetsource_relays` and `jetsource_events` (the operations CLI's `relay-status`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

/// Where one relay is, as its checkpoint row and the events table say at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStatus {
    /// The relay's name (its row in `jetsource_relays`).
    pub name: String,
    /// How many events the relay has published since it started.
    pub published: u64,
    /// Committed events it has not published yet.
    pub unpublished: u64,
    /// When the earliest of those events occurred (its `occurred_at_ns`); `None` when none
    /// waits.
    pub oldest_unpublished: Option<SystemTime>,
    /// How long that event has waited: now (this machine's clock, when the status was read)
    /// minus [`oldest_unpublished`](Self::oldest_unpublished); zero when the event's time is
    /// ahead of this clock, `None` when nothing waits.
    pub lag: Option<Duration>,
    /// When the relay last wrote its checkpoint (`updated_at`).
    pub last_progress: SystemTime,
}

/// The committed events no relay has published, when no relay has a checkpoint yet: every
/// event of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backlog {
    /// How many events.
    pub events: u64,
    /// When the earliest of them occurred; `None` when there are none.
    pub oldest: Option<SystemTime>,
    /// Now minus [`oldest`](Self::oldest), as [`RelayStatus::lag`].
    pub lag: Option<Duration>,
}

/// The unpublished events of the relay row `r`: its count and earliest `occurred_at_ns`.
/// The complement of what the relay reads (`checkpoint::next_events`), by the same window rule.
///
/// A relay has published every row whose transaction is visible in `published_through`, and,
/// while a window is open, the rows of transactions visible in `window_to` (but not in
/// `published_through`) up to `window_position`. Every other committed row waits.
///
/// Every transaction id below `pg_snapshot_xmin(published_through)` is visible in that snapshot
/// (it had ended when the snapshot was taken, and a rolled-back one left no readable row), so
/// the rows that wait all have `transaction_id >= pg_snapshot_xmin(published_through)`. That
/// bound is written out so that PostgreSQL reads them through the `jetsource_events_transaction`
/// index, from the relay's oldest unfinished transaction on: the cost follows the backlog, not
/// the size of the table. The visibility tests then filter the rows of that range.
///
/// A macro rather than a `const` so that `statuses_query!` can `concat!` it into static SQL.
macro_rules! unpublished {
    () => {
        "SELECT count(*) AS unpublished, min(e.occurred_at_ns) AS oldest_ns \
         FROM jetsource_events e \
         WHERE e.transaction_id >= pg_snapshot_xmin(r.published_through) \
           AND NOT pg_visible_in_snapshot(e.transaction_id, r.published_through) \
           AND NOT (r.window_to IS NOT NULL \
                    AND pg_visible_in_snapshot(e.transaction_id, r.window_to) \
                    AND e.position <= r.window_position)"
    };
}

/// The relay rows with their unpublished events; `updated_at` in microseconds since 1970
/// (sqlx reads `timestamptz` only with a date-time crate). `$filter` is a string literal, so
/// the query stays a `&'static str`, which sqlx takes as safe.
macro_rules! statuses_query {
    ($filter:literal) => {
        concat!(
            "SELECT r.name, r.published, \
                 (extract(epoch FROM r.updated_at) * 1000000)::BIGINT AS updated_at_us, \
                 u.unpublished, u.oldest_ns \
             FROM jetsource_relays r CROSS JOIN LATERAL (",
            unpublished!(),
            ") u ",
            $filter,
            " ORDER BY r.name"
        )
    };
}

/// The status of the relay `name`, or `None` when it has no checkpoint row (it never ran, or
/// has another name).
///
/// Reads the tables of the first schema of the pool's `search_path`, in one statement: the
/// counts are those of one snapshot. Counting costs a read of the unpublished events' index
/// entries and rows.
pub async fn relay_status(pool: &PgPool, name: &str) -> Result<Option<RelayStatus>, sqlx::Error> {
    let row = sqlx::query(statuses_query!("WHERE r.name = $1"))
        .bind(name)
        .fetch_optional(pool)
        .await?;
    let now = SystemTime::now();
    row.map(|row| status_of(&row, now)).transpose()
}

/// The status of every relay that has a checkpoint row, by name; empty when none has one yet
/// (then every event waits: see [`backlog`]).
pub async fn relay_statuses(pool: &PgPool) -> Result<Vec<RelayStatus>, sqlx::Error> {
    let rows = sqlx::query(statuses_query!("")).fetch_all(pool).await?;
    let now = SystemTime::now();
    rows.iter().map(|row| status_of(row, now)).collect()
}

/// Every committed event, counted as the backlog of a relay that has not started: what
/// [`relay_statuses`] cannot say when no relay has a checkpoint row yet.
pub async fn backlog(pool: &PgPool) -> Result<Backlog, sqlx::Error> {
    let row = sqlx::query(
        "SELECT count(*) AS unpublished, min(occurred_at_ns) AS oldest_ns FROM jetsource_events",
    )
    .fetch_one(pool)
    .await?;
    let (events, oldest) = unpublished_of(&row)?;
    Ok(Backlog {
        events,
        oldest,
        lag: lag(oldest, SystemTime::now()),
    })
}

fn status_of(row: &PgRow, now: SystemTime) -> Result<RelayStatus, sqlx::Error> {
    let published: i64 = row.try_get("published")?;
    let updated_at_us: i64 = row.try_get("updated_at_us")?;
    let (unpublished, oldest_unpublished) = unpublished_of(row)?;
    Ok(RelayStatus {
        name: row.try_get("name")?,
        published: u64::try_from(published).unwrap_or(0),
        unpublished,
        oldest_unpublished,
        lag: lag(oldest_unpublished, now),
        last_progress: unix_time(
            Duration::from_micros(updated_at_us.unsigned_abs()),
            updated_at_us < 0,
        ),
    })
}

/// The `unpublished` count and the `oldest_ns` time of a row.
fn unpublished_of(row: &PgRow) -> Result<(u64, Option<SystemTime>), sqlx::Error> {
    let count: i64 = row.try_get("unpublished")?;
    let oldest_ns: Option<i64> = row.try_get("oldest_ns")?;
    let oldest = oldest_ns.map(|ns| unix_time(Duration::from_nanos(ns.unsigned_abs()), ns < 0));
    Ok((u64::try_from(count).unwrap_or(0), oldest))
}

/// 1970 plus (or, `before`, minus) `offset`; saturating at 1970 where the platform cannot go
/// earlier.
fn unix_time(offset: Duration, before: bool) -> SystemTime {
    if before {
        UNIX_EPOCH.checked_sub(offset).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH + offset
    }
}

fn lag(oldest: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    oldest.map(|oldest| now.duration_since(oldest).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_is_never_negative() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(lag(None, now), None);
        assert_eq!(
            lag(Some(UNIX_EPOCH + Duration::from_secs(40)), now),
            Some(Duration::from_secs(60))
        );
        // An event stamped by a clock ahead of this one.
        assert_eq!(
            lag(Some(UNIX_EPOCH + Duration::from_secs(160)), now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn unix_times_go_both_ways_from_1970() {
        assert_eq!(
            unix_time(Duration::from_secs(5), false),
            UNIX_EPOCH + Duration::from_secs(5)
        );
        assert!(unix_time(Duration::from_secs(5), true) <= UNIX_EPOCH);
    }
}
