//! The fulfilment process manager on the in-memory store with a virtual clock: the same
//! semantics as on JetStream (tests/process_manager_jetstream.rs), without a server.

mod support;

use std::time::{Duration, SystemTime};

use jetsource::process_manager::{self, ProcessConfig, ProcessManagerHandle, VirtualClock};
use jetsource::{AggregateId, AggregateKey, EventStore, InMemoryStore};
use support::fulfilment::domain::{Fulfilment, OrderStatus};
use support::fulfilment::{eventually, Shop};

const PAYMENT_WINDOW: Duration = Duration::from_secs(15 * 60);

struct World {
    store: InMemoryStore,
    shop: Shop<InMemoryStore>,
    clock: VirtualClock,
}

impl World {
    fn new() -> Self {
        let store = InMemoryStore::new();
        World {
            shop: Shop::new(store.clone()),
            clock: VirtualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            store,
        }
    }

    async fn start(&self) -> ProcessManagerHandle {
        process_manager::start_in_memory::<Fulfilment>(
            &self.store,
            &self.store,
            self.shop.commands(),
            self.clock.clone(),
            ProcessConfig::new("fulfilment").concurrency(8),
        )
        .await
        .expect("start the process manager")
    }

    async fn wait_for_order(&self, order: &str, status: OrderStatus) {
        eventually(&format!("order {order} {status:?}"), || async {
            self.shop.order(order).await.0 == status
        })
        .await;
    }

    /// The instance records committed for `order`.
    async fn commits(&self, order: &str) -> usize {
        let key = AggregateKey::new("fulfilment", AggregateId::new(order).unwrap());
        self.store.load(&key, 1).await.unwrap().len()
    }
}

#[tokio::test]
async fn a_paid_order_ships_and_its_deadline_is_cancelled() {
    let world = World::new();
    world.shop.add_stock("sku-1", 5).await;
    let running = world.start().await;
    world.shop.place("o-1", "sku-1", PAYMENT_WINDOW).await;
    eventually("stock reserved", || async {
        world.shop.stock_of("sku-1").await.reserved == 1
    })
    .await;
    assert_eq!(world.clock.pending(), 1, "the payment deadline waits");

    world.shop.pay("o-1").await;
    world.wait_for_order("o-1", OrderStatus::Shipped).await;
    eventually("deadline cancelled", || async {
        world.clock.pending() == 0
    })
    .await;

    // Long after the payment window nothing more happens: the deadline was cancelled.
    world.clock.advance(PAYMENT_WINDOW * 2).await.unwrap();
    let stats = running.shutdown().await.unwrap();
    assert_eq!(world.shop.order("o-1").await, (OrderStatus::Shipped, 1));
    assert_eq!(world.shop.stock_of("sku-1").await.reserved, 1);
    assert_eq!(stats.deadlines.handled, 0);
    assert_eq!(world.commits("o-1").await, 2, "placed, then paid");
}

