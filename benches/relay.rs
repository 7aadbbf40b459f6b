//! The PostgreSQL relay's throughput and lag, beside raw async-nats on the same server in the
//! same run.
//!
//! ```text
//! cargo bench -p jetsource-tests --bench relay                  # 50,000 events, 2,000/s for 10 s
//! RELAY_BENCH=short cargo test -p jetsource-tests --bench relay # CI's short run
//! ```
//!
//! - **backlog**: events committed to PostgreSQL beforehand (1,000 aggregates, 140-byte JSON
//!   payloads) published by `Relay::publish_committed`, beside raw async-nats publishing the
//!   same payloads to the same subjects with only a `Nats-Msg-Id`, 256 acks in flight (what a
//!   hand-written outbox relay sends). Rounds alternate; medians of 3.
//! - **lag**: writers commit events at a steady rate while a relay runs; a core NATS
//!   subscription on the stream's subjects timestamps each event's arrival. The lag is arrival
//!   minus the moment the append returned; p50, p99 and max.
//!
//! Both check what they measure: every committed event arrives once.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use jetsource::postgres::{Relay, RelayConfig};
use jetsource::projection::sqlx::{self, postgres::PgPoolOptions, AssertSqlSafe, PgPool};
use jetsource::testing::nats_server::NatsServer;
use jetsource::wire::{self, EventHeader};
use jetsource::{
    AggregateId, AggregateKey, Codec, EventStore, ExpectedVersion, JetStreamConnectOptions,
    JetStreamStore, NewEvent, PgStore, StreamConfig,
};

const DATABASE: &str = "postgres://postgres@127.0.0.1:5432/test";
const AGGREGATES: usize = 1_000;

struct Sizes {
    backlog: usize,
    rounds: usize,
    rate: u64,
    seconds: u64,
}

fn sizes() -> Sizes {
    match std::env::var("RELAY_BENCH").as_deref() {
        Ok("short") => Sizes {
            backlog: 2_000,
            rounds: 1,
            rate: 200,
            seconds: 2,
        },
        _ => Sizes {
            backlog: 50_000,
            rounds: 3,
            rate: 2_000,
            seconds: 10,
        },
    }
}

fn payload() -> bytes::Bytes {
    let note = "x".repeat(112);
    format!("{{\"amount\":1,\"note\":\"{note}\"}}")
        .into_bytes()
        .into()
}

fn new_event() -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        name: "deposited",
        version: 1,
        codec: Codec::Json,
        payload: payload(),
        timestamp: SystemTime::now(),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        causation_id: None,
        headers: Default::default(),
    }
}

fn key(i: usize) -> AggregateKey {
    AggregateKey::new("account", AggregateId::new(format!("acc-{i}")).unwrap())
}

async fn fresh_store(schema: &str) -> PgStore {
    let admin = PgPool::connect(DATABASE)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    for sql in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        // Safe to assert: the schema names are the benchmark's own literals.
        sqlx::query(AssertSqlSafe(sql))
            .execute(&admin)
            .await
            .unwrap();
    }
    let options: sqlx::postgres::PgConnectOptions = DATABASE.parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options.options([("search_path", schema)]))
        .await
        .unwrap();
    let store = PgStore::new(pool);
    store.migrate().await.unwrap();
    store
}

async fn stream(url: &str, name: &str) -> JetStreamStore {
    let config = StreamConfig::new(name, name.to_lowercase());
    JetStreamStore::connect(JetStreamConnectOptions::new([url]), config)
        .await
        .unwrap()
}

