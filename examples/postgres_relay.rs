//! The quickstart's bank account with its events in PostgreSQL, relayed to NATS JetStream,
//! where a subscriber handles them as it would events the JetStream store wrote.
//!
//! Needs PostgreSQL at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`; the
//! store lives in the schema `jetsource_example_relay`, created afresh on every run) and a
//! nats-server 2.12 or newer with JetStream at `NATS_URL` (default `nats://127.0.0.1:4222`):
//!
//! ```console
//! bash scripts/start-postgres.sh
//! NATS_URL=nats://127.0.0.1:4222 cargo run --features postgres --example postgres_relay
//! ```

#[allow(dead_code)]
#[path = "quickstart.rs"]
mod quickstart;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jetsource::postgres::{relay_status, Relay, RelayConfig};
use jetsource::projection::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use jetsource::projection::sqlx::{self, PgPool};
use jetsource::subscriber::{self, EventContext, HandlerError, Subscriber, SubscriberConfig};
use jetsource::{
    EventSet, JetStreamConnectOptions, JetStreamStore, PgStore, Repository, StreamConfig,
};
use quickstart::{Account, Deposited};
use tokio::sync::watch;

const SCHEMA: &str = "jetsource_example_relay";

/// A pool on a fresh schema for the example.
async fn pool(url: &str) -> Result<PgPool, sqlx::Error> {
    let admin = PgPool::connect(url).await?;
    sqlx::query("DROP SCHEMA IF EXISTS jetsource_example_relay CASCADE")
        .execute(&admin)
        .await?;
    sqlx::query("CREATE SCHEMA jetsource_example_relay")
        .execute(&admin)
        .await?;
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .connect_with(options.options([("search_path", SCHEMA)]))
        .await
}

#[derive(EventSet, Debug)]
enum Deposits {
    Deposited(Deposited),
}

/// Sums the deposits per account it handles from the stream.
#[derive(Clone)]
struct Totals(Arc<Mutex<HashMap<String, u64>>>, watch::Sender<u64>);

impl Subscriber for Totals {
    type Event = Deposits;

    async fn handle(&self, event: Deposits, ctx: &EventContext) -> Result<(), HandlerError> {
        let Deposits::Deposited(deposit) = event;
        *self
            .0
            .lock()
            .unwrap()
            .entry(ctx.aggregate_id.clone())
            .or_default() += deposit.amount;
        self.1.send_modify(|handled| *handled += 1);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let database = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());

    // ANCHOR: setup
    let store = PgStore::new(pool(&database).await?);
    store.migrate().await?;
    let stream = JetStreamStore::connect(
        JetStreamConnectOptions::new([nats.as_str()]),
        StreamConfig::new("BANK_PG", "bank_pg"),
    )
    .await?;
    let relay = Relay::new(store.clone(), stream.clone(), RelayConfig::new("bank")).spawn();
    // ANCHOR_END: setup

    // Accounts named for this run, so a stream kept from an earlier run does not count.
    let run = uuid::Uuid::now_v7().simple().to_string();
    let accounts = Repository::<Account, _>::new(store.clone());
    let ids: Vec<String> = (1..=3).map(|n| format!("acc-{n}-{run}")).collect();
    for id in &ids {
        accounts
            .execute(id, |a: &Account| a.open("ada", "EUR"))
            .await?;
        for amount in [10, 20, 30] {
            accounts
                .execute(id, |a: &Account| a.deposit(amount))
                .await?;
        }
    }

    let totals = Totals(Arc::default(), watch::channel(0).0);
    let mut handled = totals.1.subscribe();
    let config = SubscriberConfig::new(format!("totals-{run}"));
    let running = subscriber::start(&stream, totals.clone(), config).await?;
    let ours = |totals: &HashMap<String, u64>| ids.iter().all(|id| totals.get(id) == Some(&60));
    tokio::time::timeout(Duration::from_secs(30), async {
        while !ours(&totals.0.lock().unwrap()) {
            let _ = handled.changed().await;
        }
    })
    .await
    .map_err(|_| "the relayed deposits did not reach the subscriber within 30 s")?;

    // ANCHOR: status
    let status = relay_status(store.pool(), "bank")
        .await?
        .ok_or("no relay row")?;
    println!(
        "relay {}: {} published, {} waiting",
        status.name, status.published, status.unpublished
    );
    // ANCHOR_END: status
    for id in &ids {
        println!("{id}: 60 deposited, seen on the stream");
    }
    running.shutdown().await?;
    relay.stop().await;
    Ok(())
}
