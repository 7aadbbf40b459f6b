//! Raw async-nats against jetsource on one spawned nats-server, in the same run:
//! OCC appends from 100 aggregates in parallel, commands (load + decide + append through a
//! cached `Repository`) on 100 warm aggregates, 10-event commands (atomic batch, one message
//! carrying the commit, jetsource), and loading a 1,000-event aggregate with and without a
//! snapshot. Run with `cargo bench -p jetsource-tests --bench jetstream`; prints each
//! jetsource/raw ratio.
//!
//! Throughput workloads run in several rounds, raw and jetsource alternating, and report the
//! median round, so a noisy moment of the machine does not land on one side only.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    Aggregate, AggregateId, AggregateKey, Apply, Codec, Event, EventSet, EventStore,
    ExpectedVersion, JetStreamConnectOptions, JetStreamStore, NewEvent, Repository, Snapshot,
    StreamConfig,
};
use serde::{Deserialize, Serialize};

const AGGREGATES: usize = 100;
const APPENDS_PER_AGGREGATE: usize = 50;
const COMMANDS_PER_AGGREGATE: usize = 10;
const LOAD_EVENTS: usize = 1000;
const LOAD_ROUNDS: usize = 20;
/// Rounds of each throughput workload (median reported).
const ROUNDS: usize = 5;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(name = "acct", events = AccountEvent)]
struct Account {
    balance: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, event: Deposited) {
        self.balance += event.amount;
    }
}

fn payload() -> Bytes {
    Bytes::from_static(br#"{"amount":100,"currency":"EUR","note":"benchmark"}"#)
}

fn new_event() -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        name: "deposited",
        version: 1,
        codec: Codec::Json,
        payload: payload(),
        timestamp: SystemTime::now(),
        correlation_id: "c".into(),
        causation_id: None,
        headers: Default::default(),
    }
}

fn key(id: &str) -> AggregateKey {
    AggregateKey::new("acct", AggregateId::new(id).expect("valid id"))
}

fn occ_headers(wildcard: &str, last: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        jetsource::wire::EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER,
        last.to_string(),
    );
    h.insert(
        jetsource::wire::EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT_HEADER,
        wildcard,
    );
    h
}

/// The OCC headers plus the metadata jetsource stores with every event, in its wire format
/// (`jetsource::wire::EventHeader`).
fn full_headers(wildcard: &str, last: u64, version: u64) -> HeaderMap {
    let mut h = occ_headers(wildcard, last);
    let header = jetsource::wire::EventHeader {
        sequence: version,
        id: uuid::Uuid::now_v7(),
        version: 1,
        codec: Codec::Json,
        timestamp: SystemTime::now(),
    };
    h.insert(jetsource::wire::EVENT_HEADER, header.encode());
    h
}

async fn publish_raw(
    client: &async_nats::Client,
    subject: String,
    headers: HeaderMap,
    body: Bytes,
) -> u64 {
    let reply = client
        .send_request(
            subject,
            async_nats::Request::new().headers(headers).payload(body),
        )
        .await
        .expect("publish");
    let ack: serde_json::Value = serde_json::from_slice(&reply.payload).expect("ack json");
    ack["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("publish failed: {ack}"))
}

/// Raw: every aggregate appends one event at a time with the OCC headers (`full`: and the
/// same metadata headers jetsource writes).
async fn raw_occ(client: &async_nats::Client, prefix: &str, round: usize, full: bool) -> f64 {
    let start = Instant::now();
    let tasks = (0..AGGREGATES).map(|a| {
        let client = client.clone();
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            let id = format!("{}{round}x{a}", if full { "f" } else { "m" });
            let wildcard = format!("{prefix}.acct.{id}.*");
            let mut last = 0;
            for v in 1..=APPENDS_PER_AGGREGATE as u64 {
                let headers = if full {
                    full_headers(&wildcard, last, v)
                } else {
                    occ_headers(&wildcard, last)
                };
                last = publish_raw(
                    &client,
                    format!("{prefix}.acct.{id}.deposited"),
                    headers,
                    payload(),
                )
                .await;
            }
        })
    });
    for t in tasks.collect::<Vec<_>>() {
        t.await.expect("task");
    }
    (AGGREGATES * APPENDS_PER_AGGREGATE) as f64 / start.elapsed().as_secs_f64()
}

