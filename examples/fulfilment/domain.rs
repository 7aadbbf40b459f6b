//! Order fulfilment: orders, stock and payments are aggregates; the `Fulfilment` process
//! manager ties them together. An order placed reserves stock and waits for payment; paid, it
//! ships; unpaid after the payment deadline, or out of stock, it is cancelled.

use std::time::Duration;

use jetsource::process_manager::{Command, ProcessContext, Rejected};
use jetsource::subscriber::HandlerError;
use jetsource::{Aggregate, Apply, Event, EventSet};
use serde::{Deserialize, Serialize};

// ANCHOR: events
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "order_placed", version = 1)]
pub struct OrderPlaced {
    pub order_id: String,
    pub sku: String,
    /// The payment terms: how long the order waits for its payment.
    pub pay_within_ms: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "order_shipped", version = 1)]
pub struct OrderShipped {
    pub order_id: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "order_cancelled", version = 1)]
pub struct OrderCancelled {
    pub order_id: String,
    pub reason: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "payment_received", version = 1)]
pub struct PaymentReceived {
    pub order_id: String,
    pub amount: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "stock_added", version = 1)]
pub struct StockAdded {
    pub quantity: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "stock_reserved", version = 1)]
pub struct StockReserved {
    pub order_id: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "stock_released", version = 1)]
pub struct StockReleased {
    pub order_id: String,
}
// ANCHOR_END: events

// ANCHOR: aggregates
#[derive(EventSet, Debug)]
pub enum OrderEvent {
    Placed(OrderPlaced),
    Shipped(OrderShipped),
    Cancelled(OrderCancelled),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OrderStatus {
    #[default]
    New,
    Placed,
    Shipped,
    Cancelled,
}

#[derive(Aggregate, Default, Debug)]
#[aggregate(name = "order", events = OrderEvent)]
pub struct Order {
    pub order_id: String,
    pub status: OrderStatus,
    /// How many events ended the order: a correct run never has more than one.
    pub endings: u32,
}

impl Apply<OrderPlaced> for Order {
    fn apply(&mut self, e: OrderPlaced) {
        self.order_id = e.order_id;
        self.status = OrderStatus::Placed;
    }
}

impl Apply<OrderShipped> for Order {
    fn apply(&mut self, _: OrderShipped) {
        self.status = OrderStatus::Shipped;
        self.endings += 1;
    }
}

impl Apply<OrderCancelled> for Order {
    fn apply(&mut self, _: OrderCancelled) {
        self.status = OrderStatus::Cancelled;
        self.endings += 1;
    }
}

#[derive(EventSet, Debug)]
pub enum StockEvent {
    Added(StockAdded),
    Reserved(StockReserved),
    Released(StockReleased),
}

#[derive(Aggregate, Default, Debug)]
#[aggregate(name = "stock", events = StockEvent)]
pub struct Stock {
    pub available: u32,
    pub reserved: u32,
}

impl Apply<StockAdded> for Stock {
    fn apply(&mut self, e: StockAdded) {
        self.available += e.quantity;
    }
}

impl Apply<StockReserved> for Stock {
    fn apply(&mut self, _: StockReserved) {
        self.available -= 1;
        self.reserved += 1;
    }
}

impl Apply<StockReleased> for Stock {
    fn apply(&mut self, _: StockReleased) {
        self.available += 1;
        self.reserved -= 1;
    }
}
#[derive(EventSet, Debug)]
pub enum PaymentEvent {
    Received(PaymentReceived),
}

/// Payments, one aggregate per order id.
#[derive(Aggregate, Default, Debug)]
#[aggregate(name = "payment", events = PaymentEvent)]
pub struct Payment {
    pub received: u64,
}

impl Apply<PaymentReceived> for Payment {
    fn apply(&mut self, e: PaymentReceived) {
        self.received += e.amount;
    }
}
// ANCHOR_END: aggregates

// ANCHOR: commands
/// Takes one unit of a SKU's stock for an order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Reserve {
    pub order_id: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ReserveRefused {
    OutOfStock,
}

impl Command for Reserve {
    const NAME: &'static str = "reserve";
    type Aggregate = Stock;
    type Rejection = ReserveRefused;

