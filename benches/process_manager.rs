//! The fulfilment process manager's throughput beside plain subscribers on the same events, in
//! the same run.
//!
//! ```text
//! cargo bench -p jetsource-tests --bench process_manager                 # 5,000 orders, 3 rounds
//! PM_BENCH=short cargo test -p jetsource-tests --bench process_manager   # CI's short run
//! ```
//!
//! Each round seeds, for each variant, a fresh stream on one file-storage nats-server with N
//! orders' `order_placed` events, then their N `payment_received` events (and stock for 64
//! SKUs), and times a fresh durable from its start until it handled all 2N events:
//! - **plain**: a `Subscriber` that only counts (its ack is the runtime's);
//! - **hand-written**: a `Subscriber` that runs what users write without a process manager:
//!   `Reserve` on the SKU for a placement, `EndOrder::Ship` for a payment, through the same
//!   repositories, with command ids; no instance state, no deadlines;
//! - **process manager**: `Fulfilment`, which for a placement commits its instance, schedules
//!   the payment deadline (a nats-server message schedule) and reserves; for a payment commits,
//!   cancels the deadline and ships.
//!
//! All three use `Idempotency::Off` (the process manager's own subscribers do: its instance
//! record dedupes) and concurrency 32. Rounds rotate the variants' order; medians are reported
//! with the ratios of the process manager to the other two. Each variant checks what it
//! measured: every event handled once, and for the two that command, every order reserved and
//! shipped once. Each also reports the messages its clients sent and received per event.
//! `PM_BENCH_ORDERS`, `PM_BENCH_ROUNDS` and `PM_BENCH_ONLY=plain|hand|pm` change the size, the
//! rounds and the variants run (for profiling).

#[allow(dead_code)]
#[path = "../tests/support/fulfilment.rs"]
mod fulfilment;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fulfilment::domain::{
    EndOrder, Fulfilment, OrderEvent, OrderPlaced, PaymentReceived, Reserve, StockAdded, StockEvent,
};
use fulfilment::Shop;
use futures::StreamExt;
use jetsource::process_manager::{self, Command as _, ProcessConfig};
use jetsource::subscriber::{
    self, EventContext, HandlerError, Idempotency, Subscriber, SubscriberConfig,
};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, Codec, CommandMetadata, Event, EventSet, EventStore, ExecuteError,
    ExpectedVersion, JetStreamConnectOptions, JetStreamStore, NewEvent, StreamConfig,
};

const SKUS: usize = 64;
const CONCURRENCY: usize = 32;

#[derive(EventSet, Debug)]
enum Inputs {
    Placed(OrderPlaced),
    Paid(PaymentReceived),
}

fn sku(order: usize) -> String {
    format!("sku-{}", order % SKUS)
}

fn new_event(event: impl Event) -> NewEvent {
    let encoded = event.encode().expect("encode");
    NewEvent {
        id: uuid::Uuid::now_v7(),
        name: encoded.name,
        version: encoded.version,
        codec: Codec::Json,
        payload: encoded.payload.into(),
        timestamp: SystemTime::now(),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        causation_id: None,
        headers: Default::default(),
    }
}

async fn store(url: &str, config: StreamConfig) -> JetStreamStore {
    JetStreamStore::connect(JetStreamConnectOptions::new([url]), config)
        .await
        .expect("connect")
}

/// A fresh events stream with stock for every order, then all placements, then all payments:
/// a payment comes N positions after its placement, so the process manager (which skips a
/// payment for an order it has not seen placed) meets the placement first unless a placement's
/// handler stalls while N other events are handled, which the check below would report.
async fn seed(url: &str, name: &str, orders: usize) -> JetStreamStore {
    let store = store(url, StreamConfig::new(name, name.to_lowercase())).await;
    let append = |ty: &'static str, id: String, event: NewEvent| {
        let store = store.clone();
        async move {
            let key = AggregateKey::new(ty, AggregateId::new(id).expect("id"));
            (store.append(&key, ExpectedVersion::Exact(0), None, vec![event]))
                .await
                .expect("seed");
        }
    };
    let quantity = orders.div_ceil(SKUS) as u32;
    let stock = (0..SKUS).map(|s| append("stock", sku(s), new_event(StockAdded { quantity })));
    futures::stream::iter(stock)
        .buffer_unordered(64)
        .collect::<()>()
        .await;
    let placed = (0..orders).map(|o| {
        let event = OrderPlaced {
            order_id: format!("o-{o}"),
            sku: sku(o),
            // Never due within the run: the deadline is scheduled and cancelled, not fired.
            pay_within_ms: 3_600_000,
        };
        append("order", format!("o-{o}"), new_event(event))
    });
    futures::stream::iter(placed)
        .buffer_unordered(64)
        .collect::<()>()
        .await;
    let paid = (0..orders).map(|o| {
        let event = PaymentReceived {
            order_id: format!("o-{o}"),
            amount: 10,
        };
        append("payment", format!("o-{o}"), new_event(event))
    });
    futures::stream::iter(paid)
        .buffer_unordered(64)
        .collect::<()>()
        .await;
    store
}

