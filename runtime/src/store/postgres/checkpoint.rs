//! Where a relay is, and which events come next: the window protocol over
//! `jetsource_relays` and the events' `transaction_id`.
//!
//! A position cannot be the checkpoint: positions are handed out when a transaction inserts,
//! so a long transaction commits its events below positions already published, and a relay
//! that moved past them would skip them. Instead the relay moves in windows of transactions.
//! `published_through` is a `pg_snapshot`: the events of every transaction visible in it are
//! published. The next window ends at a newer snapshot `window_to`; its events are those of the
//! transactions visible in `window_to` and not in `published_through` — exactly the ones that
//! committed in between, whatever their positions — published in position order. A transaction
//! still running at `window_to` falls into a later window, so none is skipped, and none of a
//! rolled-back transaction is ever read.
//!
//! Per-aggregate order holds across windows: an aggregate's event `n + 1` is inserted only after
//! the transaction of event `n` committed (the append takes the aggregate's lock and reads its
//! version), so `n` is visible in every snapshot where `n + 1` is: it lies in the same window,
//! at a lower position, or in an earlier one.

use sqlx::{PgConnection, Row};

use super::rows::{event_columns, stored_event};
use crate::store::{StoreError, StoredEvent};

/// A snapshot in which no transaction is visible: a new relay publishes every event.
const NOTHING_VISIBLE: &str = "1:1:";

/// A relay's progress: what it published, and the window it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// `pg_snapshot` text: the events of the transactions visible in it are published.
    pub published_through: String,
    /// The open window: its end snapshot and the last position published in it.
    pub window: Option<Window>,
    /// The previous active relay recorded everything it published before it stopped.
    pub clean: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    pub to: String,
    pub after_position: i64,
}

/// The relay's checkpoint, created for a relay that has none.
pub(crate) async fn load(conn: &mut PgConnection, relay: &str) -> Result<Checkpoint, sqlx::Error> {
    sqlx::query(
        "INSERT INTO jetsource_relays (name, published_through) VALUES ($1, $2::PG_SNAPSHOT) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(relay)
    .bind(NOTHING_VISIBLE)
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query(
        "SELECT published_through::TEXT AS through, window_to::TEXT AS window_to, \
         window_position, clean FROM jetsource_relays WHERE name = $1",
    )
    .bind(relay)
    .fetch_one(&mut *conn)
    .await?;
    let window_to: Option<String> = row.try_get("window_to")?;
    let after_position: i64 = row.try_get("window_position")?;
    Ok(Checkpoint {
        published_through: row.try_get("through")?,
        window: window_to.map(|to| Window { to, after_position }),
        clean: row.try_get("clean")?,
    })
}

/// Records whether everything published is recorded: `false` when a term starts (a relay
/// killed from then on may have published beyond its checkpoint), `true` when it ends well.
pub(crate) async fn mark_clean(
    conn: &mut PgConnection,
    relay: &str,
    clean: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE jetsource_relays SET clean = $2 WHERE name = $1")
        .bind(relay)
        .bind(clean)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records `checkpoint`, and `published` more events published.
pub(crate) async fn save(
    conn: &mut PgConnection,
    relay: &str,
    checkpoint: &Checkpoint,
    published: u64,
) -> Result<(), sqlx::Error> {
    let (to, after) = match &checkpoint.window {
        Some(window) => (Some(window.to.as_str()), window.after_position),
        None => (None, 0),
    };
    sqlx::query(
        "UPDATE jetsource_relays SET published_through = $2::PG_SNAPSHOT, \
         window_to = $3::PG_SNAPSHOT, window_position = $4, published = published + $5, \
         updated_at = now() WHERE name = $1",
    )
    .bind(relay)
    .bind(&checkpoint.published_through)
    .bind(to)
    .bind(after)
    .bind(published.min(i64::MAX as u64) as i64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Opens a window up to now when none is open.
pub(crate) async fn open_window(
    conn: &mut PgConnection,
    checkpoint: &mut Checkpoint,
) -> Result<(), sqlx::Error> {
    if checkpoint.window.is_none() {
        let to: String = sqlx::query_scalar("SELECT pg_current_snapshot()::TEXT")
            .fetch_one(conn)
            .await?;
        checkpoint.window = Some(Window {
            to,
            after_position: 0,
        });
    }
    Ok(())
}

/// Up to `limit` events of the open window after its last published position, in position
/// order (`status.rs` counts what still waits by the same rule). The index on `transaction_id` bounds the scan to transactions that started after
/// the oldest one still running at `published_through`.
pub(crate) async fn next_events(
    conn: &mut PgConnection,
    checkpoint: &Checkpoint,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let Some(window) = &checkpoint.window else {
        return Ok(Vec::new());
    };
    let rows = sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        " FROM jetsource_events \
         WHERE transaction_id >= pg_snapshot_xmin($1::PG_SNAPSHOT) \
           AND NOT pg_visible_in_snapshot(transaction_id, $1::PG_SNAPSHOT) \
           AND pg_visible_in_snapshot(transaction_id, $2::PG_SNAPSHOT) \
           AND position > $3 \
         ORDER BY position LIMIT $4"
    ))
    .bind(&checkpoint.published_through)
    .bind(&window.to)
    .bind(window.after_position)
    .bind(limit.min(i64::MAX as usize) as i64)
    .fetch_all(conn)
    .await
    .map_err(super::rows::backend)?;
    rows.iter().map(stored_event).collect()
}

/// The checkpoint after publishing `events`, the next ones the window returned for a read of
/// `limit`: fewer than `limit` closes the window.
pub(crate) fn advance(checkpoint: &mut Checkpoint, events: &[StoredEvent], limit: usize) {
    let Some(window) = checkpoint.window.take() else {
        return;
    };
    if events.len() < limit {
        checkpoint.published_through = window.to;
    } else {
        let last = events
            .last()
            .map_or(window.after_position, |e| e.position as i64);
        checkpoint.window = Some(Window {
            to: window.to,
            after_position: last,
        });
    }
}
