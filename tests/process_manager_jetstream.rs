//! The fulfilment process manager on a real nats-server: deadlines held by message schedules,
//! surviving restarts of the process and of the server; stale deadlines ignored; commands
//! applied once.

mod support;

use std::time::Duration;

use jetsource::process_manager::{self, ProcessConfig, ProcessManagerHandle};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{AggregateId, AggregateKey, EventStore, ExpectedVersion, JetStreamStore};
use support::fulfilment::domain::{Fulfilment, OrderStatus};
use support::fulfilment::{eventually, Shop};

const LONG: Duration = Duration::from_secs(3600);

struct World {
    events: JetStreamStore,
    instances: JetStreamStore,
    shop: Shop<JetStreamStore>,
}

impl World {
    async fn on(server: &NatsServer) -> Self {
        let events = support::store(server, "SHOP").await;
        let instances = support::store_with(
            server,
            support::config("FULFILMENT").allow_message_schedules(true),
        )
        .await;
        World {
            shop: Shop::new(events.clone()),
            events,
            instances,
        }
    }

    async fn start(&self) -> ProcessManagerHandle {
        process_manager::start::<Fulfilment>(
            &self.events,
            &self.instances,
            self.shop.commands(),
            config(),
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
}

/// Short ack waits, so a successor picks up what an aborted process left unacknowledged.
fn config() -> ProcessConfig {
    let mut config = ProcessConfig::new("fulfilment").concurrency(16);
    config.events = config.events.ack_wait(Duration::from_secs(2));
    config.deadlines = config.deadlines.ack_wait(Duration::from_secs(2));
    config
}

#[tokio::test]
async fn a_paid_order_ships_and_an_unpaid_one_is_cancelled_by_its_deadline() {
    let server = NatsServer::start();
    let world = World::on(&server).await;
    world.shop.add_stock("sku-1", 5).await;
    let running = world.start().await;

    world
        .shop
        .place("paid", "sku-1", Duration::from_secs(2))
        .await;
    world
        .shop
        .place("unpaid", "sku-1", Duration::from_secs(1))
        .await;
    world.shop.pay("paid").await;
    world.wait_for_order("paid", OrderStatus::Shipped).await;
    world.wait_for_order("unpaid", OrderStatus::Cancelled).await;
    eventually("the unpaid order's stock released", || async {
        world.shop.stock_of("sku-1").await.reserved == 1
    })
    .await;
    let stats = running.shutdown().await.unwrap();
    assert_eq!(world.shop.order("paid").await, (OrderStatus::Shipped, 1));
    assert_eq!(
        world.shop.order("unpaid").await,
        (OrderStatus::Cancelled, 1)
    );
    assert_eq!(
        stats.deadlines.handled, 1,
        "only the unpaid order's deadline fired"
    );
}

#[tokio::test]
async fn a_deadline_fires_after_the_process_and_the_server_restarted() {
    let mut server = NatsServer::start();
    let world = World::on(&server).await;
    world.shop.add_stock("sku-1", 5).await;
    let running = world.start().await;
    world
        .shop
        .place("o-1", "sku-1", Duration::from_secs(3))
        .await;
    eventually("reserved", || async {
        world.shop.stock_of("sku-1").await.reserved == 1
    })
    .await;
    // The process dies: no timer of its own could fire the deadline now.
    running.abort().await;

    server.stop();
    server.restart();
    let world = World::on(&server).await;
    let running = world.start().await;
    world.wait_for_order("o-1", OrderStatus::Cancelled).await;
    eventually("released", || async {
        world.shop.stock_of("sku-1").await.reserved == 0
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(world.shop.order("o-1").await, (OrderStatus::Cancelled, 1));
}

#[tokio::test]
async fn a_deadline_that_fires_after_its_cancel_or_the_completion_is_ignored() {
    let server = NatsServer::start();
    let world = World::on(&server).await;
    world.shop.add_stock("sku-1", 5).await;
    let running = world.start().await;
    world.shop.place("o-2", "sku-1", LONG).await;
    world.shop.pay("o-2").await;
    world.wait_for_order("o-2", OrderStatus::Shipped).await;

    // A fire that raced the cancel: the server stored it before the purge.
    let stale = support::subscriber::new_event(
        "deadline_fired",
        1,
        br#"{"deadline":"payment","generation":1}"#,
    );
    let key = AggregateKey::new("fulfilment_deadline", AggregateId::new("o-2").unwrap());
    world
        .instances
        .append(&key, ExpectedVersion::Any, None, vec![stale])
        .await
        .unwrap();
    eventually("the stale deadline delivered", || async {
        running.stats().deadlines.handled == 1
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(world.shop.order("o-2").await, (OrderStatus::Shipped, 1));
    assert_eq!(
        world.shop.stock_of("sku-1").await.reserved,
        1,
        "nothing released"
    );
}

#[tokio::test]
async fn a_successor_redoes_an_aborted_process_work_without_applying_a_command_twice() {
    let server = NatsServer::start();
    let world = World::on(&server).await;
    world.shop.add_stock("sku-1", 500).await;
    let running = world.start().await;
    for n in 0..200 {
        world.shop.place(&format!("k-{n}"), "sku-1", LONG).await;
        world.shop.pay(&format!("k-{n}")).await;
        if n == 100 {
            // Killed mid-stream: some inputs committed without effects, some unacknowledged.
            running.abort().await;
            break;
        }
    }
    let running = world.start().await;
    for n in 101..200 {
        world.shop.place(&format!("k-{n}"), "sku-1", LONG).await;
        world.shop.pay(&format!("k-{n}")).await;
    }
    for n in 0..200 {
        world
            .wait_for_order(&format!("k-{n}"), OrderStatus::Shipped)
            .await;
    }
    running.shutdown().await.unwrap();
    for n in 0..200 {
        assert_eq!(
            world.shop.order(&format!("k-{n}")).await,
            (OrderStatus::Shipped, 1)
        );
    }
    assert_eq!(world.shop.stock_of("sku-1").await.reserved, 200);
}

#[tokio::test]
async fn start_refuses_an_instance_store_without_message_schedules() {
    let server = NatsServer::start();
    let events = support::store(&server, "SHOP").await;
    let instances = support::store(&server, "FULFILMENT").await;
    let shop = Shop::new(events.clone());
    let error =
        process_manager::start::<Fulfilment>(&events, &instances, shop.commands(), config())
            .await
            .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid subscriber configuration: process manager fulfilment: stream FULFILMENT holds \
         its deadlines and needs allow_message_schedules"
    );
}

#[tokio::test]
async fn two_processes_share_the_instances_through_partitions() {
    let server = NatsServer::start();
    let world = World::on(&server).await;
    world.shop.add_stock("sku-1", 500).await;
    let start = || {
        process_manager::start::<Fulfilment>(
            &world.events,
            &world.instances,
            world.shop.commands(),
            config().partitions(4),
        )
    };
    let (first, second) = (start().await.unwrap(), start().await.unwrap());
    for n in 0..100 {
        world.shop.place(&format!("p-{n}"), "sku-1", LONG).await;
        world.shop.pay(&format!("p-{n}")).await;
    }
    for n in 0..100 {
        world
            .wait_for_order(&format!("p-{n}"), OrderStatus::Shipped)
            .await;
    }
    let (first, second) = (
        first.shutdown().await.unwrap(),
        second.shutdown().await.unwrap(),
    );
    for n in 0..100 {
        assert_eq!(
            world.shop.order(&format!("p-{n}")).await,
            (OrderStatus::Shipped, 1)
        );
    }
    assert_eq!(world.shop.stock_of("sku-1").await.reserved, 100);
    // Every event reached exactly one of the two (redeliveries aside, which there are none of).
    assert_eq!(first.events.handled + second.events.handled, 200);
}

#[tokio::test]
async fn start_refuses_to_keep_instances_in_the_events_stream() {
    let server = NatsServer::start();
    let events = support::store_with(
        &server,
        support::config("SHOP").allow_message_schedules(true),
    )
    .await;
    let shop = Shop::new(events.clone());
    let error = process_manager::start::<Fulfilment>(&events, &events, shop.commands(), config())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid subscriber configuration: process manager fulfilment: its instances need a \
         stream of their own, not the events' stream SHOP, which message schedules would open \
         to rollups"
    );
}

#[tokio::test]
async fn two_start_events_for_one_order_make_one_instance() {
    let server = NatsServer::start();
    let world = World::on(&server).await;
    world.shop.add_stock("sku-1", 5).await;
    let running = world.start().await;
    world.shop.place("twice", "sku-1", LONG).await;
    // The same order placed again by another command: a second start event.
    world
        .shop
        .orders
        .execute("twice", |_| {
            let again = support::fulfilment::domain::OrderPlaced {
                order_id: "twice".into(),
                sku: "sku-1".into(),
                pay_within_ms: LONG.as_millis() as u64,
            };
            Ok::<_, std::convert::Infallible>(vec![again.into()])
        })
        .await
        .unwrap();
    let key = AggregateKey::new("fulfilment", AggregateId::new("twice").unwrap());
    eventually("both start events handled", || async {
        world.instances.load(&key, 1).await.unwrap().len() == 2
    })
    .await;
    world.shop.pay("twice").await;
    world.wait_for_order("twice", OrderStatus::Shipped).await;
    running.shutdown().await.unwrap();
    assert_eq!(
        world.shop.stock_of("sku-1").await.reserved,
        1,
        "reserved once"
    );
}

#[tokio::test]
async fn an_event_whose_instance_never_starts_is_dead_lettered_and_can_be_redriven() {
    let server = NatsServer::start();
    let world = World::on(&server).await;
    world.shop.add_stock("sku-1", 5).await;
    let mut config = config().start_wait(Duration::from_millis(50));
    config.events = (config.events)
        .backoff([Duration::from_millis(20)])
        .max_deliver(2);
    let running = process_manager::start::<Fulfilment>(
        &world.events,
        &world.instances,
        world.shop.commands(),
        config,
    )
    .await
    .unwrap();
    // Paid before it was placed, as far as the process manager can tell: it never starts.
    world.shop.pay("early").await;
    let letters = jetsource::subscriber::DeadLetters::open(&world.events)
        .await
        .unwrap();
    eventually("a dead letter", || async {
        letters.list("fulfilment").await.unwrap().len() == 1
    })
    .await;
    let letter = &letters.list("fulfilment").await.unwrap()[0];
    assert_eq!(letter.subject, "shop.payment.early.payment_received");
    assert_eq!(
        letter.error,
        "process manager fulfilment, instance early: no start event created the instance \
         (waited 50ms) (after 2 attempts)"
    );

    // Once the order exists, the redriven payment ships it.
    world.shop.place("early", "sku-1", LONG).await;
    eventually("reserved", || async {
        world.shop.stock_of("sku-1").await.reserved == 1
    })
    .await;
    assert_eq!(letters.redrive("fulfilment").await.unwrap(), 1);
    world.wait_for_order("early", OrderStatus::Shipped).await;
    running.shutdown().await.unwrap();
}
