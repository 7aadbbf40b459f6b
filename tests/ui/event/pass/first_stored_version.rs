//! `first_stored_version`: a lineage whose first stored version is 2 (version 1 was never
//! released), and a later version upcast from it with a fallible function.

use jetsource::{Codec, DecodeError, Event, RawEvent};
use serde::{Deserialize, Serialize};

// ANCHOR: first_stored_version
/// Version 1 of `refunded` was never stored: no `previous` is needed, and saying so is
/// required.
#[derive(Event, Serialize, Deserialize)]
#[event(name = "refunded", version = 2, first_stored_version = 2)]
struct RefundedV2 {
    cents: i64,
}

/// Version 3 upcasts stored version 2 events, and refuses negative amounts.
#[derive(Event, Serialize, Deserialize)]
#[event(name = "refunded", version = 3, previous = RefundedV2, upcast = unsigned)]
struct Refunded {
    cents: u64,
}

fn unsigned(v2: RefundedV2) -> Result<Refunded, std::num::TryFromIntError> {
    Ok(Refunded {
        cents: u64::try_from(v2.cents)?,
    })
}
// ANCHOR_END: first_stored_version

fn raw(version: u32, payload: &[u8]) -> RawEvent<'_> {
    RawEvent {
        name: "refunded",
        version,
        codec: Codec::Json,
        payload,
    }
}

fn main() {
    let refunded = Refunded::decode_stored(raw(2, br#"{"cents":5}"#)).unwrap();
    assert_eq!(refunded.cents, 5);
    assert!(matches!(
        Refunded::decode_stored(raw(2, br#"{"cents":-5}"#)),
        Err(DecodeError::Upcast {
            version: 2,
            upcast_to: 3,
            ..
        })
    ));
    // Nothing reads a version 1, which is what `first_stored_version = 2` promised.
    assert!(matches!(
        Refunded::decode_stored(raw(1, b"{}")),
        Err(DecodeError::UnknownVersion { version: 1, .. })
    ));
}
