//! Stored events of every older shape decode into today's types: upcast chains over JSON and
//! Protobuf (and across a codec change), custom upcast functions (infallible and fallible),
//! renamed and retired events, and each way decoding can fail.

use jetsource::{Codec, DecodeError, EncodedEvent, Event, EventSet, RawEvent};
use prost::Message;
use serde::{Deserialize, Serialize};

// A JSON lineage of three versions: v1 -> v2 by `From`, v2 -> v3 by a custom function.

// ANCHOR: json_chain
#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "opened", version = 1)]
struct OpenedV1 {
    owner: String,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "opened", version = 2, previous = OpenedV1)]
struct OpenedV2 {
    owner: String,
    currency: String,
}

impl From<OpenedV1> for OpenedV2 {
    fn from(v1: OpenedV1) -> Self {
        OpenedV2 {
            owner: v1.owner,
            currency: "EUR".to_owned(),
        }
    }
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "opened", version = 3, previous = OpenedV2, upcast = opened_with_limit)]
struct Opened {
    owner: String,
    currency: String,
    overdraft_limit: u64,
}

fn opened_with_limit(v2: OpenedV2) -> Opened {
    Opened {
        owner: v2.owner,
        currency: v2.currency,
        overdraft_limit: 100,
    }
}
// ANCHOR_END: json_chain

// A lineage whose upcasts can fail: v1 stored the limit as text, v2 as a number of euros
// (parsing can fail), v3 in cents (multiplying can overflow).

// ANCHOR: fallible_upcast
#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "limit_changed", version = 1)]
struct LimitChangedV1 {
    limit: String,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "limit_changed", version = 2, previous = LimitChangedV1, upcast = parse_limit)]
struct LimitChangedV2 {
    euros: u64,
}

/// Any error type will do: it becomes the source of `DecodeError::Upcast`.
fn parse_limit(v1: LimitChangedV1) -> Result<LimitChangedV2, std::num::ParseIntError> {
    Ok(LimitChangedV2 {
        euros: v1.limit.trim().parse()?,
    })
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "limit_changed", version = 3, previous = LimitChangedV2, upcast = in_cents)]
struct LimitChanged {
    cents: u64,
}

/// A `String` (or `&str`) is a message-only error.
fn in_cents(v2: LimitChangedV2) -> Result<LimitChanged, String> {
    match v2.euros.checked_mul(100) {
        Some(cents) => Ok(LimitChanged { cents }),
        None => Err(format!("{} euros do not fit in cents", v2.euros)),
    }
}
// ANCHOR_END: fallible_upcast

// A lineage that changes codec: JSON v1, then Protobuf v2 and v3.

// ANCHOR: codec_change
#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "deposited", version = 1)]
struct DepositedV1 {
    cents: u32,
}

#[derive(Event, Clone, PartialEq, prost::Message)]
#[event(name = "deposited", version = 2, previous = DepositedV1, codec = "protobuf")]
struct DepositedV2 {
    #[prost(uint64, tag = "1")]
    cents: u64,
}

impl From<DepositedV1> for DepositedV2 {
    fn from(v1: DepositedV1) -> Self {
        DepositedV2 {
            cents: u64::from(v1.cents),
        }
    }
}

#[derive(Event, Clone, PartialEq, prost::Message)]
#[event(name = "deposited", version = 3, previous = DepositedV2, codec = "protobuf")]
struct Deposited {
    #[prost(uint64, tag = "1")]
    cents: u64,
    #[prost(string, tag = "2")]
    reference: String,
}

impl From<DepositedV2> for Deposited {
    fn from(v2: DepositedV2) -> Self {
        Deposited {
            cents: v2.cents,
            reference: "unknown".to_owned(),
        }
    }
}
// ANCHOR_END: codec_change

// A renamed event: stored as "closure_requested" v1, written as "closed" v2 since.

// ANCHOR: renamed
#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "closure_requested", version = 1)]
struct ClosureRequested {
    reason: String,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "closed", version = 2, previous = ClosureRequested, renamed_from = "closure_requested")]
struct Closed {
    reason: String,
}

impl From<ClosureRequested> for Closed {
    fn from(old: ClosureRequested) -> Self {
        Closed { reason: old.reason }
    }
}
// ANCHOR_END: renamed

// ANCHOR: retired
#[derive(EventSet, Debug, PartialEq)]
#[event_set(retired("note_added"))]
enum AccountEvent {
    Opened(Opened),
    Deposited(Deposited),
    Closed(Closed),
}
// ANCHOR_END: retired

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

fn decode_event(name: &str, version: u32, codec: Codec, payload: &[u8]) -> AccountEvent {
    decode(name, version, codec, payload)
        .unwrap()
        .expect("not a retired event")
}

