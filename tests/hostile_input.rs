//! Hostile and broken input: every way a stored event, an id, a name or a payload can be wrong
//! ends in a typed error (never a panic), and input that could address other subjects or smuggle
//! headers is refused before a single message leaves the client.
//!
//! The decode properties are this suite's fuzzing: they run 256 cases each in CI (about a second)
//! and as many as `PROPTEST_CASES` asks for in a long run, for example
//! `PROPTEST_CASES=200000 cargo test --all-features --release --test hostile_input decode`.
//! `RELIABILITY.md` explains why this, and not cargo-fuzz, is the fuzz run.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use jetsource::testing::nats_server::{NatsServer, ServerOptions};
use jetsource::{
    AggregateId, AggregateKey, Codec, DecodeError, ErrorChain, Event, EventSet, EventStore,
    ExpectedVersion, InvalidId, JetStreamError, JetStreamStore, RawEvent, Snapshot, StoreError,
    MAX_ID_BYTES,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde::{Deserialize, Serialize};
use support::{event, key};

// ---------------------------------------------------------------------------------------------
// The domain: a JSON lineage of two versions, a Protobuf event, and a retired name.

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "opened", version = 1)]
struct OpenedV1 {
    owner: String,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "opened", version = 2, previous = OpenedV1)]
struct Opened {
    owner: String,
    limit: u64,
}

impl From<OpenedV1> for Opened {
    fn from(v1: OpenedV1) -> Self {
        Opened {
            owner: v1.owner,
            limit: 0,
        }
    }
}

#[derive(Event, Clone, PartialEq, prost::Message)]
#[event(name = "deposited", version = 1, codec = "protobuf")]
struct Deposited {
    #[prost(uint64, tag = "1")]
    cents: u64,
    #[prost(string, tag = "2")]
    reference: String,
}

#[derive(EventSet, Debug, PartialEq)]
#[event_set(retired("note_added"))]
enum AccountEvent {
    Opened(Opened),
    Deposited(Deposited),
}

/// What decoding `(name, version, codec)` must give, whatever the payload bytes are.
#[derive(Debug, PartialEq)]
enum Expected {
    /// A retired name: dropped.
    Dropped,
    UnknownEvent,
    UnknownVersion,
    FutureVersion {
        latest: u32,
    },
    CodecMismatch {
        expected: Codec,
    },
    /// The metadata fits: the payload decides (a value, or `Malformed` for this codec).
    ValueOrMalformed,
}

/// The oracle, written from the domain above rather than from the derive's code.
fn expected(name: &str, version: u32, codec: Codec) -> Expected {
    let (latest, codec_of_type) = match name {
        "note_added" => return Expected::Dropped,
        "opened" => (2, Codec::Json),
        "deposited" => (1, Codec::Protobuf),
        _ => return Expected::UnknownEvent,
    };
    if version > latest {
        Expected::FutureVersion { latest }
    } else if version == 0 {
        Expected::UnknownVersion
    } else if codec != codec_of_type {
        Expected::CodecMismatch {
            expected: codec_of_type,
        }
    } else {
        Expected::ValueOrMalformed
    }
}

fn decode(
    name: &str,
    version: u32,
    codec: Codec,
    payload: &[u8],
) -> Result<Option<AccountEvent>, DecodeError> {
    AccountEvent::decode(RawEvent {
        name,
        version,
        codec,
        payload,
    })
}

fn any_codec() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::Json), Just(Codec::Protobuf)]
}

/// Known, retired, near-miss and random names.
fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("opened".to_owned()),
        Just("deposited".to_owned()),
        Just("note_added".to_owned()),
        Just("Opened".to_owned()),
        Just("opened ".to_owned()),
        Just("deposited\u{0}".to_owned()),
        Just(String::new()),
        ".{0,40}",
    ]
}

/// Small versions (the interesting ones) and any u32.
fn any_version() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..5, any::<u32>()]
}

