//! jetsource's side of the peer benchmark (`../shared/peers/run.sh`): the same workloads as the
//! raw async-nats baseline and the two peer crates, on the same server in the same rounds,
//! through jetsource's public API only, with the same 140-byte JSON payload. Prints
//! `metric value` lines prefixed `jetsource_`.
//!
//! ```text
//! EXTRA_BENCH="cargo bench -q -p jetsource-tests --bench peers" bash ../shared/peers/run.sh
//! ```
//!
//! Without `NATS_URL` it spawns its own server. Workloads:
//! - `cached_commands`: 100 aggregates x 50 single-event commands, one at a time per aggregate,
//!   state kept between commands (`Repository::with_cache`);
//! - `uncached_commands`: the same with no state kept: every command loads, decides, appends;
//! - `load_1000_events_ms`: load a 1,000-event aggregate through a store that has never seen it
//!   (a new connection per load), median of 5; `load_1000_warm_ms` through the store that
//!   wrote it;
//! - `hot_32_tasks_4_aggregates` against `uncontended_4_tasks`: 32 tasks sharing 4 aggregates
//!   against 4 tasks with one aggregate each, 3,200 commands either way; `hot_two_processes`:
//!   two processes running the 32-task workload on the same 4 aggregates at once.

use std::time::Instant;

use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    Aggregate, Apply, Event, EventSet, JetStreamConnectOptions, JetStreamStore, Repository,
    StreamConfig,
};
use serde::{Deserialize, Serialize};

const AGGREGATES: usize = 100;
const COMMANDS_PER_AGGREGATE: usize = 50;
const LOAD_EVENTS: usize = 1000;
const HOT_COMMANDS: usize = 3200;
/// Set in the second process of `hot_two_processes`: the stream to use.
const CHILD_ENV: &str = "JETSOURCE_PEERS_BENCH_CHILD";

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
    currency: String,
    note: String,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(name = "account", events = AccountEvent)]
struct Account {
    deposits: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, _: Deposited) {
        self.deposits += 1;
    }
}

/// A deposit whose JSON payload is 140 bytes, like the raw baseline's.
fn deposit() -> Deposited {
    let envelope = r#"{"amount":1234,"currency":"EUR","note":""}"#;
    let mut note = String::from("salary for november, thanks");
    while envelope.len() + note.len() < 140 {
        note.push('.');
    }
    Deposited {
        amount: 1234,
        currency: "EUR".into(),
        note,
    }
}

fn deposit_command(_: &Account) -> Result<Vec<AccountEvent>, std::convert::Infallible> {
    Ok(vec![deposit().into()])
}

async fn open(url: &str, stream: &str) -> JetStreamStore {
    let prefix = stream.to_lowercase();
    JetStreamStore::connect(
        JetStreamConnectOptions::new([url.to_owned()]),
        StreamConfig::new(stream, prefix),
    )
    .await
    .expect("open the store")
}

async fn delete_stream(url: &str, stream: &str) {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(stream).await;
    let _ = js.delete_key_value(format!("{stream}_SNAPSHOTS")).await;
}

