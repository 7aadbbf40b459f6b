//! The impl `#[jetsource::process_manager]` generates, without a store: its name, deadline names
//! and event set, the correlation and start flag of each event, and the dispatch of events,
//! deadlines and rejections to the right handlers (run through `ProcessFixture`).

use std::time::{Duration, SystemTime};

use jetsource::process_manager::{
    Command, ProcessContext, ProcessFixture, ProcessManager, Rejected,
};
use jetsource::subscriber::HandlerError;
use jetsource::{Aggregate, Apply, Event, EventSet};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "order_placed", version = 1)]
struct OrderPlaced {
    order_id: String,
    sku: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "payment_received", version = 1)]
struct PaymentReceived {
    order_id: String,
    amount: u64,
}

/// Correlated by a field of its own name and type.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "order_shipped", version = 1)]
struct Shipped {
    order: u64,
}

/// Correlated by a function: the order id is the part of the reference before the `/`.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "order_refunded", version = 1)]
struct Refunded {
    reference: String,
}

fn refunded_order(event: &Refunded) -> &str {
    event.reference.split('/').next().unwrap_or_default()
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "stock_reserved", version = 1)]
struct StockReserved {
    order_id: String,
}

#[derive(EventSet)]
enum StockEvent {
    Reserved(StockReserved),
}

#[derive(Aggregate, Default)]
#[aggregate(name = "stock", events = StockEvent)]
struct Stock {
    available: u32,
}

