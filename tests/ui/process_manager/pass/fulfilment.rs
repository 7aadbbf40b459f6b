use std::time::Duration;

use jetsource::process_manager::{Command, ProcessContext, ProcessManager, Rejected};
use jetsource::subscriber::HandlerError;
use jetsource::{Aggregate, Apply, Event, EventSet};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order_placed", version = 1)]
struct OrderPlaced {
    order_id: String,
    sku: String,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "payment_received", version = 1)]
struct PaymentReceived {
    order_id: String,
}

/// Correlated by another field, of another type.
#[derive(Event, Serialize, Deserialize)]
#[event(name = "shipped", version = 1)]
struct Shipped {
    order: u64,
}

/// Correlated by a function: the order id is the first part of the reference.
#[derive(Event, Serialize, Deserialize)]
#[event(name = "refunded", version = 1)]
struct Refunded {
    reference: String,
}

fn refunded_order(e: &Refunded) -> &str {
    e.reference.split('/').next().unwrap_or_default()
}

/// A tuple event, correlated by its first field.
#[derive(Event, Serialize, Deserialize)]
#[event(name = "noted", version = 1)]
struct Noted(String, String);

#[derive(Event, Serialize, Deserialize)]
#[event(name = "reserved", version = 1)]
struct Reserved {
    order_id: String,
}

#[derive(EventSet)]
enum StockEvent {
    Reserved(Reserved),
}

#[derive(Aggregate, Default)]
#[aggregate(name = "stock", events = StockEvent)]
struct Stock {
    available: u32,
}

impl Apply<Reserved> for Stock {
    fn apply(&mut self, _: Reserved) {
        self.available -= 1;
    }
}

#[derive(Serialize, Deserialize)]
struct Reserve {
    order_id: String,
}

impl Command for Reserve {
    const NAME: &'static str = "reserve";
    type Aggregate = Stock;
    type Rejection = String;

    fn decide(&self, stock: &Stock) -> Result<Vec<StockEvent>, String> {
        if stock.available == 0 {
            return Err("out of stock".into());
        }
        let order_id = self.order_id.clone();
        Ok(vec![Reserved { order_id }.into()])
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Fulfilment {
    sku: String,
    paid: bool,
    shipped: bool,
    refunded: bool,
    overdue: bool,
    out_of_stock: bool,
}

#[jetsource::process_manager(name = "fulfilment", correlate = order_id)]
impl Fulfilment {
    #[start]
    async fn on_placed(
        &mut self,
        e: OrderPlaced,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        self.sku = e.sku.clone();
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
        _: PaymentReceived,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        self.paid = true;
        cx.cancel("payment");
        Ok(())
    }

    #[correlate(order)]
    async fn on_shipped(
        &mut self,
        _: Shipped,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        self.shipped = true;
        cx.complete();
        Ok(())
    }

    #[correlate(with = refunded_order)]
    async fn on_refunded(
        &mut self,
        _: Refunded,
        _: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        self.refunded = true;
        Ok(())
    }

    #[start]
    #[correlate(0)]
    async fn on_noted(&mut self, _: Noted, _: &mut ProcessContext) -> Result<(), HandlerError> {
        Ok(())
    }

    #[deadline("payment")]
    async fn payment_overdue(&mut self, cx: &mut ProcessContext) -> Result<(), HandlerError> {
        self.overdue = true;
        cx.complete();
        Ok(())
    }

    #[rejected]
    async fn reserve_refused(
        &mut self,
        r: Rejected<Reserve>,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        self.out_of_stock = r.reason == "out of stock";
        cx.complete();
        Ok(())
    }
}

/// Other methods live in a plain impl block beside it.
impl Fulfilment {
    fn summary(&self) -> String {
        format!(
            "{} paid={} shipped={} refunded={} overdue={} out_of_stock={}",
            self.sku, self.paid, self.shipped, self.refunded, self.overdue, self.out_of_stock
        )
    }
}

/// A process manager that handles no deadlines and no rejections.
#[derive(Default, Serialize, Deserialize)]
struct Audit;

#[jetsource::process_manager(name = "audit", correlate = order_id)]
impl Audit {
    #[start]
    async fn on_placed(
        &mut self,
        _: OrderPlaced,
        _: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {
    type Handled = <Fulfilment as ProcessManager>::Event;
    assert_eq!(<Fulfilment as ProcessManager>::NAME, "fulfilment");
    assert_eq!(Fulfilment::DEADLINES, ["payment"]);
    assert_eq!(
        Handled::NAMES,
        [
            "order_placed",
            "payment_received",
            "shipped",
            "refunded",
            "noted"
        ]
    );

    let placed = Handled::from(OrderPlaced {
        order_id: "o1".into(),
        sku: "sku-9".into(),
    });
    let paid = Handled::from(PaymentReceived {
        order_id: "o2".into(),
    });
    let shipped = Handled::from(Shipped { order: 42 });
    let refunded = Handled::from(Refunded {
        reference: "o3/r7".into(),
    });
    let noted = Handled::from(Noted("o4".into(), "text".into()));
    let ids: Vec<String> = [&placed, &paid, &shipped, &refunded, &noted]
        .into_iter()
        .map(Fulfilment::correlate)
        .collect();
    assert_eq!(ids, ["o1", "o2", "42", "o3", "o4"]);
    let starts: Vec<bool> = [&placed, &paid, &shipped, &refunded, &noted]
        .into_iter()
        .map(Fulfilment::starts)
        .collect();
    assert_eq!(starts, [true, false, false, false, true]);
    assert!(Fulfilment::default()
        .summary()
        .ends_with("out_of_stock=false"));

    assert_eq!(<Audit as ProcessManager>::NAME, "audit");
    assert!(Audit::DEADLINES.is_empty());
    let placed = <Audit as ProcessManager>::Event::from(OrderPlaced {
        order_id: "o5".into(),
        sku: "sku-1".into(),
    });
    assert_eq!(Audit::correlate(&placed), "o5");
    assert!(Audit::starts(&placed));
}
