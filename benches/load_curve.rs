//! How a load's time follows the stream's length: aggregates of 50 and 1,000 events loaded
//! from streams of 10k, 100k and 1M events, through stores that have never seen them.
//!
//! ```text
//! cargo bench -p jetsource-tests --bench load_curve                 # 10k, 100k, 1M
//! LOAD_CURVE=5000 cargo test -p jetsource-tests --bench load_curve  # CI's short run
//! ```
//!
//! Two layouts per stream: `recent`, the aggregate's events written after the rest (an
//! aggregate created lately), and `spread`, its events spread evenly through the whole stream
//! (an aggregate as old as the stream, written to all along); `spread` is also loaded through a
//! snapshot taken every 100 events. The other events belong to 10,000 other aggregates and
//! carry jetsource's wire format and a 140-byte payload. Prints one line per case with the
//! median of 5 loads, and its ratio to the same aggregate in the smallest stream.

use std::time::{Duration, Instant, SystemTime};

use jetsource::testing::nats_server::NatsServer;
use jetsource::wire::{self, EventHeader};
use jetsource::{
    Aggregate, Apply, Codec, Event, EventSet, EventStore, JetStreamConnectOptions, JetStreamStore,
    Repository, StreamConfig,
};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
    note: String,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Aggregate, Default, Debug, Clone, Serialize, Deserialize)]
#[aggregate(name = "account", events = AccountEvent)]
struct Account {
    deposits: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, _: Deposited) {
        self.deposits += 1;
    }
}

/// The same aggregate with a snapshot every 100 events.
#[derive(Aggregate, Default, Debug, Clone, Serialize, Deserialize)]
#[aggregate(name = "account", events = AccountEvent, snapshot(schema = 1, every = 100))]
struct SnapshottedAccount {
    deposits: u64,
}

impl Apply<Deposited> for SnapshottedAccount {
    fn apply(&mut self, _: Deposited) {
        self.deposits += 1;
    }
}

const OTHER_AGGREGATES: u64 = 10_000;
const SIZES: [u64; 2] = [50, 1000];

fn payload() -> bytes::Bytes {
    let event = Deposited {
        amount: 1234,
        note: "x".repeat(110),
    };
    serde_json::to_vec(&event).expect("json").into()
}

/// Publishes one event of aggregate `id` at its `sequence`, pipelined (no OCC: the bench owns
/// the stream).
async fn publish(
    js: &async_nats::jetstream::Context,
    prefix: &str,
    id: &str,
    sequence: u64,
    payload: bytes::Bytes,
) -> async_nats::jetstream::context::PublishAckFuture {
    let header = EventHeader {
        sequence,
        id: uuid::Uuid::now_v7(),
        version: 1,
        codec: Codec::Json,
        timestamp: SystemTime::now(),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::EVENT_HEADER, header.encode());
    let subject = wire::subject(prefix, "account", id, "deposited");
    js.publish_with_headers(subject, headers, payload)
        .await
        .expect("publish")
}