impl Apply<StockReserved> for Stock {
    fn apply(&mut self, _: StockReserved) {
        self.available -= 1;
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Reserve {
    order_id: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum ReserveRejected {
    OutOfStock,
}

impl Command for Reserve {
    const NAME: &'static str = "reserve";
    type Aggregate = Stock;
    type Rejection = ReserveRejected;

    fn decide(&self, stock: &Stock) -> Result<Vec<StockEvent>, ReserveRejected> {
        if stock.available == 0 {
            return Err(ReserveRejected::OutOfStock);
        }
        let order_id = self.order_id.clone();
        Ok(vec![StockReserved { order_id }.into()])
    }
}

/// A command no `#[rejected]` handler takes.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Release {
    order_id: String,
}

impl Command for Release {
    const NAME: &'static str = "release";
    type Aggregate = Stock;
    type Rejection = String;

    fn decide(&self, _: &Stock) -> Result<Vec<StockEvent>, String> {
        Ok(Vec::new())
    }
}

/// Which handlers ran, in order, and what they saw.
#[derive(Default, Serialize, Deserialize, Debug)]
struct Fulfilment {
    order: String,
    sku: String,
    ran: Vec<String>,
}

#[jetsource::process_manager(name = "fulfilment", correlate = order_id)]
impl Fulfilment {
    #[start]
    async fn on_placed(
        &mut self,
        e: OrderPlaced,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        self.order = cx.instance().to_owned();
        self.sku = e.sku.clone();
        self.ran.push("on_placed".into());
        cx.send(
            e.sku,
            Reserve {
                order_id: e.order_id,
            },
        );
        cx.schedule("payment", Duration::from_secs(900));
        Ok(())
    }

    async fn on_paid(
        &mut self,
        e: PaymentReceived,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        if e.amount == 0 {
            return Err(HandlerError::permanent("a payment of nothing"));
        }
        self.ran.push(format!("on_paid {}", e.amount));
        cx.cancel("payment");
        cx.schedule("shipping", Duration::from_secs(3600));
        Ok(())
    }

    #[correlate(order)]
    async fn on_shipped(
        &mut self,
        e: Shipped,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        self.ran.push(format!("on_shipped {}", e.order));
        cx.cancel("shipping");
        cx.complete();
        Ok(())
    }

    #[correlate(with = refunded_order)]
    async fn on_refunded(
        &mut self,
        e: Refunded,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        self.ran.push(format!("on_refunded {}", e.reference));
        cx.complete();
        Ok(())
    }

    #[deadline("payment")]
    async fn payment_overdue(&mut self, cx: &mut ProcessContext) -> Result<(), HandlerError> {
        self.ran.push("payment_overdue".into());
        let order_id = self.order.clone();
        cx.send(self.sku.clone(), Release { order_id });
        cx.complete();
        Ok(())
    }

    #[deadline("shipping")]
    async fn shipping_overdue(&mut self, _: &mut ProcessContext) -> Result<(), HandlerError> {
        self.ran.push("shipping_overdue".into());
        Ok(())
    }

    #[rejected]
    async fn reserve_refused(
        &mut self,
        rejected: Rejected<Reserve>,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        let line = format!(
            "reserve_refused {} {:?} at {}",
            rejected.command.order_id, rejected.reason, rejected.aggregate_id
        );
        self.ran.push(line);
        cx.complete();
        Ok(())
    }
}

type Handled = <Fulfilment as ProcessManager>::Event;

fn placed(order_id: &str) -> OrderPlaced {
    OrderPlaced {
        order_id: order_id.into(),
        sku: "sku-7".into(),
    }
}

fn paid(order_id: &str, amount: u64) -> PaymentReceived {
    PaymentReceived {
        order_id: order_id.into(),
        amount,
    }
}

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

#[test]
fn name_deadlines_and_events_come_from_the_attribute_and_handlers() {
    assert_eq!(<Fulfilment as ProcessManager>::NAME, "fulfilment");
    assert_eq!(Fulfilment::DEADLINES, ["payment", "shipping"]);
    assert_eq!(
        Handled::NAMES,
        [
            "order_placed",
            "payment_received",
            "order_shipped",
            "order_refunded"
        ]
    );
}

#[test]
fn each_event_is_correlated_its_own_way_and_only_start_events_start() {
    let events: [(Handled, &str, bool); 4] = [
        (placed("o-1").into(), "o-1", true),
        (paid("o-2", 5).into(), "o-2", false),
        (Shipped { order: 42 }.into(), "42", false),
        (
            Refunded {
                reference: "o-3/r-9".into(),
            }
            .into(),
            "o-3",
            false,
        ),
    ];
    for (event, id, starts) in &events {
        assert_eq!(Fulfilment::correlate(event), *id);
        assert_eq!(Fulfilment::starts(event), *starts);
    }
}

#[tokio::test]
async fn events_go_to_their_handlers_with_their_effects() {
    let mut fixture = ProcessFixture::<Fulfilment>::new();

    // Before a start event, the runtime skips the others.
    assert!(!fixture.when(paid("o-1", 5)).await.unwrap().handled);

    let then = fixture.when(placed("o-1")).await.unwrap();
    assert!(then.handled && !then.completed);
    assert_eq!(then.commands.len(), 1);
    assert_eq!(then.commands[0].aggregate_id, "sku-7");
    assert_eq!(
        then.commands[0].typed::<Reserve>(),
        Some(Reserve {
            order_id: "o-1".into()
        })
    );
    assert_eq!(then.scheduled, [("payment".to_owned(), at(900))].into());
    assert_eq!(fixture.state().unwrap().order, "o-1");

    let then = fixture.when(paid("o-1", 5)).await.unwrap();
    assert_eq!(then.cancelled, ["payment"]);
    assert_eq!(then.scheduled, [("shipping".to_owned(), at(3600))].into());

    let then = fixture.when(Shipped { order: 1 }).await.unwrap();
    assert!(then.completed && fixture.is_completed());
    assert_eq!(
        fixture.state().unwrap().ran,
        ["on_placed", "on_paid 5", "on_shipped 1"]
    );
}

#[tokio::test]
async fn a_handler_error_comes_back_and_changes_nothing() {
    let mut fixture = ProcessFixture::<Fulfilment>::new();
    fixture.when(placed("o-1")).await.unwrap();
    let error = fixture.when(paid("o-1", 0)).await.unwrap_err();
    assert!(!error.is_retryable());
    assert_eq!(fixture.state().unwrap().ran, ["on_placed"]);
    assert_eq!(
        fixture.pending_deadlines(),
        [("payment".to_owned(), at(900))].into()
    );
}

#[tokio::test]
async fn a_function_correlated_event_reaches_its_handler() {
    let mut fixture = ProcessFixture::<Fulfilment>::new();
    fixture.when(placed("o-3")).await.unwrap();
    let refunded = Refunded {
        reference: "o-3/r-1".into(),
    };
    assert!(fixture.when(refunded).await.unwrap().completed);
    assert_eq!(
        fixture.state().unwrap().ran,
        ["on_placed", "on_refunded o-3/r-1"]
    );
}

#[tokio::test]
async fn deadlines_go_to_the_handler_of_their_name() {
    let mut fixture = ProcessFixture::<Fulfilment>::new();
    fixture.when(placed("o-1")).await.unwrap();
    let then = fixture.when_deadline("payment").await.unwrap();
    assert!(then.handled && then.completed);
    assert_eq!(fixture.now(), at(900));
    assert_eq!(
        then.commands[0].typed::<Release>(),
        Some(Release {
            order_id: "o-1".into()
        })
    );
    assert_eq!(
        fixture.state().unwrap().ran,
        ["on_placed", "payment_overdue"]
    );

    let mut fixture = ProcessFixture::<Fulfilment>::new();
    fixture.when(placed("o-2")).await.unwrap();
    fixture.when(paid("o-2", 3)).await.unwrap();
    // Cancelled, so no longer pending.
    assert!(!fixture.when_deadline("payment").await.unwrap().handled);
    let then = fixture.when_deadline("shipping").await.unwrap();
    assert!(then.handled && !then.completed);
    assert_eq!(
        fixture.state().unwrap().ran,
        ["on_placed", "on_paid 3", "shipping_overdue"]
    );
}

#[tokio::test]
async fn rejections_go_to_the_handler_of_their_command() {
    let mut fixture = ProcessFixture::<Fulfilment>::new();
    fixture.when(placed("o-1")).await.unwrap();
    let reserve = Reserve {
        order_id: "o-1".into(),
    };
    let then = fixture
        .when_rejected("sku-7", reserve, ReserveRejected::OutOfStock)
        .await
        .unwrap();
    assert!(then.handled && then.completed);
    assert_eq!(
        fixture.state().unwrap().ran,
        ["on_placed", "reserve_refused o-1 OutOfStock at sku-7"]
    );
}

#[tokio::test]
async fn a_rejection_no_handler_takes_is_let_go() {
    let mut fixture = ProcessFixture::<Fulfilment>::new();
    fixture.when(placed("o-1")).await.unwrap();
    let release = Release {
        order_id: "o-1".into(),
    };
    let then = fixture
        .when_rejected("sku-7", release, "unknown order".to_owned())
        .await
        .unwrap();
    assert!(then.handled && !then.completed && then.commands.is_empty());
    assert_eq!(fixture.state().unwrap().ran, ["on_placed"]);
}
