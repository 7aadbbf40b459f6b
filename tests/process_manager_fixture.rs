//! The fulfilment process manager's decisions with `ProcessFixture`: given these events, when
//! this event, deadline or rejection, then these commands, deadline changes and state; no store
//! and no clock. Then the same process manager on the in-memory store with a virtual clock.
//! The book's chapter "Process managers" includes these tests.

mod support;

use std::time::{Duration, SystemTime};

use jetsource::process_manager::{self, ProcessConfig, ProcessFixture, VirtualClock};
use jetsource::subscriber::HandlerError;
use jetsource::InMemoryStore;
use support::fulfilment::domain::{
    EndOrder, Fulfilment, OrderPlaced, OrderStatus, PaymentReceived, Release, Reserve,
    ReserveRefused,
};
use support::fulfilment::{eventually, Shop};

/// The payment window of the orders below.
const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);

fn placed(order_id: &str) -> OrderPlaced {
    OrderPlaced {
        order_id: order_id.to_owned(),
        sku: "sku-1".to_owned(),
        pay_within_ms: FIFTEEN_MINUTES.as_millis() as u64,
    }
}

fn paid(order_id: &str) -> PaymentReceived {
    PaymentReceived {
        order_id: order_id.to_owned(),
        amount: 25,
    }
}

// ANCHOR: placed
#[tokio::test]
async fn a_placed_order_reserves_stock_and_waits_for_its_payment() -> Result<(), HandlerError> {
    let mut fixture = ProcessFixture::<Fulfilment>::new();
    let then = fixture.when(placed("o-1")).await?;

    assert!(then.handled);
    let [reserve] = &then.commands[..] else {
        panic!("one command, got {:?}", then.commands);
    };
    assert_eq!(reserve.aggregate_id, "sku-1");
    let wanted = Reserve {
        order_id: "o-1".into(),
    };
    assert_eq!(reserve.typed::<Reserve>(), Some(wanted));
    // The fixture's time starts at the Unix epoch.
    let due = SystemTime::UNIX_EPOCH + FIFTEEN_MINUTES;
    assert_eq!(then.scheduled.get("payment"), Some(&due));
    assert!(!then.completed);
    assert_eq!(fixture.pending_deadlines().len(), 1);
    Ok(())
}
// ANCHOR_END: placed

// ANCHOR: paid
#[tokio::test]
async fn a_paid_order_ships_and_its_payment_deadline_is_cancelled() -> Result<(), HandlerError> {
    let mut fixture = ProcessFixture::<Fulfilment>::new()
        .given([placed("o-1")])
        .await?;
    let then = fixture.when(paid("o-1")).await?;

    assert!(then.handled);
    assert_eq!(then.commands.len(), 1);
    assert_eq!(then.commands[0].aggregate_id, "o-1");
    assert_eq!(then.commands[0].typed::<EndOrder>(), Some(EndOrder::Ship));
    assert_eq!(then.cancelled, ["payment"]);
    assert!(then.completed);
    assert!(fixture.state().is_some_and(|state| state.paid));
    Ok(())
}
// ANCHOR_END: paid

// ANCHOR: deadline
#[tokio::test]
async fn an_unpaid_order_is_cancelled_when_the_payment_deadline_fires() -> Result<(), HandlerError>
{
    let mut fixture = ProcessFixture::<Fulfilment>::new()
        .given([placed("o-1")])
        .await?;
    // Moves the fixture's time to the deadline's due time and runs its handler.
    let then = fixture.when_deadline("payment").await?;

    assert!(then.handled);
    assert_eq!(fixture.now(), SystemTime::UNIX_EPOCH + FIFTEEN_MINUTES);
    let cancel = EndOrder::Cancel {
        reason: "not paid in time".into(),
    };
    let release = Release {
        order_id: "o-1".into(),
    };
    assert_eq!(then.commands.len(), 2);
    assert_eq!(then.commands[0].typed::<EndOrder>(), Some(cancel));
    assert_eq!(then.commands[0].aggregate_id, "o-1");
    assert_eq!(then.commands[1].typed::<Release>(), Some(release));
    assert_eq!(then.commands[1].aggregate_id, "sku-1");
    assert!(then.completed);
    assert!(fixture.pending_deadlines().is_empty());
    Ok(())
}
// ANCHOR_END: deadline

