//! Multi-event commands beside raw async-nats atomic batches carrying the same messages, on the
//! stream settings a user can choose, in the same run on the same servers.
//!
//! ```text
//! cargo bench -p jetsource-tests --bench multi_event                        # the README's figures
//! MULTI_EVENT_BENCH=short cargo test -p jetsource-tests --bench multi_event # CI's short run
//! ```
//!
//! Configurations: (a) a 3-node cluster on loopback, R3 file stream; (b) one server, R1 file
//! stream; (c) the same server, R1 memory stream. Each has one stream, created by jetsource's
//! store, which both sides write to (so both meet the same stream state).
//!
//! - **jetsource**: 100 aggregates in parallel tasks, each running commands one after another
//!   through one cached `Repository::execute` (default metadata, so no command id); each
//!   command decides N events (10 or 100), which the store commits as one atomic batch.
//! - **raw**: the same 100 aggregates' worth of atomic batches through the same connection, one
//!   message per event on the same subjects (`<prefix>.acct.<id>.deposited`) with the same
//!   JSON payload bytes. Every message carries `Nats-Batch-Id` (a fresh UUID per batch) and
//!   `Nats-Batch-Sequence`; the first also the OCC guard jetsource uses,
//!   `Nats-Expected-Last-Subject-Sequence: <seq of the last commit's ack>` with
//!   `Nats-Expected-Last-Subject-Sequence-Subject: <prefix>.acct.<id>.*`, and the last
//!   `Nats-Batch-Commit: 1`. Nothing else: no event metadata, no message id. The first and the
//!   last message are requests (the server answers the first with an empty ack or an error),
//!   the others plain publishes; at most 32 batches are open at once, as in jetsource's
//!   store, since the server refuses more than 50 per stream.
//!
//! What jetsource sends beyond that: a `Jetsource` header on each event (format, version,
//! event id, schema version, codec, timestamp) and, on events 2..N, `Jetsource-Correlation-Id`
//! (the command's first event id); it also decides each command on the cached state, encodes
//! the events and takes the aggregate's lane.
//!
//! Each side first commits one warm-up command per aggregate (so jetsource's cache holds the
//! aggregate and the raw side knows its last sequence), then is timed. Rounds alternate which
//! side goes first; medians are reported. Every run checks what it measured: each jetsource
//! command appended N events at the next version without a conflict and its aggregate loads
//! whole afterwards; each raw commit's ack names its batch and N messages; each stream holds
//! exactly the messages both sides sent.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use jetsource::testing::nats_server::{NatsCluster, NatsServer};
use jetsource::{
    Aggregate, AggregateId, AggregateKey, Apply, Event, EventSet, EventStore,
    JetStreamConnectOptions, JetStreamStorage, JetStreamStore, Repository, StreamConfig,
};
use serde::{Deserialize, Serialize};

/// Atomic batches the raw side keeps open at once: jetsource's store keeps at most 32.
const OPEN_BATCHES: usize = 32;

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
#[aggregate(name = "acct", events = AccountEvent)]
struct Account {
    deposits: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, _: Deposited) {
        self.deposits += 1;
    }
}

/// A deposit whose JSON payload is 140 bytes, like the other benchmarks'.
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

/// Sizes of one run.
struct Sizes {
    aggregates: usize,
    rounds: usize,
    /// Events per command, each size measured on its own.
    events: &'static [usize],
    /// Timed commands per aggregate of `n` events on a stream that stages batches on disk (R1
    /// file: milliseconds a batch, one at a time, slower while other processes write to the
    /// disk), so that a measurement takes about a second in a release build on a quiet machine.
    commands_disk_staged: fn(usize) -> usize,
    /// The same on the streams that stage batches in memory.
    commands_memory_staged: fn(usize) -> usize,
}

const FULL: Sizes = Sizes {
    aggregates: 100,
    rounds: 3,
    events: &[10, 100],
    commands_disk_staged: |n| if n >= 100 { 2 } else { 4 },
    commands_memory_staged: |n| if n >= 100 { 8 } else { 40 },
};

const SHORT: Sizes = Sizes {
    aggregates: 10,
    rounds: 1,
    events: &[10, 100],
    commands_disk_staged: |_| 2,
    commands_memory_staged: |_| 2,
};

/// One configuration: a stream, the store that created it and a cached repository over it.
struct Setup {
    label: &'static str,
    store: JetStreamStore,
    repo: Repository<Account, JetStreamStore>,
    disk_staged: bool,
    /// Messages both sides have sent to the stream so far.
    sent: u64,
}

impl Setup {
    async fn new(label: &'static str, urls: Vec<String>, config: StreamConfig) -> Self {
        let disk_staged = config.replicas == 1 && config.storage == JetStreamStorage::File;
        let store = JetStreamStore::connect(JetStreamConnectOptions::new(urls), config)
            .await
            .expect("connect the store");
        until_readable(&store).await;
        Setup {
            label,
            repo: Repository::new(store.clone()).with_cache(100_000),
            store,
            disk_staged,
            sent: 0,
        }
    }

