//! Helpers shared by the store and subscriber tests: events to append, JetStream stores on a
//! harness server, and a log of what a test subscriber handled; [`subscriber`] has what the
//! subscriber tests of every backend share, [`workers`] the tests that kill processes.
#![allow(dead_code)]

pub mod fulfilment;
pub mod postgres;
pub mod subscriber;
pub mod workers;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use jetsource::subscriber::EventContext;

use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, AppendOutcome, Codec, EventStore, ExpectedVersion,
    JetStreamConnectOptions, JetStreamStore, NewEvent, StreamConfig,
};

/// An event with a JSON payload and some metadata.
pub fn event(name: &'static str, payload: &str) -> NewEvent {
    let mut headers = BTreeMap::new();
    headers.insert("tenant".to_owned(), "acme".to_owned());
    NewEvent {
        id: uuid::Uuid::now_v7(),
        name,
        version: 1,
        codec: Codec::Json,
        payload: payload.as_bytes().to_vec().into(),
        timestamp: SystemTime::now(),
        correlation_id: "corr-1".to_owned(),
        causation_id: Some("cause-1".to_owned()),
        headers,
    }
}

/// `n` events named `name`, payloads `{"n":0}`, `{"n":1}` ...
pub fn events(name: &'static str, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event(name, &format!("{{\"n\":{i}}}")))
        .collect()
}

/// The key of aggregate `id` of type `ty`.
pub fn key(ty: &'static str, id: &str) -> AggregateKey {
    AggregateKey::new(ty, AggregateId::new(id).expect("valid id"))
}

/// A stream named `name` under prefix `name` lowercased.
pub fn config(name: &str) -> StreamConfig {
    StreamConfig::new(name, name.to_lowercase())
}

/// A store on `server` with `config`.
pub async fn store_with(server: &NatsServer, config: StreamConfig) -> JetStreamStore {
    JetStreamStore::connect(JetStreamConnectOptions::new([server.url()]), config)
        .await
        .expect("connect to the harness server")
}

/// A store on `server` with stream `name`.
pub async fn store(server: &NatsServer, name: &str) -> JetStreamStore {
    store_with(server, config(name)).await
}

/// Appends `events` again under `command_id` and asserts that the store reports a duplicate
/// carrying the sequences and position of the `first` append of that command.
pub async fn assert_retry_is_duplicate<S: EventStore>(
    store: &S,
    key: &AggregateKey,
    expected: ExpectedVersion,
    command_id: &str,
    events: Vec<NewEvent>,
    first: AppendOutcome,
) {
    let again = store
        .append(key, expected, Some(command_id), events)
        .await
        .unwrap();
    assert!(again.duplicate, "{expected:?}");
    assert_eq!(
        (
            again.first_sequence,
            again.last_sequence,
            again.last_position
        ),
        (
            first.first_sequence,
            first.last_sequence,
            first.last_position
        ),
        "{expected:?}"
    );
}

/// What a test subscriber handled: per aggregate the versions (or other values) in handling
/// order, per event id how often the handler completed it.
#[derive(Default)]
pub struct HandlingLog {
    pub order: Mutex<HashMap<String, Vec<u64>>>,
    pub completions: Mutex<HashMap<uuid::Uuid, u32>>,
}

impl HandlingLog {
    /// Records one completed handler call under the event's version.
    pub fn record(&self, ctx: &EventContext) {
        self.record_value(ctx, ctx.sequence);
    }

    /// Records one completed handler call under `value`.
    pub fn record_value(&self, ctx: &EventContext, value: u64) {
        self.order
            .lock()
            .unwrap()
            .entry(ctx.aggregate_id.clone())
            .or_default()
            .push(value);
        *self
            .completions
            .lock()
            .unwrap()
            .entry(ctx.event_id)
            .or_default() += 1;
    }

    /// Distinct events completed.
    pub fn completed(&self) -> usize {
        self.completions.lock().unwrap().len()
    }

    /// Completions beyond the first of each event.
    pub fn duplicates(&self) -> u32 {
        self.completions
            .lock()
            .unwrap()
            .values()
            .map(|n| n - 1)
            .sum()
    }
}