fn round_trip(event: AccountEvent) -> (EncodedEvent, AccountEvent) {
    let encoded = event.encode().unwrap();
    let decoded = decode_event(
        encoded.name,
        encoded.version,
        encoded.codec,
        &encoded.payload,
    );
    (encoded, decoded)
}

#[test]
fn json_v1_is_upcast_through_from_and_a_custom_function() {
    let event = decode_event("opened", 1, Codec::Json, br#"{"owner":"ada"}"#);
    assert_eq!(
        event,
        AccountEvent::Opened(Opened {
            owner: "ada".to_owned(),
            currency: "EUR".to_owned(),
            overdraft_limit: 100,
        })
    );
}

#[test]
fn json_v2_is_upcast_by_the_custom_function_only() {
    let event = decode_event(
        "opened",
        2,
        Codec::Json,
        br#"{"owner":"bob","currency":"USD"}"#,
    );
    assert_eq!(
        event,
        AccountEvent::Opened(Opened {
            owner: "bob".to_owned(),
            currency: "USD".to_owned(),
            overdraft_limit: 100,
        })
    );
}

#[test]
fn current_json_version_round_trips() {
    let opened = Opened {
        owner: "cy".to_owned(),
        currency: "CHF".to_owned(),
        overdraft_limit: 7,
    };
    let (encoded, decoded) = round_trip(AccountEvent::Opened(opened));
    assert_eq!(
        (encoded.name, encoded.version, encoded.codec),
        ("opened", 3, Codec::Json)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&encoded.payload).unwrap(),
        serde_json::json!({"owner": "cy", "currency": "CHF", "overdraft_limit": 7})
    );
    assert_eq!(decoded.event_name(), "opened");
    assert!(matches!(
        decoded,
        AccountEvent::Opened(Opened {
            overdraft_limit: 7,
            ..
        })
    ));
}

#[test]
fn protobuf_round_trips_and_upcasts_across_a_codec_change() {
    let deposited = Deposited {
        cents: 1_250,
        reference: "inv-7".to_owned(),
    };
    let (encoded, decoded) = round_trip(AccountEvent::Deposited(deposited.clone()));
    assert_eq!(
        (encoded.name, encoded.version, encoded.codec),
        ("deposited", 3, Codec::Protobuf)
    );
    assert_eq!(encoded.payload, deposited.encode_to_vec());
    assert_eq!(decoded, AccountEvent::Deposited(deposited));

    let v2 = DepositedV2 { cents: 99 }.encode_to_vec();
    assert_eq!(
        decode_event("deposited", 2, Codec::Protobuf, &v2),
        AccountEvent::Deposited(Deposited {
            cents: 99,
            reference: "unknown".to_owned(),
        })
    );

    let v1 = decode_event("deposited", 1, Codec::Json, br#"{"cents":42}"#);
    assert_eq!(
        v1,
        AccountEvent::Deposited(Deposited {
            cents: 42,
            reference: "unknown".to_owned(),
        })
    );
}

#[test]
fn renamed_event_decodes_under_its_old_name() {
    assert_eq!(AccountEvent::NAMES, ["opened", "deposited", "closed"]);
    assert!(Closed::is_known_name("closure_requested") && Closed::is_known_name("closed"));
    assert!(!Closed::is_known_name("opened"));
    let old = decode_event(
        "closure_requested",
        1,
        Codec::Json,
        br#"{"reason":"moved"}"#,
    );
    assert_eq!(
        old,
        AccountEvent::Closed(Closed {
            reason: "moved".to_owned()
        })
    );
    let (encoded, _) = round_trip(old);
    assert_eq!((encoded.name, encoded.version), ("closed", 2));
}

// ANCHOR: retired_test
#[test]
fn retired_event_is_dropped() {
    let dropped = decode("note_added", 3, Codec::Json, b"anything").unwrap();
    assert_eq!(dropped, None);
}
// ANCHOR_END: retired_test

// ANCHOR: future_version_test
#[test]
fn future_version_is_reported_with_the_latest_known() {
    let error = decode("opened", 4, Codec::Json, b"{}").unwrap_err();
    assert!(
        matches!(&error, DecodeError::FutureVersion { name, version: 4, latest: 3 } if name == "opened"),
        "{error:?}"
    );
    // The old name of a renamed event knows only the versions stored under it.
    let error = decode("closure_requested", 2, Codec::Json, b"{}").unwrap_err();
    assert!(
        matches!(
            &error,
            DecodeError::FutureVersion {
                version: 2,
                latest: 1,
                ..
            }
        ),
        "{error:?}"
    );
}
// ANCHOR_END: future_version_test

#[test]
fn unknown_version_and_unknown_name() {
    let error = decode("opened", 0, Codec::Json, b"{}").unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnknownVersion { name, version: 0 } if name == "opened"),
        "{error:?}"
    );
    // Version 1 of the renamed event was never stored under its new name.
    let error = decode("closed", 1, Codec::Json, br#"{"reason":"x"}"#).unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnknownVersion { name, version: 1 } if name == "closed"),
        "{error:?}"
    );
    let error = decode("withdrawn", 1, Codec::Json, b"{}").unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnknownEvent { name, version: 1 } if name == "withdrawn"),
        "{error:?}"
    );
}

