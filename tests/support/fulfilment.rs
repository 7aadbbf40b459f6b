//! The order-fulfilment domain of `examples/fulfilment` (the same file), with a shop that
//! places orders, adds stock and takes payments on any store, for the process-manager tests
//! and benchmarks.

#[path = "../../examples/fulfilment/domain.rs"]
pub mod domain;

use std::future::Future;
use std::time::{Duration, Instant};

use domain::{
    EndOrder, Order, OrderPlaced, OrderStatus, Payment, PaymentReceived, Release, Reserve, Stock,
    StockAdded,
};
use jetsource::process_manager::Commands;
use jetsource::{CommandMetadata, EventStore, Repository};

/// Repositories of the three aggregates on one store.
pub struct Shop<S> {
    pub orders: Repository<Order, S>,
    pub stock: Repository<Stock, S>,
    pub payments: Repository<Payment, S>,
}

impl<S: EventStore + Clone> Shop<S> {
    pub fn new(store: S) -> Self {
        Shop {
            orders: Repository::new(store.clone()),
            stock: Repository::new(store.clone()),
            payments: Repository::new(store),
        }
    }

    /// Where the process manager's commands run.
    pub fn commands(&self) -> Commands {
        Commands::new()
            .route::<Reserve, _>(self.stock.clone())
            .route::<Release, _>(self.stock.clone())
            .route::<EndOrder, _>(self.orders.clone())
    }

    pub async fn add_stock(&self, sku: &str, quantity: u32) {
        self.stock
            .execute(sku, |_: &Stock| {
                Ok::<_, std::convert::Infallible>(vec![StockAdded { quantity }.into()])
            })
            .await
            .expect("add stock");
    }

    pub async fn place(&self, order_id: &str, sku: &str, pay_within: Duration) {
        let placed = OrderPlaced {
            order_id: order_id.to_owned(),
            sku: sku.to_owned(),
            pay_within_ms: pay_within.as_millis() as u64,
        };
        let metadata = CommandMetadata::default().command_id(format!("place-{order_id}"));
        self.orders
            .execute_with(order_id, metadata, |_: &Order| {
                Ok::<_, std::convert::Infallible>(vec![placed.clone().into()])
            })
            .await
            .expect("place order");
    }

    pub async fn pay(&self, order_id: &str) {
        let metadata = CommandMetadata::default().command_id(format!("pay-{order_id}"));
        self.payments
            .execute_with(order_id, metadata, |_: &Payment| {
                let paid = PaymentReceived {
                    order_id: order_id.to_owned(),
                    amount: 10,
                };
                Ok::<_, std::convert::Infallible>(vec![paid.into()])
            })
            .await
            .expect("pay");
    }

    /// The order's status and how many events ended it.
    pub async fn order(&self, order_id: &str) -> (OrderStatus, u32) {
        let order = self.orders.load(order_id).await.expect("load order").state;
        (order.status, order.endings)
    }

    pub async fn stock_of(&self, sku: &str) -> Stock {
        self.stock.load(sku).await.expect("load stock").state
    }
}

/// Awaits `done` (polled every 5 ms); panics naming `what` after a generous hang guard.
pub async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