// ANCHOR: rejected
#[tokio::test]
async fn an_order_out_of_stock_is_cancelled() -> Result<(), HandlerError> {
    let mut fixture = ProcessFixture::<Fulfilment>::new()
        .given([placed("o-1")])
        .await?;
    let reserve = Reserve {
        order_id: "o-1".into(),
    };
    let then = fixture
        .when_rejected("sku-1", reserve, ReserveRefused::OutOfStock)
        .await?;

    assert!(then.handled);
    let cancel = EndOrder::Cancel {
        reason: "out of stock".into(),
    };
    assert_eq!(then.commands.len(), 1);
    assert_eq!(then.commands[0].typed::<EndOrder>(), Some(cancel));
    assert_eq!(then.commands[0].aggregate_id, "o-1");
    // Completing cancels the deadlines still pending.
    assert_eq!(then.cancelled, ["payment"]);
    assert!(then.completed);
    assert!(fixture.state().is_some_and(|state| !state.reserved));
    Ok(())
}
// ANCHOR_END: rejected

// ANCHOR: skipped
#[tokio::test]
async fn an_event_for_an_instance_never_started_is_skipped() -> Result<(), HandlerError> {
    let mut fixture = ProcessFixture::<Fulfilment>::new();
    // A payment is not a start event: without an order placed there is no instance.
    let then = fixture.when(paid("o-1")).await?;

    assert!(!then.handled);
    assert!(then.commands.is_empty());
    assert!(fixture.state().is_none());
    Ok(())
}

#[tokio::test]
async fn a_completed_instance_skips_every_input() -> Result<(), HandlerError> {
    let mut fixture = ProcessFixture::<Fulfilment>::new()
        .given([placed("o-1")])
        .await?
        .given([paid("o-1")])
        .await?;
    assert!(fixture.is_completed());

    // Another payment, the cancelled deadline, the start event again.
    assert!(!fixture.when(paid("o-1")).await?.handled);
    assert!(!fixture.when_deadline("payment").await?.handled);
    assert!(!fixture.when(placed("o-1")).await?.handled);
    // A command the completing handler sent may still be refused: its compensation runs, and
    // the instance stays completed.
    let reserve = Reserve {
        order_id: "o-1".into(),
    };
    let late = fixture.when_rejected("sku-1", reserve, ReserveRefused::OutOfStock);
    assert!(late.await?.handled);
    assert!(fixture.is_completed());
    Ok(())
}
// ANCHOR_END: skipped

// ANCHOR: in_memory
#[tokio::test]
async fn on_the_in_memory_store_the_deadline_fires_when_the_clock_moves() {
    // One store for the shop's events and the instances; deadlines wait on the virtual clock.
    let store = InMemoryStore::new();
    let shop = Shop::new(store.clone());
    let clock = VirtualClock::new(SystemTime::UNIX_EPOCH);
    shop.add_stock("sku-1", 5).await;
    let config = ProcessConfig::new("fulfilment");
    let running = process_manager::start_in_memory::<Fulfilment>(
        &store,
        &store,
        shop.commands(),
        clock.clone(),
        config,
    )
    .await
    .expect("start the process manager");

    shop.place("o-1", "sku-1", FIFTEEN_MINUTES).await;
    eventually("the payment deadline", || async { clock.pending() == 1 }).await;
    assert_eq!(shop.stock_of("sku-1").await.reserved, 1);

    // A second short of the due time nothing fires; at the due time the order is cancelled.
    clock
        .advance(FIFTEEN_MINUTES - Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(clock.pending(), 1);
    clock.advance(Duration::from_secs(1)).await.unwrap();
    eventually("the order cancelled", || async {
        shop.order("o-1").await == (OrderStatus::Cancelled, 1)
    })
    .await;
    eventually("the stock released", || async {
        shop.stock_of("sku-1").await.reserved == 0
    })
    .await;
    running.shutdown().await.expect("stop the process manager");
}
// ANCHOR_END: in_memory

/// Fails its first reminder: a failed handler changes nothing, so the deadline stays pending.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Reminder {
    attempts: u32,
}

#[jetsource::process_manager(name = "reminder", correlate = order_id)]
impl Reminder {
    #[start]
    async fn on_placed(
        &mut self,
        _: OrderPlaced,
        cx: &mut jetsource::process_manager::ProcessContext,
    ) -> Result<(), HandlerError> {
        cx.schedule("remind", Duration::from_secs(60));
        Ok(())
    }

    #[deadline("remind")]
    async fn remind(
        &mut self,
        _: &mut jetsource::process_manager::ProcessContext,
    ) -> Result<(), HandlerError> {
        self.attempts += 1;
        Err(HandlerError::retryable("the mail server is down"))
    }
}

#[tokio::test]
async fn a_deadline_whose_handler_fails_stays_pending_with_the_state_before() {
    let mut fixture = ProcessFixture::<Reminder>::new()
        .given([placed("o-1")])
        .await
        .unwrap();
    assert!(fixture.when_deadline("remind").await.is_err());
    assert_eq!(fixture.pending_deadlines().len(), 1);
    assert_eq!(fixture.state().unwrap().attempts, 0);
    assert!(
        fixture.when_deadline("remind").await.is_err(),
        "handled again"
    );
}
