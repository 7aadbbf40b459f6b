use std::sync::Mutex;
use std::time::Duration;

use jetsource::subscriber::{
    DeliverFrom, EventContext, HandlerError, Subscriber, SubscriberConfig, SubscriberDefinition,
};
use jetsource::{Codec, Event, EventSet, RawEvent};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "created", version = 1)]
struct Created {
    owner: String,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "opened", version = 2, previous = Created, renamed_from = "created")]
struct Opened {
    owner: String,
    currency: String,
}

impl From<Created> for Opened {
    fn from(old: Created) -> Self {
        Opened {
            owner: old.owner,
            currency: "EUR".into(),
        }
    }
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

#[derive(Default)]
struct Balances {
    seen: Mutex<Vec<String>>,
}

// ANCHOR: subscriber_macro
#[jetsource::subscriber(
    durable = "balances",
    deliver_from = "new",
    ack_wait_ms = 2_000,
    max_deliver = 3,
    backoff_ms = [100, 1000],
    max_ack_pending = 64,
    concurrency = 8
)]
impl Balances {
    async fn on_opened(&self, e: Opened, ctx: &EventContext) -> Result<(), HandlerError> {
        let line = format!("{} opened {} in {}", ctx.event_name, e.owner, e.currency);
        self.seen.lock().unwrap().push(line);
        Ok(())
    }

    async fn on_deposited(&self, e: Deposited, _: &EventContext) -> Result<(), HandlerError> {
        if e.amount == 0 {
            return Err(HandlerError::permanent("empty deposit"));
        }
        self.seen
            .lock()
            .unwrap()
            .push(format!("deposited {}", e.amount));
        Ok(())
    }
}
// ANCHOR_END: subscriber_macro

/// Non-handler methods live in a plain impl block beside it.
impl Balances {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The defaults apply to keys that are not written.
struct Minimal;

#[jetsource::subscriber(durable = "minimal", deliver_from = 42)]
impl Minimal {
    async fn on_deposited(&self, _: Deposited, _: &EventContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Shared by every process that runs it: six partitions, a process silent for 3 s loses its own.
struct Scaled;

#[jetsource::subscriber(
    durable = "scaled",
    stream = "BANK",
    deliver_from = "2026-01-31T08:00:00.5Z",
    partitions = 6,
    member_ttl_ms = 3_000
)]
impl Scaled {
    async fn on_deposited(&self, _: Deposited, _: &EventContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn ctx(name: &str, version: u32) -> EventContext {
    EventContext {
        event_id: uuid::Uuid::now_v7(),
        event_name: name.into(),
        event_version: version,
        aggregate_type: "account".into(),
        aggregate_id: "a1".into(),
        sequence: 1,
        position: 1,
        timestamp: std::time::SystemTime::now(),
        correlation_id: "c".into(),
        causation_id: None,
        command_id: None,
        headers: Default::default(),
        delivery_count: 1,
        redriven: false,
    }
}

fn deliver(
    balances: &Balances,
    name: &str,
    version: u32,
    payload: &[u8],
) -> Result<(), HandlerError> {
    type Handled = <Balances as Subscriber>::Event;
    let raw = RawEvent {
        name,
        version,
        codec: Codec::Json,
        payload,
    };
    let event = Handled::decode(raw).unwrap().unwrap();
    futures::executor::block_on(balances.handle(event, &ctx(name, version)))
}

fn main() {
    // Only the handled types, with every name of their lineage.
    type Handled = <Balances as Subscriber>::Event;
    assert_eq!(Handled::NAMES, ["opened", "deposited"]);
    assert_eq!(Handled::known_names(), ["opened", "created", "deposited"]);

    // Each event goes to its handler, upcast from the old name.
    let balances = Balances::default();
    deliver(&balances, "created", 1, br#"{"owner":"ada"}"#).unwrap();
    deliver(
        &balances,
        "opened",
        2,
        br#"{"owner":"bob","currency":"USD"}"#,
    )
    .unwrap();
    deliver(&balances, "deposited", 1, br#"{"amount":5}"#).unwrap();
    let error = deliver(&balances, "deposited", 1, br#"{"amount":0}"#).unwrap_err();
    assert!(!error.is_retryable());
    assert_eq!(
        balances.seen(),
        [
            "created opened ada in EUR",
            "opened opened bob in USD",
            "deposited 5"
        ]
    );

    assert_eq!(
        Balances::subscriber_config(),
        SubscriberConfig::new("balances")
            .deliver_from(DeliverFrom::New)
            .ack_wait(Duration::from_secs(2))
            .max_deliver(3)
            .backoff([Duration::from_millis(100), Duration::from_secs(1)])
            .max_ack_pending(64)
            .concurrency(8)
    );
    assert!(Balances::subscriber_config().validate().is_ok());
    assert_eq!(
        <std::sync::Arc<Balances> as SubscriberDefinition>::subscriber_config().durable_name,
        "balances"
    );
    assert_eq!(
        Minimal::subscriber_config(),
        SubscriberConfig::new("minimal").deliver_from(DeliverFrom::Position(42))
    );
    assert_eq!(
        Scaled::subscriber_config(),
        SubscriberConfig::new("scaled")
            .stream("BANK")
            .deliver_from(DeliverFrom::Time(
                std::time::UNIX_EPOCH + Duration::from_millis(1_769_846_400_500)
            ))
            .partitions(6)
            .member_ttl(Duration::from_secs(3))
    );
}