#[test]
fn codec_mismatch_names_both_codecs() {
    let error = decode("deposited", 3, Codec::Json, br#"{"cents":1}"#).unwrap_err();
    assert!(
        matches!(
            &error,
            DecodeError::CodecMismatch {
                version: 3,
                expected: Codec::Protobuf,
                found: Codec::Json,
                ..
            }
        ),
        "{error:?}"
    );
    // v1 of the same lineage is JSON: the check is per stored version.
    let error = decode("deposited", 1, Codec::Protobuf, &[8, 1]).unwrap_err();
    assert!(
        matches!(
            &error,
            DecodeError::CodecMismatch {
                version: 1,
                expected: Codec::Json,
                found: Codec::Protobuf,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn malformed_payloads_are_reported_per_codec() {
    let error = decode("opened", 3, Codec::Json, br#"{"owner":1}"#).unwrap_err();
    assert!(
        matches!(&error, DecodeError::Malformed { name, version: 3, codec: Codec::Json, .. } if name == "opened"),
        "{error:?}"
    );
    // A field header promising more bytes than there are.
    let error = decode("deposited", 3, Codec::Protobuf, &[0x12, 0x05, b'a']).unwrap_err();
    assert!(
        matches!(
            &error,
            DecodeError::Malformed {
                version: 3,
                codec: Codec::Protobuf,
                ..
            }
        ),
        "{error:?}"
    );
}

fn decode_limit(version: u32, payload: &str) -> Result<LimitChanged, DecodeError> {
    LimitChanged::decode_stored(RawEvent {
        name: "limit_changed",
        version,
        codec: Codec::Json,
        payload: payload.as_bytes(),
    })
}

#[test]
fn fallible_upcasts_that_succeed_decode_through_the_chain() {
    assert_eq!(
        decode_limit(1, r#"{"limit":" 25 "}"#).unwrap(),
        LimitChanged { cents: 2_500 }
    );
    assert_eq!(
        decode_limit(2, r#"{"euros":7}"#).unwrap(),
        LimitChanged { cents: 700 }
    );
    assert_eq!(
        decode_limit(3, r#"{"cents":1}"#).unwrap(),
        LimitChanged { cents: 1 }
    );
}

// ANCHOR: failed_upcast_test
#[test]
fn a_failed_upcast_names_the_event_the_stored_version_and_the_step() {
    let error = decode_limit(1, r#"{"limit":"lots"}"#).unwrap_err();
    let DecodeError::Upcast {
        name,
        version,
        upcast_to,
        source,
    } = &error
    else {
        panic!("expected an upcast error: {error:?}");
    };
    assert_eq!(
        (name.as_str(), *version, *upcast_to),
        ("limit_changed", 1, 2)
    );
    // The upcast function's own error, kept as the source, not repeated in the message.
    assert!(source.downcast_ref::<std::num::ParseIntError>().is_some());
    assert_eq!(
        error.to_string(),
        "event `limit_changed` version 1 could not be upcast to version 2"
    );
    let reason = std::error::Error::source(&error).expect("a source");
    assert_eq!(reason.to_string(), "invalid digit found in string");
}
// ANCHOR_END: failed_upcast_test

#[test]
fn a_failing_later_step_is_reported_after_an_earlier_one_succeeded() {
    // v1 -> v2 parses, v2 -> v3 overflows: the error names the stored version 1 and the step
    // to version 3.
    let huge = u64::MAX.to_string();
    let error = decode_limit(1, &format!(r#"{{"limit":"{huge}"}}"#)).unwrap_err();
    assert!(
        matches!(
            &error,
            DecodeError::Upcast { name, version: 1, upcast_to: 3, .. } if name == "limit_changed"
        ),
        "{error:?}"
    );
    let reason = std::error::Error::source(&error).expect("a source");
    assert_eq!(
        reason.to_string(),
        format!("{huge} euros do not fit in cents")
    );
    assert_eq!(
        error.to_string(),
        "event `limit_changed` version 1 could not be upcast to version 3"
    );

    // Stored as version 2, only the last step runs, and fails the same way.
    let error = decode_limit(2, &format!(r#"{{"euros":{huge}}}"#)).unwrap_err();
    assert!(
        matches!(
            &error,
            DecodeError::Upcast {
                version: 2,
                upcast_to: 3,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_malformed_payload_is_not_an_upcast_failure() {
    // The payload is read before any upcast runs.
    let error = decode_limit(1, r#"{"limit":5}"#).unwrap_err();
    assert!(
        matches!(&error, DecodeError::Malformed { version: 1, .. }),
        "{error:?}"
    );
}