    /// Checks that the stream holds exactly the messages both sides sent.
    async fn check_stream(&self) {
        let js = async_nats::jetstream::new(self.store.client().clone());
        let mut stream = (js.get_stream(&self.store.config().name))
            .await
            .expect("the stream");
        let info = stream.info().await.expect("stream info");
        assert_eq!(
            info.state.messages, self.sent,
            "{}: the stream holds every message sent, and nothing else",
            self.label
        );
    }
}

/// A replicated stream's direct-get responders come up on the followers a moment after the
/// stream is created, and loads go through them.
async fn until_readable(store: &JetStreamStore) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.load(&key("probe"), 1).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the stream never became readable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn key(id: &str) -> AggregateKey {
    AggregateKey::new("acct", AggregateId::new(id).expect("valid id"))
}

/// Runs `per_aggregate(0..count)` in parallel tasks; their outputs in order.
async fn in_parallel<T, Fut>(count: usize, per_aggregate: impl Fn(usize) -> Fut) -> Vec<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..count).map(|a| tokio::spawn(per_aggregate(a))).collect();
    let mut outputs = Vec::with_capacity(count);
    for task in tasks {
        outputs.push(task.await.expect("task"));
    }
    outputs
}

/// jetsource: one warm-up command on each aggregate, then `commands` more, timed; events/s.
async fn jetsource_side(
    setup: &Setup,
    tag: &str,
    n: usize,
    commands: usize,
    aggregates: usize,
) -> f64 {
    let id = |a: usize| format!("j{tag}a{a}");
    // Commands `done + 1 ..= done + count` of aggregate `a`.
    let run = |done: usize, count: usize| {
        move |a: usize| {
            let repo = setup.repo.clone();
            let id = id(a);
            async move {
                for c in done + 1..=done + count {
                    let committed = (repo.execute(&id, |_: &Account| {
                        Ok::<_, std::convert::Infallible>(
                            (0..n)
                                .map(|_| deposit().into())
                                .collect::<Vec<AccountEvent>>(),
                        )
                    }))
                    .await
                    .expect("command");
                    assert_eq!(committed.attempts, 1, "{id}: no other writer, no conflict");
                    assert_eq!(committed.appended, n, "{id}: every event appended");
                    let version = (c * n) as u64;
                    assert_eq!(committed.version, version, "{id}: command {c}'s version");
                    assert_eq!(committed.state.deposits, version, "{id}: its state");
                }
            }
        }
    };
    in_parallel(aggregates, run(0, 1)).await;
    let start = Instant::now();
    in_parallel(aggregates, run(1, commands)).await;
    let rate = (aggregates * commands * n) as f64 / start.elapsed().as_secs_f64();
    for a in 0..aggregates {
        let stored = setup.store.load(&key(&id(a)), 1).await.expect("load");
        assert_eq!(
            stored.len(),
            (commands + 1) * n,
            "{}: every event stored",
            id(a)
        );
    }
    rate
}

/// Raw async-nats: the same commands as atomic batches on the same subjects; events/s.
async fn raw_side(setup: &Setup, tag: &str, n: usize, commands: usize, aggregates: usize) -> f64 {
    let client = setup.store.client().clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(OPEN_BATCHES));
    let payload = Bytes::from(deposit().encode().expect("encode").payload);
    let prefix = format!("{}.acct", setup.store.config().prefix);
    // `count` batches on aggregate `a`, whose last message is at stream sequence `last[a]`;
    // the new last sequences.
    let run = |last: Vec<u64>, count: usize| {
        let (client, slots, payload, prefix) = (&client, &slots, &payload, &prefix);
        in_parallel(aggregates, move |a| {
            let (client, slots, payload) = (client.clone(), slots.clone(), payload.clone());
            let stem = format!("{prefix}.r{tag}a{a}");
            let mut last = last[a];
            async move {
                for _ in 0..count {
                    let _open = slots.acquire().await.expect("semaphore");
                    last = raw_batch(&client, &stem, last, n, &payload).await;
                }
                last
            }
        })
    };
    let last = run(vec![0; aggregates], 1).await;
    let start = Instant::now();
    run(last, commands).await;
    (aggregates * commands * n) as f64 / start.elapsed().as_secs_f64()
}