async fn jetsource_occ(store: &JetStreamStore, round: usize) -> f64 {
    let start = Instant::now();
    let tasks = (0..AGGREGATES).map(|a| {
        let store = store.clone();
        tokio::spawn(async move {
            let k = key(&format!("a{round}x{a}"));
            for v in 0..APPENDS_PER_AGGREGATE as u64 {
                store
                    .append(&k, ExpectedVersion::Exact(v), None, vec![new_event()])
                    .await
                    .expect("append");
            }
        })
    });
    for t in tasks.collect::<Vec<_>>() {
        t.await.expect("task");
    }
    (AGGREGATES * APPENDS_PER_AGGREGATE) as f64 / start.elapsed().as_secs_f64()
}

/// Commands through a cached repository on aggregates it has seen: each command decides on
/// the cached state and appends one event (the cache is revalidated by the append's OCC).
async fn warm_commands(repo: &Repository<Account, JetStreamStore>, round: usize) -> f64 {
    let id = |a: usize| format!("w{round}x{a}");
    // Warm up: one command per aggregate loads it into the repository's cache.
    for a in 0..AGGREGATES {
        repo.execute(&id(a), deposit)
            .await
            .expect("warm-up command");
    }
    let start = Instant::now();
    let tasks = (0..AGGREGATES).map(|a| {
        let repo = repo.clone();
        let id = id(a);
        tokio::spawn(async move {
            for _ in 0..APPENDS_PER_AGGREGATE {
                let done = repo.execute(&id, deposit).await.expect("command");
                assert_eq!(done.attempts, 1, "a warm command never conflicts here");
            }
        })
    });
    for t in tasks.collect::<Vec<_>>() {
        t.await.expect("task");
    }
    (AGGREGATES * APPENDS_PER_AGGREGATE) as f64 / start.elapsed().as_secs_f64()
}

fn deposit(account: &Account) -> Result<Vec<AccountEvent>, std::convert::Infallible> {
    let amount = if account.balance > 1_000_000 { 1 } else { 100 };
    Ok(vec![Deposited { amount }.into()])
}

/// Raw 10-event commands as atomic batches.
async fn raw_batch(client: &async_nats::Client, prefix: &str) -> f64 {
    // The server allows 50 open batches per stream; stay below like jetsource does.
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let start = Instant::now();
    let tasks = (0..AGGREGATES).map(|a| {
        let client = client.clone();
        let prefix = prefix.to_owned();
        let slots = slots.clone();
        tokio::spawn(async move {
            let wildcard = format!("{prefix}.acct.b{a}.*");
            let subject = format!("{prefix}.acct.b{a}.deposited");
            let mut last = 0;
            for _ in 0..COMMANDS_PER_AGGREGATE {
                let id = uuid::Uuid::now_v7().simple().to_string();
                let _slot = slots.acquire().await.expect("semaphore");
                for i in 0..10 {
                    let mut h = if i == 0 {
                        occ_headers(&wildcard, last)
                    } else {
                        HeaderMap::new()
                    };
                    h.insert("Nats-Batch-Id", id.as_str());
                    h.insert("Nats-Batch-Sequence", (i + 1).to_string());
                    if i == 9 {
                        h.insert("Nats-Batch-Commit", "1");
                        last = publish_raw(&client, subject.clone(), h, payload()).await;
                    } else if i == 0 {
                        client
                            .send_request(
                                subject.clone(),
                                async_nats::Request::new().headers(h).payload(payload()),
                            )
                            .await
                            .expect("batch start");
                    } else {
                        client
                            .publish_with_headers(subject.clone(), h, payload())
                            .await
                            .expect("publish");
                    }
                }
            }
        })
    });
    for t in tasks.collect::<Vec<_>>() {
        t.await.expect("task");
    }
    (AGGREGATES * COMMANDS_PER_AGGREGATE * 10) as f64 / start.elapsed().as_secs_f64()
}

