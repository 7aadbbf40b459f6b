use jetsource::{Codec, Event, EventSet, RawEvent};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "opened", version = 1)]
struct Opened {
    owner: String,
}

mod money {
    #[derive(jetsource::Event, serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[event(name = "deposited", version = 1)]
    pub struct Deposited {
        pub amount: u64,
    }
}

// ANCHOR: event_set_attrs
#[derive(EventSet, Debug, PartialEq)]
#[event_set(retired("note_added", "legacy"))]
enum AccountEvent {
    Opened(Opened),
    Deposited(money::Deposited),
}
// ANCHOR_END: event_set_attrs

fn main() {
    assert_eq!(AccountEvent::NAMES, ["opened", "deposited"]);
    let event: AccountEvent = money::Deposited { amount: 5 }.into();
    assert_eq!(event.event_name(), "deposited");
    let encoded = event.encode().unwrap();
    let raw = RawEvent {
        name: encoded.name,
        version: encoded.version,
        codec: encoded.codec,
        payload: &encoded.payload,
    };
    assert_eq!(AccountEvent::decode(raw).unwrap(), Some(event));
    let retired = RawEvent {
        name: "legacy",
        version: 9,
        codec: Codec::Json,
        payload: b"",
    };
    assert_eq!(AccountEvent::decode(retired).unwrap(), None);
}