    fn decide(&self, stock: &Stock) -> Result<Vec<StockEvent>, ReserveRefused> {
        if stock.available == 0 {
            return Err(ReserveRefused::OutOfStock);
        }
        Ok(vec![StockReserved {
            order_id: self.order_id.clone(),
        }
        .into()])
    }
}

/// Gives a reserved unit back.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Release {
    pub order_id: String,
}

impl Command for Release {
    const NAME: &'static str = "release";
    type Aggregate = Stock;
    type Rejection = ();

    fn decide(&self, _: &Stock) -> Result<Vec<StockEvent>, ()> {
        Ok(vec![StockReleased {
            order_id: self.order_id.clone(),
        }
        .into()])
    }
}

/// Ships or cancels an order: whichever comes first ends it, the other is refused.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum EndOrder {
    Ship,
    Cancel { reason: String },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum OrderRefused {
    AlreadyEnded,
    NotPlaced,
}

impl Command for EndOrder {
    const NAME: &'static str = "end_order";
    type Aggregate = Order;
    type Rejection = OrderRefused;

    fn decide(&self, order: &Order) -> Result<Vec<OrderEvent>, OrderRefused> {
        match order.status {
            OrderStatus::New => Err(OrderRefused::NotPlaced),
            OrderStatus::Shipped | OrderStatus::Cancelled => Err(OrderRefused::AlreadyEnded),
            OrderStatus::Placed => {
                let order_id = order.order_id.clone();
                Ok(vec![match self {
                    EndOrder::Ship => OrderShipped { order_id }.into(),
                    EndOrder::Cancel { reason } => {
                        let reason = reason.clone();
                        OrderCancelled { order_id, reason }.into()
                    }
                }])
            }
        }
    }
}
// ANCHOR_END: commands

// ANCHOR: process_manager
/// One instance per order id.
#[derive(Default, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Fulfilment {
    pub sku: String,
    pub reserved: bool,
    pub paid: bool,
}

#[jetsource::process_manager(name = "fulfilment", correlate = order_id)]
impl Fulfilment {
    #[start]
    async fn on_placed(
        &mut self,
        e: OrderPlaced,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        if !cx.is_new() {
            // The same order placed twice: the instance exists and has reserved already.
            return Ok(());
        }
        self.sku = e.sku.clone();
        self.reserved = true;
        cx.send(
            e.sku,
            Reserve {
                order_id: e.order_id,
            },
        );
        cx.schedule("payment", Duration::from_millis(e.pay_within_ms));
        Ok(())
    }

    async fn on_paid(
        &mut self,
        _: PaymentReceived,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        self.paid = true;
        cx.cancel("payment");
        cx.send(cx.instance().to_owned(), EndOrder::Ship);
        cx.complete();
        Ok(())
    }

    #[deadline("payment")]
    async fn payment_overdue(&mut self, cx: &mut ProcessContext) -> Result<(), HandlerError> {
        let reason = "not paid in time".to_owned();
        cx.send(cx.instance().to_owned(), EndOrder::Cancel { reason });
        cx.send(
            self.sku.clone(),
            Release {
                order_id: cx.instance().to_owned(),
            },
        );
        cx.complete();
        Ok(())
    }

    #[rejected]
    async fn out_of_stock(
        &mut self,
        _: Rejected<Reserve>,
        cx: &mut ProcessContext,
    ) -> Result<(), HandlerError> {
        self.reserved = false;
        let reason = "out of stock".to_owned();
        cx.send(cx.instance().to_owned(), EndOrder::Cancel { reason });
        cx.complete();
        Ok(())
    }
}
// ANCHOR_END: process_manager
