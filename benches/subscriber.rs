//! The subscriber runtime against a raw async-nats pull-consume-`ack()` loop on one spawned
//! nats-server, in the same run: the same events (stored by the `JetStreamStore`, many
//! aggregates interleaved), the same durable pull consumer settings (explicit ack, 1,000 pending).
//!
//! - raw: `consumer.messages()` and `ack()` for each message, in arrival order;
//! - jetsource, default config: completion log (idempotency), per-aggregate order, concurrency 16;
//! - jetsource, `Idempotency::Off`: the same without the completion log.
//!
//! Each measurement uses a fresh durable consumer over the whole stream, rounds interleave the
//! three, and the medians are compared. Run with
//! `cargo bench -p jetsource-tests --bench subscriber`; environment variables `BENCH_EVENTS`,
//! `BENCH_AGGREGATES` and `BENCH_ROUNDS` change the defaults (100,000 events, 200 aggregates,
//! 3 rounds).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures::StreamExt;
use jetsource::subscriber::{
    self, EventContext, HandlerError, Idempotency, Subscriber, SubscriberConfig,
};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, Codec, Event, EventSet, EventStore, ExpectedVersion,
    JetStreamConnectOptions, JetStreamStore, NewEvent, StreamConfig,
};
use serde::{Deserialize, Serialize};

const STREAM: &str = "SUBBENCH";
const PREFIX: &str = "subbench";

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

#[derive(EventSet, Debug)]
enum Handled {
    Deposited(Deposited),
}

/// Counts events; the cheapest possible handler, so the runtime's own cost shows.
struct Count(AtomicU64);

impl Subscriber for Count {
    type Event = Handled;

    async fn handle(&self, event: Handled, _: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = event;
        std::hint::black_box(d.amount);
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Appends `per_aggregate` events to each aggregate, all aggregates in parallel, so the stream
/// interleaves them.
async fn seed(store: &JetStreamStore, aggregates: usize, per_aggregate: usize) {
    let tasks: Vec<_> = (0..aggregates)
        .map(|a| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = AggregateKey::new("acct", AggregateId::new(format!("a{a}")).expect("id"));
                for n in 0..per_aggregate as u64 {
                    let encoded = Deposited { amount: n }.encode().expect("encode");
                    let event = NewEvent {
                        id: uuid::Uuid::now_v7(),
                        name: encoded.name,
                        version: encoded.version,
                        codec: Codec::Json,
                        payload: encoded.payload.into(),
                        timestamp: SystemTime::now(),
                        correlation_id: "bench".into(),
                        causation_id: None,
                        headers: Default::default(),
                    };
                    store
                        .append(&key, ExpectedVersion::Exact(n), None, vec![event])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("seed task");
    }
}

/// Raw async-nats: a durable pull consumer like the subscriber's, consume and `ack()` each.
async fn raw(js: &async_nats::jetstream::Context, durable: &str, total: usize) -> f64 {
    let stream = js.get_stream(STREAM).await.expect("stream");
    let start = Instant::now();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subjects: vec![format!("{PREFIX}.*.*.deposited")],
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            max_ack_pending: 1_000,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut n = 0;
    while n < total {
        let msg = messages
            .next()
            .await
            .expect("message stream ended")
            .expect("message");
        msg.ack().await.expect("ack");
        n += 1;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    drop(messages);
    stream.delete_consumer(durable).await.expect("delete");
    rate
}

/// The subscriber runtime from start until every event was handled.
async fn ours(store: &JetStreamStore, config: SubscriberConfig, total: usize) -> f64 {
    let count = Arc::new(Count(AtomicU64::new(0)));
    let start = Instant::now();
    let running = subscriber::start(store, count.clone(), config)
        .await
        .expect("start");
    while count.0.load(Ordering::Relaxed) < total as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let stats = running.shutdown().await.expect("shutdown");
    assert_eq!(stats.handled, total as u64, "every event handled once");
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn show(rates: &[f64]) -> String {
    rates
        .iter()
        .map(|r| format!("{:.0}", r / 1e3))
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let aggregates = env("BENCH_AGGREGATES", 200).max(1);
    let total = env("BENCH_EVENTS", 100_000) / aggregates * aggregates;
    let rounds = env("BENCH_ROUNDS", 3).max(1);
    let server = NatsServer::start();
    let store = JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new(STREAM, PREFIX),
    )
    .await
    .expect("store");
    let js = async_nats::jetstream::new(store.client().clone());
    let seeding = Instant::now();
    seed(&store, aggregates, total / aggregates).await;
    println!(
        "nats-server on {}, release build; {total} events over {aggregates} aggregates \
         stored in {:.1} s; {rounds} rounds, medians; ratios compare within this run",
        server.url(),
        seeding.elapsed().as_secs_f64()
    );

    // `BENCH_ONLY=raw|default|off` runs one variant (for profiling); the others report 0.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only == name;
    let (mut raws, mut markers, mut offs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        raws.push(if run("raw") {
            raw(&js, &format!("raw{round}"), total).await
        } else {
            0.0
        });
        markers.push(if run("default") {
            let durable = format!("markers{round}");
            let rate = ours(&store, SubscriberConfig::new(durable.as_str()), total).await;
            let mut log = js
                .get_stream(format!("{STREAM}_{durable}_DONE"))
                .await
                .expect("completion log");
            let writes = log.info().await.expect("log info").state.messages;
            println!(
                "  completion log: {writes} writes, {:.0} completions each",
                total as f64 / writes.max(1) as f64
            );
            rate
        } else {
            0.0
        });
        offs.push(if run("off") {
            let config = SubscriberConfig::new(format!("off{round}")).idempotency(Idempotency::Off);
            ours(&store, config, total).await
        } else {
            0.0
        });
        println!(
            "round {round}: raw {:.0}  default {:.0}  idempotency off {:.0} events/s",
            raws[round], markers[round], offs[round]
        );
    }
    let raw = median(raws.clone());
    let marker = median(markers.clone());
    let off = median(offs.clone());
    println!(
        "raw pull + ack()                                     {raw:>9.0} events/s  (k: {})",
        show(&raws)
    );
    println!(
        "jetsource, default (completion log, ordered, 16)     {marker:>9.0} events/s  (k: {})  ratio {:.2}",
        show(&markers),
        marker / raw
    );
    println!(
        "jetsource, Idempotency::Off (ordered, 16)            {off:>9.0} events/s  (k: {})  ratio {:.2}",
        show(&offs),
        off / raw
    );
}
