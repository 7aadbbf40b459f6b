//! Orders whose events are Protobuf messages (prost), with an upcasted older version.
//!
//! The example stores an `order_placed` event the way version-1 code wrote it, loads the order
//! through today's code, which reads it as version 2 through the upcaster, runs a command on
//! it, and prints what is stored. It runs on the embedded in-memory store, no server needed:
//!
//! ```console
//! cargo run --example orders_protobuf
//! ```

use jetsource::{
    Aggregate, AggregateId, AggregateKey, Apply, Event, EventSet, EventStore, ExpectedVersion,
    InMemoryStore, NewEvent, RawEvent, Repository,
};
use prost::Message;

// ANCHOR: events_v1
/// Version 1 of `order_placed`: the total in cents of an implicit currency, as a `uint32`.
/// Kept only to read events written by version-1 code.
#[derive(Event, Clone, PartialEq, prost::Message)]
#[event(name = "order_placed", version = 1, codec = "protobuf")]
pub struct OrderPlacedV1 {
    #[prost(string, tag = "1")]
    pub customer: String,
    #[prost(uint32, tag = "2")]
    pub total_cents: u32,
}
// ANCHOR_END: events_v1

// ANCHOR: events_v2
/// Version 2 widened the total to `uint64` (a compatible change on the Protobuf wire) and added
/// the currency.
#[derive(Event, Clone, PartialEq, prost::Message)]
#[event(name = "order_placed", version = 2, previous = OrderPlacedV1, codec = "protobuf")]
pub struct OrderPlaced {
    #[prost(string, tag = "1")]
    pub customer: String,
    #[prost(uint64, tag = "2")]
    pub total_cents: u64,
    #[prost(string, tag = "3")]
    pub currency: String,
}

/// The upcaster: how a stored version 1 becomes today's version 2.
impl From<OrderPlacedV1> for OrderPlaced {
    fn from(v1: OrderPlacedV1) -> Self {
        OrderPlaced {
            customer: v1.customer,
            total_cents: u64::from(v1.total_cents),
            // Version-1 code only ever sold in euros.
            currency: "EUR".to_owned(),
        }
    }
}

#[derive(Event, Clone, PartialEq, prost::Message)]
#[event(name = "order_shipped", version = 1, codec = "protobuf")]
pub struct OrderShipped {
    #[prost(string, tag = "1")]
    pub carrier: String,
}
// ANCHOR_END: events_v2

// ANCHOR: aggregate
#[derive(EventSet, Debug, Clone, PartialEq)]
pub enum OrderEvent {
    Placed(OrderPlaced),
    Shipped(OrderShipped),
}

#[derive(Aggregate, Default, Debug, Clone, PartialEq)]
#[aggregate(name = "order", events = OrderEvent)]
pub struct Order {
    pub customer: Option<String>,
    pub total_cents: u64,
    pub currency: String,
    pub carrier: Option<String>,
}

impl Apply<OrderPlaced> for Order {
    fn apply(&mut self, event: OrderPlaced) {
        self.customer = Some(event.customer);
        self.total_cents = event.total_cents;
        self.currency = event.currency;
    }
}

impl Apply<OrderShipped> for Order {
    fn apply(&mut self, event: OrderShipped) {
        self.carrier = Some(event.carrier);
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("the order was never placed")]
    NotPlaced,
    #[error("the order has already shipped with {0}")]
    AlreadyShipped(String),
}

impl Order {
    pub fn ship(&self, carrier: &str) -> Result<Vec<OrderEvent>, OrderError> {
        self.customer.as_ref().ok_or(OrderError::NotPlaced)?;
        if let Some(carrier) = &self.carrier {
            return Err(OrderError::AlreadyShipped(carrier.clone()));
        }
        Ok(vec![OrderShipped {
            carrier: carrier.to_owned(),
        }
        .into()])
    }
}
// ANCHOR_END: aggregate

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = InMemoryStore::new();

    // ANCHOR: store_v1
    // An order placed by version-1 code: a Protobuf `order_placed` version 1 payload.
    let v1 = OrderPlacedV1 {
        customer: "Ada".to_owned(),
        total_cents: 4_250,
    };
    let encoded = Event::encode(&v1)?; // name, version, codec and the prost bytes
    let key = AggregateKey::new(Order::TYPE, AggregateId::new("order-1")?);
    store
        .append(
            &key,
            ExpectedVersion::Exact(0),
            None,
            vec![NewEvent {
                id: uuid::Uuid::now_v7(),
                name: encoded.name,
                version: encoded.version,
                codec: encoded.codec,
                payload: encoded.payload.into(),
                timestamp: std::time::SystemTime::now(),
                correlation_id: "import-2019".to_owned(),
                causation_id: None,
                headers: Default::default(),
            }],
        )
        .await?;
    // ANCHOR_END: store_v1

    let stored = store.load(&key, 1).await?;
    println!(
        "stored: `{}` v{} ({}), payload {}",
        stored[0].name,
        stored[0].version,
        stored[0].codec,
        hex(&stored[0].payload)
    );

    // ANCHOR: load_v2
    // Today's code reads it as version 2: the upcaster fills in the currency.
    let orders = Repository::<Order, _>::new(store.clone());
    let loaded = orders.load("order-1").await?;
    println!(
        "loaded as v2: customer {:?}, total {} cents in {} at version {}",
        loaded.state.customer, loaded.state.total_cents, loaded.state.currency, loaded.version
    );

    // The same decoding, one event at a time, without a repository.
    let decoded = OrderEvent::decode(RawEvent {
        name: &stored[0].name,
        version: stored[0].version,
        codec: stored[0].codec,
        payload: &stored[0].payload,
    })?;
    println!("decoded: {decoded:?}");
    // ANCHOR_END: load_v2

    let expected = OrderPlaced {
        customer: "Ada".to_owned(),
        total_cents: 4_250,
        currency: "EUR".to_owned(),
    };
    if decoded != Some(OrderEvent::Placed(expected)) || loaded.state.currency != "EUR" {
        return Err("the v1 event was not upcast to the expected v2".into());
    }

    // ANCHOR: command
    // New events are written in today's version only.
    let shipped = orders.execute("order-1", |o| o.ship("DHL")).await?;
    println!(
        "shipped with {:?} at version {}",
        shipped.state.carrier, shipped.version
    );
    match orders.execute("order-1", |o| o.ship("UPS")).await {
        Err(jetsource::ExecuteError::Rejected(error)) => {
            println!("second shipment refused: {error}")
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    // ANCHOR_END: command

    // A current-version payload is plain Protobuf that any Protobuf reader can decode.
    for event in store.load(&key, 1).await? {
        println!(
            "  #{} `{}` v{} {} {}",
            event.sequence,
            event.name,
            event.version,
            event.codec,
            hex(&event.payload)
        );
    }
    let raw_v1 = OrderPlacedV1::decode(&stored[0].payload[..])?;
    println!("the stored bytes are still a valid v1 message: {raw_v1:?}");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
