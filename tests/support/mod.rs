//! Helpers shared by the store tests: events to append, and JetStream stores on a harness server.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::SystemTime;

use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, Codec, JetStreamConnectOptions, JetStreamStore, NewEvent,
    StreamConfig,
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
