//! Fuzzes `EventSet::decode` (the path loads and subscribers take) with arbitrary metadata and
//! payloads, JSON and Protobuf. Decoding may fail, with a typed error; it must never panic, and
//! the error must be the one the metadata calls for.
#![no_main]

use jetsource::{Codec, DecodeError, Event, EventSet, RawEvent};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

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

const NAMES: [&str; 5] = ["opened", "deposited", "note_added", "withdrawn", ""];

fuzz_target!(|data: &[u8]| {
    // Layout: [name selector][codec][version: 4 bytes LE][payload...].
    let [selector, codec, v0, v1, v2, v3, payload @ ..] = data else {
        return;
    };
    let name = NAMES[usize::from(*selector) % NAMES.len()];
    let codec = if codec % 2 == 0 {
        Codec::Json
    } else {
        Codec::Protobuf
    };
    let version = u32::from_le_bytes([*v0, *v1, *v2, *v3]) % 4;
    let raw = RawEvent {
        name,
        version,
        codec,
        payload,
    };
    match AccountEvent::decode(raw) {
        Ok(None) => assert_eq!(name, "note_added"),
        Ok(Some(_)) | Err(DecodeError::Malformed { .. }) => {
            assert!(matches!(
                (name, version, codec),
                ("opened", 1 | 2, Codec::Json) | ("deposited", 1, Codec::Protobuf)
            ))
        }
        Err(DecodeError::UnknownEvent { .. }) => assert!(matches!(name, "withdrawn" | "")),
        Err(DecodeError::UnknownVersion { .. }) => assert_eq!(version, 0),
        Err(DecodeError::FutureVersion { .. }) => assert!(version > 1),
        Err(DecodeError::CodecMismatch { .. }) => {}
        Err(other) => panic!("unexpected {other:?} for {name} v{version} {codec}"),
    }
});
