//! The closed set of events one aggregate (or one subscriber) understands.

use crate::error::{DecodeError, EncodeError};
use crate::event::{EncodedEvent, RawEvent};

/// An enum whose variants each wrap one [`Event`](crate::Event) type. Derive it with
/// `#[derive(EventSet)]`.
///
/// ```
/// use jetsource::{Codec, Event, EventSet, RawEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
/// #[event(name = "deposited", version = 1)]
/// struct Deposited { amount: u64 }
///
/// #[derive(EventSet, Debug, PartialEq)]
/// #[event_set(retired("note_added"))]
/// enum AccountEvent { Deposited(Deposited) }
///
/// let raw = RawEvent { name: "deposited", version: 1, codec: Codec::Json, payload: br#"{"amount":5}"# };
/// assert_eq!(AccountEvent::decode(raw).unwrap(), Some(AccountEvent::Deposited(Deposited { amount: 5 })));
/// let retired = RawEvent { name: "note_added", version: 1, codec: Codec::Json, payload: b"{}" };
/// assert_eq!(AccountEvent::decode(retired).unwrap(), None);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a jetsource event set",
    label = "not an event set",
    note = "add `#[derive(jetsource::EventSet)]` to an enum whose variants each wrap one event type"
)]
pub trait EventSet: Sized + Send + Sync + 'static {
    /// The current wire names of the variants' event types, in declaration order.
    const NAMES: &'static [&'static str];

    /// Encodes the wrapped event with its name, version and codec.
    fn encode(&self) -> Result<EncodedEvent, EncodeError>;

    /// Decodes a stored event into the variant whose lineage knows its name, upcasting it.
    /// `Ok(None)` means the name belongs to a retired event type that is dropped on read.
    fn decode(raw: RawEvent<'_>) -> Result<Option<Self>, DecodeError>;

    /// The current wire name of the wrapped event.
    fn event_name(&self) -> &'static str;

    /// Every wire name [`EventSet::decode`] accepts (apart from retired ones): the
    /// [`Event::known_names`](crate::Event::known_names) of each variant's type, each once.
    /// Unlike [`EventSet::NAMES`] it includes the names events were stored under before a
    /// rename; subscribers filter on these.
    fn known_names() -> Vec<&'static str> {
        Self::NAMES.to_vec()
    }
}
