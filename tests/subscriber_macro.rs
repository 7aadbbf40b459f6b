//! `#[jetsource::subscriber]` against a real nats-server spawned by the test harness: the
//! generated subscriber runs on a durable consumer named by the attribute, with the attribute's
//! settings, is sent exactly its handlers' event types (including events stored under a name
//! the type had before a rename) and gets them upcast.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jetsource::subscriber::{self, EventContext, HandlerError, SubscriberDefinition};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, Event, EventStore, ExpectedVersion, JetStreamConnectOptions,
    JetStreamStore, NewEvent, StreamConfig,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The first version of `Opened`, stored under its old name.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "account_created", version = 1)]
struct Created {
    owner: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "account_opened", version = 2, previous = Created, renamed_from = "account_created")]
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

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

/// Stored on the same aggregates, but handled by no one here.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "noted", version = 1)]
struct Noted {
    text: String,
}

/// What a handler saw: which handler, the event, and the stored name and version.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Opened(String, Opened, String, u32),
    Deposited(String, Deposited, String, u32),
}

#[derive(Default)]
struct Ledger {
    seen: Mutex<Vec<Seen>>,
}

#[jetsource::subscriber(
    durable = "ledger",
    ack_wait_ms = 1_000,
    max_deliver = 3,
    backoff_ms = [50, 100],
    max_ack_pending = 100,
    concurrency = 4
)]
impl Ledger {
    async fn on_opened(&self, event: Opened, ctx: &EventContext) -> Result<(), HandlerError> {
        let seen = Seen::Opened(
            ctx.aggregate_id.clone(),
            event,
            ctx.event_name.clone(),
            ctx.event_version,
        );
        self.seen.lock().unwrap().push(seen);
        Ok(())
    }

    async fn on_deposited(&self, event: Deposited, ctx: &EventContext) -> Result<(), HandlerError> {
        let seen = Seen::Deposited(
            ctx.aggregate_id.clone(),
            event,
            ctx.event_name.clone(),
            ctx.event_version,
        );
        self.seen.lock().unwrap().push(seen);
        Ok(())
    }
}

impl Ledger {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn stored(event: &impl Event) -> NewEvent {
    let encoded = event.encode().expect("encode");
    NewEvent {
        id: Uuid::now_v7(),
        name: encoded.name,
        version: encoded.version,
        codec: encoded.codec,
        payload: encoded.payload.into(),
        timestamp: SystemTime::now(),
        correlation_id: "corr".into(),
        causation_id: None,
        headers: BTreeMap::new(),
    }
}

async fn append(store: &JetStreamStore, id: &str, events: Vec<NewEvent>) {
    let key = AggregateKey::new("account", AggregateId::new(id).expect("valid id"));
    store
        .append(&key, ExpectedVersion::Any, None, events)
        .await
        .expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_subscriber_gets_exactly_its_event_types_upcast_on_its_durable() {
    let server = NatsServer::start();
    let store = JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new("MACRO", "macro"),
    )
    .await
    .expect("connect to the harness server");
    let noted = || {
        stored(&Noted {
            text: "not for the ledger".into(),
        })
    };
    // a1 was opened before the rename: its event is stored as `account_created` version 1.
    append(
        &store,
        "a1",
        vec![
            stored(&Created {
                owner: "ada".into(),
            }),
            noted(),
            stored(&Deposited { amount: 5 }),
        ],
    )
    .await;
    append(
        &store,
        "a2",
        vec![
            stored(&Opened {
                owner: "bob".into(),
                currency: "USD".into(),
            }),
            noted(),
            stored(&Deposited { amount: 7 }),
        ],
    )
    .await;

    let ledger = Arc::new(Ledger::default());
    let running = subscriber::start_defined(&store, ledger.clone())
        .await
        .expect("start");
    let js = async_nats::jetstream::new(store.client().clone());
    let stream = js.get_stream("MACRO").await.expect("stream");
    let started = Instant::now();
    loop {
        let info = stream.consumer_info("ledger").await.expect("consumer");
        let seen = ledger.seen().len();
        if seen == 4 && info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up waiting: {seen} handled, {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = stream.consumer_info("ledger").await.expect("consumer");
    let stats = running.shutdown().await.expect("shutdown");

    // Each aggregate's events in order, upcast, with the name and version they were stored as.
    let seen = ledger.seen();
    let of = |id: &str| -> Vec<Seen> {
        seen.iter()
            .filter(|s| matches!(s, Seen::Opened(a, ..) | Seen::Deposited(a, ..) if a == id))
            .cloned()
            .collect()
    };
    assert_eq!(
        of("a1"),
        [
            Seen::Opened(
                "a1".into(),
                Opened {
                    owner: "ada".into(),
                    currency: "EUR".into()
                },
                "account_created".into(),
                1
            ),
            Seen::Deposited("a1".into(), Deposited { amount: 5 }, "deposited".into(), 1),
        ]
    );
    assert_eq!(
        of("a2"),
        [
            Seen::Opened(
                "a2".into(),
                Opened {
                    owner: "bob".into(),
                    currency: "USD".into()
                },
                "account_opened".into(),
                2
            ),
            Seen::Deposited("a2".into(), Deposited { amount: 7 }, "deposited".into(), 1),
        ]
    );

    // The server never sent the `noted` events: four deliveries in all, nothing dead-lettered
    // (an unhandled name that got through would be dead-lettered as unknown).
    assert_eq!(info.delivered.consumer_sequence, 4);
    assert_eq!((stats.handled, stats.dead_lettered), (4, 0));

    // The consumer is the attribute's: its durable name, its filters from the handled types'
    // every name, its settings.
    assert_eq!(info.name, "ledger");
    assert_eq!(info.config.durable_name.as_deref(), Some("ledger"));
    let mut filters = info.config.filter_subjects.clone();
    filters.sort();
    assert_eq!(
        filters,
        [
            "macro.*.*.account_created",
            "macro.*.*.account_opened",
            "macro.*.*.deposited"
        ]
    );
    assert_eq!(info.config.ack_wait, Duration::from_secs(1));
    assert_eq!(info.config.max_ack_pending, 100);
    let config = Ledger::subscriber_config();
    assert_eq!(
        (config.max_deliver, config.concurrency, config.backoff),
        (
            3,
            4,
            vec![Duration::from_millis(50), Duration::from_millis(100)]
        )
    );
}
