//! The built `jetsource` binary against nats-server processes spawned by the runtime's test
//! harness: every test reads what the command printed and its exit code.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use jetsource::subscriber::{self, EventContext, HandlerError, Subscriber, SubscriberConfig};
use jetsource::testing::nats_server::{Auth, NatsServer};
use jetsource::{
    AggregateId, AggregateKey, Codec, Event, EventSet, EventStore, ExpectedVersion,
    JetStreamConnectOptions, JetStreamStorage, JetStreamStore, NewEvent, StreamConfig,
};
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod support;
use support::{binary, jetsource, Run};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

/// A Protobuf event, described to the CLI by [`shop_descriptor_set`].
#[derive(Event, Clone, PartialEq, prost::Message)]
#[event(name = "order_placed", version = 1, codec = "protobuf")]
struct OrderPlaced {
    #[prost(int64, tag = "1")]
    total: i64,
    #[prost(string, tag = "2")]
    currency: String,
}

/// What the failing subscriber handles.
#[derive(EventSet, Debug, Clone, PartialEq)]
enum Handled {
    Deposited(Deposited),
}

/// Runs the binary with `--server` pointing at `server`.
async fn jetsource_at(server: &NatsServer, args: &[&str]) -> Run {
    let url = server.url();
    let mut all = vec!["--server", url.as_str()];
    all.extend_from_slice(args);
    jetsource(&all).await
}

async fn store(server: &NatsServer, name: &str, prefix: &str) -> JetStreamStore {
    JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new(name, prefix),
    )
    .await
    .expect("connect to the harness server")
}

fn key(aggregate_type: &'static str, id: &str) -> AggregateKey {
    AggregateKey::new(aggregate_type, AggregateId::new(id).expect("valid id"))
}

fn event(name: &'static str, codec: Codec, payload: &[u8]) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        name,
        version: 1,
        codec,
        payload: payload.to_vec().into(),
        timestamp: SystemTime::now(),
        correlation_id: "corr-1".into(),
        causation_id: None,
        headers: BTreeMap::new(),
    }
}

fn deposit(amount: u64) -> NewEvent {
    event(
        "deposited",
        Codec::Json,
        format!(r#"{{"amount":{amount}}}"#).as_bytes(),
    )
}

async fn append(store: &JetStreamStore, key: &AggregateKey, events: Vec<NewEvent>) {
    store
        .append(key, ExpectedVersion::Any, None, events)
        .await
        .expect("append");
}

/// The headline `jetsource events` prints for each event (`version N: <name> v<V>`), in
/// order: which events were listed, read from the one line the command writes per event,
/// never by searching output that also holds ids, timestamps and payload bytes.
fn event_headlines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|line| line.starts_with("version "))
        .collect()
}

/// Whether `out` has a line that is exactly `line` once trimmed: a "not printed" check that a
/// random id, a timestamp or a hex dump cannot fail by containing the same characters.
fn has_line(out: &str, line: &str) -> bool {
    out.lines().any(|printed| printed.trim() == line)
}

/// The original subject of each dead letter `jetsource dead-letters list` printed, read from
/// the headline it writes per letter (`#<n> <reason>  subject=<subject>  ...`).
fn dead_letter_subjects(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|line| line.starts_with('#'))
        .filter_map(|line| {
            line.split("  ")
                .find_map(|field| field.strip_prefix("subject="))
        })
        .collect()
}

