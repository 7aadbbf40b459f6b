//! A command inside your own PostgreSQL transaction: an order's events and its invoice row
//! commit together, or, when the transaction rolls back, neither is left.
//!
//! Needs PostgreSQL at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`). The
//! event store and the invoices live in the schema `jetsource_example_transaction`, created
//! afresh on every run. Run it with:
//!
//! ```console
//! bash scripts/start-postgres.sh
//! cargo run --features postgres --example postgres_transaction
//! ```

use std::time::Duration;

use jetsource::projection::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use jetsource::projection::sqlx::{self, PgConnection, PgPool};
use jetsource::{
    Aggregate, Apply, CommandMetadata, Committed, Event, EventSet, EventStore, ExecuteError,
    PgStore, Repository,
};
use serde::{Deserialize, Serialize};

const SCHEMA: &str = "jetsource_example_transaction";

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "order_placed", version = 1)]
struct OrderPlaced {
    customer: String,
    total_cents: i64,
}

#[derive(EventSet, Debug)]
enum OrderEvent {
    OrderPlaced(OrderPlaced),
}

#[derive(Aggregate, Default, Debug)]
#[aggregate(name = "order", events = OrderEvent)]
struct Order {
    placed: bool,
}

impl Apply<OrderPlaced> for Order {
    fn apply(&mut self, _: OrderPlaced) {
        self.placed = true;
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the order is already placed")]
struct AlreadyPlaced;

impl Order {
    fn place(&self, customer: &str, total_cents: i64) -> Result<Vec<OrderEvent>, AlreadyPlaced> {
        if self.placed {
            return Err(AlreadyPlaced);
        }
        let customer = customer.to_owned();
        Ok(vec![OrderPlaced {
            customer,
            total_cents,
        }
        .into()])
    }
}

// ANCHOR: place_and_invoice
/// Why placing an order and invoicing it failed.
#[derive(Debug, thiserror::Error)]
enum PlaceError {
    #[error(transparent)]
    Command(#[from] ExecuteError<AlreadyPlaced>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Places order `id` and writes its invoice, both in the caller's transaction `tx`.
async fn place_and_invoice(
    orders: &Repository<Order, PgStore>,
    tx: &mut PgConnection,
    id: &str,
    customer: &str,
    total_cents: i64,
) -> Result<Committed<Order>, PlaceError> {
    // The command id makes a retried request return the first outcome instead of placing
    // the order twice.
    let meta = CommandMetadata::default().command_id(format!("place-{id}"));
    let placed = orders
        .execute_in(tx, id, meta, |order| order.place(customer, total_cents))
        .await?;
    if placed.duplicate {
        // The first request placed the order and wrote the invoice in its transaction.
        return Ok(placed);
    }
    sqlx::query("INSERT INTO invoices (order_id, customer, total_cents) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(customer)
        .bind(total_cents)
        .execute(&mut *tx)
        .await?;
    Ok(placed)
}
// ANCHOR_END: place_and_invoice

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = match connect(&database_url).await {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("cannot use PostgreSQL at {database_url}: {error}");
            eprintln!("start one with `bash scripts/start-postgres.sh` (127.0.0.1:5432, user postgres, database test),");
            eprintln!("or point DATABASE_URL at one");
            std::process::exit(2);
        }
    };

    // ANCHOR: setup
    let store = PgStore::new(pool.clone());
    store.migrate().await?; // the event store's tables, next to the application's
    sqlx::query(
        "CREATE TABLE invoices (
            order_id TEXT PRIMARY KEY,
            customer TEXT NOT NULL,
            total_cents BIGINT NOT NULL
        )",
    )
    .execute(&pool)
    .await?;
    let orders = Repository::<Order, _>::new(store);
    // ANCHOR_END: setup

    // ANCHOR: commit
    let mut tx = pool.begin().await?;
    place_and_invoice(&orders, &mut tx, "order-1", "ada", 4200).await?;
    // The event and the invoice, together.
    tx.commit().await?;
    // ANCHOR_END: commit

    // ANCHOR: rollback
    let mut tx = pool.begin().await?;
    place_and_invoice(&orders, &mut tx, "order-2", "bob", 990).await?;
    // Something later in the request fails: the event and the invoice go, together.
    tx.rollback().await?;
    // ANCHOR_END: rollback

    // ANCHOR: retry
    // The first request is sent again: its first outcome, no second event, no second invoice.
    let mut tx = pool.begin().await?;
    let retried = place_and_invoice(&orders, &mut tx, "order-1", "ada", 4200).await?;
    tx.commit().await?;
    assert!(retried.duplicate);
    // ANCHOR_END: retry

    for id in ["order-1", "order-2"] {
        let (events, invoice) = stored(&orders, &pool, id).await?;
        let invoice = match invoice {
            Some(cents) => format!("invoice of {}.{:02}", cents / 100, cents % 100),
            None => "no invoice".to_owned(),
        };
        println!("{id}: {events} event(s), {invoice}");
    }
    assert_eq!(stored(&orders, &pool, "order-1").await?, (1, Some(4200)));
    assert_eq!(stored(&orders, &pool, "order-2").await?, (0, None));
    Ok(())
}

/// A pool whose connections work in [`SCHEMA`], recreated empty.
async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.options([("search_path", SCHEMA)]))
        .await?;
    sqlx::query("DROP SCHEMA IF EXISTS jetsource_example_transaction CASCADE")
        .execute(&pool)
        .await?;
    sqlx::query("CREATE SCHEMA jetsource_example_transaction")
        .execute(&pool)
        .await?;
    Ok(pool)
}

/// How many events order `id` has, and its invoiced total, as committed.
async fn stored(
    orders: &Repository<Order, PgStore>,
    pool: &PgPool,
    id: &str,
) -> Result<(usize, Option<i64>), Box<dyn std::error::Error>> {
    let key = jetsource::AggregateKey::new(Order::TYPE, jetsource::AggregateId::new(id)?);
    let events = orders.store().load(&key, 1).await?.len();
    let invoice = sqlx::query_scalar("SELECT total_cents FROM invoices WHERE order_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok((events, invoice))
}