/// Commits `count` single-event appends spread over the aggregates, 16 at a time.
async fn commit_backlog(store: &PgStore, count: usize) {
    futures::stream::iter(0..count)
        .for_each_concurrent(16, |i| async move {
            let key = key(i % AGGREGATES);
            (store.append(&key, ExpectedVersion::Any, None, vec![new_event()]))
                .await
                .unwrap();
        })
        .await;
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn backlog_round(url: &str, round: usize, count: usize) -> (f64, f64) {
    let store = fresh_store("bench_relay").await;
    commit_backlog(&store, count).await;
    let target = stream(url, &format!("RELAY_BENCH_{round}")).await;
    let relay = Relay::new(store, target.clone(), RelayConfig::new("bench"));
    let start = Instant::now();
    let read = relay.publish_committed().await.unwrap();
    let relayed = count as f64 / start.elapsed().as_secs_f64();
    assert_eq!(read as usize, count);
    assert_eq!(target.read_all(1, count + 1).await.unwrap().len(), count);

    // Raw async-nats: the same payloads to the same subjects, a message id each, 256 in flight.
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let name = format!("RAW_RELAY_{round}");
    let prefix = name.to_lowercase();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    let payload = payload();
    let start = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..count {
        let subject = wire::subject(
            &prefix,
            "account",
            &format!("acc-{}", i % AGGREGATES),
            "deposited",
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
        let ack = js
            .publish_with_headers(subject, headers, payload.clone())
            .await
            .unwrap();
        acks.push(ack.into_future());
        if acks.len() >= 256 {
            acks.next().await.unwrap().unwrap();
        }
    }
    while let Some(ack) = acks.next().await {
        ack.unwrap();
    }
    let raw = count as f64 / start.elapsed().as_secs_f64();
    (relayed, raw)
}

/// Writers commit `rate` events a second for `seconds` while a relay runs; returns the lags.
async fn lag_run(url: &str, rate: u64, seconds: u64) -> Vec<Duration> {
    let store = fresh_store("bench_relay_lag").await;
    let target = stream(url, "RELAY_LAG").await;
    let client = async_nats::connect(url).await.unwrap();
    let mut arrivals = client.subscribe("relay_lag.>").await.unwrap();
    client.flush().await.unwrap();
    let relay = Relay::new(store.clone(), target, RelayConfig::new("lag")).spawn();
    relay.wait_active().await;
    let committed: Arc<Mutex<HashMap<uuid::Uuid, Instant>>> = Arc::default();
    let total = (rate * seconds) as usize;
    let writer = {
        let committed = committed.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            let mut pending = futures::stream::FuturesUnordered::new();
            for i in 0..total {
                ticks.tick().await;
                let (store, committed) = (store.clone(), committed.clone());
                pending.push(async move {
                    let event = new_event();
                    let id = event.id;
                    (store.append(
                        &key(i % AGGREGATES),
                        ExpectedVersion::Any,
                        None,
                        vec![event],
                    ))
                    .await
                    .unwrap();
                    committed.lock().unwrap().insert(id, Instant::now());
                });
                // Reap what finished without waiting for the rest.
                while let std::task::Poll::Ready(Some(())) = futures::poll!(pending.next()) {}
            }
            while pending.next().await.is_some() {}
        })
    };
    let mut lags = Vec::with_capacity(total);
    let mut arrived: HashMap<uuid::Uuid, Instant> = HashMap::new();
    while arrived.len() < total {
        let message = tokio::time::timeout(Duration::from_secs(30), arrivals.next())
            .await
            .expect("events keep arriving")
            .unwrap();
        let headers = message.headers.expect("event headers");
        let header = EventHeader::parse(headers.get(wire::EVENT_HEADER).unwrap().as_str()).unwrap();
        assert!(
            arrived.insert(header.id, Instant::now()).is_none(),
            "an event arrived twice"
        );
    }
    writer.await.unwrap();
    relay.stop().await;
    let committed = committed.lock().unwrap();
    for (id, at) in arrived {
        let done = committed[&id];
        lags.push(at.saturating_duration_since(done));
    }
    lags
}

#[tokio::main]
async fn main() {
    let sizes = sizes();
    let server = NatsServer::start();
    let url = server.url();
    let (mut relayed, mut raw) = (Vec::new(), Vec::new());
    for round in 0..sizes.rounds {
        let (r, w) = backlog_round(&url, round, sizes.backlog).await;
        relayed.push(r);
        raw.push(w);
    }
    let (relayed, raw) = (median(relayed), median(raw));
    println!(
        "relay backlog of {} events: {relayed:.0} events/s; raw async-nats {raw:.0}/s; ratio {:.2}x",
        sizes.backlog,
        relayed / raw
    );
    let mut lags = lag_run(&url, sizes.rate, sizes.seconds).await;
    lags.sort();
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    println!(
        "relay lag at {} events/s for {} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} events)",
        sizes.rate,
        sizes.seconds,
        at(0.5),
        at(0.99),
        at(1.0),
        lags.len()
    );
}