/// `tasks` tasks run `per_task` commands each on aggregate `aggregate_of(task)`; commands/s.
async fn commands(
    repo: &Repository<Account, JetStreamStore>,
    tasks: usize,
    per_task: usize,
    aggregate_of: impl Fn(usize) -> String,
) -> f64 {
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let repo = repo.clone();
            let id = aggregate_of(task);
            tokio::spawn(async move {
                for _ in 0..per_task {
                    repo.execute(&id, deposit_command).await.expect("command");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("task");
    }
    (tasks * per_task) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn run(url: &str) {
    let round = std::process::id();
    match std::env::var("JETSOURCE_PEERS_ONLY").as_deref() {
        Ok("load") => return loads(url, round).await,
        Ok("cached") => {
            raw_same_messages(url, round).await;
            return cached(url, round).await;
        }
        _ => {}
    }
    cached(url, round).await;
    raw_same_messages(url, round).await;

    // Uncached commands, on a fresh stream.
    let stream = format!("JSPEERS_U{round}");
    let repo = Repository::<Account, _>::new(open(url, &stream).await);
    let rate = commands(&repo, AGGREGATES, COMMANDS_PER_AGGREGATE, |t| {
        format!("a{t}")
    })
    .await;
    println!("jetsource_uncached_commands_per_s {rate:.0}");
    delete_stream(url, &stream).await;

    loads(url, round).await;
    hot(url, round).await;
}

/// Commands with the state kept, on a fresh stream.
async fn cached(url: &str, round: u32) {
    let stream = format!("JSPEERS_C{round}");
    let repo = Repository::<Account, _>::new(open(url, &stream).await).with_cache(10_000);
    let rate = commands(&repo, AGGREGATES, COMMANDS_PER_AGGREGATE, |t| {
        format!("a{t}")
    })
    .await;
    println!("jetsource_cached_commands_per_s {rate:.0}");
    delete_stream(url, &stream).await;
}

/// Raw async-nats publishing exactly the messages `cached_commands` appends (subject layout,
/// `Jetsource` header, the wildcard OCC guard), 100 aggregates x 50, one at a time each: what
/// the wire format costs the server and the client before any of jetsource's own work.
async fn raw_same_messages(url: &str, round: u32) {
    let stream = format!("JSPEERS_R{round}");
    let prefix = stream.to_lowercase();
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(&stream).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .expect("stream");
    let payload: bytes::Bytes = serde_json::to_vec(&deposit()).expect("json").into();
    let started = Instant::now();
    let tasks: Vec<_> = (0..AGGREGATES)
        .map(|a| {
            let (js, payload, prefix) = (js.clone(), payload.clone(), prefix.clone());
            tokio::spawn(async move {
                let id = format!("a{a}");
                let filter = jetsource::wire::aggregate_filter(&prefix, "account", &id);
                let subject = jetsource::wire::subject(&prefix, "account", &id, "deposited");
                let mut last = 0u64;
                for sequence in 1..=COMMANDS_PER_AGGREGATE as u64 {
                    let header = jetsource::wire::EventHeader {
                        sequence,
                        id: uuid::Uuid::now_v7(),
                        version: 1,
                        codec: jetsource::Codec::Json,
                        timestamp: std::time::SystemTime::now(),
                    };
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(jetsource::wire::EVENT_HEADER, header.encode());
                    headers.insert(
                        jetsource::wire::EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER,
                        last.to_string(),
                    );
                    headers.insert(
                        jetsource::wire::EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT_HEADER,
                        filter.as_str(),
                    );
                    let ack = js
                        .publish_with_headers(subject.clone(), headers, payload.clone())
                        .await
                        .expect("publish")
                        .await
                        .expect("ack");
                    last = ack.sequence;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let rate = (AGGREGATES * COMMANDS_PER_AGGREGATE) as f64 / started.elapsed().as_secs_f64();
    println!("jetsource_raw_same_messages_per_s {rate:.0}");
    let _ = js.delete_stream(&stream).await;
}

/// Loads of a 1,000-event aggregate.
async fn loads(url: &str, round: u32) {
    let stream = format!("JSPEERS_L{round}");
    let writer = Repository::<Account, _>::new(open(url, &stream).await).with_cache(10);
    for _ in 0..LOAD_EVENTS {
        writer
            .execute("big", deposit_command)
            .await
            .expect("append");
    }
    let rounds = std::env::var("JETSOURCE_PEERS_LOAD_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let mut cold = Vec::new();
    for _ in 0..rounds {
        let store = open(url, &stream).await;
        let reader = Repository::<Account, _>::new(store);
        let started = Instant::now();
        let loaded = reader.load("big").await.expect("load");
        cold.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(loaded.state.deposits, LOAD_EVENTS as u64);
    }
    println!("jetsource_load_1000_events_ms {:.2}", median(cold));
    // The store's part of a cold load: the events read and decoded, without the aggregate's
    // payload decoding and replay.
    let key = jetsource::AggregateKey::new("account", jetsource::AggregateId::new("big").unwrap());
    let mut store_only = Vec::new();
    for _ in 0..rounds {
        let store = open(url, &stream).await;
        let started = Instant::now();
        let events = jetsource::EventStore::load(&store, &key, 1)
            .await
            .expect("load");
        store_only.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(events.len(), LOAD_EVENTS);
    }
    println!(
        "jetsource_load_1000_store_only_ms {:.2}",
        median(store_only)
    );
    let mut warm = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let loaded = writer.load("big").await.expect("load");
        warm.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(loaded.state.deposits, LOAD_EVENTS as u64);
    }
    println!("jetsource_load_1000_warm_ms {:.2}", median(warm));
    delete_stream(url, &stream).await;
}

async fn hot(url: &str, round: u32) {
    let stream = format!("JSPEERS_H{round}");
    let repo = Repository::<Account, _>::new(open(url, &stream).await).with_cache(100);
    let rate = commands(&repo, 4, HOT_COMMANDS / 4, |t| format!("u{t}")).await;
    println!("jetsource_uncontended_4_tasks_per_s {rate:.0}");
    let rate = commands(&repo, 32, HOT_COMMANDS / 32, |t| format!("h{}", t % 4)).await;
    println!("jetsource_hot_32_tasks_4_aggregates_per_s {rate:.0}");
    let started = Instant::now();
    let child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, &stream)
        .env("NATS_URL", url)
        .spawn()
        .expect("second process");
    let here = commands(&repo, 32, HOT_COMMANDS / 32, |t| format!("p{}", t % 4));
    let (_, status) = tokio::join!(
        here,
        tokio::task::spawn_blocking(move || {
            let mut child = child;
            child.wait()
        })
    );
    assert!(status.expect("join").expect("wait").success());
    let rate = (2 * HOT_COMMANDS) as f64 / started.elapsed().as_secs_f64();
    println!("jetsource_hot_two_processes_per_s {rate:.0}");
    delete_stream(url, &stream).await;
}

#[tokio::main]
async fn main() {
    let url = std::env::var("NATS_URL").ok();
    if let Ok(stream) = std::env::var(CHILD_ENV) {
        let url = url.expect("the parent sets NATS_URL");
        let repo = Repository::<Account, _>::new(open(&url, &stream).await).with_cache(100);
        commands(&repo, 32, HOT_COMMANDS / 32, |t| format!("p{}", t % 4)).await;
        return;
    }
    match url {
        Some(url) => run(&url).await,
        None => {
            let server = NatsServer::start();
            run(&server.url()).await;
            drop(server);
        }
    }
}