/// Where `needle` starts in `haystack`, failing with the haystack when it is absent.
#[track_caller]
fn position_of(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not found in:\n{haystack}"))
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_prints_one_aggregate_in_version_order_with_metadata_and_payloads() {
    let server = NatsServer::start();
    let bank = store(&server, "BANK", "bank").await;
    let acc1 = key("account", "acc-1");
    let mut opened = event("opened", Codec::Json, br#"{"owner":"ada","limits":[1,2]}"#);
    opened.causation_id = Some("cause-7".into());
    opened.headers.insert("tenant".into(), "acme".into());
    bank.append(
        &acc1,
        ExpectedVersion::Exact(0),
        Some("cmd-1"),
        vec![opened],
    )
    .await
    .expect("append with a command id");
    append(&bank, &key("account", "acc-2"), vec![deposit(999)]).await;
    append(
        &bank,
        &acc1,
        vec![
            deposit(5),
            event("audited", Codec::Protobuf, &[0x08, 0x96, 0x01]),
        ],
    )
    .await;

    let out = jetsource_at(&server, &["events", "--stream", "BANK", "account", "acc-1"])
        .await
        .success();
    assert!(
        out.starts_with("account/acc-1 in stream BANK: 3 events\n"),
        "{out}"
    );
    let v1 = position_of(&out, "version 1: opened v1\n");
    let v2 = position_of(&out, "version 2: deposited v1\n");
    let v3 = position_of(&out, "version 3: audited v1\n");
    assert!(v1 < v2 && v2 < v3, "out of order:\n{out}");
    let first = &out[v1..v2];
    for line in [
        "  correlation:  corr-1\n",
        "  causation:    cause-7\n",
        "  command id:   cmd-1\n",
        "  header tenant: acme\n",
        "  position:     1\n",
        "  payload (json):\n    {\n      \"limits\": [\n        1,\n        2\n      ],\n      \"owner\": \"ada\"\n    }\n",
    ] {
        position_of(first, line);
    }
    position_of(
        &out[v2..v3],
        "  payload (json):\n    {\n      \"amount\": 5\n    }\n",
    );
    position_of(&out[v3..], "  payload (protobuf, 3 bytes):\n    08 96 01\n");
    // Exactly acc-1's three events: acc-2's deposit of 999 is neither listed nor its payload
    // printed. (Searching the output for "999" failed whenever a timestamp's nanoseconds or an
    // id happened to contain it.)
    assert_eq!(
        event_headlines(&out),
        [
            "version 1: opened v1",
            "version 2: deposited v1",
            "version 3: audited v1"
        ],
        "{out}"
    );
    assert!(
        !has_line(&out, "\"amount\": 999"),
        "another aggregate's event was printed:\n{out}"
    );

    // From a later version, with the prefix given explicitly.
    let out = jetsource_at(
        &server,
        &[
            "events",
            "--stream",
            "BANK",
            "--prefix",
            "bank",
            "--from-version",
            "3",
            "account",
            "acc-1",
        ],
    )
    .await
    .success();
    assert_eq!(event_headlines(&out), ["version 3: audited v1"], "{out}");

    let out = jetsource_at(
        &server,
        &["events", "--stream", "BANK", "account", "nobody"],
    )
    .await
    .success();
    assert_eq!(out, "no events for account/nobody in stream BANK\n");

    let err = jetsource_at(
        &server,
        &[
            "events", "--stream", "BANK", "--prefix", "orders", "account", "acc-1",
        ],
    )
    .await
    .failure();
    assert_eq!(
        err,
        "error: stream BANK is not a jetsource event stream: it captures [\"bank.>\"], not \
         orders.> (check --prefix)"
    );
    let err = jetsource_at(&server, &["events", "--stream", "NOPE", "account", "acc-1"])
        .await
        .failure();
    assert_eq!(
        err,
        "error: stream NOPE does not exist on the server (`jetsource streams` lists them)"
    );
    let err = jetsource_at(&server, &["events", "--stream", "BANK", "account", "a.b"])
        .await
        .failure();
    assert_eq!(
        err,
        "error: invalid aggregate id \"a.b\": it contains '.', which cannot appear in one NATS \
         subject token"
    );
    // Checked before connecting: no server listens on port 1.
    let err = jetsource(&[
        "--server",
        "nats://127.0.0.1:1",
        "events",
        "--stream",
        "BANK",
        "acc*",
        "acc-1",
    ])
    .await
    .failure();
    assert_eq!(
        err,
        "error: invalid aggregate type \"acc*\": it contains '*', which cannot appear in one \
         NATS subject token"
    );
    let err = jetsource_at(
        &server,
        &[
            "events", "--stream", "BANK", "--prefix", "bank.", "account", "acc-1",
        ],
    )
    .await
    .failure();
    assert_eq!(
        err,
        "error: invalid subject prefix \"bank.\": it has an empty token (two dots, or a dot at \
         either end)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_leaves_a_poisoned_event_in_the_history_with_a_record_after_it() {
    let server = NatsServer::start();
    let bank = store(&server, "BANK", "bank").await;
    let k = key("account", "acc-1");
    let mut poisoned = event("deposited", Codec::Json, b"{not json");
    poisoned.version = 3;
    let poisoned_id = poisoned.id.to_string();
    append(&bank, &k, vec![deposit(5), poisoned]).await;
    let quarantine = |extra: &[&str]| {
        let mut args = vec!["quarantine", "--stream", "BANK", "--by", "ada@ops"];
        args.extend_from_slice(&["--reason", "INC-42: written by 2.3"]);
        args.extend_from_slice(extra);
        let server = &server;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            jetsource_at(server, &args).await
        }
    };

    // Refusals name what does not fit; nothing is appended.
    let err = quarantine(&["account", "acc-1", "2", "opened"])
        .await
        .failure();
    assert_eq!(
        err,
        "error: event 2 of account/acc-1 is deposited, not opened; nothing was quarantined"
    );
    let err = quarantine(&["account", "acc-1", "3", "deposited"])
        .await
        .failure();
    assert_eq!(
        err,
        "error: account/acc-1 in stream BANK has no event 3: its last is 2 (`jetsource events` \
         lists them)"
    );
    let err = quarantine(&["account", "nobody", "1", "deposited"])
        .await
        .failure();
    assert_eq!(
        err,
        "error: no events for account/nobody in stream BANK: nothing to quarantine (check the \
         type and id)"
    );
    let other_id = Uuid::now_v7().to_string();
    let err = quarantine(&[
        "account",
        "acc-1",
        "2",
        "deposited",
        "--event-id",
        &other_id,
    ])
    .await
    .failure();
    assert_eq!(
        err,
        format!(
            "error: event 2 of account/acc-1 has id {poisoned_id}, not {other_id}; nothing was \
             quarantined"
        )
    );
    assert_eq!(bank.load(&k, 1).await.unwrap().len(), 2);

    let out = quarantine(&[
        "account",
        "acc-1",
        "2",
        "deposited",
        "--event-id",
        &poisoned_id,
    ])
    .await
    .success();
    assert_eq!(
        out,
        format!(
            "quarantined event 2 of account/acc-1 in stream BANK (deposited v3, id {poisoned_id}): \
             record at version 3, by ada@ops: INC-42: written by 2.3\nreplay now leaves the \
             event out; `events` still lists it\n"
        )
    );
    let again = quarantine(&["account", "acc-1", "2", "deposited"])
        .await
        .success();
    assert!(
        again.ends_with("(record at version 3): INC-42: written by 2.3; nothing appended\n"),
        "{again}"
    );
    let err = quarantine(&["account", "acc-1", "3", "$quarantine"])
        .await
        .failure();
    assert!(err.contains("is a quarantine record"), "{err}");

    // The original bytes and the record, both listed.
    let out = jetsource_at(&server, &["events", "--stream", "BANK", "account", "acc-1"])
        .await
        .success();
    assert_eq!(
        event_headlines(&out),
        [
            "version 1: deposited v1",
            "version 2: deposited v3",
            "version 3: $quarantine v1"
        ]
    );
    // `{not json`, kept byte for byte (shown as hex: it does not parse).
    assert!(has_line(&out, "7b 6e 6f 74 20 6a 73 6f 6e"), "{out}");
    assert!(out.contains(r#""by": "ada@ops""#), "{out}");
    assert!(
        out.contains(r#""reason": "INC-42: written by 2.3""#),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_lists_each_stream_with_its_consumers_lag_and_ack_pending() {
    let server = NatsServer::start();
    assert_eq!(
        jetsource_at(&server, &["streams"]).await.success(),
        "no streams\n"
    );
    let bank = store(&server, "BANK", "bank").await;
    for amount in 1..=5 {
        append(&bank, &key("account", "a1"), vec![deposit(amount)]).await;
    }
    // A durable consumer that received two events and acknowledged one.
    let js = jetstream::new(bank.client().clone());
    let stream = js.get_stream("BANK").await.expect("stream");
    let billing = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("billing".into()),
            filter_subject: "bank.account.*.deposited".into(),
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut batch = billing
        .fetch()
        .max_messages(2)
        .messages()
        .await
        .expect("fetch");
    let first = batch.next().await.expect("a message").expect("message");
    first.double_ack().await.expect("ack");
    let _unacked = batch.next().await.expect("a message").expect("message");

    let out = jetsource_at(&server, &["streams"]).await.success();
    let bank_line = position_of(&out, "stream BANK  subjects=bank.>  messages=5  bytes=");
    let consumer_line = position_of(
        &out,
        "\n  consumer billing  lag=3  ack_pending=1  redelivered=0  \
         filter=bank.account.*.deposited\n",
    );
    assert!(bank_line < consumer_line, "{out}");
    // The runtime's snapshot bucket is a stream too, listed without consumers.
    let bucket = position_of(
        &out,
        "stream KV_BANK_SNAPSHOTS  subjects=$KV.BANK_SNAPSHOTS.>",
    );
    assert!(
        out[bucket..].starts_with(
            "stream KV_BANK_SNAPSHOTS  subjects=$KV.BANK_SNAPSHOTS.>  messages=0  bytes=0  \
         storage=file  replicas=1\n  no consumers\n"
        ),
        "{out}"
    );
}

/// Fails permanently on amount 13 until `accept` is set, and forever (retryably) on 7.
#[derive(Default)]
struct Picky {
    accept: AtomicBool,
    handled: Mutex<Vec<(String, u64, bool)>>,
}

impl Subscriber for Picky {
    type Event = Handled;

    async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = event;
        if d.amount == 13 && !self.accept.load(Ordering::SeqCst) {
            return Err(HandlerError::permanent("unlucky amount"));
        }
        if d.amount == 7 {
            return Err(HandlerError::retryable("seven never works"));
        }
        self.handled
            .lock()
            .unwrap()
            .push((ctx.aggregate_id.clone(), d.amount, ctx.redriven));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_a_failing_subscriber_are_listed_and_redriven_by_filter() {
    let server = NatsServer::start();
    let poison = store(&server, "POISON", "poison").await;
    append(&poison, &key("account", "a1"), vec![deposit(13)]).await;
    append(&poison, &key("account", "a2"), vec![deposit(7)]).await;
    append(&poison, &key("account", "a3"), vec![deposit(13)]).await;
    let picky = Arc::new(Picky::default());
    let config = SubscriberConfig::new("poison")
        .ack_wait(Duration::from_secs(1))
        .max_deliver(2)
        .backoff([Duration::from_millis(20)]);
    let running = subscriber::start(&poison, picky.clone(), config)
        .await
        .expect("start the subscriber");
    wait_for("three dead letters", || running.stats().dead_lettered == 3).await;

    let target = ["--stream", "POISON", "--durable", "poison"];
    let list = |target: [&'static str; 4]| {
        let server = &server;
        async move {
            let mut args = vec!["dead-letters", "list"];
            args.extend(target);
            jetsource_at(server, &args).await.success()
        }
    };
    let out = list(target).await;
    assert!(
        out.starts_with("3 dead letters for subscriber poison on stream POISON\n"),
        "{out}"
    );
    for expected in [
        // The event's name, version and id follow the attempts.
        " permanent  subject=poison.account.a1.deposited  position=1  deliveries=1  \
         event=deposited  version=1  event_id=",
        " max_deliver  subject=poison.account.a2.deposited  position=2  deliveries=2  \
         event=deposited  version=1  event_id=",
        " permanent  subject=poison.account.a3.deposited  position=3  deliveries=1  \
         event=deposited  version=1  event_id=",
        "  error: unlucky amount\n",
        "  error: seven never works (after 2 attempts)\n",
        // Each letter's event, decoded from its original headers.
        "  error: unlucky amount\n  account/a1 version 1: deposited v1\n  event id:     ",
        "  account/a2 version 1: deposited v1\n",
        "  wire format:  1\n",
        "  payload (json):\n    {\n      \"amount\": 7\n    }\n",
    ] {
        position_of(&out, expected);
    }

    // The bug is fixed: hand back only a1's permanent failure.
    picky.accept.store(true, Ordering::SeqCst);
    let mut args = vec!["dead-letters", "redrive"];
    args.extend(target);
    args.extend([
        "--reason",
        "permanent",
        "--subject-filter",
        "poison.account.a1.*",
    ]);
    let out = jetsource_at(&server, &args).await.success();
    assert_eq!(
        out,
        "redrove 1 dead letter with reason permanent and subject poison.account.a1.* of \
         subscriber poison; it handles them again while it runs\n"
    );
    wait_for("the redriven a1 event", || {
        picky
            .handled
            .lock()
            .unwrap()
            .contains(&("a1".to_owned(), 13, true))
    })
    .await;
    let out = list(target).await;
    assert!(out.starts_with("2 dead letters"), "{out}");
    let mut listed = dead_letter_subjects(&out);
    listed.sort_unstable();
    assert_eq!(
        listed,
        ["poison.account.a2.deposited", "poison.account.a3.deposited"],
        "{out}"
    );

    // By reason alone: a3's permanent failure goes, a2's exhausted retries stay.
    let mut args = vec!["dead-letters", "redrive"];
    args.extend(target);
    args.extend(["--reason", "permanent"]);
    let out = jetsource_at(&server, &args).await.success();
    assert!(
        out.starts_with("redrove 1 dead letter with reason permanent "),
        "{out}"
    );
    wait_for("the redriven a3 event", || {
        picky
            .handled
            .lock()
            .unwrap()
            .contains(&("a3".to_owned(), 13, true))
    })
    .await;
    let out = list(target).await;
    assert!(
        out.starts_with("1 dead letter for subscriber poison"),
        "{out}"
    );
    position_of(&out, " max_deliver  subject=poison.account.a2.deposited");

    let mut args = vec!["dead-letters", "redrive"];
    args.extend(target);
    args.extend(["--reason", "bogus"]);
    let run = jetsource_at(&server, &args).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("max_deliver"), "{}", run.stderr);
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_config_create_makes_the_stream_show_describes() {
    let server = NatsServer::start();
    let flags = [
        "--name",
        "ORDERS",
        "--prefix",
        "orders.eu",
        "--storage",
        "memory",
        "--duplicate-window",
        "30s",
        "--max-age",
        "7d",
    ];
    // `show` needs no server: this one does not exist.
    let mut show = vec!["--server", "nats://127.0.0.1:1", "stream-config", "show"];
    show.extend(flags);
    let shown: serde_json::Value =
        serde_json::from_str(&jetsource(&show).await.success()).expect("show prints JSON");
    assert_eq!(
        shown,
        serde_json::json!({
            "name": "ORDERS",
            "subjects": ["orders.eu.>"],
            "storage": "memory",
            "replicas": 1,
            "max_age": "7d",
            "max_bytes": -1,
            "max_message_size": -1,
            "duplicate_window": "30s",
            "allow_direct": true,
            "allow_atomic_publish": true,
            "snapshot_bucket": "ORDERS_SNAPSHOTS",
        })
    );

    let mut create = vec!["stream-config", "create"];
    create.extend(flags);
    let created: serde_json::Value =
        serde_json::from_str(&jetsource_at(&server, &create).await.success())
            .expect("create prints JSON");
    assert_eq!(created, shown, "the server holds another configuration");
    // Creating again changes nothing and succeeds.
    jetsource_at(&server, &create).await.success();
    // The runtime opens the created stream with the same configuration without a conflict.
    JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new("ORDERS", "orders.eu")
            .storage(JetStreamStorage::Memory)
            .duplicate_window(Duration::from_secs(30))
            .max_age(Duration::from_secs(7 * 24 * 3600)),
    )
    .await
    .expect("the runtime accepts the stream the CLI created");

    let mut conflicting = vec!["stream-config", "create"];
    conflicting.extend(&flags[..4]);
    let err = jetsource_at(&server, &conflicting).await.failure();
    assert_eq!(
        err,
        "error: stream ORDERS exists with storage = Memory, but the configuration asks for \
         File; nothing was changed (pass --update-existing to change the stream)"
    );

    // Durations as people write them.
    let mut without_max_age = vec!["stream-config", "create"];
    without_max_age.extend(&flags[..8]);
    let err = jetsource_at(&server, &without_max_age).await.failure();
    assert_eq!(
        err,
        "error: stream ORDERS exists with max_age = 7d, but the configuration asks for 0s (no \
         limit); nothing was changed (pass --update-existing to change the stream)"
    );

    let err = jetsource(&[
        "stream-config",
        "show",
        "--name",
        "ORDERS",
        "--prefix",
        "orders",
        "--replicas",
        "9",
    ])
    .await
    .failure();
    assert_eq!(
        err,
        "error: invalid stream configuration: replicas must be 1 to 5, not 9"
    );
}

/// Reads `child`'s standard error up to the line that says it follows the stream.
fn wait_until_following(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("piped stderr");
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    reader.read_line(&mut line).expect("read stderr");
    line
}

/// Starts `jetsource tail` with `args` against `server`, returning once it follows the stream,
/// with the line it printed on standard error.
async fn start_tail(server: &NatsServer, args: &[&str]) -> (String, Child) {
    let mut child = binary()
        .args(["--server", &server.url(), "tail"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jetsource tail");
    tokio::task::spawn_blocking(move || {
        let line = wait_until_following(&mut child);
        (line, child)
    })
    .await
    .expect("reader thread")
}

/// Waits (30 s at most) for a `tail --count` to stop by itself, and returns its output.
async fn finish_tail(mut child: Child) -> String {
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for tail") {
                let mut stdout = String::new();
                child
                    .stdout
                    .take()
                    .expect("piped stdout")
                    .read_to_string(&mut stdout)
                    .expect("read stdout");
                return Ok((status, stdout));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("tail did not stop after --count messages");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("waiter thread");
    let (status, out) = status.expect("tail ends");
    assert!(status.success(), "tail failed:\n{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_only_new_matching_messages_and_stops_after_count() {
    let server = NatsServer::start();
    let tail = store(&server, "TAIL", "tail").await;
    let a1 = key("account", "a1");
    append(&tail, &a1, vec![deposit(1)]).await;

    let (ready, child) = start_tail(
        &server,
        &[
            "--stream",
            "TAIL",
            "--subject",
            "tail.account.*.deposited",
            "--count",
            "2",
        ],
    )
    .await;
    assert_eq!(
        ready,
        "following stream TAIL on tail.account.*.deposited; new messages only, stop with Ctrl-C\n"
    );

    append(&tail, &a1, vec![event("withdrawn", Codec::Json, b"{}")]).await;
    append(&tail, &a1, vec![deposit(2)]).await;
    append(&tail, &key("account", "a2"), vec![deposit(3)]).await;

    let out = finish_tail(child).await;
    let headlines: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(headlines.len(), 2, "{out}");
    assert!(
        headlines[0].starts_with("#3 tail.account.a1.deposited at "),
        "{out}"
    );
    assert!(
        headlines[1].starts_with("#4 tail.account.a2.deposited at "),
        "{out}"
    );
    // The event name comes from the subject, the aggregate version from the metadata.
    let a1 = position_of(
        &out,
        "\n  account/a1 version 3: deposited v1\n  event id:     ",
    );
    let a2 = position_of(
        &out,
        "\n  account/a2 version 1: deposited v1\n  event id:     ",
    );
    assert!(a1 < a2, "{out}");
    position_of(
        &out[a1..a2],
        "  payload (json):\n    {\n      \"amount\": 2\n    }\n",
    );
    position_of(
        &out,
        "  payload (json):\n    {\n      \"amount\": 3\n    }\n",
    );
    assert!(
        !has_line(&out, "\"amount\": 1"),
        "an old message was printed:\n{out}"
    );
    assert!(
        !out.contains("withdrawn"),
        "a filtered message was printed:\n{out}"
    );
}

/// The id of the format-0 event of [`publish_format_0`].
const FORMAT_0_ID: &str = "0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b";

/// Publishes `{"amount":<amount>}` as event `sequence` of `wire.account.a1`, the way jetsource
/// wrote events before wire format 1 (format 0: each field in its own header), as a program
/// that does not use jetsource would.
async fn publish_format_0(js: &jetstream::Context, sequence: u64, amount: u64) {
    let mut headers = async_nats::HeaderMap::new();
    let sequence = sequence.to_string();
    for (name, value) in [
        ("Jetsource-Event-Id", FORMAT_0_ID),
        ("Jetsource-Event-Name", "deposited"),
        ("Jetsource-Event-Version", "1"),
        ("Jetsource-Codec", "json"),
        ("Jetsource-Sequence", sequence.as_str()),
        ("Jetsource-Correlation-Id", "legacy-corr"),
        ("Jetsource-Causation-Id", "legacy-cause"),
        ("Jetsource-Command-Id", "legacy-cmd"),
        ("Jetsource-Timestamp", "1764000000123456789"),
        ("Jetsource-H-tenant", "acme"),
    ] {
        headers.insert(name, value);
    }
    js.publish_with_headers(
        "wire.account.a1.deposited",
        headers,
        format!(r#"{{"amount":{amount}}}"#).into(),
    )
    .await
    .expect("publish")
    .await
    .expect("the server stores it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_and_dead_letters_print_events_of_wire_format_0_and_1() {
    let server = NatsServer::start();
    let wire = store(&server, "WIRE", "wire").await;
    let js = jetstream::new(wire.client().clone());
    let (_, tail) = start_tail(&server, &["--stream", "WIRE", "--count", "3"]).await;

    // Event 1 in format 0, event 2 appended by the runtime (format 1) after it, and a message
    // that is no event.
    publish_format_0(&js, 1, 13).await;
    let mut current = deposit(13);
    current.id = Uuid::from_u128(0x0190a1b2_0000_7000_8000_00000000beef);
    current.timestamp = UNIX_EPOCH + Duration::from_nanos(1_764_000_001_000_000_007);
    current.causation_id = Some("cause-2".into());
    current.headers.insert("tenant".into(), "globex".into());
    wire.append(
        &key("account", "a1"),
        ExpectedVersion::Exact(1),
        Some("cmd-2"),
        vec![current],
    )
    .await
    .expect("the runtime appends after a format-0 event");
    js.publish("wire.notes", r#"{"note":"hi"}"#.into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    let format_0_metadata = "  timestamp:    2025-11-24T16:00:00.123456789Z\n  \
        correlation:  legacy-corr\n  causation:    legacy-cause\n  command id:   legacy-cmd\n  \
        header tenant: acme\n  payload (json):\n    {\n      \"amount\": 13\n    }\n";
    let format_1_id = "0190a1b2-0000-7000-8000-00000000beef";
    let format_1_metadata = "  timestamp:    2025-11-24T16:00:01.000000007Z\n  \
        correlation:  corr-1\n  causation:    cause-2\n  command id:   cmd-2\n  \
        header tenant: globex\n  payload (json):\n    {\n      \"amount\": 13\n    }\n";

    let out = finish_tail(tail).await;
    let first = position_of(&out, "#1 wire.account.a1.deposited at ");
    let second = position_of(&out, "#2 wire.account.a1.deposited at ");
    let third = position_of(&out, "#3 wire.notes at ");
    assert!(first < second && second < third, "{out}");
    position_of(
        &out[first..second],
        &format!(
            "\n  account/a1 version 1: deposited v1\n  event id:     {FORMAT_0_ID}\n  \
             wire format:  0\n{format_0_metadata}"
        ),
    );
    position_of(
        &out[second..third],
        &format!(
            "\n  account/a1 version 2: deposited v1\n  event id:     {format_1_id}\n  \
             wire format:  1\n{format_1_metadata}"
        ),
    );
    position_of(
        &out[third..],
        "\n  note: not a jetsource event: the subject is not <prefix>.<type>.<id>.<event name>\n  \
         payload (json):\n    {\n      \"note\": \"hi\"\n    }\n",
    );

    // `events` reads through the runtime's store, which reads both formats.
    let out = jetsource_at(&server, &["events", "--stream", "WIRE", "account", "a1"])
        .await
        .success();
    assert_eq!(
        event_headlines(&out),
        ["version 1: deposited v1", "version 2: deposited v1"],
        "{out}"
    );
    position_of(
        &out,
        &format!(
            "version 1: deposited v1\n  event id:     {FORMAT_0_ID}\n  position:     1\n\
             {format_0_metadata}"
        ),
    );
    position_of(
        &out,
        &format!(
            "version 2: deposited v1\n  event id:     {format_1_id}\n  position:     2\n\
             {format_1_metadata}"
        ),
    );

    // A message on an event subject without jetsource headers: dead-lettered as corrupt.
    js.publish("wire.account.a9.deposited", r#"{"amount":1}"#.into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    // Dead letters keep the original headers: both formats are read from them. (NATS control
    // headers are not kept, so the format-1 command id, inside `Nats-Msg-Id`, is not shown.)
    let running = subscriber::start(
        &wire,
        Arc::new(Picky::default()),
        SubscriberConfig::new("wire"),
    )
    .await
    .expect("start the subscriber");
    wait_for("three dead letters", || running.stats().dead_lettered == 3).await;
    let out = jetsource_at(
        &server,
        &[
            "dead-letters",
            "list",
            "--stream",
            "WIRE",
            "--durable",
            "wire",
        ],
    )
    .await
    .success();
    assert!(
        out.starts_with("3 dead letters for subscriber wire on stream WIRE\n"),
        "{out}"
    );
    // The headlines name each letter's event, in either format; the corrupt one has none.
    let mut headlines: Vec<&str> = out
        .lines()
        .filter(|line| line.starts_with('#'))
        .filter_map(|line| line.split_once(' ').map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once("  at ").map(|(fields, _)| fields))
        .collect();
    headlines.sort_unstable();
    assert_eq!(
        headlines,
        [
            "corrupt  subject=wire.account.a9.deposited  position=4  deliveries=1".to_owned(),
            format!(
                "permanent  subject=wire.account.a1.deposited  position=1  deliveries=1  \
                 event=deposited  version=1  event_id={FORMAT_0_ID}"
            ),
            format!(
                "permanent  subject=wire.account.a1.deposited  position=2  deliveries=1  \
                 event=deposited  version=1  event_id={format_1_id}"
            ),
        ],
        "{out}"
    );
    position_of(
        &out,
        &format!(
            "  error: unlucky amount\n  account/a1 version 1: deposited v1\n  event id:     \
             {FORMAT_0_ID}\n  wire format:  0\n{format_0_metadata}"
        ),
    );
    position_of(
        &out,
        &format!(
            "  error: unlucky amount\n  account/a1 version 2: deposited v1\n  event id:     \
             {format_1_id}\n  wire format:  1\n{format_1_metadata}"
        ),
    );
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_malformed_server_url_gives_a_short_error() {
    let free_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("nats://127.0.0.1:{free_port}");
    let err = jetsource(&["--server", &url, "streams"]).await.failure();
    assert!(
        err.starts_with(&format!("error: cannot connect to NATS at {url}: ")),
        "{err}"
    );

    let err = jetsource(&["--server", "nats://host:port:x", "streams"])
        .await
        .failure();
    assert!(
        err.starts_with("error: invalid server URL nats://host:port:x: "),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_give_an_auth_error_that_never_shows_the_secret() {
    let server = NatsServer::with_auth(Auth::UserPassword {
        user: "ops".into(),
        password: "right-pw-4711".into(),
    });
    let url = server.url();
    let err = jetsource(&[
        "--server",
        &url,
        "--user",
        "ops",
        "--password",
        "wrong-pw-0815",
        "streams",
    ])
    .await
    .failure();
    assert_eq!(
        err,
        format!(
            "error: the NATS server at {url} refused the password of user \"ops\": \
             authorization failed"
        )
    );

    // Credentials inside the URL are neither echoed nor kept in the printed address.
    let with_userinfo = url.replace("nats://", "nats://ops:wrong-pw-0815@");
    let run = jetsource(&["--server", &with_userinfo, "streams"]).await;
    assert!(!run.stderr.contains("wrong-pw-0815"), "{}", run.stderr);
    assert!(run.failure().contains("refused"));

    // From the environment, the right password works.
    let run = tokio::task::spawn_blocking(move || {
        Run::from_output(
            binary()
                .args(["--server", &url, "--user", "ops", "streams"])
                .env("NATS_PASSWORD", "right-pw-4711")
                .output()
                .expect("run"),
        )
    })
    .await
    .expect("runner thread");
    assert_eq!(run.success(), "no streams\n");

    let server = NatsServer::with_auth(Auth::Token("right-token-1".into()));
    let run = jetsource_at(&server, &["--token", "wrong-token-2", "streams"]).await;
    assert!(!run.stderr.contains("wrong-token-2"), "{}", run.stderr);
    assert_eq!(
        run.failure(),
        format!(
            "error: the NATS server at {} refused the token: authorization failed",
            server.url()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_file_authenticates_and_never_shows_the_seed() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("a seed");
    let other_seed = nkeys::KeyPair::new_user().seed().expect("a seed");
    let server = NatsServer::with_auth(Auth::NKey {
        public_key: user.public_key(),
    });
    let right = TempFile::with("user.nk", format!("{seed}\n").as_bytes());
    let out = jetsource_at(&server, &["--nkey", right.path(), "streams"])
        .await
        .success();
    assert_eq!(out, "no streams\n");

    let wrong = TempFile::with("other.nk", other_seed.as_bytes());
    let run = jetsource_at(&server, &["--nkey", wrong.path(), "streams"]).await;
    assert!(!run.stderr.contains(&other_seed), "{}", run.stderr);
    assert_eq!(
        run.failure(),
        format!(
            "error: the NATS server at {} refused the nkey: authorization failed",
            server.url()
        )
    );

    // Not a seed at all: it cannot sign the server's challenge.
    let garbage_seed = format!("{}garbage", &seed[..20]);
    let garbage = TempFile::with("garbage.nk", garbage_seed.as_bytes());
    let run = jetsource_at(&server, &["--nkey", garbage.path(), "streams"]).await;
    assert!(!run.stderr.contains(&garbage_seed), "{}", run.stderr);
    let err = run.failure();
    assert!(
        err.starts_with(&format!(
            "error: cannot connect to NATS at {}: ",
            server.url()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn every_command_has_help() {
    for (args, flag) in [
        (&["--help"][..], "stream-config"),
        (&["streams", "--help"], "--server"),
        (&["events", "--help"], "--from-version"),
        (&["tail", "--help"], "--count"),
        (&["events", "--help"], "--descriptor-set <FILE>"),
        (&["tail", "--help"], "--message <EVENT=MESSAGE>"),
        (&["dead-letters", "--help"], "redrive"),
        (&["dead-letters", "list", "--help"], "--durable"),
        (&["dead-letters", "redrive", "--help"], "--subject-filter"),
        (&["stream-config", "--help"], "create"),
        (&["stream-config", "show", "--help"], "--duplicate-window"),
        (&["stream-config", "create", "--help"], "--update-existing"),
        (&["events", "--help"], "--database <URL>"),
        (&["relay-status", "--help"], "--schema <NAME>"),
        (&["--help"], "relay-status"),
        (&["--help"], "quarantine"),
        (&["quarantine", "--help"], "--reason <REASON>"),
    ] {
        let out = jetsource(args).await.success();
        assert!(
            out.contains(flag),
            "`{}` lacks {flag}:\n{out}",
            args.join(" ")
        );
    }
}

/// A field of a proto3 message.
fn proto_field(name: &str, number: i32, kind: Type) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

/// A serialized `FileDescriptorSet`, as `protoc --descriptor_set_out` writes it, of
/// `shop.proto`: `package shop; message OrderPlaced { int64 total = 1; string currency = 2; }
/// message OrderShipped { string tracking = 1; }`.
fn shop_descriptor_set() -> Vec<u8> {
    let message = |name: &str, field: Vec<FieldDescriptorProto>| DescriptorProto {
        name: Some(name.into()),
        field,
        ..Default::default()
    };
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("shop.proto".into()),
            package: Some("shop".into()),
            syntax: Some("proto3".into()),
            message_type: vec![
                message(
                    "OrderPlaced",
                    vec![
                        proto_field("total", 1, Type::Int64),
                        proto_field("currency", 2, Type::String),
                    ],
                ),
                message(
                    "OrderShipped",
                    vec![proto_field("tracking", 1, Type::String)],
                ),
            ],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn with(name: &str, contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("jetsource-cli-{}-{name}", Uuid::now_v7()));
        std::fs::write(&path, contents).expect("write a temporary file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `OrderPlaced { total: 1250, currency: "EUR" }` as the runtime encodes it, under `name`.
fn order_placed_as(name: &'static str) -> NewEvent {
    let encoded = Event::encode(&OrderPlaced {
        total: 1250,
        currency: "EUR".into(),
    })
    .expect("encode");
    assert_eq!(encoded.codec, Codec::Protobuf);
    let mut new = event(name, encoded.codec, &encoded.payload);
    new.version = encoded.version;
    new
}

const ORDER_PLACED_HEX: &str = "    08 e2 09 12 03 45 55 52\n";
const ORDER_PLACED_JSON: &str =
    "  payload (protobuf, shop.OrderPlaced):\n    {\n      \"total\": 1250,\n      \"currency\": \"EUR\"\n    }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_prints_protobuf_payloads_as_json_with_a_descriptor_set() {
    let server = NatsServer::start();
    let shop = store(&server, "SHOP", "shop").await;
    let order = key("order", "o-1");
    append(
        &shop,
        &order,
        vec![
            order_placed_as(OrderPlaced::NAME),
            // The same payload under a name no message type is named like.
            order_placed_as("placed"),
            event("commented", Codec::Json, br#"{"by":"ada"}"#),
        ],
    )
    .await;
    let descriptors = TempFile::with("shop.binpb", &shop_descriptor_set());
    let events = |extra: &[&str]| {
        let mut args = vec!["events", "--stream", "SHOP", "order", "o-1"];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let server = &server;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            jetsource_at(server, &args).await
        }
    };
    let sections = |out: &str| -> (String, String, String) {
        let v1 = position_of(out, "version 1: order_placed v1\n");
        let v2 = position_of(out, "version 2: placed v1\n");
        let v3 = position_of(out, "version 3: commented v1\n");
        (
            out[v1..v2].to_owned(),
            out[v2..v3].to_owned(),
            out[v3..].to_owned(),
        )
    };
    let json_comment = "  payload (json):\n    {\n      \"by\": \"ada\"\n    }\n";

    // Without a descriptor set: bytes, as before.
    let out = run(events(&[])).await.success();
    let (placed, renamed, comment) = sections(&out);
    position_of(&placed, "  payload (protobuf, 8 bytes):\n");
    position_of(&placed, ORDER_PLACED_HEX);
    position_of(&renamed, ORDER_PLACED_HEX);
    position_of(&comment, json_comment);
    assert!(!out.contains("note:"), "{out}");

    // With it: order_placed by the naming rule; `placed` has no type named like it.
    let out = run(events(&["--descriptor-set", descriptors.path()]))
        .await
        .success();
    let (placed, renamed, comment) = sections(&out);
    position_of(&placed, ORDER_PLACED_JSON);
    assert!(!placed.contains("note:"), "{placed}");
    position_of(
        &renamed,
        "  note: not decoded: no message type in the descriptor set is named like event placed; \
         map one with --message placed=<package.Message>\n  payload (protobuf, 8 bytes):\n",
    );
    position_of(&renamed, ORDER_PLACED_HEX);
    position_of(&comment, json_comment);

    // An explicit mapping decodes `placed` too.
    let out = run(events(&[
        "--descriptor-set",
        descriptors.path(),
        "--message",
        "placed=shop.OrderPlaced",
    ]))
    .await
    .success();
    let (placed, renamed, _) = sections(&out);
    position_of(&placed, ORDER_PLACED_JSON);
    position_of(&renamed, ORDER_PLACED_JSON);

    // A wrong mapping: a one-line note and the bytes, and the command goes on.
    let out = run(events(&[
        "--descriptor-set",
        descriptors.path(),
        "--message",
        "order_placed=shop.OrderShipped",
    ]))
    .await
    .success();
    let (placed, _, comment) = sections(&out);
    let note = &placed[position_of(&placed, "  note: ")..];
    let note = note.lines().next().unwrap_or_default();
    assert!(
        note.starts_with(
            "  note: the payload does not decode as shop.OrderShipped (--message \
             order_placed=shop.OrderShipped): "
        ),
        "{placed}"
    );
    position_of(
        &placed,
        &format!("{note}\n  payload (protobuf, 8 bytes):\n{ORDER_PLACED_HEX}"),
    );
    position_of(&comment, json_comment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_descriptor_sets_and_mappings_are_refused_in_one_line() {
    let descriptors = TempFile::with("shop.binpb", &shop_descriptor_set());
    let garbage = TempFile::with("garbage.binpb", b"\xff\xff\xff not a descriptor set");
    // Checked before connecting: no server is needed (nothing listens on this port).
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let base = [
        "--server",
        url.as_str(),
        "events",
        "--stream",
        "SHOP",
        "order",
        "o-1",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        jetsource(&args).await
    };

    let missing = std::env::temp_dir().join(format!("jetsource-cli-{}-absent", Uuid::now_v7()));
    let missing = missing.to_str().expect("UTF-8 path");
    let err = run(with(&["--descriptor-set", missing])).await.failure();
    assert!(
        err.starts_with(&format!(
            "error: descriptor set {missing}: cannot read it: "
        )),
        "{err}"
    );

    let err = run(with(&["--descriptor-set", garbage.path()]))
        .await
        .failure();
    assert!(
        err.contains("not a usable serialized google.protobuf.FileDescriptorSet"),
        "{err}"
    );
    assert!(err.contains("--descriptor_set_out"), "{err}");

    let err = run(with(&[
        "--descriptor-set",
        descriptors.path(),
        "--message",
        "order_placed=OrderPlaced",
    ]))
    .await
    .failure();
    assert!(
        err.contains(
            "it has no message type OrderPlaced (from --message order_placed=OrderPlaced)"
        ),
        "{err}"
    );

    // clap refuses malformed flags with exit code 2.
    let run2 = run(with(&["--message", "order_placed=shop.OrderPlaced"])).await;
    assert_eq!(run2.code, Some(2), "{}", run2.stderr);
    assert!(run2.stderr.contains("--descriptor-set"), "{}", run2.stderr);
    let run2 = run(with(&[
        "--descriptor-set",
        descriptors.path(),
        "--message",
        "order_placed",
    ]))
    .await;
    assert_eq!(run2.code, Some(2), "{}", run2.stderr);
    assert!(
        run2.stderr.contains("<event_name>=<package.Message>"),
        "{}",
        run2.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_decodes_protobuf_by_the_codec_header() {
    let server = NatsServer::start();
    let shop = store(&server, "SHOPTAIL", "shoptail").await;
    let order = key("order", "o-1");
    let descriptors = TempFile::with("shop.binpb", &shop_descriptor_set());
    let (_, child) = start_tail(
        &server,
        &[
            "--stream",
            "SHOPTAIL",
            "--count",
            "3",
            "--descriptor-set",
            descriptors.path(),
        ],
    )
    .await;
    append(&shop, &order, vec![order_placed_as(OrderPlaced::NAME)]).await;
    // Protobuf bytes that happen to parse as JSON (`12`) are still shown as Protobuf.
    append(
        &shop,
        &order,
        vec![event("audited", Codec::Protobuf, b"12")],
    )
    .await;
    append(&shop, &order, vec![deposit(7)]).await;
    let out = finish_tail(child).await;

    let first = position_of(&out, "#1 shoptail.order.o-1.order_placed at ");
    let second = position_of(&out, "#2 shoptail.order.o-1.audited at ");
    let third = position_of(&out, "#3 shoptail.order.o-1.deposited at ");
    assert!(first < second && second < third, "{out}");
    position_of(
        &out[first..second],
        "\n  order/o-1 version 1: order_placed v1\n  event id:     ",
    );
    position_of(&out[first..second], "\n  wire format:  1\n");
    position_of(&out[first..second], ORDER_PLACED_JSON);
    position_of(
        &out[second..third],
        "  note: not decoded: no message type in the descriptor set is named like event \
         audited; map one with --message audited=<package.Message>\n  payload (protobuf, 2 \
         bytes):\n    31 32\n",
    );
    position_of(
        &out[third..],
        "  payload (json):\n    {\n      \"amount\": 7\n    }\n",
    );
}