#[tokio::test]
async fn an_unpaid_order_is_cancelled_when_the_payment_deadline_fires() {
    let world = World::new();
    world.shop.add_stock("sku-1", 5).await;
    let running = world.start().await;
    world.shop.place("o-2", "sku-1", PAYMENT_WINDOW).await;
    eventually("deadline set", || async { world.clock.pending() == 1 }).await;

    world
        .clock
        .advance(PAYMENT_WINDOW - Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(world.clock.pending(), 1, "not due yet");
    world.clock.advance(Duration::from_secs(1)).await.unwrap();
    world.wait_for_order("o-2", OrderStatus::Cancelled).await;
    eventually("stock released", || async {
        let stock = world.shop.stock_of("sku-1").await;
        (stock.available, stock.reserved) == (5, 0)
    })
    .await;

    // A payment after the instance completed is ignored: the order stays cancelled.
    world.shop.pay("o-2").await;
    world.shop.place("o-3", "sku-1", PAYMENT_WINDOW).await;
    eventually("the next order reserved", || async {
        world.shop.stock_of("sku-1").await.reserved == 1
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(world.shop.order("o-2").await, (OrderStatus::Cancelled, 1));
}

#[tokio::test]
async fn a_rejected_reservation_comes_back_to_the_process_manager_which_cancels_the_order() {
    let world = World::new();
    world.shop.add_stock("sku-empty", 1).await;
    let running = world.start().await;
    world.shop.place("o-4", "sku-empty", PAYMENT_WINDOW).await;
    world.shop.place("o-5", "sku-empty", PAYMENT_WINDOW).await;
    eventually("one order cancelled for lack of stock", || async {
        let statuses = [
            world.shop.order("o-4").await.0,
            world.shop.order("o-5").await.0,
        ];
        statuses.contains(&OrderStatus::Cancelled)
    })
    .await;
    // The other one still waits for its payment; the refused one's deadline was cancelled.
    eventually("one deadline left", || async { world.clock.pending() == 1 }).await;
    running.shutdown().await.unwrap();
    assert_eq!(world.shop.stock_of("sku-empty").await.reserved, 1);
}

#[tokio::test]
async fn two_start_events_for_one_order_make_one_instance_that_reserves_once() {
    let world = World::new();
    world.shop.add_stock("sku-1", 5).await;
    let running = world.start().await;
    world.shop.place("o-6", "sku-1", PAYMENT_WINDOW).await;
    // The same order placed again by another command: a second start event.
    world
        .shop
        .orders
        .execute("o-6", |_| {
            let again = support::fulfilment::domain::OrderPlaced {
                order_id: "o-6".into(),
                sku: "sku-1".into(),
                pay_within_ms: PAYMENT_WINDOW.as_millis() as u64,
            };
            Ok::<_, std::convert::Infallible>(vec![again.into()])
        })
        .await
        .unwrap();
    eventually("both handled", || async { world.commits("o-6").await == 2 }).await;
    running.shutdown().await.unwrap();
    assert_eq!(world.shop.stock_of("sku-1").await.reserved, 1);
    assert_eq!(world.clock.pending(), 1);
}

#[tokio::test]
async fn redelivered_events_and_a_restart_apply_no_command_twice() {
    let world = World::new();
    world.shop.add_stock("sku-1", 50).await;
    let running = world.start().await;
    for n in 0..20 {
        world
            .shop
            .place(&format!("r-{n}"), "sku-1", PAYMENT_WINDOW)
            .await;
    }
    eventually("20 reserved", || async {
        world.shop.stock_of("sku-1").await.reserved == 20
    })
    .await;
    running.shutdown().await.unwrap();

    // Lost acknowledgements: every event comes again, to a new process with an empty cache,
    // which carries out each instance's last effects again (idempotently) and skips the inputs.
    let consumer = jetsource::subscriber::InMemoryConsumer::find(&world.store, "fulfilment")
        .expect("the events consumer");
    consumer.redeliver_from(1);
    let running = world.start().await;
    for n in 0..20 {
        world.shop.pay(&format!("r-{n}")).await;
    }
    for n in 0..20 {
        world
            .wait_for_order(&format!("r-{n}"), OrderStatus::Shipped)
            .await;
    }
    running.shutdown().await.unwrap();
    assert_eq!(world.shop.stock_of("sku-1").await.reserved, 20);
    for n in 0..20 {
        assert_eq!(
            world.shop.order(&format!("r-{n}")).await,
            (OrderStatus::Shipped, 1)
        );
        assert_eq!(
            world.commits(&format!("r-{n}")).await,
            2,
            "placed and paid, once each"
        );
    }
}

/// Refuses orders of one SKU: its failures are dead-lettered like a subscriber's.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Picky {
    orders: u32,
}

#[jetsource::process_manager(name = "picky", correlate = order_id)]
impl Picky {
    #[start]
    async fn on_placed(
        &mut self,
        e: support::fulfilment::domain::OrderPlaced,
        _: &mut jetsource::process_manager::ProcessContext,
    ) -> Result<(), jetsource::subscriber::HandlerError> {
        if e.sku == "poison" {
            return Err(jetsource::subscriber::HandlerError::permanent(
                "sku poison cannot be sold",
            ));
        }
        self.orders += 1;
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_handler_dead_letters_its_input_naming_the_instance_and_others_go_on() {
    let world = World::new();
    let running = process_manager::start_in_memory::<Picky>(
        &world.store,
        &world.store,
        jetsource::process_manager::Commands::new(),
        world.clock.clone(),
        ProcessConfig::new("picky"),
    )
    .await
    .unwrap();
    world.shop.place("bad", "poison", PAYMENT_WINDOW).await;
    world.shop.place("good", "sku-1", PAYMENT_WINDOW).await;
    let letters = jetsource::subscriber::InMemoryDeadLetters::new(&world.store);
    eventually("a dead letter", || async {
        letters.list("picky").len() == 1
    })
    .await;
    eventually("the good order handled", || async {
        let key = AggregateKey::new("picky", AggregateId::new("good").unwrap());
        world.store.load(&key, 1).await.unwrap().len() == 1
    })
    .await;
    running.shutdown().await.unwrap();
    let letter = &letters.list("picky")[0];
    assert_eq!(
        letter.error,
        "process manager picky, instance bad: sku poison cannot be sold"
    );
    assert_eq!(letter.event.aggregate_id, "bad");
    let key = AggregateKey::new("picky", AggregateId::new("bad").unwrap());
    assert!(
        world.store.load(&key, 1).await.unwrap().is_empty(),
        "nothing committed"
    );
}

#[tokio::test]
async fn an_event_whose_instance_never_starts_waits_then_is_dead_lettered() {
    let world = World::new();
    let mut config = ProcessConfig::new("fulfilment").start_wait(Duration::from_millis(20));
    config.events = (config.events)
        .backoff([Duration::from_millis(10)])
        .max_deliver(2);
    let running = process_manager::start_in_memory::<Fulfilment>(
        &world.store,
        &world.store,
        world.shop.commands(),
        world.clock.clone(),
        config,
    )
    .await
    .unwrap();
    world.shop.pay("ghost").await;
    let letters = jetsource::subscriber::InMemoryDeadLetters::new(&world.store);
    eventually("a dead letter", || async {
        letters.list("fulfilment").len() == 1
    })
    .await;
    running.shutdown().await.unwrap();
    let letter = &letters.list("fulfilment")[0];
    assert_eq!(letter.event.name, "payment_received");
    assert_eq!(
        letter.error,
        "process manager fulfilment, instance ghost: no start event created the instance \
         (waited 20ms) (after 2 attempts)"
    );
}