/// One atomic batch of `n` messages to `<stem>.deposited`, guarded on `<stem>.*` having its
/// last message at `last`; the stream sequence of the batch's last message.
async fn raw_batch(
    client: &async_nats::Client,
    stem: &str,
    last: u64,
    n: usize,
    payload: &Bytes,
) -> u64 {
    let batch = uuid::Uuid::now_v7().simple().to_string();
    let subject = format!("{stem}.deposited");
    for i in 1..=n {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Batch-Id", batch.as_str());
        headers.insert("Nats-Batch-Sequence", i.to_string());
        if i == 1 {
            headers.insert("Nats-Expected-Last-Subject-Sequence", last.to_string());
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence-Subject",
                format!("{stem}.*"),
            );
        }
        if i == n {
            headers.insert("Nats-Batch-Commit", "1");
        }
        if i == 1 || i == n {
            let request = async_nats::Request::new()
                .headers(headers)
                .payload(payload.clone());
            let reply = (client.send_request(subject.clone(), request))
                .await
                .expect("batch request");
            if i == n {
                let ack: serde_json::Value =
                    serde_json::from_slice(&reply.payload).expect("ack json");
                assert_eq!(ack["batch"], batch.as_str(), "the commit's ack: {ack}");
                assert_eq!(ack["count"], n, "every message of the batch stored: {ack}");
                return ack["seq"].as_u64().expect("ack seq");
            }
            assert!(
                reply.payload.is_empty(),
                "the batch's first message refused: {:?}",
                String::from_utf8_lossy(&reply.payload)
            );
        } else {
            (client.publish_with_headers(subject.clone(), headers, payload.clone()))
                .await
                .expect("publish");
        }
    }
    unreachable!("the batch's last message returns")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A configuration's and command size's medians.
struct Measured {
    label: &'static str,
    n: usize,
    jetsource: f64,
    raw: f64,
}

async fn measure(setup: &mut Setup, sizes: &Sizes) -> Vec<Measured> {
    let mut measured = Vec::new();
    for &n in sizes.events {
        let commands = if setup.disk_staged {
            (sizes.commands_disk_staged)(n)
        } else {
            (sizes.commands_memory_staged)(n)
        };
        let (mut ours, mut raw) = (Vec::new(), Vec::new());
        for round in 0..sizes.rounds {
            let tag = format!("{n}r{round}");
            // Alternate who goes first: the stream grows through a round.
            for raw_turn in [round % 2 == 0, round % 2 != 0] {
                if raw_turn {
                    raw.push(raw_side(setup, &tag, n, commands, sizes.aggregates).await);
                } else {
                    ours.push(jetsource_side(setup, &tag, n, commands, sizes.aggregates).await);
                }
                setup.sent += ((commands + 1) * n * sizes.aggregates) as u64;
            }
            println!(
                "  {} {n}-event commands, round {round}: jetsource {:.0}, raw {:.0} events/s",
                setup.label, ours[round], raw[round]
            );
        }
        measured.push(Measured {
            label: setup.label,
            n,
            jetsource: median(ours),
            raw: median(raw),
        });
    }
    setup.check_stream().await;
    measured
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sizes = match std::env::var("MULTI_EVENT_BENCH").as_deref() {
        Ok("short") => SHORT,
        _ => FULL,
    };
    println!(
        "{} aggregates in parallel, medians of {} rounds; events/s of the timed commands",
        sizes.aggregates, sizes.rounds
    );
    let mut results = Vec::new();
    {
        let cluster = NatsCluster::start();
        let config = StreamConfig::new("ME_R3", "mer3").replicas(3);
        let mut setup = Setup::new("R3 file, 3-node cluster", cluster.urls(), config).await;
        results.extend(measure(&mut setup, &sizes).await);
    }
    let server = NatsServer::start();
    let config = StreamConfig::new("ME_R1_FILE", "mer1f");
    let mut setup = Setup::new("R1 file, one server", vec![server.url()], config).await;
    results.extend(measure(&mut setup, &sizes).await);
    let config = StreamConfig::new("ME_R1_MEMORY", "mer1m").storage(JetStreamStorage::Memory);
    let mut setup = Setup::new("R1 memory, one server", vec![server.url()], config).await;
    results.extend(measure(&mut setup, &sizes).await);

    println!(
        "{:<26} {:>6} {:>16} {:>16} {:>10} {:>18}",
        "stream", "events", "jetsource ev/s", "raw ev/s", "ratio", "jetsource cmd/s"
    );
    for m in &results {
        println!(
            "{:<26} {:>6} {:>16.0} {:>16.0} {:>10.2} {:>18.0}",
            m.label,
            m.n,
            m.jetsource,
            m.raw,
            m.jetsource / m.raw,
            m.jetsource / m.n as f64
        );
    }
    for &n in sizes.events {
        let of = |label: &str| {
            let m = results
                .iter()
                .find(|m| m.n == n && m.label.starts_with(label));
            m.expect("measured").jetsource
        };
        println!(
            "  {n}-event commands, jetsource: R3 file / R1 file {:.1}x, R1 memory / R1 file {:.1}x",
            of("R3") / of("R1 file"),
            of("R1 memory") / of("R1 file")
        );
    }
}
