//! Every `#[event]` option in one lineage: `From` upcasts, a custom upcast function, a rename
//! and both codecs; plus tuple and unit structs.

use jetsource::{Codec, Event, RawEvent};
use serde::{Deserialize, Serialize};

// ANCHOR: event_attrs
#[derive(Event, Serialize, Deserialize)]
#[event(name = "created", version = 1)]
struct CreatedV1 {
    owner: String,
}

#[derive(Event, prost::Message)]
#[event(name = "created", version = 2, previous = CreatedV1, codec = "protobuf")]
struct CreatedV2 {
    #[prost(string, tag = "1")]
    owner: String,
}

impl From<CreatedV1> for CreatedV2 {
    fn from(old: CreatedV1) -> Self {
        CreatedV2 { owner: old.owner }
    }
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "opened", version = 3, previous = CreatedV2, renamed_from = "created", upcast = with_currency, codec = "json")]
struct Opened {
    owner: String,
    currency: String,
}

fn with_currency(old: CreatedV2) -> Opened {
    Opened {
        owner: old.owner,
        currency: "EUR".to_owned(),
    }
}
// ANCHOR_END: event_attrs

#[derive(Event, Serialize, Deserialize)]
#[event(name = "noted", version = 1)]
struct Noted(String);

#[derive(Event, Serialize, Deserialize)]
#[event(name = "closed", version = 1)]
struct Closed;

fn main() {
    assert_eq!(
        (Opened::NAME, Opened::VERSION, Opened::CODEC),
        ("opened", 3, Codec::Json)
    );
    assert_eq!(CreatedV2::CODEC, Codec::Protobuf);
    assert!(Opened::is_known_name("created") && !Opened::is_known_name("closed"));
    let raw = RawEvent {
        name: "created",
        version: 1,
        codec: Codec::Json,
        payload: br#"{"owner":"ada"}"#,
    };
    let opened = Opened::decode_stored(raw).unwrap();
    assert_eq!(
        (opened.owner.as_str(), opened.currency.as_str()),
        ("ada", "EUR")
    );
    assert_eq!(Noted("x".into()).encode_payload().unwrap(), br#""x""#);
    assert_eq!(Closed.encode().unwrap().name, "closed");
}