/// Raw 10-event commands as one message carrying the whole commit.
async fn raw_envelope(client: &async_nats::Client, prefix: &str) -> f64 {
    let body: Bytes = {
        let one = payload();
        let mut all = Vec::with_capacity(one.len() * 10 + 200);
        for _ in 0..10 {
            all.extend_from_slice(&(one.len() as u32).to_be_bytes());
            all.extend_from_slice(
                br#"{"id":"0190c0de-0000-7000-8000-000000000000","name":"deposited","v":1}"#,
            );
            all.extend_from_slice(&one);
        }
        all.into()
    };
    let start = Instant::now();
    let tasks = (0..AGGREGATES).map(|a| {
        let client = client.clone();
        let prefix = prefix.to_owned();
        let body = body.clone();
        tokio::spawn(async move {
            let wildcard = format!("{prefix}.acct.e{a}.*");
            let mut last = 0;
            for _ in 0..COMMANDS_PER_AGGREGATE {
                last = publish_raw(
                    &client,
                    format!("{prefix}.acct.e{a}.commit"),
                    occ_headers(&wildcard, last),
                    body.clone(),
                )
                .await;
            }
        })
    });
    for t in tasks.collect::<Vec<_>>() {
        t.await.expect("task");
    }
    (AGGREGATES * COMMANDS_PER_AGGREGATE * 10) as f64 / start.elapsed().as_secs_f64()
}

async fn jetsource_commands(store: &JetStreamStore) -> f64 {
    let start = Instant::now();
    let tasks = (0..AGGREGATES).map(|a| {
        let store = store.clone();
        tokio::spawn(async move {
            let k = key(&format!("c{a}"));
            for c in 0..COMMANDS_PER_AGGREGATE as u64 {
                store
                    .append(
                        &k,
                        ExpectedVersion::Exact(c * 10),
                        None,
                        (0..10).map(|_| new_event()).collect(),
                    )
                    .await
                    .expect("append");
            }
        })
    });
    for t in tasks.collect::<Vec<_>>() {
        t.await.expect("task");
    }
    (AGGREGATES * COMMANDS_PER_AGGREGATE * 10) as f64 / start.elapsed().as_secs_f64()
}

/// Raw load through an async-nats ordered consumer; `delete`: deleted afterwards (as a careful
/// raw user would), otherwise left to the server's inactivity timeout.
async fn raw_load_ordered(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
    start_seq: u64,
    delete: bool,
) -> usize {
    let stream = js.get_stream_no_info(stream).await.expect("stream");
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start_seq,
            },
            ..Default::default()
        })
        .await
        .expect("consumer");
    let name = consumer.cached_info().name.clone();
    let mut n = 0;
    let mut messages = consumer.messages().await.expect("messages");
    while let Some(m) = messages.next().await {
        let m = m.expect("message");
        n += 1;
        if m.info().map(|i| i.pending).unwrap_or(0) == 0 {
            break;
        }
    }
    drop(messages);
    if delete {
        stream
            .delete_consumer(&name)
            .await
            .expect("delete consumer");
    }
    n
}

