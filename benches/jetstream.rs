//! Raw async-nats against jetsource on one spawned nats-server, in the same run:
//! OCC appends from 100 aggregates in parallel, 10-event commands (atomic batch, one message
//! carrying the commit, jetsource), and loading a 1,000-event aggregate with and without a
//! snapshot. Run with `cargo bench --bench jetstream`; prints each jetsource/raw ratio.

use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, Codec, EventStore, ExpectedVersion, JetStreamConnectOptions,
    JetStreamStore, NewEvent, Snapshot, StreamConfig,
};

const AGGREGATES: usize = 100;
const APPENDS_PER_AGGREGATE: usize = 50;
const COMMANDS_PER_AGGREGATE: usize = 10;
const LOAD_EVENTS: usize = 1000;
const LOAD_ROUNDS: usize = 20;

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
    h.insert("Nats-Expected-Last-Subject-Sequence", last.to_string());
    h.insert("Nats-Expected-Last-Subject-Sequence-Subject", wildcard);
    h.insert("Jetsource-Event-Name", "deposited");
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

/// Raw: every aggregate appends one event at a time with the OCC headers.
async fn raw_occ(client: &async_nats::Client, prefix: &str) -> f64 {
    let start = Instant::now();
    let tasks = (0..AGGREGATES).map(|a| {
        let client = client.clone();
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            let wildcard = format!("{prefix}.acct.a{a}.*");
            let mut last = 0;
            for _ in 0..APPENDS_PER_AGGREGATE {
                last = publish_raw(
                    &client,
                    format!("{prefix}.acct.a{a}.deposited"),
                    occ_headers(&wildcard, last),
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

async fn jetsource_occ(store: &JetStreamStore) -> f64 {
    let start = Instant::now();
    let tasks = (0..AGGREGATES).map(|a| {
        let store = store.clone();
        tokio::spawn(async move {
            let k = key(&format!("a{a}"));
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

/// Raw load through an ordered consumer, deleted afterwards (as a careful raw user would).
async fn raw_load_ordered(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
    start_seq: u64,
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
    let mut n = 0;
    let mut messages = consumer.messages().await.expect("messages");
    while let Some(m) = messages.next().await {
        let m = m.expect("message");
        n += 1;
        if m.info().map(|i| i.pending).unwrap_or(0) == 0 {
            break;
        }
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
    let raw = raw_occ(&client, "raw").await;
    let ours = jetsource_occ(&store).await;
    ratio(
        "OCC appends, 100 aggregates in parallel (events/s)",
        ours,
        raw,
        "ev/s",
        true,
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
    let raw_ordered = median(|| raw_load_ordered(&js, "JS", filter, 1)).await;
    let raw_direct = median(|| raw_load_direct(&client, "JS", filter, 1)).await;
    let ours = median(|| async { store.load(&k, 1).await.expect("load").len() }).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    ratio(
        "load 1,000 events vs raw ordered consumer (ms)",
        ms(ours),
        ms(raw_ordered),
        "ms",
        false,
    );
    ratio(
        "load 1,000 events vs raw batched direct get (ms)",
        ms(ours),
        ms(raw_direct),
        "ms",
        false,
    );

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