fn config(durable: &str) -> SubscriberConfig {
    SubscriberConfig::new(durable)
        .idempotency(Idempotency::Off)
        .concurrency(CONCURRENCY)
}

/// Counts; nothing else.
#[derive(Default)]
struct Plain(AtomicU64);

impl Subscriber for Plain {
    type Event = Inputs;

    async fn handle(&self, event: Inputs, _: &EventContext) -> Result<(), HandlerError> {
        std::hint::black_box(event);
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The commands without a process manager.
struct HandWritten {
    shop: Shop<JetStreamStore>,
    done: AtomicU64,
}

impl Subscriber for HandWritten {
    type Event = Inputs;

    async fn handle(&self, event: Inputs, _: &EventContext) -> Result<(), HandlerError> {
        match event {
            Inputs::Placed(placed) => {
                let command = Reserve {
                    order_id: placed.order_id.clone(),
                };
                let metadata =
                    CommandMetadata::default().command_id(format!("reserve-{}", placed.order_id));
                (self
                    .shop
                    .stock
                    .execute_with(&placed.sku, metadata, |stock| command.decide(stock)))
                .await
                .map_err(failed)?;
            }
            Inputs::Paid(paid) => {
                let metadata =
                    CommandMetadata::default().command_id(format!("ship-{}", paid.order_id));
                (self
                    .shop
                    .orders
                    .execute_with(&paid.order_id, metadata, |order| {
                        EndOrder::Ship.decide(order)
                    }))
                .await
                .map_err(failed)?;
            }
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A refusal is a bug here (the stock suffices, each order ships once): permanent.
fn failed<E: std::fmt::Debug>(error: ExecuteError<E>) -> HandlerError {
    match error {
        ExecuteError::Rejected(refused) => HandlerError::permanent(format!("refused: {refused:?}")),
        other => HandlerError::retryable(format!("{other:?}")),
    }
}

/// Messages (sent, received) so far by the clients of `stores` (each store has its own).
fn traffic(stores: &[&JetStreamStore]) -> [u64; 2] {
    stores.iter().fold([0, 0], |[sent, received], store| {
        let stats = store.client().statistics();
        [
            sent + stats.out_messages.load(Ordering::Relaxed),
            received + stats.in_messages.load(Ordering::Relaxed),
        ]
    })
}

/// A variant's rate, and the messages its clients sent and received per event.
struct Measured {
    rate: f64,
    per_event: [f64; 2],
}

impl Measured {
    fn new(rate: f64, before: [u64; 2], after: [u64; 2], events: usize) -> Self {
        let per_event = [0, 1].map(|i| (after[i] - before[i]) as f64 / events as f64);
        Measured { rate, per_event }
    }
}

/// Waits until `handled()` reaches `total`; the rate from `start`.
async fn rate_until(start: Instant, total: usize, handled: impl Fn() -> u64) -> f64 {
    while handled() < total as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "stalled at {} of {total}",
            handled()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn plain(url: &str, round: usize, orders: usize) -> Measured {
    let store = seed(url, &format!("PMB_PLAIN_{round}"), orders).await;
    let counter = Arc::new(Plain::default());
    let before = traffic(&[&store]);
    let start = Instant::now();
    let running = subscriber::start(&store, counter.clone(), config("plain"))
        .await
        .expect("start");
    let rate = rate_until(start, 2 * orders, || counter.0.load(Ordering::Relaxed)).await;
    let after = traffic(&[&store]);
    let stats = running.shutdown().await.expect("shutdown");
    assert_eq!(stats.handled, 2 * orders as u64, "every event handled once");
    Measured::new(rate, before, after, 2 * orders)
}

async fn hand_written(url: &str, round: usize, orders: usize) -> Measured {
    let store = seed(url, &format!("PMB_HAND_{round}"), orders).await;
    let handler = Arc::new(HandWritten {
        shop: Shop::new(store.clone()),
        done: AtomicU64::new(0),
    });
    let before = traffic(&[&store]);
    let start = Instant::now();
    let running = subscriber::start(&store, handler.clone(), config("hand"))
        .await
        .expect("start");
    let rate = rate_until(start, 2 * orders, || handler.done.load(Ordering::Relaxed)).await;
    let after = traffic(&[&store]);
    let stats = running.shutdown().await.expect("shutdown");
    assert_eq!(stats.handled, 2 * orders as u64, "every event handled once");
    check_shipped(&store, orders).await;
    Measured::new(rate, before, after, 2 * orders)
}

async fn managed(url: &str, round: usize, orders: usize) -> Measured {
    let store = seed(url, &format!("PMB_PM_{round}"), orders).await;
    let name = format!("PMB_PM_{round}_FULFILMENT");
    let instances_config =
        StreamConfig::new(&name, name.to_lowercase()).allow_message_schedules(true);
    let instances = self::store(url, instances_config).await;
    let shop = Shop::new(store.clone());
    let config = ProcessConfig::new("fulfilment").concurrency(CONCURRENCY);
    let before = traffic(&[&store, &instances]);
    let start = Instant::now();
    let running = process_manager::start::<Fulfilment>(&store, &instances, shop.commands(), config)
        .await
        .expect("start");
    let rate = rate_until(start, 2 * orders, || running.stats().events.handled).await;
    let after = traffic(&[&store, &instances]);
    let stats = running.shutdown().await.expect("shutdown");
    assert_eq!(
        stats.events.handled,
        2 * orders as u64,
        "every event handled once"
    );
    assert_eq!(stats.deadlines.handled, 0, "no deadline fired");
    check_shipped(&store, orders).await;
    Measured::new(rate, before, after, 2 * orders)
}

/// Every order reserved once and shipped once, read back from the stream.
async fn check_shipped(store: &JetStreamStore, orders: usize) {
    let (mut reserved, mut shipped) = (HashSet::new(), HashSet::new());
    for event in store
        .read_all(1, usize::MAX)
        .await
        .expect("read the stream")
    {
        match event.aggregate_type.as_str() {
            "stock" => {
                if let Some(StockEvent::Reserved(r)) =
                    StockEvent::decode(event.raw()).expect("stock")
                {
                    assert!(reserved.insert(r.order_id), "a reservation applied twice");
                }
            }
            "order" => {
                if let Some(OrderEvent::Shipped(_)) =
                    OrderEvent::decode(event.raw()).expect("order")
                {
                    assert!(shipped.insert(event.aggregate_id), "an order shipped twice");
                }
            }
            _ => {}
        }
    }
    assert_eq!(
        (reserved.len(), shipped.len()),
        (orders, orders),
        "every order reserved and shipped"
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (orders, rounds) = match std::env::var("PM_BENCH").as_deref() {
        Ok("short") => (500, 1),
        _ => (5_000, 3),
    };
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // For profiling: other sizes, one variant (`plain`, `hand` or `pm`; the others report 0).
    let (orders, rounds) = (
        number("PM_BENCH_ORDERS", orders),
        number("PM_BENCH_ROUNDS", rounds),
    );
    let only = std::env::var("PM_BENCH_ONLY").unwrap_or_default();
    let server = NatsServer::start();
    let url = server.url();
    println!(
        "nats-server on {url}; {orders} orders ({} events) per variant and round, {rounds} rounds",
        2 * orders
    );
    // Per variant (plain, hand-written, process manager): the rounds' measurements.
    let mut measured: [Vec<Measured>; 3] = Default::default();
    for round in 0..rounds {
        // Rotate who goes first: the server's files grow through a round.
        for variant in (0..3).map(|v| (v + round) % 3) {
            let name = ["plain", "hand", "pm"][variant];
            if !(only.is_empty() || only == name) {
                measured[variant].push(Measured {
                    rate: 0.0,
                    per_event: [0.0; 2],
                });
                continue;
            }
            measured[variant].push(match variant {
                0 => plain(&url, round, orders).await,
                1 => hand_written(&url, round, orders).await,
                _ => managed(&url, round, orders).await,
            });
        }
        let [a, b, c] = [0, 1, 2].map(|v| measured[v][round].rate);
        println!(
            "round {round}: plain {a:.0}  hand-written {b:.0}  process manager {c:.0} events/s"
        );
    }
    let names = [
        "plain subscriber (count, ack)",
        "hand-written subscriber (Reserve, Ship)",
        "Fulfilment process manager",
    ];
    let mut rates = [0.0; 3];
    for (variant, name) in names.iter().enumerate() {
        rates[variant] = median(measured[variant].iter().map(|m| m.rate).collect());
        let [sent, received] = measured[variant].last().expect("a round").per_event;
        println!(
            "{name:<42} {:>8.0} events/s  ({sent:.1} messages sent, {received:.1} received per event)",
            rates[variant]
        );
    }
    let [a, b, c] = rates;
    println!(
        "process manager / plain {:.3}x, / hand-written {:.2}x",
        c / a,
        c / b
    );
}