/// Raw load through batched direct get.
async fn raw_load_direct(
    client: &async_nats::Client,
    stream: &str,
    filter: &str,
    start_seq: u64,
) -> usize {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.expect("subscribe");
    let req = format!(r#"{{"seq":{start_seq},"batch":1000,"next_by_subj":"{filter}"}}"#);
    client
        .publish_with_reply(format!("$JS.API.DIRECT.GET.{stream}"), inbox, req.into())
        .await
        .expect("publish");
    let mut n = 0;
    while let Some(m) = sub.next().await {
        if m.status.is_some() {
            break;
        }
        n += 1;
    }
    n
}

type Workload<'a> = Box<dyn FnMut(usize) -> Pin<Box<dyn Future<Output = f64> + 'a>> + 'a>;

/// Runs each workload `ROUNDS` times, alternating (each round starts with the next workload,
/// so none always runs first or on the biggest stream), and returns each one's median result.
async fn alternate(mut workloads: Vec<Workload<'_>>) -> Vec<f64> {
    let n = workloads.len();
    let mut results = vec![Vec::new(); n];
    for round in 0..ROUNDS {
        for k in 0..n {
            let i = (round + k) % n;
            results[i].push(workloads[i](round).await);
        }
    }
    results
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect()
}

async fn median<F, Fut>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut times = Vec::new();
    for _ in 0..LOAD_ROUNDS {
        let t = Instant::now();
        let n = f().await;
        assert!(n > 0);
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn ratio(name: &str, jetsource: f64, raw: f64, unit: &str, higher_is_better: bool) {
    let r = jetsource / raw;
    println!(
        "{name:<58} jetsource {jetsource:>10.1} {unit:<9} raw {raw:>10.1} {unit:<9} ratio {r:.2}{}",
        if higher_is_better {
            " (throughput)"
        } else {
            " (latency)"
        }
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client.clone());
    // Raw streams with the same settings jetsource uses.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "RAW".into(),
        subjects: vec!["raw.>".into()],
        allow_direct: true,
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await
    .expect("raw stream");
    let store = JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new("JS", "js"),
    )
    .await
    .expect("store");

    println!(
        "nats-server on {}, release build, one run; ratios compare within this run",
        server.url()
    );
    let repo = Repository::<Account, _>::new(store.clone()).with_cache(10_000);
    let results = alternate(vec![
        Box::new(|round| Box::pin(raw_occ(&client, "raw", round, false))),
        Box::new(|round| Box::pin(raw_occ(&client, "raw", round, true))),
        Box::new(|round| Box::pin(jetsource_occ(&store, round))),
        Box::new(|round| Box::pin(warm_commands(&repo, round))),
    ])
    .await;
    let (raw_min, raw_full, ours, commands) = (results[0], results[1], results[2], results[3]);
    println!("  ({ROUNDS} rounds alternating, medians; raw minimal headers {raw_min:.0} ev/s)");
    ratio(
        "OCC appends, 100 aggregates in parallel (events/s)",
        ours,
        raw_full,
        "ev/s",
        true,
    );
    ratio(
        "  same, vs raw with only the 3 OCC/name headers",
        ours,
        raw_min,
        "ev/s",
        true,
    );
    ratio(
        "warm commands (load+decide+append), 100 aggregates, vs raw",
        commands,
        raw_full,
        "cmd/s",
        true,
    );
    println!(
        "  (warm commands / jetsource appends = {:.2})",
        commands / ours
    );

    let batch = raw_batch(&client, "raw").await;
    let envelope = raw_envelope(&client, "raw").await;
    let ours = jetsource_commands(&store).await;
    ratio(
        "10-event commands, jetsource vs raw atomic batch (events/s)",
        ours,
        batch,
        "ev/s",
        true,
    );
    ratio(
        "10-event commands, jetsource vs raw one-message commit",
        ours,
        envelope,
        "ev/s",
        true,
    );
    println!(
        "  (raw one-message commit / raw atomic batch = {:.2})",
        envelope / batch
    );

    // A 1,000-event aggregate, written by jetsource, read both ways.
    let k = key("big");
    for c in 0..(LOAD_EVENTS / 100) as u64 {
        store
            .append(
                &k,
                ExpectedVersion::Exact(c * 100),
                None,
                (0..100).map(|_| new_event()).collect(),
            )
            .await
            .expect("append");
    }
    let events = store.load(&k, 1).await.expect("load");
    assert_eq!(events.len(), LOAD_EVENTS);
    let filter = "js.acct.big.*";
    let raw_ordered = median(|| raw_load_ordered(&js, "JS", filter, 1, false)).await;
    let raw_ordered_deleted = median(|| raw_load_ordered(&js, "JS", filter, 1, true)).await;
    let raw_direct = median(|| raw_load_direct(&client, "JS", filter, 1)).await;
    // Warm: the store's cache knows the aggregate's version, so it goes straight to a consumer.
    let ours = median(|| async { store.load(&k, 1).await.expect("load").len() }).await;
    // Cold: a store that never saw the aggregate (one direct-get page, then a consumer).
    let mut cold_times = Vec::new();
    for _ in 0..LOAD_ROUNDS {
        let cold = JetStreamStore::with_client(
            client.clone(),
            StreamConfig::new("JS", "js"),
            Duration::from_secs(10),
        )
        .await
        .expect("store");
        let t = Instant::now();
        assert_eq!(cold.load(&k, 1).await.expect("load").len(), LOAD_EVENTS);
        cold_times.push(t.elapsed());
    }
    cold_times.sort();
    let ours_cold = cold_times[cold_times.len() / 2];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let fastest = raw_ordered.min(raw_ordered_deleted).min(raw_direct);
    println!(
        "  raw: ordered consumer {:.1} ms (deleted after: {:.1} ms), batched direct get {:.1} ms",
        ms(raw_ordered),
        ms(raw_ordered_deleted),
        ms(raw_direct)
    );
    ratio(
        "load 1,000 events, cache warm, vs fastest raw (ms)",
        ms(ours),
        ms(fastest),
        "ms",
        false,
    );
    ratio(
        "load 1,000 events, cache cold, vs fastest raw (ms)",
        ms(ours_cold),
        ms(fastest),
        "ms",
        false,
    );
    ratio(
        "load 1,000 events, cache warm, vs raw ordered consumer deleted (ms)",
        ms(ours),
        ms(raw_ordered_deleted),
        "ms",
        false,
    );
    ratio(
        "load 1,000 events, cache warm, vs raw batched direct get (ms)",
        ms(ours),
        ms(raw_direct),
        "ms",
        false,
    );
    // The raw ordered consumers that were not deleted time out on the server; jetsource's
    // are deleted by the load itself.
    let mut names = js
        .get_stream_no_info("JS")
        .await
        .expect("stream")
        .consumer_names();
    let mut left = 0;
    while let Some(name) = names.next().await {
        if name.expect("consumer name").starts_with("jetsource-load-") {
            left += 1;
        }
    }
    println!("  (jetsource load consumers left on the server: {left})");

    // With a snapshot at version 990: read the snapshot, then the 10 later events.
    let at = &events[LOAD_EVENTS - 11];
    store
        .save_snapshot(
            &k,
            Snapshot {
                schema_version: 1,
                version: at.sequence,
                position: at.position,
                state: Bytes::from(vec![7u8; 2048]),
            },
        )
        .await
        .expect("snapshot");
    let kv = js.get_key_value("JS_SNAPSHOTS").await.expect("bucket");
    let snap_key = {
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        format!("{}.{}", hex("acct"), hex("big"))
    };
    let from = at.position + 1;
    let raw_snap = median(|| {
        let kv = kv.clone();
        let snap_key = snap_key.clone();
        let client = client.clone();
        async move {
            let s = kv.get(snap_key).await.expect("kv").expect("snapshot");
            s.len() + raw_load_direct(&client, "JS", filter, from).await
        }
    })
    .await;
    let ours_snap = median(|| async {
        let s = store
            .load_snapshot(&k)
            .await
            .expect("snapshot")
            .expect("some");
        store.load(&k, s.version + 1).await.expect("load").len() + 1
    })
    .await;
    ratio(
        "load with snapshot at 990 (+10 events) vs raw KV get + direct get (ms)",
        ms(ours_snap),
        ms(raw_snap),
        "ms",
        false,
    );
    println!(
        "  (jetsource with snapshot / jetsource full load = {:.2})",
        ms(ours_snap) / ms(ours)
    );
}