/// Random bytes, and byte strings that look almost like the real encodings.
fn any_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        "\\{\"owner\":\".{0,8}\",\"limit\":-?[0-9]{1,22}\\}".prop_map(String::into_bytes),
        "\\{\"owner\":[0-9nul\\[\\]]{0,6}\\}".prop_map(String::into_bytes),
        Just(br#"{"owner":"ada","limit":1}"#.to_vec()),
        Just(vec![0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i']),
        Just(vec![0x12, 0x02, 0xff, 0xfe]),
    ]
}

proptest! {
    #![proptest_config(Config { failure_persistence: None, ..Config::default() })]

    /// Any name, version, codec and payload: a value, `None` for a retired name, or exactly the
    /// typed error the metadata calls for. A panic fails the property too.
    #[test]
    fn decode_of_random_input_gives_the_typed_error_its_metadata_calls_for(
        name in any_name(),
        version in any_version(),
        codec in any_codec(),
        payload in any_payload(),
    ) {
        let result = decode(&name, version, codec, &payload);
        match (expected(&name, version, codec), result) {
            (Expected::Dropped, Ok(None)) => {}
            (Expected::UnknownEvent, Err(DecodeError::UnknownEvent { name: n, version: v })) => {
                prop_assert_eq!((n, v), (name, version));
            }
            (Expected::UnknownVersion, Err(DecodeError::UnknownVersion { name: n, version: v })) => {
                prop_assert_eq!((n, v), (name, version));
            }
            (
                Expected::FutureVersion { latest },
                Err(DecodeError::FutureVersion { version: v, latest: l, .. }),
            ) => {
                prop_assert_eq!((v, l), (version, latest));
            }
            (
                Expected::CodecMismatch { expected },
                Err(DecodeError::CodecMismatch { expected: e, found, .. }),
            ) => {
                prop_assert_eq!((e, found), (expected, codec));
            }
            (Expected::ValueOrMalformed, Ok(Some(_))) => {}
            (Expected::ValueOrMalformed, Err(DecodeError::Malformed { codec: c, version: v, .. })) => {
                prop_assert_eq!((c, v), (codec, version));
            }
            (want, got) => prop_assert!(false, "expected {:?}, got {:?}", want, got),
        }
    }

    /// A Protobuf payload cut anywhere but at a field boundary is `Malformed`, never a value
    /// with silently missing data.
    #[test]
    fn decode_of_truncated_protobuf_is_malformed(
        cents in 1u64..,
        reference in ".{1,40}",
        cut_fraction in 0.0f64..1.0,
    ) {
        let full = prost::Message::encode_to_vec(&Deposited { cents, reference });
        // Field 1 (a varint) ends where field 2 begins; those two cuts, and 0, are valid.
        let cents_field_len = 1 + prost::encoding::encoded_len_varint(cents);
        let cut = ((full.len() as f64) * cut_fraction) as usize;
        let result = decode("deposited", 1, Codec::Protobuf, &full[..cut]);
        if cut == 0 || cut == cents_field_len {
            prop_assert!(matches!(result, Ok(Some(AccountEvent::Deposited(_)))), "{:?}", result);
        } else {
            prop_assert!(
                matches!(result, Err(DecodeError::Malformed { codec: Codec::Protobuf, version: 1, .. })),
                "cut at {} of {}: {:?}", cut, full.len(), result
            );
        }
    }

    /// Valid bytes of one codec labelled as the other are a `CodecMismatch`, whichever way.
    #[test]
    fn decode_with_the_wrong_codec_is_a_codec_mismatch(
        owner in ".{0,20}",
        limit in any::<u64>(),
        cents in any::<u64>(),
    ) {
        let json = Opened { owner, limit }.encode().unwrap();
        let result = decode(json.name, json.version, Codec::Protobuf, &json.payload);
        prop_assert!(
            matches!(result, Err(DecodeError::CodecMismatch { expected: Codec::Json, found: Codec::Protobuf, .. })),
            "{:?}", result
        );
        let proto = Deposited { cents, reference: String::new() }.encode().unwrap();
        let result = decode(proto.name, proto.version, Codec::Json, &proto.payload);
        prop_assert!(
            matches!(result, Err(DecodeError::CodecMismatch { expected: Codec::Protobuf, found: Codec::Json, .. })),
            "{:?}", result
        );
    }

    /// The id gate agrees with its rule on any string: empty, too long, or containing `.`, `*`,
    /// `>`, whitespace or a control character is refused with the matching variant; anything
    /// else is one subject token and accepted.
    #[test]
    fn aggregate_ids_are_accepted_exactly_when_they_are_one_subject_token(
        id in prop_oneof![
            ".{0,20}",
            "[a-z]{0,5}[.*> \t\r\n\u{0}\u{7f}\u{85}\u{a0}\u{2028}][a-z]{0,5}",
            "[a-z0-9-]{250,260}",
        ],
    ) {
        let forbidden = id
            .chars()
            .find(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control());
        match (AggregateId::new(id.clone()), forbidden) {
            (Err(InvalidId::Empty), _) => prop_assert!(id.is_empty()),
            (Err(InvalidId::TooLong { len }), _) => prop_assert!(len == id.len() && len > MAX_ID_BYTES),
            (Err(InvalidId::ForbiddenChar { found, .. }), Some(first)) => {
                prop_assert!(id.len() <= MAX_ID_BYTES);
                prop_assert_eq!(found, first);
            }
            (Err(InvalidId::NotAscii { found, .. }), None) => {
                prop_assert_eq!(Some(found), id.chars().find(|c| !c.is_ascii_graphic()));
            }
            (Ok(accepted), None) => {
                prop_assert!(!id.is_empty() && id.len() <= MAX_ID_BYTES);
                prop_assert!(id.chars().all(|c| c.is_ascii_graphic()), "{:?} accepted", id);
                prop_assert_eq!(accepted.as_str(), id.as_str());
            }
            (result, forbidden) => prop_assert!(false, "{:?} -> {:?} (forbidden {:?})", id, result, forbidden),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ids and names that try to reach other subjects.

/// Strings that, as a subject token, would address other subjects, end the subject on the wire,
/// or hide what they are.
const INJECTIONS: &[&str] = &[
    "a.b",
    "acc.>",
    "*",
    ">",
    "a b",
    "a\tb",
    "a\r\nPUB x 1",
    "a\u{0}b",
    "a\u{7f}",
    "\u{2003}",
    "a\u{85}b",
];

#[test]
fn hostile_ids_are_refused_with_a_typed_reason() {
    for bad in INJECTIONS {
        let result = AggregateId::new(*bad);
        assert!(
            matches!(result, Err(InvalidId::ForbiddenChar { .. })),
            "{bad:?} -> {result:?}"
        );
    }
    assert_eq!(AggregateId::new(""), Err(InvalidId::Empty));
    let ten_kb = "x".repeat(10 * 1024);
    assert_eq!(
        AggregateId::new(ten_kb),
        Err(InvalidId::TooLong { len: 10 * 1024 })
    );
    // The error quotes at most 64 characters of the id, so a huge id cannot flood the logs.
    let long_bad = format!("{}.", "y".repeat(200));
    let message = AggregateId::new(long_bad).unwrap_err().to_string();
    assert!(message.len() < 200, "{message}");
}

fn leak(s: String) -> &'static str {
    // Aggregate types and event names are `&'static str` (they come from derives); the few
    // hostile ones built here live until the test process ends.
    Box::leak(s.into_boxed_str())
}

/// Messages the client has sent since it connected.
fn sent(store: &JetStreamStore) -> u64 {
    store
        .client()
        .statistics()
        .out_messages
        .load(Ordering::SeqCst)
}

async fn stream_state(store: &JetStreamStore) -> (u64, u64) {
    let js = async_nats::jetstream::new(store.client().clone());
    let mut stream = js.get_stream(&store.config().name).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    (state.messages, state.last_sequence)
}

fn is_invalid_input(error: &StoreError) -> bool {
    matches!(error, StoreError::InvalidInput(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_type_names_event_names_and_metadata_never_reach_the_server() {
    let server = NatsServer::start();
    let store = support::store(&server, "HOSTILE").await;
    let good_key = key("account", "acc-1");
    let before = stream_state(&store).await;

    let ten_kb = "t".repeat(10 * 1024);
    let mut hostile_types: Vec<String> = INJECTIONS.iter().map(|s| s.to_string()).collect();
    hostile_types.extend([String::new(), ten_kb.clone()]);

    for bad in &hostile_types {
        let bad_type = leak(bad.clone());
        let bad_key = AggregateKey::new(bad_type, AggregateId::new("acc-1").unwrap());
        let sent_before = sent(&store);
        let append = store
            .append(
                &bad_key,
                ExpectedVersion::Any,
                None,
                vec![event("deposited", "{}")],
            )
            .await
            .unwrap_err();
        assert!(is_invalid_input(&append), "type {bad:?}: {append:?}");
        let load = store.load(&bad_key, 1).await.unwrap_err();
        assert!(is_invalid_input(&load), "type {bad:?}: {load:?}");
        assert_eq!(sent(&store), sent_before, "type {bad:?} reached the wire");

        // The same strings as event names.
        let append = store
            .append(
                &good_key,
                ExpectedVersion::Any,
                None,
                vec![event(bad_type, "{}")],
            )
            .await
            .unwrap_err();
        assert!(is_invalid_input(&append), "event name {bad:?}: {append:?}");
        assert_eq!(
            sent(&store),
            sent_before,
            "event name {bad:?} reached the wire"
        );
    }

    // Metadata that would add or end NATS headers (header injection).
    let crlf = "x\r\nNats-Expected-Last-Subject-Sequence: 0";
    let mut bad_correlation = event("deposited", "{}");
    bad_correlation.correlation_id = crlf.into();
    let mut bad_causation = event("deposited", "{}");
    bad_causation.causation_id = Some(crlf.into());
    let mut bad_header_value = event("deposited", "{}");
    bad_header_value
        .headers
        .insert("tenant".into(), crlf.into());
    let mut bad_header_name = event("deposited", "{}");
    bad_header_name
        .headers
        .insert("Nats-Msg-Id: x".into(), "y".into());
    let sent_before = sent(&store);
    for (what, bad) in [
        ("correlation id", bad_correlation),
        ("causation id", bad_causation),
        ("header value", bad_header_value),
        ("header name", bad_header_name),
    ] {
        let error = store
            .append(&good_key, ExpectedVersion::Any, None, vec![bad])
            .await
            .unwrap_err();
        assert!(is_invalid_input(&error), "{what}: {error:?}");
    }
    let error = store
        .append(
            &good_key,
            ExpectedVersion::Any,
            Some(crlf),
            vec![event("deposited", "{}")],
        )
        .await
        .unwrap_err();
    assert!(is_invalid_input(&error), "command id: {error:?}");
    assert_eq!(
        sent(&store),
        sent_before,
        "hostile metadata reached the wire"
    );

    // Nothing was stored, and the store still works.
    assert_eq!(stream_state(&store).await, before);
    store
        .append(
            &good_key,
            ExpectedVersion::Exact(0),
            None,
            vec![event("deposited", "{}")],
        )
        .await
        .unwrap();
    assert_eq!(stream_state(&store).await.0, before.0 + 1);
}

/// Characters that look like `.`, `*`, `>` or nothing at all. NATS splits subjects on the ASCII
/// bytes only, so these cannot widen a subject; an id containing one must either be refused or
/// stay one aggregate of its own on the server.
const CONFUSABLES: &[&str] = &[
    "acc\u{FF0E}1", // fullwidth full stop
    "acc\u{2024}1", // one dot leader
    "acc\u{FE52}1", // small full stop
    "\u{FF0A}",     // fullwidth asterisk
    "\u{FF1E}",     // fullwidth greater-than
    "acc\u{200B}1", // zero-width space
    "acc\u{202E}1", // right-to-left override
    "acc\u{FEFF}1", // zero-width no-break space
    "\u{0430}cc-1", // Cyrillic a
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confusable_ids_are_refused_before_reaching_the_server() {
    let server = NatsServer::start();
    let store = support::store(&server, "CONFUSE").await;
    // Neighbours an injection would reach: `acc`, `acc-1`, and `acc.1` split as `acc` + `1`.
    for neighbour in ["acc", "acc-1", "1"] {
        store
            .append(
                &key("account", neighbour),
                ExpectedVersion::Exact(0),
                None,
                vec![event("deposited", "{}")],
            )
            .await
            .unwrap();
    }
    let mut refused = 0;
    for id in CONFUSABLES {
        match AggregateId::new(*id) {
            Err(error) => {
                assert!(
                    matches!(
                        error,
                        InvalidId::ForbiddenChar { .. } | InvalidId::NotAscii { .. }
                    ),
                    "{id:?}: {error:?}"
                );
                refused += 1;
            }
            Ok(accepted) => {
                let k = AggregateKey::new("account", accepted);
                store
                    .append(
                        &k,
                        ExpectedVersion::Exact(0),
                        None,
                        vec![event("deposited", "{}")],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{id:?}: {e}"));
                let loaded = store.load(&k, 1).await.unwrap();
                assert_eq!(loaded.len(), 1, "{id:?} saw other aggregates' events");
                assert_eq!(loaded[0].aggregate_id, *id);
            }
        }
    }
    for neighbour in ["acc", "acc-1", "1"] {
        let events = store.load(&key("account", neighbour), 1).await.unwrap();
        assert_eq!(
            events.len(),
            1,
            "{neighbour} was reached by a confusable id"
        );
    }
    assert_eq!(refused, CONFUSABLES.len(), "every look-alike id is refused");
}

// ---------------------------------------------------------------------------------------------
// Broken metadata headers, written behind jetsource's back.

/// The headers jetsource writes, all valid.
fn valid_headers(sequence: u64) -> Vec<(&'static str, String)> {
    vec![
        ("Jetsource-Event-Id", uuid::Uuid::now_v7().to_string()),
        ("Jetsource-Event-Name", "deposited".into()),
        ("Jetsource-Event-Version", "1".into()),
        ("Jetsource-Codec", "protobuf".into()),
        ("Jetsource-Sequence", sequence.to_string()),
        ("Jetsource-Correlation-Id", "corr".into()),
        ("Jetsource-Timestamp", "1700000000000000000".into()),
    ]
}

/// A header value that cannot be what the header needs, whatever the header.
fn garbage_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("-1".to_owned()),
        Just("1.5".to_owned()),
        Just("99999999999999999999999".to_owned()),
        // Codec names are case-sensitive. (Surrounding spaces are no garbage: NATS trims
        // header values, so "json " is read back as "json".)
        Just("JSON".to_owned()),
        "[a-z]{1,12}".prop_filter("not a codec name", |s| s != "json" && s != "protobuf"),
    ]
}

#[derive(Debug, Clone)]
enum Breakage {
    Missing(usize),
    Garbage(usize, String),
}

#[test]
fn stored_events_with_missing_or_garbage_metadata_load_as_corrupt() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = NatsServer::start();
    let store = runtime.block_on(support::store(&server, "BROKEN"));
    // Headers whose values are free text (name, correlation id) cannot be garbage, only missing.
    let typed_headers = [0usize, 2, 3, 4, 6];
    let breakage = prop_oneof![
        (0..valid_headers(1).len()).prop_map(Breakage::Missing),
        (
            proptest::sample::select(typed_headers.to_vec()),
            garbage_value()
        )
            .prop_map(|(i, v)| Breakage::Garbage(i, v)),
    ];
    let cases = Config::default().cases.min(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    // `TestRunner::run` takes a `Fn`: the case counter (which names each aggregate) is a cell.
    let case = std::cell::Cell::new(0u32);
    runner
        .run(&breakage, |breakage| {
            case.set(case.get() + 1);
            let id = format!("broken-{}", case.get());
            runtime.block_on(async {
                // One good event, then the broken one on the aggregate's subject.
                let k = key("account", &id);
                store
                    .append(
                        &k,
                        ExpectedVersion::Exact(0),
                        None,
                        vec![event("deposited", "{}")],
                    )
                    .await
                    .unwrap();
                let mut headers = valid_headers(2);
                match &breakage {
                    Breakage::Missing(i) => {
                        headers.remove(*i);
                    }
                    Breakage::Garbage(i, value) => headers[*i].1 = value.clone(),
                }
                let mut map = HeaderMap::new();
                for (name, value) in headers {
                    map.insert(name, value.as_str());
                }
                let js = async_nats::jetstream::new(store.client().clone());
                let position = js
                    .publish_with_headers(
                        format!("broken.account.{id}.deposited"),
                        map,
                        vec![8, 1].into(),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap()
                    .sequence;
                // A fresh store: its load goes to the server, not to what the append cached.
                let cold = support::store(&server, "BROKEN").await;
                let error = cold.load(&k, 1).await.unwrap_err();
                prop_assert!(
                    matches!(&error, StoreError::Corrupt { position: p, .. } if *p == position),
                    "{:?}: {:?}",
                    breakage,
                    error
                );
                let error = cold.read_all(position, 10).await.unwrap_err();
                prop_assert!(
                    matches!(&error, StoreError::Corrupt { position: p, .. } if *p == position),
                    "{:?}: {:?}",
                    breakage,
                    error
                );
                Ok(())
            })
        })
        .unwrap();
    println!("broken-metadata cases: {}", case.get());
}

// ---------------------------------------------------------------------------------------------
// Payloads over the server's limit.

/// The server's limit in these tests: small, so the test moves little data.
const MAX_PAYLOAD: u32 = 16 * 1024;

fn is_max_payload_error(error: &StoreError) -> bool {
    // The store checks every event's size before it sends anything.
    matches!(error, StoreError::Backend(inner)
        if matches!(inner.downcast_ref::<JetStreamError>(),
            Some(JetStreamError::EventTooLarge { event, bytes, max })
                if event == "deposited" && *bytes > *max && *max == MAX_PAYLOAD as usize))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_the_servers_max_payload_are_refused_and_nothing_is_stored() {
    let server = NatsServer::start_with_options(ServerOptions::new().max_payload(MAX_PAYLOAD));
    let store = support::store(&server, "BIG").await;
    assert_eq!(
        store.client().server_info().max_payload,
        MAX_PAYLOAD as usize
    );
    let k = key("account", "big");
    let huge = format!("\"{}\"", "x".repeat(MAX_PAYLOAD as usize * 2));

    let sent_before = sent(&store);
    let error = store
        .append(
            &k,
            ExpectedVersion::Exact(0),
            None,
            vec![event("deposited", &huge)],
        )
        .await
        .unwrap_err();
    assert!(is_max_payload_error(&error), "{error:?}");
    assert!(
        ErrorChain(&error).to_string().contains("max payload"),
        "{error:?}"
    );

    // A batch whose middle event is too big: the batch never commits, nothing is stored.
    let batch = vec![
        event("deposited", "{}"),
        event("deposited", &huge),
        event("deposited", "{}"),
    ];
    let error = store
        .append(&k, ExpectedVersion::Exact(0), None, batch)
        .await
        .unwrap_err();
    assert!(is_max_payload_error(&error), "{error:?}");
    assert_eq!(
        sent(&store),
        sent_before,
        "an oversized event is refused before any message of its commit leaves"
    );
    assert_eq!(
        stream_state(&store).await.0,
        0,
        "an oversized append stored something"
    );

    // A snapshot too big for the server is refused with its own variant.
    let snapshot = Snapshot {
        schema_version: 1,
        version: 1,
        position: 1,
        state: vec![b'x'; MAX_PAYLOAD as usize * 2].into(),
    };
    let error = store.save_snapshot(&k, snapshot).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Backend(inner)
            if matches!(inner.downcast_ref::<JetStreamError>(), Some(JetStreamError::SnapshotTooLarge { .. }))),
        "{error:?}"
    );

    // The connection survived and the aggregate is untouched: the next append is version 1.
    let outcome = store
        .append(
            &k,
            ExpectedVersion::Exact(0),
            None,
            vec![event("deposited", "{}")],
        )
        .await
        .unwrap();
    assert_eq!(outcome.last_sequence, 1);
    // An abandoned batch could still commit late; give the server a moment to prove otherwise.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stream_state(&store).await.0, 1);
    assert_eq!(store.load(&k, 1).await.unwrap().len(), 1);
}
