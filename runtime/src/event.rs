//! Versioned event types and their wire form.

use crate::error::{DecodeError, EncodeError};

pub use crate::codec::Codec;

/// A stored event as the decoder sees it: wire name, version, codec and payload bytes.
///
/// ```
/// use jetsource::{Codec, RawEvent};
/// let raw = RawEvent { name: "opened", version: 1, codec: Codec::Json, payload: br#"{"owner":"ada"}"# };
/// assert_eq!(raw.name, "opened");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    /// The stable wire name.
    pub name: &'a str,
    /// The schema version the payload was written with.
    pub version: u32,
    /// The codec the payload was written with.
    pub codec: Codec,
    /// The encoded payload.
    pub payload: &'a [u8],
}

/// An event encoded for storage: what [`RawEvent`] is read back from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// The stable wire name.
    pub name: &'static str,
    /// The schema version of the payload.
    pub version: u32,
    /// The payload's codec.
    pub codec: Codec,
    /// The encoded payload.
    pub payload: Vec<u8>,
}

/// A versioned event type. Derive it with `#[derive(Event)]`; do not implement it by hand.
///
/// A version above 1 names the type of the version below as `previous` (the compiler insists,
/// unless `first_stored_version = N` says no older version was ever stored), and stored older
/// versions are upcast through `From` or an `upcast = path::to::fn` function. That function
/// returns `Self`, or `Result<Self, E>` when the step can fail; a failure is
/// [`DecodeError::Upcast`], with `E` as its source.
///
/// ```
/// use jetsource::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(name = "opened", version = 2, previous = OpenedV1)]
/// struct Opened { owner: String, currency: String }
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(name = "opened", version = 1)]
/// struct OpenedV1 { owner: String }
///
/// impl From<OpenedV1> for Opened {
///     fn from(old: OpenedV1) -> Self {
///         Opened { owner: old.owner, currency: "EUR".into() }
///     }
/// }
///
/// let stored = jetsource::RawEvent {
///     name: "opened", version: 1, codec: jetsource::Codec::Json, payload: br#"{"owner":"ada"}"#,
/// };
/// let opened = Opened::decode_stored(stored).unwrap();
/// assert_eq!(opened.currency, "EUR");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a jetsource event",
    label = "not an event type",
    note = "add `#[derive(jetsource::Event)]` and `#[event(name = \"...\", version = N)]` to `{Self}`"
)]
pub trait Event: Sized + Send + Sync + 'static {
    /// The stable wire name: one NATS subject token, never a Rust path.
    const NAME: &'static str;
    /// The current schema version, starting at 1.
    const VERSION: u32;
    /// The payload codec of this version.
    const CODEC: Codec;

    /// Encodes this event's payload with [`Event::CODEC`].
    fn encode_payload(&self) -> Result<Vec<u8>, EncodeError>;

    /// Decodes a stored event of this type's lineage (this version, any older version, or an
    /// older wire name it was renamed from), upcasting it to the current type.
    fn decode_stored(raw: RawEvent<'_>) -> Result<Self, DecodeError>;

    /// Whether `name` is this type's wire name or one its older versions were stored under.
    fn is_known_name(name: &str) -> bool;

    /// Every wire name of this type's lineage: [`Event::NAME`] first, then each older name
    /// (from `renamed_from`) once. Subscribers filter on all of them, so events stored under an
    /// older name are still delivered, and upcast.
    ///
    /// ```
    /// use jetsource::Event;
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Event, Serialize, Deserialize)]
    /// #[event(name = "created", version = 1)]
    /// struct Created {}
    ///
    /// #[derive(Event, Serialize, Deserialize)]
    /// #[event(name = "opened", version = 2, previous = Created, renamed_from = "created")]
    /// struct Opened {}
    /// # impl From<Created> for Opened { fn from(_: Created) -> Self { Opened {} } }
    ///
    /// assert_eq!(Opened::known_names(), ["opened", "created"]);
    /// ```
    fn known_names() -> Vec<&'static str> {
        vec![Self::NAME]
    }

    /// Encodes this event with its name, version and codec.
    fn encode(&self) -> Result<EncodedEvent, EncodeError> {
        Ok(EncodedEvent {
            name: Self::NAME,
            version: Self::VERSION,
            codec: Self::CODEC,
            payload: self.encode_payload()?,
        })
    }
}