/// Fills a fresh stream with `total` events: the `spread` aggregates' events evenly through
/// it, the others' round-robin, then the `recent` aggregates' events.
async fn fill(url: &str, stream: &str, total: u64) {
    let prefix = stream.to_lowercase();
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(stream).await;
    let _ = js.delete_key_value(format!("{stream}_SNAPSHOTS")).await;
    // The stream and bucket as jetsource makes them.
    drop(open(url, stream).await);
    let payload = payload();
    let spread_total: u64 = SIZES.iter().sum();
    let background = total - 2 * spread_total;
    let mut acks = std::collections::VecDeque::new();
    let mut spread_next = [1u64; SIZES.len()];
    let mut other = vec![0u64; OTHER_AGGREGATES as usize];
    for n in 0..background {
        // The spread aggregates' events sit at even distances.
        for (i, size) in SIZES.iter().enumerate() {
            if n % (background / size) == 0 && spread_next[i] <= *size {
                let id = format!("spread-{size}");
                acks.push_back(publish(&js, &prefix, &id, spread_next[i], payload.clone()).await);
                spread_next[i] += 1;
            }
        }
        let a = (n % OTHER_AGGREGATES) as usize;
        other[a] += 1;
        let id = format!("other-{a}");
        acks.push_back(publish(&js, &prefix, &id, other[a], payload.clone()).await);
        while acks.len() > 512 {
            acks.pop_front().expect("ack").await.expect("stored");
        }
    }
    for size in SIZES {
        for sequence in 1..=size {
            let id = format!("recent-{size}");
            acks.push_back(publish(&js, &prefix, &id, sequence, payload.clone()).await);
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

async fn open(url: &str, stream: &str) -> JetStreamStore {
    JetStreamStore::connect(
        JetStreamConnectOptions::new([url.to_owned()]),
        StreamConfig::new(stream, stream.to_lowercase()),
    )
    .await
    .expect("open the store")
}

/// Median of 5 cold loads of `id` (a new store each time), checking the history's length.
async fn cold_load<A: Aggregate>(url: &str, stream: &str, id: &str, events: u64) -> Duration {
    let mut times = Vec::new();
    for _ in 0..5 {
        let accounts = Repository::<A, _>::new(open(url, stream).await);
        let started = Instant::now();
        let loaded = accounts.load(id).await.expect("load");
        times.push(started.elapsed());
        assert_eq!(loaded.version, events, "{id}");
    }
    times.sort();
    times[2]
}

/// Snapshots of the spread aggregates at their last multiple of 100, as a snapshotting
/// repository would have saved them.
async fn snapshot_spread(url: &str, stream: &str) {
    let store = open(url, stream).await;
    for size in SIZES {
        let id = format!("spread-{size}");
        let key = jetsource::AggregateKey::new("account", jetsource::AggregateId::new(id).unwrap());
        let at = size / 100 * 100;
        if at == 0 {
            continue;
        }
        let event = store.load(&key, at).await.expect("load");
        let state = serde_json::to_vec(&SnapshottedAccount { deposits: at }).expect("json");
        let snapshot = jetsource::Snapshot {
            schema_version: 1,
            version: at,
            position: event[0].position,
            state: state.into(),
        };
        store.save_snapshot(&key, snapshot).await.expect("snapshot");
    }
}

async fn run(url: &str, sizes: &[u64]) {
    let mut first: std::collections::HashMap<String, Duration> = Default::default();
    for (round, &total) in sizes.iter().enumerate() {
        let stream = format!("CURVE{round}");
        let filled = Instant::now();
        fill(url, &stream, total).await;
        snapshot_spread(url, &stream).await;
        println!(
            "stream of {total} events filled in {:.1?}",
            filled.elapsed()
        );
        for size in SIZES {
            let cases = [
                ("recent", format!("recent-{size}"), false),
                ("spread", format!("spread-{size}"), false),
                ("spread, snapshot", format!("spread-{size}"), true),
            ];
            // A snapshot every 100 events: none for an aggregate of fewer.
            for (layout, id, snapshotted) in cases.into_iter().filter(|c| !c.2 || size >= 100) {
                let time = match snapshotted {
                    false => cold_load::<Account>(url, &stream, &id, size).await,
                    true => cold_load::<SnapshottedAccount>(url, &stream, &id, size).await,
                };
                let case = format!("{size} events, {layout}");
                let base = *first.entry(case.clone()).or_insert(time);
                println!(
                    "load_curve stream={total} aggregate={case}: {:.2} ms ({:.2}x the {}-event stream)",
                    time.as_secs_f64() * 1e3,
                    time.as_secs_f64() / base.as_secs_f64(),
                    sizes[0]
                );
            }
        }
        let js = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
        let _ = js.delete_stream(&stream).await;
        let _ = js.delete_key_value(format!("{stream}_SNAPSHOTS")).await;
    }
}

#[tokio::main]
async fn main() {
    let sizes: Vec<u64> = std::env::var("LOAD_CURVE")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("LOAD_CURVE: comma-separated event counts")
        })
        .collect();
    let min = 2 * SIZES.iter().sum::<u64>() + OTHER_AGGREGATES.min(1000);
    assert!(
        sizes.iter().all(|&n| n >= min),
        "streams need at least {min} events"
    );
    match std::env::var("NATS_URL") {
        Ok(url) => run(&url, &sizes).await,
        Err(_) => {
            let server = NatsServer::start();
            run(&server.url(), &sizes).await;
        }
    }
}
